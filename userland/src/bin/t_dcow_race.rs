//! Dirty COW (CVE-2016-5195) from two threads racing for real on two CPUs: one writes a
//! private read-only mapping of a memfd through `/proc/self/mem` (a `FOLL_FORCE` write: COW
//! break, then a retry), the other drops the page with `MADV_DONTNEED` in a loop. The kernel's
//! GUP slow path lets other CPUs into the kernel between the COW break and the retry (Linux's
//! `cond_resched()` in `__get_user_pages`; docs/architecture.md, "Multiprocessor").
//!
//! Arguments: `expect_cpus=N` (fail if `sched_getaffinity` reports fewer), `era=YYYY` (the kernel booted with the same `era=` token) and `secs=N` (default
//! 20): under `era=2009` (the retry drops `FOLL_WRITE`) on cowlab with tasks on 2 or more CPUs
//! the memfd must change within N seconds; under every later era, and natively on the host
//! Linux whatever the argument (a modern kernel is 2023), it must never change over a run of
//! at least `min(N, 3)` seconds (1 s on the host) that lasts until both threads made 10 calls
//! and interleaved 5 times (at most N seconds, or 4 N while they have not). With tasks on one
//! CPU the kernel never lets go between the COW break and the retry, so the memfd never
//! changes under 2009 either.
//! Reports the time to the first corruption, the writes, madvises and interleavings per
//! second.
//!
//! Threads never allocate (the runtime's allocator is single-threaded): they share statics.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::nr;
use cowlab_userland::test::{on_cowlab, Tester};
use cowlab_userland::thread::spawn;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MADV_DONTNEED: i32 = 4;
const SCHED_GETAFFINITY: usize = 204;
/// Calls each thread makes (and half as many interleavings) before a run under the 2023 rules
/// may end: each `madvise` waits for a TLB shootdown on the writer's CPU, which on an
/// overloaded TCG host costs tens of milliseconds (docs/architecture.md, "Multiprocessor"):
/// a loaded host saw 5-60 madvises per 3 s, so 10 (and 5 interleavings) is what a slow run
/// reaches, and a run short of it goes on past `secs` up to [`HARD_CAP`] times as long.
const ENOUGH: u64 = 10;
/// How many times `secs` a run under the 2023 rules may last while it is short of [`ENOUGH`].
const HARD_CAP: u64 = 4;

static STOP: AtomicBool = AtomicBool::new(false);
static MEM: AtomicI32 = AtomicI32::new(-1);
static ADDR: AtomicUsize = AtomicUsize::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
static MADVISES: AtomicU64 = AtomicU64::new(0);
/// Iterations of one thread that saw the other thread's count move since its own previous
/// iteration: the other ran in between (on another CPU, or after a switch).
static INTERLEAVINGS: AtomicU64 = AtomicU64::new(0);

/// The `key=N` argument, if any.
fn arg(key: &[u8]) -> Option<u64> {
    cowlab_userland::args().skip(1).find_map(|a| {
        let v = a.to_bytes().strip_prefix(key)?;
        core::str::from_utf8(v).ok()?.parse().ok()
    })
}

/// CPUs this process may run on (`sched_getaffinity`).
fn cpus() -> u32 {
    let mut mask = 0u64;
    // SAFETY: the kernel writes at most 8 bytes into `mask`.
    let r = unsafe {
        raw(
            SCHED_GETAFFINITY,
            [0, 8, &mut mask as *mut u64 as usize, 0, 0, 0],
        )
    };
    if r.is_ok() {
        mask.count_ones()
    } else {
        1
    }
}

fn writer(_: usize) -> i32 {
    let (mem, addr) = (MEM.load(Ordering::SeqCst), ADDR.load(Ordering::SeqCst));
    let mut last_other = MADVISES.load(Ordering::SeqCst);
    let mut i = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        if pwrite(mem, b"M", addr as u64 + i % 7) != Ok(1) {
            WRITE_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
        WRITES.fetch_add(1, Ordering::SeqCst);
        let other = MADVISES.load(Ordering::SeqCst);
        if other != last_other {
            INTERLEAVINGS.fetch_add(1, Ordering::SeqCst);
            last_other = other;
        }
        i += 1;
    }
    0
}

fn madviser(_: usize) -> i32 {
    let addr = ADDR.load(Ordering::SeqCst);
    let mut last_other = WRITES.load(Ordering::SeqCst);
    while !STOP.load(Ordering::SeqCst) {
        let _ = madvise(addr, PAGE, MADV_DONTNEED);
        MADVISES.fetch_add(1, Ordering::SeqCst);
        let other = WRITES.load(Ordering::SeqCst);
        if other != last_other {
            INTERLEAVINGS.fetch_add(1, Ordering::SeqCst);
            last_other = other;
        }
    }
    0
}

/// Whether the memfd still holds only `A`s.
fn intact(fd: i32) -> bool {
    let mut page = [0u8; PAGE];
    pread(fd, &mut page, 0) == Ok(PAGE) && page.iter().all(|&b| b == b'A')
}

fn main() -> i32 {
    let mut t = Tester::new("t_dcow_race");
    let cowlab = on_cowlab();
    let era = arg(b"era=").unwrap_or(2023);
    let secs = arg(b"secs=").unwrap_or(20).max(1);
    let cpus = cpus();
    // The programs tier boots these on 2 CPUs whatever `--smp` says: a boot that did not is
    // a set-up failure, not a pass without a race.
    if let Some(want) = arg(b"expect_cpus=") {
        t.check_why(
            &format!("sched_getaffinity reports at least {want} CPUs"),
            u64::from(cpus) >= want,
            format_args!("{cpus}"),
        );
    }
    if !cowlab && era < 2023 {
        println!("t_dcow_race: era={era} asked, but the host Linux is modern: expecting 2023");
    }
    // Only 2009's retry drops FOLL_WRITE; 2016's FOLL_COW and later rules fault again.
    let expect_race = cowlab && era == 2009 && cpus >= 2;
    if cowlab && era == 2009 && cpus < 2 {
        println!("t_dcow_race: tasks run on {cpus} CPU here (boot with --smp 2 smp_sched=1): the race needs two; checking only that the memfd is written nowhere else");
    }
    let fd = memfd_create(c"t_dcow_race", 0).unwrap_or(-1);
    let _ = write(fd, &[b'A'; PAGE]);
    // SAFETY: a new mapping at an address the kernel chooses.
    let ro = unsafe {
        raw(
            nr::MMAP,
            [
                0,
                PAGE,
                PROT_READ as usize,
                MAP_PRIVATE as usize,
                fd as usize,
                0,
            ],
        )
    }
    .unwrap_or(0);
    let mem = open(c"/proc/self/mem", O_RDWR).unwrap_or(-1);
    t.check(
        "set-up: memfd of As, private read-only mapping, /proc/self/mem",
        fd >= 0 && ro != 0 && mem >= 0,
    );
    if fd < 0 || ro == 0 || mem < 0 {
        return t.finish();
    }
    MEM.store(mem, Ordering::SeqCst);
    ADDR.store(ro, Ordering::SeqCst);
    // Under 2023 rules the run lasts at least `min(secs, 3)` s (1 s natively) and until both
    // threads made [`ENOUGH`] calls, at most `secs` s once they did (else `HARD_CAP * secs`);
    // under 2009 it ends at the first change, at most `secs` s.
    let min_ms = if cowlab { secs.min(3) * 1000 } else { 1000 };
    let start = monotonic_ns();
    let w = spawn(writer, 0);
    let m = spawn(madviser, 0);
    t.check("both threads started", w.is_ok() && m.is_ok());
    let mut changed_after = None;
    loop {
        let _ = sleep_ms(10);
        let ms = (monotonic_ns() - start) / 1_000_000;
        if !intact(fd) {
            changed_after = Some(ms);
            break;
        }
        let enough = WRITES.load(Ordering::SeqCst) >= ENOUGH
            && MADVISES.load(Ordering::SeqCst) >= ENOUGH
            && INTERLEAVINGS.load(Ordering::SeqCst) >= ENOUGH / 2;
        let limit = if expect_race || enough {
            secs
        } else {
            HARD_CAP * secs
        };
        if ms >= limit * 1000 || (!expect_race && ms >= min_ms && enough) {
            break;
        }
    }
    STOP.store(true, Ordering::SeqCst);
    for th in [w, m].into_iter().flatten() {
        th.join();
    }
    let ms = ((monotonic_ns() - start) / 1_000_000).max(1);
    let (writes, madvises, inter) = (
        WRITES.load(Ordering::SeqCst),
        MADVISES.load(Ordering::SeqCst),
        INTERLEAVINGS.load(Ordering::SeqCst),
    );
    println!(
        "t_dcow_race: era {era}, {cpus} CPUs: {} after {ms} ms: {writes} forced writes, {madvises} madvise(DONTNEED), {inter} interleavings ({} writes/s, {} madvises/s, {} interleavings/s)",
        match changed_after {
            Some(_) => "memfd changed",
            None => "memfd intact",
        },
        writes * 1000 / ms,
        madvises * 1000 / ms,
        inter * 1000 / ms
    );
    if expect_race {
        t.check_why(
            &format!("era {era}: the forced write reached the memfd within {secs} s"),
            changed_after.is_some(),
            format_args!("{writes} writes, {madvises} madvises, {inter} interleavings in {ms} ms"),
        );
    } else {
        t.check_why(
            "the memfd never changed",
            changed_after.is_none() && intact(fd),
            format_args!("changed after {changed_after:?} ms"),
        );
        t.check_why(
            "the two threads interleaved many times, neither starved",
            inter >= ENOUGH / 2 && writes >= ENOUGH && madvises >= ENOUGH,
            format_args!("{inter} interleavings, {writes} writes, {madvises} madvises"),
        );
    }
    t.eq(
        "every forced write succeeded",
        WRITE_ERRORS.load(Ordering::SeqCst),
        0,
    );
    let _ = munmap(ro, PAGE);
    let _ = close(mem);
    let _ = close(fd);
    t.finish()
}
