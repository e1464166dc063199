//! The big kernel lock: kernel code runs on one CPU at a time, user code on all of them.
//!
//! Stage 2 of issue 16 (docs/architecture.md, "Multiprocessor"). The kernel was written for one
//! CPU with interrupts off from every entry to the return to ring 3; the task table, the
//! scheduler's idle context, the address-space mutexes taken with `try_lock` in the fault path
//! and many other structures rely on that. Rather than audit them all at once, a CPU holds this
//! lock whenever it runs kernel code on behalf of a task or the scheduler:
//!
//! - taken on every entry from ring 3 (`syscall`, an exception or interrupt with a ring-3 CS,
//!   NMIs excepted), released just before the return to ring 3 (`release_to_user`);
//! - held across a context switch: the task that calls `schedule` hands it to its CPU's idle
//!   loop, which hands it to the next task (a new task releases it on its first way out,
//!   `switch::cowlab_first_return`); so a task marked runnable cannot be picked by another CPU
//!   before it is off its kernel stack;
//! - released by the idle loop only around `hlt`;
//! - taken recursively by device and timer interrupts that arrive in kernel mode (the boot
//!   code, `cond_resched`'s window, the idle `hlt`).
//!
//! Not taken by the shootdown and cross-CPU call IPIs, which have their own protocol, nor by
//! NMIs. A CPU spinning for the lock has interrupts off, so it services its own pending
//! shootdown and call requests while it waits: the holder may be flushing this CPU's TLB. After
//! a short spin a waiter that came from ring 3 (by `syscall`, an exception, or an interrupt
//! already acknowledged: [`lock_after_eoi`]), or from its idle loop, halts with interrupts
//! enabled until the release's reschedule IPI ([`WAITERS`]): under TCG a spinning vCPU is a
//! busy host thread, a halted one costs nothing. Interrupt handlers taken in kernel mode and
//! device interrupts not yet serviced only spin ([`lock_in_interrupt`]).
//!
//! Only while several CPUs schedule tasks ([`enable`]: `smp_sched=1`, the default, and more than
//! one CPU online): on one CPU, or with the application processors parked (`smp_sched=0`), the
//! boot CPU is the only one that runs kernel code on behalf of a task, so it holds the lock from
//! boot on and every operation here is a load of [`ENABLED`] and a not-taken branch (Linux
//! compiles its locks out of a uniprocessor kernel; this decides at boot). The parked CPUs take
//! IPIs only, which never take the lock.
//!
//! Below it, in the lock order of docs/architecture.md: the task table, then one run queue's
//! lock (`proc::runqueue`, a leaf). The run queues rely on this lock for one thing the queue
//! locks alone would not give: a task queued while it is still on its kernel stack (a yield, a
//! preemption) cannot be picked by another CPU before its own CPU's idle loop is back, because
//! the lock is held across the switch.
//!
//! The lock-order checker (debug builds) sees it as class `big kernel lock` (`locking::BKL`):
//! taken and released wherever the lock really changes hands while enabled (not the nested
//! interrupt depth, not while it is off on one CPU), in the CPU's context, as its owner is.
//!
//! Cost on the entry path with the lock enabled: a load and one `cmpxchg` to take, a load and a
//! store to release, plus a load of the CPU index (`gs:[16]`) for each.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use cowlab_sync::lockdep;

use crate::percpu;

/// `cpu + 1` of the holder, 0 when free.
static OWNER: AtomicUsize = AtomicUsize::new(0);
/// `cpu + 1` of a waiter that spun [`STARVATION_SPINS`] times without getting the lock, 0 when
/// none: while set, only that CPU may take the lock. A plain test-and-set lock let a CPU looping
/// on cheap system calls (release, retake a few hundred cycles later) starve the other CPUs; a
/// ticket lock cured that but made every acquisition a hand-off, which on an overloaded host
/// (TCG's vCPU threads descheduled) cost a host time slice each (t_threads' Dirty COW pair: 13 s
/// with test-and-set, 108 s with tickets). This keeps test-and-set's cheap re-acquisition and
/// bounds the wait.
static STARVING: AtomicUsize = AtomicUsize::new(0);
/// Spins of a waiter before it claims [`STARVING`]. 2000 let a thread looping on system calls
/// on one CPU get about twenty acquisitions for each of a thread on another (t_threads' Dirty
/// COW pair: 1651 writes to 79 madvises in 3 s, 862 to 83 with halting waiters); 400 keeps the
/// cheap re-acquisition for short waits and bounds the share of a busy CPU.
const STARVATION_SPINS: u32 = 400;
/// Spins of a waiter before it halts until the holder's release wakes it ([`WAITERS`]).
pub(crate) const HALT_SPINS: u32 = 200;
/// CPUs halted waiting for the lock (bit per CPU): the release sends them the reschedule IPI.
/// A spinning vCPU is a busy host thread under TCG; on a loaded host it took the host CPU the
/// holder's vCPU needed (t_process on 2 CPUs: 160 s against 59 s on one, most of it in waits
/// for a holder tearing down an exiting child). Halted, it costs the host nothing.
static WAITERS: AtomicU64 = AtomicU64::new(0);
/// CPUs in the contended path of an acquisition, spinning or halted (bit per CPU), for
/// [`let_waiters_in`] and [`relax`].
static WAITING: AtomicU64 = AtomicU64::new(0);

/// The TSC at which each CPU's current wait in [`lock_slow`] began, for [`let_waiters_in`].
/// Not the PIT's tick count: the boot CPU is the only one that advances it, and a boot CPU
/// waiting in an interrupt handler spins with interrupts off, so its own wait would never
/// grow old in ticks and the holder's idle loop would never let it in (session 10 review).
static WAIT_SINCE: [AtomicU64; percpu::MAX_CPUS] = [const { AtomicU64::new(0) }; percpu::MAX_CPUS];
/// How long (two ticks) a CPU waits before an idle loop hands it the lock between two tasks
/// ([`let_waiters_in`]).
const LET_IN_AFTER_US: u64 = 2 * 1_000_000 / crate::time::TICK_HZ;

/// Nesting depth of the holder beyond its first acquisition (0 for a plain [`lock`]); written
/// only by the holder.
static DEPTH: AtomicUsize = AtomicUsize::new(0);
/// Spins [`relax`] waits, with the lock free, for a waiting CPU to take it.
const HANDOFF_SPINS: u32 = 20_000;
/// Acquisitions that found the lock held by another CPU (contention, for `/proc` and tests).
static CONTENDED: AtomicU64 = AtomicU64::new(0);

/// Whether the lock is in use (several CPUs schedule tasks). Written once, by [`enable`] on
/// the boot CPU before any application processor runs the scheduler; until then (and forever
/// with `smp_sched=0`) the boot CPU is the holder and taking or releasing does nothing.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Makes the boot CPU the holder: the boot code (and the in-kernel tests) runs as kernel code
/// on behalf of nobody, before the scheduler starts.
pub fn init_boot() {
    OWNER.store(1, Ordering::Relaxed);
}

/// Turns the lock on: the application processors are about to run tasks. Called once by the
/// boot code, which holds the lock at depth 0 (`init_boot`, no entry in progress), so the
/// state every later `lock`/`unlock` pair expects is already the real one.
pub fn enable() {
    debug_assert!(OWNER.load(Ordering::Relaxed) == 1 && DEPTH.load(Ordering::Relaxed) == 0);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether a ring-3 page fault may first try the fault path without this lock
/// (`fault_unlocked.rs`; docs/locking.md "BKL-free fault path"). Written once at boot
/// ([`allow_unlocked_faults`]: on by default, off with `fault_bkl=1`), before any CPU runs a
/// task; read only while the lock is [`enable`]d, so one CPU never
/// loads it.
static UNLOCKED_FAULTS: AtomicBool = AtomicBool::new(false);

/// Sets [`UNLOCKED_FAULTS`] (on by default; `fault_bkl=1` leaves it off: every fault takes the
/// lock, as before session 9).
pub fn allow_unlocked_faults(on: bool) {
    UNLOCKED_FAULTS.store(on, Ordering::Relaxed);
}

/// Whether ring-3 faults are tried without the lock on this boot: the lock is in use (2+ CPUs
/// running tasks) and `fault_bkl=1` did not turn the unlocked path off (`/proc/cowlab/mmstat`
/// `fault_unlocked_path`, which `t_nobkl_fault` checks against its `faults_unlocked`).
pub fn unlocked_faults_in_use() -> bool {
    enabled() && UNLOCKED_FAULTS.load(Ordering::Relaxed)
}

/// Whether the lock is in use on this boot (2+ CPUs schedule tasks; for tests).
pub fn in_use() -> bool {
    enabled()
}

/// Whether the lock is in use ([`enable`]); `#[inline(always)]`: one load on every entry.
#[inline(always)]
fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether this CPU holds the lock (the boot CPU always does while it is not [`enable`]d).
#[inline]
pub fn held() -> bool {
    OWNER.load(Ordering::Relaxed) == percpu::cpu_id() + 1
}

/// Takes the lock (non-recursive: the caller knows this CPU does not hold it). Interrupts off.
#[inline(always)]
pub fn lock() {
    if enabled() {
        lock_enabled();
    }
}

#[inline(always)]
fn lock_enabled() {
    let me = percpu::cpu_id() + 1;
    lockdep::before_acquire(&crate::locking::BKL);
    if STARVING.load(Ordering::Relaxed) != 0
        || OWNER
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        lock_slow(me, Wait::Entry);
    }
    lockdep::acquired(&crate::locking::BKL);
}

/// How a contended acquisition waits, and how `bklstat` classes it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// An entry from ring 3 by `syscall`, a page fault or another exception, or the idle
    /// loop: spins, then halts with interrupts enabled.
    Entry,
    /// An interrupt handler before its end-of-interrupt (taken in kernel mode, or a device's
    /// line not yet serviced): spins with interrupts off.
    Interrupt,
    /// An interrupt taken in ring 3 after its end-of-interrupt ([`lock_after_eoi`]): waits
    /// as an entry does, classed as an interrupt's wait.
    InterruptAcked,
}

impl Wait {
    fn may_halt(self) -> bool {
        self != Wait::Interrupt
    }
}

/// [`lock`] for an interrupt handler taken in ring 3 that has already sent its
/// end-of-interrupt (the local timer, the reschedule IPI, the PIT): it holds nothing and its
/// own interrupt is no longer in service, so it waits as an entry does, halted with
/// interrupts enabled, and the release's IPI or its CPU's next tick wakes it; unlike an entry
/// it halts even once it holds the [`STARVING`] claim (see [`lock_slow`]). Before, these
/// handlers spun with interrupts off for as long as another CPU held the lock (`t_limits` on
/// 2 CPUs: 2421 waits and 33.6 million spins, the most of any class), a busy host thread that
/// also took none of its own CPU's ticks. An interrupt taken meanwhile arrives in kernel mode
/// and follows the kernel-mode rules (the PIT's tick defers its work, `tick.rs`; an
/// application processor's tick leaves it to the holder, `idt::dispatch`). Interrupts off.
#[inline]
pub fn lock_after_eoi() {
    if !enabled() {
        return;
    }
    let me = percpu::cpu_id() + 1;
    lockdep::before_acquire(&crate::locking::BKL);
    if STARVING.load(Ordering::Relaxed) != 0
        || OWNER
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        lock_slow(me, Wait::InterruptAcked);
    }
    lockdep::acquired(&crate::locking::BKL);
}

/// [`lock`] for an interrupt or exception handler (never halts: before its end-of-interrupt
/// the local APIC holds back the release's IPI, of the same priority class as the timer's,
/// and a handler may run inside another waiter's halt). Interrupts off.
#[inline]
pub fn lock_in_interrupt() {
    if !enabled() {
        return;
    }
    let me = percpu::cpu_id() + 1;
    lockdep::before_acquire(&crate::locking::BKL);
    if STARVING.load(Ordering::Relaxed) != 0
        || OWNER
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        lock_slow(me, Wait::Interrupt);
    }
    lockdep::acquired(&crate::locking::BKL);
}

/// The contended acquisition: spin, then (unless `wait` is [`Wait::Interrupt`]) halt with
/// interrupts enabled until a release's IPI. An interrupt taken in that window runs as it
/// would in the idle `hlt`: handlers take the lock through [`lock_nested`] (or try it).
#[cold]
#[inline(never)]
fn lock_slow(me: usize, wait: Wait) {
    // A function posted by another CPU (`smp::call`, the in-kernel tests' way to make a CPU
    // hold or wait for the lock) runs inside the call IPI's handler before its end-of-interrupt,
    // which holds back the release's reschedule IPI and the local tick (the same priority
    // class): halted there, it would wake only at a tick the in-service IPI also holds back.
    // Such a wait spins, as an interrupt handler's does (smp5, session 12).
    let may_halt = wait.may_halt() && !crate::smp::call::running_here();
    debug_assert_ne!(
        OWNER.load(Ordering::Relaxed),
        me,
        "big kernel lock taken twice"
    );
    // The spins are the other CPU's doing, not this task's (a kcov buffer would fill with them).
    #[cfg(feature = "kcov")]
    let _hidden = crate::kcov::WaitGuard::new();
    CONTENDED.fetch_add(1, Ordering::Relaxed);
    let start = crate::time::rdtsc();
    let bit = 1u64 << (me - 1);
    // An interrupt's wait nested in this CPU's own (a halted waiter woken) keeps the outer
    // wait's start: the CPU has been waiting since then.
    if WAITING.load(Ordering::Relaxed) & bit == 0 {
        WAIT_SINCE[me - 1].store(start, Ordering::Relaxed);
    }
    WAITING.fetch_or(bit, Ordering::Relaxed);
    let mut spins = 0u32;
    loop {
        let starving = STARVING.load(Ordering::Relaxed);
        if (starving == 0 || starving == me)
            && OWNER.load(Ordering::Relaxed) == 0
            && OWNER
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            // Not by `starving == me`: that value may be older than a claim a releaser made
            // for this CPU since (`let_waiters_in`, `relax`), which would then outlive the
            // acquisition and lock every other CPU out until this one took the lock again.
            let _ = STARVING.compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
            WAITING.fetch_and(!bit, Ordering::Relaxed);
            count_wait(me - 1, wait, spins, start);
            return;
        }
        spins = spins.saturating_add(1);
        if spins >= STARVATION_SPINS && starving == 0 {
            let _ = STARVING.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed);
        }
        // The holder may be waiting for this CPU to flush its TLB or run a call.
        crate::smp::shootdown::service();
        crate::smp::call::service();
        // The claimant is next: it keeps spinning to take the lock the moment it is free, but
        // opens an interrupt window now and then, as the halt does: with interrupts off for
        // the whole wait, the boot CPU took neither the PIT tick nor the disk's interrupt,
        // whose `nudge_holder` is what wakes a holder polling for that request. An
        // acknowledged ring-3 interrupt halts even as the claimant (the release's IPI wakes
        // it; the claim keeps the lock for it meanwhile): its work (a tick's accounting and
        // preemption) is no system call's, and one such wait per tick on each CPU is the
        // whole of it. Spinning, those waits were most of the spins (`t_limits` on 2 CPUs:
        // 23.0 million of the boot's 31.2 million; halting, 1.5 million of 3.3 million, and
        // the boot took 58 s of guest time against 145 s, host load alike).
        if may_halt && spins.is_multiple_of(HALT_SPINS) {
            if wait == Wait::InterruptAcked || STARVING.load(Ordering::Relaxed) != me {
                halt_until_release(me);
            } else {
                interrupt_window();
            }
            // A handler taken meanwhile may have waited for the lock too, and cleared the bit
            // on its way out.
            WAITING.fetch_or(bit, Ordering::Relaxed);
        }
        core::hint::spin_loop();
    }
}

/// Records a contended acquisition in `bklstat`, classed by who waited.
fn count_wait(cpu: usize, wait: Wait, spins: u32, start: u64) {
    use crate::bklstat::Waiter;
    let idle = crate::proc::current_tid() == 0;
    let who = match (wait == Wait::Entry, idle) {
        (true, false) => Waiter::Task,
        (false, false) => Waiter::Irq,
        (true, true) => Waiter::Idle,
        (false, true) => Waiter::IdleIrq,
    };
    let waited = crate::time::rdtsc().wrapping_sub(start);
    crate::bklstat::waited(cpu, who, u64::from(spins), waited);
}

/// Halts until the holder releases (its [`wake_waiters`] IPI) or any interrupt arrives. The
/// bit is set before the last look at the owner and the claim, and the release clears the
/// owner before it reads the bits (both `SeqCst`): either this CPU sees the lock free and
/// unclaimed or the releaser sees the bit. `sti; hlt` takes an IPI sent in between at the
/// `hlt`.
///
/// A lock that is free but claimed for another CPU ([`STARVING`]: by a waiter that spun
/// [`STARVATION_SPINS`] times, or for a waiter by [`let_waiters_in`] or [`relax`] just before
/// their release) is not free for this one: it halts too, and the claimant's own release wakes
/// it. Spinning there was the 4-CPU stall of `t_process`'s fork loop (session 12, QEMU gdb stub
/// on a stalled boot: all four CPUs in `lock_slow` under `let_waiters_in`, the lock free, a
/// claim for one CPU, no waiter halted, every queue 50 to 85 tasks long and growing): three
/// vCPU threads spinning on a 2-core host kept the claimant's thread off the host CPU, so each
/// hand-off took a host time slice; every waiter then had waited over two ticks, so every
/// idle-loop pass handed the lock on again, one task per hand-off, fewer switches a second
/// than the 512 sleepers' wake-ups needed.
///
/// No wake-up is lost to a claim: a claim is only made for a CPU in the contended path
/// ([`WAITING`]), which takes the lock before it does anything else (the claim is cleared only
/// by that acquisition) and releases it later. If this CPU read the claim, the claimant had not
/// cleared it, so its acquisition, and the release after it, come after this CPU's bit was set
/// and read it. A claimant halted itself (an acknowledged interrupt's wait, or an entry's
/// behind an owner) halts only while the lock has an owner, whose release wakes both. A halt is
/// bounded by this CPU's tick anyway. (Withdrawn in session 12 for the kernel tier's idle-loop
/// hand-off tests failing in 4 of 6 boots; session 13 found their cause in the tests: a post
/// to a call slot the previous test's function had not emptied yet, `ktest::tick::post_long`.)
fn halt_until_release(me: usize) {
    let bit = 1u64 << (me - 1);
    WAITERS.fetch_or(bit, Ordering::SeqCst);
    // The owner before the claim: a free owner read from the claimant's release makes its
    // clearing of the claim visible to the load after it.
    let owner = OWNER.load(Ordering::SeqCst);
    let starving = STARVING.load(Ordering::SeqCst);
    if owner != 0 || (starving != 0 && starving != me) {
        crate::bklstat::halted(me - 1);
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
        // A CPU halted for the lock is not stuck with interrupts off: it took an interrupt to
        // get here. Without the touch, an owner's long (but progressing) hold would have the
        // per-CPU soft-lockup detector report every waiter (review of smp11). A waiter that
        // spins with interrupts off is still reported, as on Linux.
        crate::watchdog::soft::touch();
    }
    WAITERS.fetch_and(!bit, Ordering::Relaxed);
}

/// Takes the interrupts pending on this CPU (the one after `sti` is taken after the next
/// instruction): a waiter on the entry path holds nothing an interrupt handler needs.
fn interrupt_window() {
    x86_64::instructions::interrupts::enable();
    x86_64::instructions::nop();
    x86_64::instructions::interrupts::disable();
}

/// Frees the lock and wakes the CPUs halted waiting for it. The `SeqCst` store (an `xchg`)
/// orders it before the read of [`WAITERS`] (a plain store could pass the load).
#[inline(always)]
fn release() {
    lockdep::released(&crate::locking::BKL);
    OWNER.store(0, Ordering::SeqCst);
    if WAITERS.load(Ordering::SeqCst) != 0 {
        wake_waiters();
    }
}

#[cold]
#[inline(never)]
fn wake_waiters() {
    let others = WAITERS.load(Ordering::SeqCst) & !(1u64 << percpu::cpu_id());
    if others != 0 {
        crate::smp::send_resched(others);
    }
}

/// Releases the lock taken by [`lock`] (depth 1). Interrupts off.
#[inline(always)]
pub fn unlock() {
    if enabled() {
        debug_assert!(held() && DEPTH.load(Ordering::Relaxed) == 0);
        release();
    }
}

/// A device interrupt arrived on this CPU while another CPU may hold the lock: that holder
/// gets the reschedule IPI, which ends its `hlt` (Linux has no equivalent: its waiters sleep).
/// A task that waits for a block request with the lock held (`ext2_glue`'s polled wait under
/// `without_sleeping`, `vda`) halts until an interrupt and then reaps the virtio queues itself;
/// the device's interrupt goes to the boot CPU, whose handler spins for the lock, so before
/// this the application processor slept until its next local timer tick, 10 ms per request
/// (an exec reading its program image page by page on CPU 1: 14 s against 1 s on CPU 0).
/// On a holder that is not halted the IPI is taken at its next `sti` and does nothing.
#[inline]
pub fn nudge_holder() {
    if !enabled() {
        return;
    }
    let owner = OWNER.load(Ordering::Relaxed);
    let me = percpu::cpu_id() + 1;
    if owner != 0 && owner != me {
        crate::smp::send_resched(1 << (owner - 1));
    }
}

/// Whether another CPU spins for the lock (never while the lock is off).
#[inline]
pub fn others_waiting() -> bool {
    enabled() && WAITING.load(Ordering::Relaxed) & !(1u64 << percpu::cpu_id()) != 0
}

/// Whether CPU `cpu` is in the contended path of an acquisition, spinning or halted (for
/// tests that need one particular CPU to wait).
#[inline]
pub fn waiting(cpu: usize) -> bool {
    WAITING.load(Ordering::Relaxed) & (1u64 << cpu) != 0
}

/// Lets the CPUs waiting for the lock run their kernel entries, then takes it back; whether it
/// let go (the caller's data may have changed meanwhile). Nothing to do when no other CPU
/// waits, while the lock is off, or when it is held nested. The caller holds no other lock.
///
/// For kernel loops whose other side runs in parallel on Linux: the GUP slow path calls it
/// between a fault and its retry (Linux's `cond_resched()` in `__get_user_pages`, with
/// `mmap_lock` only read-held, so another thread's `madvise` runs meanwhile on its CPU). A plain
/// release and re-take would win the lock back before a spinning waiter saw it free, so this
/// waits (bounded: the waiter's vCPU thread may be off the host CPU) until someone took it.
pub fn relax() -> bool {
    // Nested (an interrupt's kernel code), the outer holder's state is not ours to let go.
    if !others_waiting() || DEPTH.load(Ordering::Relaxed) != 0 {
        return false;
    }
    debug_assert!(held());
    // A waiter may be halted (`halt_until_release`): `release` sends it the IPI a plain store
    // would not, and the claim makes it the next owner, not this CPU's re-lock below.
    let me = percpu::cpu_id();
    let others = WAITING.load(Ordering::Relaxed) & !(1u64 << me);
    let waiter = others.trailing_zeros() as usize + 1;
    let _ = STARVING.compare_exchange(0, waiter, Ordering::Relaxed, Ordering::Relaxed);
    #[cfg(feature = "kcov")]
    let _hidden = crate::kcov::WaitGuard::new();
    crate::bklstat::handed_off(me);
    release();
    let mut spins = 0u32;
    while OWNER.load(Ordering::Relaxed) == 0 && spins < HANDOFF_SPINS {
        crate::smp::shootdown::service();
        crate::smp::call::service();
        core::hint::spin_loop();
        spins += 1;
    }
    lock_enabled();
    true
}

/// Takes the lock unless this CPU holds it already (an interrupt taken in kernel mode); whether
/// it was taken here, for [`unlock_nested`]. Nothing to take or count while not [`enable`]d
/// (an interrupt cannot straddle `enable`, which runs on the boot CPU's main flow).
#[inline]
pub fn lock_nested() -> bool {
    if !enabled() {
        false
    } else if held() {
        DEPTH.fetch_add(1, Ordering::Relaxed);
        false
    } else {
        lock_in_interrupt();
        true
    }
}

/// [`lock_nested`] that never waits: `Some(taken)` when this CPU holds the lock now (`taken`
/// as for [`lock_nested`]), `None` when another CPU holds it or has the [`STARVING`] claim.
/// For an interrupt whose work can wait for the holder (`tick::defer`): an idle CPU's timer
/// tick spun, interrupts off, for as long as another CPU's system call ran, and under TCG that
/// spinning vCPU is a busy host thread beside the holder's.
#[inline]
pub fn try_lock_nested() -> Option<bool> {
    if !enabled() {
        Some(false)
    } else if held() {
        DEPTH.fetch_add(1, Ordering::Relaxed);
        Some(false)
    } else if try_lock_enabled() {
        Some(true)
    } else {
        None
    }
}

/// Takes the lock if it is free and nobody has the [`STARVING`] claim; whether it did. The
/// caller does not hold it. Always true while the lock is off.
pub fn try_lock() -> bool {
    !enabled() || try_lock_enabled()
}

/// A try-lock cannot deadlock: it records no order (as `SpinLock::try_lock`), only the hold.
fn try_lock_enabled() -> bool {
    let me = percpu::cpu_id() + 1;
    let starving = STARVING.load(Ordering::Relaxed);
    let got = (starving == 0 || starving == me)
        && OWNER
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
    if got {
        let _ = STARVING.compare_exchange(me, 0, Ordering::Relaxed, Ordering::Relaxed);
        lockdep::acquired(&crate::locking::BKL);
    }
    got
}

/// Undoes [`lock_nested`].
#[inline]
pub fn unlock_nested(taken: bool) {
    if !enabled() {
        return;
    }
    if taken {
        unlock();
    } else {
        DEPTH.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The way out to ring 3: releases the lock, which every path to ring 3 holds (the entry took
/// it, or the idle loop handed it to a new task).
#[inline(always)]
pub fn release_to_user() {
    unlock();
}

/// [`lock`] for an entry from ring 3 that keeps the answer to "is the lock in use" (constant
/// after boot, [`enable`]) in a register for [`release_to_user_if`]: one load of
/// [`ENABLED`] per entry instead of two.
#[inline(always)]
pub fn lock_from_user() -> bool {
    let on = enabled();
    if on {
        lock_enabled();
    }
    on
}

/// [`lock_from_user`] for the page fault: while the lock is in use and faults may run without
/// it, `unlocked` is tried first; `None` when it handled the fault (the lock was not taken).
/// With the lock off (one CPU) this is [`lock_from_user`]: the same load and branch, and
/// `unlocked` is never called.
#[inline(always)]
pub fn lock_from_user_unless(unlocked: impl FnOnce() -> bool) -> Option<bool> {
    let on = enabled();
    if on {
        if UNLOCKED_FAULTS.load(Ordering::Relaxed) && unlocked() {
            return None;
        }
        lock_enabled();
    }
    Some(on)
}

/// [`release_to_user`] after [`lock_from_user`] returned `locked`.
#[inline(always)]
pub fn release_to_user_if(locked: bool) {
    if locked {
        debug_assert!(held() && DEPTH.load(Ordering::Relaxed) == 0);
        release();
    }
}

/// Hands the lock to a CPU waiting for it, if any, then takes it back: the idle loop's call
/// between two tasks. The lock is otherwise held across the switches of a task that loops in
/// the kernel with `cond_resched` (a 2 GiB `write`), so a CPU waiting to run the task woken
/// meanwhile (t_shmem's parent, queued on the idle CPU, about to kill that writer) waited for
/// the whole loop. Only between tasks: the one that ran is off its kernel stack. The waiter is
/// made the [`STARVING`] claimant unless one exists, so it is the next owner: a CPU in the
/// contended path holds nothing and takes the lock before it does anything else.
pub fn let_waiters_in(before_release: impl FnOnce()) {
    if !enabled() {
        return;
    }
    let me = percpu::cpu_id();
    let others = WAITING.load(Ordering::Relaxed) & !(1u64 << me);
    if others == 0 {
        return;
    }
    // Only to a CPU that has waited a while: the lock held across a task's whole kernel loop
    // (`cond_resched` switches). A CPU that began waiting just now gets the lock at this CPU's
    // next release anyway (the next task's return to ring 3 or halt); handing it over at every
    // pass made two CPUs with runnable tasks trade the lock at each of their switches, the
    // idle loop then waiting for it back (t_process's 512 sleeping children on 2 CPUs: both
    // CPUs sampled in `lock_slow` under `let_waiters_in`, the fork loop stalled for minutes).
    let now = crate::time::rdtsc();
    let long = (0..percpu::MAX_CPUS)
        .filter(|cpu| others >> cpu & 1 != 0)
        .find(|&cpu| {
            let waited = now.wrapping_sub(WAIT_SINCE[cpu].load(Ordering::Relaxed));
            crate::time::cycles_to_micros(waited) >= LET_IN_AFTER_US
        });
    let Some(waiter) = long.map(|cpu| cpu + 1) else {
        return;
    };
    debug_assert!(held() && DEPTH.load(Ordering::Relaxed) == 0);
    let _ = STARVING.compare_exchange(0, waiter, Ordering::Relaxed, Ordering::Relaxed);
    before_release();
    crate::bklstat::handed_off(me);
    release();
    lock();
}

/// Claims the free lock for `cpu` as [`let_waiters_in`] and [`relax`] do for a waiting CPU
/// just before their release (unless a claim exists); whether it did. For the in-kernel test
/// that stands in for a claimant whose vCPU thread the host has not run yet
/// (`ktest::tick::bkl_waiter_halts_while_the_lock_is_claimed_for_another_cpu`). The caller
/// holds the lock and makes `cpu` take it soon: a claim for a CPU that never takes the lock
/// breaks the invariant `halt_until_release` relies on (a claim is made only for a CPU already
/// waiting), and every other waiter would halt behind it for good (its ticks wake it but do not
/// clear the claim). Crate-private for that reason.
pub(crate) fn claim_for(cpu: usize) -> bool {
    debug_assert!(held());
    STARVING
        .compare_exchange(0, cpu + 1, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// How many acquisitions had to wait for another CPU.
pub fn contended() -> u64 {
    CONTENDED.load(Ordering::Relaxed)
}
