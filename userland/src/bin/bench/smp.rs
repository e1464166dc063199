//! The multiprocessor rows of issue 16, run by `bench smp` in a boot with 4 CPUs
//! (`cargo xtask bench --smp`: cowlab with `smp_sched=1`, Linux with `-smp 4`).
//!
//! Under `-icount` QEMU runs the vCPUs round-robin in one thread, and every CPU's TSC reads the
//! one virtual clock, which advances by the instructions of whichever vCPU is running. So the
//! interval between two TSC reads on one CPU counts the instructions *all* CPUs retired in
//! between (halted CPUs retire none; with every CPU halted, `sleep=off` jumps the clock to the
//! next timer). The rows are therefore work, not wall time: guest instructions summed over the
//! CPUs, per fault or per page. Perfect scaling keeps a row flat from 1 to 4 threads; locks,
//! cache-line ping-pong's stand-in (atomic retries), IPIs and shootdowns make it grow. A
//! parallel speed-up cannot show (the clock is a sum), and since a vCPU runs until its slice
//! ends, it executes `pause` (a spinning waiter) or `hlt`, true simultaneity is coarser than on
//! hardware: contention appears where a slice ends inside a critical section.
//!
//! Waiting threads spin on a flag with `pause` (QEMU ends the vCPU's turn at a `pause`, so a
//! waiter costs a few instructions per turn) rather than exiting or sleeping inside a measured
//! interval, and every thread is pinned (`sched_setaffinity`) to its own CPU.
//!
//! - `smp_fault_disjoint_<n>` (n = 1, 2, 4 threads): each thread writes one byte to each of its
//!   own [`PER_THREAD`] fresh pages (its own mapping); from the release of the threads to the
//!   last one done, all CPUs' instructions over all faults (`tsc/fault`).
//! - `smp_fault_shared_<n>`: the same faults in one shared mapping, thread i taking pages
//!   i, i + n, i + 2n, ... (the same page-table pages, the same VMA).
//! - `smp_munmap_1page_1cpu` / `smp_munmap_1page_4cpus`: `munmap` of one touched page, per
//!   call, with the address space running on this CPU only / also on 3 other CPUs (threads
//!   spinning in user space there): the difference is the TLB shootdown.
//! - `smp_gup_fast_forker_per_page` / `smp_vmsplice_forker_per_page`: GUP-fast of 16 pages per
//!   call (`gup_test` `PIN_FAST_BENCHMARK`, cowlab only; `vmsplice`, both kernels), per page,
//!   each call right after a fork of the process (16 MiB touched) by a thread on CPU 1, in
//!   lockstep: the fork write-protects the buffer and shoots down CPU 0's TLB while this thread
//!   spins in user space. A free-running forker was tried first: how often its forks fell
//!   between the calls depended on where the round-robin slices ended (0 or 216 forks in two
//!   boots), so the figure did not repeat; lockstep makes every call meet a fresh fork.

use core::sync::atomic::{AtomicU32, Ordering};

use super::{
    fail, gup_ioctl, map, nr, raw, report_samples, skip, touch, tsc, unmap, write_byte, GupTest,
    Samples, PAGE, TRIALS,
};
use cowlab_userland::calls::{close, pipe, read};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::thread::{spawn, Thread};

/// CPUs the rows need.
const CPUS: usize = 4;
/// Pages each thread faults per trial.
const PER_THREAD: usize = 4096;
/// Pages unmapped one at a time per trial.
const UNMAP_PAGES: usize = 256;
/// Faults a thread makes before it gives its vCPU's turn away (`pause`), so the threads'
/// faults interleave in the round-robin; one `pause` per 16 faults is under 0.1 instructions
/// per fault, the same on both kernels.
const TURN_FAULTS: usize = 16;
/// Pages per GUP call.
const BATCH: usize = 16;

const SCHED_SETAFFINITY: usize = 203;
const SCHED_GETAFFINITY: usize = 204;

/// The workers' shared state. One experiment at a time, reset by [`reset`].
static READY: AtomicU32 = AtomicU32::new(0);
static GO: AtomicU32 = AtomicU32::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static STOP: AtomicU32 = AtomicU32::new(0);
static FORKS: AtomicU32 = AtomicU32::new(0);
/// The forker's turn: set by the GUP thread before each call, cleared by the forker after its
/// fork.
static TURN: AtomicU32 = AtomicU32::new(0);
/// Per worker: the first page's address, the stride in pages (a fault job).
static JOB_BASE: [core::sync::atomic::AtomicUsize; CPUS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; CPUS];
static JOB_STRIDE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(1);
/// Per worker: the clock at its first and after its last fault of the trial. They show whether
/// the threads' faults really interleaved: under `-icount` the rows would read the same if
/// the threads ran one after another (the clock is a sum either way), so the spans are
/// printed for the cheapest trial (two reads per thread per trial, outside the fault loop).
static JOB_SPAN: [[core::sync::atomic::AtomicU64; 2]; CPUS] =
    [const { [const { core::sync::atomic::AtomicU64::new(0) }; 2] }; CPUS];

fn reset() {
    for flag in [&READY, &GO, &DONE, &STOP, &FORKS, &TURN] {
        flag.store(0, Ordering::SeqCst);
    }
}

fn spin_until(flag: &AtomicU32, value: u32) {
    while flag.load(Ordering::Acquire) < value {
        core::hint::spin_loop();
    }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<usize, Errno> {
    let mask = 1u64 << cpu;
    // SAFETY: the kernel reads 8 bytes at `mask`.
    unsafe {
        raw(
            SCHED_SETAFFINITY,
            [0, 8, &mask as *const u64 as usize, 0, 0, 0],
        )
    }
}

fn cpu_count() -> usize {
    let mut mask = 0u64;
    // SAFETY: the kernel writes at most 8 bytes at `mask`.
    match unsafe {
        raw(
            SCHED_GETAFFINITY,
            [0, 8, &mut mask as *mut u64 as usize, 0, 0, 0],
        )
    } {
        Ok(_) => mask.count_ones() as usize,
        Err(_) => 1,
    }
}

const NAMES: [&str; 10] = [
    "smp_munmap_1page_1cpu",
    "smp_munmap_1page_4cpus",
    "smp_fault_disjoint_1",
    "smp_fault_disjoint_2",
    "smp_fault_disjoint_4",
    "smp_fault_shared_1",
    "smp_fault_shared_2",
    "smp_fault_shared_4",
    "smp_gup_fast_forker_per_page",
    "smp_vmsplice_forker_per_page",
];

/// Every SMP row; skipped (`reason=cpus<N>`) on a machine with fewer than [`CPUS`] CPUs.
pub fn smp_rows() {
    linux_online_cpus();
    let cpus = cpu_count();
    if cpus < CPUS || pin(0).is_err() {
        for name in NAMES {
            println!("BENCH-SKIP name={name} reason=cpus{cpus}");
        }
        return;
    }
    // Before any other thread ran: the space has only ever been active on CPU 0.
    munmap_1page(NAMES[0], 0);
    munmap_1page(NAMES[1], CPUS - 1);
    for (i, n) in [1, 2, 4].into_iter().enumerate() {
        fault_throughput(NAMES[2 + i], n, false);
    }
    for (i, n) in [1, 2, 4].into_iter().enumerate() {
        fault_throughput(NAMES[5 + i], n, true);
    }
    gup_with_forker(NAMES[8], Gup::GupTest);
    gup_with_forker(NAMES[9], Gup::Vmsplice);
}

/// On Linux as `/init` (booted with `maxcpus=1` by `xtask bench --smp`): brings CPUs 1-3
/// online through sysfs, with a thread on CPU 0 spinning on `pause` meanwhile.
///
/// Why: QEMU 7.2's round-robin under `-icount` gives the first vCPU the instructions up to the
/// next timer deadline and the others what is left (fixed in QEMU 8.1: "ensure fairness with
/// icount"), so while CPU 0 never executes `pause` or `hlt` the others run nothing. Linux 6.1's
/// boot CPU waits for an AP's call-in in a loop of `schedule()` without `pause`: booted with 4
/// CPUs, it waits there for good (the AP sits at the `pause` of its own wait, never run again).
/// Brought up from here, the writer's loop lets the scheduler run the spinner, whose `pause`
/// ends CPU 0's turn, and the AP runs. Every step repeats under icount.
fn linux_online_cpus() {
    use cowlab_userland::calls::{open, write, O_WRONLY};
    if cowlab_userland::sys::getpid() != 1 || cowlab_userland::test::on_cowlab() {
        return;
    }
    if cpu_count() >= CPUS {
        return;
    }
    super::linux_mount_sysfs();
    reset();
    let helper = start(online_helper, 0);
    spin_until(&READY, 1);
    for cpu in 1..CPUS {
        let mut path = [0u8; 48];
        let prefix = b"/sys/devices/system/cpu/cpu";
        path[..prefix.len()].copy_from_slice(prefix);
        path[prefix.len()] = b'0' + cpu as u8;
        let suffix = b"/online\0";
        path[prefix.len() + 1..prefix.len() + 1 + suffix.len()].copy_from_slice(suffix);
        let path = core::ffi::CStr::from_bytes_until_nul(&path).unwrap_or(c"");
        match open(path, O_WRONLY) {
            Ok(fd) => {
                if let Err(e) = write(fd, b"1") {
                    println!("bench: cpu{cpu} online: errno {}", e.0);
                }
                let _ = close(fd);
            }
            Err(e) => println!("bench: open cpu{cpu}/online: errno {}", e.0),
        }
    }
    STOP.store(1, Ordering::Release);
    helper.join();
    reset();
    // The process may run anywhere again (Linux widens no mask by itself when CPUs come up:
    // an explicit mask is kept).
    let all = (1u64 << CPUS) - 1;
    // SAFETY: the kernel reads 8 bytes at `all`.
    let _ = unsafe {
        raw(
            SCHED_SETAFFINITY,
            [0, 8, &all as *const u64 as usize, 0, 0, 0],
        )
    };
    println!("bench: linux: {} CPUs online", cpu_count());
}

/// The CPU-0 thread of [`linux_online_cpus`]: spins until `STOP` with a `pause` every 4096
/// turns. Each `pause` gives the APs the rest of the round; between them CPU 0 moves the
/// virtual clock on (a `pause` every turn would advance it by a few instructions per round of
/// QEMU's loop, and an AP waiting for a timer would wait for minutes of host time).
fn online_helper(cpu: usize) -> i32 {
    if pin(cpu).is_err() {
        return 1;
    }
    READY.fetch_add(1, Ordering::AcqRel);
    let mut turns = 0u32;
    while STOP.load(Ordering::Acquire) == 0 {
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(4096) {
            core::hint::spin_loop();
        }
    }
    0
}

fn start(entry: fn(usize) -> i32, arg: usize) -> Thread {
    spawn(entry, arg).unwrap_or_else(|e| fail("clone", e))
}

/// A fault worker (`arg` = its index and CPU): faults its job after `GO`, reports `DONE`, then
/// spins until `STOP` so that its exit stays out of the measured interval.
fn fault_worker(index: usize) -> i32 {
    if pin(index).is_err() {
        return 1;
    }
    READY.fetch_add(1, Ordering::AcqRel);
    spin_until(&GO, 1);
    fault_job(index);
    DONE.fetch_add(1, Ordering::AcqRel);
    spin_until(&STOP, 1);
    0
}

fn fault_job(index: usize) {
    let base = JOB_BASE[index].load(Ordering::Acquire);
    let stride = JOB_STRIDE.load(Ordering::Acquire);
    JOB_SPAN[index][0].store(tsc(), Ordering::Relaxed);
    for k in 0..PER_THREAD {
        write_byte(base + k * stride * PAGE, 1);
        if k % TURN_FAULTS == TURN_FAULTS - 1 {
            // Ends this vCPU's turn (QEMU's round-robin under icount moves on only at `pause`
            // or `hlt`): without it the first thread ran all its faults before the next one
            // started (session 12: disjoint spans on cowlab, whose fault and tick paths never
            // pause), and the rows measured CPUs taking turns whole, not faults interleaved.
            core::hint::spin_loop();
        }
    }
    JOB_SPAN[index][1].store(tsc(), Ordering::Relaxed);
}

/// `threads` threads (this one on CPU 0 and `threads - 1` workers) write-faulting
/// [`PER_THREAD`] pages each; one sample per trial: the interval over the faults.
fn fault_throughput(name: &str, threads: usize, shared: bool) {
    let mut s = Samples::new(TRIALS);
    let total = threads * PER_THREAD;
    // The whole interval of the cheapest trial: the per-fault figure rounds down, this does not.
    let mut least = u64::MAX;
    // Each thread's span in the cheapest trial, from the release (`t0`).
    let mut spans = [[0u64; 2]; CPUS];
    for _ in 0..TRIALS {
        reset();
        let mut maps = [0usize; CPUS];
        if shared {
            maps[0] = map(total * PAGE);
            JOB_STRIDE.store(threads, Ordering::Release);
            for (i, base) in JOB_BASE.iter().enumerate().take(threads) {
                base.store(maps[0] + i * PAGE, Ordering::Release);
            }
        } else {
            JOB_STRIDE.store(1, Ordering::Release);
            for (i, m) in maps.iter_mut().enumerate().take(threads) {
                *m = map(PER_THREAD * PAGE);
                JOB_BASE[i].store(*m, Ordering::Release);
            }
        }
        let workers: [Option<Thread>; CPUS] =
            core::array::from_fn(|i| (i > 0 && i < threads).then(|| start(fault_worker, i)));
        spin_until(&READY, threads as u32 - 1);
        let t0 = tsc();
        GO.store(1, Ordering::Release);
        fault_job(0);
        spin_until(&DONE, threads as u32 - 1);
        let t1 = tsc();
        STOP.store(1, Ordering::Release);
        for w in workers.into_iter().flatten() {
            w.join();
        }
        if t1 - t0 < least {
            least = t1 - t0;
            for (span, job) in spans.iter_mut().zip(&JOB_SPAN).take(threads) {
                for (v, j) in span.iter_mut().zip(job) {
                    *v = j.load(Ordering::Relaxed).wrapping_sub(t0);
                }
            }
        }
        s.push((t1 - t0) / total as u64);
        if shared {
            unmap(maps[0], total * PAGE);
        } else {
            for &m in maps.iter().take(threads) {
                unmap(m, PER_THREAD * PAGE);
            }
        }
    }
    println!("bench: {name}: {least} instructions for {total} faults (the cheapest trial)");
    if threads > 1 {
        // Overlapping spans: the faults interleaved (round-robin slices); disjoint spans: the
        // threads ran one after another.
        for (i, [first, last]) in spans.iter().enumerate().take(threads) {
            println!("bench: {name}: thread {i} faulted from {first} to {last} (clock since the release)");
        }
    }
    report_samples(name, "tsc/fault", &mut s);
}

/// A thread that keeps the address space active on its CPU: spins in user space until `STOP`.
fn spinner(cpu: usize) -> i32 {
    if pin(cpu).is_err() {
        return 1;
    }
    READY.fetch_add(1, Ordering::AcqRel);
    spin_until(&STOP, 1);
    0
}

/// `munmap` of one touched page at a time, with `others` more CPUs running the space.
fn munmap_1page(name: &str, others: usize) {
    reset();
    let helpers: [Option<Thread>; CPUS] =
        core::array::from_fn(|i| (i > 0 && i <= others).then(|| start(spinner, i)));
    spin_until(&READY, others as u32);
    let mut s = Samples::new(UNMAP_PAGES * TRIALS);
    for _ in 0..TRIALS {
        let buf = map(UNMAP_PAGES * PAGE);
        touch(buf, UNMAP_PAGES * PAGE);
        for i in 0..UNMAP_PAGES {
            let t0 = tsc();
            let r = cowlab_userland::calls::munmap(buf + i * PAGE, PAGE);
            let t1 = tsc();
            if let Err(e) = r {
                fail("munmap", e);
            }
            s.push(t1 - t0);
        }
    }
    STOP.store(1, Ordering::Release);
    for h in helpers.into_iter().flatten() {
        h.join();
    }
    report_samples(name, "tsc/call", &mut s);
}

/// On each turn (`TURN` set), forks once (the child exits at once, reaped) and hands the turn
/// back; until `STOP`.
fn forker(cpu: usize) -> i32 {
    if pin(cpu).is_err() {
        return 1;
    }
    loop {
        while TURN.load(Ordering::Acquire) == 0 {
            if STOP.load(Ordering::Acquire) != 0 {
                return 0;
            }
            core::hint::spin_loop();
        }
        super::fork_and_reap();
        FORKS.fetch_add(1, Ordering::AcqRel);
        TURN.store(0, Ordering::Release);
    }
}

/// Has the forker fork once and waits (spinning in user space) until it has.
fn fork_on_cpu1() {
    TURN.store(1, Ordering::Release);
    while TURN.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Gup {
    GupTest,
    Vmsplice,
}

/// GUP-fast of [`BATCH`] pages per call over a touched 16 MiB buffer, each call after a fork
/// by the thread on CPU 1; per page, each call timed. One trial (256 calls, 256 forks).
fn gup_with_forker(name: &str, how: Gup) {
    const FOLL_WRITE: u32 = 0x01;
    let fd = match how {
        Gup::GupTest => {
            let path = b"/sys/kernel/debug/gup_test\0";
            // SAFETY: `path` is NUL-terminated; open reads it.
            match unsafe { raw(nr::OPEN, [path.as_ptr() as usize, 2, 0, 0, 0, 0]) } {
                Ok(fd) => [fd as i32, -1],
                Err(e) => {
                    // No figure stands in for it: the row this kernel can measure is named.
                    println!(
                        "bench: {name}: no /sys/kernel/debug/gup_test (a kernel without \
                         CONFIG_GUP_TEST); this kernel's GUP-fast-with-a-forker row is \
                         smp_vmsplice_forker_per_page (vmsplice -> get_user_pages_fast, read \
                         references)"
                    );
                    return skip(name, e);
                }
            }
        }
        Gup::Vmsplice => match pipe() {
            Ok(fds) => fds,
            Err(e) => return skip(name, e),
        },
    };
    let len = PER_THREAD * PAGE;
    let buf = map(len);
    touch(buf, len);
    let sink = map(BATCH * PAGE);
    touch(sink, BATCH * PAGE);
    reset();
    let worker = start(forker, 1);
    let mut s = Samples::new(PER_THREAD / BATCH);
    let mut failed = None;
    'trials: for _ in 0..1 {
        for batch in 0..PER_THREAD / BATCH {
            let at = buf + batch * BATCH * PAGE;
            fork_on_cpu1();
            let (t0, result, t1) = match how {
                Gup::GupTest => {
                    let mut args = GupTest {
                        get_delta_usec: 0,
                        put_delta_usec: 0,
                        addr: at as u64,
                        size: (BATCH * PAGE) as u64,
                        nr_pages_per_call: BATCH as u32,
                        gup_flags: FOLL_WRITE,
                        test_flags: 0,
                        which_pages: [0; 8],
                    };
                    let t0 = tsc();
                    // SAFETY: `args` is a live `struct gup_test` the ioctl reads and writes.
                    let r = unsafe {
                        raw(
                            nr::IOCTL,
                            [
                                fd[0] as usize,
                                gup_ioctl(2),
                                &mut args as *mut GupTest as usize,
                                0,
                                0,
                                0,
                            ],
                        )
                    };
                    (t0, r, tsc())
                }
                Gup::Vmsplice => {
                    let iov = [at, BATCH * PAGE];
                    let t0 = tsc();
                    // SAFETY: one `struct iovec` over our own resident buffer, live for the
                    // call; vmsplice only reads it.
                    let r = unsafe {
                        raw(
                            nr::VMSPLICE,
                            [fd[1] as usize, iov.as_ptr() as usize, 1, 0, 0, 0],
                        )
                    };
                    (t0, r, tsc())
                }
            };
            match result {
                Ok(n) => {
                    s.push((t1 - t0) / BATCH as u64);
                    if how == Gup::Vmsplice {
                        drain(fd[0], sink, n);
                    }
                }
                Err(e) => {
                    failed = Some(e);
                    break 'trials;
                }
            }
        }
    }
    let forks = FORKS.load(Ordering::Acquire);
    STOP.store(1, Ordering::Release);
    worker.join();
    match failed {
        Some(e) => skip(name, e),
        None => {
            println!("bench: {name}: {forks} forks on CPU 1, one before each call");
            report_samples(name, "tsc/page", &mut s);
        }
    }
    unmap(sink, BATCH * PAGE);
    unmap(buf, len);
    for f in fd {
        if f >= 0 {
            let _ = close(f);
        }
    }
}

/// Reads `n` bytes out of the pipe into `sink` (untimed).
fn drain(fd: i32, sink: usize, mut n: usize) {
    while n > 0 {
        // SAFETY: `sink` is our own resident mapping of BATCH pages.
        let out = unsafe { core::slice::from_raw_parts_mut(sink as *mut u8, n.min(BATCH * PAGE)) };
        match read(fd, out) {
            Ok(0) | Err(_) => break,
            Ok(got) => n -= got,
        }
    }
}
