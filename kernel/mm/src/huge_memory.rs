//! Anonymous transparent huge pages mapped by one PMD (SEMANTICS.md section 11; Linux
//! `mm/huge_memory.c`).
//!
//! Picture: a fault in a 2 MiB-aligned part of an eligible private anon VMA whose PD slot is
//! still empty gets a whole zeroed 2 MiB folio (`folio.rs`) from the block allocator
//! (`frame/huge.rs`) and one PD entry with the `PS` bit (`Pte::HUGE`) instead of a PT. Every
//! other operation meets the PMD leaf in one of three ways:
//!
//! - it handles the whole PMD: the fault on it (`do_huge_pmd_wp_page`), fork
//!   (`copy_huge_pmd`), munmap/exit of the whole 2 MiB (`zap_huge_pmd`), GUP's slow walk (which
//!   sees the subpage's 4 KiB view through `PageTable::translate`);
//! - or it splits the PMD mapping into 512 PTEs first (`split_huge_pmd_slot`: Linux
//!   `__split_huge_pmd`), after which the small-page code runs on a *PTE-mapped THP*: a write
//!   fault the folio cannot reuse, partial munmap/`MADV_DONTNEED`, mprotect, mremap,
//!   clear_refs, fork of a folio that may be pinned;
//! - or it never sees it: the PT walks skip PMD leaves (GUP-fast falls back to the slow path).
//!
//! A split never fails: every PMD leaf has a page-table page *deposited* with its address
//! space when it is installed (Linux `pgtable_trans_huge_deposit`), which the split withdraws
//! and fills, and which is freed when the PMD goes away whole. The deposits hang off the
//! `MmShared` as a list linked through each deposited table's first entry. Invariant: an
//! address space holds exactly as many deposits as PMD leaves.
//!
//! The folio itself is never split into small folios in this stage: a partly unmapped THP
//! keeps its frames until the last subpage's mapping and reference go (Linux's deferred split
//! queue would give the unmapped part back earlier).

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::error::{FaultError, MmError};
use crate::fault::FaultKind;
use crate::faultstat::{self, Kind as StatKind, Phase};
use crate::folio::{HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{PageTable, Pte, PteRef, Slots};
use crate::rules::{self, AnonPageState, WpReuse};
use crate::stats;
use crate::tlb::TlbFlush;
use crate::vma::{Sharing, Vma, VmaFlags};
use crate::wp::write_grant;
use crate::PAGE_SIZE;

/// `/sys/kernel/mm/transparent_hugepage/enabled`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ThpEnabled {
    /// Every eligible VMA, unless `MADV_NOHUGEPAGE`.
    Always = 0,
    /// Only VMAs marked `MADV_HUGEPAGE`.
    Madvise = 1,
    Never = 2,
}

/// `/sys/kernel/mm/transparent_hugepage/defrag`. cowlab has no compaction (frames are never
/// migrated); "defrag" here is the harvest that reassembles free 2 MiB blocks from free 4 KiB
/// frames (`frame/huge.rs`). `Never` skips it at fault time; the other values allow it (for
/// `Madvise`/`DeferMadvise` only in `MADV_HUGEPAGE` VMAs).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum ThpDefrag {
    Always = 0,
    Defer = 1,
    DeferMadvise = 2,
    Madvise = 3,
    Never = 4,
}

const ENABLED_NAMES: [&str; 3] = ["always", "madvise", "never"];
const DEFRAG_NAMES: [&str; 5] = ["always", "defer", "defer+madvise", "madvise", "never"];

/// The THP controls of `/sys/kernel/mm/transparent_hugepage/`.
pub struct ThpSettings {
    enabled: AtomicU8,
    defrag: AtomicU8,
    use_zero_page: AtomicBool,
    /// `hugepages-<N>kB/`: the per-size controls and counters (`mthp.rs`).
    pub sizes: crate::mthp::MthpSizes,
}

impl Default for ThpSettings {
    /// `enabled=madvise` (Ubuntu's and Fedora's default): THPs only where a program asks with
    /// `MADV_HUGEPAGE`, so existing programs, tests and the 4 KiB benchmark rows are unchanged.
    /// `defrag=madvise`, `use_zero_page=1` as Linux.
    fn default() -> ThpSettings {
        ThpSettings {
            enabled: AtomicU8::new(ThpEnabled::Madvise as u8),
            defrag: AtomicU8::new(ThpDefrag::Madvise as u8),
            use_zero_page: AtomicBool::new(true),
            sizes: crate::mthp::MthpSizes::default(),
        }
    }
}

/// Renders `names` with the selected one bracketed, as Linux's sysfs files read.
fn show(names: &[&str], selected: usize, out: &mut alloc::string::String) {
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if i == selected {
            out.push('[');
            out.push_str(n);
            out.push(']');
        } else {
            out.push_str(n);
        }
    }
    out.push('\n');
}

/// The index of `input` (one trailing newline allowed) in `names`.
fn parse(names: &[&str], input: &str) -> Result<usize, MmError> {
    let word = input.strip_suffix('\n').unwrap_or(input);
    names.iter().position(|n| *n == word).ok_or(MmError::Inval)
}

impl ThpSettings {
    #[inline]
    pub fn enabled(&self) -> ThpEnabled {
        match self.enabled.load(Ordering::Relaxed) {
            0 => ThpEnabled::Always,
            1 => ThpEnabled::Madvise,
            _ => ThpEnabled::Never,
        }
    }

    pub fn set_enabled(&self, v: ThpEnabled) {
        self.enabled.store(v as u8, Ordering::Relaxed);
    }

    pub fn defrag(&self) -> ThpDefrag {
        match self.defrag.load(Ordering::Relaxed) {
            0 => ThpDefrag::Always,
            1 => ThpDefrag::Defer,
            2 => ThpDefrag::DeferMadvise,
            3 => ThpDefrag::Madvise,
            _ => ThpDefrag::Never,
        }
    }

    pub fn set_defrag(&self, v: ThpDefrag) {
        self.defrag.store(v as u8, Ordering::Relaxed);
    }

    pub fn use_zero_page(&self) -> bool {
        self.use_zero_page.load(Ordering::Relaxed)
    }

    pub fn set_use_zero_page(&self, on: bool) {
        self.use_zero_page.store(on, Ordering::Relaxed);
    }

    /// The text of `enabled`, e.g. `always [madvise] never\n`.
    pub fn show_enabled(&self, out: &mut alloc::string::String) {
        show(&ENABLED_NAMES, self.enabled() as usize, out);
    }

    /// The text of `defrag`.
    pub fn show_defrag(&self, out: &mut alloc::string::String) {
        show(&DEFRAG_NAMES, self.defrag() as usize, out);
    }

    /// A write to `enabled`: one of the names, else `EINVAL` (Linux `enabled_store`).
    pub fn store_enabled(&self, input: &str) -> Result<(), MmError> {
        let i = parse(&ENABLED_NAMES, input)?;
        self.enabled.store(i as u8, Ordering::Relaxed);
        Ok(())
    }

    /// A write to `defrag`.
    pub fn store_defrag(&self, input: &str) -> Result<(), MmError> {
        let i = parse(&DEFRAG_NAMES, input)?;
        self.defrag.store(i as u8, Ordering::Relaxed);
        Ok(())
    }

    /// A write to `use_zero_page`: `0` or `1` (Linux accepts any unsigned number; nonzero is on).
    pub fn store_use_zero_page(&self, input: &str) -> Result<(), MmError> {
        let word = input.strip_suffix('\n').unwrap_or(input);
        let v: u64 = word.parse().map_err(|_| MmError::Inval)?;
        self.set_use_zero_page(v != 0);
        Ok(())
    }
}

/// May a fault at `va` in `vma` be served by a PMD-mapped THP (Linux
/// `thp_vma_allowable_order` for order 9, plus the range check of
/// `do_huge_pmd_anonymous_page`)? `hugepages-2048kB/enabled` decides (its default `inherit`:
/// the top-level `enabled`). The flag tests come first: with the default `madvise` and no
/// `MADV_HUGEPAGE`, the small-page fault pays a few tests of the VMA's flags and the modes.
#[inline]
pub(crate) fn thp_vma_allowable<A: Arch>(mm: &Mm<A>, vma: &Vma, va: VirtAddr) -> bool {
    let thp = mm.thp();
    thp.sizes
        .allowed(crate::folio::HPAGE_PMD_ORDER, thp.enabled(), vma.flags())
        && thp_vma_suitable(vma, va)
}

/// The VMA kind and range part of the eligibility: private anonymous memory, the 2 MiB around
/// `va` wholly inside the VMA.
#[cold]
pub(crate) fn thp_vma_suitable(vma: &Vma, va: VirtAddr) -> bool {
    let haddr = va.as_u64() & !(HPAGE_PMD_SIZE - 1);
    vma.is_anonymous()
        && vma.sharing() == Sharing::Private
        && haddr >= vma.start().as_u64()
        && haddr + HPAGE_PMD_SIZE <= vma.end().as_u64()
}

/// Does defrag (the block harvest) run for a fault in `vma`?
fn defrag_allowed<A: Arch>(mm: &Mm<A>, vma: &Vma) -> bool {
    match mm.thp().defrag() {
        ThpDefrag::Always | ThpDefrag::Defer => true,
        ThpDefrag::DeferMadvise | ThpDefrag::Madvise => {
            vma.flags().contains(VmaFlags::HUGEPAGE) || mm.thp().enabled() == ThpEnabled::Always
        }
        ThpDefrag::Never => false,
    }
}

// ---- deposited page tables ----

/// Deposits the zeroed page-table page `table` with the address space of `shared` for a later
/// split of one PMD leaf (Linux `pgtable_trans_huge_deposit`).
pub(crate) fn deposit<A: Arch>(mm: &Mm<A>, shared: &MmShared, table: PhysAddr) {
    let pt = PageTable::new(mm, shared.root());
    let head = shared.deposits.load(Ordering::Relaxed);
    // The link lives in the table's first entry, cleared again on withdrawal: not present, so
    // nothing would translate through it even if the table were reached.
    pt.entry(table, 0).store(Pte::from_raw(head));
    shared.deposits.store(table.as_u64(), Ordering::Relaxed);
    shared.deposit_count.fetch_add(1, Ordering::Relaxed);
}

/// Takes one deposited table back, all zero (Linux `pgtable_trans_huge_withdraw`). Every PMD
/// leaf has one, so it is a kernel bug if none is left.
pub(crate) fn withdraw<A: Arch>(mm: &Mm<A>, shared: &MmShared) -> PhysAddr {
    let head = shared.deposits.load(Ordering::Relaxed);
    assert!(head != 0, "a PMD leaf without a deposited page table");
    let table = PhysAddr::new(head);
    let pt = PageTable::new(mm, shared.root());
    let next = pt.entry(table, 0).take();
    shared.deposits.store(next.raw(), Ordering::Relaxed);
    shared.deposit_count.fetch_sub(1, Ordering::Relaxed);
    table
}

/// The deposited tables of `shared`, for the checker.
pub(crate) fn deposited<A: Arch>(mm: &Mm<A>, shared: &MmShared, f: &mut dyn FnMut(PhysAddr)) {
    let pt = PageTable::new(mm, shared.root());
    let mut at = shared.deposits.load(Ordering::Relaxed);
    while at != 0 {
        let table = PhysAddr::new(at);
        f(table);
        at = pt.entry(table, 0).load().raw();
    }
}

// ---- faults ----

/// A fault at `va` where `thp_vma_allowable` said yes (Linux `create_huge_pmd` ->
/// `do_huge_pmd_anonymous_page`), on `slot`, the PMD translating `va` (the caller's walk found
/// or allocated the tables down to it). `Ok(true)`: a PMD now maps a new zeroed THP, or
/// already mapped one and the fault was handled there; `Ok(false)`: fall back to the
/// small-page path (a PT is there already, or no 2 MiB block is free).
pub(crate) fn do_huge_pmd_anonymous_page<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<bool, FaultError> {
    let pmd = slot.load();
    if pmd.is_huge() {
        return do_huge_pmd_fault(mm, shared, vma, slot, va, pmd, kind);
    }
    if !pmd.is_empty() {
        return Ok(false);
    }
    faultstat::phase(Phase::Walk);
    // The deposit first: without it the PMD could not be split later.
    let Some(table) = mm.alloc_pagetable() else {
        return Ok(false);
    };
    if kind != FaultKind::Write && mm.thp().use_zero_page() {
        return Ok(map_huge_zero_pmd(mm, shared, vma, slot, table));
    }
    faultstat::kind(StatKind::ThpFill);
    let Some(head) = mm.frames().alloc_block(defrag_allowed(mm, vma)) else {
        mm.free_pagetable_zeroed(table);
        stats::inc(&mm.counters.thp_fault_fallback);
        return Ok(false);
    };
    faultstat::phase(Phase::Alloc);
    mm.zero_frames_owned(head, HPAGE_PMD_NR);
    faultstat::phase(Phase::Copy);
    mm.frames().prep_anon_thp(head, FrameFlags::ANON_EXCLUSIVE);
    mm.counters
        .anon_pages
        .fetch_add(HPAGE_PMD_NR as u64, Ordering::Relaxed);
    stats::inc(&mm.counters.anon_thps);
    stats::inc(&mm.counters.thp_fault_alloc);
    deposit(mm, shared, table);
    // Writable at once even on a read fault, as Linux (`maybe_pmd_mkwrite`): the folio is
    // exclusive, so a write needs no further fault.
    let bits = vma.page_prot() | write_grant(vma) | Pte::HUGE | Pte::ACCESSED;
    slot.store(Pte::new(head, bits));
    shared.add_rss(HPAGE_PMD_NR as u64);
    faultstat::phase(Phase::Pte);
    Ok(true)
}

/// A read fault with `use_zero_page=1` (Linux `do_huge_pmd_anonymous_page`'s zero-page
/// branch): maps the huge zero folio read-only with one PMD, the deposit `table` kept for its
/// later split. `false` (table freed) when no 2 MiB block is free for the folio: small pages.
///
/// Inlined into the fault (`fault_no_pt`, which already saves every callee-saved register): as
/// a call of its own its frame, argument moves and return cost ~24 instructions per fault.
#[inline(always)]
fn map_huge_zero_pmd<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    table: PhysAddr,
) -> bool {
    faultstat::kind(StatKind::HugeZeroMap);
    let Some(head) = mm.get_huge_zero_folio(|| defrag_allowed(mm, vma)) else {
        mm.free_pagetable_zeroed(table);
        stats::inc(&mm.counters.thp_fault_fallback);
        return false;
    };
    faultstat::phase(Phase::Alloc);
    mm.frames().inc_entire_mapcount(head);
    deposit(mm, shared, table);
    slot.store(Pte::new(head, vma.page_prot() | Pte::HUGE | Pte::ACCESSED));
    faultstat::phase(Phase::Pte);
    true
}

/// A write or unshare fault on a PMD mapping the huge zero folio (Linux's old
/// `do_huge_pmd_wp_page_fallback` for writes; `__split_huge_pmd` for unshares): a write gets a
/// new zeroed exclusive THP in place of the zero folio when a block is free; otherwise, and
/// for an unshare, the PMD is split into PTEs of the small zero page and the small-page rules
/// copy the faulting 4 KiB page (`Ok(false)`).
fn huge_zero_wp<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    pmd: Pte,
    kind: FaultKind,
) -> Result<bool, FaultError> {
    let haddr = VirtAddr::new(va.as_u64() & !(HPAGE_PMD_SIZE - 1));
    if kind == FaultKind::Write {
        if let Some(new) = mm.frames().alloc_block(defrag_allowed(mm, vma)) {
            mm.zero_frames_owned(new, HPAGE_PMD_NR);
            mm.frames().prep_anon_thp(new, FrameFlags::ANON_EXCLUSIVE);
            mm.counters
                .anon_pages
                .fetch_add(HPAGE_PMD_NR as u64, Ordering::Relaxed);
            stats::inc(&mm.counters.anon_thps);
            stats::inc(&mm.counters.thp_fault_alloc);
            // Clear, flush, then set: no CPU may keep reading the zero folio through a stale
            // entry once the new folio is written. The deposit stays with the PMD leaf.
            let old = slot.take();
            let mut flush = TlbFlush::none(shared.root());
            flush.add_range(haddr, haddr + HPAGE_PMD_SIZE);
            flush.flush(mm.arch(), shared);
            let bits = (old.flags() & !Pte::WRITABLE) | write_grant(vma) | Pte::ACCESSED;
            slot.store(Pte::new(new, bits));
            // The zero folio counted nothing; the new THP is 512 resident pages.
            shared.add_rss(HPAGE_PMD_NR as u64);
            mm.frames().remove_entire_mapping(pmd.frame());
            mm.put_page(pmd.frame());
            stats::inc(&mm.counters.zero_page_copies);
            return Ok(true);
        }
        stats::inc(&mm.counters.thp_fault_fallback);
    }
    split_huge_pmd_slot(mm, shared, slot, haddr);
    Ok(false)
}

/// A fault on a present PMD leaf (Linux `huge_pmd_set_accessed`, `do_huge_pmd_wp_page`).
/// `Ok(false)`: the PMD was split, the caller continues on the PTE at `va`.
pub(crate) fn do_huge_pmd_fault<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    pmd: Pte,
    kind: FaultKind,
) -> Result<bool, FaultError> {
    match kind {
        FaultKind::Write | FaultKind::Unshare if !pmd.is_writable() => {
            do_huge_pmd_wp_page(mm, shared, vma, slot, va, pmd, kind)
        }
        // Spurious (a stale TLB entry) or permitted already: nothing to change.
        _ => Ok(true),
    }
}

/// A write or unshare fault on a read-only PMD-mapped THP (Linux `do_huge_pmd_wp_page`): reuse
/// the whole folio when its head is exclusive or the era's count rule proves it unshared,
/// otherwise split the PMD mapping and let the small-page rules (`do_wp_page`) decide for the
/// faulting 4 KiB page.
fn do_huge_pmd_wp_page<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    slot: PteRef<'_>,
    va: VirtAddr,
    pmd: Pte,
    kind: FaultKind,
) -> Result<bool, FaultError> {
    let head = pmd.frame();
    let frames = mm.frames();
    if frames.is_huge_zero(head) {
        return huge_zero_wp(mm, shared, vma, slot, va, pmd, kind);
    }
    let page = AnonPageState {
        exclusive: frames.meta(head).test(FrameFlags::ANON_EXCLUSIVE),
        mapcount: frames.folio_mapcount(head),
        refcount: frames.folio_refcount(head),
    };
    if vma.is_cow_mapping() {
        match rules::wp_can_reuse(mm.era(), page) {
            WpReuse::Exclusive => {}
            WpReuse::Proven => {
                frames.set_folio_exclusive(head, true);
                if kind == FaultKind::Write {
                    stats::inc(&mm.counters.wp_reuses_proven);
                }
            }
            WpReuse::Copy => {
                split_huge_pmd_slot(
                    mm,
                    shared,
                    slot,
                    VirtAddr::new(va.as_u64() & !(HPAGE_PMD_SIZE - 1)),
                );
                stats::inc(&mm.counters.thp_wp_splits);
                return Ok(false);
            }
        }
    }
    if kind == FaultKind::Write {
        slot.set_bits(write_grant(vma));
        stats::inc(&mm.counters.wp_reuses_exclusive);
    }
    Ok(true)
}

// ---- splitting a PMD mapping ----

/// Replaces the PMD leaf in `slot` (translating `[haddr, haddr + 2 MiB)`) by a PT of 512 PTEs
/// mapping the same subpages with the same permissions and history (Linux
/// `__split_huge_pmd_locked`): each subpage gains a PTE mapping and the folio 511 more
/// references (one per PTE instead of one for the PMD); the exclusive bits stay as they are.
/// Clear, flush, then set: no CPU may keep a 2 MiB translation beside the new 4 KiB ones.
pub(crate) fn split_huge_pmd_slot<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    slot: PteRef<'_>,
    haddr: VirtAddr,
) {
    let pmd = slot.take();
    assert!(
        pmd.is_huge(),
        "splitting a PMD that maps no THP at {haddr:#x}"
    );
    let mut flush = TlbFlush::none(shared.root());
    flush.add_range(haddr, haddr + HPAGE_PMD_SIZE);
    flush.flush(mm.arch(), shared);
    let table = withdraw(mm, shared);
    let head = pmd.frame();
    let frames = mm.frames();
    let pt = PageTable::new(mm, shared.root());
    let slots = pt.slots(table);
    let bits = pmd.flags() & !Pte::HUGE;
    if frames.is_huge_zero(head) {
        split_huge_zero_pmd(mm, slot, (table, slots), head, bits);
        return;
    }
    // The folio's 512 metadata entries are bounds-checked once and the PTE steps by one frame
    // (the 2 MiB-aligned folio's frames cannot carry into the flag bits): per subpage the loop
    // is the mapcount's atomic add and the store (a metadata lookup with its bounds check and
    // the frame's mask per subpage made the loop ~11 instructions longer).
    let pfn = head.pfn();
    let metas = &frames.metas()[pfn..pfn + HPAGE_PMD_NR];
    let mut pte = Pte::new(head, bits).raw();
    for (meta, (_, slot)) in metas.iter().zip(slots.range(0, HPAGE_PMD_NR)) {
        meta.inc_mapcount();
        slot.store(Pte::from_raw(pte));
        pte = pte.wrapping_add(PAGE_SIZE as u64);
    }
    frames.add_folio_refs(head, HPAGE_PMD_NR as u32 - 1);
    frames.drop_entire_mapcount_for_split(head);
    slot.store(Pte::new(table, Pte::TABLE_FLAGS));
    stats::inc(&mm.counters.thp_split_pmd);
}

/// The huge-zero half of [`split_huge_pmd_slot`] (Linux `__split_huge_zero_page_pmd`), after
/// the PMD was cleared and flushed: the new PT maps the *small* zero page 512 times, and the
/// PMD's mapping and reference of the huge zero folio go.
fn split_huge_zero_pmd<A: Arch>(
    mm: &Mm<A>,
    slot: PteRef<'_>,
    (table, slots): (PhysAddr, Slots<'_>),
    head: PhysAddr,
    bits: u64,
) {
    let zero = mm.zero_page();
    for i in 0..HPAGE_PMD_NR {
        mm.dup_mapping(zero);
        slots.at(i).store(Pte::new(zero, bits));
    }
    slot.store(Pte::new(table, Pte::TABLE_FLAGS));
    mm.frames().remove_entire_mapping(head);
    mm.put_page(head);
    stats::inc(&mm.counters.thp_split_pmd);
}

/// Splits every PMD leaf that `[start, end)` touches (for operations that change PTEs one by
/// one: mprotect, clear_refs, mremap). Cannot fail (deposits).
pub(crate) fn split_huge_pmd_range<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    start: VirtAddr,
    end: VirtAddr,
) {
    if shared.deposit_count.load(Ordering::Relaxed) == 0 {
        return;
    }
    let pt = PageTable::new(mm, shared.root());
    for at in huge_pmds(&pt, start, end) {
        if let Some(slot) = pt.walk_pmd(at) {
            // hugetlb pages are never split (their VMAs are never cut inside a page).
            if !crate::hugetlb::is_hugetlb_pmd(mm, slot.load()) {
                split_huge_pmd_slot(mm, shared, slot, at);
            }
        }
    }
}

/// A VMA is about to be split at `start` and `end` (flag changes by madvise or mlock): a PMD
/// leaf straddling either boundary is split first, so that no PMD maps two VMAs (Linux
/// `vma_adjust_trans_huge`). An aligned boundary needs nothing.
pub(crate) fn vma_adjust_trans_huge<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    start: VirtAddr,
    end: VirtAddr,
) {
    // An empty range at an unaligned address visits the PMD around it.
    split_huge_pmd_range(mm, shared, start, start);
    split_huge_pmd_range(mm, shared, end, end);
}

/// The addresses of the PMD leaves of `[start, end)` (no allocation when there are none).
fn huge_pmds<A: Arch>(
    pt: &PageTable<'_, A>,
    start: VirtAddr,
    end: VirtAddr,
) -> alloc::vec::Vec<VirtAddr> {
    let mut found = alloc::vec::Vec::new();
    pt.for_each_huge_pmd(start, end, &mut |va, _| found.push(va));
    found
}

// ---- fork ----

/// fork of the PMD leaves of `[start, end)` (Linux `copy_huge_pmd`): share each THP with the
/// child write-protected (exclusive bits cleared on all subpages), unless `fork_must_copy`
/// says the folio may be pinned, in which case the parent's PMD is split and the small-page
/// fork that follows copies the subpages that need it (`copy_present_pte`), as Linux falls
/// back. Returns whether a parent PMD lost write permission.
#[allow(clippy::too_many_arguments)]
pub(crate) fn copy_huge_pmds<A: Arch>(
    mm: &Mm<A>,
    src: &MmShared,
    dst: &MmShared,
    start: VirtAddr,
    end: VirtAddr,
    has_pinned: bool,
) -> Result<bool, MmError> {
    if src.deposit_count.load(Ordering::Relaxed) == 0 {
        // One deposit per PMD leaf: none, so no THP to copy (a process that never had one
        // pays this test per VMA, not a walk).
        return Ok(false);
    }
    let src_pt = PageTable::new(mm, src.root());
    let dst_pt = PageTable::new(mm, dst.root());
    let frames = mm.frames();
    let mut wrprotected = false;
    for at in huge_pmds(&src_pt, start, end) {
        let Some(slot) = src_pt.walk_pmd(at) else {
            continue;
        };
        let pmd = slot.load();
        if !pmd.is_huge() {
            continue;
        }
        let head = pmd.frame();
        if frames.is_huge_zero(head) {
            // Linux `copy_huge_pmd`'s `is_huge_zero_pmd` branch: never copied, only shared.
            let table = mm.alloc_pagetable().ok_or(MmError::NoMem)?;
            let Some(dst_slot) = dst_pt.walk_alloc_pmd(at) else {
                mm.free_pagetable_zeroed(table);
                return Err(MmError::NoMem);
            };
            deposit(mm, dst, table);
            frames.meta(head).get();
            frames.inc_entire_mapcount(head);
            dst_slot.store(pmd.without(Pte::ACCESSED));
            continue;
        }
        let exclusive = frames.meta(head).test(FrameFlags::ANON_EXCLUSIVE);
        if rules::fork_must_copy(
            mm.era(),
            has_pinned,
            exclusive,
            frames.folio_maybe_dma_pinned(frames.meta(head)),
        ) {
            split_huge_pmd_slot(mm, src, slot, at);
            continue;
        }
        let table = mm.alloc_pagetable().ok_or(MmError::NoMem)?;
        let Some(dst_slot) = dst_pt.walk_alloc_pmd(at) else {
            mm.free_pagetable_zeroed(table);
            return Err(MmError::NoMem);
        };
        deposit(mm, dst, table);
        if exclusive {
            // Linux `folio_try_dup_anon_rmap_pmd`: from now on two processes map it.
            frames.set_folio_exclusive(head, false);
        }
        frames.add_entire_mapping(head);
        if pmd.is_writable() {
            slot.clear_bits(Pte::WRITABLE);
            wrprotected = true;
        }
        dst_slot.store(pmd.without(Pte::WRITABLE | Pte::ACCESSED));
        stats::inc(&mm.counters.thp_fork_shared);
    }
    Ok(wrprotected)
}

/// The PMD leaf `pmd`, mapping the THP whose head it names, was cleared (munmap of its whole
/// 2 MiB or exit): drop the mapping and the deposit (Linux `zap_huge_pmd`). The mapping's
/// reference is the caller's to drop after the TLB flush.
pub(crate) fn zap_huge_pmd<A: Arch>(mm: &Mm<A>, shared: &MmShared, pmd: Pte) {
    let frames = mm.frames();
    frames.remove_entire_mapping(pmd.frame());
    if crate::hugetlb::is_hugetlb_pmd(mm, pmd) {
        // Never split, so never given a deposit; hugetlb pages are not RSS (as Linux).
        return;
    }
    if !frames.is_huge_zero(pmd.frame()) {
        // The huge zero folio was never counted (as the small zero page).
        shared.sub_rss(HPAGE_PMD_NR as u64);
    }
    if frames.entire_mapcount(pmd.frame()) == 0 && frames.folio_mapcount(pmd.frame()) != 0 {
        // Its last PMD went while other processes map parts of it by PTEs (Linux
        // `folio_remove_rmap_pmd` -> `deferred_split_folio`).
        frames.deferred_split_folio(pmd.frame());
    }
    let table = withdraw(mm, shared);
    // Never linked into the hierarchy, so no TLB or walker can hold it: free at once.
    mm.free_pagetable_zeroed(table);
}

impl<A: Arch> PageTable<'_, A> {
    /// Calls `f(va, pmd)` for every PMD leaf of `[start, end)`, in address order, descending
    /// only into PDPTs and PDs that exist (for fork, smaps, the checker).
    pub(crate) fn for_each_huge_pmd(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        f: &mut dyn FnMut(VirtAddr, Pte),
    ) {
        self.visit_pmds(self.root(), 4, start.as_u64(), end.as_u64(), f);
    }

    fn visit_pmds(
        &self,
        table: PhysAddr,
        level: u8,
        start: u64,
        end: u64,
        f: &mut dyn FnMut(VirtAddr, Pte),
    ) {
        let span = 1u64 << (12 + 9 * (u32::from(level) - 1));
        let mut va = start & !(HPAGE_PMD_SIZE - 1);
        while va < end {
            let next = (va & !(span - 1)) + span;
            let e = self
                .entry(table, VirtAddr::new(va).table_index(level))
                .load();
            if level == 2 {
                if e.is_huge() {
                    f(VirtAddr::new(va & !(span - 1)), e);
                }
            } else if e.is_present() && !e.has(Pte::HUGE) {
                // (A PUD leaf, a 1 GiB hugetlb page, has no PD below it.)
                self.visit_pmds(e.frame(), level - 1, va.max(start), end.min(next), f);
            }
            va = next;
        }
    }
}
