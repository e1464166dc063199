//! RLIMIT_CPU (issue 17): a process that spins past its soft CPU limit gets SIGXCPU, again
//! every further second (the soft limit moves up a second each time, as Linux's
//! `check_process_timers` does), and SIGKILL at the hard limit; with no hard limit SIGXCPU's
//! default action ends it. cowlab stored the limit and never enforced it. Runs on the host too.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::{
    getrlimit, setrlimit, Rlimit, RLIMIT_CORE, RLIMIT_CPU, RLIM_INFINITY,
};
use cowlab_userland::sys::nr;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const MAP_SHARED: u32 = 0x01;
const SIGKILL: i32 = 9;
const SIGXCPU: usize = 24;
const SIG_BLOCK: usize = 0;
const RT_SIGTIMEDWAIT: usize = 128;
/// A child that got no verdict from the kernel gives up after this much wall time.
const GUARD_NS: u64 = 30_000_000_000;
/// Exit code of a child that gave up.
const GAVE_UP: i32 = 100;

/// Takes a pending SIGXCPU without waiting (`rt_sigtimedwait` with a zero timeout).
fn take_xcpu() -> bool {
    let set: u64 = 1 << (SIGXCPU - 1);
    let ts = [0i64, 0];
    // SAFETY: the set and the timespec are live locals; no siginfo is asked for.
    let r = unsafe {
        raw(
            RT_SIGTIMEDWAIT,
            [
                &set as *const u64 as usize,
                0,
                ts.as_ptr() as usize,
                8,
                0,
                0,
            ],
        )
    };
    r == Ok(SIGXCPU)
}

/// `ru_utime + ru_stime` of `getrusage(RUSAGE_SELF)`, in microseconds.
fn self_cpu_us() -> u64 {
    let mut ru = [0i64; 18];
    // SAFETY: `ru` is a live 144-byte `struct rusage`.
    let _ = unsafe { raw(nr::GETRUSAGE, [0, ru.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    ((ru[0] + ru[2]) * 1_000_000 + ru[1] + ru[3]) as u64
}

fn block_xcpu() {
    let mask: u64 = 1 << (SIGXCPU - 1);
    // SAFETY: the new mask is a live local; no old mask is asked for.
    let _ = unsafe {
        raw(
            nr::RT_SIGPROCMASK,
            [SIG_BLOCK, &mask as *const u64 as usize, 0, 8, 0, 0],
        )
    };
}

/// Burns CPU until killed or [`GUARD_NS`]; with `count`, takes each SIGXCPU (blocked) and
/// records the soft limit after it in `count[1..]`.
fn spin(count: Option<&[AtomicU64; 4]>) -> ! {
    let start = monotonic_ns();
    let mut x = 0u64;
    loop {
        for i in 0..200_000u64 {
            x = core::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        if let Some(c) = count {
            if take_xcpu() {
                let n = c[0].fetch_add(1, Ordering::Relaxed) + 1;
                let soft = getrlimit(RLIMIT_CPU).map_or(0, |r| r.cur);
                if let Some(slot) = c.get(n as usize) {
                    slot.store(soft, Ordering::Relaxed);
                }
            }
        }
        if monotonic_ns() - start > GUARD_NS {
            exit_now(GAVE_UP);
        }
    }
}

fn child(limit: Rlimit, count: Option<&[AtomicU64; 4]>) -> Result<i32, ()> {
    match fork() {
        Ok(0) => {
            // No core file on the host; the wait status then carries no core bit either.
            let _ = setrlimit(RLIMIT_CORE, Rlimit { cur: 0, max: 0 });
            if count.is_some() {
                block_xcpu();
            }
            if setrlimit(RLIMIT_CPU, limit).is_err() {
                exit_now(101);
            }
            spin(count)
        }
        Ok(pid) => Ok(pid),
        Err(_) => Err(()),
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob2_cpu");
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("map the shared counters", false);
        return t.finish();
    };
    // SAFETY: a fresh shared read-write page, aligned for AtomicU64s, alive until exit.
    let count = unsafe { &*(page as *const [AtomicU64; 4]) };

    // Soft 1 s, hard 3 s, SIGXCPU blocked and taken by polling.
    let Ok(pid) = child(Rlimit { cur: 1, max: 3 }, Some(count)) else {
        t.check("fork", false);
        return t.finish();
    };
    let status = waitpid(pid, 0).map(|(_, s)| s);
    t.eq(
        "killed by SIGKILL at the 3 s hard limit",
        status,
        Ok(SIGKILL),
    );
    t.eq(
        "SIGXCPU at 1 s and at 2 s of CPU time",
        count[0].load(Ordering::Relaxed),
        2,
    );
    t.eq(
        "the soft limit is 2 s after the first SIGXCPU",
        count[1].load(Ordering::Relaxed),
        2,
    );
    t.eq(
        "and 3 s after the second",
        count[2].load(Ordering::Relaxed),
        3,
    );

    // Soft 1 s, no hard limit, SIGXCPU's default action (core: terminate).
    let Ok(pid) = child(
        Rlimit {
            cur: 1,
            max: RLIM_INFINITY,
        },
        None,
    ) else {
        t.check("fork", false);
        return t.finish();
    };
    let status = waitpid(pid, 0).map(|(_, s)| s);
    t.eq(
        "SIGXCPU's default action ends it",
        status,
        Ok(SIGXCPU as i32),
    );

    // getrusage(RUSAGE_SELF) counts this process's own CPU time: 300 ms of spinning.
    let cpu_before = self_cpu_us();
    let start = monotonic_ns();
    let mut x = 0u64;
    while self_cpu_us() < cpu_before + 300_000 && monotonic_ns() - start < GUARD_NS {
        for i in 0..100_000u64 {
            x = core::hint::black_box(x.wrapping_add(i));
        }
    }
    let wall_ms = (monotonic_ns() - start) / 1_000_000;
    let got = self_cpu_us() - cpu_before;
    t.check_why(
        "getrusage's CPU time reaches 300 ms of spinning (not stuck at 0)",
        got >= 300_000,
        format_args!("{got} us after {wall_ms} ms"),
    );
    t.finish()
}
