//! The scheduler: per-CPU run queues (`runqueue`) and each CPU's idle loop.
//!
//! Model: each CPU's boot stack runs its idle loop; every switch goes task -> idle -> next task
//! (two `cowlab_switch`es, simple to reason about). The schedulable entities are tasks
//! (threads): the idle loop takes the task at the front of its CPU's run queue (or pulls one
//! from a busier CPU), loads its kernel stack (TSS rsp0 and the syscall stack), address space,
//! FS base and FPU state, and switches to it; with nothing runnable it halts with interrupts
//! enabled until an interrupt makes something runnable. Back from a task that exited as a
//! non-leader thread (`Dead`), it frees the task: only now is its kernel stack out of use.
//! Preemption: a timer tick taken in ring 3 makes the task yield (to the back of a queue).
//! A task made runnable goes through [`make_runnable`] (wake-ups, kills, stops) or [`enqueue`]
//! (a new task), which queue it. The system ends when `init` (pid 1) is a zombie or `reboot`
//! asked for it: every other process is then torn down, the free-frame count is printed
//! (`cowlab: frames free=<n> boot=<n>`, checked by xtask) and QEMU exits with init's status.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use x86_64::registers::model_specific::FsBase;
use x86_64::VirtAddr;

use super::runqueue;
use super::switch::cowlab_switch;
use super::{Pid, State, Task, TABLE};
use crate::percpu::MAX_CPUS;
use crate::{memory, percpu, qemu, vm};

/// Each CPU's idle context: the saved RSP of its idle loop while a task runs there.
struct IdleRsp(UnsafeCell<u64>);
// SAFETY: entry `i` is used only by CPU `i`: written by `cowlab_switch` in its idle loop and
// read by `schedule` on the same CPU (a task switches back to the idle loop of the CPU it runs
// on), both with interrupts disabled and the big kernel lock held.
unsafe impl Sync for IdleRsp {}
static IDLE_RSP: [IdleRsp; MAX_CPUS] = [const { IdleRsp(UnsafeCell::new(0)) }; MAX_CPUS];

/// `reboot`'s status, once requested (`i32::MIN`: not requested).
static SHUTDOWN: AtomicI32 = AtomicI32::new(i32::MIN);
/// CPUs halted in their idle loop with nothing to run (bit per CPU), for [`kick_idle`].
static IDLE_CPUS: AtomicU64 = AtomicU64::new(0);
/// Wake-ups of idle application processors that went back to `hlt` without the big lock
/// (nothing to run or pull), for the power-off line.
static IDLE_WAKES_UNLOCKED: AtomicU64 = AtomicU64::new(0);
/// Whether the boot CPU's scheduler runs (the application processors wait for it).
static STARTED: AtomicBool = AtomicBool::new(false);

/// Records a power-off request with `status` (reboot); the idle loop acts on it.
pub fn request_shutdown(status: i32) {
    SHUTDOWN.store(status, Ordering::SeqCst);
}

/// Gives the CPU back to the idle loop; returns when this process is scheduled again. The
/// caller has set its state (runnable to yield, blocked to sleep, zombie to die).
///
/// The big kernel lock stays held across the switch: the idle loop of this CPU continues with
/// it, so no other CPU can pick this task until it is off its kernel stack.
pub fn schedule() {
    // First and last: the switch is no part of the task's coverage (see `kcov::switch_out`).
    #[cfg(feature = "kcov")]
    let coverage = crate::kcov::switch_out();
    cowlab_sync::might_sleep("schedule");
    super::apply_deferred_wakeups();
    let tid = super::current_tid();
    let ctx: *mut u64 = {
        let mut table = TABLE.lock();
        let p = table.get_mut(&tid).expect("schedule from a task");
        // Its ticks taken while another CPU held the big lock, before it leaves this CPU.
        super::cputime::settle_owed(p);
        &mut p.ctx_rsp
    };
    // SAFETY: `ctx` points into the task's boxed entry, which stays in the table while it runs
    // (reaping, the idle loop and de_thread remove only tasks that are not running); the
    // idle context's saved RSP is valid since this CPU's idle loop switched to us.
    unsafe { cowlab_switch(ctx, *IDLE_RSP[percpu::cpu_id()].0.get()) };
    #[cfg(feature = "kcov")]
    crate::kcov::switch_in(coverage);
}

/// Preemption: the current task goes to the back of a run queue (its own CPU's unless that
/// one is busier than an idle CPU it may use, or no longer in its mask).
pub fn yield_now() {
    let cpu = percpu::cpu_id();
    super::with_current(|p| {
        p.state = State::Runnable;
        runqueue::enqueue(p, crate::smp::active_mask(), Some(cpu));
    });
    schedule();
}

/// Makes the blocked `task` runnable and queues it (Linux `try_to_wake_up`). Table locked.
pub fn make_runnable(task: &mut Task) {
    task.state = State::Runnable;
    runqueue::enqueue(task, crate::smp::active_mask(), None);
}

/// Queues a new task (fork, clone, the first process, a kernel thread) that is `Runnable`:
/// behind its creator when one runs on this CPU (`runqueue::enqueue_new`).
pub fn enqueue(task: &mut Task) {
    debug_assert_eq!(task.state, State::Runnable);
    runqueue::enqueue_new(task, crate::smp::active_mask());
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

/// Wakes the halted CPUs that were given a task by another CPU with a reschedule IPI (Linux
/// `wake_up_idle_cpu`). Called with the big lock held after tasks were queued; a CPU sets its
/// bit in [`IDLE_CPUS`] under the lock before it releases it to halt, so the waker either sees
/// the bit or the CPU sees its queue when it looks again.
#[inline]
pub fn kick_idle() {
    let kicks = runqueue::take_kicks();
    if kicks != 0 {
        kick_idle_slow(kicks);
    }
}

#[cold]
#[inline(never)]
fn kick_idle_slow(kicks: u64) {
    let idle = kicks & IDLE_CPUS.load(Ordering::Relaxed) & !(1u64 << percpu::cpu_id());
    if idle != 0 {
        crate::smp::send_resched(idle);
    }
}

/// Makes CPU `cpu`, which runs a task that may no longer run there, switch away at once: its
/// [`runqueue::NEED_RESCHED`] bit and the reschedule IPI (Linux `resched_curr`), acted on by
/// [`resched_ipi`] when the IPI arrives in ring 3, else at that task's next entry or tick.
pub fn resched_cpu(cpu: usize) {
    runqueue::NEED_RESCHED.fetch_or(1 << cpu, Ordering::Relaxed);
    if cpu != percpu::cpu_id() {
        crate::smp::send_resched(1 << cpu);
    }
}

/// The reschedule IPI taken from ring 3: the running task gives the CPU up if
/// [`resched_cpu`] asked for it (an affinity change), else it only ended a `hlt`.
pub fn resched_ipi() {
    let me = 1u64 << percpu::cpu_id();
    if runqueue::NEED_RESCHED.load(Ordering::Relaxed) & me != 0 {
        runqueue::NEED_RESCHED.fetch_and(!me, Ordering::Relaxed);
        yield_now();
    }
}

/// Makes every other CPU that runs a task enter the kernel soon (Linux `kick_process`): a
/// signal or a kill for a thread running in ring 3 there is then acted on at once rather than
/// at that CPU's next tick. Nothing to do while the application processors are parked.
pub fn kick_busy() {
    let active = crate::smp::active_mask();
    if active != 1 {
        let busy = active & !IDLE_CPUS.load(Ordering::Relaxed) & !(1u64 << percpu::cpu_id());
        if busy != 0 {
            crate::smp::send_resched(busy);
        }
    }
}

/// The next task for this CPU from the run queues (`runqueue::pick`), marked `Running` here,
/// and what the switch needs of it. A runnable task on no queue (a lost enqueue) is reported and
/// queued when this CPU finds nothing.
fn pick(cpu: usize) -> Option<Picked> {
    super::apply_deferred_wakeups();
    let active = crate::smp::active_mask();
    let mut table = TABLE.lock();
    let halted = IDLE_CPUS.load(Ordering::Relaxed);
    let pid = match runqueue::pick_or_take(&mut table, cpu, active, halted) {
        Some(pid) => pid,
        None => {
            runqueue::repair_lost(&mut table, active);
            runqueue::pick(&mut table, cpu, active)?
        }
    };
    let p = table.get_mut(&pid).expect("picked from the table");
    p.state = State::Running;
    p.sched.cpu = cpu as u8;
    super::set_current_task(Some(p));
    let fpu: *mut super::switch::FpuState = &mut *p.fpu;
    Some(Picked {
        pid,
        ctx: p.ctx_rsp,
        top: p.kstack.top(),
        aspace: p.aspace.clone(),
        fs_base: p.fs_base,
        fpu,
        tgid: p.tgid,
    })
}

/// What the idle loop needs to switch to a picked task.
struct Picked {
    pid: Pid,
    ctx: u64,
    top: u64,
    aspace: Option<vm::SharedAddressSpace>,
    fs_base: u64,
    fpu: *mut super::switch::FpuState,
    tgid: Pid,
}

/// Runs processes until the system shuts down. Called once, on the boot stack.
pub fn run() -> ! {
    crate::watchdog::soft::arm(true);
    STARTED.store(true, Ordering::Release);
    idle_loop(true)
}

/// An application processor's scheduler (with `smp_sched=1`): waits, halted, for the boot
/// CPU's scheduler to start, then runs tasks like it. Never returns.
pub fn run_ap() -> ! {
    while !STARTED.load(Ordering::Acquire) {
        // Idle, woken by its own tick: not stuck (the watchdog watches each CPU).
        crate::watchdog::soft::touch();
        x86_64::instructions::interrupts::enable_and_hlt();
    }
    x86_64::instructions::interrupts::disable();
    crate::bkl::lock();
    idle_loop(false)
}

/// The per-CPU idle loop: holds the big lock except while halted.
fn idle_loop(boot: bool) -> ! {
    let cpu = percpu::cpu_id();
    loop {
        x86_64::instructions::interrupts::disable();
        crate::watchdog::soft::touch();
        crate::tick::run_deferred();
        if boot {
            if let Some(status) = shutdown_status() {
                shutdown(status);
            }
        }
        // Handing the lock over lets another CPU run the task that just left this one, up to
        // its exit: the space still loaded here would then be a reference past its last
        // thread (leaked: `tgid 1: address space still referenced`, 2 of 20 boots on 2 CPUs
        // once woken tasks went to the idle boot CPU). Unloaded first, as before a halt.
        crate::bkl::let_waiters_in(|| drop(vm::switch_to(None)));
        let picked = pick(cpu);
        // After the pick, which may have taken the task queued for a halted CPU: that CPU
        // needs no reschedule IPI any more (`runqueue::take_kicks` leaves it out).
        kick_idle();
        let Some(picked) = picked else {
            // Nothing to run: wait for an interrupt (a tick wakes sleepers, a reschedule IPI
            // new work). With several CPUs scheduling, an idle CPU keeps no address space
            // loaded: its reference would outlive the last thread's release (a leak).
            if crate::smp::active_mask() != 1 {
                drop(vm::switch_to(None));
            }
            IDLE_CPUS.fetch_or(1 << cpu, Ordering::Relaxed);
            crate::bkl::unlock();
            // `sti; hlt`: an IPI sent after the unlock is taken by the `hlt`, not lost.
            x86_64::instructions::interrupts::enable_and_hlt();
            x86_64::instructions::interrupts::disable();
            // An application processor woken with nothing to run or pull (its own tick, an
            // IPI for someone else's work) halts again without the lock
            // (`runqueue::may_have_work`). The boot CPU also powers off and, when its tick
            // left the tick's work to the holder (`tick.rs`), runs that: it takes the lock
            // after a wake-up if it may have work or the lock is free, else halts again too
            // (waiting for a system call on another CPU only to find nothing to do was a
            // hand-off by IPI each time, 100 a second).
            while !runqueue::may_have_work(cpu, crate::smp::active_mask())
                && !(boot && crate::bkl::try_lock())
            {
                crate::watchdog::soft::touch();
                IDLE_WAKES_UNLOCKED.fetch_add(1, Ordering::Relaxed);
                x86_64::instructions::interrupts::enable_and_hlt();
                x86_64::instructions::interrupts::disable();
            }
            if !crate::bkl::held() {
                crate::bkl::lock();
            }
            IDLE_CPUS.fetch_and(!(1 << cpu), Ordering::Relaxed);
            continue;
        };
        let Picked {
            pid,
            ctx,
            top,
            aspace,
            fs_base,
            fpu,
            tgid,
        } = picked;
        runqueue::set_busy(cpu, true);
        // A request to leave was for the task that ran here before.
        if runqueue::NEED_RESCHED.load(Ordering::Relaxed) >> cpu & 1 != 0 {
            runqueue::NEED_RESCHED.fetch_and(!(1 << cpu), Ordering::Relaxed);
        }
        super::kstat::context_switch();
        super::set_current(pid, tgid);
        percpu::set_kernel_stack(top);
        drop(vm::switch_to(aspace));
        FsBase::write(VirtAddr::new_truncate(fs_base));
        // SAFETY: `fpu` points into the task's boxed state, alive while it is in the table;
        // the task cannot be removed while it runs or before we are back here (below).
        unsafe {
            (*fpu).restore();
            cowlab_switch(IDLE_RSP[cpu].0.get(), ctx);
            (*fpu).save();
        }
        // The task may have changed its tid while it ran (execve in a non-leader thread takes
        // the leader's): the current tid says which entry it is now.
        let ran = super::current_tid();
        runqueue::set_busy(cpu, false);
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
    super::kthread::stop_all(&mut table);
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
    super::evict::run_all();
    // Every descriptor is closed: the root is unmounted (orphans freed, everything written back).
    crate::fs::ext2_mount::unmount_root();
    println!(
        "cowlab: frames free={} boot={}",
        memory::frames().free_frames(),
        memory::boot_free_frames()
    );
    if crate::smp::active_mask() != 1 {
        info!(
            "big kernel lock: {} contended acquisitions; {} tasks pulled by another CPU; {} idle wake-ups without the lock; {} IPIs handled, {} shootdown requests sent",
            crate::bkl::contended(),
            runqueue::migrations(),
            IDLE_WAKES_UNLOCKED.load(Ordering::Relaxed),
            (0..crate::percpu::MAX_CPUS).map(crate::smp::ipis_handled).sum::<u64>(),
            crate::smp::shootdown::sent()
        );
        info!(
            "big kernel lock: {} page faults resolved without it",
            crate::fault_unlocked::resolved()
        );
        info!("big kernel lock waits: {}", crate::bklstat::summary());
    }
    info!("init finished with status {status}: powering off");
    // QEMU's exit code keeps only 7 bits of what isa-debug-exit gets: this line carries the
    // whole status (128 + signal for a killed program) to xtask (docs/architecture.md).
    println!("cowlab: exit status {status}");
    qemu::exit_with(status as u32)
}
