//! Signal system calls: argument decoding for `proc::signal` (actions, masks, sending,
//! waiting, the alternate stack, sigreturn, interval timers).
#![deny(unsafe_code)]

use super::{Args, Errno, SysResult};
use crate::idt::TrapFrame;
use crate::proc::signal::{self, ops, AltStack, SigAction, SigInfo, Target, SI_TKILL, SI_USER};
use crate::proc::{self, TABLE};
use crate::uaccess::UserPtr;

/// The size of the kernel's `sigset_t`: every call taking one insists on it (Linux).
const SIGSET_SIZE: u64 = 8;

fn signal_number(v: u64) -> Result<u8, Errno> {
    let v = v as u32;
    if v > 64 {
        return Err(Errno::EINVAL);
    }
    Ok(v as u8)
}

pub fn rt_sigaction(a: Args) -> SysResult {
    if a.get(3) != SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let sig = signal_number(a.get(0))?;
    let new = match a.get(1) {
        0 => None,
        p => Some(UserPtr::<SigAction>::new(p)?.read()?),
    };
    let old_out = match a.get(2) {
        0 => None,
        p => Some(UserPtr::<SigAction>::new(p)?),
    };
    let old = ops::sigaction(sig, new)?;
    if let Some(out) = old_out {
        out.write(&old)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(a: Args) -> SysResult {
    if a.get(3) != SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let set = match a.get(1) {
        0 => None,
        p => Some(UserPtr::<u64>::new(p)?.read()?),
    };
    let old = ops::sigprocmask(a.i32(0) as u32, set)?;
    if a.get(2) != 0 {
        UserPtr::<u64>::new(a.get(2))?.write(&old)?;
    }
    Ok(0)
}

pub fn rt_sigreturn(frame: &mut TrapFrame) -> SysResult {
    signal::deliver::sigreturn(frame)
}

pub fn rt_sigpending(a: Args) -> SysResult {
    if a.get(1) > SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let set = ops::sigpending();
    let bytes = set.to_le_bytes();
    crate::uaccess::UserSlice::new(a.get(0), a.get(1) as usize)?
        .write(&bytes[..a.get(1) as usize])?;
    Ok(0)
}

pub fn rt_sigsuspend(a: Args) -> SysResult {
    if a.get(1) != SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let mask = UserPtr::<u64>::new(a.get(0))?.read()?;
    Err(ops::sigsuspend(mask))
}

/// pause: rt_sigsuspend with the current mask.
pub fn pause() -> SysResult {
    let mask = proc::with_current(|t| t.sigmask);
    Err(ops::sigsuspend(mask))
}

pub fn rt_sigtimedwait(a: Args) -> SysResult {
    if a.get(3) != SIGSET_SIZE {
        return Err(Errno::EINVAL);
    }
    let set = UserPtr::<u64>::new(a.get(0))?.read()?;
    let deadline = match a.get(2) {
        0 => None,
        ts => {
            let [sec, nsec] = UserPtr::<[i64; 2]>::new(ts)?.read()?;
            if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
                return Err(Errno::EINVAL);
            }
            let micros = (sec as u64)
                .saturating_mul(1_000_000)
                .saturating_add((nsec as u64).div_ceil(1000));
            Some(crate::time::micros_since_boot().saturating_add(micros))
        }
    };
    let info_out = match a.get(1) {
        0 => None,
        p => Some(UserPtr::<SigInfo>::new(p)?),
    };
    let info = ops::sigtimedwait(set, deadline)?;
    if let Some(out) = info_out {
        out.write(&info)?;
    }
    Ok(info.signo as u64)
}

/// `stack_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct StackT {
    sp: u64,
    flags: i32,
    pad: i32,
    size: u64,
}

pub fn sigaltstack(a: Args, frame: &TrapFrame) -> SysResult {
    let new = match a.get(0) {
        0 => None,
        p => {
            let s = UserPtr::<StackT>::new(p)?.read()?;
            Some(AltStack {
                sp: s.sp,
                size: s.size,
                flags: s.flags,
            })
        }
    };
    let old_out = match a.get(1) {
        0 => None,
        p => Some(UserPtr::<StackT>::new(p)?),
    };
    let old = ops::sigaltstack(new, frame.rsp)?;
    if let Some(out) = old_out {
        out.write(&StackT {
            sp: old.sp,
            flags: old.flags,
            pad: 0,
            size: old.size,
        })?;
    }
    Ok(0)
}

pub fn kill(a: Args) -> SysResult {
    let sig = signal_number(a.get(1))?;
    let pid = a.i32(0);
    let me = proc::current_pid();
    let info = SigInfo::from_process(sig, SI_USER, me);
    match pid {
        p if p > 0 => {
            signal::permission::may_signal(p as u32, sig)?;
            signal::send(Target::Process(p as u32), info)?
        }
        // Every process but init and the caller (Linux: those the caller may signal).
        -1 => {
            let targets: alloc::vec::Vec<u32> = TABLE
                .lock()
                .values()
                .filter(|t| t.is_leader() && t.tgid != 1 && t.tgid != me)
                .map(|t| t.tgid)
                .collect();
            signal::permission::kill_all_from_user(&targets, info)?;
        }
        // The caller's process group, or group -pid (Linux `__kill_pgrp_info`): ESRCH if it
        // has no member, else success if any member got it.
        p => {
            let pgid = if p == 0 {
                proc::pgrp::current_job().pgid
            } else if p == i32::MIN {
                return Err(Errno::ESRCH);
            } else {
                (-p) as u32
            };
            signal::permission::kill_pgrp_from_user(pgid, info)?;
        }
    }
    Ok(0)
}

/// tkill/tgkill/rt_tgsigqueueinfo: a signal to one thread (glibc's `raise`, `abort`,
/// `pthread_kill`, `pthread_cancel`). `EINVAL` for a non-positive id or a bad signal, `ESRCH`
/// for no such thread (or one of another process).
fn signal_thread(tgid: Option<i32>, tid: i32, info: SigInfo) -> SysResult {
    if info.signo > 64 || tid <= 0 || tgid.is_some_and(|g| g <= 0) {
        return Err(Errno::EINVAL);
    }
    let owner = TABLE
        .lock()
        .get(&(tid as u32))
        .filter(|t| t.user_visible())
        .map(|t| t.tgid)
        .ok_or(Errno::ESRCH)?;
    if tgid.is_some_and(|g| g as u32 != owner) {
        return Err(Errno::ESRCH);
    }
    signal::permission::may_signal(tid as u32, info.signo as u8)?;
    signal::send(Target::Thread(tid as u32), info)?;
    Ok(0)
}

pub fn tkill(a: Args) -> SysResult {
    let sig = signal_number(a.get(1))?;
    let info = SigInfo::from_process(sig, SI_TKILL, proc::current_pid());
    signal_thread(None, a.i32(0), info)
}

pub fn tgkill(a: Args) -> SysResult {
    let sig = signal_number(a.get(2))?;
    let info = SigInfo::from_process(sig, SI_TKILL, proc::current_pid());
    signal_thread(Some(a.i32(0)), a.i32(1), info)
}

/// The caller's `siginfo` for rt_(tg)sigqueueinfo: only negative codes other than SI_TKILL
/// to another process (Linux: else EPERM, lest the sender pose as the kernel).
fn queued_info(sig: u8, addr: u64, to_self: bool) -> Result<SigInfo, Errno> {
    let mut info = UserPtr::<SigInfo>::new(addr)?.read()?;
    if (info.code >= 0 || info.code == SI_TKILL) && !to_self {
        return Err(Errno::EPERM);
    }
    info.signo = i32::from(sig);
    Ok(info)
}

pub fn rt_sigqueueinfo(a: Args) -> SysResult {
    let sig = signal_number(a.get(1))?;
    let pid = a.i32(0);
    let info = queued_info(sig, a.get(2), pid as u32 == proc::current_pid())?;
    if pid <= 0 {
        return Err(Errno::ESRCH);
    }
    signal::permission::may_signal(pid as u32, sig)?;
    signal::send(Target::Process(pid as u32), info)?;
    Ok(0)
}

pub fn rt_tgsigqueueinfo(a: Args) -> SysResult {
    let sig = signal_number(a.get(2))?;
    let info = queued_info(sig, a.get(3), a.i32(0) as u32 == proc::current_pid())?;
    signal_thread(Some(a.i32(0)), a.i32(1), info)
}

/// `struct itimerval`: interval, then value, each a timeval.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ItimerVal {
    interval: [i64; 2],
    value: [i64; 2],
}

fn timeval_micros(tv: [i64; 2]) -> Result<u64, Errno> {
    if tv[0] < 0 || !(0..1_000_000).contains(&tv[1]) {
        return Err(Errno::EINVAL);
    }
    Ok((tv[0] as u64)
        .saturating_mul(1_000_000)
        .saturating_add(tv[1] as u64))
}

fn micros_timeval(us: u64) -> [i64; 2] {
    [(us / 1_000_000) as i64, (us % 1_000_000) as i64]
}

const ITIMER_REAL: i32 = 0;
const ITIMER_VIRTUAL: i32 = 1;
const ITIMER_PROF: i32 = 2;

/// `(remaining, interval)` of timer `which`, re-armed with `new` if given: `ITIMER_REAL` on
/// the time since boot (`signal::timer`), `ITIMER_VIRTUAL` and `ITIMER_PROF` on the process's
/// CPU time (`cputime::cpu_itimer`, checked at each tick). `EINVAL` for another `which`.
fn itimer(which: i32, new: Option<(u64, u64)>) -> Result<(u64, u64), Errno> {
    let pid = proc::current_pid();
    match which {
        ITIMER_REAL => Ok(match new {
            Some((value, interval)) => signal::timer::set(pid, value, interval),
            None => signal::timer::get(pid),
        }),
        ITIMER_VIRTUAL => Ok(proc::cputime::cpu_itimer(false, new)),
        ITIMER_PROF => Ok(proc::cputime::cpu_itimer(true, new)),
        _ => Err(Errno::EINVAL),
    }
}

pub fn getitimer(a: Args) -> SysResult {
    let (value, interval) = itimer(a.i32(0), None)?;
    UserPtr::<ItimerVal>::new(a.get(1))?.write(&ItimerVal {
        interval: micros_timeval(interval),
        value: micros_timeval(value),
    })?;
    Ok(0)
}

pub fn setitimer(a: Args) -> SysResult {
    // The new value is read before `which` is checked (Linux: a bad pointer is `EFAULT`
    // whatever the timer).
    let new = match a.get(1) {
        0 => ItimerVal::default(),
        p => UserPtr::<ItimerVal>::new(p)?.read()?,
    };
    if !(ITIMER_REAL..=ITIMER_PROF).contains(&a.i32(0)) {
        return Err(Errno::EINVAL);
    }
    let (value, interval) = (timeval_micros(new.value)?, timeval_micros(new.interval)?);
    let old_out = match a.get(2) {
        0 => None,
        p => Some(UserPtr::<ItimerVal>::new(p)?),
    };
    let (old_value, old_interval) = itimer(a.i32(0), Some((value, interval)))?;
    if let Some(out) = old_out {
        out.write(&ItimerVal {
            interval: micros_timeval(old_interval),
            value: micros_timeval(old_value),
        })?;
    }
    Ok(0)
}

/// alarm: ITIMER_REAL in whole seconds; returns the seconds left of the old one (rounded to
/// the nearest, at least 1 if one was armed, as Linux).
pub fn alarm(a: Args) -> SysResult {
    let seconds = u64::from(a.get(0) as u32);
    let (old, _) = signal::timer::set(proc::current_pid(), seconds * 1_000_000, 0);
    Ok(if old == 0 {
        0
    } else {
        ((old + 500_000) / 1_000_000).max(1)
    })
}
