//! munmap and the page zapping it shares with `MADV_DONTNEED`.
//!
//! Picture: removing `[start, end)` splits the VMAs at both ends, drops the VMAs inside, and
//! clears their PTEs. A cleared PTE's page loses its mapping at once, but its reference is held
//! by an `MmuGather` until the TLB flush, so no stale translation can reach a reused frame;
//! page-table pages left empty are unlinked and freed the same way. The invariant: after
//! munmap, no PTE, VMA or TLB entry covers the range.

#![deny(unsafe_code)]

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::{user_range, AddressSpace};
use crate::error::MmError;
use crate::mm::Mm;
use crate::pagetable::PageTable;
use crate::tlb::MmuGather;

impl AddressSpace {
    /// Removes every mapping in `[addr, addr + len)` (Linux `munmap`). `addr` must be page
    /// aligned and `len` non-zero (`EINVAL`); unmapping holes is not an error.
    #[doc(alias = "do_vmi_munmap")]
    pub fn munmap<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
    ) -> Result<(), MmError> {
        let (start, end) = user_range(addr, len)?;
        self.unmap_region(mm, start, end);
        Ok(())
    }

    /// Removes the VMAs and pages of the page-aligned `[start, end)`.
    pub(crate) fn unmap_region<A: Arch>(&mut self, mm: &Mm<A>, start: VirtAddr, end: VirtAddr) {
        for key in self.isolate(start, end) {
            self.vmas.remove(&key);
        }
        zap_pages(mm, self.root, start, end);
    }
}

/// Clears every PTE of `[start, end)`, frees the pages that lose their last reference and the
/// page tables left empty, after flushing the TLB (Linux `zap_page_range_single` +
/// `tlb_finish_mmu`).
#[doc(alias = "zap_page_range")]
pub(crate) fn zap_pages<A: Arch>(mm: &Mm<A>, root: PhysAddr, start: VirtAddr, end: VirtAddr) {
    let mut gather = MmuGather::new(mm, root);
    PageTable::new(mm, root).zap_range(start, end, &mut gather, &mut |va, pte, gather| {
        mm.remove_mapping(pte.frame());
        gather.remove_page(va, pte.frame());
    });
    gather.finish();
}
