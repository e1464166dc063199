//! mlock, munlock, mlockall, munlockall: `VM_LOCKED` ranges and what they cost.
//!
//! Picture: locking marks VMAs `LOCKED` (splitting at the range's ends, as madvise does) and
//! faults every page of the range in, so that it is resident from then on; with
//! `MLOCK_ONFAULT` (`LOCKONFAULT`) pages come on first touch instead. cowlab never reclaims
//! or swaps, so the lock changes no later behaviour: what it buys is residency now and an
//! account. The account is Linux's `mm->locked_vm`, here computed from the VMAs
//! ([`AddressSpace::locked_vm`]) instead of kept as a counter, so munmap, exit and mremap need
//! no bookkeeping. The limit (`RLIMIT_MEMLOCK`) is the caller's: the kernel passes it in, in
//! pages. Locks are not inherited by fork (Linux `dup_mmap` clears `VM_LOCKED`); exec starts a
//! new address space without them.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::MmError;
use crate::fault::{handle_mm_fault, populate_fault, FaultKind};
use crate::mm::Mm;
use crate::vma::{Sharing, Vma, VmaFlags};
use crate::PAGE_SIZE;

/// How a range is locked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LockMode {
    /// `mlock`, `MCL_CURRENT`: populate now.
    Populate,
    /// `MLOCK_ONFAULT`, `MCL_ONFAULT`: lock pages as they are faulted in.
    OnFault,
}

/// Both lock flags.
const LOCK_FLAGS: VmaFlags = VmaFlags::LOCKED.union(VmaFlags::LOCKONFAULT);

impl AddressSpace {
    /// Pages in locked VMAs (Linux `mm->locked_vm`).
    pub fn locked_vm(&self) -> u64 {
        self.vmas
            .values()
            .filter(|v| v.flags.contains(VmaFlags::LOCKED))
            .map(|v| (v.end.as_u64() - v.start.as_u64()) / PAGE_SIZE as u64)
            .sum()
    }

    /// Locked pages of `[start, end)` (Linux `count_mm_mlocked_page_nr`).
    fn locked_in(&self, start: VirtAddr, end: VirtAddr) -> u64 {
        self.vmas
            .values()
            .filter(|v| v.flags.contains(VmaFlags::LOCKED))
            .map(|v| {
                let lo = v.start.as_u64().max(start.as_u64());
                let hi = v.end.as_u64().min(end.as_u64());
                hi.saturating_sub(lo) / PAGE_SIZE as u64
            })
            .sum()
    }

    /// Linux `do_mlock` (`mlock`, `mlock2`): locks `[addr, addr + len)` (widened to pages)
    /// unless that would take [`locked_vm`](Self::locked_vm) past `limit_pages` (`NoMem`,
    /// nothing changed); `NoMem` too if the range has a hole (cowlab then changes nothing,
    /// where Linux locks up to the hole) or a page cannot be populated.
    #[doc(alias = "do_mlock")]
    pub fn mlock<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        mode: LockMode,
        limit_pages: u64,
    ) -> Result<(), MmError> {
        if let Some((start, end)) = self.mlock_flags(mm, addr, len, mode, limit_pages)? {
            self.populate(mm, start, end)?;
        }
        Ok(())
    }

    /// Sets the lock flags of the fully mapped `[start, end)`; the range to populate.
    fn lock_range<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        mode: LockMode,
    ) -> Result<Option<(VirtAddr, VirtAddr)>, MmError> {
        let flags = match mode {
            LockMode::Populate => VmaFlags::LOCKED,
            LockMode::OnFault => LOCK_FLAGS,
        };
        self.set_lock_flags(mm, start, end, flags)?;
        Ok((mode == LockMode::Populate).then_some((start, end)))
    }

    /// [`mlock`](Self::mlock) without its population: checks and sets the lock flags and
    /// returns the range the caller must [`populate`](Self::populate) (none for `OnFault` or
    /// an empty range). Linux `do_mlock` likewise drops the mmap lock before `__mm_populate`,
    /// which the kernel runs in batches, releasing the address space between them, so that a
    /// many-GiB mlock neither holds the CPU nor outlives a SIGKILL.
    pub fn mlock_flags<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        mode: LockMode,
        limit_pages: u64,
    ) -> Result<Option<(VirtAddr, VirtAddr)>, MmError> {
        let Some((start, end)) = page_range(addr, len)? else {
            return Ok(None);
        };
        if !self.fully_mapped(start, end) {
            return Err(MmError::NoMem);
        }
        let pages = (end.as_u64() - start.as_u64()) / PAGE_SIZE as u64;
        let after = self.locked_vm() + pages - self.locked_in(start, end);
        if after > limit_pages {
            return Err(MmError::NoMem);
        }
        self.lock_range(mm, start, end, mode)
    }

    /// Linux `munlock`: clears the lock of `[addr, addr + len)`; `NoMem` for a hole.
    pub fn munlock<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
    ) -> Result<(), MmError> {
        let Some((start, end)) = page_range(addr, len)? else {
            return Ok(());
        };
        if !self.fully_mapped(start, end) {
            return Err(MmError::NoMem);
        }
        self.set_lock_flags(mm, start, end, VmaFlags::NONE)
    }

    /// Linux `mlockall(MCL_CURRENT [| MCL_ONFAULT])`: locks every VMA, `NoMem` if the whole
    /// address space is more than `limit_pages`.
    pub fn mlockall<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        mode: LockMode,
        limit_pages: u64,
    ) -> Result<(), MmError> {
        for (start, end) in self.mlockall_flags(mm, mode, limit_pages)? {
            self.populate(mm, start, end)?;
        }
        Ok(())
    }

    /// [`mlockall`](Self::mlockall) without its population: locks every VMA and returns the
    /// ranges the caller must populate (none for `OnFault`), as [`mlock_flags`](Self::mlock_flags).
    pub fn mlockall_flags<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        mode: LockMode,
        limit_pages: u64,
    ) -> Result<alloc::vec::Vec<(VirtAddr, VirtAddr)>, MmError> {
        let total: u64 = self
            .vmas
            .values()
            .map(|v| (v.end.as_u64() - v.start.as_u64()) / PAGE_SIZE as u64)
            .sum();
        if total > limit_pages {
            return Err(MmError::NoMem);
        }
        let ranges: alloc::vec::Vec<(VirtAddr, VirtAddr)> =
            self.vmas.values().map(|v| (v.start, v.end)).collect();
        let mut populate = alloc::vec::Vec::new();
        for (start, end) in ranges {
            let len = (end.as_u64() - start.as_u64()) as usize;
            if let Some(range) = self.mlock_flags(mm, start, len, mode, u64::MAX)? {
                populate.push(range);
            }
        }
        Ok(populate)
    }

    /// Linux `mlockall(MCL_FUTURE [| MCL_ONFAULT])` (`mm->def_flags`): every mapping made
    /// from now on (mmap, brk) is locked, and populated unless `OnFault`; the caller checks
    /// the limit for each ([`locks_future`](Self::locks_future), Linux `mlock_future_ok`).
    /// Not inherited by a fork child; [`munlockall`](Self::munlockall) ends it.
    pub fn mlock_future(&mut self, mode: LockMode) {
        self.def_flags = match mode {
            LockMode::Populate => VmaFlags::LOCKED,
            LockMode::OnFault => LOCK_FLAGS,
        };
    }

    /// Whether new mappings are locked (`mlockall(MCL_FUTURE)` in force).
    pub fn locks_future(&self) -> bool {
        self.def_flags.contains(VmaFlags::LOCKED)
    }

    /// Whether a range just mapped or grown at `start` is to be populated: its VMA is locked
    /// and not on fault (Linux's `populate` out-parameter of `do_mmap`, `brk` and `mremap`).
    /// The caller populates it after dropping the lock, in killable batches (`populate_some`),
    /// as Linux's `mm_populate` runs after `mmap_write_unlock`; a page that cannot be
    /// populated is left to its fault.
    pub fn wants_populate(&self, start: VirtAddr) -> bool {
        self.find_vma(start).is_some_and(|v| {
            v.flags.contains(VmaFlags::LOCKED) && !v.flags.contains(VmaFlags::LOCKONFAULT)
        })
    }

    /// Linux `munlockall`: unlocks every VMA and ends `MCL_FUTURE`.
    pub fn munlockall<A: Arch>(&mut self, mm: &Mm<A>) {
        self.def_flags = VmaFlags::NONE;
        let ranges: alloc::vec::Vec<(VirtAddr, VirtAddr)> =
            self.vmas.values().map(|v| (v.start, v.end)).collect();
        for (start, end) in ranges {
            let _ = self.set_lock_flags(mm, start, end, VmaFlags::NONE);
        }
    }

    /// Linux `mlock_fixup` over `[start, end)` (fully mapped): the lock flags become `flags`,
    /// splitting at the ends and merging after.
    fn set_lock_flags<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        flags: VmaFlags,
    ) -> Result<(), MmError> {
        let (start, end) = self.hugetlb_round_out(start, end);
        self.check_map_count(mm, self.splits_needed(start, end))?;
        crate::huge_memory::vma_adjust_trans_huge(mm, &self.shared, start, end);
        let before = self.vmas.len();
        let keys = self.isolate(start, end);
        for key in &keys {
            let vma = self.vmas.map_mut().get_mut(key).expect("isolated VMA");
            vma.flags = vma.flags.without(LOCK_FLAGS) | flags;
        }
        for key in keys {
            if self.vmas.contains_key(&key) {
                self.merge_around(VirtAddr::new(key));
            }
        }
        mm.account_vmas(before, self.vmas.len());
        Ok(())
    }

    /// Linux `__mm_populate`: faults in every page of `[start, end)` of an accessible VMA,
    /// for writing only where the mapping is private and writable ([`populate_fault_kind`]);
    /// holes are skipped; `NoMem` for a page that cannot be populated.
    pub fn populate<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), MmError> {
        self.populate_some(mm, start, end, u64::MAX).map(|_| ())
    }

    /// [`populate`](Self::populate) of at most `budget` pages: returns where it stopped
    /// (`end` when done), so a caller can release the address space between batches.
    pub fn populate_some<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        budget: u64,
    ) -> Result<VirtAddr, MmError> {
        self.populate_some_inner(mm, start, end, budget, None)
    }

    /// [`populate_some`](Self::populate_some) for a caller that lets its hold go to fill a
    /// file page (the kernel): it stops at the first page not cached yet, setting `fill`
    /// ([`crate::fault::populate_fault`]); the caller fills it unlocked and goes on from the
    /// address returned.
    pub fn populate_some_unlocked_fill<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        budget: u64,
        fill: &mut Option<crate::fault::PendingFill>,
    ) -> Result<VirtAddr, MmError> {
        self.populate_some_inner(mm, start, end, budget, Some(fill))
    }

    fn populate_some_inner<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        mut budget: u64,
        mut fill: Option<&mut Option<crate::fault::PendingFill>>,
    ) -> Result<VirtAddr, MmError> {
        let mut va = start.as_u64();
        while va < end.as_u64() {
            // A hole (unmapped by another thread between two batches, with the lock dropped)
            // is skipped to the next VMA, as Linux's `__mm_populate` does: the range's lock
            // flags are already set, and mlock returns 0.
            let Some((prot, kind, vma_end)) = self
                .find_vma(VirtAddr::new(va))
                .map(|v| (v.prot(), populate_fault_kind(v), v.end().as_u64()))
            else {
                match self.vmas.range(va + 1..end.as_u64()).next() {
                    Some((&next, _)) => {
                        va = next;
                        continue;
                    }
                    None => return Ok(end),
                }
            };
            let stop = vma_end.min(end.as_u64());
            // An inaccessible VMA is skipped whole, as `__mm_populate` does: a walk per page
            // would let mlock of a huge PROT_NONE reservation hold the kernel for minutes.
            if !prot.accessible() {
                va = stop;
                continue;
            }
            while va < stop {
                if budget == 0 {
                    return Ok(VirtAddr::new(va));
                }
                let at = VirtAddr::new(va);
                if let Some(fill) = fill.as_deref_mut() {
                    *fill = populate_fault(mm, self, at, kind).map_err(|_| MmError::NoMem)?;
                    if fill.is_some() {
                        return Ok(at);
                    }
                } else {
                    handle_mm_fault(mm, self, at, kind).map_err(|_| MmError::NoMem)?;
                }
                va += PAGE_SIZE as u64;
                budget -= 1;
            }
        }
        Ok(end)
    }
}

/// How populating (`mlock`, `MAP_LOCKED`, `mlockall`, `MAP_POPULATE`) faults a page of `vma`
/// in (Linux `populate_vma_page_range`: `FOLL_WRITE` only when `VM_WRITE` is set and
/// `VM_SHARED` is not): a private writable mapping for writing, so each page gets its own copy
/// now and a later store does not fault; every other mapping for reading. A shared file
/// mapping is populated clean and read-only (its first store still takes write-notify's
/// fault), never dirtied whole by the lock: writeback would otherwise store every locked page.
fn populate_fault_kind(vma: &Vma) -> FaultKind {
    if vma.prot().write() && vma.sharing() == Sharing::Private {
        FaultKind::Write
    } else {
        FaultKind::Read
    }
}

/// `[addr, addr + len)` widened to pages (Linux: `len` grows by `addr`'s offset in its page);
/// `None` for an empty range, `NoMem` past user space, `Inval` on overflow.
fn page_range(addr: VirtAddr, len: usize) -> Result<Option<(VirtAddr, VirtAddr)>, MmError> {
    let start = addr.as_u64() & !(PAGE_SIZE as u64 - 1);
    let end = addr
        .as_u64()
        .checked_add(len as u64)
        .and_then(|e| e.checked_add(PAGE_SIZE as u64 - 1))
        .ok_or(MmError::Inval)?
        & !(PAGE_SIZE as u64 - 1);
    if end > USER_END {
        return Err(MmError::NoMem);
    }
    if end == start {
        return Ok(None);
    }
    Ok(Some((VirtAddr::new(start), VirtAddr::new(end))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{Env, PAGE};
    use crate::vma::Prot;

    /// Regression (review): populate walked a PROT_NONE VMA page by page under the
    /// address-space lock, so mlock of a huge reservation held the kernel for minutes. 16 TiB
    /// (2^32 pages) would take hours that way; skipped whole, it is one step.
    #[test]
    fn mlock_of_a_huge_prot_none_mapping_skips_it_whole() {
        let env = Env::new();
        let mut s = env.space();
        let pages = 1u64 << 32;
        let a = env.map(&mut s, 0, pages, Prot::NONE);
        s.mlock(
            &env.mm,
            a,
            (pages * PAGE) as usize,
            LockMode::Populate,
            u64::MAX,
        )
        .expect("mlock");
        assert_eq!(s.locked_vm(), pages);
        assert!(s.translate(&env.mm, a).is_none(), "nothing populated");
        env.finish(alloc::vec![s]);
    }

    #[test]
    fn mlock_populates_counts_and_respects_the_limit() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 16, Prot::RW);
        let free = env.mm.frames().free_frames();
        // Lock the middle 4 pages: they are populated now, the VMA splits in three.
        s.mlock(
            &env.mm,
            a + 4 * PAGE,
            4 * PAGE as usize,
            LockMode::Populate,
            8,
        )
        .expect("mlock");
        assert_eq!(s.locked_vm(), 4);
        assert_eq!(s.vmas().count(), 3);
        assert!(free - env.mm.frames().free_frames() >= 4, "pages populated");
        for p in 4..8 {
            assert!(s.translate(&env.mm, a + p * PAGE).is_some());
        }
        env.check(&[&s]);
        // Relocking what is locked costs nothing (and overlapping it counts only the new pages);
        // 5 more pages pass the 8-page limit.
        s.mlock(
            &env.mm,
            a + 4 * PAGE,
            4 * PAGE as usize,
            LockMode::Populate,
            8,
        )
        .expect("relock");
        s.mlock(
            &env.mm,
            a + 3 * PAGE,
            2 * PAGE as usize,
            LockMode::Populate,
            5,
        )
        .expect("one new page");
        s.munlock(&env.mm, a + 3 * PAGE, PAGE as usize)
            .expect("munlock one");
        assert_eq!(
            s.mlock(
                &env.mm,
                a + 8 * PAGE,
                5 * PAGE as usize,
                LockMode::OnFault,
                8
            ),
            Err(MmError::NoMem)
        );
        assert_eq!(s.locked_vm(), 4, "a refused mlock changes nothing");
        // MLOCK_ONFAULT locks without populating.
        s.mlock(
            &env.mm,
            a + 12 * PAGE,
            2 * PAGE as usize,
            LockMode::OnFault,
            8,
        )
        .expect("onfault");
        assert_eq!(s.locked_vm(), 6);
        assert!(s.translate(&env.mm, a + 12 * PAGE).is_none());
        // A hole is ENOMEM.
        assert_eq!(
            s.mlock(
                &env.mm,
                a + 15 * PAGE,
                2 * PAGE as usize,
                LockMode::Populate,
                100
            ),
            Err(MmError::NoMem)
        );
        // munlock merges the VMAs back; munmap of a locked range drops its count.
        s.munlock(&env.mm, a + 4 * PAGE, 4 * PAGE as usize)
            .expect("munlock");
        assert_eq!(s.locked_vm(), 2);
        s.munmap(&env.mm, a + 12 * PAGE, 2 * PAGE as usize)
            .expect("munmap");
        assert_eq!(s.locked_vm(), 0);
        env.check(&[&s]);
        env.finish(alloc::vec![s]);
    }

    #[test]
    fn locks_are_not_inherited_by_fork_and_mlockall_checks_the_whole_space() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 8, Prot::RW);
        assert_eq!(
            s.mlockall(&env.mm, LockMode::Populate, 7),
            Err(MmError::NoMem)
        );
        s.mlockall(&env.mm, LockMode::Populate, 8)
            .expect("mlockall");
        assert_eq!(s.locked_vm(), 8);
        for p in 0..8 {
            assert!(s.translate(&env.mm, a + p * PAGE).is_some());
        }
        let child = s.fork(&env.mm).expect("fork");
        assert_eq!(child.locked_vm(), 0);
        s.munlockall(&env.mm);
        assert_eq!(s.locked_vm(), 0);
        env.check(&[&s, &child]);
        env.finish(alloc::vec![s, child]);
    }

    #[test]
    fn mlock_future_locks_and_populates_new_mappings_until_munlockall() {
        let env = Env::new();
        let mut s = env.space();
        s.mlock_future(LockMode::Populate);
        assert!(s.locks_future());
        let a = env.map(&mut s, 0, 4, Prot::RW);
        assert_eq!(s.locked_vm(), 4);
        // The caller populates, with the lock dropped (the syscall layer's batches).
        assert!(s.wants_populate(a));
        assert!(
            s.translate(&env.mm, a).is_none(),
            "not populated under the lock"
        );
        s.populate(&env.mm, a, a + 4 * PAGE).expect("populate");
        for p in 0..4 {
            assert!(s.translate(&env.mm, a + p * PAGE).is_some(), "populated");
        }
        // Not inherited by a fork child.
        let mut child = s.fork(&env.mm).expect("fork");
        assert!(!child.locks_future());
        let c = env.map(&mut child, 16 * PAGE, 2, Prot::RW);
        assert!(child.translate(&env.mm, c).is_none());
        // On fault: locked, not populated.
        s.mlock_future(LockMode::OnFault);
        let b = env.map(&mut s, 32 * PAGE, 2, Prot::RW);
        assert_eq!(s.locked_vm(), 6);
        assert!(!s.wants_populate(b));
        assert!(s.translate(&env.mm, b).is_none());
        s.munlockall(&env.mm);
        assert!(!s.locks_future());
        let d = env.map(&mut s, 48 * PAGE, 2, Prot::RW);
        assert_eq!(s.locked_vm(), 0);
        assert!(s.translate(&env.mm, d).is_none());
        env.check(&[&s, &child]);
        env.finish(alloc::vec![s, child]);
    }

    /// `MAP_LOCKED` (Linux `calc_vm_flag_bits` -> `VM_LOCKED`): the new VMA is locked as
    /// `mlock` locks it, counted in `locked_vm`, to be populated by the caller
    /// (`wants_populate`), not inherited by fork, and unlocked by munlock; a `MAP_LOCKED`
    /// mapping of a shared anonymous object too. Before pcfix4 the flag was ignored.
    #[test]
    fn map_locked_locks_the_new_mapping_as_mlock_does() {
        use crate::mmap::MapFlags;
        let env = Env::new();
        let mut s = env.space();
        let base = crate::tests::BASE;
        let a = s
            .mmap(
                &env.mm,
                VirtAddr::new(base),
                4 * PAGE as usize,
                crate::vma::Prot::RW,
                MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED | MapFlags::LOCKED,
            )
            .expect("mmap MAP_LOCKED");
        assert_eq!(s.locked_vm(), 4, "MAP_LOCKED counts as mlock");
        assert!(s.find_vma(a).unwrap().flags().contains(VmaFlags::LOCKED));
        assert!(s.wants_populate(a), "the caller populates it");
        s.populate(&env.mm, a, a + 4 * PAGE).expect("populate");
        for p in 0..4 {
            assert!(s.translate(&env.mm, a + p * PAGE).is_some(), "populated");
        }
        let b = s
            .mmap(
                &env.mm,
                VirtAddr::new(base + 16 * PAGE),
                2 * PAGE as usize,
                crate::vma::Prot::RW,
                MapFlags::SHARED | MapFlags::ANONYMOUS | MapFlags::FIXED | MapFlags::LOCKED,
            )
            .expect("mmap shared MAP_LOCKED");
        assert_eq!(s.locked_vm(), 6);
        // Without the flag nothing is locked.
        let c = env.map(&mut s, 32 * PAGE, 2, crate::vma::Prot::RW);
        assert!(!s.wants_populate(c));
        assert_eq!(s.locked_vm(), 6);
        let child = s.fork(&env.mm).expect("fork");
        assert_eq!(child.locked_vm(), 0, "not inherited");
        s.munlock(&env.mm, b, 2 * PAGE as usize).expect("munlock");
        assert_eq!(s.locked_vm(), 4);
        env.check(&[&s, &child]);
        env.finish(alloc::vec![s, child]);
    }

    /// A hole met by a later batch (unmapped between batches) is skipped, as Linux's
    /// `__mm_populate`: the VMA after it is still populated and the call succeeds.
    #[test]
    fn populate_some_skips_a_hole_made_between_batches() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 12, Prot::RW);
        let end = a + 12 * PAGE;
        let next = s.populate_some(&env.mm, a, end, 2).expect("populate");
        assert_eq!(next, a + 2 * PAGE);
        s.munmap(&env.mm, a + 4 * PAGE, (4 * PAGE) as usize)
            .expect("munmap");
        let mut va = next;
        while va < end {
            va = s
                .populate_some(&env.mm, va, end, 2)
                .expect("a hole is no error");
        }
        assert_eq!(va, end);
        for p in (0..4).chain(8..12) {
            assert!(
                s.translate(&env.mm, a + p * PAGE).is_some(),
                "page {p} populated"
            );
        }
        // A range ending in a hole finishes too.
        s.munmap(&env.mm, a + 10 * PAGE, (2 * PAGE) as usize)
            .expect("munmap");
        assert_eq!(s.populate_some(&env.mm, a + 9 * PAGE, end, 8), Ok(end));
        env.check(&[&s]);
        env.finish(alloc::vec![s]);
    }
}
