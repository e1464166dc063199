//! The debug invariant checker (SEMANTICS.md section 1), run by tests after every operation.
//!
//! Picture: the frame metadata is a summary of the page tables, kept up to date incrementally on
//! every fault, fork and unmap. The checker recomputes that summary from scratch — walking every
//! page table of every live address space — and compares, then checks the rules that make COW
//! safe: `refcount >= mapcount + pincount`; `ANON_EXCLUSIVE` implies `ANON` and at most one
//! mapping; a writable PTE of a COW mapping maps an exclusive page; the zero page is all zeros
//! and never exclusive or writable; under the 2022+ rules a pinned, mapped anon page is
//! exclusive; a shmem cache page is neither anon nor unreferenced by its cache, and shared
//! mappings map no anon page; no PTE lies outside a VMA or grants more than it; the kernel half is never
//! user-accessible; and free plus in-use frames add up to the usable frames. O(frames + PTEs):
//! for tests and debug builds, never the fast path.

#![deny(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec;

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::era::Era;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::pagetable::{Pte, KERNEL_PML4_START};

/// Checks every invariant over the frame table and the address spaces in `spaces`, which must
/// be *all* live address spaces (mapcounts are recomputed from them). Returns the first
/// violation found, described.
pub fn check_invariants<A: Arch>(mm: &Mm<A>, spaces: &[&AddressSpace]) -> Result<(), String> {
    let frames = mm.frames();
    let mut mapcount = vec![0u32; frames.len()];
    let mut table_owner = vec![false; frames.len()];
    // PMD mappings per folio head (`huge_memory.rs`).
    let mut entire = vec![0u32; frames.len()];
    for (n, aspace) in spaces.iter().enumerate() {
        check_space(mm, n, aspace, &mut mapcount, &mut table_owner)?;
        check_huge_pmds(mm, n, aspace, &mut entire, &mut table_owner)?;
    }

    let era = mm.era();
    let (mut free, mut in_use, mut anon, mut tables) = (0usize, 0usize, 0u64, 0u64);
    let mut shmem = 0u64;
    for (frame, meta) in frames.iter() {
        let pfn = frame.pfn();
        let flags = meta.flags();
        let mapped = mapcount[pfn];
        if flags.contains(FrameFlags::FREE) || flags.contains(FrameFlags::RESERVED) {
            if mapped != 0 || table_owner[pfn] {
                return Err(format!(
                    "frame {frame:#x} is free or reserved but mapped by {mapped} PTEs or used as a page table"
                ));
            }
            if flags.contains(FrameFlags::FREE) {
                free += 1;
                if meta.refcount() != 0 || meta.pincount() != 0 {
                    return Err(format!("free frame {frame:#x} has references or pins"));
                }
            }
            continue;
        }
        in_use += 1;
        let (refs, maps, pins) = (meta.refcount(), meta.mapcount(), meta.pincount());
        if maps != mapped {
            return Err(format!(
                "frame {frame:#x} ({flags:?}): mapcount {maps} but {mapped} PTEs map it"
            ));
        }
        if flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
            check_large_subpage(mm, frame, &mapcount, &entire)?;
            // hugetlb folios are the pool's, not counted as anon memory (as Linux's AnonPages).
            if flags.contains(FrameFlags::ANON) && !flags.contains(FrameFlags::HUGETLB) {
                anon += 1;
            }
            continue;
        }
        if entire[pfn] != 0 {
            return Err(format!("a PMD maps {frame:#x}, which is no large folio"));
        }
        if refs < 1 || u64::from(refs) < u64::from(maps) + u64::from(pins) {
            return Err(format!(
                "frame {frame:#x}: refcount {refs} < mapcount {maps} + pincount {pins}"
            ));
        }
        if flags.contains(FrameFlags::ANON_EXCLUSIVE)
            && (!flags.contains(FrameFlags::ANON) || maps > 1)
        {
            return Err(format!(
                "frame {frame:#x}: ANON_EXCLUSIVE with flags {flags:?} and mapcount {maps}"
            ));
        }
        if flags.contains(FrameFlags::ANON) {
            anon += 1;
            if era >= Era::Y2022
                && pins > 0
                && maps > 0
                && !flags.contains(FrameFlags::ANON_EXCLUSIVE)
            {
                return Err(format!(
                    "frame {frame:#x}: pinned anon page mapped in a private mapping is not exclusive"
                ));
            }
        }
        if flags.contains(FrameFlags::SHMEM) {
            shmem += 1;
            if flags.intersects(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE)
                || !flags.contains(FrameFlags::PAGECACHE)
            {
                return Err(format!("shmem cache page {frame:#x} has flags {flags:?}"));
            }
            if u64::from(refs) < 1 + u64::from(maps) + u64::from(pins) {
                return Err(format!(
                    "shmem cache page {frame:#x}: refcount {refs} does not cover the cache, \
                     {maps} mappings and {pins} pins"
                ));
            }
        }
        if flags.contains(FrameFlags::PAGETABLE) {
            tables += 1;
            if !table_owner[pfn] {
                return Err(format!(
                    "page-table page {frame:#x} belongs to no address space (leak)"
                ));
            }
        } else if table_owner[pfn] {
            return Err(format!(
                "frame {frame:#x} is used as a page table without the PAGETABLE flag"
            ));
        }
        if flags.contains(FrameFlags::ZERO) {
            if frame != mm.zero_page() || flags.contains(FrameFlags::ANON_EXCLUSIVE) {
                return Err(format!("bad zero page {frame:#x} with flags {flags:?}"));
            }
            if u64::from(refs) < 1 + u64::from(maps) + u64::from(pins) {
                return Err("the zero page lost the Mm's own reference".into());
            }
            if !mm.zero_page_is_zeroed() {
                return Err("the zero page was written".into());
            }
        }
    }
    if free != frames.free_frames() {
        return Err(format!(
            "{free} frames are marked free but the free list counts {}",
            frames.free_frames()
        ));
    }
    if free + in_use != frames.usable_frames() {
        return Err(format!(
            "free {free} + in use {in_use} != usable {}",
            frames.usable_frames()
        ));
    }
    let stats = mm.stats();
    if stats.shmem_pages != shmem {
        return Err(format!(
            "counters: shmem_pages {} but {shmem} frames are in shmem caches",
            stats.shmem_pages
        ));
    }
    if stats.anon_pages != anon || stats.pagetable_pages != tables {
        return Err(format!(
            "counters: anon_pages {} (table says {anon}), pagetable_pages {} (tables {tables})",
            stats.anon_pages, stats.pagetable_pages
        ));
    }
    Ok(())
}

/// Walks one address space: its tables, its PTEs against its VMAs, and counts mappings.
fn check_space<A: Arch>(
    mm: &Mm<A>,
    n: usize,
    aspace: &AddressSpace,
    mapcount: &mut [u32],
    table_owner: &mut [bool],
) -> Result<(), String> {
    let pt = aspace.page_table(mm);
    let mut err = None;
    pt.for_each_table(&mut |table, level, base| {
        let pfn = table.pfn();
        // Tables are allocated only for addresses inside VMAs, and every unmap frees the
        // tables its range leaves empty: a table whose span meets no VMA is a leak.
        let span_end = base + crate::pagetable::level_span(level) * 512;
        if level < 4 && err.is_none() && !aspace.overlaps(base, span_end) {
            err = Some(format!(
                "page-table page {table:#x} (level {level}, {base:#x}..{span_end:#x}) covers \
                 no VMA: it should have been freed when its range was unmapped"
            ));
        }
        if table_owner[pfn] && err.is_none() {
            err = Some(format!(
                "page-table page {table:#x} (level {level}) reachable twice"
            ));
        }
        table_owner[pfn] = true;
        if level < 4 && err.is_none() {
            for i in 0..512 {
                let e = pt.table_entry(table, i);
                if level > 1
                    && e.is_present()
                    && !((level == 2 || level == 3) && e.has(Pte::HUGE))
                    && e.flags() & !Pte::ACCESSED != Pte::TABLE_FLAGS
                {
                    err = Some(format!(
                        "intermediate entry {e:?} in {table:#x} is not a plain user table entry"
                    ));
                }
            }
        }
    });
    if let Some(e) = err {
        return Err(format!("address space {n}: {e}"));
    }
    // A VMA is counted as a writer of its shmem object exactly when it is a shared mapping
    // that may write (what `F_SEAL_WRITE` relies on).
    for vma in aspace.vmas() {
        let writer = vma.sharing() == crate::vma::Sharing::Shared
            && vma.flags().contains(crate::vma::VmaFlags::MAYWRITE)
            && matches!(vma.backing(), crate::vma::Backing::Shmem(..));
        if vma.write_hold.is_some() != writer {
            return Err(format!(
                "address space {n}: VMA {:#x}..{:#x} ({:?}, {:?}) writable-mapping hold {} \
                 but it is {}a shared writer",
                vma.start().as_u64(),
                vma.end().as_u64(),
                vma.sharing(),
                vma.flags(),
                vma.write_hold.is_some(),
                if writer { "" } else { "not " }
            ));
        }
    }
    for i in 0..512 {
        let e = pt.root_entry(i);
        if i >= KERNEL_PML4_START {
            if e.has(Pte::USER) {
                return Err(format!(
                    "address space {n}: kernel PML4 entry {i} is user-accessible"
                ));
            }
            let expected = mm.kernel_template().map_or(Pte::EMPTY, |t| {
                crate::pagetable::PageTable::new(mm, t).root_entry(i)
            });
            if e.without(Pte::ACCESSED) != expected.without(Pte::ACCESSED) {
                return Err(format!(
                    "address space {n}: kernel PML4 entry {i} differs from the template"
                ));
            }
        }
    }

    let resident = crate::rss::resident_in(mm, &pt, VirtAddr::zero(), VirtAddr::new(USER_END));
    if aspace.rss_pages() != resident {
        return Err(format!(
            "address space {n}: rss counter {} but {resident} resident pages mapped",
            aspace.rss_pages()
        ));
    }
    let zero = mm.zero_page();
    let mut result = Ok(());
    pt.for_each_leaf(
        VirtAddr::zero(),
        VirtAddr::new(USER_END),
        &mut |va, slot| {
            let pte = slot.load();
            if result.is_err() || pte.is_empty() {
                return;
            }
            result = check_pte(mm, aspace, va, pte, zero)
                .map_err(|e| format!("address space {n}, {va:#x}: {e}"));
            if pte.is_mapping() {
                mapcount[pte.frame().pfn()] += 1;
            }
        },
    );
    result
}

fn check_pte<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    va: VirtAddr,
    pte: Pte,
    zero: PhysAddr,
) -> Result<(), String> {
    if !pte.is_mapping() {
        return Err(format!("non-empty entry {pte:?} that maps nothing"));
    }
    let vma = aspace
        .find_vma(va)
        .ok_or_else(|| format!("PTE {pte:?} outside any VMA"))?;
    let meta = mm.frames().meta(pte.frame());
    if meta.is_free() || meta.is_reserved() {
        return Err(format!("PTE {pte:?} maps a free or reserved frame"));
    }
    let prot = vma.prot();
    if pte.is_present() != prot.accessible() {
        return Err(format!(
            "PTE {pte:?} presence disagrees with VMA protection {prot:?}"
        ));
    }
    if pte.is_present() {
        if !pte.has(Pte::USER) {
            return Err(format!("user PTE {pte:?} without USER"));
        }
        if pte.is_writable() && !prot.write() {
            return Err(format!("writable PTE {pte:?} in a VMA without PROT_WRITE"));
        }
        if pte.has(Pte::NO_EXECUTE) == prot.exec() {
            return Err(format!(
                "PTE {pte:?} NX bit disagrees with VMA protection {prot:?}"
            ));
        }
    }
    if pte.frame() == zero && pte.is_writable() {
        return Err("the zero page is mapped writable".into());
    }
    if vma.sharing() == crate::vma::Sharing::Shared && meta.test(FrameFlags::ANON) {
        return Err(format!("shared mapping maps the anon page {pte:?}"));
    }
    if vma.is_cow_mapping() && pte.is_writable() && !meta.test(FrameFlags::ANON_EXCLUSIVE) {
        return Err(format!(
            "writable PTE {pte:?} of a COW mapping maps a non-exclusive page"
        ));
    }
    Ok(())
}

/// The PMD leaves of one address space (`huge_memory.rs`): each maps the head of a large anon
/// folio, 2 MiB aligned, inside one private anonymous VMA, with the VMA's protection, writable
/// only if the folio is exclusive; each has one deposited page table. Counts them per head.
fn check_huge_pmds<A: Arch>(
    mm: &Mm<A>,
    n: usize,
    aspace: &AddressSpace,
    entire: &mut [u32],
    table_owner: &mut [bool],
) -> Result<(), String> {
    let pt = aspace.page_table(mm);
    let mut leaves = 0usize;
    let mut hugetlb_leaves = 0usize;
    let mut result = Ok(());
    pt.for_each_huge_pmd(VirtAddr::zero(), VirtAddr::new(USER_END), &mut |va, pmd| {
        leaves += 1;
        if result.is_err() {
            return;
        }
        let head = pmd.frame();
        let flags = mm.frames().meta(head).flags();
        let end = va.as_u64() + crate::folio::HPAGE_PMD_SIZE;
        let vma = aspace.find_vma(va);
        if flags.contains(FrameFlags::HUGETLB) {
            hugetlb_leaves += 1;
            entire[head.pfn()] += 1;
            result = check_hugetlb_pmd(pmd, flags, vma, end)
                .map_err(|e| format!("address space {n}, {va:#x}: {e}"));
            return;
        }
        let huge_zero = flags.contains(FrameFlags::HEAD | FrameFlags::ZERO);
        result = if huge_zero {
            // The huge zero folio: never writable, never anon, in a private anon VMA.
            if pmd.is_writable() || flags.intersects(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE)
            {
                Err(format!(
                    "huge zero PMD {pmd:?} is writable or anon ({flags:?})"
                ))
            } else {
                Ok(())
            }
        } else if !flags.contains(FrameFlags::HEAD | FrameFlags::ANON) {
            Err(format!(
                "PMD {pmd:?} maps {head:#x}, not a large anon folio"
            ))
        } else if !vma.is_some_and(|v| {
            v.is_anonymous()
                && v.sharing() == crate::vma::Sharing::Private
                && v.end().as_u64() >= end
        }) {
            Err(format!("PMD {pmd:?} not inside one private anon VMA"))
        } else if vma.is_some_and(|v| pmd.is_present() != v.prot().accessible()) {
            Err(format!("PMD {pmd:?} presence disagrees with its VMA"))
        } else if pmd.is_writable()
            && (!flags.contains(FrameFlags::ANON_EXCLUSIVE)
                || !vma.is_some_and(|v| v.prot().write()))
        {
            Err(format!(
                "writable PMD {pmd:?} of a non-exclusive folio or R/O VMA"
            ))
        } else {
            Ok(())
        }
        .map_err(|e| format!("address space {n}, {va:#x}: {e}"));
        entire[head.pfn()] += 1;
    });
    result?;
    // PUD leaves: 1 GiB hugetlb pages, under the same rules as hugetlb PMDs.
    let mut result = Ok(());
    pt.for_each_huge_pud(VirtAddr::zero(), VirtAddr::new(USER_END), &mut |va, pud| {
        if result.is_err() {
            return;
        }
        let head = pud.frame();
        let flags = mm.frames().meta(head).flags();
        let end = va.as_u64() + crate::pagetable::HPAGE_PUD_SIZE;
        entire[head.pfn()] += 1;
        result = if !flags.contains(FrameFlags::HUGETLB)
            || mm.frames().folio_order(head) != crate::frame::GIGANTIC_ORDER
        {
            Err(format!("PUD {pud:?} maps no 1 GiB hugetlb folio"))
        } else {
            check_hugetlb_pmd(pud, flags, aspace.find_vma(va), end)
        }
        .map_err(|e| format!("address space {n}, {va:#x}: {e}"));
    });
    result?;
    let mut deposits = 0usize;
    crate::huge_memory::deposited(mm, &aspace.shared, &mut |t| {
        deposits += 1;
        table_owner[t.pfn()] = true;
    });
    if deposits + hugetlb_leaves != leaves {
        return Err(format!(
            "address space {n}: {leaves} PMD leaves but {deposits} deposited page tables"
        ));
    }
    Ok(())
}

/// A hugetlb PMD leaf (`hugetlb.rs`): the head of a hugetlb folio, inside one hugetlb VMA,
/// with its protection; writable only where the VMA may write and, in a private mapping, only
/// an exclusive anon folio. No deposit: hugetlb PMDs are never split.
fn check_hugetlb_pmd(
    pmd: crate::pagetable::Pte,
    flags: FrameFlags,
    vma: Option<&crate::vma::Vma>,
    end: u64,
) -> Result<(), String> {
    let Some(vma) = vma.filter(|v| v.is_hugetlb() && v.end().as_u64() >= end) else {
        return Err(format!("hugetlb PMD {pmd:?} not inside one hugetlb VMA"));
    };
    if !flags.contains(FrameFlags::HEAD) {
        return Err(format!("hugetlb PMD {pmd:?} maps no folio head"));
    }
    if pmd.is_present() != vma.prot().accessible() {
        return Err(format!(
            "hugetlb PMD {pmd:?} presence disagrees with its VMA"
        ));
    }
    let private = vma.sharing() == crate::vma::Sharing::Private;
    if pmd.is_writable()
        && (!vma.prot().write() || (private && !flags.contains(FrameFlags::ANON_EXCLUSIVE)))
    {
        return Err(format!(
            "writable hugetlb PMD {pmd:?} of a shared folio or R/O VMA"
        ));
    }
    Ok(())
}

/// A frame of a large folio: its counts against the PTEs and PMDs that map it (the folio
/// layout of `folio.rs`), checked once per folio at the head.
fn check_large_subpage<A: Arch>(
    mm: &Mm<A>,
    frame: PhysAddr,
    mapcount: &[u32],
    entire: &[u32],
) -> Result<(), String> {
    let frames = mm.frames();
    let head = frames.folio_head(frame);
    let hmeta = frames.meta(head);
    if !hmeta.test(FrameFlags::HEAD) {
        return Err(format!(
            "tail {frame:#x} links to {head:#x}, which is no folio head"
        ));
    }
    let meta = frames.meta(frame);
    let flags = meta.flags();
    let pmds = entire[head.pfn()];
    let page_maps = meta.mapcount() + pmds;
    let pins = hmeta.pincount();
    if flags.contains(FrameFlags::ANON_EXCLUSIVE) && page_maps > 1 {
        return Err(format!(
            "subpage {frame:#x}: ANON_EXCLUSIVE but mapped {page_maps} times"
        ));
    }
    if mm.era() >= Era::Y2022
        && pins > 0
        && page_maps > 0
        && flags.contains(FrameFlags::ANON)
        && !flags.contains(FrameFlags::ANON_EXCLUSIVE)
    {
        return Err(format!(
            "subpage {frame:#x} of a pinned folio is mapped but not exclusive"
        ));
    }
    if frame != head {
        return Ok(());
    }
    if frames.entire_mapcount(head) != pmds {
        return Err(format!(
            "folio {head:#x}: entire mapcount {} but {pmds} PMDs map it",
            frames.entire_mapcount(head)
        ));
    }
    let ptes: u64 = (0..frames.folio_nr(head))
        .map(|i| u64::from(mapcount[head.pfn() + i]))
        .sum();
    let refs = hmeta.refcount();
    // A free hugetlb folio sits in the pool with no reference at all.
    let min = u32::from(!hmeta.test(FrameFlags::HUGETLB));
    if refs < min || u64::from(refs) < ptes + u64::from(pmds) + u64::from(pins) {
        return Err(format!(
            "folio {head:#x}: refcount {refs} < {ptes} PTEs + {pmds} PMDs + {pins} pins"
        ));
    }
    Ok(())
}
