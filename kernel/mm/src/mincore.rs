//! mincore: which pages of a range are resident (Linux `mm/mincore.c`).
//!
//! A page is resident when a PTE maps a frame (the shared zero page included, as Linux's
//! `mincore_pte_range` counts a present PTE), or, in a shmem mapping, when the object's page
//! cache holds the page even though this process never touched it (Linux `mincore_page`). The
//! caller walks the range in chunks (one output page at a time, as Linux's `do_mincore`), so a
//! huge range never needs a huge buffer and a fatal signal can stop it between chunks.
#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::mm::Mm;
use crate::PAGE_SIZE;

impl AddressSpace {
    /// Fills `out[i]` with 1 if page `start + i` is resident, else 0 (Linux `do_mincore`).
    /// `NoMem` if a page of the range lies outside every VMA (what was filled before it stays).
    pub fn mincore<A: Arch>(
        &self,
        mm: &Mm<A>,
        start: VirtAddr,
        out: &mut [u8],
    ) -> Result<(), MmError> {
        for (i, byte) in out.iter_mut().enumerate() {
            let va = VirtAddr::new(start.as_u64() + (i * PAGE_SIZE) as u64);
            let vma = self.find_vma(va).ok_or(MmError::NoMem)?;
            let mapped = self.translate(mm, va).is_some_and(|pte| pte.is_mapping());
            let cached = || {
                vma.shmem_page(va)
                    .is_some_and(|(obj, index)| obj.cache_frame(index).is_some())
            };
            *byte = u8::from(mapped || cached());
        }
        Ok(())
    }
}
