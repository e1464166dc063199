//! CPU time by sampling (Linux `account_process_tick` without `VIRT_CPU_ACCOUNTING`): each
//! timer tick charges the running task one tick of user or system time, by the privilege of
//! the code it interrupted. A thread's ticks move to its group when it exits, a reaped child's
//! (and its own reaped children's) to the parent: what `times`, `getrusage` and `wait4`
//! report, in ticks of [`crate::time::TICK_HZ`] (100 Hz, Linux's `USER_HZ` too).
#![deny(unsafe_code)]

use super::{current_tid, TABLE};

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

    /// Microseconds, for the `timeval`s of `struct rusage`.
    pub fn micros(ticks: u64) -> u64 {
        ticks * (1_000_000 / crate::time::TICK_HZ)
    }
}

/// Charges the current task one tick; `user` if the tick interrupted ring 3. From the timer
/// interrupt: skips the tick if the interrupted kernel code holds the table (as `on_tick`).
pub fn account_tick(user: bool) {
    let tid = current_tid();
    if tid == 0 {
        return;
    }
    if let Some(mut table) = TABLE.try_lock() {
        if let Some(task) = table.get_mut(&tid) {
            if user {
                task.cpu.user += 1;
            } else {
                task.cpu.system += 1;
            }
        }
    }
}

/// The calling process's own CPU time: its live threads' plus its exited threads'.
pub fn group_self(tgid: super::Pid) -> CpuTime {
    let table = TABLE.lock();
    let mut total = CpuTime::default();
    let mut dead = None;
    for t in table.values().filter(|t| t.tgid == tgid) {
        total.add(t.cpu);
        dead.get_or_insert_with(|| t.group.lock().dead_cpu);
    }
    total.add(dead.unwrap_or_default());
    total
}
