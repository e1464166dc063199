//! Every decision of SEMANTICS.md section 9, one pure function each.
//!
//! The policy code (faults, fork, mprotect, GUP) gathers the facts — the era, the frame's state,
//! the PTE's bits, the mapping's kind — and asks one of these functions what to do. They read
//! no memory and change nothing, so each row of the era table is testable on its own and the
//! whole history of Linux's COW rules fits on one screen. The invariant kept: no other module
//! compares eras.

#![deny(unsafe_code)]

use crate::era::Era;
use crate::foll::FollFlags;
use crate::vma::Sharing;

/// What a write (or unshare) fault may do with a present, read-only anon page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WpReuse {
    /// The page is already `ANON_EXCLUSIVE`: write it in place.
    Exclusive,
    /// The page was proven not shared (by the era's count rule): mark it exclusive, then reuse.
    Proven,
    /// The page may be shared: copy it into a new exclusive page.
    Copy,
}

/// The counts the reuse decision looks at, read from the frame just before deciding.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AnonPageState {
    pub exclusive: bool,
    pub mapcount: u32,
    pub refcount: u32,
}

/// Row 1: may a write fault on a read-only anon PTE reuse the page (`do_wp_page`)?
///
/// - 2009, 2016: `mapcount == 1` (Linux `reuse_swap_page`). Wrong with GUP: a page with a GUP
///   reference and one mapping is reused, and the reference holder sees later writes (or, after
///   fork, the wrong side of the COW).
/// - 2020: `refcount == 1` only (Linux 5.8, `page_count`): correct but copies too eagerly, e.g.
///   a pinned page write-protected by clear_refs is copied away from its pin.
/// - 2022, 2023: the `ANON_EXCLUSIVE` bit first, then `refcount == 1`
///   (`wp_can_reuse_anon_folio`).
#[doc(alias = "wp_can_reuse_anon_folio")]
#[doc(alias = "do_wp_page")]
pub fn wp_can_reuse(era: Era, page: AnonPageState) -> WpReuse {
    // lab(cow): begin
    // lab(cow): stub: let _ = (era, page);
    // lab(cow): stub: WpReuse::Copy
    let proven = match era {
        Era::Y2009 | Era::Y2016 => page.mapcount == 1,
        Era::Y2020 => page.refcount == 1,
        Era::Y2022 | Era::Y2023 => {
            if page.exclusive {
                return WpReuse::Exclusive;
            }
            page.refcount == 1
        }
    };
    if proven {
        WpReuse::Proven
    } else {
        WpReuse::Copy
    }
    // lab(cow): end
}

/// Row 2: are `FOLL_PIN` pins tracked (`pincount`), or are they plain references?
/// Tracked from 2020 (Linux 5.6's `FOLL_PIN`, 5.7's `page_maybe_dma_pinned`).
pub fn foll_pin_tracked(era: Era) -> bool {
    era >= Era::Y2020
}

/// Row 3: must fork copy this anon page into the child now instead of sharing it
/// (`copy_present_pte`)?
///
/// From 2020 a page that may be under DMA is copied for the child so the parent keeps the page
/// its pin points at, writable (Linux 5.9 `page_needs_cow_for_dma`, checked only when the
/// process ever pinned: `MMF_HAS_PINNED`). From 2022 only exclusive pages qualify
/// (`page_try_dup_anon_rmap`): a non-exclusive page cannot be pinned under those rules.
#[doc(alias = "page_needs_cow_for_dma")]
#[doc(alias = "page_try_dup_anon_rmap")]
pub fn fork_must_copy(
    era: Era,
    mm_has_pinned: bool,
    anon_exclusive: bool,
    maybe_dma_pinned: bool,
) -> bool {
    // lab(pins): begin
    // lab(pins): stub: let _ = (era, mm_has_pinned, anon_exclusive, maybe_dma_pinned);
    // lab(pins): stub: false
    match era {
        Era::Y2009 | Era::Y2016 => false,
        Era::Y2020 => mm_has_pinned && maybe_dma_pinned,
        Era::Y2022 | Era::Y2023 => mm_has_pinned && anon_exclusive && maybe_dma_pinned,
    }
    // lab(pins): end
}

/// May `mprotect` (or any change of protection) make this present PTE writable at once, without
/// waiting for a write fault (SEMANTICS.md section 4)?
///
/// Only where no fault is needed to stay correct: in a private mapping a page that is
/// `ANON_EXCLUSIVE` (from 2022, Linux 6.0 `can_change_pte_writable`; before, private PTEs always
/// stayed read-only and the next write went through `do_wp_page`), in a shared mapping a page
/// that is already dirty (the old `dirty_accountable` path). Never while soft-dirty tracking
/// still needs to see the first write.
pub fn can_change_pte_writable(
    era: Era,
    sharing: Sharing,
    anon_exclusive: bool,
    pte_dirty: bool,
    soft_dirty_needs_fault: bool,
) -> bool {
    if soft_dirty_needs_fault {
        return false;
    }
    match sharing {
        Sharing::Private => era >= Era::Y2022 && anon_exclusive,
        Sharing::Shared => pte_dirty,
    }
}

/// Row 4: does a read-only pin unshare a non-exclusive anon page first? From 2022.
pub fn ro_pin_unshares_anon(era: Era) -> bool {
    era >= Era::Y2022
}

/// Row 5: does a read-only long-term pin unshare a zero-page or page-cache page mapped in a COW
/// mapping first? From 2022 (Linux 6.2).
pub fn ro_longterm_pin_unshares_non_anon(era: Era) -> bool {
    era >= Era::Y2022
}

/// What GUP knows about the mapping of the page it looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CowMapping {
    /// Private and may be written (`is_cow_mapping`).
    Yes,
    No,
    /// GUP-fast: the mapping was not looked up.
    Unknown,
}

/// Rows 4 and 5 together: must GUP raise an unshare fault (`FAULT_FLAG_UNSHARE`) before taking
/// a read-only pin on this page, which is mapped by a read-only PTE (`gup_must_unshare`)?
///
/// Writes are handled by the write fault; plain references (`FOLL_GET`) never unshare. Under the
/// 2022+ rules an anon page must be exclusive to be pinned; a zero-page or page-cache page must
/// be replaced by an exclusive anon page first only for long-term pins in COW mappings (short-term
/// pins have snapshot semantics). GUP-fast, which does not know the mapping, answers "yes" so it
/// falls back to the slow path.
pub fn gup_must_unshare(
    era: Era,
    flags: FollFlags,
    page_anon: bool,
    page_anon_exclusive: bool,
    mapping: CowMapping,
) -> bool {
    // lab(unshare): begin
    // lab(unshare): stub: let _ = (era, flags, page_anon, page_anon_exclusive, mapping);
    // lab(unshare): stub: false
    if flags.contains(FollFlags::WRITE) || !flags.contains(FollFlags::PIN) {
        return false;
    }
    if page_anon {
        return ro_pin_unshares_anon(era) && !page_anon_exclusive;
    }
    if !ro_longterm_pin_unshares_non_anon(era) || !flags.contains(FollFlags::LONGTERM) {
        return false;
    }
    match mapping {
        CowMapping::Yes | CowMapping::Unknown => true,
        CowMapping::No => false,
    }
    // lab(unshare): end
}

/// The PTE and mapping facts [`can_follow_write_pte`] looks at.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FollowWriteState {
    pub pte_writable: bool,
    pub pte_dirty: bool,
    pub vma_shared: bool,
    pub vma_maywrite: bool,
    pub vma_write: bool,
    pub page_anon_exclusive: bool,
    /// Soft-dirty tracking is on for the VMA (`vma_soft_dirty_enabled`: after `clear_refs`).
    pub vma_soft_dirty_tracking: bool,
    pub pte_soft_dirty: bool,
}

/// Row 6: may GUP with `FOLL_WRITE` use this PTE as it is, or must it fault for write first
/// (`can_follow_write_pte`)?
///
/// A writable PTE always serves. Through a read-only PTE only with `FOLL_FORCE`:
/// - 2009: never here; instead the retry after the COW fault drops `FOLL_WRITE`
///   ([`foll_force_cow_retry`]), so a racing `MADV_DONTNEED` lets the write hit the original
///   page (Dirty COW, CVE-2016-5195).
/// - 2016, 2020: only if the COW fault happened (`FOLL_COW`) and the PTE is dirty (Linux 4.8.3).
/// - 2022+: only in a private mapping that may be written but is not writable now, only to an
///   `ANON_EXCLUSIVE` page, and not while soft-dirty tracking waits for the page's first write
///   (tracking on and the PTE not soft-dirty: the write must fault so that it is recorded)
///   (Linux 6.0).
pub fn can_follow_write_pte(era: Era, flags: FollFlags, s: FollowWriteState) -> bool {
    // lab(dirtycow): begin
    // lab(dirtycow): stub: let _ = era;
    // lab(dirtycow): stub: s.pte_writable || flags.contains(FollFlags::FORCE)
    if s.pte_writable {
        return true;
    }
    if !flags.contains(FollFlags::FORCE) {
        return false;
    }
    match era {
        Era::Y2009 => false,
        Era::Y2016 | Era::Y2020 => flags.contains(FollFlags::COW) && s.pte_dirty,
        Era::Y2022 | Era::Y2023 => {
            !s.vma_shared
                && s.vma_maywrite
                && !s.vma_write
                && s.page_anon_exclusive
                && !(s.vma_soft_dirty_tracking && !s.pte_soft_dirty)
        }
    }
    // lab(dirtycow): end
}

/// What the GUP loop does after a successful write fault taken for a `FOLL_FORCE` write to a
/// mapping without write permission.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ForceWriteRetry {
    /// 2009: retry without `FOLL_WRITE` (the Dirty COW race).
    DropFollWrite,
    /// 2016, 2020: retry with `FOLL_COW` so [`can_follow_write_pte`] accepts the dirty COW copy.
    SetFollCow,
    /// 2022+: retry unchanged; the exclusive bit identifies the COW copy.
    Refault,
}

/// Row 6, the retry half: see [`ForceWriteRetry`].
pub fn foll_force_cow_retry(era: Era) -> ForceWriteRetry {
    match era {
        Era::Y2009 => ForceWriteRetry::DropFollWrite,
        Era::Y2016 | Era::Y2020 => ForceWriteRetry::SetFollCow,
        Era::Y2022 | Era::Y2023 => ForceWriteRetry::Refault,
    }
}

/// Row 7: does O_DIRECT-style DMA take its user buffers with `FOLL_PIN` (2023) rather than
/// `FOLL_GET` (every earlier era; Linux converted the block layer in 6.5)?
pub fn dma_uses_foll_pin(era: Era) -> bool {
    era >= Era::Y2023
}

/// Row 8: may a `FOLL_LONGTERM|FOLL_WRITE` pin take a page of a shared file mapping that needs
/// dirty tracking (seed 002)? Refused from 2023 with `EFAULT`:
/// the pin holder would write behind writeback's back.
#[doc(alias = "longterm_write_pin_allowed")]
pub fn writable_file_mapping_allowed(
    era: Era,
    flags: FollFlags,
    vma_needs_dirty_tracking: bool,
) -> bool {
    // lab(writeback): begin
    // lab(writeback): stub: let _ = (era, flags, vma_needs_dirty_tracking);
    // lab(writeback): stub: true
    if !flags.contains(FollFlags::LONGTERM | FollFlags::WRITE) {
        return true;
    }
    era < Era::Y2023 || !vma_needs_dirty_tracking
    // lab(writeback): end
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn page(exclusive: bool, mapcount: u32, refcount: u32) -> AnonPageState {
        AnonPageState {
            exclusive,
            mapcount,
            refcount,
        }
    }

    #[test]
    fn wp_reuse_per_era() {
        // One mapping plus a GUP reference: the 2009 rule reuses, 2020+ copy.
        let gup_ref = page(false, 1, 2);
        assert_eq!(wp_can_reuse(Era::Y2009, gup_ref), WpReuse::Proven);
        assert_eq!(wp_can_reuse(Era::Y2016, gup_ref), WpReuse::Proven);
        assert_eq!(wp_can_reuse(Era::Y2020, gup_ref), WpReuse::Copy);
        assert_eq!(wp_can_reuse(Era::Y2022, gup_ref), WpReuse::Copy);
        assert_eq!(wp_can_reuse(Era::Y2023, gup_ref), WpReuse::Copy);
        // Exclusive and pinned (refcount 2): only the exclusive bit saves the pin.
        let pinned = page(true, 1, 2);
        assert_eq!(wp_can_reuse(Era::Y2020, pinned), WpReuse::Copy);
        assert_eq!(wp_can_reuse(Era::Y2022, pinned), WpReuse::Exclusive);
        assert_eq!(wp_can_reuse(Era::Y2023, pinned), WpReuse::Exclusive);
        // The other process exited: everyone reuses.
        let alone = page(false, 1, 1);
        for era in Era::ALL {
            assert_eq!(wp_can_reuse(era, alone), WpReuse::Proven, "{era}");
        }
        // Shared by fork: everyone copies.
        let shared = page(false, 2, 2);
        for era in Era::ALL {
            assert_eq!(wp_can_reuse(era, shared), WpReuse::Copy, "{era}");
        }
    }

    #[test]
    fn pins_and_dma() {
        assert!(!foll_pin_tracked(Era::Y2009));
        assert!(!foll_pin_tracked(Era::Y2016));
        assert!(foll_pin_tracked(Era::Y2020));
        assert!(foll_pin_tracked(Era::Y2023));
        assert!(!dma_uses_foll_pin(Era::Y2022));
        assert!(dma_uses_foll_pin(Era::Y2023));
    }

    #[test]
    fn fork_copy_per_era() {
        for era in [Era::Y2009, Era::Y2016] {
            assert!(!fork_must_copy(era, true, true, true));
        }
        assert!(fork_must_copy(Era::Y2020, true, false, true));
        assert!(!fork_must_copy(Era::Y2020, false, true, true));
        for era in [Era::Y2022, Era::Y2023] {
            assert!(fork_must_copy(era, true, true, true));
            assert!(!fork_must_copy(era, true, false, true));
            assert!(!fork_must_copy(era, true, true, false));
            assert!(!fork_must_copy(era, false, true, true));
        }
    }

    #[test]
    fn mprotect_writable_rule() {
        use Sharing::*;
        assert!(can_change_pte_writable(
            Era::Y2023,
            Private,
            true,
            false,
            false
        ));
        assert!(!can_change_pte_writable(
            Era::Y2023,
            Private,
            false,
            true,
            false
        ));
        assert!(!can_change_pte_writable(
            Era::Y2020,
            Private,
            true,
            true,
            false
        ));
        assert!(can_change_pte_writable(
            Era::Y2009,
            Shared,
            false,
            true,
            false
        ));
        assert!(!can_change_pte_writable(
            Era::Y2023,
            Shared,
            false,
            false,
            false
        ));
        assert!(!can_change_pte_writable(
            Era::Y2023,
            Private,
            true,
            true,
            true
        ));
    }

    #[test]
    fn unshare_rule() {
        let ro_pin = FollFlags::PIN;
        let lt_pin = FollFlags::PIN | FollFlags::LONGTERM;
        // Anon, not exclusive.
        assert!(gup_must_unshare(
            Era::Y2022,
            ro_pin,
            true,
            false,
            CowMapping::Yes
        ));
        assert!(!gup_must_unshare(
            Era::Y2020,
            ro_pin,
            true,
            false,
            CowMapping::Yes
        ));
        assert!(!gup_must_unshare(
            Era::Y2023,
            ro_pin,
            true,
            true,
            CowMapping::Yes
        ));
        // Writes and plain references never unshare.
        assert!(!gup_must_unshare(
            Era::Y2023,
            ro_pin | FollFlags::WRITE,
            true,
            false,
            CowMapping::Yes
        ));
        assert!(!gup_must_unshare(
            Era::Y2023,
            FollFlags::GET,
            true,
            false,
            CowMapping::Yes
        ));
        // Zero page / page cache: only long-term, only COW mappings, fast path falls back.
        assert!(!gup_must_unshare(
            Era::Y2023,
            ro_pin,
            false,
            false,
            CowMapping::Yes
        ));
        assert!(gup_must_unshare(
            Era::Y2023,
            lt_pin,
            false,
            false,
            CowMapping::Yes
        ));
        assert!(!gup_must_unshare(
            Era::Y2023,
            lt_pin,
            false,
            false,
            CowMapping::No
        ));
        assert!(gup_must_unshare(
            Era::Y2023,
            lt_pin,
            false,
            false,
            CowMapping::Unknown
        ));
        assert!(!gup_must_unshare(
            Era::Y2020,
            lt_pin,
            false,
            false,
            CowMapping::Yes
        ));
    }

    #[test]
    fn follow_write_rule() {
        let ro_private = FollowWriteState {
            pte_writable: false,
            pte_dirty: true,
            vma_shared: false,
            vma_maywrite: true,
            vma_write: false,
            page_anon_exclusive: false,
            vma_soft_dirty_tracking: false,
            pte_soft_dirty: false,
        };
        let force = FollFlags::WRITE | FollFlags::FORCE;
        let writable = FollowWriteState {
            pte_writable: true,
            ..ro_private
        };
        for era in Era::ALL {
            assert!(can_follow_write_pte(era, FollFlags::WRITE, writable));
            assert!(!can_follow_write_pte(era, FollFlags::WRITE, ro_private));
        }
        assert!(!can_follow_write_pte(
            Era::Y2009,
            force | FollFlags::COW,
            ro_private
        ));
        assert!(!can_follow_write_pte(Era::Y2016, force, ro_private));
        assert!(can_follow_write_pte(
            Era::Y2016,
            force | FollFlags::COW,
            ro_private
        ));
        assert!(!can_follow_write_pte(Era::Y2023, force, ro_private));
        let exclusive = FollowWriteState {
            page_anon_exclusive: true,
            ..ro_private
        };
        assert!(can_follow_write_pte(Era::Y2023, force, exclusive));
        // Soft-dirty tracking waiting for the first write: fault so that it is recorded.
        let tracking = FollowWriteState {
            vma_soft_dirty_tracking: true,
            ..exclusive
        };
        for era in [Era::Y2022, Era::Y2023] {
            assert!(!can_follow_write_pte(era, force, tracking));
            let recorded = FollowWriteState {
                pte_soft_dirty: true,
                ..tracking
            };
            assert!(can_follow_write_pte(era, force, recorded));
        }
        let shared = FollowWriteState {
            vma_shared: true,
            ..exclusive
        };
        assert!(!can_follow_write_pte(Era::Y2023, force, shared));
        assert_eq!(
            foll_force_cow_retry(Era::Y2009),
            ForceWriteRetry::DropFollWrite
        );
        assert_eq!(
            foll_force_cow_retry(Era::Y2020),
            ForceWriteRetry::SetFollCow
        );
        assert_eq!(foll_force_cow_retry(Era::Y2022), ForceWriteRetry::Refault);
    }

    #[test]
    fn longterm_write_pin_rule() {
        let lw = FollFlags::PIN | FollFlags::LONGTERM | FollFlags::WRITE;
        assert!(!writable_file_mapping_allowed(Era::Y2023, lw, true));
        assert!(writable_file_mapping_allowed(Era::Y2023, lw, false));
        assert!(writable_file_mapping_allowed(Era::Y2022, lw, true));
        assert!(writable_file_mapping_allowed(
            Era::Y2023,
            FollFlags::PIN | FollFlags::WRITE,
            true
        ));
    }
}
