//! Supplementary groups (issue 11): `setgroups`/`getgroups` with Linux's errnos (`EPERM`
//! unprivileged, checked before the size; `EINVAL` past `NGROUPS_MAX` 65536 or a list that
//! does not fit; a size-0 query), the list sorted, shown in `/proc/self/status` `Groups:`, kept
//! by fork and exec, and used by the permission checks (`in_group_p`: the group class, chgrp to
//! a group one belongs to, `S_ISGID` kept by chmod only for a member). Runs as root (setgroups
//! needs `CAP_SETGID`); the unprivileged halves run in children that drop their ids, on
//! cowlab and on the host.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{errno_of, p, sys};
use cowlab_userland::cred::{drop_to, self_exe, work_dir};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EFAULT: i32 = 14;
const EINVAL: i32 = 22;
const USER: u32 = 4000;
const MEMBER_OF: u32 = 4242;
const OTHER_GROUP: u32 = 4343;

fn setgroups(list: &[u32]) -> i32 {
    errno_of(sys(116, &[list.len(), list.as_ptr() as usize]))
}

fn getgroups(size: usize) -> Result<Vec<u32>, i32> {
    let mut buf = alloc::vec![0u32; size];
    match sys(115, &[size, buf.as_mut_ptr() as usize]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(buf)
        }
        Err(e) => Err(e.0),
    }
}

fn ngroups() -> i32 {
    sys(115, &[0, 0]).map_or(-1, |n| n as i32)
}

fn chown(path: &str, uid: u32, gid: u32) -> i32 {
    errno_of(sys(92, &[p(path).ptr(), uid as usize, gid as usize]))
}

fn chmod(path: &str, mode: u32) -> i32 {
    errno_of(sys(90, &[p(path).ptr(), mode as usize]))
}

fn mode_of(path: &str) -> u32 {
    stat(p(path).c()).map_or(u32::MAX, |s| s.st_mode & 0o7777)
}

fn open_err(path: &str, flags: u32) -> i32 {
    match open_mode(p(path).c(), flags, 0o644) {
        Ok(fd) => {
            let _ = close(fd);
            0
        }
        Err(e) => e.0,
    }
}

/// The child's exit code (-1 if it did not exit).
fn child(f: impl FnOnce() -> i32) -> i32 {
    let status = in_child(f);
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        -1
    }
}

fn groups_line() -> String {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/self/status", &mut buf).unwrap_or(0);
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    String::from(
        text.lines()
            .find(|l| l.starts_with("Groups:"))
            .unwrap_or(""),
    )
}

fn main() -> i32 {
    // `t_cred_groups count`: exit with the number of supplementary groups (exec keeps them).
    if let Some(arg) = cowlab_userland::args::args().nth(1) {
        if arg.to_bytes() == b"count" {
            return ngroups();
        }
    }
    let mut t = Tester::new("t_cred_groups");
    if cowlab_userland::cred::getresuid()[1] != 0 {
        cowlab_userland::println!("t_cred_groups: skip: needs root (setgroups needs CAP_SETGID)");
        return t.finish();
    }
    let _ = sys(95, &[0]);
    let dir = work_dir("t_cred_groups");
    t.eq(
        "mkdir the test directory",
        errno_of(sys(83, &[p(&dir).ptr(), 0o755])),
        0,
    );

    t.eq(
        "root: setgroups([30, 10, 20, 10])",
        setgroups(&[30, 10, 20, 10]),
        0,
    );
    t.eq("getgroups(0) counts them", ngroups(), 4);
    t.eq(
        "getgroups returns them sorted",
        getgroups(4),
        Ok(alloc::vec![10, 10, 20, 30]),
    );
    t.eq(
        "getgroups with too small a size: EINVAL",
        getgroups(3),
        Err(EINVAL),
    );
    t.eq(
        "getgroups(-1): EINVAL",
        errno_of(sys(115, &[usize::MAX, 0])),
        EINVAL,
    );
    t.eq(
        "getgroups to a bad pointer: EFAULT",
        errno_of(sys(115, &[4, 0x80])),
        EFAULT,
    );
    t.eq(
        "/proc/self/status Groups: (Linux's trailing space)",
        groups_line(),
        String::from("Groups:\t10 10 20 30 "),
    );
    t.eq("a fork child keeps them", child(ngroups), 4);
    let exe = self_exe();
    t.eq(
        "an exec'd program keeps them",
        child(|| cowlab_userland::process::exec(&[exe.as_bytes(), b"count"]).0 + 100),
        4,
    );
    t.eq(
        "setgroups(65537): EINVAL",
        errno_of(sys(116, &[65537, 0])),
        EINVAL,
    );
    t.eq(
        "setgroups(-1): EINVAL",
        errno_of(sys(116, &[usize::MAX, 0])),
        EINVAL,
    );
    t.eq(
        "setgroups(1, bad): EFAULT",
        errno_of(sys(116, &[1, 0x80])),
        EFAULT,
    );
    t.eq("setgroups(0) empties the list", setgroups(&[]), 0);
    t.eq("... getgroups(0) is 0", ngroups(), 0);
    t.eq(
        "... Groups: is empty",
        groups_line(),
        String::from("Groups:\t "),
    );

    // Files for the permission checks, made by root.
    let f = |name: &str| format!("{dir}/{name}");
    let make = |name: &str, uid: u32, gid: u32, mode: u32| -> i32 {
        let path = f(name);
        let r = open_err(&path, O_CREAT | O_WRONLY);
        if r != 0 {
            return r;
        }
        let r = chown(&path, uid, gid);
        if r != 0 {
            return r;
        }
        chmod(&path, mode)
    };
    t.eq(
        "a root file of group 4242, mode 0040",
        make("g40", 0, MEMBER_OF, 0o040),
        0,
    );
    t.eq(
        "a root file of group 4242, mode 0604",
        make("g604", 0, MEMBER_OF, 0o604),
        0,
    );
    t.eq(
        "a file of uid 4000 group 4000",
        make("mine", USER, USER, 0o644),
        0,
    );
    t.eq(
        "a file of uid 4000 group 4343",
        make("sgid", USER, OTHER_GROUP, 0o755),
        0,
    );
    t.eq(
        "a file of uid 4000 group 4242",
        make("sgid2", USER, MEMBER_OF, 0o755),
        0,
    );

    // A member of 4242 (and 17), not root.
    let member = child(|| {
        let mut c = Tester::new("t_cred_groups-member");
        c.eq("setgroups([4242, 17])", setgroups(&[MEMBER_OF, 17]), 0);
        c.eq("setresgid(4000 x3)", errno_of(sys(119, &[4000; 3])), 0);
        c.eq("setresuid(4000 x3)", errno_of(sys(117, &[4000; 3])), 0);
        c.eq(
            "getgroups after dropping",
            getgroups(2),
            Ok(alloc::vec![17, MEMBER_OF]),
        );
        c.eq("setgroups unprivileged: EPERM", setgroups(&[1]), EPERM);
        c.eq("setgroups(0) unprivileged: EPERM", setgroups(&[]), EPERM);
        c.eq(
            "setgroups(70000) unprivileged: EPERM before EINVAL",
            errno_of(sys(116, &[70000, 0])),
            EPERM,
        );
        c.eq(
            "a member reads a 0040 file of the group",
            open_err(&f("g40"), O_RDONLY),
            0,
        );
        c.eq(
            "... but may not write it",
            open_err(&f("g40"), O_WRONLY),
            EACCES,
        );
        c.eq(
            "the group class decides for a member: 0604 is EACCES",
            open_err(&f("g604"), O_RDONLY),
            EACCES,
        );
        c.eq(
            "chgrp of its file to a group it is in",
            chown(&f("mine"), u32::MAX, MEMBER_OF),
            0,
        );
        c.eq("... to its own gid", chown(&f("mine"), u32::MAX, USER), 0);
        c.eq(
            "chgrp to a group it is not in: EPERM",
            chown(&f("mine"), u32::MAX, OTHER_GROUP),
            EPERM,
        );
        c.eq(
            "chown to another user: EPERM",
            chown(&f("mine"), 0, u32::MAX),
            EPERM,
        );
        c.eq(
            "chgrp of a file it does not own: EPERM",
            chown(&f("g604"), u32::MAX, MEMBER_OF),
            EPERM,
        );
        c.eq(
            "chmod 02755 outside the file's group",
            chmod(&f("sgid"), 0o2755),
            0,
        );
        c.eq("... drops S_ISGID", mode_of(&f("sgid")), 0o755);
        c.eq(
            "chmod 02755 in the file's (supplementary) group",
            chmod(&f("sgid2"), 0o2755),
            0,
        );
        c.eq("... keeps S_ISGID", mode_of(&f("sgid2")), 0o2755);
        c.eq(
            "Groups: of the member",
            groups_line(),
            String::from("Groups:\t17 4242 "),
        );
        c.finish()
    });
    t.eq("the member's checks pass", member, 0);
    let outsider = child(|| {
        if drop_to(USER, USER).is_err() {
            return 1;
        }
        let mut c = Tester::new("t_cred_groups-outsider");
        c.eq(
            "a non-member reads the 0040 file: EACCES",
            open_err(&f("g40"), O_RDONLY),
            EACCES,
        );
        c.eq(
            "... the 0604 file as other",
            open_err(&f("g604"), O_RDONLY),
            0,
        );
        c.eq("getgroups is empty", ngroups(), 0);
        c.finish()
    });
    t.eq("the non-member's checks pass", outsider, 0);
    for name in ["g40", "g604", "mine", "sgid", "sgid2"] {
        t.eq(
            &format!("unlink {name}"),
            errno_of(unlink(p(&f(name)).c())),
            0,
        );
    }
    t.eq("rmdir the test directory", errno_of(rmdir(p(&dir).c())), 0);
    t.finish()
}
