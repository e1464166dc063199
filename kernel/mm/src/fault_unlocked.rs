//! The page fault a CPU may resolve without the kernel's big lock (issue 16; Linux's per-VMA-lock
//! fault: `lock_vma_under_rcu`, then `handle_mm_fault` with `FAULT_FLAG_VMA_LOCK`, and
//! `VM_FAULT_RETRY` back to the `mmap_lock` path for whatever the VMA lock cannot do).
//!
//! Picture: the caller holds only the address space's `mmap_lock` for reading and its page-table
//! lock (one compare-exchange, taken without waiting) and has interrupts off. This module runs
//! the ordinary fault (`fault::fault_body`, so the rules are the same function as on the locked
//! path) with its `UNLOCKED` switch on: at the VMA lookup, the page-table walk and the PTE it
//! answers [`FaultError::Retry`] as soon as the fault is not one of the few kinds whose every
//! step is safe here (one lookup and one walk: a separate eligibility check walked both twice,
//! +61 guest instructions per fault, and read the mTHP and trace settings a second time, so
//! mTHP enabled in between could reach the large-folio path unlocked). Any failure (no frame,
//! a signal) is `Retry` too: the caller takes the big lock and runs the fault again from
//! scratch, as before.
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
use crate::fault::{fault_body, x86_error, Access, FaultKind};
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::pagetable::Pte;

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
    // Errors: a step not taken here (`Retry`), SIGSEGV, or no free frame; nothing was changed
    // before any of them. The locked path reclaims, runs the OOM killer or signals.
    fault_body::<A, true>(mm, aspace, VirtAddr::new(cr2), kind, Access::User, false)
        .map_err(|_| FaultError::Retry)
}

/// Whether `do_wp_page` on the present, read-only `pte` may run without the big lock (Linux's
/// `do_wp_page` under the VMA lock): over the zero page or a small anon page. Large folios
/// (mTHP, PTE-mapped THP: mapcount over the folio, deferred split) and file pages go to the
/// locked path.
#[inline(always)]
pub(crate) fn wp_unlocked_allowed<A: Arch>(mm: &Mm<A>, pte: Pte) -> bool {
    let frame = pte.frame();
    if frame == mm.zero_page() {
        return true;
    }
    let flags = mm.frames().meta(frame).flags();
    flags.contains(FrameFlags::ANON) && !flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL)
}
