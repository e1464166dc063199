//! munmap and the page zapping it shares with `MADV_DONTNEED`.
//!
//! Picture: removing `[start, end)` splits the VMAs at both ends, drops the VMAs inside, and
//! clears their PTEs. A cleared PTE's page loses its mapping at once, but its reference is held
//! by an `MmuGather` until the TLB flush, so no stale translation can reach a reused frame;
//! page-table pages left empty are unlinked and freed the same way. The invariant: after
//! munmap, no PTE, VMA or TLB entry covers the range.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{user_range, AddressSpace};
use crate::error::MmError;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::PageTable;
use crate::shmem::ShmemObject;
use crate::tlb::MmuGather;
use crate::vma::{Backing, Vma};

impl AddressSpace {
    /// Removes every mapping in `[addr, addr + len)` (Linux `munmap`). `addr` must be page
    /// aligned and `len` non-zero (`EINVAL`); unmapping holes is not an error.
    #[doc(alias = "do_vmi_munmap")]
    pub fn munmap<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
    ) -> Result<(), MmError> {
        let (start, end) = user_range(addr, len)?;
        self.hugetlb_check_split(start, end)?;
        // Linux `do_vmi_align_munmap`: only a hole in the middle of one VMA adds one.
        self.check_map_count(mm, self.punch_extra(start, end))?;
        let before = self.vmas.len();
        self.unmap_region(mm, start, end);
        mm.account_vmas(before, self.vmas.len());
        Ok(())
    }

    /// Starts a batched [`munmap`](Self::munmap) of `[addr, addr + len)`: validates the range
    /// and the map count as `munmap` does and records the current VMA set's change count.
    pub fn munmap_start<A: Arch>(
        &self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
    ) -> Result<MunmapCursor, MmError> {
        let (start, end) = user_range(addr, len)?;
        self.hugetlb_check_split(start, end)?;
        self.check_map_count(mm, self.punch_extra(start, end))?;
        Ok(MunmapCursor {
            start,
            end,
            next: start,
            changes: self.vmas.changes(),
            published: false,
        })
    }

    /// Whether `va` lies in a range a batched munmap is freeing (Linux detaches the VMAs
    /// before it zaps, under `mmap_lock`, so a concurrent fault there finds no VMA and gets
    /// SIGSEGV, never a fresh zero page where the old data was). One load when none is.
    #[inline]
    pub(crate) fn being_unmapped(&self, va: VirtAddr) -> bool {
        !self.unmapping.is_empty() && self.unmapping.iter().any(|&(s, e)| s <= va && va < e)
    }

    /// Ends a batched munmap that stops early (its task is being killed; the exit unmaps the
    /// rest): its range is no longer held.
    pub fn munmap_abort(&mut self, cur: &MunmapCursor) {
        if cur.published {
            self.unpublish(cur);
        }
    }

    fn unpublish(&mut self, cur: &MunmapCursor) {
        if let Some(i) = self
            .unmapping
            .iter()
            .position(|&r| r == (cur.start, cur.end))
        {
            self.unmapping.swap_remove(i);
        }
    }

    /// One step of a batched munmap, for a caller that releases the address space between
    /// steps (Linux frees a huge range with `cond_resched` in `zap_pte_range` while the VMAs
    /// are already detached; cowlab's kernel cannot sleep holding the lock, so it unlocks).
    /// Returns `true` when the munmap is complete.
    ///
    /// The VMA tree is changed only by the last step, one atomic [`munmap`](Self::munmap) of
    /// the whole range, so no other thread can see part of the range unmapped, map into it and
    /// then lose half its new mapping to a later batch, and the map count never runs over its
    /// limit between steps. The steps before it only free pages: each zaps at most `max_pages`
    /// of the VMAs in the range, and only while the VMA set is still the one `munmap_start`
    /// saw (an unchanged change count), so no page of a mapping made since is ever zapped. Once
    /// the set has changed, or the rest fits in one batch, the last step unmaps the rest.
    pub fn munmap_step<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        cur: &mut MunmapCursor,
        max_pages: u64,
    ) -> Result<bool, MmError> {
        let whole = (cur.end.as_u64() - cur.start.as_u64()) as usize;
        if self.vmas.changes() == cur.changes {
            let mut budget = max_pages.saturating_mul(crate::PAGE_SIZE as u64);
            let mut zap = alloc::vec::Vec::new();
            let mut stop = None;
            let first = self.vmas.range(..=cur.next.as_u64()).next_back();
            let rest = self.vmas.range(cur.next.as_u64() + 1..cur.end.as_u64());
            for v in first.into_iter().chain(rest).map(|(_, v)| v) {
                if v.end <= cur.next {
                    continue;
                }
                let from = v.start.max(cur.next);
                let to = v.end.min(cur.end);
                let len = to.as_u64() - from.as_u64();
                if len > budget {
                    let cut = VirtAddr::new(from.as_u64() + budget);
                    if budget > 0 {
                        zap.push((from, cut));
                    }
                    stop = Some(cut);
                    break;
                }
                budget -= len;
                zap.push((from, to));
            }
            if let Some(next) = stop {
                self.hiwater_rss(mm);
                // From the first page freed until the last step, the range faults as unmapped:
                // the lock is dropped between steps and a toucher would otherwise get a fresh
                // zero page where a freed page's data was.
                if !cur.published {
                    self.unmapping.push((cur.start, cur.end));
                    cur.published = true;
                }
                for (from, to) in zap {
                    zap_pages(mm, &self.shared, from, to);
                }
                cur.next = next;
                return Ok(false);
            }
        }
        if cur.published {
            self.unpublish(cur);
            cur.published = false;
        }
        self.munmap(mm, cur.start, whole)?;
        Ok(true)
    }
    /// Removes the VMAs and pages of the page-aligned `[start, end)`.
    pub(crate) fn unmap_region<A: Arch>(&mut self, mm: &Mm<A>, start: VirtAddr, end: VirtAddr) {
        let removed: alloc::vec::Vec<Vma> = self
            .isolate(start, end)
            .into_iter()
            .filter_map(|key| self.vmas.map_mut().remove(&key))
            .collect();
        self.hiwater_rss(mm);
        zap_pages(mm, &self.shared, start, end);
        for vma in removed {
            release_vma(mm, vma);
        }
    }
}

/// A batched munmap in progress ([`AddressSpace::munmap_start`]).
#[derive(Clone, Copy, Debug)]
pub struct MunmapCursor {
    start: VirtAddr,
    end: VirtAddr,
    /// Where the next page-freeing step resumes.
    next: VirtAddr,
    /// The VMA tree's change count when the munmap started.
    changes: u64,
    /// Whether the range is in `AddressSpace::unmapping` (after the first step that freed).
    published: bool,
}

/// Drops a removed VMA's hold on its backing object (Linux `remove_vma` -> `fput`): the last
/// holder of a shmem object frees its cache; a file's hold is dropped with the VMA (the kernel's
/// object closes the file when its last holder goes).
pub(crate) fn release_vma<A: Arch>(mm: &Mm<A>, mut vma: Vma) {
    match core::mem::replace(&mut vma.backing, Backing::Anonymous) {
        Backing::Shmem(obj, _) => ShmemObject::put(obj, mm),
        Backing::Hugetlb(map) => crate::hugetlb::hugetlb_vm_close(mm, &vma, map),
        Backing::Anonymous | Backing::File(..) => {}
    }
}

/// Clears every PTE of `[start, end)`, frees the pages that lose their last reference and the
/// page tables left empty, after flushing the TLB (Linux `zap_page_range_single` +
/// `tlb_finish_mmu`).
#[doc(alias = "zap_page_range")]
pub(crate) fn zap_pages<A: Arch>(mm: &Mm<A>, shared: &MmShared, start: VirtAddr, end: VirtAddr) {
    let mut gather = MmuGather::new(mm, shared);
    // In registers for the whole zap (through `mm.frames()` the slice is reloaded after each
    // page's atomics).
    let metas = mm.frames().metas();
    PageTable::new(mm, shared.root()).zap_range(start, end, &mut gather, &mut |pte, gather| {
        let frame = pte.frame();
        mm.remove_mapping_meta(&metas[frame.pfn()], frame);
        gather.remove_page(frame);
    });
    gather.finish();
}

#[cfg(test)]
mod tests {
    use crate::tests::{Env, PAGE};
    use crate::vma::Prot;
    use crate::VirtAddr;

    /// munmap in batches of 3 pages over two populated VMAs with holes around and between them
    /// ends exactly as one munmap: only the range's pages gone, the pieces outside kept, every
    /// frame back, and the middle batches skip the hole instead of walking it.
    #[test]
    fn munmap_steps_match_one_munmap() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 10, Prot::RW);
        let b = env.map(&mut s, 100 * PAGE, 10, Prot::RW);
        for i in 0..10 {
            env.write(&mut s, a + i * PAGE, 1).unwrap();
            env.write(&mut s, b + i * PAGE, 2).unwrap();
        }
        // From the middle of the first VMA to the middle of the second.
        let mut cur = s
            .munmap_start(&env.mm, a + 4 * PAGE, (96 + 4) * PAGE as usize)
            .expect("munmap");
        let mut steps = 1;
        while !s.munmap_step(&env.mm, &mut cur, 3).expect("munmap") {
            steps += 1;
            // Only pages go between steps: the VMAs stay until the last one.
            assert_eq!(s.vmas().count(), 2);
            env.check(&[&s]);
        }
        // 6 + 4 pages in batches of 3, the hole skipped: 3, 3, 3, then the last page with the
        // VMAs.
        assert_eq!(steps, 4);
        assert_eq!(s.vmas().count(), 2);
        assert_eq!(env.read(&mut s, a + 3 * PAGE), Ok(1));
        assert!(env.read(&mut s, a + 4 * PAGE).is_err());
        assert!(env
            .read(&mut s, VirtAddr::new(b.as_u64() + 3 * PAGE))
            .is_err());
        assert_eq!(env.read(&mut s, b + 4 * PAGE), Ok(2));
        assert!(s.munmap_start(&env.mm, a, 0).is_err(), "len 0 is EINVAL");
        env.finish(alloc::vec![s]);
    }

    /// Between steps the range faults as unmapped, in the freed part and the part still to go
    /// (Linux has detached the VMAs): a fault there is SIGSEGV, never a fresh zero page where
    /// the data was; a page not yet freed still reads its data; after the last step and after an
    /// abandoned munmap the address space holds no range.
    #[test]
    fn faults_between_steps_find_no_mapping() {
        use crate::fault::{handle_mm_fault, FaultKind};
        use crate::{FaultError, SegvReason};
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 8, Prot::RW);
        for i in 0..8 {
            env.write(&mut s, a + i * PAGE, 7).unwrap();
        }
        let mut cur = s.munmap_start(&env.mm, a, 8 * PAGE as usize).unwrap();
        assert!(
            s.unmapping.is_empty(),
            "nothing published before a page is freed"
        );
        assert!(!s.munmap_step(&env.mm, &mut cur, 3).unwrap());
        for (page, kind) in [
            (0, FaultKind::Read),
            (1, FaultKind::Write),
            (6, FaultKind::Write),
        ] {
            assert_eq!(
                handle_mm_fault(&env.mm, &mut s, a + page * PAGE, kind),
                Err(FaultError::Segv(SegvReason::NoMapping)),
                "page {page}"
            );
        }
        assert!(
            s.translate(&env.mm, a).is_none(),
            "no zero page was faulted in"
        );
        assert_eq!(env.read(&mut s, a + 5 * PAGE), Ok(7), "not freed yet");
        while !s.munmap_step(&env.mm, &mut cur, 3).unwrap() {}
        assert!(s.unmapping.is_empty());
        let b = env.map(&mut s, 0, 8, Prot::RW);
        let mut cur = s.munmap_start(&env.mm, b, 8 * PAGE as usize).unwrap();
        env.write(&mut s, b + 7 * PAGE, 1).unwrap();
        assert!(!s.munmap_step(&env.mm, &mut cur, 2).unwrap());
        s.munmap_abort(&cur);
        assert!(s.unmapping.is_empty(), "an abandoned munmap holds no range");
        assert_eq!(env.read(&mut s, b + 7 * PAGE), Ok(1));
        env.finish(alloc::vec![s]);
    }

    /// A mapping made in a hole of the range between two steps (another thread, with the
    /// address space unlocked) is never cut in half, and its pages are not zapped by later
    /// steps: the munmap's one change to the VMA tree removes it whole, as if it had been made
    /// before the munmap (the regression: later batches re-found "the first VMA in the rest"
    /// and unmapped the part of the new mapping above the batch boundary).
    #[test]
    fn munmap_steps_never_tear_a_mapping_made_between_them() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 8, Prot::RW);
        let _b = env.map(&mut s, 16 * PAGE, 4, Prot::RW);
        for i in 0..8 {
            env.write(&mut s, a + i * PAGE, 1).unwrap();
        }
        let mut cur = s.munmap_start(&env.mm, a, 20 * PAGE as usize).unwrap();
        assert!(!s.munmap_step(&env.mm, &mut cur, 8).unwrap());
        // Another thread maps over the hole [8, 16). Touching it faults: the range is being
        // unmapped, and the last step removes the new mapping as if it had come first.
        let c = env.map(&mut s, 8 * PAGE, 8, Prot::RW);
        assert!(env.write(&mut s, c, 7).is_err());
        while !s.munmap_step(&env.mm, &mut cur, 2).unwrap() {
            assert!(env.write(&mut s, c + 7 * PAGE, 7).is_err());
        }
        // Removed whole: no piece of it is left.
        assert_eq!(s.vmas().count(), 0);
        env.check(&[&s]);

        // The same mapping made after the munmap completed survives whole.
        let c = env.map(&mut s, 8 * PAGE, 8, Prot::RW);
        env.write(&mut s, c + 7 * PAGE, 7).unwrap();
        assert_eq!(s.vmas().count(), 1);
        env.finish(alloc::vec![s]);
    }
}
