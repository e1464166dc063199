//! Regressions of the batched, killable munmap and populate (reviewer's findings on rob2's
//! work). munmap is atomic with respect to other threads' mappings: a thread that maps into a
//! hole of a range another thread is unmapping gets a whole mapping or none (cowlab's batches
//! re-found "the first VMA in the rest" with the address space unlocked and cut the new mapping
//! in half). Runs on the host Linux too.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::{setrlimit, Rlimit, RLIMIT_MEMLOCK, RLIM_INFINITY};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{reap_within, try_reap, Tester};
use cowlab_userland::thread;

extern crate alloc;

cowlab_userland::entry!(main);

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
const MLOCK: usize = 149;
const MLOCKALL: usize = 151;
const MCL_FUTURE: usize = 2;

static BASE: AtomicUsize = AtomicUsize::new(0);
static STARTED: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicUsize = AtomicUsize::new(0);
static GOT: AtomicUsize = AtomicUsize::new(0);
/// Set (and woken) once `BASE` is: thread B sleeps on it while this thread touches the 20 MiB.
static READY: AtomicU32 = AtomicU32::new(0);

/// Thread B: maps 12 MiB hinting at base + 4 MiB until the hint is granted (possible only once
/// the munmap took [4, 8) MiB away) or it is told to stop.
fn hinter(_: usize) -> i32 {
    // Asleep, not yielding in a loop: on two CPUs a loop of system calls here contends with
    // every fault of the other thread's 5120-page setup for the kernel (a round took 35 to 100
    // s of a loaded host against 4 s on one CPU, past the boot's time limit).
    while READY.load(Ordering::Acquire) == 0 {
        let _ = thread::futex_wait(&READY, 0, None);
    }
    let base = BASE.load(Ordering::Acquire);
    let want = base + 4 * MIB;
    STARTED.store(1, Ordering::Release);
    while STOP.load(Ordering::Acquire) == 0 {
        if let Ok(p) = mmap(
            want,
            12 * MIB,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        ) {
            if p == want {
                GOT.store(1, Ordering::Release);
                return 0;
            }
            let _ = munmap(p, 12 * MIB);
        }
    }
    0
}

/// 20 MiB mapped and touched, its middle 8 MiB unmapped; thread B maps into the hole while
/// this thread munmaps all 20 MiB. If B's hint was granted, its 12 MiB must all be mapped.
fn munmap_race(t: &mut Tester) {
    let (mut won, mut torn) = (0, 0);
    for _ in 0..8 {
        BASE.store(0, Ordering::Relaxed);
        READY.store(0, Ordering::Relaxed);
        STARTED.store(0, Ordering::Relaxed);
        STOP.store(0, Ordering::Relaxed);
        GOT.store(0, Ordering::Relaxed);
        // B's stack is mapped before the range, so it cannot land in the hole.
        let Ok(b) = thread::spawn(hinter, 0) else {
            t.check("spawn thread B", false);
            return;
        };
        let Ok(base) = mmap(
            0,
            20 * MIB,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        ) else {
            t.check("map 20 MiB", false);
            return;
        };
        for off in (0..20 * MIB).step_by(4096) {
            // SAFETY: inside the fresh writable mapping.
            unsafe { ((base + off) as *mut u8).write_volatile(1) };
        }
        let _ = munmap(base + 8 * MIB, 8 * MIB);
        BASE.store(base, Ordering::Release);
        READY.store(1, Ordering::Release);
        let _ = thread::futex_wake(&READY, 1);
        while STARTED.load(Ordering::Acquire) == 0 {
            sched_yield();
        }
        let unmapped = munmap(base, 20 * MIB).is_ok();
        STOP.store(1, Ordering::Release);
        b.join();
        t.check("munmap 20 MiB", unmapped);
        if GOT.load(Ordering::Acquire) != 0 {
            won += 1;
            // mprotect of a range with a hole is ENOMEM: the mapping was cut.
            if mprotect(base + 4 * MIB, 12 * MIB, PROT_READ).is_err() {
                torn += 1;
            }
            let _ = munmap(base + 4 * MIB, 12 * MIB);
        }
    }
    cowlab_userland::println!(
        "t_fixmm: munmap race: hint granted {} times, torn {}",
        won,
        torn
    );
    t.check(
        "a mapping made during another thread's munmap is never torn",
        torn == 0,
    );
}

fn syscall2(nr: usize, a: usize, b: usize) -> Result<usize, Errno> {
    // SAFETY: mlock and mlockall take integers; mlock only locks our own mappings.
    unsafe { raw(nr, [a, b, 0, 0, 0, 0]) }
}

/// After `mlockall(MCL_FUTURE)` a 64 GiB read-only mapping is populated in killable batches:
/// SIGKILL ends the mmap within 2 s (it was populated in one pass under the address-space
/// lock, so the parent did not even run until it was done).
fn mcl_future_populate_killable(t: &mut Tester, words: &[AtomicUsize; 4]) {
    words[0].store(0, Ordering::Relaxed);
    let pid = match fork() {
        Ok(0) => {
            if syscall2(MLOCKALL, MCL_FUTURE, 0).is_err() {
                exit_now(1);
            }
            words[0].store(1, Ordering::Relaxed);
            let r = mmap(0, 64 * GIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
            words[0].store(if r.is_ok() { 2 } else { 3 }, Ordering::Relaxed);
            exit_now(0);
        }
        Ok(pid) => pid,
        Err(_) => return t.check("fork", false),
    };
    while words[0].load(Ordering::Relaxed) == 0 {
        if let Ok(Some(_)) = try_reap(pid) {
            return t.check("mlockall(MCL_FUTURE) in the child", false);
        }
        sched_yield();
    }
    let _ = sleep_ms(300);
    let state = words[0].load(Ordering::Relaxed);
    let rss = resident_pages(pid);
    // Bounded at 30 s: a populate SIGKILL cannot end fails the check instead of hanging.
    let start = monotonic_ns();
    let _ = kill(pid, 9);
    let kill_ms = (monotonic_ns() - start) / 1_000_000;
    let status = reap_within(pid, 30_000);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    cowlab_userland::println!(
        "t_fixmm: {rss:?} pages resident at the kill, kill() returned after {kill_ms} ms"
    );
    t.eq(
        "the MCL_FUTURE populate of 64 GiB was running at the kill",
        state,
        1,
    );
    t.eq("SIGKILL ended it", status, Ok(Some(9)));
    cowlab_userland::println!("t_fixmm: the killed populate was reaped in {took_ms} ms");
    t.check_why("within 2 s of the kill", took_ms < 2000, Ms(took_ms));
}

/// Thread B of the mlock case: once the mlock has started, unmaps the last 64 MiB of the
/// range it populates.
fn unmapper(words: usize) -> i32 {
    // SAFETY: `words` is the address of the shared words, mapped until exit.
    let words = unsafe { &*(words as *const [AtomicUsize; 4]) };
    while words[1].load(Ordering::Acquire) == 0 {
        sched_yield();
    }
    let _ = sleep_ms(20);
    let base = words[1].load(Ordering::Relaxed);
    words[2].store(
        munmap(base + GIB - 64 * MIB, 64 * MIB).is_ok() as usize,
        Ordering::Release,
    );
    0
}

/// mlock whose population meets a hole another thread unmapped after the lock flags were set
/// returns 0, as Linux's `__mm_populate` skips holes (it was ENOMEM with the range locked).
fn mlock_populate_skips_holes(t: &mut Tester, words: &[AtomicUsize; 4]) {
    let Ok(base) = mmap(0, GIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS) else {
        return t.check("map 1 GiB", false);
    };
    words[1].store(0, Ordering::Relaxed);
    words[2].store(0, Ordering::Relaxed);
    let Ok(b) = thread::spawn(unmapper, words as *const _ as usize) else {
        return t.check("spawn thread B", false);
    };
    words[1].store(base, Ordering::Release);
    let r = syscall2(MLOCK, base, GIB);
    b.join();
    t.eq(
        "thread B unmapped the tail",
        words[2].load(Ordering::Acquire),
        1,
    );
    t.eq("mlock meeting a hole made during its population", r, Ok(0));
    let _ = munmap(base, GIB);
}

fn main() -> i32 {
    let mut t = Tester::new("t_fixmm");
    munmap_race(&mut t);
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("map the shared words", false);
        return t.finish();
    };
    // SAFETY: a fresh shared read-write page, aligned for AtomicUsizes, alive until exit.
    let words = unsafe { &*(page as *const [AtomicUsize; 4]) };
    let inf = Rlimit {
        cur: RLIM_INFINITY,
        max: RLIM_INFINITY,
    };
    if setrlimit(RLIMIT_MEMLOCK, inf).is_ok() {
        mcl_future_populate_killable(&mut t, words);
        mlock_populate_skips_holes(&mut t, words);
    } else {
        cowlab_userland::println!("t_fixmm: RLIMIT_MEMLOCK cannot be raised: mlock cases skipped");
    }
    t.finish()
}

/// `pid`'s resident pages (`/proc/<pid>/statm`'s second field).
fn resident_pages(pid: i32) -> Option<u64> {
    let path = alloc::format!("/proc/{pid}/statm\0");
    let path = core::ffi::CStr::from_bytes_with_nul(path.as_bytes()).ok()?;
    let fd = open(path, O_RDONLY).ok()?;
    let mut buf = [0u8; 128];
    let n = read(fd, &mut buf);
    let _ = close(fd);
    let text = core::str::from_utf8(&buf[..n.ok()?]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

struct Ms(u64);

impl core::fmt::Display for Ms {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "took {} ms", self.0)
    }
}
