//! CPU affinity (Linux `sched_setaffinity`/`sched_getaffinity` in `kernel/sched/core.c`).
//!
//! A thread keeps the mask it was given (`Task::cpus_allowed`, inherited by clone and fork, kept
//! by exec); what it may use is that mask and the CPUs the scheduler runs tasks on
//! (`smp::active_mask`, Linux's `cpu_active_mask`). A CPU set is a `u64`: cowlab has at most 64
//! CPUs, so Linux's `cpumask_size()` is 8 bytes here.
#![deny(unsafe_code)]

use super::{current_tid, Pid, TABLE};
use crate::errno::Errno;

/// Bytes of a CPU mask as the system calls copy it (Linux `cpumask_size()` for up to 64 CPUs).
pub const CPUMASK_BYTES: usize = 8;

/// The thread `tid` (0: the caller) names, for the affinity calls (`ESRCH` if none; a zombie
/// still answers, as on Linux until it is reaped).
fn resolve(tid: Pid) -> Pid {
    if tid == 0 {
        current_tid()
    } else {
        tid
    }
}

/// Linux `sched_getaffinity`: the thread's mask limited to the active CPUs.
pub fn get(tid: Pid) -> Result<u64, Errno> {
    let table = TABLE.lock();
    let task = table
        .get(&resolve(tid))
        .filter(|t| t.user_visible())
        .ok_or(Errno::ESRCH)?;
    Ok(task.cpus_allowed & crate::smp::active_mask())
}

/// Linux `sched_setaffinity`: `EINVAL` when the mask names no active CPU, else the thread's
/// mask becomes `mask` and the thread moves at once if it is on a CPU the mask leaves out
/// (Linux `__set_cpus_allowed_ptr`'s migration): a queued one to another queue, one running on
/// another CPU through that CPU's reschedule IPI, the caller by yielding.
pub fn set(tid: Pid, mask: u64) -> Result<(), Errno> {
    let mut table = TABLE.lock();
    let task = table
        .get_mut(&resolve(tid))
        .filter(|t| t.user_visible())
        .ok_or(Errno::ESRCH)?;
    let active = crate::smp::active_mask();
    if mask & active == 0 {
        return Err(Errno::EINVAL);
    }
    task.cpus_allowed = mask;
    let here = crate::percpu::cpu_id();
    let moves_me = task.tid == current_tid() && mask & (1u64 << here) == 0;
    super::runqueue::requeue(task, active);
    let running_on = usize::from(task.sched.cpu);
    if !moves_me && task.state == super::State::Running && mask >> running_on & 1 == 0 {
        super::sched::resched_cpu(running_on);
    }
    drop(table);
    if moves_me {
        // Linux migrates the caller before the call returns: from now on it runs only on a
        // CPU of its mask, which the scheduler picks it on.
        super::sched::yield_now();
    }
    Ok(())
}

/// Linux `possible` CPU count (`nr_cpu_ids`): the CPUs the firmware describes.
pub fn nr_cpu_ids() -> usize {
    crate::smp::present_count()
}
