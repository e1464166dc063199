//! Process CPU time and `RLIMIT_CPU` (Linux `check_process_timers`' rlimit part).
//!
//! Each timer tick that interrupts a task charges one tick to its group (`Group::cpu_ticks`,
//! user and system time together, as Linux compares their sum with the limit). Once the
//! group's CPU time reaches the hard limit it gets SIGKILL; at the soft limit SIGXCPU, and the
//! soft limit is raised by one second (while below the hard one) so the signal repeats every
//! further second of CPU time, which `getrlimit` shows, as on Linux.
//!
//! The kernel runs system calls with interrupts off, so a tick that falls inside one is taken
//! at its end or at its next `cond_resched`: system time is charged late, not lost, except
//! that several ticks inside one call count as one.
//!
//! Runs in the timer interrupt, so it only try-locks: a tick that finds the group locked (the
//! interrupted code holds it) is not charged, and a signal that finds the task table locked is
//! sent at a later tick (the limit stays crossed until it is).

use core::sync::atomic::Ordering;

use super::rlimit::{RLIMIT_CPU, RLIM_INFINITY};
use super::signal::{send_locked, SigInfo, Target, SIGKILL, SIGXCPU, SI_KERNEL};
use super::{current_tid, CURRENT_GROUP, TABLE};
use crate::time::TICK_HZ;

/// What a group's CPU time asks for after a tick.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpuLimit {
    Within,
    /// SIGXCPU, then the soft limit becomes this many seconds.
    Xcpu(u64),
    Kill,
}

/// The `RLIMIT_CPU` rule for `ticks` of CPU time against `(soft, hard)` seconds.
#[doc(alias = "check_process_timers")]
pub fn rlimit_cpu_check(ticks: u64, soft: u64, hard: u64) -> CpuLimit {
    let secs = ticks / TICK_HZ;
    if hard != RLIM_INFINITY && secs >= hard {
        CpuLimit::Kill
    } else if soft != RLIM_INFINITY && secs >= soft {
        CpuLimit::Xcpu(if soft < hard { soft + 1 } else { soft })
    } else {
        CpuLimit::Within
    }
}

/// Charges the interrupted task's group one tick and enforces `RLIMIT_CPU`. Timer interrupt.
pub fn on_tick() {
    let tgid = super::CURRENT_TGID.load(Ordering::Relaxed);
    if current_tid() == 0 || tgid == 0 {
        return;
    }
    let group = CURRENT_GROUP.load(Ordering::Relaxed);
    // SAFETY: as in `with_group`: a non-null `CURRENT_GROUP` is the interrupted task's group,
    // which that task keeps alive while it runs. Only `&Mutex` is formed.
    let Some(group) = (unsafe { group.as_ref() }) else {
        return;
    };
    // Lock order: the table, then the group.
    let table = TABLE.try_lock();
    let Some(mut g) = group.try_lock() else {
        return;
    };
    g.cpu_ticks += 1;
    let mut lim = g.rlimits.get(RLIMIT_CPU);
    match rlimit_cpu_check(g.cpu_ticks, lim.cur, lim.max) {
        CpuLimit::Within => {}
        CpuLimit::Xcpu(next) => {
            lim.cur = next;
            g.rlimits.set_raw(RLIMIT_CPU, lim);
            if g.cpu_signal != SIGKILL {
                g.cpu_signal = SIGXCPU;
            }
        }
        CpuLimit::Kill => g.cpu_signal = SIGKILL,
    }
    // A signal due while the table is busy waits in `cpu_signal` for a later tick.
    let Some(mut table) = table else {
        return;
    };
    let signal = core::mem::take(&mut g.cpu_signal);
    drop(g);
    if signal != 0 {
        let _ = send_locked(
            &mut table,
            Target::Process(tgid),
            SigInfo::new(signal, SI_KERNEL),
        );
    }
}
