//! The calls the fuzzer knows: each a system call (or a pseudo-call that wraps a protocol, as
//! syzkaller's `syz_*` do: ring set-up and SQE submission, AIO iocbs, pipes) with typed
//! arguments, and what its result is (a descriptor, a mapping, a ring, an AIO context).

/// An argument's type: how values are generated for it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A descriptor: one the program made, or an edge value.
    Fd,
    /// A pointer into the fuzzer's data (read-write, read-only, PROT_NONE) or an edge address.
    Buf,
    /// A byte count.
    Len,
    /// A file offset.
    Off,
    /// An integer.
    Int,
    /// A path string.
    Path,
    /// A mapping address.
    Addr,
    /// `PROT_*`.
    Prot,
    /// `MAP_*`.
    MapFlags,
    /// `O_*`.
    OpenFlags,
    /// One of these values, or now and then anything.
    Choice(&'static [u64]),
    /// Some of these bits.
    Bits(&'static [u64]),
    /// An iovec array (count, length, which entry is bad).
    Iov,
    /// The count of the iovec array before it (filled in when the call runs).
    IovCount,
    /// A ring made by `uring_setup`.
    Ring,
    /// An AIO context made by `aio_setup`.
    Aio,
    /// A pid of the program's own children (`spawn`); the program's own pid while there is
    /// none. Never an immediate: `kill(0)` or `kill(-1)` would reach the fuzzer and init.
    Pid,
}

/// What a call's successful result is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Nothing,
    Fd,
    Addr,
}

/// How a call runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The system call of this number with the six arguments as generated.
    Sys(usize),
    PipeTwo,
    UringSetup,
    UringSqe,
    UringRegister,
    AioSetup,
    AioRw,
    AioEvents,
    AioDestroy,
    /// fork a child that sleeps a few ms and exits (its pid becomes a resource).
    Spawn,
}

pub struct Call {
    pub name: &'static str,
    pub kind: Kind,
    pub args: &'static [Ty],
    pub ret: Ret,
}

use Ty::*;

const WHENCE: &[u64] = &[0, 1, 2, 3, 4];
const MADVISE: &[u64] = &[0, 1, 2, 3, 4, 8, 9, 10, 11, 12, 14, 15, 18, 19, 20, 100];
const FCNTL: &[u64] = &[0, 1, 2, 3, 4, 1030, 1024, 1031, 1033, 1034];
const FALLOC: &[u64] = &[0, 1, 2, 3, 8, 0x10, 0x20];
const MREMAP: &[u64] = &[0, 1, 2, 3, 4];
const MEMFD: &[u64] = &[1, 2, 4, 8];
/// ioctl commands: gup_test's, kcov's are left out (its file is not opened), vda's block ones,
/// terminal ones, and a few that no file knows.
const IOCTL: &[u64] = &[
    0xC050_6701,
    0xC050_6702,
    0xC050_6703,
    0xC050_6704,
    0xC050_6705,
    0xC050_6706,
    0x4018_6707,
    0x6708,
    0x4008_6709,
    0x1260,
    0x8008_1272,
    0x1268,
    0x5401,
    0x5402,
    0x5413,
    0x541b,
    0,
];
const URING_OPS: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 22, 23,
];
const URING_REG: &[u64] = &[0, 1, 2, 3, 4, 8, 9, 10];
const AIO_OPS: &[u64] = &[0, 1, 2, 3, 5, 6, 7, 8];
const FUTEX: &[u64] = &[0, 1, 3, 4, 5, 9, 10, 128, 129];
const RLIMITS: &[u64] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16];
const CLOCKS: &[u64] = &[0, 1, 4, 5, 6, 7, 100];
const AT: &[u64] = &[0x100, 0x200, 0x400, 0x800, 0x1000];
const RENAME: &[u64] = &[1, 2, 4];
/// Signals for `kill` on the program's own children: none that stops (a stopped child would
/// outlive the program), the rest terminate, are ignored or continue.
const SIGNALS: &[u64] = &[0, 9, 15, 10, 12, 17, 18, 14];
const WAIT: &[u64] = &[0, 1, 2, 8, 0x4000_0000, 0x8000_0000, 1 | 2 | 8];
const VMSPLICE: &[u64] = &[1, 2, 4, 8];

pub static CALLS: &[Call] = &[
    call("read", 0, &[Fd, Buf, Len], Ret::Nothing),
    call("write", 1, &[Fd, Buf, Len], Ret::Nothing),
    call("open", 2, &[Path, OpenFlags, Int], Ret::Fd),
    call("close", 3, &[Fd], Ret::Nothing),
    call("stat", 4, &[Path, Buf], Ret::Nothing),
    call("fstat", 5, &[Fd, Buf], Ret::Nothing),
    call("lseek", 8, &[Fd, Off, Choice(WHENCE)], Ret::Nothing),
    call("mmap", 9, &[Addr, Len, Prot, MapFlags, Fd, Off], Ret::Addr),
    call("mprotect", 10, &[Addr, Len, Prot], Ret::Nothing),
    call("munmap", 11, &[Addr, Len], Ret::Nothing),
    call("brk", 12, &[Addr], Ret::Nothing),
    call("ioctl", 16, &[Fd, Choice(IOCTL), Buf], Ret::Nothing),
    call("pread64", 17, &[Fd, Buf, Len, Off], Ret::Nothing),
    call("pwrite64", 18, &[Fd, Buf, Len, Off], Ret::Nothing),
    call("readv", 19, &[Fd, Iov, IovCount], Ret::Nothing),
    call("writev", 20, &[Fd, Iov, IovCount], Ret::Nothing),
    call(
        "mremap",
        25,
        &[Addr, Len, Len, Choice(MREMAP), Addr],
        Ret::Addr,
    ),
    call(
        "msync",
        26,
        &[Addr, Len, Choice(&[0, 1, 2, 4, 6])],
        Ret::Nothing,
    ),
    call("mincore", 27, &[Addr, Len, Buf], Ret::Nothing),
    call("madvise", 28, &[Addr, Len, Choice(MADVISE)], Ret::Nothing),
    call("dup", 32, &[Fd], Ret::Fd),
    call("dup2", 33, &[Fd, Fd], Ret::Fd),
    call("getpid", 39, &[], Ret::Nothing),
    call("uname", 63, &[Buf], Ret::Nothing),
    call("fcntl", 72, &[Fd, Choice(FCNTL), Int], Ret::Nothing),
    call("fsync", 74, &[Fd], Ret::Nothing),
    call("ftruncate", 77, &[Fd, Off], Ret::Nothing),
    call("getcwd", 79, &[Buf, Len], Ret::Nothing),
    call("rename", 82, &[Path, Path], Ret::Nothing),
    call("mkdir", 83, &[Path, Int], Ret::Nothing),
    call("rmdir", 84, &[Path], Ret::Nothing),
    call("link", 86, &[Path, Path], Ret::Nothing),
    call("unlink", 87, &[Path], Ret::Nothing),
    call("readlink", 89, &[Path, Buf, Len], Ret::Nothing),
    call(
        "getrusage",
        98,
        &[Choice(&[0, 1, u64::MAX, u64::MAX - 1, 5]), Buf],
        Ret::Nothing,
    ),
    call("sysinfo", 99, &[Buf], Ret::Nothing),
    call("statfs", 137, &[Path, Buf], Ret::Nothing),
    call("fstatfs", 138, &[Fd, Buf], Ret::Nothing),
    call("gettid", 186, &[], Ret::Nothing),
    call(
        "futex",
        202,
        &[Buf, Choice(FUTEX), Int, Buf, Buf, Int],
        Ret::Nothing,
    ),
    call("getdents64", 217, &[Fd, Buf, Len], Ret::Nothing),
    call("clock_gettime", 228, &[Choice(CLOCKS), Buf], Ret::Nothing),
    call("openat", 257, &[Fd, Path, OpenFlags, Int], Ret::Fd),
    call("newfstatat", 262, &[Fd, Path, Buf, Bits(AT)], Ret::Nothing),
    call("unlinkat", 263, &[Fd, Path, Bits(AT)], Ret::Nothing),
    call(
        "renameat2",
        316,
        &[Fd, Path, Fd, Path, Bits(RENAME)],
        Ret::Nothing,
    ),
    call("linkat", 265, &[Fd, Path, Fd, Path, Bits(AT)], Ret::Nothing),
    call(
        "vmsplice",
        278,
        &[Fd, Iov, IovCount, Bits(VMSPLICE)],
        Ret::Nothing,
    ),
    call(
        "fallocate",
        285,
        &[Fd, Choice(FALLOC), Off, Len],
        Ret::Nothing,
    ),
    call("dup3", 292, &[Fd, Fd, Choice(&[0, 0o2000000, 1])], Ret::Fd),
    call("preadv", 295, &[Fd, Iov, IovCount, Off], Ret::Nothing),
    call("pwritev", 296, &[Fd, Iov, IovCount, Off], Ret::Nothing),
    call(
        "prlimit64",
        302,
        &[Choice(&[0]), Choice(RLIMITS), Buf, Buf],
        Ret::Nothing,
    ),
    call(
        "getrandom",
        318,
        &[Buf, Len, Choice(&[0, 1, 2, 4])],
        Ret::Nothing,
    ),
    call("memfd_create", 319, &[Path, Bits(MEMFD)], Ret::Fd),
    call(
        "io_uring_enter",
        426,
        &[Fd, Int, Choice(&[0]), Bits(&[2, 4, 8, 16]), Buf, Int],
        Ret::Nothing,
    ),
    pseudo(
        "pipe2",
        Kind::PipeTwo,
        &[Bits(&[0o4000, 0o2000000, 0o40000])],
        Ret::Nothing,
    ),
    pseudo(
        "uring_setup",
        Kind::UringSetup,
        &[Choice(&[1, 2, 4, 8, 16, 0, 3, 4096, 8192])],
        Ret::Fd,
    ),
    pseudo(
        "uring_sqe",
        Kind::UringSqe,
        &[Ring, Choice(URING_OPS), Fd, Buf, Len, Off],
        Ret::Nothing,
    ),
    pseudo(
        "uring_register",
        Kind::UringRegister,
        &[Ring, Choice(URING_REG), Iov, IovCount],
        Ret::Nothing,
    ),
    pseudo(
        "aio_setup",
        Kind::AioSetup,
        &[Choice(&[1, 2, 8, 128, 0, 100_000])],
        Ret::Nothing,
    ),
    pseudo(
        "aio_rw",
        Kind::AioRw,
        &[Aio, Fd, Choice(AIO_OPS), Buf, Len, Off],
        Ret::Nothing,
    ),
    pseudo(
        "aio_events",
        Kind::AioEvents,
        &[Aio, Int, Int],
        Ret::Nothing,
    ),
    pseudo("aio_destroy", Kind::AioDestroy, &[Aio], Ret::Nothing),
    pseudo("spawn", Kind::Spawn, &[Int, Int], Ret::Nothing),
    call("kill", 62, &[Pid, Choice(SIGNALS)], Ret::Nothing),
    call("wait4", 61, &[Pid, Buf, Choice(WAIT), Buf], Ret::Nothing),
    call(
        "prlimit64_pid",
        302,
        &[Pid, Choice(RLIMITS), Buf, Buf],
        Ret::Nothing,
    ),
    call("getpriority", 140, &[Choice(&[0, 1, 2]), Pid], Ret::Nothing),
    call("sched_getaffinity", 204, &[Pid, Len, Buf], Ret::Nothing),
];

const fn call(name: &'static str, nr: usize, args: &'static [Ty], ret: Ret) -> Call {
    Call {
        name,
        kind: Kind::Sys(nr),
        args,
        ret,
    }
}

const fn pseudo(name: &'static str, kind: Kind, args: &'static [Ty], ret: Ret) -> Call {
    Call {
        name,
        kind,
        args,
        ret,
    }
}

/// The index of the call named `name`.
pub fn by_name(name: &str) -> Option<usize> {
    CALLS.iter().position(|c| c.name == name)
}
