//! The C types of the system-call arguments that are 32 bits wide (Linux's `SYSCALL_DEFINE`
//! prototypes): an `int`, `pid_t`, `clockid_t` or `rwf_t` uses only the low 32 bits of its
//! register, sign-extended; an `unsigned int`, `umode_t`, `uid_t` or a file descriptor passed as
//! `unsigned int`/`unsigned long` uses only the low 32 bits, zero-extended. glibc passes `-1` and
//! `AT_FDCWD` as `0x00000000ffffffff` and `0x00000000ffffff9c` (32-bit moves), and the upper
//! half of a register is otherwise whatever the caller left there, so every handler sees the
//! argument as Linux's prototype defines it: [`narrow`] rewrites the registers once, before
//! dispatch (Linux does it with the `__SC_CAST` in every `SYSCALL_DEFINE`).
#![deny(unsafe_code)]

/// How one argument register is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum W {
    /// 64 bits: pointers, sizes, `long`s, `unsigned long` flags.
    L,
    /// `int`, `pid_t`, `clockid_t`: the low half, sign-extended.
    S,
    /// `unsigned int`, `umode_t`, a file descriptor: the low half, zero-extended.
    U,
}

use W::{L, S, U};

/// The 32-bit arguments of call `nr`, by position (trailing 64-bit ones omitted).
/// `#[inline(always)]`: out of line, `narrow` paid a call on read, write and the others.
#[inline(always)]
const fn widths(nr: u64) -> &'static [W] {
    match nr {
        // read, write, close, fstat, fsync, fdatasync, fchdir, fstatfs, dup, readv, writev,
        // pread64, pwrite64, preadv, pwritev, io_uring_setup: (unsigned) fd first.
        0 | 1 | 3 | 5 | 17 | 18 | 19 | 20 | 32 | 74 | 75 | 77 | 81 | 138 | 295 | 296 => &[U],
        // preadv2/pwritev2(fd, iov, vlen, pos_l, pos_h, rwf_t flags)
        327 | 328 => &[U, L, L, L, L, S],
        425 => &[U],
        // open(path, int flags, umode_t mode)
        2 => &[L, S, U],
        // lseek(fd, off, unsigned whence)
        8 => &[U, L, U],
        // mmap(..., fd): Linux's `ksys_mmap_pgoff` takes the descriptor as unsigned long and
        // `fget` as unsigned int.
        9 => &[L, L, L, L, U],
        // rt_sigaction(int sig), rt_sigprocmask(int how), getitimer/setitimer(int which),
        // getrusage(int who), getgroups(int size), mlockall(int flags), prctl(int option),
        // arch_prctl(int code), exit(int), exit_group(int), syncfs(int fd),
        // clock_gettime(clockid_t), clock_getres(clockid_t)
        13 | 14 | 36 | 38 | 60 | 98 | 115 | 151 | 157 | 158 | 228 | 229 | 231 | 306 => &[S],
        // getpgid(pid_t), getsid(pid_t), select(int n, ...), pselect6(int n, ...)
        121 | 124 | 23 | 270 => &[S],
        // poll(ufds, unsigned nfds, int timeout_msecs)
        7 => &[L, U, S],
        // ppoll(ufds, unsigned nfds, tsp, sigmask, sigsetsize)
        271 => &[L, U],
        // setpgid(pid_t, pid_t)
        109 => &[S, S],
        // ioctl(fd, unsigned cmd), fcntl(fd, unsigned cmd), dup2(old, new)
        16 | 72 | 33 => &[U, U],
        // access(path, int mode), pipe2(fds, int flags)
        21 | 293 => &[L, S],
        // madvise(start, len, int behavior), mlock2(start, len, int flags),
        // readlink(path, buf, int size)
        28 | 325 | 89 => &[L, L, S],
        // alarm(unsigned seconds)
        37 => &[U],
        // wait4(pid_t, status, int options), kill(pid_t, int), tkill(pid_t, int),
        // rt_sigqueueinfo(pid_t, int sig)
        61 => &[S, L, S],
        62 | 200 | 129 => &[S, S],
        // mkdir(path, umode_t), chmod(path, umode_t), memfd_create(name, unsigned flags)
        83 | 90 | 319 => &[L, U],
        // fchmod(fd, umode_t)
        91 => &[U, U],
        // getrlimit/setrlimit(unsigned resource)
        97 | 160 => &[U],
        // reboot(int magic1, int magic2, unsigned cmd)
        169 => &[S, S, U],
        // futex(uaddr, int op, u32 val, timeout or val2, uaddr2, u32 val3)
        202 => &[L, S, U, L, L, U],
        // io_setup(unsigned nr_events)
        206 => &[U],
        // getdents64(fd, dirent, unsigned count)
        217 => &[U, L, U],
        // clock_nanosleep(clockid_t, int flags)
        230 => &[S, S],
        // waitid(int which, pid_t upid, infop, int options)
        247 => &[S, S, L, S],
        // tgkill(pid_t, pid_t, int), rt_tgsigqueueinfo(pid_t, pid_t, int sig)
        234 | 297 => &[S, S, S],
        // openat(int dfd, path, int flags, umode_t mode)
        257 => &[S, L, S, U],
        // newfstatat(int dfd, path, buf, int flag), utimensat(int dfd, path, times, int flags)
        262 | 280 => &[S, L, L, S],
        // unlinkat(int dfd, path, int flag)
        263 => &[S, L, S],
        // renameat(int, old, int, new)
        264 => &[S, L, S],
        // linkat(int, old, int, new, int flags)
        265 => &[S, L, S, L, S],
        // symlinkat(target, int newdfd, path)
        266 => &[L, S],
        // readlinkat(int dfd, path, buf, int size)
        267 => &[S, L, L, S],
        // fchmodat(int dfd, path, umode_t)
        268 => &[S, L, U],
        // vmsplice(int fd, iov, nr_segs, unsigned flags)
        278 => &[S, L, L, U],
        // fallocate(int fd, int mode)
        285 => &[S, S],
        // dup3(unsigned old, unsigned new, int flags)
        292 => &[U, U, S],
        // prlimit64(pid_t, unsigned resource)
        302 => &[S, U],
        // renameat2(int, old, int, new, unsigned flags)
        316 => &[S, L, S, L, U],
        // getrandom(buf, len, unsigned flags)
        318 => &[L, L, U],
        // io_uring_enter(fd, u32 to_submit, u32 min_complete, u32 flags)
        426 => &[U, U, U, U],
        // io_uring_register(fd, unsigned opcode, arg, unsigned nr_args)
        427 => &[U, U, L, U],
        // Main's calls since the table was written: msync(start, len, int flags),
        // sched_setaffinity/sched_getaffinity(pid_t, unsigned len, mask), umask(int),
        // set{u,g,fsu,fsg}id(uid_t), setre{u,g}id(uid_t, uid_t), setres{u,g}id(uid_t x3),
        // faccessat(int dfd, path, int mode), faccessat2(int dfd, path, int mode, int flags).
        26 => &[L, L, S],
        203 | 204 => &[S, U],
        95 => &[S],
        105 | 106 | 122 | 123 => &[U],
        113 | 114 => &[U, U],
        117 | 119 => &[U, U, U],
        269 => &[S, L, S],
        439 => &[S, L, S, S],
        // abi (issue 13): sendfile(int out, int in, off, count),
        // copy_file_range(int in, off_in, int out, off_out, len, unsigned flags).
        40 => &[S, S],
        326 => &[S, L, S, L, L, U],
        _ => &[],
    }
}

/// Whether call `nr` has a 32-bit argument ([`widths`] not all `L`), by number, built at
/// compile time: a call with none (`getppid`) costs one load and a branch, where the `match`
/// of [`widths`] cost a jump table and moved the argument registers through the stack.
static NARROWS: [bool; 512] = {
    let mut table = [false; 512];
    let mut nr = 0;
    while nr < table.len() {
        table[nr] = narrows(nr as u64);
        nr += 1;
    }
    table
};

/// Whether call `nr` has a 32-bit argument ([`widths`] not all `L`): [`narrow`] changes
/// something only then.
pub const fn narrows(nr: u64) -> bool {
    let w = widths(nr);
    let mut i = 0;
    while i < w.len() {
        if !matches!(w[i], L) {
            return true;
        }
        i += 1;
    }
    false
}

/// Narrows the 32-bit arguments of call `nr` in `args` to their C type.
#[inline(always)]
pub fn narrow(nr: u64, args: &mut [u64; 6]) {
    // No call numbered 512 or above has a 32-bit argument (`widths`).
    if NARROWS.get(nr as usize).copied().unwrap_or(false) {
        narrow_by_widths(nr, args);
    }
}

/// [`narrow`] for a call with at least one 32-bit argument. Inlined: out of line, the
/// argument registers went through memory on every call (getppid +10).
#[inline(always)]
fn narrow_by_widths(nr: u64, args: &mut [u64; 6]) {
    for (reg, w) in args.iter_mut().zip(widths(nr)) {
        *reg = match w {
            L => *reg,
            S => *reg as i32 as i64 as u64,
            U => *reg as u32 as u64,
        };
    }
}

/// The first call number below 600 whose arguments [`narrow`] (through [`NARROWS`]) treats
/// otherwise than [`widths`] says, for the in-kernel test; `None` when the table is faithful.
pub fn first_table_mismatch() -> Option<u64> {
    (0..600u64).find(|&nr| {
        let mut by_table = [0u64; 6];
        for (i, r) in by_table.iter_mut().enumerate() {
            // Both halves non-zero and the low half negative as an `int`.
            *r = 0xdead_beef_8000_0000 | i as u64;
        }
        let mut by_widths = by_table;
        narrow(nr, &mut by_table);
        for (reg, w) in by_widths.iter_mut().zip(widths(nr)) {
            *reg = match w {
                L => *reg,
                S => *reg as i32 as i64 as u64,
                U => *reg as u32 as u64,
            };
        }
        by_table != by_widths
    })
}
