//! A user address space (Linux `mm_struct`): page tables, VMAs and per-process accounting.
//!
//! The VMAs live in a `BTreeMap` keyed by start address, so the fault path finds the VMA of an
//! address in O(log n) however many mappings exist. Operations that change VMAs take
//! `&mut AddressSpace` (the kernel's mmap lock held for writing); so do faults and fork, which
//! change PTEs: in cowlab the holder of `&mut` is the only writer of this space's page tables.
//! What lock-free readers (GUP-fast, `gup.rs`) may look at is atomic: `write_protect_seq`,
//! `has_pinned`, the PTEs themselves.
//!
//! Invariants: VMAs are disjoint, non-empty, page aligned and inside `[MMAP_MIN_ADDR, USER_END)`;
//! every mapping PTE lies inside a VMA and grants no more than it; the root's kernel half is the
//! template's.

#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::error::MmError;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{PageTable, Pte};
use crate::vma::{Vma, VmaFlags};
use crate::vmacache::VmaTree;

/// End of user space (Linux `TASK_SIZE` with 4-level paging: the last page below the
/// non-canonical hole is left unmapped).
pub const USER_END: u64 = 0x0000_7fff_ffff_f000;
/// Lowest address a mapping may have (Linux `mmap_min_addr` default: no NULL-page mappings).
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// Where top-down placement starts (Linux's `mmap_base` for an 8 MiB stack limit, without
/// randomisation: `TASK_SIZE` minus a 128 MiB gap).
pub const DEFAULT_MMAP_BASE: u64 = USER_END - 128 * 1024 * 1024;

/// Program-break state (`brk`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Brk {
    /// Start of the heap (end of the program's data), set by exec.
    pub(crate) start: VirtAddr,
    /// Current break; the heap VMA covers `[start, align_up(cur))`.
    pub(crate) cur: VirtAddr,
}

/// One process's address space.
pub struct AddressSpace {
    pub(crate) root: PhysAddr,
    /// Reads through `Deref`; changes through `vmas.map_mut()` (which drops the lookup cache).
    pub(crate) vmas: VmaTree,
    pub(crate) brk: Brk,
    pub(crate) mmap_base: VirtAddr,
    /// How far a `GROWSDOWN` stack may grow (`RLIMIT_STACK`; `stack.rs`).
    pub(crate) stack_limit: u64,
    /// Flags every new mapping gets (Linux `mm->def_flags`): the lock flags after
    /// `mlockall(MCL_FUTURE)` (`mlock.rs`); not inherited by a fork child.
    pub(crate) def_flags: VmaFlags,
    /// Ranges a batched munmap is freeing with the lock dropped between its steps
    /// (`munmap.rs`): faults there fail as if the VMAs were already gone.
    pub(crate) unmapping: alloc::vec::Vec<(VirtAddr, VirtAddr)>,
    minflt: AtomicU64,
    /// Linux `hiwater_rss`: the most resident pages seen at a sample (`rss.rs`).
    pub(crate) hiwater_rss: AtomicU64,
    /// What other CPUs read without the lock: `mm_cpumask`, `write_protect_seq`, `has_pinned`.
    pub(crate) shared: Arc<MmShared>,
    /// Where exec put argv/envp and what it ran (`layout.rs`).
    pub(crate) layout: crate::layout::ExecLayout,
}

impl AddressSpace {
    /// An empty address space whose root shares the kernel half (Linux `mm_alloc`).
    pub fn new<A: Arch>(mm: &Mm<A>) -> Result<AddressSpace, MmError> {
        let root = PageTable::create_root(mm).ok_or(MmError::NoMem)?;
        Ok(AddressSpace {
            root,
            vmas: VmaTree::new(),
            brk: Brk::default(),
            mmap_base: VirtAddr::new(DEFAULT_MMAP_BASE),
            stack_limit: crate::stack::DEFAULT_STACK_LIMIT,
            def_flags: VmaFlags::NONE,
            unmapping: alloc::vec::Vec::new(),
            minflt: AtomicU64::new(0),
            hiwater_rss: AtomicU64::new(0),
            shared: Arc::new(MmShared::new(root)),
            layout: Default::default(),
        })
    }

    /// Physical address of the PML4: what CR3 gets.
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// The page tables, for this crate's walks. Crate-private: a [`crate::pagetable::PteRef`]
    /// it hands out lives as long as the `Mm`, not the address space, so safe code outside
    /// could keep one after `exit` or a zap freed its table. Outside the crate, use
    /// [`AddressSpace::translate`] (a value, not a slot).
    pub(crate) fn page_table<'m, A: Arch>(&self, mm: &'m Mm<A>) -> PageTable<'m, A> {
        PageTable::new(mm, self.root)
    }

    /// The VMA containing `va` (Linux `vma_lookup`): the last one found if it still fits,
    /// else O(log n). `#[inline]` (with `VmaTree::find`): the cache hit is a few instructions,
    /// less than the out-of-line call through the GOT the kernel crate's fault path paid.
    #[inline]
    pub fn find_vma(&self, va: VirtAddr) -> Option<&Vma> {
        self.vmas.find(va)
    }

    /// Every VMA in address order.
    pub fn vmas(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.values()
    }

    /// The leaf PTE mapping `va`, without faulting (`None` if nothing is mapped there).
    pub fn translate<A: Arch>(&self, mm: &Mm<A>, va: VirtAddr) -> Option<Pte> {
        self.page_table(mm).translate(va)
    }

    /// Where top-down `mmap` placement starts; exec sets it below the stack.
    pub fn set_mmap_base(&mut self, base: VirtAddr) {
        self.mmap_base = base.align_down();
    }

    /// Minor faults so far (`getrusage` `ru_minflt`).
    pub fn minor_faults(&self) -> u64 {
        self.minflt.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn count_minor_fault(&self) {
        // Faults on one address space are serialised (`&mut`), so no RMW is needed. Wrapping,
        // as Linux's `min_flt`: 2^64 faults never happen, and the release kernel's overflow
        // check cost every fault a compare and a branch.
        let n = self.minflt.load(Ordering::Relaxed);
        self.minflt.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    /// Has this process ever pinned a page (Linux `MMF_HAS_PINNED`)? Lets fork skip the pin
    /// check for the common process that never pinned.
    pub fn has_pinned(&self) -> bool {
        self.shared.has_pinned()
    }

    /// This address space's COW fault outcomes so far (`cowstat`; `/proc/<pid>/cowlab`).
    pub fn cow_counts(&self) -> crate::cowstat::CowSnapshot {
        self.shared.cow.snapshot()
    }

    /// The lock-free part of this address space, for a scheduler that must set and clear
    /// `mm_cpumask` bits without the address-space lock (clone the `Arc` into the task).
    pub fn shared(&self) -> &Arc<MmShared> {
        &self.shared
    }

    /// CPU `cpu` is about to load this root into CR3 ([`MmShared::mm_cpumask_set`]).
    pub fn mm_cpumask_set(&self, cpu: usize) {
        self.shared.mm_cpumask_set(cpu);
    }

    /// CPU `cpu` loaded another root ([`MmShared::mm_cpumask_clear`]).
    pub fn mm_cpumask_clear(&self, cpu: usize) {
        self.shared.mm_cpumask_clear(cpu);
    }

    /// The CPUs that may cache this space's translations (bit per CPU).
    pub fn mm_cpumask(&self) -> u64 {
        self.shared.mm_cpumask()
    }

    /// The fork sequence count: odd while fork is write-protecting this space's PTEs. GUP-fast
    /// samples it before and after pinning and retries on a change (Linux `write_protect_seq`).
    pub fn write_protect_seq(&self) -> &AtomicU32 {
        self.shared.write_protect_seq()
    }

    /// Changes whenever an operation that Linux does under `mmap_lock` held for writing ran on
    /// this space (Linux's `mm_lock_seq` plays this part): every VMA change (mmap, munmap,
    /// mprotect, mremap, brk, mlock, flag-setting madvise: `vmas.map_mut()`) and every fork
    /// (`write_protect_seq`, two steps per fork). `MADV_DONTNEED` changes neither: Linux runs
    /// it under the read lock, inside a GUP caller's `cond_resched()` window. The GUP slow
    /// path compares it across a let-go (`gup.rs`): a change is Linux's dropped-and-retaken
    /// `mmap_lock`, after which `__get_user_pages` starts again from the caller's flags.
    pub fn mmap_write_seq(&self) -> u64 {
        self.vmas
            .changes()
            .wrapping_add(u64::from(self.write_protect_seq().load(Ordering::Acquire)))
    }

    /// Opens a write-protect section (Linux `raw_write_seqcount_begin`): the odd value is
    /// visible before any PTE store of the section, and (`SeqCst` fence) before fork reads any
    /// `pincount`: a GUP-fast pin that fork's read misses is followed by that pinner's own
    /// fence and re-read of this count, which then sees the odd value and backs off.
    pub(crate) fn write_protect_begin(&self) {
        let seq = self.write_protect_seq();
        let s = seq.load(Ordering::Relaxed);
        debug_assert!(s.is_multiple_of(2), "nested write-protect section");
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Closes it: every PTE store of the section is visible before the even value.
    pub(crate) fn write_protect_end(&self) {
        let seq = self.write_protect_seq();
        let s = seq.load(Ordering::Relaxed);
        seq.store(s.wrapping_add(1), Ordering::Release);
    }

    /// A copy of the bookkeeping for a fork child: same VMAs and layout, fresh counters.
    pub(crate) fn fork_shell(&self, root: PhysAddr) -> AddressSpace {
        AddressSpace {
            root,
            vmas: VmaTree::new(),
            brk: self.brk,
            mmap_base: self.mmap_base,
            stack_limit: self.stack_limit,
            def_flags: VmaFlags::NONE,
            unmapping: alloc::vec::Vec::new(),
            minflt: AtomicU64::new(0),
            hiwater_rss: AtomicU64::new(0),
            shared: Arc::new(MmShared::new(root)),
            layout: self.layout.clone(),
        }
    }

    // ---- VMA-set primitives used by mmap, munmap, mprotect, madvise and brk ----

    /// Refuses (`NoMem`) an operation that may add up to `extra` VMAs if that could take this
    /// process past `max_map_count` (Linux `__split_vma` and `do_mmap` check
    /// `map_count >= sysctl_max_map_count`) or all address spaces past cowlab's system-wide
    /// cap (the kernel heap that holds VMAs is fixed). Called before anything is changed, so
    /// a refused operation leaves the address space as it was. `extra` is an upper bound
    /// (merges are not anticipated). Check-then-add is not one atomic step: operations on
    /// different address spaces running at once may each pass, overshooting the system-wide
    /// cap by at most their `extra` (2) each; the cap leaves far more heap headroom than that.
    pub(crate) fn check_map_count<A: Arch>(&self, mm: &Mm<A>, extra: usize) -> Result<(), MmError> {
        if extra == 0 {
            return Ok(());
        }
        let (per_process, total) = mm.vma_limits();
        if self.vmas.len() + extra > per_process || mm.live_vmas() + extra > total {
            return Err(MmError::NoMem);
        }
        Ok(())
    }

    /// How many VMAs splitting at `start` and `end` adds (0, 1 or 2): one per end strictly
    /// inside a VMA.
    pub(crate) fn splits_needed(&self, start: VirtAddr, end: VirtAddr) -> usize {
        let inside = |at: VirtAddr| self.find_vma(at).is_some_and(|v| v.start < at);
        usize::from(inside(start)) + usize::from(inside(end))
    }

    /// How many VMAs removing `[start, end)` adds: 1 if the range is strictly inside one VMA
    /// (a hole punched in its middle leaves two pieces), else 0 (the pieces split off at the
    /// ends are removed with the range).
    pub(crate) fn punch_extra(&self, start: VirtAddr, end: VirtAddr) -> usize {
        usize::from(
            self.find_vma(start)
                .is_some_and(|v| v.start < start && end < v.end),
        )
    }

    /// Is any part of `[start, end)` covered by a VMA?
    pub(crate) fn overlaps(&self, start: VirtAddr, end: VirtAddr) -> bool {
        if let Some((_, v)) = self.vmas.range(..end.as_u64()).next_back() {
            return v.end > start;
        }
        false
    }

    /// Is all of `[start, end)` covered by VMAs, without holes?
    pub(crate) fn fully_mapped(&self, start: VirtAddr, end: VirtAddr) -> bool {
        let Some(first) = self.find_vma(start) else {
            return false;
        };
        let mut at = first.end;
        if at >= end {
            return true;
        }
        for (_, v) in self.vmas.range(at.as_u64()..end.as_u64()) {
            if v.start != at {
                return false;
            }
            at = v.end;
        }
        at >= end
    }

    /// Splits the VMA containing `at` (if `at` is strictly inside one) into two at `at`
    /// (Linux `split_vma`). Page tables are unaffected.
    pub(crate) fn split_at(&mut self, at: VirtAddr) {
        let Some((&key, vma)) = self.vmas.map_mut().range_mut(..at.as_u64()).next_back() else {
            return;
        };
        if vma.end <= at {
            return;
        }
        let mut upper = vma.clone();
        upper.advance_start(at);
        vma.end = at;
        debug_assert!(key < at.as_u64());
        self.vmas.map_mut().insert(at.as_u64(), upper);
    }

    /// Splits so that `start` and `end` are VMA boundaries; returns the keys of the VMAs now
    /// inside `[start, end)`.
    pub(crate) fn isolate(&mut self, start: VirtAddr, end: VirtAddr) -> alloc::vec::Vec<u64> {
        self.split_at(start);
        self.split_at(end);
        self.vmas
            .range(start.as_u64()..end.as_u64())
            .map(|(&k, _)| k)
            .collect()
    }

    /// Inserts a VMA into a hole (the caller checked there is no overlap) and merges it with
    /// identical neighbours.
    pub(crate) fn insert_vma(&mut self, vma: Vma) {
        debug_assert!(
            !self.overlaps(vma.start, vma.end),
            "inserting an overlapping VMA"
        );
        let key = vma.start.as_u64();
        self.vmas.map_mut().insert(key, vma);
        self.merge_around(VirtAddr::new(key));
    }

    /// Merges the VMA starting at `start` with its neighbours where attributes allow (Linux
    /// `vma_merge`), so a split undone by a later mprotect leaves one VMA again.
    pub(crate) fn merge_around(&mut self, start: VirtAddr) {
        let mut key = start.as_u64();
        // With the previous one.
        if let Some((&pk, prev)) = self.vmas.range(..key).next_back() {
            if prev.can_merge_with(&self.vmas[&key]) {
                let cur = self
                    .vmas
                    .map_mut()
                    .remove(&key)
                    .expect("VMA vanished during merge");
                self.vmas.map_mut().get_mut(&pk).expect("previous VMA").end = cur.end;
                key = pk;
            }
        }
        // With the next one.
        let end = self.vmas[&key].end.as_u64();
        if let Some(next) = self.vmas.get(&end) {
            if self.vmas[&key].can_merge_with(next) {
                let next = self.vmas.map_mut().remove(&end).expect("next VMA");
                self.vmas.map_mut().get_mut(&key).expect("VMA").end = next.end;
            }
        }
    }
}

/// Validates a user range `[addr, addr + len)`: `addr` page aligned (`EINVAL`), `len` non-zero
/// (`EINVAL`), the rounded-up end inside user space (`ENOMEM` as Linux's `munmap` and
/// `mprotect` answer, or `EINVAL` per caller). Returns the page-aligned `[start, end)`.
pub(crate) fn user_range(addr: VirtAddr, len: usize) -> Result<(VirtAddr, VirtAddr), MmError> {
    if !addr.is_page_aligned() || len == 0 {
        return Err(MmError::Inval);
    }
    let end = addr
        .as_u64()
        .checked_add(len as u64)
        .and_then(|e| VirtAddr::new(e).checked_align_up())
        .ok_or(MmError::Inval)?;
    if end.as_u64() > USER_END {
        return Err(MmError::Inval);
    }
    Ok((addr, end))
}
