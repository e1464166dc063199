//! Tasks on several CPUs (issue 16, the scheduler side): threads pinned with
//! `sched_setaffinity` run at the same time on different CPUs (`getcpu` differs), unpinned
//! spinners spread over every allowed CPU, another thread's affinity change moves a spinning
//! thread within a bounded time, `/proc/stat` has a `cpuN` line per allowed CPU whose user
//! ticks advance while a thread spins there, and system time spent on the last CPU (reads of
//! `/dev/urandom`) shows in that CPU's line and in the thread's `RUSAGE_THREAD` time.
//!
//! Runs natively on the host too. With one allowed CPU the checks that need two are skipped
//! (with a line saying so); `cargo xtask test` boots it with 2 CPUs.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sched::{sched_getaffinity, sched_setaffinity};
use cowlab_userland::test::Tester;
use cowlab_userland::thread::{gettid, spawn};

cowlab_userland::entry!(main);

const GETCPU: usize = 309;
const GETRUSAGE: usize = 98;
const RUSAGE_THREAD: usize = 1;
/// Most threads one phase starts (one per allowed CPU, at most this many).
const MAX_THREADS: usize = 8;
/// How long the affinity move may take (loose: a CI host may deschedule the vCPU threads).
const MOVE_LIMIT_NS: u64 = 3_000_000_000;

fn getcpu() -> u32 {
    let (mut cpu, mut node) = (u32::MAX, u32::MAX);
    // SAFETY: the kernel writes one u32 at each pointer.
    let _ = unsafe {
        raw(
            GETCPU,
            [
                &mut cpu as *mut u32 as usize,
                &mut node as *mut u32 as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    cpu
}

/// The calling thread's system time in microseconds (`getrusage(RUSAGE_THREAD)`).
fn thread_stime_us() -> i64 {
    let mut usage = [0i64; 18];
    // SAFETY: the kernel writes one `struct rusage` (18 words) at `usage`.
    let _ = unsafe {
        raw(
            GETRUSAGE,
            [RUSAGE_THREAD, usage.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    };
    usage[2] * 1_000_000 + usage[3]
}

fn cpus_of(mask: u64) -> alloc::vec::Vec<usize> {
    (0..64).filter(|cpu| mask >> cpu & 1 != 0).collect()
}

/// `/proc/stat`'s `cpuN` lines: (N, user, system) for each.
fn proc_stat_cpus() -> alloc::vec::Vec<(usize, u64, u64)> {
    let mut text = alloc::vec::Vec::new();
    if let Ok(fd) = open(c"/proc/stat", 0) {
        let mut buf = [0u8; 1024];
        while let Ok(n) = read(fd, &mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        let _ = close(fd);
    }
    let mut out = alloc::vec::Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"cpu") else {
            continue;
        };
        let mut fields = rest
            .split(|&b| b == b' ')
            .filter(|f| !f.is_empty())
            .map(|f| {
                core::str::from_utf8(f)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            });
        // `cpu  ...` (the sum) has no number glued to `cpu`.
        if rest.first() == Some(&b' ') {
            continue;
        }
        let (Some(Some(n)), Some(Some(user)), Some(Some(_nice)), Some(Some(system))) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        out.push((n as usize, user, system));
    }
    out
}

static PINNED: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(u32::MAX) }; MAX_THREADS];
static SEEN: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static STARTED: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static PIN_FAILED: AtomicU32 = AtomicU32::new(0);
/// CPUs seen by all threads while every one of them was running (the overlap window).
static TOGETHER: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];
static EXPECTED: AtomicUsize = AtomicUsize::new(0);

/// Pins itself (if told to), then spins until STOP, recording the CPUs it runs on; while all
/// the phase's threads have started, also records them in TOGETHER.
fn spinner(index: usize) -> i32 {
    let cpu = PINNED[index].load(Ordering::Relaxed);
    if cpu != u32::MAX && sched_setaffinity(0, 1u64 << cpu).is_err() {
        PIN_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    STARTED.fetch_add(1, Ordering::SeqCst);
    let mut spins = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        spins += 1;
        if spins.is_multiple_of(20_000) {
            let now = getcpu();
            if now < 64 {
                SEEN[index].fetch_or(1 << now, Ordering::Relaxed);
                if STARTED.load(Ordering::SeqCst) == EXPECTED.load(Ordering::Relaxed) {
                    TOGETHER[index].fetch_or(1 << now, Ordering::Relaxed);
                }
            }
        }
        core::hint::spin_loop();
    }
    0
}

/// Starts `n` spinners (pinned to `pins[i]` when given), lets them run `ms` milliseconds after
/// the last one started, stops and joins them.
fn run_spinners(n: usize, pins: Option<&[usize]>, ms: u64) -> usize {
    STOP.store(false, Ordering::Relaxed);
    STARTED.store(0, Ordering::SeqCst);
    EXPECTED.store(n, Ordering::Relaxed);
    for i in 0..MAX_THREADS {
        SEEN[i].store(0, Ordering::Relaxed);
        TOGETHER[i].store(0, Ordering::Relaxed);
        let pin = pins.map_or(u32::MAX, |p| p.get(i).map_or(u32::MAX, |&c| c as u32));
        PINNED[i].store(pin, Ordering::Relaxed);
    }
    let mut threads = alloc::vec::Vec::new();
    for i in 0..n {
        if let Ok(thread) = spawn(spinner, i) {
            threads.push(thread);
        }
    }
    let started = threads.len();
    let deadline = monotonic_ns() + 20_000_000_000;
    while STARTED.load(Ordering::SeqCst) < started && monotonic_ns() < deadline {
        let _ = sleep_ms(5);
    }
    let _ = sleep_ms(ms);
    // Each must have recorded a CPU while all ran (give a starved one up to 10 s more).
    let deadline = monotonic_ns() + 10_000_000_000;
    while (0..started).any(|i| TOGETHER[i].load(Ordering::Relaxed) == 0)
        && monotonic_ns() < deadline
    {
        let _ = sleep_ms(10);
    }
    STOP.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join();
    }
    started
}

static MOVER_CPU: AtomicU32 = AtomicU32::new(u32::MAX);
static MOVER_TID: AtomicU32 = AtomicU32::new(0);

/// Spins in ring 3, publishing the CPU it is on every few thousand iterations.
fn mover(_: usize) -> i32 {
    MOVER_TID.store(gettid() as u32, Ordering::SeqCst);
    let mut spins = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        spins += 1;
        if spins.is_multiple_of(2_000) {
            MOVER_CPU.store(getcpu(), Ordering::SeqCst);
        }
        core::hint::spin_loop();
    }
    0
}

/// Waits until the mover reports `cpu`; the nanoseconds it took, or `None` past the limit.
fn wait_mover_on(cpu: usize) -> Option<u64> {
    let start = monotonic_ns();
    loop {
        if MOVER_CPU.load(Ordering::SeqCst) == cpu as u32 {
            return Some(monotonic_ns() - start);
        }
        if monotonic_ns() - start > MOVE_LIMIT_NS {
            return None;
        }
        sched_yield();
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_sched_cpus");
    let mask = sched_getaffinity(0).unwrap_or(0);
    let cpus = cpus_of(mask);
    println!(
        "t_sched_cpus: {} CPUs allowed (mask {:#x})",
        cpus.len(),
        mask
    );
    t.check("the affinity mask names a CPU", !cpus.is_empty());

    // /proc/stat: a line per allowed CPU.
    let before = proc_stat_cpus();
    let missing: alloc::vec::Vec<usize> = cpus
        .iter()
        .copied()
        .filter(|c| !before.iter().any(|l| l.0 == *c))
        .collect();
    t.check_why(
        "/proc/stat has a cpuN line for every allowed CPU",
        missing.is_empty(),
        format_args!("no line for {missing:?}"),
    );

    if cpus.len() < 2 {
        println!("t_sched_cpus: one CPU allowed: the checks that need two are skipped");
        return t.finish();
    }
    let n = cpus.len().min(MAX_THREADS);
    let use_cpus = &cpus[..n];

    // Pinned spinners, one per CPU, all running at once: each on its own CPU.
    let started = run_spinners(n, Some(use_cpus), 300);
    t.eq("every pinned spinner started", started, n);
    t.eq(
        "every spinner pinned itself",
        PIN_FAILED.load(Ordering::Relaxed),
        0,
    );
    let mut distinct = 0u64;
    let mut only_own = true;
    for (i, &cpu) in use_cpus.iter().enumerate() {
        let seen = SEEN[i].load(Ordering::Relaxed);
        only_own &= seen == 1 << cpu;
        distinct |= TOGETHER[i].load(Ordering::Relaxed);
    }
    t.check_why(
        "a pinned spinner runs only on its CPU",
        only_own,
        format_args!(
            "seen {:x?}",
            SEEN.iter()
                .take(n)
                .map(|s| s.load(Ordering::Relaxed))
                .collect::<alloc::vec::Vec<_>>()
        ),
    );
    t.eq(
        "getcpu differs across the pinned spinners while all run",
        distinct.count_ones() as usize,
        n,
    );

    // /proc/stat's user ticks advanced on every CPU a spinner was pinned to.
    let after = proc_stat_cpus();
    let user_of =
        |lines: &[(usize, u64, u64)], cpu: usize| lines.iter().find(|l| l.0 == cpu).map(|l| l.1);
    let stalled: alloc::vec::Vec<usize> = use_cpus
        .iter()
        .copied()
        .filter(|&c| match (user_of(&before, c), user_of(&after, c)) {
            (Some(b), Some(a)) => a <= b,
            _ => true,
        })
        .collect();
    t.check_why(
        "each busy CPU's user ticks in /proc/stat advanced",
        stalled.is_empty(),
        format_args!("not on {stalled:?}"),
    );

    // Unpinned spinners, one per CPU: the scheduler spreads them over every allowed CPU.
    let started = run_spinners(n, None, 500);
    t.eq("every unpinned spinner started", started, n);
    let mut union = 0u64;
    for i in 0..n {
        union |= SEEN[i].load(Ordering::Relaxed);
    }
    t.check_why(
        "unpinned spinners spread over as many allowed CPUs as there are spinners",
        (union & mask).count_ones() as usize >= n && union & !mask == 0,
        format_args!("ran on {union:#x}, allowed {mask:#x}"),
    );

    // Another thread's affinity change moves a thread spinning in ring 3.
    let (a, b) = (use_cpus[0], use_cpus[n - 1]);
    STOP.store(false, Ordering::Relaxed);
    MOVER_CPU.store(u32::MAX, Ordering::SeqCst);
    MOVER_TID.store(0, Ordering::SeqCst);
    let _ = sched_setaffinity(0, 1 << a);
    let mover_thread = spawn(mover, 0);
    let _ = sched_setaffinity(0, mask);
    t.check("the spinning thread started", mover_thread.is_ok());
    let deadline = monotonic_ns() + 20_000_000_000;
    while MOVER_TID.load(Ordering::SeqCst) == 0 && monotonic_ns() < deadline {
        let _ = sleep_ms(5);
    }
    let tid = MOVER_TID.load(Ordering::SeqCst) as i32;
    t.eq(
        "pin the spinner to the first CPU",
        sched_setaffinity(tid, 1 << a),
        Ok(0),
    );
    t.check("it runs there", wait_mover_on(a).is_some());
    for (step, to) in [(1, b), (2, a)] {
        let asked = sched_setaffinity(tid, 1 << to);
        let took = wait_mover_on(to);
        println!(
            "t_sched_cpus: move {step} to CPU {to}: {} us",
            took.map_or(u64::MAX, |ns| ns / 1000)
        );
        t.check_why(
            "setaffinity of a spinning thread moves it within 3 s",
            asked == Ok(0) && took.is_some(),
            format_args!("setaffinity {asked:?}"),
        );
    }
    STOP.store(true, Ordering::Relaxed);
    if let Ok(thread) = mover_thread {
        thread.join();
    }

    // System time on the last CPU: reads of /dev/urandom pinned there.
    let before = proc_stat_cpus();
    let system_of =
        |lines: &[(usize, u64, u64)], cpu: usize| lines.iter().find(|l| l.0 == cpu).map(|l| l.2);
    let _ = sched_setaffinity(0, 1 << b);
    let on_b = getcpu() == b as u32;
    let stime0 = thread_stime_us();
    let mut buf = alloc::vec![0u8; 1 << 20];
    if let Ok(fd) = open(c"/dev/urandom", 0) {
        let start = monotonic_ns();
        while monotonic_ns() - start < 600_000_000 {
            let _ = read(fd, &mut buf);
        }
        let _ = close(fd);
    }
    let stime = thread_stime_us() - stime0;
    let _ = sched_setaffinity(0, mask);
    let after = proc_stat_cpus();
    t.check("the reader ran on the last CPU", on_b);
    t.check_why(
        "kernel time on the last CPU counts as the thread's system time",
        stime > 0,
        stime,
    );
    t.check_why(
        "kernel time on the last CPU shows in its /proc/stat system ticks",
        matches!((system_of(&before, b), system_of(&after, b)), (Some(x), Some(y)) if y > x),
        format_args!("{:?} -> {:?}", system_of(&before, b), system_of(&after, b)),
    );
    t.finish()
}
