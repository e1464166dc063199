//! The raw Linux calls the suite needs beyond the runtime's wrappers, and the memory helpers
//! (volatile fills and compares, so no access is optimised away around a fork or a pin).

use cowlab_userland::calls::{close, raw, read, write};
use cowlab_userland::sys::Errno;

pub const PAGE: usize = 4096;

const NR_IOCTL: usize = 16;
const NR_MMAP: usize = 9;
const NR_OPEN: usize = 2;
const NR_VMSPLICE: usize = 278;
const NR_MEMFD_CREATE: usize = 319;

pub const O_RDWR: u32 = 2;
/// `O_TMPFILE` (`__O_TMPFILE | O_DIRECTORY`).
pub const O_TMPFILE: u32 = 0o20_200_000;
pub const MAP_SHARED: u32 = 0x01;

/// `mmap(NULL, len, prot, flags, fd, 0)`.
pub fn mmap_fd(len: usize, prot: u32, flags: u32, fd: i32) -> Result<usize, Errno> {
    // SAFETY: a new mapping at an address the kernel picks; no user memory is passed.
    unsafe {
        raw(
            NR_MMAP,
            [0, len, prot as usize, flags as usize, fd as usize, 0],
        )
    }
}

/// `open(path, flags, mode)` (the runtime's `open` passes mode 0, which O_TMPFILE cannot use).
pub fn open_mode(path: &core::ffi::CStr, flags: u32, mode: u32) -> Result<i32, Errno> {
    // SAFETY: `path` is a NUL-terminated string alive for the call.
    unsafe {
        raw(
            NR_OPEN,
            [
                path.as_ptr() as usize,
                flags as usize,
                mode as usize,
                0,
                0,
                0,
            ],
        )
    }
    .map(|fd| fd as i32)
}

/// `memfd_create(name, 0)`.
pub fn memfd_create(name: &core::ffi::CStr) -> Result<i32, Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    unsafe { raw(NR_MEMFD_CREATE, [name.as_ptr() as usize, 0, 0, 0, 0, 0]) }.map(|fd| fd as i32)
}

/// `vmsplice(fd, {base, len}, 1, 0)`: the bytes spliced.
pub fn vmsplice(fd: i32, base: usize, len: usize) -> Result<usize, Errno> {
    let iov = [base, len];
    // SAFETY: one iovec naming memory of this process; vmsplice only takes references to it.
    unsafe {
        raw(
            NR_VMSPLICE,
            [fd as usize, iov.as_ptr() as usize, 1, 0, 0, 0],
        )
    }
}

/// `ioctl(fd, cmd, arg)`.
///
/// # Safety
/// `arg` must point at what `cmd` reads or writes, alive for the call.
pub unsafe fn ioctl(fd: i32, cmd: u64, arg: usize) -> Result<usize, Errno> {
    // SAFETY: forwarded obligation.
    unsafe { raw(NR_IOCTL, [fd as usize, cmd as usize, arg, 0, 0, 0]) }
}

/// Fills `len` bytes at `addr` with `v`: the 8-byte-aligned bulk with one `rep stosq` (a
/// real store to every word, as the volatile loop it replaced, but one instruction: a 1 GiB
/// hugetlb fill in a debug build took tens of seconds of TCG time as a loop), the rest a
/// byte at a time.
pub fn fill(addr: usize, len: usize, v: u8) {
    let word = u64::from(v) * 0x0101_0101_0101_0101;
    let words = if addr.is_multiple_of(8) { len / 8 } else { 0 };
    // SAFETY: callers pass a live writable mapping of at least `len` bytes; `rep stosq`
    // writes `words * 8 <= len` bytes from `addr` upwards (the ABI keeps DF clear).
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rcx") words => _,
            inout("rdi") addr => _,
            in("rax") word,
            options(nostack, preserves_flags),
        );
    }
    for i in words * 8..len {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u8, v) };
    }
}

/// Copies `out.len()` bytes from `addr` (the aligned bulk with one `rep movsq`).
pub fn copy_out(addr: usize, out: &mut [u8]) {
    let words = if addr.is_multiple_of(8) {
        out.len() / 8
    } else {
        0
    };
    // SAFETY: callers pass a live readable mapping of at least `out.len()` bytes; `rep
    // movsq` reads `words * 8` bytes from `addr` and writes as many into `out` (byte
    // granular, so `out` needs no alignment), which does not overlap a user mapping read.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            inout("rcx") words => _,
            inout("rsi") addr => _,
            inout("rdi") out.as_mut_ptr() => _,
            options(nostack, preserves_flags),
        );
    }
    for (i, b) in out.iter_mut().enumerate().skip(words * 8) {
        // SAFETY: as above.
        *b = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
    }
}

/// Whether the `want.len()` bytes at `addr` equal `want` (the aligned bulk with one
/// `repe cmpsq`, which stops at the first differing word).
pub fn same(addr: usize, want: &[u8]) -> bool {
    let words = if addr.is_multiple_of(8) {
        want.len() / 8
    } else {
        0
    };
    if words > 0 {
        let differ: u8;
        // SAFETY: callers pass a live readable mapping of at least `want.len()` bytes;
        // `repe cmpsq` only reads `words * 8` bytes of it and of `want`. With `words > 0`
        // ZF afterwards is the last compared pair's equality (set when all were equal).
        unsafe {
            core::arch::asm!(
                "repe cmpsq",
                "setne {differ}",
                differ = out(reg_byte) differ,
                inout("rcx") words => _,
                inout("rsi") addr => _,
                inout("rdi") want.as_ptr() => _,
                options(nostack, readonly),
            );
        }
        if differ != 0 {
            return false;
        }
    }
    for (i, &w) in want.iter().enumerate().skip(words * 8) {
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile((addr + i) as *const u8) } != w {
            return false;
        }
    }
    true
}

/// Reads one byte at `addr` (faults the page in for reading).
pub fn touch(addr: usize) -> u8 {
    // SAFETY: callers pass a live readable mapping.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// cow.c's `struct comm_pipes`: the child says it is ready on one pipe, the parent answers on
/// the other.
pub struct CommPipes {
    pub child_ready: [i32; 2],
    pub parent_ready: [i32; 2],
}

impl CommPipes {
    pub fn new() -> Result<CommPipes, Errno> {
        let child_ready = cowlab_userland::calls::pipe()?;
        match cowlab_userland::calls::pipe() {
            Ok(parent_ready) => Ok(CommPipes {
                child_ready,
                parent_ready,
            }),
            Err(e) => {
                let _ = close(child_ready[0]);
                let _ = close(child_ready[1]);
                Err(e)
            }
        }
    }

    pub fn signal_child_ready(&self) {
        let _ = write(self.child_ready[1], b"0");
    }

    pub fn signal_parent_ready(&self) {
        let _ = write(self.parent_ready[1], b"0");
    }

    /// Waits for the child's byte (or its exit: a closed pipe reads 0 once both ends close).
    pub fn wait_child_ready(&self) -> bool {
        wait_byte(self.child_ready[0])
    }

    pub fn wait_parent_ready(&self) -> bool {
        wait_byte(self.parent_ready[0])
    }
}

fn wait_byte(fd: i32) -> bool {
    let mut b = [0u8; 1];
    loop {
        match read(fd, &mut b) {
            Ok(1) => return true,
            Err(Errno(cowlab_userland::sys::EINTR)) => {}
            _ => return false,
        }
    }
}

impl Drop for CommPipes {
    fn drop(&mut self) {
        for fd in self.child_ready.iter().chain(self.parent_ready.iter()) {
            let _ = close(*fd);
        }
    }
}

/// Reads exactly `buf.len()` bytes (fewer only at end of file or on an error).
pub fn read_full(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut n = 0;
    while n < buf.len() {
        match read(fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(Errno(cowlab_userland::sys::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Waits for `pid`; its exit status, or `None` if it did not exit normally.
pub fn wait_exit(pid: i32) -> Option<i32> {
    use cowlab_userland::calls::{waitpid, wexitstatus, wifexited};
    match waitpid(pid, 0) {
        Ok((_, status)) if wifexited(status) => Some(wexitstatus(status)),
        _ => None,
    }
}
