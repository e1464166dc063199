//! Signals, default actions only: a fatal signal is recorded as pending and ends the process at
//! its next return to ring 3 (or interrupts its sleep first). Handlers set with `rt_sigaction`
//! are recorded but not yet delivered; a signal whose action is "ignore" (or whose default is to
//! ignore, like SIGCHLD) is dropped. Faults in ring 3 kill at once, with one console line.

use cowlab_mm::VirtAddr;

use super::{exit_current, with_current, Pid, State, TABLE};
use crate::idt::TrapFrame;
use crate::syscall::Errno;

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

/// Sends `signal` to process `pid` (kill): `ESRCH` if there is none.
pub fn send(pid: Pid, signal: u8) -> Result<(), Errno> {
    let mut table = TABLE.lock();
    let p = table.get_mut(&pid).ok_or(Errno::ESRCH)?;
    // init gets only the signals it has handlers for (Linux), and handlers are not delivered
    // yet: signals sent to pid 1 are dropped. Faults still kill it (`kill_for_fault`).
    if matches!(p.state, State::Zombie(_)) || signal == 0 || pid == 1 {
        return Ok(());
    }
    let ignored = signal != SIGKILL
        && (p.sigactions[signal as usize] == SIG_IGN
            || (p.sigactions[signal as usize] == 0 && ignored_by_default(signal)));
    if ignored {
        return Ok(());
    }
    p.pending_kill.get_or_insert(signal);
    if matches!(p.state, State::Blocked { .. }) {
        p.state = State::Runnable;
    }
    Ok(())
}

/// Sends `signal` to the calling process (SIGPIPE from a pipe write).
pub fn send_signal_current(signal: u8) {
    let _ = send(super::current_pid(), signal);
}

/// A CPU exception in ring 3 that the kernel does not resolve: print the one line and end the
/// process with `signal`.
pub fn kill_for_fault(frame: &TrapFrame, signal: u8, addr: Option<u64>) -> ! {
    let (pid, name, aspace) = with_current(|p| (p.pid, p.name.clone(), p.aspace.clone()));
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
    println!(
        "cowlab: pid {pid} ({name}) killed by {}: addr={addr} rip={:#x} {vma}",
        self::name(signal),
        frame.rip
    );
    exit_current(i32::from(signal))
}
