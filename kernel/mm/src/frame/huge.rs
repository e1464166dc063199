//! Physically contiguous 2 MiB blocks for transparent huge pages, over the 4 KiB free lists.
//!
//! Picture: a region allocator beside the LIFO lists, not a full buddy system. A *block* is 512
//! frames starting at a 2 MiB-aligned PFN. Whole free blocks sit on their own list
//! (`FreeList::blocks`, linked through the first frame's `mapcount`, every frame flagged
//! `FREE|BLOCK`). The 4 KiB paths never pay for it: they take from their own lists first and
//! break a block only when those are empty (`break_block`, cold). Freed frames go to the 4 KiB
//! lists as always, whether they came from a block or not; a block is reassembled lazily by
//! [`FrameTable::alloc_block`]'s *harvest*: a scan of the metadata for aligned runs of 512 free
//! frames, which are unlinked from the 4 KiB lists in one pass over them. This is Linux's
//! buddy merging done in bulk on demand instead of at every free, which keeps `free` a push.
//!
//! Invariants: a frame is on exactly one list; `BLOCK` is set exactly on the frames of blocks on
//! the block list; `count` counts every free frame on every list, so the free-frame count the
//! kernel prints at power-off is unchanged by where a frame sits.

use core::sync::atomic::Ordering;

use super::{FrameFlags, FrameTable, FreeList, NIL};
use crate::addr::PhysAddr;

/// log2 of the frames in a block: a PMD maps 2^9 4 KiB pages.
pub const BLOCK_ORDER: u32 = 9;
/// Frames in a 2 MiB block.
pub const BLOCK_FRAMES: usize = 1 << BLOCK_ORDER;

impl FrameTable {
    /// A 2 MiB-aligned run of [`BLOCK_FRAMES`] frames (Linux `alloc_pages(order 9)`): the first
    /// frame has refcount 1, every other frame refcount 0; all have mapcount 0, pincount 0 and
    /// no flags. `None` if no whole block is free, even after a harvest (when `harvest`); the
    /// caller falls back to 4 KiB pages. Contents are not zeroed.
    pub fn alloc_block(&self, harvest: bool) -> Option<PhysAddr> {
        let mut list = self.free.lock();
        if list.blocks == NIL && harvest {
            self.harvest(&mut list);
        }
        if list.blocks == NIL {
            return None;
        }
        let head = list.blocks as usize;
        list.blocks = self.meta[head].mapcount.load(Ordering::Relaxed);
        list.count -= BLOCK_FRAMES;
        drop(list);
        self.init_taken_run(head, BLOCK_FRAMES);
        Some(PhysAddr::from_pfn(head))
    }

    /// Lays out `n` frames from `first` that were just taken off the free lists as a large
    /// allocation: refcount 1 on the first frame, 0 elsewhere, no mapping, pin or flag (a 2 MiB
    /// block, a 1 GiB gigantic run).
    pub(super) fn init_taken_run(&self, first: usize, n: usize) {
        for pfn in first..first + n {
            let meta = &self.meta[pfn];
            // Off every list and reachable by nobody else: plain stores (as `init_allocated`).
            meta.refcount
                .store(u32::from(pfn == first), Ordering::Relaxed);
            meta.mapcount.store(0, Ordering::Relaxed);
            meta.pincount.store(0, Ordering::Relaxed);
            meta.flags.store(0, Ordering::Relaxed);
        }
    }

    /// Panics (a kernel bug) unless each of the `n` frames from `first` may go back to the
    /// free lists whole: none free, reserved or the zero page, none mapped or pinned, and no
    /// reference but at most the caller's last one on the first frame. `who` names the caller.
    pub(super) fn check_run_returnable(&self, first: usize, n: usize, who: &str) {
        for pfn in first..first + n {
            let meta = &self.meta[pfn];
            let flags = meta.flags();
            assert!(
                !flags.intersects(FrameFlags::FREE | FrameFlags::RESERVED | FrameFlags::ZERO),
                "{who}: frame {pfn:#x} is free, reserved or the zero page"
            );
            assert!(
                meta.refcount() <= u32::from(pfn == first)
                    && meta.mapcount() == 0
                    && meta.pincount() == 0,
                "{who}: frame {pfn:#x} is still referenced, mapped or pinned"
            );
        }
    }

    /// Returns a whole block from [`Self::alloc_block`] at once: every frame unmapped and
    /// unpinned, the first holding at most the caller's last reference, the others none.
    /// Panics (a kernel bug) otherwise.
    pub fn free_block(&self, head: PhysAddr) {
        let first = head.pfn();
        assert!(
            first.is_multiple_of(BLOCK_FRAMES) && first + BLOCK_FRAMES <= self.meta.len(),
            "free_block: {head:#x} is not the start of a block"
        );
        self.check_run_returnable(first, BLOCK_FRAMES, "free_block");
        let mut list = self.free.lock();
        self.push_block(&mut list, first);
        list.count += BLOCK_FRAMES;
    }

    /// A naturally aligned run of `2^order` frames (`order` 1..=8, an mTHP: Linux
    /// `alloc_pages(order)`), the first with refcount 1 and every frame otherwise as
    /// [`Self::alloc_block`] leaves it. Without a buddy allocator: if the 4 KiB list starts with
    /// such a run (what [`Self::free_run`] and an earlier call leave there) it is popped;
    /// otherwise a whole block is taken (harvesting if `harvest`), its first `2^order` frames
    /// returned and the rest pushed onto the 4 KiB list in ascending order, so the next
    /// allocations of this order find their runs at the list's head. `None` when neither
    /// exists: the fault falls back to a smaller order.
    pub fn alloc_run(&self, order: u32, harvest: bool) -> Option<PhysAddr> {
        debug_assert!((1..BLOCK_ORDER).contains(&order));
        let nr = 1usize << order;
        let mut list = self.free.lock();
        let first = match self.run_at_head(&list, nr) {
            Some(first) => {
                list.head = self.meta[first + nr - 1].mapcount.load(Ordering::Relaxed);
                list.count -= nr;
                first
            }
            None => {
                if list.blocks == NIL && harvest {
                    self.harvest(&mut list);
                }
                if list.blocks == NIL {
                    return None;
                }
                let first = list.blocks as usize;
                list.blocks = self.meta[first].mapcount.load(Ordering::Relaxed);
                for pfn in (first + nr..first + BLOCK_FRAMES).rev() {
                    let meta = &self.meta[pfn];
                    meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
                    meta.mapcount.store(list.head, Ordering::Relaxed);
                    list.head = pfn as u32;
                }
                list.count -= nr;
                first
            }
        };
        drop(list);
        for pfn in first..first + nr {
            let meta = &self.meta[pfn];
            meta.refcount
                .store(u32::from(pfn == first), Ordering::Relaxed);
            meta.mapcount.store(0, Ordering::Relaxed);
            meta.pincount.store(0, Ordering::Relaxed);
            meta.flags.store(0, Ordering::Relaxed);
        }
        Some(PhysAddr::from_pfn(first))
    }

    /// Does the 4 KiB list start with `nr` consecutive frames from an `nr`-aligned PFN? At most
    /// `nr` link reads.
    fn run_at_head(&self, list: &FreeList, nr: usize) -> Option<usize> {
        let first = list.head as usize;
        if list.head == NIL || !first.is_multiple_of(nr) {
            return None;
        }
        let linked = (first..first + nr - 1)
            .all(|at| self.meta[at].mapcount.load(Ordering::Relaxed) as usize == at + 1);
        linked.then_some(first)
    }

    /// Returns the run of [`Self::alloc_run`] at `head` (every frame unmapped, unpinned, no
    /// reference but at most the caller's on the first) to the 4 KiB list, ascending from the
    /// head of the list, where the next `alloc_run` of this order finds it.
    pub fn free_run(&self, head: PhysAddr, order: u32) {
        let first = head.pfn();
        let nr = 1usize << order;
        assert!(
            first.is_multiple_of(nr) && first + nr <= self.meta.len(),
            "free_run: {head:#x} is not the start of an order-{order} run"
        );
        for pfn in first..first + nr {
            let meta = &self.meta[pfn];
            assert!(
                !meta
                    .flags()
                    .intersects(FrameFlags::FREE | FrameFlags::RESERVED | FrameFlags::ZERO)
                    && meta.refcount() <= u32::from(pfn == first)
                    && meta.mapcount() == 0
                    && meta.pincount() == 0,
                "free_run: frame {pfn:#x} is free, reserved, referenced, mapped or pinned"
            );
        }
        let mut list = self.free.lock();
        for pfn in (first..first + nr).rev() {
            let meta = &self.meta[pfn];
            meta.refcount.store(0, Ordering::Relaxed);
            meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
            meta.mapcount.store(list.head, Ordering::Relaxed);
            list.head = pfn as u32;
        }
        list.count += nr;
    }

    /// Whole free blocks on the block list (for tests and `/proc`).
    pub fn free_blocks(&self) -> usize {
        let list = self.free.lock();
        let mut n = 0;
        let mut at = list.blocks;
        while at != NIL {
            n += 1;
            at = self.meta[at as usize].mapcount.load(Ordering::Relaxed);
        }
        n
    }

    /// Links the block at `first` (all its frames off every list) onto the block list.
    pub(super) fn push_block(&self, list: &mut FreeList, first: usize) {
        for pfn in first..first + BLOCK_FRAMES {
            let meta = &self.meta[pfn];
            meta.refcount.store(0, Ordering::Relaxed);
            meta.pincount.store(0, Ordering::Relaxed);
            meta.mapcount.store(NIL, Ordering::Relaxed);
            meta.flags
                .store((FrameFlags::FREE | FrameFlags::BLOCK).0, Ordering::Relaxed);
        }
        self.meta[first]
            .mapcount
            .store(list.blocks, Ordering::Relaxed);
        list.blocks = first as u32;
    }

    /// Takes the first block off the block list and hands its frames to the 4 KiB list, all
    /// but the first, which it returns unlinked (the 4 KiB lists were empty). Cold: reached
    /// only when every 4 KiB frame is in use.
    #[cold]
    pub(super) fn break_block(&self, list: &mut FreeList) -> usize {
        let first = list.blocks as usize;
        list.blocks = self.meta[first].mapcount.load(Ordering::Relaxed);
        for pfn in (first + 1..first + BLOCK_FRAMES).rev() {
            let meta = &self.meta[pfn];
            meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
            meta.mapcount.store(list.head, Ordering::Relaxed);
            list.head = pfn as u32;
        }
        list.count -= 1;
        first
    }

    /// Moves every aligned run of [`BLOCK_FRAMES`] free frames from the 4 KiB lists to the
    /// block list (Linux's buddy merging, in bulk): one scan of the metadata marks the runs,
    /// one pass over each 4 KiB list unlinks their frames. Skipped until a block's worth of
    /// frames has been freed since the last harvest that found nothing, so a machine without a
    /// free block does not rescan at every THP fault.
    pub(super) fn harvest(&self, list: &mut FreeList) {
        if list.count < list.harvest_mark {
            list.harvest_mark = list.count;
        }
        if list.count < list.harvest_mark + BLOCK_FRAMES && list.harvest_mark != 0 {
            return;
        }
        let blocks = self.meta.len() / BLOCK_FRAMES;
        let mut found = 0usize;
        for b in 0..blocks {
            let run = &self.meta[b * BLOCK_FRAMES..(b + 1) * BLOCK_FRAMES];
            let whole = run.iter().all(|m| {
                let f = m.flags();
                f.contains(FrameFlags::FREE) && !f.contains(FrameFlags::BLOCK)
            });
            if whole {
                for m in run {
                    m.flags
                        .store((FrameFlags::FREE | FrameFlags::BLOCK).0, Ordering::Relaxed);
                }
                found += 1;
            }
        }
        if found == 0 {
            list.harvest_mark = list.count.max(1);
            return;
        }
        // Unlink the marked frames from both 4 KiB lists, keeping the others' order.
        for zeroed in [false, true] {
            let mut prev = NIL;
            let mut at = if zeroed { list.zeroed } else { list.head };
            while at != NIL {
                let next = self.meta[at as usize].mapcount.load(Ordering::Relaxed);
                if self.meta[at as usize].test(FrameFlags::BLOCK) {
                    if prev == NIL {
                        if zeroed {
                            list.zeroed = next;
                        } else {
                            list.head = next;
                        }
                    } else {
                        self.meta[prev as usize]
                            .mapcount
                            .store(next, Ordering::Relaxed);
                    }
                } else {
                    prev = at;
                }
                at = next;
            }
        }
        // Link the marked blocks with the ones already listed (`count` is unchanged: the
        // frames only changed lists).
        self.relink_blocks(list, blocks);
        list.harvest_mark = 0;
    }

    /// Rebuilds the block list from the `BLOCK` flags (after a harvest marked new runs):
    /// every block whose first frame is `FREE|BLOCK` is on it exactly once.
    fn relink_blocks(&self, list: &mut FreeList, blocks: usize) {
        list.blocks = NIL;
        for b in (0..blocks).rev() {
            let first = b * BLOCK_FRAMES;
            if self.meta[first].test(FrameFlags::BLOCK) {
                for m in &self.meta[first + 1..first + BLOCK_FRAMES] {
                    m.mapcount.store(NIL, Ordering::Relaxed);
                }
                self.meta[first]
                    .mapcount
                    .store(list.blocks, Ordering::Relaxed);
                list.blocks = first as u32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const B: usize = BLOCK_FRAMES;

    /// 4 blocks of frames; frame 0..`reserved` reserved, so block 0 is never whole.
    fn table(reserved: usize) -> &'static FrameTable {
        let t = FrameTable::new_leaked(4 * B);
        t.add_free_range(PhysAddr::from_pfn(reserved), PhysAddr::from_pfn(4 * B));
        t
    }

    #[test]
    fn harvest_finds_whole_aligned_blocks_and_frames_return_exactly() {
        let t = table(1);
        let boot = t.free_frames();
        let a = t.alloc_block(true).expect("three whole blocks are free");
        assert!(
            a.pfn().is_multiple_of(B) && a.pfn() != 0,
            "aligned, not block 0"
        );
        assert_eq!(t.meta(a).refcount(), 1);
        assert_eq!(t.meta(a + 4096).refcount(), 0);
        assert_eq!(t.free_frames(), boot - B);
        assert_eq!(t.free_blocks(), 2, "the harvest kept the other two");
        let b = t.alloc_block(true).unwrap();
        let c = t.alloc_block(true).unwrap();
        let mut got = [a.pfn(), b.pfn(), c.pfn()];
        got.sort();
        assert_eq!(got, [B, 2 * B, 3 * B]);
        assert!(
            t.alloc_block(true).is_none(),
            "block 0 has a reserved frame"
        );
        // The 4 KiB frames of block 0 are still there.
        assert_eq!(t.free_frames(), B - 1);
        for f in [a, b, c] {
            t.free_block(f);
        }
        assert_eq!(t.free_frames(), boot);
        assert_eq!(t.free_blocks(), 3);
    }

    #[test]
    fn small_allocations_break_a_block_only_when_the_lists_are_empty() {
        let t = table(1);
        let boot = t.free_frames();
        let blk = t.alloc_block(true).unwrap();
        t.free_block(blk);
        // Block 0's 511 free frames plus whatever else the harvest left on the list.
        let on_list = boot - t.free_blocks() * B;
        let mut small = Vec::new();
        for _ in 0..on_list {
            small.push(t.alloc().unwrap());
        }
        assert_eq!(t.free_blocks(), 3, "4 KiB frames came from the lists");
        let broke = t.alloc().unwrap();
        assert_eq!(t.free_blocks(), 2, "then a block was broken");
        assert!(broke.pfn().is_multiple_of(B));
        let next = t.alloc().unwrap();
        assert_eq!(
            next.pfn(),
            broke.pfn() + 1,
            "the rest went to the 4 KiB list"
        );
        small.push(broke);
        small.push(next);
        for f in small {
            t.free(f);
        }
        assert_eq!(t.free_frames(), boot);
        // The broken block's frames are back on the 4 KiB list; a harvest reassembles it.
        assert_eq!(t.free_blocks(), 2);
        let mut blocks = Vec::new();
        while let Some(b) = t.alloc_block(true) {
            blocks.push(b);
        }
        assert_eq!(blocks.len(), 3, "harvest reassembled the broken block");
        for b in blocks {
            t.free_block(b);
        }
        assert_eq!(t.free_frames(), boot);
    }

    #[test]
    fn one_used_frame_keeps_its_block_out_and_a_failed_harvest_waits_for_frees() {
        let t = table(1);
        let boot = t.free_frames();
        let mut all = Vec::new();
        while let Some(f) = t.alloc() {
            all.push(f);
        }
        assert_eq!(t.free_frames(), 0);
        // Keep one frame in each block, and all of block 0.
        let held = |f: &PhysAddr| f.pfn() % B == 7 || f.pfn() < B;
        for f in all.iter().copied().filter(|f| !held(f)) {
            t.free(f);
        }
        assert!(t.alloc_block(true).is_none(), "no block is whole");
        // Three frees make three blocks whole, but the harvest waits for a block's worth.
        for f in all
            .iter()
            .copied()
            .filter(|f| f.pfn() % B == 7 && f.pfn() >= B)
        {
            t.free(f);
        }
        assert!(
            t.alloc_block(true).is_none(),
            "rate-limited: too few frees since"
        );
        for f in all.iter().copied().filter(|f| f.pfn() < B) {
            t.free(f);
        }
        assert_eq!(t.free_frames(), boot);
        assert!(
            t.alloc_block(false).is_none(),
            "no harvest: the block list is empty"
        );
        let b = t
            .alloc_block(true)
            .expect("harvest after a block's worth of frees");
        t.free_block(b);
        assert_eq!(t.free_frames(), boot);
        assert_eq!(t.free_blocks(), 3);
    }

    #[test]
    fn runs_are_aligned_reused_from_the_list_head_and_return_exactly() {
        let t = table(1);
        let boot = t.free_frames();
        let a = t.alloc_run(4, true).expect("a block to break");
        assert!(
            a.pfn().is_multiple_of(B),
            "the first run is a block's start"
        );
        assert_eq!(t.meta(a).refcount(), 1);
        assert_eq!(t.free_frames(), boot - 16);
        let blocks = t.free_blocks();
        // The broken block's rest is at the list head: the next runs come from it.
        let b = t.alloc_run(4, true).unwrap();
        assert_eq!(b.pfn(), a.pfn() + 16);
        let c = t.alloc_run(2, true).unwrap();
        assert_eq!(c.pfn(), a.pfn() + 32);
        assert_eq!(t.free_blocks(), blocks, "no block broken for them");
        // A 4 KiB allocation in between misaligns the head: the next run breaks a block.
        let small = t.alloc().unwrap();
        assert_eq!(small.pfn(), a.pfn() + 36);
        let d = t.alloc_run(3, true).unwrap();
        assert!(d.pfn().is_multiple_of(B));
        assert_eq!(t.free_blocks(), blocks - 1);
        // A freed run goes back to the head and is the next run of its order.
        t.free_run(b, 4);
        assert_eq!(t.alloc_run(4, true), Some(b));
        for (r, o) in [(a, 4), (b, 4), (c, 2), (d, 3)] {
            t.free_run(r, o);
        }
        t.free(small);
        assert_eq!(t.free_frames(), boot);
        // Every frame free again: the harvest reassembles all three blocks.
        let mut all = Vec::new();
        while let Some(x) = t.alloc_block(true) {
            all.push(x);
        }
        assert_eq!(all.len(), 3);
        for x in all {
            t.free_block(x);
        }
    }

    #[test]
    fn no_run_without_a_block_or_an_aligned_head() {
        let t = table(1);
        let mut all = Vec::new();
        while let Some(f) = t.alloc() {
            all.push(f);
        }
        // Free every other frame: plenty of free memory, no contiguous run.
        for f in all.iter().copied().filter(|f| f.pfn() % 2 == 0) {
            t.free(f);
        }
        assert!(t.alloc_run(1, true).is_none());
        for f in all.iter().copied().filter(|f| f.pfn() % 2 == 1) {
            t.free(f);
        }
    }

    #[test]
    #[should_panic(expected = "still referenced, mapped or pinned")]
    fn freeing_a_mapped_block_panics() {
        let t = table(1);
        let b = t.alloc_block(true).unwrap();
        t.meta(b + 4096).inc_mapcount();
        t.free_block(b);
    }
}
