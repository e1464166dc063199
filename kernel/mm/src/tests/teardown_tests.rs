//! Teardown, page-table freeing, and the test infrastructure's own checks.

use super::*;
use crate::arch::Arch;
use crate::pin::pin_user_page;

#[test]
fn exit_returns_every_frame() {
    let env = Env::new();
    let mut s = env.space();
    // Pages spread over several PTs, PDs and PDPTs.
    let addrs = [BASE, BASE + (2 << 20), BASE + (1 << 30), 0x7f00_0000_0000];
    for (i, &a) in addrs.iter().enumerate() {
        let va = s
            .mmap(
                &env.mm,
                VirtAddr::new(a),
                2 * PAGE_SIZE,
                Prot::RW,
                MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
            )
            .unwrap();
        env.write(&mut s, va, i as u64).unwrap();
        env.read(&mut s, va + PAGE).unwrap();
    }
    let child = s.fork(&env.mm).unwrap();
    env.check(&[&s, &child]);
    assert!(env.mm.stats().pagetable_pages > 2);
    env.finish(std::vec![s, child]);
    let st = env.mm.stats();
    assert_eq!(
        (st.anon_pages, st.pagetable_pages, st.zero_page_mappings),
        (0, 0, 0)
    );
    assert_eq!(env.mm.frames().meta(env.mm.zero_page()).refcount(), 1);
}

#[test]
fn exit_while_pinned_frees_page_at_unpin() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 9).unwrap();
    let pin = pin_user_page(&env.mm, &mut s, va).unwrap();
    s.exit(&env.mm);
    env.check(&[]);
    let mut b = [0u8; 8];
    pin.dma_read(&env.mm, 0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 9, "the pin keeps the page alive");
    assert_eq!(env.mm.frames().free_frames(), env.baseline - 1);
    pin.unpin(&env.mm);
    env.finish(std::vec![]);
}

#[test]
fn munmap_frees_empty_page_tables() {
    let env = Env::new();
    let mut s = env.space();
    let tables = env.mm.stats().pagetable_pages;
    assert_eq!(tables, 1, "just the root");
    let va = env.map(&mut s, 0, 1, Prot::RW);
    let far = VirtAddr::new(0x7000_0000_0000);
    s.mmap(
        &env.mm,
        far,
        PAGE_SIZE,
        Prot::RW,
        MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
    )
    .unwrap();
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, far, 1).unwrap();
    assert_eq!(env.mm.stats().pagetable_pages, 1 + 3 + 3);
    s.munmap(&env.mm, far, PAGE_SIZE).unwrap();
    env.check(&[&s]);
    assert_eq!(
        env.mm.stats().pagetable_pages,
        1 + 3,
        "PT, PD and PDPT of `far` freed"
    );
    assert!(!s
        .page_table(&env.mm)
        .root_entry(far.table_index(4))
        .is_present());
    // A partially used PT is kept.
    let va2 = env.map(&mut s, PAGE, 1, Prot::RW);
    env.write(&mut s, va2, 2).unwrap();
    s.munmap(&env.mm, va, PAGE_SIZE).unwrap();
    assert_eq!(env.mm.stats().pagetable_pages, 1 + 3);
    s.madvise(&env.mm, va2, PAGE_SIZE, crate::madvise::Advice::DontNeed)
        .unwrap();
    assert_eq!(env.mm.stats().pagetable_pages, 1);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn missing_tlb_flush_is_detected() {
    // Write-protect a PTE behind the memory manager's back and drop the flush token: the
    // emulated TLB keeps the writable translation, the emulated CPU writes through it like real
    // hardware would, and the coherence check names the problem.
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let pt = s.page_table(&env.mm);
    let flush = pt.change_protection(va, va + PAGE, &mut |_, p| p.without(Pte::WRITABLE));
    assert!(!flush.is_empty());
    flush.forget();
    let roots = [s.root()];
    let err = env
        .mm
        .arch()
        .tlb()
        .check_coherent(&env.mm, &roots)
        .unwrap_err();
    assert!(err.contains("a TLB flush is missing"), "{err}");
    let faults = s.minor_faults();
    env.write(&mut s, va, 2).unwrap();
    assert_eq!(
        s.minor_faults(),
        faults,
        "the stale entry let the write through"
    );
    // With the flush, the write faults (and reuses the exclusive page).
    env.mm.arch().flush_page(s.root(), va);
    env.mm.arch().tlb().check_coherent(&env.mm, &roots).unwrap();
    env.write(&mut s, va, 3).unwrap();
    assert_eq!(s.minor_faults(), faults + 1);
    env.finish(std::vec![s]);
}

#[test]
fn checker_catches_a_broken_invariant() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let frame = env.frame(&s, va);
    let meta = env.mm.frames().meta(frame);
    meta.inc_mapcount();
    let err = crate::check::check_invariants(&env.mm, &[&s]).unwrap_err();
    assert!(err.contains("mapcount 2 but 1 PTEs map it"), "{err}");
    meta.dec_mapcount();
    meta.clear_flags(FrameFlags::ANON_EXCLUSIVE);
    let err = crate::check::check_invariants(&env.mm, &[&s]).unwrap_err();
    assert!(err.contains("non-exclusive"), "{err}");
    meta.set_flags(FrameFlags::ANON_EXCLUSIVE);
    env.check(&[&s]);
    // Forgetting an address space shows up as leaked page tables.
    let err = crate::check::check_invariants(&env.mm, &[]).unwrap_err();
    assert!(err.contains("leak"), "{err}");
    env.finish(std::vec![s]);
}

#[test]
fn emulated_mmu_sets_accessed_and_dirty_bits() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let pt = s.page_table(&env.mm);
    let slot = pt.walk(va).unwrap();
    slot.clear_bits(Pte::ACCESSED | Pte::DIRTY);
    env.mm.arch().flush_page(s.root(), va);
    env.read(&mut s, va).unwrap();
    let p = slot.load();
    assert!(p.has(Pte::ACCESSED) && !p.is_dirty());
    env.write(&mut s, va, 2).unwrap();
    assert!(
        slot.load().is_dirty(),
        "a write through a clean TLB entry walks to set D"
    );
    env.finish(std::vec![s]);
}

#[test]
fn large_unmap_frees_in_batches_after_flushing() {
    // More pages than one MmuGather batch holds: it must flush and free mid-way, and every
    // translation must still be gone (the TLB check) with every frame back.
    let env = Env::with_frames(1024);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 300, Prot::RW);
    for i in 0..300 {
        env.write(&mut s, va + i * PAGE, i).unwrap();
    }
    let free = env.mm.frames().free_frames();
    let (_, full_before) = env.mm.arch().flush_counts();
    s.munmap(&env.mm, va, 300 * PAGE_SIZE).unwrap();
    env.check(&[&s]);
    let (_, full_after) = env.mm.arch().flush_counts();
    assert!(
        full_after > full_before,
        "a 300-page range is flushed whole"
    );
    assert_eq!(
        env.mm.frames().free_frames(),
        free + 300 + 3,
        "pages, PT, PD and PDPT freed"
    );
    // Small ranges are flushed page by page.
    let va = env.map(&mut s, 0, 2, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + PAGE, 1).unwrap();
    let (pages_before, full_before) = env.mm.arch().flush_counts();
    s.mprotect(&env.mm, va, 2 * PAGE_SIZE, Prot::READ).unwrap();
    let (pages_after, full_after) = env.mm.arch().flush_counts();
    assert_eq!(
        (pages_after - pages_before, full_after - full_before),
        (2, 0)
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// A fault that runs out of memory after allocating some of the PDPT/PD/PT it needs leaves
/// empty tables behind (as Linux does); unmapping the range frees them all, and the
/// page-table gauge counts exactly the tables reachable from the roots.
#[test]
fn tables_left_by_an_out_of_memory_fault_are_freed_by_munmap() {
    // Far from BASE so that no other table is shared: every table below the root is new.
    const FAR: u64 = 0x7000_0000_0000;
    for spare in 0..=3 {
        let env = Env::new();
        let mut s = env.space();
        let st = env.mm.stats().pagetable_pages;
        let va = s
            .mmap(
                &env.mm,
                VirtAddr::new(FAR),
                PAGE_SIZE,
                Prot::RW,
                MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
            )
            .unwrap();
        let mut hoard = std::vec::Vec::new();
        while env.mm.frames().free_frames() > spare {
            hoard.push(env.mm.frames().alloc().unwrap());
        }
        assert!(env.write(&mut s, va, 1).is_err(), "{spare} spare frames");
        for f in hoard {
            env.mm.frames().free(f);
        }
        env.check(&[&s]);
        assert_eq!(env.mm.stats().pagetable_pages, st + spare as u64);
        s.munmap(&env.mm, va, PAGE_SIZE).unwrap();
        env.check(&[&s]);
        assert_eq!(
            env.mm.stats().pagetable_pages,
            st,
            "{spare}: empty tables survived munmap"
        );
        // MADV_DONTNEED frees them too, and the next fault rebuilds them.
        let va = env.map(&mut s, 0, 1, Prot::RW);
        env.write(&mut s, va, 2).unwrap();
        let tables = env.mm.stats().pagetable_pages;
        s.madvise(&env.mm, va, PAGE_SIZE, crate::madvise::Advice::DontNeed)
            .unwrap();
        env.check(&[&s]);
        assert_eq!(env.mm.stats().pagetable_pages, st, "{tables} before");
        env.write(&mut s, va, 3).unwrap();
        env.check(&[&s]);
        env.finish(std::vec![s]);
    }
}

/// Exit gives the zero page's mapping counts and references back one subtraction per PT
/// (`PageTable::destroy_pt`), PROT_NONE zero-page mappings included, beside real pages in the
/// same tables: the counts match what the other space still maps, then the baseline.
#[test]
fn exit_gives_back_zero_page_counts_per_table() {
    let env = Env::new();
    let mut s = env.space();
    // 700 pages: one full PT and part of the next.
    let va = env.map(&mut s, 0, 700, Prot::RW);
    for i in 0..700u64 {
        if i % 97 == 0 {
            env.write(&mut s, va + i * PAGE, i).unwrap();
        } else {
            env.read(&mut s, va + i * PAGE).unwrap();
        }
    }
    // Zero-page PTEs made PROTNONE keep their mappings.
    s.mprotect(&env.mm, va + 100 * PAGE, (200 * PAGE) as usize, Prot::NONE)
        .unwrap();
    let child = s.fork(&env.mm).unwrap();
    env.check(&[&s, &child]);
    let zero_ptes = 700 - 700u64.div_ceil(97);
    assert_eq!(env.mm.stats().zero_page_mappings, 2 * zero_ptes);
    s.exit(&env.mm);
    env.check(&[&child]);
    assert_eq!(env.mm.stats().zero_page_mappings, zero_ptes);
    assert_eq!(
        env.mm.frames().meta(env.mm.zero_page()).refcount() as u64,
        1 + zero_ptes
    );
    env.finish(std::vec![child]);
    assert_eq!(env.mm.stats().zero_page_mappings, 0);
    assert_eq!(env.mm.frames().meta(env.mm.zero_page()).refcount(), 1);
}
