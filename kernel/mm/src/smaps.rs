//! What `/proc/<pid>/smaps` reports for each VMA (Linux `smaps_pte_entry` and
//! `smaps_account`): resident bytes, the proportional share, anonymous, shared and private
//! clean and dirty bytes, referenced and locked bytes.
//!
//! One walk over the page tables (never over the VMAs' address ranges, which may be a huge
//! `PROT_NONE` reservation): every leaf mapping is charged to the VMA containing it. The shared
//! zero page is not counted, as Linux's `vm_normal_page` skips it. A page is "shared" when more
//! than one PTE maps it (mapcount >= 2, Linux `smaps_account`); its proportional share is its
//! size divided by the mapcount, kept in 1/4096ths of a byte like Linux's `PSS_SHIFT` so the
//! sum over many pages does not lose the fractions. hugetlb pages are counted apart, in
//! `Shared_Hugetlb`/`Private_Hugetlb` only (Linux `smaps_hugetlb_range`).
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::folio::HPAGE_PMD_SIZE;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::pagetable::{Pte, ENTRIES, HPAGE_PUD_SIZE};
use crate::vma::{Sharing, VmaFlags};

const PAGE: u64 = 4096;
/// Fraction bits of [`SmapsCounts::pss_frac`] (Linux `PSS_SHIFT`).
pub const PSS_SHIFT: u32 = 12;

/// One VMA's numbers, in bytes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SmapsCounts {
    pub rss: u64,
    /// The proportional set size in bytes << [`PSS_SHIFT`].
    pub pss_frac: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub referenced: u64,
    pub anonymous: u64,
    /// The proportional size of the resident pages of a `VM_LOCKED` VMA, << [`PSS_SHIFT`]
    /// (Linux adds the PSS to `Locked`).
    pub locked_frac: u64,
    /// Anonymous memory mapped by PMDs (THPs), Linux's `AnonHugePages`.
    pub anon_huge: u64,
    /// hugetlb pages mapped more than once (Linux `Shared_Hugetlb`): see [`smaps_hugetlb`].
    pub shared_hugetlb: u64,
    /// hugetlb pages mapped once (Linux `Private_Hugetlb`).
    pub private_hugetlb: u64,
}

impl SmapsCounts {
    /// The proportional set size in bytes.
    pub fn pss(&self) -> u64 {
        self.pss_frac >> PSS_SHIFT
    }

    pub fn locked(&self) -> u64 {
        self.locked_frac >> PSS_SHIFT
    }

    /// Adds `other` (for `smaps_rollup`).
    pub fn add(&mut self, other: &SmapsCounts) {
        self.rss += other.rss;
        self.pss_frac += other.pss_frac;
        self.shared_clean += other.shared_clean;
        self.shared_dirty += other.shared_dirty;
        self.private_clean += other.private_clean;
        self.private_dirty += other.private_dirty;
        self.referenced += other.referenced;
        self.anonymous += other.anonymous;
        self.locked_frac += other.locked_frac;
        self.anon_huge += other.anon_huge;
        self.shared_hugetlb += other.shared_hugetlb;
        self.private_hugetlb += other.private_hugetlb;
    }
}

impl AddressSpace {
    /// The smaps numbers of every VMA with a resident page, by VMA start address (Linux
    /// `show_smap`); VMAs without one are absent (all zero). O(page tables).
    pub fn smaps<A: Arch>(&self, mm: &Mm<A>) -> BTreeMap<VirtAddr, SmapsCounts> {
        let pt = self.page_table(mm);
        let zero = mm.zero_page();
        let mut out: BTreeMap<VirtAddr, SmapsCounts> = BTreeMap::new();
        pt.for_each_table(&mut |table, level, base| {
            if level != 1 {
                return;
            }
            for i in 0..ENTRIES {
                let e = pt.table_entry(table, i);
                if !e.is_mapping() || e.frame() == zero {
                    continue;
                }
                let va = VirtAddr::new(base.as_u64() + i as u64 * PAGE);
                let Some(vma) = self.find_vma(va) else {
                    continue;
                };
                let c = out.entry(vma.start()).or_default();
                smaps_account(
                    c,
                    e,
                    // A subpage of a PTE-mapped THP may also be mapped by PMDs elsewhere.
                    mm.frames().page_mapcount(e.frame()),
                    mm.frames().meta(e.frame()).test(FrameFlags::ANON)
                        && vma.sharing() == Sharing::Private,
                    vma.flags().contains(VmaFlags::LOCKED),
                );
            }
        });
        // PMD-mapped THPs (Linux `smaps_pmd_entry`): every subpage as above, and the whole
        // 2 MiB as `AnonHugePages`.
        pt.for_each_huge_pmd(
            VirtAddr::zero(),
            VirtAddr::new(crate::aspace::USER_END),
            &mut |va, pmd| {
                let Some(vma) = self.find_vma(va) else {
                    return;
                };
                if vma.is_hugetlb() {
                    let c = out.entry(vma.start()).or_default();
                    smaps_hugetlb(c, mm.frames().page_mapcount(pmd.frame()), HPAGE_PMD_SIZE);
                    return;
                }
                if mm.frames().is_huge_zero(pmd.frame()) {
                    // Not counted, as the small zero page (Linux `vm_normal_page_pmd`).
                    return;
                }
                let c = out.entry(vma.start()).or_default();
                for i in 0..crate::folio::HPAGE_PMD_NR as u64 {
                    let sub = VirtAddr::new(va.as_u64() + i * PAGE);
                    let pte = pmd.huge_subpage(sub);
                    let locked = vma.flags().contains(VmaFlags::LOCKED);
                    smaps_account(c, pte, mm.frames().page_mapcount(pte.frame()), true, locked);
                }
                c.anon_huge += crate::folio::HPAGE_PMD_SIZE;
            },
        );
        // 1 GiB hugetlb pages: only hugetlb VMAs have PUD leaves.
        pt.for_each_huge_pud(
            VirtAddr::zero(),
            VirtAddr::new(crate::aspace::USER_END),
            &mut |va, pud| {
                let Some(vma) = self.find_vma(va) else {
                    return;
                };
                let c = out.entry(vma.start()).or_default();
                smaps_hugetlb(c, mm.frames().page_mapcount(pud.frame()), HPAGE_PUD_SIZE);
            },
        );
        out
    }
}

/// Charges one mapped hugetlb page of `bytes` (Linux `smaps_hugetlb_range`): never to `Rss`,
/// the PSS or the clean/dirty lines, only to `Shared_Hugetlb` when more than one page-table
/// entry maps it (a private page shared with a fork child until one of them writes; a shared
/// memfd page mapped twice) and to `Private_Hugetlb` otherwise. A shared mapping's page mapped
/// once is "private" here, as in Linux: the count is of mappings, not of the VMA's sharing.
fn smaps_hugetlb(c: &mut SmapsCounts, mapcount: u32, bytes: u64) {
    if mapcount >= 2 {
        c.shared_hugetlb += bytes;
    } else {
        c.private_hugetlb += bytes;
    }
}

/// Charges one resident page mapped by `pte` (Linux `smaps_account`): dirty is the PTE's dirty
/// bit (the frame's own dirty state is not tracked apart from it here), referenced its accessed
/// bit.
fn smaps_account(c: &mut SmapsCounts, pte: Pte, mapcount: u32, anon: bool, locked: bool) {
    let mapcount = u64::from(mapcount.max(1));
    let dirty = pte.is_dirty();
    c.rss += PAGE;
    let share = (PAGE << PSS_SHIFT) / mapcount;
    c.pss_frac += share;
    if locked {
        c.locked_frac += share;
    }
    if anon {
        c.anonymous += PAGE;
    }
    if pte.has(Pte::ACCESSED) {
        c.referenced += PAGE;
    }
    match (mapcount >= 2, dirty) {
        (true, true) => c.shared_dirty += PAGE,
        (true, false) => c.shared_clean += PAGE,
        (false, true) => c.private_dirty += PAGE,
        (false, false) => c.private_clean += PAGE,
    }
}
