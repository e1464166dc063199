//! Safe wrappers over the system calls the programs use. Each is one line over
//! [`crate::sys::syscall6`]; pointers come from Rust references, so the calls are sound.

use core::ffi::CStr;

use crate::sys::{check, nr, syscall6, Errno};

/// A system call with raw arguments; `Err(errno)` for `-errno`.
///
/// # Safety
/// As [`syscall6`]: pointer arguments must be valid for what call `n` does with them.
pub unsafe fn raw(n: usize, args: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: forwarded obligation.
    check(unsafe { syscall6(n, args) })
}

macro_rules! sc {
    ($n:expr $(, $a:expr)*) => {{
        let mut args = [0usize; 6];
        let values: &[usize] = &[$($a as usize),*];
        args[..values.len()].copy_from_slice(values);
        // SAFETY: every wrapper below passes pointers derived from live Rust references with
        // the lengths they are valid for, or plain integers.
        unsafe { raw($n, args) }
    }};
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    sc!(nr::READ, fd, buf.as_mut_ptr(), buf.len())
}

pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    sc!(nr::WRITE, fd, buf.as_ptr(), buf.len())
}

pub fn open(path: &CStr, flags: u32) -> Result<i32, Errno> {
    sc!(nr::OPEN, path.as_ptr(), flags, 0).map(|fd| fd as i32)
}

/// `pread64`. The offset is unsigned here (the tests pass page offsets); the kernel's `off_t`
/// is signed, so an offset above `i64::MAX` reaches it as a negative one (EINVAL).
pub fn pread(fd: i32, buf: &mut [u8], off: u64) -> Result<usize, Errno> {
    sc!(nr::PREAD64, fd, buf.as_mut_ptr(), buf.len(), off)
}

/// `pwrite64`; the offset as for [`pread`].
pub fn pwrite(fd: i32, buf: &[u8], off: u64) -> Result<usize, Errno> {
    sc!(nr::PWRITE64, fd, buf.as_ptr(), buf.len(), off)
}

pub fn ftruncate(fd: i32, len: i64) -> Result<usize, Errno> {
    sc!(nr::FTRUNCATE, fd, len)
}

pub fn fallocate(fd: i32, mode: i32, off: i64, len: i64) -> Result<usize, Errno> {
    sc!(nr::FALLOCATE, fd, mode, off, len)
}

pub fn close(fd: i32) -> Result<usize, Errno> {
    sc!(nr::CLOSE, fd)
}

pub fn lseek(fd: i32, offset: i64, whence: u32) -> Result<usize, Errno> {
    sc!(nr::LSEEK, fd, offset, whence)
}

pub fn pipe() -> Result<[i32; 2], Errno> {
    let mut fds = [0i32; 2];
    sc!(nr::PIPE, fds.as_mut_ptr())?;
    Ok(fds)
}

pub fn pipe2(flags: u32) -> Result<[i32; 2], Errno> {
    let mut fds = [0i32; 2];
    sc!(nr::PIPE2, fds.as_mut_ptr(), flags)?;
    Ok(fds)
}

pub fn dup(fd: i32) -> Result<i32, Errno> {
    sc!(nr::DUP, fd).map(|fd| fd as i32)
}

pub fn dup2(old: i32, new: i32) -> Result<i32, Errno> {
    sc!(nr::DUP2, old, new).map(|fd| fd as i32)
}

pub fn dup3(old: i32, new: i32, flags: u32) -> Result<i32, Errno> {
    sc!(nr::DUP3, old, new, flags).map(|fd| fd as i32)
}

pub fn fcntl(fd: i32, cmd: u32, arg: usize) -> Result<usize, Errno> {
    sc!(nr::FCNTL, fd, cmd, arg)
}

/// `fork()`: 0 in the child, the child's pid in the parent.
pub fn fork() -> Result<i32, Errno> {
    sc!(nr::FORK).map(|pid| pid as i32)
}

/// `execve(path, argv, envp)`: `argv`/`envp` are NULL-terminated arrays of C strings.
pub fn execve(path: &CStr, argv: &[*const u8], envp: &[*const u8]) -> Errno {
    match sc!(nr::EXECVE, path.as_ptr(), argv.as_ptr(), envp.as_ptr()) {
        Ok(_) => Errno(0),
        Err(e) => e,
    }
}

/// `wait4(pid, &status, options, NULL)`: `(pid, status)`.
pub fn waitpid(pid: i32, options: u32) -> Result<(i32, i32), Errno> {
    let mut status = 0i32;
    let pid = sc!(nr::WAIT4, pid as isize, &mut status as *mut i32, options, 0)?;
    Ok((pid as i32, status))
}

pub fn kill(pid: i32, signal: i32) -> Result<usize, Errno> {
    sc!(nr::KILL, pid as isize, signal)
}

pub const PROT_NONE: u32 = 0;
pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const MAP_PRIVATE: u32 = 0x02;
pub const MAP_FIXED: u32 = 0x10;
pub const MAP_ANONYMOUS: u32 = 0x20;

pub fn mmap(addr: usize, len: usize, prot: u32, flags: u32) -> Result<usize, Errno> {
    sc!(nr::MMAP, addr, len, prot, flags, -1isize, 0)
}

pub fn munmap(addr: usize, len: usize) -> Result<usize, Errno> {
    sc!(nr::MUNMAP, addr, len)
}

pub fn mprotect(addr: usize, len: usize, prot: u32) -> Result<usize, Errno> {
    sc!(nr::MPROTECT, addr, len, prot)
}

pub fn madvise(addr: usize, len: usize, advice: i32) -> Result<usize, Errno> {
    sc!(nr::MADVISE, addr, len, advice)
}

pub fn mremap(addr: usize, old: usize, new: usize, flags: u32) -> Result<usize, Errno> {
    sc!(nr::MREMAP, addr, old, new, flags, 0)
}

pub fn brk(addr: usize) -> usize {
    sc!(nr::BRK, addr).unwrap_or(0)
}

/// Minor page faults so far (`getrusage(RUSAGE_SELF).ru_minflt`; `who` = -1 for children).
pub fn minflt(who: i32) -> Result<i64, Errno> {
    let mut usage = [0i64; 18];
    sc!(nr::GETRUSAGE, who as isize, usage.as_mut_ptr())?;
    Ok(usage[8])
}

pub fn sched_yield() {
    let _ = sc!(nr::SCHED_YIELD);
}

/// Sleeps `ms` milliseconds.
pub fn sleep_ms(ms: u64) -> Result<usize, Errno> {
    let ts = [(ms / 1000) as i64, ((ms % 1000) * 1_000_000) as i64];
    sc!(nr::NANOSLEEP, ts.as_ptr(), 0)
}

/// Monotonic time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = [0i64; 2];
    let _ = sc!(nr::CLOCK_GETTIME, 1, ts.as_mut_ptr());
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

pub const LINUX_REBOOT_MAGIC1: usize = 0xfee1_dead;
pub const LINUX_REBOOT_MAGIC2: usize = 0x2812_1969;
pub const LINUX_REBOOT_CMD_POWER_OFF: usize = 0x4321_fedc;

/// Powers off; on cowlab the status is the QEMU exit status (an extension, see the kernel).
pub fn power_off(status: i32) -> Result<usize, Errno> {
    sc!(
        nr::REBOOT,
        LINUX_REBOOT_MAGIC1,
        LINUX_REBOOT_MAGIC2,
        LINUX_REBOOT_CMD_POWER_OFF,
        status as usize
    )
}

/// Wait-status decoding (`<sys/wait.h>`).
pub fn wifexited(status: i32) -> bool {
    status & 0x7f == 0
}

pub fn wexitstatus(status: i32) -> i32 {
    (status >> 8) & 0xff
}

pub fn wifsignaled(status: i32) -> bool {
    ((status & 0x7f) + 1) as i8 >> 1 > 0
}

pub fn wtermsig(status: i32) -> i32 {
    status & 0x7f
}

/// `_exit`: ends the process without running anything else.
pub fn exit_now(status: i32) -> ! {
    crate::sys::exit_group(status)
}
