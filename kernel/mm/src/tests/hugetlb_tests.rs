//! hugetlb (issue 14, SEMANTICS.md section 11): the pool and its reservations, private and
//! shared mappings, whole-page COW on fork, pins at huge-page granularity per era, and every
//! page back in the pool (and every frame back in the allocator) at the end.

use alloc::vec;

use super::{Env, BASE, PAGE};
use crate::addr::VirtAddr;
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::error::{FaultError, MmError, SegvReason};
use crate::folio::HPAGE_PMD_NR;
use crate::foll::FollFlags;
use crate::frame::{FrameFlags, HugeCounts};
use crate::hugetlb::{HugetlbFile, HPAGE_SIZE};
use crate::mmap::MapFlags;
use crate::pagetable::Pte;
use crate::vma::Prot;

/// 24 MiB of frames: room for a pool of 8 with memory to spare.
fn env(era: Era) -> Env {
    let env = Env::with_frames(12 * HPAGE_PMD_NR);
    env.mm.set_era(era);
    env
}

const HUGE_ANON: MapFlags = MapFlags::from_linux(0x22 | 0x4_0000 | 0x10);

fn map_anon(
    env: &Env,
    s: &mut AddressSpace,
    pages: u64,
    flags: MapFlags,
) -> Result<VirtAddr, MmError> {
    s.mmap(
        &env.mm,
        VirtAddr::new(BASE),
        (pages * HPAGE_SIZE) as usize,
        Prot::RW,
        flags,
    )
}

fn counts(env: &Env) -> HugeCounts {
    env.mm.frames().hugetlb_counts()
}

fn pmd(env: &Env, s: &AddressSpace, va: VirtAddr) -> Pte {
    let p = s.page_table(&env.mm).walk_pmd(va).unwrap().load();
    assert!(p.is_huge(), "a PMD leaf at {va:#x}");
    p
}

/// Exits the spaces, shrinks the pool to nothing and checks every frame came back.
fn finish(env: &Env, spaces: vec::Vec<AddressSpace>) {
    for s in spaces {
        s.exit(&env.mm);
    }
    let c = counts(env);
    assert_eq!(
        (c.resv, c.free),
        (0, c.total),
        "every page back, no promise left"
    );
    env.mm.frames().hugetlb_set_max(0);
    assert_eq!(counts(env), HugeCounts::default());
    env.finish(vec![]);
}

#[test]
fn private_mapping_reserves_faults_reuses_and_returns_its_page() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(2);
    let mut s = env.space();
    assert_eq!(
        map_anon(&env, &mut s, 3, HUGE_ANON),
        Err(MmError::NoMem),
        "3 pages cannot be promised by a pool of 2"
    );
    let va = map_anon(&env, &mut s, 1, HUGE_ANON).unwrap();
    assert_eq!((counts(&env).resv, counts(&env).free), (1, 2));
    // A read fault maps a zeroed exclusive anon folio read-only, consuming the promise.
    assert_eq!(env.read(&mut s, va + 7 * PAGE), Ok(0));
    let leaf = pmd(&env, &s, va);
    assert!(!leaf.is_writable());
    assert_eq!((counts(&env).resv, counts(&env).free), (0, 1));
    let head = leaf.frame();
    let flags = env.flags(head + 100 * PAGE);
    assert!(flags.contains(FrameFlags::HUGETLB | FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE));
    // The write reuses it whole: same folio, now writable, no copy.
    env.write(&mut s, va + 300 * PAGE, 7).unwrap();
    assert_eq!(pmd(&env, &s, va).frame(), head);
    assert!(pmd(&env, &s, va).is_writable());
    assert_eq!(env.mm.stats().hugetlb_cow_copies, 0);
    assert_eq!(
        env.mm.stats().anon_pages,
        0,
        "hugetlb pages are not AnonPages"
    );
    env.check(&[&s]);
    // Cuts inside a huge page are EINVAL (Linux `hugetlb_vm_op_split`).
    assert_eq!(s.munmap(&env.mm, va, PAGE as usize), Err(MmError::Inval));
    assert_eq!(
        s.munmap(&env.mm, va + PAGE, HPAGE_SIZE as usize),
        Err(MmError::Inval)
    );
    assert_eq!(
        s.mprotect(&env.mm, va, PAGE as usize, Prot::READ),
        Err(MmError::Inval)
    );
    s.munmap(&env.mm, va, HPAGE_SIZE as usize).unwrap();
    assert_eq!((counts(&env).free, counts(&env).resv), (2, 0));
    env.check(&[&s]);
    finish(&env, vec![s]);
}

#[test]
fn unconsumed_promises_go_back_with_the_mapping_and_noreserve_faults_sigbus() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(2);
    let mut s = env.space();
    let va = map_anon(&env, &mut s, 2, HUGE_ANON).unwrap();
    env.write(&mut s, va, 1).unwrap();
    assert_eq!((counts(&env).resv, counts(&env).free), (1, 1));
    // The untouched half goes: its promise with it.
    s.munmap(&env.mm, va + HPAGE_SIZE, HPAGE_SIZE as usize)
        .unwrap();
    assert_eq!(counts(&env).resv, 0);
    // MAP_NORESERVE promises nothing; with the pool used up its fault is SIGBUS.
    let other = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE + 8 * HPAGE_SIZE),
            (2 * HPAGE_SIZE) as usize,
            Prot::RW,
            HUGE_ANON | MapFlags::NORESERVE,
        )
        .unwrap();
    env.write(&mut s, other, 2).unwrap();
    assert_eq!(counts(&env).free, 0);
    assert_eq!(
        crate::fault::handle_mm_fault(
            &env.mm,
            &mut s,
            other + HPAGE_SIZE,
            crate::fault::FaultKind::Write
        ),
        Err(FaultError::Segv(SegvReason::BeyondEof))
    );
    env.check(&[&s]);
    finish(&env, vec![s]);
}

#[test]
fn fork_then_write_copies_the_whole_huge_page() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(3);
    let mut parent = env.space();
    let va = map_anon(&env, &mut parent, 1, HUGE_ANON).unwrap();
    for i in [0, 255, 511] {
        env.write(&mut parent, va + i * PAGE, 100 + i).unwrap();
    }
    let head = pmd(&env, &parent, va).frame();
    let mut child = parent.fork(&env.mm).unwrap();
    assert!(!env.flags(head).contains(FrameFlags::ANON_EXCLUSIVE));
    assert!(!pmd(&env, &parent, va).is_writable() && !pmd(&env, &child, va).is_writable());
    assert_eq!(env.mm.frames().entire_mapcount(head), 2);
    env.check(&[&parent, &child]);
    env.write(&mut parent, va + 255 * PAGE, 1).unwrap();
    let copy = pmd(&env, &parent, va).frame();
    assert_ne!(copy, head, "the writer got a new huge page");
    assert_eq!(env.mm.stats().hugetlb_cow_copies, 1);
    // Every byte of the copy came along, not just the faulting 4 KiB.
    assert_eq!(env.read(&mut parent, va + 511 * PAGE), Ok(611));
    assert_eq!(env.read(&mut child, va + 255 * PAGE), Ok(355));
    // The child's folio is now mapped once, not exclusive: its write reuses it by the
    // refcount rule (provably unshared), no second copy.
    env.write(&mut child, va, 5).unwrap();
    assert_eq!(pmd(&env, &child, va).frame(), head);
    assert_eq!(env.mm.stats().hugetlb_cow_copies, 1);
    env.check(&[&parent, &child]);
    finish(&env, vec![parent, child]);
}

#[test]
fn fork_copies_a_pinned_exclusive_huge_page_from_2020_and_shares_it_before() {
    for (era, copies) in [(Era::Y2016, false), (Era::Y2020, true), (Era::Y2023, true)] {
        let env = env(era);
        env.mm.frames().hugetlb_set_max(3);
        let mut parent = env.space();
        let va = map_anon(&env, &mut parent, 1, HUGE_ANON).unwrap();
        env.write(&mut parent, va, 9).unwrap();
        let head = pmd(&env, &parent, va).frame();
        let mut pages = [None];
        crate::gup::pin_user_pages(
            &env.mm,
            &mut parent,
            va + 3 * PAGE,
            FollFlags::WRITE | FollFlags::LONGTERM,
            &mut pages,
        )
        .unwrap();
        let child = parent.fork(&env.mm).unwrap();
        let child_head = pmd(&env, &child, va).frame();
        assert_eq!(child_head != head, copies, "era {era:?}: fork_must_copy");
        // Copied: the parent keeps its pinned page writable and exclusive.
        assert_eq!(pmd(&env, &parent, va).is_writable(), copies);
        env.check(&[&parent, &child]);
        crate::gup::unpin_user_pages(&env.mm, &mut pages);
        finish(&env, vec![parent, child]);
    }
}

#[test]
fn read_only_pin_of_a_shared_huge_page_unshares_it_whole_from_2022() {
    for (era, unshares) in [(Era::Y2020, false), (Era::Y2022, true), (Era::Y2023, true)] {
        let env = env(era);
        env.mm.frames().hugetlb_set_max(3);
        let mut parent = env.space();
        let va = map_anon(&env, &mut parent, 1, HUGE_ANON).unwrap();
        env.write(&mut parent, va + 5 * PAGE, 5).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        let mut pages = [None];
        crate::gup::pin_user_pages_fast(
            &env.mm,
            &mut parent,
            va + 5 * PAGE,
            FollFlags::LONGTERM,
            &mut pages,
        )
        .unwrap();
        // The parent writes after pinning: the pin must see it where the era unshares.
        env.write(&mut parent, va + 5 * PAGE, 6).unwrap();
        let pin = pages[0].as_ref().unwrap();
        let mut buf = [0u8; 8];
        pin.dma_read(&env.mm, 0, &mut buf);
        assert_eq!(u64::from_le_bytes(buf) == 6, unshares, "era {era:?}");
        assert_eq!(env.read(&mut child, va + 5 * PAGE), Ok(5));
        env.check(&[&parent, &child]);
        crate::gup::unpin_user_pages(&env.mm, &mut pages);
        finish(&env, vec![parent, child]);
    }
}

#[test]
fn gup_fast_pins_an_exclusive_huge_page_from_its_pmd() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(1);
    let mut s = env.space();
    let va = map_anon(&env, &mut s, 1, HUGE_ANON).unwrap();
    env.write(&mut s, va, 1).unwrap();
    let head = pmd(&env, &s, va).frame();
    let mut pages = [None, None];
    let n = crate::gup::pin_user_pages_fast(
        &env.mm,
        &mut s,
        va + 10 * PAGE,
        FollFlags::WRITE | FollFlags::LONGTERM,
        &mut pages,
    )
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(env.mm.stats().gup_fast_pages, 2);
    assert_eq!(env.mm.frames().folio_pincount(head), 2);
    // munmap while pinned: the page stays out of the pool until the pins go.
    s.munmap(&env.mm, va, HPAGE_SIZE as usize).unwrap();
    assert_eq!(counts(&env).free, 0);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    assert_eq!(counts(&env).free, 1);
    finish(&env, vec![s]);
}

#[test]
fn shared_file_mappings_share_pages_and_private_ones_copy_file_pages() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(4);
    let file = HugetlbFile::new(2 * HPAGE_SIZE, "/memfd:t (deleted)");
    let mut a = env.space();
    let mut b = env.space();
    let shared = MapFlags::SHARED | MapFlags::FIXED;
    let va = VirtAddr::new(BASE);
    a.mmap_hugetlb(&env.mm, va, PAGE as usize, Prot::RW, shared, &file, 0, true)
        .unwrap();
    assert_eq!(counts(&env).resv, 1, "one page of the file promised");
    b.mmap_hugetlb(
        &env.mm,
        va,
        (2 * HPAGE_SIZE) as usize,
        Prot::RW,
        shared,
        &file,
        0,
        true,
    )
    .unwrap();
    assert_eq!(counts(&env).resv, 2, "the second page promised once");
    env.write(&mut a, va + 9 * PAGE, 42).unwrap();
    assert_eq!(
        env.read(&mut b, va + 9 * PAGE),
        Ok(42),
        "one page, two mappings"
    );
    assert_eq!((counts(&env).resv, file.cached_pages()), (1, 1));
    // A private mapping reads the file's page, and copies it whole on a write.
    let mut c = env.space();
    c.mmap_hugetlb(
        &env.mm,
        va,
        HPAGE_SIZE as usize,
        Prot::RW,
        MapFlags::PRIVATE | MapFlags::FIXED,
        &file,
        0,
        true,
    )
    .unwrap();
    assert_eq!(env.read(&mut c, va + 9 * PAGE), Ok(42));
    assert_eq!(pmd(&env, &c, va).frame(), pmd(&env, &a, va).frame());
    env.write(&mut c, va + 9 * PAGE, 43).unwrap();
    assert_ne!(pmd(&env, &c, va).frame(), pmd(&env, &a, va).frame());
    assert_eq!(
        env.read(&mut a, va + 9 * PAGE),
        Ok(42),
        "the file is untouched"
    );
    env.check(&[&a, &b, &c]);
    // Offsets that are not huge-page multiples are EINVAL; so is truncation to one.
    assert_eq!(
        c.mmap_hugetlb(
            &env.mm,
            va,
            PAGE as usize,
            Prot::RW,
            shared,
            &file,
            PAGE,
            true
        ),
        Err(MmError::Inval)
    );
    assert_eq!(file.set_size(&env.mm, PAGE), Err(MmError::Inval));
    assert_eq!(file.read_at(&env.mm, 9 * PAGE, &mut [0u8; 1]), 1);
    HugetlbFile::put(file, &env.mm);
    finish(&env, vec![a, b, c]);
}

#[test]
fn dontneed_rounds_the_end_down_and_refuses_an_unaligned_start() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(2);
    let mut s = env.space();
    let va = map_anon(&env, &mut s, 2, HUGE_ANON).unwrap();
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + HPAGE_SIZE, 2).unwrap();
    use crate::madvise::Advice;
    assert_eq!(
        s.madvise(&env.mm, va + PAGE, PAGE as usize, Advice::DontNeed),
        Err(MmError::Inval)
    );
    // One page named: nothing dropped (Linux rounds down).
    s.madvise(&env.mm, va, PAGE as usize, Advice::DontNeed)
        .unwrap();
    assert_eq!(env.read(&mut s, va), Ok(1));
    // A page and a half: the first huge page goes, the second stays.
    s.madvise(
        &env.mm,
        va,
        (HPAGE_SIZE + 4 * PAGE) as usize,
        Advice::DontNeed,
    )
    .unwrap();
    assert_eq!(counts(&env).free, 1);
    assert_eq!(env.read(&mut s, va + HPAGE_SIZE), Ok(2));
    assert_eq!(env.read(&mut s, va), Ok(0), "refaulted zeroed");
    env.check(&[&s]);
    finish(&env, vec![s]);
}

#[test]
fn madvise_and_mlock_never_cut_a_huge_page() {
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max(2);
    let mut s = env.space();
    let va = map_anon(&env, &mut s, 2, HUGE_ANON).unwrap();
    env.write(&mut s, va + HPAGE_SIZE, 3).unwrap();
    use crate::madvise::Advice;
    assert_eq!(
        s.madvise(&env.mm, va, PAGE as usize, Advice::DontFork),
        Err(MmError::Inval),
        "a flag advice would split inside a huge page"
    );
    s.mlock(
        &env.mm,
        va + HPAGE_SIZE + PAGE,
        PAGE as usize,
        crate::mlock::LockMode::Populate,
        u64::MAX,
    )
    .unwrap();
    for v in s.vmas() {
        assert!(v.start().as_u64() % HPAGE_SIZE == 0 && v.end().as_u64() % HPAGE_SIZE == 0);
    }
    assert_eq!(env.read(&mut s, va + HPAGE_SIZE), Ok(3));
    env.check(&[&s]);
    finish(&env, vec![s]);
}

/// A space with one hugetlb page mapped (a pool of one) and an empty PT where that page
/// belongs (no path leaves one today: a zap unlinks every empty table of its range; this stands
/// for one that would).
fn mapped_over_a_stray_pt(env: &Env) -> (AddressSpace, VirtAddr) {
    env.mm.frames().hugetlb_set_max(1);
    let mut s = env.space();
    let va = map_anon(env, &mut s, 1, HUGE_ANON).unwrap();
    assert!(s.page_table(&env.mm).walk_alloc(va).is_some());
    let slot = s.page_table(&env.mm).walk_pmd(va).unwrap().load();
    assert!(slot.is_present() && !slot.is_huge(), "a PT at {va:#x}");
    (s, va)
}

#[test]
fn fault_under_a_stray_empty_pt_maps_the_huge_page_not_a_small_one() {
    let env = env(Era::Y2023);
    let (mut s, va) = mapped_over_a_stray_pt(&env);
    let tables = env.mm.stats().pagetable_pages;
    assert_eq!(env.read(&mut s, va + 3 * PAGE), Ok(0));
    let leaf = pmd(&env, &s, va);
    assert!(env.flags(leaf.frame()).contains(FrameFlags::HUGETLB));
    assert_eq!(
        env.mm.stats().pagetable_pages,
        tables - 1,
        "the stray PT was freed"
    );
    env.write(&mut s, va + 400 * PAGE, 9).unwrap();
    assert_eq!(pmd(&env, &s, va).frame(), leaf.frame());
    assert_eq!(env.read(&mut s, va + 400 * PAGE), Ok(9));
    env.check(&[&s]);
    finish(&env, vec![s]);
}

#[test]
fn gup_under_a_stray_empty_pt_pins_the_huge_page() {
    let env = env(Era::Y2023);
    let (mut s, va) = mapped_over_a_stray_pt(&env);
    let mut pages = [None];
    let n = crate::gup::pin_user_pages_fast(
        &env.mm,
        &mut s,
        va + 10 * PAGE,
        FollFlags::WRITE | FollFlags::LONGTERM,
        &mut pages,
    )
    .unwrap();
    assert_eq!(n, 1);
    let head = pmd(&env, &s, va).frame();
    assert_eq!(env.mm.frames().folio_pincount(head), 1);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    env.check(&[&s]);
    finish(&env, vec![s]);
}
