//! System-call tests: success and error paths of the file, identity, time and info calls.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{self, errno, nr, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

fn sc(n: usize, args: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the tests pass either valid pointers to local buffers or deliberately bad
    // addresses that the kernel must reject with EFAULT.
    unsafe { raw(n, args) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_syscalls");
    let efault = Err(Errno(errno::EFAULT));
    let ebadf = Err(Errno(errno::EBADF));

    t.eq(
        "write to stdout",
        write(1, b"t_syscalls: (written by write)\n"),
        Ok(31),
    );
    t.eq("write to a closed fd is EBADF", write(77, b"x"), ebadf);
    t.eq(
        "write from a NULL buffer is EFAULT",
        sc(nr::WRITE, [1, 0, 4, 0, 0, 0]),
        efault,
    );
    t.eq(
        "write from a kernel address is EFAULT",
        sc(nr::WRITE, [1, 0xffff_ffff_8000_0000, 4, 0, 0, 0]),
        efault,
    );
    t.eq("write of 0 bytes is 0", write(1, b""), Ok(0));
    let iov = [
        b"t_syscalls: (written ".as_ptr() as usize,
        21,
        b"by writev)\n".as_ptr() as usize,
        11,
    ];
    t.eq(
        "writev gathers",
        sc(nr::WRITEV, [1, iov.as_ptr() as usize, 2, 0, 0, 0]),
        Ok(32),
    );
    t.eq(
        "writev with a bad iovec is EFAULT",
        sc(nr::WRITEV, [1, 8, 1, 0, 0, 0]),
        efault,
    );
    iovec_counts(&mut t);

    let null = open(c"/dev/null", 2).unwrap_or(-1);
    t.check("open /dev/null", null >= 0);
    t.eq("write to /dev/null", write(null, b"gone"), Ok(4));
    let mut buf = [0u8; 8];
    t.eq("read from /dev/null is EOF", read(null, &mut buf), Ok(0));
    t.eq(
        "open of a missing file is ENOENT",
        open(c"/no-such-file-cowlab", 0),
        Err(Errno(errno::ENOENT)),
    );
    t.eq(
        "open with a bad path pointer is EFAULT",
        sc(nr::OPEN, [0x20, 0, 0, 0, 0, 0]),
        efault,
    );
    t.eq(
        "openat with a non-directory dirfd is ENOTDIR",
        sc(
            nr::OPENAT,
            [null as usize, c"x".as_ptr() as usize, 0, 0, 0, 0],
        ),
        Err(Errno(errno::ENOTDIR)),
    );

    let copy = dup(null).unwrap_or(-1);
    t.check("dup gives a new descriptor", copy > null);
    t.eq("dup2 onto 50", dup2(null, 50), Ok(50));
    t.eq("dup2 to itself", dup2(50, 50), Ok(50));
    t.eq(
        "dup3 to itself is EINVAL",
        dup3(50, 50, 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq("dup3 with O_CLOEXEC", dup3(null, 51, 0o2000000), Ok(51));
    t.eq("F_GETFD sees FD_CLOEXEC", fcntl(51, 1, 0), Ok(1));
    t.eq("F_SETFD clears it", fcntl(51, 2, 0), Ok(0));
    t.eq("F_GETFD after", fcntl(51, 1, 0), Ok(0));
    t.eq("F_GETFL is O_RDWR", fcntl(null, 3, 0).map(|f| f & 3), Ok(2));
    t.eq("F_DUPFD at or above 60", fcntl(null, 0, 60), Ok(60));
    t.eq("fcntl on a bad fd is EBADF", fcntl(99, 1, 0), ebadf);
    for fd in [copy, 50, 51, 60] {
        let _ = close(fd);
    }
    t.eq("close twice is EBADF", close(50), ebadf);
    t.eq(
        "dup of a bad fd is EBADF",
        dup(98),
        Err(Errno(errno::EBADF)),
    );

    let mut st = [0u64; 18];
    t.eq(
        "fstat /dev/null",
        sc(
            nr::FSTAT,
            [null as usize, st.as_mut_ptr() as usize, 0, 0, 0, 0],
        ),
        Ok(0),
    );
    t.eq(
        "/dev/null is a character device",
        (st[3] as u32) & 0o170000,
        0o020000,
    );
    t.eq(
        "fstat to a bad buffer is EFAULT",
        sc(nr::FSTAT, [null as usize, 0x30, 0, 0, 0, 0]),
        efault,
    );
    t.eq(
        "fstat of a bad fd is EBADF",
        sc(nr::FSTAT, [97, st.as_mut_ptr() as usize, 0, 0, 0, 0]),
        ebadf,
    );
    t.eq(
        "newfstatat /",
        sc(
            nr::NEWFSTATAT,
            [
                (-100isize) as usize,
                c"/".as_ptr() as usize,
                st.as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        ),
        Ok(0),
    );
    t.eq("/ is a directory", (st[3] as u32) & 0o170000, 0o040000);
    t.eq(
        "ioctl TCGETS on /dev/null is ENOTTY",
        sc(
            nr::IOCTL,
            [null as usize, 0x5401, st.as_mut_ptr() as usize, 0, 0, 0],
        ),
        Err(Errno(errno::ENOTTY)),
    );
    let _ = close(null);

    let dir = open(c"/", 0o200000).unwrap_or(-1);
    t.check("open / as a directory", dir >= 0);
    let mut dents = [0u8; 4096];
    t.eq(
        "getdents64 to a bad buffer is EFAULT",
        sc(nr::GETDENTS64, [dir as usize, 0x60, 100, 0, 0, 0]),
        efault,
    );
    let n = sc(
        nr::GETDENTS64,
        [
            dir as usize,
            dents.as_mut_ptr() as usize,
            dents.len(),
            0,
            0,
            0,
        ],
    );
    t.check("getdents64 lists entries", n.is_ok_and(|n| n > 19));
    t.check("the first entry is a name", n.is_ok() && dents[19] != 0);
    t.eq(
        "getdents64 on a non-directory is ENOTDIR",
        sc(
            nr::GETDENTS64,
            [1, dents.as_mut_ptr() as usize, dents.len(), 0, 0, 0],
        ),
        Err(Errno(errno::ENOTDIR)),
    );
    let _ = close(dir);

    // A regular file: this program's own ELF (in / on cowlab, by full path on the host).
    let me = cowlab_userland::test::sibling("t_syscalls");
    let mut path = me.clone();
    path.push(0);
    let path = core::ffi::CStr::from_bytes_with_nul(&path).unwrap_or(c"/");
    let elf = open(path, 0).unwrap_or(-1);
    t.check("open this program's file", elf >= 0);
    let mut head = [0u8; 4];
    t.eq("read its first 4 bytes", read(elf, &mut head), Ok(4));
    t.check("they are the ELF magic", head == *b"\x7fELF");
    t.eq("lseek SEEK_CUR is 4", lseek(elf, 0, 1), Ok(4));
    let mut st = [0u64; 18];
    let _ = sc(
        nr::FSTAT,
        [elf as usize, st.as_mut_ptr() as usize, 0, 0, 0, 0],
    );
    t.check(
        "fstat says regular file",
        (st[3] as u32) & 0o170000 == 0o100000,
    );
    t.eq(
        "lseek SEEK_END is the size",
        lseek(elf, 0, 2),
        Ok(st[6] as usize),
    );
    t.eq("read at the end is EOF", read(elf, &mut head), Ok(0));
    t.eq(
        "lseek before 0 is EINVAL",
        lseek(elf, -1, 0),
        Err(Errno(errno::EINVAL)),
    );
    let mut at = [0u8; 3];
    t.eq(
        "pread64 at offset 1",
        sc(
            nr::PREAD64,
            [elf as usize, at.as_mut_ptr() as usize, 3, 1, 0, 0],
        ),
        Ok(3),
    );
    t.check("pread64 bytes", at == *b"ELF");
    t.eq(
        "write to a read-only file is EBADF",
        write(elf, b"x"),
        ebadf,
    );
    let _ = close(elf);

    let mut info = [0u64; 14];
    t.eq(
        "sysinfo",
        sc(nr::SYSINFO, [info.as_mut_ptr() as usize, 0, 0, 0, 0, 0]),
        Ok(0),
    );
    t.check("sysinfo reports RAM", info[4] > 0);

    if cowlab_userland::test::on_cowlab() {
        // Fill the descriptor table (1024) but one slot: pipe then fails with EMFILE and the
        // half-made pipe is closed again.
        let mut opened = 0;
        while open(c"/dev/null", 0).is_ok() {
            opened += 1;
        }
        t.eq(
            "open beyond 1024 descriptors is EMFILE",
            open(c"/dev/null", 0),
            Err(Errno(24)),
        );
        let _ = close(1000);
        t.eq(
            "pipe with one free slot is EMFILE",
            pipe().map(|_| ()),
            Err(Errno(24)),
        );
        t.check(
            "and leaves the slot free",
            open(c"/dev/null", 0) == Ok(1000),
        );
        for fd in 3..1024 {
            let _ = close(fd);
        }
        t.check("opened up to the limit", opened > 1000);

        // Only on cowlab: under xtask the host's stdout is a pipe, and its / is writable.
        let mut ws = [0u16; 4];
        t.eq(
            "TIOCGWINSZ on the console",
            sc(nr::IOCTL, [1, 0x5413, ws.as_mut_ptr() as usize, 0, 0, 0]),
            Ok(0),
        );
        t.check("the console has rows and columns", ws[0] > 0 && ws[1] > 0);
        let mut tio = [0u8; 36];
        t.eq(
            "TCGETS on the console",
            sc(nr::IOCTL, [1, 0x5401, tio.as_mut_ptr() as usize, 0, 0, 0]),
            Ok(0),
        );
        // The root is the read-only ramdisk without a root disk, else the writable ext2 root.
        let root_read_only = cowlab_userland::calls::statfs(c"/").map(|s| s.f_flags & 1 != 0);
        if root_read_only == Ok(true) {
            t.eq(
                "mkdir on the read-only root is EROFS",
                sc(nr::MKDIR, [c"/newdir".as_ptr() as usize, 0o755, 0, 0, 0, 0]),
                Err(Errno(errno::EROFS)),
            );
            t.eq(
                "open for writing is EROFS",
                open(c"/init", 1),
                Err(Errno(errno::EROFS)),
            );
            t.eq(
                "O_CREAT of a new file is EROFS",
                open(c"/newfile", 0o101),
                Err(Errno(errno::EROFS)),
            );
        } else {
            t.eq("statfs of the writable root", root_read_only, Ok(false));
            t.eq(
                "mkdir on the writable root",
                sc(nr::MKDIR, [c"/newdir".as_ptr() as usize, 0o755, 0, 0, 0, 0]),
                Ok(0),
            );
            t.eq(
                "and rmdir",
                cowlab_userland::calls::rmdir(c"/newdir"),
                Ok(0),
            );
            let fd = open(c"/init", 1);
            t.check("open of a program for writing", fd.is_ok());
            let _ = fd.map(close);
            let fd = open(c"/newfile", 0o101);
            t.check("O_CREAT of a new file", fd.is_ok());
            let _ = fd.map(close);
            t.eq(
                "and unlink",
                cowlab_userland::calls::unlink(c"/newfile"),
                Ok(0),
            );
        }
    }

    let mut cwd = [0u8; 256];
    let got = sc(
        nr::GETCWD,
        [cwd.as_mut_ptr() as usize, cwd.len(), 0, 0, 0, 0],
    );
    t.check("getcwd", got.is_ok() && cwd[0] == b'/');
    t.eq(
        "getcwd into 1 byte is ERANGE",
        sc(nr::GETCWD, [cwd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]),
        Err(Errno(errno::ERANGE)),
    );
    t.eq(
        "mkdir / is EEXIST",
        sc(nr::MKDIR, [c"/".as_ptr() as usize, 0o755, 0, 0, 0, 0]),
        Err(Errno(errno::EEXIST)),
    );
    t.eq(
        "readlink of a non-link is EINVAL",
        sc(
            nr::READLINK,
            [
                c"/".as_ptr() as usize,
                cwd.as_mut_ptr() as usize,
                10,
                0,
                0,
                0,
            ],
        ),
        Err(Errno(errno::EINVAL)),
    );

    let mut uts = [0u8; 390];
    t.eq(
        "uname",
        sc(nr::UNAME, [uts.as_mut_ptr() as usize, 0, 0, 0, 0, 0]),
        Ok(0),
    );
    t.check("sysname is Linux", &uts[..6] == b"Linux\0");
    t.check("machine is x86_64", &uts[260..267] == b"x86_64\0");
    t.eq(
        "uname to a bad buffer is EFAULT",
        sc(nr::UNAME, [0x40, 0, 0, 0, 0, 0]),
        efault,
    );

    t.check("getpid is positive", sys::getpid() > 0);
    t.eq(
        "gettid is getpid",
        sc(nr::GETTID, [0; 6]),
        Ok(sys::getpid() as usize),
    );
    t.check("getuid works", sc(nr::GETUID, [0; 6]).is_ok());

    let mut rnd = [0u8; 32];
    t.eq(
        "getrandom 32 bytes",
        sc(nr::GETRANDOM, [rnd.as_mut_ptr() as usize, 32, 0, 0, 0, 0]),
        Ok(32),
    );
    t.check("random bytes are not all zero", rnd.iter().any(|&b| b != 0));
    t.eq(
        "getrandom with bad flags is EINVAL",
        sc(
            nr::GETRANDOM,
            [rnd.as_mut_ptr() as usize, 4, 0x100, 0, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );

    let a = monotonic_ns();
    t.eq("nanosleep 30 ms", sleep_ms(30), Ok(0));
    let b = monotonic_ns();
    t.check_why(
        "monotonic clock advanced by >= 30 ms",
        b - a >= 30_000_000,
        b - a,
    );
    let bad_ts = [0i64, 2_000_000_000];
    t.eq(
        "nanosleep with bad nsec is EINVAL",
        sc(nr::NANOSLEEP, [bad_ts.as_ptr() as usize, 0, 0, 0, 0, 0]),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "clock_gettime with a bad clock is EINVAL",
        sc(
            nr::CLOCK_GETTIME,
            [100, rnd.as_mut_ptr() as usize, 0, 0, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "clock_gettime to a bad pointer is EFAULT",
        sc(nr::CLOCK_GETTIME, [1, 0x50, 0, 0, 0, 0]),
        efault,
    );

    let mut wall = [0i64; 2];
    let _ = sc(
        nr::CLOCK_GETTIME,
        [0, wall.as_mut_ptr() as usize, 0, 0, 0, 0],
    );
    t.check_why(
        "CLOCK_REALTIME is after 2020",
        wall[0] > 1_577_836_800,
        wall[0],
    );

    let mut fs: u64 = 0;
    t.eq(
        "arch_prctl ARCH_GET_FS",
        sc(
            nr::ARCH_PRCTL,
            [0x1003, &mut fs as *mut u64 as usize, 0, 0, 0, 0],
        ),
        Ok(0),
    );
    t.eq(
        "arch_prctl bad code is EINVAL",
        sc(nr::ARCH_PRCTL, [0x9999, 0, 0, 0, 0, 0]),
        Err(Errno(errno::EINVAL)),
    );
    t.check(
        "set_tid_address returns the tid",
        sc(nr::SET_TID_ADDRESS, [0; 6]) == Ok(sys::getpid() as usize),
    );
    let mut lim = [0u64; 2];
    t.eq(
        "prlimit64 RLIMIT_NOFILE",
        sc(nr::PRLIMIT64, [0, 7, 0, lim.as_mut_ptr() as usize, 0, 0]),
        Ok(0),
    );
    t.check("NOFILE soft limit is set", lim[0] > 0);
    let mut mask = 0u64;
    t.eq(
        "rt_sigprocmask reads the mask",
        sc(
            nr::RT_SIGPROCMASK,
            [0, 0, &mut mask as *mut u64 as usize, 8, 0, 0],
        ),
        Ok(0),
    );
    t.eq(
        "rt_sigaction on SIGKILL is EINVAL",
        sc(
            nr::RT_SIGACTION,
            [9, [1u64, 0, 0, 0].as_ptr() as usize, 0, 8, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "an unknown system call is ENOSYS",
        sc(999, [0; 6]),
        Err(Errno(errno::ENOSYS)),
    );

    t.finish()
}

/// writev/readv around the kernel's inline iovec array (8 entries; more go to the heap):
/// 1, 8, 9 and 40 three-byte segments through a pipe come back in order, and a bad entry past
/// the inline part still fails the whole call before anything moves (EFAULT for a kernel
/// address, EINVAL for a negative length), as does a count over IOV_MAX (EINVAL).
fn iovec_counts(t: &mut Tester) {
    const VMSPLICE: usize = 278;
    const SRC: &[u8; 120] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\
abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let Ok(fds) = pipe() else {
        t.check("pipe for the iovec tests", false);
        return;
    };
    for n in [1usize, 8, 9, 40] {
        let mut wiov = [[0usize; 2]; 40];
        for (i, v) in wiov.iter_mut().enumerate().take(n) {
            *v = [SRC.as_ptr() as usize + 3 * i, 3];
        }
        t.eq(
            "writev of n three-byte iovecs",
            sc(
                nr::WRITEV,
                [fds[1] as usize, wiov.as_ptr() as usize, n, 0, 0, 0],
            ),
            Ok(3 * n),
        );
        let mut dst = [0u8; 120];
        let mut riov = [[0usize; 2]; 40];
        // Read back in reverse segment order of the buffer: segment i fills the i-th
        // three bytes from the end, so a dropped or reordered segment shows.
        for (i, v) in riov.iter_mut().enumerate().take(n) {
            *v = [dst.as_mut_ptr() as usize + 3 * (n - 1 - i), 3];
        }
        t.eq(
            "readv of n three-byte iovecs",
            sc(
                nr::READV,
                [fds[0] as usize, riov.as_ptr() as usize, n, 0, 0, 0],
            ),
            Ok(3 * n),
        );
        let mut want = [0u8; 120];
        for i in 0..n {
            want[3 * (n - 1 - i)..3 * (n - i)].copy_from_slice(&SRC[3 * i..3 * i + 3]);
        }
        t.check("readv scatters each segment in place", dst == want);
    }
    let mut bad = [[SRC.as_ptr() as usize, 3]; 12];
    bad[10] = [0xffff_ffff_8000_0000, 1];
    t.eq(
        "writev with a kernel-address 11th iovec is EFAULT",
        sc(
            nr::WRITEV,
            [fds[1] as usize, bad.as_ptr() as usize, 12, 0, 0, 0],
        ),
        Err(Errno(errno::EFAULT)),
    );
    bad[10] = [SRC.as_ptr() as usize, usize::MAX];
    t.eq(
        "writev with a negative-length 11th iovec is EINVAL",
        sc(
            nr::WRITEV,
            [fds[1] as usize, bad.as_ptr() as usize, 12, 0, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );
    bad[4] = [0xffff_ffff_8000_0000, 1];
    bad[10] = [SRC.as_ptr() as usize, 3];
    t.eq(
        "writev with a kernel-address 5th iovec is EFAULT",
        sc(
            nr::WRITEV,
            [fds[1] as usize, bad.as_ptr() as usize, 12, 0, 0, 0],
        ),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "writev of 1025 iovecs is EINVAL",
        sc(
            nr::WRITEV,
            [fds[1] as usize, bad.as_ptr() as usize, 1025, 0, 0, 0],
        ),
        Err(Errno(errno::EINVAL)),
    );
    // Nothing of the failed calls reached the pipe.
    t.eq(
        "vmsplice of an empty iovec array is 0",
        sc(
            VMSPLICE,
            [fds[1] as usize, bad.as_ptr() as usize, 0, 0, 0, 0],
        ),
        Ok(0),
    );
    let _ = close(fds[1]);
    let mut rest = [0u8; 8];
    t.eq(
        "the failed writevs queued nothing",
        read(fds[0], &mut rest),
        Ok(0),
    );
    let _ = close(fds[0]);
}
