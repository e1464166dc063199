//! Soft-dirty tracking (`clear_refs` 4, pagemap bit 55) across mprotect, faults and fork.

use super::*;
use crate::aspace::AddressSpace;

/// One page at `BASE`, written, then `clear_refs`: tracking on, the PTE clean and read-only.
fn written_then_cleared(env: &Env) -> (AddressSpace, VirtAddr) {
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    s.clear_refs_soft_dirty(&env.mm);
    assert!(!s.is_soft_dirty(&env.mm, va));
    assert!(!env.pte(&s, va).is_writable());
    (s, va)
}

#[test]
fn mprotect_after_clear_refs_keeps_the_pte_read_only_until_the_write_fault() {
    for era in Era::ALL {
        let env = Env::era(era);
        let (mut s, va) = written_then_cleared(&env);
        s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
        s.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
        env.check(&[&s]);
        assert!(
            !env.pte(&s, va).is_writable(),
            "{era}: mprotect made a clean PTE writable: its write would not be recorded"
        );
        let faults = s.minor_faults();
        env.write(&mut s, va, 2).unwrap();
        assert_eq!(s.minor_faults(), faults + 1, "{era}");
        assert!(s.is_soft_dirty(&env.mm, va), "{era}");
        env.check(&[&s]);
        env.finish(std::vec![s]);
    }
}

#[test]
fn a_page_faulted_in_after_clear_refs_is_soft_dirty() {
    for era in Era::ALL {
        let env = Env::era(era);
        let (mut s, va) = written_then_cleared(&env);
        // Never touched before: a write fault on an empty PTE.
        env.write(&mut s, va + PAGE, 3).unwrap();
        assert!(env.pte(&s, va + PAGE).is_soft_dirty(), "{era}");
        assert!(s.is_soft_dirty(&env.mm, va + PAGE), "{era}");
        assert!(
            !s.is_soft_dirty(&env.mm, va),
            "{era}: untouched since clear_refs"
        );
        env.check(&[&s]);
        env.finish(std::vec![s]);
    }
}

#[test]
fn soft_dirty_bits_survive_fork() {
    for era in Era::ALL {
        let env = Env::era(era);
        let (mut s, va) = written_then_cleared(&env);
        env.write(&mut s, va + PAGE, 4).unwrap();
        let child = s.fork(&env.mm).unwrap();
        env.check(&[&s, &child]);
        assert!(
            child.is_soft_dirty(&env.mm, va + PAGE),
            "{era}: lost in the child"
        );
        assert!(s.is_soft_dirty(&env.mm, va + PAGE), "{era}");
        assert!(!child.is_soft_dirty(&env.mm, va), "{era}");
        assert!(!s.is_soft_dirty(&env.mm, va), "{era}");
        env.finish(std::vec![s, child]);
    }
}
