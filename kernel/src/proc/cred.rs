//! Process credentials (Linux `struct cred`, `kernel/sys.c`): real, effective, saved and
//! filesystem user and group ids, and the file-creation mask.
//!
//! cowlab keeps them per thread group rather than per thread: glibc and musl make every
//! `set*id` call act on all threads (the `setxid` broadcast), so a program cannot tell the
//! difference. There are no capabilities: an effective uid of 0 has all of them (`CAP_SETUID`,
//! `CAP_SETGID`), a filesystem uid of 0 has `CAP_DAC_OVERRIDE`/`CAP_FOWNER` (see `fs::perm`).
//! No supplementary groups, no set-user-ID programs: execve keeps the ids.
#![deny(unsafe_code)]

use crate::errno::Errno;

/// The ids of a process. `fsuid`/`fsgid` follow the effective ids (Linux) unless `setfsuid`
/// sets them apart; permission checks on files use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub fsuid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub fsgid: u32,
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
    };
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
    super::with_group(|g| g.cred)
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
        let mut new = g.cred;
        f(&mut new)?;
        g.cred = new;
        Ok(())
    })
}

/// Which of the three ids an unprivileged caller may switch to (Linux `setresuid`: one it
/// already has as real, effective or saved id).
fn one_of(id: u32, ids: [u32; 3]) -> bool {
    id == KEEP || ids.contains(&id)
}

/// Linux `__sys_setresuid`: each id `-1` or (without privilege) one the caller already has.
pub fn setresuid(r: u32, e: u32, s: u32) -> Result<(), Errno> {
    update(|c| {
        let have = [c.uid, c.euid, c.suid];
        if c.euid != 0 && !(one_of(r, have) && one_of(e, have) && one_of(s, have)) {
            return Err(Errno::EPERM);
        }
        set_if(&mut c.uid, r);
        set_if(&mut c.euid, e);
        set_if(&mut c.suid, s);
        c.fsuid = c.euid;
        Ok(())
    })
}

/// Linux `__sys_setresgid` (privilege: effective uid 0, `CAP_SETGID`).
pub fn setresgid(r: u32, e: u32, s: u32) -> Result<(), Errno> {
    update(|c| {
        let have = [c.gid, c.egid, c.sgid];
        if c.euid != 0 && !(one_of(r, have) && one_of(e, have) && one_of(s, have)) {
            return Err(Errno::EPERM);
        }
        set_if(&mut c.gid, r);
        set_if(&mut c.egid, e);
        set_if(&mut c.sgid, s);
        c.fsgid = c.egid;
        Ok(())
    })
}

fn set_if(id: &mut u32, new: u32) {
    if new != KEEP {
        *id = new;
    }
}

/// Linux `__sys_setuid`: with privilege all three ids, else the effective id to the real or
/// saved one.
pub fn setuid(id: u32) -> Result<(), Errno> {
    if id == KEEP {
        return Err(Errno::EINVAL);
    }
    update(|c| {
        if c.euid == 0 {
            c.uid = id;
            c.suid = id;
        } else if id != c.uid && id != c.suid {
            return Err(Errno::EPERM);
        }
        c.euid = id;
        c.fsuid = id;
        Ok(())
    })
}

/// Linux `__sys_setgid`.
pub fn setgid(id: u32) -> Result<(), Errno> {
    if id == KEEP {
        return Err(Errno::EINVAL);
    }
    update(|c| {
        if c.euid == 0 {
            c.gid = id;
            c.sgid = id;
        } else if id != c.gid && id != c.sgid {
            return Err(Errno::EPERM);
        }
        c.egid = id;
        c.fsgid = id;
        Ok(())
    })
}

/// Linux `__sys_setreuid`: the real id to the real or effective one, the effective to any of
/// the three; the saved id becomes the new effective one when the real id is set or the
/// effective one moves away from the old real id.
pub fn setreuid(r: u32, e: u32) -> Result<(), Errno> {
    update(|c| {
        let old = *c;
        let privileged = old.euid == 0;
        if r != KEEP && !privileged && r != old.uid && r != old.euid {
            return Err(Errno::EPERM);
        }
        if e != KEEP && !privileged && !one_of(e, [old.uid, old.euid, old.suid]) {
            return Err(Errno::EPERM);
        }
        set_if(&mut c.uid, r);
        set_if(&mut c.euid, e);
        if r != KEEP || (e != KEEP && e != old.uid) {
            c.suid = c.euid;
        }
        c.fsuid = c.euid;
        Ok(())
    })
}

/// Linux `__sys_setregid` (the same rules for the group ids).
pub fn setregid(r: u32, e: u32) -> Result<(), Errno> {
    update(|c| {
        let old = *c;
        let privileged = old.euid == 0;
        if r != KEEP && !privileged && r != old.gid && r != old.egid {
            return Err(Errno::EPERM);
        }
        if e != KEEP && !privileged && !one_of(e, [old.gid, old.egid, old.sgid]) {
            return Err(Errno::EPERM);
        }
        set_if(&mut c.gid, r);
        set_if(&mut c.egid, e);
        if r != KEEP || (e != KEEP && e != old.gid) {
            c.sgid = c.egid;
        }
        c.fsgid = c.egid;
        Ok(())
    })
}

/// Linux `__sys_setfsuid`: always returns the old fsuid; changes it if privileged or to one of
/// the caller's ids.
pub fn setfsuid(id: u32) -> u32 {
    super::with_group(|g| {
        let c = &mut g.cred;
        let old = c.fsuid;
        if id != KEEP && (c.euid == 0 || [c.uid, c.euid, c.suid, c.fsuid].contains(&id)) {
            c.fsuid = id;
        }
        old
    })
}

/// Linux `__sys_setfsgid`.
pub fn setfsgid(id: u32) -> u32 {
    super::with_group(|g| {
        let c = &mut g.cred;
        let old = c.fsgid;
        if id != KEEP && (c.euid == 0 || [c.gid, c.egid, c.sgid, c.fsgid].contains(&id)) {
            c.fsgid = id;
        }
        old
    })
}
