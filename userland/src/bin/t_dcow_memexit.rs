//! `/proc/<pid>/mem` of a process that exits or execs while the reader's GUP slow path has
//! let the big lock go (kernel/src/gup_hold.rs): the reader then holds the last reference to
//! the old address space and must tear it down, returning every frame (a bare reference drop
//! lost them all; xtask's programs tier checks `cowlab: frames free=<n> boot=<n>` after the
//! run, and the kernel warned "leaking it").
//!
//! Each round forks a child that makes cheap system calls and then exits (even rounds) or
//! execs this program with `idle` (odd rounds); the parent reads the child's copy of a
//! mapping neither ever touched, 64 KiB per `pread`, so every read faults (one let-go per
//! read on cowlab with tasks on 2+ CPUs) until the child's old address space is gone.
//!
//! Arguments: `rounds=N` (default 12), `expect_cpus=N` (fail if `sched_getaffinity` reports
//! fewer CPUs: the race needs the child running during the reader's let-go).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::getpid;
use cowlab_userland::test::{sibling, Tester};

cowlab_userland::entry!(main);

const CHUNK: usize = 64 << 10;
/// The untouched mapping: 16384 pages, so the reader never runs out while the child lives.
const SPAN: usize = 64 << 20;
/// The first child's system calls before it ends; later rounds adapt it (see `main`).
const CHILD_CALLS: u32 = 20_000;
const SCHED_GETAFFINITY: usize = 204;

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

/// The child: cheap calls (each one a wait for the big lock on cowlab), then the end.
fn child(exec: bool, calls: u32) -> ! {
    for _ in 0..calls {
        let _ = getpid();
    }
    if exec {
        let mut path = sibling("t_dcow_memexit");
        path.push(0);
        let path = CStr::from_bytes_with_nul(&path).unwrap_or(c"/t_dcow_memexit");
        let argv = [
            path.as_ptr().cast(),
            c"idle".as_ptr().cast(),
            core::ptr::null(),
        ];
        let envp = [core::ptr::null()];
        let e = execve(path, &argv, &envp);
        exit_now(100 + e.0);
    }
    exit_now(0)
}

/// One round: reads until the child's old address space is gone; `(reads, ran_out)`.
fn round(t: &mut Tester, base: usize, exec: bool, calls: u32) -> (u64, bool) {
    let what = if exec { "execs" } else { "exits" };
    let pid = match fork() {
        Ok(0) => child(exec, calls),
        Ok(pid) => pid,
        Err(e) => {
            t.check_why("fork", false, format_args!("{e:?}"));
            return (0, false);
        }
    };
    let path = format!("/proc/{pid}/mem\0");
    let path = CStr::from_bytes_with_nul(path.as_bytes()).unwrap_or(c"/proc/self/mem");
    let mut buf = vec![0u8; CHUNK];
    let (mut reads, mut ran_out) = (0u64, true);
    match open(path, O_RDONLY) {
        Ok(fd) => {
            let mut off = 0;
            while off < SPAN {
                match pread(fd, &mut buf, (base + off) as u64) {
                    Ok(n) if n > 0 => reads += 1,
                    _ => {
                        ran_out = false;
                        break;
                    }
                }
                off += CHUNK;
            }
            let _ = close(fd);
        }
        // The child may already be gone.
        Err(_) => ran_out = false,
    }
    let status = waitpid(pid, 0).map(|(_, s)| s);
    t.eq(&format!("the child that {what} ends with 0"), status, Ok(0));
    (reads, ran_out)
}

fn main() -> i32 {
    if cowlab_userland::args()
        .nth(1)
        .is_some_and(|a| a.to_bytes() == b"idle")
    {
        return 0;
    }
    let mut t = Tester::new("t_dcow_memexit");
    let cpus = cpus();
    if let Some(want) = arg(b"expect_cpus=") {
        t.check_why(
            &format!("sched_getaffinity reports at least {want} CPUs"),
            u64::from(cpus) >= want,
            format_args!("{cpus}"),
        );
    }
    let rounds = arg(b"rounds=").unwrap_or(12);
    let base = match mmap(0, SPAN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
        Ok(a) => a,
        Err(e) => {
            t.check_why("mmap the untouched span", false, format_args!("{e:?}"));
            return t.finish();
        }
    };
    let (mut reads, mut cut_short, mut live_reads) = (0u64, 0u64, 0u64);
    // The race needs the child to end while the reader is between reads; how many of the
    // child's calls that takes depends on how the CPUs share the big lock (on 4 CPUs with the
    // halt behind a claim, session 13, 20000 calls outlived all 1024 reads in 12 of 12 rounds).
    // So a round whose reader ran out gives the next child a quarter of the calls, and one
    // whose child ended before the first read twice as many.
    let mut calls = CHILD_CALLS;
    for i in 0..rounds {
        let (n, ran_out) = round(&mut t, base, i % 2 == 1, calls);
        reads += n;
        if !ran_out {
            cut_short += 1;
        }
        live_reads += u64::from(n > 0);
        if ran_out {
            calls = (calls / 4).max(16);
        } else if n == 0 {
            calls = calls.saturating_mul(2).min(CHILD_CALLS * 4);
        }
    }
    println!(
        "t_dcow_memexit: {rounds} rounds on {cpus} CPUs, {reads} reads of 64 KiB, {cut_short} \
         rounds ended by the child's end, {live_reads} rounds read the live child, {calls} \
         calls in the last child"
    );
    t.check_why(
        "some round read the child's memory while it lived",
        live_reads > 0,
        format_args!("{live_reads}"),
    );
    t.check_why(
        "some round's reads were ended by the child's exit or exec",
        cut_short > 0,
        format_args!("{cut_short}"),
    );
    let _ = munmap(base, SPAN);
    t.finish()
}
