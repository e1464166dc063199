//! Kernel threads (Linux `kthread_run`): tasks that run kernel code only, for background work
//! that must be able to sleep (the page-cache flusher, `fs::writeback`).
//!
//! Model: a kernel thread is a [`Task`] in the table like any other, so the scheduler runs it
//! and it sleeps and wakes with the usual calls, but it has no address space, no descriptors,
//! and thread-group id 0. Being no group's leader keeps it out of everything that walks
//! processes (`kill(-1)`, `/proc`, the OOM killer, wait, power-off's kill of the other
//! processes); group 0 takes no signals (`signal::send`), and `current_pid() == 0` makes it
//! kernel context for credentials and paths. Its first switch-in "returns" into its entry
//! function (no trap frame: it never enters ring 3).
//!
//! Stopping: at power-off the scheduler calls [`stop_all`] before it waits for every task to
//! end; a thread checks [`should_stop`] after each sleep and ends with [`exit`], so nothing it
//! was doing (a writeback holding the filesystem lock) is cut off by the power-off.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use super::files::SharedFdTable;
use super::switch::{FpuState, KernelStack};
use super::{Group, Pid, State, Task, TABLE};

/// Power-off asked every kernel thread to end.
static STOP: AtomicBool = AtomicBool::new(false);

/// The channel a kernel thread sleeps on between rounds of work; [`wake`] and [`stop_all`]
/// wake it.
pub fn channel(tid: Pid) -> usize {
    0x5_0000_0000 + tid as usize
}

/// Starts a kernel thread named `name` running `entry`; returns its tid.
pub fn spawn(name: &str, entry: extern "C" fn() -> !) -> Pid {
    let tid = super::alloc_pid();
    let kstack = KernelStack::new();
    let ctx_rsp = first_switch_in(&kstack, entry);
    let task = Task {
        tid,
        tgid: 0,
        name: String::from(name),
        state: State::Runnable,
        aspace: None,
        kstack,
        ctx_rsp,
        fpu: FpuState::initial(),
        fds: SharedFdTable::default(),
        fs_base: 0,
        killed: false,
        sigmask: u64::MAX,
        sig: Default::default(),
        clear_child_tid: 0,
        cpu: Default::default(),
        group: Group::new(
            0,
            Box::new([super::signal::SigAction::default(); 65]),
            super::rlimit::Rlimits::linux_defaults(),
            None,
        ),
        cpus_allowed: u64::MAX,
        sched: Default::default(),
    };
    {
        let mut table = TABLE.lock();
        table.insert(tid, Box::new(task));
        if let Some(task) = table.get_mut(&tid) {
            super::sched::enqueue(task);
        }
    }
    tid
}

/// Lays out `stack` so that `cowlab_switch` to the returned RSP pops six zero callee-saved
/// registers and `ret`s into `entry`, with the stack aligned as after a `call` (RSP = 8 mod 16
/// at entry; the word above is a zero return address `entry` never uses).
fn first_switch_in(stack: &KernelStack, entry: extern "C" fn() -> !) -> u64 {
    let ctx = stack.top() - 8 * 8;
    let mut words = [0u64; 8];
    words[6] = entry as usize as u64;
    write_words(ctx, &words);
    ctx
}

/// Writes `words` at `at`, the lowest 64 bytes below the top of a kernel stack nobody runs on
/// yet.
#[allow(unsafe_code)]
fn write_words(at: u64, words: &[u64; 8]) {
    // SAFETY: `at` is `top - 64` of a freshly allocated `KernelStack` (32 KiB, 16-aligned top)
    // that no task runs on and nothing else references yet, so the 64 bytes are in bounds,
    // 8-aligned and ours to write.
    unsafe { (at as *mut [u64; 8]).write(*words) };
}

/// Wakes kernel thread `tid` from its sleep between rounds.
pub fn wake(tid: Pid) {
    super::wakeup(channel(tid));
}

/// Whether the calling kernel thread must end (power-off).
pub fn should_stop() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ends the calling kernel thread: the idle loop frees it once it has switched away.
pub fn exit() -> ! {
    super::with_current(|t| t.state = State::Dead);
    super::sched::schedule();
    unreachable!("a dead kernel thread was scheduled again");
}

/// Power-off: asks every kernel thread to end and wakes them (called by the scheduler with
/// the task table locked, before it waits for the tasks to end).
pub fn stop_all(table: &mut BTreeMap<Pid, Box<Task>>) {
    STOP.store(true, Ordering::SeqCst);
    let tids: alloc::vec::Vec<Pid> = table
        .values()
        .filter(|t| t.tgid == 0)
        .map(|t| t.tid)
        .collect();
    for tid in tids {
        super::wakeup_locked(table, channel(tid));
    }
}
