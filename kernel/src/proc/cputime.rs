//! CPU time by sampling (Linux `account_process_tick` without `VIRT_CPU_ACCOUNTING`) and the
//! `RLIMIT_CPU` rule on it (Linux `check_process_timers`' rlimit part). One account serves
//! both: each timer tick charges the running task one tick of user or system time, by the
//! privilege of the code it interrupted. A thread's ticks move to its group when it exits, a
//! reaped child's (and its own reaped children's) to the parent: what `times`, `getrusage`,
//! `wait4`, `/proc/<pid>/stat` and the CPU limit see, in ticks of [`crate::time::TICK_HZ`]
//! (100 Hz, Linux's `USER_HZ` too).
//!
//! The limit compares the group's user plus system time (its live threads' and its exited
//! threads') with `RLIMIT_CPU`: at the hard limit SIGKILL; at the soft limit SIGXCPU, and the
//! soft limit is raised by one second (while below the hard one) so the signal repeats every
//! further second, which `getrlimit` shows, as on Linux.
//!
//! The kernel runs system calls with interrupts off, so a tick that falls inside one is taken
//! at its end or at its next `cond_resched`: system time is charged late, not lost, except
//! that several ticks inside one call count as one.
//!
//! Runs in the timer interrupt, so it only try-locks: a tick that finds the task table locked
//! (the interrupted code holds it) is not charged; one that finds the group locked is charged
//! but the limit is checked at a later tick (it stays crossed until then).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use super::rlimit::{RLIMIT_CPU, RLIM_INFINITY};
use super::signal::{
    send_locked, SigInfo, Target, SIGKILL, SIGPROF, SIGVTALRM, SIGXCPU, SI_KERNEL,
};
use super::{current_tid, TABLE};
use crate::time::TICK_HZ;

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuTime {
    pub user: u64,
    pub system: u64,
}

impl CpuTime {
    pub fn add(&mut self, other: CpuTime) {
        self.user += other.user;
        self.system += other.system;
    }

    /// User and system ticks together (what `RLIMIT_CPU` counts).
    pub fn total(&self) -> u64 {
        self.user + self.system
    }

    /// Microseconds, for the `timeval`s of `struct rusage`.
    pub fn micros(ticks: u64) -> u64 {
        ticks.saturating_mul(1_000_000 / TICK_HZ)
    }
}

/// One of a process's CPU-time interval timers, `ITIMER_VIRTUAL` (user time) or `ITIMER_PROF`
/// (user and system time) (Linux `signal->it[]`): the group's CPU time in microseconds at which
/// it expires (0: disarmed) and its interval. A fork starts without them (a new `Group`);
/// execve keeps them.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuItimer {
    pub expires: u64,
    pub interval: u64,
}

/// The two CPU-time interval timers of a process.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct CpuItimers {
    pub virt: CpuItimer,
    pub prof: CpuItimer,
}

impl CpuItimer {
    /// Whether the timer expires at CPU time `now` (microseconds): then it is re-armed one
    /// interval later, or disarmed (Linux `check_cpu_itimer`, which also adds the interval
    /// once per check).
    pub fn expire(&mut self, now: u64) -> bool {
        if self.expires == 0 || now < self.expires {
            return false;
        }
        self.expires = if self.interval != 0 {
            self.expires.saturating_add(self.interval)
        } else {
            0
        };
        true
    }

    /// `(remaining, interval)` at CPU time `now`; an expired timer whose signal the next tick
    /// sends reads as one tick left (Linux `get_cpu_itimer`'s `TICK_NSEC`).
    pub fn read(&self, now: u64) -> (u64, u64) {
        let left = match self.expires {
            0 => 0,
            e if e <= now => 1_000_000 / TICK_HZ,
            e => e - now,
        };
        (left, self.interval)
    }
}

/// The calling process's `ITIMER_VIRTUAL` (`prof` false) or `ITIMER_PROF`: its
/// `(remaining, interval)` in microseconds, and, with `new` (value, interval), armed anew
/// (value 0 disarms) at the group's CPU time now. Linux `get_cpu_itimer`, `set_cpu_itimer`.
#[doc(alias = "set_cpu_itimer")]
pub fn cpu_itimer(prof: bool, new: Option<(u64, u64)>) -> (u64, u64) {
    let mut table = TABLE.lock();
    settle_current(&mut table);
    let Some(group) = table.get(&current_tid()).map(|t| t.group.clone()) else {
        return (0, 0);
    };
    let tgid = super::current_pid();
    let mut g = group.lock();
    let mut used = g.dead_cpu;
    for t in table.values().filter(|t| t.tgid == tgid) {
        used.add(t.cpu);
    }
    let (now, timer) = if prof {
        (CpuTime::micros(used.total()), &mut g.cpu_itimers.prof)
    } else {
        (CpuTime::micros(used.user), &mut g.cpu_itimers.virt)
    };
    let old = timer.read(now);
    if let Some((value, interval)) = new {
        *timer = CpuItimer {
            // One tick more than asked, as Linux's `set_cpu_itimer` (`TICK_NSEC`): CPU time
            // is counted in whole ticks, so without it the timer could fire before the
            // process has run `value`. `getitimer` shows the tick.
            expires: if value == 0 {
                0
            } else {
                now.saturating_add(value)
                    .saturating_add(1_000_000 / TICK_HZ)
            },
            interval,
        };
    }
    old
}

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

/// Ticks taken on each CPU while another CPU held the big kernel lock, owed to the task
/// running there (`[user, system]`): the tick could not reach the task table, so it is charged
/// when that task's CPU next can ([`settle_owed`]: at a tick that gets the lock, or when the
/// task leaves the CPU or exits). Before, such ticks went to the CPU's `/proc/stat` line only,
/// and a task running beside another CPU's long system call was charged none of that time
/// (`RLIMIT_CPU` under-counted; session 11 review).
static OWED: [[AtomicU64; 2]; crate::percpu::MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; crate::percpu::MAX_CPUS];

/// A tick on this CPU that could not take the big kernel lock: counted for the CPU now, for
/// its current task (if any) at the next [`settle_owed`] there. Interrupts off; lock-free.
pub fn owe_tick(user: bool) {
    let cpu = crate::percpu::cpu_id();
    let tid = current_tid();
    let slot = match (tid, user) {
        (0, _) => super::kstat::IDLE,
        (_, true) => super::kstat::USER,
        (_, false) => super::kstat::SYSTEM,
    };
    super::kstat::tick(cpu, slot);
    if tid != 0 {
        OWED[cpu][usize::from(!user)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Charges `task`, the one running on this CPU, the ticks [`owe_tick`] kept for it. Called
/// with the table locked by the code that switches it out or ends it, and by a tick that got
/// the table: the current task cannot change on this CPU without passing one of those.
/// Ticks this CPU owes its current task (user and system), not yet charged.
pub fn owed_ticks() -> u64 {
    let owed = &OWED[crate::percpu::cpu_id()];
    owed[0].load(Ordering::Relaxed) + owed[1].load(Ordering::Relaxed)
}

pub(super) fn settle_owed(task: &mut super::Task) {
    let owed = &OWED[crate::percpu::cpu_id()];
    // One load each when nothing is owed (the common case: one CPU, or no contention).
    if owed[0].load(Ordering::Relaxed) != 0 {
        task.cpu.user += owed[0].swap(0, Ordering::Relaxed);
    }
    if owed[1].load(Ordering::Relaxed) != 0 {
        task.cpu.system += owed[1].swap(0, Ordering::Relaxed);
    }
}

/// Charges the current task one tick (`user` if the tick interrupted ring 3) and enforces
/// `RLIMIT_CPU` on its group. Timer interrupt.
#[doc(alias = "account_process_tick")]
pub fn account_tick(user: bool) {
    let tid = current_tid();
    let slot = match (tid, user) {
        (0, _) => super::kstat::IDLE,
        (_, true) => super::kstat::USER,
        (_, false) => super::kstat::SYSTEM,
    };
    super::kstat::tick(crate::percpu::cpu_id(), slot);
    if tid == 0 {
        return;
    }
    // Lock order: the table, then the group.
    let Some(mut table) = TABLE.try_lock() else {
        return;
    };
    let Some(task) = table.get_mut(&tid) else {
        return;
    };
    settle_owed(task);
    if user {
        task.cpu.user += 1;
    } else {
        task.cpu.system += 1;
    }
    let tgid = task.tgid;
    let group = task.group.clone();
    let Some(mut g) = group.try_lock() else {
        return;
    };
    let mut used = g.dead_cpu;
    for t in table.values().filter(|t| t.tgid == tgid) {
        used.add(t.cpu);
    }
    // The CPU-time interval timers (Linux `check_process_timers`), then `RLIMIT_CPU`.
    let virt = g.cpu_itimers.virt.expire(CpuTime::micros(used.user));
    let prof = g.cpu_itimers.prof.expire(CpuTime::micros(used.total()));
    let mut lim = g.rlimits.get(RLIMIT_CPU);
    let limit = match rlimit_cpu_check(used.total(), lim.cur, lim.max) {
        CpuLimit::Within => None,
        CpuLimit::Xcpu(next) => {
            lim.cur = next;
            g.rlimits.set_raw(RLIMIT_CPU, lim);
            Some(SIGXCPU)
        }
        CpuLimit::Kill => Some(SIGKILL),
    };
    drop(g);
    let signals = [virt.then_some(SIGVTALRM), prof.then_some(SIGPROF), limit];
    for signal in signals.into_iter().flatten() {
        let _ = send_locked(
            &mut table,
            Target::Process(tgid),
            SigInfo::new(signal, SI_KERNEL),
        );
    }
}

/// Charges the task running on this CPU (the caller of a CPU-time read) the ticks it is owed
/// here: a reader that just spun in ring 3 beside another CPU's system call would otherwise
/// miss up to `OWED_TICKS_MAX` (a quarter second) of its own time, charged only at its next
/// locked tick, switch or exit (Linux's `thread_group_cputime` adds the running task's
/// unaccounted runtime the same way, `task_sched_runtime`).
fn settle_current(
    table: &mut alloc::collections::BTreeMap<super::Pid, alloc::boxed::Box<super::Task>>,
) {
    let tid = current_tid();
    if tid == 0 {
        return;
    }
    if let Some(task) = table.get_mut(&tid) {
        settle_owed(task);
    }
}

/// The calling thread's own CPU time (`RUSAGE_THREAD`, `CLOCK_THREAD_CPUTIME_ID`), its ticks
/// owed on this CPU included.
pub fn thread_self() -> CpuTime {
    let mut table = TABLE.lock();
    settle_current(&mut table);
    table.get(&current_tid()).map(|t| t.cpu).unwrap_or_default()
}

/// The calling process's own CPU time: its live threads' plus its exited threads', the
/// caller's ticks owed on this CPU included.
pub fn group_self(tgid: super::Pid) -> CpuTime {
    group(tgid).unwrap_or_default()
}

/// A thread group's CPU time (its live threads' plus its exited threads'), or `None` when no
/// task of the group is left: the clock of `clock_getcpuclockid(pid)`.
pub fn group(tgid: super::Pid) -> Option<CpuTime> {
    let mut table = TABLE.lock();
    settle_current(&mut table);
    let mut total = CpuTime::default();
    let mut dead = None;
    for t in table.values().filter(|t| t.tgid == tgid) {
        total.add(t.cpu);
        dead.get_or_insert_with(|| t.group.lock().dead_cpu);
    }
    total.add(dead?);
    Some(total)
}

/// A thread's own CPU time and its thread group, or `None` when there is no such task: the
/// clock of `pthread_getcpuclockid`, and the check that a CPU clock's pid names a process.
pub fn thread(tid: super::Pid) -> Option<(super::Pid, CpuTime)> {
    let mut table = TABLE.lock();
    settle_current(&mut table);
    table.get(&tid).map(|t| (t.tgid, t.cpu))
}
