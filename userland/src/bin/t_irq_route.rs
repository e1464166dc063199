//! Device interrupts on every CPU (issue 16): the virtio-blk line follows the CPU that submits
//! (`virtio_blk::steer_interrupts`), so O_DIRECT reads issued by a thread pinned to CPU n
//! complete on CPU n, as `/proc/interrupts` shows (a `CPUn` column per CPU, the `vda` row).
//! Meanwhile a thread pinned to another CPU faults in, checks and unmaps anonymous memory of
//! the same process, so the completions' unpins run beside its faults and frees; in a second
//! phase that thread zaps (`MADV_DONTNEED`) and refaults the very pages the reads are into, so
//! a completion's unpin is often the last reference and frees the frame. Every read that kept
//! its pages is checked against the disk's stamp; xtask checks the frames return to baseline.
//!
//! QEMU only (`/dev/vda` is the stamped test disk; on a host it could be a real disk). With one
//! CPU the per-CPU checks are skipped with a line saying so; xtask boots it with 2 CPUs.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sched::{sched_getaffinity, sched_setaffinity};
use cowlab_userland::test::{ms_since, Tester};
use cowlab_userland::thread::spawn;
use cowlab_userland::vda::is_stamped;

cowlab_userland::entry!(main);

const MADVISE: usize = 28;
const MADV_DONTNEED: usize = 4;
const PAGE: usize = 4096;
/// The reads' buffer: 16 pages, one 4 KiB O_DIRECT read per page.
const BUF_PAGES: usize = 16;
/// The faulting thread's region.
const FAULT_PAGES: usize = 64;
/// Completions on the reader's CPU that count as "the interrupt follows the submitter".
const WANT_ON_CPU: u64 = 8;
/// How long one CPU's phase may take to see them (loose: a loaded host deschedules vCPUs, and
/// the steering runs on the boot CPU's tick).
const PHASE_LIMIT_MS: u64 = 60_000;

/// `/proc/interrupts` (empty if unreadable).
fn proc_interrupts() -> String {
    let Ok(fd) = open(c"/proc/interrupts", O_RDONLY) else {
        return String::new();
    };
    let mut buf = alloc::vec![0u8; 8192];
    let mut len = 0;
    while len < buf.len() {
        match read(fd, &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let _ = close(fd);
    String::from(core::str::from_utf8(&buf[..len]).unwrap_or(""))
}

/// The `vda` row of `/proc/interrupts`: (CPU number, count) per column.
fn vda_counts() -> Vec<(usize, u64)> {
    let text = proc_interrupts();
    let mut lines = text.lines();
    let cpus: Vec<usize> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    let Some(row) = lines.find(|l| l.split([' ', ',']).any(|w| w == "vda")) else {
        return Vec::new();
    };
    let counts = row
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse::<u64>().ok());
    cpus.into_iter()
        .zip(counts)
        .filter_map(|(cpu, n)| Some((cpu, n?)))
        .collect()
}

fn on_cpu(counts: &[(usize, u64)], cpu: usize) -> u64 {
    counts
        .iter()
        .find(|(c, _)| *c == cpu)
        .map_or(0, |(_, n)| *n)
}

static STOP: AtomicBool = AtomicBool::new(false);
static FAULTER_CPU: AtomicU64 = AtomicU64::new(0);
/// Rounds the faulting thread finished, and the ones that found wrong data.
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static BAD_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Phase 2: the reads' buffer, which the faulting thread zaps and refaults.
static ZAP_TARGET: AtomicU64 = AtomicU64::new(0);

/// The faulting thread: on its CPU, maps, fills and checks, and unmaps a region, and in phase 2
/// also zaps the reader's buffer, until [`STOP`].
fn faulter(_: usize) -> i32 {
    let _ = sched_setaffinity(0, 1 << FAULTER_CPU.load(Ordering::Relaxed));
    let mut round = 0u64;
    while !STOP.load(Ordering::Relaxed) {
        round += 1;
        let len = FAULT_PAGES * PAGE;
        let Ok(at) = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
            BAD_ROUNDS.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        // SAFETY: a fresh private mapping of `len` bytes, used only here until the munmap.
        let region = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len) };
        for page in 0..FAULT_PAGES {
            region[page * PAGE] = (round as u8) ^ (page as u8);
        }
        let intact = (0..FAULT_PAGES).all(|p| region[p * PAGE] == (round as u8) ^ (p as u8));
        if !intact {
            BAD_ROUNDS.fetch_add(1, Ordering::Relaxed);
        }
        let _ = munmap(at, len);
        let target = ZAP_TARGET.load(Ordering::Relaxed) as usize;
        if target != 0 {
            // SAFETY: madvise on the reader's mapping, which outlives this thread (joined
            // before it is unmapped); DONTNEED on private anonymous memory only drops pages.
            let _ = unsafe { raw(MADVISE, [target, BUF_PAGES * PAGE, MADV_DONTNEED, 0, 0, 0]) };
            // SAFETY: as above; the write refaults the first page (a fresh zero page).
            unsafe { (target as *mut u8).write_volatile(1) };
        }
        ROUNDS.fetch_add(1, Ordering::Relaxed);
        // A breath between rounds: every call here takes the big kernel lock, which the
        // reader's syscalls and its completions' interrupt handler need too.
        let _ = sleep_ms(1);
    }
    0
}

/// One CPU's phase: reads on `cpu` until [`WANT_ON_CPU`] more completions showed there or the
/// time is up; `check_data` when the faulting thread leaves the buffer alone. Returns (reads,
/// reads with wrong data, completions seen on `cpu`, milliseconds).
fn reads_on(fd: i32, buf: &mut [u8], cpu: usize, check_data: bool) -> (u64, u64, u64, u64) {
    let _ = sched_setaffinity(0, 1 << cpu);
    let before = on_cpu(&vda_counts(), cpu);
    let start = monotonic_ns();
    let (mut reads, mut bad, mut seen) = (0u64, 0u64, 0u64);
    while ms_since(start) < PHASE_LIMIT_MS {
        for page in 0..BUF_PAGES {
            let pos = ((reads * 7919) % 4096) * PAGE as u64;
            let chunk = &mut buf[page * PAGE..(page + 1) * PAGE];
            match pread(fd, chunk, pos) {
                Ok(n) if n == PAGE => {
                    if check_data && !is_stamped(chunk, pos) {
                        bad += 1;
                    }
                }
                _ => bad += 1,
            }
            reads += 1;
            seen = on_cpu(&vda_counts(), cpu) - before;
            if seen >= WANT_ON_CPU {
                return (reads, bad, seen, ms_since(start));
            }
        }
    }
    (reads, bad, seen, ms_since(start))
}

fn main() -> i32 {
    let mut t = Tester::new("t_irq_route");
    let mask = sched_getaffinity(0).unwrap_or(0);
    let cpus: Vec<usize> = (0..64).filter(|c| mask & (1 << c) != 0).collect();
    let Ok(fd) = open(c"/dev/vda", O_RDONLY | O_DIRECT) else {
        t.check("open /dev/vda with O_DIRECT", false);
        return t.finish();
    };
    t.check(
        "/proc/interrupts has a vda row with a column per CPU",
        vda_counts().len() >= cpus.len(),
    );
    let len = BUF_PAGES * PAGE;
    let Ok(at) = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
        t.check("map the read buffer", false);
        return t.finish();
    };
    // SAFETY: a fresh private mapping of `len` bytes, used by this thread (and zapped, never
    // dereferenced, by the faulting one) until the munmap at the end.
    let buf = unsafe { core::slice::from_raw_parts_mut(at as *mut u8, len) };
    if cpus.len() < 2 {
        println!("t_irq_route: one CPU allowed: the per-CPU checks are skipped");
        let (reads, bad, seen, _) = reads_on(fd, buf, cpus.first().copied().unwrap_or(0), true);
        t.check_why(
            "reads complete with the disk's data",
            bad == 0 && seen > 0,
            format_args!("{reads} reads, {bad} bad, {seen} interrupts"),
        );
        let _ = munmap(at, len);
        return t.finish();
    }
    // The faulting thread on the first allowed CPU; the reads on each of up to three others.
    FAULTER_CPU.store(cpus[0] as u64, Ordering::Relaxed);
    let Ok(thread) = spawn(faulter, 0) else {
        t.check("start the faulting thread", false);
        return t.finish();
    };
    for &cpu in cpus.iter().skip(1).take(3) {
        let rounds = ROUNDS.load(Ordering::Relaxed);
        let (reads, bad, seen, ms) = reads_on(fd, buf, cpu, true);
        t.check_why(
            &alloc::format!("O_DIRECT reads issued on CPU {cpu} complete there"),
            seen >= WANT_ON_CPU,
            format_args!("{reads} reads, {seen} vda interrupts on CPU {cpu} in {ms} ms"),
        );
        t.check_why(
            &alloc::format!("every read on CPU {cpu} has the disk's data"),
            bad == 0,
            format_args!("{bad} of {reads} wrong"),
        );
        t.check_why(
            &alloc::format!("the faulting thread ran beside CPU {cpu}'s reads"),
            ROUNDS.load(Ordering::Relaxed) > rounds,
            format_args!("{} rounds", ROUNDS.load(Ordering::Relaxed) - rounds),
        );
    }
    // Phase 2: the reads' pages are zapped and refaulted on the other CPU while in flight.
    ZAP_TARGET.store(at as u64, Ordering::Relaxed);
    let cpu = cpus[1];
    let (reads, failed, seen, ms) = reads_on(fd, buf, cpu, false);
    t.check_why(
        "every read into zapped pages returns its 4096 bytes",
        failed == 0,
        format_args!("{failed} of {reads} failed"),
    );
    t.check_why(
        &alloc::format!(
            "reads into pages zapped on CPU {} complete on CPU {cpu}",
            cpus[0]
        ),
        seen >= WANT_ON_CPU,
        format_args!("{reads} reads, {seen} vda interrupts on CPU {cpu} in {ms} ms"),
    );
    STOP.store(true, Ordering::Relaxed);
    thread.join();
    t.eq(
        "the faulting thread always found its own data",
        BAD_ROUNDS.load(Ordering::Relaxed),
        0,
    );
    let _ = munmap(at, len);
    let _ = close(fd);
    for line in proc_interrupts().lines() {
        println!("t_irq_route: /proc/interrupts: {line}");
    }
    t.finish()
}
