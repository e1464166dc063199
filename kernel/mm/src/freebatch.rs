//! Pages freed in batches (the page-freeing half of Linux's `mmu_gather`, `folio_batch` with
//! `free_unref_folios`): a long drop of clean page-cache pages (`drop_caches`, reclaim) took
//! the free list's lock once per page; a [`FreeBatch`] drops each page's reference as it goes
//! and returns the frames whose last reference went to the free list together, one lock
//! acquisition per [`FREE_BATCH`] frames.
//!
//! No TLB flush is gathered: the pages batched here are unmapped (a cache page is dropped only
//! while the cache holds its one reference, so no PTE and no pin can reach it). Paths that
//! unmap pages use [`crate::tlb`]'s `MmuGather`, which flushes before its frees.

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::frame::FrameFlags;
use crate::mm::Mm;

/// Frames per free-list lock (the size of `MmuGather`'s page batch).
pub const FREE_BATCH: usize = 64;

/// Frames whose last reference was dropped, not yet on the free list.
#[must_use = "finish() puts the gathered frames on the free list"]
pub(crate) struct FreeBatch {
    frames: [PhysAddr; FREE_BATCH],
    n: usize,
}

impl FreeBatch {
    pub(crate) fn new() -> Self {
        FreeBatch {
            frames: [PhysAddr::zero(); FREE_BATCH],
            n: 0,
        }
    }

    /// Drops one reference on `frame` (Linux `folio_put` into a batch); the last one parks
    /// the frame here until the batch is full or finished. A frame of a large folio or an
    /// anonymous one takes [`Mm::put_page`]'s path, with its folio and counter work.
    pub(crate) fn put<A: Arch>(&mut self, mm: &Mm<A>, frame: PhysAddr) {
        let meta = mm.frames().meta(frame);
        if meta
            .flags()
            .intersects(FrameFlags::HEAD | FrameFlags::TAIL | FrameFlags::ANON)
        {
            mm.put_page(frame);
            return;
        }
        if self.n == FREE_BATCH {
            self.flush(mm);
        }
        if mm.frames().put_small_deferred(meta, frame) {
            // As in `put_page`: the hook runs while the frame is still allocated.
            mm.arch().frame_freed(frame);
            self.frames[self.n] = frame;
            self.n += 1;
        }
    }

    fn flush<A: Arch>(&mut self, mm: &Mm<A>) {
        mm.frames().release_batch(&self.frames[..self.n]);
        self.n = 0;
    }

    /// Puts every parked frame on the free list.
    pub(crate) fn finish<A: Arch>(mut self, mm: &Mm<A>) {
        self.flush(mm);
    }
}
