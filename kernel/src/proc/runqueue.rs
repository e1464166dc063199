//! Per-CPU run queues (Linux `struct rq`, reduced to a FIFO per CPU): where a runnable task
//! waits, which CPU it waits on, and how work moves between CPUs.
//!
//! - Each CPU picks the next task from the front of its own queue ([`pick`]).
//! - A task made runnable (woken, forked, preempted) is queued on one CPU ([`enqueue`]) chosen
//!   by [`select_cpu`] (Linux `select_task_rq`): its last CPU if that one is idle, else an idle
//!   CPU it may use, else its last CPU if still allowed, else the least loaded allowed one. A
//!   CPU that got work from another CPU is kicked out of its `hlt` (`sched::kick_idle`).
//! - A CPU whose queue is empty pulls the oldest task it may run from the busiest other queue
//!   (Linux's new-idle balance, [`steal`]); an idle CPU also looks at every tick of its own, so
//!   work queued behind a busy CPU moves within one tick.
//! - `sched_setaffinity` takes a queued task off a CPU it may no longer use ([`requeue`]) and
//!   sends a running one's CPU the reschedule IPI with its [`NEED_RESCHED`] bit set, so it
//!   leaves at once rather than at its next tick.
//!
//! The queues hold tids; the task table stays the truth. A task records the queue it is on
//! (`TaskSched::on_rq`); an entry whose task is gone, is not runnable or records another queue
//! is stale and skipped (a reaped or exec-renamed task never has to be searched for). Locks: a
//! queue's `Mutex` is a leaf, taken with the task table held and never the other way round, one
//! queue at a time; everything here also runs under the big kernel lock, which is what keeps a
//! task queued by `yield` from being picked by another CPU before it is off its kernel stack.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use cowlab_sync::SpinLock;

use super::{Pid, State, Task};
use crate::percpu::MAX_CPUS;

/// The scheduler's fields of a task.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TaskSched {
    /// The CPU whose queue holds the task (`None`: running, blocked, exited, or new).
    pub on_rq: Option<u8>,
    /// The CPU the task last ran on (Linux `task_cpu`); while it runs, the CPU it runs on.
    pub cpu: u8,
}

type Table = BTreeMap<Pid, Box<Task>>;

/// Each CPU's queue, under a lock of class `run queue` (`locking::RUNQUEUE`) for the order checker.
static QUEUES: [SpinLock<VecDeque<Pid>>; MAX_CPUS] =
    [const { SpinLock::new(&crate::locking::RUNQUEUE, VecDeque::new()) }; MAX_CPUS];
/// Each queue's length, read without its lock by placement and stealing (a hint: the lock
/// decides).
static LEN: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// CPUs running a task now (one bit per CPU; the idle loop sets it when it switches to a task
/// and clears it when back).
static BUSY: AtomicU64 = AtomicU64::new(0);
/// CPUs given a task by another CPU since the last kick (`sched::kick_idle` wakes those halted).
static KICK: AtomicU64 = AtomicU64::new(0);
/// CPUs whose running task must give the CPU up at its next entry (the reschedule IPI's work,
/// Linux `TIF_NEED_RESCHED`): its affinity no longer names that CPU.
pub static NEED_RESCHED: AtomicU64 = AtomicU64::new(0);
/// Tasks that pulled from another CPU's queue (`/proc/cowlab`-style counter for tests).
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

/// Tasks on `cpu`: its queue plus the one it runs.
pub fn load(cpu: usize) -> usize {
    LEN[cpu].load(Ordering::Relaxed) + (BUSY.load(Ordering::Relaxed) >> cpu & 1) as usize
}

/// Marks `cpu` as running a task (`true`) or back in its idle loop.
pub fn set_busy(cpu: usize, busy: bool) {
    if busy {
        BUSY.fetch_or(1 << cpu, Ordering::Relaxed);
    } else {
        BUSY.fetch_and(!(1 << cpu), Ordering::Relaxed);
    }
}

/// The set of CPUs to kick, read without taking it (the return to ring 3 folds it into one
/// test with its other work: `proc::on_return_to_user`).
#[inline(always)]
pub fn kicks_pending() -> u64 {
    KICK.load(Ordering::Relaxed)
}

/// Takes the set of CPUs to kick (see [`KICK`]): one load when there are none. A CPU whose
/// queue another CPU emptied since ([`pick_or_take`]) is left out: it has nothing to wake for.
#[inline]
pub fn take_kicks() -> u64 {
    if KICK.load(Ordering::Relaxed) == 0 {
        0
    } else {
        let kicks = KICK.swap(0, Ordering::Relaxed);
        let mut queued = 0;
        let mut bits = kicks;
        while bits != 0 {
            let cpu = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if LEN[cpu].load(Ordering::Relaxed) != 0 {
                queued |= 1 << cpu;
            }
        }
        queued
    }
}

/// Whether an idle `cpu` may find a task under the big kernel lock: one on its own queue, or
/// one [`steal`] would pull (its test, without the queue locks). An idle application
/// processor asks this when its tick or an IPI ends its `hlt`, and halts again without the
/// lock when the answer is no: taking the lock 100 times a second for nothing made the busy
/// CPU's kernel entries wait for it, and each of those waits a hand-off by IPI between two
/// vCPU threads (docs/architecture.md, "The cost of a 2-CPU boot"). A queue filled after the
/// look still wakes it: the enqueuer's kick (`sched::kick_idle`) sees it in `IDLE_CPUS`.
pub fn may_have_work(cpu: usize, active: u64) -> bool {
    if LEN[cpu].load(Ordering::Relaxed) != 0 {
        return true;
    }
    let busy = BUSY.load(Ordering::Relaxed);
    let mut others = active & !(1u64 << cpu);
    while others != 0 {
        let other = others.trailing_zeros() as usize;
        others &= others - 1;
        let waiting = LEN[other].load(Ordering::Relaxed);
        if waiting >= 2 || (waiting == 1 && busy >> other & 1 != 0) {
            return true;
        }
    }
    false
}

/// How many times a CPU took a task queued on another CPU.
pub fn migrations() -> u64 {
    MIGRATIONS.load(Ordering::Relaxed)
}

/// The CPUs `task` may run on among `active` (a mask naming none of them: all of them, so a
/// task never becomes unrunnable).
pub fn allowed(task: &Task, active: u64) -> u64 {
    match task.cpus_allowed & active {
        0 => active,
        mask => mask,
    }
}

/// Linux `select_task_rq`, reduced (and the boot CPU preferred while idle, below): the CPU to
/// queue `task` on among `active`. `leaving` is the
/// CPU the task is giving up while still on it (a preempted or yielding task): its own running
/// there does not count against that CPU.
pub fn select_cpu(task: &Task, active: u64, leaving: Option<usize>) -> usize {
    let allowed = allowed(task, active);
    // One CPU (the machine of `cargo xtask bench`): nothing to choose.
    if allowed & (allowed - 1) == 0 {
        return allowed.trailing_zeros() as usize;
    }
    let load_of = |cpu: usize| load(cpu).saturating_sub(usize::from(leaving == Some(cpu)));
    // The boot CPU first while it is idle: it takes the PIT tick and every device interrupt,
    // and their handlers need the big kernel lock. A task there gets its disk completions and
    // ticks on its own CPU, and an idle application processor wakes without the lock
    // (`may_have_work`); a task left on an application processor made the idle boot CPU
    // contend with it for the lock at each of its 100 ticks a second and at each completion,
    // a hand-off between two vCPU threads each time (c_signals_glibc on 2 CPUs: 19 s of guest
    // time against 7 s on one, docs/architecture.md "The cost of a 2-CPU boot").
    if allowed & 1 != 0 && load_of(0) == 0 {
        return 0;
    }
    let last = usize::from(task.sched.cpu) & (MAX_CPUS - 1);
    let last_ok = allowed >> last & 1 != 0;
    if last_ok && load_of(last) == 0 {
        return last;
    }
    // An idle CPU, else the least loaded; scanning from the one after `last` spreads tasks woken
    // together (a fork burst) over the idle CPUs instead of piling them on the lowest.
    let mut best = (usize::MAX, last);
    let above = allowed & u64::MAX.checked_shl(last as u32 + 1).unwrap_or(0);
    for mut bits in [above, allowed & !above] {
        while bits != 0 {
            let cpu = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let load = load_of(cpu);
            if load == 0 {
                return cpu;
            }
            if load < best.0 {
                best = (load, cpu);
            }
        }
    }
    if last_ok {
        last
    } else {
        best.1
    }
}

/// Queues the runnable `task` at the back of the queue [`select_cpu`] chooses (nothing if it
/// is queued already). `leaving` as for [`select_cpu`].
pub fn enqueue(task: &mut Task, active: u64, leaving: Option<usize>) {
    if task.sched.on_rq.is_some() {
        return;
    }
    let cpu = select_cpu(task, active, leaving);
    push(task, cpu);
}

/// Queues the new runnable `task` (fork, clone) behind the task running on this CPU, its
/// creator, when it may run here; else as [`enqueue`] places a wake-up. Linux balances a fork
/// to the idlest CPU; here a kernel-bound parent and child on two CPUs contend for the big
/// kernel lock and each placement on a halted CPU is a reschedule IPI to a halted vCPU thread
/// (`t_process`'s fork loop, `t_exhaust`'s fork bomb: several times slower on 2 CPUs). Behind
/// its creator the child runs when the creator blocks (`fork` then `wait4`: no IPI, no second
/// CPU) or yields, or an idle CPU pulls it at its next tick ([`may_have_work`], [`steal`]: a
/// task waiting behind a running one), so parallel work still spreads, a tick later.
pub fn enqueue_new(task: &mut Task, active: u64) {
    if task.sched.on_rq.is_some() {
        return;
    }
    let here = crate::percpu::cpu_id();
    let creator_runs_here = BUSY.load(Ordering::Relaxed) >> here & 1 != 0;
    if creator_runs_here && allowed(task, active) >> here & 1 != 0 {
        push(task, here);
    } else {
        enqueue(task, active, None);
    }
}

fn push(task: &mut Task, cpu: usize) {
    let mut queue = QUEUES[cpu].lock();
    queue.push_back(task.tid);
    LEN[cpu].store(queue.len(), Ordering::Relaxed);
    drop(queue);
    task.sched.on_rq = Some(cpu as u8);
    note_queued_on(cpu);
}

/// A task was queued on `cpu`: another CPU's is kicked by the next `sched::kick_idle`.
pub(crate) fn note_queued_on(cpu: usize) {
    if cpu != crate::percpu::cpu_id() {
        KICK.fetch_or(1 << cpu, Ordering::Relaxed);
    }
}

/// Takes `task` off its queue if that CPU is no longer allowed and queues it again on one that
/// is (`sched_setaffinity` of a waiting task).
pub fn requeue(task: &mut Task, active: u64) {
    let Some(cpu) = task.sched.on_rq else {
        return;
    };
    let cpu = usize::from(cpu);
    if allowed(task, active) >> cpu & 1 != 0 {
        return;
    }
    dequeue(task);
    enqueue(task, active, None);
}

/// Takes `task` off the queue it is on, if any.
pub fn dequeue(task: &mut Task) {
    let Some(cpu) = task.sched.on_rq.take() else {
        return;
    };
    let cpu = usize::from(cpu);
    let mut queue = QUEUES[cpu].lock();
    queue.retain(|&tid| tid != task.tid);
    LEN[cpu].store(queue.len(), Ordering::Relaxed);
}

/// Whether the queue entry `tid` on `cpu` is live: the task is runnable and records this queue.
fn claim(table: &mut Table, tid: Pid, cpu: usize) -> bool {
    match table.get_mut(&tid) {
        Some(t) if t.state == State::Runnable && t.sched.on_rq == Some(cpu as u8) => {
            t.sched.on_rq = None;
            t.sched.cpu = cpu as u8;
            true
        }
        _ => false,
    }
}

/// The next task for `cpu`: the front of its own queue, else one pulled from another CPU
/// ([`steal`]). The caller holds the table and makes the task `Running`.
pub fn pick(table: &mut Table, cpu: usize, active: u64) -> Option<Pid> {
    pick_or_take(table, cpu, active, 0)
}

/// [`pick`] for a CPU's idle loop, which may also take the one task queued for a CPU in
/// `halted` (halted in its idle loop, its wake-up IPI maybe not sent or not yet taken): a task
/// made runnable by a waker that then blocked (a parent in `wait4` after `fork`, a pipe
/// writer that filled the pipe, an exiting child waking its parent) runs at once on the
/// waker's CPU, which is awake and holds the big lock, instead of after the host has run the
/// other vCPU's thread; that CPU then finds nothing and halts again without the lock.
pub fn pick_or_take(table: &mut Table, cpu: usize, active: u64, halted: u64) -> Option<Pid> {
    loop {
        let mut queue = QUEUES[cpu].lock();
        let tid = queue.pop_front();
        LEN[cpu].store(queue.len(), Ordering::Relaxed);
        drop(queue);
        match tid {
            Some(tid) if claim(table, tid, cpu) => return Some(tid),
            Some(_) => continue,
            None => break,
        }
    }
    steal(table, cpu, active, halted & !(1 << cpu))
}

/// Linux's idle balance, reduced: the oldest task `cpu` may run from the busiest other queue
/// that has a task waiting behind a running one (or two waiting), or one waiting for a CPU in
/// `halted` ([`pick_or_take`]); an idle CPU never takes the one task a CPU awake and about to
/// pick it has.
fn steal(table: &mut Table, cpu: usize, active: u64, halted: u64) -> Option<Pid> {
    let mut others = active & !(1u64 << cpu);
    let mut victims: [(usize, usize); 8] = [(0, 0); 8];
    let mut n = 0;
    while others != 0 && n < victims.len() {
        let other = others.trailing_zeros() as usize;
        others &= others - 1;
        let waiting = LEN[other].load(Ordering::Relaxed);
        let taken_soon = (BUSY.load(Ordering::Relaxed) | halted) >> other & 1 != 0;
        if waiting >= 2 || (waiting == 1 && taken_soon) {
            victims[n] = (waiting, other);
            n += 1;
        }
    }
    victims[..n].sort_unstable_by_key(|v| core::cmp::Reverse(v.0));
    for &(_, other) in &victims[..n] {
        let mut queue = QUEUES[other].lock();
        let found = queue.iter().position(|tid| {
            table.get(tid).is_some_and(|t| {
                t.state == State::Runnable
                    && t.sched.on_rq == Some(other as u8)
                    && allowed(t, active) >> cpu & 1 != 0
            })
        });
        let Some(index) = found else {
            continue;
        };
        let tid = queue.remove(index).expect("found above");
        LEN[other].store(queue.len(), Ordering::Relaxed);
        drop(queue);
        let t = table.get_mut(&tid).expect("checked above");
        t.sched.on_rq = None;
        t.sched.cpu = cpu as u8;
        MIGRATIONS.fetch_add(1, Ordering::Relaxed);
        return Some(tid);
    }
    None
}

/// A runnable task on no queue is a wake-up that forgot [`enqueue`] (it would never run): say
/// so once and queue it. Run by an idle CPU that found nothing, so it costs nothing while busy.
pub fn repair_lost(table: &mut Table, active: u64) {
    static WARNED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    for t in table.values_mut() {
        if t.state == State::Runnable && t.sched.on_rq.is_none() {
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!(
                    "run queue: tid {} runnable on no queue (a lost enqueue)",
                    t.tid
                );
            }
            enqueue(t, active, None);
        }
    }
}

/// The tids queued on `cpu`, front first (for tests and `/proc`).
pub fn queued(cpu: usize) -> alloc::vec::Vec<Pid> {
    QUEUES[cpu].lock().iter().copied().collect()
}
