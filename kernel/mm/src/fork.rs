//! fork: duplicating an address space with copy-on-write (SEMANTICS.md section 5).
//!
//! Picture: the child gets the parent's VMAs (except `MADV_DONTFORK` ones) and, for every present
//! PTE, a mapping of the *same* page, read-only on both sides, so whichever writes first copies
//! (`do_wp_page`). The exception that makes pinning work: an exclusive anon page that may be
//! under DMA is copied for the child right now, and the parent keeps its page, writable — the
//! pin stays coherent with the parent (`rules::fork_must_copy`). The invariant after fork: every
//! anon page mapped by both is non-exclusive and read-only in both, and no TLB of the parent
//! still allows a write to it.

#![deny(unsafe_code)]

use core::cell::Cell;

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::pagetable::{PageTable, Pte, PteRef};
use crate::rules;
use crate::stats;
use crate::tlb::TlbFlush;
use crate::vma::{Sharing, VmaFlags};

impl AddressSpace {
    /// Creates the child's address space (Linux `dup_mmap`). On `NoMem` the parent is unchanged
    /// except that some of its pages are now shared read-only (harmless: they fault back to
    /// exclusive on the next write).
    #[doc(alias = "dup_mmap")]
    pub fn fork<A: Arch>(&mut self, mm: &Mm<A>) -> Result<AddressSpace, MmError> {
        let root = PageTable::create_root(mm).ok_or(MmError::NoMem)?;
        let mut child = self.fork_shell(root);
        self.write_protect_begin();
        let result = copy_mappings(mm, self, &mut child);
        if let Ok(true) | Err(_) = result {
            // Parent PTEs lost write permission: no CPU may keep writing through an old entry.
            let mut flush = TlbFlush::none(self.root);
            flush.add_all();
            flush.flush(mm.arch());
        }
        self.write_protect_end();
        match result {
            Ok(_) => {
                stats::inc(&mm.counters.forks);
                Ok(child)
            }
            Err(e) => {
                child.exit(mm);
                Err(e)
            }
        }
    }
}

/// Copies VMAs and PTEs; returns whether any parent PTE was write-protected.
fn copy_mappings<A: Arch>(
    mm: &Mm<A>,
    parent: &AddressSpace,
    child: &mut AddressSpace,
) -> Result<bool, MmError> {
    let era = mm.era();
    let has_pinned = parent.has_pinned();
    let src = parent.page_table(mm);
    let dst = PageTable::new(mm, child.root);
    let mut wrprotected = false;
    for vma in parent.vmas.values() {
        if vma.flags.contains(VmaFlags::DONTFORK) {
            continue;
        }
        child.vmas.map_mut().insert(vma.start.as_u64(), vma.clone());
        let ctx = CopyCtx {
            mm,
            era,
            has_pinned,
            cow: vma.is_cow_mapping(),
            sharing: vma.sharing,
            writable: vma.prot.write(),
            page_prot: vma.page_prot(),
            dst: &dst,
            dst_pt: Cell::new(None),
        };
        let mut result = Ok(());
        src.for_each_leaf(vma.start, vma.end, &mut |va, slot| {
            if result.is_err() {
                return;
            }
            let pte = slot.load();
            if pte.is_mapping() {
                match copy_present_pte(&ctx, va, slot, pte) {
                    Ok(wp) => wrprotected |= wp,
                    Err(e) => result = Err(e),
                }
            }
        });
        result?;
    }
    Ok(wrprotected)
}

/// What `copy_present_pte` needs to know about the VMA being copied.
struct CopyCtx<'a, 'm, A: Arch> {
    mm: &'m Mm<A>,
    era: Era,
    has_pinned: bool,
    cow: bool,
    sharing: Sharing,
    writable: bool,
    page_prot: u64,
    dst: &'a PageTable<'m, A>,
    /// The child's PT page last filled, keyed by `va >> 21` (Linux `copy_pte_range` walks the
    /// destination once per PTE table): consecutive pages of one 2 MiB skip the 4-level walk.
    /// The child's tables are private to this fork until it returns, so the page stays valid.
    dst_pt: Cell<Option<(u64, PhysAddr)>>,
}

impl<'m, A: Arch> CopyCtx<'_, 'm, A> {
    /// The child's slot for `va`, allocating its tables on the first page of each PT.
    fn dst_slot(&self, va: VirtAddr) -> Option<PteRef<'m>> {
        let key = va.as_u64() >> 21;
        let pt = match self.dst_pt.get() {
            Some((k, pt)) if k == key => pt,
            _ => {
                let pt = self.dst.walk_alloc_pt(va)?;
                self.dst_pt.set(Some((key, pt)));
                pt
            }
        };
        Some(self.dst.entry(pt, va.table_index(1)))
    }
}

/// Gives the child a mapping of the page the parent maps at `va` (Linux `copy_present_pte`).
/// Returns whether the parent's PTE was write-protected.
fn copy_present_pte<A: Arch>(
    ctx: &CopyCtx<'_, '_, A>,
    va: VirtAddr,
    src: PteRef<'_>,
    pte: Pte,
) -> Result<bool, MmError> {
    let mm = ctx.mm;
    let frame = pte.frame();
    let meta = mm.frames().meta(frame);
    let dst = ctx.dst_slot(va).ok_or(MmError::NoMem)?;
    let flags = meta.flags();
    if ctx.cow && flags.contains(FrameFlags::ANON) {
        let exclusive = flags.contains(FrameFlags::ANON_EXCLUSIVE);
        if rules::fork_must_copy(ctx.era, ctx.has_pinned, exclusive, meta.maybe_dma_pinned()) {
            // Linux `copy_present_page`: the child gets a private copy, the parent's PTE and
            // page (and the DMA into it) are untouched.
            let new = mm.alloc_anon_page(Some(frame)).ok_or(MmError::NoMem)?;
            let mut bits = ctx.page_prot | Pte::ACCESSED | Pte::DIRTY | Pte::SOFT_DIRTY;
            if ctx.writable && pte.is_present() {
                bits |= Pte::WRITABLE;
            }
            dst.store(Pte::new(new, bits));
            stats::inc(&mm.counters.fork_pinned_copies);
            return Ok(false);
        }
        if exclusive {
            // Linux `page_try_dup_anon_rmap`: from now on two processes map it.
            meta.clear_flags(FrameFlags::ANON_EXCLUSIVE);
        }
    }
    mm.dup_mapping(frame);
    let mut child_pte = pte.without(Pte::ACCESSED);
    let mut wrprotected = false;
    if ctx.cow && pte.is_writable() {
        src.clear_bits(Pte::WRITABLE);
        child_pte = child_pte.without(Pte::WRITABLE);
        wrprotected = true;
    }
    if ctx.sharing == Sharing::Shared {
        // The child has not written the page: its dirty tracking starts clean.
        child_pte = child_pte.without(Pte::DIRTY);
    }
    dst.store(child_pte);
    Ok(wrprotected)
}
