//! The round-robin scheduler and the idle loop.
//!
//! Model: the boot stack runs the idle loop; every switch goes task -> idle -> next task (two
//! `cowlab_switch`es, simple to reason about). The schedulable entities are tasks (threads):
//! the idle loop picks the runnable task after the last one that ran in tid order (round
//! robin), loads its kernel stack (TSS rsp0 and the syscall stack), address space, FS base and
//! FPU state, and switches to it; with nothing runnable it halts with interrupts enabled until an
//! interrupt makes something runnable. Back from a task that exited as a non-leader thread
//! (`Dead`), it frees the task: only now is its kernel stack out of use.
//! Preemption: a timer tick taken in ring 3 makes the task yield. The system ends when
//! `init` (pid 1) is a zombie or `reboot` asked for it: every other process is then torn down,
//! the free-frame count is printed (`cowlab: frames free=<n> boot=<n>`, checked by xtask) and
//! QEMU exits with init's status.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use x86_64::registers::model_specific::FsBase;
use x86_64::VirtAddr;

use super::switch::cowlab_switch;
use super::{Pid, State, TABLE};
use crate::{memory, percpu, qemu, vm};

struct IdleRsp(UnsafeCell<u64>);
// SAFETY: one CPU; written only by `cowlab_switch` with interrupts disabled.
unsafe impl Sync for IdleRsp {}
static IDLE_RSP: IdleRsp = IdleRsp(UnsafeCell::new(0));

static LAST: AtomicU32 = AtomicU32::new(0);
/// `reboot`'s status, once requested (`i32::MIN`: not requested).
static SHUTDOWN: AtomicI32 = AtomicI32::new(i32::MIN);

/// Records a power-off request with `status` (reboot); the idle loop acts on it.
pub fn request_shutdown(status: i32) {
    SHUTDOWN.store(status, Ordering::SeqCst);
}

/// Gives the CPU back to the idle loop; returns when this process is scheduled again. The
/// caller has set its state (runnable to yield, blocked to sleep, zombie to die).
pub fn schedule() {
    super::apply_deferred_wakeups();
    let tid = super::current_tid();
    let ctx: *mut u64 = {
        let mut table = TABLE.lock();
        let p = table.get_mut(&tid).expect("schedule from a task");
        &mut p.ctx_rsp
    };
    // SAFETY: `ctx` points into the task's boxed entry, which stays in the table while it runs
    // (reaping, the idle loop and de_thread remove only tasks that are not running); the
    // idle context's saved RSP is valid since the idle loop switched to us.
    unsafe { cowlab_switch(ctx, *IDLE_RSP.0.get()) };
}

/// Preemption: the current process goes to the back of the queue.
pub fn yield_now() {
    super::with_current(|p| p.state = State::Runnable);
    schedule();
}

/// Linux `cond_resched`, for long kernel loops a user can drive: the timer tick that arrived
/// meanwhile is taken (interrupts are off in the kernel, so without it time stood still for
/// sleepers: a parent's 100 ms sleep lasted as long as its child's 2 GiB fallocate), then the
/// other tasks run. Callers hold no lock here; `proc::on_tick` only try-locks the table.
pub fn cond_resched() {
    use x86_64::instructions::{interrupts, nop};
    if !interrupts::are_enabled() {
        // A pending interrupt is taken after the instruction that follows `sti`.
        interrupts::enable();
        nop();
        interrupts::disable();
    }
    yield_now();
}

/// The next runnable task after `LAST` in tid order.
fn pick() -> Option<Pid> {
    super::apply_deferred_wakeups();
    let table = TABLE.lock();
    let last = LAST.load(Ordering::Relaxed);
    let runnable = |p: &&alloc::boxed::Box<super::Task>| p.state == State::Runnable;
    table
        .range(last + 1..)
        .map(|(_, p)| p)
        .find(runnable)
        .or_else(|| table.values().find(runnable))
        .map(|p| p.tid)
}

/// Runs processes until the system shuts down. Called once, on the boot stack.
pub fn run() -> ! {
    crate::watchdog::soft::arm(true);
    loop {
        x86_64::instructions::interrupts::disable();
        crate::watchdog::soft::touch();
        if let Some(status) = shutdown_status() {
            shutdown(status);
        }
        let Some(pid) = pick() else {
            // Nothing to run: wait for an interrupt (a tick wakes sleepers).
            x86_64::instructions::interrupts::enable_and_hlt();
            continue;
        };
        let (ctx, top, aspace, fs_base, fpu, tgid) = {
            let mut table = TABLE.lock();
            let p = table.get_mut(&pid).expect("picked from the table");
            p.state = State::Running;
            super::set_current_task(Some(p));
            let fpu: *mut super::switch::FpuState = &mut *p.fpu;
            (
                p.ctx_rsp,
                p.kstack.top(),
                p.aspace.clone(),
                p.fs_base,
                fpu,
                p.tgid,
            )
        };
        LAST.store(pid, Ordering::Relaxed);
        super::kstat::context_switch();
        super::set_current(pid, tgid);
        percpu::set_kernel_stack(top);
        drop(vm::switch_to(aspace));
        FsBase::write(VirtAddr::new_truncate(fs_base));
        // SAFETY: `fpu` points into the task's boxed state, alive while it is in the table;
        // the task cannot be removed while it runs or before we are back here (below).
        unsafe {
            (*fpu).restore();
            cowlab_switch(IDLE_RSP.0.get(), ctx);
            (*fpu).save();
        }
        // The task may have changed its tid while it ran (execve in a non-leader thread takes
        // the leader's): the current tid says which entry it is now.
        let ran = super::current_tid();
        super::set_current(0, 0);
        super::set_current_task(None);
        let mut table = TABLE.lock();
        if table.get(&ran).is_some_and(|t| t.state == State::Dead) {
            // Off its kernel stack at last: free it (stack, FPU area, remaining fields).
            table.remove(&ran);
        }
    }
}

/// The status to power off with, once init is a zombie or reboot was called and every other
/// process has exited.
fn shutdown_status() -> Option<i32> {
    let table = TABLE.lock();
    let requested = SHUTDOWN.load(Ordering::SeqCst);
    let init_status = match table.get(&1).map(|p| p.state) {
        Some(State::Zombie(status)) => Some(status),
        None => Some(0),
        _ => None,
    };
    if requested == i32::MIN && init_status.is_none() {
        return None;
    }
    // Wait for the others (killed by reboot/init's exit) to finish dying.
    let others_done = table
        .values()
        .all(|p| p.tid == 1 || matches!(p.state, State::Zombie(_) | State::Dead));
    if !others_done {
        drop(table);
        kill_all_but_init();
        return None;
    }
    Some(if requested != i32::MIN {
        requested
    } else {
        let status = init_status.unwrap_or(0);
        // Exit code of a normal exit, 128 + signal for a killed init (as a shell reports it).
        if status & 0x7f == 0 {
            (status >> 8) & 0xff
        } else {
            128 + (status & 0x7f)
        }
    })
}

fn kill_all_but_init() {
    let mut table = TABLE.lock();
    // init's own threads are not touched: init's end (exit_group, reboot) already decided
    // its status and told them to exit.
    let groups: alloc::vec::Vec<Pid> = table
        .values()
        .filter(|t| t.is_leader() && t.tgid != 1)
        .map(|t| t.tgid)
        .collect();
    for tgid in groups {
        super::kill_group_locked(&mut table, tgid, i32::from(super::SIGKILL));
    }
}

fn shutdown(status: i32) -> ! {
    drop(vm::switch_to(None));
    let all: alloc::vec::Vec<_> = core::mem::take(&mut *TABLE.lock()).into_values().collect();
    for mut p in all {
        drop(p.fds.take_all());
        if let Some(aspace) = p.aspace.take() {
            // Threads share it: the last reference tears it down.
            super::release_aspace_ref(aspace);
        }
    }
    // Every descriptor is closed: the root is unmounted (orphans freed, everything written back).
    crate::fs::ext2_mount::unmount_root();
    println!(
        "cowlab: frames free={} boot={}",
        memory::frames().free_frames(),
        memory::boot_free_frames()
    );
    info!("init finished with status {status}: powering off");
    // QEMU's exit code keeps only 7 bits of what isa-debug-exit gets: this line carries the
    // whole status (128 + signal for a killed program) to xtask (docs/architecture.md).
    println!("cowlab: exit status {status}");
    qemu::exit_with(status as u32)
}
