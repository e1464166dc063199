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

fn timespec(us: u64) -> Timespec {
    Timespec {
        sec: (us / 1_000_000) as i64,
        nsec: ((us % 1_000_000) * 1000) as i64,
    }
}

/// Which part of a CPU-time clock (Linux's `CPUCLOCK_PROF`, `CPUCLOCK_VIRT`,
/// `CPUCLOCK_SCHED`): user plus system time, user time only, run time. cowlab counts CPU time
/// in ticks and has no finer run time, so `Sched` reads as `Prof`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CpuPart {
    Prof,
    Virt,
    Sched,
}

/// A clock id as the clock calls take it: a fixed clock, or a CPU-time clock of a process or a
/// thread. `CLOCK_PROCESS_CPUTIME_ID` and `CLOCK_THREAD_CPUTIME_ID` are the caller's; a
/// negative id is the clock `clock_getcpuclockid`/`pthread_getcpuclockid` encode:
/// `~pid << 3 | per_thread << 2 | part`, pid 0 meaning the caller (Linux's `CPUCLOCK_PID`,
/// `CPUCLOCK_PERTHREAD_MASK`, `CPUCLOCK_WHICH`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// `CLOCK_REALTIME`, `CLOCK_REALTIME_COARSE`, `CLOCK_TAI` (Linux's TAI offset is 0 until
    /// `adjtimex` sets one, which cowlab does not have).
    Realtime,
    /// `CLOCK_MONOTONIC`, `_RAW`, `_COARSE`, `CLOCK_BOOTTIME` (nothing suspends).
    Monotonic,
    /// A thread group's CPU time.
    Process(proc::Pid, CpuPart),
    /// One thread's CPU time.
    Thread(proc::Pid, CpuPart),
}

/// The clock an id names, `EINVAL` for none, as Linux's `clockid_to_kclock` and, for the CPU
/// clocks, `pid_for_clock`'s lookup: a process clock's pid must be a thread group's (for
/// `clock_gettime`, `gettime`, also the caller's own thread id); a thread clock's thread must
/// be in the caller's group.
fn clock_of(id: i64, gettime: bool) -> Result<Clock, Errno> {
    if id >= 0 {
        return match id {
            0 | 5 | 11 => Ok(Clock::Realtime),
            1 | 4 | 6 | 7 => Ok(Clock::Monotonic),
            2 => Ok(Clock::Process(proc::current_pid(), CpuPart::Sched)),
            3 => Ok(Clock::Thread(proc::current_tid(), CpuPart::Sched)),
            _ => Err(Errno::EINVAL),
        };
    }
    let part = match id & 3 {
        0 => CpuPart::Prof,
        1 => CpuPart::Virt,
        2 => CpuPart::Sched,
        // 3 is no CPU clock; without the per-thread bit (`id & 7 == 3`, Linux's `CLOCKFD`)
        // it is the clock of a descriptor (PTP), which cowlab has none of: `EINVAL` either way.
        _ => return Err(Errno::EINVAL),
    };
    let pid = !(id >> 3) as proc::Pid;
    if id & 4 != 0 {
        let tid = if pid == 0 { proc::current_tid() } else { pid };
        match proc::cputime::thread(tid) {
            Some((tgid, _)) if tgid == proc::current_pid() => Ok(Clock::Thread(tid, part)),
            _ => Err(Errno::EINVAL),
        }
    } else if pid == 0 {
        Ok(Clock::Process(proc::current_pid(), part))
    } else {
        match proc::cputime::thread(pid) {
            Some((tgid, _)) if tgid == pid || (gettime && pid == proc::current_tid()) => {
                Ok(Clock::Process(tgid, part))
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

/// A CPU clock's reading in microseconds, `None` once its process or thread is gone.
fn cpu_micros(clock: Clock) -> Option<u64> {
    let (cpu, part) = match clock {
        Clock::Process(tgid, part) => (proc::cputime::group(tgid)?, part),
        Clock::Thread(tid, part) if tid == proc::current_tid() => {
            (proc::cputime::thread_self(), part)
        }
        Clock::Thread(tid, part) => (proc::cputime::thread(tid)?.1, part),
        Clock::Realtime | Clock::Monotonic => return None,
    };
    let ticks = match part {
        CpuPart::Virt => cpu.user,
        CpuPart::Prof | CpuPart::Sched => cpu.total(),
    };
    Some(proc::cputime::CpuTime::micros(ticks))
}

pub fn clock_gettime(a: Args) -> SysResult {
    // The fixed clocks first: `clock_gettime(CLOCK_MONOTONIC)` is a hot call (no vDSO).
    let t = match a.int(0) {
        0 | 5 | 11 => realtime(),
        1 | 4 | 6 | 7 => now(),
        id => {
            // The CPU clocks count ticks (Linux's are finer: scheduler runtime). A process or
            // thread that goes between the lookup and the reading reads as `EINVAL`, as if
            // looked up a moment later.
            timespec(cpu_micros(clock_of(id, true)?).ok_or(Errno::EINVAL)?)
        }
    };
    UserPtr::<Timespec>::new(a.get(1))?.write(&t)?;
    Ok(0)
}

/// clock_getres(clockid_t, struct timespec *): the clock's resolution, nothing written for a
/// null pointer. cowlab's clocks read the TSC in microseconds, so every fixed clock's
/// resolution is 1 us (Linux's high-resolution clocks say 1 ns, its coarse ones a tick); the
/// CPU clocks count whole ticks (Linux: a tick for `PROF`/`VIRT`, 1 ns for `SCHED`).
pub fn clock_getres(a: Args) -> SysResult {
    let ns = match clock_of(a.int(0), false)? {
        Clock::Realtime | Clock::Monotonic => 1_000,
        Clock::Process(..) | Clock::Thread(..) => 1_000_000_000 / crate::time::TICK_HZ,
    };
    if a.get(1) != 0 {
        UserPtr::<Timespec>::new(a.get(1))?.write(&Timespec {
            sec: 0,
            nsec: ns as i64,
        })?;
    }
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

/// `clock_nanosleep` on a CPU clock: until the process or thread has used the given CPU time
/// (absolute) or that much more (relative), as Linux's `posix_cpu_nsleep`. A group whose only
/// thread sleeps on its own clock uses none, so it sleeps until a signal, as on Linux; so does
/// a sleep on a process or thread that is gone (a zombie's clock stands still on Linux too).
/// Checked at each tick: CPU time is counted in ticks. Before, the CPU clocks were the time
/// since boot here while `clock_gettime` read CPU time, and an absolute sleep to "CPU time + 1 s"
/// returned at once (review, session 13).
fn cpu_nanosleep(clock: Clock, absolute: bool, ts: Timespec, rem: u64) -> SysResult {
    let used = || cpu_micros(clock);
    let us = (ts.sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add((ts.nsec as u64).div_ceil(1000));
    let start = used().ok_or(Errno::EINVAL)?;
    let target = if absolute {
        us
    } else {
        start.saturating_add(us)
    };
    let tick_us = 1_000_000 / crate::time::TICK_HZ;
    let mut last = start;
    loop {
        if let Some(now) = used() {
            last = now;
        }
        if last >= target {
            return Ok(0);
        }
        if let Err(e) = proc::sleep_micros((target - last).min(tick_us)) {
            if !absolute && rem != 0 {
                let left = target.saturating_sub(used().unwrap_or(last));
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
    let absolute = a.get(1) & 1 != 0;
    match a.int(0) {
        // THREAD_CPUTIME_ID (a thread cannot sleep on its own CPU time), MONOTONIC_RAW and the
        // coarse clocks have no sleep in Linux: `EOPNOTSUPP` from the system call (measured on
        // 6.18; glibc's wrapper answers EINVAL for the thread clock itself, before the call).
        3..=6 => return Err(Errno::EOPNOTSUPP),
        0 | 1 | 7 | 11 => {}
        // A descriptor's clock (`CLOCKFD`) has no sleep.
        id if id < 0 && id & 7 == 3 => return Err(Errno::EOPNOTSUPP),
        id if id < 0 || id == 2 => {
            // Linux reads and checks the time before the CPU clock's own checks.
            let ts = UserPtr::<Timespec>::new(a.get(2))?.read()?;
            if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
                return Err(Errno::EINVAL);
            }
            return match clock_of(id, false)? {
                // The caller's own thread clock by its encoded id: `EINVAL` (Linux's
                // `posix_cpu_nsleep` diagnoses it before sleeping).
                Clock::Thread(tid, _) if tid == proc::current_tid() => Err(Errno::EINVAL),
                clock => cpu_nanosleep(clock, absolute, ts, a.get(3)),
            };
        }
        _ => return Err(Errno::EINVAL),
    }
    if absolute {
        // TIMER_ABSTIME: sleep until the given time.
        let ts = UserPtr::<Timespec>::new(a.get(2))?.read()?;
        if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
            return Err(Errno::EINVAL);
        }
        let target_us = (ts.sec.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(ts.nsec.max(0) as u64 / 1000);
        let now_us = if matches!(a.int(0), 0 | 11) {
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
