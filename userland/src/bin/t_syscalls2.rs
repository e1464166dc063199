//! System-call tests, second part: success and error paths of pwrite64, chdir, readlinkat,
//! gettimeofday, time, clock_nanosleep, set_robust_list, rseq and getrlimit. The answers are
//! Linux's (checked natively on the host too); where cowlab knowingly differs the check branches
//! on `on_cowlab()` and says why.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, nr, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const CHDIR: usize = 80;
const GETTIMEOFDAY: usize = 96;
const GETRLIMIT: usize = 97;
const TIME: usize = 201;
const SET_ROBUST_LIST: usize = 273;
const READLINKAT: usize = 267;
const EBUSY: i32 = 16;
const AT_FDCWD: usize = (-100isize) as usize;
const TIMER_ABSTIME: usize = 1;
/// An address in the kernel half: never valid user memory, on cowlab or Linux.
const KERNEL_ADDR: usize = 0xffff_ffff_8000_0000;

fn sc(n: usize, args: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the tests pass either valid pointers to local buffers or deliberately bad
    // addresses that the kernel must reject with EFAULT.
    unsafe { raw(n, args) }
}

fn realtime() -> [i64; 2] {
    let mut ts = [0i64; 2];
    let _ = sc(nr::CLOCK_GETTIME, [0, ts.as_mut_ptr() as usize, 0, 0, 0, 0]);
    ts
}

/// An empty robust-futex list (`struct robust_list_head`: next, futex_offset, pending); static
/// because the kernel walks it when the process exits.
static ROBUST: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];

/// `struct rseq` (32 bytes, 32-aligned).
#[repr(C, align(32))]
struct Rseq {
    cpu_id_start: u32,
    cpu_id: u32,
    rseq_cs: u64,
    flags: u32,
    pad: [u32; 3],
}

fn main() -> i32 {
    let mut t = Tester::new("t_syscalls2");
    let efault = Err(Errno(errno::EFAULT));
    let ebadf = Err(Errno(errno::EBADF));
    let einval = Err(Errno(errno::EINVAL));
    let cowlab = on_cowlab();

    // pwrite64
    let pwrite = |fd: i32, buf: usize, len: usize, off: i64| {
        sc(nr::PWRITE64, [fd as usize, buf, len, off as usize, 0, 0])
    };
    let data = b"abc";
    let dp = data.as_ptr() as usize;
    let null_w = open(c"/dev/null", 1).unwrap_or(-1);
    t.check("open /dev/null write-only", null_w >= 0);
    t.eq("pwrite64 to /dev/null", pwrite(null_w, dp, 3, 0), Ok(3));
    t.eq(
        "pwrite64 at a large offset",
        pwrite(null_w, dp, 3, 1 << 40),
        Ok(3),
    );
    t.eq("pwrite64 of 0 bytes is 0", pwrite(null_w, dp, 0, 5), Ok(0));
    t.eq(
        "pwrite64 at a negative offset is EINVAL",
        pwrite(null_w, dp, 3, -1),
        einval,
    );
    t.eq(
        "pwrite64 from a kernel address is EFAULT",
        pwrite(null_w, KERNEL_ADDR, 3, 0),
        efault,
    );
    t.eq(
        "pwrite64 to a closed fd is EBADF",
        pwrite(90, dp, 3, 0),
        ebadf,
    );
    let null_r = open(c"/dev/null", 0).unwrap_or(-1);
    t.eq(
        "pwrite64 to a read-only fd is EBADF",
        pwrite(null_r, dp, 3, 0),
        ebadf,
    );
    let me = cowlab_userland::test::sibling("t_syscalls2");
    let mut path = me.clone();
    path.push(0);
    let path = core::ffi::CStr::from_bytes_with_nul(&path).unwrap_or(c"/");
    let elf = open(path, 0).unwrap_or(-1);
    t.check("open this program's file", elf >= 0);
    t.eq(
        "pwrite64 to a read-only regular file is EBADF",
        pwrite(elf, dp, 3, 0),
        ebadf,
    );
    match pipe() {
        Ok([r, w]) => {
            t.eq(
                "pwrite64 to a pipe is ESPIPE",
                pwrite(w, dp, 3, 0),
                Err(Errno(errno::ESPIPE)),
            );
            t.eq(
                "pwrite64 to a pipe's read end is ESPIPE",
                pwrite(r, dp, 3, 0),
                Err(Errno(errno::ESPIPE)),
            );
            let mut buf = [0u8; 4];
            t.eq(
                "and nothing reached the pipe",
                {
                    let _ = close(w);
                    read(r, &mut buf)
                },
                Ok(0),
            );
            let _ = close(r);
        }
        Err(e) => t.check_why("pipe", false, e.0),
    }

    // chdir
    let chdir = |p: &core::ffi::CStr| sc(CHDIR, [p.as_ptr() as usize, 0, 0, 0, 0, 0]);
    t.eq("chdir /", chdir(c"/"), Ok(0));
    let mut cwd = [0u8; 64];
    let got = sc(
        nr::GETCWD,
        [cwd.as_mut_ptr() as usize, cwd.len(), 0, 0, 0, 0],
    );
    t.check_why(
        "getcwd after chdir / is /",
        got.is_ok() && cwd[..2] == *b"/\0",
        format_args!("{got:?}"),
    );
    t.eq("chdir .", chdir(c"."), Ok(0));
    t.eq(
        "chdir to a missing path is ENOENT",
        chdir(c"/no-such-dir-cowlab"),
        Err(Errno(errno::ENOENT)),
    );
    t.eq(
        "chdir to \"\" is ENOENT",
        chdir(c""),
        Err(Errno(errno::ENOENT)),
    );
    t.eq(
        "chdir to a device is ENOTDIR",
        chdir(c"/dev/null"),
        Err(Errno(errno::ENOTDIR)),
    );
    t.eq(
        "chdir to a regular file is ENOTDIR",
        chdir(path),
        Err(Errno(errno::ENOTDIR)),
    );
    t.eq(
        "chdir with a bad pointer is EFAULT",
        sc(CHDIR, [0x30, 0, 0, 0, 0, 0]),
        efault,
    );

    // readlinkat
    let mut lbuf = [0u8; 256];
    let lb = lbuf.as_mut_ptr() as usize;
    let readlinkat =
        |dirfd: usize, p: usize, buf: usize, len: usize| sc(READLINKAT, [dirfd, p, buf, len, 0, 0]);
    t.eq(
        "readlinkat of a non-link is EINVAL",
        readlinkat(AT_FDCWD, c"/".as_ptr() as usize, lb, 256),
        einval,
    );
    t.eq(
        "readlinkat of a regular file is EINVAL",
        readlinkat(AT_FDCWD, path.as_ptr() as usize, lb, 256),
        einval,
    );
    t.eq(
        "readlinkat of a missing path is ENOENT",
        readlinkat(AT_FDCWD, c"/no-such-link-cowlab".as_ptr() as usize, lb, 256),
        Err(Errno(errno::ENOENT)),
    );
    t.eq(
        "readlinkat with a bad path pointer is EFAULT",
        readlinkat(AT_FDCWD, 0x40, lb, 256),
        efault,
    );
    t.eq(
        "readlinkat with size 0 is EINVAL",
        readlinkat(AT_FDCWD, c"/".as_ptr() as usize, lb, 0),
        einval,
    );
    t.eq(
        "readlinkat relative to a non-directory is ENOTDIR",
        readlinkat(null_r as usize, c"x".as_ptr() as usize, lb, 256),
        Err(Errno(errno::ENOTDIR)),
    );
    t.eq(
        "readlinkat relative to a closed fd is EBADF",
        readlinkat(91, c"x".as_ptr() as usize, lb, 256),
        ebadf,
    );
    // /proc/self/exe is a link on cowlab too (/proc/<pid>/exe).
    let n = readlinkat(AT_FDCWD, c"/proc/self/exe".as_ptr() as usize, lb, 256);
    t.check_why(
        "readlinkat /proc/self/exe names a path",
        n.is_ok_and(|n| n > 1 && lbuf[0] == b'/'),
        format_args!("{n:?}"),
    );
    t.check(
        "it ends in this program's name",
        n.is_ok_and(|n| lbuf[..n].ends_with(b"/t_syscalls2")),
    );
    t.eq(
        "readlinkat of a link into a bad buffer is EFAULT",
        readlinkat(
            AT_FDCWD,
            c"/proc/self/exe".as_ptr() as usize,
            KERNEL_ADDR,
            256,
        ),
        efault,
    );

    // gettimeofday and time
    let mut tv = [0i64; 2];
    let before = realtime();
    t.eq(
        "gettimeofday",
        sc(GETTIMEOFDAY, [tv.as_mut_ptr() as usize, 0, 0, 0, 0, 0]),
        Ok(0),
    );
    let after = realtime();
    t.check_why(
        "gettimeofday agrees with CLOCK_REALTIME within a second",
        tv[0] >= before[0] - 1 && tv[0] <= after[0] + 1,
        format_args!("{} vs {}..{}", tv[0], before[0], after[0]),
    );
    t.check_why(
        "tv_usec is below 1000000",
        (0..1_000_000).contains(&tv[1]),
        tv[1],
    );
    t.eq(
        "gettimeofday(NULL, NULL)",
        sc(GETTIMEOFDAY, [0, 0, 0, 0, 0, 0]),
        Ok(0),
    );
    t.eq(
        "gettimeofday to a bad pointer is EFAULT",
        sc(GETTIMEOFDAY, [0x50, 0, 0, 0, 0, 0]),
        efault,
    );
    t.eq(
        "gettimeofday to a kernel address is EFAULT",
        sc(GETTIMEOFDAY, [KERNEL_ADDR, 0, 0, 0, 0, 0]),
        efault,
    );
    let before = realtime();
    let t0 = sc(TIME, [0; 6]);
    let after = realtime();
    t.check_why(
        "time(NULL) agrees with CLOCK_REALTIME within a second",
        t0.is_ok_and(|s| s as i64 >= before[0] - 1 && s as i64 <= after[0] + 1),
        format_args!("{t0:?} vs {}..{}", before[0], after[0]),
    );
    let mut stored: i64 = -1;
    let t1 = sc(TIME, [&mut stored as *mut i64 as usize, 0, 0, 0, 0, 0]);
    t.check_why(
        "time(&t) stores what it returns",
        t1.is_ok_and(|s| s as i64 == stored),
        format_args!("{t1:?} vs {stored}"),
    );
    t.eq(
        "time to a bad pointer is EFAULT",
        sc(TIME, [0x60, 0, 0, 0, 0, 0]),
        efault,
    );

    // clock_nanosleep
    let cns = |clock: usize, flags: usize, ts: &[i64; 2]| {
        sc(
            nr::CLOCK_NANOSLEEP,
            [clock, flags, ts.as_ptr() as usize, 0, 0, 0],
        )
    };
    t.eq(
        "clock_nanosleep with a bad clock is EINVAL",
        cns(100, 0, &[0, 1000]),
        einval,
    );
    t.eq(
        "clock_nanosleep with bad nsec is EINVAL",
        cns(1, 0, &[0, 1_000_000_000]),
        einval,
    );
    t.eq(
        "clock_nanosleep TIMER_ABSTIME with bad nsec is EINVAL",
        cns(1, TIMER_ABSTIME, &[0, -1]),
        einval,
    );
    t.eq(
        "clock_nanosleep with a bad pointer is EFAULT",
        sc(nr::CLOCK_NANOSLEEP, [1, 0, 0x70, 0, 0, 0]),
        efault,
    );
    let a = monotonic_ns();
    t.eq(
        "clock_nanosleep TIMER_ABSTIME in the past (REALTIME)",
        cns(0, TIMER_ABSTIME, &[1, 0]),
        Ok(0),
    );
    t.eq(
        "clock_nanosleep TIMER_ABSTIME in the past (MONOTONIC)",
        cns(1, TIMER_ABSTIME, &[0, 0]),
        Ok(0),
    );
    let b = monotonic_ns();
    t.check_why("and returned at once (< 50 ms)", b - a < 50_000_000, b - a);
    let a = monotonic_ns();
    t.eq(
        "clock_nanosleep 30 ms relative",
        cns(1, 0, &[0, 30_000_000]),
        Ok(0),
    );
    let b = monotonic_ns();
    t.check_why("it lasted at least 30 ms", b - a >= 30_000_000, b - a);
    let now = monotonic_ns() + 30_000_000;
    let target = [(now / 1_000_000_000) as i64, (now % 1_000_000_000) as i64];
    t.eq(
        "clock_nanosleep TIMER_ABSTIME 30 ms ahead",
        cns(1, TIMER_ABSTIME, &target),
        Ok(0),
    );
    let b = monotonic_ns();
    t.check_why(
        "it woke no earlier than the target",
        b >= now,
        now.saturating_sub(b),
    );
    let a = monotonic_ns();
    t.eq(
        "clock_nanosleep REALTIME 20 ms",
        cns(0, 0, &[0, 20_000_000]),
        Ok(0),
    );
    let b = monotonic_ns();
    t.check_why("it lasted at least 20 ms", b - a >= 20_000_000, b - a);

    // set_robust_list
    let head = ROBUST.as_ptr() as usize;
    ROBUST[0].store(head, Ordering::Relaxed);
    t.eq(
        "set_robust_list with len 24",
        sc(SET_ROBUST_LIST, [head, 24, 0, 0, 0, 0]),
        Ok(0),
    );
    t.eq(
        "set_robust_list with len 16 is EINVAL",
        sc(SET_ROBUST_LIST, [head, 16, 0, 0, 0, 0]),
        einval,
    );
    t.eq(
        "set_robust_list with len 0 is EINVAL",
        sc(SET_ROBUST_LIST, [head, 0, 0, 0, 0, 0]),
        einval,
    );

    // rseq
    let rs = Rseq {
        cpu_id_start: 0,
        cpu_id: u32::MAX - 1, // RSEQ_CPU_ID_UNINITIALIZED
        rseq_cs: 0,
        flags: 0,
        pad: [0; 3],
    };
    let rp = &rs as *const Rseq as usize;
    const SIG: usize = 0x5305_3053;
    let rseq = |addr: usize, len: usize, flags: usize| sc(nr::RSEQ, [addr, len, flags, SIG, 0, 0]);
    if cowlab {
        // cowlab does not implement rseq (documented): every call is ENOSYS, which is what
        // glibc and musl expect from a kernel without it (they then run without rseq).
        t.eq(
            "rseq is ENOSYS on cowlab",
            rseq(rp, 32, 0),
            Err(Errno(errno::ENOSYS)),
        );
        t.eq(
            "rseq with a bad length is ENOSYS on cowlab",
            rseq(rp, 16, 0),
            Err(Errno(errno::ENOSYS)),
        );
    } else {
        // Linux: a bad length or flag is EINVAL; registering works once, then EBUSY; the same
        // area and signature unregister it.
        t.eq("rseq with a bad length is EINVAL", rseq(rp, 16, 0), einval);
        t.eq(
            "rseq with a misaligned area is EINVAL",
            rseq(rp + 4, 32, 0),
            einval,
        );
        t.eq("rseq registers", rseq(rp, 32, 0), Ok(0));
        // SAFETY: `rs` is live; the kernel updates it behind the compiler's back.
        let cpu = unsafe { core::ptr::read_volatile(&rs.cpu_id) };
        t.check_why("rseq filled in cpu_id", cpu < u32::MAX - 1, cpu);
        t.eq("rseq twice is EBUSY", rseq(rp, 32, 0), Err(Errno(EBUSY)));
        t.eq("rseq unregisters", rseq(rp, 32, 1), Ok(0));
    }

    // getrlimit
    let mut lim = [0u64; 2];
    t.eq(
        "getrlimit RLIMIT_STACK",
        sc(GETRLIMIT, [3, lim.as_mut_ptr() as usize, 0, 0, 0, 0]),
        Ok(0),
    );
    t.check_why(
        "the stack limit is positive and cur <= max",
        lim[0] > 0 && lim[0] <= lim[1],
        format_args!("{lim:?}"),
    );
    let mut nofile = [0u64; 2];
    let mut pr = [1u64; 2];
    let _ = sc(GETRLIMIT, [7, nofile.as_mut_ptr() as usize, 0, 0, 0, 0]);
    let _ = sc(nr::PRLIMIT64, [0, 7, 0, pr.as_mut_ptr() as usize, 0, 0]);
    t.eq("getrlimit RLIMIT_NOFILE agrees with prlimit64", nofile, pr);
    t.eq(
        "getrlimit of a bad resource is EINVAL",
        sc(GETRLIMIT, [16, lim.as_mut_ptr() as usize, 0, 0, 0, 0]),
        einval,
    );
    t.eq(
        "getrlimit to a bad pointer is EFAULT",
        sc(GETRLIMIT, [3, 0x80, 0, 0, 0, 0]),
        efault,
    );

    for fd in [null_w, null_r, elf] {
        let _ = close(fd);
    }
    edge_values(&mut t);
    t.finish()
}

const FUTEX: usize = 202;
const FUTEX_WAIT: usize = 0;
const FUTEX_WAIT_BITSET: usize = 9;
const FUTEX_CLOCK_REALTIME: usize = 256;
const ETIMEDOUT: i32 = 110;
const EAGAIN: i32 = 11;

/// User-supplied numbers at their extremes (the audit of proc/time arithmetic): pid_t
/// arguments are ints (the upper half ignored, INT_MIN is ESRCH), timeouts of i64::MAX seconds
/// saturate instead of wrapping, and a sleep that long is still killable.
fn edge_values(t: &mut Tester) {
    let int_min = i32::MIN as isize as usize;
    t.eq(
        "wait4(INT_MIN) is ESRCH",
        sc(nr::WAIT4, [int_min, 0, 0, 0, 0, 0]),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "kill(INT_MIN, 0) is ESRCH",
        sc(nr::KILL, [int_min, 0, 0, 0, 0, 0]),
        Err(Errno(errno::ESRCH)),
    );
    let me = cowlab_userland::sys::getpid() as usize;
    t.eq(
        "kill((1 << 32) + getpid(), 0): the pid_t is the low half",
        sc(nr::KILL, [(1 << 32) + me, 0, 0, 0, 0, 0]),
        Ok(0),
    );
    match fork() {
        Ok(0) => exit_now(3),
        Ok(pid) => {
            let mut status = 0i32;
            let r = sc(
                nr::WAIT4,
                [
                    (1 << 32) + pid as usize,
                    &mut status as *mut i32 as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            );
            t.eq(
                "wait4((1 << 32) + pid) reaps pid",
                (r, status),
                (Ok(pid as usize), 3 << 8),
            );
        }
        Err(e) => t.check_why("fork", false, e.0),
    }
    let word = AtomicUsize::new(1);
    let addr = word.as_ptr() as usize;
    let huge = [i64::MAX, 999_999_999];
    t.eq(
        "FUTEX_WAIT_BITSET until i64::MAX s on a changed word is EAGAIN",
        sc(
            FUTEX,
            [addr, FUTEX_WAIT_BITSET, 0, huge.as_ptr() as usize, 0, !0],
        ),
        Err(Errno(EAGAIN)),
    );
    t.eq(
        "FUTEX_WAIT for i64::MAX s on a changed word is EAGAIN",
        sc(FUTEX, [addr, FUTEX_WAIT, 0, huge.as_ptr() as usize, 0, 0]),
        Err(Errno(EAGAIN)),
    );
    let epoch = [0i64, 0];
    t.eq(
        "FUTEX_WAIT_BITSET|CLOCK_REALTIME until the epoch times out at once",
        sc(
            FUTEX,
            [
                addr,
                FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME,
                1,
                epoch.as_ptr() as usize,
                0,
                !0,
            ],
        ),
        Err(Errno(ETIMEDOUT)),
    );
    let negative = [-1i64, 0];
    t.eq(
        "FUTEX_WAIT with a negative timeout is EINVAL",
        sc(
            FUTEX,
            [addr, FUTEX_WAIT, 1, negative.as_ptr() as usize, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );
    let forever = [i64::MAX, 999_999_999];
    match fork() {
        Ok(0) => {
            let _ = sc(nr::NANOSLEEP, [forever.as_ptr() as usize, 0, 0, 0, 0, 0]);
            exit_now(1);
        }
        Ok(pid) => {
            let _ = sleep_ms(30);
            let _ = kill(pid, 9);
            let status = waitpid(pid, 0).map(|r| r.1);
            t.check_why(
                "nanosleep of i64::MAX s sleeps until killed",
                status.is_ok_and(|s| wifsignaled(s) && wtermsig(s) == 9),
                format_args!("{status:?}"),
            );
        }
        Err(e) => t.check_why("fork", false, e.0),
    }
}
