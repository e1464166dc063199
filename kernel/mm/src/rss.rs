//! The resident-set high-water mark (Linux `hiwater_rss`, `update_hiwater_rss`), for
//! `ru_maxrss`. cowlab keeps no running RSS counter (the fault and zap paths stay as they
//! are); like Linux, which folds the current RSS into the mark before it unmaps pages
//! (`unmap_region`, `zap_page_range_single`) and when the space ends, the mark is sampled
//! before every munmap and `MADV_DONTNEED`/`MADV_FREE` zap, and by the kernel at exit, exec
//! and `getrusage`. A sample walks the page tables ([`AddressSpace::footprint`]) only if a
//! fault has happened since the last one: only a fault maps new pages into a space (a fork
//! child's first sample finds what it inherited), so between faults a sample is one compare.
//! The price is a walk on the first zap after faults: `cargo xtask bench` (icount, guest
//! instructions) measured `munmap_per_page` 159 -> 191 and `madv_dontneed_per_page` 152 -> 184
//! (the region is faulted in before each call); the fault rows are unchanged. A running RSS
//! counter kept by the fault and zap paths would make the sample free.
#![deny(unsafe_code)]

use core::sync::atomic::Ordering::Relaxed;

use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;

impl AddressSpace {
    /// Folds the current resident pages into the mark (Linux `update_hiwater_rss`) and
    /// returns it, in pages.
    #[doc(alias = "update_hiwater_rss")]
    pub fn hiwater_rss<A: Arch>(&self, mm: &Mm<A>) -> u64 {
        let faults = self.minor_faults();
        if self.hiwater_at.load(Relaxed) != faults {
            let rss = self.footprint(mm).rss_pages;
            self.hiwater_rss.fetch_max(rss, Relaxed);
            self.hiwater_at.store(faults, Relaxed);
        }
        self.hiwater_rss.load(Relaxed)
    }
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
}
