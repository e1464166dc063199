//! The historical rule sets reproduce their historical behaviour (SEMANTICS.md section 9).

use super::*;
use crate::pin::{get_user_page, pin_user_page, PinKind};

/// A page written by its only process, then write-protected (clear_refs), with one extra
/// reference held by `hold`.
fn write_protected_with_extra_ref(
    env: &Env,
    hold: fn(&Env, &mut AddressSpace, VirtAddr) -> crate::pin::PinnedPage,
) -> (AddressSpace, VirtAddr, PhysAddr, crate::pin::PinnedPage) {
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let frame = env.frame(&s, va);
    let held = hold(env, &mut s, va);
    s.clear_refs_soft_dirty(&env.mm);
    env.check(&[&s]);
    (s, va, frame, held)
}

fn gup(env: &Env, s: &mut AddressSpace, va: VirtAddr) -> crate::pin::PinnedPage {
    get_user_page(&env.mm, s, va).unwrap()
}

fn pin(env: &Env, s: &mut AddressSpace, va: VirtAddr) -> crate::pin::PinnedPage {
    pin_user_page(&env.mm, s, va).unwrap()
}

#[test]
fn mapcount_rule_of_2009_reuses_a_page_with_an_extra_reference() {
    for era in [Era::Y2009, Era::Y2016] {
        let env = Env::era(era);
        let (mut s, va, frame, held) = write_protected_with_extra_ref(&env, gup);
        env.write(&mut s, va, 2).unwrap();
        env.check(&[&s]);
        assert_eq!(env.frame(&s, va), frame, "{era}: mapcount == 1 reuses");
        held.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}

#[test]
fn refcount_rule_of_2020_copies_a_page_with_an_extra_reference() {
    let env = Env::era(Era::Y2020);
    let (mut s, va, frame, held) = write_protected_with_extra_ref(&env, gup);
    env.write(&mut s, va, 2).unwrap();
    env.check(&[&s]);
    assert_ne!(env.frame(&s, va), frame, "refcount 2: copied");
    assert_eq!(env.mm.stats().cow_copies, 1);
    held.unpin(&env.mm);
    env.finish(std::vec![s]);
}

#[test]
fn clear_refs_on_a_pinned_page_copies_in_2020_and_reuses_from_2022() {
    // Seed 001: with only the refcount rule, the next write after write-protection copies the
    // page away from its pin and the device and the process stop seeing each other's writes.
    for era in [Era::Y2020, Era::Y2022, Era::Y2023] {
        let env = Env::era(era);
        let (mut s, va, frame, pinned) = write_protected_with_extra_ref(&env, pin);
        assert_eq!(pinned.kind(), PinKind::Pin);
        env.write(&mut s, va, 0x77).unwrap();
        env.check(&[&s]);
        let mut b = [0u8; 8];
        pinned.dma_read(&env.mm, 0, &mut b);
        let coherent = u64::from_le_bytes(b) == 0x77;
        if era == Era::Y2020 {
            assert_ne!(env.frame(&s, va), frame, "{era}");
            assert!(!coherent, "{era}: the pin lost the process's write");
        } else {
            assert_eq!(env.frame(&s, va), frame, "{era}");
            assert!(coherent, "{era}: the pin sees the write");
        }
        pinned.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}

#[test]
fn fork_with_a_dma_buffer_loses_the_parents_data_before_2020() {
    // Seed 003, bug 1: the parent has DMA in flight into a page (a plain reference before 2020)
    // and forks; its next write copies the page, and the data the device writes lands in the
    // page the child now owns.
    for era in Era::ALL {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 1).unwrap();
        let dma = pin_user_page(&env.mm, &mut parent, va).unwrap();
        let expected_kind = if era >= Era::Y2020 {
            PinKind::Pin
        } else {
            PinKind::Get
        };
        assert_eq!(dma.kind(), expected_kind, "{era}");
        let mut child = parent.fork(&env.mm).unwrap();
        env.write(&mut parent, va + 8, 2).unwrap();
        dma.dma_from_device()
            .unwrap()
            .dma_write(&env.mm, 16, &0xd00du64.to_le_bytes());
        env.check(&[&parent, &child]);
        let parent_sees = env.read(&mut parent, va + 16).unwrap() == 0xd00d;
        let child_sees = env.read(&mut child, va + 16).unwrap() == 0xd00d;
        if era >= Era::Y2020 {
            assert!(
                parent_sees && !child_sees,
                "{era}: fork copied for the child"
            );
        } else {
            assert!(
                !parent_sees && child_sees,
                "{era}: the DMA went to the child"
            );
        }
        dma.unpin(&env.mm);
        env.finish(std::vec![parent, child]);
    }
}

#[test]
fn era_switches_at_run_time() {
    let env = Env::new();
    assert_eq!(env.mm.era(), Era::Y2023);
    env.mm.set_era(Era::Y2009);
    assert_eq!(env.mm.era(), Era::Y2009);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    // A plain reference taken under 2009 is released correctly under 2023.
    let r = pin_user_page(&env.mm, &mut s, va).unwrap();
    env.mm.set_era(Era::Y2023);
    assert_eq!(r.kind(), PinKind::Get);
    r.unpin(&env.mm);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
