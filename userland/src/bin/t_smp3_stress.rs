//! The SMP stress program (issue 16): one thread pinned to each CPU, all of them working on
//! overlapping ranges of one private anonymous area of one address space for a bounded time,
//! with operations chosen by a seeded PRNG: write and read faults, fork (the child checks its
//! copy against the model and the two sides' later writes stay apart), munmap and re-mmap,
//! `MAP_FIXED` over a range, mprotect flips, `MADV_DONTNEED`, and pins that race the page-table
//! changes of the other CPUs: synchronous `O_DIRECT` reads and writes of a file (GUP-fast),
//! `vmsplice` references read back through a pipe, io_uring registered buffers (long-term
//! pins) used by `READ_FIXED`/`WRITE_FIXED`. Every byte is checked against the model.
//!
//! The model. Every page of the area has a lock word, a tag and a protection bit; every page's
//! contents are a function of its tag (word `j` of a page with tag `t` is
//! `t << 32 | (j ^ t * 0x9e3779b9)`, tag 0 is zeros). A thread changes a page's contents,
//! mapping or protection only while it holds that page's lock (a range's locks are taken in
//! ascending order, so threads never deadlock). So the contents are deterministic while the
//! page tables, VMAs, TLBs and pins of neighbouring pages, often in the same page table, change
//! on the other CPUs at the same moment. A thread never writes a page the model says is
//! read-only: it makes the range read-write first (under the lock).
//!
//! The fork child. Only the forking thread's own locked range has contents the child can know
//! exactly: it checks that range against the tags the forker saw before fork, and every other
//! page not locked in its copy of the model for plausibility (each word zero or some writer's
//! word for its position; a mismatch there is a frame from elsewhere: another offset, another
//! process, freed memory). Then the parent writes new tags into its range while the child
//! re-checks that it still sees the old ones, the child writes its own tags, and the parent
//! checks that its range holds its new tags: COW in both directions. (An exact check of the
//! unlocked pages, assuming the child sees a prefix of each thread's writes, failed on the
//! host Linux: see [`child`].)
//!
//! The file. Each thread owns a run of blocks of a file in the working directory (the ext2
//! root on cowlab), whose model is a tag per block; `O_DIRECT` reads copy a block's tag into
//! a page, writes a page's tag into a block. The io_uring operation registers its range, waits
//! for a fork of another thread, writes the range, then reads or writes the file through the
//! registration: under the rules before 2020 (a registration is a plain reference that fork
//! shares) the write copies the page away from the registered frame and the fixed I/O misses
//! it, which the thread, later reads of those blocks and later fork children report. (Seed
//! 003's `O_DIRECT` races need a write to the page during its own DMA, which no thread does
//! here: `t_dcow_dio` and `t_dio` cover them.) Linux: the host runs the same program (when
//! the working directory's filesystem has no `O_DIRECT` the same calls run buffered).
//!
//! Arguments (`key=value`): `seed=N` (default 1), `secs=N` of run time (default 20), `ops=N`
//! per thread (default unbounded: the time decides), `threads=N` (default: one per CPU of
//! `sched_getaffinity`, at most 16), `long` (300 s), `expect_cpus=N` (fail with fewer). On
//! cowlab the pins and references held return to their values before the run
//! (`/proc/cowlab/mmstat`).
//!
//! Worker threads never allocate (the runtime's allocator is single-threaded) and never use
//! the `Tester`: they count failures in atomics and print their first few diagnoses.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::rng::Rng;
use cowlab_userland::sched::{sched_getaffinity, sched_setaffinity};
use cowlab_userland::sys::{getpid, Errno, EINTR};
use cowlab_userland::test::{on_cowlab, Tester};
use cowlab_userland::thread::{futex_wait, futex_wake, spawn};
use cowlab_userland::uring::Ring;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;
/// Pages of the shared area (2 MiB: four page tables' worth of neighbours would need more
/// memory than the point needs; one table's 512 entries are all raced).
const PAGES: usize = 512;
const MAX_THREADS: usize = 16;
/// File blocks (of a page) each thread owns.
const FILE_BLOCKS: usize = 16;
/// The longest range one `O_DIRECT`, vmsplice or io_uring operation covers (a pipe holds 16).
const PIN_PAGES: usize = 4;
/// The longest range one fork snapshots.
const FORK_PAGES: usize = 32;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const MADV_DONTNEED: i32 = 4;
const GETCPU: usize = 309;
const VMSPLICE: usize = 278;
const PREAD64: usize = 17;
const PWRITE64: usize = 18;
const EFAULT: i32 = 14;
/// Diagnoses printed per kind before the program only counts.
const REPORTS: u64 = 6;

/// Operations, in the order of [`OP_NAMES`].
const OP_WRITE: usize = 0;
const OP_READ: usize = 1;
const OP_FORK: usize = 2;
const OP_REMAP: usize = 3;
const OP_MPROTECT: usize = 4;
const OP_DONTNEED: usize = 5;
const OP_DIO_READ: usize = 6;
const OP_DIO_WRITE: usize = 7;
const OP_VMSPLICE: usize = 8;
const OP_URING: usize = 9;
const OPS: usize = 10;
const OP_NAMES: [&str; OPS] = [
    "write",
    "read",
    "fork",
    "remap",
    "mprotect",
    "dontneed",
    "dio_read",
    "dio_write",
    "vmsplice",
    "uring",
];

static AREA: AtomicUsize = AtomicUsize::new(0);
/// 0: free, else the holder's index + 1.
static LOCK: [AtomicU32; PAGES] = [const { AtomicU32::new(0) }; PAGES];
static TAG: [AtomicU32; PAGES] = [const { AtomicU32::new(0) }; PAGES];
static READ_ONLY: [AtomicBool; PAGES] = [const { AtomicBool::new(false) }; PAGES];
static FILE_TAG: [AtomicU32; MAX_THREADS * FILE_BLOCKS] =
    [const { AtomicU32::new(0) }; MAX_THREADS * FILE_BLOCKS];
static FD: AtomicI32 = AtomicI32::new(-1);
static SEED: AtomicU64 = AtomicU64::new(1);
static DEADLINE: AtomicU64 = AtomicU64::new(0);
/// How long past [`DEADLINE`] main waits for the workers before it reports them stuck.
const STUCK_AFTER_NS: u64 = 60_000_000_000;
static MAX_OPS: AtomicU64 = AtomicU64::new(u64::MAX);
static CPU_OF: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];
static COUNTS: [[AtomicU64; OPS]; MAX_THREADS] =
    [const { [const { AtomicU64::new(0) }; OPS] }; MAX_THREADS];
/// Bytes that differed from the model, seen by a worker.
static BAD_DATA: AtomicU64 = AtomicU64::new(0);
/// System calls that answered other than the model says.
static BAD_CALLS: AtomicU64 = AtomicU64::new(0);
/// Fork children that exited other than 0.
static BAD_CHILDREN: AtomicU64 = AtomicU64::new(0);
static PIN_FAILED: AtomicU32 = AtomicU32::new(0);
static WRONG_CPU: AtomicU32 = AtomicU32::new(0);
static NO_URING: AtomicU32 = AtomicU32::new(0);
static EFAULT_CHECKS: AtomicU64 = AtomicU64::new(0);
static SPLICE_SAW_NEW: AtomicU64 = AtomicU64::new(0);
static SPLICE_TORN: AtomicU64 = AtomicU64::new(0);
static FINISHED: AtomicU32 = AtomicU32::new(0);
/// Forks begun and returned (in the parent), for the io_uring operation's wait.
static FORKS_STARTED: AtomicU64 = AtomicU64::new(0);
static FORKS_DONE: AtomicU64 = AtomicU64::new(0);
/// io_uring operations with a whole fork of another thread (begun after the registration)
/// inside their registration (forks already under way count in no operation).
static URING_ACROSS_FORK: AtomicU64 = AtomicU64::new(0);
/// What each worker does now, for the progress lines: 0 between operations, `1 + op` while
/// taking its range's locks, `101 + op` while running it.
static DOING: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];
static RANGE: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(0) }; MAX_THREADS];

/// Word `j` of a page with tag `tag`: the tag in the high half, so a wrong word names the
/// contents it came from; the low half ties it to its position, so a page shifted or torn
/// shows too.
fn word(tag: u32, j: usize) -> u64 {
    if tag == 0 {
        return 0;
    }
    (u64::from(tag) << 32) | u64::from(j as u32 ^ tag.wrapping_mul(0x9e37_79b9))
}

fn page_addr(page: usize) -> usize {
    AREA.load(Ordering::Relaxed) + page * PAGE
}

fn fill(addr: usize, tag: u32) {
    for j in 0..WORDS {
        // SAFETY: callers pass a mapped, writable page whose lock they hold (or their own
        // private buffer).
        unsafe { core::ptr::write_volatile((addr + j * 8) as *mut u64, word(tag, j)) }
    }
}

/// The first word of the page at `addr` that is not `tag`'s: (index, value).
fn mismatch(addr: usize, tag: u32) -> Option<(usize, u64)> {
    (0..WORDS).find_map(|j| {
        // SAFETY: callers pass a mapped, readable page whose contents are stable (its lock is
        // theirs, or it is their own buffer or their own copy in a fork child).
        let got = unsafe { core::ptr::read_volatile((addr + j * 8) as *const u64) };
        (got != word(tag, j)).then_some((j, got))
    })
}

fn bad_data(me: usize, what: &str, page: usize, tag: u32, (j, got): (usize, u64)) {
    let n = BAD_DATA.fetch_add(1, Ordering::Relaxed);
    if n < REPORTS {
        println!(
            "t_smp3_stress: mismatch: thread {me} {what}: page {page} word {j}: got {got:#018x} \
             (tag {:#x}), want tag {tag:#x}",
            got >> 32
        );
    }
}

fn bad_call(me: usize, what: &str, got: Result<usize, Errno>, want: impl core::fmt::Debug) {
    let n = BAD_CALLS.fetch_add(1, Ordering::Relaxed);
    if n < REPORTS {
        println!("t_smp3_stress: bad call: thread {me} {what}: got {got:?}, want {want:?}");
    }
}

/// Checks pages `i..i + n` (locked by the caller) against the model.
fn check_range(me: usize, what: &str, i: usize, n: usize) -> bool {
    let mut ok = true;
    for (p, tag) in TAG.iter().enumerate().skip(i).take(n) {
        let tag = tag.load(Ordering::Relaxed);
        if let Some(m) = mismatch(page_addr(p), tag) {
            bad_data(me, what, p, tag, m);
            ok = false;
        }
    }
    ok
}

/// A lock word's bit saying a thread sleeps on it (the rest is the holder's index + 1).
const WAITERS: u32 = 0x8000_0000;

fn lock_range(me: usize, i: usize, n: usize) {
    for lock in &LOCK[i..i + n] {
        let mut spins = 0u32;
        // Once it has slept, a thread takes the lock with the waiters bit set: others may
        // still sleep on it, and the unlock must wake them.
        let mut mine = me as u32 + 1;
        loop {
            match lock.compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                // A short spin, then sleep: a vCPU spinning in ring 3 takes host time from
                // the vCPU whose thread holds the lock (TCG runs each vCPU on a host thread).
                Err(_) if spins < 100 => {
                    spins += 1;
                    core::hint::spin_loop();
                }
                Err(held) => {
                    if held & WAITERS == 0
                        && lock
                            .compare_exchange(
                                held,
                                held | WAITERS,
                                Ordering::Relaxed,
                                Ordering::Relaxed,
                            )
                            .is_err()
                    {
                        continue;
                    }
                    // Woken by the unlock, or after 20 ms whatever happened (a lost wake-up
                    // would only slow the run, the kernel's futexes are not under test here).
                    let _ = futex_wait(lock, held | WAITERS, Some(&[0, 20_000_000]));
                    mine |= WAITERS;
                }
            }
        }
    }
}

fn unlock_range(i: usize, n: usize) {
    for lock in &LOCK[i..i + n] {
        if lock.swap(0, Ordering::Release) & WAITERS != 0 {
            let _ = futex_wake(lock, u32::MAX);
        }
    }
}

/// Makes locked pages `i..i + n` writable if the model says any is read-only.
fn ensure_rw(me: usize, i: usize, n: usize) {
    if READ_ONLY[i..i + n]
        .iter()
        .any(|r| r.load(Ordering::Relaxed))
    {
        let r = mprotect(page_addr(i), n * PAGE, RW);
        if r != Ok(0) {
            bad_call(me, "mprotect rw", r, Ok::<usize, Errno>(0));
        }
        for ro in &READ_ONLY[i..i + n] {
            ro.store(false, Ordering::Relaxed);
        }
    }
}

/// A fresh tag of thread `me`: its index in the top byte (never 0), a counter below.
fn new_tag(me: usize, counter: &mut u32) -> u32 {
    *counter = (*counter + 1) & 0x00ff_ffff;
    ((me as u32 + 1) << 24) | *counter
}

fn file_off(me: usize, block: usize) -> usize {
    (me * FILE_BLOCKS + block) * PAGE
}

fn pread_at(fd: i32, addr: usize, len: usize, off: usize) -> Result<usize, Errno> {
    // SAFETY: `addr..addr + len` is locked pages of the area or the caller's own buffer (a
    // read-only page on purpose: the kernel must refuse it with EFAULT).
    unsafe { raw(PREAD64, [fd as usize, addr, len, off, 0, 0]) }
}

fn pwrite_at(fd: i32, addr: usize, len: usize, off: usize) -> Result<usize, Errno> {
    // SAFETY: the kernel only reads `addr..addr + len`, locked pages of the area.
    unsafe { raw(PWRITE64, [fd as usize, addr, len, off, 0, 0]) }
}

fn vmsplice(fd: i32, addr: usize, len: usize) -> Result<usize, Errno> {
    let iov = [addr, len];
    // SAFETY: one iovec naming locked pages of the area; the kernel takes references only.
    unsafe { raw(VMSPLICE, [fd as usize, iov.as_ptr() as usize, 1, 0, 0, 0]) }
}

fn getcpu() -> Option<u32> {
    let (mut cpu, mut node) = (u32::MAX, u32::MAX);
    // SAFETY: the kernel writes one u32 at each pointer.
    let r = unsafe {
        raw(
            GETCPU,
            [
                &mut cpu as *mut u32 as usize,
                &mut node as *mut u32 as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    r.ok().map(|_| cpu)
}

/// Per-thread state a worker keeps across operations.
struct Worker {
    me: usize,
    rng: Rng,
    counter: u32,
    /// A private buffer of [`PIN_PAGES`] pages for read-backs.
    scratch: usize,
    pipe: [i32; 2],
    ring: Option<Ring>,
}

fn worker(me: usize) -> i32 {
    let cpu = CPU_OF[me].load(Ordering::Relaxed);
    if sched_setaffinity(0, 1 << cpu).is_err() {
        PIN_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    if getcpu() != Some(cpu) {
        WRONG_CPU.fetch_add(1, Ordering::Relaxed);
    }
    let seed = SEED.load(Ordering::Relaxed) ^ (me as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut w = Worker {
        me,
        rng: Rng(seed | 1),
        counter: 0,
        scratch: mmap(0, PIN_PAGES * PAGE, RW, ANON).unwrap_or(0),
        pipe: pipe().unwrap_or([-1, -1]),
        ring: Ring::new(8).ok(),
    };
    if w.ring.is_none() {
        NO_URING.fetch_add(1, Ordering::Relaxed);
    }
    if w.scratch == 0 || w.pipe[0] < 0 {
        bad_call(me, "set-up: scratch buffer or pipe", Err(Errno(0)), "both");
    } else {
        let deadline = DEADLINE.load(Ordering::Relaxed);
        let max_ops = MAX_OPS.load(Ordering::Relaxed);
        let mut done = 0u64;
        while done < max_ops && monotonic_ns() < deadline {
            // Many failures already: the report has what it needs.
            if BAD_DATA.load(Ordering::Relaxed) + BAD_CALLS.load(Ordering::Relaxed) > 200 {
                break;
            }
            let op = pick(&mut w.rng);
            COUNTS[me][op].fetch_add(1, Ordering::Relaxed);
            w.run(op);
            done += 1;
        }
    }
    if let Some(ring) = w.ring.take() {
        ring.close();
    }
    let _ = close(w.pipe[0]);
    let _ = close(w.pipe[1]);
    if w.scratch != 0 {
        let _ = munmap(w.scratch, PIN_PAGES * PAGE);
    }
    FINISHED.fetch_add(1, Ordering::Release);
    0
}

/// The operation mix: faults most often; fork least (one costs as much as hundreds of
/// others under TCG).
fn pick(rng: &mut Rng) -> usize {
    const WEIGHTS: [usize; OPS] = [6, 6, 1, 2, 3, 2, 3, 2, 2, 2];
    let total: usize = WEIGHTS.iter().sum();
    let mut x = rng.below(total);
    for (op, &w) in WEIGHTS.iter().enumerate() {
        if x < w {
            return op;
        }
        x -= w;
    }
    OP_READ
}

impl Worker {
    /// A range of at most `max` pages somewhere in the area (any thread's ranges overlap).
    fn range(&mut self, max: usize) -> (usize, usize) {
        let i = self.rng.below(PAGES);
        let n = (1 + self.rng.below(max)).min(PAGES - i);
        (i, n)
    }

    fn run(&mut self, op: usize) {
        let me = self.me;
        let max = match op {
            OP_FORK => FORK_PAGES,
            OP_DIO_READ | OP_DIO_WRITE | OP_VMSPLICE | OP_URING => PIN_PAGES,
            OP_WRITE | OP_READ => 8,
            _ => 16,
        };
        let (i, n) = self.range(max);
        RANGE[me].store(((i as u32) << 16) | n as u32, Ordering::Relaxed);
        DOING[me].store(1 + op as u32, Ordering::Relaxed);
        lock_range(me, i, n);
        DOING[me].store(101 + op as u32, Ordering::Relaxed);
        match op {
            OP_WRITE => {
                ensure_rw(me, i, n);
                for (p, model) in TAG.iter().enumerate().skip(i).take(n) {
                    let tag = new_tag(me, &mut self.counter);
                    fill(page_addr(p), tag);
                    model.store(tag, Ordering::Relaxed);
                }
                check_range(me, "write", i, n);
            }
            OP_READ => {
                check_range(me, "read", i, n);
            }
            OP_FORK => {
                ensure_rw(me, i, n);
                self.fork(i, n);
            }
            OP_REMAP => {
                let at = page_addr(i);
                // Half the time munmap then mmap, half the time MAP_FIXED over the range
                // (Linux unmaps it inside the mmap).
                if self.rng.below(2) == 0 {
                    let r = munmap(at, n * PAGE);
                    if r != Ok(0) {
                        bad_call(me, "munmap", r, Ok::<usize, Errno>(0));
                    }
                }
                let r = mmap(at, n * PAGE, RW, ANON | MAP_FIXED);
                if r != Ok(at) {
                    bad_call(me, "mmap MAP_FIXED", r, Ok::<usize, Errno>(at));
                }
                for p in i..i + n {
                    TAG[p].store(0, Ordering::Relaxed);
                    READ_ONLY[p].store(false, Ordering::Relaxed);
                }
                if self.rng.below(2) == 0 {
                    check_range(me, "read after remap", i, n);
                }
            }
            OP_MPROTECT => {
                let ro = self.rng.below(2) == 0;
                let r = mprotect(page_addr(i), n * PAGE, if ro { PROT_READ } else { RW });
                if r != Ok(0) {
                    bad_call(me, "mprotect", r, Ok::<usize, Errno>(0));
                }
                for flag in &READ_ONLY[i..i + n] {
                    flag.store(ro, Ordering::Relaxed);
                }
                if ro {
                    check_range(me, "read after mprotect", i, n);
                }
            }
            OP_DONTNEED => {
                let r = madvise(page_addr(i), n * PAGE, MADV_DONTNEED);
                if r != Ok(0) {
                    bad_call(me, "MADV_DONTNEED", r, Ok::<usize, Errno>(0));
                }
                for tag in &TAG[i..i + n] {
                    tag.store(0, Ordering::Relaxed);
                }
                check_range(me, "read after MADV_DONTNEED", i, n);
            }
            OP_DIO_READ => self.dio_read(i, n),
            OP_DIO_WRITE => self.dio_write(i, n),
            OP_VMSPLICE => self.vmsplice(i, n),
            _ => self.uring(i, n),
        }
        unlock_range(i, n);
        DOING[me].store(0, Ordering::Relaxed);
    }

    /// A run of `n` of this thread's file blocks.
    fn blocks(&mut self, n: usize) -> usize {
        self.rng.below(FILE_BLOCKS - n + 1)
    }

    /// The file blocks `b..b + n` hold what the model says (read into the scratch buffer).
    fn check_blocks(&mut self, what: &str, b: usize, n: usize) {
        let me = self.me;
        let fd = FD.load(Ordering::Relaxed);
        let r = pread_at(fd, self.scratch, n * PAGE, file_off(me, b));
        if r != Ok(n * PAGE) {
            bad_call(me, "read back of the file", r, Ok::<usize, Errno>(n * PAGE));
            return;
        }
        for k in 0..n {
            let tag = FILE_TAG[me * FILE_BLOCKS + b + k].load(Ordering::Relaxed);
            if let Some(m) = mismatch(self.scratch + k * PAGE, tag) {
                bad_data(me, what, PAGES + b + k, tag, m);
            }
        }
    }

    /// A synchronous `O_DIRECT` read of this thread's blocks into locked pages: the pages are
    /// pinned (GUP-fast) while other CPUs fork, unmap and mprotect their neighbours.
    fn dio_read(&mut self, i: usize, n: usize) {
        let me = self.me;
        let fd = FD.load(Ordering::Relaxed);
        let b = self.blocks(n);
        // A read into a read-only page must fail with EFAULT and leave it as it was.
        if n == 1 && READ_ONLY[i].load(Ordering::Relaxed) {
            let r = pread_at(fd, page_addr(i), PAGE, file_off(me, b));
            if r != Err(Errno(EFAULT)) {
                bad_call(me, "O_DIRECT read into a read-only page", r, Errno(EFAULT));
            }
            EFAULT_CHECKS.fetch_add(1, Ordering::Relaxed);
            check_range(me, "read-only page after a refused read", i, 1);
            return;
        }
        ensure_rw(me, i, n);
        let r = pread_at(fd, page_addr(i), n * PAGE, file_off(me, b));
        if r != Ok(n * PAGE) {
            bad_call(me, "O_DIRECT read", r, Ok::<usize, Errno>(n * PAGE));
        }
        for k in 0..n {
            let tag = FILE_TAG[me * FILE_BLOCKS + b + k].load(Ordering::Relaxed);
            TAG[i + k].store(tag, Ordering::Relaxed);
        }
        check_range(me, "O_DIRECT read", i, n);
    }

    /// A synchronous `O_DIRECT` write from locked pages (read-only ones too) to this thread's
    /// blocks, read back into the scratch buffer.
    fn dio_write(&mut self, i: usize, n: usize) {
        let me = self.me;
        let fd = FD.load(Ordering::Relaxed);
        let b = self.blocks(n);
        let r = pwrite_at(fd, page_addr(i), n * PAGE, file_off(me, b));
        if r != Ok(n * PAGE) {
            bad_call(me, "O_DIRECT write", r, Ok::<usize, Errno>(n * PAGE));
        }
        for k in 0..n {
            let tag = TAG[i + k].load(Ordering::Relaxed);
            FILE_TAG[me * FILE_BLOCKS + b + k].store(tag, Ordering::Relaxed);
        }
        self.check_blocks("file after an O_DIRECT write", b, n);
        check_range(me, "pages after an O_DIRECT write", i, n);
    }

    /// vmsplice references to locked pages, maybe a write to them, then the pipe read back:
    /// each page is its contents at the vmsplice or, if still shared, the new ones.
    fn vmsplice(&mut self, i: usize, n: usize) {
        let me = self.me;
        let len = n * PAGE;
        let r = vmsplice(self.pipe[1], page_addr(i), len);
        if r != Ok(len) {
            bad_call(me, "vmsplice", r, Ok::<usize, Errno>(len));
            // Drain whatever went in so the next use starts empty.
            if let Ok(got) = r {
                self.drain(got);
            }
            return;
        }
        let mut old = [0u32; PIN_PAGES];
        let mut new = [0u32; PIN_PAGES];
        let rewrite = self.rng.below(2) == 0;
        if rewrite {
            ensure_rw(me, i, n);
        }
        for k in 0..n {
            old[k] = TAG[i + k].load(Ordering::Relaxed);
            new[k] = old[k];
            if rewrite {
                new[k] = new_tag(me, &mut self.counter);
                fill(page_addr(i + k), new[k]);
                TAG[i + k].store(new[k], Ordering::Relaxed);
            }
        }
        if !self.drain(len) {
            return;
        }
        for k in 0..n {
            let at = self.scratch + k * PAGE;
            // The pipe's page is the page as it was at the vmsplice, with a prefix of the
            // write after it: the references are plain ones (Linux's `FOLL_GET`), so a fork on
            // another CPU in the middle of the write makes the rest of it fault and copy the
            // page away from the pipe's (seen on the host Linux).
            let new_words = (0..WORDS)
                .take_while(|&j| {
                    // SAFETY: inside the scratch buffer the pipe was read into.
                    let got = unsafe { core::ptr::read_volatile((at + j * 8) as *const u64) };
                    got == word(new[k], j)
                })
                .count();
            if new_words == WORDS {
                if new[k] != old[k] {
                    SPLICE_SAW_NEW.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            if new_words > 0 && new[k] != old[k] {
                SPLICE_TORN.fetch_add(1, Ordering::Relaxed);
            }
            let rest = (new_words..WORDS).find_map(|j| {
                // SAFETY: as above.
                let got = unsafe { core::ptr::read_volatile((at + j * 8) as *const u64) };
                (got != word(old[k], j)).then_some((j, got))
            });
            if let Some(m) = rest {
                bad_data(me, "vmsplice read back (old contents)", i + k, old[k], m);
            }
        }
        check_range(me, "pages after vmsplice", i, n);
    }

    /// Reads `len` bytes from the pipe into the scratch buffer.
    fn drain(&mut self, len: usize) -> bool {
        let mut got = 0;
        while got < len {
            // SAFETY: the scratch buffer is this thread's own mapping of PIN_PAGES pages.
            let buf = unsafe {
                core::slice::from_raw_parts_mut((self.scratch + got) as *mut u8, len - got)
            };
            match read(self.pipe[0], buf) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(Errno(EINTR)) => {}
                Err(_) => break,
            }
        }
        if got != len {
            bad_call(self.me, "pipe read back", Ok(got), len);
        }
        got == len
    }

    /// io_uring registered buffers over locked pages: a long-term pin held across a fork of
    /// another thread and a write, then `READ_FIXED` or `WRITE_FIXED` through it.
    fn uring(&mut self, i: usize, n: usize) {
        let me = self.me;
        let Some(ring) = self.ring.as_ref() else {
            return;
        };
        let fd = FD.load(Ordering::Relaxed);
        let b = self.rng.below(FILE_BLOCKS - n + 1);
        let len = n * PAGE;
        ensure_rw(me, i, n);
        let r = io_uring_register_buffers(ring.fd, &[[page_addr(i), len]]);
        if r != Ok(0) {
            bad_call(me, "IORING_REGISTER_BUFFERS", r, Ok::<usize, Errno>(0));
            return;
        }
        // Wait (up to 30 ms) for a fork of another thread to start and end while the buffer is
        // registered, then write it: the write must go to the registered frames, which fork
        // copied for the child. Where fork shares a registered page instead (a plain reference,
        // the rules before 2020), this write copies the page away from the registration and
        // the I/O below moves the old contents.
        let forks = FORKS_STARTED.load(Ordering::Acquire);
        let until = monotonic_ns() + 30_000_000;
        while FORKS_DONE.load(Ordering::Acquire) <= forks && monotonic_ns() < until {
            let _ = sleep_ms(1);
        }
        if FORKS_DONE.load(Ordering::Acquire) > forks {
            URING_ACROSS_FORK.fetch_add(1, Ordering::Relaxed);
        }
        for k in 0..n {
            let tag = new_tag(me, &mut self.counter);
            fill(page_addr(i + k), tag);
            TAG[i + k].store(tag, Ordering::Relaxed);
        }
        let read = self.rng.below(2) == 0;
        let sqe = IoUringSqe {
            opcode: if read {
                IORING_OP_READ_FIXED
            } else {
                IORING_OP_WRITE_FIXED
            },
            fd,
            addr: page_addr(i) as u64,
            len: len as u32,
            off: file_off(me, b) as u64,
            user_data: 7,
            buf_index: 0,
            ..IoUringSqe::default()
        };
        let res = ring.run(sqe).map(|c| c.res);
        if res != Ok(len as i32) {
            let got = res.map(|v| v as usize);
            bad_call(me, "READ_FIXED/WRITE_FIXED", got, Ok::<usize, Errno>(len));
        }
        let r = io_uring_unregister_buffers(ring.fd);
        if r != Ok(0) {
            bad_call(me, "IORING_UNREGISTER_BUFFERS", r, Ok::<usize, Errno>(0));
        }
        if read {
            for k in 0..n {
                let tag = FILE_TAG[me * FILE_BLOCKS + b + k].load(Ordering::Relaxed);
                TAG[i + k].store(tag, Ordering::Relaxed);
            }
            check_range(me, "READ_FIXED", i, n);
        } else {
            for k in 0..n {
                let tag = TAG[i + k].load(Ordering::Relaxed);
                FILE_TAG[me * FILE_BLOCKS + b + k].store(tag, Ordering::Relaxed);
            }
            self.check_blocks("file after WRITE_FIXED", b, n);
            check_range(me, "pages after WRITE_FIXED", i, n);
        }
    }

    /// fork with pages `i..i + n` locked (read-write): see the module comment.
    fn fork(&mut self, i: usize, n: usize) {
        let me = self.me;
        let mut before = [0u32; FORK_PAGES];
        let mut after = [0u32; FORK_PAGES];
        for k in 0..n {
            before[k] = TAG[i + k].load(Ordering::Relaxed);
            after[k] = new_tag(me, &mut self.counter);
        }
        let Ok([go_r, go_w]) = pipe() else {
            bad_call(me, "pipe", Err(Errno(0)), "a pipe");
            return;
        };
        FORKS_STARTED.fetch_add(1, Ordering::AcqRel);
        let forked = fork();
        FORKS_DONE.fetch_add(1, Ordering::AcqRel);
        let pid = match forked {
            Ok(0) => {
                let _ = close(go_w);
                exit_now(child(i, n, &before, go_r))
            }
            Ok(pid) => pid,
            Err(e) => {
                bad_call(me, "fork", Err(e), "a child");
                let _ = close(go_r);
                let _ = close(go_w);
                return;
            }
        };
        let _ = close(go_r);
        // The parent's writes race the child's first checks: each must copy the page.
        for k in 0..n {
            fill(page_addr(i + k), after[k]);
            TAG[i + k].store(after[k], Ordering::Relaxed);
        }
        let _ = write(go_w, b"g");
        let _ = close(go_w);
        let status = loop {
            match waitpid(pid, 0) {
                Ok((_, s)) => break s,
                Err(Errno(EINTR)) => {}
                Err(e) => break -e.0,
            }
        };
        if !(wifexited(status) && wexitstatus(status) == 0) {
            let k = BAD_CHILDREN.fetch_add(1, Ordering::Relaxed);
            if k < REPORTS {
                println!(
                    "t_smp3_stress: thread {me}: fork child over pages {i}..{} ended with \
                     status {status:#x}",
                    i + n
                );
            }
        }
        check_range(me, "parent after the child wrote its copy", i, n);
    }
}

/// Whether every word of the page at `addr` is zero or some tag's word for its position, the
/// tag one the parent's threads or the file's set-up could have written (never a fork
/// child's): what can be said of a page another thread may have been changing during the fork.
fn plausible(addr: usize) -> Option<(usize, u64)> {
    (0..WORDS).find_map(|j| {
        // SAFETY: callers pass a mapped page of the child's copy of the area.
        let got = unsafe { core::ptr::read_volatile((addr + j * 8) as *const u64) };
        let tag = (got >> 32) as u32;
        let owner = tag >> 24;
        let valid = got == 0
            || ((1..=MAX_THREADS as u32).contains(&owner) || owner == 0xff) && got == word(tag, j);
        (!valid).then_some((j, got))
    })
}

/// The fork child (one thread, the forking one): checks its copy, then its isolation from the
/// parent's writes, then writes its own. Exit status: bit 0 a page not plausible at fork,
/// bit 1 the forker's range off before the parent's go, bit 2 the parent's later writes
/// visible, bit 3 its own writes not read back.
///
/// Only the forker's own range has contents the child can know exactly. Elsewhere the child's
/// copy of the model may be newer than its copy of a page (seen on the host Linux 6.18; our
/// reading of why:) fork
/// copies a pinned page (an `O_DIRECT` read in flight) at its moment, but write-protects the
/// rest and flushes the parent's TLBs only at its end, so a thread whose read completed meanwhile
/// stores its new tag and unlocks through a stale TLB entry into the model's page, still shared
/// with the child, while the child's copy of the data page predates the DMA. So a page unlocked
/// in the child's copy must only be plausible (every word some writer's, at its position).
fn child(i: usize, n: usize, before: &[u32; FORK_PAGES], go: i32) -> i32 {
    let mut status = 0;
    // The copy of the parent's count may be past REPORTS already: the child reports its own.
    BAD_DATA.store(0, Ordering::Relaxed);
    for p in 0..PAGES {
        if (i..i + n).contains(&p) {
            if let Some(m) = mismatch(page_addr(p), before[p - i]) {
                bad_data(99, "child: the forker's range", p, before[p - i], m);
                status |= 2;
            }
        } else if LOCK[p].load(Ordering::Acquire) == 0 {
            // Locked pages may be unmapped (a remap in progress): skipped.
            if let Some(m) = plausible(page_addr(p)) {
                bad_data(99, "child: an unlocked page (implausible)", p, 0, m);
                status |= 1;
            }
        }
    }
    let mut byte = [0u8; 1];
    let _ = read(go, &mut byte);
    for (k, &old) in before.iter().enumerate().take(n) {
        if let Some(m) = mismatch(page_addr(i + k), old) {
            bad_data(99, "child after the parent wrote", i + k, old, m);
            status |= 4;
        }
    }
    for k in 0..n {
        let tag = 0xc000_0000 | (i + k) as u32;
        fill(page_addr(i + k), tag);
        if let Some(m) = mismatch(page_addr(i + k), tag) {
            bad_data(99, "child's own write", i + k, tag, m);
            status |= 8;
        }
    }
    status
}

/// The `key=N` argument, if any.
fn arg(key: &[u8]) -> Option<u64> {
    cowlab_userland::args().skip(1).find_map(|a| {
        let v = a.to_bytes().strip_prefix(key)?;
        core::str::from_utf8(v).ok()?.parse().ok()
    })
}

fn has_flag(flag: &[u8]) -> bool {
    cowlab_userland::args()
        .skip(1)
        .any(|a| a.to_bytes() == flag)
}

/// A value of `/proc/cowlab/mmstat` (cowlab only).
fn mmstat(key: &str) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/cowlab/mmstat", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The counters that must come back: pins and references held. (`anon_pages` does not: the
/// program's own `.bss` pages first touched during the run stay; the programs tier checks the
/// frame count at power-off, which covers a leaked page.)
fn baseline() -> [Option<u64>; 2] {
    [mmstat("gup_pins_held"), mmstat("gup_refs_held")]
}

/// Creates the file (every thread's blocks stamped with their own tags, buffered) and
/// opens it for `O_DIRECT`; falls back to buffered I/O where the filesystem has none.
fn make_file(path: &core::ffi::CStr, threads: usize) -> Result<(i32, bool), Errno> {
    let fd = open_mode(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)?;
    let buf = mmap(0, PAGE, RW, ANON)?;
    let mut result = Ok(());
    for (block, model) in FILE_TAG.iter().enumerate().take(threads * FILE_BLOCKS) {
        let tag = 0xff00_0000 | block as u32;
        fill(buf, tag);
        // SAFETY: `buf` is the page just mapped.
        let page = unsafe { core::slice::from_raw_parts(buf as *const u8, PAGE) };
        if pwrite(fd, page, (block * PAGE) as u64) != Ok(PAGE) {
            result = Err(Errno(5));
        }
        model.store(tag, Ordering::Relaxed);
    }
    let _ = munmap(buf, PAGE);
    let _ = close(fd);
    result?;
    match open(path, O_RDWR | O_DIRECT) {
        Ok(fd) => Ok((fd, true)),
        Err(Errno(22)) => open(path, O_RDWR).map(|fd| (fd, false)),
        Err(e) => Err(e),
    }
}

/// Prints where each worker is (its operation and page range), for a stall or a stuck run.
fn report_workers(spawned: usize, what: &str) {
    for k in 0..spawned {
        let doing = DOING[k].load(Ordering::Relaxed) as usize;
        let range = RANGE[k].load(Ordering::Relaxed);
        let (state, op) = match doing {
            0 => ("between operations", 0),
            1..=100 => ("locking for", doing - 1),
            _ => ("in", doing - 101),
        };
        println!(
            "t_smp3_stress: {what} thread {k}: {state} {} on pages {}..+{}",
            OP_NAMES[op.min(OPS - 1)],
            range >> 16,
            range & 0xffff
        );
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_smp3_stress");
    let cowlab = on_cowlab();
    let seed = arg(b"seed=").unwrap_or(1).max(1);
    let secs = if has_flag(b"long") {
        300
    } else {
        arg(b"secs=").unwrap_or(20)
    };
    let mask = sched_getaffinity(0).unwrap_or(1);
    let cpus = mask.count_ones() as usize;
    let threads = (arg(b"threads=").unwrap_or(cpus as u64) as usize).clamp(1, MAX_THREADS);
    if let Some(ops) = arg(b"ops=") {
        MAX_OPS.store(ops, Ordering::Relaxed);
    }
    SEED.store(seed, Ordering::Relaxed);
    println!("t_smp3_stress: seed {seed}, {secs} s, {threads} threads on {cpus} CPUs ({mask:#x})");
    if let Some(want) = arg(b"expect_cpus=") {
        t.check_why(
            &alloc::format!("sched_getaffinity reports at least {want} CPUs"),
            cpus as u64 >= want,
            cpus,
        );
    }
    // Thread i on the i-th allowed CPU, round-robin.
    let allowed: alloc::vec::Vec<u32> = (0..64).filter(|c| mask & (1 << c) != 0).collect();
    for (k, slot) in CPU_OF.iter().enumerate().take(threads) {
        slot.store(allowed[k % allowed.len()], Ordering::Relaxed);
    }

    let name = alloc::format!("t_smp3_stress.{}\0", getpid());
    let path = core::ffi::CStr::from_bytes_with_nul(name.as_bytes()).expect("one NUL");
    let direct = match make_file(path, threads) {
        Ok((fd, direct)) => {
            FD.store(fd, Ordering::Relaxed);
            direct
        }
        Err(e) => {
            let _ = unlink(path);
            t.check_why("set-up: the file", false, format_args!("{e:?}"));
            return t.finish();
        }
    };
    if !direct {
        println!("t_smp3_stress: no O_DIRECT in this filesystem: the file I/O runs buffered");
    }
    if cowlab {
        t.check("set-up: the file is open with O_DIRECT", direct);
    }
    let mut list = alloc::vec::Vec::with_capacity(threads);
    let before = baseline();
    let Ok(area) = mmap(0, PAGES * PAGE, RW, ANON) else {
        t.check("set-up: the area", false);
        return t.finish();
    };
    AREA.store(area, Ordering::Relaxed);
    let start = monotonic_ns();
    DEADLINE.store(start + secs * 1_000_000_000, Ordering::Relaxed);
    for k in 0..threads {
        match spawn(worker, k) {
            Ok(th) => list.push(th),
            Err(e) => t.check_why("spawn a worker", false, e.0),
        }
    }
    let spawned = list.len();
    // Progress every 5 s: a long run must not look silent to the harness.
    let mut next_report = 5000;
    let mut last_total = u64::MAX;
    // How late main's 200 ms sleeps came back: a long one while the workers made progress is
    // the scheduler's (main waits on a CPU the workers keep), one while they did not, the
    // host's (every vCPU starved).
    let mut longest_sleep = 0;
    while (FINISHED.load(Ordering::Acquire) as usize) < spawned {
        let slept = monotonic_ns();
        let _ = sleep_ms(200);
        longest_sleep = longest_sleep.max((monotonic_ns() - slept) / 1_000_000);
        let ms = (monotonic_ns() - start) / 1_000_000;
        if ms >= next_report {
            next_report += 5000;
            let total: u64 = COUNTS
                .iter()
                .flat_map(|c| c.iter())
                .map(|c| c.load(Ordering::Relaxed))
                .sum();
            println!(
                "t_smp3_stress: {} s: {total} operations, {} data and {} call mismatches",
                ms / 1000,
                BAD_DATA.load(Ordering::Relaxed),
                BAD_CALLS.load(Ordering::Relaxed)
            );
            // No progress in 5 s: say where every worker is (a stall is a finding).
            if total == last_total {
                report_workers(spawned, "stalled?");
            }
            last_total = total;
        }
        // The run bounds itself: a worker stuck for good (a fork child that never exits, a
        // blocking pipe read or io_uring wait the kernel never completes) is a finding with a
        // named place, not the harness's timeout. Returning ends every thread (exit_group).
        if monotonic_ns() > DEADLINE.load(Ordering::Relaxed) + STUCK_AFTER_NS {
            report_workers(spawned, "stuck:");
            t.check_why(
                "every worker finished within 60 s of the deadline",
                false,
                format_args!("{} of {spawned} finished", FINISHED.load(Ordering::Acquire)),
            );
            return t.finish();
        }
    }
    for th in list {
        th.join();
    }
    let ms = (monotonic_ns() - start) / 1_000_000;
    println!("t_smp3_stress: main's longest 200 ms sleep took {longest_sleep} ms");
    let mut totals = [0u64; OPS];
    for per in &COUNTS {
        for (k, c) in per.iter().enumerate() {
            totals[k] += c.load(Ordering::Relaxed);
        }
    }
    let all: u64 = totals.iter().sum();
    println!("t_smp3_stress: {all} operations in {ms} ms on {threads} threads:");
    for (k, name) in OP_NAMES.iter().enumerate() {
        println!("t_smp3_stress:   {name} {}", totals[k]);
    }
    println!(
        "t_smp3_stress: {} io_uring registrations with a whole fork inside, {} EFAULT checks, vmsplice pages read back with the later write: {} \
         whole, {} in part (a fork in the middle of it)",
        URING_ACROSS_FORK.load(Ordering::Relaxed),
        EFAULT_CHECKS.load(Ordering::Relaxed),
        SPLICE_SAW_NEW.load(Ordering::Relaxed),
        SPLICE_TORN.load(Ordering::Relaxed)
    );
    t.eq("every worker started", spawned, threads);
    t.eq(
        "every worker pinned itself to its CPU",
        PIN_FAILED.load(Ordering::Relaxed),
        0,
    );
    t.eq(
        "every worker ran on its CPU",
        WRONG_CPU.load(Ordering::Relaxed),
        0,
    );
    if cowlab {
        t.eq(
            "every worker has an io_uring",
            NO_URING.load(Ordering::Relaxed),
            0,
        );
    } else if NO_URING.load(Ordering::Relaxed) != 0 {
        println!("t_smp3_stress: io_uring unavailable on this host: its operations skipped");
    }
    t.check_why(
        "forks, O_DIRECT, vmsplice and remaps ran",
        [OP_FORK, OP_DIO_READ, OP_VMSPLICE, OP_REMAP, OP_MPROTECT]
            .iter()
            .all(|&k| totals[k] > 0),
        format_args!("{totals:?}"),
    );
    if cowlab {
        // The registered-buffer race is what tells the pre-2020 eras apart: a run that never
        // pinned through io_uring would pass them without having looked (review, session 12).
        t.check_why(
            "io_uring fixed I/O ran",
            totals[OP_URING] > 0,
            format_args!("{totals:?}"),
        );
    }
    t.eq(
        "no byte differed from the model (workers)",
        BAD_DATA.load(Ordering::Relaxed),
        0,
    );
    t.eq(
        "every call answered as the model says",
        BAD_CALLS.load(Ordering::Relaxed),
        0,
    );
    t.eq(
        "every fork child found its copy right and kept apart",
        BAD_CHILDREN.load(Ordering::Relaxed),
        0,
    );
    let mut final_bad = 0;
    for (p, tag) in TAG.iter().enumerate() {
        let tag = tag.load(Ordering::Relaxed);
        if let Some(m) = mismatch(page_addr(p), tag) {
            final_bad += 1;
            if final_bad <= REPORTS {
                bad_data(0, "final check", p, tag, m);
            }
        }
    }
    t.eq("every page matches the model at the end", final_bad, 0);
    t.eq("munmap the area", munmap(area, PAGES * PAGE), Ok(0));
    let _ = close(FD.load(Ordering::Relaxed));
    t.eq("the file is removed", unlink(path), Ok(0));
    if cowlab {
        // Frames freed after a shootdown may lag the munmap by a moment.
        let mut after = baseline();
        for _ in 0..100 {
            if after == before {
                break;
            }
            let _ = sleep_ms(10);
            after = baseline();
        }
        t.check_why(
            "pins and references held back to their values before the run",
            before[0].is_some() && after == before,
            format_args!("(pins, refs) {before:?} -> {after:?}"),
        );
    }
    t.finish()
}
