//! Host tests: the locks exclude, and the checker reports inverted orders, cycles through a
//! third class, recursion and sleeping under a spin lock. Each test uses its own classes (the
//! order graph is global, as it is in the kernel).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::string::{String, ToString};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec;

use crate::{lockdep, might_sleep, LockClass, RwLock, SeqCount, SpinLock};

/// Each test thread is its own checker context.
fn thread_context() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    std::thread_local!(static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}

pub(crate) fn setup() {
    lockdep::set_context_fn(thread_context);
}

/// Runs `f`, returning the checker's report (its panic text), if any.
fn report_of(f: impl FnOnce()) -> Option<String> {
    let err = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(
        err.downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| err.downcast_ref::<&str>().unwrap().to_string()),
    )
}

#[test]
fn spin_lock_excludes_across_threads() {
    setup();
    static C: LockClass = LockClass::new("test counter");
    let lock = SpinLock::new(&C, 0u64);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                setup();
                for _ in 0..10_000 {
                    let mut g = lock.lock();
                    // A non-atomic read-modify-write: lost updates if two held it at once.
                    let v = *g;
                    *g = v + 1;
                }
            });
        }
    });
    assert_eq!(*lock.lock(), 40_000);
    assert_eq!(lockdep::held_count(), 0);
}

#[test]
fn rwlock_readers_share_and_writers_exclude() {
    setup();
    static C: LockClass = LockClass::sleeping("test mmap_lock");
    let lock = RwLock::new(&C, (0u64, 0u64));
    std::thread::scope(|s| {
        for t in 0..4 {
            let lock = &lock;
            s.spawn(move || {
                setup();
                for _ in 0..5_000 {
                    if t % 2 == 0 {
                        let mut g = lock.write();
                        g.0 += 1;
                        g.1 += 1;
                    } else {
                        let g = lock.read();
                        assert_eq!(g.0, g.1, "a reader saw half a write");
                    }
                }
            });
        }
    });
    assert_eq!(*lock.read(), (10_000, 10_000));
    {
        let _a = lock.read();
        // Two readers at once in different contexts are fine.
        std::thread::scope(|s| {
            s.spawn(|| {
                setup();
                let _b = lock.read();
            });
        });
    }
}

#[test]
fn seqcount_reader_retries_across_a_write_section() {
    setup();
    static C: LockClass = LockClass::new("test seq");
    let seq = SeqCount::new(&C);
    let start = seq.read_begin();
    assert!(!seq.read_retry(start));
    {
        let _w = seq.write_begin();
        assert!(
            seq.read_retry(seq.read_begin()),
            "odd: inside a write section"
        );
    }
    assert!(seq.read_retry(start), "a write section ran since");
    assert_eq!(seq.value(), 2);
}

/// The deliberately inverted order: A then B in one place, B then A in another. Reported at
/// the second, naming both classes and both places, before anything deadlocks.
#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checker is compiled out")]
fn inverted_order_is_reported_with_both_places() {
    setup();
    static A: LockClass = LockClass::new("test page-table lock");
    static B: LockClass = LockClass::new("test frame metadata");
    let a = SpinLock::new(&A, ());
    let b = SpinLock::new(&B, ());
    {
        let _a = a.lock();
        let _b = b.lock();
    }
    let first_line = line!() - 2;
    let msg = report_of(|| {
        let _b = b.lock();
        let _a = a.lock();
    })
    .expect("the inversion is reported");
    assert!(
        msg.starts_with("lock order inversion: taking test page-table lock"),
        "{msg}"
    );
    assert!(msg.contains("while holding test frame metadata"), "{msg}");
    assert!(
        msg.contains(&std::format!("tests.rs:{first_line}")),
        "names where B was taken under A: {msg}"
    );
    assert_eq!(
        lockdep::held_count(),
        0,
        "the guard taken before the report was released"
    );
    // In the established order it stays silent.
    let _a = a.lock();
    let _b = b.lock();
}

/// A cycle through a third class, in three different threads (contexts): mmap_lock -> PT lock
/// in one, PT lock -> frame in another, frame -> mmap_lock in a third.
#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checker is compiled out")]
fn cycle_through_three_classes_in_three_contexts_is_reported() {
    setup();
    static MMAP: LockClass = LockClass::sleeping("test3 mmap_lock");
    static PT: LockClass = LockClass::new("test3 page-table lock");
    static FRAME: LockClass = LockClass::new("test3 frame metadata");
    let mmap = RwLock::new(&MMAP, ());
    let pt = SpinLock::new(&PT, ());
    let frame = SpinLock::new(&FRAME, ());
    let in_thread = |f: &(dyn Fn() + Sync)| {
        std::thread::scope(|s| {
            s.spawn(|| {
                setup();
                f()
            })
            .join()
        })
    };
    in_thread(&|| {
        let _m = mmap.read();
        let _p = pt.lock();
    })
    .unwrap();
    in_thread(&|| {
        let _p = pt.lock();
        let _f = frame.lock();
    })
    .unwrap();
    let err = in_thread(&|| {
        let _f = frame.lock();
        let _m = mmap.write();
    })
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("taking test3 mmap_lock") && msg.contains("holding test3 frame metadata"),
        "{msg}"
    );
}

#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checker is compiled out")]
fn recursive_spin_lock_is_reported() {
    setup();
    static C: LockClass = LockClass::new("test recursive");
    let a = SpinLock::new(&C, ());
    let b = SpinLock::new(&C, ());
    let msg = report_of(|| {
        let _a = a.lock();
        let _b = b.lock();
    })
    .expect("reported");
    assert!(
        msg.starts_with("recursive locking: taking test recursive"),
        "{msg}"
    );
}

#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checker is compiled out")]
fn sleeping_under_a_spin_lock_is_reported_but_not_under_mmap_lock() {
    setup();
    static SPIN: LockClass = LockClass::new("test runqueue lock");
    static MMAP: LockClass = LockClass::sleeping("test sleeping mmap_lock");
    let spin = SpinLock::new(&SPIN, ());
    let mmap = RwLock::new(&MMAP, ());
    {
        let _m = mmap.read();
        might_sleep("schedule");
    }
    let msg = report_of(|| {
        let _s = spin.lock();
        might_sleep("schedule");
    })
    .expect("reported");
    assert!(
        msg.starts_with("schedule at ") && msg.contains("holding spin lock test runqueue lock"),
        "{msg}"
    );
    might_sleep("schedule");
}

#[test]
#[cfg_attr(not(debug_assertions), ignore = "the checker is compiled out")]
fn locks_may_be_released_out_of_order() {
    setup();
    static X: LockClass = LockClass::new("test x");
    static Y: LockClass = LockClass::new("test y");
    let x = SpinLock::new(&X, ());
    let y = SpinLock::new(&Y, ());
    let gx = x.lock();
    let gy = y.lock();
    drop(gx);
    assert_eq!(lockdep::held_count(), 1);
    drop(gy);
    assert_eq!(lockdep::held_count(), 0);
    let held: Vec<usize> = std::vec![lockdep::held_count()];
    assert_eq!(held, [0]);
}

std::thread_local!(static TASK: core::cell::Cell<usize> = const { core::cell::Cell::new(0) });

fn task_context() -> usize {
    TASK.with(core::cell::Cell::get)
}

/// Issue 16, session 8: a task-held lock (the mmap_lock) taken by a task on one CPU, held
/// across a sleep and released after the task woke on another CPU. With per-CPU stacks only,
/// the first CPU kept the entry (the next task there to take the class was reported as
/// recursive locking) and the second CPU's release found nothing. Threads stand for CPUs, the
/// task number moves between them.
#[test]
fn a_task_held_lock_released_on_another_cpu_leaves_no_entry_behind() {
    setup();
    lockdep::set_task_context_fn(task_context);
    static M: LockClass = LockClass::task_held("test task-held rwsem (moves between CPUs)");
    static S: LockClass = LockClass::new("test spin lock under the task-held one");
    static NEXT_TASK: AtomicUsize = AtomicUsize::new(5000);
    let task = NEXT_TASK.fetch_add(1, Ordering::Relaxed);
    let (took, took_rx) = std::sync::mpsc::channel::<()>();
    let (released, released_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // CPU A: the task takes M (and a spin lock under it, released before the sleep), then
        // "sleeps": CPU A runs no task until the task has released M elsewhere.
        s.spawn(move || {
            setup();
            TASK.with(|t| t.set(task));
            lockdep::before_acquire(&M);
            lockdep::acquired(&M);
            lockdep::before_acquire(&S);
            lockdep::acquired(&S);
            lockdep::released(&S);
            TASK.with(|t| t.set(0));
            took.send(()).unwrap();
            released_rx.recv().unwrap();
            assert_eq!(
                lockdep::held_count(),
                0,
                "CPU A still holds the task's lock"
            );
            // Another task on CPU A takes the class: no recursion.
            TASK.with(|t| t.set(task + 1));
            let report = report_of(|| {
                lockdep::before_acquire(&M);
                lockdep::acquired(&M);
                lockdep::released(&M);
            });
            assert_eq!(report, None, "a stale entry on CPU A");
            TASK.with(|t| t.set(0));
        });
        // CPU B: the task wakes here and releases M.
        s.spawn(move || {
            setup();
            took_rx.recv().unwrap();
            TASK.with(|t| t.set(task));
            assert_eq!(lockdep::held_count(), 1, "the task's hold moved with it");
            lockdep::released(&M);
            assert_eq!(lockdep::held_count(), 0, "released on CPU B");
            TASK.with(|t| t.set(0));
            released.send(()).unwrap();
        });
    });
}

/// Review of session 8: the task stacks were indexed by task number modulo `MAX_CONTEXTS`, so
/// two live tasks 1024 apart shared one: the second one's `mmap_lock` was reported as the
/// first one's recursion, and either's release could remove the other's entry. One thread
/// (a CPU) switches between the two tasks while both hold the class.
#[test]
fn tasks_numbered_max_contexts_apart_keep_their_own_holds() {
    setup();
    lockdep::set_task_context_fn(task_context);
    static M: LockClass = LockClass::task_held("test task-held rwsem (task numbers alias)");
    let first = 9000;
    let second = first + lockdep::MAX_CONTEXTS;
    let switch_to = |task: usize| TASK.with(|t| t.set(task));
    let take = || {
        report_of(|| {
            lockdep::before_acquire(&M);
            lockdep::acquired(&M);
        })
    };
    switch_to(first);
    assert_eq!(take(), None);
    switch_to(second);
    assert_eq!(
        take(),
        None,
        "the second task's hold seen as the first's recursion"
    );
    assert_eq!(lockdep::held_count(), 1, "the second task holds one lock");
    lockdep::released(&M);
    assert_eq!(
        lockdep::held_count(),
        0,
        "the second task released its lock"
    );
    switch_to(first);
    assert_eq!(
        lockdep::held_count(),
        1,
        "the first task's hold went with the second's release"
    );
    lockdep::released(&M);
    assert_eq!(lockdep::held_count(), 0);
    // Both stacks were given back: a third task of the same window takes the class cleanly.
    switch_to(first + 2 * lockdep::MAX_CONTEXTS);
    assert_eq!(take(), None);
    lockdep::released(&M);
    assert_eq!(lockdep::held_count(), 0);
    switch_to(0);
}
