//! Process system calls: identity, fork/exec/exit/wait, signals (record and default actions),
//! FS base, resource usage, reboot.

use super::{Args, Errno, SysResult};
use crate::idt::TrapFrame;
use crate::proc::{self, sched, signal, with_current};
use crate::uaccess::{read_cstr, read_cstr_array, UserPtr};

pub fn getpid() -> SysResult {
    Ok(u64::from(proc::current_pid()))
}

pub fn getppid() -> SysResult {
    Ok(u64::from(with_current(|p| p.parent)))
}

pub fn sched_yield() -> SysResult {
    sched::yield_now();
    Ok(0)
}

pub fn fork(frame: &TrapFrame) -> SysResult {
    Ok(u64::from(proc::fork::fork(frame)?))
}

const CLONE_VM: u64 = 0x100;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_VFORK: u64 = 0x4000;

/// clone with fork semantics: a new process with a copy of the address space. Threads
/// (`CLONE_VM` without `CLONE_VFORK`, `CLONE_THREAD`) are not supported yet.
pub fn clone(a: Args, frame: &TrapFrame) -> SysResult {
    let flags = a.get(0);
    if flags & CLONE_THREAD != 0 || (flags & CLONE_VM != 0 && flags & CLONE_VFORK == 0) {
        return Err(Errno::EINVAL);
    }
    let mut child_frame = *frame;
    if a.get(1) != 0 {
        child_frame.rsp = a.get(1);
    }
    Ok(u64::from(proc::fork::fork(&child_frame)?))
}

pub fn execve(a: Args, frame: &mut TrapFrame) -> SysResult {
    let path = read_cstr(a.get(0), 4096)?;
    let argv = read_cstr_array(a.get(1), 1024)?;
    let envp = read_cstr_array(a.get(2), 1024)?;
    proc::exec::execve(frame, &path, &argv, &envp)?;
    // The frame now enters the new program; RAX is 0 there.
    Ok(0)
}

pub fn exit(a: Args) -> SysResult {
    proc::exit_current(proc::exit_status(a.i32(0)))
}

pub fn wait4(a: Args) -> SysResult {
    let status_ptr = a.get(1);
    let options = a.get(2) as u32;
    if options & !(1 | 2 | 8 | 0x4000_0000 | 0x8000_0000) != 0 {
        return Err(Errno::EINVAL);
    }
    let status_out = if status_ptr != 0 {
        Some(UserPtr::<i32>::new(status_ptr)?)
    } else {
        None
    };
    let (pid, status, minflt) = proc::wait::wait(a.int(0), options)?;
    if pid != 0 {
        if let Some(out) = status_out {
            out.write(&status)?;
        }
        if a.get(3) != 0 {
            let usage = Rusage {
                minflt: minflt as i64,
                ..Rusage::default()
            };
            UserPtr::<Rusage>::new(a.get(3))?.write(&usage)?;
        }
    }
    Ok(u64::from(pid))
}

pub fn kill(a: Args) -> SysResult {
    let signal = a.get(1);
    if signal > 64 {
        return Err(Errno::EINVAL);
    }
    let pid = a.int(0);
    match pid {
        p if p > 0 => signal::send(u32::try_from(p).map_err(|_| Errno::ESRCH)?, signal as u8)?,
        // Every process but init and the caller (Linux: those the caller may signal).
        -1 => {
            let me = proc::current_pid();
            let targets: alloc::vec::Vec<u32> = proc::TABLE
                .lock()
                .keys()
                .copied()
                .filter(|&p| p != 1 && p != me)
                .collect();
            if targets.is_empty() {
                return Err(Errno::ESRCH);
            }
            for target in targets {
                let _ = signal::send(target, signal as u8);
            }
        }
        // Process groups are not modelled yet: the caller's group (0) is the caller, and no
        // other group exists.
        0 => signal::send(proc::current_pid(), signal as u8)?,
        _ => return Err(Errno::ESRCH),
    }
    Ok(0)
}

pub fn rt_sigaction(a: Args) -> SysResult {
    let sig = a.get(0);
    if sig == 0 || sig > 64 || a.get(3) != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if a.get(1) != 0 {
        // struct sigaction: handler, flags, restorer, mask.
        Some(UserPtr::<[u64; 4]>::new(a.get(1))?.read()?)
    } else {
        None
    };
    if new.is_some() && (sig == 9 || sig == 19) {
        return Err(Errno::EINVAL);
    }
    let old = with_current(|p| {
        let old = p.sigactions[sig as usize];
        if let Some(new) = new {
            p.sigactions[sig as usize] = new[0];
        }
        old
    });
    if a.get(2) != 0 {
        UserPtr::<[u64; 4]>::new(a.get(2))?.write(&[old, 0, 0, 0])?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(a: Args) -> SysResult {
    if a.get(3) != 8 {
        return Err(Errno::EINVAL);
    }
    let set = if a.get(1) != 0 {
        Some(UserPtr::<u64>::new(a.get(1))?.read()?)
    } else {
        None
    };
    let how = a.get(0);
    if set.is_some() && how > 2 {
        return Err(Errno::EINVAL);
    }
    let old = with_current(|p| {
        let old = p.sigmask;
        if let Some(set) = set {
            let unblockable = (1 << 8) | (1 << 18); // SIGKILL, SIGSTOP (bit n-1)
            p.sigmask = match how {
                0 => old | set,
                1 => old & !set,
                _ => set,
            } & !unblockable;
        }
        old
    });
    if a.get(2) != 0 {
        UserPtr::<u64>::new(a.get(2))?.write(&old)?;
    }
    Ok(0)
}

const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;

pub fn arch_prctl(a: Args) -> SysResult {
    match a.get(0) {
        ARCH_SET_FS => {
            let base = a.get(1);
            if base >= cowlab_mm::aspace::USER_END {
                return Err(Errno::EPERM);
            }
            with_current(|p| p.fs_base = base);
            x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new(base));
            Ok(0)
        }
        ARCH_GET_FS => {
            let base = with_current(|p| p.fs_base);
            UserPtr::<u64>::new(a.get(1))?.write(&base)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

pub fn set_tid_address(_a: Args) -> SysResult {
    Ok(u64::from(proc::current_pid()))
}

/// `struct rusage`: two timevals and fourteen longs.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    ixrss: i64,
    idrss: i64,
    isrss: i64,
    minflt: i64,
    majflt: i64,
    rest: [i64; 8],
}

pub fn getrusage(a: Args) -> SysResult {
    let who = a.int(0);
    let minflt = match who {
        0 => with_current(|p| p.aspace.clone()).map_or(0, |aspace| aspace.lock().minor_faults()),
        -1 => with_current(|p| p.child_minflt),
        _ => return Err(Errno::EINVAL),
    };
    let usage = Rusage {
        minflt: minflt as i64,
        ..Rusage::default()
    };
    UserPtr::<Rusage>::new(a.get(1))?.write(&usage)?;
    Ok(0)
}

const REBOOT_MAGIC1: u64 = 0xfee1_dead;
const REBOOT_CMD_POWER_OFF: u64 = 0x4321_fedc;
const REBOOT_CMD_RESTART: u64 = 0x0123_4567;
const REBOOT_CMD_HALT: u64 = 0xcdef_0123;

/// reboot: power-off, halt and restart all end QEMU. cowlab extension: with POWER_OFF the
/// fourth argument (unused by Linux for that command) is the status QEMU exits with; `init`
/// passes the status of the program it ran.
pub fn reboot(a: Args) -> SysResult {
    if a.get(0) as u32 as u64 != REBOOT_MAGIC1 {
        return Err(Errno::EINVAL);
    }
    let status = match a.get(2) as u32 as u64 {
        REBOOT_CMD_POWER_OFF => a.get(3) as i32,
        REBOOT_CMD_HALT | REBOOT_CMD_RESTART => 0,
        _ => return Err(Errno::EINVAL),
    };
    if proc::current_pid() != 1 {
        return Err(Errno::EPERM);
    }
    sched::request_shutdown(status);
    proc::exit_current(proc::exit_status(status))
}
