//! File attributes and set-id programs (issue 11): chown/fchown/lchown/fchownat by users (only
//! root gives a file away; `EPERM`), chmod by a non-owner (`EPERM`), utimensat's owner rule
//! (touching to now needs write access, `EACCES`; anything else that sets a time needs
//! ownership, `EPERM`), the set-user-ID and set-group-ID bits cleared by an unprivileged write
//! or truncate and by chown (Linux `file_remove_privs`, `setattr_should_drop_suidgid`), and
//! execve of a set-user-ID/set-group-ID program: effective and saved ids from the file,
//! `AT_SECURE` 1, the auxv ids; every exec makes the saved ids the effective ones. Runs as
//! root; the unprivileged halves in children that drop to uid 4000. The set-id execs are
//! skipped (with the reason printed) when the test directory is on a `nosuid` mount. On cowlab
//! only: search permission on `/` guards the paths into the other mounts (`/tmp`, `/proc`)
//! too; the host's `/` is not ours to chmod.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{errno_of, p, sys};
use cowlab_userland::cred::{drop_to, getauxval, getresgid, getresuid, self_exe, work_dir};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EINVAL: i32 = 22;
const USER: u32 = 4000;
const KEEP: u32 = u32::MAX;
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;
const AT_SYMLINK_NOFOLLOW: usize = 0x100;
const AT_EMPTY_PATH: usize = 0x1000;
const ST_NOSUID: u64 = 2;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_SECURE: u64 = 23;

fn chown(path: &str, uid: u32, gid: u32) -> i32 {
    errno_of(sys(92, &[p(path).ptr(), uid as usize, gid as usize]))
}

fn lchown(path: &str, uid: u32, gid: u32) -> i32 {
    errno_of(sys(94, &[p(path).ptr(), uid as usize, gid as usize]))
}

fn fchownat(path: &str, uid: u32, gid: u32, flags: usize) -> i32 {
    let fd = AT_FDCWD as usize;
    errno_of(sys(
        260,
        &[fd, p(path).ptr(), uid as usize, gid as usize, flags],
    ))
}

fn chmod(path: &str, mode: u32) -> i32 {
    errno_of(sys(90, &[p(path).ptr(), mode as usize]))
}

fn utimens(path: &str, times: Option<[i64; 4]>) -> i32 {
    let ptr = times.as_ref().map_or(0, |t| t.as_ptr() as usize);
    errno_of(sys(280, &[AT_FDCWD as usize, p(path).ptr(), ptr, 0]))
}

fn st(path: &str) -> Stat {
    stat(p(path).c()).unwrap_or_default()
}

fn mode_of(path: &str) -> u32 {
    stat(p(path).c()).map_or(u32::MAX, |s| s.st_mode & 0o7777)
}

fn child(f: impl FnOnce() -> i32) -> i32 {
    let status = in_child(f);
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        -1
    }
}

/// Creates `path` as root with owner `uid`:`gid` and `mode` (chmod after chown, which would
/// clear set-id bits); 0 or the first errno.
fn make(path: &str, uid: u32, gid: u32, mode: u32) -> i32 {
    match open_mode(p(path).c(), O_CREAT | O_WRONLY | O_TRUNC, 0o600) {
        Ok(fd) => {
            let _ = close(fd);
        }
        Err(e) => return e.0,
    }
    let r = chown(path, uid, gid);
    if r != 0 {
        return r;
    }
    chmod(path, mode)
}

/// One byte written at the end of `path`; 0 or the errno.
fn append(path: &str) -> i32 {
    match open(p(path).c(), O_WRONLY | O_APPEND) {
        Ok(fd) => {
            let r = errno_of(write(fd, b"x"));
            let _ = close(fd);
            r
        }
        Err(e) => e.0,
    }
}

/// `t_cred_files report U E S G EG SG SECURE`: exit 0 if this process runs with those ids
/// (getresuid/getresgid) and the auxiliary vector says the same (`AT_*`), else the number of
/// the first mismatch.
fn report(args: &[String]) -> i32 {
    let want: Vec<u32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if want.len() != 7 {
        return 99;
    }
    let (u, g) = (getresuid(), getresgid());
    let checks = [
        u == [want[0], want[1], want[2]],
        g == [want[3], want[4], want[5]],
        getauxval(AT_SECURE) == Some(u64::from(want[6])),
        getauxval(AT_UID) == Some(u64::from(u[0])),
        getauxval(AT_EUID) == Some(u64::from(u[1])),
        getauxval(AT_GID) == Some(u64::from(g[0])),
        getauxval(AT_EGID) == Some(u64::from(g[1])),
    ];
    match checks.iter().position(|ok| !ok) {
        None => 0,
        Some(i) => {
            cowlab_userland::println!("t_cred_files report: ids {u:?} {g:?}, check {i} failed");
            i as i32 + 1
        }
    }
}

/// Runs `prog report EXPECTED...` in a child that first sets its ids with `setup`.
fn exec_report(prog: &str, setup: impl FnOnce() -> bool, expect: [u32; 7]) -> i32 {
    let prog = String::from(prog);
    child(move || {
        if !setup() {
            return 98;
        }
        let nums: Vec<String> = expect.iter().map(|n| format!("{n}")).collect();
        let mut argv: Vec<&[u8]> = alloc::vec![prog.as_bytes(), b"report"];
        argv.extend(nums.iter().map(|s| s.as_bytes()));
        cowlab_userland::process::exec(&argv).0 + 100
    })
}

fn copy(from: &str, to: &str) -> i32 {
    let Ok(src) = open(p(from).c(), O_RDONLY) else {
        return -1;
    };
    let Ok(dst) = open_mode(p(to).c(), O_CREAT | O_WRONLY | O_TRUNC, 0o755) else {
        return -2;
    };
    let mut buf = alloc::vec![0u8; 64 * 1024];
    let mut r = 0;
    loop {
        match read(src, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if write(dst, &buf[..n]) != Ok(n) {
                    r = -3;
                    break;
                }
            }
            Err(_) => {
                r = -4;
                break;
            }
        }
    }
    let _ = close(src);
    let _ = close(dst);
    r
}

fn main() -> i32 {
    let args: Vec<String> = cowlab_userland::args::args()
        .map(|a| String::from_utf8_lossy(a.to_bytes()).into_owned())
        .collect();
    if args.get(1).map(String::as_str) == Some("report") {
        return report(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("shareopen") {
        return share_open(&args[2..]);
    }
    let mut t = Tester::new("t_cred_files");
    if getresuid()[1] != 0 {
        cowlab_userland::println!("t_cred_files: skip: needs root");
        return t.finish();
    }
    let _ = sys(95, &[0]);
    let dir = work_dir("t_cred_files");
    t.eq(
        "mkdir the test directory",
        errno_of(sys(83, &[p(&dir).ptr(), 0o755])),
        0,
    );
    let f = |name: &str| format!("{dir}/{name}");

    t.eq("root: a root file 0644", make(&f("rootf"), 0, 0, 0o644), 0);
    t.eq("root: a root file 0666", make(&f("open"), 0, 0, 0o666), 0);
    t.eq(
        "root: chown of a file to 4000:4000",
        make(&f("mine"), USER, USER, 0o644),
        0,
    );
    t.eq(
        "... stat shows the owner",
        (st(&f("mine")).st_uid, st(&f("mine")).st_gid),
        (USER, USER),
    );
    t.eq(
        "root: set-id file 06755 of 4000",
        make(&f("suid"), USER, USER, 0o6755),
        0,
    );
    t.eq(
        "root: set-gid file 02745 of 4000",
        make(&f("sgidnox"), USER, USER, 0o2745),
        0,
    );
    t.eq(
        "root: set-id file for root's write",
        make(&f("suidroot"), USER, USER, 0o6755),
        0,
    );
    t.eq(
        "root's write keeps the bits (CAP_FSETID)",
        append(&f("suidroot")),
        0,
    );
    t.eq("... mode", mode_of(&f("suidroot")), 0o6755);
    t.eq(
        "root: chown -1 -1 of a 06755 file",
        chown(&f("suidroot"), KEEP, KEEP),
        0,
    );
    t.eq(
        "... clears S_ISUID and (group-executable) S_ISGID",
        mode_of(&f("suidroot")),
        0o755,
    );
    t.eq(
        "root: chmod 02745, chown",
        chmod(&f("suidroot"), 0o2745) + chown(&f("suidroot"), USER, 0),
        0,
    );
    t.eq(
        "... a non-executable S_ISGID stays",
        mode_of(&f("suidroot")),
        0o2745,
    );
    t.eq(
        "fchownat with an unknown flag: EINVAL",
        fchownat(&f("mine"), KEEP, KEEP, 1),
        EINVAL,
    );

    let user = child(|| {
        if drop_to(USER, USER).is_err() {
            return 100;
        }
        let mut c = Tester::new("t_cred_files-user");
        c.eq(
            "chown of its file to another uid: EPERM",
            chown(&f("mine"), 0, KEEP),
            EPERM,
        );
        c.eq(
            "chown of its file to its own uid",
            chown(&f("mine"), USER, KEEP),
            0,
        );
        c.eq("chown -1 -1 of its file", chown(&f("mine"), KEEP, KEEP), 0);
        c.eq(
            "lchown to another group: EPERM",
            lchown(&f("mine"), KEEP, 0),
            EPERM,
        );
        c.eq(
            "fchownat AT_SYMLINK_NOFOLLOW to its own ids",
            fchownat(&f("mine"), USER, USER, AT_SYMLINK_NOFOLLOW),
            0,
        );
        let fd = open(p(&f("mine")).c(), O_RDONLY).unwrap_or(-1);
        c.eq(
            "fchown of a descriptor to another uid: EPERM",
            errno_of(sys(93, &[fd as usize, 0, usize::MAX])),
            EPERM,
        );
        c.eq(
            "fchownat AT_EMPTY_PATH on the descriptor, own group",
            errno_of(sys(
                260,
                &[
                    fd as usize,
                    c"".as_ptr() as usize,
                    usize::MAX,
                    USER as usize,
                    AT_EMPTY_PATH,
                ],
            )),
            0,
        );
        let _ = close(fd);
        c.eq(
            "chown -1 -1 of root's file (no change)",
            chown(&f("rootf"), KEEP, KEEP),
            0,
        );
        c.eq(
            "chown of root's file to itself: EPERM",
            chown(&f("rootf"), USER, KEEP),
            EPERM,
        );
        c.eq(
            "chmod of root's file: EPERM",
            chmod(&f("rootf"), 0o666),
            EPERM,
        );
        c.eq("chmod of its own file", chmod(&f("mine"), 0o600), 0);
        // utimensat.
        let now = [0, UTIME_NOW, 0, UTIME_NOW];
        let explicit = [5, 0, 6, 0];
        let half = [0, UTIME_NOW, 0, UTIME_OMIT];
        let none = [0, UTIME_OMIT, 0, UTIME_OMIT];
        c.eq(
            "utimensat NULL without write access: EACCES",
            utimens(&f("rootf"), None),
            EACCES,
        );
        c.eq(
            "utimensat NOW,NOW without write access: EACCES",
            utimens(&f("rootf"), Some(now)),
            EACCES,
        );
        c.eq(
            "utimensat explicit, not owner: EPERM",
            utimens(&f("rootf"), Some(explicit)),
            EPERM,
        );
        c.eq(
            "utimensat NOW,OMIT, not owner: EPERM",
            utimens(&f("rootf"), Some(half)),
            EPERM,
        );
        c.eq(
            "utimensat OMIT,OMIT: nothing to check",
            utimens(&f("rootf"), Some(none)),
            0,
        );
        c.eq(
            "utimensat NULL with write access",
            utimens(&f("open"), None),
            0,
        );
        c.eq(
            "utimensat explicit with write access only: EPERM",
            utimens(&f("open"), Some(explicit)),
            EPERM,
        );
        c.eq(
            "utimensat explicit as owner",
            utimens(&f("mine"), Some(explicit)),
            0,
        );
        c.eq(
            "... the times are set",
            (st(&f("mine")).st_times[0], st(&f("mine")).st_times[2]),
            (5, 6),
        );
        // The set-id bits go when an unprivileged process writes.
        c.eq("write to its 06755 file", append(&f("suid")), 0);
        c.eq(
            "... clears S_ISUID and S_ISGID (group-executable)",
            mode_of(&f("suid")),
            0o755,
        );
        c.eq(
            "write to its 02745 file (its group, no g+x)",
            append(&f("sgidnox")),
            0,
        );
        c.eq("... keeps S_ISGID", mode_of(&f("sgidnox")), 0o2745);
        c.eq("chmod 04755, then ftruncate", chmod(&f("suid"), 0o4755), 0);
        let fd = open(p(&f("suid")).c(), O_WRONLY).unwrap_or(-1);
        c.eq("... ftruncate", errno_of(ftruncate(fd, 0)), 0);
        let _ = close(fd);
        c.eq("... clears S_ISUID", mode_of(&f("suid")), 0o755);
        // One descriptor: a write without set-id bits, chmod u+s, a write again.
        let fd = open(p(&f("suid")).c(), O_WRONLY).unwrap_or(-1);
        c.eq(
            "a write through a kept descriptor",
            errno_of(write(fd, b"a")),
            0,
        );
        c.eq("chmod 04755 meanwhile", chmod(&f("suid"), 0o4755), 0);
        c.eq("the next write through it", errno_of(write(fd, b"b")), 0);
        c.eq("... clears S_ISUID again", mode_of(&f("suid")), 0o755);
        let _ = close(fd);
        c.eq("chmod 06755 of its file", chmod(&f("suid"), 0o6755), 0);
        c.eq(
            "chown -1 -1 of its set-id file clears the bits",
            chown(&f("suid"), KEEP, KEEP),
            0,
        );
        c.eq("... mode", mode_of(&f("suid")), 0o755);
        c.eq(
            "chown -1 -1 by the owner outside the file's group drops S_ISGID",
            (chown(&f("suidroot"), KEEP, KEEP), mode_of(&f("suidroot"))),
            (0, 0o745),
        );
        c.finish()
    });
    t.eq("the unprivileged checks pass", user, 0);

    // Set-user-ID and set-group-ID programs: copies of this program.
    let nosuid = statfs(p(&dir).c()).is_ok_and(|s| s.f_flags & ST_NOSUID != 0);
    let exe = self_exe();
    let (suid, sgid, sgidnox, plain) =
        (f("prog-suid"), f("prog-sgid"), f("prog-sgidnox"), f("prog"));
    for (path, uid, gid, mode) in [
        (&suid, 4321, 4322, 0o4755),
        (&sgid, 4321, 4322, 0o2755),
        (&sgidnox, 4321, 4322, 0o2745),
        (&plain, 4321, 4322, 0o755),
    ] {
        t.eq(
            &format!("copy of the program to {path}"),
            copy(&exe, path),
            0,
        );
        t.eq(
            &format!("chown+chmod {mode:o}"),
            chown(path, uid, gid) + chmod(path, mode),
            0,
        );
        t.eq(&format!("{path} mode"), mode_of(path), mode);
    }
    if nosuid {
        cowlab_userland::println!(
            "t_cred_files: skip the set-id execs: {dir} is on a nosuid mount"
        );
    } else {
        let drop = || drop_to(1000, 1000).is_ok();
        t.eq(
            "exec of a set-user-ID program: euid and saved uid from the file, AT_SECURE",
            exec_report(&suid, drop, [1000, 4321, 4321, 1000, 1000, 1000, 1]),
            0,
        );
        t.eq(
            "exec of a set-group-ID program: egid and saved gid from the file, AT_SECURE",
            exec_report(&sgid, drop, [1000, 1000, 1000, 1000, 4322, 4322, 1]),
            0,
        );
        t.eq(
            "exec of a set-group-ID program without g+x: ids unchanged, not secure",
            exec_report(&sgidnox, drop, [1000, 1000, 1000, 1000, 1000, 1000, 0]),
            0,
        );
        t.eq(
            "exec of a set-user-ID program by root: euid 4321, real 0",
            exec_report(&suid, || true, [0, 4321, 4321, 0, 0, 0, 1]),
            0,
        );
    }
    let mixed = || {
        errno_of(sys(119, &[1000, 1000, 1000])) == 0
            && errno_of(sys(116, &[0, 0])) == 0
            && errno_of(sys(117, &[1000, 2000, 3000])) == 0
    };
    t.eq(
        "exec of a plain program: saved uid becomes the effective (2000), AT_SECURE",
        exec_report(&plain, mixed, [1000, 2000, 2000, 1000, 1000, 1000, 1]),
        0,
    );
    t.eq(
        "exec of a plain program after dropping: not secure",
        exec_report(
            &plain,
            || drop_to(1000, 1000).is_ok(),
            [1000, 1000, 1000, 1000, 1000, 1000, 0],
        ),
        0,
    );
    t.eq(
        "exec of a plain program by root: not secure",
        exec_report(&plain, || true, [0, 0, 0, 0, 0, 0, 0]),
        0,
    );
    cross_mounts(&mut t, &f("rootf"));
    for name in [
        "rootf",
        "open",
        "mine",
        "suid",
        "sgidnox",
        "suidroot",
        "prog-suid",
        "prog-sgid",
        "prog-sgidnox",
        "prog",
    ] {
        t.eq(
            &format!("unlink {name}"),
            errno_of(unlink(p(&f(name)).c())),
            0,
        );
    }
    t.eq("rmdir the test directory", errno_of(rmdir(p(&dir).c())), 0);
    t.eq(
        "exec unshares a CLONE_FILES table: the sharer does not see what the program opens",
        exec_unshares_files(),
        0,
    );
    sysctl_modes(&mut t);
    t.finish()
}

/// The `/proc/sys/vm` files cowlab has are root's, `0644` (`0200` for `drop_caches`), and an
/// open is checked against that mode: another user reads the intervals but writes nothing.
fn sysctl_modes(t: &mut Tester) {
    const WB: &str = "/proc/sys/vm/dirty_writeback_centisecs";
    const EXP: &str = "/proc/sys/vm/dirty_expire_centisecs";
    const DROP: &str = "/proc/sys/vm/drop_caches";
    for (file, mode) in [(WB, 0o644), (EXP, 0o644), (DROP, 0o200)] {
        t.eq(
            &format!("{file} is mode {mode:o}"),
            mode_of(file) & 0o7777,
            mode,
        );
    }
    for (file, flags, want) in [
        (WB, O_WRONLY, EACCES),
        (WB, O_RDONLY, 0),
        (EXP, O_RDWR, EACCES),
        (DROP, O_WRONLY, EACCES),
        (DROP, O_RDONLY, EACCES),
    ] {
        t.eq(
            &format!("uid 1000: open {file} flags {flags}"),
            child(move || {
                if drop_to(1000, 1000).is_err() {
                    return 99;
                }
                errno_of(open(p(file).c(), flags))
            }),
            want,
        );
    }
}

/// The descriptor the exec'd program of [`exec_unshares_files`] opens.
const SHARED_FD: i32 = 200;

/// `prog shareopen W R`: opens `/` at [`SHARED_FD`], says so on `W`, waits for a byte on `R`.
fn share_open(args: &[String]) -> i32 {
    let fds: Vec<i32> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let [w, r] = fds[..] else { return 97 };
    let Ok(fd) = open(c"/", O_RDONLY) else {
        return 96;
    };
    let _ = dup2(fd, SHARED_FD);
    let _ = write(w, b"!");
    let mut b = [0u8; 1];
    let _ = read(r, &mut b);
    0
}

/// A process created by `clone(CLONE_FILES)` (sharing the table, not a thread) execs a
/// program that opens a file: Linux's execve always unshares the table first
/// (`unshare_files`), so the sharer's [`SHARED_FD`] stays closed. 0, else what failed.
fn exec_unshares_files() -> i32 {
    child(|| {
        let (Ok([ar, aw]), Ok([br, bw])) = (pipe(), pipe()) else {
            return 1;
        };
        let _ = close(SHARED_FD);
        let exe = self_exe();
        let (w, r) = (format!("{aw}"), format!("{br}"));
        // clone(CLONE_FILES | SIGCHLD) with no new stack: a forked process sharing the table.
        let Ok(c) = sys(56, &[0x400 | 17, 0, 0, 0, 0]) else {
            return 2;
        };
        if c == 0 {
            let argv: [&[u8]; 4] = [exe.as_bytes(), b"shareopen", w.as_bytes(), r.as_bytes()];
            let e = cowlab_userland::process::exec(&argv).0;
            // Wake the sharer, which holds the write end too.
            let _ = write(aw, b"x");
            exit_now(e + 100);
        }
        let mut b = [0u8; 1];
        let said = read(ar, &mut b);
        let seen = fcntl(SHARED_FD, 1, 0);
        let _ = write(bw, b"!");
        let status = waitpid(c as i32, 0).map(|(_, s)| s);
        if said != Ok(1) {
            return 3;
        }
        if status != Ok(0) {
            return 4;
        }
        if seen.is_ok() {
            return 5;
        }
        0
    })
}

/// With `/` at mode 0700, an unprivileged process may not reach anything: on the root file
/// system or through it into `/tmp` and `/proc` (Linux's `may_lookup` on every directory of
/// the walk, across mounts); root still may. cowlab only (it changes `/`).
fn cross_mounts(t: &mut Tester, file: &str) {
    if !cowlab_userland::test::on_cowlab() {
        cowlab_userland::println!(
            "t_cred_files: skip the cross-mount search checks: they chmod /, not done on a host"
        );
        return;
    }
    let root_mode = mode_of("/");
    t.eq("chmod / 0700", chmod("/", 0o700), 0);
    let file = String::from(file);
    let status = child(move || {
        if drop_to(USER, USER).is_err() {
            return 100;
        }
        let mut c = Tester::new("t_cred_files-search");
        c.eq(
            "stat of a file on / : EACCES",
            errno_of(stat(p(&file).c())),
            EACCES,
        );
        c.eq(
            "stat /tmp (tmpfs, through /): EACCES",
            errno_of(stat(c"/tmp")),
            EACCES,
        );
        c.eq(
            "create in /tmp: EACCES",
            errno_of(open_mode(c"/tmp/t_cred_files.x", O_CREAT | O_WRONLY, 0o600)),
            EACCES,
        );
        c.eq(
            "open /proc/self/status (procfs, through /): EACCES",
            errno_of(open(c"/proc/self/status", O_RDONLY)),
            EACCES,
        );
        c.finish()
    });
    t.eq(
        "with / at 0700 an unprivileged process reaches no mount",
        status,
        0,
    );
    t.eq(
        "root still opens /proc/self/status",
        errno_of(open(c"/proc/self/status", O_RDONLY).map(close)),
        0,
    );
    t.eq("chmod / back", chmod("/", root_mode), 0);
    let status = child(|| {
        if drop_to(USER, USER).is_err() {
            return 100;
        }
        errno_of(stat(c"/tmp")) + errno_of(open(c"/proc/self/status", O_RDONLY).map(close))
    });
    t.eq(
        "with / searchable again it reaches /tmp and /proc",
        status,
        0,
    );
}
