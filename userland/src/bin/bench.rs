//! `bench`: the fault-path benchmark of issue 7, measured from user space exactly as
//! `shared/perf/LINUX-BASELINE.md` measured Linux 6.1, so the two columns can be compared.
//!
//! Every timed region is `lfence; rdtsc; lfence` ... `lfence; rdtsc; lfence` around the operation,
//! so a fault's figure includes exception entry and exit. Under QEMU's `-icount shift=0` a TSC
//! tick is one retired guest instruction (an iteration of a `rep` instruction counts as one), so
//! the numbers are instruction counts that repeat exactly; on real hardware they are cycles.
//! Nothing is subtracted: `tsc_overhead` (an empty region) is reported beside the rest.
//!
//! Fault paths are timed one page at a time over [`PAGES`] pages per trial, [`TRIALS`] trials;
//! whole operations (fork, munmap, madvise, pin) are timed per call and divided by pages or MiB.
//! Each result is one line:
//!
//! ```text
//! BENCH name=<name> unit=<unit> median=<n> min=<n> n=<samples>
//! BENCH-SKIP name=<name> reason=<errno>
//! BENCH-OPSTAT name=<path> op=<op> count=<units> <phase>=<ticks> ...
//! ```
//!
//! `BENCH-OPSTAT` appears only on a cowlab kernel built with `faultstat`: the per-phase ticks
//! its `/proc/cowlab/faultstat` gained over a path's samples (fork, GUP-fast), for
//! `cargo xtask bench --breakdown`. The file is read before and after the samples, outside
//! every timed region.
//!
//! A path whose system call or ioctl the kernel does not have yet (vmsplice, io_uring, the
//! `gup_test` debugfs file) is skipped with the errno, so it appears by itself once it lands.
//! The same static binary runs natively on the host Linux (`cargo xtask bench --host`) and as
//! `/init` of a Debian Linux kernel in the same QEMU (`cargo xtask bench --linux`). For Linux
//! every mapping is advised `MADV_NOHUGEPAGE` (4 KiB faults, as LINUX-BASELINE.md measured;
//! cowlab honours it too, and its default `enabled=madvise` gives no THP anyway), the first line names the kernel
//! (`BENCH-UNAME`), and as `/init` of Linux the program powers the machine off at the end
//! (an `/init` that exits panics Linux).
#![no_std]
#![no_main]

use core::arch::asm;
use core::fmt::Write as _;
use core::ptr::{read_volatile, write_volatile};

use cowlab_userland::aio::{Iocb, IO_DESTROY, IO_GETEVENTS, IO_SETUP, IO_SUBMIT};
use cowlab_userland::calls::{
    close, exit_now, fork, madvise, mmap, mprotect, munmap, pipe, raw, read, waitpid, write,
    MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, PROT_READ, PROT_WRITE,
};
use cowlab_userland::calls::{open, O_CREAT, O_DIRECT, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC};
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::vda::{HOLD, INFLIGHT, RELEASE};
use cowlab_userland::{eprintln, println};

cowlab_userland::entry!(main);

// The SMP and THP rows (issues 16 and 14), each in a file of its own.
#[path = "bench/smp.rs"]
mod smp;
#[path = "bench/thp.rs"]
mod thp;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
/// Pages faulted one at a time per trial.
const PAGES: usize = 4096;
/// Trials per path.
const TRIALS: usize = 5;
/// Forks per size: whole operations, timed per call.
const FORKS: usize = 5;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const MADV_DONTNEED: i32 = 4;
/// Linux: keep transparent huge pages out of a mapping, so every fault is a 4 KiB fault.
const MADV_NOHUGEPAGE: i32 = 15;

/// Linux x86_64 system-call numbers the runtime library does not name.
mod nr {
    pub const IOCTL: usize = 16;
    pub const OPEN: usize = 2;
    pub const VMSPLICE: usize = 278;
    pub const IO_URING_SETUP: usize = 425;
    pub const IO_URING_REGISTER: usize = 427;
    pub const REBOOT: usize = 169;
}

/// The time stamp counter, fenced on both sides so that the measured instructions neither start
/// before nor finish after it. Not `nomem`: the compiler must not move memory accesses across it.
#[inline(always)]
fn tsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: lfence and rdtsc only order execution and read the counter into edx:eax; CR4.TSD
    // is clear on cowlab and Linux, so rdtsc is allowed in ring 3.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "lfence",
            out("eax") lo,
            out("edx") hi,
            options(nostack, preserves_flags)
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

fn read_byte(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside their own readable anonymous mappings.
    unsafe { read_volatile(addr as *const u8) }
}

fn write_byte(addr: usize, value: u8) {
    // SAFETY: callers pass addresses inside their own writable anonymous mappings.
    unsafe { write_volatile(addr as *mut u8, value) }
}

/// A fresh private anonymous read-write mapping of `len` bytes, without transparent huge pages;
/// exits the benchmark if the kernel refuses the mapping (every path below needs it).
fn map(len: usize) -> usize {
    match mmap(0, len, RW, ANON) {
        Ok(addr) => {
            // Linux would otherwise fault 2 MiB at a time in a 2 MiB-aligned span; cowlab's
            // default (`enabled=madvise`) would not, and it takes the advice the same way.
            let _ = madvise(addr, len, MADV_NOHUGEPAGE);
            addr
        }
        Err(e) => fail("mmap", e),
    }
}

fn unmap(addr: usize, len: usize) {
    if let Err(e) = munmap(addr, len) {
        fail("munmap", e);
    }
}

/// Writes one byte per page of `[addr, addr + len)`, faulting every page in.
fn touch(addr: usize, len: usize) {
    for page in (addr..addr + len).step_by(PAGE) {
        write_byte(page, 1);
    }
}

fn fail(what: &str, e: Errno) -> ! {
    eprintln!("bench: {what} failed: errno {}", e.0);
    exit_now(1)
}

/// Sample storage: a pre-faulted mapping, so recording a sample never faults inside a trial.
struct Samples {
    addr: usize,
    cap: usize,
    len: usize,
}

impl Samples {
    fn new(cap: usize) -> Self {
        let addr = map(cap * 8);
        touch(addr, cap * 8);
        Samples { addr, cap, len: 0 }
    }

    fn push(&mut self, value: u64) {
        assert!(self.len < self.cap, "bench: sample buffer full");
        // SAFETY: `addr` maps `cap` u64s (8-byte aligned, page-aligned start), `len < cap`.
        unsafe { write_volatile((self.addr as *mut u64).add(self.len), value) };
        self.len += 1;
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        // SAFETY: the first `len` u64s of the mapping were written by `push`; the mapping lives
        // until `drop` and nothing else aliases it.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u64, self.len) }
    }

    /// (median, min) of the samples, sorted in place; the median is the upper one for an even
    /// count so that it is always a sample.
    fn stats(&mut self) -> (u64, u64) {
        let values = self.as_mut_slice();
        if values.is_empty() {
            return (0, 0);
        }
        values.sort_unstable();
        (values[values.len() / 2], values[0])
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        let _ = munmap(self.addr, self.cap * 8);
    }
}

fn report(name: &str, unit: &str, median: u64, min: u64, n: usize) {
    println!("BENCH name={name} unit={unit} median={median} min={min} n={n}");
}

fn report_samples(name: &str, unit: &str, samples: &mut Samples) {
    let (median, min) = samples.stats();
    report(name, unit, median, min, samples.len);
}

fn skip(name: &str, e: Errno) {
    let reason = match e.0 {
        errno::ENOSYS => "ENOSYS",
        errno::ENOENT => "ENOENT",
        errno::EACCES => "EACCES",
        errno::EPERM => "EPERM",
        errno::ENOMEM => "ENOMEM",
        errno::EINVAL => "EINVAL",
        errno::ENOTTY => "ENOTTY",
        _ => "",
    };
    if reason.is_empty() {
        println!("BENCH-SKIP name={name} reason=errno{}", e.0);
    } else {
        println!("BENCH-SKIP name={name} reason={reason}");
    }
}

fn main() -> i32 {
    uname();
    guest_random();
    // pc3: `bench files` runs only the file rows (a quick before/after of the page cache).
    if cowlab_userland::args::args()
        .nth(1)
        .is_some_and(|a| a.to_bytes() == b"files")
    {
        file_rows();
        println!("BENCH-DONE");
        return 0;
    }
    // `bench smp`: only the multiprocessor rows, in the 4-CPU boot of `xtask bench --smp`.
    // `rows=smp` is the same: Linux does not hand `/init` a word without `=` after `--` on
    // its command line (seen with 6.1: `-- smp` left argv[1] unset), so its SMP boot says this.
    if cowlab_userland::args::args().nth(1) == Some(c"smp") || only_rows(b"smp") {
        smp::smp_rows();
        println!("BENCH-DONE");
        power_off_if_linux_init();
        return 0;
    }
    if wanted(b"base") {
        tsc_overhead();
        syscall_getppid();
        rep_movsq_4k();
        rep_stosq_4k();
    }
    if wanted(b"faults") {
        fault_path("anon_read_fault", Before::Nothing, Access::Read);
        fault_path("anon_write_fault", Before::Nothing, Access::Write);
        fault_path("zeropage_write_fault", Before::Read, Access::Write);
        cow_copy_fault();
        cow_reuse_fault();
    }
    if wanted(b"fork") {
        forks();
    }
    if wanted(b"vmas") {
        for vmas in [1, 10, 100, 1000] {
            fault_with_vmas(vmas);
        }
    }
    if wanted(b"unmap") {
        unmap_per_page("munmap_per_page", |addr, len| munmap(addr, len).map(drop));
        unmap_per_page("madv_dontneed_per_page", |addr, len| {
            madvise(addr, len, MADV_DONTNEED).map(drop)
        });
    }
    if wanted(b"pins") {
        pin_longterm_per_page();
        vmsplice_batch_per_page();
        gup_test_pins();
    }
    if wanted(b"thp") {
        thp::thp_rows();
    }
    // The rows that wait for a disk come last: its requests complete in host time, which moves
    // where the timer ticks fall in whatever runs after them (Linux's `thp_fault_2m` median
    // differed between two boots while it followed the file rows).
    if wanted(b"dio") {
        dio_4k();
    }
    if wanted(b"files") {
        file_rows();
    }
    println!("BENCH-DONE");
    power_off_if_linux_init();
    0
}

/// The groups of rows `bench rows=<group>,...` asks for (`cargo xtask bench --rows`, for
/// iterating on a few rows): base, faults, fork, vmas, unmap, pins, dio, files, thp. Without a
/// `rows=` argument every group runs.
const GROUPS: [&[u8]; 9] = [
    b"base", b"faults", b"fork", b"vmas", b"unmap", b"pins", b"dio", b"files", b"thp",
];

fn wanted(group: &[u8]) -> bool {
    debug_assert!(GROUPS.contains(&group));
    rows_arg().is_none_or(|list| list.split(|&b| b == b',').any(|g| g == group))
}

/// The list of a `rows=` argument, if there is one.
fn rows_arg() -> Option<&'static [u8]> {
    cowlab_userland::args::args()
        .skip(1)
        .find_map(|a| a.to_bytes().strip_prefix(b"rows="))
}

/// Whether the argument is exactly `rows=<group>`.
fn only_rows(group: &[u8]) -> bool {
    rows_arg() == Some(group)
}

/// `BENCH-RANDOM bytes=<32 hex digits>`: 16 bytes of `getrandom(GRND_INSECURE)` as the program
/// starts. Every input of a boot under `-icount` but the host's randomness repeats, so two boots
/// printing different bytes were seeded from the host (QEMU's `setup_data` seed, RDRAND), and
/// whatever the kernel randomises (slab freelists, hash seeds) may differ with them; xtask
/// compares the line between boots (docs/benchmarks.md, "Two runs are identical").
fn guest_random() {
    const GETRANDOM: usize = 318;
    const GRND_INSECURE: usize = 4;
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most `buf.len()` bytes into `buf`.
    match unsafe {
        raw(
            GETRANDOM,
            [buf.as_mut_ptr() as usize, buf.len(), GRND_INSECURE, 0, 0, 0],
        )
    } {
        Ok(n) if n == buf.len() => {
            let mut hex = [0u8; 32];
            for (i, b) in buf.iter().enumerate() {
                hex[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
                hex[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 15)];
            }
            println!(
                "BENCH-RANDOM bytes={}",
                core::str::from_utf8(&hex).unwrap_or("?")
            );
        }
        Ok(n) => println!("BENCH-RANDOM short={n}"),
        Err(e) => println!("BENCH-RANDOM errno={}", e.0),
    }
}

/// `BENCH-UNAME sysname=<s> release=<r> version=<the rest of the line>`: which kernel ran the
/// program (xtask records Linux's release and build string beside its column).
fn uname() {
    let mut buf = [0u8; 65 * 6];
    // SAFETY: uname writes six 65-byte NUL-terminated fields into `buf`.
    if unsafe {
        raw(
            cowlab_userland::sys::nr::UNAME,
            [buf.as_mut_ptr() as usize, 0, 0, 0, 0, 0],
        )
    }
    .is_err()
    {
        return;
    }
    let field = |i: usize| {
        let f = &buf[i * 65..(i + 1) * 65];
        let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
        core::str::from_utf8(&f[..end]).unwrap_or("?")
    };
    println!(
        "BENCH-UNAME sysname={} release={} version={}",
        field(0),
        field(2),
        field(3)
    );
}

/// On Linux as `/init`: sysfs mounted at `/sys` (nothing else mounts it there). A second mount
/// fails with EBUSY, which is fine.
fn linux_mount_sysfs() {
    const MKDIR: usize = 83;
    const MOUNT: usize = 165;
    let sysfs = c"sysfs";
    // SAFETY: NUL-terminated strings that outlive the calls.
    unsafe {
        let _ = raw(MKDIR, [c"/sys".as_ptr() as usize, 0o755, 0, 0, 0, 0]);
        let _ = raw(
            MOUNT,
            [
                sysfs.as_ptr() as usize,
                c"/sys".as_ptr() as usize,
                sysfs.as_ptr() as usize,
                0,
                0,
                0,
            ],
        );
    }
}

/// As `/init` of Linux (pid 1 on a kernel that is not cowlab) the program must not exit, which
/// would panic the kernel: it powers the machine off (`reboot(LINUX_REBOOT_CMD_POWER_OFF)`),
/// which ends QEMU. On cowlab `init` runs the program as a child; on a host it is not pid 1.
fn power_off_if_linux_init() {
    const MAGIC1: usize = 0xfee1_dead;
    const MAGIC2: usize = 672_274_793;
    const POWER_OFF: usize = 0x4321_fedc;
    if cowlab_userland::sys::getpid() != 1 || cowlab_userland::test::on_cowlab() {
        return;
    }
    // SAFETY: reboot takes no pointer for POWER_OFF; it does not return on success.
    let result = unsafe { raw(nr::REBOOT, [MAGIC1, MAGIC2, POWER_OFF, 0, 0, 0]) };
    eprintln!("bench: power-off failed: {result:?}");
}

/// An empty timed region: the cost of the two fenced reads themselves.
fn tsc_overhead() {
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..PAGES * TRIALS {
        let t0 = tsc();
        let t1 = tsc();
        s.push(t1 - t0);
    }
    report_samples("tsc_overhead", "tsc", &mut s);
}

/// A null system call (`getppid` does no work in either kernel).
fn syscall_getppid() {
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..PAGES * TRIALS {
        let t0 = tsc();
        cowlab_userland::sys::getppid();
        let t1 = tsc();
        s.push(t1 - t0);
    }
    report_samples("syscall_getppid", "tsc", &mut s);
}

/// 4 KiB `rep movsq` between two resident pages: the floor for a COW copy.
fn rep_movsq_4k() {
    let buf = map(2 * PAGE);
    touch(buf, 2 * PAGE);
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..PAGES * TRIALS {
        let t0 = tsc();
        // SAFETY: both pages are resident parts of `buf`; rep movsq copies 512 qwords from rsi
        // to rdi and clobbers only the registers named.
        unsafe {
            asm!(
                "rep movsq",
                inout("rcx") PAGE / 8 => _,
                inout("rsi") buf => _,
                inout("rdi") buf + PAGE => _,
                options(nostack, preserves_flags)
            );
        }
        let t1 = tsc();
        s.push(t1 - t0);
    }
    report_samples("rep_movsq_4k", "tsc", &mut s);
    unmap(buf, 2 * PAGE);
}

/// 4 KiB `rep stosq` into a resident page: the floor for a zero fill.
fn rep_stosq_4k() {
    let buf = map(PAGE);
    touch(buf, PAGE);
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..PAGES * TRIALS {
        let t0 = tsc();
        // SAFETY: the page is a resident part of `buf`; rep stosq stores 512 zero qwords at rdi.
        unsafe {
            asm!(
                "rep stosq",
                inout("rcx") PAGE / 8 => _,
                inout("rdi") buf => _,
                in("rax") 0u64,
                options(nostack, preserves_flags)
            );
        }
        let t1 = tsc();
        s.push(t1 - t0);
    }
    report_samples("rep_stosq_4k", "tsc", &mut s);
    unmap(buf, PAGE);
}

/// What happened to the pages before the timed access.
#[derive(Clone, Copy)]
enum Before {
    Nothing,
    /// Read once (untimed): each page maps the shared zero page.
    Read,
}

#[derive(Clone, Copy)]
enum Access {
    Read,
    Write,
}

/// Times one access per page of `addr..addr + PAGES * PAGE`, appending to `s`.
fn time_pages(s: &mut Samples, addr: usize, access: Access) {
    for i in 0..PAGES {
        let page = addr + i * PAGE;
        let t0 = tsc();
        match access {
            Access::Read => {
                read_byte(page);
            }
            Access::Write => write_byte(page, 1),
        }
        let t1 = tsc();
        s.push(t1 - t0);
    }
}

/// A demand fault on fresh private anonymous memory, per page.
fn fault_path(name: &str, before: Before, access: Access) {
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..TRIALS {
        let buf = map(PAGES * PAGE);
        if let Before::Read = before {
            for i in 0..PAGES {
                read_byte(buf + i * PAGE);
            }
        }
        time_pages(&mut s, buf, access);
        unmap(buf, PAGES * PAGE);
    }
    report_samples(name, "tsc/page", &mut s);
}

/// Parent writes after fork while the child still maps every page: each write copies.
/// The child tells the parent it runs through one pipe and waits on another until the parent has
/// finished, so it is alive (and mapping the pages) for the whole trial.
fn cow_copy_fault() {
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..TRIALS {
        let buf = map(PAGES * PAGE);
        touch(buf, PAGES * PAGE);
        let ready = pipe().unwrap_or_else(|e| fail("pipe", e));
        let done = pipe().unwrap_or_else(|e| fail("pipe", e));
        let pid = fork().unwrap_or_else(|e| fail("fork", e));
        if pid == 0 {
            let _ = write(ready[1], b"r");
            let mut byte = [0u8];
            let _ = read(done[0], &mut byte);
            exit_now(0);
        }
        let mut byte = [0u8];
        if read(ready[0], &mut byte) != Ok(1) {
            fail("read from the child", Errno(0));
        }
        time_pages(&mut s, buf, Access::Write);
        let _ = write(done[1], b"d");
        let _ = waitpid(pid, 0);
        for fd in ready.into_iter().chain(done) {
            let _ = close(fd);
        }
        unmap(buf, PAGES * PAGE);
    }
    report_samples("cow_copy_fault", "tsc/page", &mut s);
}

/// Parent writes after fork once the child has been reaped: each page is reused, not copied.
fn cow_reuse_fault() {
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..TRIALS {
        let buf = map(PAGES * PAGE);
        touch(buf, PAGES * PAGE);
        fork_and_reap();
        time_pages(&mut s, buf, Access::Write);
        unmap(buf, PAGES * PAGE);
    }
    report_samples("cow_reuse_fault", "tsc/page", &mut s);
}

/// Forks a child that exits at once, waits for it; returns the parent's time for the fork call.
fn fork_and_reap() -> u64 {
    let t0 = tsc();
    let pid = fork().unwrap_or_else(|e| fail("fork", e));
    let t1 = tsc();
    if pid == 0 {
        exit_now(0);
    }
    let _ = waitpid(pid, 0);
    t1 - t0
}

/// Fork cost against touched memory: a bare fork, then 1..256 MiB written before each fork
/// (rewritten between forks, so every fork sees writable, exclusive pages), and the per-MiB
/// slope from 64 MiB.
fn forks() {
    let mut base = Samples::new(FORKS);
    let stat = OpStat::read();
    for _ in 0..FORKS {
        base.push(fork_and_reap());
    }
    let (base_median, base_min) = base.stats();
    report("fork_base", "tsc", base_median, base_min, base.len);
    OpStat::report_since(&stat, "fork_base", "fork");
    drop(base);

    for mib in [1usize, 4, 16, 64, 256] {
        let len = mib * MIB;
        let buf = map(len);
        let mut s = Samples::new(FORKS);
        let stat = if mib == 64 { OpStat::read() } else { None };
        for _ in 0..FORKS {
            touch(buf, len);
            s.push(fork_and_reap());
        }
        let (median, min) = s.stats();
        let n = s.len;
        drop(s);
        report(&name_n("fork_touched_mib_", mib), "tsc", median, min, n);
        OpStat::report_since(&stat, &name_n("fork_touched_mib_", mib), "fork");
        if mib == 64 {
            let per_mib = |v: u64, b: u64| v.saturating_sub(b) / mib as u64;
            report(
                "fork_per_mib",
                "tsc/MiB",
                per_mib(median, base_median),
                per_mib(min, base_min),
                n,
            );
        }
        unmap(buf, len);
    }
}

/// `prefix` followed by `n` in decimal, in a fixed buffer.
fn name_n(prefix: &str, n: usize) -> NameBuf {
    let mut name = NameBuf {
        buf: [0; 48],
        len: 0,
    };
    name.push(prefix.as_bytes());
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut v = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    name.push(&digits[i..]);
    name
}

struct NameBuf {
    buf: [u8; 48],
    len: usize,
}

impl NameBuf {
    fn push(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

impl core::ops::Deref for NameBuf {
    type Target = str;
    fn deref(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

/// The anonymous write fault with `vmas` extra VMAs in the address space: `vmas` pages mapped
/// together, every other one made read-only so that neighbours cannot merge. A fault must not get
/// slower linearly with the VMA count.
fn fault_with_vmas(vmas: usize) {
    let filler = map(vmas * PAGE);
    for i in (1..vmas).step_by(2) {
        if let Err(e) = mprotect(filler + i * PAGE, PAGE, PROT_READ) {
            fail("mprotect", e);
        }
    }
    let mut s = Samples::new(PAGES * TRIALS);
    for _ in 0..TRIALS {
        let buf = map(PAGES * PAGE);
        time_pages(&mut s, buf, Access::Write);
        unmap(buf, PAGES * PAGE);
    }
    report_samples(&name_n("fault_vmas_", vmas), "tsc/page", &mut s);
    unmap(filler, vmas * PAGE);
}

/// munmap or MADV_DONTNEED of [`PAGES`] touched pages, timed per call, per page.
fn unmap_per_page(name: &str, op: impl Fn(usize, usize) -> Result<(), Errno>) {
    let mut s = Samples::new(TRIALS);
    for _ in 0..TRIALS {
        let buf = map(PAGES * PAGE);
        touch(buf, PAGES * PAGE);
        let t0 = tsc();
        let result = op(buf, PAGES * PAGE);
        let t1 = tsc();
        if let Err(e) = result {
            fail(name, e);
        }
        s.push((t1 - t0) / PAGES as u64);
        let _ = munmap(buf, PAGES * PAGE);
    }
    report_samples(name, "tsc/page", &mut s);
}

/// Long-term write pin of a 16 MiB buffer, per page: on Linux an io_uring fixed-buffer
/// registration (`IORING_REGISTER_BUFFERS`), timed per call with its unregistration untimed.
fn pin_longterm_per_page() {
    const NAME: &str = "pin_longterm_per_page";
    const REGISTER_BUFFERS: usize = 0;
    const UNREGISTER_BUFFERS: usize = 1;
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes the 120-byte `struct io_uring_params`.
    let ring = match unsafe {
        raw(
            nr::IO_URING_SETUP,
            [4, params.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    } {
        Ok(fd) => fd,
        Err(e) => return skip(NAME, e),
    };
    let len = PAGES * PAGE;
    // The registration is charged to RLIMIT_MEMLOCK (8 MiB by default, as on Linux, where
    // root's CAP_IPC_LOCK bypasses it; cowlab charges it): make room for 16 MiB.
    let memlock = cowlab_userland::rlimit::Rlimit {
        cur: 2 * len as u64,
        max: 2 * len as u64,
    };
    let _ = cowlab_userland::rlimit::setrlimit(cowlab_userland::rlimit::RLIMIT_MEMLOCK, memlock);
    let buf = map(len);
    touch(buf, len);
    let iov = [buf, len];
    let mut s = Samples::new(TRIALS);
    for _ in 0..TRIALS {
        let t0 = tsc();
        // SAFETY: `iov` is one `struct iovec` over our own resident buffer, live for the call.
        let result = unsafe {
            raw(
                nr::IO_URING_REGISTER,
                [ring, REGISTER_BUFFERS, iov.as_ptr() as usize, 1, 0, 0],
            )
        };
        let t1 = tsc();
        if let Err(e) = result {
            unmap(buf, len);
            let _ = close(ring as i32);
            return skip(NAME, e);
        }
        s.push((t1 - t0) / PAGES as u64);
        // SAFETY: unregistration takes no pointer.
        let _ = unsafe {
            raw(
                nr::IO_URING_REGISTER,
                [ring, UNREGISTER_BUFFERS, 0, 0, 0, 0],
            )
        };
    }
    report_samples(NAME, "tsc/page", &mut s);
    unmap(buf, len);
    let _ = close(ring as i32);
}

/// Short-term GUP references through vmsplice: 16 pages (the pipe's 64 KiB) per call, timed per
/// call, per page; the pipe is drained (untimed) after each call.
fn vmsplice_batch_per_page() {
    const NAME: &str = "vmsplice_batch_per_page";
    const BATCH: usize = 16;
    let fds = match pipe() {
        Ok(fds) => fds,
        Err(e) => return skip(NAME, e),
    };
    let len = PAGES * PAGE;
    let buf = map(len);
    touch(buf, len);
    let sink = map(BATCH * PAGE);
    touch(sink, BATCH * PAGE);
    let mut s = Samples::new(TRIALS * PAGES / BATCH);
    // `--breakdown`: the vmsplice calls' phases (the drains' reads are not vmsplice).
    let stat = OpStat::read();
    'trials: for _ in 0..TRIALS {
        for batch in 0..PAGES / BATCH {
            let iov = [buf + batch * BATCH * PAGE, BATCH * PAGE];
            let t0 = tsc();
            // SAFETY: `iov` is one `struct iovec` over our own resident buffer, live for the
            // call; vmsplice only reads it (no SPLICE_F_GIFT).
            let result = unsafe {
                raw(
                    nr::VMSPLICE,
                    [fds[1] as usize, iov.as_ptr() as usize, 1, 0, 0, 0],
                )
            };
            let t1 = tsc();
            match result {
                Ok(n) => {
                    s.push((t1 - t0) / BATCH as u64);
                    let mut left = n;
                    while left > 0 {
                        // SAFETY: `sink` is our own resident mapping of BATCH pages.
                        let out = unsafe {
                            core::slice::from_raw_parts_mut(sink as *mut u8, left.min(BATCH * PAGE))
                        };
                        match read(fds[0], out) {
                            Ok(0) | Err(_) => break,
                            Ok(got) => left -= got,
                        }
                    }
                }
                Err(e) => {
                    skip(NAME, e);
                    s.len = 0;
                    break 'trials;
                }
            }
        }
    }
    if s.len > 0 {
        OpStat::report_since(&stat, NAME, "vmsplice");
        report_samples(NAME, "tsc/page", &mut s);
    }
    drop(stat);
    drop(s);
    unmap(sink, BATCH * PAGE);
    unmap(buf, len);
    let _ = close(fds[0]);
    let _ = close(fds[1]);
}

/// `struct gup_test` of `mm/gup_test.h` (Linux 6.1): 80 bytes.
#[repr(C)]
struct GupTest {
    get_delta_usec: u64,
    put_delta_usec: u64,
    addr: u64,
    size: u64,
    nr_pages_per_call: u32,
    gup_flags: u32,
    test_flags: u32,
    which_pages: [u32; 8],
}

/// `_IOWR('g', nr, struct gup_test)`.
const fn gup_ioctl(nr: usize) -> usize {
    (3 << 30) | (core::mem::size_of::<GupTest>() << 16) | ((b'g' as usize) << 8) | nr
}

/// GUP-fast and slow-path pin plus unpin per page through the `gup_test` debugfs ioctls
/// (`PIN_FAST_BENCHMARK`, `PIN_BASIC_TEST`), 4096 pages per call, timed per call from user space.
fn gup_test_pins() {
    const FOLL_WRITE: u32 = 0x01;
    let paths: [(&str, usize); 2] = [
        ("gup_fast_pin_per_page", gup_ioctl(2)),
        ("gup_slow_pin_per_page", gup_ioctl(5)),
    ];
    let path = b"/sys/kernel/debug/gup_test\0";
    // SAFETY: `path` is NUL-terminated; open reads it.
    let fd = match unsafe { raw(nr::OPEN, [path.as_ptr() as usize, 2, 0, 0, 0, 0]) } {
        Ok(fd) => fd,
        Err(e) => {
            for (name, _) in paths {
                skip(name, e);
            }
            return;
        }
    };
    let len = PAGES * PAGE;
    let buf = map(len);
    touch(buf, len);
    for (name, request) in paths {
        let mut s = Samples::new(TRIALS);
        let mut failed = None;
        let stat = OpStat::read();
        for _ in 0..TRIALS {
            let mut args = GupTest {
                get_delta_usec: 0,
                put_delta_usec: 0,
                addr: buf as u64,
                size: len as u64,
                nr_pages_per_call: PAGES as u32,
                gup_flags: FOLL_WRITE,
                test_flags: 0,
                which_pages: [0; 8],
            };
            let t0 = tsc();
            // SAFETY: `args` is a live `struct gup_test` the ioctl reads and writes.
            let result = unsafe {
                raw(
                    nr::IOCTL,
                    [fd, request, &mut args as *mut GupTest as usize, 0, 0, 0],
                )
            };
            let t1 = tsc();
            if let Err(e) = result {
                failed = Some(e);
                break;
            }
            s.push((t1 - t0) / PAGES as u64);
        }
        match failed {
            Some(e) => skip(name, e),
            None => report_samples(name, "tsc/page", &mut s),
        }
        if name == "gup_fast_pin_per_page" {
            OpStat::report_since(&stat, name, "gup_fast");
        }
    }
    unmap(buf, len);
    let _ = close(fd as i32);
}

/// The text of `/proc/cowlab/faultstat` (a cowlab kernel built with `faultstat`; absent
/// elsewhere), whose `OPSTAT op=<op> count=<n> <phase>=<ticks>...` lines total the phases of
/// whole operations since boot. The text lives in a page mapped only when the file exists, so
/// that on every other kernel the program's stack and memory stay as they were (fork's cost
/// grows with the pages the process maps).
/// Room for `/proc/cowlab/faultstat`'s text (two pages: the fault kinds' and operations' lines).
const OPSTAT_BUF: usize = 2 * PAGE;

struct OpStat {
    addr: usize,
    len: usize,
}

impl OpStat {
    fn read() -> Option<OpStat> {
        let fd = open(c"/proc/cowlab/faultstat", O_RDONLY).ok()?;
        let mut stat = OpStat {
            addr: map(OPSTAT_BUF),
            len: 0,
        };
        while stat.len < OPSTAT_BUF {
            // SAFETY: `addr` maps OPSTAT_BUF bytes of our own, `len < OPSTAT_BUF`.
            let rest = unsafe {
                core::slice::from_raw_parts_mut(
                    (stat.addr + stat.len) as *mut u8,
                    OPSTAT_BUF - stat.len,
                )
            };
            match read(fd, rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => stat.len += n,
            }
        }
        let _ = close(fd);
        Some(stat)
    }

    fn text(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of the page were written by `read`; it lives until drop.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The fields after `OPSTAT op=<op>` on that operation's line.
    fn fields(&self, op: &str) -> Option<&str> {
        let text = core::str::from_utf8(self.text()).ok()?;
        text.lines().find_map(|l| {
            let rest = l.strip_prefix("OPSTAT op=")?.strip_prefix(op)?;
            rest.starts_with(' ').then_some(rest)
        })
    }

    /// Prints `BENCH-OPSTAT name=<name> op=<op>` and every field's growth since `before`.
    fn report_since(before: &Option<OpStat>, name: &str, op: &str) {
        let Some(before) = before else {
            return;
        };
        let Some(after) = OpStat::read() else {
            return;
        };
        let (Some(a), Some(b)) = (before.fields(op), after.fields(op)) else {
            return;
        };
        let mut line = LineBuf::default();
        let _ = write!(line, "BENCH-OPSTAT name={name} op={op}");
        for (fa, fb) in a.split_whitespace().zip(b.split_whitespace()) {
            let (Some((key, va)), Some((_, vb))) = (fa.split_once('='), fb.split_once('=')) else {
                continue;
            };
            let (Ok(va), Ok(vb)) = (va.parse::<u64>(), vb.parse::<u64>()) else {
                continue;
            };
            let _ = write!(line, " {key}={}", vb.wrapping_sub(va));
        }
        println!("{}", line.as_str());
    }
}

impl Drop for OpStat {
    fn drop(&mut self) {
        let _ = munmap(self.addr, OPSTAT_BUF);
    }
}

/// A line assembled before it is printed (one write, so nothing interleaves it).
struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        LineBuf {
            buf: [0; 512],
            len: 0,
        }
    }
}

impl LineBuf {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The file rows, on an ext2 filesystem on both kernels: cowlab's root disk at `/`; under
/// `bench --linux` the same image, attached to Linux as its only virtio disk and mounted at
/// `/mnt` by [`linux_mount_ext2`] (else Linux's rows run on its initramfs, a tmpfs; the line
/// `bench: file rows on f_type=...` says which): `pread` of 4 KiB of a file written once (on
/// Linux a page-cache hit; on cowlab, which has no page cache yet, a block read from the disk,
/// the sleep until the device's interrupt included), `pwrite` of 4 KiB over it, and
/// `open(O_CREAT|O_EXCL)` + `close` + `unlink` of a new file.
fn file_rows() {
    const N: usize = 256;
    let names = ["file_read_4k", "file_write_4k", "file_create_unlink"];
    let on_ext2 = linux_mount_ext2();
    let (path, new) = if on_ext2 {
        (c"/mnt/bench-file", c"/mnt/bench-new")
    } else {
        (c"/bench-file", c"/bench-new")
    };
    let fd = match cowlab_userland::calls::open_mode(path, O_CREAT | O_TRUNC | O_RDWR, 0o644) {
        Ok(fd) => fd,
        Err(e) => {
            for name in names {
                skip(name, e);
            }
            return;
        }
    };
    if let Ok(st) = cowlab_userland::calls::fstatfs(fd) {
        println!("bench: file rows on f_type={:#x}", st.f_type);
    }
    let mut buf = [0x5au8; PAGE];
    let _ = cowlab_userland::calls::pwrite(fd, &buf, 0);
    // `--breakdown`: the per-phase totals of exactly these calls (`file_read`, `file_write`,
    // `file_create_unlink`).
    let stat = OpStat::read();
    let mut s = Samples::new(N);
    for _ in 0..N {
        let t0 = tsc();
        let r = cowlab_userland::calls::pread(fd, &mut buf, 0);
        let t1 = tsc();
        if r != Ok(PAGE) {
            break;
        }
        s.push(t1 - t0);
    }
    OpStat::report_since(&stat, names[0], "file_read");
    report_samples(names[0], "tsc", &mut s);
    let stat = OpStat::read();
    let mut s = Samples::new(N);
    for _ in 0..N {
        let t0 = tsc();
        let r = cowlab_userland::calls::pwrite(fd, &buf, 0);
        let t1 = tsc();
        if r != Ok(PAGE) {
            break;
        }
        s.push(t1 - t0);
    }
    OpStat::report_since(&stat, names[1], "file_write");
    report_samples(names[1], "tsc", &mut s);
    let _ = close(fd);
    let _ = cowlab_userland::calls::unlink(path);
    let stat = OpStat::read();
    let mut s = Samples::new(N);
    for _ in 0..N {
        let t0 = tsc();
        let fd = cowlab_userland::calls::open_mode(new, O_CREAT | O_EXCL | O_RDWR, 0o644);
        let closed = fd.map(close);
        let unlinked = cowlab_userland::calls::unlink(new);
        let t1 = tsc();
        if closed.is_err() || unlinked.is_err() {
            break;
        }
        s.push(t1 - t0);
    }
    OpStat::report_since(&stat, names[2], "file_create_unlink");
    report_samples(names[2], "tsc", &mut s);
    file_map_rows(if on_ext2 {
        c"/mnt/bench-map"
    } else {
        c"/bench-map"
    });
    settle_disk(on_ext2);
}

/// After the file rows, nothing of the disk may run inside a later row's timed region: the
/// writeback they started and its completion interrupts come at points the host's service time
/// decides (under `-icount sleep=off`), which made two Linux boots differ on the rows after them
/// (`thp_fault_2m`, `thp_split_pmd`). `sync` waits for every write on both kernels; on Linux the
/// bench's ext2 mount then goes (`umount`), so no flusher or journal timer looks at it again.
fn settle_disk(on_ext2: bool) {
    // SAFETY: sync and umount2 of a NUL-terminated path touch no memory of this process.
    unsafe {
        let _ = raw(162, [0; 6]);
        if on_ext2 {
            let _ = raw(166, [c"/mnt".as_ptr() as usize, 0, 0, 0, 0, 0]);
        }
    }
}

/// Maps `len` bytes of `fd` (`mmap(2)` with a file).
fn map_file(len: usize, prot: u32, flags: u32, fd: i32) -> Result<usize, Errno> {
    // SAFETY: mmap with no fixed address touches no memory of this process.
    unsafe { raw(9, [0, len, prot as usize, flags as usize, fd as usize, 0]) }
}

fn msync_sync(addr: usize, len: usize) -> Result<usize, Errno> {
    const MS_SYNC: usize = 4;
    // SAFETY: msync of a mapping this process owns touches no memory of it.
    unsafe { raw(26, [addr, len, MS_SYNC, 0, 0, 0]) }
}

/// The file-mapping rows, on the file rows' filesystem (ext2 on both kernels), a 1 MiB file
/// written once so its pages are cached: `file_map_read_fault_private` and `..._shared` (a
/// read fault on a fresh mapping of cached pages, one per 64 KiB fault-around window: the page
/// cache lookups and the 16 PTEs of the window, per fault),
/// `file_writenotify_fault` (a store to a shared page that `msync(MS_SYNC)` just cleaned and
/// write-protected: Linux's `do_wp_page` -> `page_mkwrite` path, per page), and
/// `file_msync_1m` (`msync(MS_SYNC)` of 1 MiB whose every page was just dirtied: the write
/// protection of each PTE and the writeback of 256 pages, the disk's time included).
fn file_map_rows(path: &core::ffi::CStr) {
    const N: usize = 256;
    const ROUNDS: usize = 8;
    let names = [
        "file_map_read_fault_private",
        "file_map_read_fault_shared",
        "file_writenotify_fault",
        "file_msync_1m",
    ];
    let fd = match cowlab_userland::calls::open_mode(path, O_CREAT | O_TRUNC | O_RDWR, 0o644) {
        Ok(fd) => fd,
        Err(e) => {
            for name in names {
                skip(name, e);
            }
            return;
        }
    };
    let data = [0x3cu8; PAGE];
    for i in 0..N {
        let _ = cowlab_userland::calls::pwrite(fd, &data, (i * PAGE) as u64);
    }
    // One read per fault-around window (64 KiB, 16 pages, aligned by address; Linux's default
    // `fault_around_bytes` and cowlab's): each timed read is a fault, which maps its page and
    // the window's 15 cached neighbours (the window holding the mapping's start is cut to it).
    // Reading every page instead timed 15 loads of an already mapped page for each fault, so
    // the median was the TSC read alone (6 instructions on both kernels).
    const WINDOW: usize = 16;
    for (name, flags) in [(names[0], MAP_PRIVATE), (names[1], MAP_SHARED)] {
        let mut s = Samples::new(N / WINDOW * ROUNDS * 2);
        for _ in 0..ROUNDS * 2 {
            let addr = match map_file(N * PAGE, PROT_READ, flags, fd) {
                Ok(a) => a,
                Err(e) => {
                    skip(name, e);
                    break;
                }
            };
            for i in (0..N).step_by(WINDOW) {
                let t0 = tsc();
                read_byte(addr + i * PAGE);
                let t1 = tsc();
                s.push(t1 - t0);
            }
            unmap(addr, N * PAGE);
        }
        if s.len > 0 {
            report_samples(name, "tsc/fault", &mut s);
        }
    }
    let addr = match map_file(N * PAGE, RW, MAP_SHARED, fd) {
        Ok(a) => a,
        Err(e) => {
            skip(names[2], e);
            skip(names[3], e);
            let _ = close(fd);
            let _ = cowlab_userland::calls::unlink(path);
            return;
        }
    };
    let mut notify = Samples::new(N * ROUNDS);
    let mut sync = Samples::new(ROUNDS);
    for round in 0..ROUNDS {
        for i in 0..N {
            write_byte(addr + i * PAGE, round as u8);
        }
        let t0 = tsc();
        let r = msync_sync(addr, N * PAGE);
        let t1 = tsc();
        if r.is_err() {
            break;
        }
        sync.push(t1 - t0);
        for i in 0..N {
            let t0 = tsc();
            write_byte(addr + i * PAGE, 0x80 | round as u8);
            let t1 = tsc();
            notify.push(t1 - t0);
        }
        let _ = msync_sync(addr, N * PAGE);
    }
    report_samples(names[2], "tsc/page", &mut notify);
    report_samples(names[3], "tsc", &mut sync);
    writeback_per_page(fd, addr, N);
    unmap(addr, N * PAGE);
    let _ = close(fd);
    let _ = cowlab_userland::calls::unlink(path);
}

// ---- pc3 (issue 12): writeback_per_page ----

/// `writeback_per_page`: the CPU's part of writing back one dirty page of a file, per page of
/// a 256-page (1 MiB) contiguous writeback whose every page was just dirtied by a store
/// through one shared mapping: make the page clean and under writeback, write-protect its PTE
/// (with the TLB flush, once per call), map its block and put it in a block request (the
/// requests submitted), excluding the device's time. cowlab: `msync(MS_SYNC)` of the range
/// less the TSC spent waiting for the root disk meanwhile (writeback's requests and the metadata
/// blocks the msync's fsync writes: `/proc/cowlab/mmstat`'s `disk_wait_tsc`, read before and
/// after, untimed), divided by the pages; this includes the system call, the metadata sync's CPU
/// work and the end of writeback. Linux: `sync_file_range(SYNC_FILE_RANGE_WRITE)` of the range,
/// which starts the writeback of every dirty page (`folio_clear_dirty_for_io`, which
/// write-protects through the rmap, then the bios' submission) and returns without waiting,
/// divided by the pages; an untimed `fsync` then waits for the I/O.
fn writeback_per_page(fd: i32, addr: usize, pages: usize) {
    const ROUNDS: usize = 8;
    const SYNC_FILE_RANGE: usize = 277;
    const SYNC_FILE_RANGE_WRITE: usize = 2;
    let name = "writeback_per_page";
    let cowlab = cowlab_userland::test::on_cowlab();
    let mut s = Samples::new(ROUNDS);
    for round in 0..ROUNDS {
        for i in 0..pages {
            write_byte(addr + i * PAGE, 0x40 | round as u8);
        }
        if cowlab {
            let w0 = mmstat_value("disk_wait_tsc");
            let t0 = tsc();
            let r = msync_sync(addr, pages * PAGE);
            let t1 = tsc();
            let w1 = mmstat_value("disk_wait_tsc");
            let (Ok(_), Some(w0), Some(w1)) = (r, w0, w1) else {
                println!("BENCH-SKIP name={name} reason=no-disk_wait_tsc");
                return;
            };
            s.push((t1 - t0).saturating_sub(w1 - w0) / pages as u64);
        } else {
            let t0 = tsc();
            // SAFETY: sync_file_range takes no pointer.
            let r = unsafe {
                raw(
                    SYNC_FILE_RANGE,
                    [fd as usize, 0, pages * PAGE, SYNC_FILE_RANGE_WRITE, 0, 0],
                )
            };
            let t1 = tsc();
            if let Err(e) = r {
                skip(name, e);
                return;
            }
            s.push((t1 - t0) / pages as u64);
            // SAFETY: fsync takes no pointer.
            let _ = unsafe { raw(74, [fd as usize, 0, 0, 0, 0, 0]) };
        }
    }
    report_samples(name, "tsc/page", &mut s);
}

/// One counter of `/proc/cowlab/mmstat` (cowlab only).
fn mmstat_value(name: &str) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = cowlab_userland::calls::read_file(c"/proc/cowlab/mmstat", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---- end pc3 ----

/// Under `bench --linux` (Linux, pid 1): loads the modules xtask put in the initramfs as
/// `/modules/NN.ko` in dependency order (virtio, virtio-pci, virtio-blk, ext4, which serves
/// ext2), then mounts the virtio disk (cowlab's root image, a snapshot) at `/mnt` as ext2
/// through a devtmpfs at `/devtmp`. Whether it is mounted; on cowlab it never tries.
fn linux_mount_ext2() -> bool {
    if cowlab_userland::sys::getpid() != 1 || cowlab_userland::test::on_cowlab() {
        return false;
    }
    const FINIT_MODULE: usize = 313;
    const MKDIR: usize = 83;
    const MOUNT: usize = 165;
    let sc = |n: usize, a: [usize; 6]| {
        // SAFETY: every call passes NUL-terminated strings that outlive it, or none.
        unsafe { cowlab_userland::calls::raw(n, a) }
    };
    for i in 0..100 {
        let mut name = *b"/modules/00.ko\0";
        name[9] = b'0' + (i / 10) as u8;
        name[10] = b'0' + (i % 10) as u8;
        let path = core::ffi::CStr::from_bytes_with_nul(&name).expect("one NUL at the end");
        let Ok(fd) = cowlab_userland::calls::open_mode(path, O_RDONLY, 0) else {
            break;
        };
        if let Err(e) = sc(
            FINIT_MODULE,
            [fd as usize, c"".as_ptr() as usize, 0, 0, 0, 0],
        ) {
            eprintln!("bench: finit_module of module {i} failed: errno {}", e.0);
        }
        let _ = close(fd);
    }
    for dir in [c"/devtmp", c"/mnt"] {
        let _ = sc(MKDIR, [dir.as_ptr() as usize, 0o755, 0, 0, 0, 0]);
    }
    let devtmpfs = c"devtmpfs";
    if sc(
        MOUNT,
        [
            devtmpfs.as_ptr() as usize,
            c"/devtmp".as_ptr() as usize,
            devtmpfs.as_ptr() as usize,
            0,
            0,
            0,
        ],
    )
    .is_err()
    {
        return false;
    }
    match sc(
        MOUNT,
        [
            c"/devtmp/vda".as_ptr() as usize,
            c"/mnt".as_ptr() as usize,
            c"ext2".as_ptr() as usize,
            0,
            0,
            0,
        ],
    ) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("bench: mounting the ext2 disk failed: errno {}", e.0);
            false
        }
    }
}

/// O_DIRECT 4 KiB requests on `/dev/vda`, guest instructions per request on the CPU: submitting
/// (`io_submit`: validating, pinning the page, building the virtio descriptor chain; the device
/// is held so nothing completes inside the region), then, once the request is done, collecting
/// its event (`io_getevents`). Notifying the device (`COWLAB_VDA_RELEASE`), the device's service
/// time and the interrupt that finishes the request (reaping the used ring, dirtying and
/// unpinning the page) are outside the regions: under `-icount` the moment the completion
/// arrives depends on the host, so a region that may contain it does not repeat. cowlab only:
/// the `HOLD`/`RELEASE` ioctls are cowlab's, the Linux machine has no data disk, and a host's
/// `/dev/vda` may be a real disk (`reason=not-cowlab`).
fn dio_4k() {
    const REQUESTS: usize = 256;
    let names = ["dio_read_4k", "dio_write_4k"];
    if !cowlab_userland::test::on_cowlab() {
        for name in names {
            println!("BENCH-SKIP name={name} reason=not-cowlab");
        }
        return;
    }
    let path = b"/dev/vda\0";
    // SAFETY: `path` is NUL-terminated; open reads it.
    let fd = match unsafe {
        raw(
            nr::OPEN,
            [
                path.as_ptr() as usize,
                (O_RDWR | O_DIRECT) as usize,
                0,
                0,
                0,
                0,
            ],
        )
    } {
        Ok(fd) => fd,
        Err(e) => {
            for name in names {
                skip(name, e);
            }
            return;
        }
    };
    let mut ctx = 0u64;
    // SAFETY: `ctx` is a live u64 io_setup writes.
    if let Err(e) = unsafe { raw(IO_SETUP, [4, &mut ctx as *mut u64 as usize, 0, 0, 0, 0]) } {
        for name in names {
            skip(name, e);
        }
        let _ = close(fd as i32);
        return;
    }
    let buf = map(PAGE);
    touch(buf, PAGE);
    let mut events = [0u64; 4];
    for (name, opcode) in [(names[0], 0u16), (names[1], 1)] {
        let mut s = Samples::new(REQUESTS);
        let mut failed = None;
        for i in 0..REQUESTS {
            // Spread over the disk's first 32 MiB, the same offsets for reads and writes.
            let iocb = Iocb {
                opcode,
                fildes: fd as u32,
                buf: buf as u64,
                nbytes: PAGE as u64,
                offset: ((i * 8191 % 8192) * PAGE) as i64,
                ..Iocb::default()
            };
            let list = [&iocb as *const Iocb as usize];
            // SAFETY: plain ioctls on /dev/vda without pointers.
            let _ = unsafe { raw(nr::IOCTL, [fd, HOLD, 0, 0, 0, 0]) };
            let t0 = tsc();
            // SAFETY: `list` holds one pointer to a live iocb whose buffer is our resident page.
            let submitted = unsafe {
                raw(
                    IO_SUBMIT,
                    [ctx as usize, 1, list.as_ptr() as usize, 0, 0, 0],
                )
            };
            let t1 = tsc();
            // Outside the regions: the device may complete (and interrupt) at any point after.
            // SAFETY: as above.
            let _ = unsafe { raw(nr::IOCTL, [fd, RELEASE, 0, 0, 0, 0]) };
            // SAFETY: as above.
            while unsafe { raw(nr::IOCTL, [fd, INFLIGHT, 0, 0, 0, 0]) } != Ok(0) {
                cowlab_userland::calls::sched_yield();
            }
            let t2 = tsc();
            // SAFETY: `events` has room for one 32-byte io_event.
            let got = unsafe {
                raw(
                    IO_GETEVENTS,
                    [ctx as usize, 1, 1, events.as_mut_ptr() as usize, 0, 0],
                )
            };
            let t3 = tsc();
            match (submitted, got) {
                (Ok(1), Ok(1)) if events[2] == PAGE as u64 => s.push((t1 - t0) + (t3 - t2)),
                (Err(e), _) | (_, Err(e)) => {
                    failed = Some(e);
                    break;
                }
                _ => {
                    failed = Some(Errno(errno::EINVAL));
                    break;
                }
            }
        }
        match failed {
            Some(e) => skip(name, e),
            None => report_samples(name, "tsc/request", &mut s),
        }
    }
    unmap(buf, PAGE);
    // SAFETY: destroys the context created above.
    let _ = unsafe { raw(IO_DESTROY, [ctx as usize, 0, 0, 0, 0, 0]) };
    let _ = close(fd as i32);
}
