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

    /// The page GUP took on `frame` as `kind`, with the DMA direction `flags` grant (only a
    /// `FOLL_WRITE` take may be written by a device).
    #[inline(always)]
    pub(crate) fn new(frame: PhysAddr, kind: PinKind, flags: FollFlags) -> PinnedPage {
        let direction = if flags.contains(FollFlags::WRITE) {
            DmaDirection::Bidirectional
        } else {
            DmaDirection::ToDevice
        };
        PinnedPage {
            frame,
            kind,
            direction,
        }
    }

    /// Another hold of the same kind and direction on this page, without walking the page
    /// tables (Linux `folio_add_pin` / `get_page` on a page already held): a caller that must
    /// hand a sub-range of pages it pinned earlier to a consumer that releases them (a device
    /// request) while it holds a lock the fault path takes cannot run GUP again there. The
    /// existing hold keeps the folio alive, so the count cannot start from zero.
    pub fn dup<A: Arch>(&self, mm: &Mm<A>) -> PinnedPage {
        let head = mm.frames().head_meta(mm.frames().meta(self.frame));
        head.get();
        if self.kind == PinKind::Pin {
            head.add_pincount(1);
        }
        count_held(mm, self.kind, 1);
        PinnedPage {
            frame: self.frame,
            kind: self.kind,
            direction: self.direction,
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
        if dirty == UnpinDirty::MakeDirty {
            self.mark_dirty(mm);
        }
        self.unpin(mm);
    }

    /// The device wrote the page: mark it dirty (never the zero page, which nothing can have
    /// written).
    #[cold]
    fn mark_dirty<A: Arch>(&self, mm: &Mm<A>) {
        if mm.is_zero_frame(self.frame) {
            return;
        }
        let meta = mm.frames().meta(self.frame);
        if meta.test(FrameFlags::PAGECACHE) && !meta.test(FrameFlags::SHMEM) {
            // A file page: dirty for writeback, and counted (Linux `folio_mark_dirty`).
            crate::pagecache::page_mkwrite(mm, self.frame);
        } else {
            meta.set_flags(FrameFlags::DIRTY);
        }
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
    let kind = account_grab(mm, &aspace.shared, meta, flags, 1);
    count_held(mm, kind, 1);
    PinnedPage::new(frame, kind, flags)
}

/// GUP-fast's grab of `refs` subpages of one folio at once (`meta`: the folio's head, or the
/// small page itself): the frames were reached through PTEs with no reference held, so the
/// references are taken only if the folio is not already on its way to the free list (Linux
/// `try_grab_folio_fast` with `refs`: one atomic add for a run of subpages). `None`: fall
/// back. The caller makes the [`PinnedPage`]s with [`PinnedPage::new`] and the returned kind,
/// and counts them in the held gauges ([`count_held`], once per call).
#[inline(always)]
pub(crate) fn try_grab_folio_fast<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    meta: &FrameMeta,
    flags: FollFlags,
    refs: u32,
) -> Option<PinKind> {
    if !meta.try_get_many(refs) {
        return None;
    }
    Some(account_grab(mm, shared, meta, flags, refs))
}

/// The pin or reference accounting after `refs` references on the folio whose head metadata is
/// `meta` were taken: `refs` pins (pincount, then the fence that orders them before the PTE
/// re-check and fork's pincount read) or `refs` plain references. Returns which.
#[inline(always)]
fn account_grab<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    meta: &FrameMeta,
    flags: FollFlags,
    refs: u32,
) -> PinKind {
    // lab(pins): begin
    // lab(pins): stub: let _ = (mm, shared, meta, flags, refs);
    // lab(pins): stub: PinKind::Get
    if !flags.contains(FollFlags::PIN) || !rules::foll_pin_tracked(mm.era()) {
        return PinKind::Get;
    }
    shared.set_has_pinned();
    meta.add_pincount(refs);
    // Pairs with fork's fence after making write_protect_seq odd (see `frame::FrameMeta`).
    fence(Ordering::SeqCst);
    PinKind::Pin
    // lab(pins): end
}

/// Counts `n` pages taken as `kind` in the held gauges (`gup_pins_held`, `gup_refs_held`):
/// GUP-fast once per call, the slow path per page.
#[inline(always)]
pub(crate) fn count_held<A: Arch>(mm: &Mm<A>, kind: PinKind, n: u64) {
    match kind {
        PinKind::Pin => stats::add(&mm.counters.gup_pins_held, n),
        PinKind::Get => stats::add(&mm.counters.gup_refs_held, n),
    }
}

/// Gives back `n` references (and pins, for [`PinKind::Pin`]) of one folio, whose head
/// metadata is `head`, that GUP took on the consecutive subpages from `frame`: one atomic
/// subtraction of `n - 1` (the caller's other references keep the folio alive), then the last
/// through the ordinary put, which frees the folio if it was the last reference.
#[inline]
fn unpin_folio_run<A: Arch>(mm: &Mm<A>, head: &FrameMeta, frame: PhysAddr, kind: PinKind, n: u32) {
    if kind == PinKind::Pin {
        head.sub_pincount(n);
    }
    head.put_many_not_last(n - 1);
    mm.put_page_meta(mm.frames().meta(frame), frame);
}

/// Releases every page of `pages` (Linux `unpin_user_pages_dirty_lock`, with its batching of
/// a run of subpages of one folio into one count update: `gup_folio_next`), leaving the slots
/// `None`; each is first marked dirty if `dirty` says so. The held-page gauges move once per
/// call.
pub(crate) fn unpin_pages<A: Arch>(
    mm: &Mm<A>,
    pages: &mut [Option<PinnedPage>],
    dirty: UnpinDirty,
) {
    let metas = mm.frames().metas();
    let (mut pins, mut refs) = (0u64, 0u64);
    let mut i = 0;
    while i < pages.len() {
        let Some(page) = pages[i].take() else {
            i += 1;
            continue;
        };
        if dirty == UnpinDirty::MakeDirty {
            page.mark_dirty(mm);
        }
        match page.kind {
            PinKind::Pin => pins = pins.wrapping_add(1),
            PinKind::Get => refs = refs.wrapping_add(1),
        }
        let meta = &metas[page.frame.pfn()];
        if !meta.flags().intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
            if page.kind == PinKind::Pin {
                meta.dec_pincount();
            }
            mm.put_page_meta(meta, page.frame);
            i += 1;
            continue;
        }
        // A large folio: the following slots holding the next subpages of the same folio,
        // taken the same way, go with this one.
        let head = mm.frames().head_meta(meta);
        let mut n = 1u32;
        while let Some(Some(next)) = pages.get(i + n as usize) {
            let expected = page.frame + u64::from(n) * crate::PAGE_SIZE as u64;
            if next.frame != expected
                || next.kind != page.kind
                || !core::ptr::eq(mm.frames().head_meta(&metas[expected.pfn()]), head)
            {
                break;
            }
            n += 1;
        }
        for slot in &mut pages[i + 1..i + n as usize] {
            let next = slot.take().expect("counted above");
            if dirty == UnpinDirty::MakeDirty {
                next.mark_dirty(mm);
            }
            match next.kind {
                PinKind::Pin => pins = pins.wrapping_add(1),
                PinKind::Get => refs = refs.wrapping_add(1),
            }
        }
        unpin_folio_run(mm, head, page.frame, page.kind, n);
        i += n as usize;
    }
    stats::sub(&mm.counters.gup_pins_held, pins);
    stats::sub(&mm.counters.gup_refs_held, refs);
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
