//! Population of a huge range is killable and lets others run (issue 17): `mmap(MAP_POPULATE)`
//! faults the mapping in (cowlab ignored the flag), and it and `mlock` do it in batches with
//! the address space released between them, stopping for a fatal signal. A spinning child
//! keeps counting during a 1 GiB populate (cowlab's kernel is not preemptible: without the
//! batches it stands still), and SIGKILL ends a process populating 64 GiB (read-only, so each
//! page is the zero page) within a bounded time. munmap of 512 MiB of populated memory
//! likewise frees it in batches. Runs on the host too (the mlock case only
//! where RLIMIT_MEMLOCK can be raised).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::{setrlimit, Rlimit, RLIMIT_MEMLOCK, RLIM_INFINITY};
use cowlab_userland::test::{spinner, Tester};

cowlab_userland::entry!(main);

const MAP_SHARED: u32 = 0x01;
const MAP_POPULATE: u32 = 0x8000;
const MLOCK: usize = 149;
const MLOCKALL: usize = 151;
const MUNLOCKALL: usize = 152;
const MCL_CURRENT: usize = 1;
const GIB: usize = 1 << 30;

fn main() -> i32 {
    let mut t = Tester::new("t_rob2_populate");
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("map the shared words", false);
        return t.finish();
    };
    // SAFETY: a fresh shared read-write page, aligned for AtomicU64s, alive until exit.
    let words = unsafe { &*(page as *const [AtomicU64; 4]) };

    // 1. MAP_POPULATE of 1 GiB while a child spins.
    let Some(pid) = spinner(&words[0]) else {
        t.check("fork", false);
        return t.finish();
    };
    let before = words[0].load(Ordering::Relaxed);
    let start = monotonic_ns();
    let r = mmap(
        0,
        GIB,
        PROT_READ,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
    );
    let took = monotonic_ns() - start;
    let after = words[0].load(Ordering::Relaxed);
    let _ = kill(pid, 9);
    let _ = waitpid(pid, 0);
    t.check("mmap(MAP_POPULATE) of 1 GiB", r.is_ok());
    t.check_why(
        "the spinning child counted during the populate",
        after > before,
        Counted(before, after, took),
    );
    if let Ok(va) = r {
        let _ = munmap(va, GIB);
    }

    // 2. SIGKILL during a MAP_POPULATE of 64 GiB.
    words[1].store(0, Ordering::Relaxed);
    let pid = match fork() {
        Ok(0) => {
            words[1].store(1, Ordering::Relaxed);
            let r = mmap(
                0,
                64 * GIB,
                PROT_READ,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
            );
            words[1].store(if r.is_ok() { 2 } else { 3 }, Ordering::Relaxed);
            exit_now(0);
        }
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    while words[1].load(Ordering::Relaxed) == 0 {
        sched_yield();
    }
    let _ = sleep_ms(300);
    let state = words[1].load(Ordering::Relaxed);
    let start = monotonic_ns();
    let _ = kill(pid, 9);
    let status = waitpid(pid, 0).map(|(_, s)| s);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    t.eq(
        "the 64 GiB populate was still running at the kill",
        state,
        1,
    );
    t.eq("SIGKILL ended it", status, Ok(9));
    t.check_why("within 2 s of the kill", took_ms < 2000, Ms(took_ms));

    // 3. munmap of 512 MiB of populated, written memory while a child spins (forked first,
    // so that it shares none of those pages and the munmap frees every one).
    let len = GIB / 2;
    let Some(pid) = spinner(&words[3]) else {
        t.check("fork", false);
        return t.finish();
    };
    match mmap(
        0,
        len,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
    ) {
        Ok(va) => {
            // The child's rate alone: it counts while the parent sleeps 200 ms.
            let b = words[3].load(Ordering::Relaxed);
            let _ = sleep_ms(200);
            let per_ms = (words[3].load(Ordering::Relaxed) - b) / 200;
            // A fresh time slice, so the child has not run between the read and the call.
            sched_yield();
            let before = words[3].load(Ordering::Relaxed);
            let start = monotonic_ns();
            let r = munmap(va, len);
            let took = monotonic_ns() - start;
            let after = words[3].load(Ordering::Relaxed);
            t.eq("munmap of 512 MiB populated", r, Ok(0));
            // Sharing the CPU, the child gets about half of the call's time; a call that held
            // it lets the child run one slice at most, at its return (a few ms).
            // A twentieth: the calibration and the measurement see different host load when two
            // QEMUs share two cores (CI); a spinner starved by an unpreemptible loop gets ~0.
            let share = per_ms * (took / 1_000_000) / 20;
            t.check_why(
                "the spinning child got at least a twentieth of the munmap's time",
                after - before >= share.max(1),
                Counted(before, after, took),
            );
            // A fresh mapping at the same address is possible only if the old one is gone
            // entirely.
            let again = mmap(va, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | 0x100000);
            t.eq(
                "the whole range is free again (MAP_FIXED_NOREPLACE there succeeds)",
                again,
                Ok(va),
            );
            if let Ok(va) = again {
                let _ = munmap(va, len);
            }
        }
        Err(_) => t.check("map 512 MiB populated", false),
    }
    let _ = kill(pid, 9);
    let _ = waitpid(pid, 0);

    // 4. mlock of 512 MiB while a child spins (needs RLIMIT_MEMLOCK raised: root on Linux).
    let inf = Rlimit {
        cur: RLIM_INFINITY,
        max: RLIM_INFINITY,
    };
    if setrlimit(RLIMIT_MEMLOCK, inf).is_ok() {
        let len = GIB / 2;
        if let Ok(va) = mmap(0, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS) {
            words[2].store(0, Ordering::Relaxed);
            let Some(pid) = spinner(&words[2]) else {
                t.check("fork", false);
                return t.finish();
            };
            let before = words[2].load(Ordering::Relaxed);
            let start = monotonic_ns();
            // SAFETY: locks our own fresh mapping.
            let r = unsafe { raw(MLOCK, [va, len, 0, 0, 0, 0]) };
            let took = monotonic_ns() - start;
            let after = words[2].load(Ordering::Relaxed);
            let _ = kill(pid, 9);
            let _ = waitpid(pid, 0);
            t.eq("mlock of 512 MiB", r, Ok(0));
            t.check_why(
                "the spinning child counted during the mlock",
                after > before,
                Counted(before, after, took),
            );
            let _ = munmap(va, len);
        } else {
            t.check("map 512 MiB to lock", false);
        }
        // mlockall(MCL_CURRENT) with a 512 MiB mapping, likewise.
        if let Ok(va) = mmap(0, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS) {
            words[2].store(0, Ordering::Relaxed);
            let Some(pid) = spinner(&words[2]) else {
                t.check("fork", false);
                return t.finish();
            };
            // The child's rate alone: it counts while the parent sleeps 200 ms.
            let b = words[2].load(Ordering::Relaxed);
            let _ = sleep_ms(200);
            let per_ms = (words[2].load(Ordering::Relaxed) - b) / 200;
            sched_yield();
            let before = words[2].load(Ordering::Relaxed);
            let start = monotonic_ns();
            // SAFETY: no pointer arguments (mlockall(MCL_CURRENT), then munlockall).
            let r = unsafe { raw(MLOCKALL, [MCL_CURRENT, 0, 0, 0, 0, 0]) };
            let took = monotonic_ns() - start;
            let after = words[2].load(Ordering::Relaxed);
            // SAFETY: as above.
            let _ = unsafe { raw(MUNLOCKALL, [0; 6]) };
            let _ = kill(pid, 9);
            let _ = waitpid(pid, 0);
            t.eq("mlockall(MCL_CURRENT) with 512 MiB mapped", r, Ok(0));
            // A twentieth: the calibration and the measurement see different host load when two
            // QEMUs share two cores (CI); a spinner starved by an unpreemptible loop gets ~0.
            let share = per_ms * (took / 1_000_000) / 20;
            t.check_why(
                "the spinning child got at least a twentieth of the mlockall's time",
                after - before >= share.max(1),
                Counted(before, after, took),
            );
            let _ = munmap(va, len);
        }
    }
    t.finish()
}

struct Counted(u64, u64, u64);

impl core::fmt::Display for Counted {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(
            f,
            "counter {} -> {} over {} ms",
            self.0,
            self.1,
            self.2 / 1_000_000
        )
    }
}

struct Ms(u64);

impl core::fmt::Display for Ms {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "took {} ms", self.0)
    }
}
