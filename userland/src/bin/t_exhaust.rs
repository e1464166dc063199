//! Exhaustion: programs that try to take everything get an errno or are killed, the kernel and
//! the other processes keep running, and memory comes back. One case per resource:
//!
//! - a fork bomb (every process forks until it fails) under `RLIMIT_NPROC` 40: the bomb gets
//!   EAGAIN, a process with the default limit can still fork meanwhile, and everything is
//!   reaped;
//! - descriptors (`/dev/null`, pipes, io_uring rings) until EMFILE at `RLIMIT_NOFILE`;
//! - io_uring buffer registrations charged to `RLIMIT_MEMLOCK` (one count for the user, across
//!   rings and processes): ENOMEM past it, room again after unregistering;
//! - memory: a hog fills RAM but for a few MiB (keeping 1 MiB of it pinned in an io_uring
//!   registration shared with the parent), then a small process allocates: the OOM killer
//!   kills the hog, the largest, not the small one that asked; a bystander keeps running; the
//!   pinned frames survive their owner's death (the parent reads the hog's bytes through the
//!   registration) until the parent unregisters them;
//! - a process touching more than RAM is killed, the bystander still runs.
//!
//! After each case `MemFree` (`/proc/meminfo`) is back at its value before it. The pipe budget
//! (ENFILE) is `t_limits`'s, the VMA limit `t_vmalimit`'s.
//!
//! Root bypasses `RLIMIT_NPROC` and `RLIMIT_MEMLOCK`: the bomb and the registrations run under
//! uids of their own (the limits count per real uid). QEMU only: it fills the machine's memory.

#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{meminfo_kb, Tester};
use cowlab_userland::uring::Ring;

cowlab_userland::entry!(main);

const EAGAIN: Errno = Errno(11);
const ENOMEM: Errno = Errno(12);
const EMFILE: Errno = Errno(24);
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
const O_NONBLOCK: u32 = 0o4000;
const PROT_RW: u32 = 3;
const MAP_PRIVATE_ANON: u32 = 0x22;
const SYSINFO: usize = 99;
const SIGKILL: i32 = 9;

fn main() -> i32 {
    let mut t = Tester::new("t_exhaust");
    // Warm up what the checks below use (stack pages, the allocator), so that the baselines
    // are not disturbed by this process's own first use.
    let _ = meminfo_kb("MemAvailable");
    let _ = procs();
    warm_stack();
    measured(&mut t, "fork bomb", fork_bomb);
    measured(&mut t, "descriptors", descriptors);
    measured(&mut t, "io_uring registrations", registrations);
    measured(&mut t, "OOM: the largest is killed", oom_largest);
    measured(&mut t, "OOM: more than RAM", oom_more_than_ram);
    t.finish()
}

/// Touches 64 KiB of stack below this frame, so the cases' page-sized buffers find their
/// stack pages already there.
#[inline(never)]
fn warm_stack() {
    let mut deep = [0u8; 64 * 1024];
    for i in (0..deep.len()).step_by(PAGE) {
        // SAFETY: inside the local array.
        unsafe { core::ptr::write_volatile(deep.as_mut_ptr().add(i), 1) };
    }
    core::hint::black_box(&deep);
}

/// Runs `case` and checks that MemFree returns to its value before it (it may take the
/// kernel a moment to tear the last address space down after the reap).
fn measured(t: &mut Tester, name: &str, case: fn(&mut Tester)) {
    let before = meminfo_kb("MemAvailable");
    case(t);
    let mut after = meminfo_kb("MemAvailable");
    for _ in 0..50 {
        if after == before {
            break;
        }
        let _ = sleep_ms(10);
        after = meminfo_kb("MemAvailable");
    }
    t.check_why(
        &alloc::format!("{name}: MemFree back to its value"),
        after == before,
        format_args!("before {before:?} kB, after {after:?} kB"),
    );
}

extern crate alloc;

/// Tasks in the system (`sysinfo.procs`).
fn procs() -> u16 {
    let mut info = [0u8; 128];
    // SAFETY: sysinfo writes its 112-byte struct into `info`.
    let _ = unsafe { raw(SYSINFO, [info.as_mut_ptr() as usize, 0, 0, 0, 0, 0]) };
    u16::from_le_bytes([info[80], info[81]])
}

/// Waits for every child; whether all exited with status 0.
fn reap_all() -> bool {
    let mut ok = true;
    while let Ok((_, status)) = waitpid(-1, 0) {
        ok &= status == 0;
    }
    ok
}

/// Every process of the bomb forks until fork fails, then waits for `release` to close and
/// reaps its children: it exits 0 if its own fork ended in EAGAIN and its children did too.
fn bomb(release: i32) -> ! {
    let failure = loop {
        match fork() {
            Ok(0) => continue,
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let mut b = [0u8; 1];
    let _ = read(release, &mut b);
    let children_ok = reap_all();
    exit_now(i32::from(failure != EAGAIN) | (i32::from(!children_ok) << 1))
}

fn fork_bomb(t: &mut Tester) {
    const NPROC: u64 = 40;
    let start = procs();
    let Ok([release_r, release_w]) = pipe() else {
        return t.check("pipe", false);
    };
    let root = match fork() {
        Ok(0) => {
            let _ = close(release_w);
            if setrlimit(
                RLIMIT_NPROC,
                Rlimit {
                    cur: NPROC,
                    max: NPROC,
                },
            )
            .is_err()
                || cowlab_userland::cred::drop_to(4242, 4242).is_err()
            {
                exit_now(4);
            }
            bomb(release_r)
        }
        Ok(pid) => pid,
        Err(e) => return t.check_why("fork the bomb", false, format_args!("{e:?}")),
    };
    let _ = close(release_r);
    // The bomb is at its cap once its uid has NPROC tasks (the bomb forks only below it).
    let mut peak = procs() - start;
    for _ in 0..2000 {
        if u64::from(peak) >= NPROC {
            break;
        }
        let _ = sleep_ms(5);
        peak = procs() - start;
    }
    t.eq(
        "the bomb stops at RLIMIT_NPROC tasks of its uid",
        u64::from(peak),
        NPROC,
    );
    // This process has the default limit (128): it can still fork while the bomb is capped.
    let t0 = monotonic_ns();
    let ours = match fork() {
        Ok(0) => exit_now(7),
        Ok(pid) => waitpid(pid, 0).map(|(_, s)| s),
        Err(e) => Err(e),
    };
    let took_ms = (monotonic_ns() - t0) / 1_000_000;
    t.eq(
        "meanwhile a process under the default limit forks and reaps",
        ours,
        Ok(7 << 8),
    );
    t.check_why(
        "and the kernel answers it promptly",
        took_ms < 2000,
        format_args!("fork+exit+wait took {took_ms} ms"),
    );
    let _ = close(release_w);
    let status = waitpid(root, 0).map(|(_, s)| s);
    t.eq(
        "every bomb process got EAGAIN and reaped its children",
        status,
        Ok(0),
    );
    t.eq("every task is gone", procs(), start);
}

fn descriptors(t: &mut Tester) {
    let status = cowlab_userland::test::in_child(|| {
        let mut last = -1;
        let refused = loop {
            match open(c"/dev/null", O_RDONLY) {
                Ok(fd) => last = fd,
                Err(e) => break e,
            }
        };
        i32::from(refused != EMFILE || last != 1023)
    });
    t.eq(
        "/dev/null until EMFILE: the last descriptor is 1023 (RLIMIT_NOFILE 1024)",
        status,
        0,
    );
    let status = cowlab_userland::test::in_child(|| {
        let mut pipes = 0;
        let refused = loop {
            match pipe() {
                Ok(_) => pipes += 1,
                Err(e) => break e,
            }
        };
        // fds 3..1022 hold 510 pipes; the 511th needs two slots and there is one.
        i32::from(refused != EMFILE || pipes != 510)
    });
    t.eq("510 pipes, then EMFILE", status, 0);
    let status = cowlab_userland::test::in_child(|| {
        if set_soft(RLIMIT_NOFILE, 100).is_err() {
            return 1;
        }
        let mut rings = 0;
        let refused = loop {
            let mut p = IoUringParams::default();
            match io_uring_setup(4, &mut p) {
                Ok(_) => rings += 1,
                Err(e) => break e,
            }
        };
        i32::from(refused != EMFILE || rings != 97) * 2
    });
    t.eq(
        "io_uring rings until EMFILE at RLIMIT_NOFILE 100 (97 rings)",
        status,
        0,
    );
}

/// Maps `pages` private pages and writes `byte` into each.
fn filled(pages: usize, byte: u8) -> Result<usize, Errno> {
    let a = mmap(0, pages * PAGE, PROT_RW, MAP_PRIVATE_ANON)?;
    for p in 0..pages {
        // SAFETY: inside the mapping just made.
        unsafe { core::ptr::write_volatile((a + p * PAGE) as *mut u8, byte) };
    }
    Ok(a)
}

/// `RLIMIT_MEMLOCK` 1 MiB: 256 pages registered on one ring, then even one more page on
/// another ring, or in another process, is ENOMEM (one count per user); unregistering gives
/// the room back.
fn registrations(t: &mut Tester) {
    let status = cowlab_userland::test::in_child(|| {
        let lim = Rlimit {
            cur: MIB as u64,
            max: MIB as u64,
        };
        if setrlimit(RLIMIT_MEMLOCK, lim).is_err()
            || cowlab_userland::cred::drop_to(4243, 4243).is_err()
        {
            return 1;
        }
        let (Ok(a), Ok(b)) = (Ring::new(4), Ring::new(4)) else {
            return 2;
        };
        let Ok(buf) = filled(257, 1) else {
            return 3;
        };
        if io_uring_register_buffers(a.fd, &[[buf, 257 * PAGE]]) != Err(ENOMEM) {
            return 4;
        }
        if io_uring_register_buffers(a.fd, &[[buf, 256 * PAGE]]) != Ok(0) {
            return 5;
        }
        if io_uring_register_buffers(b.fd, &[[buf, PAGE]]) != Err(ENOMEM) {
            return 6;
        }
        let other = cowlab_userland::test::in_child(|| {
            let Ok(c) = Ring::new(4) else {
                return 1;
            };
            i32::from(io_uring_register_buffers(c.fd, &[[buf, PAGE]]) != Err(ENOMEM)) * 2
        });
        if other != 0 {
            return 7;
        }
        if io_uring_unregister_buffers(a.fd) != Ok(0) {
            return 8;
        }
        if io_uring_register_buffers(b.fd, &[[buf, 256 * PAGE]]) != Ok(0) {
            return 9;
        }
        a.close();
        b.close();
        0
    });
    t.eq(
        "RLIMIT_MEMLOCK 1 MiB: 257 pages ENOMEM, 256 fit, one more on another ring or in another process ENOMEM, room back after unregister",
        status,
        0,
    );
}

/// A child that checks its own 64 KiB every 20 ms until `stop` reads EOF; exits 0 if its
/// memory stayed intact and it ran at least once.
fn bystander(stop: i32) -> ! {
    let Ok(buf) = filled(16, 0x42) else {
        exit_now(3)
    };
    let mut rounds = 0u32;
    loop {
        for p in 0..16 {
            // SAFETY: inside `buf`.
            if unsafe { core::ptr::read_volatile((buf + p * PAGE) as *const u8) } != 0x42 {
                exit_now(2);
            }
        }
        rounds += 1;
        let mut b = [0u8; 1];
        if read(stop, &mut b) == Ok(0) {
            exit_now(i32::from(rounds == 0));
        }
        let _ = sleep_ms(20);
    }
}

fn spawn_bystander() -> Option<(i32, i32)> {
    let [r, w] = pipe2(O_NONBLOCK).ok()?;
    match fork() {
        Ok(0) => {
            let _ = close(w);
            bystander(r)
        }
        Ok(pid) => {
            let _ = close(r);
            Some((pid, w))
        }
        Err(_) => None,
    }
}

/// Touches pages of a 2 GiB mapping until MemFree is under `leave_kb`, then reports on
/// `ready` and sleeps on `wait` (never written); with `leave_kb` 0 it just touches all 2 GiB.
fn hog(leave_kb: u64, ready: i32, wait: i32) -> ! {
    let len = 2048 * MIB;
    let Ok(a) = mmap(0, len, PROT_RW, MAP_PRIVATE_ANON) else {
        exit_now(3)
    };
    for p in 0..len / PAGE {
        // SAFETY: inside the mapping just made.
        unsafe { core::ptr::write_volatile((a + p * PAGE) as *mut u8, 0x77) };
        if leave_kb != 0
            && p % 256 == 0
            && meminfo_kb("MemAvailable").is_some_and(|kb| kb < leave_kb)
        {
            let _ = write(ready, b"r");
            let mut b = [0u8; 1];
            let _ = read(wait, &mut b);
            exit_now(4);
        }
    }
    exit_now(5)
}

fn oom_largest(t: &mut Tester) {
    let Some((by, by_stop)) = spawn_bystander() else {
        return t.check("bystander", false);
    };
    let Ok(ring) = Ring::new(4) else {
        return t.check("io_uring_setup", false);
    };
    let (Ok([ready_r, ready_w]), Ok([wait_r, wait_w])) = (pipe(), pipe()) else {
        return t.check("pipes", false);
    };
    // The hog registers 1 MiB of its memory (filled with 0x5a) in the parent's ring, then
    // fills the machine. The parent maps the range before the fork (and never touches it), so
    // it knows the address fixed reads and writes name.
    let Ok(buf) = mmap(0, MIB, PROT_RW, MAP_PRIVATE_ANON) else {
        return t.check("mmap", false);
    };
    let hog_pid = match fork() {
        Ok(0) => {
            for p in 0..MIB / PAGE {
                // SAFETY: inside `buf`.
                unsafe { core::ptr::write_volatile((buf + p * PAGE) as *mut u8, 0x5a) };
            }
            if io_uring_register_buffers(ring.fd, &[[buf, MIB]]).is_err() {
                exit_now(7);
            }
            hog(24 * 1024, ready_w, wait_r)
        }
        Ok(pid) => pid,
        Err(e) => return t.check_why("fork the hog", false, format_args!("{e:?}")),
    };
    let mut b = [0u8; 1];
    let ready = read(ready_r, &mut b);
    t.eq("the hog filled memory to under 24 MiB free", ready, Ok(1));
    // A small process now needs 48 MiB: its faults find no free frame.
    let small = cowlab_userland::test::in_child(|| {
        let Ok(a) = filled(48 * MIB / PAGE, 0x33) else {
            return 1;
        };
        for p in 0..48 * MIB / PAGE {
            // SAFETY: inside the mapping.
            if unsafe { core::ptr::read_volatile((a + p * PAGE) as *const u8) } != 0x33 {
                return 2;
            }
        }
        0
    });
    t.eq(
        "the small process that ran out of memory completes",
        small,
        0,
    );
    let hog_status = waitpid(hog_pid, 0).map(|(_, s)| s);
    t.eq(
        "the OOM killer killed the hog, the largest (SIGKILL)",
        hog_status,
        Ok(SIGKILL),
    );
    // The hog's registered pages were pinned: they stayed allocated with its bytes, which a
    // fixed write from the registration copies into a memfd.
    let fd = memfd_create(c"oom", 0).unwrap_or(-1);
    let sqe = IoUringSqe {
        opcode: IORING_OP_WRITE_FIXED,
        fd,
        addr: buf as u64,
        len: MIB as u32,
        ..IoUringSqe::default()
    };
    let written = ring.run(sqe).map(|c| c.res);
    let mut page = [0u8; PAGE];
    // The hog wrote the first byte of each page.
    let intact = (0..MIB / PAGE).all(|p| {
        pread(fd, &mut page, (p * PAGE) as u64) == Ok(PAGE)
            && page[0] == 0x5a
            && page[1..].iter().all(|&b| b == 0)
    });
    t.check_why(
        "the pinned pages outlived the killed hog with its bytes (WRITE_FIXED from its registration)",
        written == Ok(MIB as i32) && intact,
        format_args!("write {written:?}, bytes intact: {intact}"),
    );
    let _ = close(fd);
    let _ = close(wait_w);
    let _ = close(ready_w);
    let _ = close(ready_r);
    let _ = close(wait_r);
    ring.close();
    let _ = munmap(buf, MIB);
    let _ = close(by_stop);
    t.eq(
        "the bystander ran throughout with its memory intact",
        waitpid(by, 0).map(|(_, s)| s),
        Ok(0),
    );
}

fn oom_more_than_ram(t: &mut Tester) {
    let Some((by, by_stop)) = spawn_bystander() else {
        return t.check("bystander", false);
    };
    let hog_pid = match fork() {
        Ok(0) => hog(0, -1, -1),
        Ok(pid) => pid,
        Err(e) => return t.check_why("fork the hog", false, format_args!("{e:?}")),
    };
    t.eq(
        "a process touching 2 GiB (more than RAM) is killed by the OOM killer",
        waitpid(hog_pid, 0).map(|(_, s)| s),
        Ok(SIGKILL),
    );
    let _ = close(by_stop);
    t.eq(
        "the bystander kept running",
        waitpid(by, 0).map(|(_, s)| s),
        Ok(0),
    );
}
