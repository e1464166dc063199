//! Long kernel loops let others run (issue 17): while a 64 MiB memfd is truncated to 0 (16,384
//! pages freed; 256 MiB on the host; `t_rob_yield MIB` for another size), a spinning child keeps
//! counting. cowlab's kernel is not preemptible, so before
//! the truncate paused every 32 pages (`ShmemObject::set_size_resched`) the child stood still
//! for the whole call. Runs on the host Linux too (preemptible: it always counts).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const MAP_SHARED: u32 = 0x01;
const MIB: i64 = 1 << 20;

/// The memfd's size in MiB on cowlab without an argument. Before the fix a 256 MiB truncate
/// held the CPU for 881 ms: 64 MiB is still many timer ticks long, and 256 MiB made this boot
/// take 20 s under TCG.
const COWLAB_MIB: i64 = 64;
/// ... and on the host, where 64 MiB is freed in about 4 ms: too short for the child to be
/// scheduled on a busy machine. 256 MiB, as before.
const HOST_MIB: i64 = 256;

fn main() -> i32 {
    let mut t = Tester::new("t_rob_yield");
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("map the shared counter", false);
        return t.finish();
    };
    // SAFETY: a fresh shared read-write page, aligned for an AtomicU64, alive until exit.
    let counter = unsafe { &*(page as *const AtomicU64) };
    let Ok(fd) = memfd_create(c"t_rob_yield", 0) else {
        t.check("memfd_create", false);
        return t.finish();
    };
    let mib = cowlab_userland::args::args()
        .nth(1)
        .and_then(|a| core::str::from_utf8(a.to_bytes()).ok()?.parse::<i64>().ok())
        .filter(|&m| m > 0)
        .unwrap_or(if on_cowlab() { COWLAB_MIB } else { HOST_MIB });
    t.eq("fallocate the memfd", fallocate(fd, 0, 0, mib * MIB), Ok(0));
    let pid = match fork() {
        Ok(0) => loop {
            counter.fetch_add(1, Ordering::Relaxed);
        },
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    while counter.load(Ordering::Relaxed) == 0 {
        sched_yield();
    }
    // A fresh time slice, so the child has not run between the read and the call.
    sched_yield();
    let before = counter.load(Ordering::Relaxed);
    let start = monotonic_ns();
    let r = ftruncate(fd, 0);
    let took = monotonic_ns() - start;
    let after = counter.load(Ordering::Relaxed);
    let _ = kill(pid, 9);
    let _ = waitpid(pid, 0);
    t.eq("ftruncate to 0", r, Ok(0));
    t.check_why(
        "the spinning child counted during the truncate",
        after > before,
        why(before, after, took),
    );
    let _ = close(fd);
    t.finish()
}

fn why(before: u64, after: u64, took: u64) -> impl core::fmt::Display {
    struct M(u64, u64, u64);
    impl core::fmt::Display for M {
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
    M(before, after, took)
}
