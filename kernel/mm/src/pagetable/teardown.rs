//! Dismantling a whole hierarchy, and enumerating its tables for the checker.
//!
//! Picture: at exit nobody can use the address space any more, so the user half is walked once,
//! every remaining mapping is reported to the caller and every table is freed bottom-up, the
//! root last. PML4 entries 256..511 point into the kernel's shared tables and are never
//! followed. The invariant: afterwards no frame is a page table of this address space.

#![deny(unsafe_code)]

use super::{level_span, PageTable, Pte, ENTRIES, KERNEL_PML4_START};
use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;

impl<A: Arch> PageTable<'_, A> {
    /// Frees the whole user half and the root (Linux `free_pgtables` + `pgd_free` at exit),
    /// passing each remaining mapping to `on_unmap(va, pte)`. The caller has flushed every
    /// translation of this root and no CPU uses it any more, so frames and tables can be freed
    /// at once. The kernel half is shared and left alone.
    ///
    /// Every entry below the root is cleared as it is visited (one store per used entry), so
    /// the PDPT, PD and PT pages go back all zero and the next table allocation need not zero
    /// them (`Mm::free_pagetable_zeroed`). The root keeps its kernel half and is freed as is.
    pub(crate) fn destroy(self, on_unmap: &mut dyn FnMut(VirtAddr, Pte)) {
        for i in 0..KERNEL_PML4_START {
            let slot = self.entry(self.root, i);
            let e = slot.load();
            if e.is_present() {
                let va = i as u64 * level_span(4);
                self.destroy_level(e.frame(), 3, va, on_unmap);
                self.mm.free_pagetable_zeroed(e.frame());
            }
        }
        self.mm.free_pagetable(self.root);
    }

    fn destroy_level(
        &self,
        table: PhysAddr,
        level: u8,
        base: u64,
        on_unmap: &mut dyn FnMut(VirtAddr, Pte),
    ) {
        for i in 0..ENTRIES {
            let slot = self.entry(table, i);
            let e = slot.load();
            if e.is_empty() {
                continue;
            }
            // Nobody uses this hierarchy any more (see `destroy`): a plain store suffices.
            slot.store(Pte::EMPTY);
            let va = base + i as u64 * level_span(level);
            if level == 1 || (level <= 3 && e.is_huge()) {
                // A PMD (or 1 GiB PUD) leaf is reported whole; the caller sees `HUGE` and
                // drops the folio.
                if e.is_mapping() {
                    on_unmap(VirtAddr::new(va), e);
                }
            } else if e.is_present() {
                self.destroy_level(e.frame(), level - 1, va, on_unmap);
                self.mm.free_pagetable_zeroed(e.frame());
            }
        }
    }

    /// Calls `f(table, level, base)` for every page-table page of the user half, root included,
    /// with the first virtual address it translates (for the invariant checker).
    pub(crate) fn for_each_table(&self, f: &mut dyn FnMut(PhysAddr, u8, VirtAddr)) {
        f(self.root, 4, VirtAddr::zero());
        for i in 0..KERNEL_PML4_START {
            let e = self.entry(self.root, i).load();
            if e.is_present() {
                self.tables_below(e.frame(), 3, i as u64 * level_span(4), f);
            }
        }
    }

    fn tables_below(
        &self,
        table: PhysAddr,
        level: u8,
        base: u64,
        f: &mut dyn FnMut(PhysAddr, u8, VirtAddr),
    ) {
        f(table, level, VirtAddr::new(base));
        if level == 1 {
            return;
        }
        for i in 0..ENTRIES {
            let e = self.entry(table, i).load();
            if e.is_present() && !e.has(Pte::HUGE) {
                self.tables_below(e.frame(), level - 1, base + i as u64 * level_span(level), f);
            }
        }
    }
}
