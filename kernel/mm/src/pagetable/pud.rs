//! PUD leaves: a PDPT entry with `HUGE` mapping a 1 GiB hugetlb page (Linux's `pud_leaf`,
//! `huge_pte_alloc` for `PUD_SIZE`). Only hugetlb VMAs of the 1 GiB size have them; every
//! walker that descends through PDPT entries stops at one (`walk_pt`, `walk_pmd`, the zap,
//! teardown and visit loops test `HUGE` before taking an entry's frame as a table).

use super::{level_span, PageTable, Pte, PteRef, KERNEL_PML4_START};
use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;

/// Bytes mapped by one PUD leaf.
pub const HPAGE_PUD_SIZE: u64 = level_span(3);

impl<'m, A: Arch> PageTable<'m, A> {
    /// The PDPT slot (the PUD) translating `va`, if the PDPT exists.
    pub(crate) fn walk_pud(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        if !va.is_canonical() {
            return None;
        }
        let e = self.entry(self.root(), va.table_index(4)).load();
        if !e.is_present() {
            return None;
        }
        Some(self.entry(e.frame(), va.table_index(3)))
    }

    /// The PDPT slot translating the user address `va`, allocating a missing PDPT.
    pub(crate) fn walk_alloc_pud(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        assert!(
            va.table_index(4) < KERNEL_PML4_START && va.is_canonical(),
            "user page-table walk at kernel address {va:#x}"
        );
        let slot = self.entry(self.root(), va.table_index(4));
        let e = slot.load();
        let table = if e.is_present() {
            e.frame()
        } else {
            let new = self.mm.alloc_pagetable()?;
            slot.store(Pte::new(new, Pte::TABLE_FLAGS));
            new
        };
        Some(self.entry(table, va.table_index(3)))
    }

    /// Calls `f(va, pud)` for every PUD leaf of `[start, end)`, in address order (fork,
    /// mprotect and the checker of 1 GiB hugetlb mappings).
    pub(crate) fn for_each_huge_pud(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        f: &mut dyn FnMut(VirtAddr, Pte),
    ) {
        let (start, end) = (start.as_u64(), end.as_u64());
        let mut va = start & !(HPAGE_PUD_SIZE - 1);
        while va < end {
            let next_pml4 = (va & !(level_span(4) - 1)) + level_span(4);
            let e = self
                .entry(self.root(), VirtAddr::new(va).table_index(4))
                .load();
            if !e.is_present() {
                va = next_pml4;
                continue;
            }
            while va < end.min(next_pml4) {
                let pud = self
                    .entry(e.frame(), VirtAddr::new(va).table_index(3))
                    .load();
                if pud.is_huge() {
                    f(VirtAddr::new(va), pud);
                }
                va += HPAGE_PUD_SIZE;
            }
        }
    }

    /// The frame of a present table entry `e` at `level` that a walk may descend into: not a
    /// leaf (a PUD or PMD leaf's frame is a huge page, never a table).
    pub(crate) fn table_below(e: Pte) -> Option<PhysAddr> {
        (e.raw() & (Pte::PRESENT | Pte::HUGE) == Pte::PRESENT).then(|| e.frame())
    }
}
