//! File permission checks (Linux `fs/namei.c` `generic_permission`, `may_open`, `may_delete`,
//! `check_sticky`, and `inode_owner_or_capable`; `fs/attr.c` `setattr_prepare`,
//! `setattr_should_drop_suidgid`), for every file system that stores an owner and mode bits
//! (ext2, tmpfs). The capabilities are `proc::cred`'s root emulation: `CAP_DAC_OVERRIDE` reads
//! and writes anything and may execute a file with at least one execute bit (or search any
//! directory), `CAP_FOWNER` acts as any file's owner, `CAP_CHOWN` gives files away,
//! `CAP_FSETID` keeps the set-id bits; the group class includes the supplementary groups
//! (`in_group_p`).
#![deny(unsafe_code)]

use super::stat::{S_IFDIR, S_IFMT, S_IFREG};
use super::{O_ACCMODE, O_PATH, O_TRUNC};
use crate::errno::Errno;
use crate::proc::cred::{has_cap, in_group_p, Cap, Cred};

pub const MAY_EXEC: u32 = 1;
pub const MAY_WRITE: u32 = 2;
pub const MAY_READ: u32 = 4;
const S_ISVTX: u32 = 0o1000;
const S_ISGID: u32 = 0o2000;
const S_ISUID: u32 = 0o4000;
const S_IXGRP: u32 = 0o010;

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
    } else if in_group_p(cred, inode.gid) {
        inode.mode >> 3
    } else {
        inode.mode
    };
    if mask & !class & 7 == 0 {
        return Ok(());
    }
    let is_dir = inode.mode & S_IFMT == S_IFDIR;
    if has_cap(cred, Cap::DacOverride) {
        // Not exec of a file nobody may execute.
        if mask & MAY_EXEC == 0 || is_dir || inode.mode & 0o111 != 0 {
            return Ok(());
        }
    }
    // CAP_DAC_READ_SEARCH: read a file, read and search a directory.
    let readable = if is_dir {
        MAY_READ | MAY_EXEC
    } else {
        MAY_READ
    };
    if mask & !readable == 0 && has_cap(cred, Cap::DacReadSearch) {
        return Ok(());
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
        || has_cap(cred, Cap::Fowner)
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
    if cred.fsuid == inode.uid || has_cap(cred, Cap::Fowner) {
        return Ok(());
    }
    Err(Errno::EPERM)
}

/// Linux `in_group_or_capable`: may a file of group `gid` keep (or get) `S_ISGID`?
fn in_group_or_capable(cred: &Cred, gid: u32) -> bool {
    in_group_p(cred, gid) || has_cap(cred, Cap::Fsetid)
}

/// The mode bits chmod stores (Linux `setattr_prepare`'s `ATTR_MODE` half): a caller outside
/// the file's group without `CAP_FSETID` loses `S_ISGID`.
pub fn chmod_bits(cred: &Cred, inode: Owner, mode: u32) -> u32 {
    let mode = mode & 0o7777;
    if !in_group_or_capable(cred, inode.gid) {
        return mode & !S_ISGID;
    }
    mode
}

/// Linux `setattr_should_drop_sgid`: `S_ISGID` goes on a change of the file when it marks a
/// set-group-ID program (group execute set) or the caller is outside the group.
fn setattr_should_drop_sgid(cred: &Cred, inode: Owner) -> u32 {
    if inode.mode & S_ISGID == 0 {
        return 0;
    }
    if inode.mode & S_IXGRP != 0 || !in_group_or_capable(cred, inode.gid) {
        return S_ISGID;
    }
    0
}

/// Linux `setattr_should_drop_suidgid` (`should_remove_suid`, what `file_remove_privs` asks
/// before a write or truncate): the set-id bits of a regular file a caller without
/// `CAP_FSETID` modifies must go (`S_ISUID` always, `S_ISGID` as
/// [`setattr_should_drop_sgid`]). Returns the bits to clear (0: none).
pub fn setattr_should_drop_suidgid(cred: &Cred, inode: Owner) -> u32 {
    let kill = (inode.mode & S_ISUID) | setattr_should_drop_sgid(cred, inode);
    if kill != 0 && !has_cap(cred, Cap::Fsetid) && inode.mode & S_IFMT == S_IFREG {
        return kill;
    }
    0
}

/// Linux `chown_ok`: may `cred` make `uid` the owner? Its owner may "change" it to itself;
/// otherwise `CAP_CHOWN`.
fn chown_ok(cred: &Cred, inode: Owner, uid: u32) -> bool {
    (cred.fsuid == inode.uid && uid == inode.uid) || has_cap(cred, Cap::Chown)
}

/// Linux `chgrp_ok`: the owner may set the group to the file's own or to one it belongs to
/// ([`in_group_p`]); otherwise `CAP_CHOWN`.
fn chgrp_ok(cred: &Cred, inode: Owner, gid: u32) -> bool {
    (cred.fsuid == inode.uid && (gid == inode.gid || in_group_p(cred, gid)))
        || has_cap(cred, Cap::Chown)
}

/// Linux `chown_common` + `setattr_prepare` + `notify_change` for chown/fchown/lchown/
/// fchownat: `EPERM` unless [`chown_ok`] and [`chgrp_ok`] allow the ids asked (`None`: left
/// as it is). Returns the mode the file keeps: a non-directory loses `S_ISUID` (even when
/// root changes it, even with both ids left) and `S_ISGID` as [`setattr_should_drop_sgid`].
pub fn chown_prepare(
    cred: &Cred,
    inode: Owner,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<u32, Errno> {
    if uid.is_some_and(|u| !chown_ok(cred, inode, u))
        || gid.is_some_and(|g| !chgrp_ok(cred, inode, g))
    {
        return Err(Errno::EPERM);
    }
    let mut mode = inode.mode & 0o7777;
    if inode.mode & S_IFMT != S_IFDIR {
        mode &= !(S_ISUID | setattr_should_drop_sgid(cred, inode));
    }
    // Clearing a bit is a mode change (`ATTR_MODE`): the owner's or `CAP_FOWNER`'s.
    if mode != inode.mode & 0o7777 {
        owner_or_capable(cred, inode)?;
    }
    Ok(mode)
}

/// Linux `may_setattr` + `setattr_prepare` for utimensat: setting both times to now (`touch`:
/// a null `times` or two `UTIME_NOW`) needs ownership (`CAP_FOWNER`) or write permission
/// (`EACCES`); an explicit time (`explicit`) needs ownership (`EPERM`). A mix of `UTIME_NOW`
/// and `UTIME_OMIT` needs neither.
pub fn may_utimes(cred: &Cred, inode: Owner, touch: bool, explicit: bool) -> Result<(), Errno> {
    if explicit {
        return owner_or_capable(cred, inode);
    }
    if touch && owner_or_capable(cred, inode).is_err() {
        return generic_permission(cred, inode, MAY_WRITE);
    }
    Ok(())
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
