//! munmap and the page zapping it shares with `MADV_DONTNEED`.
//!
//! Picture: removing `[start, end)` splits the VMAs at both ends, drops the VMAs inside, and
//! clears their PTEs. A cleared PTE's page loses its mapping at once, but its reference is held
//! by an `MmuGather` until the TLB flush, so no stale translation can reach a reused frame;
//! page-table pages left empty are unlinked and freed the same way. The invariant: after
//! munmap, no PTE, VMA or TLB entry covers the range.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{user_range, AddressSpace};
use crate::error::MmError;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::PageTable;
use crate::shmem::ShmemObject;
use crate::tlb::MmuGather;
use crate::vma::{Backing, Vma};

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
        // Linux `do_vmi_align_munmap`: only a hole in the middle of one VMA adds one.
        self.check_map_count(mm, self.punch_extra(start, end))?;
        let before = self.vmas.len();
        self.unmap_region(mm, start, end);
        mm.account_vmas(before, self.vmas.len());
        Ok(())
    }

    /// Removes the VMAs and pages of the page-aligned `[start, end)`.
    pub(crate) fn unmap_region<A: Arch>(&mut self, mm: &Mm<A>, start: VirtAddr, end: VirtAddr) {
        let removed: alloc::vec::Vec<Vma> = self
            .isolate(start, end)
            .into_iter()
            .filter_map(|key| self.vmas.map_mut().remove(&key))
            .collect();
        zap_pages(mm, &self.shared, start, end);
        for vma in removed {
            release_vma(mm, vma);
        }
    }
}

/// Drops a removed VMA's hold on its backing object (Linux `remove_vma` -> `fput`): the last
/// holder of a shmem object frees its cache; a file's hold is dropped with the VMA (the kernel's
/// object closes the file when its last holder goes).
pub(crate) fn release_vma<A: Arch>(mm: &Mm<A>, vma: Vma) {
    if let Backing::Shmem(obj, _) = vma.backing {
        ShmemObject::put(obj, mm);
    }
}

/// Clears every PTE of `[start, end)`, frees the pages that lose their last reference and the
/// page tables left empty, after flushing the TLB (Linux `zap_page_range_single` +
/// `tlb_finish_mmu`).
#[doc(alias = "zap_page_range")]
pub(crate) fn zap_pages<A: Arch>(mm: &Mm<A>, shared: &MmShared, start: VirtAddr, end: VirtAddr) {
    let mut gather = MmuGather::new(mm, shared);
    PageTable::new(mm, shared.root()).zap_range(start, end, &mut gather, &mut |va, pte, gather| {
        mm.remove_mapping(pte.frame());
        gather.remove_page(va, pte.frame());
    });
    gather.finish();
}
