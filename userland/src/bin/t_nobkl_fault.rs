//! Page faults of threads on several CPUs at once (issue 16, the fault path without the big
//! kernel lock): four worker threads fault, fill and check their own slices of one anonymous
//! region while a churn thread remaps the guard pages between the slices and mprotects ranges
//! across all of them (splitting and merging the VMAs the workers fault in, shooting down their
//! TLBs), and the main thread forks again and again, each child checking that it sees the data
//! of the moment of its fork and that its writes stay its own while the parent writes on.
//! Every page is checked word by word against a model (which generation of which page it must
//! hold). `rounds=N` worker rounds (default 8), `forks=N` (default 4): short, for CI.
//!
//! The fault path without the lock resolves exactly these faults (zero page, new anon page, COW
//! copy and reuse) while mprotect and munmap take the address space for writing on another
//! CPU; a missed TLB flush, a page mapped twice or freed while mapped, or a lost write shows as
//! a word that differs from the model. Booted with 2 CPUs (`usertest::OWN_CPUS`); the frame
//! count at power-off is the leak check.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tester;
use cowlab_userland::thread::spawn;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;
const WORKERS: usize = 4;
/// Pages of one worker's slice; a guard page follows each slice.
const SLICE: usize = 64;
const STRIDE: usize = SLICE + 1;
/// Pages of the main thread's fork region.
const FORK_PAGES: usize = 32;
const PROT_RW: u32 = PROT_READ | PROT_WRITE;
const PROT_EXEC: u32 = 4;

static BASE: AtomicUsize = AtomicUsize::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(8);
/// Pages whose words differed from the model, and the first such page's address.
static BAD: AtomicU64 = AtomicU64::new(0);
static FIRST_BAD: AtomicU64 = AtomicU64::new(0);
/// Workers that finished every round; system calls of theirs that failed.
static DONE: AtomicU64 = AtomicU64::new(0);
static CALL_ERRORS: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// Churn operations made, and guard pages that were not zero after their remap or lost their
/// pattern.
static CHURNS: AtomicU64 = AtomicU64::new(0);
static GUARD_BAD: AtomicU64 = AtomicU64::new(0);
/// Worker rounds finished, all workers together: the churn thread makes at most one pass per
/// round, so that on many CPUs its write holds cannot starve the workers' faults (a
/// writer-preferring lock and a writer looping on it).
static ROUNDS_DONE: AtomicU64 = AtomicU64::new(0);

/// The `key=N` argument, if any.
fn arg(key: &[u8]) -> Option<u64> {
    cowlab_userland::args().skip(1).find_map(|a| {
        let v = a.to_bytes().strip_prefix(key)?;
        core::str::from_utf8(v).ok()?.parse().ok()
    })
}

/// Word `w` of the page with identity `id` at generation `gen` (0: the zero page's).
fn word(id: usize, gen: u64, w: usize) -> u64 {
    if gen == 0 {
        return 0;
    }
    let x = (id as u64) << 40 ^ gen << 16 ^ w as u64;
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

fn page(addr: usize) -> &'static [AtomicU64] {
    // SAFETY: `addr` is a mapped, readable page of this program's regions while the caller
    // uses it (each thread touches only the pages it owns, see the module comment).
    unsafe { core::slice::from_raw_parts(addr as *const AtomicU64, WORDS) }
}

fn fill(addr: usize, id: usize, gen: u64) {
    for (w, cell) in page(addr).iter().enumerate() {
        cell.store(word(id, gen, w), Ordering::Relaxed);
    }
}

fn matches(addr: usize, id: usize, gen: u64) -> bool {
    page(addr)
        .iter()
        .enumerate()
        .all(|(w, cell)| cell.load(Ordering::Relaxed) == word(id, gen, w))
}

fn verify(addr: usize, id: usize, gen: u64) {
    if !matches(addr, id, gen) && BAD.fetch_add(1, Ordering::Relaxed) == 0 {
        FIRST_BAD.store(addr as u64, Ordering::Relaxed);
    }
}

fn call(r: Result<usize, Errno>) {
    if r.is_err() {
        CALL_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

/// [`call`] for an mprotect across the workers' slices, which may meet a hole.
fn call_or_hole(r: Result<usize, Errno>) {
    if matches!(r, Err(Errno(e)) if e != cowlab_userland::sys::errno::ENOMEM) {
        CALL_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

fn slice_addr(worker: usize, p: usize) -> usize {
    BASE.load(Ordering::Relaxed) + (worker * STRIDE + p) * PAGE
}

/// One worker: every round faults each page of its slice (read: the model's contents, the
/// zero page after a remap), writes a new generation into it and checks it; every third round
/// mprotects a chunk read-only and back, every fifth remaps one (its pages are zero again).
fn worker(i: usize) -> i32 {
    let mut gen = [0u64; SLICE];
    let rounds = ROUNDS.load(Ordering::Relaxed);
    for r in 1..=rounds {
        for k in 0..SLICE {
            let p = (k * 7 + r as usize) % SLICE;
            let addr = slice_addr(i, p);
            let id = i * STRIDE + p;
            verify(addr, id, gen[p]);
            gen[p] = r * WORKERS as u64 + i as u64;
            fill(addr, id, gen[p]);
            verify(addr, id, gen[p]);
        }
        let chunk = (r as usize % 4) * 16;
        if r % 3 == 0 {
            call(mprotect(slice_addr(i, chunk), 16 * PAGE, PROT_READ));
            for p in chunk..chunk + 16 {
                verify(slice_addr(i, p), i * STRIDE + p, gen[p]);
            }
            call(mprotect(slice_addr(i, chunk), 16 * PAGE, PROT_RW));
        }
        if r % 5 == 0 {
            let at = slice_addr(i, chunk);
            let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
            call(munmap(at, 16 * PAGE));
            call(mmap(at, 16 * PAGE, PROT_RW, fixed));
            for p in chunk..chunk + 16 {
                gen[p] = 0;
                verify(slice_addr(i, p), i * STRIDE + p, 0);
            }
        }
        ROUNDS_DONE.fetch_add(1, Ordering::Relaxed);
    }
    for p in 0..SLICE {
        verify(slice_addr(i, p), i * STRIDE + p, gen[p]);
    }
    DONE.fetch_add(1, Ordering::Relaxed);
    0
}

/// The churn thread: remaps each guard page (zero, then its own pattern) and mprotects the
/// whole region executable and back, across every worker's slice, once per worker round.
fn churn(_: usize) -> i32 {
    let base = BASE.load(Ordering::Relaxed);
    let len = WORKERS * STRIDE * PAGE;
    let mut n = 0u64;
    loop {
        if n >= ROUNDS_DONE.load(Ordering::Relaxed) {
            if STOP.load(Ordering::Relaxed) {
                break;
            }
            // Asleep, not yielding: a yield loop is a stream of kernel entries that, under the
            // big lock, slows every other thread's kernel work down.
            let _ = sleep_ms(1);
            continue;
        }
        n += 1;
        for w in 0..WORKERS {
            let guard = slice_addr(w, SLICE);
            let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
            call(munmap(guard, PAGE));
            call(mmap(guard, PAGE, PROT_RW, fixed));
            let id = 1_000_000 + w;
            if !matches(guard, id, 0) {
                GUARD_BAD.fetch_add(1, Ordering::Relaxed);
            }
            fill(guard, id, n);
            if !matches(guard, id, n) {
                GUARD_BAD.fetch_add(1, Ordering::Relaxed);
            }
        }
        // A span starting in the middle of a slice and one over all of them: VMA splits and
        // merges under the workers' faults. Executable keeps every page writable, so the
        // workers' accesses are unaffected (a worker's own read-only chunk may become writable
        // meanwhile; it only reads there).
        // A worker's chunk being remapped is a hole for a moment: ENOMEM, as on Linux (the
        // VMAs before the hole changed).
        let mid = base + (n as usize % SLICE) * PAGE;
        call_or_hole(mprotect(mid, len / 2, PROT_RW | PROT_EXEC));
        call_or_hole(mprotect(base, len, PROT_RW));
        CHURNS.fetch_add(1, Ordering::Relaxed);
    }
    0
}

/// One fork: the region holds generation `gen`; the child checks it, writes its own and checks
/// that, while the parent writes `gen + 1` (COW copies and reuses on both sides at once).
/// Whether both saw only their own data.
fn fork_round(region: usize, gen: u64) -> bool {
    for p in 0..FORK_PAGES {
        fill(region + p * PAGE, 2_000_000 + p, gen);
    }
    let child = match fork() {
        Ok(0) => {
            let mut ok = true;
            for p in 0..FORK_PAGES {
                ok &= matches(region + p * PAGE, 2_000_000 + p, gen);
            }
            for p in (0..FORK_PAGES).rev() {
                fill(region + p * PAGE, 2_000_000 + p, gen + 1000);
            }
            for p in 0..FORK_PAGES {
                ok &= matches(region + p * PAGE, 2_000_000 + p, gen + 1000);
            }
            cowlab_userland::sys::exit_group(if ok { 0 } else { 1 });
        }
        Ok(pid) => pid,
        Err(_) => return false,
    };
    let mut ok = true;
    for p in 0..FORK_PAGES {
        fill(region + p * PAGE, 2_000_000 + p, gen + 1);
    }
    for p in 0..FORK_PAGES {
        ok &= matches(region + p * PAGE, 2_000_000 + p, gen + 1);
    }
    match waitpid(child, 0) {
        Ok((_, status)) => ok && status == 0,
        Err(_) => false,
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_nobkl_fault");
    ROUNDS.store(arg(b"rounds=").unwrap_or(8), Ordering::Relaxed);
    let forks = arg(b"forks=").unwrap_or(4);
    let len = WORKERS * STRIDE * PAGE;
    let Ok(base) = mmap(0, len, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS) else {
        t.check("mmap the workers' region", false);
        return t.finish();
    };
    BASE.store(base, Ordering::Relaxed);
    let Ok(region) = mmap(0, FORK_PAGES * PAGE, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS) else {
        t.check("mmap the fork region", false);
        return t.finish();
    };
    let mut threads = alloc::vec::Vec::new();
    for i in 0..WORKERS {
        match spawn(worker, i) {
            Ok(th) => threads.push(th),
            Err(_) => t.check("spawn a worker", false),
        }
    }
    let churner = spawn(churn, 0);
    t.check("spawn the churn thread", churner.is_ok());
    let mut forks_ok = 0;
    let mut gen = 1;
    for _ in 0..forks {
        if fork_round(region, gen) {
            forks_ok += 1;
        }
        gen += 2;
    }
    for th in threads {
        th.join();
    }
    STOP.store(true, Ordering::Relaxed);
    if let Ok(th) = churner {
        th.join();
    }
    t.eq(
        "every worker finished its rounds",
        DONE.load(Ordering::Relaxed),
        WORKERS as u64,
    );
    let bad = BAD.load(Ordering::Relaxed);
    t.check_why(
        "every page of every worker matched the model at every check",
        bad == 0,
        format_args!(
            "{bad} pages differed, the first at {:#x}",
            FIRST_BAD.load(Ordering::Relaxed)
        ),
    );
    t.eq(
        "mprotect, munmap and mmap of the workers and the churn thread succeeded",
        CALL_ERRORS.load(Ordering::Relaxed),
        0,
    );
    t.check(
        "the churn thread ran beside the workers",
        CHURNS.load(Ordering::Relaxed) > 0,
    );
    t.eq(
        "a remapped guard page is zero, then holds its own pattern",
        GUARD_BAD.load(Ordering::Relaxed),
        0,
    );
    t.eq(
        "each forked child saw the data of its fork, and each side kept its own writes",
        forks_ok,
        forks,
    );
    t.check(
        "the fork region kept the parent's last generation",
        (0..FORK_PAGES).all(|p| matches(region + p * PAGE, 2_000_000 + p, gen - 1)),
    );
    // Whether this boot resolves faults without the big lock (`fault_unlocked_path`: the
    // default on 2+ CPUs, off with `fault_bkl=1` or one CPU), and that the unlocked count grows
    // exactly then: a boot with the path on whose faults all took the lock tested nothing the
    // locked boot does not (review of session 8), and one with it off must take none unlocked.
    // `expect_unlocked=0|1` also says which setting the boot must have. cowlab only: the host
    // has no counter.
    if let Some(on) = cowlab_userland::pcfile::mmstat("fault_unlocked_path") {
        let unlocked = cowlab_userland::pcfile::mmstat("faults_unlocked");
        if let Some(expected) = arg(b"expect_unlocked=") {
            t.check_why(
                "the fault path without the big lock is on exactly as this boot asked",
                on == expected,
                format_args!("fault_unlocked_path {on}, expected {expected}"),
            );
        }
        t.check_why(
            "faults were resolved without the big kernel lock exactly when that path is on",
            unlocked.is_some_and(|n| (n > 0) == (on == 1)),
            format_args!("fault_unlocked_path {on}, faults_unlocked {unlocked:?}"),
        );
    }
    call(munmap(base, len));
    call(munmap(region, FORK_PAGES * PAGE));
    t.finish()
}
