//! Signals, default actions only: a fatal signal ends the whole process (thread group): every
//! thread is marked to exit at its next return to ring 3 (or has its sleep interrupted first),
//! and the group's wait status is the signal. Handlers set with `rt_sigaction` are recorded (one
//! table per group) but not yet delivered; a signal whose action is "ignore" (or whose default
//! is to ignore, like SIGCHLD) is dropped. Faults in ring 3 kill the group at once, with one
//! console line.
#![deny(unsafe_code)]

use cowlab_mm::VirtAddr;

use super::{exit_current, kill_group_locked, with_current, Pid, State, TABLE};
use crate::errno::Errno;
use crate::idt::TrapFrame;

pub const SIGILL: u8 = 4;
pub const SIGTRAP: u8 = 5;
pub const SIGBUS: u8 = 7;
pub const SIGFPE: u8 = 8;
pub const SIGKILL: u8 = 9;
pub const SIGSEGV: u8 = 11;
pub const SIGPIPE: u8 = 13;
pub const SIGCHLD: u8 = 17;

const SIG_IGN: u64 = 1;

pub fn name(signal: u8) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        SIGILL => "SIGILL",
        SIGTRAP => "SIGTRAP",
        6 => "SIGABRT",
        SIGBUS => "SIGBUS",
        SIGFPE => "SIGFPE",
        SIGKILL => "SIGKILL",
        SIGSEGV => "SIGSEGV",
        SIGPIPE => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// Whether the default action of `signal` is to ignore it: SIGCHLD, SIGCONT, SIGURG, SIGWINCH.
/// Job control does not exist yet, so the stop signals (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU)
/// are ignored too rather than wrongly terminating the process.
fn ignored_by_default(signal: u8) -> bool {
    matches!(signal, SIGCHLD | 18 | 19 | 20 | 21 | 22 | 23 | 28)
}

/// Sends `signal` to the process with pid `pid` (kill; a tid names its thread's process, as
/// in Linux): `ESRCH` if there is none.
pub fn send(pid: Pid, signal: u8) -> Result<(), Errno> {
    let mut table = TABLE.lock();
    let p = table.get(&pid).ok_or(Errno::ESRCH)?;
    if p.state == State::Dead {
        return Err(Errno::ESRCH);
    }
    let tgid = p.tgid;
    // init gets only the signals it has handlers for (Linux), and handlers are not delivered
    // yet: signals sent to pid 1 are dropped. Faults still kill it (`kill_for_fault`).
    if matches!(p.state, State::Zombie(_)) || signal == 0 || tgid == 1 {
        return Ok(());
    }
    let action = p.group.lock().sigactions[signal as usize];
    let ignored =
        signal != SIGKILL && (action == SIG_IGN || (action == 0 && ignored_by_default(signal)));
    if ignored {
        return Ok(());
    }
    kill_group_locked(&mut table, tgid, i32::from(signal));
    Ok(())
}

/// Sends `signal` to the calling process (SIGPIPE from a pipe write). Its default action ends
/// the whole process, so it goes to the group rather than to the calling thread.
pub fn send_signal_current(signal: u8) {
    let _ = send(super::current_pid(), signal);
}

/// A CPU exception in ring 3 that the kernel does not resolve: print the one line and end the
/// process with `signal`.
pub fn kill_for_fault(frame: &TrapFrame, signal: u8, addr: Option<u64>) -> ! {
    let (pid, tid, name, aspace) =
        with_current(|p| (p.tgid, p.tid, p.name.clone(), p.aspace.clone()));
    let vma = match (addr, &aspace) {
        (Some(a), Some(shared)) if a < cowlab_mm::aspace::USER_END => match shared.try_lock() {
            Some(aspace) => aspace.find_vma(VirtAddr::new(a)).map(|v| {
                let prot = v.prot();
                alloc::format!(
                    "vma {:#x}-{:#x} {}{}{}",
                    v.start().as_u64(),
                    v.end().as_u64(),
                    if prot.read() { 'r' } else { '-' },
                    if prot.write() { 'w' } else { '-' },
                    if prot.exec() { 'x' } else { '-' }
                )
            }),
            None => None,
        },
        _ => None,
    };
    // Nothing may stay alive across `exit_current`, which does not return: drop our reference
    // to the address space so that exit can tear it down.
    drop(aspace);
    let vma = vma.unwrap_or_else(|| alloc::string::String::from("no mapping"));
    let addr = addr.map_or_else(
        || alloc::string::String::from("-"),
        |a| alloc::format!("{a:#x}"),
    );
    // The thread that faulted, when it is not the main one, after the fields tests match.
    let thread = if tid != pid {
        alloc::format!(" (thread {tid})")
    } else {
        alloc::string::String::new()
    };
    println!(
        "cowlab: pid {pid} ({name}) killed by {}: addr={addr} rip={:#x} {vma}{thread}",
        self::name(signal),
        frame.rip
    );
    exit_current(i32::from(signal))
}
