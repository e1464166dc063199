//! The write-protect fault (`do_wp_page`): a write, or an unshare request, meets a read-only PTE.
//!
//! Picture: in a COW mapping a read-only PTE over an anon page means "this page may be shared".
//! Writing in place is only allowed once the page is known to be this PTE's alone; otherwise the
//! writer gets its own copy. The three-step decision (exclusive bit, then a count proof, then
//! copy) is `rules::wp_can_reuse`; this module carries it out. The invariant: after a write
//! fault the PTE is writable and maps an `ANON_EXCLUSIVE` page; after an unshare fault the same
//! holds except the PTE stays read-only. No other process's view changes.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::cowstat::CowCounts;
use crate::error::FaultError;
use crate::fault::FaultKind;
use crate::faultstat::{self, Kind as StatKind, Phase};
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{Pte, PteRef};
use crate::rules::{self, AnonPageState, WpReuse};
use crate::stats;
use crate::tlb::TlbFlush;
use crate::trace::{Decision, Rule};
use crate::vma::Vma;

/// Which fault reached `do_wp_page`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WpKind {
    Write,
    /// `FAULT_FLAG_UNSHARE`: same decision, PTE stays read-only.
    Unshare,
}

/// Bits a PTE gains when a write fault makes it writable (`pte_mkwrite(pte_mkdirty())`; on x86
/// `pte_mkdirty` also marks soft-dirty).
const WRITE_GRANT: u64 = Pte::WRITABLE | Pte::DIRTY | Pte::ACCESSED | Pte::SOFT_DIRTY;

/// What a write fault grants in `vma` (Linux `maybe_mkwrite`): [`WRITE_GRANT`], without
/// `WRITABLE` when the mapping has no `PROT_WRITE`. That only happens for a `FOLL_FORCE` write
/// by GUP (ptrace, `/proc/pid/mem`): COW is broken and the copy is dirty, but the process itself
/// still cannot write.
#[doc(alias = "maybe_mkwrite")]
pub(crate) fn write_grant(vma: &Vma) -> u64 {
    if vma.prot().write() {
        WRITE_GRANT
    } else {
        WRITE_GRANT & !Pte::WRITABLE
    }
}

/// Handles a write or unshare fault on the present, read-only `pte` at `va` (Linux
/// `do_wp_page`). `may_retry`: the caller can drop its locks and fault again (Linux
/// `FAULT_FLAG_ALLOW_RETRY`), so a write-notify fault that needs the filesystem answers
/// [`FaultError::Retry`] instead of calling it here.
///
/// Always inlined: `fault_body` has two copies (locked and `UNLOCKED`), so this function has
/// two callers and LLVM called it out of line (+30 guest instructions per write-protect fault:
/// the call, six callee-saved registers, the arguments spilled), where it had inlined it into
/// the one `fault_inner` before. Only in optimised builds: a debug kernel keeps it a function
/// of its own, so `cowlab-break do_wp_page` (tools/gdb, README) can stop on it.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(debug_assertions), inline(always))]
pub(crate) fn do_wp_page<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    pte: Pte,
    kind: WpKind,
    may_retry: bool,
) -> Result<(), FaultError> {
    if !vma.is_cow_mapping() {
        // A shared mapping: there is nothing to unshare, and a write needs no copy (Linux
        // `wp_page_shared`; with files it will notify the filesystem first).
        if kind == WpKind::Write {
            if vma.vma_wants_writenotify() {
                // The write-notify fault: writeback made this PTE read-only (`folio_mkclean`).
                if let Some((file, index)) = vma.file_page(va) {
                    crate::pagecache::file_page_mkwrite(
                        mm,
                        &*file.0,
                        index,
                        pte.frame(),
                        may_retry,
                    )?;
                }
                stats::inc(&mm.counters.writenotify_faults);
            }
            slot.set_bits(write_grant(vma));
        }
        trace(
            mm,
            shared,
            va,
            kind,
            Decision::SharedWrite,
            Rule::WpPageShared,
        );
        return Ok(());
    }
    CowCounts::inc(&shared.cow.faults);
    let meta = mm.frames().meta(pte.frame());
    let flags = meta.flags();
    if !flags.contains(FrameFlags::ANON) {
        // The zero page, or a shmem (later also file) page-cache page in a private mapping:
        // never written in place (SEMANTICS.md section 3).
        wp_page_copy(mm, shared, vma, slot, va, pte, kind)?;
        CowCounts::inc(&shared.cow.copies);
        trace(mm, shared, va, kind, Decision::Copy, Rule::NotAnon);
        return Ok(());
    }
    let large = flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL);
    let page = AnonPageState {
        exclusive: flags.contains(FrameFlags::ANON_EXCLUSIVE),
        // Linux `page_mapcount` and `folio_ref_count`: a subpage of a large folio is mapped by
        // its PTEs and its folio's PMDs, and references are the folio's.
        mapcount: if large {
            mm.frames().page_mapcount(pte.frame())
        } else {
            meta.mapcount()
        },
        refcount: if large {
            mm.frames().folio_refcount(pte.frame())
        } else {
            meta.refcount()
        },
    };
    match rules::wp_can_reuse(mm.era(), page) {
        WpReuse::Exclusive => {
            // Unsharing an exclusive page is a no-op.
            if kind == WpKind::Write {
                wp_page_reuse(vma, slot);
                stats::inc(&mm.counters.wp_reuses_exclusive);
                CowCounts::inc(&shared.cow.reuses);
                faultstat::kind(StatKind::CowReuse);
            } else {
                CowCounts::inc(&shared.cow.unshares);
                faultstat::kind(StatKind::Unshare);
            }
            trace(
                mm,
                shared,
                va,
                kind,
                Decision::Reuse,
                Rule::WpCanReuseExclusive,
            );
        }
        WpReuse::Proven => {
            if !page.exclusive {
                meta.set_flags(FrameFlags::ANON_EXCLUSIVE);
            }
            match kind {
                WpKind::Write => {
                    wp_page_reuse(vma, slot);
                    stats::inc(&mm.counters.wp_reuses_proven);
                    CowCounts::inc(&shared.cow.reuses);
                    faultstat::kind(StatKind::CowReuse);
                }
                WpKind::Unshare => {
                    stats::inc(&mm.counters.unshares);
                    CowCounts::inc(&shared.cow.unshares);
                    faultstat::kind(StatKind::Unshare);
                }
            }
            let done = if kind == WpKind::Write {
                Decision::Reuse
            } else {
                Decision::Unshare
            };
            trace(mm, shared, va, kind, done, Rule::WpCanReuseProven);
        }
        WpReuse::Copy => {
            wp_page_copy(mm, shared, vma, slot, va, pte, kind)?;
            CowCounts::inc(&shared.cow.copies);
            trace(mm, shared, va, kind, Decision::Copy, Rule::WpCanReuseCopy);
            return Ok(());
        }
    }
    faultstat::phase(Phase::Pte);
    Ok(())
}

/// The fault trace's record of this decision: one flag test when tracing is off.
#[inline(always)]
fn trace<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    va: VirtAddr,
    kind: WpKind,
    decision: Decision,
    rule: Rule,
) {
    if mm.trace.enabled() {
        let kind = match kind {
            WpKind::Write => FaultKind::Write,
            WpKind::Unshare => FaultKind::Unshare,
        };
        mm.trace.record(shared.root(), va, kind, (decision, rule));
    }
}

/// Writes go to the page in place (Linux `wp_page_reuse`). Gaining a permission needs no TLB
/// flush: a stale read-only entry only causes one more (spurious) fault.
fn wp_page_reuse(vma: &Vma, slot: PteRef<'_>) {
    slot.set_bits(write_grant(vma));
}

/// Replaces the mapping of a possibly shared page by a new exclusive copy (or a zeroed page for
/// the zero page), then drops this PTE's mapping of the old page (Linux `wp_page_copy`).
fn wp_page_copy<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    pte: Pte,
    kind: WpKind,
) -> Result<(), FaultError> {
    let old = pte.frame();
    let new = mm.alloc_anon_page(Some(old)).ok_or(FaultError::Oom)?;
    let mut bits = vma.page_prot() | Pte::ACCESSED;
    if kind == WpKind::Write {
        bits |= write_grant(vma);
    }
    // Clear, flush, then set (Linux `ptep_clear_flush` + `set_pte_at`): were the new frame
    // stored first, another CPU could still use the old frame through its cached translation
    // while this one uses the new, and the two would diverge. The old PTE was read-only, so no
    // CPU can have written the old page since the copy; a CPU reaching the empty PTE
    // meanwhile faults and waits for the address-space lock. The old page can go only after
    // the flush.
    slot.take();
    TlbFlush::flush_one_page(mm.arch(), shared, va);
    faultstat::phase(Phase::Flush);
    slot.store(Pte::new(new, bits));
    faultstat::phase(Phase::Pte);
    mm.remove_mapping(old);
    mm.put_page(old);
    if old == mm.zero_page() {
        // The zero page was not resident memory of this space; its copy is.
        shared.add_rss(1);
        stats::inc(&mm.counters.zero_page_copies);
        faultstat::kind(StatKind::ZeroPageCopy);
    } else {
        stats::inc(&mm.counters.cow_copies);
        faultstat::kind(StatKind::CowCopy);
    }
    faultstat::phase(Phase::Pte);
    if kind == WpKind::Unshare {
        stats::inc(&mm.counters.unshares);
    }
    Ok(())
}
