//! The `int`-argument audit (issue 13): every system call argument of C type `int`, `unsigned
//! int`, `pid_t`, `clockid_t`, `umode_t` or a file descriptor uses only the low 32 bits of its
//! register. Each row makes one call three ways: with the value sign-extended (as a C compiler
//! passes an `int` in a 64-bit register), zero-extended (as glibc's 32-bit moves pass `-1` and
//! `AT_FDCWD`), and with garbage in the upper half; all three must give the same result, and
//! the clean one must succeed. The same table runs on the host Linux.
#![no_std]
#![no_main]

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, Ordering};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

/// The register value of a 32-bit argument `v` in one of the three modes.
type Arg<'a> = &'a dyn Fn(i32) -> usize;

const GARBAGE: usize = 0xdead_beef << 32;
const AT_FDCWD: i32 = -100;

fn sc(n: usize, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the rows pass valid pointers to local buffers and NUL-terminated paths.
    unsafe { raw(n, a) }
}

struct Fx {
    file: i32,
    pipe: [i32; 2],
    memfd: i32,
}

/// Whether the files live in `/` (cowlab's writable ext2 root, where chmod and utimensat
/// work) rather than `/tmp` (the host, or a cowlab booted from the read-only ramdisk).
static IN_ROOT: AtomicBool = AtomicBool::new(false);

fn pick(root: &'static CStr, tmp: &'static CStr) -> &'static CStr {
    if IN_ROOT.load(Ordering::Relaxed) {
        root
    } else {
        tmp
    }
}

fn file() -> &'static CStr {
    pick(c"/t_abi_int.file", c"/tmp/t_abi_int.file")
}

fn file2() -> &'static CStr {
    pick(c"/t_abi_int.two", c"/tmp/t_abi_int.two")
}

fn dir() -> &'static CStr {
    pick(c"/t_abi_int.dir", c"/tmp/t_abi_int.dir")
}

type Row = (&'static str, fn(Arg, &Fx) -> Result<usize, Errno>);

fn p<T>(x: &T) -> usize {
    x as *const T as usize
}

fn pm<T>(x: &mut T) -> usize {
    x as *mut T as usize
}

/// Closes a descriptor a call returned, so the next mode gets the same number.
fn fd_result(r: Result<usize, Errno>) -> Result<usize, Errno> {
    if let Ok(fd) = r {
        let _ = close(fd as i32);
    }
    r
}

const ROWS: &[Row] = &[
    ("read(fd)", |m, f| sc(0, [m(f.file), 0, 0, 0, 0, 0])),
    ("write(fd)", |m, f| sc(1, [m(f.file), 0, 0, 0, 0, 0])),
    ("close(fd)", |m, f| {
        let fd = dup(f.file)?;
        sc(3, [m(fd), 0, 0, 0, 0, 0])
    }),
    ("fstat(fd)", |m, f| {
        let mut st = [0u8; 144];
        sc(5, [m(f.file), pm(&mut st), 0, 0, 0, 0])
    }),
    ("lseek(fd, whence)", |m, f| {
        sc(8, [m(f.file), 0, m(0), 0, 0, 0])
    }),
    ("mmap(fd)", |m, f| {
        let r = sc(9, [0, 4096, 1, 1, m(f.memfd), 0]);
        if let Ok(a) = r {
            let _ = munmap(a, 4096);
        }
        r.map(|_| 0)
    }),
    ("rt_sigaction(sig)", |m, _| {
        let mut old = [0u64; 4];
        sc(13, [m(10), 0, pm(&mut old), 8, 0, 0])
    }),
    ("rt_sigprocmask(how)", |m, _| {
        let mut old = 0u64;
        sc(14, [m(0), 0, pm(&mut old), 8, 0, 0])
    }),
    ("ioctl(fd, cmd) TCGETS on a file", |m, f| {
        // ENOTTY, not EBADF: the descriptor and the command are read as 32 bits.
        let mut termios = [0u8; 60];
        sc(16, [m(f.file), m(0x5401), pm(&mut termios), 0, 0, 0])
    }),
    ("pread64(fd)", |m, f| {
        let mut b = [0u8; 4];
        sc(17, [m(f.file), pm(&mut b), 4, 0, 0, 0])
    }),
    ("pwrite64(fd)", |m, f| {
        sc(18, [m(f.file), p(b"abcd"), 4, 0, 0, 0])
    }),
    ("readv(fd)", |m, f| {
        let mut b = [0u8; 4];
        let iov = [pm(&mut b), 4];
        lseek(f.file, 0, 0)?;
        sc(19, [m(f.file), p(&iov), 1, 0, 0, 0])
    }),
    ("writev(fd)", |m, f| {
        let iov = [p(b"xy"), 2];
        sc(20, [m(f.pipe[1]), p(&iov), 1, 0, 0, 0])
    }),
    ("access(mode)", |m, _| {
        sc(21, [file().as_ptr() as usize, m(4), 0, 0, 0, 0])
    }),
    ("madvise(advice)", |m, _| {
        let a = mmap(0, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS)?;
        let r = sc(28, [a, 4096, m(4), 0, 0, 0]);
        let _ = munmap(a, 4096);
        r
    }),
    ("dup(fd)", |m, f| {
        fd_result(sc(32, [m(f.file), 0, 0, 0, 0, 0]))
    }),
    ("dup2(old, new)", |m, f| {
        fd_result(sc(33, [m(f.file), m(60), 0, 0, 0, 0]))
    }),
    ("getitimer(which)", |m, _| {
        let mut it = [0i64; 4];
        sc(36, [m(0), pm(&mut it), 0, 0, 0, 0])
    }),
    ("alarm(seconds)", |m, _| sc(37, [m(0), 0, 0, 0, 0, 0])),
    ("setitimer(which)", |m, _| {
        let it = [0i64; 4];
        sc(38, [m(0), p(&it), 0, 0, 0, 0])
    }),
    ("kill(pid, sig)", |m, _| {
        sc(62, [m(getpid()), m(0), 0, 0, 0, 0])
    }),
    ("fcntl(fd, cmd) F_GETFD", |m, f| {
        sc(72, [m(f.file), m(1), 0, 0, 0, 0])
    }),
    ("fsync(fd)", |m, f| sc(74, [m(f.file), 0, 0, 0, 0, 0])),
    ("fdatasync(fd)", |m, f| sc(75, [m(f.file), 0, 0, 0, 0, 0])),
    ("ftruncate(fd)", |m, f| {
        sc(77, [m(f.memfd), 4096, 0, 0, 0, 0])
    }),
    ("fchdir(fd)", |m, _| {
        let d = open(c".", O_RDONLY | O_DIRECTORY)?;
        let r = sc(81, [m(d), 0, 0, 0, 0, 0]);
        let _ = close(d);
        r
    }),
    ("mkdir(mode)", |m, _| {
        let r = sc(83, [dir().as_ptr() as usize, m(0o755), 0, 0, 0, 0]);
        let _ = rmdir(dir());
        r
    }),
    ("readlink(bufsiz)", |m, _| {
        let mut b = [0u8; 64];
        sc(
            89,
            [
                c"/proc/self/exe".as_ptr() as usize,
                pm(&mut b),
                m(64),
                0,
                0,
                0,
            ],
        )
    }),
    ("chmod(mode)", |m, _| {
        sc(90, [file().as_ptr() as usize, m(0o644), 0, 0, 0, 0])
    }),
    ("fchmod(fd, mode)", |m, f| {
        sc(91, [m(f.file), m(0o644), 0, 0, 0, 0])
    }),
    ("getrlimit(resource)", |m, _| {
        let mut r = [0u64; 2];
        sc(97, [m(7), pm(&mut r), 0, 0, 0, 0])
    }),
    ("getrusage(RUSAGE_CHILDREN = -1)", |m, _| {
        let mut u = [0i64; 18];
        sc(98, [m(-1), pm(&mut u), 0, 0, 0, 0])
    }),
    ("getgroups(size)", |m, _| sc(115, [m(0), 0, 0, 0, 0, 0])),
    ("fstatfs(fd)", |m, f| {
        let mut b = [0u8; 120];
        sc(138, [m(f.file), pm(&mut b), 0, 0, 0, 0])
    }),
    ("prctl(option) PR_GET_NAME", |m, _| {
        let mut b = [0u8; 16];
        sc(157, [m(16), pm(&mut b), 0, 0, 0, 0])
    }),
    ("arch_prctl(code) ARCH_GET_FS", |m, _| {
        let mut fs = 0u64;
        sc(158, [m(0x1003), pm(&mut fs), 0, 0, 0, 0])
    }),
    ("setrlimit(resource)", |m, _| {
        let mut r = [0u64; 2];
        sc(97, [7, pm(&mut r), 0, 0, 0, 0])?;
        sc(160, [m(7), p(&r), 0, 0, 0, 0])
    }),
    ("tkill(tid, sig)", |m, _| {
        let tid = sc(186, [0; 6])? as i32;
        sc(200, [m(tid), m(0), 0, 0, 0, 0])
    }),
    ("futex(op, val) FUTEX_WAKE", |m, _| {
        let word = 0u32;
        sc(202, [p(&word), m(1 | 128), m(1), 0, 0, 0])
    }),
    ("getdents64(fd, count)", |m, _| {
        let d = open(c"/", O_RDONLY | O_DIRECTORY)?;
        let mut b = [0u8; 256];
        let r = sc(217, [m(d), pm(&mut b), m(256), 0, 0, 0]);
        let _ = close(d);
        r.map(|n| usize::from(n > 0))
    }),
    ("clock_gettime(clockid)", |m, _| {
        let mut ts = [0i64; 2];
        sc(228, [m(1), pm(&mut ts), 0, 0, 0, 0])
    }),
    ("clock_nanosleep(clockid, flags)", |m, _| {
        let ts = [0i64, 1000];
        sc(230, [m(1), m(0), p(&ts), 0, 0, 0])
    }),
    ("tgkill(pid, tid, sig)", |m, _| {
        let tid = sc(186, [0; 6])? as i32;
        sc(234, [m(getpid()), m(tid), m(0), 0, 0, 0])
    }),
    ("openat(AT_FDCWD, flags, mode)", |m, _| {
        fd_result(sc(
            257,
            [
                m(AT_FDCWD),
                file().as_ptr() as usize,
                m(O_RDONLY as i32),
                m(0),
                0,
                0,
            ],
        ))
    }),
    ("newfstatat(AT_FDCWD, flag)", |m, _| {
        let mut st = [0u8; 144];
        sc(
            262,
            [
                m(AT_FDCWD),
                file().as_ptr() as usize,
                pm(&mut st),
                m(0),
                0,
                0,
            ],
        )
    }),
    ("unlinkat(AT_FDCWD, flag)", |m, _| {
        let fd = open_mode(file2(), O_CREAT | O_WRONLY, 0o644)?;
        let _ = close(fd);
        sc(263, [m(AT_FDCWD), file2().as_ptr() as usize, m(0), 0, 0, 0])
    }),
    ("renameat(AT_FDCWD x2)", |m, _| {
        let r = sc(
            264,
            [
                m(AT_FDCWD),
                file().as_ptr() as usize,
                m(AT_FDCWD),
                file2().as_ptr() as usize,
                0,
                0,
            ],
        );
        let _ = rename(file2(), file());
        r
    }),
    ("linkat(AT_FDCWD x2, flags)", |m, _| {
        let r = sc(
            265,
            [
                m(AT_FDCWD),
                file().as_ptr() as usize,
                m(AT_FDCWD),
                file2().as_ptr() as usize,
                m(0),
                0,
            ],
        );
        let _ = unlink(file2());
        r
    }),
    ("readlinkat(AT_FDCWD, bufsiz)", |m, _| {
        let mut b = [0u8; 64];
        sc(
            267,
            [
                m(AT_FDCWD),
                c"/proc/self/exe".as_ptr() as usize,
                pm(&mut b),
                m(64),
                0,
                0,
            ],
        )
    }),
    ("fchmodat(AT_FDCWD, mode)", |m, _| {
        sc(
            268,
            [m(AT_FDCWD), file().as_ptr() as usize, m(0o600), 0, 0, 0],
        )
    }),
    ("utimensat(AT_FDCWD, flags)", |m, _| {
        sc(280, [m(AT_FDCWD), file().as_ptr() as usize, 0, m(0), 0, 0])
    }),
    ("fallocate(fd, mode)", |m, f| {
        sc(285, [m(f.memfd), m(0), 0, 4096, 0, 0])
    }),
    ("dup3(old, new, flags)", |m, f| {
        fd_result(sc(292, [m(f.file), m(61), m(0), 0, 0, 0]))
    }),
    ("pipe2(flags)", |m, _| {
        let mut fds = [0i32; 2];
        let r = sc(293, [pm(&mut fds), m(0), 0, 0, 0, 0]);
        if r.is_ok() {
            let _ = close(fds[0]);
            let _ = close(fds[1]);
        }
        r
    }),
    ("preadv(fd)", |m, f| {
        let mut b = [0u8; 4];
        let iov = [pm(&mut b), 4];
        sc(295, [m(f.file), p(&iov), 1, 0, 0, 0])
    }),
    ("pwritev(fd)", |m, f| {
        let iov = [p(b"abcd"), 4];
        sc(296, [m(f.file), p(&iov), 1, 0, 0, 0])
    }),
    ("prlimit64(pid, resource)", |m, _| {
        let mut old = [0u64; 2];
        sc(302, [m(0), m(7), 0, pm(&mut old), 0, 0])
    }),
    ("syncfs(fd)", |m, f| sc(306, [m(f.file), 0, 0, 0, 0, 0])),
    ("renameat2(AT_FDCWD x2, flags)", |m, _| {
        let r = sc(
            316,
            [
                m(AT_FDCWD),
                file().as_ptr() as usize,
                m(AT_FDCWD),
                file2().as_ptr() as usize,
                m(0),
                0,
            ],
        );
        let _ = rename(file2(), file());
        r
    }),
    ("getrandom(flags)", |m, _| {
        let mut b = [0u8; 8];
        sc(318, [pm(&mut b), 8, m(0), 0, 0, 0])
    }),
    ("memfd_create(flags)", |m, _| {
        fd_result(sc(319, [c"abi".as_ptr() as usize, m(0), 0, 0, 0, 0]))
    }),
    ("mlock2(flags)", |m, _| {
        let a = mmap(0, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS)?;
        let r = sc(325, [a, 4096, m(0), 0, 0, 0]);
        let _ = munmap(a, 4096);
        r
    }),
    ("preadv2(fd, flags)", |m, f| {
        let mut b = [0u8; 4];
        let iov = [pm(&mut b), 4];
        sc(327, [m(f.file), p(&iov), 1, 0, 0, m(0)])
    }),
    ("wait4(-1 as pid_t, options)", |m, _| {
        // No children: ECHILD whatever the upper half, and not EINVAL for the options.
        sc(61, [m(-1), 0, m(1), 0, 0, 0])
    }),
];

/// Rows whose clean call fails by design (the answer must still not depend on the upper half).
const EXPECT_ERR: &[&str] = &[
    "wait4(-1 as pid_t, options)",
    "ioctl(fd, cmd) TCGETS on a file",
];

fn main() -> i32 {
    let mut t = Tester::new("t_abi_int");
    let flags = O_CREAT | O_RDWR | O_TRUNC;
    let fd = match open_mode(c"/t_abi_int.file", flags, 0o644) {
        Ok(fd) if on_cowlab() => {
            IN_ROOT.store(true, Ordering::Relaxed);
            fd
        }
        Ok(fd) => {
            let _ = close(fd);
            let _ = unlink(c"/t_abi_int.file");
            open_mode(file(), flags, 0o644).unwrap_or(-1)
        }
        Err(_) => open_mode(file(), flags, 0o644).unwrap_or(-1),
    };
    let _ = write(fd, b"0123456789");
    let fx = Fx {
        file: fd,
        pipe: pipe().unwrap_or([-1, -1]),
        memfd: memfd_create(c"abi", 0).unwrap_or(-1),
    };
    let clean = |v: i32| v as isize as usize;
    let glibc = |v: i32| v as u32 as usize;
    let dirty = |v: i32| GARBAGE | v as u32 as usize;
    for &(name, row) in ROWS {
        let want = row(&clean, &fx);
        let ok_expected = !EXPECT_ERR.contains(&name);
        t.check_why(
            &alloc_name(name, "clean call"),
            want.is_ok() == ok_expected,
            format_args!("{want:?}"),
        );
        let zero_ext = row(&glibc, &fx);
        t.eq(&alloc_name(name, "zero-extended"), zero_ext, want);
        let garbage = row(&dirty, &fx);
        t.eq(&alloc_name(name, "upper-half garbage"), garbage, want);
    }
    let _ = close(fd);
    let _ = unlink(file());
    t.finish()
}

fn alloc_name(row: &str, mode: &str) -> alloc::string::String {
    alloc::format!("{row} {mode}")
}

extern crate alloc;
