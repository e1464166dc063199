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
const MADV_DONTFORK: i32 = 10;
const SIGALRM: i32 = 14;
const SETITIMER: usize = 38;
/// How long a child may run before its alarm kills it (a program of 24 calls takes about
/// 25 ms; one that blocks, in a futex wait for example, would hold the loop this long).
const CHILD_DEADLINE_MS: u64 = 1000;

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
        // Children never touch the buffer (the kernel writes it through the direct map):
        // leaving it out of fork saves copying 2048 page-table entries per program.
        madvise(area, len, MADV_DONTFORK).ok()?;
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

    /// In the parent, before the fork: start the next window from an empty buffer.
    fn reset(&self) {
        // SAFETY: word 0 of the mapping is ours to reset.
        unsafe { core::ptr::write_volatile(self.area, 0) };
    }

    /// In the child: trace this task from here on (the buffer is not mapped in the child).
    fn enable(&self) {
        // SAFETY: an ioctl with an integer argument.
        let _ = unsafe {
            raw(
                IOCTL,
                [self.fd as usize, KCOV_ENABLE, KCOV_TRACE_PC, 0, 0, 0],
            )
        };
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

/// Unique PCs (blocks) and unique transitions between consecutive PCs of one trace (edges)
/// seen so far: a bitmap over the kernel's text and a hashed bitmap of edges (AFL's map).
struct Coverage {
    bits: &'static mut [u64],
    edge_bits: &'static mut [u64],
    blocks: u64,
    edges: u64,
}

/// 2^24 edge slots (2 MiB): collisions stay rare at the ~20,000 edges a run reaches.
const EDGE_BITS_LOG2: u32 = 24;

/// A private read-write mapping of `len` bytes of zeroes left out of fork (copying and
/// zapping its page-table entries per program cost more than the programs' calls), every page
/// touched now so no later leak check sees it grow.
fn dontfork_words(len: usize) -> Option<&'static mut [u64]> {
    let at = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).ok()?;
    madvise(at, len, MADV_DONTFORK).ok()?;
    // SAFETY: a fresh private read-write mapping of `len` bytes, owned by the returned slice for
    // the rest of the process; anonymous memory reads as zeroes.
    let words = unsafe { core::slice::from_raw_parts_mut(at as *mut u64, len / 8) };
    for w in (0..words.len()).step_by(512) {
        words[w] = 0;
    }
    Some(words)
}

impl Coverage {
    fn new() -> Option<Coverage> {
        Some(Coverage {
            bits: dontfork_words((TEXT_SPAN / 8) as usize)?,
            edge_bits: dontfork_words(1 << (EDGE_BITS_LOG2 - 3))?,
            blocks: 0,
            edges: 0,
        })
    }

    /// Adds the trace `pcs`; returns how many blocks and edges were new.
    fn add(&mut self, pcs: &[u64]) -> (u64, u64) {
        let (blocks, edges) = cowlab_fuzzcore::Cover {
            blocks: self.bits,
            edges: self.edge_bits,
            edge_log2: EDGE_BITS_LOG2,
            base: KERNEL_BASE,
        }
        .add(pcs);
        self.blocks += blocks;
        self.edges += edges;
        (blocks, edges)
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
    *out = [0; 7];
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = GAUGES.iter().position(|g| *g == name) {
            out[i] += value.trim().parse().unwrap_or(0);
        }
        // A closed file's clean pages stay cached (reclaimable, as on Linux): a child that read
        // an ext2 file leaves frames in the cache, not lost. Counted with the free frames.
        if name == "file_pages" {
            out[0] += value.trim().parse().unwrap_or(0);
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
fn run_child(prog: &Prog, kcov: Option<&Kcov>, clean_ns: &mut u64) -> Outcome {
    if let Some(k) = kcov {
        k.reset();
    }
    let pid = match fork() {
        Ok(0) => {
            // A call may block forever, as on Linux: SIGALRM (its default action kills; the
            // call table can neither block, catch nor ignore a signal) ends the child at the
            // deadline.
            let timer = [
                0u64,
                0,
                CHILD_DEADLINE_MS / 1000,
                CHILD_DEADLINE_MS % 1000 * 1000,
            ];
            // SAFETY: setitimer(ITIMER_REAL) reads the timer from a local.
            let _ = unsafe { raw(SETITIMER, [0, timer.as_ptr() as usize, 0, 0, 0, 0]) };
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
    // The child's own alarm ends it at the deadline; a blocking wait leaves the CPU to it
    // (polling with sched_yield took half the CPU from the child it waited for).
    let status = loop {
        match waitpid(pid, 0) {
            Ok((_, status)) => break status,
            Err(Errno(cowlab_userland::sys::EINTR)) => {}
            Err(Errno(e)) => {
                println!("FUZZ wait4 failed: errno {e}");
                exit_now(2);
            }
        }
    };
    reap_orphans();
    if !KEEP_TMP.load(core::sync::atomic::Ordering::Relaxed) {
        let t = monotonic_ns();
        clean();
        *clean_ns += monotonic_ns() - t;
    }
    if wifsignaled(status) && status & 0x7f == SIGALRM {
        Outcome::TimedOut
    } else if wifsignaled(status) {
        Outcome::Signaled
    } else {
        Outcome::Exited
    }
}

const PRCTL: usize = 157;
const MKDIR: usize = 83;
const CHDIR: usize = 80;
const UNLINKAT: usize = 263;
const AT_REMOVEDIR: usize = 0x200;
const ECHILD: usize = 10;

/// After a program: removes whatever it left in `/tmp` and in the ext2 scratch directory
/// (whatever the names: paths come from a fixed table, but a long or relative one is easy to
/// miss), and `/nonexistent` (on the writable root, `mkdir`/`link`/`rename` can make it), makes
/// the scratch directory again if it went and returns to it; allocates nothing.
fn clean() {
    for dir in [c"/tmp", layout::SCRATCH_DIR] {
        if let Ok(fd) = open(dir, O_RDONLY | O_DIRECTORY) {
            empty_dir(fd, 0);
            let _ = close(fd);
        }
    }
    if let Ok(fd) = open(c"/", O_RDONLY | O_DIRECTORY) {
        remove_at(fd, b"nonexistent\0", 0);
        let _ = close(fd);
    }
    // SAFETY: mkdir and chdir read a NUL-terminated path.
    unsafe {
        let _ = raw(
            MKDIR,
            [layout::SCRATCH_DIR.as_ptr() as usize, 0o755, 0, 0, 0, 0],
        );
        let _ = raw(
            CHDIR,
            [layout::SCRATCH_DIR.as_ptr() as usize, 0, 0, 0, 0, 0],
        );
    }
}

/// Removes `name` (NUL-terminated) in directory `dir`: a file, or a directory after emptying
/// it (at most four levels: the paths programs name are at most two below the scratch
/// directory).
fn remove_at(dir: i32, name: &[u8], depth: u32) {
    let p = name.as_ptr() as usize;
    // SAFETY: unlinkat and openat read the NUL-terminated name.
    unsafe {
        if raw(UNLINKAT, [dir as usize, p, 0, 0, 0, 0]).is_ok() || depth >= 4 {
            return;
        }
        if let Ok(sub) = raw(
            257,
            [dir as usize, p, (O_RDONLY | O_DIRECTORY) as usize, 0, 0, 0],
        ) {
            empty_dir(sub as i32, depth + 1);
            let _ = close(sub as i32);
            let _ = raw(UNLINKAT, [dir as usize, p, AT_REMOVEDIR, 0, 0, 0]);
        }
    }
}

/// Removes everything in the directory open as `dir`.
fn empty_dir(dir: i32, depth: u32) {
    let mut dents = [0u8; 1024];
    let mut name = [0u8; 256 + 1];
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
            let raw_name = &dents[at + 19..(at + reclen).min(n)];
            let len = raw_name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(raw_name.len());
            let entry = &raw_name[..len];
            if entry != b"." && entry != b".." && len < name.len() {
                name[..len].copy_from_slice(entry);
                name[len] = 0;
                remove_at(dir, &name[..=len], depth);
                removed = true;
            }
            at += reclen;
        }
        if !removed {
            break;
        }
    }
}

/// Collects the program's own children that outlived it (this process is their subreaper;
/// they sleep at most 31 ms): waits up to the child deadline for them.
fn reap_orphans() {
    let start = monotonic_ns();
    loop {
        match waitpid(-1, 1) {
            Ok((0, _)) if monotonic_ns() - start < CHILD_DEADLINE_MS * 1_000_000 => {
                let _ = sleep_ms(1);
            }
            Ok((0, _)) => return,
            Ok(_) => {}
            Err(Errno(e)) if e as usize == ECHILD => return,
            Err(_) => return,
        }
    }
}

struct Fuzzer {
    kcov: Option<Kcov>,
    cover: Coverage,
    mmstat: [u8; 2048],
    execs: u64,
    calls: u64,
    /// Children that exited, were killed by a signal, were killed at the deadline.
    outcomes: [u64; 3],
    /// Where the guest time goes, in ns (`FUZZ PROFILE` at the end).
    prof: Profile,
}

/// Guest time spent in each phase of the loop, and the PCs kcov handed over.
#[derive(Default)]
struct Profile {
    /// Generating or mutating the next program.
    gen: u64,
    /// Printing `FUZZ PROG`.
    print: u64,
    /// Reading `/proc/cowlab/mmstat` before and after.
    gauges: u64,
    /// fork to reaped child (the calls themselves, fork, exit, wait).
    child: u64,
    /// Emptying `/tmp`.
    clean: u64,
    /// Adding the child's PCs to the coverage.
    cover: u64,
    /// PCs read from the kcov buffer.
    pcs: u64,
}

impl Profile {
    fn print(&self, execs: u64, calls: u64, roundtrip_ns: u64) {
        let per = |v: u64| v / execs.max(1) / 1000;
        println!(
            "FUZZ PROFILE per-program-us gen={} print={} gauges={} child={} clean={} cover={} pcs-per-program={} empty-child-us={} calls-per-program={}",
            per(self.gen),
            per(self.print),
            per(self.gauges),
            per(self.child),
            per(self.clean),
            per(self.cover),
            self.pcs / execs.max(1),
            roundtrip_ns / 1000,
            calls / execs.max(1)
        );
    }
}

impl Fuzzer {
    /// Runs one program; returns the new edges it reached (none for a child killed at the
    /// deadline: a program that blocks is not worth mutating), or prints the leak and exits.
    fn execute(&mut self, prog: &Prog) -> u64 {
        let mut before = [0u64; 7];
        let mut after = [0u64; 7];
        let t0 = monotonic_ns();
        let have = gauges(&mut self.mmstat, &mut before);
        let t1 = monotonic_ns();
        let cleaned = self.prof.clean;
        let outcome = run_child(prog, self.kcov.as_ref(), &mut self.prof.clean);
        let t2 = monotonic_ns();
        self.execs += 1;
        self.calls += prog.len() as u64;
        let have = have && gauges(&mut self.mmstat, &mut after);
        let t3 = monotonic_ns();
        self.prof.gauges += (t1 - t0) + (t3 - t2);
        self.prof.child += (t2 - t1) - (self.prof.clean - cleaned);
        if have && before != after {
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
                let t = monotonic_ns();
                let pcs = k.pcs();
                self.prof.pcs += pcs.len() as u64;
                let (_, new) = self.cover.add(pcs);
                self.prof.cover += monotonic_ns() - t;
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
            "COVER ms={} execs={} calls={} blocks={} corpus={} exited={} signaled={} timedout={} edges={}",
            (monotonic_ns() - start) / 1_000_000,
            self.execs,
            self.calls,
            self.cover.blocks,
            corpus,
            self.outcomes[0],
            self.outcomes[1],
            self.outcomes[2],
            self.cover.edges
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
        cover: match Coverage::new() {
            Some(c) => c,
            None => {
                println!("fuzz: cannot map the coverage bitmap");
                return 2;
            }
        },
        mmstat: [0; 2048],
        execs: 0,
        calls: 0,
        outcomes: [0; 3],
        prof: Profile::default(),
    };
    // Fault in the mmstat buffer and the stack the clean-up may use before any leak check.
    warm_stack();
    let mut warm = [0u64; 7];
    gauges(&mut f.mmstat, &mut warm);
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1): the programs' own children (`spawn`) that
    // outlive them come to this process, which collects them before the leak check.
    let _ = unsafe { raw(PRCTL, [36, 1, 0, 0, 0, 0]) };
    clean();
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
    // Kept programs and their weight (1 + the edges they added: syzkaller picks by signal).
    let mut corpus: Vec<(Prog, u64)> = Vec::new();
    let mut weight = 0u64;
    let start = monotonic_ns();
    let mut last_report = 0;
    loop {
        let elapsed = monotonic_ns() - start;
        if (o.calls != 0 && f.calls >= o.calls)
            || (o.time_s != 0 && elapsed >= o.time_s * 1_000_000_000)
        {
            break;
        }
        let t = monotonic_ns();
        let prog = if o.feedback && !corpus.is_empty() && !rng.one_in(2) {
            let mut p = pick(&corpus, rng.below(weight)).clone();
            let other = pick(&corpus, rng.below(weight)).clone();
            prog::mutate(&mut rng, &mut p, &other);
            p
        } else {
            prog::generate(&mut rng)
        };
        let t1 = monotonic_ns();
        println!("FUZZ PROG {}", prog::encode(&prog));
        let t2 = monotonic_ns();
        f.prof.gen += t1 - t;
        f.prof.print += t2 - t1;
        let new = f.execute(&prog);
        if new > 0 && o.feedback {
            weight += 1 + new;
            corpus.push((prog, 1 + new));
        }
        if elapsed - last_report >= 1_000_000_000 {
            last_report = elapsed;
            f.report(start, corpus.len());
        }
    }
    f.report(start, corpus.len());
    // The harness's round trip alone: a program of no calls, a few times.
    let t = monotonic_ns();
    for _ in 0..8 {
        run_child(&Vec::new(), f.kcov.as_ref(), &mut 0);
    }
    f.prof.print(f.execs, f.calls, (monotonic_ns() - t) / 8);
    println!(
        "FUZZ DONE execs={} calls={} blocks={} corpus={} edges={}",
        f.execs,
        f.calls,
        f.cover.blocks,
        corpus.len(),
        f.cover.edges
    );
    0
}

/// The kept program that `at` (below the total weight) falls on.
fn pick(corpus: &[(Prog, u64)], mut at: u64) -> &Prog {
    for (p, w) in corpus {
        if at < *w {
            return p;
        }
        at -= w;
    }
    &corpus[corpus.len() - 1].0
}

/// Faults in 64 KiB of stack now, so the clean-up's recursion never grows it between two leak
/// checks.
#[inline(never)]
fn warm_stack() {
    let mut a = [0u8; 64 * 1024];
    for i in (0..a.len()).step_by(4096) {
        // SAFETY: inside the local array.
        unsafe { core::ptr::write_volatile(&mut a[i], 1) };
    }
    core::hint::black_box(&a);
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
