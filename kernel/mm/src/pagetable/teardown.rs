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
use core::sync::atomic::Ordering;

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
        if level == 1 {
            return self.destroy_pt(table, base, on_unmap);
        }
        for i in 0..ENTRIES {
            let slot = self.entry(table, i);
            let e = slot.load();
            if e.is_empty() {
                continue;
            }
            // Nobody uses this hierarchy any more (see `destroy`): a plain store suffices.
            slot.store(Pte::EMPTY);
            let va = base + i as u64 * level_span(level);
            if level <= 3 && e.is_huge() {
                // A PMD (or 1 GiB PUD) leaf is reported whole; the caller sees `HUGE` and
                // drops the folio.
                if e.is_mapping() {
                    on_unmap(VirtAddr::new(va), e);
                }
            } else if e.is_present() {
                self.destroy_level(e.frame(), level - 1, va, on_unmap);
                if level == 2 {
                    self.mm.free_pagetable_cleared(e.frame());
                } else {
                    self.mm.free_pagetable_zeroed(e.frame());
                }
            }
        }
    }

    /// The leaves of the PT `table`: each mapping goes to `on_unmap`, except the shared zero
    /// page's, whose mapping counts and references go back in one subtraction per table (Linux
    /// has no count to drop there: `vm_normal_page` skips the zero PFN). A killed 64 GiB
    /// `MAP_POPULATE` (`t_fixmm`) leaves 40k to 90k zero-page PTEs, and the exit, which holds
    /// the big lock and so delays the parent's reap, walked them at about 1600 cycles each on
    /// the debug kernel (a callback with two metadata look-ups and two atomics per PTE, then a
    /// re-read of every slot of the freed table); now about 440 (1 CPU, 53248 PTEs: 61 ms of
    /// teardown before, 16 ms after).
    fn destroy_pt(&self, table: PhysAddr, base: u64, on_unmap: &mut dyn FnMut(VirtAddr, Pte)) {
        let zero = self.mm.zero_page().as_u64();
        let slots = self.slots(table).0;
        let mut zeros = 0u32;
        // Plain words and a counted loop rather than `Pte`'s methods and an iterator: the
        // debug kernel calls each of those out of line, several calls per slot.
        let mut i = 0;
        while i < ENTRIES {
            let raw = slots[i].load(Ordering::Acquire);
            if raw != 0 {
                // Nobody uses this hierarchy any more (see `destroy`): a plain store suffices.
                slots[i].store(0, Ordering::Release);
                // PROTNONE included: an mprotect'ed zero-page mapping keeps its reference.
                if raw & (Pte::PRESENT | Pte::PROTNONE) == 0 {
                    // Not a mapping: nothing to give back.
                } else if raw & Pte::ADDR_MASK == zero {
                    // At most 512 per table: no overflow.
                    zeros += 1;
                } else {
                    on_unmap(
                        VirtAddr::new(base + i as u64 * level_span(1)),
                        Pte::from_raw(raw),
                    );
                }
            }
            i += 1;
        }
        if zeros != 0 {
            self.mm.unmap_zero_page_many(zeros);
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
