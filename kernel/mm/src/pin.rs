//! Pins and plain references on user pages: what GUP hands out, and how it is given back.
//!
//! Picture: a device (or a kernel thread) keeps using a page behind the page tables. Under the
//! 2020+ rules that is a *pin* (`FOLL_PIN`): one reference plus one `pincount`, so fork and the
//! fault path can tell the page may be under DMA (`maybe_dma_pinned`). Before 2020 pins did not
//! exist and the same request takes a plain reference (`FOLL_GET`), invisible to fork — which is
//! exactly what reproduces the old races. A [`PinnedPage`] remembers which kind it holds, so it
//! is released correctly even if the era changes meanwhile. The invariant: every `PinnedPage`
//! is exactly one reference (and, for `Pin`, one `pincount`), counted in the `gup_*_held`
//! gauges until released. The full GUP (faulting, unsharing, `FOLL_*` checks) is `gup.rs`;
//! [`pin_user_page`] and [`get_user_page`] are single-page wrappers over it. A pin's DMA
//! direction is fixed when it is taken: only `FOLL_WRITE` pins hand out a [`DmaFromDevice`].

#![deny(unsafe_code)]

use core::sync::atomic::{fence, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::foll::FollFlags;
use crate::frame::{FrameFlags, FrameMeta};
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::rules;
use crate::stats;

/// How a [`PinnedPage`] holds its page.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PinKind {
    /// `FOLL_PIN`: a reference and a `pincount`.
    Pin,
    /// `FOLL_GET`: a reference only.
    Get,
}

/// Whether [`PinnedPage::unpin_dirty`] marks the page dirty first (Linux's `make_dirty`
/// argument of `unpin_user_pages_dirty_lock`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum UnpinDirty {
    /// The device wrote the page: mark it dirty (`set_page_dirty_lock`), then unpin.
    MakeDirty,
    /// Unpin only.
    Clean,
}

/// A page held by a device or kernel user. Not `Clone`: each one is one reference. Release it
/// with [`PinnedPage::unpin`]; dropping it leaks the page.
///
/// Every pin can be read by a device (DMA *to* the device, [`PinnedPage::dma_read`]). Only a
/// pin taken with `FOLL_WRITE` — which broke COW first, so the page is the caller's own — can be
/// written by one (DMA *from* the device): that takes a [`DmaFromDevice`] handle, which
/// [`PinnedPage::dma_from_device`] hands out for write pins only.
#[must_use = "a pinned page must be released with unpin()"]
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedPage {
    pub(crate) frame: PhysAddr,
    kind: PinKind,
    direction: DmaDirection,
}

/// Which DMA directions the holder of a [`PinnedPage`] was granted when it was taken.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum DmaDirection {
    /// Taken without `FOLL_WRITE`: the device may only read the page.
    ToDevice,
    /// Taken with `FOLL_WRITE`: the device may also write it.
    Bidirectional,
}

/// The right to write a pinned page from a device (DMA from the device into memory). Exists
/// only for pins taken with `FOLL_WRITE`: a read-only pin or reference (`vmsplice`, a read-only
/// `FOLL_PIN`) may map a page some other process still maps, and a device write there would
/// land in that process's memory.
#[derive(Debug)]
pub struct DmaFromDevice<'p> {
    pub(crate) page: &'p PinnedPage,
}

impl PinnedPage {
    pub fn frame(&self) -> PhysAddr {
        self.frame
    }

    pub fn kind(&self) -> PinKind {
        self.kind
    }

    /// The handle through which a device writes this page: `EPERM` unless the pin was taken
    /// with `FOLL_WRITE`.
    pub fn dma_from_device(&self) -> Result<DmaFromDevice<'_>, MmError> {
        match self.direction {
            DmaDirection::Bidirectional => Ok(DmaFromDevice { page: self }),
            DmaDirection::ToDevice => Err(MmError::Perm),
        }
    }

    /// Releases the page (Linux `unpin_user_page` or `put_page`).
    #[doc(alias = "unpin_user_page")]
    #[doc(alias = "put_page")]
    pub fn unpin<A: Arch>(self, mm: &Mm<A>) {
        let meta = mm.frames().meta(self.frame);
        match self.kind {
            PinKind::Pin => {
                // A pin of a subpage of a large folio is counted on the folio.
                mm.frames().head_meta(meta).dec_pincount();
                stats::dec(&mm.counters.gup_pins_held);
            }
            PinKind::Get => stats::dec(&mm.counters.gup_refs_held),
        }
        mm.put_page_meta(meta, self.frame);
    }

    /// Marks the page dirty if asked (the device wrote it), then releases it. The zero page is
    /// never marked (nothing can have written it).
    pub fn unpin_dirty<A: Arch>(self, mm: &Mm<A>, dirty: UnpinDirty) {
        if dirty == UnpinDirty::MakeDirty && !mm.is_zero_frame(self.frame) {
            let meta = mm.frames().meta(self.frame);
            if meta.test(FrameFlags::PAGECACHE) && !meta.test(FrameFlags::SHMEM) {
                // A file page: dirty for writeback, and counted (Linux `folio_mark_dirty`).
                crate::pagecache::page_mkwrite(mm, self.frame);
            } else {
                meta.set_flags(FrameFlags::DIRTY);
            }
        }
        self.unpin(mm);
    }
}

/// Takes the reference or pin `flags` ask for on `frame`, whose caller already made sure it
/// cannot be freed meanwhile (slow path: the address-space lock and the PTE) (Linux
/// `try_grab_folio` after a successful lookup). `FOLL_PIN` becomes a plain reference in eras
/// without pin tracking. Marks the address space as having pinned before the pin is visible.
#[doc(alias = "try_grab_page")]
pub(crate) fn grab_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    frame: PhysAddr,
    flags: FollFlags,
) -> PinnedPage {
    let meta = mm.frames().head_meta(mm.frames().meta(frame));
    meta.get();
    account_grab(mm, &aspace.shared, meta, frame, flags)
}

/// GUP-fast's grab: the frame was reached through a PTE with no reference held, so the
/// reference is taken only if the frame is not already on its way to the free list (Linux
/// `try_grab_folio_fast`). `None`: fall back.
pub(crate) fn try_grab_page_fast<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    meta: &FrameMeta,
    frame: PhysAddr,
    flags: FollFlags,
) -> Option<PinnedPage> {
    // The folio's count (Linux `try_get_folio`): a tail's link to its head is stable while
    // GUP-fast's interrupts-off walk keeps the folio from being freed and reused.
    let meta = mm.frames().head_meta(meta);
    if !meta.try_get() {
        return None;
    }
    Some(account_grab(mm, shared, meta, frame, flags))
}

/// The pin or reference accounting after the reference on `frame` (`meta`) was taken.
#[inline]
fn account_grab<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    meta: &FrameMeta,
    frame: PhysAddr,
    flags: FollFlags,
) -> PinnedPage {
    let direction = if flags.contains(FollFlags::WRITE) {
        DmaDirection::Bidirectional
    } else {
        DmaDirection::ToDevice
    };
    // lab(pins): begin
    // lab(pins): stub: let _ = (aspace, meta);
    // lab(pins): stub: stats::inc(&mm.counters.gup_refs_held);
    // lab(pins): stub: PinnedPage {
    // lab(pins): stub:     frame,
    // lab(pins): stub:     kind: PinKind::Get,
    // lab(pins): stub:     direction,
    // lab(pins): stub: }
    if !flags.contains(FollFlags::PIN) || !rules::foll_pin_tracked(mm.era()) {
        stats::inc(&mm.counters.gup_refs_held);
        return PinnedPage {
            frame,
            kind: PinKind::Get,
            direction,
        };
    }
    shared.set_has_pinned();
    meta.inc_pincount();
    // Pairs with fork's fence after making write_protect_seq odd (see `frame::FrameMeta`).
    fence(Ordering::SeqCst);
    stats::inc(&mm.counters.gup_pins_held);
    PinnedPage {
        frame,
        kind: PinKind::Pin,
        direction,
    }
    // lab(pins): end
}

/// Pins the page mapped at `va` for a device that writes it: `pin_user_pages(FOLL_WRITE)` on
/// one page, through the real GUP (faults the page in and breaks COW first, so the pinned page
/// is the caller's exclusive page). A `FOLL_PIN` pin under the 2020+ rules, a plain reference
/// before. `EFAULT` if it cannot be pinned.
#[doc(alias = "pin_user_pages")]
pub fn pin_user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
) -> Result<PinnedPage, MmError> {
    let mut slot = [None];
    crate::gup::pin_user_pages(mm, aspace, va, FollFlags::WRITE, &mut slot)?;
    Ok(slot[0].take().expect("GUP reported one page"))
}

/// Takes a plain read-only reference (`FOLL_GET`) on the page mapped at `va`, in every era:
/// `get_user_pages(0)` on one page, through the real GUP (faults it in if needed).
#[doc(alias = "get_user_pages")]
pub fn get_user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
) -> Result<PinnedPage, MmError> {
    let mut slot = [None];
    crate::gup::get_user_pages(mm, aspace, va, FollFlags::NONE, &mut slot)?;
    Ok(slot[0].take().expect("GUP reported one page"))
}
