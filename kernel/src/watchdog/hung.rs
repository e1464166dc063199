//! The hung-task detector: a task asleep uninterruptibly for `hung_task=` seconds.
//!
//! Linux's `khungtaskd` looks for tasks in `TASK_UNINTERRUPTIBLE` whose context-switch count
//! has not moved since its last look. cowlab's sleeps all end when the task is killed, so
//! "uninterruptible" here is Linux's sense of the wait, not of the signal: the task waits for
//! the kernel (a disk request to complete, a free descriptor of the device), which no user
//! action hurries, so a long wait means a stuck device or a lost wake-up. Those sleeps go
//! through `proc::sleep_uninterruptible`, which records the task here on the way in ([`enter`])
//! and clears it on the way out ([`leave`]); a wake-up that finds the condition still false
//! sleeps again and starts a new period, as Linux's switch count would. [`on_tick`] looks once
//! a second and reports each period that passed the threshold, once.
//!
//! The records are a fixed table indexed by tid (no allocation on the sleep path, and the
//! timer reads it with a `try_lock`); two tasks whose tids collide modulo its size while both
//! asleep share a slot, and the earlier one goes unreported.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::time;

const SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct Sleeper {
    /// 0: free.
    tid: u32,
    channel: usize,
    /// What the task waits for, for the report (Linux prints the wait channel's function).
    what: &'static str,
    /// Tick the sleep started.
    since: u64,
    reported: bool,
}

const FREE: Sleeper = Sleeper {
    tid: 0,
    channel: 0,
    what: "",
    since: 0,
    reported: false,
};

static SLEEPERS: Mutex<[Sleeper; SLOTS]> = Mutex::new([FREE; SLOTS]);
/// Slots in use: while 0, the tick does nothing.
static ASLEEP: AtomicUsize = AtomicUsize::new(0);
static REPORTS: AtomicU64 = AtomicU64::new(0);
/// tid of the last task reported (for the tests).
static LAST_REPORTED: AtomicU64 = AtomicU64::new(0);

/// Task `tid` starts an uninterruptible sleep on `channel`, waiting for `what`.
pub fn enter(tid: u32, channel: usize, what: &'static str) {
    let mut slots = SLEEPERS.lock();
    let slot = &mut slots[tid as usize % SLOTS];
    if slot.tid == 0 {
        ASLEEP.fetch_add(1, Ordering::Relaxed);
    }
    *slot = Sleeper {
        tid,
        channel,
        what,
        since: time::ticks(),
        reported: false,
    };
}

/// Task `tid`'s uninterruptible sleep ended.
pub fn leave(tid: u32) {
    let mut slots = SLEEPERS.lock();
    let slot = &mut slots[tid as usize % SLOTS];
    if slot.tid == tid {
        *slot = FREE;
        ASLEEP.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Hung tasks reported since boot.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// The tid of the last hung task reported (0: none yet).
pub fn last_reported() -> u32 {
    LAST_REPORTED.load(Ordering::Relaxed) as u32
}

/// The seconds [`on_tick`] looked at.
static CHECKED: time::Periodic = time::Periodic::new();

/// The timer's work: once a second, report the sleeps past the threshold. Interrupt context:
/// puts the look off to the next tick if the table or the console is busy (the interrupted
/// code holds it). A second whose tick's work ran late (left to the big lock's next holder,
/// `tick.rs`) is looked at then: the look used to happen only at a tick that was a multiple
/// of the rate, and a deferred one was skipped (and with it the report) until the next second.
pub fn on_tick() {
    let now = time::ticks();
    let secs = super::hung_task_secs();
    if ASLEEP.load(Ordering::Relaxed) == 0 || secs == 0 || CHECKED.due(now, time::TICK_HZ) == 0 {
        return;
    }
    if crate::serial::is_busy() {
        return;
    }
    let Some(mut slots) = SLEEPERS.try_lock() else {
        return;
    };
    CHECKED.done(now, time::TICK_HZ);
    let limit = secs * time::TICK_HZ;
    for slot in slots.iter_mut() {
        if slot.tid == 0 || slot.reported || now.saturating_sub(slot.since) < limit {
            continue;
        }
        slot.reported = true;
        let name = super::task_name(slot.tid);
        println!(
            "cowlab: watchdog: hung task: tid {} ({name}) blocked uninterruptibly for more than \
             {secs}s waiting for {} (wait channel {:#x})",
            slot.tid, slot.what, slot.channel
        );
        REPORTS.fetch_add(1, Ordering::Relaxed);
        LAST_REPORTED.store(u64::from(slot.tid), Ordering::Relaxed);
    }
}
