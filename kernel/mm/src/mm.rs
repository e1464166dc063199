//! The global memory-management context: one [`Mm`] per machine.
//!
//! It ties the frame table, the platform ([`Arch`]) and the shared zero page together, holds the
//! current rule set and the counters, and owns the few primitives every policy module uses to
//! move a frame into or out of a mapping. The invariant it keeps: every frame handed to user
//! space, and every page-table page, is accounted in a counter and in the frame's metadata at
//! the moment it changes hands, so `check` can recompute and compare.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::era::Era;
use crate::error::MmError;
use crate::frame::{FrameFlags, FrameMeta, FrameTable};
use crate::pagetable::Pte;
use crate::phys::PhysWindow;
use crate::stats::{self, Counters, MmStats};

/// The memory manager. `A` is the platform: the kernel's hardware implementation, or
/// `host::HostArch` under `cargo test`.
pub struct Mm<A: Arch> {
    frames: &'static FrameTable,
    arch: A,
    phys: PhysWindow,
    zero_page: PhysAddr,
    kernel_template: Option<PhysAddr>,
    era: AtomicU8,
    pub(crate) counters: Counters,
    /// The fault trace (`trace.rs`), off unless switched on.
    pub trace: crate::trace::FaultTrace,
    /// VMAs held by every live address space together (the sum of their VMA counts), kept by
    /// the VMA-changing entry points and `exit`; checked against `max_vmas`.
    live_vmas: AtomicUsize,
    /// Per-process VMA limit (Linux `sysctl_max_map_count`), [`MAX_MAP_COUNT`] unless a test
    /// lowers it.
    max_map_count: AtomicUsize,
    /// System-wide VMA limit, [`MAX_VMAS`] unless a test lowers it.
    max_vmas: AtomicUsize,
    /// Frees clean page-cache pages when an allocation finds no frame (Linux's shrinkers, run
    /// by direct reclaim); set by the kernel, which owns the caches. Returns the frames freed.
    shrinker: spin::Mutex<Option<fn() -> usize>>,
    /// `/sys/kernel/mm/transparent_hugepage/` (`huge_memory.rs`).
    thp: crate::huge_memory::ThpSettings,
}

/// Linux's default `vm.max_map_count` (`DEFAULT_MAX_MAP_COUNT`, 65530): an operation that
/// would leave a process with more VMAs fails with `ENOMEM`.
pub const MAX_MAP_COUNT: usize = 65530;

/// cowlab's system-wide limit on live VMAs, over every address space (no Linux equivalent:
/// Linux's VMAs come from a slab that can grow, cowlab's from the fixed 64 MiB kernel heap, so
/// enough processes each at `MAX_MAP_COUNT` would exhaust it and the failed allocation would
/// panic). A VMA costs about 100 heap bytes (a 48-byte `Vma` and its 8-byte key in an 11-slot
/// `BTreeMap` leaf, which the ascending inserts of splits leave about half full), so this cap
/// keeps VMAs near 8 MiB, beside the kernel's other budgets (pipes, AIO, io_uring page lists,
/// tmpfs names, kernel stacks): one process at Linux's limit fits, with 16384 VMAs to spare
/// for the rest of the system.
pub const MAX_VMAS: usize = 81_920;

impl<A: Arch> Mm<A> {
    /// Builds the memory manager over `frames` (already filled by `add_free_range`) and `arch`.
    /// `kernel_template` is the PML4 whose entries 256..511 (the kernel half) every new address
    /// space copies: the kernel passes its boot PML4, host tests pass `None`. Allocates the zero
    /// page; `NoMem` if not even that frame is free.
    ///
    /// # Safety
    ///
    /// If `kernel_template` is `Some(t)`:
    ///
    /// 1. `t` is a PML4 page-table page inside `arch`'s physical-memory window (below
    ///    `frames.len()` frames), and stays allocated as a page table as long as the `Mm` lives.
    /// 2. Its entries 256..511 are only ever accessed atomically (the MMU, or `AtomicU64`
    ///    stores), never through a Rust reference or a non-atomic write: every new address space
    ///    reads them atomically to copy the kernel half.
    pub unsafe fn new(
        frames: &'static FrameTable,
        arch: A,
        kernel_template: Option<PhysAddr>,
    ) -> Result<Mm<A>, MmError> {
        let phys = PhysWindow::new(&arch, frames.len());
        let zero_page = frames.alloc().ok_or(MmError::NoMem)?;
        // SAFETY: the frame was just allocated; nobody else can reach it.
        unsafe { phys.zero_frame(zero_page) };
        // The Mm's own reference (refcount 1 from `alloc`) keeps it alive forever.
        frames.meta(zero_page).init_flags(FrameFlags::ZERO);
        Ok(Mm {
            frames,
            arch,
            phys,
            zero_page,
            kernel_template,
            era: AtomicU8::new(Era::default() as u8),
            counters: Counters::default(),
            trace: Default::default(),
            live_vmas: AtomicUsize::new(0),
            max_map_count: AtomicUsize::new(MAX_MAP_COUNT),
            max_vmas: AtomicUsize::new(MAX_VMAS),
            shrinker: spin::Mutex::new(None),
            thp: Default::default(),
        })
    }

    /// The THP controls.
    #[inline]
    pub fn thp(&self) -> &crate::huge_memory::ThpSettings {
        &self.thp
    }

    /// Zeroes a frame the caller just allocated and nobody else can reach (a THP's subpages).
    pub(crate) fn zero_frame_owned(&self, frame: PhysAddr) {
        // SAFETY: the caller's obligation, stated above: freshly allocated, unreachable.
        unsafe { self.phys.zero_frame(frame) };
    }

    /// Zeroes the `n` consecutive frames from `first`, a large folio the caller just allocated
    /// and nobody else can reach, in one pass (see [`PhysWindow::zero_frames`]).
    pub(crate) fn zero_frames_owned(&self, first: PhysAddr, n: usize) {
        // SAFETY: the caller's obligation, stated above: freshly allocated, unreachable.
        unsafe { self.phys.zero_frames(first, n) };
    }

    /// Copies the page `src` (the caller holds a reference and the address space that maps it,
    /// so nobody writes it meanwhile) into `dst`, a frame the caller just allocated and nobody
    /// else can reach (MADV_COLLAPSE's new THP, a hugetlb COW's subpages).
    pub(crate) fn copy_frame_owned(&self, dst: PhysAddr, src: PhysAddr) {
        // SAFETY: the caller's obligations stated above: `dst` is fresh and unreachable, and
        // distinct from `src`, which stays allocated while the caller holds it.
        unsafe { self.phys.copy_frame(dst, src) };
    }

    pub fn frames(&self) -> &'static FrameTable {
        self.frames
    }

    pub fn arch(&self) -> &A {
        &self.arch
    }

    /// The shared zero page: one frame, `ZERO`, never written, never freed.
    pub fn zero_page(&self) -> PhysAddr {
        self.zero_page
    }

    pub(crate) fn kernel_template(&self) -> Option<PhysAddr> {
        self.kernel_template
    }

    /// The rule set in force.
    pub fn era(&self) -> Era {
        Era::from_u8(self.era.load(Ordering::Relaxed))
    }

    /// Switches the rule set. Takes effect at the next decision; pages keep their state.
    pub fn set_era(&self, era: Era) {
        self.era.store(era as u8, Ordering::Relaxed);
    }

    /// VMAs held by all live address spaces together.
    pub fn live_vmas(&self) -> usize {
        self.live_vmas.load(Ordering::Relaxed)
    }

    /// The per-process and system-wide VMA limits in force.
    pub fn vma_limits(&self) -> (usize, usize) {
        (
            self.max_map_count.load(Ordering::Relaxed),
            self.max_vmas.load(Ordering::Relaxed),
        )
    }

    /// Replaces the VMA limits (tests lower them; the kernel keeps the defaults). Existing
    /// VMAs are kept; only operations that would add VMAs beyond the new limits fail.
    pub fn set_vma_limits(&self, per_process: usize, total: usize) {
        self.max_map_count.store(per_process, Ordering::Relaxed);
        self.max_vmas.store(total, Ordering::Relaxed);
    }

    /// An address space's VMA count went from `before` to `after`.
    pub(crate) fn account_vmas(&self, before: usize, after: usize) {
        if after >= before {
            self.live_vmas.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.live_vmas.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> MmStats {
        let mut s = self.counters.snapshot();
        s.free_frames = self.frames.free_frames() as u64;
        s.usable_frames = self.frames.usable_frames() as u64;
        s.zero_page_mappings = u64::from(self.frames.meta(self.zero_page).mapcount());
        s.huge_zero_mappings = u64::from(self.frames.huge_zero_mappings());
        s.deferred_split_queued = self.frames.deferred_split_len() as u64;
        s
    }

    pub(crate) fn phys(&self) -> &PhysWindow {
        &self.phys
    }

    /// Installs the reclaim hook [`Self::alloc_reclaim`] runs before an allocation fails.
    pub fn set_shrinker(&self, shrink: fn() -> usize) {
        *self.shrinker.lock() = Some(shrink);
    }

    /// Runs the reclaim hook, then tries the allocation once more (Linux direct reclaim, after
    /// the fast path found the free lists empty). Off the fast paths: only reached on failure.
    #[cold]
    pub(crate) fn alloc_reclaim(&self) -> Option<PhysAddr> {
        if !self.arch.may_reclaim() {
            return None;
        }
        // Partly unmapped THPs give their unmapped subpages back first (Linux's deferred
        // split shrinker).
        if self.frames.deferred_split_pending() && self.deferred_split_scan() > 0 {
            if let Some(frame) = self.frames.alloc() {
                return Some(frame);
            }
        }
        let shrink = *self.shrinker.lock();
        if shrink.is_some_and(|f| f() > 0) {
            self.frames.alloc()
        } else {
            None
        }
    }

    /// A new zeroed frame nobody else can reach (refcount 1); reclaims clean cache pages first
    /// if none is free.
    pub(crate) fn alloc_zeroed(&self) -> Option<PhysAddr> {
        let frame = self.frames.alloc().or_else(|| self.alloc_reclaim())?;
        // SAFETY: the frame was just allocated; nobody else can reach it.
        unsafe { self.phys.zero_frame(frame) };
        Some(frame)
    }

    /// [`Self::alloc_zeroed`] without reclaim (a page cache that first frees its own pages).
    pub(crate) fn alloc_zeroed_noreclaim(&self) -> Option<PhysAddr> {
        let frame = self.frames.alloc()?;
        // SAFETY: the frame was just allocated; nobody else can reach it.
        unsafe { self.phys.zero_frame(frame) };
        Some(frame)
    }

    /// A new anon page, `ANON|ANON_EXCLUSIVE`, about to be mapped by one PTE: refcount 1,
    /// mapcount 1. Its contents are zero, or a copy of `copy_from`.
    ///
    /// Always inlined (the anon write fault, `wp_page_copy`): out of line, its call and frame,
    /// the test of `copy_from` and a second set-up of the frame's metadata after
    /// `FrameTable::alloc`'s cost the write fault ~30 instructions once `fault_anon_mthp` gave
    /// it a second caller in `fault.rs`.
    #[inline(always)]
    pub(crate) fn alloc_anon_page(&self, copy_from: Option<PhysAddr>) -> Option<PhysAddr> {
        let new_anon = FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE;
        let frame = match self.frames.alloc_as(new_anon, 1) {
            Some(frame) => frame,
            None => self.alloc_reclaim_anon()?,
        };
        crate::faultstat::phase(crate::faultstat::Phase::Alloc);
        match copy_from {
            // The zero page's contents are zeros: zeroing is cheaper than copying.
            Some(src) if src != self.zero_page => {
                // SAFETY: `frame` was just allocated and is distinct from the mapped `src`.
                unsafe { self.phys.copy_frame(frame, src) }
            }
            // SAFETY: the frame was just allocated; nobody else can reach it.
            _ => unsafe { self.phys.zero_frame(frame) },
        }
        crate::faultstat::phase(crate::faultstat::Phase::Copy);
        stats::inc(&self.counters.anon_pages);
        Some(frame)
    }

    /// [`Self::alloc_anon_page`]'s frame when the free lists are empty: reclaim, then the
    /// metadata `alloc_as` would have set.
    #[cold]
    #[inline(never)]
    fn alloc_reclaim_anon(&self) -> Option<PhysAddr> {
        let frame = self.alloc_reclaim()?;
        let meta = self.frames.meta(frame);
        meta.init_flags(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE);
        meta.init_counts(1, 1);
        Some(frame)
    }

    /// A new zeroed page-table page.
    pub(crate) fn alloc_pagetable(&self) -> Option<PhysAddr> {
        // A page table freed with all its entries cleared needs no second zeroing: fork makes
        // ~20 tables, and zeroing each (a 512-iteration `rep stosq`) was most of a bare fork.
        let (frame, zeroed) = self
            .frames
            .alloc_prefer_zeroed()
            .or_else(|| self.alloc_reclaim().map(|f| (f, false)))?;
        if !zeroed {
            // SAFETY: the frame was just allocated; nobody else can reach it.
            unsafe { self.phys.zero_frame(frame) };
        }
        self.frames.meta(frame).init_flags(FrameFlags::PAGETABLE);
        stats::inc(&self.counters.pagetable_pages);
        Some(frame)
    }

    /// Frees a page-table page that no entry points to any more and no TLB caches.
    pub(crate) fn free_pagetable(&self, frame: PhysAddr) {
        self.unmark_pagetable(frame);
        self.frames.free(frame);
    }

    /// [`Self::free_pagetable`] for a table whose 512 entries are all zero (emptied by a zap,
    /// or cleared one by one at teardown): it goes to the frame table's zeroed list, from which
    /// [`Self::alloc_pagetable`] takes it without zeroing it again. Debug builds check the
    /// claim: a stray entry would be a mapping in some later process's tables.
    pub(crate) fn free_pagetable_zeroed(&self, frame: PhysAddr) {
        self.unmark_pagetable(frame);
        #[cfg(debug_assertions)]
        for i in 0..crate::pagetable::ENTRIES {
            // SAFETY: `frame` is a page-table page of an address space being changed by the
            // holder of its `&mut` (obligations 1 and 2 of `Mm::new`); nothing links to it.
            let e = unsafe { self.phys.pte(frame, i) }.load(core::sync::atomic::Ordering::Relaxed);
            assert!(
                e == 0,
                "page table {frame:#x} freed as zeroed with entry {i} = {e:#x}"
            );
        }
        self.frames.free_zeroed(frame);
    }

    /// [`Self::free_pagetable_zeroed`] for a PT its caller has just emptied slot by slot itself
    /// (exit's `PageTable::destroy_pt`, whose loop visits all 512 and stores `EMPTY` into every
    /// used one, with no other user of the table): the debug builds' re-read of all 512 slots
    /// would prove what that loop did, and cost a debug kernel's teardown as much again
    /// (measured: 2 M cycles per table, about half of a killed populate's exit).
    pub(crate) fn free_pagetable_cleared(&self, frame: PhysAddr) {
        self.unmark_pagetable(frame);
        self.frames.free_zeroed(frame);
    }

    fn unmark_pagetable(&self, frame: PhysAddr) {
        let meta = self.frames.meta(frame);
        assert!(
            meta.test(FrameFlags::PAGETABLE),
            "freeing {frame:#x} as a page table, but it is not one"
        );
        meta.clear_flags(FrameFlags::PAGETABLE);
        stats::dec(&self.counters.pagetable_pages);
    }

    /// Adds a mapping (and its reference) of an existing page: fork sharing a page, or the zero
    /// page being mapped (Linux `folio_add_anon_rmap`/`folio_get`).
    pub(crate) fn dup_mapping(&self, frame: PhysAddr) {
        self.dup_mapping_meta(self.frames.meta(frame));
    }

    /// [`Self::dup_mapping`] of a small page (not part of a large folio) for a caller that
    /// already holds the frame's metadata (fork's per-page loop: one metadata lookup and bounds
    /// check per page instead of two).
    #[inline]
    pub(crate) fn dup_small_mapping(meta: &FrameMeta) {
        meta.get();
        meta.inc_mapcount();
    }

    /// [`Self::dup_mapping`] of the zero page (a read fault on an empty PTE): it is never part
    /// of a large folio, so no head lookup; inlined, where the out-of-line `dup_mapping` call
    /// cost the read fault ~12 instructions.
    #[inline(always)]
    pub(crate) fn dup_zero_page(&self) {
        Self::dup_small_mapping(self.frames.meta(self.zero_page));
    }

    /// Drops `n` mappings of the zero page and their references at once (exit's teardown of a
    /// PT: `PageTable::destroy_pt`), as `n` calls of [`Self::remove_mapping`] and
    /// [`Self::put_page`] would: the zero page is never part of a large folio, never
    /// `ANON_EXCLUSIVE`, and the `Mm`'s own reference keeps it from being freed.
    pub(crate) fn unmap_zero_page_many(&self, n: u32) {
        let meta = self.frames.meta(self.zero_page);
        meta.sub_mapcount(n);
        meta.put_many_not_last(n);
    }

    /// [`Self::dup_mapping`] for any frame, large folios included.
    #[inline]
    pub(crate) fn dup_mapping_meta(&self, meta: &FrameMeta) {
        self.frames.head_meta(meta).get();
        meta.inc_mapcount();
    }

    /// Drops one mapping of `frame` (Linux `folio_remove_rmap_pte`). The reference the mapping
    /// held is *not* dropped: the caller passes it to [`Self::put_page`] once no TLB can still
    /// translate to the frame.
    pub(crate) fn remove_mapping(&self, frame: PhysAddr) {
        self.remove_mapping_meta(self.frames.meta(frame), frame);
    }

    /// [`Self::remove_mapping`] for a caller holding `frame`'s metadata already (the zap loop
    /// looks it up in a metadata slice it keeps in registers).
    #[inline]
    pub(crate) fn remove_mapping_meta(&self, meta: &FrameMeta, frame: PhysAddr) {
        let old = meta.dec_mapcount();
        if old == 1 {
            let flags = meta.flags();
            if flags.contains(FrameFlags::ANON_EXCLUSIVE) {
                // The last PTE is gone; a later pin or reference must not see "exclusive".
                meta.clear_flags(FrameFlags::ANON_EXCLUSIVE);
            }
            if flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
                // A subpage of a PTE-mapped THP is no longer mapped: split it later.
                self.frames.deferred_split_folio(frame);
            }
        }
    }

    /// Drops one reference (Linux `put_page`), freeing the page with the last one.
    #[inline]
    pub(crate) fn put_page(&self, frame: PhysAddr) {
        self.put_page_meta(self.frames.meta(frame), frame);
    }

    /// [`Self::put_page`] for a caller holding `frame`'s metadata already (unpin paths).
    #[inline]
    pub(crate) fn put_page_meta(&self, meta: &FrameMeta, frame: PhysAddr) {
        // `ANON` never changes while the page is in use, so reading it before the put is exact.
        let anon = meta.test(FrameFlags::ANON);
        // The TLB check runs before the frame is back on the free list: after that, another
        // CPU may reallocate it, map it and cache the new translation, which the check would
        // take for a stale one of the old mapping (a false "freed while mapped").
        let freed = self.frames.put_meta_then(meta, frame, |first, n| {
            if n == 1 {
                self.arch.frame_freed(first);
            } else {
                self.frames_freed(first, n);
            }
        });
        if freed != 0 && anon {
            if freed == 1 {
                stats::dec(&self.counters.anon_pages);
            } else {
                self.uncount_thp(freed);
            }
        }
    }

    /// [`Self::put_page_meta`] for a frame the caller knows is a small page (no large folio),
    /// with its `ANON` flag already read (the unpin loop reads the flags once per page, where
    /// `put_page_meta` would read them twice more).
    #[inline(always)]
    pub(crate) fn put_small_page_meta(&self, meta: &FrameMeta, frame: PhysAddr, anon: bool) {
        if self.frames.put_small_deferred(meta, frame) {
            self.free_small_page(frame, anon);
        }
    }

    /// The last reference of the small page `frame` is gone: the `frame_freed` hook while it is
    /// still allocated, then the free list and the anon counter.
    #[cold]
    #[inline(never)]
    fn free_small_page(&self, frame: PhysAddr, anon: bool) {
        self.arch.frame_freed(frame);
        self.frames.release_batch(&[frame]);
        if anon {
            stats::dec(&self.counters.anon_pages);
        }
    }

    /// Drops one reference on each frame of `pages` (Linux `release_pages`, the page-freeing
    /// half of `tlb_finish_mmu`): the frames whose last reference goes are put on the free list
    /// together, under one acquisition of its lock, and the anon counter moves once. A frame of
    /// a large folio takes [`Self::put_page`]'s path (its folio's count and split work). The
    /// slice is scratch: the freed small frames are compacted to its front.
    ///
    /// Each freed frame passes the `frame_freed` hook while it is still allocated, as in
    /// [`Self::put_page_meta`].
    #[inline]
    pub(crate) fn release_pages(&self, pages: &mut [PhysAddr]) {
        let mut freed = 0;
        let mut anon = 0u64;
        // The slice in registers across the loop's atomics (through `meta` it is reloaded from
        // the table after each).
        let metas = self.frames.metas();
        for i in 0..pages.len() {
            let frame = pages[i];
            let meta = &metas[frame.pfn()];
            // `ANON` never changes while the page is in use: read before the put, it is exact.
            let flags = meta.flags();
            if flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
                self.put_page_meta(meta, frame);
                continue;
            }
            if self.frames.put_small_deferred(meta, frame) {
                self.arch.frame_freed(frame);
                // Wrapping: at most the batch's length.
                anon = anon.wrapping_add(u64::from(flags.contains(FrameFlags::ANON)));
                // `freed <= i`: the slot written was already read.
                pages[freed] = frame;
                freed += 1;
            }
        }
        self.frames.release_batch(&pages[..freed]);
        if anon != 0 {
            self.counters.anon_pages.fetch_sub(anon, Ordering::Relaxed);
        }
    }

    /// The `frame_freed` hook for each frame of a freed large folio.
    #[cold]
    #[inline(never)]
    fn frames_freed(&self, first: PhysAddr, n: usize) {
        for i in 0..n {
            self.arch.frame_freed(first + (i * crate::PAGE_SIZE) as u64);
        }
    }

    /// A freed THP or mTHP of `frames` frames leaves the anon counters.
    #[cold]
    fn uncount_thp(&self, frames: usize) {
        self.counters
            .anon_pages
            .fetch_sub(frames as u64, Ordering::Relaxed);
        if frames == crate::folio::HPAGE_PMD_NR {
            stats::dec(&self.counters.anon_thps);
        } else {
            self.thp().sizes.freed(frames.trailing_zeros());
        }
    }

    /// Is every byte of the zero page zero? For the checker's zero-page invariant.
    pub(crate) fn zero_page_is_zeroed(&self) -> bool {
        let mut buf = [0u8; 512];
        (0..crate::PAGE_SIZE / buf.len()).all(|i| {
            let at = self.zero_page + (i * buf.len()) as u64;
            // SAFETY: the zero page is allocated for the `Mm`'s lifetime and only ever read.
            unsafe { self.phys.read(at, &mut buf) };
            buf.iter().all(|&b| b == 0)
        })
    }

    /// Copies bytes out of a user page the caller reached through a present user PTE (the
    /// [`UserReadable`] proof); the range stays within the page.
    pub(crate) fn read_user_bytes(&self, src: UserReadable, buf: &mut [u8]) {
        // SAFETY: user pages are never Rust objects; they are only ever accessed through raw
        // copies like this one (user space itself is outside the Rust abstract machine); the
        // PTE the proof was made from keeps the frame a user page while the caller holds the
        // address space.
        unsafe { self.phys.read(src.0, buf) };
    }

    /// Copies bytes out of a frame the caller holds a reference to (a shmem cache page, under
    /// the object's lock); the range stays within the frame.
    pub(crate) fn read_frame_bytes(&self, pa: PhysAddr, buf: &mut [u8]) {
        // SAFETY: the reference keeps the frame a data page (never a page table, never free);
        // it is only accessed through raw copies.
        unsafe { self.phys.read(pa, buf) };
    }

    /// Copies bytes into a frame outside any user write permission: a shmem cache page written
    /// by `write(2)` or zeroed by truncation.
    pub(crate) fn write_frame_bytes(&self, pa: PhysAddr, data: &[u8]) {
        // SAFETY: the caller owns a reference to the frame (the object's cache holds one) and is
        // its writer (the object's lock); like every user page, it is only accessed through raw
        // copies, never through a Rust reference.
        unsafe { self.phys.write(pa, data) };
    }

    /// Copies bytes into a user page the caller reached through a present, writable user PTE
    /// of an address space it holds exclusively (the [`UserWritable`] proof).
    pub(crate) fn write_user_bytes(&self, dst: UserWritable, data: &[u8]) {
        let pa = dst.0;
        // SAFETY: as for `read_user_bytes`; the writable PTE (of an exclusive anon page, in a
        // COW mapping) is the process's permission to write, which the kernel exercises on its
        // behalf.
        unsafe { self.phys.write(pa, data) };
    }
}

/// Proof that the kernel may read a user byte range on the process's behalf: made only by
/// [`UserReadable::from_pte`] from a present user PTE.
pub(crate) struct UserReadable(PhysAddr);

impl UserReadable {
    /// From `pte`, the current PTE of `va` in an address space the caller holds: `None` unless
    /// it is present and user-accessible.
    pub(crate) fn from_pte(pte: Pte, va: VirtAddr) -> Option<UserReadable> {
        (pte.is_present() && pte.has(Pte::USER))
            .then(|| UserReadable(pte.frame() + va.page_offset() as u64))
    }
}

/// Proof that the kernel may write a user byte range on the process's behalf: made only by
/// [`UserWritable::from_pte`] from a present, user, writable PTE.
pub(crate) struct UserWritable(PhysAddr);

impl UserWritable {
    /// From `pte`, the current PTE of `va` in an address space the caller holds exclusively:
    /// `None` unless it is present, user-accessible and writable.
    pub(crate) fn from_pte(pte: Pte, va: VirtAddr) -> Option<UserWritable> {
        (pte.is_present() && pte.has(Pte::USER) && pte.is_writable())
            .then(|| UserWritable(pte.frame() + va.page_offset() as u64))
    }
}
