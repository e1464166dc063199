//! The kernel's lock classes and its hooks into `cowlab-sync`: the lock-order checker's
//! contexts and reports, and how a contended address-space lock waits.
//!
//! Picture: every classed lock (a `cowlab_sync` lock built with one of the classes below, or
//! the big kernel lock, which annotates itself) tells the checker when it is taken and
//! released. In debug builds the checker keeps per context the stack of classes held and a
//! global graph of "B taken while A held"; the first acquisition that closes a cycle is
//! reported here, once per pair of classes, as one console line naming both places, followed
//! by the backtrace of the acquisition that closed it. The kernel carries on (Linux's lockdep
//! also only warns): the report is about an order that can deadlock, not one that did.
//!
//! Contexts are CPUs for the spin locks and the big lock (owned by a CPU, kept by the CPU
//! across a switch), and tasks for the address-space lock (`LockClass::task_held`): a task
//! sleeps holding it and may wake and release it on another CPU. A check looks at both the
//! CPU's and the task's stack. The order of the classes is in docs/locking.md.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_sync::{LockClass, LockReport};

/// The big kernel lock (`bkl.rs`); sleeping: it is held across `schedule`.
pub static BKL: LockClass = LockClass::sleeping("big kernel lock");
/// Every address space's reader/writer semaphore (Linux `mmap_lock`); its holder may sleep,
/// and wake on another CPU: its holds are the task's, not the CPU's.
pub static MMAP_LOCK: LockClass = LockClass::task_held("mmap_lock");
/// The page-table lock inside each address space's `MmapLock` (Linux's per-mm
/// `page_table_lock`): readers' page-table work.
pub static PAGE_TABLE_LOCK: LockClass = LockClass::new("page_table_lock");
/// One CPU's run queue (`proc/runqueue.rs`), a leaf.
pub static RUNQUEUE: LockClass = LockClass::new("run queue");

/// The last report, for the in-kernel test.
static LAST: spin::Mutex<Option<LockReport>> = spin::Mutex::new(None);

/// Inversions and recursions reported so far (for the in-kernel test and `/proc`-style
/// summaries).
static REPORTS: AtomicU32 = AtomicU32::new(0);

/// Installs the hooks. Call once on the boot CPU after `percpu::init` (the context function
/// reads the CPU index) and before another CPU starts.
pub fn init() {
    cowlab_sync::set_context_fn(crate::percpu::cpu_id);
    cowlab_sync::set_task_context_fn(task_context);
    cowlab_sync::set_report_hook(report);
    cowlab_sync::set_wait_hooks(wait, wake);
    cowlab_sync::set_owner_fn(owner);
    cowlab_sync::set_spin_hook(service_cross_cpu_requests);
}

/// The task whose locks these are: the running task's id, 0 outside a task (boot, the idle
/// loop) and in a function another CPU posted here (`smp::call`, run from the IPI or from this
/// CPU's lock spin), which runs for that CPU, not for the task it interrupted (review of
/// session 8: its holds went on the interrupted task's stack, and its write hold looked like
/// that task's own to the task's kernel-mode faults).
fn lock_tid() -> usize {
    if crate::smp::call::running_here() {
        return 0;
    }
    crate::proc::current_tid() as usize
}

/// The checker's task number for the task-held classes (the `mmap_lock`): [`lock_tid`] (0:
/// the hold is the CPU's).
pub(crate) fn task_context() -> usize {
    lock_tid()
}

/// The id an address-space lock records for its write holder (Linux's `rwsem->owner`): the
/// task's id ([`lock_tid`]), or outside a task (boot, an in-kernel test, a posted function)
/// one per CPU, above every task id. Never 0 (no holder).
pub(crate) fn owner() -> usize {
    match lock_tid() {
        0 => usize::MAX - crate::percpu::cpu_id(),
        tid => tid,
    }
}

/// A CPU spinning for a page-table lock (interrupts off) answers its pending TLB-shootdown and
/// cross-CPU call requests on each turn, as a big-lock waiter does: the holder may be flushing
/// this CPU's TLB and waiting for the acknowledgement, under the lock this CPU waits for.
fn service_cross_cpu_requests() {
    crate::smp::shootdown::service();
    crate::smp::call::service();
}

/// The checker's report: one console line, then the backtrace of the acquisition (the place
/// the other order was recorded at is named in the line). Never panics.
fn report(r: &LockReport) {
    REPORTS.fetch_add(1, Ordering::Relaxed);
    *LAST.lock() = Some(*r);
    println!("cowlab: lockdep: {r}");
    crate::backtrace::print_current();
}

/// How many reports the checker made since boot (0 in release builds).
pub fn reports() -> u32 {
    REPORTS.load(Ordering::Relaxed)
}

/// The last report made, if any.
pub fn last_report() -> Option<LockReport> {
    *LAST.lock()
}

/// A contended address-space lock: a task sleeps on the lock's channel until a release wakes
/// it (the check of the lock and this sleep cannot miss a release in between: both run under
/// the big kernel lock). A killed task's sleep returns at once; it yields instead, so the
/// holder runs. Outside a task (boot, in-kernel tests, an IPI handler) it spins, answering
/// this CPU's shootdown and call requests as the page-table lock's spin does.
fn wait(channel: usize) {
    if crate::proc::current_tid() == 0 {
        service_cross_cpu_requests();
        core::hint::spin_loop();
        return;
    }
    if crate::proc::sleep_uninterruptible(channel, "mmap_lock").is_err() {
        crate::proc::sched::yield_now();
    }
}

fn wake(channel: usize) {
    // A fault without the big lock (`fault_unlocked.rs`) releases the lock without holding it;
    // the wake-up needs it (task table, run queues). Taking it here also closes the lost
    // wake-up window: a writer that saw this reader and set `SLEEPERS` holds the big lock until
    // it is asleep, so this cannot wake before it sleeps.
    // Only that release needs it: every other one runs under the big lock already, or in an
    // IPI handler (an in-kernel test's holder on another CPU), where spinning for a lock the
    // boot CPU keeps through the in-kernel tests never ended (ktest
    // `mmap_lock_kernel_fault_waits_or_is_efault_under_its_own_hold` on 4 CPUs, now and then:
    // the first fix, "outside a task", missed an IPI that interrupted a kernel thread).
    if !crate::fault_unlocked::inside() {
        crate::proc::wakeup(channel);
        return;
    }
    let taken = crate::bkl::lock_nested();
    crate::proc::wakeup(channel);
    // The task woken may have been queued on a halted CPU. The locked path's way back to ring
    // 3 kicks it (`proc::on_return_to_user`); the unlocked fault's (`after_unlocked_fault`)
    // does not look (a kick set by another CPU would send every unlocked fault through the big
    // lock), so this release, the one place that path makes a task runnable, kicks it here.
    crate::proc::sched::kick_idle();
    crate::bkl::unlock_nested(taken);
}

/// [`wake`] for the in-kernel tests (it is the `mmap_lock`'s wake hook otherwise).
pub(crate) fn wake_for_test(channel: usize) {
    wake(channel);
}
