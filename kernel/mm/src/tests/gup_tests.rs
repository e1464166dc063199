//! GUP: flag validation, exact counting, faulting in, `FOLL_FORCE`, the fast path and its
//! fallbacks, and the R/O-pin families of Linux's `cow.c` per era.

use super::*;
use crate::error::MmError;
use crate::foll::FollFlags;
use crate::gup::*;
use crate::pin::PinnedPage;

/// Which GUP path a case uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Path {
    Slow,
    Fast,
}

pub(crate) const PATHS: [Path; 2] = [Path::Slow, Path::Fast];

/// Pins the one page at `va` through `path`.
pub(crate) fn pin_one(
    env: &Env,
    s: &mut AddressSpace,
    va: VirtAddr,
    flags: FollFlags,
    path: Path,
) -> Result<PinnedPage, MmError> {
    let mut pages = [None];
    let n = match path {
        Path::Slow => pin_user_pages(&env.mm, s, va, flags, &mut pages)?,
        Path::Fast => pin_user_pages_fast(&env.mm, s, va, flags, &mut pages)?,
    };
    assert_eq!(n, 1);
    Ok(pages[0].take().expect("one page"))
}

pub(crate) fn pin_read_u64(env: &Env, page: &PinnedPage, offset: usize) -> u64 {
    let mut b = [0u8; 8];
    page.dma_read(&env.mm, offset, &mut b);
    u64::from_le_bytes(b)
}

#[test]
fn invalid_flag_combinations_are_refused() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    let mut p = [None];
    let m = &env.mm;
    assert_eq!(
        get_user_pages(m, &mut s, va, FollFlags::LONGTERM, &mut p),
        Err(MmError::Inval),
        "FOLL_LONGTERM only when pinning"
    );
    assert_eq!(
        pin_user_pages(m, &mut s, va, FollFlags::GET, &mut p),
        Err(MmError::Inval),
        "FOLL_GET and FOLL_PIN are exclusive"
    );
    for internal in [FollFlags::PIN, FollFlags::COW, FollFlags::from_bits(1 << 5)] {
        assert_eq!(
            get_user_pages(m, &mut s, va, internal, &mut p),
            Err(MmError::Inval)
        );
        assert_eq!(
            pin_user_pages_fast(m, &mut s, va, internal, &mut p),
            Err(MmError::Inval)
        );
    }
    assert!(p[0].is_none());
    env.finish(std::vec![s]);
}

#[test]
fn pins_and_references_are_counted_exactly() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    for i in 0..3 {
        env.write(&mut s, va + i * PAGE, i).unwrap();
    }
    assert!(!s.has_pinned());
    let mut pins = [None, None, None];
    let mut refs = [None, None, None];
    assert_eq!(
        pin_user_pages(&env.mm, &mut s, va, FollFlags::WRITE, &mut pins),
        Ok(3)
    );
    assert_eq!(
        get_user_pages(&env.mm, &mut s, va, FollFlags::NONE, &mut refs),
        Ok(3)
    );
    assert!(s.has_pinned());
    env.check(&[&s]);
    for i in 0..3 {
        let meta = env.mm.frames().meta(env.frame(&s, va + i * PAGE));
        assert_eq!(
            (meta.refcount(), meta.mapcount(), meta.pincount()),
            (3, 1, 1)
        );
        assert_eq!(
            pins[i as usize].as_ref().unwrap().frame(),
            env.frame(&s, va + i * PAGE)
        );
    }
    let st = env.mm.stats();
    assert_eq!((st.gup_pins_held, st.gup_refs_held), (3, 3));
    unpin_user_pages_dirty_lock(&env.mm, &mut pins, crate::pin::UnpinDirty::MakeDirty);
    unpin_user_pages(&env.mm, &mut refs);
    assert!(pins.iter().chain(refs.iter()).all(Option::is_none));
    let meta = env.mm.frames().meta(env.frame(&s, va));
    assert_eq!((meta.refcount(), meta.pincount()), (1, 0));
    assert!(meta.test(FrameFlags::DIRTY), "make_dirty marked the page");
    env.finish(std::vec![s]);
}

#[test]
fn slow_path_faults_pages_in_and_reports_partial_results() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    let mut pages = [None, None, None];
    // The third page is not mapped: two pages taken, no error.
    assert_eq!(
        pin_user_pages(&env.mm, &mut s, va, FollFlags::WRITE, &mut pages),
        Ok(2)
    );
    assert!(pages[2].is_none());
    assert!(env.exclusive(&s, va) && env.pte(&s, va).is_writable());
    env.check(&[&s]);
    unpin_user_pages(&env.mm, &mut pages);
    // Nothing at all: an error.
    let mut one = [None];
    assert_eq!(
        pin_user_pages(&env.mm, &mut s, va + 2 * PAGE, FollFlags::NONE, &mut one),
        Err(MmError::Fault)
    );
    env.finish(std::vec![s]);
}

#[test]
fn short_term_ro_pin_of_an_untouched_page_takes_the_zero_page() {
    // Short-term R/O pins have snapshot semantics: no unshare (seed 004, note 1).
    for path in PATHS {
        let env = Env::new();
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::RW);
        let page = pin_one(&env, &mut s, va, FollFlags::NONE, path).unwrap();
        assert_eq!(page.frame(), env.mm.zero_page(), "{path:?}");
        env.check(&[&s]);
        page.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}

#[test]
fn write_gup_needs_prot_write_or_force_on_a_cow_mapping() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::READ);
    let mut p = [None];
    assert_eq!(
        pin_user_pages(&env.mm, &mut s, va, FollFlags::WRITE, &mut p),
        Err(MmError::Fault)
    );
    // FOLL_FORCE breaks COW into an exclusive page; the PTE stays read-only for the process.
    let page = pin_one(
        &env,
        &mut s,
        va,
        FollFlags::WRITE | FollFlags::FORCE,
        Path::Slow,
    )
    .unwrap();
    assert!(env.exclusive(&s, va));
    assert!(!env.pte(&s, va).is_writable());
    assert!(
        env.write(&mut s, va, 1).is_err(),
        "still read-only to the process"
    );
    env.check(&[&s]);
    page.unpin(&env.mm);
    env.finish(std::vec![s]);
}

#[test]
fn force_write_through_proc_mem_breaks_cow_in_every_era() {
    for era in Era::ALL {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 1).unwrap();
        parent.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        let n = access_process_vm_write(&env.mm, &mut child, va, &2u64.to_le_bytes());
        assert_eq!(n, Ok(8), "{era}");
        env.check(&[&parent, &child]);
        assert_eq!(env.read(&mut parent, va).unwrap(), 1, "{era}");
        assert_eq!(env.read(&mut child, va).unwrap(), 2, "{era}");
        let mut b = [0u8; 8];
        assert_eq!(
            access_process_vm_read(&env.mm, &mut child, va, &mut b),
            Ok(8)
        );
        assert_eq!(u64::from_le_bytes(b), 2);
        env.finish(std::vec![parent, child]);
    }
}

/// `/proc/pid/mem` (FOLL_FORCE) reads and writes PROT_NONE private memory as Linux does: into
/// an untouched page, a populated one, and one shared with a fork child (COW broken, the parent
/// keeps its data); the pages stay inaccessible to the process. A PROT_NONE shared mapping is
/// read but not written (no COW to break).
#[test]
fn force_access_to_prot_none_memory_in_every_era() {
    for era in Era::ALL {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 3, Prot::RW);
        env.write(&mut parent, va + PAGE, 1).unwrap();
        env.write(&mut parent, va + 2 * PAGE, 5).unwrap();
        parent
            .mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::NONE)
            .unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        for s in 0..3u64 {
            let space = if s < 2 { &mut parent } else { &mut child };
            let at = va + s * PAGE;
            let n = access_process_vm_write(&env.mm, space, at, &(7 + s).to_le_bytes());
            assert_eq!(n, Ok(8), "{era}: page {s}");
            let mut b = [0u8; 8];
            assert_eq!(access_process_vm_read(&env.mm, space, at, &mut b), Ok(8));
            assert_eq!(u64::from_le_bytes(b), 7 + s, "{era}: page {s}");
            assert!(env.read(space, at).is_err(), "{era}: still PROT_NONE");
        }
        env.check(&[&parent, &child]);
        parent
            .mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::READ)
            .unwrap();
        child
            .mprotect(&env.mm, va, 3 * PAGE_SIZE, Prot::READ)
            .unwrap();
        assert_eq!(env.read(&mut parent, va).unwrap(), 7, "{era}");
        assert_eq!(env.read(&mut parent, va + PAGE).unwrap(), 8, "{era}");
        assert_eq!(
            env.read(&mut parent, va + 2 * PAGE).unwrap(),
            5,
            "{era}: parent kept"
        );
        assert_eq!(
            env.read(&mut child, va + 2 * PAGE).unwrap(),
            9,
            "{era}: child's copy"
        );
        env.check(&[&parent, &child]);
        env.finish(std::vec![parent, child]);
    }
    let env = Env::new();
    let mut s = env.space();
    let obj = super::shmem_tests::memfd(&env, 1, 3);
    let va = super::shmem_tests::map_obj(&env, &mut s, &obj, 0, 1, Prot::NONE, MapFlags::SHARED);
    let mut b = [0u8; 8];
    assert_eq!(access_process_vm_read(&env.mm, &mut s, va, &mut b), Ok(8));
    assert_eq!(u64::from_le_bytes(b), 3);
    assert_eq!(
        access_process_vm_write(&env.mm, &mut s, va, &[1]),
        Err(MmError::Fault),
        "no forced write to a shared mapping"
    );
    env.check(&[&s]);
    crate::shmem::ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

#[test]
fn gup_fast_takes_writable_pages_and_falls_back_for_the_rest() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + PAGE, 1).unwrap();
    env.write(&mut s, va + 3 * PAGE, 1).unwrap();
    let mut pages = [None, None, None, None];
    let before = env.mm.stats();
    assert_eq!(
        pin_user_pages_fast(&env.mm, &mut s, va, FollFlags::WRITE, &mut pages),
        Ok(4)
    );
    let st = env.mm.stats();
    assert_eq!(
        st.gup_fast_pages - before.gup_fast_pages,
        2,
        "pages 0 and 1"
    );
    assert_eq!(
        st.gup_fast_fallbacks - before.gup_fast_fallbacks,
        2,
        "page 2 is not present; the slow path takes it and the rest"
    );
    assert!(env.mm.arch().irqs_enabled(), "interrupts restored");
    env.check(&[&s]);
    unpin_user_pages(&env.mm, &mut pages);
    // A write pin of a read-only PTE falls back; a read pin of it does not.
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
    let mut one = [None];
    assert_eq!(
        pin_user_pages_fast_only(&env.mm, &s, va, FollFlags::WRITE, &mut one),
        Ok(0),
        "a write pin never takes a read-only PTE"
    );
    assert_eq!(
        pin_user_pages_fast_only(&env.mm, &s, va, FollFlags::LONGTERM, &mut one),
        Ok(1),
        "an exclusive anon page may be R/O pinned without the VMA"
    );
    unpin_user_pages(&env.mm, &mut one);
    env.finish(std::vec![s]);
}

#[test]
fn gup_fast_pin_backs_off_while_fork_write_protects() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let mut one = [None];
    s.write_protect_begin();
    assert_eq!(
        pin_user_pages_fast_only(&env.mm, &s, va, FollFlags::WRITE, &mut one),
        Ok(0),
        "odd write_protect_seq: a fork is running"
    );
    assert_eq!(env.mm.stats().gup_fast_seq_retries, 1);
    // Plain references do not care (fork's check is about pins).
    assert_eq!(
        get_user_pages_fast_only(&env.mm, &s, va, FollFlags::NONE, &mut one),
        Ok(1)
    );
    unpin_user_pages(&env.mm, &mut one);
    s.write_protect_end();
    assert_eq!(
        pin_user_pages_fast_only(&env.mm, &s, va, FollFlags::WRITE, &mut one),
        Ok(1)
    );
    unpin_user_pages(&env.mm, &mut one);
    env.finish(std::vec![s]);
}

#[test]
fn gup_fast_pin_backs_out_when_a_fork_ran_meanwhile() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    env.write(&mut s, va + PAGE, 1).unwrap();
    let mut pages = [None, None];
    let taken = env
        .mm
        .arch()
        .with_fork_during_irqs_off(s.write_protect_seq(), || {
            pin_user_pages_fast_only(&env.mm, &s, va, FollFlags::WRITE, &mut pages)
        });
    assert_eq!(
        taken,
        Ok(0),
        "the count moved across the pins: they are given back"
    );
    assert!(pages.iter().all(Option::is_none));
    let st = env.mm.stats();
    assert_eq!((st.gup_fast_seq_retries, st.gup_pins_held), (1, 0));
    assert_eq!(env.mm.frames().meta(env.frame(&s, va)).pincount(), 0);
    env.check(&[&s]);
    // The next attempt, with no fork in between, succeeds.
    assert_eq!(
        pin_user_pages_fast(&env.mm, &mut s, va, FollFlags::WRITE, &mut pages),
        Ok(2)
    );
    assert_eq!(env.mm.stats().gup_fast_pages, 2);
    unpin_user_pages(&env.mm, &mut pages);
    env.finish(std::vec![s]);
}

/// The anon R/O-pin families of `cow.c`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RoPinCase {
    /// The page is mapped by parent and child when pinned.
    Shared,
    /// The child exited before the pin: mapped once, but not known exclusive.
    PreviouslyShared,
    /// Only ever mapped by this process.
    Exclusive,
}

/// Expected verdict of "R/O pin on R/O-mapped ... page: the pin sees the process's later
/// write" per era (SEMANTICS.md section 10). Before 2022 the pin is taken on a page that the
/// next write may copy away: 2009/2016 reuse on `mapcount == 1` (so only the shared page
/// fails), 2020 copies whenever the pin's reference is there.
pub(crate) fn ro_pin_expected(era: Era, case: RoPinCase) -> bool {
    match era {
        Era::Y2022 | Era::Y2023 => true,
        Era::Y2009 | Era::Y2016 => case != RoPinCase::Shared,
        Era::Y2020 => false,
    }
}

/// Runs one R/O-pin case; returns whether the pin saw the process's write.
pub(crate) fn ro_pin_case(env: &Env, era: Era, case: RoPinCase, path: Path) -> bool {
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let mut spaces = std::vec::Vec::new();
    match case {
        RoPinCase::Shared => spaces.push(s.fork(&env.mm).unwrap()),
        RoPinCase::PreviouslyShared => s.fork(&env.mm).unwrap().exit(&env.mm),
        RoPinCase::Exclusive => {}
    }
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
    let before = env.mm.stats();
    let pin = pin_one(env, &mut s, va, FollFlags::LONGTERM, path).unwrap();
    let st = env.mm.stats();
    if path == Path::Fast && era >= Era::Y2022 {
        let fast = st.gup_fast_pages - before.gup_fast_pages;
        let expected_fast = u64::from(case == RoPinCase::Exclusive);
        assert_eq!(fast, expected_fast, "{era} {case:?}: fast path taken?");
        assert_eq!(
            st.gup_fast_fallbacks - before.gup_fast_fallbacks,
            1 - expected_fast,
            "{era} {case:?}: fallback?"
        );
    }
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
    env.write(&mut s, va, 2).unwrap();
    let mut all: std::vec::Vec<&AddressSpace> = spaces.iter().collect();
    all.push(&s);
    env.check(&all);
    let coherent = pin_read_u64(env, &pin, 0) == 2;
    pin.unpin(&env.mm);
    spaces.push(s);
    env.finish(spaces);
    coherent
}

#[test]
fn ro_pin_on_ro_mapped_anon_pages_per_era() {
    for era in Era::ALL {
        for case in [
            RoPinCase::Shared,
            RoPinCase::PreviouslyShared,
            RoPinCase::Exclusive,
        ] {
            for path in PATHS {
                let env = Env::era(era);
                let seen = ro_pin_case(&env, era, case, path);
                assert_eq!(
                    seen,
                    ro_pin_expected(era, case),
                    "{era} {case:?} {path:?}: does the R/O pin see the later write?"
                );
            }
        }
    }
}

#[test]
fn ro_longterm_pin_of_the_zero_page_sees_later_writes_from_2022() {
    for era in Era::ALL {
        for path in PATHS {
            let env = Env::era(era);
            let mut s = env.space();
            let va = env.map(&mut s, 0, 1, Prot::RW);
            assert_eq!(env.read(&mut s, va).unwrap(), 0);
            let before = env.mm.stats();
            let pin = pin_one(&env, &mut s, va, FollFlags::LONGTERM, path).unwrap();
            let st = env.mm.stats();
            if era >= Era::Y2022 {
                assert_ne!(pin.frame(), env.mm.zero_page(), "{era}: unshared first");
                assert!(env.exclusive(&s, va));
                assert_eq!(st.gup_unshare_faults - before.gup_unshare_faults, 1);
                if path == Path::Fast {
                    assert_eq!(st.gup_fast_fallbacks - before.gup_fast_fallbacks, 1);
                }
            } else {
                assert_eq!(pin.frame(), env.mm.zero_page(), "{era}");
            }
            env.write(&mut s, va, 5).unwrap();
            env.check(&[&s]);
            let seen = pin_read_u64(&env, &pin, 0) == 5;
            assert_eq!(seen, era >= Era::Y2022, "{era} {path:?}");
            pin.unpin(&env.mm);
            env.finish(std::vec![s]);
        }
    }
}

#[test]
fn dirty_cow_race_on_anon_memory_never_writes_the_zero_page() {
    // The 2009 race on a private anonymous mapping: after the COW break the retry drops
    // FOLL_WRITE, the racing MADV_DONTNEED empties the PTE, and the read fault maps the zero
    // page. cowlab refuses to write it (Linux wrote it); later rules take the COW copy.
    for era in Era::ALL {
        let env = Env::era(era);
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::READ);
        env.read(&mut s, va).unwrap();
        let mut races = 0;
        let mut racing_thread = |mm: &Mm<HostArch>, s: &mut AddressSpace| {
            if races < 3 {
                races += 1;
                s.madvise(mm, va, PAGE_SIZE, crate::madvise::Advice::DontNeed)
                    .unwrap();
                // A racing reader maps the zero page again: a clean PTE that 2016's
                // FOLL_COW retry must refuse because it is not dirty (Linux 4.8.3).
                crate::fault::handle_mm_fault(mm, s, va, crate::fault::FaultKind::Read).unwrap();
            }
        };
        let r = crate::gup::access_process_vm_write_hooked(
            &env.mm,
            &mut s,
            va,
            &7u64.to_le_bytes(),
            &mut racing_thread,
        );
        if era == Era::Y2009 {
            assert_eq!(r, Err(MmError::Fault), "{era}");
        } else {
            assert_eq!(r, Ok(8), "{era}");
            assert_eq!(env.read(&mut s, va).unwrap(), 7, "{era}");
        }
        env.check(&[&s]);
        env.finish(std::vec![s]);
    }
}

/// `pin_user_page` goes through the real GUP: pinning a page the parent shares with a fork
/// child never pins the shared page (SEMANTICS.md section 1: a pinned anon page in a private
/// mapping is exclusive), and the child keeps its own view when the device writes.
#[test]
fn pin_user_page_of_a_page_shared_with_a_child_pins_an_exclusive_copy() {
    for era in [Era::Y2022, Era::Y2023] {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 0x11).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        let shared = env.frame(&parent, va);
        assert_eq!(env.frame(&child, va), shared);
        let pin = crate::pin::pin_user_page(&env.mm, &mut parent, va).unwrap();
        env.check(&[&parent, &child]);
        assert_ne!(pin.frame(), shared, "{era}: pinned the page the child maps");
        assert_eq!(pin.frame(), env.frame(&parent, va), "{era}");
        assert!(env.exclusive(&parent, va), "{era}");
        pin.dma_from_device()
            .unwrap()
            .dma_write(&env.mm, 0, &0x22u64.to_le_bytes());
        assert_eq!(env.read(&mut parent, va).unwrap(), 0x22, "{era}");
        assert_eq!(
            env.read(&mut child, va).unwrap(),
            0x11,
            "{era}: the child saw the DMA"
        );
        pin.unpin(&env.mm);
        // A read-only pin of a page shared with a child unshares it too.
        let grandchild = parent.fork(&env.mm).unwrap();
        let shared = env.frame(&parent, va);
        let ro = pin_one(&env, &mut parent, va, FollFlags::NONE, Path::Slow).unwrap();
        env.check(&[&parent, &child, &grandchild]);
        assert_ne!(ro.frame(), shared, "{era}");
        assert_eq!(env.frame(&grandchild, va), shared, "{era}");
        ro.unpin(&env.mm);
        env.finish(std::vec![parent, child, grandchild]);
    }
}

/// Only a `FOLL_WRITE` pin may be written by a device: read-only pins and `FOLL_GET`
/// references (vmsplice) of a page shared with a child are refused a `DmaFromDevice`.
#[test]
fn only_write_pins_can_be_written_by_a_device() {
    for era in Era::ALL {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 0x11).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        let mut slot = [None];
        get_user_pages(&env.mm, &mut parent, va, FollFlags::NONE, &mut slot).unwrap();
        let get = slot[0].take().unwrap();
        assert_eq!(get.dma_from_device().unwrap_err(), MmError::Perm, "{era}");
        assert_eq!(pin_read_u64(&env, &get, 0), 0x11);
        let ro = pin_one(&env, &mut parent, va, FollFlags::NONE, Path::Fast).unwrap();
        assert_eq!(ro.dma_from_device().unwrap_err(), MmError::Perm, "{era}");
        let rw = pin_one(&env, &mut parent, va, FollFlags::WRITE, Path::Slow).unwrap();
        rw.dma_from_device()
            .unwrap()
            .dma_write(&env.mm, 8, &5u64.to_le_bytes());
        assert_eq!(
            env.read(&mut child, va + 8).unwrap(),
            0,
            "{era}: DMA reached the child"
        );
        for p in [get, ro, rw] {
            p.unpin(&env.mm);
        }
        env.check(&[&parent, &child]);
        env.finish(std::vec![parent, child]);
    }
}

/// `access_ok`: kernel-half, non-canonical (which the table walk would alias onto a user page)
/// and wrapping ranges are refused by the user copies, every GUP entry point and
/// `access_process_vm_*`, before any page table is looked at.
#[test]
fn user_copies_and_gup_refuse_non_user_and_wrapping_ranges() {
    use crate::aspace::USER_END;
    use crate::error::{FaultError, SegvReason};
    use crate::uaccess::{access_ok, copy_from_user, copy_to_user};
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 0x5eed).unwrap();
    let alias = VirtAddr::new(0xffff_0000_0000_0000 | va.as_u64());
    assert_eq!(
        alias.table_index(4),
        va.table_index(4),
        "the alias indexes the same tables"
    );
    let bad: [(VirtAddr, usize); 6] = [
        (alias, 8),
        (VirtAddr::new(0xffff_8000_0000_0000), 8),
        (VirtAddr::new(USER_END), 1),
        (VirtAddr::new(USER_END - 4), 8),
        (VirtAddr::new(u64::MAX - 3), 8),
        (va, usize::MAX),
    ];
    let segv = Err(FaultError::Segv(SegvReason::NoMapping));
    for (at, len) in bad {
        assert!(!access_ok(at, len), "{at:#x}+{len:#x}");
        let n = len.min(16);
        let mut buf = [0u8; 16];
        if len <= 16 {
            assert_eq!(
                copy_from_user(&env.mm, &mut s, at, &mut buf[..n]),
                segv,
                "{at:#x}"
            );
            assert_eq!(
                copy_to_user(&env.mm, &mut s, at, &buf[..n]),
                segv,
                "{at:#x}"
            );
            assert_eq!(
                access_process_vm_read(&env.mm, &mut s, at, &mut buf[..n]),
                Err(MmError::Fault)
            );
            assert_eq!(
                access_process_vm_write(&env.mm, &mut s, at, &buf[..n]),
                Err(MmError::Fault)
            );
        }
        if len > 16 {
            continue;
        }
        let mut pages = [None, None];
        for flags in [FollFlags::NONE, FollFlags::WRITE] {
            assert_eq!(
                pin_user_pages(&env.mm, &mut s, at, flags, &mut pages),
                Err(MmError::Fault)
            );
            assert_eq!(
                pin_user_pages_fast(&env.mm, &mut s, at, flags, &mut pages),
                Err(MmError::Fault)
            );
            assert_eq!(
                get_user_pages(&env.mm, &mut s, at, flags, &mut pages),
                Err(MmError::Fault)
            );
            assert_eq!(
                get_user_pages_fast_only(&env.mm, &s, at, flags, &mut pages),
                Err(MmError::Fault)
            );
        }
    }
    // A range running past USER_END is refused as a whole, not served partially.
    let top = VirtAddr::new(USER_END - PAGE);
    let mut pages = [None, None];
    assert_eq!(
        get_user_pages_fast(&env.mm, &mut s, top, FollFlags::NONE, &mut pages),
        Err(MmError::Fault)
    );
    // The aliased page was never touched and still reads back through its real address.
    assert!(
        access_ok(va, 8)
            && access_ok(VirtAddr::new(USER_END - 8), 8)
            && access_ok(VirtAddr::new(USER_END), 0)
    );
    let mut b = [0u8; 8];
    copy_from_user(&env.mm, &mut s, va, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x5eed);
    assert!(
        s.translate(&env.mm, alias).is_none(),
        "a non-canonical address has no translation"
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// A `FOLL_FORCE` write (`/proc/pid/mem`) to a read-only private page is recorded by
/// soft-dirty tracking: from 2022 `can_follow_write_pte` refuses a PTE that is not soft-dirty
/// while tracking is on, so the write faults and sets the bit (Linux 6.0).
#[test]
fn force_write_after_clear_refs_marks_the_page_soft_dirty() {
    use crate::pagemap::PM_SOFT_DIRTY;
    for era in Era::ALL {
        let env = Env::era(era);
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::RW);
        env.write(&mut s, va, 1).unwrap();
        s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
        s.clear_refs_soft_dirty(&env.mm);
        let frame = env.frame(&s, va);
        assert_eq!(s.pagemap_entry(&env.mm, va) & PM_SOFT_DIRTY, 0, "{era}");
        let n = access_process_vm_write(&env.mm, &mut s, va, &2u64.to_le_bytes()).unwrap();
        assert_eq!(n, 8);
        env.check(&[&s]);
        assert_ne!(
            s.pagemap_entry(&env.mm, va) & PM_SOFT_DIRTY,
            0,
            "{era}: the forced write was not recorded"
        );
        assert!(env.pte(&s, va).is_soft_dirty());
        assert!(
            !env.pte(&s, va).is_writable(),
            "{era}: PROT_READ stays read-only"
        );
        assert_eq!(env.read(&mut s, va).unwrap(), 2);
        if era >= Era::Y2022 {
            assert_eq!(
                env.frame(&s, va),
                frame,
                "{era}: the exclusive page is reused"
            );
        }
        env.finish(std::vec![s]);
    }
}

/// An unshare fault whose count rule proves the page unshared (step 2 of `do_wp_page`: the fork
/// child is gone, refcount 1, `ANON_EXCLUSIVE` not yet set) marks it exclusive and reuses it,
/// but keeps the PTE read-only: unsharing grants no write permission.
#[test]
fn unshare_proven_by_the_refcount_keeps_the_pte_read_only() {
    for era in [Era::Y2022, Era::Y2023] {
        let env = Env::era(era);
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::RW);
        env.write(&mut s, va, 1).unwrap();
        let child = s.fork(&env.mm).unwrap();
        child.exit(&env.mm);
        let frame = env.frame(&s, va);
        assert!(!env.exclusive(&s, va));
        let before = env.mm.stats();
        let pin = pin_one(&env, &mut s, va, FollFlags::NONE, Path::Slow).unwrap();
        let st = env.mm.stats();
        assert_eq!(
            st.gup_unshare_faults - before.gup_unshare_faults,
            1,
            "{era}"
        );
        assert_eq!(pin.frame(), frame, "{era}: reused, not copied");
        assert!(env.exclusive(&s, va), "{era}");
        assert!(
            !env.pte(&s, va).is_writable(),
            "{era}: unshare made the PTE writable"
        );
        env.check(&[&s]);
        // The next write faults and reuses the now-exclusive page.
        let faults = s.minor_faults();
        env.write(&mut s, va, 2).unwrap();
        assert_eq!(s.minor_faults(), faults + 1, "{era}");
        assert_eq!(env.frame(&s, va), frame);
        assert_eq!(pin_read_u64(&env, &pin, 0), 2);
        pin.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}

/// A long-term read-only pin of an untouched page (2022+) takes two faults, as Linux does: the
/// first maps the zero page (an unshare on an empty PTE is a read), the second unshares it into
/// an exclusive, still read-only anon page.
#[test]
fn longterm_ro_pin_of_an_untouched_page_faults_twice_into_an_exclusive_page() {
    for era in [Era::Y2022, Era::Y2023] {
        let env = Env::era(era);
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::RW);
        let before = env.mm.stats();
        let pin = pin_one(&env, &mut s, va, FollFlags::LONGTERM, Path::Slow).unwrap();
        let st = env.mm.stats();
        assert_eq!(st.zero_page_faults - before.zero_page_faults, 1, "{era}");
        assert_eq!(
            st.gup_unshare_faults - before.gup_unshare_faults,
            1,
            "{era}"
        );
        assert_eq!(st.zero_page_copies - before.zero_page_copies, 1, "{era}");
        assert_ne!(pin.frame(), env.mm.zero_page(), "{era}");
        assert!(env.exclusive(&s, va), "{era}");
        assert!(!env.pte(&s, va).is_writable(), "{era}");
        env.check(&[&s]);
        pin.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}

/// `PinnedPage::dup` (what an O_DIRECT transfer hands each extent's request while it holds the
/// filesystem lock, where a second GUP could fault into `page_mkwrite` and take that lock
/// again): one more reference and pin of the same kind on the same frame, counted in the held
/// gauges, with the same DMA direction; released on its own, the original hold stays.
#[test]
fn dup_of_a_pinned_page_is_one_more_hold_of_the_same_kind() {
    for era in [Era::Y2016, Era::Y2023] {
        let env = Env::era(era);
        let mut s = env.space();
        let va = env.map(&mut s, 0, 1, Prot::RW);
        env.write(&mut s, va, 0x11).unwrap();
        let pin = crate::pin::pin_user_page(&env.mm, &mut s, va).unwrap();
        let meta = env.mm.frames().meta(pin.frame());
        let (rc, pc) = (meta.refcount(), meta.pincount());
        let held = |st: crate::stats::MmStats| st.gup_pins_held + st.gup_refs_held;
        let before = held(env.mm.stats());
        let twin = pin.dup(&env.mm);
        assert_eq!(twin.frame(), pin.frame(), "{era}");
        assert_eq!(twin.kind(), pin.kind(), "{era}");
        assert!(twin.dma_from_device().is_ok(), "{era}: a write pin's dup");
        let extra_pin = u32::from(pin.kind() == crate::pin::PinKind::Pin);
        assert_eq!((meta.refcount(), meta.pincount()), (rc + 1, pc + extra_pin));
        assert_eq!(held(env.mm.stats()), before + 1, "{era}");
        env.check(&[&s]);
        twin.unpin(&env.mm);
        assert_eq!((meta.refcount(), meta.pincount()), (rc, pc), "{era}");
        assert_eq!(held(env.mm.stats()), before, "{era}");
        pin.unpin(&env.mm);
        env.finish(std::vec![s]);
    }
}
