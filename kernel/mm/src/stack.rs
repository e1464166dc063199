//! Stacks that grow down, and the guard gap that keeps other mappings away from them.
//!
//! Picture: a `GROWSDOWN` VMA (the main stack) covers only what has been used so far; an access
//! below it faults with no VMA, and the fault path extends the VMA down to the faulting page
//! (Linux `expand_downwards`) as long as the stack stays within its limit (`RLIMIT_STACK`) and
//! keeps [`STACK_GUARD_GAP`] of distance from the accessible mapping below. Placement honours
//! the same gap from the other side: no mmap hint or top-down search ends inside it
//! (`vm_start_gap`, used by `mmap`), so a stack frame larger than a page (a "stack clash")
//! cannot step over a guard page into a neighbouring mapping. `MAP_FIXED` may still map inside
//! the gap (as on Linux); the stack then stops growing a gap away from it. The invariant: a
//! stack VMA never grows to within `STACK_GUARD_GAP` of an accessible mapping below it.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, MMAP_MIN_ADDR};
use crate::mm::Mm;
use crate::vma::Vma;

/// The distance kept free below a stack (Linux `stack_guard_gap`: 256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * crate::PAGE_SIZE as u64;

/// The default stack size limit (`RLIMIT_STACK`'s usual 8 MiB), until the kernel sets another
/// with [`AddressSpace::set_stack_limit`].
pub const DEFAULT_STACK_LIMIT: u64 = 8 * 1024 * 1024;

/// The lowest address the VMA claims, gap included (Linux `vm_start_gap`): its start, or for a
/// stack its start minus the guard gap (not below 0).
pub(crate) fn vm_start_gap(vma: &Vma) -> u64 {
    let start = vma.start.as_u64();
    if vma.grows_down() {
        start.saturating_sub(STACK_GUARD_GAP)
    } else {
        start
    }
}

impl AddressSpace {
    /// Sets the limit a growing stack may reach (`RLIMIT_STACK`, bytes from the stack VMA's
    /// end); checked when the stack grows, as Linux's `acct_stack_growth` reads the rlimit.
    pub fn set_stack_limit(&mut self, limit: u64) {
        self.stack_limit = limit;
    }

    /// The limit set by [`AddressSpace::set_stack_limit`].
    pub fn stack_limit(&self) -> u64 {
        self.stack_limit
    }

    /// Grows the stack VMA just above `va` down to `va`'s page (Linux `expand_downwards`), for
    /// a fault at an address no VMA contains. `false` (the fault is a SIGSEGV) if the VMA
    /// above is not a stack, the new size passes the limit, `va` is below `mmap_min_addr`, the
    /// accessible VMA below is within the guard gap.
    #[doc(alias = "expand_downwards")]
    #[cold]
    pub(crate) fn expand_stack<A: Arch>(&mut self, mm: &Mm<A>, va: VirtAddr) -> bool {
        let at = va.align_down();
        if at.as_u64() < MMAP_MIN_ADDR {
            return false;
        }
        let Some((&key, stack)) = self.vmas.range(va.as_u64()..).next() else {
            return false;
        };
        // Only anonymous memory grows (a shmem object has no pages below offset 0; `mmap`
        // refuses `MAP_GROWSDOWN` on shared mappings, this keeps `lower_start`'s premise).
        if !stack.grows_down()
            || !matches!(stack.backing, crate::vma::Backing::Anonymous)
            || stack.end.as_u64() - at.as_u64() > self.stack_limit
        {
            return false;
        }
        if let Some((_, prev)) = self.vmas.range(..key).next_back() {
            // `prev.end <= at` because no VMA contains `va`.
            let too_close = at.as_u64() - prev.end.as_u64() < STACK_GUARD_GAP;
            if !prev.grows_down() && prev.prot.accessible() && too_close {
                return false;
            }
        }
        let mut grown = self
            .vmas
            .map_mut()
            .remove(&key)
            .expect("the stack VMA just found");
        grown.lower_start(at);
        self.vmas.map_mut().insert(at.as_u64(), grown);
        // The count is unchanged; merging with a neighbour cannot happen (the gap, or a
        // `GROWSDOWN` neighbour with its own flags) but keeps the invariant obvious.
        let before = self.vmas.len();
        self.merge_around(at);
        mm.account_vmas(before, self.vmas.len());
        true
    }
}
