//! VMA limits: the per-process `max_map_count` and the system-wide cap, each failing with
//! `NoMem` before anything changes.

use super::*;
use crate::error::MmError;
use crate::madvise::Advice;

#[test]
fn default_limits_are_linux_max_map_count_and_the_heap_cap() {
    let env = Env::new();
    assert_eq!(env.mm.vma_limits(), (MAX_MAP_COUNT, MAX_VMAS));
    assert_eq!(MAX_MAP_COUNT, 65530);
    const {
        assert!(
            MAX_VMAS > MAX_MAP_COUNT,
            "one process at Linux's limit must fit"
        )
    };
}

/// mprotect of every other page splits until the per-process limit; the refused call changes
/// nothing, merging still works at the limit, and unmapping returns every frame.
#[test]
fn mprotect_alternating_pages_stops_at_max_map_count() {
    const LIMIT: usize = 41;
    let env = Env::new();
    env.mm.set_vma_limits(LIMIT, MAX_VMAS);
    let mut s = env.space();
    let pages = 200u64;
    let a = env.map(&mut s, 0, pages, Prot::RW);
    for p in 0..pages {
        env.write(&mut s, a + p * PAGE, p).unwrap();
    }
    let mut refused_at = None;
    for p in (0..pages).step_by(2) {
        match s.mprotect(&env.mm, a + p * PAGE, PAGE_SIZE, Prot::READ) {
            Ok(()) => assert!(s.vmas().count() <= LIMIT),
            Err(e) => {
                assert_eq!(e, MmError::NoMem);
                assert_eq!(e.errno(), 12, "ENOMEM");
                refused_at = Some(p);
                break;
            }
        }
    }
    let p = refused_at.expect("the limit was never reached");
    // Page 0 splits the mapping in two, every later page adds two: refused once two more
    // would pass the limit.
    assert_eq!(s.vmas().count(), p as usize);
    assert!(s.vmas().count() + 2 > LIMIT && s.vmas().count() <= LIMIT);
    // The refused call changed nothing: same VMAs, page still writable, contents intact.
    let before = spans(&s);
    assert_eq!(
        s.mprotect(&env.mm, a + p * PAGE, PAGE_SIZE, Prot::READ),
        Err(MmError::NoMem)
    );
    assert_eq!(spans(&s), before);
    env.write(&mut s, a + p * PAGE, 7).unwrap();
    assert_eq!(env.read(&mut s, a + (p - 1) * PAGE).unwrap(), p - 1);
    // madvise and a hole in the middle of a VMA are refused too; mmap of a new VMA as well.
    let tail = a + (p + 1) * PAGE;
    assert_eq!(
        s.madvise(&env.mm, tail, PAGE_SIZE, Advice::DontFork),
        Err(MmError::NoMem)
    );
    if s.vmas().count() == LIMIT {
        assert_eq!(s.munmap(&env.mm, tail, PAGE_SIZE), Err(MmError::NoMem));
        assert_eq!(
            s.mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON),
            Err(MmError::NoMem)
        );
    }
    assert_eq!(spans(&s), before);
    // Operations that do not add VMAs still work at the limit: undoing a split merges.
    s.mprotect(&env.mm, a + (p - 2) * PAGE, PAGE_SIZE, Prot::RW)
        .unwrap();
    assert_eq!(s.vmas().count(), before.len() - 2);
    // Unmapping at the VMA's end adds none.
    s.munmap(&env.mm, a + (pages - 1) * PAGE, PAGE_SIZE)
        .unwrap();
    env.check(&[&s]);
    s.munmap(&env.mm, a, pages as usize * PAGE_SIZE).unwrap();
    assert_eq!(s.vmas().count(), 0);
    assert_eq!(env.mm.live_vmas(), 0);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// The system-wide cap counts the VMAs of every address space together.
#[test]
fn the_system_wide_cap_spans_address_spaces() {
    const TOTAL: usize = 12;
    let env = Env::new();
    env.mm.set_vma_limits(MAX_MAP_COUNT, TOTAL);
    let mut s1 = env.space();
    let mut s2 = env.space();
    let a = env.map(&mut s1, 0, 64, Prot::RW);
    let b = env.map(&mut s2, 0, 64, Prot::RW);
    assert_eq!(env.mm.live_vmas(), 2);
    // s1: 2 + 2 + 2 = 6 VMAs; s2: 2 + 2 = 4; total 10.
    for p in [0, 2, 4] {
        s1.mprotect(&env.mm, a + p * PAGE, PAGE_SIZE, Prot::READ)
            .unwrap();
    }
    for p in [0, 2] {
        s2.mprotect(&env.mm, b + p * PAGE, PAGE_SIZE, Prot::READ)
            .unwrap();
    }
    assert_eq!(env.mm.live_vmas(), 10);
    // A split adding two makes 12: allowed; the next would make 14: refused in either.
    s2.mprotect(&env.mm, b + 4 * PAGE, PAGE_SIZE, Prot::READ)
        .unwrap();
    assert_eq!(env.mm.live_vmas(), TOTAL);
    let (v1, v2) = (spans(&s1), spans(&s2));
    assert_eq!(
        s1.mprotect(&env.mm, a + 6 * PAGE, PAGE_SIZE, Prot::READ),
        Err(MmError::NoMem)
    );
    assert_eq!(
        s2.mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON),
        Err(MmError::NoMem)
    );
    let mut s3 = env.space();
    assert_eq!(
        s3.mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON),
        Err(MmError::NoMem),
        "a new process is refused too"
    );
    assert_eq!((spans(&s1), spans(&s2)), (v1, v2));
    assert_eq!(env.mm.live_vmas(), TOTAL);
    // Freeing VMAs in one space makes room in another.
    s2.munmap(&env.mm, b, 64 * PAGE_SIZE).unwrap();
    assert_eq!(env.mm.live_vmas(), 6);
    s1.mprotect(&env.mm, a + 6 * PAGE, PAGE_SIZE, Prot::READ)
        .unwrap();
    s3.mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(env.mm.live_vmas(), 9);
    env.check(&[&s1, &s2, &s3]);
    env.finish(std::vec![s1, s2, s3]);
    assert_eq!(env.mm.live_vmas(), 0);
}

/// A fork whose child's VMAs would pass the cap fails with `NoMem` and leaves the parent as it
/// was; after VMAs are freed, the same fork succeeds.
#[test]
fn fork_at_the_system_wide_cap_fails_cleanly() {
    let env = Env::new();
    let mut parent = env.space();
    let a = env.map(&mut parent, 0, 16, Prot::RW);
    for p in 0..16 {
        env.write(&mut parent, a + p * PAGE, p + 100).unwrap();
    }
    for p in [1, 5, 9] {
        parent
            .mprotect(&env.mm, a + p * PAGE, PAGE_SIZE, Prot::READ)
            .unwrap();
    }
    let n = parent.vmas().count();
    assert_eq!(n, 7);
    env.mm.set_vma_limits(MAX_MAP_COUNT, 2 * n - 1);
    let before = spans(&parent);
    let free = env.mm.frames().free_frames();
    let forks = env.mm.stats().forks;
    assert!(matches!(parent.fork(&env.mm), Err(MmError::NoMem)));
    assert_eq!(spans(&parent), before);
    assert_eq!(env.mm.live_vmas(), n);
    assert_eq!(env.mm.frames().free_frames(), free, "nothing allocated");
    assert_eq!(env.mm.stats().forks, forks);
    // The parent's pages are still exclusive and writable without a copy.
    for p in [0u64, 2, 15] {
        assert!(env.exclusive(&parent, a + p * PAGE));
        env.write(&mut parent, a + p * PAGE, p).unwrap();
    }
    env.check(&[&parent]);
    // A DONTFORK VMA is not inherited and does not count.
    parent
        .madvise(&env.mm, a + 15 * PAGE, PAGE_SIZE, Advice::DontFork)
        .unwrap();
    env.mm.set_vma_limits(MAX_MAP_COUNT, 2 * n + 1);
    let mut child = parent.fork(&env.mm).unwrap();
    assert_eq!(child.vmas().count(), n);
    assert_eq!(env.mm.live_vmas(), 2 * n + 1);
    assert_eq!(env.read(&mut child, a + 3 * PAGE).unwrap(), 103);
    env.check(&[&parent, &child]);
    env.finish(std::vec![parent, child]);
}

/// brk refuses to grow by a new VMA at the limit but may still extend its existing one.
#[test]
fn brk_at_the_limit() {
    let env = Env::new();
    let mut s = env.space();
    let heap = VirtAddr::new(BASE);
    s.set_brk_base(heap);
    env.map(&mut s, 0x10_0000, 1, Prot::RW);
    env.mm.set_vma_limits(1, MAX_VMAS);
    assert_eq!(
        s.brk(&env.mm, heap + PAGE),
        heap,
        "a first heap VMA is refused"
    );
    assert_eq!(s.vmas().count(), 1);
    env.mm.set_vma_limits(2, MAX_VMAS);
    assert_eq!(s.brk(&env.mm, heap + PAGE), heap + PAGE);
    assert_eq!(s.vmas().count(), 2);
    assert_eq!(
        s.brk(&env.mm, heap + 3 * PAGE),
        heap + 3 * PAGE,
        "extending adds none"
    );
    assert_eq!(s.vmas().count(), 2);
    assert_eq!(s.brk(&env.mm, heap + PAGE), heap + PAGE);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
