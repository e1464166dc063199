//! A lock its holder may sleep under (Linux's `struct mutex` for a filesystem), for an object
//! that may also be absent (not mounted). The value is moved out to the holder and back on
//! release, so the spin lock inside is held only for the swap, never across the holder's work:
//! a waiter sleeps on the lock's channel instead of spinning, and the holder may itself sleep
//! (on a device completion) without any spin lock held.
//!
//! The wait is uninterruptible and, but for [`SleepLock::with_killable`], not even killable: a
//! dying process still needs the lock to release its files (the last close of an unlinked ext2
//! inode frees it). A killed waiter whose
//! sleep returns at once yields instead, so the holder runs. Outside a task (boot, the idle
//! loop's power-off) nothing can wait: a value held there belongs to a task that will never run
//! again (power-off drops the tasks without running them), so the caller finds no value.
//!
//! The check-then-sleep is race-free because system calls run with interrupts off on one CPU:
//! a release cannot slip in between (the same rule as every `proc::sleep` user). SMP needs the
//! scheduler's `prepare_to_wait`-style sleep here.
#![deny(unsafe_code)]

use spin::Mutex;

enum Slot<T> {
    Empty,
    Present(T),
    Held,
}

/// A killable wait gave up: the caller is being killed (its system call answers `EINTR`).
#[derive(Debug)]
pub struct Killed;

pub struct SleepLock<T> {
    /// The value, and whether a task sleeps waiting for it (so an uncontended release does not
    /// walk the task table to wake nobody).
    slot: Mutex<(Slot<T>, bool)>,
    /// What a waiter waits for, for the hung-task watchdog.
    what: &'static str,
}

impl<T> SleepLock<T> {
    pub const fn new(what: &'static str) -> SleepLock<T> {
        SleepLock {
            slot: Mutex::new((Slot::Empty, false)),
            what,
        }
    }

    fn channel(&self) -> usize {
        self as *const SleepLock<T> as usize
    }

    fn wait(&self) {
        if super::sleep_uninterruptible(self.channel(), self.what).is_err() {
            super::sched::cond_resched();
        }
    }

    /// Takes the value, waiting while another task holds it (asleep, or if `!may_sleep`,
    /// yielding the CPU so the holder can finish); `None` if there is none.
    fn acquire(&self, may_sleep: bool) -> Option<T> {
        match self.acquire_or_killed(may_sleep, false) {
            Ok(value) => value,
            Err(Killed) => unreachable!("an unkillable wait gave up"),
        }
    }

    /// [`Self::acquire`], giving up with [`Killed`] when `killable` and the caller is being
    /// killed while the value is held by another task (Linux `mutex_lock_killable`).
    fn acquire_or_killed(&self, may_sleep: bool, killable: bool) -> Result<Option<T>, Killed> {
        loop {
            let mut slot = self.slot.lock();
            match core::mem::replace(&mut slot.0, Slot::Held) {
                Slot::Present(v) => return Ok(Some(v)),
                Slot::Empty => {
                    slot.0 = Slot::Empty;
                    return Ok(None);
                }
                Slot::Held if super::current_tid() == 0 => {
                    warn!(
                        "{}: held by a task that is gone; treated as absent",
                        self.what
                    );
                    return Ok(None);
                }
                Slot::Held if killable && super::fatal_signal_pending() => {
                    // Still held by the other task: put the marker back untouched.
                    slot.0 = Slot::Held;
                    return Err(Killed);
                }
                Slot::Held if !may_sleep => {
                    drop(slot);
                    // With the pending interrupts taken first: the holder may be asleep on a
                    // device, and on one CPU, with interrupts off in the kernel and this task
                    // always runnable, a bare yield would never let its completion in.
                    super::sched::cond_resched();
                }
                Slot::Held => {
                    slot.1 = true;
                    drop(slot);
                    self.wait();
                }
            }
        }
    }

    /// Puts the value back (or none) and wakes the waiters, if any.
    fn release(&self, value: Option<T>) {
        let waiters = {
            let mut slot = self.slot.lock();
            slot.0 = match value {
                Some(v) => Slot::Present(v),
                None => Slot::Empty,
            };
            core::mem::take(&mut slot.1)
        };
        if waiters {
            super::wakeup(self.channel());
        }
    }

    /// Runs `f` on the value under the lock; `None` if there is no value. A caller holding a
    /// spin lock passes `may_sleep` false: a held lock is
    /// waited for by yielding, never by sleeping on the lock's channel. The holder only gives
    /// the CPU up while asleep on its own request, so the yield lets it finish and release; the
    /// caller's spin locks must not be ones the holder takes under this lock (the lock order is
    /// spin locks of the page cache first, then this one, and nothing under this lock calls
    /// back into the file layer).
    pub fn with_sleeping<R>(&self, may_sleep: bool, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut value = self.acquire(may_sleep)?;
        let r = f(&mut value);
        self.release(Some(value));
        Some(r)
    }

    /// [`Self::with_sleeping`] with a killable sleep: `Err(Killed)` without running `f` if the
    /// caller is being killed while another task holds the value (Linux `down_write_killable`,
    /// `inode_lock_killable`). For a lock whose holder makes user copies: such a copy may need
    /// a frame, and an OOM victim asleep on the lock must be able to die and free its memory,
    /// or every fault waits for a victim that never exits.
    pub fn with_killable<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<Option<R>, Killed> {
        let Some(mut value) = self.acquire_or_killed(true, true)? else {
            return Ok(None);
        };
        let r = f(&mut value);
        self.release(Some(value));
        Ok(Some(r))
    }

    /// Sets the value (`None`: no value), waiting for a holder; returns the old one.
    pub fn replace(&self, value: Option<T>) -> Option<T> {
        let old = self.acquire(true);
        self.release(value);
        old
    }

    /// Whether there is a value (held or not).
    pub fn is_present(&self) -> bool {
        !matches!(self.slot.lock().0, Slot::Empty)
    }
}
