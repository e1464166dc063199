//! `MADV_COLLAPSE`: 512 PTE-mapped pages of a 2 MiB-aligned range become one PMD-mapped THP
//! (Linux `madvise_collapse`, `collapse_huge_page`; the synchronous half of khugepaged).
//!
//! Picture: a range that got small pages (faulted before `MADV_HUGEPAGE`, fallen back for want
//! of a block, or split by mprotect) is copied into a new zeroed 2 MiB folio: each present
//! page's contents at its offset, zeros where nothing or the zero page was mapped. The PMD
//! entry that pointed to the PT is cleared and flushed *before* the copy, so no thread can
//! write an old page after it was copied; then the old pages lose their mappings, the emptied
//! PT becomes the new PMD leaf's deposit (`huge_memory::deposit`), and the PMD maps the folio,
//! exclusive, writable when the VMA is.
//!
//! What a range must be, measured on Linux 6.18 (the errno of each case):
//! - the VMA: private anonymous, accessible, not `MADV_NOHUGEPAGE`, else `EINVAL` (the
//!   sysfs `enabled` mode does not matter: a range without `MADV_HUGEPAGE` under `madvise`
//!   collapses too); each aligned 2 MiB of the range
//!   wholly inside one such VMA, else `EINVAL`; a range with no whole aligned 2 MiB: 0;
//! - already PMD-mapped (a THP, the huge zero folio): success, nothing to do;
//! - no page table there, or only empty and zero-page PTEs: `EINVAL`;
//! - a page held by anything but its mappings (a GUP reference, a pin): `EAGAIN`, nothing
//!   changed (Linux `is_refcount_suitable`); pages shared with a fork child are copied (the
//!   child keeps them);
//! - no free 2 MiB block: `ENOMEM`; an unmapped part of the range: `ENOMEM` after the rest.

#![deny(unsafe_code)]

use core::sync::atomic::Ordering;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::folio::{HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::frame::FrameFlags;
use crate::huge_memory::{deposit, thp_vma_suitable};
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{PageTable, Pte};
use crate::stats;
use crate::tlb::TlbFlush;
use crate::vma::{Vma, VmaFlags};
use crate::wp::write_grant;
use crate::PAGE_SIZE;

impl AddressSpace {
    /// `MADV_COLLAPSE` of the page-aligned `[start, end)` (see the module comment for the
    /// errnos). `holes`: whether part of the range is unmapped (`ENOMEM` if nothing else
    /// failed).
    pub(crate) fn madvise_collapse<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        holes: bool,
    ) -> Result<(), MmError> {
        let first = self
            .vmas()
            .find(|v| v.end() > start && v.start() < end)
            .map(|v| collapse_allowed(v, v.start()));
        if first == Some(false) {
            return Err(MmError::Inval);
        }
        let hstart = (start.as_u64() + HPAGE_PMD_SIZE - 1) & !(HPAGE_PMD_SIZE - 1);
        let hend = end.as_u64() & !(HPAGE_PMD_SIZE - 1);
        let mut last_fail = None;
        let mut at = hstart;
        while at < hend {
            let haddr = VirtAddr::new(at);
            at += HPAGE_PMD_SIZE;
            let Some(vma) = self.find_vma(haddr) else {
                continue; // a hole: ENOMEM below
            };
            if !collapse_allowed(vma, haddr) {
                last_fail = Some(MmError::Inval);
                continue;
            }
            let vma = vma.clone();
            if let Err(e) = collapse_huge_page(mm, &self.shared, &vma, haddr) {
                last_fail = Some(e);
            }
        }
        match last_fail {
            Some(e) => Err(e),
            None if holes => Err(MmError::NoMem),
            None => Ok(()),
        }
    }
}

/// May the 2 MiB around `va` in `vma` be collapsed (Linux `thp_vma_allowable_order` with
/// `TVA_FORCED_COLLAPSE`, plus `hugepage_vma_revalidate`)? Independent of the sysfs
/// `enabled` mode, as Linux documents and does; only `MADV_NOHUGEPAGE` refuses.
fn collapse_allowed(vma: &Vma, va: VirtAddr) -> bool {
    vma.prot().accessible()
        && !vma.flags().contains(VmaFlags::NOHUGEPAGE)
        && thp_vma_suitable(vma, va)
}

/// Collapses the PT mapping `[haddr, haddr + 2 MiB)` of `vma` into a new THP (Linux
/// `hpage_collapse_scan_pmd` + `collapse_huge_page`).
fn collapse_huge_page<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    haddr: VirtAddr,
) -> Result<(), MmError> {
    let pt = PageTable::new(mm, shared.root());
    let frames = mm.frames();
    let pmd_slot = pt.walk_pmd(haddr).ok_or(MmError::Inval)?;
    let pmd = pmd_slot.load();
    if pmd.is_huge() {
        return Ok(());
    }
    if !pmd.is_present() {
        return Err(MmError::Inval);
    }
    let table = pmd.frame();
    let slots = pt.slots(table);
    // The scan: nothing changes unless every page can go.
    let mut pages = 0;
    for (_, slot) in slots.range(0, HPAGE_PMD_NR) {
        let pte = slot.load();
        if pte.is_empty() || (pte.is_present() && mm.is_zero_frame(pte.frame())) {
            continue;
        }
        if !pte.is_present() {
            return Err(MmError::Inval);
        }
        let f = pte.frame();
        if !frames.meta(f).test(FrameFlags::ANON) {
            return Err(MmError::Inval);
        }
        // Held only by the PTEs mapping it (`is_refcount_suitable`).
        if frames.folio_refcount(f) != frames.folio_mapcount(f) {
            return Err(MmError::Again);
        }
        pages += 1;
    }
    if pages == 0 {
        return Err(MmError::Inval);
    }
    let new = frames.alloc_block(true).ok_or(MmError::NoMem)?;
    // Unlink the PT and flush before copying: from here no CPU can write an old page.
    pmd_slot.take();
    let mut flush = TlbFlush::none(shared.root());
    flush.add_range(haddr, haddr + HPAGE_PMD_SIZE);
    flush.flush(mm.arch(), shared);
    let mut bits = 0;
    let mut resident = 0u64;
    for (i, slot) in slots.range(0, HPAGE_PMD_NR) {
        let dst = new + (i * PAGE_SIZE) as u64;
        let pte = slot.take();
        if !pte.is_mapping() {
            mm.zero_frame_owned(dst);
            continue;
        }
        bits |= pte.flags() & (Pte::SOFT_DIRTY | Pte::DIRTY);
        let old = pte.frame();
        if mm.is_zero_frame(old) {
            mm.zero_frame_owned(dst);
        } else {
            mm.copy_frame_owned(dst, old);
            resident += 1;
        }
        mm.remove_mapping(old);
        mm.put_page(old);
    }
    frames.prep_anon_thp(new, FrameFlags::ANON_EXCLUSIVE);
    mm.counters
        .anon_pages
        .fetch_add(HPAGE_PMD_NR as u64, Ordering::Relaxed);
    stats::inc(&mm.counters.anon_thps);
    stats::inc(&mm.counters.thp_collapse_alloc);
    // The emptied PT is this leaf's deposit (Linux `pgtable_trans_huge_deposit` of the
    // collapsed PT).
    deposit(mm, shared, table);
    let bits = vma.page_prot() | write_grant(vma) | bits | Pte::HUGE | Pte::ACCESSED;
    pmd_slot.store(Pte::new(new, bits));
    // The holes and zero-page slots the THP now backs become resident (Linux counts the
    // collapsed folio as HPAGE_PMD_NR anon pages).
    shared.add_rss(HPAGE_PMD_NR as u64 - resident);
    Ok(())
}
