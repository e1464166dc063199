//! Robustness: children call the implemented system calls with random arguments (random
//! 64-bit values, small integers, and pointers into, near and far from their own memory). The
//! kernel must answer each call (an errno or a result) or kill the child with a signal; it
//! must never crash. Calls that would end, block or replace the child are left out. Runs only
//! on cowlab (on a real system random arguments could create files or change limits).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use core::sync::atomic::{AtomicU64, Ordering};
use cowlab_userland::calls::*;
use cowlab_userland::sys::nr;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

/// System calls fuzzed: those that return whatever their arguments (no exit, fork, exec,
/// kill, reboot, sleeps, wait, pause-like reads of the console).
const CALLS: &[usize] = &[
    nr::WRITE,
    nr::OPEN,
    nr::CLOSE,
    nr::FSTAT,
    nr::LSEEK,
    nr::MMAP,
    nr::MPROTECT,
    nr::MUNMAP,
    nr::BRK,
    nr::RT_SIGACTION,
    nr::RT_SIGPROCMASK,
    nr::IOCTL,
    nr::PREAD64,
    nr::WRITEV,
    nr::PIPE,
    nr::MREMAP,
    nr::MADVISE,
    nr::DUP,
    nr::DUP2,
    nr::UNAME,
    nr::FCNTL,
    nr::GETCWD,
    nr::READLINK,
    nr::GETRUSAGE,
    nr::SYSINFO,
    nr::ARCH_PRCTL,
    nr::CLOCK_GETTIME,
    nr::OPENAT,
    nr::NEWFSTATAT,
    nr::DUP3,
    nr::PIPE2,
    nr::PRLIMIT64,
    nr::GETRANDOM,
    nr::GETDENTS64,
    74, // fsync
    75, // fdatasync
    nr::FTRUNCATE,
    nr::FALLOCATE,
    82,  // rename
    84,  // rmdir
    86,  // link
    87,  // unlink
    137, // statfs
    138, // fstatfs
    263, // unlinkat
    264, // renameat
    265, // linkat
    316, // renameat2
    319, // memfd_create
    425, // io_uring_setup
    426, // io_uring_enter
    427, // io_uring_register
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An argument: small integers, page-ish sizes, pointers near the stack or the program,
    /// kernel addresses, or anything.
    fn arg(&mut self, stack: usize) -> usize {
        let r = self.next();
        (match r % 8 {
            0 => r >> 60,
            1 => (r >> 32) % 70_000,
            2 => stack.wrapping_add(((r >> 16) % 8192) as usize) as u64,
            3 => 0x40_0000 + (r >> 40) % 0x10_0000,
            4 => 0xffff_ffff_8000_0000 + ((r >> 20) & 0xfff_ffff),
            5 => 0x7fff_ffff_f000 - ((r >> 30) % 0x4000),
            _ => r,
        }) as usize
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_fuzz");
    if !cowlab_userland::test::on_cowlab() {
        // On a real system random arguments can create files (open with O_CREAT and a pointer
        // that happens to name something) or change other processes' limits (prlimit64).
        cowlab_userland::println!("t_fuzz: skipped: runs only on cowlab");
        return t.finish();
    }
    // `t_fuzz [SEED|random]`: a fixed default so that a CI run is repeatable (a random seed,
    // 0x9740c6bd0002a3fb, hung a CI-like run: see docs/fuzzing.md); `random` draws one.
    let arg = cowlab_userland::args::args().nth(1);
    let seed = match arg.as_ref().map(|a| a.to_bytes()) {
        Some(b"random") => {
            let mut seed = [0u8; 8];
            // SAFETY: getrandom writes 8 bytes into `seed`.
            let _ = unsafe { raw(nr::GETRANDOM, [seed.as_mut_ptr() as usize, 8, 0, 0, 0, 0]) };
            u64::from_le_bytes(seed)
        }
        Some(text) => {
            let text = core::str::from_utf8(text).unwrap_or("");
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).unwrap_or(1),
                None => text.parse().unwrap_or(1),
            }
        }
        None => 0x5eed_0001,
    } | 1;
    // `trace` after the seed prints every call before it is made (to find one that blocks).
    let trace = cowlab_userland::args::args()
        .nth(2)
        .is_some_and(|a| a.to_bytes() == b"trace");
    let mut ended = Ended::default();
    cowlab_userland::println!("t_fuzz: seed {seed:#x}");
    let page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS).ok();
    // SAFETY: a fresh shared read-write page, aligned for AtomicU64s, never unmapped by the
    // parent.
    let progress = page.map(|p| unsafe { &*(p as *const Progress) });
    fuzz_children(seed, trace, &mut ended, progress);
    report(&mut t, "fuzzing", &ended);
    // The shape that hung seed 0x9740c6bd0002a3fb (a child blocked for good in a write to its
    // own full pipe, as Linux blocks too), made on purpose: the random programs reach it only
    // on some stack layouts (their pointer arguments are drawn near the stack), so the seed
    // alone stopped drawing it once this program's frame changed. Its parent must kill it at
    // the deadline. It has its own count: the fuzzing children's bound must not pay for it.
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        let Ok([_keep_reader, w]) = pipe() else {
            exit_now(2)
        };
        // SAFETY: 5 MiB from the program's first page on: as much as is mapped is copied, the
        // rest is EFAULT; the write blocks once 64 KiB fill the pipe.
        let _ = unsafe { raw(nr::WRITE, [w as usize, 0x40_0000, 5 << 20, 0, 0, 0]) };
        exit_now(3)
    }
    let blocked = wait_or_kill(pid, &mut Ended::default(), None);
    t.check_why(
        "a child writing 5 MiB into its own pipe blocks until SIGKILL ends it",
        blocked == Some(Ending::KilledAtDeadline),
        format_args!("{blocked:?}"),
    );
    let ring_children = 8;
    let mut rings = Ended::default();
    let mut set_up = 0;
    for c in 0..ring_children {
        reset(progress);
        let pid = fork().unwrap_or(-1);
        if pid == 0 {
            // 2: the ring could not even be set up, so nothing was fuzzed.
            exit_now(if fuzz_ring(Rng(seed.wrapping_mul(c + 3) | 1), progress) {
                0
            } else {
                2
            });
        }
        let ending = wait_or_kill(pid, &mut rings, progress);
        if let Some(Ending::Exited(0) | Ending::Signaled) = ending {
            set_up += 1;
        }
    }
    t.eq(
        "every io_uring fuzzing child that ended by itself had set up its ring",
        set_up,
        rings.answered,
    );
    report(&mut t, "io_uring fuzzing", &rings);
    t.check("the system still forks and execs", in_child_status() == 0);
    t.finish()
}

/// How long a fuzzing child may stay in one call: one that is still there was blocked (a call
/// that blocks forever on Linux too) and is killed. Its 400 calls take well under a second on
/// an idle machine; on a loaded CI host they may take longer, so the deadline counts from the
/// child's last call made (its progress word), up to [`CAP_MS`] in all.
const DEADLINE_MS: u64 = 3000;

/// The longest a fuzzing child may run at all, however it progresses.
const CAP_MS: u64 = 60_000;

/// At most one child in this many may be killed at the deadline at all, and at most one in
/// [`BLOCKED_FRACTION`] asleep in the kernel there: a child that blocked is not a crash, but
/// neither did it answer, and a kernel hang in some call must not pass as one (every child
/// blocking would otherwise still count as "answered"). A child found running (state R) made
/// no call for 3 s while it ran: random calls can scribble on its own stack (a `read` into
/// it, `MADV_DONTNEED`), which can leave it looping in user mode without its progress word.
const DEADLINE_FRACTION: u64 = 4;

/// See [`DEADLINE_FRACTION`].
const BLOCKED_FRACTION: u64 = 8;

/// What ended the fuzzing children.
#[derive(Default)]
struct Ended {
    children: u64,
    /// Ended by themselves: exited or killed by a signal of their own making.
    answered: u64,
    exited: u64,
    signaled: u64,
    /// Still running at the deadline, then ended by SIGKILL: not answered.
    at_deadline: u64,
    /// Of those, the ones asleep in the kernel (state S or D) at the deadline.
    blocked: u64,
    /// Not even SIGKILL ended them within 20 s (a kernel bug).
    unreaped: u64,
}

#[derive(Debug, PartialEq)]
enum Ending {
    Exited(i32),
    Signaled,
    KilledAtDeadline,
}

/// The checks on one group of children: each one either answered or was killed at the
/// deadline and reaped, and few of them needed the deadline.
fn report(t: &mut Tester, what: &str, ended: &Ended) {
    cowlab_userland::println!(
        "# {} {what} children: {} answered ({} exited, {} killed by a signal), {} killed at the deadline ({DEADLINE_MS} ms in one call; {} of them asleep in the kernel), {} not reaped",
        ended.children,
        ended.answered,
        ended.exited,
        ended.signaled,
        ended.at_deadline,
        ended.blocked,
        ended.unreaped
    );
    t.eq(
        &format!("every {what} child answered (exited or killed by a signal) or was killed at its deadline"),
        ended.answered + ended.at_deadline,
        ended.children,
    );
    t.eq(
        &format!("SIGKILL reaped every {what} child still running at its deadline"),
        ended.unreaped,
        0,
    );
    t.check_why(
        &format!("at most 1 in {DEADLINE_FRACTION} {what} children ran into the deadline"),
        ended.at_deadline * DEADLINE_FRACTION <= ended.children,
        format_args!("{} of {}", ended.at_deadline, ended.children),
    );
    t.check_why(
        &format!(
            "at most 1 in {BLOCKED_FRACTION} {what} children slept in the kernel at the deadline"
        ),
        ended.blocked * BLOCKED_FRACTION <= ended.children,
        format_args!("{} of {}", ended.blocked, ended.children),
    );
}

/// Where a fuzzing child is: the calls it began (word 0), then the number and the six
/// arguments of the one it is in, in a page it shares with the parent (a random call may
/// unmap or scribble on it: the child then dies of SIGSEGV, or the report is garbage; neither
/// hides a hang, which the count of calls still shows).
type Progress = [AtomicU64; 8];

fn reset(progress: Option<&Progress>) {
    if let Some(p) = progress {
        p.iter().for_each(|w| w.store(0, Ordering::Relaxed));
    }
}

/// The child is about to make call `nr` with `args` (or submit SQE `nr`).
fn note(progress: Option<&Progress>, nr: u64, args: &[usize]) {
    if let Some(p) = progress {
        p[1].store(nr, Ordering::Relaxed);
        for (w, &a) in p[2..].iter().zip(args) {
            w.store(a as u64, Ordering::Relaxed);
        }
        p[0].fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits for a fuzzing child until it has made no call for [`DEADLINE_MS`] (or ran
/// [`CAP_MS`]; without `progress`, until [`DEADLINE_MS`]), then kills it with SIGKILL, which
/// must end it whatever it sleeps in (it may have blocked or ignored every other signal), and
/// prints the call it was in. `None`: not reaped even then (a sleep SIGKILL does not end: a
/// kernel bug).
fn wait_or_kill(pid: i32, ended: &mut Ended, progress: Option<&Progress>) -> Option<Ending> {
    use cowlab_userland::test::{kill_and_reap, reap_within, SIGKILL};
    ended.children += 1;
    let start = monotonic_ns();
    let calls = || progress.map_or(0, |p| p[0].load(Ordering::Relaxed));
    let (mut last, mut since) = (calls(), start);
    let reaped = loop {
        match reap_within(pid, 100) {
            Ok(None) => {}
            other => break other,
        }
        let now = monotonic_ns();
        let made = calls();
        if made != last {
            (last, since) = (made, now);
        }
        if now - since >= DEADLINE_MS * 1_000_000 || now - start >= CAP_MS * 1_000_000 {
            break Ok(None);
        }
    };
    let ending = match reaped {
        Ok(Some(s)) if wifexited(s) => Some(Ending::Exited(wexitstatus(s))),
        Ok(Some(s)) if wifsignaled(s) => Some(Ending::Signaled),
        Ok(None) => {
            // The child's state and CPU time (`/proc/<pid>/stat` fields 3, 14, 15): running
            // (R) without progress is starved, sleeping (S, D) in a call that cannot block
            // is a kernel bug.
            let mut stat = [0u8; 512];
            let path = format!("/proc/{pid}/stat\0");
            let n = core::ffi::CStr::from_bytes_with_nul(path.as_bytes())
                .ok()
                .and_then(|c| read_file(c, &mut stat))
                .unwrap_or(0);
            let text = core::str::from_utf8(&stat[..n]).unwrap_or("");
            let fields = text.rsplit(')').next().unwrap_or("");
            let f: alloc::vec::Vec<&str> = fields.split_whitespace().collect();
            if matches!(f.first(), Some(&"S" | &"D")) {
                ended.blocked += 1;
            }
            cowlab_userland::println!(
                "# child {pid} at the deadline: state {} utime {} stime {} (ticks)",
                f.first().unwrap_or(&"?"),
                f.get(11).unwrap_or(&"?"),
                f.get(12).unwrap_or(&"?")
            );
            if let Some(p) = progress {
                let w: [u64; 8] = core::array::from_fn(|i| p[i].load(Ordering::Relaxed));
                cowlab_userland::println!(
                    "# child {pid} killed at the deadline after {} ms, in call {}: nr (or SQE opcode) {} args {:x?}",
                    (monotonic_ns() - start) / 1_000_000,
                    w[0],
                    w[1],
                    &w[2..]
                );
            }
            // Loosely bounded: a loaded CI host can stall the guest for seconds.
            match kill_and_reap(pid, 20_000).0 {
                Ok(Some(s)) if wifsignaled(s) && wtermsig(s) == SIGKILL => {
                    Some(Ending::KilledAtDeadline)
                }
                // It ended by itself between the deadline and the kill: on 2+ CPUs it runs
                // beside this check (a 2-CPU boot at host load 30: a child past its 400th call,
                // state R for 3 s in its exit, then reaped with its own status, which counted
                // as "not reaped").
                Ok(Some(s)) if wifexited(s) => Some(Ending::Exited(wexitstatus(s))),
                Ok(Some(s)) if wifsignaled(s) => Some(Ending::Signaled),
                _ => {
                    ended.unreaped += 1;
                    None
                }
            }
        }
        _ => None,
    };
    match ending {
        Some(Ending::Exited(_)) => {
            ended.exited += 1;
            ended.answered += 1;
        }
        Some(Ending::Signaled) => {
            ended.signaled += 1;
            ended.answered += 1;
        }
        Some(Ending::KilledAtDeadline) => ended.at_deadline += 1,
        None => {}
    }
    ending
}

/// 24 children of 400 random calls each from `seed`.
fn fuzz_children(seed: u64, trace: bool, ended: &mut Ended, progress: Option<&Progress>) {
    let children: u64 = 24;
    let calls_each = 400;
    for c in 0..children {
        reset(progress);
        let pid = fork().unwrap_or(-1);
        if pid == 0 {
            let mut rng = Rng(seed.wrapping_add(c.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
            let local = [0u8; 256];
            let stack = local.as_ptr() as usize;
            for _ in 0..calls_each {
                let n = CALLS[(rng.next() % CALLS.len() as u64) as usize];
                let mut args = [0; 6].map(|_: usize| rng.arg(stack));
                // Defence in depth: never create files, never touch another process's limits.
                match n {
                    nr::OPEN => args[1] &= !0o100,
                    nr::OPENAT => args[2] &= !0o100,
                    nr::PRLIMIT64 => args[0] = 0,
                    // Waiting for completions nothing will post would block forever (as on
                    // Linux): submit only.
                    426 => args[3] &= !1,
                    _ => {}
                }
                // Leave descriptors 0-2 alone: no garbage on the console, which xtask parses.
                if matches!(n, nr::CLOSE | nr::DUP2 | nr::DUP3 | nr::WRITE | nr::WRITEV)
                    && (args[0] < 3 || args[1] < 3)
                {
                    continue;
                }
                note(progress, n as u64, &args);
                if trace {
                    cowlab_userland::println!("t_fuzz: child {c} call {n} {args:x?}");
                }
                // SAFETY: deliberately arbitrary: the kernel must reject what is invalid, and
                // whatever valid damage a call does (unmapping our own memory, say) ends at
                // most this child.
                let r = unsafe { raw(n, args) };
                if trace {
                    cowlab_userland::println!("t_fuzz: = {r:?}");
                }
            }
            exit_now(0);
        }
        wait_or_kill(pid, ended, progress);
    }
}

fn in_child_status() -> i32 {
    let path = cowlab_userland::test::sibling("status");
    match cowlab_userland::process::run(&[&path]) {
        Ok(status) if wifexited(status) => wexitstatus(status),
        _ => -1,
    }
}

/// Random SQEs through a real ring: random opcodes, flags, offsets, lengths, buffer indices and
/// addresses (mostly inside a scratch mapping that is also registered), on a memfd, the ring
/// itself or bad descriptors (never the console or a pipe, whose reads would block). cowlab
/// maps both rings with the SQ ring's mmap (`IORING_FEAT_SINGLE_MMAP`).
/// Returns whether the ring was set up (and fuzzed).
fn fuzz_ring(mut rng: Rng, progress: Option<&Progress>) -> bool {
    const PAGE: usize = 4096;
    let mut p = IoUringParams::default();
    let Ok(ring) = io_uring_setup(8, &mut p) else {
        return false;
    };
    let rw = PROT_READ | PROT_WRITE;
    // SAFETY: new mappings at addresses the kernel chooses.
    let (sq, sqes) = unsafe {
        (
            mmap_fd(0, PAGE, rw, MAP_SHARED, ring, IORING_OFF_SQ_RING),
            mmap_fd(0, PAGE, rw, MAP_SHARED, ring, IORING_OFF_SQES),
        )
    };
    let (Ok(sq), Ok(sqes)) = (sq, sqes) else {
        return false;
    };
    let scratch = mmap(0, 8 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    let memfd = memfd_create(c"fuzz", 0).unwrap_or(-1);
    let _ = io_uring_register_buffers(ring, &[[scratch, 4 * PAGE], [scratch + 5000, 3000]]);
    for i in 0..300u32 {
        let r = rng.next();
        let fd = match r % 4 {
            0 => memfd,
            1 => ring,
            2 => 999,
            _ => -1,
        };
        let addr = match (r >> 8) % 4 {
            0 => rng.next() as usize,
            _ => scratch + (rng.next() % (8 * PAGE as u64)) as usize,
        };
        let sqe = IoUringSqe {
            opcode: ((r >> 16) % 32) as u8,
            flags: if (r >> 24).is_multiple_of(4) {
                (r >> 28) as u8
            } else {
                0
            },
            ioprio: u16::from((r >> 36).is_multiple_of(8)),
            fd,
            off: match (r >> 40) % 4 {
                0 => u64::MAX,
                1 => rng.next(),
                _ => rng.next() % 20_000,
            },
            addr: addr as u64,
            len: (rng.next() % 20_000) as u32,
            rw_flags: if (r >> 44).is_multiple_of(8) {
                rng.next() as u32
            } else {
                0
            },
            user_data: u64::from(i),
            buf_index: ((r >> 48) % 4) as u16,
            ..IoUringSqe::default()
        };
        let slot = i % 8;
        // SAFETY: slot < 8: inside the SQE mapping, which holds 8 SQEs.
        unsafe { core::ptr::write_volatile((sqes as *mut IoUringSqe).add(slot as usize), sqe) };
        let word = |off: u32| (sq + off as usize) as *mut u32;
        // SAFETY: the offsets the kernel gave lie inside the ring mapping (single mmap).
        unsafe {
            core::ptr::write_volatile(word(p.sq_off.array + 4 * slot), slot);
            core::ptr::write_volatile(word(p.sq_off.tail), i + 1);
            // Reap everything: the CQ head follows the tail.
            let tail = core::ptr::read_volatile(word(p.cq_off.tail));
            core::ptr::write_volatile(word(p.cq_off.head), tail);
        }
        note(
            progress,
            u64::from(sqe.opcode),
            &[fd as usize, sqe.off as usize, addr, sqe.len as usize],
        );
        // SAFETY: deliberately arbitrary SQEs; whatever they write lands in this child.
        let _ = unsafe { io_uring_enter(ring, 1, 0, 0) };
        if i.is_multiple_of(50) {
            let _ = io_uring_unregister_buffers(ring);
            let _ = io_uring_register_buffers(ring, &[[scratch, 2 * PAGE]]);
        }
    }
    true
}
