//! Pins and plain references on user pages: the minimal half of GUP that fork needs.
//!
//! Picture: a device (or a kernel thread) keeps using a page behind the page tables. Under the
//! 2020+ rules that is a *pin* (`FOLL_PIN`): one reference plus one `pincount`, so fork and the
//! fault path can tell the page may be under DMA (`maybe_dma_pinned`). Before 2020 pins did not
//! exist and the same request takes a plain reference (`FOLL_GET`), invisible to fork — which is
//! exactly what reproduces the old races. A [`PinnedPage`] remembers which kind it holds, so it
//! is released correctly even if the era changes meanwhile. Full GUP (faulting pages in,
//! unsharing, `FOLL_*` checks) is the next issue; here the page must already be mapped.

#![deny(unsafe_code)]

use core::sync::atomic::{fence, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::mm::Mm;
use crate::rules;

/// How a [`PinnedPage`] holds its page.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PinKind {
    /// `FOLL_PIN`: a reference and a `pincount`.
    Pin,
    /// `FOLL_GET`: a reference only.
    Get,
}

/// A page held by a device or kernel user. Not `Clone`: each one is one reference. Release it
/// with [`PinnedPage::unpin`]; dropping it leaks the page.
#[must_use = "a pinned page must be released with unpin()"]
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedPage {
    pub(crate) frame: PhysAddr,
    kind: PinKind,
}

impl PinnedPage {
    pub fn frame(&self) -> PhysAddr {
        self.frame
    }

    pub fn kind(&self) -> PinKind {
        self.kind
    }

    /// Releases the page (Linux `unpin_user_page` or `put_page`).
    #[doc(alias = "unpin_user_page")]
    pub fn unpin<A: Arch>(self, mm: &Mm<A>) {
        if self.kind == PinKind::Pin {
            mm.frames().meta(self.frame).dec_pincount();
        }
        mm.put_page(self.frame);
    }
}

/// Pins the page mapped at `va` in `aspace`, which must be present (no fault is taken):
/// a `FOLL_PIN` pin under the 2020+ rules, a plain reference before. Marks the address space
/// as having pinned (`MMF_HAS_PINNED`) before the pin becomes visible. `EFAULT` if nothing is
/// mapped there.
#[doc(alias = "pin_user_pages")]
pub fn pin_user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    va: VirtAddr,
) -> Result<PinnedPage, MmError> {
    let pte = aspace
        .translate(mm, va)
        .filter(|p| p.is_present())
        .ok_or(MmError::Fault)?;
    let frame = pte.frame();
    let meta = mm.frames().meta(frame);
    meta.get();
    if !rules::foll_pin_tracked(mm.era()) {
        return Ok(PinnedPage {
            frame,
            kind: PinKind::Get,
        });
    }
    aspace.set_has_pinned();
    meta.inc_pincount();
    // Pairs with fork's fence after making write_protect_seq odd (see `frame::FrameMeta`).
    fence(Ordering::SeqCst);
    Ok(PinnedPage {
        frame,
        kind: PinKind::Pin,
    })
}

/// Takes a plain reference (`FOLL_GET`) on the page mapped at `va`, in every era.
#[doc(alias = "get_user_pages")]
pub fn get_user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    va: VirtAddr,
) -> Result<PinnedPage, MmError> {
    let pte = aspace
        .translate(mm, va)
        .filter(|p| p.is_present())
        .ok_or(MmError::Fault)?;
    mm.frames().meta(pte.frame()).get();
    Ok(PinnedPage {
        frame: pte.frame(),
        kind: PinKind::Get,
    })
}
