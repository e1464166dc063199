//! The conformance matrix of SEMANTICS.md section 10: every family of Linux's `cow.c` and
//! `gup_longterm.c` that the memory manager supports, on every memory type that applies, run
//! under every era, against the expected verdict per era (section 9's table). A case "passes"
//! when it behaves as `cow.c` demands of a correct kernel; an older era's expected failure is
//! itself asserted, so the history stays reproducible. Each case runs on a fresh machine and
//! ends with the invariant checker and a frame/pin baseline check (`Env::finish`).

use alloc::format;
use alloc::string::String;

use super::gup_tests::{pin_one, pin_read_u64, ro_pin_case, ro_pin_expected, Path, RoPinCase};
use super::regbuf_tests::{fork_with_registered_buffer, ro_mapping_registered_buffer_coherent};
use super::shmem_tests::{dirty_cow_race_leaks, map_obj, memfd, obj_u64};
use super::*;
use crate::foll::FollFlags;
use crate::shmem::ShmemObject;

/// Basic COW after fork on anon memory, optionally with the mprotect R/O->R/W dance: the
/// child's write must not be seen by the parent, nor the parent's by the child.
fn anon_basic_cow(era: Era, mprotect_dance: bool) -> bool {
    let env = Env::era(era);
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    if mprotect_dance {
        child.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
        child.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
    }
    env.write(&mut child, va, 2).unwrap();
    env.check(&[&parent, &child]);
    let ok = env.read(&mut parent, va).unwrap() == 1 && env.read(&mut child, va).unwrap() == 2;
    env.finish(std::vec![parent, child]);
    ok
}

/// Non-anon basic COW on a memfd: a write to the private mapping leaves the shared one alone.
fn memfd_basic_cow(era: Era) -> bool {
    let env = Env::era(era);
    let obj = memfd(&env, 1, 5);
    let mut s = env.space();
    let private = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
    let shared = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::SHARED);
    env.read(&mut s, private).unwrap();
    env.write(&mut s, private, 6).unwrap();
    env.check(&[&s]);
    let ok = env.read(&mut s, shared).unwrap() == 5 && obj_u64(&env, &obj, 0) == 5;
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
    ok
}

/// Non-anon "R/O longterm pin sees later writes" on the zero page.
fn zero_page_ro_longterm_pin(era: Era, path: Path) -> bool {
    let env = Env::era(era);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.read(&mut s, va).unwrap();
    let pin = pin_one(&env, &mut s, va, FollFlags::LONGTERM, path).unwrap();
    env.write(&mut s, va, 5).unwrap();
    env.check(&[&s]);
    let ok = pin_read_u64(&env, &pin, 0) == 5;
    pin.unpin(&env.mm);
    env.finish(std::vec![s]);
    ok
}

/// Non-anon "R/O longterm pin sees later writes" on a private memfd mapping.
fn memfd_ro_longterm_pin(era: Era, path: Path) -> bool {
    let env = Env::era(era);
    let obj = memfd(&env, 1, 1);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
    env.read(&mut s, va).unwrap();
    let pin = pin_one(&env, &mut s, va, FollFlags::LONGTERM, path).unwrap();
    env.write(&mut s, va, 2).unwrap();
    env.check(&[&s]);
    let ok = pin_read_u64(&env, &pin, 0) == 2;
    pin.unpin(&env.mm);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
    ok
}

/// gup_longterm: a R/W long-term pin of a shared memfd mapping succeeds and is coherent.
fn memfd_rw_longterm_pin_shared(era: Era, path: Path) -> bool {
    let env = Env::era(era);
    let obj = memfd(&env, 1, 1);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::SHARED);
    let flags = FollFlags::WRITE | FollFlags::LONGTERM;
    let Ok(pin) = pin_one(&env, &mut s, va, flags, path) else {
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s]);
        return false;
    };
    pin.dma_from_device()
        .unwrap()
        .dma_write(&env.mm, 0, &9u64.to_le_bytes());
    let ok = env.read(&mut s, va).unwrap() == 9 && obj_u64(&env, &obj, 0) == 9;
    env.check(&[&s]);
    pin.unpin(&env.mm);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
    ok
}

/// `vmsplice(2)` of one page into a pipe: a plain `FOLL_GET` reference, read back later
/// (Linux `iter_to_pipe` -> `iov_iter_get_pages`). The returned page is the pipe buffer.
fn vmsplice(env: &Env, s: &mut AddressSpace, va: VirtAddr) -> crate::pin::PinnedPage {
    let mut out = [None];
    let n = crate::gup::get_user_pages(&env.mm, s, va, FollFlags::NONE, &mut out);
    assert_eq!(n, Ok(1));
    out[0].take().unwrap()
}

/// cow.c "vmsplice() + unmap in child" (optionally "with mprotect optimization"): the child
/// splices the shared page into a pipe and unmaps it; the parent's later write must not show
/// up in the pipe (CVE-2020-29374 under the `mapcount` rule).
fn vmsplice_unmap_in_child(era: Era, mprotect_dance: bool) -> bool {
    let env = Env::era(era);
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    let pipe = vmsplice(&env, &mut child, va);
    child.munmap(&env.mm, va, PAGE_SIZE).unwrap();
    if mprotect_dance {
        parent.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
        parent.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
    }
    env.write(&mut parent, va, 2).unwrap();
    env.check(&[&parent, &child]);
    let ok = pin_read_u64(&env, &pipe, 0) == 1;
    pipe.unpin(&env.mm);
    env.finish(std::vec![parent, child]);
    ok
}

/// cow.c "vmsplice() before fork, unmap in parent after fork" and "vmsplice() after fork,
/// unmap in parent": the child's later write must not show up in the parent's pipe.
fn vmsplice_in_parent(era: Era, before_fork: bool) -> bool {
    let env = Env::era(era);
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let early = before_fork.then(|| vmsplice(&env, &mut parent, va));
    let mut child = parent.fork(&env.mm).unwrap();
    let pipe = early.unwrap_or_else(|| vmsplice(&env, &mut parent, va));
    parent.munmap(&env.mm, va, PAGE_SIZE).unwrap();
    env.write(&mut child, va, 2).unwrap();
    env.check(&[&parent, &child]);
    let ok = pin_read_u64(&env, &pipe, 0) == 1;
    pipe.unpin(&env.mm);
    env.finish(std::vec![parent, child]);
    ok
}

fn from_2020(era: Era) -> bool {
    era >= Era::Y2020
}

/// One row of the matrix.
struct Case {
    family: &'static str,
    memory: &'static str,
    run: fn(Era) -> bool,
    expected: fn(Era) -> bool,
}

const fn case(
    family: &'static str,
    memory: &'static str,
    run: fn(Era) -> bool,
    expected: fn(Era) -> bool,
) -> Case {
    Case {
        family,
        memory,
        run,
        expected,
    }
}

fn always(_: Era) -> bool {
    true
}

fn from_2022(era: Era) -> bool {
    era >= Era::Y2022
}

const CASES: &[Case] = &[
    case(
        "basic COW after fork",
        "anon",
        |e| anon_basic_cow(e, false),
        always,
    ),
    case(
        "basic COW with mprotect R/O->R/W",
        "anon",
        |e| anon_basic_cow(e, true),
        always,
    ),
    case(
        "vmsplice() + unmap in child",
        "anon",
        |e| vmsplice_unmap_in_child(e, false),
        from_2020,
    ),
    case(
        "vmsplice() + unmap in child with mprotect optimization",
        "anon",
        |e| vmsplice_unmap_in_child(e, true),
        from_2020,
    ),
    case(
        "vmsplice() before fork, unmap in parent after fork",
        "anon",
        |e| vmsplice_in_parent(e, true),
        from_2020,
    ),
    case(
        "vmsplice() after fork, unmap in parent",
        "anon",
        |e| vmsplice_in_parent(e, false),
        from_2020,
    ),
    case(
        "R/O GUP pin on R/O-mapped shared page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::Shared, Path::Slow),
        |e| ro_pin_expected(e, RoPinCase::Shared),
    ),
    case(
        "R/O GUP-fast pin on R/O-mapped shared page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::Shared, Path::Fast),
        |e| ro_pin_expected(e, RoPinCase::Shared),
    ),
    case(
        "R/O GUP pin on R/O-mapped previously-shared page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::PreviouslyShared, Path::Slow),
        |e| ro_pin_expected(e, RoPinCase::PreviouslyShared),
    ),
    case(
        "R/O GUP-fast pin on R/O-mapped previously-shared page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::PreviouslyShared, Path::Fast),
        |e| ro_pin_expected(e, RoPinCase::PreviouslyShared),
    ),
    case(
        "R/O GUP pin on R/O-mapped exclusive page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::Exclusive, Path::Slow),
        |e| ro_pin_expected(e, RoPinCase::Exclusive),
    ),
    case(
        "R/O GUP-fast pin on R/O-mapped exclusive page",
        "anon",
        |e| ro_pin_case(&Env::era(e), e, RoPinCase::Exclusive, Path::Fast),
        |e| ro_pin_expected(e, RoPinCase::Exclusive),
    ),
    case(
        "R/O-mapping a page registered as long-term fixed buffer",
        "anon",
        ro_mapping_registered_buffer_coherent,
        |e| e != Era::Y2020,
    ),
    case(
        "fork with long-term fixed buffer",
        "anon",
        |e| fork_with_registered_buffer(e) == (true, false),
        |e| e >= Era::Y2020,
    ),
    case(
        "basic COW leaves the other mapping unchanged",
        "memfd",
        memfd_basic_cow,
        always,
    ),
    case(
        "R/O longterm GUP pin sees later writes",
        "zero page",
        |e| zero_page_ro_longterm_pin(e, Path::Slow),
        from_2022,
    ),
    case(
        "R/O longterm GUP-fast pin sees later writes",
        "zero page",
        |e| zero_page_ro_longterm_pin(e, Path::Fast),
        from_2022,
    ),
    case(
        "R/O longterm GUP pin sees later writes",
        "memfd",
        |e| memfd_ro_longterm_pin(e, Path::Slow),
        from_2022,
    ),
    case(
        "R/O longterm GUP-fast pin sees later writes",
        "memfd",
        |e| memfd_ro_longterm_pin(e, Path::Fast),
        from_2022,
    ),
    case(
        "R/W longterm GUP pin in shared mapping",
        "memfd",
        |e| memfd_rw_longterm_pin_shared(e, Path::Slow),
        always,
    ),
    case(
        "R/W longterm GUP-fast pin in shared mapping",
        "memfd",
        |e| memfd_rw_longterm_pin_shared(e, Path::Fast),
        always,
    ),
    case(
        "FOLL_FORCE write racing MADV_DONTNEED never reaches the page (Dirty COW)",
        "memfd",
        |e| !dirty_cow_race_leaks(e),
        |e| e != Era::Y2009,
    ),
];

#[test]
fn expected_outcome_per_era() {
    let mut table = String::new();
    let mut wrong = 0;
    for c in CASES {
        let mut row = format!("{:<74} {:<10}", c.family, c.memory);
        for era in Era::ALL {
            let passed = (c.run)(era);
            let expected = (c.expected)(era);
            let cell = match (passed, expected) {
                (true, true) => "ok",
                (false, false) => "xfail",
                (true, false) => "XPASS!",
                (false, true) => "FAIL!",
            };
            if passed != expected {
                wrong += 1;
            }
            row += &format!(" {era}:{cell:<6}");
        }
        table += &row;
        table.push('\n');
    }
    std::println!("{table}");
    assert_eq!(
        wrong, 0,
        "conformance matrix differs from the era table:\n{table}"
    );
}
