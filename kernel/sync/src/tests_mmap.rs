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

/// A wait hook that parks the threads waiting on one lock (`GATED`) until the test lets them
/// through one at a time, however often the lock's releases wake them: so a waiting writer
/// stays asleep, as a kernel task sleeps, while the test looks at what readers may do. Other
/// locks' waits spin, as without hooks.
mod gate {
    use std::sync::{Condvar, Mutex};

    pub struct Gate {
        pub channel: usize,
        pub parked: u32,
        pub tokens: u32,
    }

    pub static GATED: Mutex<Option<Gate>> = Mutex::new(None);
    pub static CHANGED: Condvar = Condvar::new();

    pub fn wait(channel: usize) {
        let mut g = GATED.lock().unwrap();
        if g.as_ref().is_none_or(|g| g.channel != channel) {
            drop(g);
            core::hint::spin_loop();
            return;
        }
        g.as_mut().unwrap().parked += 1;
        CHANGED.notify_all();
        loop {
            let gate = g.as_mut().unwrap();
            if gate.tokens > 0 {
                gate.tokens -= 1;
                gate.parked -= 1;
                CHANGED.notify_all();
                return;
            }
            g = CHANGED.wait(g).unwrap();
        }
    }

    pub fn wake(_channel: usize) {}

    /// Blocks until `n` threads are parked.
    pub fn parked(n: u32) {
        let mut g = GATED.lock().unwrap();
        while g.as_ref().unwrap().parked < n {
            g = CHANGED.wait(g).unwrap();
        }
    }

    /// Lets one parked thread through.
    pub fn release_one() {
        GATED.lock().unwrap().as_mut().unwrap().tokens += 1;
        CHANGED.notify_all();
    }
}

/// Issue 16, session 8: with two writers waiting behind a reader, the first to take the lock
/// cleared the one writer-waiting bit, so once it released, readers came in ahead of the
/// second (asleep until the next release) and a stream of them could starve it. Both writers
/// park in the wait hook; after the first has had its turn, a new reader must still be held
/// back while the second sleeps.
#[test]
fn a_second_waiting_writer_still_holds_new_readers_back() {
    setup();
    // Boxed: the channel (the lock's address) must not be reused by another test's lock while
    // the gate is armed.
    let lock = std::boxed::Box::new(MmapLock::new(&MMAP, &PTL, 0u64));
    let channel = core::ptr::from_ref::<MmapLock<u64>>(&lock) as usize;
    *gate::GATED.lock().unwrap() = Some(gate::Gate {
        channel,
        parked: 0,
        tokens: 0,
    });
    crate::set_wait_hooks(gate::wait, gate::wake);
    let turns = AtomicU32::new(0);
    let reader = lock.read();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                setup();
                *lock.write() += 1;
                turns.fetch_add(1, Ordering::SeqCst);
            });
        }
        gate::parked(2);
        drop(reader);
        // The first writer's turn: it takes the lock and releases it.
        gate::release_one();
        wait_until("the first writer's turn", || {
            turns.load(Ordering::SeqCst) == 1
        });
        let overtook = lock.try_read().is_some();
        // The second writer's turn (before asserting: the scope joins it).
        gate::release_one();
        assert!(!overtook, "a new reader overtook the second waiting writer");
    });
    *gate::GATED.lock().unwrap() = None;
    assert_eq!(*lock.try_write().expect("free"), 2);
}

fn thread_owner() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    std::thread_local!(static ID: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}

/// The write side knows its holder (issue 16, session 8: a user copy faulting while its own
/// task holds the lock for writing must not wait for itself): the holder sees itself, another
/// thread and a reader do not, and a release forgets it.
#[test]
fn the_write_holder_is_known_to_itself_only() {
    setup();
    crate::set_owner_fn(thread_owner);
    let lock = MmapLock::new(&MMAP, &PTL, 0u32);
    assert!(!lock.is_write_held_by_current(), "free");
    let w = lock.write();
    assert!(lock.is_write_held_by_current(), "the writer itself");
    std::thread::scope(|s| {
        s.spawn(|| {
            setup();
            assert!(!lock.is_write_held_by_current(), "another thread");
        });
    });
    drop(w);
    assert!(!lock.is_write_held_by_current(), "after the release");
    let t = lock.try_write().expect("free");
    assert!(lock.is_write_held_by_current(), "a trylock's writer");
    drop(t);
    let _r = lock.read();
    assert!(!lock.is_write_held_by_current(), "a reader");
}

static ACKS: AtomicU32 = AtomicU32::new(0);

fn ack_requests() {
    ACKS.fetch_add(1, Ordering::SeqCst);
}

/// Issue 16, session 8: a CPU spinning for the page-table lock with interrupts off answered no
/// TLB-shootdown request, so a holder flushing that CPU waited for it forever. The spin hook
/// stands for the kernel's servicing: the holder here waits, holding the page-table lock, for
/// an acknowledgement that only the spinning thread can give.
#[test]
fn a_page_table_lock_spinner_answers_the_holders_requests() {
    setup();
    crate::set_spin_hook(ack_requests);
    let lock = MmapLock::new(&MMAP, &PTL, 0u32);
    let spinning = AtomicBool::new(false);
    let mut held = lock.read_ptl();
    std::thread::scope(|s| {
        s.spawn(|| {
            setup();
            let mut r = lock.read();
            spinning.store(true, Ordering::SeqCst);
            *r.ptl() += 1;
        });
        wait_until("the spinner", || spinning.load(Ordering::SeqCst));
        let before = ACKS.load(Ordering::SeqCst);
        // The shootdown's wait for its acknowledgement, under the page-table lock.
        wait_until("the spinner's acknowledgement", || {
            ACKS.load(Ordering::SeqCst) > before
        });
        *held += 1;
        drop(held);
    });
    assert_eq!(*lock.read_ptl(), 2);
}
