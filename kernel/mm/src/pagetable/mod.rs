//! The x86_64 4-level page tables of one address space, written once for host and kernel.
//!
//! Picture: a PML4 root page whose entries 0..255 translate user space and are owned by this
//! address space, and whose entries 256..511 are a copy of the kernel's (shared by all address
//! spaces, never touched here after creation). Below the user half hang PDPT, PD and PT pages,
//! allocated on demand from the frame table and freed as soon as they become empty. Entries are
//! read and written as `AtomicU64` through the `Arch` window, so the MMU's accessed/dirty updates
//! are never lost.
//!
//! Invariants: only the holder of `&mut AddressSpace` changes entries of its tables (so
//! read-modify-write sequences are plain loads and stores except where the MMU races), user
//! mappings never touch PML4 entries >= 256, and a freed table is first unlinked and its
//! translations flushed (`tlb::MmuGather`).

mod entry;
mod pud;
mod range;
mod teardown;

pub use entry::Pte;
pub use pud::HPAGE_PUD_SIZE;

use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::mm::Mm;

/// First PML4 index of the kernel half.
pub const KERNEL_PML4_START: usize = 256;
/// Entries per page-table page.
pub(crate) const ENTRIES: usize = 512;

/// One entry slot in a page-table page. Borrowed for as long as the `Mm`, which is longer than
/// the table is guaranteed to live: only this crate obtains one ([`PageTable::walk`] and
/// `AddressSpace::page_table` are crate-private), and only while it holds the address space.
#[derive(Clone, Copy)]
pub struct PteRef<'a>(&'a AtomicU64);

impl<'a> PteRef<'a> {
    #[inline]
    pub fn load(self) -> Pte {
        Pte::from_raw(self.0.load(Ordering::Acquire))
    }

    /// Replaces an entry the MMU cannot be updating: empty, or not present, or being
    /// installed by the only holder of the address space.
    #[inline]
    pub(crate) fn store(self, pte: Pte) {
        self.0.store(pte.raw(), Ordering::Release);
    }

    /// Clears the entry, returning its last value including any accessed/dirty bits the MMU set
    /// meanwhile (Linux `ptep_get_and_clear`).
    #[inline]
    pub(crate) fn take(self) -> Pte {
        Pte::from_raw(self.0.swap(0, Ordering::AcqRel))
    }

    /// Clears bits without losing a concurrent MMU update (Linux `ptep_set_wrprotect`).
    #[inline]
    pub(crate) fn clear_bits(self, bits: u64) -> Pte {
        Pte::from_raw(self.0.fetch_and(!bits, Ordering::AcqRel))
    }

    /// Sets bits without losing a concurrent MMU update.
    #[inline]
    pub(crate) fn set_bits(self, bits: u64) {
        self.0.fetch_or(bits, Ordering::AcqRel);
    }

    /// Replaces `old` with `new` if the entry still holds `old`.
    #[inline]
    pub(crate) fn replace(self, old: Pte, new: Pte) -> Result<(), Pte> {
        self.0
            .compare_exchange(old.raw(), new.raw(), Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Pte::from_raw)
    }
}

/// The slots of one page-table page (see [`PageTable::slots`]).
#[derive(Clone, Copy)]
pub(crate) struct Slots<'a>(&'a [AtomicU64; ENTRIES]);

impl<'a> Slots<'a> {
    #[inline]
    pub(crate) fn at(self, index: usize) -> PteRef<'a> {
        PteRef(&self.0[index & (ENTRIES - 1)])
    }

    /// Slots `first..last` with their indices (one bounds check for the whole range).
    ///
    /// The index is the `Range`'s own: it steps without an overflow check because `last`
    /// bounds it. An `enumerate()` counter plus `first + i` cost two checked additions per
    /// slot under the release profile's overflow checks (fork's per-PTE loop paid them on
    /// every slot, empty or not); the mask in `at` costs none and cannot change an index below
    /// `ENTRIES`, which the assert guarantees.
    #[inline]
    pub(crate) fn range(
        self,
        first: usize,
        last: usize,
    ) -> impl Iterator<Item = (usize, PteRef<'a>)> {
        assert!(
            first <= last && last <= ENTRIES,
            "slot range {first}..{last} outside a page-table page"
        );
        (first..last).map(move |i| (i, self.at(i)))
    }
}

impl<'a> Slots<'a> {
    /// Slots `first..first + out.len()` beside the items of `out` (GUP-fast's PTEs and its
    /// output slots): one bounds check for the range, two pointers stepped per slot.
    #[inline]
    pub(crate) fn beside<'o, T>(
        self,
        first: usize,
        out: &'o mut [T],
    ) -> impl Iterator<Item = (PteRef<'a>, &'o mut T)> {
        self.0[first..first + out.len()]
            .iter()
            .map(PteRef)
            .zip(out.iter_mut())
    }
}

impl<'a> Slots<'a> {
    /// Slots `first..last` of this table beside the same slots of `other` (fork's parent and
    /// child PTs): one bounds check for both, and the loop steps two pointers instead of
    /// indexing two tables per slot.
    #[inline]
    pub(crate) fn pairs(
        self,
        other: Slots<'a>,
        first: usize,
        last: usize,
    ) -> impl Iterator<Item = (PteRef<'a>, PteRef<'a>)> {
        assert!(
            first <= last && last <= ENTRIES,
            "slot range {first}..{last} outside a page-table page"
        );
        self.0[first..last]
            .iter()
            .zip(&other.0[first..last])
            .map(|(a, b)| (PteRef(a), PteRef(b)))
    }
}

/// Bytes translated by one entry at `level` (1 = PT entry = one page).
pub(crate) const fn level_span(level: u8) -> u64 {
    1u64 << (12 + 9 * (level as u32 - 1))
}

/// One address space's hierarchy. Obtained from `AddressSpace`, which guarantees `root` is a
/// live PML4 created by `PageTable::create_root`.
pub struct PageTable<'m, A: Arch> {
    mm: &'m Mm<A>,
    root: PhysAddr,
}

impl<'m, A: Arch> PageTable<'m, A> {
    /// `root` must be a PML4 made by [`Self::create_root`] and not yet destroyed.
    pub(crate) fn new(mm: &'m Mm<A>, root: PhysAddr) -> Self {
        PageTable { mm, root }
    }

    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Allocates a PML4 with an empty user half and the kernel half copied from the `Mm`'s
    /// template (Linux `pgd_alloc`/`pgd_ctor`).
    pub(crate) fn create_root(mm: &Mm<A>) -> Option<PhysAddr> {
        let root = mm.alloc_pagetable()?;
        if let Some(template) = mm.kernel_template() {
            // Both tables checked against the window once, not per entry: with a check per
            // entry the window's bounds were reloaded after every store, ~10 instructions per
            // entry, ~2400 per fork or exec.
            // SAFETY: `template` is a live PML4 whose kernel-half entries are only accessed
            // atomically (obligations 1 and 2 of the caller of `Mm::new`, an `unsafe fn`);
            // `root` was just allocated as a page-table page.
            let (src, dst) = unsafe { (mm.phys().table(template), mm.phys().table(root)) };
            for (s, d) in src[KERNEL_PML4_START..]
                .iter()
                .zip(&dst[KERNEL_PML4_START..])
            {
                d.store(s.load(Ordering::Acquire), Ordering::Release);
            }
        }
        Some(root)
    }

    /// Entry `index` of page-table page `table` of this hierarchy.
    #[inline]
    pub(crate) fn entry(&self, table: PhysAddr, index: usize) -> PteRef<'m> {
        // SAFETY: `table` is `root` or was reached from it through present non-leaf entries, so
        // it is a page-table page of this address space; those are written only atomically,
        // and freed only after being unlinked by the exclusive holder of the address space,
        // which is not concurrently using this `PageTable` (obligations 1 and 2).
        PteRef(unsafe { self.mm.phys().pte(table, index) })
    }

    /// The 512 slots of page-table page `table` of this hierarchy, checked against the memory
    /// window once (for loops over a whole PT: fork's `copy_pte_range`).
    #[inline]
    pub(crate) fn slots(&self, table: PhysAddr) -> Slots<'m> {
        // SAFETY: as in `entry`, for every slot of the table.
        Slots(unsafe { self.mm.phys().table(table) })
    }

    /// The leaf slot translating `va`, if the tables down to the PT exist.
    pub(crate) fn walk(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        Some(self.entry(self.walk_pt(va)?, va.table_index(1)))
    }

    /// The PT page holding `va`'s leaf slot (the same for all of `va`'s 2 MiB), if the tables
    /// down to it exist: for callers that visit consecutive pages (GUP-fast) and walk once per
    /// table. `inline(always)` so that `walk` stays one function with the walk in its body.
    #[inline(always)]
    pub(crate) fn walk_pt(&self, va: VirtAddr) -> Option<PhysAddr> {
        self.walk_pt_or_pd(va).ok()
    }

    /// [`Self::walk_pt`] that also says where a walk stopped short of the PT: `Err(Some(pd))`
    /// when the tables down to the PD exist and `va`'s entry there is not a present table
    /// (empty, a PMD leaf, present or `PROTNONE`, or any other non-present value: the caller
    /// tells them apart), `Err(None)` when a level above is missing or `va` is not canonical.
    /// No check that `va` is a user address: the caller's (`fault_no_pt` asserts it in debug
    /// builds). For the first fault of a 2 MiB range (`fault_no_pt`): the PMD slot for a THP
    /// without `walk_alloc_pmd`'s call, kernel address assertion and per-level window reloads
    /// (traced in session 14: 53 instructions to the PMD slot inline, against 65 for the call
    /// and `walk_alloc_pmd`'s 57).
    /// (`fault_inner`'s own walk keeps `walk_pt`: handing this walk's PD on from there cost the
    /// path that finds its PT one or two instructions, the PD kept in a register through the
    /// walk.)
    #[inline(always)]
    pub(crate) fn walk_pt_or_pd(&self, va: VirtAddr) -> Result<PhysAddr, Option<PhysAddr>> {
        if !va.is_canonical() {
            // Only bits 47..12 index the tables: a non-canonical address would alias another.
            return Err(None);
        }
        // The window's base and limit copied once: each level's `Acquire` load would otherwise
        // make the compiler reload both from the `Mm` before the next level's access.
        let window = *self.mm.phys();
        let mut table = self.root;
        for level in [4u8, 3, 2] {
            // SAFETY: as in `entry` (the same window, copied).
            let e = PteRef(unsafe { window.pte(table, va.table_index(level)) }).load();
            // A PMD leaf (THP) has no PT below it: its 4 KiB view is `translate`'s. The `HUGE`
            // test costs nothing on the common path: it shares the branch of the present test.
            if e.raw() & (Pte::PRESENT | Pte::HUGE) != Pte::PRESENT {
                return Err((level == 2).then_some(table));
            }
            table = e.frame();
        }
        Ok(table)
    }

    /// The PD slot (the PMD) translating `va`, if the tables down to the PD exist.
    pub(crate) fn walk_pmd(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        if !va.is_canonical() {
            return None;
        }
        let mut table = self.root;
        for level in [4u8, 3] {
            let e = self.entry(table, va.table_index(level)).load();
            // A PUD leaf (a 1 GiB hugetlb page) has no PD below it.
            table = Self::table_below(e)?;
        }
        Some(self.entry(table, va.table_index(2)))
    }

    /// The PD slot translating the user address `va`, allocating a missing PDPT or PD.
    pub(crate) fn walk_alloc_pmd(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        assert!(
            va.table_index(4) < KERNEL_PML4_START && va.is_canonical(),
            "user page-table walk at kernel address {va:#x}"
        );
        let mut table = self.root;
        for level in [4u8, 3] {
            let slot = self.entry(table, va.table_index(level));
            let e = slot.load();
            if e.has(Pte::HUGE) && e.is_mapping() {
                // A PUD leaf: never descend into a 1 GiB page as if it were a PD.
                return None;
            }
            table = if e.is_present() {
                e.frame()
            } else {
                let new = self.mm.alloc_pagetable()?;
                slot.store(Pte::new(new, Pte::TABLE_FLAGS));
                new
            };
        }
        Some(self.entry(table, va.table_index(2)))
    }

    /// The leaf slot translating the user address `va`, allocating missing PDPT/PD/PT pages
    /// (zeroed, `PRESENT|WRITABLE|USER`). `None` when out of memory.
    pub(crate) fn walk_alloc(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        Some(self.entry(self.alloc_levels(va)?, va.table_index(1)))
    }

    /// The PT page holding the leaf slot of the user address `va` (the same for all of `va`'s
    /// 2 MiB), allocating missing levels as [`Self::walk_alloc`]. Lets a caller that fills many
    /// slots of one PT (fork) walk once per table instead of once per page.
    pub(crate) fn walk_alloc_pt(&self, va: VirtAddr) -> Option<PhysAddr> {
        self.alloc_levels(va)
    }

    /// The walk of both functions above. `inline(always)` so that each stays one function
    /// with the walk in its body: as a shared out-of-line call, or with `walk_alloc` inlined
    /// into the fault path instead, the fault paths measured 12-47 instructions slower.
    #[inline(always)]
    fn alloc_levels(&self, va: VirtAddr) -> Option<PhysAddr> {
        assert!(
            va.table_index(4) < KERNEL_PML4_START && va.is_canonical(),
            "user page-table walk at kernel address {va:#x}"
        );
        let mut table = self.root;
        for level in [4u8, 3, 2] {
            let slot = self.entry(table, va.table_index(level));
            let e = slot.load();
            if level <= 3 && e.has(Pte::HUGE) {
                // A PMD leaf: the caller must handle (fault) or split it first; never
                // descend into a 2 MiB page as if it were a PT (nor into a PUD leaf's 1 GiB
                // page as if it were a PD).
                return None;
            }
            table = if e.is_present() {
                e.frame()
            } else {
                let new = self.mm.alloc_pagetable()?;
                slot.store(Pte::new(new, Pte::TABLE_FLAGS));
                new
            };
        }
        Some(table)
    }

    /// The leaf entry for `va` if it maps a frame (present or `PROTNONE`).
    /// A PMD-mapped THP answers with the 4 KiB view of its subpage ([`Pte::huge_subpage`]).
    pub fn translate(&self, va: VirtAddr) -> Option<Pte> {
        if let Some(pte) = self.walk(va).map(|s| s.load()) {
            return pte.is_mapping().then_some(pte);
        }
        if let Some(pmd) = self.walk_pmd(va) {
            let pmd = pmd.load();
            return pmd.is_huge().then(|| pmd.huge_subpage(va));
        }
        let pud = self.walk_pud(va)?.load();
        pud.is_huge().then(|| pud.huge_subpage_at(va, 3))
    }

    /// Entry `index` of the root (for the checker and tests of the kernel half).
    pub fn root_entry(&self, index: usize) -> Pte {
        self.entry(self.root, index).load()
    }

    /// Entry `index` of a page-table page of this hierarchy, by value (for the checker).
    pub(crate) fn table_entry(&self, table: PhysAddr, index: usize) -> Pte {
        self.entry(table, index).load()
    }
}

#[cfg(test)]
mod tests {
    use crate::addr::VirtAddr;
    use crate::madvise::Advice;
    use crate::mmap::MapFlags;
    use crate::tests::{Env, ANON, BASE, PAGE};
    use crate::vma::Prot;

    /// `walk_pt_or_pd`'s three answers, each checked against the tables read level by level.
    #[test]
    fn walk_pt_or_pd_finds_the_pt_or_the_pd_or_nothing() {
        let env = Env::with_frames(8 * crate::folio::HPAGE_PMD_NR);
        let mut s = env.space();
        let small = VirtAddr::new(BASE);
        let huge = VirtAddr::new(BASE + (4 << 20));
        let empty = VirtAddr::new(BASE + (8 << 20));
        env.map(&mut s, 0, 1, Prot::RW);
        for va in [huge, empty] {
            s.mmap(&env.mm, va, 2 << 20, Prot::RW, ANON | MapFlags::FIXED)
                .unwrap();
            s.madvise(&env.mm, va, 2 << 20, Advice::HugePage).unwrap();
        }
        let pt = s.page_table(&env.mm);
        // Nothing below the root for user addresses yet; nor anything for a non-canonical one.
        assert_eq!(pt.walk_pt_or_pd(small), Err(None));
        assert_eq!(pt.walk_pt_or_pd(VirtAddr::new(1 << 47)), Err(None));
        env.write(&mut s, small, 1).unwrap();
        assert_eq!(env.read(&mut s, huge), Ok(0)); // the huge zero PMD
        let pt = s.page_table(&env.mm);
        let pdpt = pt.root_entry(small.table_index(4)).frame();
        let pd = pt.table_entry(pdpt, small.table_index(3)).frame();
        let leaf_table = pt.table_entry(pd, small.table_index(2)).frame();
        assert_eq!(pt.walk_pt_or_pd(small), Ok(leaf_table));
        assert_eq!(pt.walk_pt(small), Some(leaf_table));
        assert_eq!(
            pt.walk(small + PAGE).map(|e| e.load()),
            Some(pt.table_entry(leaf_table, 1))
        );
        // A PMD leaf and an empty PMD: no PT, but the PD holding their slot.
        assert!(pt.table_entry(pd, huge.table_index(2)).is_huge());
        assert_eq!(pt.walk_pt_or_pd(huge), Err(Some(pd)));
        assert_eq!(pt.walk_pt(huge), None);
        assert!(pt.table_entry(pd, empty.table_index(2)).is_empty());
        assert_eq!(pt.walk_pt_or_pd(empty), Err(Some(pd)));
        // Another GiB: the PDPT is there, its PD not.
        assert_eq!(pt.walk_pt_or_pd(VirtAddr::new(BASE + (1 << 30))), Err(None));
        env.finish(alloc::vec![s]);
    }
}
