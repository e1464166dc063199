//! Soft-dirty tracking: `echo 4 > /proc/self/clear_refs` (SEMANTICS.md section 4).
//!
//! Picture: a process (a checkpointer, a garbage collector) wants to learn which pages are
//! written from now on. Clearing write-protects every PTE and clears its soft-dirty bit; the
//! next write to each page faults, and the fault sets the bit again. The fault is an ordinary
//! `do_wp_page`: under the 2022+ rules an exclusive page is reused in place — even a pinned one,
//! so the pin stays coherent (seed 001) — while the 2020 `refcount == 1` rule copies a pinned
//! page away from its pin. The invariant: after the call no PTE is writable or soft-dirty, and
//! every VMA has tracking on.

#![deny(unsafe_code)]

use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;
use crate::pagetable::{PageTable, Pte};
use crate::tlb::TlbFlush;
use crate::vma::VmaFlags;

impl AddressSpace {
    /// Clears soft-dirty bits and write-protects every PTE (Linux `clear_refs_write` with
    /// `CLEAR_REFS_SOFT_DIRTY`).
    #[doc(alias = "clear_refs_write")]
    #[doc(alias = "clear_soft_dirty")]
    pub fn clear_refs_soft_dirty<A: Arch>(&mut self, mm: &Mm<A>) {
        let pt = PageTable::new(mm, self.root);
        let mut flush = TlbFlush::none(self.root);
        for vma in self.vmas.map_mut().values_mut() {
            if vma.is_hugetlb() {
                // Linux's clear_refs walk has no hugetlb entry: these PMDs stay as they are.
                continue;
            }
            vma.flags = vma.flags.without(VmaFlags::SOFTDIRTY);
            crate::huge_memory::split_huge_pmd_range(mm, &self.shared, vma.start, vma.end);
            flush.merge(pt.change_protection(vma.start, vma.end, &mut |_, old| {
                old.without(Pte::WRITABLE | Pte::SOFT_DIRTY)
            }));
        }
        flush.flush(mm.arch(), &self.shared);
    }

    /// Is the page at `va` soft-dirty (`/proc/pid/pagemap` bit 55)? A VMA without tracking
    /// reports every page soft-dirty, as Linux does.
    pub fn is_soft_dirty<A: Arch>(&self, mm: &Mm<A>, va: crate::addr::VirtAddr) -> bool {
        match (self.find_vma(va), self.translate(mm, va)) {
            (Some(vma), Some(pte)) => !vma.soft_dirty_tracking() || pte.is_soft_dirty(),
            _ => false,
        }
    }
}
