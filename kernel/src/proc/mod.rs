//! Processes: the process table, sleeping and waking, exit and reaping, signals' default actions.
//!
//! Model (one CPU, a small Unix): each process has a pid, a parent, an address space (shared
//! `cowlab_mm::AddressSpace`), a kernel stack, a descriptor table and a state: runnable, running,
//! blocked on a wait channel (a number: a pipe's address, a parent waiting for children, the
//! timer), or a zombie holding its wait status until the parent reaps it with `wait4`. The
//! kernel runs with interrupts disabled from every entry to the return to ring 3 (the only
//! preemption point is a timer interrupt taken in ring 3), so checking a condition and going to
//! sleep cannot race with its wake-up. Invariants: the table lock is never held across a context
//! switch or while touching user memory; a zombie owns no address space and no descriptors (its
//! frames are back in the allocator before its parent can see it exit); a process is removed
//! from the table (and its kernel stack freed) only by reaping, never while it runs.

pub mod exec;
pub mod fork;
pub mod sched;
pub mod signal;
pub mod switch;
pub mod wait;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use spin::Mutex;

use crate::fs::FdTable;
use crate::idt::TrapFrame;
use crate::syscall::Errno;
use crate::{memory, time, vm};
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
    /// Exited; the wait status (Linux encoding) for the parent.
    Zombie(i32),
}

pub struct Process {
    pub pid: Pid,
    pub parent: Pid,
    /// The program name (basename of the executed path), for messages.
    pub name: String,
    pub state: State,
    pub aspace: Option<vm::SharedAddressSpace>,
    pub kstack: KernelStack,
    /// The saved kernel stack pointer while not running (see `switch`).
    pub ctx_rsp: u64,
    pub fpu: Box<FpuState>,
    pub fds: FdTable,
    pub fs_base: u64,
    /// A signal whose default action (terminate) is due at the next return to ring 3.
    pub pending_kill: Option<u8>,
    /// `rt_sigaction` handlers, recorded (0 = default, 1 = ignore).
    pub sigactions: [u64; 65],
    pub sigmask: u64,
    /// Minor faults of the reaped children (`RUSAGE_CHILDREN`) and of this process once exited.
    pub child_minflt: u64,
    pub own_minflt: u64,
}

/// All processes by pid.
pub static TABLE: Mutex<BTreeMap<Pid, Box<Process>>> = Mutex::new(BTreeMap::new());
/// The running process (0 while the idle loop runs).
static CURRENT: AtomicU32 = AtomicU32::new(0);
static NEXT_PID: AtomicU32 = AtomicU32::new(1);

/// The channel of a parent waiting for its children.
pub fn wait_channel(pid: Pid) -> usize {
    0x1_0000_0000 + pid as usize
}

pub fn alloc_pid() -> Pid {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

/// The running process's pid (0 in the idle loop or before user mode).
pub fn current_pid() -> Pid {
    CURRENT.load(Ordering::Relaxed)
}

/// Runs `f` on the current process with the table locked. Panics outside a process (the system
/// calls and user traps only call it from one).
pub fn with_current<R>(f: impl FnOnce(&mut Process) -> R) -> R {
    let pid = current_pid();
    let mut table = TABLE.lock();
    let process = table
        .get_mut(&pid)
        .expect("system call or user trap outside a process");
    f(process)
}

/// The current address space (for memory system calls).
pub fn current_aspace() -> vm::SharedAddressSpace {
    with_current(|p| p.aspace.clone()).expect("a running process has an address space")
}

/// Blocks the current process until `wakeup(channel)`; `EINTR` if a fatal signal is pending.
pub fn sleep(channel: usize) -> Result<(), Errno> {
    block(channel, None)
}

/// Blocks the current process for `ticks` timer ticks (or until killed: `EINTR`).
pub fn sleep_ticks(ticks: u64) -> Result<(), Errno> {
    let until = time::ticks() + ticks.max(1);
    while time::ticks() < until {
        block(TIMER_CHANNEL, Some(until))?;
    }
    Ok(())
}

/// Blocks the current process for at least `micros` microseconds of TSC time, waking on each
/// tick to check (or until killed: `EINTR`).
pub fn sleep_micros(micros: u64) -> Result<(), Errno> {
    let deadline = time::micros_since_boot().saturating_add(micros);
    while time::micros_since_boot() < deadline {
        block(TIMER_CHANNEL, Some(time::ticks() + 1))?;
    }
    Ok(())
}

const TIMER_CHANNEL: usize = 1;

fn block(channel: usize, until: Option<u64>) -> Result<(), Errno> {
    let killed = with_current(|p| {
        if p.pending_kill.is_some() {
            return true;
        }
        p.state = State::Blocked { channel, until };
        false
    });
    if killed {
        return Err(Errno::EINTR);
    }
    sched::schedule();
    if with_current(|p| p.pending_kill.is_some()) {
        return Err(Errno::EINTR);
    }
    Ok(())
}

/// Makes every process blocked on `channel` runnable. If the table is locked (by the code
/// this call is nested in, e.g. a pipe end dropped while the table is being changed; there is
/// one CPU), the wake-up is deferred and applied by the scheduler before it picks the next
/// process, so it cannot be lost.
pub fn wakeup(channel: usize) {
    match TABLE.try_lock() {
        Some(mut table) => wake_in(&mut table, channel),
        None => DEFERRED_WAKEUPS.lock().push(channel),
    }
}

fn wake_in(table: &mut BTreeMap<Pid, Box<Process>>, channel: usize) {
    for p in table.values_mut() {
        if matches!(p.state, State::Blocked { channel: c, .. } if c == channel) {
            p.state = State::Runnable;
        }
    }
}

static DEFERRED_WAKEUPS: Mutex<alloc::vec::Vec<usize>> = Mutex::new(alloc::vec::Vec::new());

/// Applies the wake-ups [`wakeup`] had to defer. Called by the scheduler, table unlocked.
pub fn apply_deferred_wakeups() {
    let channels = core::mem::take(&mut *DEFERRED_WAKEUPS.lock());
    if !channels.is_empty() {
        let mut table = TABLE.lock();
        for channel in channels {
            wake_in(&mut table, channel);
        }
    }
}

/// The timer's work for processes: wake the sleepers whose time has come. Called from the
/// timer interrupt; skips a tick if the table is busy (the interrupted code holds it).
pub fn on_tick() {
    let now = time::ticks();
    if let Some(mut table) = TABLE.try_lock() {
        for p in table.values_mut() {
            if matches!(p.state, State::Blocked { until: Some(t), .. } if t <= now) {
                p.state = State::Runnable;
            }
        }
    }
}

/// Last work before a return to ring 3: a pending fatal signal ends the process here.
pub fn on_return_to_user(_frame: &mut TrapFrame) {
    if current_pid() == 0 {
        return;
    }
    let (pending, stack_ok) = with_current(|p| (p.pending_kill, p.kstack.canary_intact()));
    assert!(
        stack_ok,
        "kernel stack overflow in pid {} (canary at the bottom of its 32 KiB stack overwritten)",
        current_pid()
    );
    if let Some(signal) = pending {
        exit_current(i32::from(signal));
    }
}

/// Linux wait status of a normal exit.
pub fn exit_status(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// Ends the current process with wait status `status`: descriptors closed, address space torn
/// down (every frame returned), children handed to init, parent woken. Never returns.
pub fn exit_current(status: i32) -> ! {
    let pid = current_pid();
    let (aspace, fds, parent) = {
        let mut table = TABLE.lock();
        let reparent: alloc::vec::Vec<Pid> = table
            .values()
            .filter(|p| p.parent == pid)
            .map(|p| p.pid)
            .collect();
        for child in reparent {
            if let Some(c) = table.get_mut(&child) {
                c.parent = 1;
            }
        }
        let p = table
            .get_mut(&pid)
            .expect("the current process is in the table");
        let fds = p.fds.take_all();
        if let Some(aspace) = &p.aspace {
            p.own_minflt = aspace.lock().minor_faults();
        }
        (p.aspace.take(), fds, p.parent)
    };
    drop(fds);
    // CR3 must not hold the root we tear down.
    drop(vm::switch_to(None));
    if let Some(aspace) = aspace {
        release_aspace(aspace);
    }
    with_current(|p| p.state = State::Zombie(status));
    wakeup(wait_channel(parent));
    wakeup(wait_channel(1));
    sched::schedule();
    unreachable!("a zombie was scheduled");
}

/// Tears down an address space no one else uses (not loaded in CR3).
pub fn release_aspace(aspace: vm::SharedAddressSpace) {
    match Arc::try_unwrap(aspace) {
        Ok(mutex) => mutex.into_inner().exit(memory::mm()),
        Err(_) => warn!("address space still shared at release; leaking it"),
    }
}
