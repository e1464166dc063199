//! mlock, mlock2, munlock, mlockall, munlockall: thin decoding in front of `cowlab_mm::mlock`,
//! with the caller's `RLIMIT_MEMLOCK` (Linux `do_mlock`, `SYSCALL_DEFINE1(mlockall)`), which
//! `CAP_IPC_LOCK` (root) bypasses, as for io_uring registrations (see `proc::rlimit`).
#![deny(unsafe_code)]

use cowlab_mm::mlock::LockMode;
use cowlab_mm::VirtAddr;

use super::{Args, Errno, SysResult};
use crate::memory;
use crate::proc::current_aspace;
use crate::proc::rlimit;

const MLOCK_ONFAULT: u64 = 1;
const MCL_CURRENT: u64 = 1;
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;

/// The caller's `RLIMIT_MEMLOCK` in pages (no limit with `CAP_IPC_LOCK`); `EPERM` when it is
/// 0 without it (Linux `can_do_mlock`).
fn lock_limit() -> Result<u64, Errno> {
    match rlimit::lock_limit_pages() {
        0 => Err(Errno::EPERM),
        pages => Ok(pages),
    }
}

fn do_mlock(addr: u64, len: u64, mode: LockMode) -> SysResult {
    let limit = lock_limit()?;
    if addr >= cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOMEM);
    }
    let shared = current_aspace();
    let range =
        shared
            .write()
            .mlock_flags(memory::mm(), VirtAddr::new(addr), len as usize, mode, limit)?;
    if let Some((start, end)) = range {
        populate_killable(&shared, start, end)?;
    }
    Ok(0)
}

/// Pages faulted in between two releases of the address space (8 MiB).
const POPULATE_BATCH: u64 = 2048;

/// Linux `__mm_populate` as `do_mlock` runs it: in batches of [`POPULATE_BATCH`] pages with
/// the address space unlocked between them, where a task being killed stops with `EINTR` (it
/// ends on its return to ring 3; Linux's `fatal_signal_pending` in `__get_user_pages`) and any
/// other lets the rest run (`cond_resched`). Locking 8 GiB held the CPU, its lock and its own
/// SIGKILL for the whole population.
pub(super) fn populate_killable(
    shared: &crate::vm::SharedAddressSpace,
    start: VirtAddr,
    end: VirtAddr,
) -> Result<(), Errno> {
    let mut va = start;
    loop {
        // Faults in, as Linux's `populate_vma_page_range` under `mmap_read_lock`; a file page
        // not cached yet is read with the lock let go (`VM_FAULT_RETRY`): waiting for a page
        // lock or the filesystem with it held would leave another thread's user copy finding
        // the address space locked.
        let mut fill = None;
        va = shared.read_ptl().populate_some_unlocked_fill(
            memory::mm(),
            va,
            end,
            POPULATE_BATCH,
            &mut fill,
        )?;
        if let Some((file, index, write)) = fill {
            cowlab_mm::pagecache::filemap_fault_fill(memory::mm(), &*file.0, index, write)
                .map_err(|_| Errno::ENOMEM)?;
        } else if va >= end {
            return Ok(());
        }
        // Outside a task (in-kernel tests) there is nobody to kill or yield to. Checked after
        // a fill too: a page that keeps needing one must not loop here unkillable.
        if crate::proc::current_tid() != 0 {
            if crate::proc::fatal_signal_pending() {
                return Err(Errno::EINTR);
            }
            crate::proc::sched::cond_resched();
        }
    }
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
        .write()
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
    let mut aspace = shared.write();
    // A refused MCL_CURRENT changes nothing, MCL_FUTURE included.
    let ranges = if flags & MCL_CURRENT != 0 {
        aspace.mlockall_flags(memory::mm(), mode, limit)?
    } else {
        alloc::vec::Vec::new()
    };
    if flags & MCL_FUTURE != 0 {
        aspace.mlock_future(mode);
    }
    drop(aspace);
    // Populated as Linux's `mm_populate(0, TASK_SIZE)` after the flags: in killable batches,
    // a mapping another thread removed meanwhile skipped.
    for (start, end) in ranges {
        if let Err(Errno::EINTR) = populate_killable(&shared, start, end) {
            return Err(Errno::EINTR);
        }
    }
    Ok(0)
}

pub fn munlockall() -> SysResult {
    current_aspace().write().munlockall(memory::mm());
    Ok(0)
}
