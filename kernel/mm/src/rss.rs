//! The resident-set size and its high-water mark (Linux `get_mm_rss`, `hiwater_rss`,
//! `update_hiwater_rss`), for `ru_maxrss`, the OOM killer and `/proc`.
//!
//! The running count lives in [`MmShared`](crate::mmshared::MmShared) and is kept where pages
//! are mapped and unmapped, as Linux's mm counters: a fault that maps a page other than the
//! zero page (+1), a THP fault (+512), the copy of a zero page (+1), a zap (-1 per page, -512
//! per PMD leaf); fork gives the child the parent's count less the pages of the VMAs it does
//! not copy (`MADV_DONTFORK`, `MADV_WIPEONFORK`); a COW copy, a split, a collapse of present
//! pages and `mremap` move pages without changing it. The checker (`check.rs`) compares it
//! with a page-table walk after every host test step.
//!
//! The mark is folded in, as in Linux, before pages are unmapped (munmap, `MADV_DONTNEED`/
//! `MADV_FREE`) and by the kernel at exit, exec and `getrusage`: one load and a compare. It
//! replaced a sample that walked the page tables on the first zap after faults
//! (`munmap_per_page` 191, `madv_dontneed_per_page` 184 guest instructions with the walk).
#![deny(unsafe_code)]

use core::sync::atomic::Ordering::Relaxed;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;
use crate::pagetable::PageTable;

impl AddressSpace {
    /// Folds the current resident pages into the mark (Linux `update_hiwater_rss`) and
    /// returns it, in pages.
    #[doc(alias = "update_hiwater_rss")]
    #[inline]
    pub fn hiwater_rss<A: Arch>(&self, _mm: &Mm<A>) -> u64 {
        let rss = self.shared.rss();
        if rss > self.hiwater_rss.load(Relaxed) {
            self.hiwater_rss.store(rss, Relaxed);
        }
        self.hiwater_rss.load(Relaxed)
    }

    /// Resident pages (Linux `get_mm_rss`): the running count.
    pub fn rss_pages(&self) -> u64 {
        self.shared.rss()
    }
}

/// Resident pages mapped in `[start, end)` of `pt`, by walking it (the shared zero page not
/// counted, a PMD leaf as 512 unless the huge zero folio or hugetlb): for fork's VMAs that the child does not get, and the checker.
pub(crate) fn resident_in<A: Arch>(
    mm: &Mm<A>,
    pt: &PageTable<'_, A>,
    start: VirtAddr,
    end: VirtAddr,
) -> u64 {
    let zero = mm.zero_page();
    let mut pages = 0;
    pt.for_each_leaf(start, end, &mut |_, slot| {
        let pte = slot.load();
        if pte.is_mapping() && pte.frame() != zero {
            pages += 1;
        }
    });
    pt.for_each_huge_pmd(start, end, &mut |_, pmd| {
        // Neither the huge zero folio nor hugetlb pages count, as in Linux.
        if !mm.frames().is_huge_zero(pmd.frame()) && !crate::hugetlb::is_hugetlb_pmd(mm, pmd) {
            pages += crate::folio::HPAGE_PMD_NR as u64;
        }
    });
    pages
}

#[cfg(test)]
mod tests {
    use crate::tests::{Env, PAGE};
    use crate::vma::Prot;

    /// The mark keeps the peak across munmap and madvise(DONTNEED), does not move for faults
    /// below it, and a fork child starts from what it inherited.
    #[test]
    fn hiwater_keeps_the_peak() {
        let env = Env::new();
        let mut s = env.space();
        assert_eq!(s.hiwater_rss(&env.mm), 0);
        let a = env.map(&mut s, 0, 10, Prot::RW);
        for i in 0..10 {
            env.write(&mut s, a + i * PAGE, 1).unwrap();
        }
        let b = env.map(&mut s, 100 * PAGE, 4, Prot::RW);
        for i in 0..4 {
            env.write(&mut s, b + i * PAGE, 1).unwrap();
        }
        s.munmap(&env.mm, a, (10 * PAGE) as usize).unwrap();
        assert_eq!(s.hiwater_rss(&env.mm), 14, "munmap sampled the peak first");
        s.madvise(
            &env.mm,
            b,
            (4 * PAGE) as usize,
            crate::madvise::Advice::DontNeed,
        )
        .unwrap();
        env.write(&mut s, b, 1).unwrap();
        assert_eq!(s.hiwater_rss(&env.mm), 14, "a fault below the peak");
        let child = s.fork(&env.mm).unwrap();
        assert_eq!(child.hiwater_rss(&env.mm), 1, "the child's inherited page");
        env.finish(std::vec![s, child]);
    }

    /// The running count follows every way pages come and go: write faults (+1), read faults
    /// (the zero page: 0), the copy of a zero page (+1), COW copies (0), fork (the child gets
    /// what it maps, less `MADV_DONTFORK` and `MADV_WIPEONFORK` VMAs), munmap and
    /// `MADV_DONTNEED` (-1 each, zero page 0); the checker compares it with a walk.
    #[test]
    fn rss_counter_follows_maps_and_unmaps() {
        use crate::madvise::Advice;
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 16, Prot::RW);
        for i in 0..8 {
            env.write(&mut s, a + i * PAGE, 1).unwrap();
        }
        for i in 8..12 {
            env.read(&mut s, a + i * PAGE).unwrap();
        }
        assert_eq!(s.rss_pages(), 8, "zero-page reads are not resident");
        env.write(&mut s, a + 8 * PAGE, 1).unwrap();
        assert_eq!(s.rss_pages(), 9, "a zero page copied on write");
        let b = env.map(&mut s, 100 * PAGE, 4, Prot::RW);
        let c = env.map(&mut s, 200 * PAGE, 2, Prot::RW);
        for i in 0..4 {
            env.write(&mut s, b + i * PAGE, 2).unwrap();
        }
        for i in 0..2 {
            env.write(&mut s, c + i * PAGE, 3).unwrap();
        }
        s.madvise(&env.mm, b, (4 * PAGE) as usize, Advice::DontFork)
            .unwrap();
        s.madvise(&env.mm, c, (2 * PAGE) as usize, Advice::WipeOnFork)
            .unwrap();
        assert_eq!(s.rss_pages(), 15);
        env.check(&[&s]);
        let mut child = s.fork(&env.mm).unwrap();
        assert_eq!(
            child.rss_pages(),
            9,
            "the child maps neither DONTFORK nor WIPEONFORK pages"
        );
        env.write(&mut child, a, 7).unwrap();
        assert_eq!(child.rss_pages(), 9, "a COW copy replaces a page");
        env.check(&[&s, &child]);
        s.madvise(&env.mm, a, (4 * PAGE) as usize, Advice::DontNeed)
            .unwrap();
        assert_eq!(s.rss_pages(), 11);
        s.munmap(&env.mm, a, (16 * PAGE) as usize).unwrap();
        assert_eq!(s.rss_pages(), 6, "munmap of 5 pages and 3 zero pages");
        assert_eq!(s.hiwater_rss(&env.mm), 15);
        env.check(&[&s, &child]);
        env.finish(std::vec![s, child]);
    }
}
