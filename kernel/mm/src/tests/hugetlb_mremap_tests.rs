//! hugetlb and mremap (Linux 5.17+) and hugetlb in smaps (issue 14, huge4): the errnos of a
//! hugetlb mremap, moves of whole 2 MiB and 1 GiB leaves with their bytes, frames and private
//! reservations, shrinking, and `Shared_Hugetlb`/`Private_Hugetlb` instead of `Rss`.

use alloc::vec;

use super::{Env, BASE, PAGE};
use crate::addr::VirtAddr;
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::error::MmError;
use crate::folio::HPAGE_PMD_NR;
use crate::frame::{HugeCounts, HugeSize, GIGANTIC_FRAMES};
use crate::hugetlb::{set_gigantic_supported, HPAGE_SIZE};
use crate::mmap::MapFlags;
use crate::mremap::MremapFlags;
use crate::pagetable::HPAGE_PUD_SIZE;
use crate::vma::Prot;

/// `MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_FIXED`.
const HUGE_ANON: MapFlags = MapFlags::from_linux(0x22 | 0x4_0000 | 0x10);
const MOVE: MremapFlags = MremapFlags::MAYMOVE;
const FIXED: MremapFlags = MremapFlags::from_linux(3);
const H: u64 = HPAGE_SIZE;

fn env() -> Env {
    let env = Env::with_frames(12 * HPAGE_PMD_NR);
    env.mm.set_era(Era::Y2023);
    env
}

fn counts(env: &Env) -> HugeCounts {
    env.mm.frames().hugetlb_counts()
}

fn huge_leaf(env: &Env, s: &AddressSpace, va: VirtAddr) -> Option<crate::addr::PhysAddr> {
    let p = s.page_table(&env.mm).walk_pmd(va)?.load();
    p.is_huge().then(|| p.frame())
}

fn finish(env: &Env, spaces: vec::Vec<AddressSpace>) {
    for s in spaces {
        s.exit(&env.mm);
    }
    let c = counts(env);
    assert_eq!(
        (c.resv, c.free),
        (0, c.total),
        "every page and promise back"
    );
    env.mm.frames().hugetlb_set_max(0);
    env.finish(vec![]);
}

#[test]
fn hugetlb_mremap_errnos_are_linuxs() {
    let env = env();
    env.mm.frames().hugetlb_set_max(4);
    let mut s = env.space();
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            2 * H as usize,
            Prot::RW,
            HUGE_ANON,
        )
        .unwrap();
    let a = va.as_u64();
    let target = BASE + 8 * H;
    let cases: [(&str, u64, u64, u64, MremapFlags, u64, MmError); 7] = [
        (
            "grow in place",
            a,
            2 * H,
            3 * H,
            MremapFlags::default(),
            0,
            MmError::Inval,
        ),
        ("grow, may move", a, 2 * H, 3 * H, MOVE, 0, MmError::Inval),
        ("grow by 4 KiB", a, H, H + PAGE, MOVE, 0, MmError::Inval),
        ("old_len 0", a, 0, H, MOVE, 0, MmError::Inval),
        (
            "unaligned address",
            a + PAGE,
            PAGE,
            PAGE,
            FIXED,
            target,
            MmError::Inval,
        ),
        (
            "unaligned target",
            a,
            H,
            H,
            FIXED,
            target + PAGE,
            MmError::Inval,
        ),
        (
            "MREMAP_DONTUNMAP",
            a,
            H,
            H,
            MremapFlags::from_linux(5),
            0,
            MmError::Inval,
        ),
    ];
    for (what, addr, old, new, flags, to, err) in cases {
        assert_eq!(
            s.mremap(&env.mm, addr, old, new, flags, to),
            Err(err),
            "{what}"
        );
    }
    // Linux checks the target's alignment even when no MREMAP_FIXED uses it.
    assert_eq!(
        s.mremap(&env.mm, a, 2 * H, H, MremapFlags::default(), PAGE),
        Err(MmError::Inval)
    );
    // Same size without MREMAP_FIXED is a no-op.
    assert_eq!(s.mremap(&env.mm, a, H, H, MOVE, 0), Ok(va));
    // 4 KiB lengths round up to a huge page: this moves the whole first page.
    assert_eq!(
        s.mremap(&env.mm, a, PAGE, PAGE, FIXED, target),
        Ok(VirtAddr::new(target))
    );
    assert!(s.find_vma(va).is_none() && s.find_vma(va + H).is_some());
    assert_eq!(counts(&env).resv, 2, "no page touched: both promises kept");
    env.check(&[&s]);
    finish(&env, vec![s]);
}

#[test]
fn hugetlb_mremap_moves_whole_pages_with_their_promises_and_shrinks() {
    let env = env();
    env.mm.frames().hugetlb_set_max(4);
    let mut s = env.space();
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            3 * H as usize,
            Prot::RW,
            HUGE_ANON,
        )
        .unwrap();
    env.write(&mut s, va + 5 * PAGE, 55).unwrap();
    env.write(&mut s, va + H + 7 * PAGE, 77).unwrap();
    let (head0, head1) = (
        huge_leaf(&env, &s, va).unwrap(),
        huge_leaf(&env, &s, va + H).unwrap(),
    );
    assert_eq!((counts(&env).resv, counts(&env).free), (1, 2));
    // Move the middle and the untouched last page away: a leaf moves whole, the same frame
    // at the new place, the untouched page's promise with it.
    let target = VirtAddr::new(BASE + 16 * H);
    assert_eq!(
        s.mremap(
            &env.mm,
            (va + H).as_u64(),
            2 * H,
            2 * H,
            FIXED,
            target.as_u64()
        ),
        Ok(target)
    );
    assert_eq!(huge_leaf(&env, &s, target), Some(head1));
    assert!(huge_leaf(&env, &s, va + H).is_none());
    assert_eq!(env.read(&mut s, target + 7 * PAGE), Ok(77));
    assert_eq!(
        huge_leaf(&env, &s, va),
        Some(head0),
        "the unmoved page stays"
    );
    assert_eq!(
        (counts(&env).resv, counts(&env).free),
        (1, 2),
        "the move kept the promise (nothing released, nothing taken)"
    );
    env.check(&[&s]);
    // The moved, untouched page faults in on its promise.
    env.write(&mut s, target + H, 9).unwrap();
    assert_eq!((counts(&env).resv, counts(&env).free), (0, 1));
    // Shrinking gives the tail page back.
    assert_eq!(
        s.mremap(
            &env.mm,
            target.as_u64(),
            2 * H,
            H,
            MremapFlags::default(),
            0
        ),
        Ok(target)
    );
    assert_eq!(counts(&env).free, 2);
    // A moved private page still copies whole on fork + write.
    let mut child = s.fork(&env.mm).unwrap();
    env.write(&mut child, target, 1).unwrap();
    assert_eq!(env.read(&mut s, target + 7 * PAGE), Ok(77));
    assert_eq!(env.read(&mut child, target + 7 * PAGE), Ok(77));
    env.check(&[&s, &child]);
    finish(&env, vec![s, child]);
}

#[test]
fn smaps_counts_hugetlb_pages_apart_shared_while_forked() {
    let env = env();
    env.mm.frames().hugetlb_set_max(3);
    let mut s = env.space();
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            2 * H as usize,
            Prot::RW,
            HUGE_ANON,
        )
        .unwrap();
    assert!(s.smaps(&env.mm).is_empty(), "nothing mapped yet");
    env.write(&mut s, va, 1).unwrap();
    let c = s.smaps(&env.mm)[&va];
    assert_eq!((c.private_hugetlb, c.shared_hugetlb), (H, 0));
    assert_eq!(
        (c.rss, c.pss(), c.anonymous, c.anon_huge, c.private_dirty),
        (0, 0, 0, 0, 0),
        "hugetlb pages are not Rss, Anonymous or AnonHugePages"
    );
    let child = s.fork(&env.mm).unwrap();
    for space in [&s, &child] {
        let c = space.smaps(&env.mm)[&va];
        assert_eq!(
            (c.private_hugetlb, c.shared_hugetlb),
            (0, H),
            "mapped twice"
        );
    }
    // The parent's write copies the page: each side maps its own once.
    env.write(&mut s, va + PAGE, 2).unwrap();
    for space in [&s, &child] {
        let c = space.smaps(&env.mm)[&va];
        assert_eq!((c.private_hugetlb, c.shared_hugetlb), (H, 0));
    }
    finish(&env, vec![s, child]);
}

#[test]
fn gigantic_mremap_moves_the_pud_leaf_and_smaps_counts_it() {
    // 3 GiB of emulated memory: one such test at a time (hugetlb1g_tests' lock).
    let _one = super::hugetlb1g_tests::ONE_AT_A_TIME.lock();
    set_gigantic_supported(true);
    let env = Env::with_frames(3 * GIGANTIC_FRAMES);
    env.mm.set_era(Era::Y2023);
    const GIB: u64 = HPAGE_PUD_SIZE;
    let flags = MapFlags::from_linux(0x22 | 0x4_0000 | 0x10 | (30 << 26));
    env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 2);
    let mut s = env.space();
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(4 * GIB),
            GIB as usize,
            Prot::RW,
            flags,
        )
        .unwrap();
    env.write(&mut s, va + 12345 * PAGE, 5).unwrap();
    let head = s.page_table(&env.mm).walk_pud(va).unwrap().load().frame();
    let c = s.smaps(&env.mm)[&va];
    assert_eq!((c.private_hugetlb, c.rss), (GIB, 0));
    // 2 MiB alignment is not enough for a 1 GiB mapping, nor is growing by 2 MiB allowed.
    let target = 8 * GIB;
    assert_eq!(
        s.mremap(&env.mm, va.as_u64(), GIB, GIB, FIXED, target + H),
        Err(MmError::Inval)
    );
    assert_eq!(
        s.mremap(&env.mm, va.as_u64(), GIB, GIB + H, MOVE, 0),
        Err(MmError::Inval)
    );
    assert_eq!(
        s.mremap(&env.mm, va.as_u64(), GIB, GIB, FIXED, target),
        Ok(VirtAddr::new(target))
    );
    let moved = s
        .page_table(&env.mm)
        .walk_pud(VirtAddr::new(target))
        .unwrap()
        .load();
    assert!(moved.is_huge() && moved.frame() == head);
    assert_eq!(
        env.read(&mut s, VirtAddr::new(target + 12345 * PAGE)),
        Ok(5)
    );
    assert!(s.find_vma(va).is_none());
    env.check(&[&s]);
    s.exit(&env.mm);
    let c = env.mm.frames().hugetlb_counts_of(HugeSize::Pud);
    assert_eq!((c.resv, c.free), (0, c.total), "every 1 GiB page back");
    env.mm.frames().hugetlb_set_max_of(HugeSize::Pud, 0);
    env.finish(vec![]);
}
