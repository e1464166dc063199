//! Tasks and thread groups: the task table, sleeping and waking, exit and reaping, signals'
//! default actions.
//!
//! Model (one CPU, a small Unix, Linux's vocabulary): the schedulable entity is a *task* (a
//! thread), named by its tid. Tasks form *thread groups* (processes), named by the tid of their
//! first task, the leader: `getpid` is the tgid, `gettid` the tid. The threads of a group share
//! the address space (`vm::SharedAddressSpace`), the descriptor table ([`SharedFdTable`], under
//! `CLONE_FILES`) and the [`Group`] record (parent, signal actions, exit status, fault counts);
//! each has its own kernel stack, registers, FS base, signal mask and state: runnable, running,
//! blocked on a wait channel (a number: a pipe's address, a parent waiting for children, a futex
//! waiter, the timer), or one of the three ends of a life:
//!
//! - a non-leader thread that exits is `Dead`: the idle loop frees it once it has switched away
//!   from its kernel stack;
//! - a leader that exits while other threads of its group live on is `Exited`: it stays in the
//!   table so that its tid, which is the group's pid, stays taken and reapable (Linux's delayed
//!   group leader);
//! - when the last thread of a group exits, the leader becomes a `Zombie` holding the group's
//!   wait status until the parent reaps it with `wait4`.
//!
//! Each thread drops its own references to the address space and descriptor table when it
//! exits; the last one tears the address space down ([`release_aspace_ref`]), so frames are
//! returned exactly once, before the parent can see the group exit. The kernel runs with
//! interrupts disabled from every entry to the return to ring 3 (the only preemption point is a
//! timer interrupt taken in ring 3), so checking a condition and going to sleep cannot race with
//! its wake-up. Invariants: the table lock is never held across a context switch or while
//! touching user memory; lock order is the task table, then a group or descriptor table; a task
//! is removed from the table (and its kernel stack freed) only when it is not running: reaping
//! for leaders, the idle loop for dead threads, `execve`'s `de_thread` for an exited leader.

pub mod affinity;
pub mod args;
pub mod cputime;
pub mod cred;
pub mod evict;
pub mod exec;
pub mod files;
pub mod fork;
pub mod futex;
pub mod kstat;
pub mod kthread;
pub mod oom;
pub mod orphan;
pub mod pgrp;
pub mod rlimit;
pub mod runqueue;
pub mod sched;
pub mod signal;
pub mod sleeplock;
pub mod switch;
pub mod wait;
pub mod waitlink;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::errno::Errno;
use crate::idt::TrapFrame;
use crate::percpu::{self, cpu_id, Slot};
use crate::uaccess::UserPtr;
use crate::{memory, time, vm};
pub use files::SharedFdTable;
pub use signal::{send_signal_current, SIGKILL, SIGPIPE};
use switch::{FpuState, KernelStack};

pub type Pid = u32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Runnable,
    Running,
    /// Waiting for a `wakeup(channel)`, or for the tick count to reach `until`.
    Blocked {
        channel: usize,
        until: Option<u64>,
    },
    /// A group leader that exited while other threads of its group live on.
    Exited,
    /// A non-leader thread that exited; freed by the idle loop.
    Dead,
    /// The leader of a group whose threads have all exited; the group's wait status (Linux
    /// encoding) for the parent.
    Zombie(i32),
}

/// What the threads of a group share beyond memory and descriptors (Linux keeps these in
/// `signal_struct` and `sighand_struct`, both shared under `CLONE_THREAD`).
pub struct Group {
    /// The parent process (a tgid).
    pub parent: Pid,
    /// Threads of the group not yet exited.
    pub live: u32,
    /// The group's wait status once its end is decided for all threads (`exit_group`, a fatal
    /// signal, a fault); `None` while threads exit one by one, in which case the last thread's
    /// `exit` status is the group's (what Linux reports, checked by `t_threads` on the host).
    pub exit_status: Option<i32>,
    /// `rt_sigaction` actions by signal number (Linux `sighand_struct`). Boxed: 2 KiB that
    /// fork would otherwise copy through several debug-build stack frames (a 32 KiB stack).
    pub sigactions: Box<[signal::SigAction; 65]>,
    /// Shared pending signals, the exit signal, job-control state.
    pub sig: signal::GroupSignals,
    /// Minor faults of the reaped children (`RUSAGE_CHILDREN`) and of this group once exited.
    pub child_minflt: u64,
    pub own_minflt: u64,
    /// `ru_maxrss` in KiB (Linux `signal->maxrss`, `cmaxrss`): the high-water mark of the
    /// address spaces this group has left (exec, exit), and the largest of its reaped
    /// children's.
    pub maxrss: u64,
    pub child_maxrss: u64,
    /// Resource limits (Linux `signal->rlim`): copied by fork, kept by exec.
    pub rlimits: rlimit::Rlimits,
    /// The working directory (Linux's `fs_struct`): an absolute path, `None` for `/`; shared
    /// by the threads of the group, copied by `fork` (a reference count, no allocation), kept
    /// by `execve`.
    pub cwd: Option<Arc<str>>,
    /// `PR_SET_CHILD_SUBREAPER`: orphaned descendants are reparented here instead of to init.
    /// Not inherited by fork, kept across execve (as Linux's `is_child_subreaper`).
    pub child_subreaper: bool,
    /// Process group and session (`pgrp`): copied by fork, kept by execve.
    pub job: pgrp::Job,
    /// User and group ids (`cred`): copied by fork, kept by execve.
    pub cred: cred::Cred,
    /// The file-creation mask (Linux `fs_struct.umask`): copied by fork, kept by execve.
    pub umask: u32,
    /// CPU time of the group's exited threads, and of its reaped children (`cputime`).
    pub dead_cpu: cputime::CpuTime,
    pub child_cpu: cputime::CpuTime,
    /// `ITIMER_VIRTUAL` and `ITIMER_PROF` (`cputime::cpu_itimer`): not inherited by fork,
    /// kept by execve.
    pub cpu_itimers: cputime::CpuItimers,
}

impl Group {
    pub fn new(
        parent: Pid,
        sigactions: Box<[signal::SigAction; 65]>,
        rlimits: rlimit::Rlimits,
        cwd: Option<Arc<str>>,
    ) -> Arc<Mutex<Group>> {
        Arc::new(Mutex::new(Group {
            parent,
            live: 1,
            exit_status: None,
            sigactions,
            sig: signal::GroupSignals {
                exit_signal: signal::SIGCHLD,
                ..Default::default()
            },
            child_minflt: 0,
            own_minflt: 0,
            maxrss: 0,
            child_maxrss: 0,
            rlimits,
            cwd,
            child_subreaper: false,
            job: pgrp::Job::default(),
            cred: cred::Cred::ROOT,
            umask: cred::INITIAL_UMASK,
            dead_cpu: Default::default(),
            child_cpu: Default::default(),
            cpu_itimers: Default::default(),
        }))
    }
}

/// One thread.
pub struct Task {
    pub tid: Pid,
    /// The thread group (process) id: the leader's tid.
    pub tgid: Pid,
    /// The program name (basename of the executed path), for messages.
    pub name: String,
    pub state: State,
    pub aspace: Option<vm::SharedAddressSpace>,
    pub kstack: KernelStack,
    /// The saved kernel stack pointer while not running (see `switch`).
    pub ctx_rsp: u64,
    pub fpu: Box<FpuState>,
    pub fds: SharedFdTable,
    pub fs_base: u64,
    /// The thread must exit at its next return to ring 3 (and its sleeps end with `EINTR`):
    /// its group is being killed or exited, or `execve` in another thread ends it.
    pub killed: bool,
    pub sigmask: u64,
    /// Pending signals of this thread, its alternate stack.
    pub sig: signal::ThreadSignals,
    /// `CLONE_CHILD_CLEARTID` / `set_tid_address`: the user `u32` zeroed and futex-woken when
    /// the thread exits (how `pthread_join` learns of it).
    pub clear_child_tid: u64,
    pub group: Arc<Mutex<Group>>,
    /// The CPUs this thread may run on (Linux `cpus_mask`; `affinity`).
    pub cpus_allowed: u64,
    /// Ticks of user and system time this thread ran (`cputime`).
    pub cpu: cputime::CpuTime,
    /// Its run queue and last CPU (`runqueue`).
    pub sched: runqueue::TaskSched,
}

impl Task {
    pub fn is_leader(&self) -> bool {
        self.tid == self.tgid
    }

    /// A kernel thread (`kthread::spawn`: no thread group, no address space). A user's pid
    /// lookups do not find it (Linux: signals, affinity, limits on a kthread are refused; cowlab
    /// answers `ESRCH` throughout, as for `getpgid` and `tgkill`).
    pub fn is_kthread(&self) -> bool {
        self.tgid == 0
    }

    /// Whether a user's pid lookup finds this task: alive and not a kernel thread.
    pub fn user_visible(&self) -> bool {
        self.state != State::Dead && !self.is_kthread()
    }
}

/// All tasks by tid.
pub static TABLE: Mutex<BTreeMap<Pid, Box<Task>>> = Mutex::new(BTreeMap::new());
/// The running task's tid and tgid on each CPU (0 while its idle loop runs) are this CPU's
/// `percpu` slots: every CPU runs its own task (issue 16 stage 2), and the entry paths read
/// them with one `gs:` load.
const CURRENT: usize = percpu::slot(Slot::Tid);
const CURRENT_TGID: usize = percpu::slot(Slot::Tgid);
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// The channel of a parent waiting for its children.
pub fn wait_channel(pid: Pid) -> usize {
    0x1_0000_0000 + pid as usize
}

/// The channel `execve` waits on for the other threads of its group to exit.
fn group_channel(tgid: Pid) -> usize {
    0x2_0000_0000 + tgid as usize
}

pub fn alloc_pid() -> Pid {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

/// The pid handed out last (`/proc/loadavg`'s last field; Linux `idr_get_cursor` - 1).
pub fn last_pid() -> Pid {
    NEXT_PID.load(Ordering::Relaxed).saturating_sub(1)
}

/// The running process's pid, its thread group id (0 in the idle loop or before user mode).
pub fn current_pid() -> Pid {
    percpu::read::<CURRENT_TGID>() as Pid
}

/// The running thread's tid (0 in the idle loop or before user mode).
pub fn current_tid() -> Pid {
    percpu::read::<CURRENT>() as Pid
}

fn set_current(tid: Pid, tgid: Pid) {
    percpu::write::<CURRENT>(u64::from(tid));
    percpu::write::<CURRENT_TGID>(u64::from(tgid));
}

/// Runs `f` with `tid` as this CPU's current task id, then puts the real one back (in-kernel
/// tests of what code run on behalf of another CPU records while a task is interrupted).
pub(crate) fn as_if_current<R>(tid: Pid, f: impl FnOnce() -> R) -> R {
    let (was, was_tgid) = (percpu::read::<CURRENT>(), percpu::read::<CURRENT_TGID>());
    percpu::write::<CURRENT>(u64::from(tid));
    let r = f();
    percpu::write::<CURRENT>(was);
    percpu::write::<CURRENT_TGID>(was_tgid);
    r
}

/// The running task's group record (null in the idle loop): the `Mutex` inside its
/// `Task::group` `Arc`, which the task keeps for its whole life, so the pointee outlives every
/// run of the task. Lets `with_group` (getppid, rlimits, signal actions...) skip the table
/// lookup on the system-call path. A `percpu` slot, as [`CURRENT`].
const CURRENT_GROUP: usize = percpu::slot(Slot::Group);
/// The running task's kernel-stack top (0 in the idle loop), for the canary check of every
/// return to ring 3 without a table lookup. A `percpu` slot, as [`CURRENT`].
const CURRENT_STACK_TOP: usize = percpu::slot(Slot::StackTop);

/// This CPU's [`CURRENT_GROUP`].
#[inline(always)]
fn current_group() -> *const Mutex<Group> {
    core::ptr::with_exposed_provenance(percpu::read::<CURRENT_GROUP>() as usize)
}
/// The work of returns to ring 3: the number of tasks marked `killed` that have not exited yet.
/// While it and this CPU's bit of [`SIGNAL_WORK`] are 0 no return to ring 3 has to look at its
/// task: the common case costs two loads (Linux tests `TIF_NOTIFY_RESUME`-like work flags in
/// `exit_to_user_mode_loop` instead of its task list).
static KILLED_LIVE: AtomicUsize = AtomicUsize::new(0);
/// One bit per CPU: its next return to ring 3 looks for signals. A request sets every CPU's
/// bit (the sender does not know where the receiver runs); each CPU clears its own when it
/// looks, so one CPU's return cannot swallow the check another CPU's task needs.
static SIGNAL_WORK: AtomicU64 = AtomicU64::new(0);

/// Asks the next return to ring 3 of every CPU to look for signals (see `signal::deliver`).
pub fn request_signal_work() {
    SIGNAL_WORK.store(u64::MAX, Ordering::Relaxed);
    sched::kick_busy();
}

/// Records what the fast paths above need about the task the scheduler is switching to
/// (`None`: the idle loop).
fn set_current_task(task: Option<&Task>) {
    let (group, top) = match task {
        Some(t) => {
            // The task may have signals queued while it was not running: this CPU looks.
            SIGNAL_WORK.fetch_or(1 << cpu_id(), Ordering::Relaxed);
            (Arc::as_ptr(&t.group).cast_mut(), t.kstack.top())
        }
        None => (core::ptr::null_mut(), 0),
    };
    percpu::write::<CURRENT_GROUP>(group.expose_provenance() as u64);
    percpu::write::<CURRENT_STACK_TOP>(top);
}

/// Marks `task` to exit at its next return to ring 3, counting it in [`KILLED_LIVE`].
fn mark_killed(task: &mut Task) {
    if !task.killed {
        task.killed = true;
        KILLED_LIVE.fetch_add(1, Ordering::Relaxed);
        sched::kick_busy();
    }
}

/// Whether the calling task is being killed (its group is exiting or got a fatal signal):
/// Linux `fatal_signal_pending(current)`, for long kernel loops a user can drive, which stop
/// with `EINTR` (the task then ends on its return to ring 3). One load while nobody is killed.
pub fn fatal_signal_pending() -> bool {
    KILLED_LIVE.load(Ordering::Relaxed) != 0 && with_current(|t| t.killed)
}

/// Runs `f` on the current task with the table locked. Panics outside a task (the system
/// calls and user traps only call it from one).
pub fn with_current<R>(f: impl FnOnce(&mut Task) -> R) -> R {
    let tid = current_tid();
    let mut table = TABLE.lock();
    let task = table
        .get_mut(&tid)
        .expect("system call or user trap outside a task");
    f(task)
}

/// Runs `f` on the current task's group record. Panics outside a task, as `with_current`.
pub fn with_group<R>(f: impl FnOnce(&mut Group) -> R) -> R {
    with_group_inline(f)
}

/// The parent's pid (`getppid`): [`with_group`] inlined into the system call, the benchmark's
/// null call (out of line: a call, a frame and a return around the lock and the load).
#[inline(always)]
pub fn current_parent() -> Pid {
    with_group_inline(|g| g.parent)
}

/// [`with_group`]'s body, inlined where a caller asks for it ([`current_parent`]); the other
/// callers keep their out-of-line instances, as before.
#[inline(always)]
fn with_group_inline<R>(f: impl FnOnce(&mut Group) -> R) -> R {
    let group = current_group();
    // SAFETY: a non-null `CURRENT_GROUP` is the running task's `Arc<Mutex<Group>>` target (set
    // by the scheduler before it runs the task, cleared when it is back); the task holds that
    // `Arc` until it is reaped, which never happens while it runs. Only `&Mutex` is formed.
    let group = unsafe { group.as_ref() }.expect("system call or user trap outside a task");
    f(&mut group.lock())
}

/// The current address space (for memory system calls).
pub fn current_aspace() -> vm::SharedAddressSpace {
    with_current(|p| p.aspace.clone()).expect("a running process has an address space")
}

/// Blocks the current process until `wakeup(channel)`; `EINTR` if a fatal signal is pending.
pub fn sleep(channel: usize) -> Result<(), Errno> {
    block(channel, None, false)
}

/// Blocks the current thread until `wakeup(channel)`, interruptibly: `ERESTARTSYS` if a signal
/// it does not block arrives (the return path restarts the call or makes it `EINTR`), `EINTR`
/// if it is being killed (Linux `TASK_INTERRUPTIBLE`).
pub fn sleep_interruptible(channel: usize) -> Result<(), Errno> {
    block(channel, None, true)
}

/// Like [`sleep_interruptible`], waking at tick `until` at the latest.
pub fn sleep_interruptible_until(channel: usize, until: u64) -> Result<(), Errno> {
    block(channel, Some(until), true)
}

/// Blocks like [`sleep`] for a wait on the kernel itself (a device request, a device
/// descriptor), Linux's `TASK_UNINTERRUPTIBLE`: the hung-task watchdog reports one that lasts
/// too long, naming `what`. A fatal signal still ends it with `EINTR` (`TASK_KILLABLE`).
pub fn sleep_uninterruptible(channel: usize, what: &'static str) -> Result<(), Errno> {
    let tid = current_tid();
    crate::watchdog::hung::enter(tid, channel, what);
    let slept = block(channel, None, false);
    crate::watchdog::hung::leave(tid);
    slept
}

/// Blocks the current process for at least `micros` microseconds of TSC time, waking on each
/// tick to check; interruptible (`ERESTARTSYS` on a signal, `EINTR` if killed).
pub fn sleep_micros(micros: u64) -> Result<(), Errno> {
    const MICROS_PER_TICK: u64 = 1_000_000 / time::TICK_HZ;
    let deadline = time::micros_since_boot().saturating_add(micros);
    loop {
        let now = time::micros_since_boot();
        if now >= deadline {
            return Ok(());
        }
        // Half the ticks left (at least one): a few wake-ups per sleep instead of one per tick
        // (128 sleepers woken 100 times a second each swamped the big kernel lock on 2 CPUs),
        // and ticks that lag the TSC cost at most one extra short sleep, never an overslept one.
        let ticks_left = (deadline - now).div_ceil(MICROS_PER_TICK);
        block(
            TIMER_CHANNEL,
            Some(time::ticks() + (ticks_left / 2).max(1)),
            true,
        )?;
    }
}

const TIMER_CHANNEL: usize = 1;

fn block(channel: usize, until: Option<u64>, interruptible: bool) -> Result<(), Errno> {
    let interrupted = |p: &Task| {
        if p.killed {
            Some(Errno::EINTR)
        } else if interruptible && signal::deliver::deliverable(p) {
            Some(Errno::ERESTARTSYS)
        } else {
            None
        }
    };
    let early = with_current(|p| {
        let e = interrupted(p);
        if e.is_none() {
            set_blocked(p, channel, until);
        }
        e
    });
    if let Some(e) = early {
        return Err(e);
    }
    sched::schedule();
    match with_current(|p| interrupted(p)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Makes every process blocked on `channel` runnable. If the table is locked (by the code
/// this call is nested in, e.g. a pipe end dropped while the table is being changed; there is
/// one CPU), the wake-up is deferred and applied by the scheduler before it picks the next
/// process, so it cannot be lost.
pub fn wakeup(channel: usize) {
    waitlink::follow(channel);
    match TABLE.try_lock() {
        Some(mut table) => wakeup_locked(&mut table, channel),
        None => DEFERRED_WAKEUPS.lock().push(channel),
    }
}

/// A summary of the channels tasks are blocked on, one bit per [`channel_bit`]: set by
/// [`block`] with the task's state, both under the table's lock; recomputed from the table by
/// every scan of [`wakeup_locked`] (a bit left set by a task that woke another way, a signal,
/// a timeout, only costs a scan). A clear bit proves that no task is blocked on the channel,
/// so its wake-up skips the scan of every task (Linux: `wake_up` of an empty wait queue is a
/// list test; a pipe wakes its readers on every write and `vmsplice`, mostly for nobody).
/// Read and written only under the table's lock.
static BLOCKED_CHANNELS: AtomicU64 = AtomicU64::new(0);

/// Marks `task` blocked on `channel` (until tick `until`), the caller holding the table's
/// lock: the state and its bit in [`BLOCKED_CHANNELS`] together, so that a waker that then
/// finds the bit clear knows no task is blocked there. Every `State::Blocked` is set here.
pub(crate) fn set_blocked(task: &mut Task, channel: usize, until: Option<u64>) {
    task.state = State::Blocked { channel, until };
    BLOCKED_CHANNELS.fetch_or(channel_bit(channel), Ordering::Relaxed);
}

/// `channel`'s bit in [`BLOCKED_CHANNELS`] (a multiplicative hash: channels are addresses
/// and small constants).
fn channel_bit(channel: usize) -> u64 {
    1 << ((channel as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

/// [`wakeup`] with the table already locked (`table` is [`TABLE`]'s). Inline, the test of
/// [`BLOCKED_CHANNELS`]; out of line, the scan.
#[inline]
pub fn wakeup_locked(table: &mut BTreeMap<Pid, Box<Task>>, channel: usize) {
    if BLOCKED_CHANNELS.load(Ordering::Relaxed) & channel_bit(channel) != 0 {
        wakeup_scan(table, channel);
    } else {
        // Debug builds (every test tier) check the summary's promise: a task blocked here
        // with its bit clear would be a lost wake-up, a hang far from its cause (perf8's
        // group stop set its state without `set_blocked` and hung t_abi3_restart).
        debug_assert!(
            !table
                .values()
                .any(|p| matches!(p.state, State::Blocked { channel: c, .. } if c == channel)),
            "wakeup of channel {channel:#x}: a task is blocked on it but its summary bit is clear"
        );
    }
}

/// Makes the tasks blocked on `channel` runnable; recomputes [`BLOCKED_CHANNELS`].
#[inline(never)]
fn wakeup_scan(table: &mut BTreeMap<Pid, Box<Task>>, channel: usize) {
    let mut still = 0;
    for p in table.values_mut() {
        if let State::Blocked { channel: c, .. } = p.state {
            if c == channel {
                sched::make_runnable(p);
            } else {
                still |= channel_bit(c);
            }
        }
    }
    BLOCKED_CHANNELS.store(still, Ordering::Relaxed);
}

static DEFERRED_WAKEUPS: Mutex<alloc::vec::Vec<usize>> = Mutex::new(alloc::vec::Vec::new());

/// Applies the wake-ups [`wakeup`] had to defer. Called by the scheduler, table unlocked.
pub fn apply_deferred_wakeups() {
    let channels = core::mem::take(&mut *DEFERRED_WAKEUPS.lock());
    if !channels.is_empty() {
        let mut table = TABLE.lock();
        for channel in channels {
            wakeup_locked(&mut table, channel);
        }
    }
}

/// The timer's work for processes: wake the sleepers whose time has come. Called from the
/// timer interrupt; skips a tick if the table is busy (the interrupted code holds it).
pub fn on_tick() {
    signal::timer::on_tick();
    let now = time::ticks();
    if let Some(mut table) = TABLE.try_lock() {
        for p in table.values_mut() {
            if matches!(p.state, State::Blocked { until: Some(t), .. } if t <= now) {
                sched::make_runnable(p);
            }
        }
        kstat::sample_load(now, || {
            let running = table
                .values()
                .filter(|p| matches!(p.state, State::Runnable | State::Running))
                .count();
            Some(running as u64)
        });
    }
}

/// Last work before a return to ring 3: a thread whose group is being killed or exited ends
/// here; then signals are delivered; CPUs halted in their idle loops are woken if this kernel
/// entry made a task runnable. One test gates all three: the OR of the run queues' kick set,
/// [`KILLED_LIVE`] and [`SIGNAL_WORK`] (every CPU's bits), each looked at precisely in
/// [`return_work`] (another CPU's pending signal bit only costs this CPU a trip there).
///
/// Only on the way back to ring 3, where a task always runs: only `execve` makes a ring-3
/// frame, and only tasks exec; the scheduler sets [`CURRENT`] before a task first enters ring
/// 3. (A test of [`CURRENT`] here cost every system call and fault 3 instructions.)
#[inline]
pub fn on_return_to_user(frame: &mut TrapFrame) {
    debug_assert_ne!(
        percpu::read::<CURRENT>(),
        0,
        "return to ring 3 outside a task"
    );
    if !switch::canary_intact_below(percpu::read::<CURRENT_STACK_TOP>()) {
        stack_overflow();
    }
    if runqueue::kicks_pending()
        | KILLED_LIVE.load(Ordering::Relaxed) as u64
        | SIGNAL_WORK.load(Ordering::Relaxed)
        != 0
    {
        return_work(frame);
    }
}

/// The way back to ring 3 after a fault resolved without the big lock (`fault_unlocked.rs`):
/// a kill or signal posted for this CPU meanwhile also sent it an IPI, taken once interrupts
/// are back on in ring 3; should one be seen already, the return work runs here under the lock.
#[inline(always)]
pub fn after_unlocked_fault(frame: &mut TrapFrame) {
    if KILLED_LIVE.load(Ordering::Relaxed) != 0
        || SIGNAL_WORK.load(Ordering::Relaxed) >> cpu_id() & 1 != 0
    {
        after_unlocked_fault_work(frame);
    }
}

#[cold]
#[inline(never)]
fn after_unlocked_fault_work(frame: &mut TrapFrame) {
    let locked = crate::bkl::lock_from_user();
    on_return_to_user(frame);
    crate::bkl::release_to_user_if(locked);
}

/// The canary check of [`on_return_to_user`] failed: the kernel stack overflowed.
#[cold]
#[inline(never)]
fn stack_overflow() -> ! {
    panic!(
        "kernel stack overflow in tid {} (canary at the bottom of its 32 KiB stack overwritten)",
        current_tid()
    );
}

/// The uncommon part of [`on_return_to_user`]: idle CPUs kicked, a killed thread exits, then
/// signals.
#[cold]
#[inline(never)]
fn return_work(frame: &mut TrapFrame) {
    sched::kick_idle();
    let me = 1u64 << cpu_id();
    if KILLED_LIVE.load(Ordering::Relaxed) != 0 && with_current(|p| p.killed) {
        // The group's status was set by whoever killed it; SIGKILL only if none was (execve's
        // de_thread ends threads without deciding the group's status, and never the last one).
        exit_thread(i32::from(SIGKILL));
    }
    // Loaded first: a kick or a kill brings every return here, most with no signal bit set.
    if SIGNAL_WORK.load(Ordering::Relaxed) & me != 0
        && SIGNAL_WORK.fetch_and(!me, Ordering::Relaxed) & me != 0
    {
        signal::deliver::on_return(frame);
    }
}

/// Linux wait status of a normal exit.
pub fn exit_status(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// Decides the end of group `tgid` with wait status `status` (unless an earlier group exit
/// already decided it) and marks every one of its threads to exit, waking the sleepers (their
/// sleeps end with `EINTR`). Linux `do_group_exit` / `zap_other_threads`.
fn kill_group_locked(table: &mut BTreeMap<Pid, Box<Task>>, tgid: Pid, status: i32) {
    let Some(leader) = table.get(&tgid) else {
        return;
    };
    leader.group.lock().exit_status.get_or_insert(status);
    for t in table.values_mut().filter(|t| t.tgid == tgid) {
        if matches!(t.state, State::Exited | State::Dead | State::Zombie(_)) {
            continue;
        }
        mark_killed(t);
        if matches!(t.state, State::Blocked { .. }) {
            sched::make_runnable(t);
        }
    }
}

/// Ends the whole current process (`exit_group`, a fatal signal, a fault) with wait status
/// `status`: every other thread is told to exit, then the calling one exits. Never returns.
pub fn exit_current(status: i32) -> ! {
    kill_group_locked(&mut TABLE.lock(), current_pid(), status);
    exit_thread(status)
}

/// Ends the calling thread (`exit`). `status` is the group's wait status if this is the last
/// thread and no group exit decided another. Never returns.
///
/// Order matters: the `clear_child_tid` write and futex wake happen while the thread's address
/// space is still loaded; the descriptor table and address-space references are dropped outside
/// the table lock (closing pipe ends wakes sleepers; tearing down takes time); the state changes
/// (and the parent's wake-up) come before the final switch, which never returns here.
pub fn exit_thread(status: i32) -> ! {
    let tid = current_tid();
    #[cfg(feature = "kcov")]
    crate::kcov::task_exit(tid);
    let (clear_tid, shared) = with_current(|t| {
        let shared = t.group.lock().live > 1;
        (t.clear_child_tid, shared)
    });
    // Linux `mm_release`: only when someone else can see the memory (another thread).
    if clear_tid != 0 && shared {
        if let Ok(ptr) = UserPtr::<u32>::new(clear_tid) {
            if ptr.write(&0).is_ok() {
                futex::wake_address(clear_tid, 1, futex::BITSET_MATCH_ANY);
            }
        }
    }
    if !shared {
        zap_exiting_aspace();
    }
    // Linux `do_exit` closes the files before `exit_notify`: a large memfd or tmpfs cache
    // whose last descriptor goes here is freed with pauses while the exit is not yet visible
    // (a parent reaping the zombie finds the frames back).
    let fds = with_current(|t| core::mem::take(&mut t.fds));
    drop(fds);
    evict::run_own(true);
    // The group's fault and peak-RSS figures, read before the table lock: the address-space
    // lock may sleep (a writer of a `CLONE_VM` sharer holds it), which must not happen with
    // the table's or the group's spin lock held.
    let aspace_stats = with_current(|t| t.aspace.clone()).map(|aspace| {
        let aspace = aspace.read_ptl();
        (aspace.minor_faults(), aspace.hiwater_rss(memory::mm()))
    });
    let (aspace, fds, last, parent, tgid, reaper, session_leader) = {
        let mut table = TABLE.lock();
        let t = table
            .get_mut(&tid)
            .expect("the current task is in the table");
        let tgid = t.tgid;
        if t.killed {
            // Exits once: this task no longer needs its returns to ring 3 checked.
            KILLED_LIVE.fetch_sub(1, Ordering::Relaxed);
        }
        let aspace = t.aspace.take();
        let fds = core::mem::take(&mut t.fds);
        // Its ticks taken while another CPU held the big lock, before they become the group's.
        cputime::settle_owed(t);
        let mut group = t.group.lock();
        group.live -= 1;
        group.dead_cpu.add(core::mem::take(&mut t.cpu));
        let last = group.live == 0;
        if last {
            if let Some((minflt, hiwater)) = aspace_stats {
                group.own_minflt = minflt;
                group.maxrss = group.maxrss.max(hiwater * 4);
            }
        }
        let parent = group.parent;
        let final_status = group.exit_status.unwrap_or(status);
        let session_leader = last && group.job.sid == tgid;
        drop(group);
        t.state = match (last, t.tid == t.tgid) {
            (true, true) => State::Zombie(final_status),
            (false, true) => State::Exited,
            (_, false) => State::Dead,
        };
        // The stop the others wait in may have waited for this thread only.
        if !last {
            signal::participate_group_stop(&mut table, tgid);
        }
        let reaper = if last {
            if let Some(leader) = table.get_mut(&tgid) {
                leader.state = State::Zombie(final_status);
            }
            // Linux `exit_notify`: the children go to their new reaper, then the parent hears.
            let reaper = find_new_reaper(&table, tgid, parent);
            let orphans = forget_original_parent(&mut table, tgid, reaper);
            for child in orphans {
                orphan::kill_orphaned_pgrp(&mut table, child, Some(tgid));
            }
            orphan::kill_orphaned_pgrp(&mut table, tgid, None);
            let (code, si_status) = match final_status & 0x7f {
                0 => (signal::CLD_EXITED, (final_status >> 8) & 0xff),
                sig if final_status & 0x80 != 0 => (signal::CLD_DUMPED, sig),
                sig => (signal::CLD_KILLED, sig),
            };
            // Read before the notification: it may reset a SA_RESETHAND handler.
            let autoreap = signal::parent_autoreaps(&table, parent, tgid);
            signal::notify_parent_locked(&mut table, parent, tgid, code, si_status);
            if autoreap {
                // No zombie (Linux `release_task` right away): a leader still on its stack is
                // freed by the scheduler once off it; one that exited earlier goes now.
                if tid == tgid {
                    if let Some(leader) = table.get_mut(&tgid) {
                        leader.state = State::Dead;
                    }
                } else {
                    table.remove(&tgid);
                }
            }
            reaper
        } else {
            1
        };
        (aspace, fds, last, parent, tgid, reaper, session_leader)
    };
    // Linux `do_exit`: a session leader's end releases its controlling terminal.
    if session_leader {
        crate::fs::tty::disassociate_ctty(tgid);
    }
    drop(fds);
    // CR3 must not hold the root we may tear down.
    drop(vm::switch_to(None));
    if let Some(aspace) = aspace {
        let in_use = aspace_in_use(&aspace);
        let torn_down = release_aspace_ref(aspace);
        // A `/proc/pid/mem` reader may hold it across its let-go (`AspaceRef`): it tears down.
        if last && !torn_down && !in_use && unowned_refs_possible() {
            warn!("tgid {tgid}: address space still referenced after its last thread; leaking it");
        }
    }
    // Shared mappings' caches the teardown dropped: the zombie is visible now, so no pause.
    evict::run_own(false);
    if last {
        wakeup(wait_channel(parent));
        // Zombies among the orphans are the reaper's to collect now.
        wakeup(wait_channel(reaper));
    } else {
        wakeup(group_channel(tgid));
    }
    sched::schedule();
    unreachable!("an exited thread was scheduled");
}

/// Who adopts the children of group `tgid`, whose parent is `parent`, when it ends (Linux
/// `find_new_reaper`): the nearest ancestor that set `PR_SET_CHILD_SUBREAPER` and still has a
/// live thread, else init. (Linux first tries another thread of the group; here children belong
/// to the group, so only the group's end orphans them.) The walk is bounded by the table size,
/// so a corrupted parent chain cannot loop.
fn find_new_reaper(table: &BTreeMap<Pid, Box<Task>>, tgid: Pid, parent: Pid) -> Pid {
    let mut ancestor = parent;
    for _ in 0..table.len() {
        if ancestor <= 1 || ancestor == tgid {
            break;
        }
        let Some(leader) = table.get(&ancestor) else {
            break;
        };
        let g = leader.group.lock();
        if g.child_subreaper && g.live > 0 {
            return ancestor;
        }
        ancestor = g.parent;
    }
    1
}

/// Hands every child process of group `tgid` to `reaper` (Linux `forget_original_parent`);
/// zombies among them are then the reaper's to wait for, live ones report their end to it.
/// Returns the children moved.
fn forget_original_parent(
    table: &mut BTreeMap<Pid, Box<Task>>,
    tgid: Pid,
    reaper: Pid,
) -> alloc::vec::Vec<Pid> {
    let mut moved = alloc::vec::Vec::new();
    for child in table
        .values_mut()
        .filter(|c| c.is_leader() && c.tgid != tgid)
    {
        let mut g = child.group.lock();
        if g.parent == tgid {
            g.parent = reaper;
            moved.push(child.tgid);
        }
    }
    moved
}

/// Pages an exiting address space may free between two pauses (munmap's batch, 8 MiB).
const EXIT_ZAP_BATCH: u64 = 2048;
/// Time an exiting task frees pages for before it lets others run.
const EXIT_PAUSE_US: u64 = 2000;

/// Frees the pages of the last thread's address space in munmap's batches, pausing
/// (`cond_resched`) between them, before the one-pass teardown (Linux's `exit_mmap` ->
/// `unmap_vmas` calls `cond_resched` in `zap_pte_range`): the exit of a process with gigabytes
/// populated held the CPU for its whole length. Only when nothing else uses the address space
/// (no other thread, no `CLONE_VM` sharer) and more than one batch is resident; not stopped by
/// the pending fatal signal that may be why we exit. `execve` calls it too, past its point of
/// no return, for the old program's space.
fn zap_exiting_aspace() {
    let tid = current_tid();
    let Some(aspace) = with_current(|t| t.aspace.clone()) else {
        return;
    };
    let shared = TABLE.lock().values().any(|t| {
        t.tid != tid
            && t.aspace
                .as_ref()
                .is_some_and(|other| Arc::ptr_eq(other, &aspace))
    });
    if shared {
        return;
    }
    let mm = memory::mm();
    let range = {
        let a = aspace.write();
        let mapped: u64 = a
            .vmas()
            .map(|v| v.end().as_u64() - v.start().as_u64())
            .sum();
        let first = a.vmas().next().map(|v| v.start());
        let last = a.vmas().last().map(|v| v.end());
        match (first, last) {
            // Resident pages decide, not the span: the batches walk the span, slower than the
            // teardown's pass for sparse or zero-page mappings (a killed 64 GiB populate).
            (Some(first), Some(last))
                if mapped > EXIT_ZAP_BATCH * 4096 && a.footprint(mm).rss_pages > EXIT_ZAP_BATCH =>
            {
                (first, last)
            }
            _ => return,
        }
    };
    let len = (range.1.as_u64() - range.0.as_u64()) as usize;
    let Ok(mut cur) = aspace.write().munmap_start(mm, range.0, len) else {
        return;
    };
    let mut since = time::micros_since_boot();
    loop {
        // The lock is released before the pause (a guard in a `while let` scrutinee would
        // live through the body, and switching back here takes the lock).
        let step = aspace.write().munmap_step(mm, &mut cur, EXIT_ZAP_BATCH);
        if !matches!(step, Ok(false)) {
            return;
        }
        // Linux pauses when the tick asks (`need_resched`): a batch over a sparse range is
        // quick, and a switch per batch made a killed 64 GiB populate take 21 s to exit.
        if time::micros_since_boot().saturating_sub(since) >= EXIT_PAUSE_US {
            sched::cond_resched();
            since = time::micros_since_boot();
        }
    }
}

/// Drops one reference to an address space; the last one (not loaded in CR3) tears it down,
/// returning every frame. Returns whether this was the last.
pub fn release_aspace_ref(aspace: vm::SharedAddressSpace) -> bool {
    match Arc::try_unwrap(aspace) {
        Ok(lock) => {
            lock.into_inner().exit(memory::mm());
            true
        }
        Err(_) => false,
    }
}

/// A reference to another process's address space held across a point where the big lock
/// is let go (`/proc/pid/mem` through `gup_hold::ReschedHold`): the owner may exit or exec
/// meanwhile, its release then finds this reference alive and leaves the teardown to it, so
/// dropping it is [`release_aspace_ref`], never a bare `Arc` drop (which would lose every frame:
/// `AddressSpace` has no `Drop`, its teardown needs the frame allocator).
pub struct AspaceRef(Option<vm::SharedAddressSpace>);

/// Live [`AspaceRef`]s: while any exists, a release that is not the last is legitimate.
static ASPACE_REFS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

impl AspaceRef {
    pub fn new(aspace: vm::SharedAddressSpace) -> Self {
        ASPACE_REFS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        AspaceRef(Some(aspace))
    }
}

/// Whether a reference that is neither a task's nor an [`AspaceRef`]'s may exist, i.e. a
/// release that did not tear down is a leak.
fn unowned_refs_possible() -> bool {
    ASPACE_REFS.load(core::sync::atomic::Ordering::Relaxed) == 0
}

impl core::ops::Deref for AspaceRef {
    type Target = vm::SharedAddressSpace;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("taken only in drop")
    }
}

impl Drop for AspaceRef {
    fn drop(&mut self) {
        if let Some(aspace) = self.0.take() {
            release_aspace_ref(aspace);
            ASPACE_REFS.fetch_sub(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Tears down an address space no one else uses (not loaded in CR3).
pub fn release_aspace(aspace: vm::SharedAddressSpace) {
    let in_use = aspace_in_use(&aspace);
    if !release_aspace_ref(aspace) && !in_use && unowned_refs_possible() {
        warn!("address space still shared at release; leaking it");
    }
}

/// Whether a task in the table still has `aspace` (a `CLONE_VM` sharer such as a vfork
/// parent, who then drops the last reference itself).
pub fn aspace_in_use(aspace: &vm::SharedAddressSpace) -> bool {
    TABLE
        .lock()
        .values()
        .any(|t| t.aspace.as_ref().is_some_and(|a| Arc::ptr_eq(a, aspace)))
}

/// Sleeps on `channel` until woken, the tick `until`, or a kill (`EINTR`); signals that are
/// not fatal do not end it (Linux `TASK_KILLABLE`).
pub fn sleep_killable_until(channel: usize, until: u64) -> Result<(), Errno> {
    block(channel, Some(until), false)
}
