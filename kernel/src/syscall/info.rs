//! System information: uname, sysinfo, resource limits, random bytes.
#![deny(unsafe_code)]

use super::{Args, Errno, SysResult};
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

/// Limits by resource number: (soft, hard). Unlimited is `u64::MAX`.
fn limit(resource: u64) -> Result<[u64; 2], Errno> {
    Ok(match resource {
        3 => [8 << 20, u64::MAX], // RLIMIT_STACK
        7 => [1024, 1024],        // RLIMIT_NOFILE
        0..=15 => [u64::MAX, u64::MAX],
        _ => return Err(Errno::EINVAL),
    })
}

pub fn getrlimit(a: Args) -> SysResult {
    UserPtr::<[u64; 2]>::new(a.get(1))?.write(&limit(a.get(0))?)?;
    Ok(0)
}

pub fn prlimit64(a: Args) -> SysResult {
    if a.get(0) != 0 && a.get(0) != u64::from(proc::current_pid()) {
        return Err(Errno::ESRCH);
    }
    let old = limit(a.get(1))?;
    if a.get(2) != 0 {
        // Setting limits is accepted and ignored (nothing enforces them yet).
        UserPtr::<[u64; 2]>::new(a.get(2))?.read()?;
    }
    if a.get(3) != 0 {
        UserPtr::<[u64; 2]>::new(a.get(3))?.write(&old)?;
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
