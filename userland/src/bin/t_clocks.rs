//! The clock calls beyond the two CPU-time ids (`t_abi_proc` has those), with Linux's answers
//! (the same checks pass on the host): `clock_getres` for every clock, a null result pointer,
//! `EINVAL` before `EFAULT`; the CPU-time clocks of `clock_getcpuclockid` and
//! `pthread_getcpuclockid` (negative ids: `~pid << 3 | per_thread << 2 | part`) for the caller,
//! another process, a zombie and a reaped one, and a thread outside the caller's group;
//! `clock_nanosleep` on another process's CPU clock; `CLOCK_TAI`.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, nr, Errno};
use cowlab_userland::test::Tester;
use cowlab_userland::thread::gettid;

cowlab_userland::entry!(main);

const EINVAL: i32 = 22;
const EFAULT: i32 = 14;
const SIGKILL: i32 = 9;

const CPUCLOCK_PROF: i64 = 0;
const CPUCLOCK_VIRT: i64 = 1;
const CPUCLOCK_SCHED: i64 = 2;

/// A CPU-time clock id as glibc's `MAKE_PROCESS_CPUCLOCK`/`MAKE_THREAD_CPUCLOCK` build it.
fn cpuclock(pid: i32, thread: bool, part: i64) -> i64 {
    (!i64::from(pid) << 3) | if thread { 4 } else { 0 } | part
}

fn sc(n: usize, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the calls below pass valid pointers to local timespecs, or deliberately bad
    // addresses the kernel must reject with EFAULT.
    unsafe { raw(n, a) }
}

/// `clock_gettime(clock)` in nanoseconds, or the errno.
fn gettime(clock: i64) -> Result<u64, i32> {
    let mut ts = [0i64; 2];
    sc(
        nr::CLOCK_GETTIME,
        [clock as usize, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
    )
    .map(|_| ts[0] as u64 * 1_000_000_000 + ts[1] as u64)
    .map_err(|e| e.0)
}

/// `clock_getres(clock)` in nanoseconds, or the errno.
fn getres(clock: i64) -> Result<u64, i32> {
    let mut ts = [-1i64; 2];
    sc(
        nr::CLOCK_GETRES,
        [clock as usize, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
    )
    .map(|_| ts[0] as u64 * 1_000_000_000 + ts[1] as u64)
    .map_err(|e| e.0)
}

/// `clock_nanosleep(clock, 0, {0, ns})`: 0 or the errno.
fn nanosleep_on(clock: i64, ns: u64) -> i32 {
    let ts = [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64];
    match sc(
        nr::CLOCK_NANOSLEEP,
        [clock as usize, 0, ts.as_ptr() as usize, 0, 0, 0],
    ) {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_clocks");
    resolutions(&mut t);
    own_cpu_clocks(&mut t);
    other_process_clocks(&mut t);
    thread_clocks(&mut t);
    tai(&mut t);
    t.finish()
}

/// Every clock has a resolution: at most a tick (Linux: 1 ns, 4 ms for the coarse clocks and
/// the PROF/VIRT CPU clocks; cowlab: 1 us, 10 ms for the CPU clocks).
fn resolutions(t: &mut Tester) {
    let clocks = [0i64, 1, 2, 3, 4, 5, 6, 7, 11];
    let res: alloc::vec::Vec<_> = clocks.iter().map(|&c| getres(c)).collect();
    t.check_why(
        "clock_getres of REALTIME, MONOTONIC, the CPU clocks, RAW, the coarse clocks, BOOTTIME, TAI: 0 < res <= 10 ms",
        res.iter().all(|r| matches!(r, Ok(ns) if (1..=10_000_000).contains(ns))),
        alloc::format!("{res:?}"),
    );
    let bad: alloc::vec::Vec<_> = [-1i64, 10, 12, 100, i64::from(i32::MAX)]
        .iter()
        .map(|&c| getres(c))
        .collect();
    t.check_why(
        "clock_getres of an id that names no clock is EINVAL",
        bad.iter().all(|r| *r == Err(EINVAL)),
        alloc::format!("{bad:?}"),
    );
    t.eq(
        "clock_getres with a null result pointer succeeds",
        sc(nr::CLOCK_GETRES, [1, 0, 0, 0, 0, 0]).map_err(|e| e.0),
        Ok(0),
    );
    t.eq(
        "clock_getres to an unmapped address is EFAULT",
        sc(nr::CLOCK_GETRES, [1, 8, 0, 0, 0, 0]).map_err(|e| e.0),
        Err(EFAULT),
    );
    t.eq(
        "clock_getres of a bad clock to an unmapped address is EINVAL (the clock is checked first)",
        sc(nr::CLOCK_GETRES, [100, 8, 0, 0, 0, 0]).map_err(|e| e.0),
        Err(EINVAL),
    );
    // The upper half of the register is not part of a clockid_t.
    t.eq(
        "clock_getres reads only the low 32 bits of the clock id",
        getres(0x7777_0000_0000_0001).is_ok(),
        true,
    );
}

/// Spins for about `ms` milliseconds of this thread's CPU time.
fn burn_ms(ms: u64) {
    let start = gettime(3).unwrap_or(0);
    while gettime(3).unwrap_or(u64::MAX) < start + ms * 1_000_000 {
        core::hint::spin_loop();
    }
}

/// The caller's own clocks by their encoded ids read what `CLOCK_PROCESS_CPUTIME_ID` and
/// `CLOCK_THREAD_CPUTIME_ID` read; part 3 is no clock.
fn own_cpu_clocks(t: &mut Tester) {
    burn_ms(30);
    let pid = getpid();
    let tid = gettid();
    let within = |fixed: i64, encoded: i64| {
        let a = gettime(fixed);
        let b = gettime(encoded);
        let c = gettime(fixed);
        match (a, b, c) {
            (Ok(a), Ok(b), Ok(c)) => (a <= b && b <= c, alloc::format!("{a} <= {b} <= {c}")),
            r => (false, alloc::format!("{r:?}")),
        }
    };
    for (name, fixed, encoded) in [
        (
            "clock_getcpuclockid(0)",
            2,
            cpuclock(0, false, CPUCLOCK_SCHED),
        ),
        (
            "clock_getcpuclockid(getpid())",
            2,
            cpuclock(pid, false, CPUCLOCK_SCHED),
        ),
        (
            "pthread_getcpuclockid(self), pid 0",
            3,
            cpuclock(0, true, CPUCLOCK_SCHED),
        ),
        (
            "pthread_getcpuclockid(self), by tid",
            3,
            cpuclock(tid, true, CPUCLOCK_SCHED),
        ),
    ] {
        let (ok, why) = within(fixed, encoded);
        t.check_why(
            &alloc::format!("{name} reads between two readings of clock {fixed}"),
            ok,
            why,
        );
    }
    // PROF counts ticks on Linux too (user plus system time sampled at each tick), so it may
    // be a tick or so off the run time clock 2 reads there.
    let sched = gettime(2);
    let prof = gettime(cpuclock(0, false, CPUCLOCK_PROF));
    t.check_why(
        "the PROF part of the process clock is within 20 ms of clock 2",
        matches!((sched, prof), (Ok(s), Ok(p)) if s.abs_diff(p) <= 20_000_000),
        alloc::format!("{sched:?} {prof:?}"),
    );
    let virt = gettime(cpuclock(0, false, CPUCLOCK_VIRT));
    let prof = gettime(cpuclock(0, false, CPUCLOCK_PROF));
    t.check_why(
        "the VIRT part (user time) is at most the PROF part (user and system time)",
        matches!((virt, prof), (Ok(v), Ok(p)) if v <= p),
        alloc::format!("{virt:?} {prof:?}"),
    );
    let part3 = [
        gettime(cpuclock(0, false, 3)),
        gettime(cpuclock(0, true, 3)),
        getres(cpuclock(0, false, 3)),
    ];
    t.check_why(
        "a CPU clock id with part 3 is EINVAL (without the per-thread bit: a descriptor's clock)",
        part3.iter().all(|r| *r == Err(EINVAL)),
        alloc::format!("{part3:?}"),
    );
    let sleeps = [
        nanosleep_on(cpuclock(0, true, CPUCLOCK_SCHED), 1_000),
        nanosleep_on(cpuclock(tid, true, CPUCLOCK_SCHED), 1_000),
    ];
    // The time is read and checked before the clock is: an unmapped one is EFAULT even on
    // the caller's own thread clock.
    let order = sc(
        nr::CLOCK_NANOSLEEP,
        [cpuclock(0, true, CPUCLOCK_SCHED) as usize, 0, 8, 0, 0, 0],
    )
    .map_err(|e| e.0);
    t.eq(
        "clock_nanosleep on the own thread clock with an unmapped time: EFAULT first",
        order,
        Err(EFAULT),
    );
    t.check_why(
        "clock_nanosleep on the caller's own thread clock by its encoded id is EINVAL",
        sleeps == [EINVAL, EINVAL],
        alloc::format!("{sleeps:?}"),
    );
    let res = getres(cpuclock(0, false, CPUCLOCK_PROF));
    t.check_why(
        "clock_getres of an encoded CPU clock: 0 < res <= 10 ms",
        matches!(res, Ok(ns) if (1..=10_000_000).contains(&ns)),
        alloc::format!("{res:?}"),
    );
}

/// Another process's clock: readable while it runs and as a zombie, `EINVAL` once reaped; a
/// sleep on it ends when that process has used the time; its thread clock is not ours.
fn other_process_clocks(t: &mut Tester) {
    let child = match fork() {
        Ok(0) => loop {
            core::hint::spin_loop();
        },
        Ok(pid) => pid,
        Err(e) => {
            t.check_why("fork a spinning child", false, e.0);
            return;
        }
    };
    let clock = cpuclock(child, false, CPUCLOCK_SCHED);
    let before = gettime(clock);
    let slept = nanosleep_on(clock, 30_000_000);
    let after = gettime(clock);
    t.check_why(
        "a relative 30 ms clock_nanosleep on a spinning child's clock ends once it used 30 ms",
        slept == 0 && matches!((before, after), (Ok(b), Ok(a)) if a >= b + 30_000_000),
        alloc::format!("returned {slept}, {before:?} -> {after:?}"),
    );
    t.eq(
        "another process's thread is not the caller's: its thread clock is EINVAL",
        gettime(cpuclock(child, true, CPUCLOCK_SCHED)),
        Err(EINVAL),
    );
    let _ = kill(child, SIGKILL);
    // A zombie until reaped: waitid(P_PID, WEXITED | WNOWAIT) waits for the exit and leaves
    // the child a zombie.
    let mut si = [0i32; 32];
    let zombie_wait = sc(
        247,
        [
            1,
            child as usize,
            si.as_mut_ptr() as usize,
            4 | 0x0100_0000,
            0,
            0,
        ],
    );
    let zombie = zombie_wait.map_err(|e| e.0).and_then(|_| gettime(clock));
    let _ = waitpid(child, 0);
    let reaped = gettime(clock);
    t.check_why(
        "a killed child's clock reads until it is reaped, then is EINVAL",
        zombie.is_ok() && reaped == Err(EINVAL),
        alloc::format!("before wait {zombie:?}, after {reaped:?}"),
    );
    t.eq(
        "clock_nanosleep on a reaped process's clock is EINVAL",
        nanosleep_on(clock, 1_000),
        EINVAL,
    );
}

static SPIN: AtomicBool = AtomicBool::new(true);

fn spin(_: usize) -> i32 {
    while SPIN.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    0
}

/// A second thread's clock: readable by its tid, and a sleep on it ends when it has run.
fn thread_clocks(t: &mut Tester) {
    SPIN.store(true, Ordering::Release);
    let Ok(thread) = cowlab_userland::thread::spawn(spin, 0) else {
        t.check("spawn a spinning thread", false);
        return;
    };
    let clock = cpuclock(thread.tid(), true, CPUCLOCK_SCHED);
    let before = gettime(clock);
    let slept = nanosleep_on(clock, 20_000_000);
    let after = gettime(clock);
    SPIN.store(false, Ordering::Release);
    thread.join();
    t.check_why(
        "a relative 20 ms clock_nanosleep on a spinning thread's clock ends once it ran 20 ms",
        slept == 0 && matches!((before, after), (Ok(b), Ok(a)) if a >= b + 20_000_000),
        alloc::format!("returned {slept}, {before:?} -> {after:?}"),
    );
}

/// `CLOCK_TAI` is `CLOCK_REALTIME` plus the TAI offset (0 until `adjtimex` sets it; 37 s
/// where NTP did), and sleeps.
fn tai(t: &mut Tester) {
    let real = gettime(0);
    let tai = gettime(11);
    t.check_why(
        "CLOCK_TAI reads CLOCK_REALTIME plus an offset of 0 to 40 s",
        matches!((real, tai), (Ok(r), Ok(x)) if x >= r && x - r < 40_000_000_000),
        alloc::format!("{real:?} {tai:?}"),
    );
    t.eq(
        "clock_nanosleep(CLOCK_TAI, 1 ms)",
        nanosleep_on(11, 1_000_000),
        0,
    );
}
