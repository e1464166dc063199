//! Raw Linux x86_64 system calls.
//!
//! The ABI: number in `rax`, arguments in `rdi, rsi, rdx, r10, r8, r9`, result in `rax`
//! (`-4095..=-1` is `-errno`); the `syscall` instruction clobbers `rcx` (return address) and
//! `r11` (saved RFLAGS). These are the only instructions through which a program talks to the
//! kernel, cowlab's or Linux's.

use core::arch::asm;

/// System-call numbers (Linux x86_64, `arch/x86/entry/syscalls/syscall_64.tbl`).
pub mod nr {
    pub const WRITE: usize = 1;
    pub const GETPID: usize = 39;
    pub const EXIT: usize = 60;
    pub const GETPPID: usize = 110;
    pub const EXIT_GROUP: usize = 231;
}

/// `EINTR`: interrupted system call.
pub const EINTR: i32 = 4;

/// A failed system call: the positive `errno` the kernel returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

/// Turns a raw `rax` result into `Ok(value)` or `Err(errno)`.
fn check(ret: isize) -> Result<usize, Errno> {
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
