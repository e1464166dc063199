//! Permissions as Linux enforces them: mode bits on open/access/execve, search permission on
//! directories, write+search on the parent to create or remove, the sticky bit, chmod by the
//! owner only, new files owned by the caller, the umask (inherited by fork), and root passing
//! every check but exec of a file without any `x` bit. Run as root, the checks run twice: as
//! root, then in a child that drops to uid/gid 65534 with setresgid/setresuid (and cannot get
//! root back). Run as another user, the unprivileged half runs directly.
//!
//! Works in `$T_PERM_DIR/t_perm.PID`, else in `/` on cowlab (the ext2 root) and `/tmp` on the
//! host; the sticky checks also run in `/tmp` itself (cowlab's tmpfs).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicI32, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{errno_of, p, sys};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const EACCES: i32 = 13;
const EPERM: i32 = 1;
const NOBODY: usize = 65534;
const R_OK: usize = 4;
const W_OK: usize = 2;
const X_OK: usize = 1;

fn mkdir(path: &str, mode: u32) -> i32 {
    errno_of(sys(83, &[p(path).ptr(), mode as usize]))
}

fn chmod(path: &str, mode: u32) -> i32 {
    errno_of(sys(90, &[p(path).ptr(), mode as usize]))
}

fn chdir(path: &str) -> i32 {
    errno_of(sys(80, &[p(path).ptr()]))
}

fn access(path: &str, mode: usize) -> i32 {
    errno_of(sys(21, &[p(path).ptr(), mode]))
}

fn umask(mask: u32) -> u32 {
    sys(95, &[mask as usize]).unwrap_or(usize::MAX) as u32
}

fn getresuid() -> [u32; 3] {
    let mut ids = [u32::MAX; 3];
    let [a, b, c] = ids.each_mut().map(|r| r as *mut u32 as usize);
    let _ = sys(118, &[a, b, c]);
    ids
}

fn getresgid() -> [u32; 3] {
    let mut ids = [u32::MAX; 3];
    let [a, b, c] = ids.each_mut().map(|r| r as *mut u32 as usize);
    let _ = sys(120, &[a, b, c]);
    ids
}

/// `open` as an errno (0: opened, and closed again).
fn open_err(path: &str, flags: u32, mode: u32) -> i32 {
    match open_mode(p(path).c(), flags, mode) {
        Ok(fd) => {
            let _ = close(fd);
            0
        }
        Err(e) => e.0,
    }
}

fn create(path: &str, mode: u32) -> i32 {
    open_err(path, O_CREAT | O_WRONLY | O_TRUNC, mode)
}

fn unlink_p(path: &str) -> i32 {
    errno_of(unlink(p(path).c()))
}

fn mode_of(path: &str) -> u32 {
    stat(p(path).c()).map_or(u32::MAX, |s| s.st_mode & 0o7777)
}

/// Runs `f` in a child; its exit status (-1 if it did not exit).
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    match fork() {
        Ok(0) => exit_now(f()),
        Ok(pid) => match waitpid(pid, 0) {
            Ok((_, status)) if status & 0x7f == 0 => (status >> 8) & 0xff,
            _ => -1,
        },
        Err(_) => -1,
    }
}

/// The errno of an execve of `path` in a child (0 if the exec itself succeeded).
fn exec_errno(path: &str) -> i32 {
    let path = String::from(path);
    in_child(move || {
        let c = p(&path);
        let argv = [c.0.as_ptr(), core::ptr::null()];
        let envp = [core::ptr::null()];
        execve(c.c(), &argv, &envp).0
    })
}

fn base_dir(cowlab: bool) -> String {
    for var in cowlab_userland::args::env() {
        if let Some(v) = var.to_bytes().strip_prefix(b"T_PERM_DIR=") {
            return String::from_utf8_lossy(v).into_owned();
        }
    }
    String::from(if cowlab { "" } else { "/tmp" })
}

fn main() -> i32 {
    let mut t = Tester::new("t_perm");
    let cowlab = on_cowlab();
    let root = getresuid()[1] == 0;
    // Exact modes below: no mask until the umask checks set one.
    umask(0);
    TAG.store(cowlab_userland::sys::getpid(), Ordering::Relaxed);
    let dir = format!(
        "{}/t_perm.{}",
        base_dir(cowlab),
        TAG.load(Ordering::Relaxed)
    );
    t.eq("mkdir of the test directory", mkdir(&dir, 0o755), 0);
    t.eq("chdir into it", chdir(&dir), 0);

    if root {
        t.eq(
            "a directory for the unprivileged child",
            mkdir("user", 0o777),
            0,
        );
        checks(&mut t, "root", true);
        root_owned(&mut t);
        let me = getresuid();
        t.eq("the test starts as root", me, [0, 0, 0]);
        let status = in_child(|| {
            let mut c = Tester::new("t_perm-child");
            c.eq(
                "setresgid(65534, 65534, 65534)",
                sys(119, &[NOBODY, NOBODY, NOBODY]),
                Ok(0),
            );
            c.eq(
                "setresuid(65534, 65534, 65534)",
                sys(117, &[NOBODY, NOBODY, NOBODY]),
                Ok(0),
            );
            c.eq("getresuid after dropping", getresuid(), [65534; 3]);
            c.eq("getresgid after dropping", getresgid(), [65534; 3]);
            c.eq("setuid(0) is EPERM", errno_of(sys(105, &[0])), EPERM);
            c.eq(
                "setresuid(0, -1, -1) is EPERM",
                errno_of(sys(117, &[0, usize::MAX, usize::MAX])),
                EPERM,
            );
            c.eq("setgid(0) is EPERM", errno_of(sys(106, &[0])), EPERM);
            c.eq(
                "setreuid(-1, 65534) to an id it has",
                sys(113, &[usize::MAX, NOBODY]),
                Ok(0),
            );
            c.eq(
                "setreuid(0, -1) is EPERM",
                errno_of(sys(113, &[0, usize::MAX])),
                EPERM,
            );
            c.eq(
                "setregid(-1, 0) is EPERM",
                errno_of(sys(114, &[usize::MAX, 0])),
                EPERM,
            );
            c.eq(
                "setfsuid(0) returns the old fsuid",
                sys(122, &[0]),
                Ok(NOBODY),
            );
            c.eq(
                "... and left it (setfsuid(-1) reads it)",
                sys(122, &[usize::MAX]),
                Ok(NOBODY),
            );
            c.eq("chdir into user", chdir("user"), 0);
            checks(&mut c, "uid 65534", false);
            let _ = chdir("..");
            against_root(&mut c);
            c.finish()
        });
        t.eq("the unprivileged child's checks pass", status, 0);
        t.eq("the child's leftovers", unlink_p("user/child-made"), 0);
        t.eq("rmdir user", errno_of(rmdir(p("user").c())), 0);
        for f in ["secret", "public", "sticky/rootf", &tmp_name("root")] {
            t.eq(&format!("root: unlink {f}"), unlink_p(f), 0);
        }
        t.eq("rmdir sticky", errno_of(rmdir(p("sticky").c())), 0);
    } else {
        checks(&mut t, "unprivileged", false);
    }
    let _ = chdir("/");
    t.eq(
        "rmdir of the test directory",
        errno_of(rmdir(p(&dir).c())),
        0,
    );
    t.finish()
}

/// The checks on files the caller owns (the same for root and others, the answers differ):
/// `root` expects the overrides.
fn checks(t: &mut Tester, who: &str, root: bool) {
    let denied = if root { 0 } else { EACCES };
    let (uid, gid) = (getresuid()[1], getresgid()[1]);

    t.eq(
        &format!("{who}: create none (mode 0)"),
        create("none", 0),
        0,
    );
    let st = stat(p("none").c()).unwrap_or_default();
    t.eq(
        &format!("{who}: a new file is the caller's"),
        (st.st_uid, st.st_gid),
        (uid, gid),
    );
    t.eq(
        &format!("{who}: open O_RDONLY of mode 0"),
        open_err("none", O_RDONLY, 0),
        denied,
    );
    t.eq(
        &format!("{who}: open O_WRONLY of mode 0"),
        open_err("none", O_WRONLY, 0),
        denied,
    );
    t.eq(
        &format!("{who}: access R_OK of mode 0"),
        access("none", R_OK),
        denied,
    );
    t.eq(
        &format!("{who}: access W_OK of mode 0"),
        access("none", W_OK),
        denied,
    );
    t.eq(
        &format!("{who}: access X_OK without any x bit"),
        access("none", X_OK),
        EACCES,
    );
    t.eq(
        &format!("{who}: stat needs no permission on the file"),
        mode_of("none"),
        0,
    );

    t.eq(&format!("{who}: create ro (0444)"), create("ro", 0o444), 0);
    t.eq(
        &format!("{who}: open O_RDONLY of 0444"),
        open_err("ro", O_RDONLY, 0),
        0,
    );
    t.eq(
        &format!("{who}: open O_RDWR of 0444"),
        open_err("ro", O_RDWR, 0),
        denied,
    );
    t.eq(
        &format!("{who}: O_RDONLY|O_TRUNC of 0444 needs write"),
        open_err("ro", O_RDONLY | O_TRUNC, 0),
        denied,
    );
    t.eq(
        &format!("{who}: create exe (0644, no x)"),
        create("noexec", 0o644),
        0,
    );
    t.eq(
        &format!("{who}: execve of a file without x is EACCES"),
        exec_errno("./noexec"),
        EACCES,
    );

    // A directory without search permission hides what is in it.
    t.eq(&format!("{who}: mkdir hidden"), mkdir("hidden", 0o755), 0);
    t.eq(
        &format!("{who}: a file in hidden"),
        create("hidden/f", 0o666),
        0,
    );
    t.eq(
        &format!("{who}: chmod hidden 0666 (no x)"),
        chmod("hidden", 0o666),
        0,
    );
    t.eq(
        &format!("{who}: open through a directory without x"),
        open_err("hidden/f", O_RDONLY, 0),
        denied,
    );
    t.eq(
        &format!("{who}: stat through a directory without x"),
        errno_of(stat(p("hidden/f").c())),
        denied,
    );
    t.eq(
        &format!("{who}: chdir into a directory without x"),
        chdir_back("hidden"),
        denied,
    );
    t.eq(
        &format!("{who}: chmod hidden back"),
        chmod("hidden", 0o755),
        0,
    );
    t.eq(&format!("{who}: unlink hidden/f"), unlink_p("hidden/f"), 0);

    // A directory without write permission: nothing is added or removed.
    t.eq(&format!("{who}: mkdir locked"), mkdir("locked", 0o755), 0);
    t.eq(
        &format!("{who}: a file in locked"),
        create("locked/f", 0o666),
        0,
    );
    t.eq(
        &format!("{who}: chmod locked 0555"),
        chmod("locked", 0o555),
        0,
    );
    t.eq(
        &format!("{who}: create in a directory without w"),
        create("locked/new", 0o666),
        denied,
    );
    t.eq(
        &format!("{who}: mkdir in a directory without w"),
        mkdir("locked/sub", 0o755),
        denied,
    );
    t.eq(
        &format!("{who}: writing an existing file needs no w on the directory"),
        open_err("locked/f", O_WRONLY, 0),
        0,
    );
    t.eq(
        &format!("{who}: unlink in a directory without w"),
        unlink_p("locked/f"),
        denied,
    );
    t.eq(
        &format!("{who}: chmod locked back"),
        chmod("locked", 0o755),
        0,
    );
    let _ = unlink_p("locked/new");
    let _ = rmdir(p("locked/sub").c());
    let _ = unlink_p("locked/f");
    t.eq(
        &format!("{who}: rmdir locked"),
        errno_of(rmdir(p("locked").c())),
        0,
    );
    t.eq(
        &format!("{who}: rmdir hidden"),
        errno_of(rmdir(p("hidden").c())),
        0,
    );

    // The umask: applied to open and mkdir, returned by the next call, inherited by fork.
    t.eq(
        &format!("{who}: umask(027) returns the old mask"),
        umask(0o027),
        0,
    );
    t.eq(
        &format!("{who}: creat 0666 under umask 027"),
        create("masked", 0o666),
        0,
    );
    t.eq(&format!("{who}: its mode"), mode_of("masked"), 0o640);
    t.eq(
        &format!("{who}: mkdir 0777 under umask 027"),
        mkdir("maskdir", 0o777),
        0,
    );
    t.eq(&format!("{who}: its mode"), mode_of("maskdir"), 0o750);
    t.eq(
        &format!("{who}: a child inherits the umask"),
        in_child(|| umask(0) as i32),
        0o027,
    );
    t.eq(&format!("{who}: umask(0) returns 027"), umask(0), 0o027);
    t.eq(&format!("{who}: umask keeps only 0777"), umask(0o7777), 0);
    t.eq(
        &format!("{who}: ... so the next call sees 0777"),
        umask(0),
        0o777,
    );

    for f in ["none", "ro", "noexec", "masked"] {
        t.eq(&format!("{who}: unlink {f}"), unlink_p(f), 0);
    }
    t.eq(
        &format!("{who}: rmdir maskdir"),
        errno_of(rmdir(p("maskdir").c())),
        0,
    );
}

/// chdir into `dir` and, if that worked, back out: the errno.
fn chdir_back(dir: &str) -> i32 {
    let e = chdir(dir);
    if e == 0 {
        let _ = chdir("..");
    }
    e
}

/// Files root prepares for the unprivileged child: a private file, a directory only root may
/// change, a sticky directory with a file of root's, and one in `/tmp`.
fn root_owned(t: &mut Tester) {
    t.eq("root: create secret (0600)", create("secret", 0o600), 0);
    t.eq("root: create public (0644)", create("public", 0o644), 0);
    t.eq("root: mkdir sticky (01777)", mkdir("sticky", 0o1777), 0);
    t.eq("root: sticky keeps S_ISVTX", mode_of("sticky"), 0o1777);
    t.eq(
        "root: sticky/rootf (0666)",
        create("sticky/rootf", 0o666),
        0,
    );
    t.eq(
        "root: /tmp/t_perm_root (0644)",
        create(&tmp_name("root"), 0o644),
        0,
    );
    t.eq(
        "root: execve of a 0644 file is EACCES for root too",
        exec_errno("./public"),
        EACCES,
    );
}

/// The test's pid (the parent's, in the child too): names in `/tmp`.
static TAG: AtomicI32 = AtomicI32::new(0);

fn tmp_name(what: &str) -> String {
    format!("/tmp/t_perm_{what}.{}", TAG.load(Ordering::Relaxed))
}

/// The unprivileged child against root's files (see [`root_owned`]), then root cleans up.
fn against_root(c: &mut Tester) {
    c.eq(
        "open O_RDONLY of root's 0600",
        open_err("secret", O_RDONLY, 0),
        EACCES,
    );
    c.eq(
        "open O_RDONLY of root's 0644",
        open_err("public", O_RDONLY, 0),
        0,
    );
    c.eq(
        "open O_WRONLY of root's 0644",
        open_err("public", O_WRONLY, 0),
        EACCES,
    );
    c.eq("access W_OK of root's 0644", access("public", W_OK), EACCES);
    c.eq("access R_OK of root's 0644", access("public", R_OK), 0);
    c.eq(
        "chmod of root's file is EPERM",
        chmod("public", 0o666),
        EPERM,
    );
    c.eq(
        "create in root's 0755 directory",
        create("mine", 0o644),
        EACCES,
    );
    c.eq(
        "unlink in root's 0755 directory",
        unlink_p("public"),
        EACCES,
    );
    c.eq(
        "mkdir in root's 0755 directory",
        mkdir("mydir", 0o755),
        EACCES,
    );
    c.eq(
        "create in the 0777 user directory",
        create("user/child-made", 0o644),
        0,
    );

    c.eq(
        "sticky: writing root's 0666 file",
        open_err("sticky/rootf", O_WRONLY, 0),
        0,
    );
    c.eq(
        "sticky: unlink of root's file is EPERM",
        unlink_p("sticky/rootf"),
        EPERM,
    );
    c.eq(
        "sticky: rename of root's file is EPERM",
        errno_of(rename(p("sticky/rootf").c(), p("sticky/moved").c())),
        EPERM,
    );
    c.eq("sticky: create my own", create("sticky/mine", 0o644), 0);
    c.eq(
        "sticky: rename over root's file is EPERM",
        errno_of(rename(p("sticky/mine").c(), p("sticky/rootf").c())),
        EPERM,
    );
    c.eq("sticky: unlink my own", unlink_p("sticky/mine"), 0);

    let rootf = tmp_name("root");
    let mine = tmp_name("child");
    c.eq(
        "/tmp: O_WRONLY of root's 0644",
        open_err(&rootf, O_WRONLY, 0),
        EACCES,
    );
    c.eq(
        "/tmp: O_RDONLY of root's 0644",
        open_err(&rootf, O_RDONLY, 0),
        0,
    );
    c.eq(
        "/tmp: unlink of root's file is EPERM (sticky)",
        unlink_p(&rootf),
        EPERM,
    );
    c.eq("/tmp: create my own", create(&mine, 0o600), 0);
    c.eq(
        "/tmp: my file is mine",
        stat(p(&mine).c()).map(|s| (s.st_uid, s.st_gid)),
        Ok((65534, 65534)),
    );
    c.eq("/tmp: unlink my own", unlink_p(&mine), 0);
}
