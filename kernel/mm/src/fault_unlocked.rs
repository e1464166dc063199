//! The page fault a CPU may resolve without the kernel's big lock (issue 16; Linux's per-VMA-lock
//! fault: `lock_vma_under_rcu`, then `handle_mm_fault` with `FAULT_FLAG_VMA_LOCK`, and
//! `VM_FAULT_RETRY` back to the `mmap_lock` path for whatever the VMA lock cannot do).
//!
//! Picture: the caller holds only the address space's `mmap_lock` for reading and its page-table
//! lock (one compare-exchange, taken without waiting) and has interrupts off. This module first
//! decides, from the VMA and the PTE, whether the fault is one of the few kinds whose every step
//! is safe there ([`unlocked_fault_allowed`]); if so it runs the ordinary fault
//! (`fault::fault_inner`, so the rules are the same function as on the locked path), and any
//! failure (no frame, a signal) is [`FaultError::Retry`]: the caller takes the big lock and
//! runs the fault again from scratch, as before.
//!
//! Allowed: a read or write fault on a private anonymous VMA whose PT already exists, on an
//! empty PTE (the zero page; a new 4 KiB page while no mTHP size is enabled) or on a present
//! read-only PTE over the zero page or a small anon page (`do_wp_page`: reuse or copy). What
//! those steps touch and why each is safe without the big lock is docs/locking.md's
//! "BKL-free fault path". Everything else (file, shmem, hugetlb VMAs; a missing PT, so no THP
//! and no page-table allocation; mTHP; large folios; `PROTNONE` or other non-present entries;
//! SIGSEGV; the fault trace and the `faultstat` build, which need faults serialised) is
//! retried under the lock. Reclaim is never run here: the allocator asks `Arch::may_reclaim`.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::FaultError;
use crate::fault::{access_permitted, fault_inner, x86_error, Access, FaultKind};
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::vma::Sharing;

/// A ring-3 page fault (`cr2`, the CPU's error code) on `aspace`, held by the caller for reading
/// with its page-table lock and without the big kernel lock. `Ok(())`: resolved, the access
/// can be retried. `Err(FaultError::Retry)`: nothing the caller must undo was done; fault again
/// on the locked path (which also delivers any signal).
#[doc(alias = "lock_vma_under_rcu")]
pub fn handle_x86_page_fault_unlocked<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    cr2: u64,
    error_code: u64,
) -> Result<(), FaultError> {
    let kind = match error_code & (x86_error::WRITE | x86_error::INSTRUCTION | x86_error::RESERVED)
    {
        0 => FaultKind::Read,
        x86_error::WRITE => FaultKind::Write,
        _ => return Err(FaultError::Retry),
    };
    if cr2 >= USER_END {
        return Err(FaultError::Retry);
    }
    let va = VirtAddr::new(cr2);
    if !unlocked_fault_allowed(mm, aspace, va, kind) {
        return Err(FaultError::Retry);
    }
    // Errors are the out-of-memory case only (the checks above exclude SIGSEGV): nothing was
    // changed before the allocation failed; the locked path reclaims or runs the OOM killer.
    fault_inner(mm, aspace, va, kind, Access::User, false).map_err(|_| FaultError::Retry)
}

/// Whether every step of the fault at `va` is one the unlocked path may take (module comment):
/// the VMA test of Linux's `lock_vma_under_rcu` (anonymous, private) plus the PTE cases
/// `do_anonymous_page` and `do_wp_page` handle on small pages.
pub(crate) fn unlocked_fault_allowed<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
) -> bool {
    // Both record per fault into state shared across CPUs that assumes one fault at a time.
    if cfg!(feature = "faultstat") || mm.trace.enabled() {
        return false;
    }
    if aspace.being_unmapped(va) {
        return false;
    }
    let Some(vma) = aspace.find_vma(va) else {
        return false;
    };
    if !vma.is_anonymous() || vma.sharing() != Sharing::Private || !access_permitted(vma, kind) {
        return false;
    }
    let pt = aspace.page_table(mm);
    let Some(table) = pt.walk_pt(va) else {
        return false;
    };
    let pte = pt.entry(table, va.table_index(1)).load();
    if pte.is_empty() {
        return kind == FaultKind::Read || !mm.thp().sizes.any();
    }
    if !pte.is_present() {
        return false;
    }
    if kind == FaultKind::Read || pte.is_writable() {
        // A stale TLB entry: nothing to change.
        return true;
    }
    let frame = pte.frame();
    if frame == mm.zero_page() {
        return true;
    }
    let flags = mm.frames().meta(frame).flags();
    flags.contains(FrameFlags::ANON) && !flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL)
}
