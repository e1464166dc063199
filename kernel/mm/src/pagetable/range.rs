//! Operations over a range of user addresses: visiting, re-protecting and zapping leaf entries.
//!
//! Picture: a range is walked top-down, descending only into subtrees that exist, so the cost
//! is proportional to the page tables present, not to the size of the range. Zapping also
//! walks back up: every table the range reaches that is empty afterwards (whether this zap
//! emptied it or it was already empty) is unlinked from its parent and handed to the
//! `MmuGather`, which frees it after the TLB flush. The invariant: no empty PDPT, PD or PT
//! reached by a zapped range stays linked, so every table's span meets a VMA (`check`).

#![deny(unsafe_code)]

use super::{level_span, PageTable, Pte, PteRef, ENTRIES};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::tlb::{MmuGather, TlbFlush};

impl<'m, A: Arch> PageTable<'m, A> {
    /// Calls `f` with every leaf slot of `[start, end)` whose PT exists, in address order,
    /// skipping absent subtrees without visiting them.
    pub(crate) fn for_each_leaf(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        f: &mut dyn FnMut(VirtAddr, PteRef<'m>),
    ) {
        self.visit(self.root, 4, start.as_u64(), end.as_u64(), f);
    }

    fn visit(
        &self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(VirtAddr, PteRef<'m>),
    ) {
        let span = level_span(level);
        let mut va = start;
        while va < end {
            let next = ((va & !(span - 1)) + span).min(end);
            let slot = self.entry(table, VirtAddr::new(va).table_index(level));
            if level == 1 {
                f(VirtAddr::new(va), slot);
            } else {
                let e = slot.load();
                // PMD leaves are not PTEs: callers that change entries split them first
                // (`huge_memory::split_huge_pmd_range`), readers use `for_each_huge_pmd`.
                if e.is_present() && !e.has(Pte::HUGE) {
                    self.visit(e.frame(), level - 1, va, next, f);
                }
            }
            va = next;
        }
    }

    /// Calls `f(va, pt, first, last)` for every PT page of `[start, end)` that exists, with the
    /// index range `first..last` of its slots inside the range (`va` is slot `first`'s address), in address order (Linux
    /// `copy_pud_range`/`copy_pmd_range` handing a whole PT to `copy_pte_range`): callers
    /// that touch many slots of one table loop over them without a call per slot.
    pub(crate) fn for_each_pt(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        f: &mut dyn FnMut(VirtAddr, PhysAddr, usize, usize),
    ) {
        self.visit_pts(self.root, 4, start.as_u64(), end.as_u64(), f);
    }

    fn visit_pts(
        &self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(VirtAddr, PhysAddr, usize, usize),
    ) {
        let span = level_span(level);
        let mut va = start;
        while va < end {
            let next = ((va & !(span - 1)) + span).min(end);
            let e = self
                .entry(table, VirtAddr::new(va).table_index(level))
                .load();
            if e.is_present() && !e.has(Pte::HUGE) {
                if level == 2 {
                    let first = VirtAddr::new(va).table_index(1);
                    // `next` is the end of this PT's span or `end`; both page aligned.
                    let last = first + ((next - va) / level_span(1)) as usize;
                    f(VirtAddr::new(va), e.frame(), first, last);
                } else {
                    self.visit_pts(e.frame(), level - 1, va, next, f);
                }
            }
            va = next;
        }
    }

    /// Changes every mapping PTE of `[start, end)` to `f(old)` (Linux `change_protection`).
    /// Returns the flush needed for entries that lost a permission or their presence.
    pub(crate) fn change_protection(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        f: &mut dyn FnMut(VirtAddr, Pte) -> Pte,
    ) -> TlbFlush {
        let mut flush = TlbFlush::none(self.root);
        self.for_each_leaf(start, end, &mut |va, slot| {
            let mut old = slot.load();
            loop {
                if !old.is_mapping() {
                    return;
                }
                let new = f(va, old);
                if new == old {
                    return;
                }
                // The MMU may set accessed/dirty meanwhile: retry with its value.
                match slot.replace(old, new) {
                    Ok(()) => {
                        if weakens(old, new) {
                            flush.add_page(va);
                        }
                        return;
                    }
                    Err(cur) => old = cur,
                }
            }
        });
        flush
    }

    /// Clears every leaf entry of `[start, end)`, passing each former mapping to
    /// `on_unmap(va, pte)` (which drops the mapcount and hands the frame to `gather`), and
    /// unlinks page-table pages left empty (Linux `zap_page_range` + `free_pgtables`).
    ///
    /// Generic over `on_unmap` (one caller, `munmap::zap_pages`): the per-page work inlines into
    /// the leaf loop instead of a `dyn` call per page.
    pub(crate) fn zap_range<F: FnMut(Pte, &mut MmuGather<'m, A>)>(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        gather: &mut MmuGather<'m, A>,
        on_unmap: &mut F,
    ) {
        // `zap_level`'s unchecked step relies on it.
        assert!(
            end.as_u64() <= crate::aspace::USER_END,
            "zap of [{start:#x}, {end:#x}) beyond user space"
        );
        self.zap_level(self.root, 4, start.as_u64(), end.as_u64(), gather, on_unmap);
    }

    /// Clears the leaf entries of `[start, end)` below `table`, and unlinks every child table
    /// the range reaches that is empty afterwards — whether or not this zap emptied it: a
    /// table can be empty before the zap (the fault or fork that allocated it ran out of
    /// memory before filling it, or an earlier zap covered only part of it), and it must not
    /// outlive the unmapping of its range.
    fn zap_level<F: FnMut(Pte, &mut MmuGather<'m, A>)>(
        &self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        gather: &mut MmuGather<'m, A>,
        on_unmap: &mut F,
    ) {
        if level == 1 {
            return self.zap_pt(table, start, end, gather, on_unmap);
        }
        let span = level_span(level);
        let mut va = start;
        while va < end {
            // Cannot wrap: `va < end <= USER_END < 2^47` (asserted in `zap_range`) and `span`
            // is at most 2^39, so the sum stays below 2^48 (unchecked: this runs per page).
            let next = (va & !(span - 1)).wrapping_add(span).min(end);
            let slot = self.entry(table, VirtAddr::new(va).table_index(level));
            let mut e = slot.load();
            if level == 3 && e.is_huge() {
                // A 1 GiB hugetlb page: its VMA is cut only at 1 GiB boundaries, so it goes
                // whole (as a hugetlb PMD in `zap_huge_pmd_slot`).
                let old = slot.take();
                crate::huge_memory::zap_huge_pmd(self.mm, gather.shared(), old);
                gather.remove_huge_sized(VirtAddr::new(va & !(span - 1)), old.frame(), span);
                va = next;
                continue;
            }
            if level == 2 && e.is_huge() {
                if zap_huge_pmd_slot(self.mm, slot, va, next, gather) {
                    va = next;
                    continue;
                }
                e = slot.load();
            }
            if e.is_present() {
                self.zap_level(e.frame(), level - 1, va, next, gather, on_unmap);
                if self.is_table_empty(e.frame()) {
                    slot.store(Pte::EMPTY);
                    gather.remove_table(VirtAddr::new(va), e.frame());
                }
            }
            va = next;
        }
    }

    /// The leaf level of [`Self::zap_level`]: the pages of `[start, end)`, all inside the one PT
    /// `table`. The PT is checked against the memory window once (`slots`): through `entry`,
    /// every page reloaded the window's base and limit after the previous page's atomic
    /// exchange.
    #[inline(always)]
    fn zap_pt<F: FnMut(Pte, &mut MmuGather<'m, A>)>(
        &self,
        table: PhysAddr,
        start: u64,
        end: u64,
        gather: &mut MmuGather<'m, A>,
        on_unmap: &mut F,
    ) {
        if start >= end {
            return;
        }
        let page = level_span(1);
        let pt_base = start & !(level_span(2) - 1);
        let first = VirtAddr::new(start).table_index(1);
        // `end` is at most the PT's end (the caller's `next`), so this is at most 512; `range`
        // asserts it. Below 2^48 (`zap_range`'s assert), so the arithmetic cannot wrap.
        let last = ((end - pt_base).div_ceil(page)) as usize;
        // The cleared pages' range for the flush, kept here and handed to the gather once per
        // run (before a full batch is flushed, and at the end), not widened in the gather per
        // page. `lo..hi` covers exactly the cleared pages and the empty slots between them.
        let mut lo = u64::MAX;
        let mut hi = 0;
        for (i, slot) in self.slots(table).range(first, last) {
            if !slot.load().is_empty() {
                let old = slot.take();
                if old.is_mapping() {
                    let va = pt_base | ((i as u64) << 12);
                    if gather.pages_full() {
                        // Every gathered page was cleared before this one: flush them; this
                        // page goes with the next flush.
                        gather.flush_range_and_free(lo, hi);
                        lo = va;
                    }
                    lo = lo.min(va);
                    // Below `USER_END` (`zap_range`'s assert): cannot wrap.
                    hi = va.wrapping_add(page);
                    on_unmap(old, gather);
                }
            }
        }
        gather.add_flush_range(lo, hi);
    }

    /// Whether every entry of `table` is empty (one window check for the 512 loads).
    pub(crate) fn is_table_empty(&self, table: PhysAddr) -> bool {
        self.slots(table)
            .range(0, ENTRIES)
            .all(|(_, slot)| slot.load().is_empty())
    }
}

/// A PMD leaf in a zapped range (Linux `zap_huge_pmd` / `__split_huge_pmd` in
/// `zap_pmd_range`): the whole 2 MiB goes as one PMD (returns `true`); part of it splits the
/// PMD mapping into 512 PTEs first (with the table deposited at fault time, so this cannot
/// fail) and returns `false` for the caller to zap the range's PTEs. Out of line so that the
/// caller's per-page `on_unmap` keeps a single call site and inlines.
#[cold]
#[inline(never)]
fn zap_huge_pmd_slot<'m, A: Arch>(
    mm: &'m crate::mm::Mm<A>,
    slot: PteRef<'m>,
    va: u64,
    next: u64,
    gather: &mut MmuGather<'m, A>,
) -> bool {
    let span = level_span(2);
    // A hugetlb page goes whole: its VMA is cut only at huge-page boundaries, so a partial
    // range here is a batched munmap's step inside a range that is going away entirely.
    let whole = va & (span - 1) == 0 && next - va == span;
    if whole || crate::hugetlb::is_hugetlb_pmd(mm, slot.load()) {
        let old = slot.take();
        crate::huge_memory::zap_huge_pmd(mm, gather.shared(), old);
        gather.remove_huge(VirtAddr::new(va), old.frame());
        return true;
    }
    crate::huge_memory::split_huge_pmd_slot(
        mm,
        gather.shared(),
        slot,
        VirtAddr::new(va & !(span - 1)),
    );
    false
}

/// Does going from `old` to `new` remove a translation or a permission some TLB may cache?
fn weakens(old: Pte, new: Pte) -> bool {
    if !old.is_present() {
        return false;
    }
    !new.is_present()
        || new.frame() != old.frame()
        || (old.is_writable() && !new.is_writable())
        || (!old.has(Pte::NO_EXECUTE) && new.has(Pte::NO_EXECUTE))
}
