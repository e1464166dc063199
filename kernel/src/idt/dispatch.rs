//! What each vector does once its registers are saved.
//!
//! Three outcomes only: handle and return (breakpoint, timer and other IRQs), recover through an
//! exception-table fixup (a page fault or #GP at a registered instruction, see `extable`), or
//! die with a full dump ([`super::dump::die`]). Traps from ring 3 branch off to [`user_trap`]:
//! page faults go to the memory manager, a tick preempts, and every other exception kills the
//! process (never the kernel).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::control::Cr2;

use super::{dump, vector, TrapFrame};
use crate::{extable, pic, time, vm};

static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);

/// How many `int3` breakpoints the kernel has handled since boot.
pub fn breakpoint_count() -> u64 {
    BREAKPOINTS.load(Ordering::SeqCst)
}

/// Called by `trap_common` with interrupts disabled and all registers saved in `*frame`; the
/// registers this function may clobber are restored from `*frame` when it returns. The
/// callee-saved ones are not reloaded (`entry.rs`): no trap handler may change them in the
/// frame (checked in debug kernels).
pub(super) extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    #[cfg(debug_assertions)]
    let saved = frame.callee_saved();
    if frame.cs & 3 == 3 {
        user_trap(frame);
    } else {
        kernel_trap(frame);
    }
    #[cfg(debug_assertions)]
    frame.assert_callee_saved(saved);
}

/// A trap taken in kernel mode. Not inlined: its logging and fixup paths would otherwise give
/// the user page-fault path their stack frame and saved registers.
#[inline(never)]
fn kernel_trap(frame: &mut TrapFrame) {
    let number = frame.vector as u8;
    match number {
        // An NMI may land anywhere, even between `syscall` and `swapgs` (kernel CS, user GS):
        // the watchdog's handler uses no GS and takes no lock.
        vector::NMI => {
            #[cfg(feature = "kcov")]
            let _hidden = crate::kcov::IrqGuard::new();
            crate::watchdog::soft::on_nmi(frame)
        }
        vector::BREAKPOINT => {
            BREAKPOINTS.fetch_add(1, Ordering::SeqCst);
            // RIP already points past the one-byte `int3`, so returning continues after it.
            info!("breakpoint (#BP) at rip={:#x}, continuing", frame.rip - 1);
        }
        vector::PAGE_FAULT => {
            let cr2 = Cr2::read_raw();
            // A copy made with page faults off (a buffered write's copy into the page it
            // holds locked) is not served: it stops short and its caller faults the source
            // in with no page locked.
            if vm::is_user_address(cr2) && !extable::in_nofault_copy(frame.rip) {
                match vm::handle_page_fault::<false>(cr2, frame.error_code) {
                    Ok(()) => return,
                    Err(cowlab_mm::FaultError::Oom) if kernel_oom_may_retry(frame) => {
                        if crate::proc::oom::out_of_memory() == crate::proc::oom::OomAction::Retry {
                            return;
                        }
                    }
                    Err(_) => {}
                }
            }
            match extable::search(frame.rip) {
                Some(fixup) => extable::fixup(frame, fixup, cr2),
                None => dump::die(frame),
            }
        }
        vector::GENERAL_PROTECTION => match extable::search(frame.rip) {
            Some(fixup) => extable::fixup(frame, fixup, 0),
            None => dump::die(frame),
        },
        ipi if ipi >= vector::IPI_BASE => {
            #[cfg(feature = "kcov")]
            let _hidden = crate::kcov::IrqGuard::new();
            crate::smp::on_ipi(ipi);
            // An application processor's tick inside a task's kernel code (a `cond_resched`
            // window) is that task's system time, as the PIT's is on the boot CPU. Inside the
            // task's wait for the big lock (halted in an entry's or an acknowledged interrupt's
            // wait), the lock is another CPU's: the tick does not wait for it, interrupts off,
            // but counts as this CPU's system time and leaves the rest to the holder, as the
            // PIT's deferred tick does (the task's table entry needs the lock).
            if ipi == vector::LOCAL_TIMER
                && crate::percpu::cpu_id() != 0
                && crate::proc::current_tid() != 0
            {
                if let Some(taken) = crate::bkl::try_lock_nested() {
                    crate::proc::cputime::account_tick(false);
                    crate::tick::run_deferred();
                    crate::bkl::unlock_nested(taken);
                } else {
                    // The task's system time all the same, charged when it can be.
                    crate::proc::cputime::owe_tick(false);
                }
            }
        }
        irq if (vector::PIC_BASE..vector::PIC_END).contains(&irq) => {
            #[cfg(feature = "kcov")]
            let _hidden = crate::kcov::IrqGuard::new();
            // The tick never waits for another CPU's system call (`tick.rs`).
            let taken = if irq == vector::TIMER {
                match crate::bkl::try_lock_nested() {
                    Some(taken) => taken,
                    None => return deferred_tick(),
                }
            } else {
                crate::bkl::lock_nested()
            };
            if irq == vector::TIMER {
                crate::proc::cputime::account_tick(false);
            }
            interrupt(irq - vector::PIC_BASE);
            crate::bkl::unlock_nested(taken);
        }
        irq if (vector::IOAPIC_BASE..vector::IOAPIC_END).contains(&irq) => {
            #[cfg(feature = "kcov")]
            let _hidden = crate::kcov::IrqGuard::new();
            crate::bkl::nudge_holder();
            let taken = crate::bkl::lock_nested();
            routed_interrupt(irq - vector::IOAPIC_BASE);
            crate::bkl::unlock_nested(taken);
        }
        _ => dump::die(frame),
    }
}

/// Whether a kernel-mode fault on user memory that found no frame may run the OOM killer and
/// retry, as a ring-3 fault does (Linux's `do_user_addr_fault` makes no difference: the fault
/// returns `VM_FAULT_OOM`, `pagefault_out_of_memory` kills, the copy is retried). Only for a
/// user-copy instruction with a fixup (anything else dies anyway), and while no fatal signal is
/// pending here: a process being killed takes the fixup, its copy fails (`EFAULT` or a short
/// count) and it ends on its way back to ring 3, as Linux's `fault_signal_pending` check does.
/// Waiting for the victim here is as safe as the fault itself: system calls run with
/// interrupts off and yield only where they choose, and a user copy is never made holding a
/// spin lock (the fault path already takes the address-space lock and may sleep on the disk
/// for a file page).
fn kernel_oom_may_retry(frame: &TrapFrame) -> bool {
    extable::search(frame.rip).is_some() && !crate::proc::fatal_signal_pending()
}

/// A trap taken in ring 3: interrupts (a tick preempts), page faults for the memory manager,
/// and exceptions that kill the process with the signal Linux would send. Never kills the
/// kernel.
fn user_trap(frame: &mut TrapFrame) {
    // The page fault, the common trap, first: the other vectors' tests (the lock-free NMI and
    // IPIs, the jump on the vector) stay off its path.
    if frame.vector as u8 == vector::PAGE_FAULT {
        // CR2 before the lock: a contended `lock_from_user` may halt with interrupts on, and
        // a fault taken meanwhile would overwrite it (Linux reads it first thing at entry).
        let cr2 = Cr2::read_raw();
        // An anonymous fault may be resolved without the big lock first (`fault_unlocked.rs`).
        let unlocked = || crate::fault_unlocked::fault_unlocked(cr2, frame.error_code);
        let Some(locked) = crate::bkl::lock_from_user_unless(unlocked) else {
            return crate::proc::after_unlocked_fault(frame);
        };
        user_page_fault(frame, cr2);
        crate::proc::on_return_to_user(frame);
        crate::bkl::release_to_user_if(locked);
    } else {
        user_trap_other(frame);
    }
}

/// A page fault in ring 3: the memory manager resolves it, or the task gets its signal.
#[inline(always)]
fn user_page_fault(frame: &mut TrapFrame, cr2: u64) {
    use crate::proc::signal::{force_fault, SIGBUS, SIGSEGV};
    match vm::handle_page_fault::<true>(cr2, frame.error_code) {
        Ok(()) => {}
        // The memory manager's signal and si_code: SIGSEGV with SEGV_MAPERR or SEGV_ACCERR,
        // SIGBUS with BUS_ADRERR past the end of a shmem object.
        Err(cowlab_mm::FaultError::Segv(reason)) => {
            let signal = if reason.signal() == 7 {
                SIGBUS
            } else {
                SIGSEGV
            };
            force_fault(frame, signal, reason.si_code(), Some(cr2));
        }
        // The OOM killer frees memory by killing the largest process (maybe this one, which
        // then ends on its return to ring 3); the fault is retried.
        Err(cowlab_mm::FaultError::Oom) => {
            crate::proc::oom::out_of_memory();
        }
        // `vm::handle_page_fault` fills and retries itself; never here.
        Err(cowlab_mm::FaultError::Retry) => {}
    }
}

/// Every trap from ring 3 but the page fault.
#[inline(never)]
fn user_trap_other(frame: &mut TrapFrame) {
    use crate::proc::signal::force_fault;
    let number = frame.vector as u8;
    // An interrupt (an NMI, an IPI, a device's or the timer's) is not the task's doing: its
    // entry, the preemption it makes and its way back to ring 3 are hidden from the task's
    // coverage, as Linux's non-instrumented entry and scheduler code are. Exceptions are the
    // task's own (Linux traces their signals too).
    #[cfg(feature = "kcov")]
    let _hidden =
        (number == vector::NMI || number >= vector::PIC_BASE).then(crate::kcov::IrqGuard::new);
    match number {
        // Not a trap of this task: no lock, no signal, no preemption, no return-to-user work.
        vector::NMI => return crate::watchdog::soft::on_nmi(frame),
        // Their own protocol, no kernel state: the lock would only delay the flush.
        vector::IPI_SHOOTDOWN | vector::IPI_CALL | vector::SPURIOUS => {
            return crate::smp::on_ipi(number)
        }
        // A holder polling for this device's request wakes to reap it (`bkl::nudge_holder`).
        irq if (vector::IOAPIC_BASE..vector::IOAPIC_END).contains(&irq) => {
            crate::bkl::nudge_holder()
        }
        _ => {}
    }
    acknowledge_user_interrupt(number);
    // The ticks that preempt: an application processor's own, the PIT's on the boot CPU.
    let preempting_tick = if crate::percpu::cpu_id() == 0 {
        number == vector::TIMER
    } else {
        number == vector::LOCAL_TIMER
    };
    if preempting_tick {
        match user_tick_lock() {
            UserTick::Locked => {}
            UserTick::Wait => lock_for_user_trap(number),
            UserTick::Unlocked => return,
        }
    } else {
        lock_for_user_trap(number);
    }
    match number {
        ipi if ipi >= vector::IPI_BASE => {
            // An application processor's own tick preempts its task, as the PIT's does on the
            // boot CPU (which accounts on the PIT instead).
            if ipi == vector::LOCAL_TIMER && crate::percpu::cpu_id() != 0 {
                crate::proc::cputime::account_tick(true);
                crate::tick::run_deferred();
                crate::proc::sched::yield_now();
            } else if ipi == vector::IPI_RESCHED {
                crate::proc::sched::resched_ipi();
            }
        }
        irq if (vector::IOAPIC_BASE..vector::IOAPIC_END).contains(&irq) => {
            routed_interrupt(irq - vector::IOAPIC_BASE)
        }
        vector::TIMER => {
            // Counted, the clock advanced and acknowledged already.
            crate::proc::cputime::account_tick(true);
            crate::tick::run();
            crate::drivers::virtio_blk::steer_interrupts();
            crate::proc::sched::yield_now();
        }
        irq if (vector::PIC_BASE..vector::PIC_END).contains(&irq) => {
            interrupt(irq - vector::PIC_BASE)
        }
        vector::MACHINE_CHECK | vector::DOUBLE_FAULT => dump::die(frame),
        number => {
            let (signal, code) = crate::proc::signal::exception_signal(number);
            force_fault(frame, signal, code, None);
        }
    }
    crate::proc::on_return_to_user(frame);
    crate::bkl::release_to_user();
}

/// What a preempting tick in ring 3 does about the big lock.
enum UserTick {
    /// It took the lock (free): the usual tick.
    Locked,
    /// It waits for the lock ([`lock_for_user_trap`]): the usual tick after.
    Wait,
    /// Another CPU holds it: the tick is owed, the task goes on in ring 3.
    Unlocked,
}

/// The owed ticks after which a ring-3 tick waits for the lock to charge them: 250 ms.
const OWED_TICKS_MAX: u64 = crate::time::TICK_HZ / 4;
/// The deferred PIT ticks after which the boot CPU's ring-3 tick waits to run their work.
const DEFERRED_TICKS_MAX: u32 = 3;

/// A preempting tick in ring 3 (an application processor's own, the PIT's on the boot CPU)
/// while another CPU holds the big lock, with nothing else to run here, charges the task later
/// ([`crate::proc::cputime::owe_tick`]), leaves the PIT's work to the holder as a kernel-mode
/// tick does ([`crate::tick::defer`]), and lets the task go on in ring 3 without waiting. Waiting, the tick's preemption had
/// nothing to switch to, and the task stood still for as long as the other CPU's system call
/// held the lock: a spinner beside a 512 MiB `mlockall` counted at 12% of its own CPU's rate on
/// an idle host, and below a twentieth at host load 12 to 22 (t_rob2_populate, session 11),
/// its CPU halted in the lock's wait. Linux's tick never waits for a lock to preempt nobody
/// (`scheduler_tick` only sets `TIF_NEED_RESCHED` when another task should run).
///
/// The tick waits as before when this CPU's queue holds another task (the time slice is over:
/// the switch needs the lock) or a reschedule is asked for. Work the tick would do under the
/// lock waits for the next one that gets it: the PIT's (the holder, the next PIT tick or an
/// application processor's tick runs it), `RLIMIT_CPU`'s check (at that tick, on the charged
/// total), the disk's interrupt steering (the next PIT tick). Signals sent meanwhile
/// come with their own reschedule IPI (`sched::kick_busy`), which waits for the lock as before.
/// Interrupts off, after the end-of-interrupt.
fn user_tick_lock() -> UserTick {
    let cpu = crate::percpu::cpu_id();
    if crate::bkl::try_lock() {
        return UserTick::Locked;
    }
    // Skipping is bounded (review, session 12): while other CPUs' system calls keep the lock
    // busy back to back, a tick that never found it free would leave `RLIMIT_CPU`'s check and
    // the task's charged time behind for good, and the PIT's work (sleepers, timers, the
    // hung-task check) to whenever a holder ran it. So after a quarter second of owed ticks,
    // or a few deferred PIT ticks, the tick waits for the lock as before.
    if crate::proc::current_tid() == 0
        || crate::proc::runqueue::load(cpu) > 1
        || crate::proc::runqueue::NEED_RESCHED.load(Ordering::Relaxed) >> cpu & 1 != 0
        || crate::proc::cputime::owed_ticks() >= OWED_TICKS_MAX
        || (cpu == 0 && crate::tick::deferred_ticks() >= DEFERRED_TICKS_MAX)
    {
        return UserTick::Wait;
    }
    crate::proc::cputime::owe_tick(true);
    if cpu == 0 {
        crate::tick::defer();
    }
    // The task goes on without a schedule, but this CPU takes its ticks: not a soft lockup.
    crate::watchdog::soft::touch();
    crate::bklstat::tick_unlocked(cpu);
    UserTick::Unlocked
}

/// The part of a ring-3 interrupt that needs no lock, ending with its end-of-interrupt, for
/// the interrupts whose work may wait for the big lock with the interrupt acknowledged: the
/// local APIC's (the local timer, the reschedule IPI: `smp::on_ipi` counts them and sends
/// the EOI) and the PIT's (counted, the clock advanced, the PIC acknowledged, as a deferred
/// tick does; line 0 is never the PIC's spurious one). A device's line is serviced before its
/// acknowledgement (a level-triggered line acknowledged first would fire again at once), and
/// exceptions have nothing to acknowledge.
fn acknowledge_user_interrupt(number: u8) {
    if number >= vector::IPI_BASE {
        crate::smp::on_ipi(number);
    } else if number == vector::TIMER {
        let line = vector::TIMER - vector::PIC_BASE;
        crate::proc::kstat::irq(Some(line));
        time::on_tick();
        pic::end_of_interrupt(line);
    }
}

/// How a trap from ring 3 (other than the page fault, the NMI and the lock-free IPIs) takes
/// the big kernel lock, after [`acknowledge_user_interrupt`]. The task holds nothing, so
/// whatever no longer has an interrupt in service waits halted with interrupts enabled, as a
/// system call's entry does: an acknowledged interrupt ([`crate::bkl::lock_after_eoi`]) and an
/// exception, the task's own doing ([`crate::bkl::lock`]). A device's line, still in service,
/// spins with interrupts off ([`crate::bkl::lock_in_interrupt`]): before its EOI the local
/// APIC holds back the release's IPI; so do the machine check and double fault, which only
/// die.
pub fn lock_for_user_trap(number: u8) {
    match number {
        n if n >= vector::IPI_BASE || n == vector::TIMER => crate::bkl::lock_after_eoi(),
        n if (vector::PIC_BASE..vector::PIC_END).contains(&n)
            || (vector::IOAPIC_BASE..vector::IOAPIC_END).contains(&n)
            || n == vector::MACHINE_CHECK
            || n == vector::DOUBLE_FAULT =>
        {
            crate::bkl::lock_in_interrupt()
        }
        _ => crate::bkl::lock(),
    }
}

/// A device interrupt on ISA line `line` delivered through the I/O APIC (`ioapic`): the device
/// is serviced (for a level-triggered line, that lowers it) before the local APIC's EOI, which
/// the I/O APIC also sees for level-triggered entries.
fn routed_interrupt(line: u8) {
    crate::proc::kstat::irq(Some(line));
    if crate::drivers::virtio_blk::handles_irq(line) {
        crate::drivers::virtio_blk::on_interrupt(line);
    }
    crate::apic::end_of_interrupt();
}

/// The PIT's tick in kernel mode on a CPU that could not take the big lock (another CPU
/// holds it): the clock and this CPU's time now, the rest by the holder (`tick::defer`). A
/// task waiting here for the lock (halted in its entry's wait, or in a `cond_resched` window)
/// is owed the tick as system time, charged when it next gets the lock (`owe_tick`), as an
/// application processor's own tick does there (`LOCAL_TIMER` above). Before, the boot CPU
/// counted the tick in `/proc/stat` as system time but charged the task nothing, so the same
/// wait was CPU time on an AP and none on CPU 0. System time is Linux's answer: a task
/// waiting for a spinning lock (the old `lock_kernel` big lock among them) is running in the
/// kernel at every tick that samples it; the halt is only how this wait spins cheaply under
/// TCG, and the CPU runs nothing else meanwhile.
fn deferred_tick() {
    let line = vector::TIMER - vector::PIC_BASE;
    crate::proc::kstat::irq(Some(line));
    // This CPU's `/proc/stat` tick (idle or system), and the task's charge if it has one.
    crate::proc::cputime::owe_tick(false);
    time::on_tick();
    crate::tick::defer();
    pic::end_of_interrupt(line);
}

/// A hardware interrupt on PIC line `line`.
fn interrupt(line: u8) {
    if pic::is_spurious(line) {
        return;
    }
    crate::proc::kstat::irq(Some(line));
    if line == vector::TIMER - vector::PIC_BASE {
        time::on_tick();
        crate::tick::run();
        // Here, not in `tick::run`: a deferred tick's work may run on another CPU, and only
        // the boot CPU rewrites the I/O APIC after boot.
        crate::drivers::virtio_blk::steer_interrupts();
    } else if crate::drivers::virtio_blk::handles_irq(line) {
        crate::drivers::virtio_blk::on_interrupt(line);
    }
    // Other lines are masked; one that fires anyway is acknowledged and otherwise ignored.
    pic::end_of_interrupt(line);
}
