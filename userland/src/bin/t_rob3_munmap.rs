//! A thread touching a range while another thread's munmap frees it (issue 17).
//!
//! Linux detaches the VMAs of the whole range under `mmap_lock` before it frees a page, so a
//! concurrent access finds either the old data (a page not yet zapped, still in the TLB or the
//! page table) or no mapping at all (`SIGSEGV`, or `EFAULT` for a system call's copy); never a
//! fresh zero page, and nothing it does makes a page that survives the munmap. cowlab frees a
//! large range in batches with the address space unlocked between them; before the fix the
//! VMAs stayed until the last batch, so a copy from a page an earlier batch had freed faulted
//! in a new zero page.
//!
//! The toucher copies the first word of the range's first pages into a memfd with `pwrite` (a
//! kernel copy: `EFAULT` instead of a signal) and reads it back: each word must be the page's
//! pattern, or the copy must fail. After munmap every page of the range is `EFAULT`.

#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, spinner, Tester};
use cowlab_userland::thread;

cowlab_userland::entry!(main);

const EFAULT: Errno = Errno(14);
const MAP_POPULATE: u32 = 0x8000;
/// 64 MiB: eight of cowlab's 8 MiB munmap batches.
const PAGES: usize = 16384;
/// The toucher's pages: the start of the range, which the first batch frees.
const TOUCHED: usize = 64;

static BASE: AtomicUsize = AtomicUsize::new(0);
static SINK: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static IN_MUNMAP: AtomicBool = AtomicBool::new(false);
static TOUCHES: AtomicUsize = AtomicUsize::new(0);
static DURING: AtomicUsize = AtomicUsize::new(0);
static ZEROS: AtomicUsize = AtomicUsize::new(0);
static WRONG: AtomicUsize = AtomicUsize::new(0);
static FAULTS: AtomicUsize = AtomicUsize::new(0);

fn pattern(page: usize) -> u64 {
    0xa5a5_0000_0000_0000 | page as u64
}

fn toucher(_: usize) -> i32 {
    let base = BASE.load(Ordering::Relaxed);
    let sink = SINK.load(Ordering::Relaxed) as i32;
    let mut i = 0;
    while !STOP.load(Ordering::Relaxed) {
        let page = i % TOUCHED;
        i += 1;
        let during = IN_MUNMAP.load(Ordering::Relaxed);
        // SAFETY: the kernel reads 8 bytes at that address or answers EFAULT; this thread
        // never dereferences it itself.
        let src = unsafe { core::slice::from_raw_parts((base + page * 4096) as *const u8, 8) };
        match pwrite(sink, src, 0) {
            Ok(8) => {
                let mut word = [0u8; 8];
                let _ = pread(sink, &mut word, 0);
                let got = u64::from_ne_bytes(word);
                if got == 0 {
                    ZEROS.fetch_add(1, Ordering::Relaxed);
                } else if got != pattern(page) {
                    WRONG.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(EFAULT) => {
                FAULTS.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                WRONG.fetch_add(1, Ordering::Relaxed);
            }
        }
        TOUCHES.fetch_add(1, Ordering::Relaxed);
        if during {
            DURING.fetch_add(1, Ordering::Relaxed);
        }
    }
    0
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob3_munmap");
    let len = PAGES * 4096;
    let (Ok(base), Ok(sink)) = (
        mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS),
        memfd_create(c"sink", 0),
    ) else {
        t.check("mmap and memfd", false);
        return t.finish();
    };
    for page in 0..PAGES {
        // SAFETY: inside the fresh mapping.
        unsafe { ((base + page * 4096) as *mut u64).write_volatile(pattern(page)) };
    }
    BASE.store(base, Ordering::Relaxed);
    SINK.store(sink as usize, Ordering::Relaxed);
    let Ok(th) = thread::spawn(toucher, 0) else {
        t.check("spawn the toucher", false);
        return t.finish();
    };
    while TOUCHES.load(Ordering::Relaxed) < 100 {
        sched_yield();
    }
    IN_MUNMAP.store(true, Ordering::Relaxed);
    let r = munmap(base, len);
    IN_MUNMAP.store(false, Ordering::Relaxed);
    // A few more touches after munmap returned: each must fail.
    let after = TOUCHES.load(Ordering::Relaxed);
    let faults_before = FAULTS.load(Ordering::Relaxed);
    // (One touch may have been under way when munmap returned.)
    while TOUCHES.load(Ordering::Relaxed) <= after + 2 * TOUCHED {
        sched_yield();
    }
    let faults_after = FAULTS.load(Ordering::Relaxed) - faults_before;
    STOP.store(true, Ordering::Relaxed);
    th.join();
    t.eq("munmap of 64 MiB with a toucher", r, Ok(0));
    if on_cowlab() {
        // One CPU: the toucher runs when munmap yields between its batches.
        t.check_why(
            "the toucher ran while munmap was freeing",
            DURING.load(Ordering::Relaxed) > 0,
            format_args!("{} touches", DURING.load(Ordering::Relaxed)),
        );
    }
    t.eq(
        "no copy from the range ever read a zero page",
        ZEROS.load(Ordering::Relaxed),
        0,
    );
    t.eq(
        "no copy read another word",
        WRONG.load(Ordering::Relaxed),
        0,
    );
    t.check_why(
        "after munmap every copy from the range is EFAULT",
        faults_after >= 2 * TOUCHED,
        format_args!("{faults_after} of at least {}", 2 * TOUCHED),
    );
    let mut ok = true;
    for page in (0..PAGES).step_by(PAGES / 16) {
        // SAFETY: as in the toucher: only the kernel reads it.
        let src = unsafe { core::slice::from_raw_parts((base + page * 4096) as *const u8, 8) };
        ok &= pwrite(sink, src, 0) == Err(EFAULT);
    }
    t.check("no page of the range survives munmap", ok);
    let _ = close(sink);
    exit_of_a_large_process(&mut t);
    t.finish()
}

/// The exit of a process with 512 MiB populated frees its pages in batches: a spinning child
/// gets at least a tenth of the time the exit takes (before, the teardown held the CPU for its
/// whole length, a slice at most for the spinner).
fn exit_of_a_large_process(t: &mut Tester) {
    const LEN: usize = 512 << 20;
    let Ok(page) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        return t.check("map the shared words", false);
    };
    // SAFETY: a fresh shared read-write page, aligned for AtomicU64s, alive until exit.
    let words = unsafe { &*(page as *const [AtomicU64; 3]) };
    // words[0]: the spinner's count; [1]: the big child is populated; [2]: it may exit.
    let big = match fork() {
        Ok(0) => {
            let populated = mmap(
                0,
                LEN,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
            );
            words[1].store(if populated.is_ok() { 1 } else { 2 }, Ordering::Relaxed);
            while words[2].load(Ordering::Relaxed) == 0 {
                sched_yield();
            }
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => return t.check("fork the large process", false),
    };
    while words[1].load(Ordering::Relaxed) == 0 {
        let _ = sleep_ms(10);
    }
    t.eq(
        "the large child populated 512 MiB",
        words[1].load(Ordering::Relaxed),
        1,
    );
    let Some(spin) = spinner(&words[0]) else {
        let _ = kill(big, 9);
        let _ = waitpid(big, 0);
        return t.check("fork the spinner", false);
    };
    // The spinner's rate alone, while this process sleeps and the big child yields.
    let b = words[0].load(Ordering::Relaxed);
    let _ = sleep_ms(200);
    let per_ms = (words[0].load(Ordering::Relaxed) - b) / 200;
    let before = words[0].load(Ordering::Relaxed);
    let start = monotonic_ns();
    words[2].store(1, Ordering::Relaxed);
    let status = waitpid(big, 0).map(|(_, s)| s);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    let after = words[0].load(Ordering::Relaxed);
    let _ = kill(spin, 9);
    let _ = waitpid(spin, 0);
    t.eq("the large child exited with 0", status, Ok(0));
    t.check_why(
        "the spinning child got at least a tenth of the large exit's time",
        after - before >= (per_ms * took_ms / 10).max(1),
        format_args!(
            "{} counts in {took_ms} ms, {per_ms} per ms alone",
            after - before
        ),
    );
    let _ = munmap(page, 4096);
}
