//! Page faults (SEMANTICS.md section 3): turning an access the MMU refused into a mapping, or
//! into SIGSEGV.
//!
//! Picture: a fault is a question — "may this access at this address happen?" — answered from
//! the VMA (is it allowed at all?) and then from the PTE (what must change so that it can?).
//! An empty PTE gets the zero page (read) or a fresh zeroed exclusive page (write); a read-only
//! PTE facing a write goes to `do_wp_page` (`wp.rs`); a PTE that already allows the access was a
//! stale TLB entry and needs nothing. This path is hot: one VMA lookup, one page-table walk, no
//! logging, no allocation but the page and the page tables it needs.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::{FaultError, SegvReason};
use crate::faultstat::{self, Kind as StatKind, Phase};
use crate::huge_memory::{do_huge_pmd_anonymous_page, do_huge_pmd_fault, thp_vma_allowable};
use crate::mm::Mm;
use crate::pagetable::{Pte, PteRef};
use crate::shmem::{ShmemFault, ShmemObject};
use crate::stats;
use crate::trace::{Decision, Rule};
use crate::vma::{Prot, Sharing, Vma, VmaFlags};
use crate::wp::{do_wp_page, write_grant, WpKind};

/// What the faulting access wanted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FaultKind {
    Read,
    Write,
    /// Instruction fetch.
    Exec,
    /// Make the page exclusive without making it writable (`FAULT_FLAG_UNSHARE`). Raised only by
    /// GUP before a read-only pin; never together with a write.
    Unshare,
}

/// x86 page-fault error code bits (Intel SDM vol. 3, 4.7).
pub mod x86_error {
    /// The fault was a protection violation (else: a not-present entry).
    pub const PROTECTION: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    /// The access was made in user mode.
    pub const USER: u64 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RESERVED: u64 = 1 << 3;
    pub const INSTRUCTION: u64 = 1 << 4;
}

/// Entry point from the page-fault exception: `cr2` and the error code as the CPU reported them,
/// for an access made by (or on behalf of) the process owning `aspace`. The kernel has already
/// ruled out faults on its own addresses from kernel mode; a user access to a kernel address
/// arrives here and gets SIGSEGV.
#[doc(alias = "exc_page_fault")]
pub fn handle_x86_page_fault<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    cr2: u64,
    error_code: u64,
) -> Result<(), FaultError> {
    assert!(
        error_code & x86_error::RESERVED == 0,
        "page fault with a reserved bit set at {cr2:#x}: a page-table entry is corrupt"
    );
    let kind = if error_code & x86_error::INSTRUCTION != 0 {
        FaultKind::Exec
    } else if error_code & x86_error::WRITE != 0 {
        FaultKind::Write
    } else {
        FaultKind::Read
    };
    handle_mm_fault(mm, aspace, VirtAddr::new(cr2), kind)
}

/// [`handle_x86_page_fault`] for a caller that can drop the address space's lock and run the
/// fault again (the kernel's page-fault handler; Linux `FAULT_FLAG_ALLOW_RETRY`): a file page
/// not cached yet, or being filled by another task, is [`FaultError::Retry`] instead of a read
/// or a wait under the lock. The caller then calls `pagecache::filemap_fault_fill` for the
/// VMA's page at `cr2` with no lock held, and faults again.
pub fn handle_x86_page_fault_retry<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    cr2: u64,
    error_code: u64,
) -> Result<(), FaultError> {
    let kind = if error_code & x86_error::INSTRUCTION != 0 {
        FaultKind::Exec
    } else if error_code & x86_error::WRITE != 0 {
        FaultKind::Write
    } else {
        FaultKind::Read
    };
    fault_inner(mm, aspace, VirtAddr::new(cr2), kind, Access::User, true)
}

/// Resolves a fault at `va` (Linux `handle_mm_fault`). On success the access can be retried;
/// the process's minor-fault count has grown by one.
pub fn handle_mm_fault<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<(), FaultError> {
    fault_inner(mm, aspace, va, kind, Access::User, false)
}

/// A page a populating fault needs read in first (Linux `VM_FAULT_RETRY` from
/// `populate_vma_page_range`): the file, the page index, and whether the file must also
/// allocate the page's blocks for a store (write-notify). The caller lets its address-space
/// hold go, fills it ([`crate::pagecache::filemap_fault_fill`]), takes the hold again and
/// faults again from there, looking the VMA up afresh.
pub type PendingFill = (crate::pagecache::FileRef, u64, bool);

/// [`handle_mm_fault`] for a populating caller that can let its address-space hold go
/// (`mlock`, `MADV_POPULATE_*`): a file page not cached yet, or being filled by another task,
/// is `Ok(Some(_))`, never read or waited for here, so no task waits on a page lock or polls
/// the filesystem with the address space locked (another thread's user copy would find it
/// locked).
pub fn populate_fault<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<Option<PendingFill>, FaultError> {
    match fault_inner(mm, aspace, va, kind, Access::User, true) {
        Ok(()) => Ok(None),
        Err(FaultError::Retry) => aspace
            .find_vma(va)
            .and_then(|v| {
                let write = kind == FaultKind::Write && v.vma_wants_writenotify();
                v.file_page(va).map(|(file, index)| (file, index, write))
            })
            .map(|(file, index, write)| Some((file.clone(), index, write)))
            .ok_or(FaultError::Segv(SegvReason::NoMapping)),
        Err(e) => Err(e),
    }
}

/// Who is asking: the process itself, or GUP with `FOLL_FORCE` on its behalf.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// The mapping's protection decides.
    User,
    /// `FOLL_FORCE` (ptrace, `/proc/pid/mem`): a write to a COW mapping without `PROT_WRITE`
    /// is allowed and breaks COW, but the resulting PTE stays read-only (Linux's
    /// `maybe_mkwrite`): the process itself still cannot write.
    Force,
}

/// [`handle_mm_fault`] with the `FOLL_FORCE` permission check of GUP (Linux passes
/// `FAULT_FLAG_WRITE` for a VMA without `VM_WRITE`, which only `check_vma_flags` lets through).
#[inline(always)]
pub(crate) fn fault_inner<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
    access: Access,
    may_retry: bool,
) -> Result<(), FaultError> {
    fault_body::<A, false>(mm, aspace, va, kind, access, may_retry)
}

/// [`fault_inner`]; `UNLOCKED`: the fault without the big lock (`fault_unlocked.rs`, Linux's
/// `FAULT_FLAG_VMA_LOCK`), which answers `Retry` at the first step it may not take there
/// (the `if UNLOCKED` tests, compiled out of the locked path) and reads each setting it
/// depends on (mTHP sizes, the trace) once.
pub(crate) fn fault_body<A: Arch, const UNLOCKED: bool>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
    access: Access,
    may_retry: bool,
) -> Result<(), FaultError> {
    // Both record per fault into state that assumes one fault at a time.
    if UNLOCKED && (cfg!(feature = "faultstat") || mm.trace.enabled()) {
        return Err(FaultError::Retry);
    }
    faultstat::begin();
    if va.as_u64() >= USER_END || aspace.being_unmapped(va) {
        return Err(FaultError::Segv(SegvReason::NoMapping));
    }
    let vma = match aspace.find_vma(va) {
        Some(vma) => vma,
        None if UNLOCKED => return Err(FaultError::Retry),
        None => return fault_outside_vmas(mm, aspace, va, kind, access),
    };
    if UNLOCKED && (!vma.is_anonymous() || vma.sharing() != Sharing::Private) {
        return Err(FaultError::Retry);
    }
    // FOLL_FORCE (`/proc/pid/mem`) writes a COW mapping whatever its protection, and reads a
    // PROT_NONE one that may be read; the pages it faults in there get `PROTNONE` PTEs
    // (`page_prot`), which the MMU still refuses to the process (Linux `check_vma_flags` lets
    // these through and `handle_mm_fault` maps with `vm_page_prot`).
    let forced = access == Access::Force
        && match kind {
            FaultKind::Write => vma.is_cow_mapping(),
            FaultKind::Read => vma.flags().contains(VmaFlags::MAYREAD),
            FaultKind::Unshare | FaultKind::Exec => false,
        };
    if !forced && !access_permitted(vma, kind) {
        return Err(FaultError::Segv(SegvReason::Protection));
    }
    faultstat::phase(Phase::Lookup);
    let pt = aspace.page_table(mm);
    // The PT is there for all but the first fault of each 2 MiB: only then is a THP possible
    // (or a PMD leaf in the way), so the small-page path pays nothing for either.
    let slot = match pt.walk_pt(va) {
        // `walk_pt` inlines here (as `walk_alloc` did): an out-of-line `walk` cost a call.
        Some(table) => pt.entry(table, va.table_index(1)),
        // No PT: a THP or a page-table allocation, neither done without the big lock.
        None if UNLOCKED => return Err(FaultError::Retry),
        None => match fault_no_pt(mm, aspace, vma, va, kind)? {
            Some(slot) => slot,
            None => {
                aspace.count_minor_fault();
                faultstat::end();
                return Ok(());
            }
        },
    };
    let pte = slot.load();
    faultstat::phase(Phase::Walk);
    if !pte.is_mapping() {
        // A swap-style marker, never resolved without the big lock.
        if UNLOCKED && !pte.is_empty() {
            return Err(FaultError::Retry);
        }
        // Anonymous memory first (the hot case: one compare), then the other backings.
        let decision = if vma.is_anonymous() {
            // mTHP (`mthp.rs`): a test and a branch while no smaller size is enabled; the
            // rest is out of line so this function's code stays as it was.
            if kind == FaultKind::Write && mm.thp().sizes.any() {
                // Large folios (mapcount over the folio, deferred split) need the big lock.
                if UNLOCKED {
                    return Err(FaultError::Retry);
                }
                fault_anon_mthp(mm, &aspace.shared, vma, slot, va)?;
                (Decision::NewPage, Rule::DoAnonymousPage)
            } else {
                do_anonymous_page(mm, vma, slot, kind)?;
                match kind {
                    FaultKind::Write => {
                        // The zero page a read maps is nobody's resident memory.
                        aspace.shared.add_rss(1);
                        (Decision::NewPage, Rule::DoAnonymousPage)
                    }
                    _ => (Decision::ZeroPage, Rule::DoAnonymousPage),
                }
            }
        } else if let Some((obj, index)) = vma.shmem_page(va) {
            do_shmem_fault(mm, vma, slot, obj, index, kind)?;
            aspace.shared.add_rss(1);
            (Decision::Shmem, Rule::ShmemFault)
        } else if let Some((file, index)) = vma.file_page(va) {
            do_file_fault(mm, vma, slot, &*file.0, index, kind, may_retry)?;
            aspace.shared.add_rss(1);
            if kind == FaultKind::Read {
                let around =
                    crate::faultaround::do_fault_around(mm, aspace, vma, va, &*file.0, index);
                aspace.shared.add_rss(around as u64);
            }
            (Decision::File, Rule::FileFault)
        } else {
            // The one backing left, hugetlb, is mapped by PMD leaves only; a PT found there is
            // a stray (no path leaves one today) that must not get a 4 KiB page: the hugetlb
            // fault frees it if empty.
            debug_assert!(vma.is_hugetlb());
            crate::hugetlb::hugetlb_fault(mm, &aspace.shared, vma, va, kind)?;
            aspace.count_minor_fault();
            faultstat::end();
            return Ok(());
        };
        // The fault trace (`trace.rs`): one flag test when off; `do_wp_page` records its own.
        // The unlocked fault found it off at its start.
        if !UNLOCKED && mm.trace.enabled() {
            mm.trace.record(aspace.root, va, kind, decision);
        }
    } else {
        if UNLOCKED && !pte.is_present() {
            return Err(FaultError::Retry);
        }
        debug_assert!(
            pte.is_present() || (forced && !vma.prot().accessible()),
            "PROT_NONE PTE under an accessible VMA at {va:#x}"
        );
        match kind {
            // A writable PTE means a stale TLB entry: the retry will succeed (Linux's
            // spurious-fault path; x86 needs no flush for it).
            FaultKind::Write | FaultKind::Unshare if !pte.is_writable() => {
                // Only the zero page and small anon pages are copied or reused unlocked.
                if UNLOCKED && !crate::fault_unlocked::wp_unlocked_allowed(mm, pte) {
                    return Err(FaultError::Retry);
                }
                let wp = if kind == FaultKind::Write {
                    WpKind::Write
                } else {
                    WpKind::Unshare
                };
                do_wp_page(mm, &aspace.shared, vma, slot, va, pte, wp, may_retry)?;
            }
            _ => {}
        }
    }
    aspace.count_minor_fault();
    faultstat::end();
    Ok(())
}

/// The rest of [`fault_inner`] for an anon write fault on an empty PTE while some mTHP size
/// is enabled: an mTHP when one fits (`mthp::do_anonymous_mthp`), else the 4 KiB page.
#[cold]
#[inline(never)]
fn fault_anon_mthp<A: Arch>(
    mm: &Mm<A>,
    shared: &crate::mmshared::MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
) -> Result<(), FaultError> {
    if !crate::mthp::do_anonymous_mthp(mm, shared, vma, va)? {
        do_anonymous_page(mm, vma, slot, FaultKind::Write)?;
        shared.add_rss(1);
    }
    Ok(())
}

/// A fault where no VMA is: a stack just above may grow down to it (`stack.rs`); else SIGSEGV.
/// Only the process's own accesses grow a stack (Linux 6.5+: GUP never expands one).
#[cold]
fn fault_outside_vmas<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
    access: Access,
) -> Result<(), FaultError> {
    if access == Access::User && aspace.expand_stack(mm, va) {
        return fault_inner(mm, aspace, va, kind, access, false);
    }
    Err(FaultError::Segv(SegvReason::NoMapping))
}

/// No PT translates `va` yet (Linux `__handle_mm_fault` at the PMD level): an eligible VMA
/// gets a THP (`create_huge_pmd`); a PMD leaf already there takes its own fault (perhaps in a
/// VMA no longer eligible, `MADV_NOHUGEPAGE` after the fault), which may split it; otherwise
/// the tables down to the PT are allocated. `Ok(None)`: handled at the PMD; `Ok(Some(slot))`:
/// continue on the PTE.
#[cold]
#[inline(never)]
fn fault_no_pt<'m, A: Arch>(
    mm: &'m Mm<A>,
    aspace: &AddressSpace,
    vma: &Vma,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<Option<PteRef<'m>>, FaultError> {
    if vma.is_hugetlb() {
        crate::hugetlb::hugetlb_fault(mm, &aspace.shared, vma, va, kind)?;
        return Ok(None);
    }
    // `walk_pt_or_pd` below does not check what `walk_alloc_pmd` asserted: a kernel address
    // would walk the shared kernel half and hand back one of its PDs. A VMA never reaches
    // there (`USER_END`), so this is a kernel bug, checked in debug builds only (zero cost on
    // the fault path of the release kernel).
    debug_assert!(
        va.as_u64() < USER_END,
        "fault_no_pt at kernel address {va:#x}"
    );
    let pt = aspace.page_table(mm);
    if thp_vma_allowable(mm, vma, va) {
        // The PD is there on all but the first fault of each 1 GiB: reached by the inline
        // walk, not `walk_alloc_pmd`'s call.
        let pmd = match pt.walk_pt_or_pd(va) {
            Err(Some(pd)) => pt.entry(pd, va.table_index(2)),
            _ => pt.walk_alloc_pmd(va).ok_or(FaultError::Oom)?,
        };
        if do_huge_pmd_anonymous_page(mm, &aspace.shared, vma, pmd, va, kind)? {
            return Ok(None);
        }
    }
    if let Some(slot) = pt.walk_alloc(va) {
        return Ok(Some(slot));
    }
    let slot = pt.walk_pmd(va).ok_or(FaultError::Oom)?;
    let pmd = slot.load();
    if !pmd.is_huge() {
        return Err(FaultError::Oom);
    }
    if do_huge_pmd_fault(mm, &aspace.shared, vma, slot, va, pmd, kind)? {
        return Ok(None);
    }
    // Split: the PT is there now.
    pt.walk(va).map(Some).ok_or(FaultError::Oom)
}

/// May the mapping be accessed this way at all (Linux `access_error`)? x86 cannot express
/// write-only or execute-only pages, so any permission allows reads.
///
/// A mask per kind, any of whose `PROT_*` bits allows the access (read and unshare: any,
/// `accessible`; write: `PROT_WRITE`; exec: `PROT_EXEC`): one load and a test on every fault,
/// where the `match` compiled to a jump table (~5 instructions more).
#[inline(always)]
pub(crate) fn access_permitted(vma: &Vma, kind: FaultKind) -> bool {
    const ANY: u32 = Prot::READ.bits() | Prot::WRITE.bits() | Prot::EXEC.bits();
    let allows = match kind {
        FaultKind::Read | FaultKind::Unshare => ANY,
        FaultKind::Write => Prot::WRITE.bits(),
        FaultKind::Exec => Prot::EXEC.bits(),
    };
    vma.prot().bits() & allows != 0
}

/// First touch of a page of an anonymous mapping (Linux `do_anonymous_page`): a read maps the
/// shared zero page read-only; a write maps a new zeroed page, `ANON|ANON_EXCLUSIVE`, writable.
///
/// An unshare fault on an empty PTE is treated as a read, as in Linux (`FAULT_FLAG_UNSHARE`
/// without `FAULT_FLAG_WRITE` takes the read branch of `do_anonymous_page`): it maps the zero
/// page, not the "exclusive anon page" SEMANTICS.md section 3 words as the result of an
/// unshare. GUP then looks again, sees the zero page in a COW mapping and, if the pin must
/// unshare it (`gup_must_unshare`, long-term pins from 2022), raises a second unshare fault,
/// which `do_wp_page` resolves with a copy (`wp_page_copy` of the zero page: a zeroed exclusive
/// anon page, still read-only). Two faults, the same end state.
///
/// Always inlined: since `fault_anon_mthp` calls it too, LLVM would otherwise call it out of
/// line from `fault_inner`.
#[inline(always)]
fn do_anonymous_page<A: Arch>(
    mm: &Mm<A>,
    vma: &Vma,
    slot: PteRef<'_>,
    kind: FaultKind,
) -> Result<(), FaultError> {
    debug_assert!(
        vma.is_anonymous() && vma.sharing() == Sharing::Private,
        "shared anonymous memory is shmem"
    );
    if kind == FaultKind::Write {
        let page = mm.alloc_anon_page(None).ok_or(FaultError::Oom)?;
        let bits = vma.page_prot() | write_grant(vma);
        slot.store(Pte::new(page, bits));
        stats::inc(&mm.counters.anon_faults);
        faultstat::kind(StatKind::ZeroFill);
    } else {
        mm.dup_zero_page();
        slot.store(Pte::new(mm.zero_page(), vma.page_prot() | Pte::ACCESSED));
        stats::inc(&mm.counters.zero_page_faults);
        faultstat::kind(StatKind::ZeroPageMap);
    }
    faultstat::phase(Phase::Pte);
    Ok(())
}

/// First touch of a page of a file mapping (Linux `do_read_fault`, `do_cow_fault`,
/// `do_shared_fault` over `filemap_fault`): the cache page is found or read in; a page wholly
/// past the end of the file is `SIGBUS`. A shared mapping maps the cache page (on a write,
/// dirtied first: `page_mkwrite`), a private one maps it read-only, or on a write an exclusive
/// anon copy of it — a private writer never reaches the file (SEMANTICS.md section 3).
#[cold]
fn do_file_fault<A: Arch>(
    mm: &Mm<A>,
    vma: &Vma,
    slot: PteRef<'_>,
    file: &dyn crate::pagecache::MappedFile,
    index: u64,
    kind: FaultKind,
    may_retry: bool,
) -> Result<(), FaultError> {
    use crate::pagecache::{fault_page, file_page_mkwrite, FileFault};
    let page = fault_page(mm, file, index, may_retry).map_err(|e| match e {
        FileFault::BeyondEof | FileFault::Io | FileFault::NoSpace => {
            FaultError::Segv(SegvReason::BeyondEof)
        }
        FileFault::NoMem => FaultError::Oom,
        FileFault::Retry => FaultError::Retry,
    })?;
    let base = vma.page_prot() | Pte::ACCESSED;
    match (vma.sharing(), kind) {
        (Sharing::Private, FaultKind::Write) => {
            let Some(copy) = mm.alloc_anon_page(Some(page)) else {
                mm.put_page(page);
                return Err(FaultError::Oom);
            };
            slot.store(Pte::new(copy, base | write_grant(vma)));
            mm.put_page(page);
            stats::inc(&mm.counters.cow_copies);
        }
        (Sharing::Shared, FaultKind::Write) => {
            if let Err(e) = file_page_mkwrite(mm, file, index, page, may_retry) {
                mm.put_page(page);
                return Err(e);
            }
            stats::inc(&mm.counters.writenotify_faults);
            mm.frames().meta(page).inc_mapcount();
            slot.store(Pte::new(page, base | write_grant(vma)));
        }
        _ => {
            mm.frames().meta(page).inc_mapcount();
            slot.store(Pte::new(page, base));
        }
    }
    stats::inc(&mm.counters.file_faults);
    faultstat::kind(StatKind::FileFault);
    faultstat::phase(Phase::Pte);
    Ok(())
}

/// First touch of a page of a shmem mapping (Linux `do_read_fault`, `do_cow_fault`,
/// `do_shared_fault` over `shmem_fault`): the object's cache page is found or created; a shared
/// mapping maps it (writable at once on a write: shmem needs no dirty tracking), a private one
/// maps it read-only, or on a write maps an exclusive anon copy of it instead — a private
/// writer never reaches the object.
fn do_shmem_fault<A: Arch>(
    mm: &Mm<A>,
    vma: &Vma,
    slot: PteRef<'_>,
    obj: &ShmemObject,
    index: u64,
    kind: FaultKind,
) -> Result<(), FaultError> {
    // One reference, taken under the object's lock: becomes the mapping's, or is dropped
    // after copying.
    let page = obj.get_page(mm, index).map_err(|e| match e {
        ShmemFault::BeyondEof | ShmemFault::NoSpace => FaultError::Segv(SegvReason::BeyondEof),
        ShmemFault::NoMem => FaultError::Oom,
    })?;
    let base = vma.page_prot() | Pte::ACCESSED;
    match (vma.sharing(), kind) {
        (Sharing::Private, FaultKind::Write) => {
            let Some(copy) = mm.alloc_anon_page(Some(page)) else {
                mm.put_page(page);
                return Err(FaultError::Oom);
            };
            slot.store(Pte::new(copy, base | write_grant(vma)));
            mm.put_page(page);
            stats::inc(&mm.counters.cow_copies);
        }
        (Sharing::Shared, FaultKind::Write) => {
            mm.frames().meta(page).inc_mapcount();
            slot.store(Pte::new(page, base | write_grant(vma)));
        }
        _ => {
            mm.frames().meta(page).inc_mapcount();
            slot.store(Pte::new(page, base));
        }
    }
    stats::inc(&mm.counters.shmem_faults);
    faultstat::kind(StatKind::FileFault);
    faultstat::phase(Phase::Pte);
    Ok(())
}
