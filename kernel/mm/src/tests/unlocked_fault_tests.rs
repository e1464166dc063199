//! The fault a CPU resolves without the kernel's big lock (`fault_unlocked.rs`): which faults it
//! takes, that it leaves the rest untouched for the locked path, and that what it does is the
//! locked path's result.

use super::*;
use crate::error::FaultError;
use crate::fault::x86_error::{INSTRUCTION, PROTECTION, USER, WRITE};
use crate::fault_unlocked::handle_x86_page_fault_unlocked as unlocked;

const READ_EMPTY: u64 = USER;
const WRITE_EMPTY: u64 = USER | WRITE;
const WRITE_PROTECTED: u64 = USER | WRITE | PROTECTION;

/// Maps `pages` and touches the last one so that the PT covering the range exists.
fn with_pt(env: &Env, s: &mut AddressSpace, pages: u64) -> VirtAddr {
    let va = env.map(s, 0, pages, Prot::RW);
    env.write(s, va + (pages - 1) * PAGE, 0x55).unwrap();
    va
}

#[test]
fn write_and_read_faults_on_empty_ptes_are_resolved_as_the_locked_path_does() {
    let env = Env::new();
    let mut s = env.space();
    let va = with_pt(&env, &mut s, 4);
    let before = s.minor_faults();
    unlocked(&env.mm, &mut s, va.as_u64(), WRITE_EMPTY).unwrap();
    let pte = env.pte(&s, va);
    assert!(pte.is_writable() && env.exclusive(&s, va));
    unlocked(&env.mm, &mut s, (va + PAGE).as_u64(), READ_EMPTY).unwrap();
    assert_eq!(env.frame(&s, va + PAGE), env.mm.zero_page());
    assert_eq!(s.minor_faults(), before + 2);
    // The zero page's write-protect fault: a zeroed copy.
    unlocked(&env.mm, &mut s, (va + PAGE).as_u64(), WRITE_PROTECTED).unwrap();
    assert!(env.pte(&s, va + PAGE).is_writable() && env.exclusive(&s, va + PAGE));
    env.write(&mut s, va, 7).unwrap();
    assert_eq!(env.read(&mut s, va).unwrap(), 7);
    assert_eq!(env.read(&mut s, va + PAGE).unwrap(), 0);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn cow_after_fork_copies_in_one_space_and_reuses_in_the_other() {
    let env = Env::new();
    let mut parent = env.space();
    let va = with_pt(&env, &mut parent, 2);
    env.write(&mut parent, va, 1).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    let shared = env.frame(&parent, va);
    unlocked(&env.mm, &mut child, va.as_u64(), WRITE_PROTECTED).unwrap();
    assert_ne!(env.frame(&child, va), shared, "the child got a copy");
    unlocked(&env.mm, &mut parent, va.as_u64(), WRITE_PROTECTED).unwrap();
    assert_eq!(env.frame(&parent, va), shared, "the parent reuses its page");
    assert!(env.exclusive(&parent, va) && env.exclusive(&child, va));
    env.write(&mut child, va, 2).unwrap();
    env.write(&mut parent, va, 3).unwrap();
    assert_eq!(env.read(&mut child, va).unwrap(), 2);
    assert_eq!(env.read(&mut parent, va).unwrap(), 3);
    env.check(&[&parent, &child]);
    env.finish(std::vec![parent, child]);
}

/// Every fault the unlocked path must leave to the locked one is `Retry` with nothing changed:
/// no PTE, no frame, no fault counted.
#[test]
fn everything_else_is_retried_untouched() {
    let env = Env::new();
    let mut s = env.space();
    let va = with_pt(&env, &mut s, 8);
    let ro = env.map(&mut s, 16 * PAGE, 1, Prot::READ);
    env.read(&mut s, ro).unwrap(); // the PT of `ro` is the same one
    let shm = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE + 32 * PAGE),
            PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED | MapFlags::ANONYMOUS | MapFlags::FIXED,
        )
        .unwrap();
    let far = env.map(&mut s, 64 << 20, 1, Prot::RW); // no PT yet
    let free = env.mm.frames().free_frames();
    let faults = s.minor_faults();
    let cases: [(VirtAddr, u64, &str); 7] = [
        (ro, WRITE_PROTECTED, "a write to a read-only VMA is SIGSEGV"),
        (
            va + 100 * PAGE,
            READ_EMPTY,
            "no VMA: SIGSEGV or a stack to grow",
        ),
        (shm, WRITE_EMPTY, "shmem"),
        (far, WRITE_EMPTY, "no PT: THP or a table to allocate"),
        (va, USER | INSTRUCTION, "an instruction fetch"),
        (va, USER | (1 << 3), "a reserved bit"),
        (
            VirtAddr::new(crate::aspace::USER_END - PAGE),
            READ_EMPTY,
            "the top",
        ),
    ];
    for (at, code, what) in cases {
        assert_eq!(
            unlocked(&env.mm, &mut s, at.as_u64(), code),
            Err(FaultError::Retry),
            "{what}"
        );
    }
    assert!(s.translate(&env.mm, shm).is_none() && s.translate(&env.mm, far).is_none());
    // mTHP: the locked path decides the size.
    env.mm
        .thp()
        .sizes
        .set_enabled(4, crate::mthp::SizeEnabled::Always);
    assert_eq!(
        unlocked(&env.mm, &mut s, va.as_u64(), WRITE_EMPTY),
        Err(FaultError::Retry)
    );
    env.mm
        .thp()
        .sizes
        .set_enabled(4, crate::mthp::SizeEnabled::Never);
    // The fault trace records one fault at a time.
    env.mm.trace.set_enabled(true);
    assert_eq!(
        unlocked(&env.mm, &mut s, va.as_u64(), WRITE_EMPTY),
        Err(FaultError::Retry)
    );
    env.mm.trace.set_enabled(false);
    assert!(s.translate(&env.mm, va).is_none());
    assert_eq!(
        (env.mm.frames().free_frames(), s.minor_faults()),
        (free, faults)
    );
    // And the locked path still resolves it.
    unlocked(&env.mm, &mut s, va.as_u64(), WRITE_EMPTY).unwrap();
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// A write-protect fault on a page of a large folio (a PTE-mapped THP) is the locked path's:
/// its mapcount and deferred-split handling are not audited for the unlocked path.
#[test]
fn large_folios_are_retried() {
    let env = Env::with_frames(4096);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1024, Prot::RW);
    let thp = VirtAddr::new((va.as_u64() + (2 << 20) - 1) & !((2 << 20) - 1));
    env.mm
        .thp()
        .sizes
        .set_enabled(2, crate::mthp::SizeEnabled::Always);
    env.write(&mut s, thp, 1).unwrap();
    env.mm
        .thp()
        .sizes
        .set_enabled(2, crate::mthp::SizeEnabled::Never);
    let child = s.fork(&env.mm).unwrap();
    let f = env.frame(&s, thp);
    if env.flags(f).intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
        assert_eq!(
            unlocked(&env.mm, &mut s, thp.as_u64(), WRITE_PROTECTED),
            Err(FaultError::Retry)
        );
    } else {
        panic!("the mTHP fault did not make a large folio");
    }
    env.finish(std::vec![s, child]);
}
