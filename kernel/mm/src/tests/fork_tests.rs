//! fork: COW sharing, writes on either side, pinned pages, MADV_DONTFORK.

use super::*;
use crate::error::{FaultError, SegvReason};
use crate::madvise::Advice;
use crate::pin::{pin_user_page, PinKind};

/// A parent with one written page and one zero-page read, forked.
fn forked(env: &Env) -> (AddressSpace, AddressSpace, VirtAddr) {
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 2, Prot::RW);
    env.write(&mut parent, va, 0x1111).unwrap();
    env.read(&mut parent, va + PAGE).unwrap();
    let child = parent.fork(&env.mm).unwrap();
    env.check(&[&parent, &child]);
    (parent, child, va)
}

#[test]
fn fork_shares_pages_read_only() {
    let env = Env::new();
    let (parent, child, va) = forked(&env);
    let (p, c) = (env.pte(&parent, va), env.pte(&child, va));
    assert_eq!(p.frame(), c.frame());
    assert!(!p.is_writable() && !c.is_writable());
    assert!(!env.exclusive(&parent, va));
    let meta = env.mm.frames().meta(p.frame());
    assert_eq!((meta.mapcount(), meta.refcount()), (2, 2));
    assert_eq!(env.frame(&child, va + PAGE), env.mm.zero_page());
    assert_eq!(env.mm.stats().zero_page_mappings, 2);
    env.finish(std::vec![parent, child]);
}

#[test]
fn fork_then_write_in_parent() {
    let env = Env::new();
    let (mut parent, mut child, va) = forked(&env);
    env.write(&mut parent, va, 0x2222).unwrap();
    env.check(&[&parent, &child]);
    assert_eq!(env.read(&mut child, va).unwrap(), 0x1111);
    assert_eq!(env.read(&mut parent, va).unwrap(), 0x2222);
    assert!(env.exclusive(&parent, va));
    env.finish(std::vec![parent, child]);
}

#[test]
fn fork_then_write_in_child() {
    let env = Env::new();
    let (mut parent, mut child, va) = forked(&env);
    env.write(&mut child, va, 0x3333).unwrap();
    env.write(&mut child, va + PAGE, 0x4444).unwrap();
    env.check(&[&parent, &child]);
    assert_eq!(env.read(&mut parent, va).unwrap(), 0x1111);
    assert_eq!(env.read(&mut parent, va + PAGE).unwrap(), 0);
    assert_eq!(env.read(&mut child, va).unwrap(), 0x3333);
    assert_eq!(env.read(&mut child, va + PAGE).unwrap(), 0x4444);
    env.finish(std::vec![parent, child]);
}

#[test]
fn fork_then_write_in_both() {
    let env = Env::new();
    let (mut parent, mut child, va) = forked(&env);
    let original = env.frame(&parent, va);
    env.write(&mut parent, va, 0xaaaa).unwrap();
    env.check(&[&parent, &child]);
    env.write(&mut child, va, 0xbbbb).unwrap();
    env.check(&[&parent, &child]);
    // The parent copied; the child, then alone on the original page, reused it.
    assert_ne!(env.frame(&parent, va), original);
    assert_eq!(env.frame(&child, va), original);
    assert_eq!(env.mm.stats().cow_copies, 1);
    assert_eq!(env.read(&mut parent, va).unwrap(), 0xaaaa);
    assert_eq!(env.read(&mut child, va).unwrap(), 0xbbbb);
    env.finish(std::vec![parent, child]);
}

/// A child's page tables are freed zeroed at its exit and handed to the next fork without a
/// second zeroing (`Mm::free_pagetable_zeroed`): the next child must see only the parent's
/// mappings, none of the first child's. (Freeing the tables without clearing their entries
/// fails here, and in debug builds at the free.)
#[test]
fn page_tables_recycled_from_an_exited_child_are_empty() {
    let env = Env::new();
    let (mut parent, mut child, va) = forked(&env);
    // The first child maps and fills memory in spans where the parent has no tables at all:
    // another PT (+2 MiB), another PD (+1 GiB) and another PDPT (+512 GiB).
    let far = [2 << 20, 1 << 30, 1 << 39];
    for offset in far {
        let v = env.map(&mut child, offset, 3, Prot::RW);
        for page in 0..3 {
            env.write(&mut child, v + page * PAGE, 0xdead).unwrap();
        }
    }
    env.check(&[&parent, &child]);
    let tables_before = env.mm.stats().pagetable_pages;
    child.exit(&env.mm);
    // Twice: the second child gets the tables the first freed, the third those of the second.
    for _ in 0..2 {
        let mut next = parent.fork(&env.mm).unwrap();
        env.check(&[&parent, &next]);
        for offset in far {
            for page in 0..3 {
                let v = VirtAddr::new(BASE + offset + page * PAGE);
                assert_eq!(next.translate(&env.mm, v), None, "stale PTE at {v:#x}");
            }
        }
        assert_eq!(env.read(&mut next, va).unwrap(), 0x1111);
        env.write(&mut next, va, 0x2222).unwrap();
        assert_eq!(env.read(&mut parent, va).unwrap(), 0x1111);
        let v = env.map(&mut next, 2 << 20, 1, Prot::RW);
        assert_eq!(
            env.read(&mut next, v).unwrap(),
            0,
            "a recycled PT's slot is empty"
        );
        env.check(&[&parent, &next]);
        next.exit(&env.mm);
    }
    assert!(env.mm.stats().pagetable_pages < tables_before);
    env.finish(std::vec![parent]);
}

#[test]
fn fork_after_child_exit_reuses_without_copy() {
    let env = Env::new();
    let (mut parent, child, va) = forked(&env);
    let frame = env.frame(&parent, va);
    child.exit(&env.mm);
    env.check(&[&parent]);
    env.write(&mut parent, va, 5).unwrap();
    assert_eq!(env.frame(&parent, va), frame);
    assert_eq!(env.mm.stats().cow_copies, 0);
    assert_eq!(env.mm.stats().wp_reuses_proven, 1);
    // A second fork and exit: same again.
    let child = parent.fork(&env.mm).unwrap();
    child.exit(&env.mm);
    env.write(&mut parent, va, 6).unwrap();
    assert_eq!(env.frame(&parent, va), frame);
    assert_eq!(env.mm.stats().cow_copies, 0);
    env.finish(std::vec![parent]);
}

#[test]
fn fork_of_pinned_exclusive_page_copies_for_child() {
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 0x1234).unwrap();
    let frame = env.frame(&parent, va);
    let pin = pin_user_page(&env.mm, &mut parent, va).unwrap();
    assert_eq!(pin.kind(), PinKind::Pin);
    assert!(parent.has_pinned());
    env.check(&[&parent]);

    let mut child = parent.fork(&env.mm).unwrap();
    env.check(&[&parent, &child]);
    let p = env.pte(&parent, va);
    assert_eq!(p.frame(), frame, "the parent keeps its pinned page");
    assert!(p.is_writable(), "and it stays writable");
    assert!(env.exclusive(&parent, va));
    assert_ne!(env.frame(&child, va), frame, "the child got a copy");
    assert_eq!(env.read(&mut child, va).unwrap(), 0x1234);
    assert_eq!(env.mm.stats().fork_pinned_copies, 1);
    assert!(!child.has_pinned());

    // The device keeps seeing the parent's writes and the parent sees the device's.
    env.write(&mut parent, va, 0x5678).unwrap();
    assert_eq!(env.frame(&parent, va), frame);
    let mut b = [0u8; 8];
    pin.dma_read(&env.mm, 0, &mut b);
    assert_eq!(u64::from_le_bytes(b), 0x5678);
    pin.dma_from_device()
        .unwrap()
        .dma_write(&env.mm, 8, &7u64.to_le_bytes());
    assert_eq!(env.read(&mut parent, va + 8).unwrap(), 7);
    assert_eq!(env.read(&mut child, va + 8).unwrap(), 0);
    pin.unpin(&env.mm);
    env.check(&[&parent, &child]);
    env.finish(std::vec![parent, child]);
}

#[test]
fn dontfork_range_is_absent_in_child() {
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 3, Prot::RW);
    for i in 0..3 {
        env.write(&mut parent, va + i * PAGE, i + 1).unwrap();
    }
    parent
        .madvise(&env.mm, va + PAGE, PAGE_SIZE, Advice::DontFork)
        .unwrap();
    assert_eq!(parent.vmas().count(), 3);
    let mut child = parent.fork(&env.mm).unwrap();
    env.check(&[&parent, &child]);
    assert_eq!(env.read(&mut child, va).unwrap(), 1);
    assert_eq!(
        env.read(&mut child, va + PAGE).unwrap_err().error,
        FaultError::Segv(SegvReason::NoMapping)
    );
    assert_eq!(env.read(&mut child, va + 2 * PAGE).unwrap(), 3);
    // The parent's DONTFORK page was not shared: still exclusive and writable.
    assert!(env.pte(&parent, va + PAGE).is_writable());
    // DOFORK undoes it and the VMAs merge back.
    parent
        .madvise(&env.mm, va, 3 * PAGE_SIZE, Advice::DoFork)
        .unwrap();
    assert_eq!(parent.vmas().count(), 1);
    let mut child2 = parent.fork(&env.mm).unwrap();
    assert_eq!(env.read(&mut child2, va + PAGE).unwrap(), 2);
    env.check(&[&parent, &child, &child2]);
    env.finish(std::vec![parent, child, child2]);
}

#[test]
fn fork_chain_three_generations() {
    let env = Env::new();
    let (mut parent, mut child, va) = forked(&env);
    let mut grandchild = child.fork(&env.mm).unwrap();
    env.check(&[&parent, &child, &grandchild]);
    assert_eq!(env.mm.frames().meta(env.frame(&parent, va)).mapcount(), 3);
    env.write(&mut child, va, 2).unwrap();
    env.write(&mut grandchild, va, 3).unwrap();
    env.check(&[&parent, &child, &grandchild]);
    assert_eq!(env.read(&mut parent, va).unwrap(), 0x1111);
    assert_eq!(env.read(&mut child, va).unwrap(), 2);
    assert_eq!(env.read(&mut grandchild, va).unwrap(), 3);
    // The parent is alone on the original now: reuse.
    let f = env.frame(&parent, va);
    env.write(&mut parent, va, 1).unwrap();
    assert_eq!(env.frame(&parent, va), f);
    env.finish(std::vec![parent, child, grandchild]);
}

#[test]
fn fork_bumps_write_protect_seq() {
    let env = Env::new();
    let (mut parent, child, _) = forked(&env);
    let seq = parent
        .write_protect_seq()
        .load(core::sync::atomic::Ordering::Relaxed);
    assert_eq!(seq, 2, "one fork: odd during, even after");
    let child2 = parent.fork(&env.mm).unwrap();
    assert_eq!(
        parent
            .write_protect_seq()
            .load(core::sync::atomic::Ordering::Relaxed),
        4
    );
    env.finish(std::vec![parent, child, child2]);
}

#[test]
fn fork_out_of_memory_leaves_parent_intact() {
    let env = Env::with_frames(40);
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 20, Prot::RW);
    for i in 0..20 {
        env.write(&mut parent, va + i * PAGE, i).unwrap();
    }
    // Pin everything so fork must copy every page: it cannot.
    let pins: std::vec::Vec<_> = (0..20)
        .map(|i| pin_user_page(&env.mm, &mut parent, va + i * PAGE).unwrap())
        .collect();
    assert_eq!(
        parent.fork(&env.mm).map(|_| ()).unwrap_err(),
        crate::error::MmError::NoMem
    );
    env.check(&[&parent]);
    for i in 0..20 {
        assert_eq!(env.read(&mut parent, va + i * PAGE).unwrap(), i);
    }
    for p in pins {
        p.unpin(&env.mm);
    }
    env.finish(std::vec![parent]);
}

/// fork copies an exclusive pinned page for the child (`fork_must_copy`); the copy is the
/// child's own and mapped writable, so the child's first write takes no fault.
#[test]
fn forks_copy_of_a_pinned_page_is_writable_in_the_child() {
    for era in [Era::Y2020, Era::Y2022, Era::Y2023] {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 5).unwrap();
        let pin = crate::pin::pin_user_page(&env.mm, &mut parent, va).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        assert_eq!(env.mm.stats().fork_pinned_copies, 1, "{era}");
        assert!(env.pte(&child, va).is_writable(), "{era}");
        let faults = child.minor_faults();
        env.write(&mut child, va, 6).unwrap();
        assert_eq!(
            child.minor_faults(),
            faults,
            "{era}: the child's write faulted"
        );
        assert_eq!(env.read(&mut parent, va).unwrap(), 5);
        env.check(&[&parent, &child]);
        pin.unpin(&env.mm);
        env.finish(std::vec![parent, child]);
    }
}

/// A fork that runs out of memory after write-protecting some parent PTEs still flushes the
/// parent's TLB: no CPU may keep writing through the old writable entries.
#[test]
fn failed_fork_flushes_the_parents_write_protected_entries() {
    let env = Env::new();
    let mut parent = env.space();
    let a = env.map(&mut parent, 0, 1, Prot::RW);
    let b = parent
        .mmap(
            &env.mm,
            VirtAddr::new(0x7000_0000_0000),
            PAGE_SIZE,
            Prot::RW,
            MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
        )
        .unwrap();
    env.write(&mut parent, a, 1).unwrap();
    env.write(&mut parent, b, 2).unwrap();
    // The child's root and the three tables below `a` fit; the tables for `b` do not.
    let mut hoard = std::vec::Vec::new();
    while env.mm.frames().free_frames() > 4 {
        hoard.push(env.mm.frames().alloc().unwrap());
    }
    assert_eq!(
        parent.fork(&env.mm).map(|_| ()).unwrap_err(),
        crate::error::MmError::NoMem
    );
    for f in hoard {
        env.mm.frames().free(f);
    }
    assert!(
        !env.pte(&parent, a).is_writable(),
        "the test needs fork to have write-protected a"
    );
    env.check(&[&parent]);
    env.write(&mut parent, a, 3).unwrap();
    env.write(&mut parent, b, 4).unwrap();
    env.check(&[&parent]);
    env.finish(std::vec![parent]);
}

/// `MADV_WIPEONFORK`: the child's VMA exists but starts empty (reads zero, writes stick); the
/// parent's pages are untouched and not shared with the child; `KEEPONFORK` undoes it.
#[test]
fn wipeonfork_child_gets_an_empty_vma() {
    use crate::madvise::Advice;
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 2, Prot::RW);
    let kept = env.map(&mut parent, 8 * PAGE, 1, Prot::RW);
    env.write(&mut parent, va, 5).unwrap();
    env.write(&mut parent, kept, 6).unwrap();
    parent
        .madvise(&env.mm, va, 2 * PAGE_SIZE, Advice::WipeOnFork)
        .unwrap();
    parent
        .madvise(&env.mm, kept, PAGE_SIZE, Advice::WipeOnFork)
        .unwrap();
    parent
        .madvise(&env.mm, kept, PAGE_SIZE, Advice::KeepOnFork)
        .unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    assert!(
        child.translate(&env.mm, va).is_none(),
        "a wiped page was copied"
    );
    assert_eq!(env.read(&mut child, va).unwrap(), 0);
    assert_eq!(env.read(&mut child, kept).unwrap(), 6);
    env.write(&mut child, va, 9).unwrap();
    assert_eq!(env.read(&mut parent, va).unwrap(), 5);
    env.check(&[&parent, &child]);
    env.finish(std::vec![parent, child]);
}

/// The fault trace records what the fault handler decided and which rule decided it, only
/// while switched on.
#[test]
fn fault_trace_records_decisions_and_rules_only_when_on() {
    use crate::trace::{Decision, Rule};
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 2, Prot::RW);
    env.mm.trace.set_enabled(true);
    env.write(&mut parent, va, 1).unwrap();
    env.read(&mut parent, va + PAGE).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    env.write(&mut child, va, 2).unwrap();
    let mine = |root: crate::addr::PhysAddr| {
        env.mm
            .trace
            .events()
            .into_iter()
            .filter(move |e| e.root == root)
            .map(|e| (e.addr, e.decision, e.rule))
            .collect::<std::vec::Vec<_>>()
    };
    assert_eq!(
        mine(parent.root()),
        std::vec![
            (va, Decision::NewPage, Rule::DoAnonymousPage),
            (va + PAGE, Decision::ZeroPage, Rule::DoAnonymousPage),
        ]
    );
    assert_eq!(
        mine(child.root()),
        std::vec![(va, Decision::Copy, Rule::WpCanReuseCopy)]
    );
    env.mm.trace.set_enabled(false);
    env.write(&mut parent, va + PAGE, 3).unwrap();
    assert_eq!(mine(parent.root()).len(), 2, "recorded while off");
    env.finish(std::vec![parent, child]);
}

/// `MREMAP_DONTUNMAP`: the pages move (same frames, no copy), the old range stays mapped and
/// reads zeros; resizing, a missing `MAYMOVE` and shared memory are `EINVAL`.
#[test]
fn mremap_dontunmap_moves_the_pages_and_leaves_the_range_empty() {
    use crate::error::MmError;
    use crate::mremap::MremapFlags;
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    env.write(&mut s, va, 5).unwrap();
    env.write(&mut s, va + PAGE, 6).unwrap();
    let frame = env.frame(&s, va);
    let flags = MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP;
    let a = va.as_u64();
    assert_eq!(
        s.mremap(&env.mm, a, 2 * PAGE, 3 * PAGE, flags, 0),
        Err(MmError::Inval)
    );
    assert_eq!(
        s.mremap(&env.mm, a, 2 * PAGE, 2 * PAGE, MremapFlags::DONTUNMAP, 0),
        Err(MmError::Inval)
    );
    let new = s.mremap(&env.mm, a, 2 * PAGE, 2 * PAGE, flags, 0).unwrap();
    assert_ne!(new, va);
    assert_eq!(env.frame(&s, new), frame, "the page was copied, not moved");
    assert_eq!(env.read(&mut s, new + PAGE).unwrap(), 6);
    assert!(s.translate(&env.mm, va).is_none(), "the old PTE stayed");
    assert_eq!(
        env.read(&mut s, va).unwrap(),
        0,
        "the old range is not empty"
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
