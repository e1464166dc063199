//! Tests of the kernel's locks (`locking.rs`, `cowlab_sync`): the lock-order checker reports an
//! inverted pair of classes once, naming both places, without stopping the kernel; an address
//! space's `mmap_lock` lets two readers in at once and keeps a writer out of both.
#![deny(unsafe_code)]

use cowlab_sync::{LockClass, LockReport, SpinLock};

use super::{ensure, TestResult};
use crate::locking;

static KTEST_A: LockClass = LockClass::new("ktest lock A");
static KTEST_B: LockClass = LockClass::new("ktest lock B");

/// A then B in one place, B then A in another: the second order is reported (debug builds),
/// once, as an inversion naming both classes, where B was taken under A and where A is being
/// taken under B; taking the pair again in either order adds no report. Release builds compile
/// the checker out: no report at all.
pub fn lockdep_reports_an_inverted_pair_once() -> TestResult {
    let a = SpinLock::new(&KTEST_A, 0u32);
    let b = SpinLock::new(&KTEST_B, 0u32);
    let before = locking::reports();
    {
        let _a = a.lock();
        let _b = b.lock();
    }
    let first_line = line!() - 2;
    ensure!(
        locking::reports() == before,
        "A then B alone is no inversion"
    );
    let second_line = {
        let _b = b.lock();
        let _a = a.lock();
        line!() - 1
    };
    let expected = u32::from(cfg!(debug_assertions));
    ensure!(
        locking::reports() == before + expected,
        "{} reports for B then A (expected {expected})",
        locking::reports() - before
    );
    {
        let _b = b.lock();
        let _a = a.lock();
    }
    ensure!(
        locking::reports() == before + expected,
        "the same inversion reported again"
    );
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    match locking::last_report() {
        Some(LockReport::Inversion {
            taking,
            taken_at,
            held,
            inverse_at,
            ..
        }) => {
            ensure!(
                taking == "ktest lock A" && held == "ktest lock B",
                "the report names {taking} under {held}"
            );
            ensure!(
                taken_at.line() == second_line && inverse_at.line() == first_line,
                "the report's places: taking at line {}, the other order at line {} (expected {second_line}, {first_line})",
                taken_at.line(),
                inverse_at.line()
            );
        }
        other => ensure!(false, "the last report is {other:?}"),
    }
    Ok(())
}

/// Two read holds of one address space's `mmap_lock` at once; a writer cannot get in beside
/// them, nor beside a writer; the page-table lock inside admits one reader at a time; after the
/// readers leave the writer gets it.
pub fn mmap_lock_readers_share_and_a_writer_excludes_both() -> TestResult {
    let shared = crate::vm::share(
        cowlab_mm::AddressSpace::new(crate::memory::mm())
            .map_err(|e| super::TestFailure(alloc::format!("address space: {e:?}")))?,
    );
    {
        let mut r1 = shared.try_read().ok_or_else(|| fail("first reader"))?;
        let r2 = shared.try_read();
        ensure!(r2.is_some(), "a second reader was kept out");
        ensure!(shared.state().0 == 2, "two readers counted");
        ensure!(
            shared.try_write().is_none(),
            "a writer got in beside two readers"
        );
        let p1 = r1.try_ptl();
        ensure!(p1.is_some(), "the page-table lock is free");
        let mut r2 = r2.expect("checked");
        ensure!(
            r2.try_ptl().is_none(),
            "two readers held the page-table lock at once"
        );
    }
    {
        let w = shared.try_write();
        ensure!(
            w.is_some(),
            "the writer was kept out after the readers left"
        );
        ensure!(
            shared.try_read().is_none(),
            "a reader got in beside a writer"
        );
        ensure!(shared.try_write().is_none(), "two writers at once");
    }
    ensure!(shared.state() == (0, false, false), "all released");
    let aspace = alloc::sync::Arc::into_inner(shared).expect("one owner");
    aspace.into_inner().exit(crate::memory::mm());
    Ok(())
}

fn fail(what: &str) -> super::TestFailure {
    super::TestFailure(alloc::format!("{what} failed"))
}
