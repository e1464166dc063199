//! Delivery on the way back to ring 3 (Linux `arch_do_signal_or_restart`), and the restart of
//! interrupted system calls.
//!
//! [`request_check`] gates it: set whenever a signal is queued, a mask changes or a task is switched
//! in; the return to ring 3 costs one load while it is clear (no signal work anywhere). A set flag
//! makes the next return look at its task: dequeue the lowest deliverable signal (faults first),
//! act on it (ignore, default action, or a handler frame, nested for each further signal), and
//! settle an interrupted system call: `-ERESTARTSYS` restarts (RIP back over the 2-byte
//! `syscall`, RAX the number again) unless a handler without `SA_RESTART` ran, when it becomes
//! `-EINTR`; `-ERESTARTNOHAND` restarts only if no handler ran.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use super::frame::{self, Delivery};
use super::{
    bit, death_status, default_action, stop_channel, Default_, SigAction, SigInfo, SA_NODEFER,
    SA_RESETHAND, SA_RESTART, SIGSEGV, SIG_DFL, SIG_IGN, SYNCHRONOUS, UNBLOCKABLE,
};
use crate::errno::Errno;
use crate::idt::TrapFrame;
use crate::proc::{exit_current, with_current, State, TABLE};

/// The `vector` of a system-call frame that must leave through `iretq` rather than `sysretq`
/// (the system-call exit compares the vector with its own, 0x100).
pub const IRET_VECTOR: u64 = 0x101;

/// Some task may have a signal to act on at its next return to ring 3: sets the signal bit of
/// the return-to-user work word (`proc::RETURN_WORK`), so the common return still costs one
/// load for both kinds of work.
pub fn request_check() {
    crate::proc::request_signal_work();
}
/// The system call that is returning `-ERESTART*`: `tid << 32 | number` (`u64::MAX`: none);
/// set by the system-call exit just before the return-to-user work (one CPU, interrupts off).
/// The tid makes a note left by a thread that exited instead (killed) harmless to the next.
/// One per CPU: the note and the return that reads it run on the CPU of the system call.
static RESTART_NR: [AtomicU64; crate::percpu::MAX_CPUS] =
    [const { AtomicU64::new(u64::MAX) }; crate::percpu::MAX_CPUS];

/// Whether the current thread has a signal it does not block (pending for it or its group),
/// or its group is stopping: either ends an interruptible sleep.
pub fn deliverable(task: &crate::proc::Task) -> bool {
    let group = task.group.lock();
    (task.sig.pending.mask | group.sig.shared.mask) & !task.sigmask != 0 || group.sig.stopped
}

/// The system call `nr` returned `-ERESTARTSYS`/`-ERESTARTNOHAND` in `frame.rax`: the return
/// path must restart it or turn it into `EINTR`.
#[cold]
#[inline(never)]
pub fn note_restart(nr: u64) {
    let tid = u64::from(crate::proc::current_tid());
    RESTART_NR[crate::percpu::cpu_id()].store(tid << 32 | (nr & 0xffff_ffff), Ordering::Relaxed);
    request_check();
}

/// The signal work of a return to ring 3 (called when a check was requested; the request is already cleared). Out of line and
/// cold, so that the common return (flag clear) keeps its small prologue.
#[cold]
#[inline(never)]
pub fn on_return(frame: &mut TrapFrame) {
    let tid = u64::from(crate::proc::current_tid());
    let mut restart = match RESTART_NR[crate::percpu::cpu_id()].swap(u64::MAX, Ordering::Relaxed) {
        note if note != u64::MAX && note >> 32 == tid => Some(note & 0xffff_ffff),
        _ => None,
    };
    loop {
        match next_step() {
            Step::Nothing => break,
            Step::Stop => wait_while_stopped(),
            Step::Fatal(status) => exit_current(status),
            Step::Handle(signal, info, action, old_mask, altstack) => {
                if let Some(nr) = restart.take() {
                    let ret = frame.rax as i64;
                    if ret == -(Errno::ERESTARTSYS as i64) && action.flags & SA_RESTART != 0 {
                        rewind(frame, nr);
                    } else {
                        frame.rax = Errno::EINTR.to_ret();
                    }
                }
                let delivery = Delivery {
                    signal,
                    info: &info,
                    action: &action,
                    old_mask,
                    altstack,
                };
                match frame::setup(frame, &delivery) {
                    Ok(alt) => with_current(|t| t.sig.altstack = alt),
                    // Linux `force_sigsegv`: the frame could not be built.
                    Err(_) => {
                        let core = crate::proc::with_group(|g| {
                            g.rlimits.get(crate::proc::rlimit::RLIMIT_CORE).cur
                        });
                        exit_current(death_status(SIGSEGV, core))
                    }
                }
            }
        }
    }
    if let Some(nr) = restart {
        // No handler ran: the call starts again (and sigsuspend's mask comes back first).
        rewind(frame, nr);
    }
    with_current(|t| {
        if let Some(mask) = t.sig.saved_mask.take() {
            t.sigmask = mask;
        }
    });
}

/// The call is made again: the same one, or for `-ERESTART_RESTARTBLOCK` `restart_syscall`,
/// which continues from the task's restart block (Linux `handle_signal`/`arch_do_signal`'s
/// `__NR_restart_syscall`).
fn rewind(frame: &mut TrapFrame, nr: u64) {
    let block = frame.rax == Errno::ERESTART_RESTARTBLOCK.to_ret();
    frame.rip -= 2;
    frame.rax = if block {
        super::restart::RESTART_SYSCALL
    } else {
        nr
    };
}

enum Step {
    Nothing,
    Stop,
    Fatal(i32),
    Handle(u8, SigInfo, SigAction, u64, super::AltStack),
}

/// Dequeues the next deliverable signal of the current thread and decides what it does (Linux
/// `get_signal`). Ignored signals are consumed here.
#[doc(alias = "get_signal")]
fn next_step() -> Step {
    let tid = crate::proc::current_tid();
    let mut table = TABLE.lock();
    loop {
        let task = table
            .get_mut(&tid)
            .expect("the current task is in the table");
        if task.killed {
            return Step::Nothing;
        }
        let group_arc = task.group.clone();
        let mut group = group_arc.lock();
        if group.sig.stopped {
            return Step::Stop;
        }
        let own = task.sig.pending.mask & !task.sigmask;
        let shared = group.sig.shared.mask & !task.sigmask;
        let pick = |m: u64| {
            let sync = m & SYNCHRONOUS;
            let m = if sync != 0 { sync } else { m };
            (m != 0).then(|| m.trailing_zeros() as u8 + 1)
        };
        let (signal, info) = if let Some(s) = pick(own) {
            (s, task.sig.pending.take(s))
        } else if let Some(s) = pick(shared) {
            (s, group.sig.shared.take(s))
        } else {
            return Step::Nothing;
        };
        let action = group.sigactions[signal as usize];
        match action.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(signal) {
                Default_::Ignore | Default_::Continue => continue,
                Default_::Stop => {
                    // Linux `do_signal_stop`: the group stops, the parent hears of it.
                    // The parent hears of it when the last thread stops
                    // (`participate_group_stop`, from `wait_while_stopped`).
                    group.sig.stopped = true;
                    group.sig.stop_pending = Some(signal);
                    group.sig.cont_report = false;
                    let tgid = task.tgid;
                    drop(group);
                    // Every other thread stops too (Linux sets JOBCTL_STOP_PENDING on each):
                    // sleepers wake to see it, the others at their next return to ring 3.
                    for t in table.values_mut().filter(|t| t.tgid == tgid) {
                        if matches!(t.state, State::Blocked { .. }) {
                            crate::proc::sched::make_runnable(t);
                        }
                    }
                    request_check();
                    return Step::Stop;
                }
                Default_::Terminate | Default_::Core => {
                    let core = group.rlimits.get(crate::proc::rlimit::RLIMIT_CORE).cur;
                    return Step::Fatal(death_status(signal, core));
                }
            },
            _ => {
                if action.flags & SA_RESETHAND != 0 {
                    group.sigactions[signal as usize] = SigAction::default();
                }
                let old_mask = task.sig.saved_mask.take().unwrap_or(task.sigmask);
                let mut mask = task.sigmask | action.mask;
                if action.flags & SA_NODEFER == 0 {
                    mask |= bit(signal);
                }
                task.sigmask = mask & !UNBLOCKABLE;
                return Step::Handle(signal, info, action, old_mask, task.sig.altstack);
            }
        }
    }
}

/// Sleeps while the current group is stopped (until SIGCONT or SIGKILL).
fn wait_while_stopped() {
    loop {
        let stopped = {
            let mut table = TABLE.lock();
            let t = table
                .get_mut(&crate::proc::current_tid())
                .expect("the current task is in the table");
            let stopped = !t.killed && t.group.lock().sig.stopped;
            let tgid = t.tgid;
            if stopped {
                crate::proc::set_blocked(t, stop_channel(tgid), None);
                super::participate_group_stop(&mut table, tgid);
            }
            stopped
        };
        if !stopped {
            return;
        }
        crate::proc::sched::schedule();
    }
}

/// rt_sigreturn: back from a handler to the interrupted context.
pub fn sigreturn(frame: &mut TrapFrame) -> Result<u64, Errno> {
    match frame::restore(frame) {
        Ok(restored) => {
            with_current(|t| {
                // Linux: a call interrupted before the handler ran is not continued by a
                // later restart_syscall.
                t.sig.restart = super::restart::Restart::None;
                t.sigmask = restored.mask & !UNBLOCKABLE;
                if let Some(alt) = restored.altstack {
                    if alt.flags & super::SS_AUTODISARM != 0 {
                        t.sig.altstack = alt;
                    }
                }
            });
            request_check();
            // Leave through iretq: RCX and R11 are restored too, which sysretq would clobber.
            frame.vector = IRET_VECTOR;
            Ok(frame.rax)
        }
        Err(_) => {
            // Linux: a bad frame is SIGSEGV.
            let core =
                crate::proc::with_group(|g| g.rlimits.get(crate::proc::rlimit::RLIMIT_CORE).cur);
            exit_current(death_status(SIGSEGV, core))
        }
    }
}
