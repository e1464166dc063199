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

/// System-call numbers of the file-system and io_uring wrappers below.
mod fsnr {
    pub const RENAME: usize = 82;
    pub const RMDIR: usize = 84;
    pub const UNLINK: usize = 87;
    pub const STAT: usize = 4;
    pub const STATFS: usize = 137;
    pub const FSTATFS: usize = 138;
    pub const UNLINKAT: usize = 263;
    pub const RENAMEAT2: usize = 316;
    pub const MEMFD_CREATE: usize = 319;
    pub const IO_URING_SETUP: usize = 425;
    pub const IO_URING_ENTER: usize = 426;
    pub const IO_URING_REGISTER: usize = 427;
}

/// Reads the file at `path` into `buf` until `buf` is full or the file ends (a /proc file may
/// come in several reads): the number of bytes read, or None if it cannot be opened. Allocates
/// nothing, so tests may call it while they measure memory.
pub fn read_file(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    let fd = open(path, O_RDONLY).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match read(fd, &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let _ = close(fd);
    Some(n)
}

pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
/// Transfers go between the device and the user pages (pinned), not through a cache.
pub const O_DIRECT: u32 = 0o40000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_CLOEXEC: u32 = 0o2000000;
/// `__O_TMPFILE | O_DIRECTORY`.
pub const O_TMPFILE: u32 = 0o20200000;
pub const AT_FDCWD: i32 = -100;
pub const AT_REMOVEDIR: u32 = 0x200;
pub const RENAME_NOREPLACE: u32 = 1;
pub const MAP_SHARED: u32 = 0x01;
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
/// `statfs.f_type` of tmpfs.
pub const TMPFS_MAGIC: u64 = 0x0102_1994;

/// `openat(dirfd, path, flags, mode)`.
pub fn openat(dirfd: i32, path: &CStr, flags: u32, mode: u32) -> Result<i32, Errno> {
    sc!(nr::OPENAT, dirfd as isize, path.as_ptr(), flags, mode).map(|fd| fd as i32)
}

/// `open(path, flags, mode)` (the mode matters with `O_CREAT`/`O_TMPFILE`).
pub fn open_mode(path: &CStr, flags: u32, mode: u32) -> Result<i32, Errno> {
    sc!(nr::OPEN, path.as_ptr(), flags, mode).map(|fd| fd as i32)
}

pub fn unlink(path: &CStr) -> Result<usize, Errno> {
    sc!(fsnr::UNLINK, path.as_ptr())
}

pub fn unlinkat(dirfd: i32, path: &CStr, flags: u32) -> Result<usize, Errno> {
    sc!(fsnr::UNLINKAT, dirfd as isize, path.as_ptr(), flags)
}

pub fn rmdir(path: &CStr) -> Result<usize, Errno> {
    sc!(fsnr::RMDIR, path.as_ptr())
}

/// `link(old, new)` (86).
pub fn link(old: &CStr, new: &CStr) -> Result<usize, Errno> {
    sc!(86, old.as_ptr(), new.as_ptr())
}

pub const AT_EMPTY_PATH: u32 = 0x1000;

/// `linkat(olddirfd, old, newdirfd, new, flags)` (265).
pub fn linkat(
    olddir: i32,
    old: &CStr,
    newdir: i32,
    new: &CStr,
    flags: u32,
) -> Result<usize, Errno> {
    sc!(
        265,
        olddir as isize,
        old.as_ptr(),
        newdir as isize,
        new.as_ptr(),
        flags
    )
}

pub fn rename(old: &CStr, new: &CStr) -> Result<usize, Errno> {
    sc!(fsnr::RENAME, old.as_ptr(), new.as_ptr())
}

pub fn renameat2(
    olddir: i32,
    old: &CStr,
    newdir: i32,
    new: &CStr,
    flags: u32,
) -> Result<usize, Errno> {
    sc!(
        fsnr::RENAMEAT2,
        olddir as isize,
        old.as_ptr(),
        newdir as isize,
        new.as_ptr(),
        flags
    )
}

/// `memfd_create(name, flags)`.
pub fn memfd_create(name: &CStr, flags: u32) -> Result<i32, Errno> {
    sc!(fsnr::MEMFD_CREATE, name.as_ptr(), flags).map(|fd| fd as i32)
}

/// Linux `struct stat` (x86_64, 144 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub pad0: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_times: [i64; 6],
    pub reserved: [i64; 3],
}

pub fn fstat(fd: i32) -> Result<Stat, Errno> {
    let mut st = Stat::default();
    sc!(nr::FSTAT, fd, &mut st as *mut Stat)?;
    Ok(st)
}

pub fn stat(path: &CStr) -> Result<Stat, Errno> {
    let mut st = Stat::default();
    sc!(fsnr::STAT, path.as_ptr(), &mut st as *mut Stat)?;
    Ok(st)
}

/// Linux `struct statfs` (x86_64, 120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct StatFs {
    pub f_type: u64,
    pub f_bsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: u64,
    pub f_frsize: u64,
    pub f_flags: u64,
    pub f_spare: [u64; 4],
}

pub fn statfs(path: &CStr) -> Result<StatFs, Errno> {
    let mut st = StatFs::default();
    sc!(fsnr::STATFS, path.as_ptr(), &mut st as *mut StatFs)?;
    Ok(st)
}

pub fn fstatfs(fd: i32) -> Result<StatFs, Errno> {
    let mut st = StatFs::default();
    sc!(fsnr::FSTATFS, fd, &mut st as *mut StatFs)?;
    Ok(st)
}

/// `getdents64(fd, buf)`: bytes of `struct linux_dirent64` records written.
pub fn getdents64(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    sc!(nr::GETDENTS64, fd, buf.as_mut_ptr(), buf.len())
}

/// `mmap(addr, len, prot, flags, fd, offset)` of a file.
///
/// # Safety
/// With `MAP_FIXED` the new mapping replaces whatever `[addr, addr + len)` held: the caller
/// must own that range.
pub unsafe fn mmap_fd(
    addr: usize,
    len: usize,
    prot: u32,
    flags: u32,
    fd: i32,
    offset: u64,
) -> Result<usize, Errno> {
    sc!(nr::MMAP, addr, len, prot, flags, fd, offset)
}

/// Linux `struct io_sqring_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IoSqringOffsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub flags: u32,
    pub dropped: u32,
    pub array: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// Linux `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IoCqringOffsets {
    pub head: u32,
    pub tail: u32,
    pub ring_mask: u32,
    pub ring_entries: u32,
    pub overflow: u32,
    pub cqes: u32,
    pub flags: u32,
    pub resv1: u32,
    pub user_addr: u64,
}

/// Linux `struct io_uring_params` (120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IoUringParams {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub flags: u32,
    pub sq_thread_cpu: u32,
    pub sq_thread_idle: u32,
    pub features: u32,
    pub wq_fd: u32,
    pub resv: [u32; 3],
    pub sq_off: IoSqringOffsets,
    pub cq_off: IoCqringOffsets,
}

/// Linux `struct io_uring_sqe` (64 bytes), with the fields of read/write operations.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IoUringSqe {
    pub opcode: u8,
    pub flags: u8,
    pub ioprio: u16,
    pub fd: i32,
    pub off: u64,
    pub addr: u64,
    pub len: u32,
    pub rw_flags: u32,
    pub user_data: u64,
    pub buf_index: u16,
    pub personality: u16,
    pub splice_fd_in: i32,
    pub addr3: u64,
    pub pad2: u64,
}

/// Linux `struct io_uring_cqe` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct IoUringCqe {
    pub user_data: u64,
    pub res: i32,
    pub flags: u32,
}

pub const IORING_OFF_SQ_RING: u64 = 0;
pub const IORING_OFF_CQ_RING: u64 = 0x800_0000;
pub const IORING_OFF_SQES: u64 = 0x1000_0000;
pub const IORING_FEAT_SINGLE_MMAP: u32 = 1;
pub const IORING_ENTER_GETEVENTS: u32 = 1;
pub const IORING_REGISTER_BUFFERS: u32 = 0;
pub const IORING_UNREGISTER_BUFFERS: u32 = 1;
pub const IORING_OP_NOP: u8 = 0;
pub const IORING_OP_READV: u8 = 1;
pub const IORING_OP_WRITEV: u8 = 2;
pub const IORING_OP_READ_FIXED: u8 = 4;
pub const IORING_OP_WRITE_FIXED: u8 = 5;
pub const IORING_OP_READ: u8 = 22;
pub const IORING_OP_WRITE: u8 = 23;
pub const IOSQE_FIXED_FILE: u8 = 1;
pub const IOSQE_IO_LINK: u8 = 4;
pub const IOSQE_CQE_SKIP_SUCCESS: u8 = 0x40;

/// `io_uring_setup(entries, params)`: the ring's descriptor.
pub fn io_uring_setup(entries: u32, params: &mut IoUringParams) -> Result<i32, Errno> {
    sc!(fsnr::IO_URING_SETUP, entries, params as *mut IoUringParams).map(|fd| fd as i32)
}

/// `io_uring_enter(fd, to_submit, min_complete, flags, NULL, 0)`: the number submitted.
///
/// # Safety
/// The kernel executes the submitted SQEs: every buffer address in them must be valid for
/// what the operation does with it (written by reads, read by writes) until they complete.
pub unsafe fn io_uring_enter(
    fd: i32,
    to_submit: u32,
    min_complete: u32,
    flags: u32,
) -> Result<usize, Errno> {
    sc!(
        fsnr::IO_URING_ENTER,
        fd,
        to_submit,
        min_complete,
        flags,
        0,
        0
    )
}

/// `io_uring_register(fd, opcode, arg, nr_args)` with a raw argument.
///
/// # Safety
/// `arg` must be valid for what `opcode` does with it.
pub unsafe fn io_uring_register_raw(
    fd: i32,
    opcode: u32,
    arg: usize,
    nr_args: u32,
) -> Result<usize, Errno> {
    sc!(fsnr::IO_URING_REGISTER, fd, opcode, arg, nr_args)
}

/// `IORING_REGISTER_BUFFERS` of `(base, len)` pairs (`struct iovec`s). Registration only pins
/// the memory; it is fixed operations (through [`io_uring_enter`]) that later write it.
pub fn io_uring_register_buffers(fd: i32, iovecs: &[[usize; 2]]) -> Result<usize, Errno> {
    sc!(
        fsnr::IO_URING_REGISTER,
        fd,
        IORING_REGISTER_BUFFERS,
        iovecs.as_ptr(),
        iovecs.len()
    )
}

pub fn io_uring_unregister_buffers(fd: i32) -> Result<usize, Errno> {
    sc!(fsnr::IO_URING_REGISTER, fd, IORING_UNREGISTER_BUFFERS, 0, 0)
}
