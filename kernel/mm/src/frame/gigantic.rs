//! Physically contiguous 1 GiB runs for 1 GiB hugetlb pages (Linux's gigantic pages:
//! `alloc_contig_pages` at run time, `memblock` at boot), over the 2 MiB block list.
//!
//! Picture: a gigantic run is 512 whole free blocks (`huge.rs`) starting at a 1 GiB-aligned
//! PFN. There is no list of them: [`FrameTable::alloc_gigantic`] harvests (so every aligned
//! free 2 MiB run is a block on the block list), looks for an aligned GiB whose 512 blocks are
//! all on the list (their head frames carry `BLOCK`, which is set exactly on listed blocks),
//! and unlinks those in one pass over the list. At boot nothing is allocated yet, so every
//! free aligned GiB qualifies (Linux reserves them from memblock before the buddy allocator
//! exists for the same reason: later, any one allocated frame in a GiB spoils it). Freeing
//! pushes the 512 blocks back, where THP faults may take them again.

use core::sync::atomic::Ordering;

use super::{FrameFlags, FrameTable, BLOCK_FRAMES, NIL};
use crate::addr::PhysAddr;

/// log2 of the frames of a 1 GiB page: a PUD maps 2^18 4 KiB pages.
pub const GIGANTIC_ORDER: u32 = 18;
/// Frames in a 1 GiB page.
pub const GIGANTIC_FRAMES: usize = 1 << GIGANTIC_ORDER;

impl FrameTable {
    /// A 1 GiB-aligned run of [`GIGANTIC_FRAMES`] frames, laid out as `alloc_block` lays out a
    /// block (refcount 1 on the first frame, everything else 0, no flags), or `None` when no
    /// aligned GiB is wholly free. Costs a harvest and a scan of the block heads: an
    /// administrator's operation (boot, `nr_hugepages`), never a fault's.
    pub fn alloc_gigantic(&self) -> Option<PhysAddr> {
        let mut list = self.free.lock();
        // A harvest that found nothing waits for frees; a gigantic allocation always looks.
        list.harvest_mark = 0;
        self.harvest(&mut list);
        let first = (0..self.meta.len() / GIGANTIC_FRAMES)
            .map(|g| g * GIGANTIC_FRAMES)
            .find(|&first| {
                (first..first + GIGANTIC_FRAMES)
                    .step_by(BLOCK_FRAMES)
                    .all(|b| self.meta[b].test(FrameFlags::BLOCK))
            })?;
        // Unlink the run's blocks, keeping the others' order.
        let inside = |pfn: u32| (first..first + GIGANTIC_FRAMES).contains(&(pfn as usize));
        let mut prev = NIL;
        let mut at = list.blocks;
        while at != NIL {
            let next = self.meta[at as usize].mapcount.load(Ordering::Relaxed);
            if inside(at) {
                if prev == NIL {
                    list.blocks = next;
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
        list.count -= GIGANTIC_FRAMES;
        drop(list);
        self.init_taken_run(first, GIGANTIC_FRAMES);
        Some(PhysAddr::from_pfn(first))
    }

    /// Returns a run from [`Self::alloc_gigantic`] (every frame unmapped, unpinned, no
    /// reference but at most the caller's last on the first) as 512 free blocks.
    pub fn free_gigantic(&self, head: PhysAddr) {
        let first = head.pfn();
        assert!(
            first.is_multiple_of(GIGANTIC_FRAMES) && first + GIGANTIC_FRAMES <= self.meta.len(),
            "free_gigantic: {head:#x} is not the start of a 1 GiB run"
        );
        self.check_run_returnable(first, GIGANTIC_FRAMES, "free_gigantic");
        let mut list = self.free.lock();
        for b in (first..first + GIGANTIC_FRAMES).step_by(BLOCK_FRAMES).rev() {
            self.push_block(&mut list, b);
        }
        list.count += GIGANTIC_FRAMES;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_free_gib_is_taken_whole_and_given_back() {
        // 2 GiB + a block of frames: frame 0 reserved, so only the second GiB is wholly free.
        let t = FrameTable::new_leaked(2 * GIGANTIC_FRAMES + BLOCK_FRAMES);
        t.add_free_range(
            PhysAddr::from_pfn(1),
            PhysAddr::from_pfn(2 * GIGANTIC_FRAMES + BLOCK_FRAMES),
        );
        let boot = t.free_frames();
        let g = t.alloc_gigantic().expect("the second GiB is free");
        assert_eq!(g.pfn(), GIGANTIC_FRAMES);
        assert_eq!(t.free_frames(), boot - GIGANTIC_FRAMES);
        assert!(t.alloc_gigantic().is_none(), "the first GiB holds frame 0");
        // 4 KiB and 2 MiB allocations still work from what is left.
        let small = t.alloc().unwrap();
        let block = t.alloc_block(true).unwrap();
        assert!(!(GIGANTIC_FRAMES..2 * GIGANTIC_FRAMES).contains(&small.pfn()));
        assert!(!(GIGANTIC_FRAMES..2 * GIGANTIC_FRAMES).contains(&block.pfn()));
        t.free_block(block);
        t.free(small);
        t.free_gigantic(g);
        assert_eq!(t.free_frames(), boot);
        // One block taken from the GiB (after the free, the LIFO block list hands out its
        // blocks first) spoils it until given back.
        let one = t.alloc_block(false).unwrap();
        assert!((GIGANTIC_FRAMES..2 * GIGANTIC_FRAMES).contains(&one.pfn()));
        assert!(t.alloc_gigantic().is_none());
        t.free_block(one);
        let again = t.alloc_gigantic().expect("whole again after the free");
        t.free_gigantic(again);
        assert_eq!(t.free_frames(), boot);
    }

    #[test]
    fn the_order_field_holds_the_gigantic_order() {
        assert_eq!(FrameFlags::order(GIGANTIC_ORDER).order_of(), GIGANTIC_ORDER);
        for order in 0..=9 {
            assert_eq!(FrameFlags::order(order).order_of(), order);
        }
    }
}
