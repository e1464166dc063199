//! File permission checks (Linux `fs/namei.c` `generic_permission`, `may_open`, `may_delete`,
//! `check_sticky`, and `inode_owner_or_capable`), for every file system that stores an owner
//! and mode bits (ext2, tmpfs). The filesystem uid 0 stands for `CAP_DAC_OVERRIDE` and
//! `CAP_FOWNER` (cowlab has no capability sets): it reads and writes anything and may execute a
//! file with at least one execute bit (or search any directory).
#![deny(unsafe_code)]

use super::stat::{S_IFDIR, S_IFMT};
use super::{O_ACCMODE, O_PATH, O_TRUNC};
use crate::errno::Errno;
use crate::proc::cred::Cred;

pub const MAY_EXEC: u32 = 1;
pub const MAY_WRITE: u32 = 2;
pub const MAY_READ: u32 = 4;
const S_ISVTX: u32 = 0o1000;
const S_ISGID: u32 = 0o2000;

/// What a check needs to know of an inode.
#[derive(Clone, Copy, Debug)]
pub struct Owner {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Linux `generic_permission` (`acl_permission_check` + the capability overrides): `mask` is
/// `MAY_*` bits; the owner class, else the group class, else others decide; `EACCES`.
pub fn generic_permission(cred: &Cred, inode: Owner, mask: u32) -> Result<(), Errno> {
    let class = if cred.fsuid == inode.uid {
        inode.mode >> 6
    } else if cred.fsgid == inode.gid {
        inode.mode >> 3
    } else {
        inode.mode
    };
    if mask & !class & 7 == 0 {
        return Ok(());
    }
    if cred.fsuid == 0 {
        // CAP_DAC_OVERRIDE: not exec of a file nobody may execute.
        let is_dir = inode.mode & S_IFMT == S_IFDIR;
        if mask & MAY_EXEC == 0 || is_dir || inode.mode & 0o111 != 0 {
            return Ok(());
        }
    }
    Err(Errno::EACCES)
}

/// The access an `open` with `flags` asks of an existing file (Linux `may_open`): read and/or
/// write by the access mode, write for `O_TRUNC`; nothing for `O_PATH`.
pub fn may_open(cred: &Cred, inode: Owner, flags: u32) -> Result<(), Errno> {
    if flags & O_PATH != 0 {
        return Ok(());
    }
    let mut mask = match flags & O_ACCMODE {
        0 => MAY_READ,
        1 => MAY_WRITE,
        _ => MAY_READ | MAY_WRITE,
    };
    if flags & O_TRUNC != 0 {
        mask |= MAY_WRITE;
    }
    generic_permission(cred, inode, mask)
}

/// Creating or removing a name in `dir` (Linux `may_create`/`may_delete`, the directory half):
/// write and search permission on it.
pub fn may_change_dir(cred: &Cred, dir: Owner) -> Result<(), Errno> {
    generic_permission(cred, dir, MAY_WRITE | MAY_EXEC)
}

/// Linux `check_sticky`: in a sticky directory only the file's owner, the directory's owner or
/// a privileged caller may remove or rename an entry (`EPERM` otherwise).
pub fn check_sticky(cred: &Cred, dir: Owner, victim: Owner) -> Result<(), Errno> {
    if dir.mode & S_ISVTX == 0
        || cred.fsuid == victim.uid
        || cred.fsuid == dir.uid
        || cred.fsuid == 0
    {
        return Ok(());
    }
    Err(Errno::EPERM)
}

/// Removing `victim` from `dir` (Linux `may_delete`): write and search on the directory, then
/// the sticky rule.
pub fn may_delete(cred: &Cred, dir: Owner, victim: Owner) -> Result<(), Errno> {
    may_change_dir(cred, dir)?;
    check_sticky(cred, dir, victim)
}

/// Linux `inode_owner_or_capable`: chmod and setting explicit times need this (`EPERM`).
pub fn owner_or_capable(cred: &Cred, inode: Owner) -> Result<(), Errno> {
    if cred.fsuid == inode.uid || cred.fsuid == 0 {
        return Ok(());
    }
    Err(Errno::EPERM)
}

/// The mode bits chmod stores (Linux `setattr_prepare`/`setattr_should_drop_sgid`): an
/// unprivileged owner outside the file's group loses `S_ISGID`.
pub fn chmod_bits(cred: &Cred, inode: Owner, mode: u32) -> u32 {
    let mode = mode & 0o7777;
    if cred.fsuid != 0 && cred.fsgid != inode.gid {
        return mode & !S_ISGID;
    }
    mode
}

/// The owner of a new inode in `dir` (Linux `inode_init_owner`): the caller's fs ids, the
/// directory's group in a set-group-ID directory, where a new directory inherits `S_ISGID`.
pub fn init_owner(cred: &Cred, dir: Owner, mode: u32) -> (u32, u32, u32) {
    if dir.mode & S_ISGID != 0 {
        let mode = if mode & S_IFMT == S_IFDIR {
            mode | S_ISGID
        } else {
            mode
        };
        return (cred.fsuid, dir.gid, mode);
    }
    (cred.fsuid, cred.fsgid, mode)
}
