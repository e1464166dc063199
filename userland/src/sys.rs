//! Raw Linux x86_64 system calls.
//!
//! The ABI: number in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, result in `rax`
//! (`-4095..=-1` is `-errno`); the `syscall` instruction clobbers `rcx` (return address) and
//! `r11` (saved RFLAGS). These are the only instructions through which a program talks to the
//! kernel, cowlab's or Linux's.

use core::arch::asm;

/// System-call numbers (Linux x86_64, `arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod nr {
    pub const READ: usize = 0;
    pub const WRITE: usize = 1;
    pub const OPEN: usize = 2;
    pub const CLOSE: usize = 3;
    pub const FSTAT: usize = 5;
    pub const LSEEK: usize = 8;
    pub const MMAP: usize = 9;
    pub const MPROTECT: usize = 10;
    pub const MUNMAP: usize = 11;
    pub const BRK: usize = 12;
    pub const RT_SIGACTION: usize = 13;
    pub const RT_SIGPROCMASK: usize = 14;
    pub const IOCTL: usize = 16;
    pub const PREAD64: usize = 17;
    pub const PWRITE64: usize = 18;
    pub const FTRUNCATE: usize = 77;
    pub const FALLOCATE: usize = 285;
    pub const READV: usize = 19;
    pub const WRITEV: usize = 20;
    pub const PIPE: usize = 22;
    pub const SCHED_YIELD: usize = 24;
    pub const MREMAP: usize = 25;
    pub const MADVISE: usize = 28;
    pub const DUP: usize = 32;
    pub const DUP2: usize = 33;
    pub const NANOSLEEP: usize = 35;
    pub const GETPID: usize = 39;
    pub const CLONE: usize = 56;
    pub const FORK: usize = 57;
    pub const VFORK: usize = 58;
    pub const EXECVE: usize = 59;
    pub const EXIT: usize = 60;
    pub const WAIT4: usize = 61;
    pub const KILL: usize = 62;
    pub const UNAME: usize = 63;
    pub const FCNTL: usize = 72;
    pub const GETCWD: usize = 79;
    pub const MKDIR: usize = 83;
    pub const READLINK: usize = 89;
    pub const GETRUSAGE: usize = 98;
    pub const SYSINFO: usize = 99;
    pub const GETUID: usize = 102;
    pub const GETPPID: usize = 110;
    pub const ARCH_PRCTL: usize = 158;
    pub const REBOOT: usize = 169;
    pub const GETTID: usize = 186;
    pub const GETDENTS64: usize = 217;
    pub const SET_TID_ADDRESS: usize = 218;
    pub const CLOCK_GETTIME: usize = 228;
    pub const CLOCK_GETRES: usize = 229;
    pub const CLOCK_NANOSLEEP: usize = 230;
    pub const EXIT_GROUP: usize = 231;
    pub const OPENAT: usize = 257;
    pub const NEWFSTATAT: usize = 262;
    pub const DUP3: usize = 292;
    pub const PIPE2: usize = 293;
    pub const PRLIMIT64: usize = 302;
    pub const GETRANDOM: usize = 318;
    pub const RSEQ: usize = 334;
}

/// `EINTR`: interrupted system call.
pub const EINTR: i32 = 4;

/// Errno values the tests check.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const ENXIO: i32 = 6;
    pub const E2BIG: i32 = 7;
    pub const EBADF: i32 = 9;
    pub const ECHILD: i32 = 10;
    pub const ENOMEM: i32 = 12;
    pub const EACCES: i32 = 13;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const ENOTTY: i32 = 25;
    pub const ESPIPE: i32 = 29;
    pub const EROFS: i32 = 30;
    pub const EPIPE: i32 = 32;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOSYS: i32 = 38;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ECANCELED: i32 = 125;
}

/// A failed system call: the positive `errno` the kernel returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// Turns a raw `rax` result into `Ok(value)` or `Err(errno)`.
pub fn check(ret: isize) -> Result<usize, Errno> {
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as usize)
    }
}

/// A system call with up to three arguments.
///
/// # Safety
/// 1. `n` and the arguments must form a call whose effects the caller allows: pointers among the
///    arguments must be valid for what call `n` does with them (reads or writes of the lengths
///    passed), for its whole duration.
#[inline(always)]
pub unsafe fn syscall3(n: usize, a0: usize, a1: usize, a2: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the call's memory effects are allowed (obligation 1); the
    // asm declares every register the syscall ABI clobbers.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// A system call with up to six arguments.
///
/// # Safety
/// The same obligation as [`syscall3`].
#[inline(always)]
pub unsafe fn syscall6(n: usize, args: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: as in `syscall3`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// `write(fd, buf)`: returns how many bytes were written.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call, which only reads
    // it.
    check(unsafe { syscall3(nr::WRITE, fd as usize, buf.as_ptr() as usize, buf.len()) })
}

/// Writes all of `buf` to `fd`, retrying short writes and `EINTR`.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), Errno> {
    while !buf.is_empty() {
        match write(fd, buf) {
            Ok(0) => return Err(Errno(0)),
            Ok(n) => buf = &buf[n..],
            Err(Errno(EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `getpid()`.
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no pointers and has no memory effects.
    unsafe { syscall3(nr::GETPID, 0, 0, 0) as i32 }
}

/// `getppid()`.
pub fn getppid() -> i32 {
    // SAFETY: getppid takes no pointers and has no memory effects.
    unsafe { syscall3(nr::GETPPID, 0, 0, 0) as i32 }
}

/// `exit(status)`: ends the calling thread.
pub fn exit(status: i32) -> ! {
    // SAFETY: exit takes no pointers; it does not return.
    unsafe { syscall3(nr::EXIT, status as usize, 0, 0) };
    unreachable_after_exit()
}

/// `exit_group(status)`: ends the process (every thread).
pub fn exit_group(status: i32) -> ! {
    // SAFETY: exit_group takes no pointers; it does not return.
    unsafe { syscall3(nr::EXIT_GROUP, status as usize, 0, 0) };
    unreachable_after_exit()
}

/// A kernel that returns from `exit` is broken; trap rather than run on.
fn unreachable_after_exit() -> ! {
    // SAFETY: `ud2` raises #UD and touches no memory.
    unsafe { asm!("ud2", options(nomem, nostack, noreturn)) }
}
