//! CPUs: `sched_getaffinity`/`sched_setaffinity`/`getcpu` and their errors, then threads pinned
//! to the CPUs the process may use, writing disjoint regions and one shared counter page, a
//! `munmap`/`mmap` loop racing readers of the pages that stay mapped, and a fork from a pinned
//! thread. Every byte is checked afterwards; the CPUs each thread ran on are reported.
//!
//! On the host the threads really run in parallel on several CPUs; on cowlab they run where the
//! scheduler allows (the CPUs `sched_getaffinity` reports), and the same checks hold.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, Tester};
use cowlab_userland::thread::spawn;

cowlab_userland::entry!(main);

const SCHED_SETAFFINITY: usize = 203;
const SCHED_GETAFFINITY: usize = 204;
const GETCPU: usize = 309;
const PAGE: usize = 4096;
const THREADS: usize = 4;
/// Pages of each thread's own region.
const REGION_PAGES: usize = 16;
/// Rounds of writing and checking per thread.
const ROUNDS: usize = 40;
/// Counter increments per round per thread on the shared page.
const BUMPS: u64 = 500;

fn getaffinity(pid: i32, len: usize, mask: *mut u64) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `len` bytes at `mask`; callers pass a valid `u64` with
    // len 8, or deliberately bad pointers the kernel must refuse with EFAULT.
    unsafe {
        raw(
            SCHED_GETAFFINITY,
            [pid as usize, len, mask as usize, 0, 0, 0],
        )
    }
}

fn setaffinity(pid: i32, len: usize, mask: *const u64) -> Result<usize, Errno> {
    // SAFETY: the kernel only reads `len` bytes at `mask`.
    unsafe {
        raw(
            SCHED_SETAFFINITY,
            [pid as usize, len, mask as usize, 0, 0, 0],
        )
    }
}

fn my_mask() -> u64 {
    let mut mask = 0u64;
    getaffinity(0, 8, &mut mask).expect("sched_getaffinity");
    mask
}

fn pin(cpu: usize) -> Result<usize, Errno> {
    let mask = 1u64 << cpu;
    setaffinity(0, 8, &mask)
}

fn getcpu() -> Result<u32, Errno> {
    let (mut cpu, mut node) = (u32::MAX, u32::MAX);
    // SAFETY: the kernel writes one u32 at each pointer.
    unsafe {
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
    }?;
    Ok(cpu)
}

/// The CPUs of `mask`, lowest first (at most 64).
fn cpus_of(mask: u64) -> ([usize; 64], usize) {
    let mut list = [0usize; 64];
    let mut n = 0;
    for cpu in 0..64 {
        if mask & (1 << cpu) != 0 {
            list[n] = cpu;
            n += 1;
        }
    }
    (list, n)
}

static REGIONS: AtomicUsize = AtomicUsize::new(0);
static SHARED: AtomicUsize = AtomicUsize::new(0);
static PINNED: [AtomicU32; THREADS] = [const { AtomicU32::new(0) }; THREADS];
static RAN_ON: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];
static BAD: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];
static PIN_FAILED: AtomicU32 = AtomicU32::new(0);

fn pattern(thread: usize, round: usize, offset: usize) -> u8 {
    (thread * 31 + round * 7 + offset / 8) as u8 | 1
}

/// Pins itself to its CPU, then writes and checks its own region and bumps the shared counter.
fn worker(index: usize) -> i32 {
    let cpu = PINNED[index].load(Ordering::Relaxed) as usize;
    if pin(cpu).is_err() {
        PIN_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    let region = REGIONS.load(Ordering::Relaxed) + index * REGION_PAGES * PAGE;
    let counter = SHARED.load(Ordering::Relaxed) as *const AtomicU64;
    for round in 0..ROUNDS {
        if let Ok(now) = getcpu() {
            RAN_ON[index].fetch_or(1 << now, Ordering::Relaxed);
        }
        for offset in (0..REGION_PAGES * PAGE).step_by(8) {
            // SAFETY: inside this thread's own region of the mapping main made (and keeps).
            unsafe { ((region + offset) as *mut u8).write_volatile(pattern(index, round, offset)) };
        }
        for _ in 0..BUMPS {
            // SAFETY: the shared page is mapped for the whole test; AtomicU64 is 8-aligned there.
            unsafe { (*counter).fetch_add(1, Ordering::Relaxed) };
        }
        for offset in (0..REGION_PAGES * PAGE).step_by(8) {
            // SAFETY: as above.
            let got = unsafe { ((region + offset) as *const u8).read_volatile() };
            if got != pattern(index, round, offset) {
                BAD[index].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    0
}

static STABLE: AtomicUsize = AtomicUsize::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static READS: AtomicU64 = AtomicU64::new(0);
static READ_BAD: AtomicU64 = AtomicU64::new(0);
const STABLE_PAGES: usize = 8;

/// Reads the pages that stay mapped while main unmaps and maps their neighbours.
fn reader(index: usize) -> i32 {
    let _ = pin(PINNED[index].load(Ordering::Relaxed) as usize);
    let base = STABLE.load(Ordering::Relaxed);
    while !STOP.load(Ordering::Relaxed) {
        for page in 0..STABLE_PAGES {
            for offset in (0..PAGE).step_by(64) {
                // SAFETY: the first STABLE_PAGES pages of the mapping stay mapped until STOP.
                let got = unsafe { ((base + page * PAGE + offset) as *const u8).read_volatile() };
                if got != (page as u8 ^ 0x5a) {
                    READ_BAD.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        READS.fetch_add(1, Ordering::Relaxed);
    }
    0
}

/// The `processor\t: N` paragraphs of `/proc/cpuinfo` (0 if it cannot be read).
fn cpuinfo_processors() -> usize {
    let Ok(fd) = open(c"/proc/cpuinfo", 0) else {
        return 0;
    };
    let mut count = 0;
    let mut at_line_start = true;
    let mut buf = [0u8; 512];
    let mut carry = [0u8; 12];
    let mut carried = 0;
    while let Ok(n) = read(fd, &mut buf) {
        if n == 0 {
            break;
        }
        for &byte in &buf[..n] {
            if at_line_start {
                carried = 0;
            }
            if carried < carry.len() {
                carry[carried] = byte;
                carried += 1;
                if carried == 10 && &carry[..10] == b"processor\t" {
                    count += 1;
                }
            }
            at_line_start = byte == b'\n';
        }
    }
    let _ = close(fd);
    count
}

fn main() -> i32 {
    let mut t = Tester::new("t_smp");

    // The calls and their errors.
    let mut mask = 0u64;
    t.eq(
        "sched_getaffinity returns the mask size",
        getaffinity(0, 8, &mut mask),
        Ok(8),
    );
    t.check("the mask names a CPU", mask != 0);
    t.eq(
        "getaffinity: length not a multiple of 8",
        getaffinity(0, 7, &mut mask),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "getaffinity: NULL mask",
        getaffinity(0, 8, core::ptr::null_mut()),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "getaffinity: no such pid",
        getaffinity(0x3fff_fff0, 8, &mut mask),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "getaffinity: negative pid",
        getaffinity(-5, 8, &mut mask),
        Err(Errno(errno::ESRCH)),
    );
    let mask = my_mask();
    let zero = 0u64;
    t.eq(
        "setaffinity: empty mask",
        setaffinity(0, 8, &zero),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "setaffinity: bad pointer",
        setaffinity(0, 8, core::ptr::dangling::<u64>()),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "setaffinity: no such pid",
        setaffinity(0x3fff_fff0, 8, &mask),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "setaffinity: own mask again",
        setaffinity(0, 8, &mask),
        Ok(0),
    );
    t.eq("the mask is unchanged", my_mask(), mask);
    match getcpu() {
        Ok(cpu) => t.check_why(
            "getcpu names a CPU of the mask",
            mask & (1 << cpu) != 0,
            cpu,
        ),
        Err(e) => t.check_why("getcpu", false, e.0),
    }
    let (cpus, ncpus) = cpus_of(mask);
    println!("t_smp: {} CPUs allowed (mask {:#x})", ncpus, mask);
    let processors = cpuinfo_processors();
    t.check_why(
        "/proc/cpuinfo has an entry for every allowed CPU",
        processors >= ncpus,
        processors,
    );

    // Pinning the main thread to each allowed CPU in turn moves it there.
    let mut moved = 0;
    for &cpu in &cpus[..ncpus.min(8)] {
        if pin(cpu) == Ok(0) && my_mask() == 1 << cpu && getcpu() == Ok(cpu as u32) {
            moved += 1;
        }
    }
    t.eq("pinned to each CPU, getcpu follows", moved, ncpus.min(8));
    t.eq("restore the mask", setaffinity(0, 8, &mask), Ok(0));

    // Threads pinned round-robin over the allowed CPUs.
    let regions = mmap(
        0,
        THREADS * REGION_PAGES * PAGE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    )
    .expect("regions");
    let shared =
        mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).expect("shared");
    REGIONS.store(regions, Ordering::Relaxed);
    SHARED.store(shared, Ordering::Relaxed);
    for (i, slot) in PINNED.iter().enumerate() {
        slot.store(cpus[i % ncpus] as u32, Ordering::Relaxed);
    }
    let mut threads = alloc::vec::Vec::new();
    for i in 0..THREADS {
        match spawn(worker, i) {
            Ok(thread) => threads.push(thread),
            Err(e) => t.check_why("spawn a worker", false, e.0),
        }
    }
    let spawned = threads.len();
    for thread in threads {
        thread.join();
    }
    t.eq("every worker spawned", spawned, THREADS);
    t.eq(
        "every worker pinned itself",
        PIN_FAILED.load(Ordering::Relaxed),
        0,
    );
    let mut union = 0u64;
    for i in 0..THREADS {
        let ran = RAN_ON[i].load(Ordering::Relaxed);
        union |= ran;
        t.eq(
            "a worker ran only on its CPU",
            ran,
            1u64 << PINNED[i].load(Ordering::Relaxed),
        );
        t.eq(
            "a worker's region read back right",
            BAD[i].load(Ordering::Relaxed),
            0,
        );
    }
    // SAFETY: the shared page, written only through atomics, all writers joined.
    let total = unsafe { (*(shared as *const AtomicU64)).load(Ordering::Relaxed) };
    t.eq(
        "no lost increment on the shared page",
        total,
        THREADS as u64 * ROUNDS as u64 * BUMPS,
    );
    let mut last_bad = 0;
    for i in 0..THREADS {
        let region = regions + i * REGION_PAGES * PAGE;
        for offset in (0..REGION_PAGES * PAGE).step_by(8) {
            // SAFETY: inside the regions mapping.
            if unsafe { ((region + offset) as *const u8).read() } != pattern(i, ROUNDS - 1, offset)
            {
                last_bad += 1;
            }
        }
    }
    t.eq("main sees every worker's last round", last_bad, 0);
    println!("t_smp: workers ran on CPUs {:#x}", union);

    // munmap/mmap of neighbouring pages while pinned readers read the stable ones.
    let span = 2 * STABLE_PAGES * PAGE;
    let stable =
        mmap(0, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).expect("stable");
    for page in 0..2 * STABLE_PAGES {
        // SAFETY: inside the fresh mapping.
        unsafe {
            core::ptr::write_bytes((stable + page * PAGE) as *mut u8, page as u8 ^ 0x5a, PAGE)
        };
    }
    STABLE.store(stable, Ordering::Relaxed);
    let mut readers = alloc::vec::Vec::new();
    for i in 0..2 {
        if let Ok(thread) = spawn(reader, i) {
            readers.push(thread);
        }
    }
    let volatile_part = stable + STABLE_PAGES * PAGE;
    let mut cycles_ok = 0;
    let cycles = 200;
    for cycle in 0..cycles {
        let unmapped = munmap(volatile_part, STABLE_PAGES * PAGE).is_ok();
        let remapped = mmap(
            volatile_part,
            STABLE_PAGES * PAGE,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
        ) == Ok(volatile_part);
        // SAFETY: just mapped again (when `remapped`).
        let zero = remapped
            && unsafe { ((volatile_part + (cycle % STABLE_PAGES) * PAGE) as *const u8).read() }
                == 0;
        if remapped {
            // SAFETY: as above.
            unsafe { (volatile_part as *mut u8).write(cycle as u8) };
        }
        cycles_ok += usize::from(unmapped && remapped && zero);
    }
    // On a loaded host the readers may not have been scheduled during the 200 cycles: give
    // them up to 10 s to finish a pass (the check below still fails if they never read).
    for _ in 0..1000 {
        if READS.load(Ordering::Relaxed) >= 2 {
            break;
        }
        let _ = sleep_ms(10);
    }
    STOP.store(true, Ordering::Relaxed);
    let nreaders = readers.len();
    for thread in readers {
        thread.join();
    }
    t.eq("both readers spawned", nreaders, 2);
    t.eq(
        "every munmap/mmap cycle gave fresh zero pages",
        cycles_ok,
        cycles,
    );
    t.eq(
        "readers never saw a changed byte",
        READ_BAD.load(Ordering::Relaxed),
        0,
    );
    t.check("readers read", READS.load(Ordering::Relaxed) > 0);
    let _ = munmap(volatile_part, STABLE_PAGES * PAGE);
    let status = in_child(|| {
        // SAFETY: deliberately reads the unmapped half: the child must die of SIGSEGV.
        let _ = unsafe { (volatile_part as *const u8).read_volatile() };
        0
    });
    t.eq("a read of the unmapped pages is SIGSEGV", status & 0x7f, 11);

    // fork from a thread pinned to the last allowed CPU: the child keeps the affinity, runs
    // there, and its writes stay its own.
    let last = cpus[ncpus - 1];
    t.eq("pin to the last CPU", pin(last), Ok(0));
    // SAFETY: the shared page, no other thread left.
    unsafe { (shared as *mut u64).write(0x1234) };
    let status = in_child(|| {
        let ok = my_mask() == 1 << last && getcpu() == Ok(last as u32);
        // SAFETY: the child's copy of the shared page.
        unsafe { (shared as *mut u64).write(0x9999) };
        if ok {
            0
        } else {
            1
        }
    });
    t.eq("the child kept the affinity and ran on its CPU", status, 0);
    // SAFETY: as above.
    t.eq(
        "the child's write stayed in the child",
        unsafe { (shared as *const u64).read() },
        0x1234,
    );
    t.eq(
        "restore the mask at the end",
        setaffinity(0, 8, &mask),
        Ok(0),
    );

    let _ = munmap(stable, STABLE_PAGES * PAGE);
    let _ = munmap(regions, THREADS * REGION_PAGES * PAGE);
    let _ = munmap(shared, PAGE);
    t.finish()
}
