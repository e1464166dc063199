//! The credential calls (`proc::cred`): umask and the set*id family, and getresuid/getresgid.
//! Ids are `uid_t` (32 bits; `-1` leaves an id unchanged).
#![deny(unsafe_code)]

use super::{Args, SysResult};
use crate::proc::cred;
use crate::uaccess::UserPtr;

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
