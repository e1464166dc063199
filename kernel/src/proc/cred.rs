//! Process credentials (Linux `struct cred`, `kernel/sys.c`): real, effective, saved and
//! filesystem user and group ids, and the file-creation mask.
//!
//! cowlab keeps them per thread group rather than per thread: glibc and musl make every
//! `set*id` call act on all threads (the `setxid` broadcast), so a program cannot tell the
//! difference.
//!
//! Capabilities are Linux's root emulation (`cap_emulate_setxuid`, `cap_task_fix_setuid`)
//! without capability sets: [`capable`] answers yes for the capabilities a root process has,
//! the file-system ones ([`Cap::is_fs`]) while the filesystem uid is 0, the others while the
//! effective uid is 0; any other process has none. Every privileged rule asks [`capable`] (or
//! [`capable_fs`]) for the capability Linux checks, by that name.
//!
//! Supplementary groups (`group_info`): a sorted list, set by `setgroups` (with `CAP_SETGID`),
//! shared by fork and kept by execve, searched by [`in_group_p`].
//!
//! execve gives a set-user-ID or set-group-ID program its owner's ids ([`bprm_fill_uid`]).
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::errno::Errno;

/// The ids of a process. `fsuid`/`fsgid` follow the effective ids (Linux) unless `setfsuid`
/// sets them apart; permission checks on files use them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
    /// Supplementary groups, sorted (`None`: none). Shared: copying a `Cred`
    /// costs a reference count, not an allocation.
    pub groups: Option<Arc<[u32]>>,
}

impl Cred {
    pub const ROOT: Cred = Cred {
        uid: 0,
        euid: 0,
        suid: 0,
        fsuid: 0,
        gid: 0,
        egid: 0,
        sgid: 0,
        fsgid: 0,
        groups: None,
    };

    /// The supplementary groups.
    pub fn groups(&self) -> &[u32] {
        self.groups.as_deref().unwrap_or(&[])
    }
}

/// The capabilities cowlab's privileged rules ask for (Linux's numbers in the comments; the
/// names are Linux's without `CAP_`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// 0: change a file's owner, or its group to any group.
    Chown,
    /// 1: pass every read, write and search check (execute needs one `x` bit).
    DacOverride,
    /// 2: pass read checks on files and read/search checks on directories.
    DacReadSearch,
    /// 3: act as the owner of any file (chmod, utimes with explicit times, sticky deletes).
    Fowner,
    /// 4: keep set-user-ID/set-group-ID bits on write; set `S_ISGID` outside the group.
    Fsetid,
    /// 5: signal any process.
    Kill,
    /// 6: any group ids, and `setgroups`.
    Setgid,
    /// 7: any user ids; `prlimit64` on another user's process.
    Setuid,
    /// 14: lock memory past `RLIMIT_MEMLOCK`.
    IpcLock,
    /// 19: inspect any process (`/proc/<pid>/fd/`, `mem`, `exe`, `cwd`).
    SysPtrace,
    /// 24: raise hard limits; fork past `RLIMIT_NPROC`.
    SysResource,
}

impl Cap {
    /// Linux `CAP_FS_MASK`: the capabilities that follow the filesystem uid
    /// (`cap_emulate_setxuid` drops them when `fsuid` leaves 0, `setfsuid` raises them back).
    pub fn is_fs(self) -> bool {
        matches!(
            self,
            Cap::Chown | Cap::DacOverride | Cap::DacReadSearch | Cap::Fowner | Cap::Fsetid
        )
    }
}

/// Linux `ns_capable(&init_user_ns, cap)` for the credentials `cred`: root's capabilities,
/// the file-system ones by the filesystem uid, the rest by the effective uid.
pub fn has_cap(cred: &Cred, cap: Cap) -> bool {
    if cap.is_fs() {
        cred.fsuid == 0
    } else {
        cred.euid == 0
    }
}

/// Linux `capable(cap)`: whether the caller has `cap` (see [`has_cap`]).
pub fn capable(cap: Cap) -> bool {
    has_cap(&current(), cap)
}

/// Linux `ptrace_may_access(task, PTRACE_MODE_READ_FSCREDS)` (`__ptrace_may_access`) for a
/// process with credentials `target`, asked by one with `caller`: the caller's filesystem uid
/// must be the target's real, effective and saved uid and its filesystem gid the target's
/// three gids, else it needs `CAP_SYS_PTRACE`. `EACCES` if not. (The caller's own thread
/// group is always allowed: callers check that first. cowlab has no "dumpable" flag.)
pub fn ptrace_may_access(caller: &Cred, target: &Cred) -> Result<(), Errno> {
    let uid = caller.fsuid;
    let gid = caller.fsgid;
    let ids_match = [target.uid, target.euid, target.suid]
        .iter()
        .all(|&u| u == uid)
        && [target.gid, target.egid, target.sgid]
            .iter()
            .all(|&g| g == gid);
    if ids_match || has_cap(caller, Cap::SysPtrace) {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// Linux `in_group_p`: is `gid` the filesystem gid or one of the supplementary groups of
/// `cred`? (The group class of the permission checks, chown's and chmod's group rules.)
pub fn in_group_p(cred: &Cred, gid: u32) -> bool {
    cred.fsgid == gid || cred.groups().binary_search(&gid).is_ok()
}

/// Linux `NGROUPS_MAX`.
pub const NGROUPS_MAX: usize = 65536;

/// `getgroups`: the caller's supplementary groups.
pub fn getgroups() -> Option<Arc<[u32]>> {
    current().groups
}

/// Linux `setgroups` (`may_setgroups` + `groups_sort` + `set_current_groups`): `EPERM`
/// without `CAP_SETGID`, `EINVAL` for more than [`NGROUPS_MAX`] (the caller checks the
/// count before reading the list). Sorted, as Linux's `groups_search` needs.
pub fn setgroups(mut list: Vec<u32>) -> Result<(), Errno> {
    if list.len() > NGROUPS_MAX {
        return Err(Errno::EINVAL);
    }
    if !capable(Cap::Setgid) {
        return Err(Errno::EPERM);
    }
    list.sort_unstable();
    let groups = (!list.is_empty()).then(|| Arc::from(list));
    super::with_group(|g| g.cred.groups = groups);
    Ok(())
}

/// Linux `bprm_fill_uid` and the id half of `cap_bprm_creds_from_file` for an execve of a file
/// with `mode` owned by `uid`:`gid`: the caller's credentials as the new program gets them, and
/// whether that exec is "secure" (`AT_SECURE`: the effective ids differ from the real ones).
/// A set-user-ID file gives its owner as effective uid, a set-group-ID file with group execute
/// permission its group as effective gid; then, for every exec, the saved and filesystem ids
/// become the effective ones.
pub fn bprm_fill_uid(old: &Cred, mode: u32, uid: u32, gid: u32) -> (Cred, bool) {
    const S_ISUID: u32 = 0o4000;
    const S_ISGID: u32 = 0o2000;
    const S_IXGRP: u32 = 0o010;
    let mut new = old.clone();
    if mode & S_ISUID != 0 {
        new.euid = uid;
    }
    if mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP {
        new.egid = gid;
    }
    new.suid = new.euid;
    new.fsuid = new.euid;
    new.sgid = new.egid;
    new.fsgid = new.egid;
    let secure = new.euid != new.uid || new.egid != new.gid;
    (new, secure)
}

/// Linux `commit_creds` for execve: the ids [`bprm_fill_uid`] computed become the caller's.
pub fn commit_creds(new: Cred) {
    super::with_group(|g| g.cred = new);
}

/// The umask a process starts with (Linux `init_fs`).
pub const INITIAL_UMASK: u32 = 0o022;

/// `-1` as an id argument: leave that id as it is.
const KEEP: u32 = u32::MAX;

/// The caller's credentials (root outside a process: the kernel's own work at boot).
pub fn current() -> Cred {
    if super::current_pid() == 0 {
        return Cred::ROOT;
    }
    super::with_group(|g| g.cred.clone())
}

/// The caller's umask (Linux `current_umask`).
pub fn current_umask() -> u32 {
    if super::current_pid() == 0 {
        return INITIAL_UMASK;
    }
    super::with_group(|g| g.umask)
}

/// `umask(mask)`: sets the mask (`& 0777`) and returns the old one; never fails.
pub fn umask(mask: u32) -> u32 {
    super::with_group(|g| core::mem::replace(&mut g.umask, mask & 0o777))
}

fn update(f: impl FnOnce(&mut Cred) -> Result<(), Errno>) -> Result<(), Errno> {
    super::with_group(|g| {
        let mut new = g.cred.clone();
        f(&mut new)?;
        g.cred = new;
        Ok(())
    })
}

/// One kind of id of a process, the user or the group ones: real, effective, saved,
/// filesystem. The rules are the same for both; the privilege is always the effective uid's
/// (`CAP_SETUID`, `CAP_SETGID`).
struct Ids<'a> {
    r: &'a mut u32,
    e: &'a mut u32,
    s: &'a mut u32,
    fs: &'a mut u32,
    privileged: bool,
}

fn users(c: &mut Cred) -> Ids<'_> {
    let privileged = has_cap(c, Cap::Setuid);
    Ids {
        r: &mut c.uid,
        e: &mut c.euid,
        s: &mut c.suid,
        fs: &mut c.fsuid,
        privileged,
    }
}

fn groups(c: &mut Cred) -> Ids<'_> {
    let privileged = has_cap(c, Cap::Setgid);
    Ids {
        r: &mut c.gid,
        e: &mut c.egid,
        s: &mut c.sgid,
        fs: &mut c.fsgid,
        privileged,
    }
}

fn set_if(id: &mut u32, new: u32) {
    if new != KEEP {
        *id = new;
    }
}

impl Ids<'_> {
    /// One the caller already has as real, effective or saved id (or `-1`).
    fn has(&self, id: u32) -> bool {
        id == KEEP || [*self.r, *self.e, *self.s].contains(&id)
    }

    /// Linux `__sys_setresuid`: each id `-1` or (without privilege) one the caller has.
    fn set_res(self, r: u32, e: u32, s: u32) -> Result<(), Errno> {
        if !self.privileged && !(self.has(r) && self.has(e) && self.has(s)) {
            return Err(Errno::EPERM);
        }
        set_if(self.r, r);
        set_if(self.e, e);
        set_if(self.s, s);
        *self.fs = *self.e;
        Ok(())
    }

    /// Linux `__sys_setuid`: with privilege all three ids, else the effective id to the real
    /// or saved one.
    fn set_one(self, id: u32) -> Result<(), Errno> {
        if id == KEEP {
            return Err(Errno::EINVAL);
        }
        if self.privileged {
            *self.r = id;
            *self.s = id;
        } else if id != *self.r && id != *self.s {
            return Err(Errno::EPERM);
        }
        *self.e = id;
        *self.fs = id;
        Ok(())
    }

    /// Linux `__sys_setreuid`: the real id to the real or effective one, the effective to any
    /// of the three; the saved id becomes the new effective one when the real id is set or the
    /// effective one moves away from the old real id.
    fn set_re(self, r: u32, e: u32) -> Result<(), Errno> {
        let old_r = *self.r;
        if r != KEEP && !self.privileged && r != old_r && r != *self.e {
            return Err(Errno::EPERM);
        }
        if !self.privileged && !self.has(e) {
            return Err(Errno::EPERM);
        }
        set_if(self.r, r);
        set_if(self.e, e);
        if r != KEEP || (e != KEEP && e != old_r) {
            *self.s = *self.e;
        }
        *self.fs = *self.e;
        Ok(())
    }

    /// Linux `__sys_setfsuid`: the old filesystem id, always; it changes if privileged or to
    /// one of the caller's ids.
    fn set_fs(self, id: u32) -> u32 {
        let old = *self.fs;
        if id != KEEP && (self.privileged || self.has(id) || id == old) {
            *self.fs = id;
        }
        old
    }
}

pub fn setresuid(r: u32, e: u32, s: u32) -> Result<(), Errno> {
    update(|c| users(c).set_res(r, e, s))
}

pub fn setresgid(r: u32, e: u32, s: u32) -> Result<(), Errno> {
    update(|c| groups(c).set_res(r, e, s))
}

pub fn setuid(id: u32) -> Result<(), Errno> {
    update(|c| users(c).set_one(id))
}

pub fn setgid(id: u32) -> Result<(), Errno> {
    update(|c| groups(c).set_one(id))
}

pub fn setreuid(r: u32, e: u32) -> Result<(), Errno> {
    update(|c| users(c).set_re(r, e))
}

pub fn setregid(r: u32, e: u32) -> Result<(), Errno> {
    update(|c| groups(c).set_re(r, e))
}

pub fn setfsuid(id: u32) -> u32 {
    super::with_group(|g| users(&mut g.cred).set_fs(id))
}

pub fn setfsgid(id: u32) -> u32 {
    super::with_group(|g| groups(&mut g.cred).set_fs(id))
}
