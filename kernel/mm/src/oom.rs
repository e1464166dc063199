//! Choosing the out-of-memory victim (Linux `oom_badness`, `select_bad_process`).
//!
//! Picture: when a page cannot be allocated, killing the process that happened to ask is the
//! wrong answer most of the time (it may be a small shell that touched one page while a
//! runaway process holds the rest). Linux scores every killable process by what killing it
//! would give back — its resident pages plus its page tables — and kills the highest. This
//! module is that policy, over numbers the kernel gathers: [`AddressSpace::footprint`] measures
//! one address space, [`oom_badness`] scores it, [`select_bad_process`] picks. The mechanism
//! (gathering candidates, killing, logging) lives in the kernel (`proc::oom`).
//!
//! Pinned frames are not this module's concern: a victim's exit drops its mappings and
//! references, and a frame that is pinned (io_uring registrations, DMA in flight) stays
//! allocated until its pin is dropped, whoever owned it.

#![deny(unsafe_code)]

use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;

/// What an address space holds in memory, in pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Footprint {
    /// Present user pages (Linux `get_mm_rss`: anonymous, file and shmem pages mapped; the
    /// shared zero page is not counted). A page mapped twice counts twice, as in Linux.
    pub rss_pages: u64,
    /// Page-table pages below the root (Linux `mm_pgtables_bytes` / `PAGE_SIZE`).
    pub pagetable_pages: u64,
}

impl AddressSpace {
    /// Measures this address space: the running RSS count (`rss.rs`, a PMD-mapped THP as
    /// its 512 pages) and the page-table pages by walking the tables, O(page tables), for the
    /// OOM path and reports, never a fast path.
    pub fn footprint<A: Arch>(&self, mm: &Mm<A>) -> Footprint {
        let pt = self.page_table(mm);
        let mut fp = Footprint::default();
        pt.for_each_table(&mut |_, level, _| {
            if level == 4 {
                return;
            }
            fp.pagetable_pages += 1;
        });
        fp.rss_pages = self.shared.rss();
        fp
    }
}

/// Linux `oom_badness` with `oom_score_adj` 0 and no swap: the pages killing the owner would
/// free, its resident pages plus its page tables.
pub fn oom_badness(fp: Footprint) -> u64 {
    fp.rss_pages + fp.pagetable_pages
}

/// One process the OOM killer may consider.
#[derive(Clone, Copy, Debug)]
pub struct OomCandidate<K> {
    pub id: K,
    pub footprint: Footprint,
    /// Never killed (Linux: the global init, kernel threads, `OOM_SCORE_ADJ_MIN`).
    pub unkillable: bool,
    /// Already killed by the OOM killer and still exiting (Linux `tsk_is_oom_victim`).
    pub oom_victim: bool,
}

/// What [`select_bad_process`] decided.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OomChoice<K> {
    /// Kill this process; its badness.
    Kill(K, u64),
    /// A previous victim is still exiting: its memory is on the way back, kill nobody more
    /// (Linux's `oom_evaluate_task` aborts the scan).
    Wait(K),
    /// Nothing killable.
    Nothing,
}

/// Linux `select_bad_process`: the killable candidate with the highest [`oom_badness`] (a tie
/// goes to the later candidate, as Linux's `points < chosen_points` test replaces on equal),
/// unless a previous victim is still exiting.
pub fn select_bad_process<K: Copy>(
    candidates: impl IntoIterator<Item = OomCandidate<K>>,
) -> OomChoice<K> {
    let mut chosen: Option<(K, u64)> = None;
    for c in candidates {
        if c.unkillable {
            continue;
        }
        if c.oom_victim {
            return OomChoice::Wait(c.id);
        }
        let points = oom_badness(c.footprint);
        if chosen.is_none_or(|(_, best)| points >= best) {
            chosen = Some((c.id, points));
        }
    }
    match chosen {
        Some((id, points)) => OomChoice::Kill(id, points),
        None => OomChoice::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Env, PAGE};
    use crate::vma::Prot;

    fn cand(id: u32, rss: u64, pt: u64) -> OomCandidate<u32> {
        OomCandidate {
            id,
            footprint: Footprint {
                rss_pages: rss,
                pagetable_pages: pt,
            },
            unkillable: false,
            oom_victim: false,
        }
    }

    #[test]
    fn the_largest_footprint_is_chosen_not_the_first_or_the_caller() {
        let cands = [cand(2, 10, 1), cand(3, 5000, 12), cand(4, 40, 2)];
        assert_eq!(select_bad_process(cands), OomChoice::Kill(3, 5012));
    }

    #[test]
    fn page_tables_count_toward_badness() {
        // Same RSS: the one with more page tables (a sparse address space) frees more.
        let cands = [cand(2, 100, 50), cand(3, 100, 3)];
        assert_eq!(select_bad_process(cands), OomChoice::Kill(2, 150));
    }

    #[test]
    fn unkillable_processes_are_skipped_and_ties_go_to_the_later() {
        let mut init = cand(1, 1_000_000, 10);
        init.unkillable = true;
        let cands = [init, cand(5, 7, 1), cand(6, 7, 1)];
        assert_eq!(select_bad_process(cands), OomChoice::Kill(6, 8));
        let only_init = [init];
        assert_eq!(select_bad_process(only_init), OomChoice::Nothing);
    }

    #[test]
    fn a_victim_still_exiting_means_wait_not_a_second_kill() {
        let mut victim = cand(9, 1, 1);
        victim.oom_victim = true;
        let cands = [cand(2, 9000, 5), victim];
        assert_eq!(select_bad_process(cands), OomChoice::Wait(9));
    }

    /// The footprint walk counts touched pages (not the zero page a read maps, not untouched
    /// pages) and the page tables that map them.
    #[test]
    fn footprint_counts_present_pages_and_tables() {
        let env = Env::new();
        let mut s = env.space();
        assert_eq!(s.footprint(&env.mm), Footprint::default());
        let a = env.map(&mut s, 0, 64, Prot::RW);
        for p in 0..10 {
            env.write(&mut s, a + p * PAGE, p).unwrap();
        }
        // Read faults map the shared zero page: not resident memory of this process.
        for p in 10..20 {
            env.read(&mut s, a + p * PAGE).unwrap();
        }
        let fp = s.footprint(&env.mm);
        assert_eq!(fp.rss_pages, 10);
        // One PDPT, one PD and one PT map the 64 pages at BASE.
        assert_eq!(fp.pagetable_pages, 3);
        assert_eq!(oom_badness(fp), 13);
        let mut child = s.fork(&env.mm).expect("fork");
        // After fork both map the same ten pages: each counts them (Linux's RSS is per mm).
        assert_eq!(child.footprint(&env.mm).rss_pages, 10);
        env.write(&mut child, a, 99).unwrap();
        assert_eq!(child.footprint(&env.mm).rss_pages, 10);
        env.check(&[&s, &child]);
        env.finish(alloc::vec![s, child]);
    }
}
