//! `/proc/pid/pagemap`: one 64-bit word per virtual page saying what backs it
//! (Linux `fs/proc/task_mmu.c`, `pagemap_pte_hole`/`pte_to_pagemap_entry`).
//!
//! Picture: user space (cow.c, gup_longterm.c, checkpointers) asks "is this page present, which
//! frame is it, has it been written since clear_refs, is it mapped only here?" without touching
//! it. The answer is read from the PTE and the frame's metadata, never faulting anything in. The
//! invariant: the word describes the page-table state at the time of the read; unmapped or
//! not-yet-faulted pages are 0 (apart from soft-dirty of a VMA without tracking, as in Linux).

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::vma::Sharing;

/// Bits 0-54: the page frame number, when present.
pub const PM_PFRAME_MASK: u64 = (1 << 55) - 1;
/// Bit 55: soft-dirty (written since the last `clear_refs` 4).
pub const PM_SOFT_DIRTY: u64 = 1 << 55;
/// Bit 56: the page is mapped exactly once (Linux `PM_MMAP_EXCLUSIVE`).
pub const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// Bit 61: a page-cache page or shared anonymous memory (Linux `PM_FILE`).
pub const PM_FILE: u64 = 1 << 61;
/// Bit 63: present.
pub const PM_PRESENT: u64 = 1 << 63;

impl AddressSpace {
    /// The pagemap word of the page containing `va` (Linux `pagemap_read` for one page). The
    /// PFN is always reported (cowlab has no `CAP_SYS_ADMIN` distinction yet).
    #[doc(alias = "pte_to_pagemap_entry")]
    pub fn pagemap_entry<A: Arch>(&self, mm: &Mm<A>, va: VirtAddr) -> u64 {
        let Some(vma) = self.find_vma(va) else {
            return 0;
        };
        let untracked = if vma.soft_dirty_tracking() {
            0
        } else {
            PM_SOFT_DIRTY
        };
        let Some(pte) = self.translate(mm, va) else {
            return untracked;
        };
        let mut word = untracked;
        if pte.is_soft_dirty() {
            word |= PM_SOFT_DIRTY;
        }
        // A PROT_NONE PTE still maps its frame: Linux reports it present too.
        word |= PM_PRESENT | (pte.frame().pfn() as u64 & PM_PFRAME_MASK);
        // The zero pages (small and huge) are "special" mappings in Linux: neither exclusive
        // nor file pages. A huge-zero PMD reports each subpage's own PFN.
        if mm.is_zero_frame(pte.frame()) {
            return word;
        }
        let meta = mm.frames().meta(pte.frame());
        if meta.mapcount() == 1 {
            word |= PM_MMAP_EXCLUSIVE;
        }
        if !meta.test(FrameFlags::ANON) || vma.sharing() == Sharing::Shared {
            word |= PM_FILE;
        }
        word
    }
}
