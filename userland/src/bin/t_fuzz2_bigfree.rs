//! Large frees that held the CPU (issue 17): the last close of a big memfd freed every cache
//! page inside `ShmemObject::put`, in a `Drop`, and exec released the old program's address
//! space in one pass. cowlab's kernel is not preemptible, so for the whole free no other task
//! ran. Now the memfd's cache is queued and freed in batches, with pauses, before `close`
//! returns (`proc::evict`), and exec frees the old pages in munmap's batches first
//! (`zap_exiting_aspace`).
//!
//! Each case runs next to a spinning child on the same CPU, which notes the longest time it
//! went without running: under a quarter of the operation's time (before the fix the whole
//! free was one wait), and the frames must be back when `close` returns (`Shmem` in
//! `/proc/meminfo` back to its value) or when the exec'd child is reaped (the harness's frame
//! count at power-off). (A share of the spinner's solo rate, the first measure, was too noisy on
//! a loaded host.)
//!
//! Usage: `t_fuzz2_bigfree [MiB]` (64 by default: the memfd; the exec'd child has four times
//! that); `t_fuzz2_bigfree --exit` is the program the
//! exec case runs (it exits 0 at once).

#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::test::{meminfo_kb, on_cowlab, sibling, Tester};

cowlab_userland::entry!(main);

const MAP_POPULATE: u32 = 0x8000;
const SCHED_SETAFFINITY: usize = 203;
/// Tries per case to show a short longest wait.
const TRIES: usize = 5;

fn main() -> i32 {
    let mut args = cowlab_userland::args().skip(1);
    let first = args.next().map(|a| a.to_str().unwrap_or(""));
    if first == Some("--exit") {
        return 0;
    }
    let mib: usize = first.and_then(|a| a.parse().ok()).unwrap_or(64);
    let mut t = Tester::new("t_fuzz2_bigfree");
    // One CPU for the operation and the spinner (the children inherit the mask): on more the
    // spinner would run beside the free whatever the kernel does.
    let mask: u64 = 1;
    // SAFETY: sched_setaffinity reads 8 bytes of mask from a local.
    let pinned = unsafe {
        raw(
            SCHED_SETAFFINITY,
            [0, 8, &mask as *const u64 as usize, 0, 0, 0],
        )
    };
    t.check("pinned to CPU 0", pinned.is_ok());
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("map the shared words", false);
        return t.finish();
    };
    // SAFETY: a fresh shared read-write page, aligned for AtomicU64s, alive until exit.
    let words = unsafe { &*(page as *const [AtomicU64; 4]) };
    // A loaded host can stall QEMU for a second or more, which the guest sees as a long wait
    // too: each case has up to five tries to show its waits are short (without the fixes every
    // try has a long one: the free is one wait). The other checks run in every try. Five, not
    // three: on 2 CPUs at host load 23 three exec tries in a row saw stalls of 3115, 1292 and
    // 879 ms (the memfd case one of 3110 ms in 3399), while a single boot at the same load
    // passed at its first try (59 ms of 562).
    let mut best: Option<(u64, u64)> = None;
    for _ in 0..TRIES {
        best = shorter(best, memfd_close(&mut t, mib << 20, words));
        if best.is_some_and(|(gap, took)| short(gap, took)) {
            break;
        }
    }
    longest_wait(&mut t, "memfd close", best);
    let mut best = None;
    for _ in 0..TRIES {
        // The exec case's fixed costs (loading the new program, its exit) are diluted by a
        // larger teardown.
        best = shorter(best, exec_release(&mut t, (mib * 4) << 20, words));
        if best.is_some_and(|(gap, took)| short(gap, took)) {
            break;
        }
    }
    longest_wait(&mut t, "exec and exit", best);
    t.finish()
}

/// Forks a child that, until killed, notes in `words[3]` the longest time it went without
/// running (between two reads of the clock, in ns): the longest interval something else held
/// its CPU. Returns its pid once it runs.
fn gap_spinner(words: &[AtomicU64; 4]) -> Option<i32> {
    words[0].store(0, Ordering::Relaxed);
    words[3].store(0, Ordering::Relaxed);
    match fork() {
        Ok(0) => {
            let mut last = monotonic_ns();
            loop {
                let now = monotonic_ns();
                let gap = now - last;
                if gap > words[3].load(Ordering::Relaxed) {
                    words[3].store(gap, Ordering::Relaxed);
                }
                last = now;
                words[0].fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(pid) => {
            while words[0].load(Ordering::Relaxed) == 0 {
                sched_yield();
            }
            Some(pid)
        }
        Err(_) => None,
    }
}

/// Whether a longest wait of `gap_ns` is under a quarter of an operation of `took_ms`.
fn short(gap_ns: u64, took_ms: u64) -> bool {
    gap_ns / 1_000_000 * 4 < took_ms
}

/// The try (longest wait in ns, time in ms) with the smaller share of waiting.
fn shorter(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 / y.1.max(1) < x.0 / x.1.max(1) {
            y
        } else {
            x
        }),
        (x, y) => x.or(y),
    }
}

/// Checks that the spinner's longest wait during the operation (its best try) was under a
/// quarter of the operation's time (cowlab only: the host's scheduler and CPU count are not
/// the subject). Before the fixes the whole free was one wait.
fn longest_wait(t: &mut Tester, what: &str, best: Option<(u64, u64)>) {
    let Some((gap_ns, took_ms)) = best else {
        return t.check(&alloc::format!("the {what} was measured"), false);
    };
    let gap_ms = gap_ns / 1_000_000;
    cowlab_userland::println!("# {what}: {took_ms} ms, the spinner's longest wait {gap_ms} ms");
    if on_cowlab() {
        t.check_why(
            &alloc::format!("a spinner on the same CPU never waited a quarter of the {what}"),
            short(gap_ns, took_ms),
            format_args!("longest wait {gap_ms} ms of {took_ms} ms"),
        );
    }
}

fn stop(pid: i32) {
    let _ = kill(pid, 9);
    let _ = waitpid(pid, 0);
}

/// The last close of a memfd of `len` bytes, every page allocated.
fn memfd_close(t: &mut Tester, len: usize, words: &[AtomicU64; 4]) -> Option<(u64, u64)> {
    let kb = (len >> 10) as u64;
    // Forked first: a child forked later would hold the memfd too, and this close would not
    // be the last.
    let Some(spin) = gap_spinner(words) else {
        t.check("fork the spinner", false);
        return None;
    };
    let shmem0 = meminfo_kb("Shmem").unwrap_or(0);
    let Ok(fd) = memfd_create(c"bigfree", 0) else {
        stop(spin);
        t.check("memfd_create", false);
        return None;
    };
    let filled = fallocate(fd, 0, 0, len as i64);
    t.eq("fallocate the memfd", filled, Ok(0));
    let shmem1 = meminfo_kb("Shmem").unwrap_or(0);
    t.check_why(
        "Shmem grew by the memfd's size",
        shmem1 >= shmem0 + kb * 9 / 10,
        format_args!("{shmem0} -> {shmem1} KiB"),
    );
    let _ = sleep_ms(50);
    words[3].store(0, Ordering::Relaxed);
    let start = monotonic_ns();
    let closed = close(fd);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    let gap = words[3].load(Ordering::Relaxed);
    let shmem2 = meminfo_kb("Shmem").unwrap_or(u64::MAX);
    stop(spin);
    t.eq("close of the memfd", closed, Ok(0));
    cowlab_userland::println!(
        "# memfd close try: {took_ms} ms, longest wait {} ms",
        gap / 1_000_000
    );
    t.check_why(
        "the memfd's pages are free when close returns",
        shmem2 <= shmem0 + kb / 10,
        format_args!("Shmem {shmem0} before, {shmem2} KiB after close"),
    );
    Some((gap, took_ms))
}

/// A child with `len` bytes populated execs a program that exits at once.
fn exec_release(t: &mut Tester, len: usize, words: &[AtomicU64; 4]) -> Option<(u64, u64)> {
    words[1].store(0, Ordering::Relaxed);
    words[2].store(0, Ordering::Relaxed);
    let mut path = sibling("t_fuzz2_bigfree");
    path.push(0);
    let big = match fork() {
        Ok(0) => {
            let populated = mmap(
                0,
                len,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
            );
            words[1].store(if populated.is_ok() { 1 } else { 2 }, Ordering::Relaxed);
            while words[2].load(Ordering::Relaxed) == 0 {
                sched_yield();
            }
            let path = core::ffi::CStr::from_bytes_with_nul(&path).unwrap_or(c"/");
            let argv = [
                c"t_fuzz2_bigfree".as_ptr() as *const u8,
                c"--exit".as_ptr() as *const u8,
                core::ptr::null(),
            ];
            let envp = [core::ptr::null()];
            let _ = execve(path, &argv, &envp);
            exit_now(3)
        }
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork the large process", false);
            return None;
        }
    };
    while words[1].load(Ordering::Relaxed) == 0 {
        let _ = sleep_ms(10);
    }
    t.eq(
        "the large child populated its memory",
        words[1].load(Ordering::Relaxed),
        1,
    );
    let Some(spin) = gap_spinner(words) else {
        stop(big);
        t.check("fork the spinner", false);
        return None;
    };
    let _ = sleep_ms(50);
    words[3].store(0, Ordering::Relaxed);
    let start = monotonic_ns();
    words[2].store(1, Ordering::Relaxed);
    let status = waitpid(big, 0).map(|(_, s)| s);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    let gap = words[3].load(Ordering::Relaxed);
    stop(spin);
    t.eq("the exec'd program exited with 0", status, Ok(0));
    cowlab_userland::println!(
        "# exec try: {took_ms} ms, longest wait {} ms",
        gap / 1_000_000
    );
    Some((gap, took_ms))
}
