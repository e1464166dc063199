//! mlock, mlock2, munlock, mlockall, munlockall: thin decoding in front of `cowlab_mm::mlock`,
//! with the caller's `RLIMIT_MEMLOCK` (Linux `do_mlock`, `SYSCALL_DEFINE1(mlockall)`). As for
//! io_uring registrations, the limit is enforced as for an unprivileged process (root's
//! `CAP_IPC_LOCK` bypass is not modelled; see `proc::rlimit`).
#![deny(unsafe_code)]

use cowlab_mm::mlock::LockMode;
use cowlab_mm::VirtAddr;

use super::{Args, Errno, SysResult};
use crate::memory;
use crate::proc::current_aspace;
use crate::proc::rlimit::{rlimit, RLIMIT_MEMLOCK};

const MLOCK_ONFAULT: u64 = 1;
const MCL_CURRENT: u64 = 1;
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;

/// The caller's `RLIMIT_MEMLOCK` in pages; `EPERM` when it is 0 (Linux `can_do_mlock`).
fn lock_limit() -> Result<u64, Errno> {
    match rlimit(RLIMIT_MEMLOCK) {
        0 => Err(Errno::EPERM),
        bytes => Ok(bytes / 4096),
    }
}

fn do_mlock(addr: u64, len: u64, mode: LockMode) -> SysResult {
    let limit = lock_limit()?;
    if addr >= cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOMEM);
    }
    current_aspace()
        .lock()
        .mlock(memory::mm(), VirtAddr::new(addr), len as usize, mode, limit)?;
    Ok(0)
}

pub fn mlock(a: Args) -> SysResult {
    do_mlock(a.get(0), a.get(1), LockMode::Populate)
}

pub fn mlock2(a: Args) -> SysResult {
    let mode = match a.get(2) {
        0 => LockMode::Populate,
        MLOCK_ONFAULT => LockMode::OnFault,
        _ => return Err(Errno::EINVAL),
    };
    do_mlock(a.get(0), a.get(1), mode)
}

pub fn munlock(a: Args) -> SysResult {
    if a.get(0) >= cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOMEM);
    }
    current_aspace()
        .lock()
        .munlock(memory::mm(), VirtAddr::new(a.get(0)), a.get(1) as usize)?;
    Ok(0)
}

/// mlockall(flags): `MCL_CURRENT` locks every mapping now, `MCL_FUTURE` every mapping made
/// later (`mm->def_flags`: mmap, brk and mremap growth then charge `RLIMIT_MEMLOCK` through
/// `rlimit::mlock_future_ok`), both populated unless `MCL_ONFAULT` (Linux
/// `apply_mlockall_flags`).
pub fn mlockall(a: Args) -> SysResult {
    let flags = a.get(0);
    if flags == 0 || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0 || flags == MCL_ONFAULT
    {
        return Err(Errno::EINVAL);
    }
    let limit = lock_limit()?;
    let mode = if flags & MCL_ONFAULT != 0 {
        LockMode::OnFault
    } else {
        LockMode::Populate
    };
    let shared = current_aspace();
    let mut aspace = shared.lock();
    // A refused MCL_CURRENT changes nothing, MCL_FUTURE included.
    if flags & MCL_CURRENT != 0 {
        aspace.mlockall(memory::mm(), mode, limit)?;
    }
    if flags & MCL_FUTURE != 0 {
        aspace.mlock_future(mode);
    }
    Ok(0)
}

pub fn munlockall() -> SysResult {
    current_aspace().lock().munlockall(memory::mm());
    Ok(0)
}
