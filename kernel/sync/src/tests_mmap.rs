//! Host tests of [`MmapLock`]: readers share it, a writer excludes readers and writers, a
//! waiting writer holds new readers back (no starvation), and the page-table lock serialises
//! the readers' access to the data.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::tests::setup;
use crate::{LockClass, MmapLock};

static MMAP: LockClass = LockClass::sleeping("test mmap_lock (MmapLock)");
static PTL: LockClass = LockClass::new("test page_table_lock (MmapLock)");

/// Spins until `cond` holds (bounded loosely: a loaded host deschedules test threads).
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out: {what}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn two_readers_hold_it_at_once_and_a_writer_excludes_both() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, 0u64);
    let writer_in = AtomicBool::new(false);
    let readers_in = AtomicU32::new(0);
    let release_readers = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                setup();
                let _r = lock.read();
                readers_in.fetch_add(1, Ordering::SeqCst);
                // Both readers are inside before either leaves: they hold it at once.
                wait_until("the other reader", || {
                    readers_in.load(Ordering::SeqCst) == 2
                });
                wait_until("the release", || release_readers.load(Ordering::SeqCst));
                assert!(
                    !writer_in.load(Ordering::SeqCst),
                    "a writer ran beside a reader"
                );
                readers_in.fetch_sub(1, Ordering::SeqCst);
            });
        }
        wait_until("both readers", || readers_in.load(Ordering::SeqCst) == 2);
        assert_eq!(lock.state().0, 2, "two readers counted");
        s.spawn(|| {
            setup();
            let mut w = lock.write();
            writer_in.store(true, Ordering::SeqCst);
            assert_eq!(
                readers_in.load(Ordering::SeqCst),
                0,
                "the writer ran beside a reader"
            );
            *w += 1;
            writer_in.store(false, Ordering::SeqCst);
        });
        // The writer waits (and says so) while both readers hold the lock.
        wait_until("the writer waiting", || lock.state().2);
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !writer_in.load(Ordering::SeqCst),
            "the writer got in past two readers"
        );
        // A waiting writer holds new readers back (writer preference).
        assert!(
            lock.try_read().is_none(),
            "a new reader overtook a waiting writer"
        );
        release_readers.store(true, Ordering::SeqCst);
    });
    let mut r = lock.read();
    assert_eq!(*r.ptl(), 1, "the writer's update");
}

#[test]
fn a_writer_excludes_another_writer_and_readers_see_whole_updates() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, (0u64, 0u64));
    std::thread::scope(|s| {
        for t in 0..4 {
            let lock = &lock;
            s.spawn(move || {
                setup();
                for _ in 0..3_000 {
                    if t % 2 == 0 {
                        let mut w = lock.write();
                        let v = w.0;
                        w.0 = v + 1;
                        w.1 += 1;
                    } else {
                        // Readers also write, under the page-table lock: still no lost update.
                        let mut r = lock.read();
                        let mut p = r.ptl();
                        assert_eq!(p.0, p.1, "a reader saw half a write");
                        p.0 += 1;
                        p.1 += 1;
                    }
                }
            });
        }
    });
    let mut r = lock.read();
    assert_eq!(*r.ptl(), (12_000, 12_000));
}

#[test]
fn the_page_table_lock_excludes_a_second_reader() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, ());
    let mut r = lock.read();
    let _p = r.ptl();
    std::thread::scope(|s| {
        s.spawn(|| {
            setup();
            let mut r2 = lock.read();
            assert!(
                r2.try_ptl().is_none(),
                "two readers held the page-table lock"
            );
        });
    });
    assert!(
        lock.try_write().is_none(),
        "a writer got in beside a reader"
    );
}

#[test]
fn a_writer_is_not_starved_by_a_stream_of_readers() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, 0u64);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                setup();
                // Overlapping reads: there is always a reader inside unless readers hold back.
                while !stop.load(Ordering::Relaxed) {
                    let _r = lock.read();
                    std::thread::yield_now();
                }
            });
        }
        for _ in 0..50 {
            *lock.write() += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(*lock.write(), 50);
}

#[test]
fn a_combined_read_and_ptl_guard_releases_both() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, 5u32);
    {
        let mut g = lock.read_ptl();
        *g += 1;
        assert_eq!(lock.state().0, 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                setup();
                assert!(
                    lock.read().try_ptl().is_none(),
                    "the page-table lock is held"
                );
            });
        });
    }
    assert_eq!(lock.state(), (0, false, false));
    let r = lock.try_read().expect("free");
    let g = r.try_into_ptl().ok().expect("page-table lock free");
    assert_eq!(*g, 6);
    drop(g);
    assert_eq!(*lock.try_write().expect("both released"), 6);
}

#[test]
fn the_one_step_read_and_ptl_respects_readers_writers_and_the_ptl() {
    setup();
    let lock = MmapLock::new(&MMAP, &PTL, 0u32);
    std::thread::scope(|s| {
        // Beside a plain reader: allowed (two readers), and the PTL is then taken.
        let plain = lock.try_read().expect("free");
        s.spawn(|| {
            setup();
            let mut g = lock.try_read_ptl().expect("a second reader with the PTL");
            *g += 1;
            assert_eq!(lock.state().0, 2);
            std::thread::scope(|s2| {
                s2.spawn(|| {
                    setup();
                    assert!(lock.try_read_ptl().is_none(), "the PTL twice");
                });
            });
        })
        .join()
        .unwrap();
        drop(plain);
    });
    assert_eq!(
        lock.state(),
        (0, false, false),
        "one subtraction released both"
    );
    let w = lock.try_write().expect("free after the combined guard");
    std::thread::scope(|s| {
        s.spawn(|| {
            setup();
            assert!(lock.try_read_ptl().is_none(), "beside a writer");
        });
    });
    drop(w);
    assert_eq!(*lock.read_ptl(), 1);
}
