//! Resource limits: `getrlimit`, `setrlimit`, `prlimit64` and Linux's resource numbers.

use crate::calls::raw;
use crate::sys::Errno;

pub const GETRLIMIT: usize = 97;
pub const SETRLIMIT: usize = 160;
pub const PRLIMIT64: usize = 302;

pub const RLIMIT_CPU: u32 = 0;
pub const RLIMIT_STACK: u32 = 3;
pub const RLIMIT_CORE: u32 = 4;
pub const RLIMIT_NPROC: u32 = 6;
pub const RLIMIT_NOFILE: u32 = 7;
pub const RLIMIT_MEMLOCK: u32 = 8;
pub const RLIMIT_AS: u32 = 9;
pub const RLIMIT_SIGPENDING: u32 = 11;
pub const RLIMIT_MSGQUEUE: u32 = 12;
pub const RLIMIT_NICE: u32 = 13;
pub const RLIMIT_RTPRIO: u32 = 14;
pub const RLIM_NLIMITS: u32 = 16;
pub const RLIM_INFINITY: u64 = u64::MAX;

/// `struct rlimit`: (soft, hard).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(C)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

pub fn getrlimit(resource: u32) -> Result<Rlimit, Errno> {
    let mut r = Rlimit::default();
    // SAFETY: `r` is a live 16-byte `struct rlimit` the call writes.
    unsafe {
        raw(
            GETRLIMIT,
            [
                resource as usize,
                &mut r as *mut Rlimit as usize,
                0,
                0,
                0,
                0,
            ],
        )
    }?;
    Ok(r)
}

pub fn setrlimit(resource: u32, r: Rlimit) -> Result<usize, Errno> {
    // SAFETY: `r` is a live 16-byte `struct rlimit` the call reads.
    unsafe {
        raw(
            SETRLIMIT,
            [resource as usize, &r as *const Rlimit as usize, 0, 0, 0, 0],
        )
    }
}

/// Sets only the soft limit, keeping the hard one.
pub fn set_soft(resource: u32, cur: u64) -> Result<usize, Errno> {
    let r = getrlimit(resource)?;
    setrlimit(resource, Rlimit { cur, max: r.max })
}

/// `prlimit64(pid, resource, new, old)`: returns the old limit.
pub fn prlimit(pid: i32, resource: u32, new: Option<Rlimit>) -> Result<Rlimit, Errno> {
    let mut old = Rlimit::default();
    let new_ptr = new.as_ref().map_or(0, |n| n as *const Rlimit as usize);
    // SAFETY: `new` (if any) and `old` are live 16-byte `struct rlimit`s.
    unsafe {
        raw(
            PRLIMIT64,
            [
                pid as usize,
                resource as usize,
                new_ptr,
                &mut old as *mut Rlimit as usize,
                0,
                0,
            ],
        )
    }?;
    Ok(old)
}
