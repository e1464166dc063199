//! mremap of a hugetlb mapping (Linux 5.17+, `mremap`'s hugetlb branch and
//! `move_hugetlb_page_tables`), for 2 MiB and 1 GiB pages alike.
//!
//! The rules (checked against Linux 6.18 on the build host): both lengths are rounded up to
//! the VMA's huge page size; the old address, and a `MREMAP_FIXED` target, must be huge-page
//! aligned (`EINVAL`, even without `MREMAP_FIXED`: Linux checks `new_addr` whatever the flags); a mapping never grows (`EINVAL`: hugetlb reservations cannot be
//! extended), so `old_len == 0` (a second mapping of a shared object) is `EINVAL` too; and
//! `MREMAP_DONTUNMAP` is `EINVAL` (hugetlb VMAs are `VM_DONTEXPAND`). What is left, shrinking
//! and moving, moves whole leaves: each PMD (or PUD) leaf goes to the same offset of the new
//! range, never split. A private mapping's reservation moves with its pages: the old range
//! gives up its promises instead of releasing them (Linux `clear_vma_resv_huge_pages`; Linux
//! then leaks the unmoved rest's promises when only part of a VMA moves, cowlab keeps them).
#![deny(unsafe_code)]

use alloc::vec::Vec;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::mm::Mm;
use crate::mremap::MremapFlags;
use crate::pagetable::PteRef;
use crate::tlb::TlbFlush;
use crate::vma::Backing;

/// The hugetlb checks of mremap (Linux's `is_vm_hugetlb_page` branch): `old_len` and
/// `new_len` (page-rounded, nonzero `new_len`) rounded up to `hbytes`, or `EINVAL` for an
/// unaligned `addr` or `new_addr` (checked even when `MREMAP_FIXED` does not use it, as
/// Linux's check is), a grow, or `MREMAP_DONTUNMAP`.
pub(crate) fn hugetlb_mremap_lens(
    hbytes: u64,
    addr: u64,
    old_len: u64,
    new_len: u64,
    flags: MremapFlags,
    new_addr: u64,
) -> Result<(u64, u64), MmError> {
    let aligned = |x: u64| x & (hbytes - 1) == 0;
    if flags.contains(MremapFlags::DONTUNMAP) || !aligned(addr) || !aligned(new_addr) {
        return Err(MmError::Inval);
    }
    // Both are below `USER_END` (checked by the caller): no overflow.
    let old_len = old_len.next_multiple_of(hbytes);
    let new_len = new_len.next_multiple_of(hbytes);
    if new_len > old_len {
        return Err(MmError::Inval);
    }
    Ok((old_len, new_len))
}

impl AddressSpace {
    /// Moves every hugetlb leaf of `[old, old + len)` (huge-page aligned, in one hugetlb VMA
    /// of `hbytes` pages) to the same offset from `new` (Linux `move_hugetlb_page_tables`):
    /// the whole leaf, with its frame's references, mapcount and anon-exclusive bits as they
    /// were. First makes sure every destination slot exists and is empty, so it moves
    /// everything or (no memory for a table, `false`) nothing.
    pub(crate) fn move_hugetlb_page_tables<A: Arch>(
        &self,
        mm: &Mm<A>,
        old: u64,
        new: u64,
        len: u64,
        hbytes: u64,
    ) -> bool {
        let pt = self.page_table(mm);
        let gigantic = hbytes == crate::pagetable::HPAGE_PUD_SIZE;
        let slot = |va: u64, alloc: bool| -> Option<PteRef<'_>> {
            let va = VirtAddr::new(va);
            match (gigantic, alloc) {
                (false, false) => pt.walk_pmd(va),
                (false, true) => pt.walk_alloc_pmd(va),
                (true, false) => pt.walk_pud(va),
                (true, true) => pt.walk_alloc_pud(va),
            }
        };
        let leaves: Vec<u64> = (0..len / hbytes)
            .map(|i| old + i * hbytes)
            .filter(|&va| slot(va, false).is_some_and(|s| s.load().is_huge()))
            .collect();
        // The destination was unmapped by the caller (an empty table would have been freed
        // with it): anything but an empty slot there is refused rather than overwritten.
        let ready = leaves
            .iter()
            .all(|&va| slot(new + (va - old), true).is_some_and(|s| s.load().is_empty()));
        if !ready {
            return false;
        }
        let mut flush = TlbFlush::none(self.root);
        for &va in &leaves {
            let from = slot(va, false).expect("a leaf found above");
            let to = slot(new + (va - old), false).expect("allocated above");
            to.store(from.take());
            flush.add_range(VirtAddr::new(va), VirtAddr::new(va + hbytes));
        }
        flush.flush(mm.arch(), &self.shared);
        true
    }

    /// The hugetlb VMAs of `[start, end)` (split there) give up their private reservation:
    /// their pages and promises moved to the new VMA, which shares the same
    /// `PrivateResv`, so unmapping the old range must not release them
    /// (Linux `clear_vma_resv_huge_pages`).
    pub(crate) fn hugetlb_disown_resv(&mut self, start: VirtAddr, end: VirtAddr) {
        for key in self.isolate(start, end) {
            if let Some(vma) = self.vmas.map_mut().get_mut(&key) {
                if let Backing::Hugetlb(map) = &mut vma.backing {
                    map.resv = None;
                }
            }
        }
    }
}
