//! System information: uname, sysinfo, resource limits, random bytes.
#![deny(unsafe_code)]

use super::{Args, Errno, SysResult};
use crate::proc::rlimit::{self, do_prlimit, Rlimit};
use crate::proc::with_group;
use crate::uaccess::{UserPtr, UserSlice};
use crate::{memory, proc, random, time};

pub fn uname(a: Args) -> SysResult {
    let mut buf = [0u8; 65 * 6];
    let fields: [&str; 6] = [
        "Linux",
        "cowlab",
        "6.1.0-cowlab",
        "#1 cowlab",
        "x86_64",
        "(none)",
    ];
    for (i, f) in fields.iter().enumerate() {
        buf[i * 65..i * 65 + f.len()].copy_from_slice(f.as_bytes());
    }
    UserSlice::new(a.get(0), buf.len())?.write(&buf)?;
    Ok(0)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Sysinfo {
    uptime: i64,
    loads: [u64; 3],
    totalram: u64,
    freeram: u64,
    sharedram: u64,
    bufferram: u64,
    totalswap: u64,
    freeswap: u64,
    procs: u16,
    pad: u16,
    pad2: u32,
    totalhigh: u64,
    freehigh: u64,
    mem_unit: u32,
    pad3: [u8; 4],
}

pub fn sysinfo(a: Args) -> SysResult {
    let frames = memory::frames();
    let info = Sysinfo {
        uptime: (time::micros_since_boot() / 1_000_000) as i64,
        totalram: frames.usable_frames() as u64 * 4096,
        freeram: frames.free_frames() as u64 * 4096,
        procs: proc::TABLE.lock().len() as u16,
        mem_unit: 1,
        ..Sysinfo::default()
    };
    UserPtr::<Sysinfo>::new(a.get(0))?.write(&info)?;
    Ok(0)
}

/// getrlimit(resource, rlim): the caller's limit (`proc::rlimit`). `EINVAL` for an unknown
/// resource, `EFAULT` for a bad pointer.
pub fn getrlimit(a: Args) -> SysResult {
    let old = with_group(|g| do_prlimit(&mut g.rlimits, a.get(0), None, false))?;
    UserPtr::<Rlimit>::new(a.get(1))?.write(&old)?;
    Ok(0)
}

/// setrlimit(resource, rlim): as Linux, the new value is read first (`EFAULT`), then checked
/// (`EINVAL`, `EPERM`; see `do_prlimit`).
pub fn setrlimit(a: Args) -> SysResult {
    let new = UserPtr::<Rlimit>::new(a.get(1))?.read()?;
    let may_raise = rlimit::may_raise_hard_limit();
    with_group(|g| do_prlimit(&mut g.rlimits, a.get(0), Some(new), may_raise))?;
    stack_limit_changed(a.get(0), true);
    Ok(0)
}

/// After a new `RLIMIT_STACK` of the caller: the memory manager checks stack growth against the
/// limit it was given (Linux's `acct_stack_growth` reads the rlimit at each growth).
fn stack_limit_changed(resource: u64, own: bool) {
    if own && resource == rlimit::RLIMIT_STACK as u64 {
        crate::proc::current_aspace()
            .write()
            .set_stack_limit(rlimit::stack_vma_size());
    }
}

/// prlimit64(pid, resource, new, old): any process's limit (0: the caller). Linux's order: the
/// new value is read (`EFAULT`), the process found (`ESRCH`), the limit changed (`EINVAL`,
/// `EPERM`), and only then the old one written (`EFAULT` after the change took effect).
pub fn prlimit64(a: Args) -> SysResult {
    let new = match a.get(2) {
        0 => None,
        addr => Some(UserPtr::<Rlimit>::new(addr)?.read()?),
    };
    let pid = match a.i32(0) {
        0 => proc::current_tid(),
        p => u32::try_from(p).map_err(|_| Errno::ESRCH)?,
    };
    let own = pid == proc::current_pid() || pid == proc::current_tid();
    let caller = crate::proc::cred::current();
    let may_raise = rlimit::may_raise_hard_limit();
    let old = rlimit::with_task_rlimits(pid, |target, limits| {
        if !own {
            rlimit::check_prlimit_permission(&caller, target)?;
        }
        do_prlimit(limits, a.get(1), new, may_raise)
    })??;
    stack_limit_changed(a.get(1), new.is_some() && own);
    if a.get(3) != 0 {
        UserPtr::<Rlimit>::new(a.get(3))?.write(&old)?;
    }
    Ok(0)
}

pub fn getrandom(a: Args) -> SysResult {
    if a.get(2) & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    let out = UserSlice::new(a.get(0), a.get(1) as usize)?;
    let n = out.len().min(256 * 1024);
    let mut buf = alloc::vec![0u8; n];
    random::fill(&mut buf);
    out.write(&buf)?;
    Ok(n as u64)
}
