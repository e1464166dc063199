//! User pointers: the one way a system call reads or writes the calling process's memory.
//!
//! A user address arrives as a number. [`UserSlice`] and [`UserPtr`] check it against the user
//! half (`[0, USER_END)`, no wrap-around) when they are made, and copy with `cowlab_user_copy`,
//! a `rep movsb` whose fault is registered in the exception table (quiet fixup). A page fault
//! during the copy first goes to the memory manager (`vm::handle_page_fault`: demand paging,
//! COW); only if it refuses does the fixup stop the copy, and the system call answers `EFAULT`.
//! Invariant: no copy runs while the caller holds the current address space's lock (the fault
//! handler would find it locked); the system calls take that lock only around memory-manager
//! calls, never around a copy.

use alloc::string::String;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::mem::{size_of, MaybeUninit};

use cowlab_mm::aspace::USER_END;

use crate::errno::Errno;
use crate::extable::{cowlab_user_copy, cowlab_user_copy_nofault};

/// `len` bytes of user memory at `addr`, range-checked.
#[derive(Clone, Copy, Debug)]
pub struct UserSlice {
    addr: u64,
    len: usize,
}

impl UserSlice {
    /// `EFAULT` unless `[addr, addr + len)` lies in the user half.
    pub fn new(addr: u64, len: usize) -> Result<UserSlice, Errno> {
        let end = addr.checked_add(len as u64).ok_or(Errno::EFAULT)?;
        if end > USER_END {
            return Err(Errno::EFAULT);
        }
        Ok(UserSlice { addr, len })
    }

    /// No bytes at address 0 (a placeholder in fixed-size arrays of slices).
    pub const fn empty() -> UserSlice {
        UserSlice { addr: 0, len: 0 }
    }

    /// The user address of the first byte.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The sub-slice `[offset, offset + len)` (clamped to this slice).
    pub fn sub(&self, offset: usize, len: usize) -> UserSlice {
        let offset = offset.min(self.len);
        UserSlice {
            addr: self.addr + offset as u64,
            len: len.min(self.len - offset),
        }
    }

    /// Copies the first `buf.len()` bytes (at most `len`) into `buf`.
    pub fn read(&self, buf: &mut [u8]) -> Result<(), Errno> {
        let n = buf.len().min(self.len);
        // SAFETY: the destination is a kernel buffer of `n` bytes; the source range was checked
        // to be user memory, and a fault on it is recovered by the copy routine's fixup.
        let left = unsafe { cowlab_user_copy(buf.as_mut_ptr(), self.addr as *const u8, n as u64) };
        if left == 0 {
            Ok(())
        } else {
            Err(Errno::EFAULT)
        }
    }

    /// Copies into `buf` (at most `len` bytes) until done or the first fault: the bytes copied
    /// (Linux `copy_from_user`'s "bytes not copied", turned around). The caller decides what a
    /// short copy means (Linux's rule for reads and writes: the bytes done, `EFAULT` if none).
    pub fn read_partial(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len);
        // SAFETY: as `read`: a kernel destination of `n` bytes, a checked user source whose
        // faults the copy routine's fixup recovers.
        let left = unsafe { cowlab_user_copy(buf.as_mut_ptr(), self.addr as *const u8, n as u64) };
        n - left as usize
    }

    /// Copies `data` (at most `len` bytes) to the start of the slice until done or the first
    /// fault: the bytes copied.
    pub fn write_partial(&self, data: &[u8]) -> usize {
        let n = data.len().min(self.len);
        // SAFETY: as `write`: a checked user destination whose faults the fixup recovers, a
        // kernel source of at least `n` bytes.
        let left = unsafe { cowlab_user_copy(self.addr as *mut u8, data.as_ptr(), n as u64) };
        n - left as usize
    }

    /// Copies `len` bytes (at most the slice's) of frame memory at `frame` to the start of the
    /// slice until done or the first fault: the bytes copied. For a page-cache read straight
    /// from the cached frame (no kernel buffer between). The caller holds a reference to the
    /// frame(s) `[frame, frame + len)`, so they stay allocated data pages for the copy.
    pub fn write_partial_from_frame(&self, frame: cowlab_mm::PhysAddr, len: usize) -> usize {
        let n = len.min(self.len);
        let src = crate::memory::phys_to_virt(frame);
        // SAFETY: a checked user destination whose faults the fixup recovers; the source is
        // `n` bytes of the direct map over frames the caller's reference keeps allocated.
        // They are read by the copy routine's raw string move, never through a Rust reference
        // (a user mapping of the same page may write it meanwhile, as with every page-cache
        // copy).
        let left = unsafe { cowlab_user_copy(self.addr as *mut u8, src, n as u64) };
        n - left as usize
    }

    /// Copies the first `len` bytes (at most the slice's) into frame memory at `frame` with
    /// page faults not served (Linux `copy_page_from_iter_atomic` under `pagefault_disable`):
    /// the copy stops at the first page that is not present, whatever the memory manager
    /// would have done with it. The bytes copied. For a buffered write's copy into the cache
    /// page it holds locked, under the cache's spin lock: a served fault on a mapping of the
    /// same file would spin on that lock (or wait for the page's lock). The caller holds a
    /// reference to the frame(s).
    pub fn read_partial_to_frame_nofault(&self, frame: cowlab_mm::PhysAddr, len: usize) -> usize {
        let n = len.min(self.len);
        let dst = crate::memory::phys_to_virt(frame);
        // SAFETY: a checked user source whose faults the fixup recovers (none is served);
        // the destination is `n` bytes of the direct map over frames the caller's reference
        // keeps allocated, written by the copy routine's raw string move, never through a
        // Rust reference (a user mapping of the same page may read it meanwhile).
        let left = unsafe { cowlab_user_copy_nofault(dst, self.addr as *const u8, n as u64) };
        n - left as usize
    }

    /// Reads the whole slice into a new vector.
    pub fn read_vec(&self) -> Result<Vec<u8>, Errno> {
        let mut buf = alloc::vec![0; self.len];
        self.read(&mut buf)?;
        Ok(buf)
    }

    /// Copies `data` (at most `len` bytes of it) to the start of the slice.
    pub fn write(&self, data: &[u8]) -> Result<(), Errno> {
        let n = data.len().min(self.len);
        // SAFETY: the destination range was checked to be user memory (a fault there is
        // recovered by the fixup); the source is a kernel slice of at least `n` bytes.
        let left = unsafe { cowlab_user_copy(self.addr as *mut u8, data.as_ptr(), n as u64) };
        if left == 0 {
            Ok(())
        } else {
            Err(Errno::EFAULT)
        }
    }
}

/// A user pointer to one plain-data `T` (a C struct of the ABI: integers only, any bit pattern
/// valid).
pub struct UserPtr<T> {
    slice: UserSlice,
    _type: PhantomData<T>,
}

impl<T: Copy> UserPtr<T> {
    pub fn new(addr: u64) -> Result<UserPtr<T>, Errno> {
        Ok(UserPtr {
            slice: UserSlice::new(addr, size_of::<T>())?,
            _type: PhantomData,
        })
    }

    /// Reads the value. `T` must be valid for any bit pattern (ABI structs of integers).
    pub fn read(&self) -> Result<T, Errno> {
        let mut value = MaybeUninit::<T>::zeroed();
        // SAFETY: `value` is `size_of::<T>()` writable bytes.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(value.as_mut_ptr() as *mut u8, size_of::<T>())
        };
        self.slice.read(bytes)?;
        // SAFETY: every byte was written by the copy, and `T` is plain data (obligation above).
        Ok(unsafe { value.assume_init() })
    }

    /// Writes the value's bytes.
    pub fn write(&self, value: &T) -> Result<(), Errno> {
        // SAFETY: `value` is a valid `T`, readable as `size_of::<T>()` bytes; ABI structs have no
        // padding we care to hide (they are built zeroed).
        let bytes =
            unsafe { core::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()) };
        self.slice.write(bytes)
    }
}

/// Reads a NUL-terminated string of at most `max` bytes (without the NUL): `EFAULT` for a bad
/// address, `ENAMETOOLONG` if no NUL comes in time, `EINVAL` if it is not UTF-8 (Linux accepts
/// any bytes; cowlab's names and arguments are UTF-8 strings).
pub fn read_cstr(addr: u64, max: usize) -> Result<String, Errno> {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        // Read up to the end of the page, so a string ending before an unmapped page is fine.
        let chunk = (4096 - (at % 4096) as usize).min(max - out.len());
        let mut buf = [0u8; 4096];
        UserSlice::new(at, chunk)?.read(&mut buf[..chunk])?;
        if let Some(nul) = buf[..chunk].iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..nul]);
            return String::from_utf8(out).map_err(|_| Errno::EINVAL);
        }
        out.extend_from_slice(&buf[..chunk]);
        at += chunk as u64;
    }
    Err(Errno::ENAMETOOLONG)
}
