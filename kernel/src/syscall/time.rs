//! Clocks and sleeps. Time comes from the TSC (`time::micros_since_boot`); `CLOCK_REALTIME` (and
//! `gettimeofday`, `time`) add the wall-clock time the CMOS RTC gave at boot (`rtc`). Sleeps block until the TSC says the time
//! has passed, checking at each timer tick (10 ms).
#![deny(unsafe_code)]

use super::{Args, Errno, SysResult};
use crate::proc;
use crate::proc::signal::restart::{self, Restart};
use crate::time as clock;
use crate::uaccess::UserPtr;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

fn now() -> Timespec {
    timespec(clock::micros_since_boot())
}

fn realtime() -> Timespec {
    timespec(crate::rtc::realtime_micros())
}

/// A CPU-time clock's reading: user plus system ticks.
fn cpu_clock(cpu: crate::proc::cputime::CpuTime) -> Timespec {
    timespec(crate::proc::cputime::CpuTime::micros(cpu.total()))
}

fn timespec(us: u64) -> Timespec {
    Timespec {
        sec: (us / 1_000_000) as i64,
        nsec: ((us % 1_000_000) * 1000) as i64,
    }
}

pub fn clock_gettime(a: Args) -> SysResult {
    // REALTIME, MONOTONIC, PROCESS/THREAD_CPUTIME, MONOTONIC_RAW, REALTIME_COARSE,
    // MONOTONIC_COARSE, BOOTTIME.
    if !(0..=7).contains(&a.int(0)) {
        return Err(Errno::EINVAL);
    }
    // REALTIME and REALTIME_COARSE are wall-clock time; PROCESS_CPUTIME_ID and
    // THREAD_CPUTIME_ID the caller's CPU time (its group's, its own), in ticks (Linux's are
    // finer: scheduler runtime); the others count from boot. The CPU clocks returned the time
    // since boot before.
    let t = match a.int(0) {
        0 | 5 => realtime(),
        2 => cpu_clock(crate::proc::cputime::group_self(crate::proc::current_pid())),
        3 => cpu_clock(crate::proc::cputime::thread_self()),
        _ => now(),
    };
    UserPtr::<Timespec>::new(a.get(1))?.write(&t)?;
    Ok(0)
}

pub fn gettimeofday(a: Args) -> SysResult {
    if a.get(0) != 0 {
        let t = realtime();
        UserPtr::<[i64; 2]>::new(a.get(0))?.write(&[t.sec, t.nsec / 1000])?;
    }
    Ok(0)
}

pub fn time(a: Args) -> SysResult {
    let t = realtime().sec;
    if a.get(0) != 0 {
        UserPtr::<i64>::new(a.get(0))?.write(&t)?;
    }
    Ok(t as u64)
}

/// A sleep interrupted by a handler ends with `EINTR` whatever `SA_RESTART` says (Linux
/// restarts it only when no handler ran).
fn no_restart_after_handler(e: Errno) -> Errno {
    if e == Errno::ERESTARTSYS {
        Errno::ERESTARTNOHAND
    } else {
        e
    }
}

/// `clock_nanosleep(CLOCK_PROCESS_CPUTIME_ID)`: until the caller's thread group has used the
/// given CPU time (absolute) or that much more (relative), as Linux's `posix_cpu_nsleep`. A
/// group whose only thread sleeps here uses none, so it sleeps until a signal, as on Linux.
/// Checked at each tick: CPU time is counted in ticks. Before, the CPU clocks were the time
/// since boot here while `clock_gettime` read CPU time, and an absolute sleep to "CPU time + 1 s"
/// returned at once (review, session 13).
fn cpu_nanosleep(absolute: bool, req: u64, rem: u64) -> SysResult {
    use crate::proc::cputime::{group_self, CpuTime};
    let used = || CpuTime::micros(group_self(proc::current_pid()).total());
    let ts = UserPtr::<Timespec>::new(req)?.read()?;
    if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
        return Err(Errno::EINVAL);
    }
    let us = (ts.sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add((ts.nsec as u64).div_ceil(1000));
    let target = if absolute {
        us
    } else {
        used().saturating_add(us)
    };
    let tick_us = 1_000_000 / crate::time::TICK_HZ;
    loop {
        let now = used();
        if now >= target {
            return Ok(0);
        }
        if let Err(e) = proc::sleep_micros((target - now).min(tick_us)) {
            if !absolute && rem != 0 {
                let left = target.saturating_sub(used());
                UserPtr::<Timespec>::new(rem)?.write(&timespec(left))?;
            }
            return Err(if e == Errno::ERESTARTSYS {
                Errno::EINTR
            } else {
                e
            });
        }
    }
}

/// A relative sleep of `*req`: until a deadline (Linux `hrtimer_nanosleep`).
fn sleep_for(req: u64, rem: u64) -> SysResult {
    let ts = UserPtr::<Timespec>::new(req)?.read()?;
    if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
        return Err(Errno::EINVAL);
    }
    let ns = (ts.sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.nsec as u64);
    let deadline = clock::micros_since_boot().saturating_add(ns.div_ceil(1000));
    sleep_until(deadline, rem)
}

/// Sleeps until `deadline` (microseconds since boot). When a signal ends it early, the time
/// left goes to `*rem` (if `rem` is not 0; `EFAULT` if it cannot be written) and the call
/// returns `-ERESTART_RESTARTBLOCK` with the deadline recorded: `EINTR` if a handler runs,
/// else `restart_syscall` sleeps out the rest (Linux `do_nanosleep`, `nanosleep_copyout`,
/// `hrtimer_nanosleep_restart`).
fn sleep_until(deadline: u64, rem: u64) -> SysResult {
    let left = deadline.saturating_sub(clock::micros_since_boot());
    let Err(e) = proc::sleep_micros(left) else {
        return Ok(0);
    };
    if rem != 0 {
        let left = deadline
            .saturating_sub(clock::micros_since_boot())
            .saturating_mul(1000);
        let left = Timespec {
            sec: (left / 1_000_000_000) as i64,
            nsec: (left % 1_000_000_000) as i64,
        };
        UserPtr::<Timespec>::new(rem)?.write(&left)?;
    }
    if e != Errno::ERESTARTSYS {
        return Err(e);
    }
    restart::set(Restart::Nanosleep { deadline, rem });
    Err(Errno::ERESTART_RESTARTBLOCK)
}

/// restart_syscall (219): continues the call the thread's restart block recorded; `EINTR`
/// when there is none (Linux `do_no_restart_syscall`).
pub fn restart_syscall() -> SysResult {
    match restart::take() {
        Restart::None => Err(Errno::EINTR),
        Restart::Nanosleep { deadline, rem } => sleep_until(deadline, rem),
        Restart::Poll {
            ufds,
            nfds,
            deadline,
        } => super::poll::poll_restart(ufds, nfds, deadline),
    }
}

pub fn nanosleep(a: Args) -> SysResult {
    sleep_for(a.get(0), a.get(1))
}

pub fn clock_nanosleep(a: Args) -> SysResult {
    match a.int(0) {
        // THREAD_CPUTIME_ID (a thread cannot sleep on its own CPU time), MONOTONIC_RAW and the
        // coarse clocks have no sleep in Linux: `EOPNOTSUPP` from the system call (measured on
        // 6.18; glibc's wrapper answers EINVAL for the thread clock itself, before the call).
        3..=6 => return Err(Errno::EOPNOTSUPP),
        2 => return cpu_nanosleep(a.get(1) & 1 != 0, a.get(2), a.get(3)),
        0 | 1 | 7 => {}
        _ => return Err(Errno::EINVAL),
    }
    if a.get(1) & 1 != 0 {
        // TIMER_ABSTIME: sleep until the given time.
        let ts = UserPtr::<Timespec>::new(a.get(2))?.read()?;
        if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
            return Err(Errno::EINVAL);
        }
        let target_us = (ts.sec.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(ts.nsec.max(0) as u64 / 1000);
        let now_us = if matches!(a.int(0), 0 | 5) {
            crate::rtc::realtime_micros()
        } else {
            clock::micros_since_boot()
        };
        if target_us > now_us {
            proc::sleep_micros(target_us - now_us).map_err(no_restart_after_handler)?;
        }
        return Ok(0);
    }
    sleep_for(a.get(2), a.get(3))
}
