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

/// An `mmap_lock` release made inside a fault resolved without the big lock (the one that
/// wakes a sleeping writer there) kicks the halted CPUs given a task, as the locked path's
/// return to ring 3 does (review of session 8: `after_unlocked_fault` skipped that kick, and
/// the woken writer waited on its halted CPU for the next tick).
pub fn nobkl_release_kicks_the_cpu_it_queued_for() -> TestResult {
    static CHANNEL: u8 = 0;
    let other = if crate::percpu::cpu_id() == 1 { 2 } else { 1 };
    crate::proc::runqueue::note_queued_on(other);
    ensure!(
        crate::proc::runqueue::kicks_pending() & 1 << other != 0,
        "no kick noted for CPU {other}"
    );
    crate::fault_unlocked::as_if_inside(|| {
        locking::wake_for_test(core::ptr::from_ref(&CHANNEL) as usize)
    });
    ensure!(
        crate::proc::runqueue::kicks_pending() & 1 << other == 0,
        "the kick for CPU {other} was left pending by the release"
    );
    Ok(())
}

/// A tid no task has during the in-kernel tests.
const LOCK_TEST_TID: crate::proc::Pid = 0x7100_0000;
static POSTED_TASK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
static POSTED_OWNER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

fn record_lock_ids_over_a_task() {
    use core::sync::atomic::Ordering::Relaxed;
    crate::proc::as_if_current(LOCK_TEST_TID, || {
        POSTED_TASK.store(locking::task_context(), Relaxed);
        POSTED_OWNER.store(locking::owner(), Relaxed);
    });
}

/// Locks taken by a function another CPU posted (`smp::call`, run in the IPI handler or a lock
/// spin over whatever task was running) are that CPU's, not the interrupted task's: the
/// checker's task number is 0 and the `mmap_lock` write owner the CPU's id (review of session
/// 8: both were the interrupted task's tid). Outside a posted function they are the task's.
pub fn lockdep_posted_function_holds_are_the_cpus() -> TestResult {
    use core::sync::atomic::Ordering::Relaxed;
    let cpu = (0..crate::percpu::MAX_CPUS)
        .rev()
        .find(|c| crate::smp::online_mask() & 1 << c != 0)
        .unwrap_or(0);
    let (task, owner) = crate::proc::as_if_current(LOCK_TEST_TID, || {
        (locking::task_context(), locking::owner())
    });
    ensure!(
        task == LOCK_TEST_TID as usize && owner == LOCK_TEST_TID as usize,
        "a task's own lock ids are {task:#x}, {owner:#x}"
    );
    let result = crate::smp::call::run_on(cpu, record_lock_ids_over_a_task, 1_000_000);
    ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
    let (task, owner) = (POSTED_TASK.load(Relaxed), POSTED_OWNER.load(Relaxed));
    ensure!(
        task == 0,
        "a posted function's task number is {task:#x} (the interrupted task's)"
    );
    ensure!(
        owner == usize::MAX - cpu,
        "a posted function's write-owner id is {owner:#x}, not CPU {cpu}'s"
    );
    Ok(())
}
