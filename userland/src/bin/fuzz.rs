//! A coverage-guided system-call fuzzer in the spirit of syzkaller (`cargo xtask fuzz`; see
//! docs/fuzzing.md).
//!
//! Loop: take a program (generated, or a kept one mutated), print it (`FUZZ PROG ...`, so the
//! host has the crasher if the kernel dies), fork, and in the child enable kcov
//! (`/sys/kernel/debug/kcov`), run the calls and exit; the parent reaps the child (killing it
//! after a deadline: a call may block forever, as on Linux), removes the files it may have left
//! in `/tmp`, checks that `/proc/cowlab/mmstat`'s gauges (frames, anon pages, page tables,
//! pins, references, shmem pages) are back where they were before the fork (a difference is
//! reported as a leak, `FUZZ LEAK`, and ends the run with status 1), then reads the PCs the
//! child reached and keeps the program if any is new. `COVER` lines give blocks (unique PCs)
//! over time. Deterministic from `--seed` (the choices depend on the coverage seen, which the
//! same kernel reproduces up to timer noise; `--replay FILE` runs one program exactly).
//!
//! Usage: `fuzz [--seed S] [--calls N] [--time SECS] [--no-feedback] [--replay FILE]
//! [--keep-tmp]`.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "fuzz/exec.rs"]
mod exec;
#[path = "fuzz/layout.rs"]
mod layout;
#[path = "fuzz/prog.rs"]
mod prog;
#[path = "fuzz/table.rs"]
mod table;

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::{println, sys::Errno};
use prog::{Prog, Rng};

cowlab_userland::entry!(main);

const KCOV_INIT_TRACE: usize = 0x8008_6301;
const KCOV_ENABLE: usize = 0x6364;
const KCOV_TRACE_PC: usize = 0;
const IOCTL: usize = 16;
/// Coverage buffer: 1 Mi words (8 MiB; a debug kernel's loops store a PC per iteration).
const KCOV_WORDS: usize = 1024 * 1024;
/// PCs are kernel addresses from its fixed base; the bitmap covers 32 MiB of text.
const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
const TEXT_SPAN: u64 = 32 << 20;
const WNOHANG: u32 = 1;
const SIGKILL: i32 = 9;
/// How long a child may run before it is killed.
const CHILD_DEADLINE_NS: u64 = 3_000_000_000;

struct Options {
    seed: u64,
    calls: u64,
    time_s: u64,
    feedback: bool,
    replay: Option<String>,
}

/// `--keep-tmp`: leave what children put in `/tmp` (the harness's check that the leak check
/// fires).
static KEEP_TMP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        seed: 1,
        calls: 10_000,
        time_s: 0,
        feedback: true,
        replay: None,
    };
    let mut args = cowlab_userland::args()
        .skip(1)
        .map(|a| a.to_str().unwrap_or(""));
    while let Some(a) = args.next() {
        let mut value = |what: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| alloc::format!("{what} wants a number"))
        };
        match a {
            "--seed" => o.seed = value("--seed")?,
            "--calls" => o.calls = value("--calls")?,
            "--time" => o.time_s = value("--time")?,
            "--no-feedback" => o.feedback = false,
            "--replay" => o.replay = args.next().map(String::from),
            "--keep-tmp" => KEEP_TMP.store(true, core::sync::atomic::Ordering::Relaxed),
            other => return Err(alloc::format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// The parent's kcov: the buffer every child traces into (None without kcov).
struct Kcov {
    fd: i32,
    area: *mut u64,
}

impl Kcov {
    fn open() -> Option<Kcov> {
        let fd = open(c"/sys/kernel/debug/kcov", O_RDWR).ok()?;
        // SAFETY: an ioctl with an integer argument.
        unsafe { raw(IOCTL, [fd as usize, KCOV_INIT_TRACE, KCOV_WORDS, 0, 0, 0]) }.ok()?;
        let len = KCOV_WORDS * 8;
        // SAFETY: a new shared mapping of the kcov file at an address the kernel chooses.
        let area = unsafe { mmap_fd(0, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) }.ok()?;
        // Map every page now: the leak check must not see the parent's page tables grow.
        for page in (0..len).step_by(4096) {
            // SAFETY: inside the mapping just made.
            unsafe { core::ptr::read_volatile((area + page) as *const u64) };
        }
        Some(Kcov {
            fd,
            area: area as *mut u64,
        })
    }

    /// In the child: trace this task from here on, from an empty buffer.
    fn enable(&self) {
        // SAFETY: an ioctl with an integer argument; word 0 of the mapping is ours to reset.
        unsafe {
            let _ = raw(
                IOCTL,
                [self.fd as usize, KCOV_ENABLE, KCOV_TRACE_PC, 0, 0, 0],
            );
            core::ptr::write_volatile(self.area, 0);
        }
    }

    /// The PCs the last child stored.
    fn pcs(&self) -> &[u64] {
        // SAFETY: the mapping holds KCOV_WORDS words; the count is clamped to it (a child can
        // write anything into word 0).
        unsafe {
            let n = (core::ptr::read_volatile(self.area) as usize).min(KCOV_WORDS - 1);
            core::slice::from_raw_parts(self.area.add(1), n)
        }
    }
}

/// Unique PCs seen so far: a bitmap over the kernel's text.
struct Coverage {
    bits: Vec<u64>,
    blocks: u64,
}

impl Coverage {
    fn new() -> Coverage {
        Coverage {
            bits: alloc::vec![0; (TEXT_SPAN / 64) as usize],
            blocks: 0,
        }
    }

    /// Adds `pcs`; returns how many were new.
    fn add(&mut self, pcs: &[u64]) -> u64 {
        let mut new = 0;
        for &pc in pcs {
            let Some(off) = pc.checked_sub(KERNEL_BASE).filter(|&o| o < TEXT_SPAN) else {
                continue;
            };
            let (w, b) = ((off / 64) as usize, off % 64);
            if self.bits[w] & (1 << b) == 0 {
                self.bits[w] |= 1 << b;
                new += 1;
            }
        }
        self.blocks += new;
        new
    }
}

/// The `/proc/cowlab/mmstat` gauges that must come back after every child.
const GAUGES: &[&str] = &[
    "free_frames",
    "anon_pages",
    "zero_page_mappings",
    "pagetable_pages",
    "gup_pins_held",
    "gup_refs_held",
    "shmem_pages",
];

/// Reads the gauges into `out` without allocating (the check runs between two reads).
fn gauges(buf: &mut [u8; 2048], out: &mut [u64; 7]) -> bool {
    let Some(n) = read_file(c"/proc/cowlab/mmstat", buf) else {
        return false;
    };
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = GAUGES.iter().position(|g| *g == name) {
            out[i] = value.trim().parse().unwrap_or(0);
        }
    }
    true
}

#[derive(Clone, Copy)]
enum Outcome {
    Exited = 0,
    Signaled = 1,
    TimedOut = 2,
}

/// Runs `prog` in a forked child, reaps it, and cleans `/tmp`.
fn run_child(prog: &Prog, kcov: Option<&Kcov>) -> Outcome {
    let pid = match fork() {
        Ok(0) => {
            if let Some(k) = kcov {
                k.enable();
                let _ = close(k.fd);
            }
            // The console is the host's: nothing a program does may write to it, and a read
            // from it would block.
            for fd in 0..3 {
                let _ = close(fd);
            }
            exec::run(prog);
            exit_now(0);
        }
        Ok(pid) => pid,
        Err(Errno(e)) => {
            println!("FUZZ fork failed: errno {e}");
            exit_now(2);
        }
    };
    let start = monotonic_ns();
    let mut killed = false;
    let status = loop {
        match waitpid(pid, WNOHANG) {
            Ok((0, _)) => {}
            Ok((_, status)) => break status,
            Err(Errno(cowlab_userland::sys::EINTR)) => {}
            Err(Errno(e)) => {
                println!("FUZZ wait4 failed: errno {e}");
                exit_now(2);
            }
        }
        if !killed && monotonic_ns() - start > CHILD_DEADLINE_NS {
            let _ = kill(pid, SIGKILL);
            killed = true;
        }
        sched_yield();
    };
    if !KEEP_TMP.load(core::sync::atomic::Ordering::Relaxed) {
        clean_tmp();
    }
    if killed {
        Outcome::TimedOut
    } else if wifsignaled(status) {
        Outcome::Signaled
    } else {
        Outcome::Exited
    }
}

/// Removes every file in `/tmp` (whatever names the child made: paths come from a fixed
/// table, but a long or relative one is easy to miss), allocating nothing.
fn clean_tmp() {
    let Ok(dir) = open(c"/tmp", O_RDONLY | O_DIRECTORY) else {
        return;
    };
    let mut dents = [0u8; 2048];
    let mut path = [0u8; 5 + 256 + 1];
    path[..5].copy_from_slice(b"/tmp/");
    // Unlinking while reading the directory can skip entries: read again until it is empty.
    loop {
        let _ = lseek(dir, 0, 0);
        let Ok(n) = getdents64(dir, &mut dents) else {
            break;
        };
        let mut removed = false;
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_le_bytes([dents[at + 16], dents[at + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &dents[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if name != b"." && name != b".." && name.len() <= 256 {
                path[5..5 + name.len()].copy_from_slice(name);
                path[5 + name.len()] = 0;
                if let Ok(p) = CStr::from_bytes_with_nul(&path[..5 + name.len() + 1]) {
                    removed |= unlink(p).is_ok();
                }
            }
            at += reclen;
        }
        if !removed {
            break;
        }
    }
    let _ = close(dir);
}

struct Fuzzer {
    kcov: Option<Kcov>,
    cover: Coverage,
    mmstat: [u8; 2048],
    execs: u64,
    calls: u64,
    /// Children that exited, were killed by a signal, were killed at the deadline.
    outcomes: [u64; 3],
}

impl Fuzzer {
    /// Runs one program; returns the new blocks it reached (none for a child killed at the
    /// deadline: a program that blocks is not worth mutating), or prints the leak and exits.
    fn execute(&mut self, prog: &Prog) -> u64 {
        let mut before = [0u64; 7];
        let mut after = [0u64; 7];
        let have = gauges(&mut self.mmstat, &mut before);
        let outcome = run_child(prog, self.kcov.as_ref());
        self.execs += 1;
        self.calls += prog.len() as u64;
        if have && gauges(&mut self.mmstat, &mut after) && before != after {
            println!("FUZZ LEAK after program {}", self.execs);
            for (i, g) in GAUGES.iter().enumerate() {
                if before[i] != after[i] {
                    println!("FUZZ LEAK {g} {} -> {}", before[i], after[i]);
                }
            }
            println!("FUZZ CRASH leak {}", prog::encode(prog));
            exit_now(1);
        }
        // A child killed at the deadline is not a crash: a call may block forever on Linux too.
        self.outcomes[outcome as usize] += 1;
        match self.kcov.as_ref() {
            Some(k) => {
                let new = self.cover.add(k.pcs());
                if matches!(outcome, Outcome::TimedOut) {
                    0
                } else {
                    new
                }
            }
            None => 0,
        }
    }

    fn report(&self, start: u64, corpus: usize) {
        println!(
            "COVER ms={} execs={} calls={} blocks={} corpus={} exited={} signaled={} timedout={}",
            (monotonic_ns() - start) / 1_000_000,
            self.execs,
            self.calls,
            self.cover.blocks,
            corpus,
            self.outcomes[0],
            self.outcomes[1],
            self.outcomes[2]
        );
    }
}

fn main() -> i32 {
    let o = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            println!("fuzz: {e}");
            return 2;
        }
    };
    if !cowlab_userland::test::on_cowlab() {
        println!("fuzz: runs only on cowlab (random system calls would damage a real system)");
        return 2;
    }
    if !layout::map() {
        println!("fuzz: cannot map the data area");
        return 2;
    }
    let kcov = Kcov::open();
    let mut f = Fuzzer {
        kcov,
        cover: Coverage::new(),
        mmstat: [0; 2048],
        execs: 0,
        calls: 0,
        outcomes: [0; 3],
    };
    // Fault in the bitmap and the mmstat buffer before any leak check.
    for w in (0..f.cover.bits.len()).step_by(512) {
        f.cover.bits[w] = 0;
    }
    let mut warm = [0u64; 7];
    gauges(&mut f.mmstat, &mut warm);
    // The clean-up's stack too (its first use must not look like a leak).
    clean_tmp();
    if let Some(path) = o.replay {
        return replay(&mut f, &path);
    }
    println!(
        "FUZZ start seed={} calls={} time={} feedback={} kcov={}",
        o.seed,
        o.calls,
        o.time_s,
        o.feedback,
        f.kcov.is_some()
    );
    let mut rng = Rng::new(o.seed);
    let mut corpus: Vec<Prog> = Vec::new();
    let start = monotonic_ns();
    let mut last_report = 0;
    loop {
        let elapsed = monotonic_ns() - start;
        if (o.calls != 0 && f.calls >= o.calls)
            || (o.time_s != 0 && elapsed >= o.time_s * 1_000_000_000)
        {
            break;
        }
        let prog = if o.feedback && !corpus.is_empty() && !rng.one_in(2) {
            let mut p = corpus[rng.below(corpus.len() as u64) as usize].clone();
            let other = corpus[rng.below(corpus.len() as u64) as usize].clone();
            prog::mutate(&mut rng, &mut p, &other);
            p
        } else {
            prog::generate(&mut rng)
        };
        println!("FUZZ PROG {}", prog::encode(&prog));
        let new = f.execute(&prog);
        if new > 0 && o.feedback {
            corpus.push(prog);
        }
        if elapsed - last_report >= 1_000_000_000 {
            last_report = elapsed;
            f.report(start, corpus.len());
        }
    }
    f.report(start, corpus.len());
    println!(
        "FUZZ DONE execs={} calls={} blocks={} corpus={}",
        f.execs,
        f.calls,
        f.cover.blocks,
        corpus.len()
    );
    0
}

/// Runs the program in file `path` once (the host checks the kernel survived; a leak prints
/// `FUZZ CRASH leak` and exits 1).
fn replay(f: &mut Fuzzer, path: &str) -> i32 {
    let mut text = alloc::vec![0u8; 1 << 20];
    let mut cpath = String::from(path);
    cpath.push('\0');
    let Ok(name) = CStr::from_bytes_with_nul(cpath.as_bytes()) else {
        return 2;
    };
    let Some(n) = read_file(name, &mut text) else {
        println!("fuzz: cannot read {path}");
        return 2;
    };
    let Ok(text) = core::str::from_utf8(&text[..n]) else {
        println!("fuzz: {path} is not text");
        return 2;
    };
    // Several programs separated by `---` lines run one after the other, each in its own
    // child with its own leak check (a leak that needs an earlier program's leftovers).
    let mut calls = 0;
    let mut new = 0;
    for part in text.split("\n---") {
        let Some(prog) = prog::decode(part) else {
            println!("fuzz: {path} is not a program");
            return 2;
        };
        if prog.is_empty() {
            continue;
        }
        println!("FUZZ PROG {}", prog::encode(&prog));
        new += f.execute(&prog);
        calls += prog.len();
    }
    println!("FUZZ REPLAY ok calls={calls} blocks={new}");
    0
}
