//! Resource limits on the Linux ABI: `getrlimit`, `setrlimit` and `prlimit64` (errnos and their
//! order, another process's limits), inheritance across fork and exec, and what each enforced
//! limit does: `RLIMIT_NOFILE` (EMFILE, dup2's EBADF, F_DUPFD's EINVAL), `RLIMIT_AS` (mmap,
//! MAP_FIXED counted once, mremap and brk), `RLIMIT_STACK` (the stack's size, exec's argument
//! space: E2BIG) and `RLIMIT_NPROC` (fork's EAGAIN).
//!
//! Runs on the host Linux too. Root bypasses `RLIMIT_NPROC` (`CAP_SYS_RESOURCE`, `INIT_USER`)
//! and `RLIMIT_MEMLOCK` (`CAP_IPC_LOCK`) on both systems, so those checks run in a child that
//! first drops to an unprivileged uid of its own (`t_cred_caps` checks the bypass itself).
//! Cowlab's default table (Linux's `INIT_RLIMITS`) is checked only on cowlab: a host's
//! login session has changed its own.
//!
//! Each case runs in a child (the limits it sets die with it) that exits with 0 or the number
//! of the step that failed.

#![no_std]
#![no_main]

use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::process::CArray;
use cowlab_userland::rlimit::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, on_cowlab, sibling, Tester};

cowlab_userland::entry!(main);

const EPERM: Errno = Errno(1);
const ESRCH: Errno = Errno(3);
const E2BIG: Errno = Errno(7);
const EBADF: Errno = Errno(9);
const EAGAIN: Errno = Errno(11);
const ENOMEM: Errno = Errno(12);
const EFAULT: Errno = Errno(14);
const EINVAL: Errno = Errno(22);
const EMFILE: Errno = Errno(24);
const F_DUPFD: u32 = 0;
const MIB: usize = 1 << 20;
const PROT_RW: u32 = 3;
const MAP_PRIVATE_ANON: u32 = 0x22;
const MAP_FIXED: u32 = 0x10;
const MREMAP_MAYMOVE: u32 = 1;
const GETEUID: usize = 107;
/// An address no process maps (the NULL page).
const BAD_PTR: usize = 0x80;

fn main() -> i32 {
    let mut args = cowlab_userland::args::args().skip(1);
    if let Some(mode) = args.next() {
        return helper(mode.to_bytes(), args);
    }
    let mut t = Tester::new("t_rlimit");
    if on_cowlab() {
        defaults(&mut t);
    }
    errnos(&mut t);
    inheritance(&mut t);
    nofile(&mut t);
    address_space(&mut t);
    stack(&mut t);
    nproc(&mut t);
    memlock(&mut t);
    t.finish()
}

/// The modes this program is exec'd in by the checks below.
fn helper(mode: &[u8], mut args: impl Iterator<Item = &'static CStr>) -> i32 {
    let mut num = || parse(args.next().map_or(b"", CStr::to_bytes));
    match mode {
        // expect RESOURCE CUR MAX: exit 0 if getrlimit says so.
        b"expect" => {
            let (res, cur, max) = (num(), num(), num());
            i32::from(getrlimit(res as u32) != Ok(Rlimit { cur, max }))
        }
        // probe KB: write one byte in every page from the stack pointer down KB KiB.
        b"probe" => {
            let kb = num() as usize;
            let marker = 0u8;
            let sp = core::ptr::addr_of!(marker) as usize;
            let mut at = sp & !4095;
            while at > sp - kb * 1024 {
                at -= 4096;
                // SAFETY: below the stack pointer, in (or beyond) the stack mapping: either the
                // stack grows there or the process gets SIGSEGV, which is what is tested.
                unsafe { core::ptr::write_volatile(at as *mut u8, 1) };
            }
            0
        }
        b"noop" => 0,
        _ => 100,
    }
}

fn parse(s: &[u8]) -> u64 {
    if s == b"inf" {
        return RLIM_INFINITY;
    }
    s.iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d.wrapping_sub(b'0')))
}

fn raw3(n: usize, a: usize, b: usize, c: usize) -> Result<usize, Errno> {
    // SAFETY: the callers pass integers, live `struct rlimit`s or BAD_PTR, which the kernel
    // must refuse with EFAULT.
    unsafe { raw(n, [a, b, c, 0, 0, 0]) }
}

fn prlimit_raw(pid: i32, res: usize, new: usize, old: usize) -> Result<usize, Errno> {
    // SAFETY: as `raw3`.
    unsafe { raw(PRLIMIT64, [pid as usize, res, new, old, 0, 0]) }
}

/// Runs this program again in a child as `argv` with extra environment strings `env`; the wait
/// status, or `-errno` if exec failed (the child reports it as its exit status).
fn run_self(argv: &[&[u8]], env: &[&[u8]]) -> i32 {
    let path = sibling("t_rlimit");
    let mut full: alloc::vec::Vec<&[u8]> = alloc::vec![path.as_slice()];
    full.extend_from_slice(argv);
    let args = CArray::new(full.iter().copied());
    let envs = CArray::new(env.iter().copied());
    let pathz = CArray::new([path.as_slice()]);
    // SAFETY: `pathz` holds one NUL-terminated string.
    let cpath = unsafe { CStr::from_ptr(pathz.as_slice()[0].cast()) };
    match fork() {
        Ok(0) => exit_now(200 + execve(cpath, args.as_slice(), envs.as_slice()).0),
        Ok(pid) => waitpid(pid, 0).map_or(-1, |(_, s)| {
            if wifexited(s) && wexitstatus(s) >= 200 {
                -(wexitstatus(s) - 200)
            } else {
                s
            }
        }),
        Err(e) => -1000 - e.0,
    }
}

extern crate alloc;

/// cowlab starts every process with Linux's `INIT_RLIMITS` (and `RLIMIT_NPROC`,
/// `RLIMIT_SIGPENDING` from its thread budget).
fn defaults(t: &mut Tester) {
    let inf = Rlimit {
        cur: RLIM_INFINITY,
        max: RLIM_INFINITY,
    };
    let want = |res: u32| match res {
        RLIMIT_STACK => Rlimit {
            cur: 8 << 20,
            max: RLIM_INFINITY,
        },
        RLIMIT_CORE => Rlimit {
            cur: 0,
            max: RLIM_INFINITY,
        },
        RLIMIT_NPROC | RLIMIT_SIGPENDING => Rlimit { cur: 128, max: 128 },
        RLIMIT_NOFILE => Rlimit {
            cur: 1024,
            max: 4096,
        },
        RLIMIT_MEMLOCK => Rlimit {
            cur: 8 << 20,
            max: 8 << 20,
        },
        RLIMIT_MSGQUEUE => Rlimit {
            cur: 819_200,
            max: 819_200,
        },
        RLIMIT_NICE | RLIMIT_RTPRIO => Rlimit { cur: 0, max: 0 },
        _ => inf,
    };
    let wrong: alloc::vec::Vec<(u32, Result<Rlimit, Errno>)> = (0..RLIM_NLIMITS)
        .map(|r| (r, getrlimit(r)))
        .filter(|&(r, got)| got != Ok(want(r)))
        .collect();
    t.check_why(
        "the sixteen limits start at Linux's INIT_RLIMITS",
        wrong.is_empty(),
        format_args!("{wrong:?}"),
    );
}

fn errnos(t: &mut Tester) {
    let mut r = Rlimit::default();
    let rp = &mut r as *mut Rlimit as usize;
    t.eq(
        "getrlimit(RLIM_NLIMITS) is EINVAL",
        raw3(GETRLIMIT, 16, rp, 0),
        Err(EINVAL),
    );
    t.eq(
        "getrlimit to a bad pointer is EFAULT",
        raw3(GETRLIMIT, 3, BAD_PTR, 0),
        Err(EFAULT),
    );
    t.eq(
        "setrlimit from a bad pointer is EFAULT",
        raw3(SETRLIMIT, 7, BAD_PTR, 0),
        Err(EFAULT),
    );
    t.eq(
        "setrlimit reads before it checks the resource (EFAULT, not EINVAL)",
        raw3(SETRLIMIT, 99, BAD_PTR, 0),
        Err(EFAULT),
    );
    let status = in_child(|| {
        let nofile = getrlimit(RLIMIT_NOFILE).unwrap_or_default();
        let steps: [(bool, i32); 9] = [
            (setrlimit(16, nofile) == Err(EINVAL), 1),
            (
                setrlimit(RLIMIT_NOFILE, Rlimit { cur: 10, max: 5 }) == Err(EINVAL),
                2,
            ),
            (
                setrlimit(RLIMIT_NOFILE, Rlimit { cur: 5, max: 5 }).is_ok()
                    && getrlimit(RLIMIT_NOFILE) == Ok(Rlimit { cur: 5, max: 5 }),
                3,
            ),
            // Above nr_open even root gets EPERM.
            (
                setrlimit(
                    RLIMIT_NOFILE,
                    Rlimit {
                        cur: 5,
                        max: 1 << 40,
                    },
                ) == Err(EPERM),
                4,
            ),
            (prlimit(0, 16, None) == Err(EINVAL), 5),
            // The process is looked up before the resource is checked.
            (prlimit(i32::MAX, 99, None) == Err(ESRCH), 6),
            (prlimit(-1, RLIMIT_NOFILE, None) == Err(ESRCH), 7),
            (
                prlimit_raw(0, RLIMIT_NOFILE as usize, BAD_PTR, 0) == Err(EFAULT),
                8,
            ),
            (
                prlimit(0, RLIMIT_NOFILE, None) == getrlimit(RLIMIT_NOFILE),
                9,
            ),
        ];
        steps.iter().find(|s| !s.0).map_or(0, |s| s.1)
    });
    t.eq(
        "setrlimit/prlimit64: EINVAL, EPERM over nr_open, ESRCH, EFAULT, values read back",
        status,
        0,
    );
    // prlimit64 writes the old value after changing the limit: a bad `old` is EFAULT with the
    // new limit in force.
    let status = in_child(|| {
        let new = Rlimit { cur: 77, max: 300 };
        let r = prlimit_raw(
            0,
            RLIMIT_NOFILE as usize,
            &new as *const Rlimit as usize,
            BAD_PTR,
        );
        if r != Err(EFAULT) {
            return 1;
        }
        i32::from(getrlimit(RLIMIT_NOFILE) != Ok(new)) * 2
    });
    t.eq(
        "prlimit64 with a bad old pointer: EFAULT, and the new limit set",
        status,
        0,
    );
    // Raising a hard limit needs CAP_SYS_RESOURCE, which every cowlab process has; a host
    // root may lack it (containers drop it), so this is cowlab's check only.
    if on_cowlab() {
        let status = in_child(|| {
            let lowered = setrlimit(RLIMIT_NOFILE, Rlimit { cur: 64, max: 128 });
            let raised = setrlimit(RLIMIT_NOFILE, Rlimit { cur: 64, max: 2048 });
            i32::from(lowered.is_err()) + 2 * i32::from(raised.is_err())
        });
        t.eq(
            "root (CAP_SYS_RESOURCE) may raise its hard limit again",
            status,
            0,
        );
    }
}

/// fork copies the limits, exec keeps them, and prlimit64 changes another process's.
fn inheritance(t: &mut Tester) {
    let status = in_child(|| {
        if setrlimit(RLIMIT_NOFILE, Rlimit { cur: 100, max: 200 }).is_err() {
            return 1;
        }
        let forked =
            in_child(|| i32::from(getrlimit(RLIMIT_NOFILE) != Ok(Rlimit { cur: 100, max: 200 })));
        if forked != 0 {
            return 2;
        }
        if run_self(&[b"expect", b"7", b"100", b"200"], &[]) != 0 {
            return 3;
        }
        // Another process's limit: the child waits until the parent has changed it.
        let Ok([rfd, wfd]) = pipe() else {
            return 4;
        };
        let child = match fork() {
            Ok(0) => {
                let mut b = [0u8; 1];
                let _ = read(rfd, &mut b);
                exit_now(i32::from(
                    getrlimit(RLIMIT_NOFILE) != Ok(Rlimit { cur: 50, max: 150 }),
                ))
            }
            Ok(pid) => pid,
            Err(_) => return 5,
        };
        let old = prlimit(child, RLIMIT_NOFILE, Some(Rlimit { cur: 50, max: 150 }));
        let _ = write(wfd, b"x");
        let status = waitpid(child, 0).map_or(-1, |(_, s)| s);
        if old != Ok(Rlimit { cur: 100, max: 200 }) {
            return 6;
        }
        if status != 0 {
            return 7;
        }
        // Ours is unchanged.
        if getrlimit(RLIMIT_NOFILE) != Ok(Rlimit { cur: 100, max: 200 }) {
            return 8;
        }
        // A zombie not yet reaped still answers with its limits.
        let zombie = match fork() {
            Ok(0) => {
                let _ = setrlimit(RLIMIT_NOFILE, Rlimit { cur: 33, max: 44 });
                exit_now(0)
            }
            Ok(pid) => pid,
            Err(_) => return 9,
        };
        let _ = sleep_ms(200);
        let seen = prlimit(zombie, RLIMIT_NOFILE, None);
        let _ = waitpid(zombie, 0);
        if seen != Ok(Rlimit { cur: 33, max: 44 }) {
            return 10;
        }
        // Once reaped it is gone.
        i32::from(prlimit(zombie, RLIMIT_NOFILE, None) != Err(ESRCH)) * 11
    });
    t.eq(
        "limits: copied by fork, kept by exec, prlimit64 on another pid (returns its old limit), on a zombie, ESRCH once reaped",
        status,
        0,
    );
}

fn nofile(t: &mut Tester) {
    let status = in_child(|| {
        if set_soft(RLIMIT_NOFILE, 20).is_err() {
            return 1;
        }
        let (mut first, mut last) = (-1, -1);
        let refused = loop {
            match open(c"/dev/null", O_RDONLY) {
                Ok(fd) => last = fd,
                Err(e) => break e,
            }
            if first < 0 {
                first = last;
            }
            if last > 100 {
                return 2;
            }
        };
        if refused != EMFILE || last != 19 {
            return 3;
        }
        if dup2(0, 20) != Err(EBADF) {
            return 4;
        }
        if fcntl(0, F_DUPFD, 20) != Err(EINVAL) {
            return 5;
        }
        if fcntl(0, F_DUPFD, 5) != Err(EMFILE) || pipe() != Err(EMFILE) {
            return 6;
        }
        // Within the limit dup2 replaces (with a /dev/null opened above: descriptors this
        // process inherited may be anything).
        if dup2(first, 19) != Ok(19) {
            return 7;
        }
        // Raising the soft limit makes room; lowering it below the open descriptors is
        // allowed and keeps them usable.
        if set_soft(RLIMIT_NOFILE, 22).is_err() || pipe() != Ok([20, 21]) {
            return 8;
        }
        if set_soft(RLIMIT_NOFILE, 5).is_err() || open(c"/dev/null", O_RDONLY) != Err(EMFILE) {
            return 9;
        }
        let mut b = [0u8; 1];
        i32::from(read(19, &mut b) != Ok(0) || write(21, b"y") != Ok(1)) * 10
    });
    t.eq(
        "RLIMIT_NOFILE 20: fd 19 is the last, then EMFILE; dup2 past it EBADF, F_DUPFD EINVAL; raising and lowering",
        status,
        0,
    );
}

fn map(len: usize) -> Result<usize, Errno> {
    mmap(0, len, PROT_RW, MAP_PRIVATE_ANON)
}

/// `RLIMIT_AS` 64 MiB: 1 MiB mappings until ENOMEM, then the edges of `may_expand_vm`.
fn address_space(t: &mut Tester) {
    let status = in_child(|| {
        let mut chunks = [0usize; 128];
        if set_soft(RLIMIT_AS, 64 << 20).is_err() {
            return 1;
        }
        let mut n = 0;
        let refused = loop {
            match map(MIB) {
                Ok(a) => {
                    chunks[n] = a;
                    n += 1;
                }
                Err(e) => break e,
            }
            if n == chunks.len() {
                return 2;
            }
        };
        // The program, its stack and heap use some of the 64 MiB (cowlab maps an 8 MiB
        // stack at exec; Linux grows it).
        if refused != ENOMEM || !(40..64).contains(&n) {
            return 3;
        }
        // Replacing a mapping with MAP_FIXED counts it once.
        if mmap(chunks[0], MIB, PROT_RW, MAP_PRIVATE_ANON | MAP_FIXED) != Ok(chunks[0]) {
            return 4;
        }
        if mremap(chunks[1], MIB, 16 * MIB, MREMAP_MAYMOVE) != Err(ENOMEM) {
            return 5;
        }
        let cur = brk(0);
        if brk(cur + 16 * MIB) != cur {
            return 6;
        }
        if munmap(chunks[2], MIB).is_err() || map(MIB).is_err() {
            return 7;
        }
        // Back to unlimited: the same requests succeed.
        if set_soft(RLIMIT_AS, RLIM_INFINITY).is_err() {
            return 8;
        }
        i32::from(mremap(chunks[1], MIB, 16 * MIB, MREMAP_MAYMOVE).is_err()) * 9
    });
    t.eq(
        "RLIMIT_AS 64 MiB: mmap ENOMEM near it, MAP_FIXED replacement counted once, mremap and brk refused, munmap makes room",
        status,
        0,
    );
}

/// The stack may grow to `RLIMIT_STACK` and no further; exec's strings may use a quarter of it
/// (at least 128 KiB): 200 KiB of strings is E2BIG under a 256 KiB limit, fine under 8 MiB.
fn stack(t: &mut Tester) {
    let status = in_child(|| {
        if set_soft(RLIMIT_STACK, MIB as u64).is_err() {
            return 1;
        }
        let small = run_self(&[b"probe", b"512"], &[]);
        let large = run_self(&[b"probe", b"2048"], &[]);
        if small != 0 {
            return 2;
        }
        // SIGSEGV (11), not an exit.
        if large & 0x7f != 11 {
            return 3;
        }
        0
    });
    t.eq(
        "RLIMIT_STACK 1 MiB: the stack grows 512 KiB, 2 MiB is SIGSEGV",
        status,
        0,
    );
    // 100 KiB of arguments and 100 KiB of environment (each array within what cowlab's
    // execve reads, 128 KiB).
    let big = alloc::vec![b'e'; 4000];
    let strings: alloc::vec::Vec<&[u8]> = (0..25).map(|_| big.as_slice()).collect();
    let mut argv: alloc::vec::Vec<&[u8]> = alloc::vec![b"noop".as_slice()];
    argv.extend_from_slice(&strings);
    let status = in_child(|| {
        if set_soft(RLIMIT_STACK, 256 << 10).is_err() {
            return 1;
        }
        if run_self(&argv, &strings) != -E2BIG.0 {
            return 2;
        }
        if set_soft(RLIMIT_STACK, 8 << 20).is_err() {
            return 3;
        }
        i32::from(run_self(&argv, &strings) != 0) * 4
    });
    t.eq(
        "exec with 200 KiB of strings: E2BIG under RLIMIT_STACK 256 KiB, runs under 8 MiB",
        status,
        0,
    );
    // A raised RLIMIT_STACK raises the argument space with it (a quarter, up to 6 MiB): 3 MiB
    // of environment (24 strings, each under MAX_ARG_STRLEN) is E2BIG under 8 MiB and runs
    // under 16 MiB; a fixed 2 MiB ARG_MAX would refuse both.
    let long = alloc::vec![b'f'; 128_000];
    let env: alloc::vec::Vec<&[u8]> = (0..24).map(|_| long.as_slice()).collect();
    let status = in_child(|| {
        if set_soft(RLIMIT_STACK, 8 << 20).is_err() {
            return 1;
        }
        if run_self(&[b"noop"], &env) != -E2BIG.0 {
            return 2;
        }
        if set_soft(RLIMIT_STACK, 16 << 20).is_err() {
            return 3;
        }
        i32::from(run_self(&[b"noop"], &env) != 0) * 4
    });
    t.eq(
        "exec with 3 MiB of environment: E2BIG under RLIMIT_STACK 8 MiB, runs under 16 MiB",
        status,
        0,
    );
}

/// A uid no other process has (`RLIMIT_NPROC` counts the tasks of the real uid): this
/// test's pid above 40000.
fn private_uid() -> u32 {
    40000 + cowlab_userland::sys::getpid() as u32 % 20000
}

/// In a child: as root, drop to [`private_uid`] (root bypasses the limits checked next).
fn unprivileged() -> bool {
    let euid = raw3(GETEUID, 0, 0, 0).unwrap_or(1);
    euid != 0 || cowlab_userland::cred::drop_to(private_uid(), private_uid()).is_ok()
}

fn nproc(t: &mut Tester) {
    let status = in_child(|| {
        if !unprivileged() {
            return 4;
        }
        if setrlimit(RLIMIT_NPROC, Rlimit { cur: 1, max: 1 }).is_err() {
            return 1;
        }
        match fork() {
            Ok(0) => exit_now(0),
            Ok(pid) => {
                let _ = waitpid(pid, 0);
                2
            }
            Err(EAGAIN) => 0,
            Err(_) => 3,
        }
    });
    t.eq("RLIMIT_NPROC 1: fork is EAGAIN", status, 0);
}

const MLOCK: usize = 149;
const MUNLOCK: usize = 150;
const MLOCKALL: usize = 151;
const MUNLOCKALL: usize = 152;
const MLOCK2: usize = 325;

/// Whether this process has `CAP_IPC_LOCK` (bit 14 of `CapEff` in `/proc/self/status`), which
/// bypasses `RLIMIT_MEMLOCK` on Linux (a host that keeps capabilities past setuid). cowlab
/// shows no `CapEff`: an unprivileged process there has none.
fn has_cap_ipc_lock() -> bool {
    let mut buf = [0u8; 4096];
    let Some(n) = read_file(c"/proc/self/status", &mut buf) else {
        return false;
    };
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// `RLIMIT_MEMLOCK` 64 KiB (16 pages) and mlock: populated at once (touching the pages then
/// takes no fault), ENOMEM past the limit or over a hole, EPERM with a limit of 0, EINVAL for
/// bad flags, and locks are not inherited by fork.
fn memlock(t: &mut Tester) {
    let status = in_child(|| {
        if !unprivileged() {
            return 17;
        }
        let enforced = !has_cap_ipc_lock();
        let lim = Rlimit {
            cur: 64 << 10,
            max: 64 << 10,
        };
        if setrlimit(RLIMIT_MEMLOCK, lim).is_err() {
            return 1;
        }
        let Ok(a) = map(64 * 4096) else {
            return 2;
        };
        if raw3(MLOCK, a, 16 * 4096, 0) != Ok(0) {
            return 3;
        }
        let before = minflt(0);
        for p in 0..16 {
            // SAFETY: inside the mapping.
            unsafe { core::ptr::write_volatile((a + p * 4096) as *mut u8, 1) };
        }
        if minflt(0) != before {
            return 4;
        }
        // One page more than the limit; relocking what is locked is free.
        if enforced && raw3(MLOCK, a + 16 * 4096, 4096, 0) != Err(ENOMEM) {
            return 5;
        }
        if raw3(MLOCK, a, 16 * 4096, 0) != Ok(0) {
            return 6;
        }
        if raw3(MLOCK2, a + 16 * 4096, 4096, 2) != Err(EINVAL) {
            return 7;
        }
        // Locks belong to the address space: a fork child starts with none.
        let child = in_child(|| i32::from(raw3(MLOCK, a + 32 * 4096, 16 * 4096, 0) != Ok(0)));
        if child != 0 {
            return 8;
        }
        if raw3(MUNLOCK, a, 16 * 4096, 0) != Ok(0) {
            return 9;
        }
        if raw3(MLOCK2, a + 16 * 4096, 16 * 4096, 1) != Ok(0) {
            return 10;
        }
        let _ = munmap(a + 48 * 4096, 4096);
        if raw3(MLOCK, a + 40 * 4096, 16 * 4096, 0) != Err(ENOMEM) {
            return 11;
        }
        if raw3(MLOCKALL, 0, 0, 0) != Err(EINVAL) || raw3(MLOCKALL, 4, 0, 0) != Err(EINVAL) {
            return 12;
        }
        // The whole address space is more than 64 KiB.
        if enforced && raw3(MLOCKALL, 1, 0, 0) != Err(ENOMEM) {
            return 13;
        }
        if raw3(MUNLOCKALL, 0, 0, 0) != Ok(0) {
            return 14;
        }
        if setrlimit(RLIMIT_MEMLOCK, Rlimit { cur: 0, max: 0 }).is_err() {
            return 15;
        }
        i32::from(enforced && raw3(MLOCK, a, 4096, 0) != Err(EPERM)) * 16
    });
    t.eq(
        "mlock under RLIMIT_MEMLOCK 64 KiB: populated, ENOMEM past it or over a hole, EINVAL flags, not inherited, EPERM at 0",
        status,
        0,
    );
}
