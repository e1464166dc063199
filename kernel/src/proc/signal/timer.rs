//! ITIMER_REAL (alarm, setitimer, getitimer): one real-time interval timer per process that
//! sends SIGALRM when it expires (Linux `it_real_fn`), checked on each timer tick.
//!
//! The armed timers are a short list (pids are never reused, so a stale entry of a process
//! that ended is harmless and dropped at its expiry); `ARMED` gates the tick's look at it.
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use super::{send_locked, SigInfo, Target, SIGALRM, SI_KERNEL};
use crate::proc::{Pid, TABLE};
use crate::time;

/// `(tgid, expiry in microseconds since boot, interval in microseconds, 0 for none)`.
static TIMERS: Mutex<Vec<(Pid, u64, u64)>> = Mutex::new(Vec::new());
static ARMED: AtomicBool = AtomicBool::new(false);

/// The remaining time and interval of `tgid`'s timer (zeros when disarmed).
pub fn get(tgid: Pid) -> (u64, u64) {
    let now = time::micros_since_boot();
    TIMERS
        .lock()
        .iter()
        .find(|t| t.0 == tgid)
        .map_or((0, 0), |t| (t.1.saturating_sub(now).max(1), t.2))
}

/// Arms (or, with `value` 0, disarms) `tgid`'s timer; returns the old `(remaining, interval)`.
#[doc(alias = "do_setitimer")]
pub fn set(tgid: Pid, value: u64, interval: u64) -> (u64, u64) {
    let old = get(tgid);
    let mut timers = TIMERS.lock();
    timers.retain(|t| t.0 != tgid);
    if value != 0 {
        timers.push((
            tgid,
            time::micros_since_boot().saturating_add(value),
            interval,
        ));
    }
    ARMED.store(!timers.is_empty(), Ordering::Relaxed);
    old
}

/// Called from the timer interrupt: sends SIGALRM for every expired timer and re-arms the
/// periodic ones. Skips a tick if a lock is busy (the interrupted code holds it).
pub fn on_tick() {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some(mut timers) = TIMERS.try_lock() else {
        return;
    };
    let Some(mut table) = TABLE.try_lock() else {
        return;
    };
    let now = time::micros_since_boot();
    timers.retain_mut(|(tgid, expiry, interval)| {
        if *expiry > now {
            return true;
        }
        let info = SigInfo::new(SIGALRM, SI_KERNEL);
        let alive = send_locked(&mut table, Target::Process(*tgid), info).is_ok();
        if alive && *interval != 0 {
            *expiry = now + *interval;
            true
        } else {
            false
        }
    });
    ARMED.store(!timers.is_empty(), Ordering::Relaxed);
}
