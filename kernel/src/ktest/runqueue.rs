//! Tests of the per-CPU run queues (`proc::runqueue`): placement on wake-up, picking, an idle
//! CPU pulling work, affinity moves, stale entries. They drive the queue functions with their
//! own task table and a four-CPU active mask, whatever the machine has (the queues of CPUs that
//! are not online exist all the same), so they pass on 1 and on 4 CPUs; the scheduler has not
//! started yet, so nothing else uses the queues meanwhile.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;

use super::{ensure, TestResult};
use crate::proc::runqueue::{self, TaskSched};
use crate::proc::switch::{FpuState, KernelStack};
use crate::proc::{Group, Pid, SharedFdTable, State, Task};

/// Four CPUs, whatever is online.
const ACTIVE: u64 = 0b1111;
/// Tids no real task has this early in the boot.
const BASE_TID: Pid = 0x7000_0000;

pub(super) fn task(tid: Pid, last_cpu: u8, allowed: u64) -> Box<Task> {
    Box::new(Task {
        tid,
        tgid: 0,
        name: String::from("rq-test"),
        state: State::Runnable,
        aspace: None,
        kstack: KernelStack::new(),
        ctx_rsp: 0,
        fpu: FpuState::initial(),
        fds: SharedFdTable::default(),
        fs_base: 0,
        killed: false,
        sigmask: u64::MAX,
        sig: Default::default(),
        clear_child_tid: 0,
        group: Group::new(
            0,
            Box::new([crate::proc::signal::SigAction::default(); 65]),
            crate::proc::rlimit::Rlimits::linux_defaults(),
            None,
        ),
        cpus_allowed: allowed,
        cpu: Default::default(),
        sched: TaskSched {
            on_rq: None,
            cpu: last_cpu,
        },
    })
}

/// Empties the test's queue entries and busy bits, whatever a failed check left.
fn cleanup(table: &mut BTreeMap<Pid, Box<Task>>) {
    for t in table.values_mut() {
        runqueue::dequeue(t);
    }
    for cpu in 0..4 {
        runqueue::set_busy(cpu, false);
    }
    runqueue::take_kicks();
}

fn with_table(body: impl FnOnce(&mut BTreeMap<Pid, Box<Task>>) -> TestResult) -> TestResult {
    let mut table = BTreeMap::new();
    let result = body(&mut table);
    cleanup(&mut table);
    result
}

/// Wake-up placement (`select_cpu`): the boot CPU while it is idle, else the last CPU while it
/// is idle, else an idle CPU the task may use, else the last CPU, else the least loaded
/// allowed one.
pub fn runqueue_wakeup_placement() -> TestResult {
    with_table(|table| {
        table.insert(BASE_TID, task(BASE_TID, 2, u64::MAX));
        let t = &table[&BASE_TID];
        let to = runqueue::select_cpu(t, ACTIVE, None);
        ensure!(to == 0, "all idle: went to {to}, not the boot CPU");
        ensure!(
            runqueue::select_cpu(t, ACTIVE, Some(2)) == 0,
            "all idle, leaving CPU 2: not the boot CPU"
        );
        runqueue::set_busy(0, true);
        ensure!(
            runqueue::select_cpu(t, ACTIVE, None) == 2,
            "boot CPU busy: not the last CPU"
        );
        runqueue::set_busy(2, true);
        let to = runqueue::select_cpu(t, ACTIVE, None);
        ensure!(
            to == 3,
            "last CPU busy: went to {to}, not the idle CPU after it"
        );
        ensure!(
            runqueue::select_cpu(t, ACTIVE, Some(2)) == 2,
            "a task leaving CPU 2 does not count against it"
        );
        for cpu in 0..4 {
            runqueue::set_busy(cpu, true);
        }
        let to = runqueue::select_cpu(t, ACTIVE, None);
        ensure!(to == 2, "all busy: went to {to}, not the last CPU");
        // Not allowed on its last CPU any more: the least loaded allowed one (CPU 0 has a
        // task waiting, CPU 1 none).
        table.insert(BASE_TID + 1, task(BASE_TID + 1, 0, 1 << 0));
        runqueue::enqueue(table.get_mut(&(BASE_TID + 1)).unwrap(), ACTIVE, None);
        table.get_mut(&BASE_TID).unwrap().cpus_allowed = 0b0011;
        let to = runqueue::select_cpu(&table[&BASE_TID], ACTIVE, None);
        ensure!(to == 1, "mask 0b11, CPU 0 loaded: went to {to}");
        // A mask naming no active CPU runs anywhere rather than never.
        table.get_mut(&BASE_TID).unwrap().cpus_allowed = 1 << 40;
        let to = runqueue::select_cpu(&table[&BASE_TID], ACTIVE, None);
        ensure!(ACTIVE >> to & 1 == 1, "mask of no active CPU: went to {to}");
        Ok(())
    })
}

/// A queued task is picked by its CPU, FIFO, once; entries of tasks no longer runnable are
/// skipped.
pub fn runqueue_pick_is_fifo_and_skips_stale_entries() -> TestResult {
    with_table(|table| {
        for i in 0..3 {
            table.insert(BASE_TID + i, task(BASE_TID + i, 1, 1 << 1));
        }
        for i in 0..3 {
            runqueue::enqueue(table.get_mut(&(BASE_TID + i)).unwrap(), ACTIVE, None);
        }
        ensure!(
            runqueue::queued(1) == [BASE_TID, BASE_TID + 1, BASE_TID + 2],
            "queue of CPU 1: {:?}",
            runqueue::queued(1)
        );
        // The second one blocks before it ran: its entry is stale.
        table.get_mut(&(BASE_TID + 1)).unwrap().state = State::Blocked {
            channel: 1,
            until: None,
        };
        let first = runqueue::pick(table, 1, ACTIVE);
        ensure!(first == Some(BASE_TID), "first pick {first:?}");
        ensure!(
            table[&BASE_TID].sched.on_rq.is_none() && table[&BASE_TID].sched.cpu == 1,
            "picked task still queued: {:?}",
            table[&BASE_TID].sched
        );
        table.get_mut(&BASE_TID).unwrap().state = State::Running;
        let second = runqueue::pick(table, 1, ACTIVE);
        ensure!(
            second == Some(BASE_TID + 2),
            "second pick {second:?}: the blocked task's entry was not skipped"
        );
        table.get_mut(&(BASE_TID + 2)).unwrap().state = State::Running;
        let none = runqueue::pick(table, 1, ACTIVE);
        ensure!(none.is_none(), "third pick {none:?}");
        // Enqueueing a queued task again is a no-op.
        let t = table.get_mut(&BASE_TID).unwrap();
        t.state = State::Runnable;
        runqueue::enqueue(t, ACTIVE, None);
        runqueue::enqueue(t, ACTIVE, None);
        ensure!(
            runqueue::queued(1) == [BASE_TID],
            "queued twice: {:?}",
            runqueue::queued(1)
        );
        Ok(())
    })
}

/// An idle CPU pulls a task waiting behind a busy CPU's running one, but never one whose mask
/// leaves it out, nor the only task of a CPU about to pick it.
pub fn runqueue_idle_cpu_pulls_work() -> TestResult {
    with_table(|table| {
        table.insert(BASE_TID, task(BASE_TID, 1, u64::MAX));
        table.insert(BASE_TID + 1, task(BASE_TID + 1, 1, 1 << 1));
        runqueue::enqueue(table.get_mut(&(BASE_TID + 1)).unwrap(), ACTIVE, None);
        // CPU 1 is not running anything: its one queued task is its own to pick.
        let early = runqueue::pick(table, 2, ACTIVE);
        ensure!(
            early.is_none(),
            "stole {early:?} from a CPU about to run it"
        );
        runqueue::set_busy(1, true);
        // Pinned to CPU 1: CPU 2 may not take it.
        let pinned = runqueue::pick(table, 2, ACTIVE);
        ensure!(pinned.is_none(), "stole the pinned task {pinned:?}");
        // A movable task queued behind it (CPU 1 busy, so placement would avoid it: queue it
        // there directly through its last CPU with every other CPU busy).
        for cpu in 0..4 {
            runqueue::set_busy(cpu, true);
        }
        runqueue::enqueue(table.get_mut(&BASE_TID).unwrap(), ACTIVE, None);
        ensure!(
            table[&BASE_TID].sched.on_rq == Some(1),
            "movable task queued on {:?}",
            table[&BASE_TID].sched.on_rq
        );
        runqueue::set_busy(2, false);
        let before = runqueue::migrations();
        let pulled = runqueue::pick(table, 2, ACTIVE);
        ensure!(pulled == Some(BASE_TID), "CPU 2 pulled {pulled:?}");
        ensure!(
            table[&BASE_TID].sched.cpu == 2 && runqueue::migrations() == before + 1,
            "pulled task not recorded on CPU 2: {:?}",
            table[&BASE_TID].sched
        );
        ensure!(
            runqueue::queued(1) == [BASE_TID + 1],
            "CPU 1's queue after the pull: {:?}",
            runqueue::queued(1)
        );
        Ok(())
    })
}

/// `sched_setaffinity` of a queued task moves it to a queue of its new mask at once
/// (`requeue`); one still allowed where it waits stays.
pub fn runqueue_affinity_change_moves_a_queued_task() -> TestResult {
    with_table(|table| {
        table.insert(BASE_TID, task(BASE_TID, 0, u64::MAX));
        runqueue::set_busy(0, true);
        runqueue::set_busy(1, true);
        runqueue::set_busy(2, true);
        runqueue::set_busy(3, true);
        let t = table.get_mut(&BASE_TID).unwrap();
        runqueue::enqueue(t, ACTIVE, None);
        ensure!(t.sched.on_rq == Some(0), "queued on {:?}", t.sched.on_rq);
        t.cpus_allowed = 0b0101;
        runqueue::requeue(t, ACTIVE);
        ensure!(t.sched.on_rq == Some(0), "moved though still allowed");
        t.cpus_allowed = 1 << 3;
        runqueue::requeue(t, ACTIVE);
        ensure!(
            t.sched.on_rq == Some(3),
            "after the move: {:?}",
            t.sched.on_rq
        );
        ensure!(
            !runqueue::queued(0).contains(&BASE_TID) && runqueue::queued(3) == [BASE_TID],
            "queues after the move: 0 {:?}, 3 {:?}",
            runqueue::queued(0),
            runqueue::queued(3)
        );
        let picked = runqueue::pick(table, 3, ACTIVE);
        ensure!(picked == Some(BASE_TID), "CPU 3 picked {picked:?}");
        Ok(())
    })
}

/// A CPU's idle loop takes the one task queued for a halted CPU (`pick_or_take`: its waker
/// blocked right after the wake-up), which a plain pick leaves to that CPU; the halted CPU is
/// then left out of the pending kicks (its queue is empty: no IPI to wake it for nothing).
pub fn runqueue_idle_loop_takes_a_halted_cpus_task() -> TestResult {
    with_table(|table| {
        table.insert(BASE_TID, task(BASE_TID, 1, u64::MAX));
        let _ = runqueue::take_kicks();
        runqueue::set_busy(0, true);
        runqueue::enqueue(table.get_mut(&BASE_TID).unwrap(), ACTIVE, None);
        ensure!(
            table[&BASE_TID].sched.on_rq == Some(1),
            "woken task queued on {:?}, not its idle last CPU 1",
            table[&BASE_TID].sched.on_rq
        );
        runqueue::set_busy(0, false);
        let plain = runqueue::pick(table, 2, ACTIVE);
        ensure!(plain.is_none(), "a plain pick took {plain:?} from CPU 1");
        // CPU 1 awake in its idle loop (not halted): its task stays its own.
        let awake = runqueue::pick_or_take(table, 2, ACTIVE, 1 << 3);
        ensure!(awake.is_none(), "took {awake:?} from a CPU not halted");
        let taken = runqueue::pick_or_take(table, 2, ACTIVE, 1 << 1);
        ensure!(
            taken == Some(BASE_TID) && table[&BASE_TID].sched.cpu == 2,
            "CPU 2 took {taken:?} from halted CPU 1 ({:?})",
            table[&BASE_TID].sched
        );
        let kicks = runqueue::take_kicks();
        ensure!(
            kicks & 1 << 1 == 0,
            "CPU 1 still kicked ({kicks:#b}) after its only task was taken"
        );
        Ok(())
    })
}

/// A new task (fork, clone) is queued behind its creator on the creator's CPU when it may run
/// there (`enqueue_new`), where an idle CPU can pull it (a task waiting behind a running one);
/// with no task running here, or not allowed here, it is placed as a wake-up is.
pub fn runqueue_new_task_queued_behind_its_creator() -> TestResult {
    with_table(|table| {
        let here = crate::percpu::cpu_id();
        table.insert(BASE_TID, task(BASE_TID, here as u8, u64::MAX));
        table.insert(BASE_TID + 1, task(BASE_TID + 1, here as u8, !(1 << here)));
        table.insert(BASE_TID + 2, task(BASE_TID + 2, here as u8, u64::MAX));
        runqueue::set_busy(here, true);
        runqueue::enqueue_new(table.get_mut(&BASE_TID).unwrap(), ACTIVE);
        ensure!(
            table[&BASE_TID].sched.on_rq == Some(here as u8),
            "new task queued on {:?}, not behind its creator on CPU {here}",
            table[&BASE_TID].sched.on_rq
        );
        runqueue::enqueue_new(table.get_mut(&(BASE_TID + 1)).unwrap(), ACTIVE);
        let on = table[&(BASE_TID + 1)].sched.on_rq;
        ensure!(
            on.is_some_and(|cpu| usize::from(cpu) != here),
            "a task not allowed on CPU {here} queued on {on:?}"
        );
        // An idle CPU with an empty queue of its own pulls the one waiting behind the running
        // creator (the other, on an idle CPU's queue, is that CPU's).
        let idle = (0..4)
            .find(|&cpu| cpu != here && runqueue::queued(cpu).is_empty())
            .unwrap_or(3);
        let pulled = runqueue::pick(table, idle, ACTIVE);
        ensure!(
            pulled == Some(BASE_TID),
            "idle CPU {idle} pulled {pulled:?}, not the task behind the creator"
        );
        runqueue::set_busy(here, false);
        let expected = runqueue::select_cpu(&table[&(BASE_TID + 2)], ACTIVE, None);
        runqueue::enqueue_new(table.get_mut(&(BASE_TID + 2)).unwrap(), ACTIVE);
        ensure!(
            table[&(BASE_TID + 2)].sched.on_rq == Some(expected as u8),
            "no creator running: queued on {:?}, not on CPU {expected} as a wake-up",
            table[&(BASE_TID + 2)].sched.on_rq
        );
        Ok(())
    })
}
