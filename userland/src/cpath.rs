//! Small helpers the file-system tests share: a NUL-terminated copy of a path, a raw system
//! call with up to six arguments, and a result as its errno.

use alloc_crate::vec::Vec;
use core::ffi::CStr;

use crate::sys::Errno;

/// A NUL-terminated copy of a path.
pub struct CPath(pub Vec<u8>);

impl CPath {
    pub fn new(s: &str) -> CPath {
        let mut v = Vec::from(s.as_bytes());
        v.push(0);
        CPath(v)
    }

    pub fn c(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.0).expect("one NUL at the end")
    }

    /// The address, as a system-call argument.
    pub fn ptr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// [`CPath::new`].
pub fn p(s: &str) -> CPath {
    CPath::new(s)
}

/// System call `n` with `args` (the rest zero).
pub fn sys(n: usize, args: &[usize]) -> Result<usize, Errno> {
    let mut a = [0usize; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the callers pass valid pointers to live buffers, or none.
    unsafe { crate::calls::raw(n, a) }
}

/// 0 for success, else the errno.
pub fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}
