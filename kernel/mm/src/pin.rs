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

use core::num::NonZeroU64;
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
#[derive(PartialEq, Eq)]
pub struct PinnedPage {
    /// The frame's address with [`HELD`], and [`PIN_BIT`] / [`WRITE_BIT`] as the hold's kind
    /// and DMA direction, in the frame's (always zero) offset bits: one word, never zero, so
    /// that an `Option<PinnedPage>` output slot is 8 bytes as Linux's `struct page *` array
    /// and "no page" is a zero word (GUP-fast fills thousands of them per call).
    raw: NonZeroU64,
}

const _: () = assert!(core::mem::size_of::<Option<PinnedPage>>() == 8);

/// Set in every [`PinnedPage`]: frame 0 is a real frame, its word must still not be zero.
const HELD: u64 = 1;
/// The page is held by a pin ([`PinKind::Pin`]), else by a plain reference.
const PIN_BIT: u64 = 2;
/// Taken with `FOLL_WRITE`: a device may also write the page ([`DmaFromDevice`]).
const WRITE_BIT: u64 = 4;
/// The offset bits of a frame's address: where the three bits above live.
const LOW_BITS: u64 = crate::PAGE_SIZE as u64 - 1;

impl core::fmt::Debug for PinnedPage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PinnedPage")
            .field("frame", &self.frame())
            .field("kind", &self.kind())
            .field("write", &(self.raw.get() & WRITE_BIT != 0))
            .finish()
    }
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
    #[inline(always)]
    pub fn frame(&self) -> PhysAddr {
        PhysAddr::new(self.raw.get() & !LOW_BITS)
    }

    #[inline(always)]
    pub fn kind(&self) -> PinKind {
        if self.raw.get() & PIN_BIT != 0 {
            PinKind::Pin
        } else {
            PinKind::Get
        }
    }

    /// The handle through which a device writes this page: `EPERM` unless the pin was taken
    /// with `FOLL_WRITE`.
    pub fn dma_from_device(&self) -> Result<DmaFromDevice<'_>, MmError> {
        if self.raw.get() & WRITE_BIT != 0 {
            Ok(DmaFromDevice { page: self })
        } else {
            Err(MmError::Perm)
        }
    }

    /// The page GUP took on `frame` as `kind`, with the DMA direction `flags` grant (only a
    /// `FOLL_WRITE` take may be written by a device).
    #[inline(always)]
    pub(crate) fn new(frame: PhysAddr, kind: PinKind, flags: FollFlags) -> PinnedPage {
        PinnedPage::from_bits(frame, hold_bits(kind, flags))
    }

    /// The page on `frame` held as `bits` says ([`hold_bits`], computed once per GUP call).
    #[inline(always)]
    pub(crate) fn from_bits(frame: PhysAddr, bits: u64) -> PinnedPage {
        debug_assert_eq!(
            frame.as_u64() & LOW_BITS,
            0,
            "a pinned frame is page-aligned"
        );
        debug_assert_eq!(bits & !(HELD | PIN_BIT | WRITE_BIT), 0);
        let raw = (frame.as_u64() & !LOW_BITS) | bits | HELD;
        PinnedPage {
            // `HELD` is set: never zero.
            raw: NonZeroU64::new(raw).unwrap_or(NonZeroU64::MIN),
        }
    }

    /// Another hold of the same kind and direction on this page, without walking the page
    /// tables (Linux `folio_add_pin` / `get_page` on a page already held): a caller that must
    /// hand a sub-range of pages it pinned earlier to a consumer that releases them (a device
    /// request) while it holds a lock the fault path takes cannot run GUP again there. The
    /// existing hold keeps the folio alive, so the count cannot start from zero.
    pub fn dup<A: Arch>(&self, mm: &Mm<A>) -> PinnedPage {
        let head = mm.frames().head_meta(mm.frames().meta(self.frame()));
        head.get();
        if self.kind() == PinKind::Pin {
            head.add_pincount(1);
        }
        count_held(mm, self.kind(), 1);
        PinnedPage { raw: self.raw }
    }

    /// Releases the page (Linux `unpin_user_page` or `put_page`).
    #[doc(alias = "unpin_user_page")]
    #[doc(alias = "put_page")]
    pub fn unpin<A: Arch>(self, mm: &Mm<A>) {
        match self.kind() {
            PinKind::Pin => stats::dec(&mm.counters.gup_pins_held),
            PinKind::Get => stats::dec(&mm.counters.gup_refs_held),
        }
        self.release_uncounted(mm);
    }

    /// [`PinnedPage::unpin`] of a page not yet counted in the held gauges: GUP-fast's back-out
    /// of a page it took and may not keep (the gauges move once, for the pages it returns).
    #[inline]
    pub(crate) fn release_uncounted<A: Arch>(self, mm: &Mm<A>) {
        let meta = mm.frames().meta(self.frame());
        if self.kind() == PinKind::Pin {
            // A pin of a subpage of a large folio is counted on the folio.
            mm.frames().head_meta(meta).dec_pincount();
        }
        mm.put_page_meta(meta, self.frame());
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
        let frame = self.frame();
        if mm.is_zero_frame(frame) {
            return;
        }
        let meta = mm.frames().meta(frame);
        if meta.test(FrameFlags::PAGECACHE) && !meta.test(FrameFlags::SHMEM) {
            // A file page: dirty for writeback, and counted (Linux `folio_mark_dirty`).
            crate::pagecache::page_mkwrite(mm, frame);
        } else {
            meta.set_flags(FrameFlags::DIRTY);
        }
    }
}

/// The bits of every [`PinnedPage`] one GUP call hands out: its kind, and its DMA direction
/// from `flags` (only a `FOLL_WRITE` take may be written by a device). Loop-invariant: GUP-fast
/// computes it once per call.
#[inline(always)]
pub(crate) fn hold_bits(kind: PinKind, flags: FollFlags) -> u64 {
    let pin = if kind == PinKind::Pin { PIN_BIT } else { 0 };
    let write = if flags.contains(FollFlags::WRITE) {
        WRITE_BIT
    } else {
        0
    };
    pin | write
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
    let kind = grab_kind(mm, &aspace.shared, flags);
    let meta = mm.frames().head_meta(mm.frames().meta(frame));
    meta.get();
    if kind == PinKind::Pin {
        add_pins(meta, 1);
    }
    count_held(mm, kind, 1);
    PinnedPage::new(frame, kind, flags)
}

/// GUP-fast's grab of `refs` subpages of one folio at once (`meta`: the folio's head, or the
/// small page itself) as `kind` ([`grab_kind`], decided once per call): the frames were reached
/// through PTEs with no reference held, so the references are taken only if the folio is not
/// already on its way to the free list (Linux `try_grab_folio_fast` with `refs`: one atomic add
/// for a run of subpages), then the pins. `false`: fall back. The caller makes the
/// [`PinnedPage`]s and counts them in the held gauges ([`count_held`], once per call).
#[inline(always)]
pub(crate) fn try_grab_folio_fast(meta: &FrameMeta, kind: PinKind, refs: u32) -> bool {
    if !meta.try_get_many(refs) {
        return false;
    }
    if kind == PinKind::Pin {
        add_pins(meta, refs);
    }
    true
}

/// How one GUP call with `flags` holds its pages (Linux `is_valid_gup_args` and
/// `try_grab_folio`'s `FOLL_PIN` test, made once per call): a pin where `FOLL_PIN` asks and the
/// era tracks pins, the address space then marked as having pinned before any pin is visible;
/// else a plain reference. The same for every page of the call, so GUP-fast decides it before
/// its loop.
#[inline(always)]
pub(crate) fn grab_kind<A: Arch>(mm: &Mm<A>, shared: &MmShared, flags: FollFlags) -> PinKind {
    // lab(pins): begin
    // lab(pins): stub: let _ = (mm, shared, flags);
    // lab(pins): stub: PinKind::Get
    if !flags.contains(FollFlags::PIN) || !rules::foll_pin_tracked(mm.era()) {
        return PinKind::Get;
    }
    shared.set_has_pinned();
    PinKind::Pin
    // lab(pins): end
}

/// The pin accounting after `refs` references on the folio whose head metadata is `meta` were
/// taken for a [`PinKind::Pin`] call: `refs` pins on the folio, then the fence that orders them
/// before the PTE re-check and fork's pincount read.
#[inline(always)]
fn add_pins(meta: &FrameMeta, refs: u32) {
    // lab(pins): begin
    // lab(pins): stub: let _ = (meta, refs);
    meta.add_pincount(refs);
    // Pairs with fork's fence after making write_protect_seq odd (see `frame::FrameMeta`).
    fence(Ordering::SeqCst);
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
    let (total, pins) = unpin_pages_uncounted(mm, pages, dirty);
    stats::sub(&mm.counters.gup_pins_held, pins);
    stats::sub(&mm.counters.gup_refs_held, total.wrapping_sub(pins));
}

/// [`unpin_pages`] without the held gauges: returns the pages released and how many of them
/// were pins. GUP-fast's back-out of pages it has not counted yet uses it directly. The loop
/// is the small pages'; a large folio's run goes to [`unpin_large_run`].
pub(crate) fn unpin_pages_uncounted<A: Arch>(
    mm: &Mm<A>,
    pages: &mut [Option<PinnedPage>],
    dirty: UnpinDirty,
) -> (u64, u64) {
    let metas = mm.frames().metas();
    // `pin_bits` sums each small page's `PIN_BIT` (2 per pin), `large_pins` the runs' pins.
    let (mut total, mut pin_bits, mut large_pins) = (0u64, 0u64, 0u64);
    let mut i = 0;
    while i < pages.len() {
        let Some(page) = pages[i].take() else {
            i += 1;
            continue;
        };
        if dirty == UnpinDirty::MakeDirty {
            page.mark_dirty(mm);
        }
        let raw = page.raw.get();
        let frame = page.frame();
        let meta = &metas[frame.pfn()];
        let page_flags = meta.flags();
        if page_flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
            let (n, pins) = unpin_large_run(mm, page, &mut pages[i + 1..], dirty);
            total = total.wrapping_add(n as u64);
            large_pins = large_pins.wrapping_add(pins);
            i += n;
            continue;
        }
        total = total.wrapping_add(1);
        pin_bits = pin_bits.wrapping_add(raw & PIN_BIT);
        if raw & PIN_BIT != 0 {
            meta.dec_pincount();
        }
        // `ANON` never changes while the page is held: the flags read above are exact.
        mm.put_small_page_meta(meta, frame, page_flags.contains(FrameFlags::ANON));
        i += 1;
    }
    (total, (pin_bits / PIN_BIT).wrapping_add(large_pins))
}

/// The large-folio arm of [`unpin_pages_uncounted`]: `page` holds a subpage of a large folio;
/// the slots of `rest` holding the next subpages of the same folio, taken the same way, go with
/// it (one pin and one reference subtraction). Returns the pages released (`page` included) and
/// how many were pins.
#[inline(never)]
fn unpin_large_run<A: Arch>(
    mm: &Mm<A>,
    page: PinnedPage,
    rest: &mut [Option<PinnedPage>],
    dirty: UnpinDirty,
) -> (usize, u64) {
    let metas = mm.frames().metas();
    let frame = page.frame();
    let kind = page.kind();
    let head = mm.frames().head_meta(&metas[frame.pfn()]);
    let mut more = 0usize;
    while let Some(Some(next)) = rest.get(more) {
        let expected = frame + (more as u64 + 1) * crate::PAGE_SIZE as u64;
        if next.frame() != expected
            || next.kind() != kind
            || !core::ptr::eq(mm.frames().head_meta(&metas[expected.pfn()]), head)
        {
            break;
        }
        more += 1;
    }
    for slot in &mut rest[..more] {
        let next = slot.take().expect("counted above");
        if dirty == UnpinDirty::MakeDirty {
            next.mark_dirty(mm);
        }
    }
    let n = more + 1;
    // The run stays inside one folio (at most 1 GiB of pages): it fits the `u32` counts.
    unpin_folio_run(mm, head, frame, kind, n as u32);
    let pins = if kind == PinKind::Pin { n as u64 } else { 0 };
    (n, pins)
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
