//! mTHP (issue 14): anonymous large folios of 16 KiB..1 MiB mapped by several PTEs
//! (`mthp.rs`): the controls, the fault, and COW, fork, pins, GUP-fast, partial munmap,
//! mprotect, mremap and the deferred split on them.

use alloc::vec;

use super::{Env, ANON, BASE, PAGE};
use crate::addr::{PhysAddr, VirtAddr};
use crate::aspace::AddressSpace;
use crate::era::Era;
use crate::foll::FollFlags;
use crate::frame::FrameFlags;
use crate::huge_memory::ThpEnabled;
use crate::madvise::Advice;
use crate::mthp::{order_of_kb, SizeEnabled};
use crate::pagemap::{PM_PFRAME_MASK, PM_PRESENT};
use crate::vma::Prot;

use super::thp_tests::{env, pmd};

/// 64 KiB: order 4, 16 subpages.
const O64: u32 = 4;
const N64: u64 = 16;

/// `len` bytes of private anon memory at the 2 MiB-aligned `BASE`.
fn map(env: &Env, s: &mut AddressSpace, len: u64) -> VirtAddr {
    s.mmap(
        &env.mm,
        VirtAddr::new(BASE),
        len as usize,
        Prot::RW,
        ANON | crate::mmap::MapFlags::FIXED,
    )
    .expect("mmap")
}

fn enable(env: &Env, order: u32, v: SizeEnabled) {
    env.mm.thp().sizes.set_enabled(order, v);
}

fn is_small(env: &Env, frame: PhysAddr) -> bool {
    !env.flags(frame)
        .intersects(FrameFlags::HEAD | FrameFlags::TAIL)
}

/// A 64 KiB mTHP at `va` with subpage `i` holding `i + 1`.
fn mthp_with_data(env: &Env, s: &mut AddressSpace) -> (VirtAddr, PhysAddr) {
    enable(env, O64, SizeEnabled::Always);
    let va = map(env, s, 2 << 20);
    for i in 0..N64 {
        env.write(s, va + i * PAGE, i + 1).unwrap();
    }
    let head = env.frame(s, va);
    assert_eq!(env.mm.frames().folio_order(head), O64);
    (va, head)
}

#[test]
fn sizes_and_defaults_follow_linux() {
    let env = env();
    let sizes = &env.mm.thp().sizes;
    for (kb, order) in [(16, 2), (64, 4), (1024, 8), (2048, 9)] {
        assert_eq!(order_of_kb(kb), Some(order));
    }
    assert_eq!(order_of_kb(8), None, "order 1 has no directory");
    assert_eq!(order_of_kb(4096), None);
    assert_eq!(order_of_kb(48), None);
    assert_eq!(sizes.enabled(9), SizeEnabled::Inherit);
    assert_eq!(sizes.enabled(4), SizeEnabled::Never);
    assert!(!sizes.any(), "no mTHP by default");
    let mut out = alloc::string::String::new();
    sizes.show_enabled(4, &mut out);
    assert_eq!(out, "always inherit madvise [never]\n");
    assert!(sizes.store_enabled(4, "sometimes").is_err());
    sizes.store_enabled(4, "inherit\n").unwrap();
    assert!(sizes.any());
    sizes.store_enabled(4, "never").unwrap();
    assert!(!sizes.any());
    // hugepages-2048kB decides the PMD THP: `never` there wins over MADV_HUGEPAGE.
    let mut s = env.space();
    let va = map(&env, &mut s, 2 << 20);
    s.madvise(&env.mm, va, 2 << 20, Advice::HugePage).unwrap();
    sizes.store_enabled(9, "never").unwrap();
    env.write(&mut s, va, 1).unwrap();
    assert!(pmd(&env, &s, va).is_none());
    // ... and `always` there gives THPs even under the top-level `never`.
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    env.mm.thp().set_enabled(ThpEnabled::Never);
    sizes.store_enabled(9, "always").unwrap();
    // Elsewhere: the first fault left a PT at BASE, which keeps PMDs out there.
    let va = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE + (4 << 20)),
            2 << 20,
            Prot::RW,
            ANON | crate::mmap::MapFlags::FIXED,
        )
        .unwrap();
    // The hint lets the fault reassemble a free block (defrag=madvise); under `inherit` the
    // top-level `never` would refuse it.
    s.madvise(&env.mm, va, 2 << 20, Advice::HugePage).unwrap();
    env.write(&mut s, va, 1).unwrap();
    assert!(pmd(&env, &s, va).is_some());
    env.finish(vec![s]);
}

#[test]
fn write_fault_maps_a_naturally_aligned_folio_with_one_pte_per_subpage() {
    let env = env();
    let mut s = env.space();
    enable(&env, O64, SizeEnabled::Always);
    let va = map(&env, &mut s, 2 << 20);
    // A fault in the middle of the second 64 KiB.
    env.write(&mut s, va + 21 * PAGE, 0x77).unwrap();
    let head = env.frame(&s, va + 16 * PAGE);
    assert!(head.pfn().is_multiple_of(16), "naturally aligned");
    let frames = env.mm.frames();
    assert_eq!(frames.folio_order(head), O64);
    assert_eq!(frames.folio_refcount(head), 16, "one reference per PTE");
    assert_eq!(frames.entire_mapcount(head), 0);
    let faults = s.minor_faults();
    for i in 0..N64 {
        let a = va + (16 + i) * PAGE;
        let pte = env.pte(&s, a);
        assert!(pte.is_writable() && pte.is_dirty());
        assert_eq!(pte.frame(), head + i * PAGE, "contiguous PFNs");
        let pm = s.pagemap_entry(&env.mm, a);
        assert!(pm & PM_PRESENT != 0);
        assert_eq!(pm & PM_PFRAME_MASK, (head + i * PAGE).pfn() as u64);
        assert_eq!(frames.page_mapcount(head + i * PAGE), 1);
        assert!(env.exclusive(&s, a));
        let want = if i == 5 { 0x77 } else { 0 };
        assert_eq!(env.read(&mut s, a), Ok(want));
    }
    assert_eq!(s.minor_faults(), faults, "one fault mapped all 16");
    assert!(
        s.translate(&env.mm, va).is_none(),
        "the first 64 KiB is untouched"
    );
    let st = env.mm.thp().sizes.stats(O64);
    assert_eq!((st.anon_fault_alloc, st.nr_anon), (1, 1));
    assert_eq!(env.mm.stats().anon_pages, N64);
    assert_eq!(env.mm.stats().anon_thps, 0, "not a PMD THP");
    let sm = s.smaps(&env.mm);
    let c = sm.values().next().unwrap();
    assert_eq!((c.anonymous, c.anon_huge), (N64 * PAGE, 0));
    assert_eq!(s.rss_pages(), N64);
    env.check(&[&s]);
    // A read fault maps the 4 KiB zero page, as Linux.
    assert_eq!(env.read(&mut s, va + 40 * PAGE), Ok(0));
    assert_eq!(env.frame(&s, va + 40 * PAGE), env.mm.zero_page());
    env.finish(vec![s]);
    assert_eq!(env.mm.thp().sizes.stats(O64).nr_anon, 0);
}

#[test]
fn largest_fitting_size_first_then_smaller_then_4k() {
    let env = env();
    let mut s = env.space();
    for o in [2, 4, 8] {
        enable(&env, o, SizeEnabled::Always);
    }
    // 1 MiB + 64 KiB + 16 KiB + 4 KiB: each range fits a different size.
    let len = (256 + 16 + 4 + 1) * PAGE;
    let va = map(&env, &mut s, len);
    env.write(&mut s, va, 1).unwrap();
    assert_eq!(env.mm.frames().folio_order(env.frame(&s, va)), 8);
    env.write(&mut s, va + 256 * PAGE, 1).unwrap();
    assert_eq!(
        env.mm.frames().folio_order(env.frame(&s, va + 256 * PAGE)),
        4
    );
    env.write(&mut s, va + 272 * PAGE, 1).unwrap();
    assert_eq!(
        env.mm.frames().folio_order(env.frame(&s, va + 272 * PAGE)),
        2
    );
    env.write(&mut s, va + 276 * PAGE, 1).unwrap();
    assert!(
        is_small(&env, env.frame(&s, va + 276 * PAGE)),
        "no size fits the VMA's last page"
    );
    env.check(&[&s]);
    s.munmap(&env.mm, va, len as usize).unwrap();
    // A PTE already in the range forces a smaller size.
    let va = map(&env, &mut s, 2 << 20);
    assert_eq!(env.read(&mut s, va + 3 * PAGE), Ok(0));
    env.write(&mut s, va + 5 * PAGE, 1).unwrap();
    assert_eq!(
        env.mm.frames().folio_order(env.frame(&s, va + 5 * PAGE)),
        2,
        "the zero page's PTE keeps 1 MiB and 64 KiB out"
    );
    env.finish(vec![s]);
}

#[test]
fn madvise_inherit_and_nohugepage_decide_per_vma() {
    let env = env();
    let mut s = env.space();
    enable(&env, O64, SizeEnabled::Madvise);
    let va = map(&env, &mut s, 2 << 20);
    env.write(&mut s, va, 1).unwrap();
    assert!(is_small(&env, env.frame(&s, va)), "madvise without a hint");
    s.madvise(&env.mm, va + (1 << 20), 1 << 20, Advice::HugePage)
        .unwrap();
    env.write(&mut s, va + (1 << 20), 1).unwrap();
    assert_eq!(
        env.mm.frames().folio_order(env.frame(&s, va + (1 << 20))),
        O64
    );
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    // inherit under `always`, but never in a MADV_NOHUGEPAGE VMA.
    enable(&env, O64, SizeEnabled::Inherit);
    env.mm.thp().set_enabled(ThpEnabled::Always);
    let va = map(&env, &mut s, 1 << 20);
    env.write(&mut s, va, 1).unwrap();
    assert_eq!(env.mm.frames().folio_order(env.frame(&s, va)), O64);
    s.madvise(&env.mm, va, 1 << 20, Advice::NoHugePage).unwrap();
    env.write(&mut s, va + 32 * PAGE, 1).unwrap();
    assert!(is_small(&env, env.frame(&s, va + 32 * PAGE)));
    env.finish(vec![s]);
}

#[test]
fn fork_shares_subpages_and_each_write_copies_4k_in_every_era() {
    for era in [Era::Y2009, Era::Y2016, Era::Y2020, Era::Y2022, Era::Y2023] {
        let env = env();
        env.mm.set_era(era);
        let mut parent = env.space();
        let (va, head) = mthp_with_data(&env, &mut parent);
        let mut child = parent.fork(&env.mm).unwrap();
        assert_eq!(env.mm.frames().folio_refcount(head), 32, "{era}");
        assert!(!env.exclusive(&parent, va + 3 * PAGE));
        env.check(&[&parent, &child]);
        env.write(&mut child, va + 3 * PAGE, 0xc0).unwrap();
        env.write(&mut parent, va + 4 * PAGE, 0xa0).unwrap();
        // Each write copied one 4 KiB page; the folio keeps the other subpages.
        assert!(is_small(&env, env.frame(&child, va + 3 * PAGE)), "{era}");
        assert!(is_small(&env, env.frame(&parent, va + 4 * PAGE)), "{era}");
        assert_eq!(env.frame(&parent, va + 3 * PAGE), head + 3 * PAGE);
        assert_eq!(env.frame(&child, va + 4 * PAGE), head + 4 * PAGE);
        assert_eq!(env.mm.frames().folio_refcount(head), 30, "{era}");
        for i in 0..N64 {
            let (p, c) = match i {
                3 => (4, 0xc0),
                4 => (0xa0, 5),
                _ => (i + 1, i + 1),
            };
            assert_eq!(env.read(&mut parent, va + i * PAGE), Ok(p), "{era}");
            assert_eq!(env.read(&mut child, va + i * PAGE), Ok(c), "{era}");
        }
        env.check(&[&parent, &child]);
        // The child goes: each remaining subpage is mapped once; a parent write reuses it
        // (2022+: refcount 1 of the folio is not reached, the exclusive bit is gone, so the
        // page is copied under the refcount rule; 2009/2016 reuse by mapcount).
        child.exit(&env.mm);
        env.write(&mut parent, va + 5 * PAGE, 0x55).unwrap();
        let reused = env.frame(&parent, va + 5 * PAGE) == head + 5 * PAGE;
        assert_eq!(reused, era <= Era::Y2016, "{era}: mapcount rule reuses");
        env.check(&[&parent]);
        env.finish(vec![parent]);
    }
}

#[test]
fn fork_copies_a_pinned_subpage_and_a_long_term_read_pin_unshares() {
    let env = env();
    let mut parent = env.space();
    let (va, head) = mthp_with_data(&env, &mut parent);
    let pin = crate::pin::pin_user_page(&env.mm, &mut parent, va + 2 * PAGE).unwrap();
    assert_eq!(env.mm.frames().folio_pincount(head), 1);
    let mut child = parent.fork(&env.mm).unwrap();
    // The pin count is the folio's (Linux `folio_maybe_dma_pinned`): every exclusive subpage
    // was copied for the child, and the parent keeps the whole folio, exclusive.
    for i in 0..N64 {
        assert!(is_small(&env, env.frame(&child, va + i * PAGE)));
        assert_eq!(env.frame(&parent, va + i * PAGE), head + i * PAGE);
        assert!(env.exclusive(&parent, va + i * PAGE));
        assert_eq!(env.read(&mut child, va + i * PAGE), Ok(i + 1));
    }
    assert_eq!(env.mm.frames().folio_refcount(head), 17);
    env.write(&mut parent, va + 2 * PAGE, 0x99).unwrap();
    let mut buf = [0u8; 8];
    pin.dma_read(&env.mm, 0, &mut buf);
    assert_eq!(
        u64::from_le_bytes(buf),
        0x99,
        "the pin sees the parent's write"
    );
    env.check(&[&parent, &child]);
    pin.unpin(&env.mm);
    // Unpinned: a new fork shares the folio. Make subpage 9 shared for the R/O pin below.
    let mut child = {
        child.exit(&env.mm);
        parent.fork(&env.mm).unwrap()
    };
    assert_eq!(env.frame(&child, va + 9 * PAGE), head + 9 * PAGE, "shared");
    // A long-term R/O pin of a shared subpage unshares it (2022+, GUP-fast falls back).
    let mut pages = [None];
    crate::gup::pin_user_pages_fast(
        &env.mm,
        &mut child,
        va + 9 * PAGE,
        FollFlags::LONGTERM,
        &mut pages,
    )
    .unwrap();
    let ro = pages[0].take().unwrap();
    assert_ne!(ro.frame(), head + 9 * PAGE, "unshared into a copy");
    assert!(env.exclusive(&child, va + 9 * PAGE));
    env.check(&[&parent, &child]);
    ro.unpin(&env.mm);
    env.finish(vec![parent, child]);
}

#[test]
fn gup_fast_pins_subpages_on_the_folio() {
    let env = env();
    let mut s = env.space();
    let (va, head) = mthp_with_data(&env, &mut s);
    let mut pages = [None, None, None, None];
    crate::gup::pin_user_pages_fast(&env.mm, &mut s, va + 6 * PAGE, FollFlags::WRITE, &mut pages)
        .unwrap();
    assert_eq!(env.mm.stats().gup_fast_pages, 4);
    assert_eq!(pages[3].as_ref().unwrap().frame(), head + 9 * PAGE);
    assert_eq!(env.mm.frames().folio_pincount(head), 4);
    assert_eq!(env.mm.frames().folio_refcount(head), 20);
    // The mapping goes; the pins keep the whole folio.
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    assert_eq!(env.mm.frames().folio_refcount(head), 4);
    let mut buf = [0u8; 8];
    pages[0].as_ref().unwrap().dma_read(&env.mm, 0, &mut buf);
    assert_eq!(u64::from_le_bytes(buf), 7);
    env.check(&[&s]);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    assert!(env.mm.frames().meta(head).is_free());
    env.finish(vec![s]);
}

/// GUP-fast takes a run of PTEs mapping consecutive subpages of one folio with one count
/// update each (Linux `try_grab_folio_fast` with `refs`), and a run ends at the folio's end:
/// 36 pages over three 64 KiB folios are 14 + 16 + 6 pins on the three heads, exactly, and
/// the batched unpin gives back each folio's count in one go.
#[test]
fn gup_fast_pins_a_run_per_folio_and_unpins_per_folio() {
    let env = env();
    let mut s = env.space();
    let (va, head) = mthp_with_data(&env, &mut s);
    for i in N64..3 * N64 {
        env.write(&mut s, va + i * PAGE, i + 1).unwrap();
    }
    let heads = [
        head,
        env.frame(&s, va + N64 * PAGE),
        env.frame(&s, va + 2 * N64 * PAGE),
    ];
    for h in heads {
        assert_eq!(env.mm.frames().folio_order(h), O64);
        assert_eq!(env.mm.frames().folio_refcount(h), N64 as u32);
    }
    let mut pages: alloc::vec::Vec<_> = (0..36).map(|_| None).collect();
    let got = crate::gup::pin_user_pages_fast_only(
        &env.mm,
        &s,
        va + 2 * PAGE,
        FollFlags::WRITE,
        &mut pages,
    )
    .unwrap();
    assert_eq!(got, 36);
    for (i, page) in pages.iter().enumerate() {
        let want = env.frame(&s, va + (2 + i as u64) * PAGE);
        assert_eq!(page.as_ref().unwrap().frame(), want, "page {i}");
    }
    for (h, pins) in heads.iter().zip([14, 16, 6]) {
        assert_eq!(env.mm.frames().folio_pincount(*h), pins);
        assert_eq!(env.mm.frames().folio_refcount(*h), N64 as u32 + pins);
    }
    assert_eq!(env.mm.stats().gup_pins_held, 36);
    env.check(&[&s]);
    crate::gup::unpin_user_pages(&env.mm, &mut pages[..20]);
    assert_eq!(env.mm.frames().folio_pincount(heads[0]), 0);
    assert_eq!(env.mm.frames().folio_pincount(heads[1]), 10);
    assert_eq!(env.mm.stats().gup_pins_held, 16);
    // The mapping goes; the pins left keep their folios, and the last unpin frees them.
    s.munmap(&env.mm, va, 2 << 20).unwrap();
    assert!(env.mm.frames().meta(heads[0]).is_free());
    assert_eq!(env.mm.frames().folio_refcount(heads[1]), 10);
    crate::gup::unpin_user_pages(&env.mm, &mut pages);
    assert!(pages.iter().all(Option::is_none));
    for h in heads {
        assert!(env.mm.frames().meta(h).is_free());
    }
    assert_eq!(env.mm.stats().gup_pins_held, 0);
    env.finish(vec![s]);
}

#[test]
fn partial_munmap_queues_the_folio_and_the_deferred_split_frees_the_rest() {
    let env = env();
    let mut s = env.space();
    let (va, head) = mthp_with_data(&env, &mut s);
    let free = env.mm.frames().free_frames();
    s.munmap(&env.mm, va + 4 * PAGE, 8 * PAGE as usize).unwrap();
    assert_eq!(env.mm.frames().free_frames(), free, "the folio holds them");
    assert_eq!(env.mm.stats().deferred_split_queued, 1);
    env.check(&[&s]);
    assert_eq!(env.mm.deferred_split_scan(), 8);
    assert_eq!(env.mm.frames().free_frames(), free + 8);
    let st = env.mm.thp().sizes.stats(O64);
    assert_eq!((st.split, st.nr_anon), (1, 0));
    assert_eq!(env.mm.stats().thp_split_page, 0, "a PMD-size counter");
    for i in (0..4).chain(12..16) {
        assert!(is_small(&env, head + i * PAGE));
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i + 1));
        assert!(env.exclusive(&s, va + i * PAGE));
    }
    env.check(&[&s]);
    // MADV_DONTNEED of part of another one, then exit with it still queued.
    env.write(&mut s, va + 32 * PAGE, 1).unwrap();
    s.madvise(&env.mm, va + 32 * PAGE, PAGE as usize, Advice::DontNeed)
        .unwrap();
    assert_eq!(env.mm.stats().deferred_split_queued, 1);
    env.finish(vec![s]);
    assert_eq!(env.mm.stats().deferred_split_queued, 0);
}

#[test]
fn mprotect_and_mremap_of_part_keep_every_byte() {
    let env = env();
    let mut s = env.space();
    let (va, head) = mthp_with_data(&env, &mut s);
    s.mprotect(&env.mm, va + 2 * PAGE, 2 * PAGE as usize, Prot::READ)
        .unwrap();
    assert!(!env.pte(&s, va + 2 * PAGE).is_writable());
    assert!(env.pte(&s, va + 4 * PAGE).is_writable());
    assert_eq!(env.frame(&s, va + 2 * PAGE), head + 2 * PAGE);
    env.check(&[&s]);
    // Move the upper half elsewhere: the PTEs still name the folio's subpages.
    let to = BASE + (8 << 20);
    let moved = s
        .mremap(
            &env.mm,
            (va + 8 * PAGE).as_u64(),
            8 * PAGE,
            8 * PAGE,
            crate::mremap::MremapFlags::MAYMOVE | crate::mremap::MremapFlags::FIXED,
            to,
        )
        .unwrap();
    for i in 0..8 {
        assert_eq!(env.frame(&s, moved + i * PAGE), head + (8 + i) * PAGE);
        assert_eq!(env.read(&mut s, moved + i * PAGE), Ok(9 + i));
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i + 1));
    }
    // Writes where it is writable reuse the exclusive subpages.
    env.write(&mut s, moved, 0x42).unwrap();
    assert_eq!(env.frame(&s, moved), head + 8 * PAGE);
    assert!(
        env.write(&mut s, va + 2 * PAGE, 1).is_err(),
        "read-only now"
    );
    env.check(&[&s]);
    env.finish(vec![s]);
}

#[test]
fn no_free_run_falls_back_to_4k_and_counts_it() {
    // Too little memory for any whole block after the boot's own use.
    let env = Env::with_frames(600);
    let mut s = env.space();
    enable(&env, 8, SizeEnabled::Always);
    let mut held = alloc::vec::Vec::new();
    while env.mm.frames().free_blocks() > 0 || held.len() < 8 {
        match env.mm.frames().alloc() {
            Some(f) => held.push(f),
            None => break,
        }
    }
    let va = map(&env, &mut s, 1 << 20);
    env.write(&mut s, va, 5).unwrap();
    assert!(is_small(&env, env.frame(&s, va)));
    assert_eq!(env.mm.thp().sizes.stats(8).anon_fault_fallback, 1);
    assert_eq!(env.read(&mut s, va), Ok(5));
    for f in held {
        env.mm.frames().free(f);
    }
    env.finish(vec![s]);
}

#[test]
fn smallest_folios_queue_and_split_through_their_own_tails() {
    let env = env();
    let mut s = env.space();
    enable(&env, 2, SizeEnabled::Always);
    let va = map(&env, &mut s, 1 << 20);
    for i in 0..12 {
        env.write(&mut s, va + i * PAGE, i + 1).unwrap();
    }
    let heads: alloc::vec::Vec<_> = (0..3).map(|f| env.frame(&s, va + f * 4 * PAGE)).collect();
    for h in &heads {
        assert_eq!(env.mm.frames().folio_order(*h), 2);
    }
    // Three 16 KiB folios queued (head, tails 1..3: the links live in tails 2 and 3).
    for f in 0..3 {
        s.munmap(&env.mm, va + (f * 4 + 1) * PAGE, PAGE as usize)
            .unwrap();
    }
    assert_eq!(env.mm.stats().deferred_split_queued, 3);
    // The middle one leaves the queue whole when it is freed.
    s.munmap(&env.mm, va + 4 * PAGE, 4 * PAGE as usize).unwrap();
    assert_eq!(env.mm.stats().deferred_split_queued, 2);
    env.check(&[&s]);
    assert_eq!(env.mm.deferred_split_scan(), 2);
    for i in [0, 2, 3, 8, 10, 11] {
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i + 1));
        assert!(is_small(&env, env.frame(&s, va + i * PAGE)));
    }
    assert_eq!(env.mm.thp().sizes.stats(2).split, 2);
    env.finish(vec![s]);
}

/// The brief's era check (SEMANTICS.md section 11 has no era row for it): a write to a
/// fork-shared PMD-mapped THP splits the PMD and copies one 4 KiB page in every era, never the
/// whole 2 MiB; the other side keeps its PMD.
#[test]
fn pmd_thp_cow_copies_4k_not_the_whole_thp_in_every_era() {
    for era in [Era::Y2009, Era::Y2016, Era::Y2020, Era::Y2022, Era::Y2023] {
        let env = env();
        env.mm.set_era(era);
        let mut parent = env.space();
        let va = super::thp_tests::map_huge(&env, &mut parent, 2);
        env.write(&mut parent, va, 1).unwrap();
        let head = pmd(&env, &parent, va).expect("a THP").frame();
        let mut child = parent.fork(&env.mm).unwrap();
        let free = env.mm.frames().free_frames();
        env.write(&mut child, va + 7 * PAGE, 2).unwrap();
        // One new page (and the PT the split withdrew from the deposit: no allocation).
        assert_eq!(
            env.mm.frames().free_frames(),
            free - 1,
            "{era}: 4 KiB copied"
        );
        assert!(
            pmd(&env, &child, va).is_none(),
            "{era}: the child's PMD split"
        );
        assert!(is_small(&env, env.frame(&child, va + 7 * PAGE)), "{era}");
        assert_eq!(env.frame(&child, va + 8 * PAGE), head + 8 * PAGE, "{era}");
        assert_eq!(
            pmd(&env, &parent, va).map(|p| p.frame()),
            Some(head),
            "{era}"
        );
        assert_eq!(env.read(&mut parent, va + 7 * PAGE), Ok(0), "{era}");
        env.check(&[&parent, &child]);
        env.finish(vec![parent, child]);
    }
}

#[test]
fn madv_collapse_turns_mthps_into_one_pmd_thp_and_frees_them() {
    let env = env();
    let mut s = env.space();
    enable(&env, O64, SizeEnabled::Always);
    let va = map(&env, &mut s, 2 << 20);
    for i in 0..64 {
        env.write(&mut s, va + i * PAGE, i + 1).unwrap();
    }
    assert_eq!(env.mm.thp().sizes.stats(O64).nr_anon, 4);
    s.madvise(&env.mm, va, 2 << 20, Advice::Collapse).unwrap();
    assert!(pmd(&env, &s, va).is_some(), "one PMD now");
    for i in 0..64 {
        assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i + 1));
    }
    assert_eq!(env.read(&mut s, va + 100 * PAGE), Ok(0));
    assert_eq!(
        env.mm.thp().sizes.stats(O64).nr_anon,
        0,
        "the mTHPs were freed"
    );
    env.check(&[&s]);
    env.finish(vec![s]);
}
