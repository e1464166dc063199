//! The huge zero folio (SEMANTICS.md section 11; Linux `mm_get_huge_zero_folio`,
//! `set_huge_zero_folio`, `__split_huge_zero_page_pmd`).
//!
//! Picture: the 2 MiB sibling of the shared zero page. With `use_zero_page=1` a read fault on
//! an eligible 2 MiB range maps one shared, all-zero, 2 MiB-aligned folio read-only with one
//! PMD, so reading a large untouched buffer costs no memory. Its frames are flagged `ZERO`
//! (head `HEAD|ZERO`, tails `TAIL|ZERO`), never `ANON`: to the rules it is a zero page, so a
//! write or an unshare must replace it, and fork shares it as it is.
//!
//! Lifetime: unlike the small zero page it is not kept forever. It is allocated on the first
//! read fault that wants it and freed when its last reference goes (every PMD mapping and every
//! GUP reference holds one), so a machine with no huge-zero mapping holds none of its 512
//! frames and the free-frame count returns to its boot value. `FrameTable::huge_zero` names the
//! current folio; its lock orders a new mapping's get against the last put (Linux keeps a
//! refcount beside the folio and frees it from a shrinker; the effect is the same).
//!
//! Where it goes:
//! - a write fault replaces the PMD with a new zeroed THP, or, with no free block, splits it;
//! - an unshare fault (a R/O long-term pin) and every partial operation (mprotect, munmap,
//!   mremap, `MADV_DONTNEED` of part) split it: 512 PTEs mapping the *small* zero page, as
//!   Linux's `__split_huge_zero_page_pmd` — its subpages are never PTE-mapped;
//! - fork gives the child its own PMD of the same folio (`copy_huge_pmd`).

#![deny(unsafe_code)]

use core::sync::atomic::{fence, Ordering};

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::folio::HPAGE_PMD_NR;
use crate::frame::{FrameFlags, FrameTable, BLOCK_FRAMES, NIL};
use crate::mm::Mm;
use crate::stats;

impl FrameTable {
    /// Is `frame` a subpage of the huge zero folio?
    #[inline]
    pub fn is_huge_zero(&self, frame: PhysAddr) -> bool {
        let f = self.meta(frame).flags();
        f.contains(FrameFlags::ZERO) && f.intersects(FrameFlags::HEAD | FrameFlags::TAIL)
    }

    /// PMDs mapping the current huge zero folio (0 when there is none), for `/proc/cowlab`.
    pub fn huge_zero_mappings(&self) -> u32 {
        let hz = self.huge_zero.lock();
        if *hz == NIL {
            0
        } else {
            self.entire_mapcount(PhysAddr::from_pfn(*hz as usize))
        }
    }

    /// Drops one reference of the huge zero folio at `head`; the last frees its block after
    /// `last` ran (as [`FrameTable::put_meta_then`]). Under the `huge_zero` lock, so that
    /// [`Mm::get_huge_zero_folio`] never takes a reference on a folio being freed.
    #[cold]
    pub(crate) fn put_huge_zero(
        &self,
        head: PhysAddr,
        last: impl FnOnce(PhysAddr, usize),
    ) -> usize {
        let meta = self.meta(head);
        let mut hz = self.huge_zero.lock();
        let old = meta.refcount.fetch_sub(1, Ordering::Release);
        assert!(
            old > 0,
            "refcount underflow on the huge zero folio {head:#x}"
        );
        if old != 1 {
            return 0;
        }
        fence(Ordering::Acquire);
        if *hz == head.pfn() as u32 {
            *hz = NIL;
        }
        drop(hz);
        last(head, BLOCK_FRAMES);
        self.free_large_folio(head);
        BLOCK_FRAMES
    }
}

impl<A: Arch> Mm<A> {
    /// Is `frame` a zero page, small or a subpage of the huge one (Linux `is_zero_pfn` ||
    /// `is_huge_zero_folio`)? Such a frame is never written.
    #[inline]
    pub fn is_zero_frame(&self, frame: PhysAddr) -> bool {
        frame == self.zero_page() || self.frames().is_huge_zero(frame)
    }

    /// A reference on the huge zero folio, allocating and zeroing it if there is none
    /// (`harvest`: whether the block allocator may reassemble a block, asked only then: the
    /// defrag mode's decode cost every fault ~12 instructions). `None` when no 2 MiB block is
    /// free: the caller falls back to small pages.
    pub(crate) fn get_huge_zero_folio(&self, harvest: impl FnOnce() -> bool) -> Option<PhysAddr> {
        let frames = self.frames();
        let mut hz = frames.huge_zero.lock();
        if *hz != NIL {
            let head = PhysAddr::from_pfn(*hz as usize);
            // Its last put takes this lock too, so a folio named here has a reference.
            frames.meta(head).get();
            return Some(head);
        }
        let head = frames.alloc_block(harvest())?;
        self.zero_frames_owned(head, HPAGE_PMD_NR);
        frames.prep_large(head, FrameFlags::ZERO, 0, crate::folio::HPAGE_PMD_ORDER);
        *hz = head.pfn() as u32;
        stats::inc(&self.counters.thp_zero_page_alloc);
        Some(head)
    }
}
