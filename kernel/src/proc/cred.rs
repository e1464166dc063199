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
    let privileged = c.euid == 0;
    Ids {
        r: &mut c.uid,
        e: &mut c.euid,
        s: &mut c.suid,
        fs: &mut c.fsuid,
        privileged,
    }
}

fn groups(c: &mut Cred) -> Ids<'_> {
    let privileged = c.euid == 0;
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
