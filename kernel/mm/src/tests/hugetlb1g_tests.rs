//! 1 GiB hugetlb pages (issue 14, huge3): PUD leaves under the same rules as 2 MiB hugetlb
//! PMDs: fault, private COW of the whole GiB, shared pages staying shared over fork, GUP slow
//! and fast on the PUD with one reference per subpage, fork copying a pinned page, mprotect,
//! munmap, and every page and frame back at the end.
//!
//! Each test emulates 3 GiB of physical memory (the first GiB holds frame 0, so two aligned
//! GiBs are free) and touches up to 2 of them: the tests take one lock so that they run one
//! at a time.

use alloc::vec;

use super::{Env, BASE, PAGE};
use crate::addr::VirtAddr;
use crate::era::Era;
use crate::error::MmError;
use crate::foll::FollFlags;
use crate::frame::{FrameFlags, HugeSize, GIGANTIC_FRAMES};
use crate::hugetlb::{set_gigantic_supported, HugetlbFile};
use crate::mmap::MapFlags;
use crate::pagetable::{Pte, HPAGE_PUD_SIZE};
use crate::vma::Prot;

pub(super) static ONE_AT_A_TIME: spin::Mutex<()> = spin::Mutex::new(());

const GIB: u64 = HPAGE_PUD_SIZE;
/// `MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_FIXED | MAP_HUGE_1GB`.
const HUGE_1G_ANON: MapFlags = MapFlags::from_linux(0x22 | 0x4_0000 | 0x10 | (30 << 26));

fn env(era: Era) -> Env {
    set_gigantic_supported(true);
    let env = Env::with_frames(3 * GIGANTIC_FRAMES);
    env.mm.set_era(era);
    env
}

fn pud(env: &Env, s: &crate::aspace::AddressSpace, va: VirtAddr) -> Pte {
    let p = s.page_table(&env.mm).walk_pud(va).unwrap().load();
    assert!(p.is_huge(), "a PUD leaf at {va:#x}");
    p
}

fn finish(env: &Env, spaces: vec::Vec<crate::aspace::AddressSpace>) {
    for s in spaces {
        s.exit(&env.mm);
    }
    let c = env.mm.frames().hugetlb_counts_of(HugeSize::Pud);
    assert_eq!((c.resv, c.free), (0, c.total), "every 1 GiB page back");
    env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 0);
    env.finish(vec![]);
}

#[test]
fn gigantic_private_page_faults_cows_whole_and_pins_per_subpage() {
    let _one = ONE_AT_A_TIME.lock();
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 5);
    assert_eq!(env.mm.frames().hugetlb_counts_of(HugeSize::Pud).total, 2);
    let mut parent = env.space();
    let va = parent
        .mmap(
            &env.mm,
            VirtAddr::new(4 * GIB),
            GIB as usize,
            Prot::RW,
            HUGE_1G_ANON,
        )
        .unwrap();
    assert_eq!(va.as_u64(), 4 * GIB);
    // A write fault maps a zeroed exclusive anon 1 GiB folio writable with one PUD leaf.
    for (i, v) in [(0u64, 1u64), (12345, 2), (GIGANTIC_FRAMES as u64 - 1, 3)] {
        env.write(&mut parent, va + i * PAGE, v).unwrap();
    }
    let leaf = pud(&env, &parent, va);
    assert!(leaf.is_writable());
    // Clearing the GiB reported progress every 2 MiB (the kernel's soft-lockup watchdog fired
    // during a 1 GiB clear before it did).
    assert_eq!(env.mm.arch().long_work_reports(), 511);
    let head = leaf.frame();
    assert_eq!(
        env.mm.frames().folio_order(head),
        crate::frame::GIGANTIC_ORDER
    );
    assert!(env
        .flags(head + 200_000 * PAGE)
        .contains(FrameFlags::HUGETLB | FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(env.frame(&parent, va + 12345 * PAGE), head + 12345 * PAGE);
    env.check(&[&parent]);
    // Cuts inside the GiB are EINVAL, at 2 MiB too.
    assert_eq!(
        parent.munmap(&env.mm, va + (2 << 20), 2 << 20),
        Err(MmError::Inval)
    );
    // GUP slow and fast on the PUD: each subpage a reference and a pin on the folio.
    let before = env.mm.frames().folio_refcount(head);
    let mut slow = [None, None];
    crate::gup::pin_user_pages(
        &env.mm,
        &mut parent,
        va + 7 * PAGE,
        FollFlags::WRITE | FollFlags::LONGTERM,
        &mut slow,
    )
    .unwrap();
    let mut fast = [None, None, None];
    assert_eq!(
        crate::gup::pin_user_pages_fast_only(
            &env.mm,
            &parent.shared,
            va + 100 * PAGE,
            FollFlags::WRITE | FollFlags::LONGTERM,
            &mut fast,
        ),
        Ok(3),
        "GUP-fast takes the PUD leaf's subpages"
    );
    assert_eq!(env.mm.frames().folio_pincount(head), 5);
    assert_eq!(env.mm.frames().folio_refcount(head), before + 5);
    assert_eq!(
        fast[1].as_ref().unwrap().frame(),
        head + 101 * PAGE,
        "the subpage's frame"
    );
    // fork with the page pinned copies the whole GiB into the child (fork_must_copy).
    let mut child = parent.fork(&env.mm).unwrap();
    let child_head = pud(&env, &child, va).frame();
    assert_ne!(child_head, head);
    assert!(
        pud(&env, &parent, va).is_writable(),
        "the pinned page stays the parent's"
    );
    assert_eq!(env.read(&mut child, va + 12345 * PAGE), Ok(2));
    assert_eq!(
        env.read(&mut child, va + (GIGANTIC_FRAMES as u64 - 1) * PAGE),
        Ok(3)
    );
    env.check(&[&parent, &child]);
    crate::gup::unpin_user_pages(&env.mm, &mut slow);
    crate::gup::unpin_user_pages(&env.mm, &mut fast);
    assert_eq!(env.mm.frames().folio_refcount(head), before);
    child.exit(&env.mm);
    // Unpinned, fork shares the leaf write-protected; the child's write copies the whole GiB
    // (the pool's second page), the parent's then reuses its own.
    let mut child = parent.fork(&env.mm).unwrap();
    assert_eq!(pud(&env, &child, va).frame(), head);
    assert!(!pud(&env, &parent, va).is_writable());
    assert!(!env.flags(head).contains(FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(env.mm.frames().entire_mapcount(head), 2);
    env.check(&[&parent, &child]);
    let copies = env.mm.stats().hugetlb_cow_copies;
    env.write(&mut child, va + 12345 * PAGE, 20).unwrap();
    assert_eq!(env.mm.stats().hugetlb_cow_copies, copies + 1);
    assert_ne!(pud(&env, &child, va).frame(), head);
    assert_eq!(
        env.read(&mut child, va),
        Ok(1),
        "every byte of the GiB came along"
    );
    assert_eq!(env.read(&mut parent, va + 12345 * PAGE), Ok(2));
    env.write(&mut parent, va, 10).unwrap();
    assert_eq!(pud(&env, &parent, va).frame(), head, "reused: mapped once");
    assert_eq!(env.mm.stats().hugetlb_cow_copies, copies + 1);
    // mprotect rewrites the PUD in place.
    parent
        .mprotect(&env.mm, va, GIB as usize, Prot::READ)
        .unwrap();
    assert!(!pud(&env, &parent, va).is_writable());
    assert!(env.write(&mut parent, va, 11).is_err());
    env.check(&[&parent, &child]);
    parent.munmap(&env.mm, va, GIB as usize).unwrap();
    assert!(parent
        .page_table(&env.mm)
        .walk_pud(va)
        .is_none_or(|p| p.load().is_empty()));
    env.check(&[&parent, &child]);
    finish(&env, vec![parent, child]);
}

#[test]
fn gigantic_shared_page_stays_shared_over_fork() {
    let _one = ONE_AT_A_TIME.lock();
    let env = env(Era::Y2023);
    env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 1);
    let file = HugetlbFile::new_sized(HugeSize::Pud, GIB, "/memfd:g (deleted)");
    assert_eq!(file.page_bytes(), GIB);
    let mut parent = env.space();
    let va = parent
        .mmap_hugetlb(
            &env.mm,
            VirtAddr::new(BASE),
            GIB as usize,
            Prot::RW,
            MapFlags::SHARED,
            &file,
            0,
            true,
        )
        .unwrap();
    assert!(va.as_u64().is_multiple_of(GIB), "placed 1 GiB-aligned");
    env.write(&mut parent, va + 5 * PAGE, 5).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    let head = pud(&env, &parent, va).frame();
    assert_eq!(pud(&env, &child, va).frame(), head);
    env.write(&mut child, va + 5 * PAGE, 6).unwrap();
    assert_eq!(
        env.read(&mut parent, va + 5 * PAGE),
        Ok(6),
        "shared stays shared"
    );
    assert_eq!(env.mm.stats().hugetlb_cow_copies, 0);
    env.check(&[&parent, &child]);
    // A 2 MiB-multiple length or offset is not enough for a 1 GiB file.
    assert_eq!(file.set_size(&env.mm, 2 << 20), Err(MmError::Inval));
    HugetlbFile::put(file, &env.mm);
    finish(&env, vec![parent, child]);
}

#[test]
fn map_huge_1gb_is_einval_without_gigantic_support() {
    let _one = ONE_AT_A_TIME.lock();
    set_gigantic_supported(false);
    assert_eq!(crate::hugetlb::huge_size_of(30 << 26), None);
    assert_eq!(crate::hugetlb::huge_size_of(21 << 26), Some(HugeSize::Pmd));
    let env = Env::new();
    let mut s = env.space();
    assert_eq!(
        s.mmap(
            &env.mm,
            VirtAddr::new(4 * GIB),
            GIB as usize,
            Prot::RW,
            HUGE_1G_ANON
        ),
        Err(MmError::Inval)
    );
    set_gigantic_supported(true);
    assert_eq!(crate::hugetlb::huge_size_of(30 << 26), Some(HugeSize::Pud));
    env.finish(vec![s]);
}

/// The era rules on a PUD leaf (the same named functions as for 2 MiB): a long-term R/O pin
/// of a fork-shared anon 1 GiB page unshares it whole from 2022 (`gup_must_unshare`,
/// `hugetlb_wp` with `Unshare`), so the pin sees the parent's later write; in 2020 it pins the
/// shared page and the write goes to a copy. `MADV_DONTNEED` must start 1 GiB-aligned.
#[test]
fn gigantic_ro_pin_of_a_shared_page_unshares_it_whole_from_2022() {
    let _one = ONE_AT_A_TIME.lock();
    for (era, unshares) in [(Era::Y2020, false), (Era::Y2023, true)] {
        let env = env(era);
        env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 2);
        let mut parent = env.space();
        let va = parent
            .mmap(
                &env.mm,
                VirtAddr::new(4 * GIB),
                GIB as usize,
                Prot::RW,
                HUGE_1G_ANON,
            )
            .unwrap();
        env.write(&mut parent, va + 5 * PAGE, 5).unwrap();
        assert_eq!(
            parent.madvise(
                &env.mm,
                va + (2 << 20),
                2 << 20,
                crate::madvise::Advice::DontNeed
            ),
            Err(MmError::Inval),
            "MADV_DONTNEED inside the GiB"
        );
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
        env.write(&mut parent, va + 5 * PAGE, 6).unwrap();
        let mut buf = [0u8; 8];
        pages[0].as_ref().unwrap().dma_read(&env.mm, 0, &mut buf);
        assert_eq!(u64::from_le_bytes(buf) == 6, unshares, "era {era:?}");
        assert_eq!(env.read(&mut child, va + 5 * PAGE), Ok(5));
        env.check(&[&parent, &child]);
        crate::gup::unpin_user_pages(&env.mm, &mut pages);
        finish(&env, vec![parent, child]);
    }
}
