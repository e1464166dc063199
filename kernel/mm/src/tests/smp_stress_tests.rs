//! Real concurrency over the emulated machine: GUP-fast on CPUs 1 and 2 (std threads, no
//! address-space lock, interrupts off during each walk) against fork, munmap, mmap and mprotect
//! by the owner on CPU 0. Every byte a pin or reference reads is checked against the writer's
//! model, and pins, references and frames return to their baseline at the end.
//!
//! The model: CPU 0 rewrites the whole range only while `gen` is odd, into fresh pages (munmap,
//! mmap, write); word `w` of page `i` written in generation `g` holds [`word`]`(g, i, w)`. A
//! reader that saw the same even `gen` before pinning and after reading must find exactly
//! generation `gen`'s words; otherwise (a rewrite overlapped) each page must still be one whole
//! generation's page `i`, or a fresh page being written (words of one generation, zeroes where the writer had not been yet).

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering::SeqCst};
use std::vec::Vec;

use super::{Env, BASE, PAGE};
use crate::addr::VirtAddr;
use crate::era::Era;
use crate::foll::FollFlags;
use crate::gup::{get_user_pages_fast_only, pin_user_pages_fast_only, unpin_user_pages};
use crate::host::cpu::{user_read, user_write};
use crate::host::on_cpu;
use crate::pin::PinnedPage;
use crate::vma::Prot;
use crate::PAGE_SIZE;

const PAGES: usize = 16;
const ROUNDS: u64 = 120;
/// Under load a reader thread may not be scheduled before the writer's `rounds` are over; the
/// writer then keeps going, up to this many times its rounds, until every reader has taken
/// at least [`MIN_TAKEN`] pages, so the race is really exercised in each run.
const ROUNDS_CAP_FACTOR: u64 = 100;
const MIN_TAKEN: u64 = PAGES as u64;
const WORDS: usize = PAGE_SIZE / 8;

fn word(g: u64, page: usize, w: usize) -> u64 {
    (g << 32) | ((page as u64) << 16) | w as u64
}

fn page_image(g: u64, page: usize) -> Vec<u8> {
    (0..WORDS)
        .flat_map(|w| word(g, page, w).to_le_bytes())
        .collect()
}

/// Checks one page a reader on another CPU took; `stable` is `Some(g)` when no rewrite
/// overlapped the read.
fn check_page(buf: &[u8], page: usize, stable: Option<u64>) {
    let words: Vec<u64> = buf
        .as_chunks::<8>()
        .0
        .iter()
        .map(|c| u64::from_le_bytes(*c))
        .collect();
    if let Some(g) = stable {
        for (w, &v) in words.iter().enumerate() {
            assert_eq!(
                v,
                word(g, page, w),
                "page {page} word {w} in stable generation {g}"
            );
        }
        return;
    }
    // A fresh (zeroed) page being written while it was read: every word is still zero or
    // already that one generation's.
    let g = words.iter().find(|&&v| v != 0).map_or(0, |&v| v >> 32);
    for (w, &v) in words.iter().enumerate() {
        assert!(
            v == 0 || v == word(g, page, w),
            "page {page} word {w} is {v:#x}: not generation {g}'s page {page}"
        );
    }
}

/// CPU `cpu` takes pins (`pin`) or references of the range with GUP-fast until `stop`,
/// counting the pages it took in `taken` as it goes.
fn reader(
    env: &Env,
    shared: &crate::MmShared,
    gen: &AtomicU64,
    stop: &AtomicBool,
    pin: bool,
    taken: &AtomicU64,
) {
    let mut buf = alloc::vec![0u8; PAGE_SIZE];
    while !stop.load(SeqCst) {
        let g0 = gen.load(SeqCst);
        let mut pages: [Option<PinnedPage>; PAGES] = [const { None }; PAGES];
        let start = VirtAddr::new(BASE);
        let n = if pin {
            pin_user_pages_fast_only(&env.mm, shared, start, FollFlags::NONE, &mut pages)
        } else {
            get_user_pages_fast_only(&env.mm, shared, start, FollFlags::NONE, &mut pages)
        }
        .expect("a valid range");
        for (i, page) in pages[..n].iter().enumerate() {
            page.as_ref().unwrap().dma_read(&env.mm, 0, &mut buf);
            fence(SeqCst);
            let stable = (g0.is_multiple_of(2) && gen.load(SeqCst) == g0).then_some(g0);
            check_page(&buf, i, stable);
        }
        unpin_user_pages(&env.mm, &mut pages);
        taken.fetch_add(n as u64, SeqCst);
        std::thread::yield_now();
    }
}

#[test]
fn gup_fast_races_fork_munmap_and_mprotect_on_other_cpus() {
    stress(Era::Y2023, ROUNDS);
}

/// The same in every era: pins as plain references (2009, 2016), fork copying pinned pages
/// (2020 on), unsharing read-only pins (2022 on) race the same writers.
#[test]
fn gup_fast_races_the_writers_in_every_era() {
    for era in Era::ALL {
        stress(era, ROUNDS / 4);
    }
}

fn stress(era: Era, rounds: u64) {
    let env = Env::with_frames(2048);
    env.mm.set_era(era);
    let mut s = env.space();
    let shared = s.shared().clone();
    let gen = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let len = PAGES * PAGE_SIZE;
    let va = VirtAddr::new(BASE);
    let taken = [AtomicU64::new(0), AtomicU64::new(0)];
    std::thread::scope(|scope| {
        let readers: Vec<_> = [(1, true), (2, false)]
            .into_iter()
            .zip(&taken)
            .map(|((cpu, pin), taken)| {
                let (env, shared, gen, stop) = (&env, &shared, &gen, &stop);
                scope.spawn(move || {
                    on_cpu(cpu, || {
                        // A thread of this process runs here: the scheduler set the bit.
                        shared.mm_cpumask_set(cpu);
                        reader(env, shared, gen, stop, pin, taken)
                    })
                })
            })
            .collect();
        let starved = || taken.iter().any(|t| t.load(SeqCst) < MIN_TAKEN);
        let mut round = 0;
        while round < rounds || (starved() && round < rounds * ROUNDS_CAP_FACTOR) {
            let g = gen.fetch_add(1, SeqCst) + 1;
            assert_eq!(g % 2, 1);
            s.munmap(&env.mm, va, len).unwrap();
            env.map(&mut s, 0, PAGES as u64, Prot::RW);
            for i in 0..PAGES {
                let at = va + i as u64 * PAGE;
                user_write(&env.mm, &mut s, at, &page_image(g + 1, i)).unwrap();
            }
            gen.fetch_add(1, SeqCst);
            std::thread::yield_now();
            let mut child = s.fork(&env.mm).unwrap();
            let mut buf = alloc::vec![0u8; PAGE_SIZE];
            for i in 0..PAGES {
                user_read(&env.mm, &mut child, va + i as u64 * PAGE, &mut buf).unwrap();
                assert_eq!(
                    buf,
                    page_image(g + 1, i),
                    "child page {i} after fork {round}"
                );
            }
            child.exit(&env.mm);
            if round % 3 == 0 {
                s.mprotect(&env.mm, va, len, Prot::READ).unwrap();
                s.mprotect(&env.mm, va, len, Prot::RW).unwrap();
            }
            if round % 4 == 0 {
                s.munmap(&env.mm, va + (PAGES as u64 / 2) * PAGE, len / 2)
                    .unwrap();
            }
            std::thread::yield_now();
            round += 1;
        }
        stop.store(true, SeqCst);
        for r in readers {
            r.join().unwrap();
        }
    });
    let [pinned, referenced] = taken.map(AtomicU64::into_inner);
    assert!(
        pinned >= MIN_TAKEN && referenced >= MIN_TAKEN,
        "the readers took too few pages even after {ROUNDS_CAP_FACTOR}x the writer's rounds: \
         {pinned} pinned, {referenced} referenced"
    );
    env.check(&[&s]);
    drop(shared);
    env.finish(alloc::vec![s]);
}

/// The per-CPU TLB check of a freed frame ([`crate::arch::Arch::frame_freed`]) must run before
/// the frame is back on the free list. It ran after, and then CPU 0 could reallocate the frame
/// a reader on CPU 1 had just unpinned, map it and cache the new (correct) translation before
/// the check looked, which reported it as "freed while CPU 0's TLB still maps it" (1 run in
/// ~30 of the stress test above under load). Here the probe is that other CPU, allocating at
/// the exact moment of the check.
#[test]
fn frame_freed_check_runs_before_the_frame_is_reusable() {
    let env = Env::with_frames(64);
    let mut s = env.space();
    let shared = s.shared().clone();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    user_write(&env.mm, &mut s, va, &[7]).unwrap();
    let mut pages: [Option<PinnedPage>; 1] = [None];
    let n = pin_user_pages_fast_only(&env.mm, &shared, va, FollFlags::NONE, &mut pages).unwrap();
    assert_eq!(n, 1, "the mapped page is pinned");
    let frame = pages[0].as_ref().unwrap().frame();
    // The mapping's reference goes (after its flush); the pin keeps the frame.
    s.munmap(&env.mm, va, PAGE_SIZE).unwrap();
    let frames = env.mm.frames();
    let checked = std::sync::Arc::new(AtomicU64::new(0));
    let reused = std::sync::Arc::new(AtomicBool::new(false));
    let (c, r) = (checked.clone(), reused.clone());
    env.mm
        .arch()
        .probe_frame_freed(Some(alloc::boxed::Box::new(move |f| {
            if f != frame {
                return;
            }
            c.fetch_add(1, SeqCst);
            let got = frames.alloc().expect("a free frame");
            r.fetch_or(got == f, SeqCst);
            frames.free(got);
        })));
    // On CPU 1, as the stress test's reader: the last reference goes, the frame is freed.
    on_cpu(1, || unpin_user_pages(&env.mm, &mut pages));
    env.mm.arch().probe_frame_freed(None);
    assert_eq!(checked.load(SeqCst), 1, "the unpin freed the frame once");
    assert!(
        !reused.load(SeqCst),
        "frame {frame:#x} could be allocated again while its TLB check ran"
    );
    env.check(&[&s]);
    drop(shared);
    env.finish(alloc::vec![s]);
}
