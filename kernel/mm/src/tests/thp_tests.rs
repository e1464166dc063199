//! Anonymous THPs (issue 14, SEMANTICS.md section 11): PMD-mapped faults, fork sharing and
//! COW by splitting, partial munmap/DONTNEED/mprotect, pins on subpages, fallbacks, controls.

use alloc::vec;

use super::{Env, ANON, BASE, PAGE};
use crate::addr::VirtAddr;
use crate::aspace::AddressSpace;
use crate::error::FaultError;
use crate::folio::{HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::frame::FrameFlags;
use crate::huge_memory::{ThpDefrag, ThpEnabled};
use crate::madvise::Advice;
use crate::pagetable::Pte;
use crate::pin::pin_user_page;
use crate::vma::Prot;

/// 16 MiB: several whole 2 MiB blocks.
pub(super) fn env() -> Env {
    Env::with_frames(8 * HPAGE_PMD_NR)
}

/// Maps `mib` MiB of private anon memory at the 2 MiB-aligned `BASE`, `MADV_HUGEPAGE`.
pub(super) fn map_huge(env: &Env, s: &mut AddressSpace, mib: u64) -> VirtAddr {
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            (mib << 20) as usize,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .expect("mmap");
    s.madvise(&env.mm, va, (mib << 20) as usize, Advice::HugePage)
        .expect("MADV_HUGEPAGE");
    va
}

/// The PMD of `va`, if it is a leaf.
pub(super) fn pmd(env: &Env, s: &AddressSpace, va: VirtAddr) -> Option<Pte> {
    s.page_table(&env.mm)
        .walk_pmd(va)
        .map(|slot| slot.load())
        .filter(|p| p.is_huge())
}

#[test]
fn write_fault_maps_a_zeroed_thp_with_one_pmd_and_frames_return() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 4);
    env.write(&mut s, va + 5 * PAGE, 0x55).unwrap();
    let leaf = pmd(&env, &s, va).expect("a PMD leaf after the fault");
    let head = leaf.frame();
    assert!(head.pfn().is_multiple_of(HPAGE_PMD_NR), "2 MiB aligned");
    assert!(leaf.is_writable() && leaf.has(Pte::HUGE));
    assert_eq!(
        env.frame(&s, va + 5 * PAGE),
        head + 5 * PAGE,
        "subpage frame"
    );
    // Every subpage reads as zero except the one written, with no further fault.
    let faults = s.minor_faults();
    for i in [0, 4, 6, 511] {
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(0));
    }
    assert_eq!(env.read(&mut s, va + 5 * PAGE), Ok(0x55));
    env.write(&mut s, va + 511 * PAGE, 9).unwrap();
    assert_eq!(
        s.minor_faults(),
        faults,
        "the whole 2 MiB was mapped by the first fault"
    );
    let frames = env.mm.frames();
    assert_eq!(frames.entire_mapcount(head), 1);
    assert_eq!(frames.folio_refcount(head + 77 * PAGE), 1);
    assert!(env
        .flags(head + 300 * PAGE)
        .contains(FrameFlags::ANON_EXCLUSIVE));
    let st = env.mm.stats();
    assert_eq!((st.anon_thps, st.thp_fault_alloc), (1, 1));
    assert_eq!(st.anon_pages, HPAGE_PMD_NR as u64);
    let smaps = s.smaps(&env.mm);
    let c = smaps.values().next().unwrap();
    assert_eq!(c.anon_huge, HPAGE_PMD_SIZE);
    assert_eq!(c.anonymous, HPAGE_PMD_SIZE);
    env.check(&[&s]);
    // The second 2 MiB is a THP of its own on its first touch, a read this time.
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE), Ok(0));
    assert!(pmd(&env, &s, va + HPAGE_PMD_SIZE).is_some());
    env.check(&[&s]);
    env.finish(vec![s]);
    assert_eq!(env.mm.stats().anon_thps, 0);
}

#[test]
fn controls_decide_eligibility() {
    let env = env();
    let mut s = env.space();
    // Default `madvise`: a plain mapping gets small pages.
    assert_eq!(env.mm.thp().enabled(), ThpEnabled::Madvise);
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            2 << 20,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    env.write(&mut s, va, 1).unwrap();
    assert!(
        pmd(&env, &s, va).is_none(),
        "madvise mode without MADV_HUGEPAGE"
    );
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    // `always`: every eligible VMA, unless MADV_NOHUGEPAGE.
    env.mm.thp().set_enabled(ThpEnabled::Always);
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            4 << 20,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    s.madvise(&env.mm, va + HPAGE_PMD_SIZE, 2 << 20, Advice::NoHugePage)
        .unwrap();
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + HPAGE_PMD_SIZE, 1).unwrap();
    assert!(pmd(&env, &s, va).is_some(), "always");
    assert!(
        pmd(&env, &s, va + HPAGE_PMD_SIZE).is_none(),
        "MADV_NOHUGEPAGE"
    );
    // `never`.
    env.mm.thp().set_enabled(ThpEnabled::Never);
    s.munmap(&env.mm, va, 4 << 20).unwrap();
    let va = map_huge(&env, &mut s, 2);
    env.write(&mut s, va, 1).unwrap();
    assert!(pmd(&env, &s, va).is_none(), "never");
    // A VMA that does not cover the aligned 2 MiB never gets one.
    env.mm.thp().set_enabled(ThpEnabled::Always);
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE + PAGE),
            (2 << 20) as usize,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + HPAGE_PMD_SIZE - 2 * PAGE, 1)
        .unwrap();
    assert_eq!(
        env.mm.stats().thp_fault_alloc,
        1,
        "only the `always` fault above"
    );
    // The sysfs text and its parser.
    let mut text = alloc::string::String::new();
    env.mm.thp().show_enabled(&mut text);
    assert_eq!(text, "[always] madvise never\n");
    assert!(env.mm.thp().store_enabled("sometimes").is_err());
    env.mm.thp().store_defrag("never\n").unwrap();
    assert_eq!(env.mm.thp().defrag(), ThpDefrag::Never);
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn no_free_block_falls_back_to_small_pages() {
    let env = env();
    env.mm.thp().set_defrag(ThpDefrag::Never);
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    // Nothing harvested the 4 KiB lists into blocks, and defrag=never does not.
    env.write(&mut s, va, 3).unwrap();
    assert!(pmd(&env, &s, va).is_none());
    assert_eq!(env.mm.stats().thp_fault_fallback, 1);
    assert_eq!(env.read(&mut s, va), Ok(3));
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn fork_shares_the_pmd_and_a_write_splits_and_copies_one_subpage() {
    let env = env();
    let mut parent = env.space();
    let va = map_huge(&env, &mut parent, 2);
    for i in 0..HPAGE_PMD_NR as u64 {
        env.write(&mut parent, va + i * PAGE, i).unwrap();
    }
    let head = pmd(&env, &parent, va).unwrap().frame();
    let mut child = parent.fork(&env.mm).unwrap();
    let (p, c) = (
        pmd(&env, &parent, va).unwrap(),
        pmd(&env, &child, va).unwrap(),
    );
    assert_eq!((p.frame(), c.frame()), (head, head), "one folio, two PMDs");
    assert!(
        !p.is_writable() && !c.is_writable(),
        "write-protected on both sides"
    );
    assert!(!env
        .flags(head + 9 * PAGE)
        .contains(FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(env.mm.frames().entire_mapcount(head), 2);
    env.check(&[&parent, &child]);

    // The child writes one subpage: its PMD becomes 512 PTEs, that subpage a private copy.
    env.write(&mut child, va + 7 * PAGE, 0x77).unwrap();
    assert!(pmd(&env, &child, va).is_none(), "the child's PMD was split");
    assert_ne!(env.frame(&child, va + 7 * PAGE), head + 7 * PAGE, "copied");
    assert_eq!(
        env.frame(&child, va + 8 * PAGE),
        head + 8 * PAGE,
        "still shared"
    );
    assert_eq!(env.mm.frames().page_mapcount(head + 8 * PAGE), 2);
    assert_eq!(
        env.read(&mut parent, va + 7 * PAGE),
        Ok(7),
        "parent unchanged"
    );
    assert!(pmd(&env, &parent, va).is_some(), "the parent keeps its PMD");
    let st = env.mm.stats();
    assert_eq!((st.thp_split_pmd, st.thp_wp_splits), (1, 1));
    env.check(&[&parent, &child]);

    // The parent writes: the folio is still shared with the child's PTEs, so it splits too.
    env.write(&mut parent, va + 100 * PAGE, 0x100).unwrap();
    assert!(pmd(&env, &parent, va).is_none());
    assert_eq!(env.read(&mut child, va + 100 * PAGE), Ok(100));
    assert_eq!(env.read(&mut parent, va + 101 * PAGE), Ok(101));
    env.check(&[&parent, &child]);
    child.exit(&env.mm);
    env.check(&[&parent]);
    // Partly copied away, the folio lives on for the parent's remaining subpages.
    assert_eq!(env.read(&mut parent, va + 511 * PAGE), Ok(511));
    env.finish(vec![parent]);
}

#[test]
fn write_after_the_child_exits_reuses_the_whole_thp() {
    let env = env();
    let mut parent = env.space();
    let va = map_huge(&env, &mut parent, 2);
    env.write(&mut parent, va, 1).unwrap();
    let child = parent.fork(&env.mm).unwrap();
    child.exit(&env.mm);
    env.write(&mut parent, va + 3 * PAGE, 2).unwrap();
    let leaf = pmd(&env, &parent, va).expect("no split");
    assert!(leaf.is_writable());
    assert!(env
        .flags(leaf.frame() + 3 * PAGE)
        .contains(FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(
        env.mm.stats().wp_reuses_proven,
        1,
        "refcount 1 proved it unshared"
    );
    env.check(&[&parent]);
    env.finish(vec![parent]);
}

#[test]
fn partial_munmap_dontneed_and_mprotect_split_the_pmd() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 2);
    for i in 0..HPAGE_PMD_NR as u64 {
        env.write(&mut s, va + i * PAGE, i + 1).unwrap();
    }
    let head = pmd(&env, &s, va).unwrap().frame();
    s.munmap(&env.mm, va + 10 * PAGE, 2 * PAGE as usize)
        .unwrap();
    assert!(pmd(&env, &s, va).is_none(), "split");
    assert!(matches!(
        env.read(&mut s, va + 10 * PAGE),
        Err(e) if matches!(e.error, FaultError::Segv(_))
    ));
    assert_eq!(env.read(&mut s, va + 12 * PAGE), Ok(13));
    assert_eq!(
        env.frame(&s, va + 12 * PAGE),
        head + 12 * PAGE,
        "same folio"
    );
    env.check(&[&s]);
    s.madvise(&env.mm, va + 20 * PAGE, PAGE as usize, Advice::DontNeed)
        .unwrap();
    assert_eq!(
        env.read(&mut s, va + 20 * PAGE),
        Ok(0),
        "DONTNEED reads zero"
    );
    assert_eq!(env.read(&mut s, va + 21 * PAGE), Ok(22));
    s.mprotect(&env.mm, va + 30 * PAGE, PAGE as usize, Prot::READ)
        .unwrap();
    assert!(
        env.write(&mut s, va + 30 * PAGE, 5).is_err(),
        "read-only now"
    );
    env.write(&mut s, va + 31 * PAGE, 5).unwrap();
    assert_eq!(
        env.mm.stats().thp_split_pmd,
        1,
        "one split served all three"
    );
    env.check(&[&s]);
    // The rest goes; with it the folio's last mapping and reference.
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    assert_eq!(env.mm.stats().anon_thps, 0);
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn whole_pmd_munmap_and_mprotect_of_a_whole_thp() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 4);
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + HPAGE_PMD_SIZE, 2).unwrap();
    s.munmap(&env.mm, va, (2 << 20) as usize).unwrap();
    assert_eq!(
        env.mm.stats().thp_split_pmd,
        0,
        "a whole PMD goes without a split"
    );
    assert_eq!(env.mm.stats().anon_thps, 1);
    s.mprotect(&env.mm, va + HPAGE_PMD_SIZE, 2 << 20, Prot::READ)
        .unwrap();
    assert_eq!(env.read(&mut s, va + HPAGE_PMD_SIZE), Ok(2));
    assert!(env.write(&mut s, va + HPAGE_PMD_SIZE, 3).is_err());
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn a_pin_on_a_subpage_counts_on_the_folio_and_fork_copies_for_the_child() {
    let env = env();
    let mut parent = env.space();
    let va = map_huge(&env, &mut parent, 2);
    env.write(&mut parent, va + 3 * PAGE, 33).unwrap();
    env.write(&mut parent, va + 4 * PAGE, 44).unwrap();
    let head = pmd(&env, &parent, va).unwrap().frame();
    // GUP slow through the PMD: one folio reference and pin per pinned subpage.
    let pin = pin_user_page(&env.mm, &mut parent, va + 3 * PAGE).unwrap();
    assert_eq!(pin.frame(), head + 3 * PAGE);
    assert_eq!(env.mm.frames().folio_pincount(head + 200 * PAGE), 1);
    assert_eq!(env.mm.frames().folio_refcount(head), 2);
    env.check(&[&parent]);
    // fork_must_copy at folio granularity: the parent's PMD is split, the child copies.
    let mut child = parent.fork(&env.mm).unwrap();
    assert!(pmd(&env, &child, va).is_none());
    assert_ne!(env.frame(&child, va + 3 * PAGE), head + 3 * PAGE);
    assert_eq!(env.frame(&parent, va + 3 * PAGE), head + 3 * PAGE);
    assert!(
        env.exclusive(&parent, va + 3 * PAGE),
        "the parent keeps its pinned page"
    );
    // The device writes through the pin: the parent sees it, the child does not.
    pin.dma_from_device()
        .unwrap()
        .dma_write(&env.mm, 0, &99u64.to_le_bytes());
    assert_eq!(env.read(&mut parent, va + 3 * PAGE), Ok(99));
    assert_eq!(env.read(&mut child, va + 3 * PAGE), Ok(33));
    assert_eq!(env.read(&mut child, va + 4 * PAGE), Ok(44));
    // The parent still writes its pinned page in place.
    env.write(&mut parent, va + 3 * PAGE + 8, 1).unwrap();
    assert_eq!(env.frame(&parent, va + 3 * PAGE), head + 3 * PAGE);
    env.check(&[&parent, &child]);
    pin.unpin(&env.mm);
    env.check(&[&parent, &child]);
    env.finish(vec![parent, child]);
}

#[test]
fn read_only_pin_of_a_shared_thp_unshares_one_subpage() {
    let env = env();
    let mut parent = env.space();
    let va = map_huge(&env, &mut parent, 2);
    env.write(&mut parent, va + 5 * PAGE, 5).unwrap();
    let head = pmd(&env, &parent, va).unwrap().frame();
    let mut child = parent.fork(&env.mm).unwrap();
    // A R/O pin in the child must not see the parent's later writes (2022+ unshare).
    let mut pages = [None];
    crate::gup::pin_user_pages(
        &env.mm,
        &mut child,
        va + 5 * PAGE,
        crate::foll::FollFlags::NONE,
        &mut pages,
    )
    .unwrap();
    let pin = pages[0].take().unwrap();
    assert_ne!(pin.frame(), head + 5 * PAGE, "unshared: a copy");
    env.write(&mut parent, va + 5 * PAGE, 6).unwrap();
    let mut buf = [0u8; 8];
    pin.dma_read(&env.mm, 0, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), 5);
    env.check(&[&parent, &child]);
    pin.unpin(&env.mm);
    env.finish(vec![parent, child]);
}

#[test]
fn gup_fast_pins_subpages_from_the_pmd_and_falls_back_when_it_must() {
    let env = env();
    let mut s = env.space();
    let va = map_huge(&env, &mut s, 4);
    env.write(&mut s, va, 1).unwrap();
    let head = pmd(&env, &s, va).unwrap().frame();
    // Three subpages at the end of the first THP and one page past it (no THP there yet).
    let mut pages = [None, None, None, None];
    let start = va + (HPAGE_PMD_NR as u64 - 3) * PAGE;
    let n = crate::gup::pin_user_pages_fast(
        &env.mm,
        &mut s,
        start,
        crate::foll::FollFlags::WRITE,
        &mut pages,
    )
    .unwrap();
    assert_eq!(n, 4);
    let st = env.mm.stats();
    assert_eq!(
        st.gup_fast_pages, 3,
        "the THP's subpages came from the PMD leaf"
    );
    assert_eq!(
        st.gup_fast_fallbacks, 1,
        "the empty page after it needed a fault"
    );
    assert_eq!(pages[0].as_ref().unwrap().frame(), head + 509 * PAGE);
    assert_eq!(env.mm.frames().folio_pincount(head), 3);
    assert_eq!(env.mm.frames().folio_refcount(head), 1 + 3);
    env.check(&[&s]);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    assert_eq!(env.mm.frames().folio_pincount(head), 0);
    // After fork the PMD is read-only: a write pin cannot use it and falls back to the slow
    // path, which splits and copies the subpage (the child shares the folio).
    let child = s.fork(&env.mm).unwrap();
    let mut one = [None];
    crate::gup::pin_user_pages_fast(
        &env.mm,
        &mut s,
        va + 2 * PAGE,
        crate::foll::FollFlags::WRITE,
        &mut one,
    )
    .unwrap();
    assert_eq!(env.mm.stats().gup_fast_pages, 3, "not taken fast");
    assert_ne!(
        one[0].as_ref().unwrap().frame(),
        head + 2 * PAGE,
        "COW before the pin"
    );
    env.check(&[&s, &child]);
    crate::gup::unpin_user_pages(&env.mm, &mut one);
    env.finish(vec![s, child]);
}

/// A fork that runs out of memory after it copied THP PMDs (and small PTEs) into the child
/// tears the child down without taking more off the child's RSS counter than it holds (the
/// child counted nothing yet: a debug-build panic, found by review) and frees everything.
#[test]
fn a_fork_failing_after_a_thp_was_copied_tears_the_child_down() {
    let mut failed = 0;
    for left in 0..24 {
        let env = env();
        let mut parent = env.space();
        let va = map_huge(&env, &mut parent, 4);
        for i in [0, HPAGE_PMD_NR as u64] {
            env.write(&mut parent, va + i * PAGE, i).unwrap();
        }
        let small = env.map(&mut parent, 1 << 30, 4, Prot::RW);
        for i in 0..4 {
            env.write(&mut parent, small + i * PAGE, i).unwrap();
        }
        let frames = env.mm.frames();
        let mut held = vec![];
        while frames.free_frames() > left {
            match frames.alloc() {
                Some(f) => held.push(f),
                None => break,
            }
        }
        match parent.fork(&env.mm) {
            Ok(child) => {
                env.check(&[&parent, &child]);
                child.exit(&env.mm);
            }
            Err(_) => failed += 1,
        }
        for f in held {
            frames.free(f);
        }
        env.check(&[&parent]);
        env.finish(vec![parent]);
    }
    assert!(failed > 0, "no fork ran out of memory");
}
