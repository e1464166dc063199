//! mmap placement, munmap and mprotect splitting, the mprotect write rule, madvise, brk.

use super::*;
use crate::aspace::{DEFAULT_MMAP_BASE, MMAP_MIN_ADDR, USER_END};
use crate::error::{FaultError, MmError, SegvReason};
use crate::madvise::Advice;

#[test]
fn mmap_places_top_down_below_mmap_base() {
    let env = Env::new();
    let mut s = env.space();
    let a = s
        .mmap(&env.mm, VirtAddr::zero(), 3 * PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(a.as_u64(), DEFAULT_MMAP_BASE - 3 * PAGE);
    let b = s
        .mmap(&env.mm, VirtAddr::zero(), 100, Prot::READ, ANON)
        .unwrap();
    assert_eq!(b.as_u64(), a.as_u64() - PAGE, "length rounded up to a page");
    // A free hint is honoured (rounded up to a page); a busy one is not.
    let h = s
        .mmap(&env.mm, VirtAddr::new(BASE + 1), PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(h.as_u64(), BASE + PAGE);
    let h2 = s.mmap(&env.mm, h, PAGE_SIZE, Prot::RW, ANON).unwrap();
    assert_eq!(h2.as_u64(), b.as_u64() - PAGE);
    // A hole left by munmap is found again.
    s.munmap(&env.mm, a, PAGE_SIZE).unwrap();
    let c = s
        .mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(c, a);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn mmap_argument_errors() {
    let env = Env::new();
    let mut s = env.space();
    let fixed = ANON | MapFlags::FIXED;
    let m = |s: &mut AddressSpace, addr: u64, len: usize, flags| {
        s.mmap(&env.mm, VirtAddr::new(addr), len, Prot::RW, flags)
    };
    assert_eq!(m(&mut s, BASE, 0, ANON), Err(MmError::Inval));
    assert_eq!(m(&mut s, BASE + 1, PAGE_SIZE, fixed), Err(MmError::Inval));
    assert_eq!(
        m(&mut s, BASE, PAGE_SIZE, MapFlags::ANONYMOUS),
        Err(MmError::Inval)
    );
    assert_eq!(
        m(&mut s, BASE, PAGE_SIZE, MapFlags::from_linux(0x23)),
        Err(MmError::Inval)
    );
    assert_eq!(m(&mut s, 0, PAGE_SIZE, fixed), Err(MmError::Perm));
    assert_eq!(
        m(&mut s, MMAP_MIN_ADDR - PAGE, PAGE_SIZE, fixed),
        Err(MmError::Perm)
    );
    assert_eq!(m(&mut s, USER_END, PAGE_SIZE, fixed), Err(MmError::NoMem));
    assert_eq!(m(&mut s, BASE, usize::MAX, ANON), Err(MmError::NoMem));
    assert_eq!(
        m(&mut s, BASE, PAGE_SIZE, MapFlags::SHARED),
        Err(MmError::NoDev),
        "file mappings go through mmap_shmem (or, later, the filesystem)"
    );
    assert_eq!(
        m(&mut s, BASE, PAGE_SIZE, MapFlags::PRIVATE),
        Err(MmError::NoDev)
    );
    assert_eq!(MmError::Exist.errno(), 17);
    assert_eq!(s.vmas().count(), 0);
    env.finish(std::vec![s]);
}

#[test]
fn map_fixed_replaces_and_noreplace_refuses() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    for i in 0..4 {
        env.write(&mut s, va + i * PAGE, 10 + i).unwrap();
    }
    let anon_before = env.mm.stats().anon_pages;
    assert_eq!(
        s.mmap(
            &env.mm,
            va + PAGE,
            PAGE_SIZE,
            Prot::RW,
            ANON | MapFlags::FIXED_NOREPLACE
        ),
        Err(MmError::Exist)
    );
    let r = s
        .mmap(
            &env.mm,
            va + PAGE,
            2 * PAGE_SIZE,
            Prot::READ,
            ANON | MapFlags::FIXED,
        )
        .unwrap();
    assert_eq!(r, va + PAGE);
    env.check(&[&s]);
    assert_eq!(
        env.mm.stats().anon_pages,
        anon_before - 2,
        "replaced pages freed"
    );
    assert_eq!(env.read(&mut s, va).unwrap(), 10);
    assert_eq!(
        env.read(&mut s, va + PAGE).unwrap(),
        0,
        "new mapping reads zeros"
    );
    assert_eq!(env.read(&mut s, va + 3 * PAGE).unwrap(), 13);
    assert_eq!(
        spans(&s),
        [
            (BASE, BASE + PAGE, Prot::RW),
            (BASE + PAGE, BASE + 3 * PAGE, Prot::READ),
            (BASE + 3 * PAGE, BASE + 4 * PAGE, Prot::RW),
        ]
    );
    env.finish(std::vec![s]);
}

#[test]
fn munmap_splits_and_frees() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 5, Prot::RW);
    for i in 0..5 {
        env.write(&mut s, va + i * PAGE, i + 1).unwrap();
    }
    let free = env.mm.frames().free_frames();
    s.munmap(&env.mm, va + PAGE, 3 * PAGE_SIZE).unwrap();
    env.check(&[&s]);
    assert_eq!(env.mm.frames().free_frames(), free + 3);
    assert_eq!(
        spans(&s),
        [
            (BASE, BASE + PAGE, Prot::RW),
            (BASE + 4 * PAGE, BASE + 5 * PAGE, Prot::RW)
        ]
    );
    assert_eq!(
        env.read(&mut s, va + 2 * PAGE).unwrap_err().error,
        FaultError::Segv(SegvReason::NoMapping)
    );
    assert_eq!(env.read(&mut s, va + 4 * PAGE).unwrap(), 5);
    assert_eq!(s.munmap(&env.mm, va + 1, PAGE_SIZE), Err(MmError::Inval));
    assert_eq!(s.munmap(&env.mm, va, 0), Err(MmError::Inval));
    // Unmapping a hole is fine.
    s.munmap(&env.mm, va + 2 * PAGE, PAGE_SIZE).unwrap();
    env.finish(std::vec![s]);
}

#[test]
fn mprotect_splits_middle_into_three_and_merges_back() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    s.mprotect(&env.mm, va + PAGE, PAGE_SIZE, Prot::READ)
        .unwrap();
    env.check(&[&s]);
    assert_eq!(
        spans(&s),
        [
            (BASE, BASE + PAGE, Prot::RW),
            (BASE + PAGE, BASE + 2 * PAGE, Prot::READ),
            (BASE + 2 * PAGE, BASE + 3 * PAGE, Prot::RW),
        ]
    );
    assert!(env.write(&mut s, va + PAGE, 1).is_err());
    env.write(&mut s, va + 2 * PAGE, 1).unwrap();
    s.mprotect(&env.mm, va + PAGE, PAGE_SIZE, Prot::RW).unwrap();
    env.check(&[&s]);
    assert_eq!(spans(&s), [(BASE, BASE + 3 * PAGE, Prot::RW)]);
    env.finish(std::vec![s]);
}

#[test]
fn mprotect_errors_change_nothing() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    assert_eq!(
        s.mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::READ),
        Err(MmError::NoMem),
        "hole in the range"
    );
    assert_eq!(
        s.mprotect(&env.mm, va + 8, PAGE_SIZE, Prot::READ),
        Err(MmError::Inval)
    );
    assert_eq!(s.mprotect(&env.mm, va, 0, Prot::READ), Ok(()));
    assert_eq!(spans(&s), [(BASE, BASE + 2 * PAGE, Prot::RW)]);
    assert_eq!(Prot::from_linux(8), Err(MmError::Inval));
    env.finish(std::vec![s]);
}

#[test]
fn mprotect_rw_makes_only_exclusive_pages_writable() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    env.write(&mut s, va, 1).unwrap(); // exclusive
    env.write(&mut s, va + PAGE, 2).unwrap(); // will be shared with a child
    env.read(&mut s, va + 2 * PAGE).unwrap(); // zero page
    let mut s2 = env.space();
    let child = {
        // Share only the second page: DONTFORK the rest.
        s.madvise(&env.mm, va, PAGE_SIZE, Advice::DontFork).unwrap();
        s.madvise(&env.mm, va + 2 * PAGE, PAGE_SIZE, Advice::DontFork)
            .unwrap();
        let c = s.fork(&env.mm).unwrap();
        s.madvise(&env.mm, va, 3 * PAGE_SIZE, Advice::DoFork)
            .unwrap();
        c
    };
    s.mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::READ).unwrap();
    env.check(&[&s, &child, &s2]);
    for i in 0..3 {
        assert!(!env.pte(&s, va + i * PAGE).is_writable());
    }
    let flushes = env.mm.arch().flush_counts();
    s.mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::RW).unwrap();
    env.check(&[&s, &child, &s2]);
    assert_eq!(
        env.mm.arch().flush_counts(),
        flushes,
        "adding permissions needs no flush"
    );
    assert!(
        env.pte(&s, va).is_writable(),
        "exclusive page: writable without a fault"
    );
    assert!(
        !env.pte(&s, va + PAGE).is_writable(),
        "shared page: stays read-only"
    );
    assert!(
        !env.pte(&s, va + 2 * PAGE).is_writable(),
        "zero page: stays read-only"
    );
    // The writes still do the right thing.
    let faults = s.minor_faults();
    env.write(&mut s, va, 10).unwrap();
    assert_eq!(s.minor_faults(), faults, "no fault on the exclusive page");
    env.write(&mut s, va + PAGE, 20).unwrap();
    assert_eq!(s.minor_faults(), faults + 1);
    let mut child = child;
    assert_eq!(env.read(&mut child, va + PAGE).unwrap(), 2);
    env.check(&[&s, &child, &s2]);
    s2.mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    env.finish(std::vec![s, child, s2]);
}

#[test]
fn mprotect_in_2020_keeps_even_exclusive_pages_read_only() {
    let env = Env::era(Era::Y2020);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
    assert!(!env.pte(&s, va).is_writable());
    let frame = env.frame(&s, va);
    env.write(&mut s, va, 2).unwrap();
    assert_eq!(
        env.frame(&s, va),
        frame,
        "refcount == 1: reused on the fault"
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn madvise_dontneed_then_read_gives_zeros() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    for i in 0..4 {
        env.write(&mut s, va + i * PAGE, 100 + i).unwrap();
    }
    let anon = env.mm.stats().anon_pages;
    s.madvise(&env.mm, va + PAGE, 2 * PAGE_SIZE, Advice::DontNeed)
        .unwrap();
    env.check(&[&s]);
    assert_eq!(env.mm.stats().anon_pages, anon - 2);
    assert_eq!(env.read(&mut s, va).unwrap(), 100);
    assert_eq!(env.read(&mut s, va + PAGE).unwrap(), 0);
    assert_eq!(env.read(&mut s, va + 2 * PAGE).unwrap(), 0);
    assert_eq!(env.read(&mut s, va + 3 * PAGE).unwrap(), 103);
    assert_eq!(spans(&s).len(), 1, "DONTNEED keeps the mapping whole");
    // Holes are reported, the mapped part still dropped.
    assert_eq!(
        s.madvise(&env.mm, va + 3 * PAGE, 2 * PAGE_SIZE, Advice::DontNeed),
        Err(MmError::NoMem)
    );
    assert_eq!(env.read(&mut s, va + 3 * PAGE).unwrap(), 0);
    assert_eq!(Advice::from_linux(99), Err(MmError::Inval));
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn madvise_dontneed_on_shared_page_keeps_the_other_copy() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 42).unwrap();
    let mut child = s.fork(&env.mm).unwrap();
    s.madvise(&env.mm, va, PAGE_SIZE, Advice::DontNeed).unwrap();
    env.check(&[&s, &child]);
    assert_eq!(env.read(&mut s, va).unwrap(), 0);
    assert_eq!(env.read(&mut child, va).unwrap(), 42);
    env.finish(std::vec![s, child]);
}

#[test]
fn brk_grows_and_shrinks() {
    let env = Env::new();
    let mut s = env.space();
    let base = VirtAddr::new(0x60_0000);
    s.set_brk_base(base);
    assert_eq!(s.brk(&env.mm, VirtAddr::zero()), base, "brk(0) queries");
    let b = s.brk(&env.mm, base + 3 * PAGE + 10);
    assert_eq!(b, base + 3 * PAGE + 10);
    assert_eq!(
        s.brk_start(),
        base,
        "the heap start stays where exec put it"
    );
    env.write(&mut s, base + 3 * PAGE + 8, 7).unwrap();
    env.write(&mut s, base, 1).unwrap();
    assert_eq!(
        spans(&s),
        [(base.as_u64(), base.as_u64() + 4 * PAGE, Prot::RW)]
    );
    // Grow again: the heap VMA is extended, not duplicated.
    s.brk(&env.mm, base + 6 * PAGE);
    assert_eq!(spans(&s).len(), 1);
    // Shrink: pages above the break go away.
    assert_eq!(s.brk(&env.mm, base + PAGE), base + PAGE);
    env.check(&[&s]);
    assert!(env.read(&mut s, base + 3 * PAGE).is_err());
    assert_eq!(env.read(&mut s, base).unwrap(), 1);
    // Growing into another mapping fails and leaves the break alone.
    s.mmap(
        &env.mm,
        base + 2 * PAGE,
        PAGE_SIZE,
        Prot::RW,
        ANON | MapFlags::FIXED,
    )
    .unwrap();
    assert_eq!(s.brk(&env.mm, base + 5 * PAGE), base + PAGE);
    assert_eq!(
        s.brk(&env.mm, base - PAGE),
        base + PAGE,
        "below the start: refused"
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn fault_lookup_is_logarithmic_in_vma_count() {
    // Many VMAs (alternating protections so they cannot merge): faults at either end cost the
    // same, and find_vma answers correctly everywhere.
    let env = Env::with_frames(2048);
    let mut s = env.space();
    for i in 0..2000u64 {
        let prot = if i % 2 == 0 { Prot::RW } else { Prot::READ };
        env.map(&mut s, i * PAGE, 1, prot);
    }
    assert_eq!(s.vmas().count(), 2000);
    for i in [0u64, 1, 999, 1998, 1999] {
        let v = s.find_vma(VirtAddr::new(BASE + i * PAGE + 8)).unwrap();
        assert_eq!(v.start().as_u64(), BASE + i * PAGE);
    }
    assert!(s.find_vma(VirtAddr::new(BASE + 2000 * PAGE)).is_none());
    env.write(&mut s, VirtAddr::new(BASE + 1998 * PAGE), 1)
        .unwrap();
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// Huge lengths and addresses at the top of the address space never panic (no arithmetic
/// overflow on user input) in any of the VMA calls, and answer Linux's errors.
#[test]
fn huge_lengths_and_top_addresses_are_refused_without_overflow() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    let fixed = ANON | MapFlags::FIXED;
    let lens = [
        usize::MAX,
        usize::MAX - PAGE_SIZE + 2,
        (USER_END - MMAP_MIN_ADDR) as usize + 1,
        USER_END as usize,
        USER_END as usize + PAGE_SIZE,
        1 << 63,
    ];
    let addrs = [0u64, BASE, USER_END - PAGE, USER_END, 1 << 63, !(PAGE - 1)];
    for &len in &lens {
        for &addr in &addrs {
            let a = VirtAddr::new(addr);
            assert_eq!(
                s.mmap(&env.mm, a, len, Prot::RW, ANON),
                Err(MmError::NoMem),
                "mmap({addr:#x}, {len:#x})"
            );
            assert_eq!(
                s.mmap(&env.mm, a, len, Prot::RW, fixed),
                Err(MmError::NoMem),
                "mmap fixed({addr:#x}, {len:#x})"
            );
            if u128::from(addr) + len as u128 <= u128::from(USER_END) {
                continue; // a legal range (holes are fine for munmap)
            }
            assert!(
                s.munmap(&env.mm, a, len).is_err(),
                "munmap({addr:#x}, {len:#x})"
            );
            assert!(s.mprotect(&env.mm, a, len, Prot::READ).is_err());
            assert!(s.madvise(&env.mm, a, len, Advice::DontNeed).is_err());
            assert!(s.madvise(&env.mm, a, len, Advice::DontFork).is_err());
        }
    }
    // Short lengths at the top of the address space: past USER_END, or wrapping.
    for &addr in &[USER_END, 1 << 63, !(PAGE - 1)] {
        let a = VirtAddr::new(addr);
        for len in [1usize, PAGE_SIZE, 2 * PAGE_SIZE] {
            assert_eq!(
                s.mmap(&env.mm, a, len, Prot::RW, fixed),
                Err(MmError::NoMem)
            );
            assert!(s.munmap(&env.mm, a, len).is_err());
            assert!(s.mprotect(&env.mm, a, len, Prot::READ).is_err());
            assert!(s.madvise(&env.mm, a, len, Advice::DontNeed).is_err());
        }
        // A hint at the top is ignored, not an error.
        let h = s.mmap(&env.mm, a, PAGE_SIZE, Prot::RW, ANON).unwrap();
        assert!(h.as_u64() < USER_END);
        s.munmap(&env.mm, h, PAGE_SIZE).unwrap();
    }
    // brk to absurd breaks keeps the old break.
    s.set_brk_base(VirtAddr::new(BASE + 16 * PAGE));
    for &addr in &[USER_END + 1, 1 << 63, u64::MAX] {
        assert_eq!(
            s.brk(&env.mm, VirtAddr::new(addr)),
            VirtAddr::new(BASE + 16 * PAGE)
        );
    }
    // The one mapping is intact.
    env.write(&mut s, va, 7).unwrap();
    assert_eq!(s.vmas().count(), 1);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
