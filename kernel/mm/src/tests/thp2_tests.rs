//! Issue 14, second stage (thp2): the huge zero folio, folio splits, MADV_COLLAPSE.

use alloc::vec;
use alloc::vec::Vec;

use super::{Env, ANON, BASE, PAGE};
use crate::addr::{PhysAddr, VirtAddr};
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::folio::{HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::foll::FollFlags;
use crate::frame::FrameFlags;
use crate::madvise::Advice;
use crate::pagemap::{PM_PFRAME_MASK, PM_PRESENT};
use crate::vma::Prot;

use super::thp_tests::{env, map_huge, pmd};

/// Takes every free 2 MiB block, so that THP allocations fail until [`give_back`].
fn take_all_blocks(env: &Env) -> Vec<PhysAddr> {
    let mut held = Vec::new();
    while let Some(b) = env.mm.frames().alloc_block(true) {
        // Each frame as a kernel allocation holding one reference (for the checker).
        for i in 1..HPAGE_PMD_NR {
            env.mm.frames().meta(b + i as u64 * PAGE).get();
        }
        held.push(b);
    }
    held
}

fn give_back(env: &Env, held: Vec<PhysAddr>) {
    for b in held {
        for i in 1..HPAGE_PMD_NR {
            let m = env.mm.frames().meta(b + i as u64 * PAGE);
            m.refcount.store(0, core::sync::atomic::Ordering::Relaxed);
        }
        env.mm.frames().free_block(b);
    }
}

#[test]
fn huge_zero_read_fault_maps_one_shared_read_only_pmd_freed_with_its_last_mapping() {
    let env = env();
    let mut a = env.space();
    let mut b = env.space();
    let va = map_huge(&env, &mut a, 2);
    map_huge(&env, &mut b, 2);
    assert_eq!(env.read(&mut a, va + 7 * PAGE), Ok(0));
    assert_eq!(env.read(&mut b, va + 300 * PAGE), Ok(0));
    let (pa, pb) = (pmd(&env, &a, va).unwrap(), pmd(&env, &b, va).unwrap());
    assert_eq!(pa.frame(), pb.frame(), "one huge zero folio for both");
    assert!(!pa.is_writable() && !pb.is_writable());
    let head = pa.frame();
    assert!(head.pfn().is_multiple_of(HPAGE_PMD_NR));
    assert!(env.mm.frames().is_huge_zero(head + 511 * PAGE));
    assert!(!env.flags(head).contains(FrameFlags::ANON));
    let st = env.mm.stats();
    assert_eq!(
        (st.thp_zero_page_alloc, st.huge_zero_mappings, st.anon_pages),
        (1, 2, 0),
        "allocated once, two PMDs, no anon memory"
    );
    assert_eq!(st.thp_fault_alloc, 0);
    // pagemap: present, each subpage's own PFN of the zero folio.
    for i in [0u64, 1, 255, 511] {
        let w = a.pagemap_entry(&env.mm, va + i * PAGE);
        assert!(w & PM_PRESENT != 0);
        assert_eq!(w & PM_PFRAME_MASK, (head.pfn() as u64) + i);
    }
    // Not counted as anon memory or AnonHugePages (as the small zero page).
    let smaps = a.smaps(&env.mm);
    assert!(smaps.values().all(|c| c.anon_huge == 0 && c.rss == 0));
    env.check(&[&a, &b]);
    a.munmap(&env.mm, va, 2 << 20).unwrap();
    assert_eq!(env.mm.stats().huge_zero_mappings, 1);
    assert!(env.mm.frames().is_huge_zero(head), "b still maps it");
    let free = env.mm.frames().free_frames();
    b.munmap(&env.mm, va, 2 << 20).unwrap();
    assert_eq!(env.mm.stats().huge_zero_mappings, 0);
    assert!(
        !env.mm.frames().is_huge_zero(head),
        "the last mapping freed the folio"
    );
    assert!(env.mm.frames().free_frames() >= free + HPAGE_PMD_NR);
    // A new read fault allocates it again.
    map_huge(&env, &mut a, 2);
    assert_eq!(env.read(&mut a, va), Ok(0));
    assert_eq!(env.mm.stats().thp_zero_page_alloc, 2);
    env.check(&[&a, &b]);
    env.finish(vec![a, b]);
}

#[test]
fn use_zero_page_off_gives_a_read_fault_a_writable_thp() {
    let env = env();
    env.mm.thp().set_use_zero_page(false);
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    assert_eq!(env.read(&mut s, va), Ok(0));
    let p = pmd(&env, &s, va).unwrap();
    assert!(p.is_writable() && !env.mm.frames().is_huge_zero(p.frame()));
    assert_eq!(env.mm.stats().thp_zero_page_alloc, 0);
    env.finish(vec![s]);
}

#[test]
fn write_on_the_huge_zero_page_maps_a_new_thp_or_small_pages_without_a_block() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 4);
    assert_eq!(env.read(&mut s, va), Ok(0));
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE), Ok(0));
    let zero = pmd(&env, &s, va).unwrap().frame();
    // A block is free: the write replaces the zero folio by a zeroed exclusive THP.
    env.write(&mut s, va + 9 * PAGE, 99).unwrap();
    let p = pmd(&env, &s, va).expect("still one PMD");
    assert!(p.is_writable() && p.frame() != zero);
    assert!(env
        .flags(p.frame())
        .contains(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(env.read(&mut s, va + 9 * PAGE), Ok(99));
    assert_eq!(env.read(&mut s, va + 10 * PAGE), Ok(0));
    assert_eq!(
        env.mm.stats().huge_zero_mappings,
        1,
        "the second 2 MiB keeps it"
    );
    env.check(&[&s]);
    // No block free: the second write splits into small zero-page PTEs and copies 4 KiB.
    let held = take_all_blocks(&env);
    let zero_maps = env.mm.stats().zero_page_mappings;
    env.write(&mut s, va + HPAGE_PMD_SIZE + 3 * PAGE, 33)
        .unwrap();
    assert!(pmd(&env, &s, va + HPAGE_PMD_SIZE).is_none(), "split");
    let st = env.mm.stats();
    assert_eq!(
        st.zero_page_mappings,
        zero_maps + 511,
        "511 small zero PTEs"
    );
    assert_eq!(st.huge_zero_mappings, 0);
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE + 3 * PAGE), Ok(33));
    assert_eq!(
        env.frame(&s, va + HPAGE_PMD_SIZE + 4 * PAGE),
        env.mm.zero_page()
    );
    assert!(!env.mm.frames().is_huge_zero(zero), "its last mapping went");
    env.check(&[&s]);
    give_back(&env, held);
    env.finish(vec![s]);
}

#[test]
fn fork_shares_the_huge_zero_pmd_and_each_side_breaks_it_alone() {
    let env = env();
    let mut parent = env.space();
    let va = map_huge(&env, &mut parent, 2);
    assert_eq!(env.read(&mut parent, va), Ok(0));
    let zero = pmd(&env, &parent, va).unwrap().frame();
    let mut child = parent.fork(&env.mm).unwrap();
    assert_eq!(pmd(&env, &child, va).unwrap().frame(), zero);
    assert_eq!(env.mm.stats().huge_zero_mappings, 2);
    env.check(&[&parent, &child]);
    env.write(&mut child, va + PAGE, 7).unwrap();
    assert_ne!(pmd(&env, &child, va).unwrap().frame(), zero);
    assert_eq!(pmd(&env, &parent, va).unwrap().frame(), zero);
    assert_eq!(env.read(&mut parent, va + PAGE), Ok(0));
    env.check(&[&parent, &child]);
    env.finish(vec![parent, child]);
}

#[test]
fn partial_operations_split_the_huge_zero_pmd_into_small_zero_ptes() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    assert_eq!(env.read(&mut s, va), Ok(0));
    s.mprotect(&env.mm, va + 4 * PAGE, PAGE as usize, Prot::READ)
        .unwrap();
    assert!(pmd(&env, &s, va).is_none());
    assert_eq!(env.mm.stats().zero_page_mappings, 512);
    assert_eq!(env.mm.stats().huge_zero_mappings, 0);
    s.munmap(&env.mm, va + 8 * PAGE, 8 * PAGE as usize).unwrap();
    assert_eq!(env.mm.stats().zero_page_mappings, 504);
    env.check(&[&s]);
    // The small zero PTEs behave as any: a write copies.
    env.write(&mut s, va + 100 * PAGE, 1).unwrap();
    assert_eq!(env.mm.stats().zero_page_mappings, 503);
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn long_term_read_only_pin_unshares_the_huge_zero_page_per_era() {
    for era in [Era::Y2020, Era::Y2023] {
        let env = env();
        env.mm.set_era(era);
        let mut s = env.space();
        let va = map_huge(&env, &mut s, 2);
        assert_eq!(env.read(&mut s, va), Ok(0));
        let zero = pmd(&env, &s, va).unwrap().frame();
        let mut pages = [None];
        crate::gup::pin_user_pages_fast(
            &env.mm,
            &mut s,
            va + 5 * PAGE,
            FollFlags::LONGTERM,
            &mut pages,
        )
        .unwrap();
        let pin = pages[0].take().unwrap();
        let st = env.mm.stats();
        if era == Era::Y2023 {
            assert_eq!(st.gup_fast_pages, 0, "{era}: GUP-fast must fall back");
            assert!(!env.mm.is_zero_frame(pin.frame()), "{era}: unshared");
            assert!(pmd(&env, &s, va).is_none(), "split for the unshare");
            env.write(&mut s, va + 5 * PAGE, 0x5a).unwrap();
            let mut buf = [0u8; 8];
            pin.dma_read(&env.mm, 0, &mut buf);
            assert_eq!(u64::from_le_bytes(buf), 0x5a, "the pin sees the write");
        } else {
            assert_eq!(pin.frame(), zero + 5 * PAGE, "{era}: pins the zero folio");
            env.write(&mut s, va + 5 * PAGE, 0x5a).unwrap();
            let mut buf = [0u8; 8];
            pin.dma_read(&env.mm, 0, &mut buf);
            assert_eq!(u64::from_le_bytes(buf), 0, "{era}: the pin lost the write");
        }
        env.check(&[&s]);
        pin.unpin(&env.mm);
        env.finish(vec![s]);
    }
}

#[test]
fn short_term_read_only_pins_take_the_huge_zero_page_fast() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    assert_eq!(env.read(&mut s, va), Ok(0));
    let zero = pmd(&env, &s, va).unwrap().frame();
    let mut pages = [None, None];
    crate::gup::pin_user_pages_fast(&env.mm, &mut s, va, FollFlags::NONE, &mut pages).unwrap();
    assert_eq!(env.mm.stats().gup_fast_pages, 2);
    assert_eq!(pages[1].as_ref().unwrap().frame(), zero + PAGE);
    // The pin keeps the folio after its mapping went.
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    assert!(env.mm.frames().is_huge_zero(zero));
    env.check(&[&s]);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    assert!(!env.mm.frames().is_huge_zero(zero));
    env.finish(vec![s]);
}

/// A written 2 MiB THP at `va` (one PMD), subpage `i` holding `i`.
fn thp_with_data(env: &Env, s: &mut AddressSpace, mib: u64) -> (VirtAddr, PhysAddr) {
    let va = map_huge(env, s, mib);
    for i in 0..HPAGE_PMD_NR as u64 {
        env.write(s, va + i * PAGE, i).unwrap();
    }
    let head = pmd(env, s, va).expect("a THP").frame();
    (va, head)
}

fn is_small(env: &Env, frame: PhysAddr) -> bool {
    !env.flags(frame)
        .intersects(FrameFlags::HEAD | FrameFlags::TAIL)
}

#[test]
fn partial_munmap_of_a_thp_splits_the_folio_and_frees_the_unmapped_subpages() {
    let env = env();
    let mut s = env.space();
    let (va, head) = thp_with_data(&env, &mut s, 2);
    let free = env.mm.frames().free_frames();
    s.munmap(&env.mm, va + 256 * PAGE, 256 * PAGE as usize)
        .unwrap();
    let st = env.mm.stats();
    assert_eq!(
        (st.thp_split_page, st.anon_thps, st.deferred_split_queued),
        (0, 1, 1),
        "queued, still one folio (a PTE-mapped THP)"
    );
    assert_eq!(env.mm.frames().free_frames(), free, "nothing freed yet");
    assert_eq!(env.mm.deferred_split_scan(), 256, "the shrinker's scan");
    let st = env.mm.stats();
    assert_eq!(
        (
            st.thp_split_page,
            st.anon_thps,
            st.anon_pages,
            st.deferred_split_queued
        ),
        (1, 0, 256, 0),
        "split into small folios"
    );
    // 256 subpages back (the PT the split put in place was the deposit).
    assert_eq!(env.mm.frames().free_frames(), free + 256);
    for i in [0u64, 7, 255] {
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i));
        assert!(is_small(&env, head + i * PAGE));
        assert_eq!(env.mm.frames().meta(head + i * PAGE).refcount(), 1);
        assert!(env.exclusive(&s, va + i * PAGE));
    }
    assert!(env.mm.frames().meta(head + 300 * PAGE).is_free());
    env.check(&[&s]);
    // The small pages behave as any: DONTNEED frees one at once.
    s.madvise(&env.mm, va, PAGE as usize, Advice::DontNeed)
        .unwrap();
    assert!(env.mm.frames().meta(head).is_free());
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn a_pinned_or_referenced_folio_is_not_split_until_released() {
    let env = env();
    let mut s = env.space();
    let (va, head) = thp_with_data(&env, &mut s, 2);
    let pin = crate::pin::pin_user_page(&env.mm, &mut s, va + 3 * PAGE).unwrap();
    let get = crate::pin::get_user_page(&env.mm, &mut s, va + 400 * PAGE).unwrap();
    s.munmap(&env.mm, va + 256 * PAGE, 256 * PAGE as usize)
        .unwrap();
    let st = env.mm.stats();
    assert_eq!(
        (st.thp_split_page, st.anon_thps, st.deferred_split_queued),
        (0, 1, 1)
    );
    assert_eq!(env.mm.deferred_split_scan(), 0, "pinned: not split");
    assert!(!is_small(&env, head + 3 * PAGE), "pinned: still one folio");
    assert_eq!(env.mm.stats().deferred_split_queued, 1, "still queued");
    env.check(&[&s]);
    pin.unpin(&env.mm);
    assert_eq!(
        env.mm.deferred_split_scan(),
        0,
        "the GUP reference still holds it"
    );
    assert_eq!(env.mm.stats().deferred_split_queued, 1);
    // The referenced subpage (unmapped) keeps its data through the reference.
    let mut buf = [0u8; 8];
    get.dma_read(&env.mm, 0, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), 400);
    get.unpin(&env.mm);
    assert_eq!(env.mm.deferred_split_scan(), 256, "the shrinker's scan");
    let st = env.mm.stats();
    assert_eq!(
        (st.thp_split_page, st.anon_thps, st.deferred_split_queued),
        (1, 0, 0)
    );
    assert_eq!(env.read(&mut s, va + 3 * PAGE), Ok(3));
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn a_folio_freed_whole_leaves_the_queue_and_pmd_mapped_folios_are_never_queued() {
    let env = env();
    let mut parent = env.space();
    let (va, _head) = thp_with_data(&env, &mut parent, 2);
    let child = parent.fork(&env.mm).unwrap();
    // The child still maps it by its PMD: the parent's partial unmap queues nothing.
    parent
        .munmap(&env.mm, va + 256 * PAGE, 256 * PAGE as usize)
        .unwrap();
    assert_eq!(env.mm.stats().deferred_split_queued, 0);
    // The child's exit drops the last PMD: now it is partly mapped, queued, split by a scan.
    child.exit(&env.mm);
    assert_eq!(env.mm.stats().deferred_split_queued, 1);
    assert_eq!(env.mm.deferred_split_scan(), 256);
    assert_eq!(env.read(&mut parent, va + 9 * PAGE), Ok(9));
    env.check(&[&parent]);
    // Queued, then freed whole before any scan: it leaves the queue.
    let mut s2 = env.space();
    let va2 = VirtAddr::new(BASE + 8 * HPAGE_PMD_SIZE);
    s2.mmap(
        &env.mm,
        va2,
        2 << 20,
        Prot::RW,
        ANON | crate::mmap::MapFlags::FIXED,
    )
    .unwrap();
    s2.madvise(&env.mm, va2, 2 << 20, Advice::HugePage).unwrap();
    env.write(&mut s2, va2, 1).unwrap();
    let pin = crate::pin::pin_user_page(&env.mm, &mut s2, va2).unwrap();
    s2.munmap(&env.mm, va2 + PAGE, PAGE as usize).unwrap();
    assert_eq!(
        env.mm.stats().deferred_split_queued,
        1,
        "pinned: stays queued"
    );
    s2.munmap(&env.mm, va2, 2 << 20).unwrap();
    pin.unpin(&env.mm);
    assert_eq!(env.mm.stats().deferred_split_queued, 0, "freed whole");
    assert_eq!(env.mm.stats().anon_thps, 0);
    env.check(&[&parent, &s2]);
    env.finish(vec![parent, s2]);
}

/// `mib` MiB at `BASE` filled with small pages (subpage `i` of each 2 MiB holds `i + 1`, every
/// other one left empty when `sparse`), then `MADV_HUGEPAGE`.
fn small_pages(env: &Env, s: &mut AddressSpace, mib: u64, sparse: bool) -> VirtAddr {
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            (mib << 20) as usize,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    for i in 0..(mib << 20) / PAGE {
        if !sparse || i % 2 == 0 {
            env.write(s, va + i * PAGE, i % HPAGE_PMD_NR as u64 + 1)
                .unwrap();
        }
    }
    assert!(pmd(env, s, va).is_none(), "madvise mode: small pages");
    s.madvise(&env.mm, va, (mib << 20) as usize, Advice::HugePage)
        .unwrap();
    va
}

#[test]
fn madv_collapse_copies_512_small_pages_into_one_thp_and_frees_them() {
    let env = env();
    let mut s = env.space();
    let va = small_pages(&env, &mut s, 4, true);
    let free = env.mm.frames().free_frames();
    // One page of the second 2 MiB is the zero page.
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE + PAGE), Ok(0));
    s.madvise(&env.mm, va, 4 << 20, Advice::Collapse).unwrap();
    for at in [va, va + HPAGE_PMD_SIZE] {
        let p = pmd(&env, &s, at).expect("collapsed");
        assert!(p.is_writable() && env.flags(p.frame()).contains(FrameFlags::ANON_EXCLUSIVE));
    }
    let st = env.mm.stats();
    assert_eq!((st.thp_collapse_alloc, st.anon_thps), (2, 2));
    assert_eq!(st.anon_pages, 2 * HPAGE_PMD_NR as u64);
    assert_eq!(st.zero_page_mappings, 0);
    // 2 x 256 small pages went, 2 x 512 came; the two PTs are now the deposits.
    assert_eq!(env.mm.frames().free_frames(), free + 512 - 1024);
    for i in 0..HPAGE_PMD_NR as u64 * 2 {
        let want = if i % 2 == 0 {
            i % HPAGE_PMD_NR as u64 + 1
        } else {
            0
        };
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(want), "subpage {i}");
    }
    env.check(&[&s]);
    // Already PMD-mapped: nothing to do.
    s.madvise(&env.mm, va, 2 << 20, Advice::Collapse).unwrap();
    assert_eq!(env.mm.stats().thp_collapse_alloc, 2);
    // A range holding no whole aligned 2 MiB: nothing, success.
    s.madvise(&env.mm, va + PAGE, 2 << 20, Advice::Collapse)
        .unwrap();
    env.finish(vec![s]);
}

#[test]
fn madv_collapse_errnos_follow_linux() {
    let env = env();
    let mut s = env.space();
    let va = small_pages(&env, &mut s, 4, false);
    // A GUP reference: EAGAIN, nothing changed.
    let get = crate::pin::get_user_page(&env.mm, &mut s, va + 3 * PAGE).unwrap();
    assert_eq!(
        s.madvise(&env.mm, va, 2 << 20, Advice::Collapse),
        Err(crate::error::MmError::Again)
    );
    assert!(pmd(&env, &s, va).is_none());
    get.unpin(&env.mm);
    env.check(&[&s]);
    // No free block: ENOMEM.
    let held = take_all_blocks(&env);
    assert_eq!(
        s.madvise(&env.mm, va, 2 << 20, Advice::Collapse),
        Err(crate::error::MmError::NoMem)
    );
    give_back(&env, held);
    // Independent of `enabled`: collapses even under `never`.
    env.mm
        .thp()
        .set_enabled(crate::huge_memory::ThpEnabled::Never);
    let mut u = env.space();
    let vu = u
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            2 << 20,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    env.write(&mut u, vu, 5).unwrap();
    u.madvise(&env.mm, vu, 2 << 20, Advice::Collapse).unwrap();
    assert!(pmd(&env, &u, vu).is_some());
    assert_eq!(env.read(&mut u, vu), Ok(5));
    env.mm
        .thp()
        .set_enabled(crate::huge_memory::ThpEnabled::Madvise);
    u.exit(&env.mm);
    // MADV_NOHUGEPAGE: EINVAL, even for a range with no whole 2 MiB.
    s.madvise(&env.mm, va + HPAGE_PMD_SIZE, 2 << 20, Advice::NoHugePage)
        .unwrap();
    assert_eq!(
        s.madvise(
            &env.mm,
            va + HPAGE_PMD_SIZE,
            PAGE as usize,
            Advice::Collapse
        ),
        Err(crate::error::MmError::Inval)
    );
    // A 2 MiB split between two VMAs: EINVAL.
    s.madvise(&env.mm, va, 2 << 20, Advice::HugePage).unwrap();
    s.mprotect(&env.mm, va + 100 * PAGE, PAGE as usize, Prot::READ)
        .unwrap();
    assert_eq!(
        s.madvise(&env.mm, va, 2 << 20, Advice::Collapse),
        Err(crate::error::MmError::Inval)
    );
    s.mprotect(&env.mm, va + 100 * PAGE, PAGE as usize, Prot::RW)
        .unwrap();
    // No page table, or only the zero page: EINVAL.
    s.madvise(&env.mm, va, 2 << 20, Advice::DontNeed).unwrap();
    assert_eq!(
        s.madvise(&env.mm, va, 2 << 20, Advice::Collapse),
        Err(crate::error::MmError::Inval)
    );
    env.check(&[&s]);
    // A hole: the mapped 2 MiB is collapsed, then ENOMEM.
    let mut t = env.space();
    let vb = small_pages(&env, &mut t, 4, false);
    t.munmap(&env.mm, vb + HPAGE_PMD_SIZE, 2 << 20).unwrap();
    assert_eq!(
        t.madvise(&env.mm, vb, 4 << 20, Advice::Collapse),
        Err(crate::error::MmError::NoMem)
    );
    assert!(pmd(&env, &t, vb).is_some());
    env.check(&[&s, &t]);
    env.finish(vec![s, t]);
}

#[test]
fn madv_collapse_of_fork_shared_pages_copies_and_the_child_keeps_its_own() {
    let env = env();
    let mut parent = env.space();
    let va = small_pages(&env, &mut parent, 2, false);
    let mut child = parent.fork(&env.mm).unwrap();
    parent
        .madvise(&env.mm, va, 2 << 20, Advice::Collapse)
        .unwrap();
    assert!(pmd(&env, &parent, va).is_some());
    assert!(pmd(&env, &child, va).is_none());
    env.write(&mut parent, va + 7 * PAGE, 99).unwrap();
    assert_eq!(env.read(&mut child, va + 7 * PAGE), Ok(8));
    env.check(&[&parent, &child]);
    // A PTE-mapped THP collapses back into one (its old folio is freed).
    let (p2, h2) = (va, pmd(&env, &parent, va).unwrap().frame());
    parent
        .mprotect(&env.mm, p2, PAGE as usize, Prot::READ)
        .unwrap();
    parent
        .mprotect(&env.mm, p2, PAGE as usize, Prot::RW)
        .unwrap();
    assert!(pmd(&env, &parent, p2).is_none(), "PTE-mapped");
    parent
        .madvise(&env.mm, p2, 2 << 20, Advice::Collapse)
        .unwrap();
    let new = pmd(&env, &parent, p2).unwrap().frame();
    assert_ne!(new, h2);
    assert_eq!(env.read(&mut parent, va + 7 * PAGE), Ok(99));
    assert_eq!(env.mm.stats().anon_thps, 1);
    env.check(&[&parent, &child]);
    env.finish(vec![parent, child]);
}

#[test]
fn a_vma_split_inside_a_pmd_splits_the_pmd_and_fork_copies_only_what_it_may() {
    let env = env();
    let mut s = env.space();
    let (va, head) = thp_with_data(&env, &mut s, 2);
    // cow.c's partially shared THP: DONTFORK on all but the first page.
    s.madvise(
        &env.mm,
        va + PAGE,
        (HPAGE_PMD_SIZE - PAGE) as usize,
        Advice::DontFork,
    )
    .unwrap();
    assert!(pmd(&env, &s, va).is_none(), "no PMD may map two VMAs");
    env.check(&[&s]);
    let child = s.fork(&env.mm).unwrap();
    assert_eq!(env.mm.frames().page_mapcount(head), 2, "page 0 is shared");
    assert_eq!(
        env.mm.frames().page_mapcount(head + PAGE),
        1,
        "DONTFORK pages are not"
    );
    assert!(env.exclusive(&s, va + PAGE), "and stay exclusive");
    assert!(!env.exclusive(&s, va));
    env.check(&[&s, &child]);
    // mlock of part splits it too.
    let mut t = env.space();
    let (vb, _) = thp_with_data(&env, &mut t, 2);
    t.mlock(
        &env.mm,
        vb + 8 * PAGE,
        PAGE as usize,
        crate::mlock::LockMode::Populate,
        u64::MAX,
    )
    .unwrap();
    assert!(pmd(&env, &t, vb).is_none());
    env.check(&[&s, &child, &t]);
    env.finish(vec![s, child, t]);
}

/// Random THP operations over several address spaces (faults, huge-zero reads, splits,
/// DONTNEED, munmap/remap, collapse, fork, exit, pins, the deferred split), every page checked
/// against a per-space model and the invariant checker run after every step.
#[test]
fn random_thp_operations_keep_every_page_and_every_count() {
    let seeds: u64 = option_env!("THP2_SEEDS")
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for seed in 1..=seeds {
        random_thp_run(seed, 120);
    }
}

fn random_thp_run(seed: u64, steps: usize) {
    const PAGES: usize = 2 * HPAGE_PMD_NR;
    let env = Env::with_frames(16 * HPAGE_PMD_NR);
    let mut rng = super::Rng::new(seed);
    let mut spaces: Vec<(AddressSpace, Vec<u64>)> = Vec::new();
    let mut first = env.space();
    map_huge(&env, &mut first, 4);
    spaces.push((first, vec![0u64; PAGES]));
    let mut pins: Vec<crate::pin::PinnedPage> = Vec::new();
    for step in 0..steps {
        let n = rng.below(spaces.len() as u64) as usize;
        let i = rng.below(PAGES as u64);
        let va = VirtAddr::new(BASE + i * PAGE);
        let v = step as u64 + 1;
        let op = rng.below(11);
        let count = spaces.len();
        let (s, model) = &mut spaces[n];
        match op {
            0..=2 => {
                env.write(s, va, v).unwrap();
                model[i as usize] = v;
            }
            3 => assert_eq!(
                env.read(s, va),
                Ok(model[i as usize]),
                "seed {seed} step {step}"
            ),
            4 => {
                let len = 1 + rng.below(600).min(PAGES as u64 - i - 1);
                s.madvise(&env.mm, va, (len * PAGE) as usize, Advice::DontNeed)
                    .unwrap();
                model[i as usize..(i + len) as usize].fill(0);
            }
            5 => {
                s.mprotect(&env.mm, va, PAGE as usize, Prot::READ).unwrap();
                s.mprotect(&env.mm, va, PAGE as usize, Prot::RW).unwrap();
            }
            6 => {
                let r = VirtAddr::new(BASE + (i / HPAGE_PMD_NR as u64) * HPAGE_PMD_SIZE);
                let _ = s.madvise(&env.mm, r, 2 << 20, Advice::Collapse);
            }
            7 => {
                let len = 1 + rng.below(300).min(PAGES as u64 - i - 1);
                s.munmap(&env.mm, va, (len * PAGE) as usize).unwrap();
                s.mmap(
                    &env.mm,
                    va,
                    (len * PAGE) as usize,
                    Prot::RW,
                    ANON | crate::mmap::MapFlags::FIXED,
                )
                .unwrap();
                s.madvise(&env.mm, va, (len * PAGE) as usize, Advice::HugePage)
                    .unwrap();
                model[i as usize..(i + len) as usize].fill(0);
            }
            8 if count < 4 => {
                let child = s.fork(&env.mm).unwrap();
                let m = model.clone();
                spaces.push((child, m));
            }
            8 if count > 1 => {
                let (gone, _) = spaces.swap_remove(n);
                gone.exit(&env.mm);
            }
            9 if pins.len() < 8 => {
                if let Ok(p) = crate::pin::pin_user_page(&env.mm, s, va) {
                    pins.push(p);
                }
            }
            9 => pins.swap_remove(0).unpin(&env.mm),
            _ => {
                env.mm.deferred_split_scan();
            }
        }
        let all: Vec<&AddressSpace> = spaces.iter().map(|(s, _)| s).collect();
        env.check(&all);
        if step % 20 == 19 {
            for (s, model) in spaces.iter_mut() {
                for (p, &want) in model.iter().enumerate() {
                    assert_eq!(
                        env.read(s, VirtAddr::new(BASE + p as u64 * PAGE)),
                        Ok(want),
                        "seed {seed} step {step} page {p}"
                    );
                }
            }
        }
    }
    for p in pins {
        p.unpin(&env.mm);
    }
    env.finish(spaces.into_iter().map(|(s, _)| s).collect());
}

// ---- the first fault of a 2 MiB range (perf10's `fault_no_pt` / `walk_pt_or_pd`) ----

#[test]
fn huge_zero_read_fault_without_a_block_maps_the_small_zero_page_and_frees_the_deposit() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    let held = take_all_blocks(&env);
    let pt = s.page_table(&env.mm);
    assert!(
        !pt.root_entry(va.table_index(4)).is_present(),
        "no tables yet"
    );
    let free = env.mm.frames().free_frames();
    let (fallbacks, tables) = {
        let st = env.mm.stats();
        (st.thp_fault_fallback, st.pagetable_pages)
    };
    assert_eq!(env.read(&mut s, va + 5 * PAGE), Ok(0));
    assert!(pmd(&env, &s, va).is_none(), "no PMD leaf without a block");
    assert_eq!(env.frame(&s, va + 5 * PAGE), env.mm.zero_page());
    let st = env.mm.stats();
    assert_eq!(st.thp_fault_fallback, fallbacks + 1);
    assert_eq!(st.thp_zero_page_alloc, 0);
    assert_eq!(
        s.shared()
            .deposit_count
            .load(core::sync::atomic::Ordering::Relaxed),
        0,
        "the deposit table went back with the fallback"
    );
    // The PDPT, PD and PT now translate `va`; the deposit allocated for the PMD is free again.
    assert_eq!(
        free - env.mm.frames().free_frames(),
        3,
        "a page table leaked"
    );
    assert_eq!(
        st.pagetable_pages,
        tables + 3,
        "a page table is still counted"
    );
    env.check(&[&s]);
    give_back(&env, held);
    env.finish(vec![s]);
}

#[test]
fn defrag_never_leaves_the_huge_zero_folio_unallocated_and_is_asked_only_to_allocate() {
    let env = env();
    env.mm
        .thp()
        .set_defrag(crate::huge_memory::ThpDefrag::Never);
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 4);
    // No block has been harvested from the 4 KiB lists yet, and defrag=never may not harvest.
    assert_eq!(env.read(&mut s, va), Ok(0));
    assert!(pmd(&env, &s, va).is_none());
    assert_eq!(env.frame(&s, va), env.mm.zero_page());
    let st = env.mm.stats();
    assert_eq!((st.thp_zero_page_alloc, st.thp_fault_fallback), (0, 1));
    assert_eq!(env.mm.frames().huge_zero_mappings(), 0);
    // With defrag allowed the next 2 MiB harvests a block for the folio ...
    env.mm
        .thp()
        .set_defrag(crate::huge_memory::ThpDefrag::Always);
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE), Ok(0));
    let head = pmd(&env, &s, va + HPAGE_PMD_SIZE)
        .expect("huge zero PMD")
        .frame();
    assert!(env.mm.frames().is_huge_zero(head));
    assert_eq!(env.mm.stats().thp_zero_page_alloc, 1);
    // ... and once it exists the defrag mode is not asked at all.
    let got = env
        .mm
        .get_huge_zero_folio(|| panic!("defrag asked with the huge zero folio allocated"));
    assert_eq!(got, Some(head));
    env.mm
        .frames()
        .put_huge_zero(head, |_, _| panic!("the PMD still holds a reference"));
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn deposit_table_allocation_failing_falls_back_to_the_4k_path() {
    use core::sync::atomic::{AtomicUsize, Ordering};
    // The shrinker is a plain `fn`: it reaches the machine and the hoard through statics. It
    // frees nothing the first time it runs (the deposit's allocation fails) and one hoarded
    // frame each later time (so the PT of the 4 KiB path can be allocated).
    static ENV: std::sync::OnceLock<&'static Env> = std::sync::OnceLock::new();
    static HOARD: spin::Mutex<Vec<PhysAddr>> = spin::Mutex::new(Vec::new());
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn shrink() -> usize {
        if CALLS.fetch_add(1, Ordering::Relaxed) == 0 {
            return 0;
        }
        match HOARD.lock().pop() {
            Some(f) => {
                ENV.get().unwrap().mm.frames().free(f);
                1
            }
            None => 0,
        }
    }
    let env: &'static Env =
        ENV.get_or_init(|| alloc::boxed::Box::leak(alloc::boxed::Box::new(env())));
    let mut s = env.space();
    let va = map_huge(env, &mut s, 4);
    // The first 2 MiB gets its huge zero PMD: the PD is there for the second.
    assert_eq!(env.read(&mut s, va), Ok(0));
    assert!(pmd(env, &s, va).is_some());
    let pagetables = env.mm.stats().pagetable_pages;
    {
        let mut hoard = HOARD.lock();
        while let Some(f) = env.mm.frames().alloc() {
            hoard.push(f);
        }
    }
    assert_eq!(env.mm.frames().free_frames(), 0);
    env.mm.set_shrinker(shrink);
    let fallbacks = env.mm.stats().thp_fault_fallback;
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE + 3 * PAGE), Ok(0));
    assert_eq!(CALLS.load(Ordering::Relaxed), 2, "the deposit, then the PT");
    assert!(pmd(env, &s, va + HPAGE_PMD_SIZE).is_none());
    assert_eq!(
        env.frame(&s, va + HPAGE_PMD_SIZE + 3 * PAGE),
        env.mm.zero_page()
    );
    let st = env.mm.stats();
    assert_eq!(st.pagetable_pages, pagetables + 1, "only the PT");
    // As Linux, a failed deposit is no THP fallback (no folio was refused).
    assert_eq!(st.thp_fault_fallback, fallbacks);
    for f in HOARD.lock().drain(..) {
        env.mm.frames().free(f);
    }
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn first_thp_fault_in_a_second_gib_allocates_its_pd() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    assert_eq!(env.read(&mut s, va), Ok(0));
    // BASE is 1 GiB: 2 GiB shares its PDPT (the same 512 GiB) but has no PD yet.
    let far = VirtAddr::new(2 << 30);
    assert_eq!(far.table_index(4), va.table_index(4));
    s.mmap(
        &env.mm,
        far,
        HPAGE_PMD_SIZE as usize,
        Prot::RW,
        ANON | crate::mmap::MapFlags::FIXED,
    )
    .unwrap();
    s.madvise(&env.mm, far, HPAGE_PMD_SIZE as usize, Advice::HugePage)
        .unwrap();
    assert_eq!(s.page_table(&env.mm).walk_pt_or_pd(far), Err(None));
    let pagetables = env.mm.stats().pagetable_pages;
    // A read (the huge zero folio) and a write (a new THP) in two such GiBs.
    assert_eq!(env.read(&mut s, far + 7 * PAGE), Ok(0));
    let p = pmd(&env, &s, far).expect("a huge zero PMD in the new PD");
    assert!(env.mm.frames().is_huge_zero(p.frame()));
    assert!(matches!(
        s.page_table(&env.mm).walk_pt_or_pd(far),
        Err(Some(_))
    ));
    assert_eq!(
        env.mm.stats().pagetable_pages,
        pagetables + 2,
        "the PD and the deposit"
    );
    let far2 = VirtAddr::new(3 << 30);
    s.mmap(
        &env.mm,
        far2,
        HPAGE_PMD_SIZE as usize,
        Prot::RW,
        ANON | crate::mmap::MapFlags::FIXED,
    )
    .unwrap();
    s.madvise(&env.mm, far2, HPAGE_PMD_SIZE as usize, Advice::HugePage)
        .unwrap();
    env.write(&mut s, far2 + PAGE, 42).unwrap();
    let p = pmd(&env, &s, far2).expect("a THP in the new PD");
    assert!(p.is_writable() && !env.mm.frames().is_huge_zero(p.frame()));
    assert_eq!(env.read(&mut s, far2 + PAGE), Ok(42));
    env.check(&[&s]);
    env.finish(vec![s]);
}
