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

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::error::MmError;
use crate::frame::{FrameFlags, FrameMeta};
use crate::mm::Mm;
use crate::opstat::{mark, Phase::*};
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
        mark(ForkSetup);
        // The child's VMAs count against the system-wide cap (Linux's `dup_mmap` can only fail
        // on memory for them; here the cap is that memory). Checked before anything changes.
        let inherited = self
            .vmas
            .values()
            .filter(|v| !v.flags.contains(VmaFlags::DONTFORK))
            .count();
        if mm.live_vmas() + inherited > mm.vma_limits().1 {
            return Err(MmError::NoMem);
        }
        mark(ForkVmas);
        let root = PageTable::create_root(mm).ok_or(MmError::NoMem)?;
        mark(ForkTables);
        let mut child = self.fork_shell(root);
        self.write_protect_begin();
        mark(ForkSetup);
        // Resident pages of the VMAs the child does not get (Linux `copy_pte_range` adds the
        // copied ones to the child's counters page by page; here the per-PTE loop stays free of
        // it and the child starts from the parent's count less these).
        let mut skipped = 0;
        let result = copy_mappings(mm, self, &mut child, &mut skipped);
        mark(ForkTables);
        // Whatever was copied is now counted, so that `exit` below (or the child's own, later)
        // takes exactly it off again.
        mm.account_vmas(0, child.vmas.len());
        if let Ok(true) | Err(_) = result {
            // Parent PTEs lost write permission: no CPU may keep writing through an old entry.
            let mut flush = TlbFlush::none(self.root);
            flush.add_all();
            flush.flush(mm.arch(), &self.shared);
        }
        self.write_protect_end();
        mark(ForkFlush);
        match result {
            Ok(_) => {
                child.shared.add_rss(self.shared.rss() - skipped);
                stats::inc(&mm.counters.forks);
                Ok(child)
            }
            Err(e) => {
                // The child counted nothing yet, but its teardown takes off every page it maps
                // (THP PMDs and PTEs copied before the failure): count them first. A rare path,
                // so a walk rather than counting in the copy loops.
                let copied = crate::rss::resident_in(
                    mm,
                    &child.page_table(mm),
                    crate::addr::VirtAddr::zero(),
                    crate::addr::VirtAddr::new(crate::aspace::USER_END),
                );
                child.shared.add_rss(copied);
                child.exit(mm);
                Err(e)
            }
        }
    }
}

/// Copies VMAs and PTEs; returns whether any parent PTE was write-protected. Adds to `skipped`
/// the resident pages of the VMAs not copied (`MADV_DONTFORK`, `MADV_WIPEONFORK`).
fn copy_mappings<A: Arch>(
    mm: &Mm<A>,
    parent: &AddressSpace,
    child: &mut AddressSpace,
    skipped: &mut u64,
) -> Result<bool, MmError> {
    let era = mm.era();
    let has_pinned = parent.has_pinned();
    // `fork_must_copy` is monotone in the page's state (exclusive, maybe pinned): if it says no
    // for the most copy-prone page, it says no for every page of this fork, and the per-page
    // loop skips the question (the common case: a process that never pinned).
    let may_copy = rules::fork_must_copy(era, has_pinned, true, true);
    let src = parent.page_table(mm);
    let dst = PageTable::new(mm, child.root);
    let mut wrprotected = false;
    for vma in parent.vmas.values() {
        if vma.flags.contains(VmaFlags::DONTFORK) {
            *skipped += crate::rss::resident_in(mm, &src, vma.start, vma.end);
            continue;
        }
        // Memory locks are not inherited (Linux `dup_mmap` clears `VM_LOCKED`).
        let mut copy = vma.clone();
        crate::hugetlb::fork_vma_copy(&mut copy);
        copy.flags = copy
            .flags
            .without(VmaFlags::LOCKED.union(VmaFlags::LOCKONFAULT));
        child.vmas.map_mut().insert(vma.start.as_u64(), copy);
        mark(ForkVmas);
        // `MADV_WIPEONFORK`: the child's VMA starts empty (Linux `dup_mmap` skips
        // `copy_page_range` for it) and keeps the flag.
        if vma.flags.contains(VmaFlags::WIPEONFORK) {
            *skipped += crate::rss::resident_in(mm, &src, vma.start, vma.end);
            continue;
        }
        let ctx = CopyCtx {
            mm,
            era,
            has_pinned,
            may_copy,
            cow: vma.is_cow_mapping(),
            child_clear: child_clear(vma.is_cow_mapping(), vma.sharing),
            writable: vma.prot.write(),
            page_prot: vma.page_prot(),
        };
        if vma.is_hugetlb() {
            wrprotected |= crate::hugetlb::copy_hugetlb_page_range(
                mm,
                &parent.shared,
                &child.shared,
                vma,
                has_pinned,
            )?;
            continue;
        }
        if vma.is_anonymous() && vma.sharing == Sharing::Private {
            // PMD-mapped THPs first: shared whole, or split so that the PTE loop below copies
            // what may be pinned.
            wrprotected |= crate::huge_memory::copy_huge_pmds(
                mm,
                &parent.shared,
                &child.shared,
                vma.start,
                vma.end,
                has_pinned,
            )?;
        }
        let mut result = Ok(());
        src.for_each_pt(vma.start, vma.end, &mut |va, pt, first, last| {
            if result.is_ok() {
                result = copy_pte_range(&ctx, &src, &dst, va, pt, first, last).map(|wp| {
                    wrprotected |= wp;
                });
            }
        });
        result?;
    }
    Ok(wrprotected)
}

/// What `copy_present_pte` needs to know about the VMA being copied.
struct CopyCtx<'m, A: Arch> {
    mm: &'m Mm<A>,
    era: Era,
    has_pinned: bool,
    /// `fork_must_copy` can answer yes for some page of this fork.
    may_copy: bool,
    cow: bool,
    /// PTE bits the child's copy of a parent PTE drops (see [`child_clear`]).
    child_clear: u64,
    writable: bool,
    page_prot: u64,
}

/// The bits a child's PTE drops from the parent's: accessed (the child has not used the page),
/// writable in a COW mapping (the first write on either side faults and copies or reuses),
/// dirty in a shared mapping (the child has not written the page: its dirty tracking starts
/// clean).
fn child_clear(cow: bool, sharing: Sharing) -> u64 {
    let mut bits = Pte::ACCESSED;
    if cow {
        bits |= Pte::WRITABLE;
    }
    if sharing == Sharing::Shared {
        bits |= Pte::DIRTY;
    }
    bits
}

/// Copies slots `first..last` of the parent's PT page `pt` into the child (Linux
/// `copy_pte_range`; `va` is the address of slot `first`): the child's PT is found or allocated
/// once, on the first mapping slot, and the loop over the slots makes no call per page. Returns whether a parent PTE was
/// write-protected. Out of line (one call per PT page): inlined into the page-table walk's
/// loop, its per-PTE loop shared the walk's registers and reloaded its values from the stack.
#[inline(never)]
fn copy_pte_range<A: Arch>(
    ctx: &CopyCtx<'_, A>,
    src: &PageTable<'_, A>,
    dst: &PageTable<'_, A>,
    va: VirtAddr,
    pt: PhysAddr,
    first: usize,
    last: usize,
) -> Result<bool, MmError> {
    // One loop per kind of VMA, with the VMA's answers as constants: the common COW loop of a
    // process that never pinned has no `fork_must_copy` branch and keeps its values in
    // registers (the THP merge's general loop spilled them: fork_per_mib 9590 -> 11899).
    match (ctx.cow, ctx.may_copy) {
        (true, false) => copy_pte_slots::<A, true, false>(ctx, src, dst, va, pt, first, last),
        (true, true) => copy_pte_slots::<A, true, true>(ctx, src, dst, va, pt, first, last),
        (false, _) => copy_pte_slots::<A, false, false>(ctx, src, dst, va, pt, first, last),
    }
}

/// [`copy_pte_range`] for a VMA whose `cow` and `may_copy` are `COW` and `MAY_COPY`.
#[inline(always)]
fn copy_pte_slots<A: Arch, const COW: bool, const MAY_COPY: bool>(
    ctx: &CopyCtx<'_, A>,
    src: &PageTable<'_, A>,
    dst: &PageTable<'_, A>,
    va: VirtAddr,
    pt: PhysAddr,
    first: usize,
    last: usize,
) -> Result<bool, MmError> {
    let metas = ctx.mm.frames().metas();
    // Copied out of `ctx` before the loop: the loop's atomics (acquire-release) forbid the
    // compiler to keep a field read through the reference in a register across them, and the
    // reloads were 4 of fork's ~40 instructions per PTE.
    let keep = !ctx.child_clear;
    let src_slots = src.slots(pt);
    let mut slots = src_slots.range(first, last);
    // The child's PT is allocated at the first mapping slot (a PT of only empty slots in the
    // parent gets none); the loop over the rest then has no allocation check.
    let mut wrprotected = false;
    let (index, dst_slots) = loop {
        let Some((index, slot)) = slots.next() else {
            return Ok(false);
        };
        let pte = slot.load();
        if pte.is_mapping() {
            // Any address of the PT's 2 MiB names the child's PT for the same span.
            let dst_slots = dst.slots(dst.walk_alloc_pt(va).ok_or(MmError::NoMem)?);
            mark(ForkTables);
            let meta = &metas[pte.frame().pfn()];
            copy_present_pte::<A, COW, MAY_COPY>(
                ctx,
                meta,
                (slot, dst_slots.at(index)),
                pte,
                keep,
                &mut wrprotected,
            )?;
            break (index, dst_slots);
        }
    };
    // The rest of the range as pairs of parent and child slots, one bounds check for both.
    for (slot, dst) in src_slots.pairs(dst_slots, index + 1, last) {
        let pte = slot.load();
        if !pte.is_mapping() {
            continue;
        }
        let meta = &metas[pte.frame().pfn()];
        copy_present_pte::<A, COW, MAY_COPY>(ctx, meta, (slot, dst), pte, keep, &mut wrprotected)?;
    }
    mark(ForkPtes);
    Ok(wrprotected)
}

/// Gives the child (slot `dst`) a mapping of the page (`meta`) the parent maps with `pte` in
/// slot `src` (Linux `copy_present_pte`); sets `wrprotected` if the parent's PTE was
/// write-protected. `keep` is `!child_clear` of the VMA. `inline(always)`: the body of
/// `copy_pte_range`'s per-page loop; the rare copy for a pinned page is out of line so the
/// common path keeps its values in registers.
#[inline(always)]
fn copy_present_pte<A: Arch, const COW: bool, const MAY_COPY: bool>(
    ctx: &CopyCtx<'_, A>,
    meta: &FrameMeta,
    (src, dst): (PteRef<'_>, PteRef<'_>),
    pte: Pte,
    keep: u64,
    wrprotected: &mut bool,
) -> Result<(), MmError> {
    let flags = meta.flags();
    // Without `MAY_COPY` the `ANON` test is left out: `ANON_EXCLUSIVE` implies `ANON` (the
    // checker's invariant), so for a page that is not anonymous the exclusive branch below
    // finds the bit clear and does nothing. 2 instructions per PTE.
    if COW && (!MAY_COPY || flags.contains(FrameFlags::ANON)) {
        let exclusive = flags.contains(FrameFlags::ANON_EXCLUSIVE);
        if MAY_COPY
            && rules::fork_must_copy(
                ctx.era,
                ctx.has_pinned,
                exclusive,
                ctx.mm.frames().folio_maybe_dma_pinned(meta),
            )
        {
            return copy_present_page(ctx, dst, pte);
        }
        // lab(cow): begin
        // lab(cow): stub: let _ = exclusive;
        if exclusive {
            // Linux `page_try_dup_anon_rmap`: from now on two processes map it.
            meta.clear_flags(FrameFlags::ANON_EXCLUSIVE);
        }
        // lab(cow): end
    }
    // Linux `folio_dup_file_rmap_pte`/`folio_try_dup_anon_rmap_pte`: the reference is the
    // folio's (a subpage of a PTE-mapped THP takes it on the head), tested on the flags
    // already loaded so a small page pays one bit test.
    if flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
        dup_folio_mapping(ctx.mm, meta);
    } else {
        Mm::<A>::dup_small_mapping(meta);
    }
    if COW && pte.is_writable() {
        src.clear_bits(Pte::WRITABLE);
        *wrprotected = true;
    }
    dst.store(Pte::from_raw(pte.raw() & keep));
    Ok(())
}

/// The mapping's reference on a subpage of a PTE-mapped large folio goes to the head. Out of
/// line: the head lookup would otherwise take registers from the small-page loop.
#[cold]
#[inline(never)]
fn dup_folio_mapping<A: Arch>(mm: &Mm<A>, meta: &FrameMeta) {
    mm.dup_mapping_meta(meta);
}

/// Linux `copy_present_page`: the child gets a private copy of a page that may be under DMA;
/// the parent's PTE and page (and the DMA into it) are untouched.
#[cold]
#[inline(never)]
fn copy_present_page<A: Arch>(
    ctx: &CopyCtx<'_, A>,
    dst: PteRef<'_>,
    pte: Pte,
) -> Result<(), MmError> {
    let mm = ctx.mm;
    let new = mm
        .alloc_anon_page(Some(pte.frame()))
        .ok_or(MmError::NoMem)?;
    let mut bits = ctx.page_prot | Pte::ACCESSED | Pte::DIRTY | Pte::SOFT_DIRTY;
    if ctx.writable && pte.is_present() {
        bits |= Pte::WRITABLE;
    }
    dst.store(Pte::new(new, bits));
    stats::inc(&mm.counters.fork_pinned_copies);
    Ok(())
}
