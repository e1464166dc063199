//! The credential calls (`proc::cred`): umask and the set*id family, and getresuid/getresgid.
//! Ids are `uid_t` (32 bits; `-1` leaves an id unchanged).
#![deny(unsafe_code)]

use alloc::vec::Vec;

use super::{Args, SysResult};
use crate::errno::Errno;
use crate::proc::cred;
use crate::uaccess::{UserPtr, UserSlice};

fn id(a: &Args, i: usize) -> u32 {
    a.get(i) as u32
}

/// umask(mask) (95): the old mask.
pub fn umask(a: Args) -> SysResult {
    Ok(u64::from(cred::umask(id(&a, 0))))
}

pub fn setuid(a: Args) -> SysResult {
    cred::setuid(id(&a, 0)).map(|()| 0)
}

pub fn setgid(a: Args) -> SysResult {
    cred::setgid(id(&a, 0)).map(|()| 0)
}

pub fn setreuid(a: Args) -> SysResult {
    cred::setreuid(id(&a, 0), id(&a, 1)).map(|()| 0)
}

pub fn setregid(a: Args) -> SysResult {
    cred::setregid(id(&a, 0), id(&a, 1)).map(|()| 0)
}

pub fn setresuid(a: Args) -> SysResult {
    cred::setresuid(id(&a, 0), id(&a, 1), id(&a, 2)).map(|()| 0)
}

pub fn setresgid(a: Args) -> SysResult {
    cred::setresgid(id(&a, 0), id(&a, 1), id(&a, 2)).map(|()| 0)
}

/// getuid (102), getgid (104), geteuid (107), getegid (108): never fail.
pub fn getuid() -> SysResult {
    Ok(u64::from(cred::current().uid))
}

pub fn getgid() -> SysResult {
    Ok(u64::from(cred::current().gid))
}

pub fn geteuid() -> SysResult {
    Ok(u64::from(cred::current().euid))
}

pub fn getegid() -> SysResult {
    Ok(u64::from(cred::current().egid))
}

/// getresuid(ruid, euid, suid) (118): `EFAULT` on a bad pointer.
pub fn getresuid(a: Args) -> SysResult {
    let c = cred::current();
    write_ids(&a, [c.uid, c.euid, c.suid])
}

/// getresgid(rgid, egid, sgid) (120).
pub fn getresgid(a: Args) -> SysResult {
    let c = cred::current();
    write_ids(&a, [c.gid, c.egid, c.sgid])
}

fn write_ids(a: &Args, ids: [u32; 3]) -> SysResult {
    for (i, v) in ids.iter().enumerate() {
        UserPtr::<u32>::new(a.get(i))?.write(v)?;
    }
    Ok(0)
}

/// setfsuid(id) (122): the old fsuid, always.
pub fn setfsuid(a: Args) -> SysResult {
    Ok(u64::from(cred::setfsuid(id(&a, 0))))
}

pub fn setfsgid(a: Args) -> SysResult {
    Ok(u64::from(cred::setfsgid(id(&a, 0))))
}

/// getgroups(size, list) (115): the number of supplementary groups; with `size` > 0 also the
/// groups into `list` (`EINVAL` if they do not fit or `size` is negative, `EFAULT`).
pub fn getgroups(a: Args) -> SysResult {
    let size = usize::try_from(a.i32(0)).map_err(|_| Errno::EINVAL)?;
    let groups = cred::getgroups();
    let groups = groups.as_deref().unwrap_or(&[]);
    if size == 0 {
        return Ok(groups.len() as u64);
    }
    if groups.len() > size {
        return Err(Errno::EINVAL);
    }
    let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    UserSlice::new(a.get(1), bytes.len())?.write(&bytes)?;
    Ok(groups.len() as u64)
}

/// setgroups(size, list) (116): `EPERM` without `CAP_SETGID` (checked first, as Linux), then
/// `EINVAL` for a `size` (an `int`) outside `0..=NGROUPS_MAX`, `EFAULT` for the list.
pub fn setgroups(a: Args) -> SysResult {
    if !cred::capable(cred::Cap::Setgid) {
        return Err(Errno::EPERM);
    }
    let size = a.get(0) as u32 as usize;
    if size > cred::NGROUPS_MAX {
        return Err(Errno::EINVAL);
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(size * 4)
        .map_err(|_| Errno::ENOMEM)?;
    bytes.resize(size * 4, 0);
    if size > 0 {
        UserSlice::new(a.get(1), size * 4)?.read(&mut bytes)?;
    }
    let list = bytes
        .as_chunks::<4>()
        .0
        .iter()
        .map(|c| u32::from_ne_bytes(*c))
        .collect();
    cred::setgroups(list).map(|()| 0)
}
