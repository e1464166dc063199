//! Opening `/proc/<pid>/fd/<n>` gives a new open file description of what the descriptor
//! refers to, as on Linux: a regular file reopened with its own offset and the new flags, a
//! pipe end as a new reader, writer or both of the same pipe (also another process's), a memfd
//! as the same object; a closed descriptor is `ENOENT`, `O_CREAT|O_EXCL` `EEXIST`,
//! `O_DIRECTORY` on a pipe `ENOTDIR`. Another user's `/proc/<pid>/fd/<n>`, `exe`, `cwd` and
//! `mem` are `EACCES` (`ptrace_may_access`); an `O_PATH` descriptor, whatever access mode it
//! asked, gives `EBADF` to read, write, pread, mmap and fchmod. The same assertions on the
//! host Linux (run as root: the other user is a forked child at uid 1000).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::ffi::CString;
use alloc::format;
use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

fn fdpath(pid: &str, fd: i32) -> CString {
    CString::new(format!("/proc/{pid}/fd/{fd}")).expect("no NUL")
}

fn reopen(fd: i32, flags: u32) -> Result<i32, Errno> {
    open(&fdpath("self", fd), flags)
}

fn read_str(fd: i32) -> alloc::string::String {
    let mut buf = [0u8; 64];
    let n = read(fd, &mut buf).unwrap_or(0);
    alloc::string::String::from_utf8_lossy(&buf[..n]).into()
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi3_procfd");
    let [r, w] = pipe().expect("pipe");

    // A new writer and a new reader of the same pipe.
    let w2 = reopen(w, O_WRONLY);
    let r2 = reopen(r, O_RDONLY);
    t.check_why(
        "open fd/<write end> O_WRONLY",
        w2.is_ok(),
        format!("{w2:?}"),
    );
    t.check_why("open fd/<read end> O_RDONLY", r2.is_ok(), format!("{r2:?}"));
    let (w2, r2) = (w2.unwrap_or(-1), r2.unwrap_or(-1));
    t.check("a new descriptor", w2 != w && r2 != r);
    let _ = write(w2, b"abc");
    t.eq(
        "the reopened writer feeds the pipe",
        read_str(r),
        "abc".into(),
    );
    let _ = write(w, b"de");
    t.eq("the reopened reader drains it", read_str(r2), "de".into());
    let ino = |fd| fstat(fd).map(|s| s.st_ino).unwrap_or(0);
    t.check("same pipe inode", ino(r2) == ino(r) && ino(w2) == ino(w));
    // Read-write: one description that is both a reader and a writer.
    let rw = reopen(r, O_RDWR).unwrap_or(-1);
    let _ = write(rw, b"xy");
    t.eq(
        "O_RDWR writes and reads the pipe",
        read_str(rw),
        "xy".into(),
    );
    // It has the pipe's wait channels: epoll takes it and wakes on data.
    // SAFETY: epoll_create1 takes an integer.
    let ep = unsafe { raw(291, [0; 6]) }.map_or(-1, |e| e as i32);
    let mut ev = [0u8; 12];
    ev[..4].copy_from_slice(&1u32.to_ne_bytes());
    t.eq(
        "epoll_ctl ADD of the O_RDWR reopen",
        epoll_ctl_add(ep, rw, &ev),
        Ok(0),
    );
    t.eq("epoll_wait: nothing to read yet", epoll_wait(ep, 0), Ok(0));
    let _ = write(w, b"q");
    t.eq(
        "epoll_wait: readable once written",
        epoll_wait(ep, 1000),
        Ok(1),
    );
    let _ = read_str(rw);
    let _ = close(ep);
    // The writers are counted: with every writer closed the reader sees end of file.
    let _ = close(w);
    let _ = write(w2, b"z");
    t.eq(
        "reopened writer outlives the original",
        read_str(r),
        "z".into(),
    );
    let _ = close(w2);
    let _ = close(rw);
    t.eq(
        "EOF once the reopened writers close",
        read(r, &mut [0u8; 4]),
        Ok(0),
    );

    // Another process's pipe, by its pid.
    let [pr, pw] = pipe().expect("pipe");
    let parent = format!("{}", getpid());
    let child = fork().unwrap_or(-1);
    if child == 0 {
        let _ = close(pw);
        let ok = match open(&fdpath(&parent, pw), O_WRONLY) {
            Ok(fd) => write(fd, b"via parent").is_ok(),
            Err(_) => false,
        };
        exit_now(i32::from(!ok));
    }
    let status = waitpid(child, 0).map_or(-1, |(_, s)| s);
    t.eq("child wrote through /proc/<ppid>/fd/<n>", status, 0);
    t.eq("and the parent reads it", read_str(pr), "via parent".into());

    // Errors.
    t.eq(
        "closed descriptor: ENOENT",
        reopen(999, O_RDONLY),
        Err(Errno(2)),
    );
    t.eq(
        "O_CREAT|O_EXCL: EEXIST",
        reopen(pr, O_RDONLY | O_CREAT | O_EXCL),
        Err(Errno(17)),
    );
    t.eq(
        "O_DIRECTORY on a pipe: ENOTDIR",
        reopen(pr, O_RDONLY | O_DIRECTORY),
        Err(Errno(20)),
    );

    // A regular file: its own offset and flags.
    let name = CString::new(format!("/tmp/t_abi3_procfd.{}", getpid())).expect("no NUL");
    let f = open_mode(&name, O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let _ = write(f, b"hello");
    let g = reopen(f, O_RDONLY).unwrap_or(-1);
    t.eq(
        "a reopened file starts at offset 0",
        read_str(g),
        "hello".into(),
    );
    t.eq("the original keeps its offset", lseek(f, 0, 1), Ok(5));
    t.eq("the new one is read-only", write(g, b"x"), Err(Errno(9)));
    let a = reopen(f, O_WRONLY | O_APPEND).unwrap_or(-1);
    let _ = write(a, b"!");
    t.eq(
        "O_APPEND applies to the new one",
        pread_str(f),
        "hello!".into(),
    );
    let tr = reopen(f, O_WRONLY | O_TRUNC).unwrap_or(-1);
    t.eq("O_TRUNC truncates", fstat(f).map(|s| s.st_size), Ok(0));
    for fd in [f, g, a, tr] {
        let _ = close(fd);
    }
    let _ = unlink(&name);

    // A memfd: the same object, another description.
    let m = memfd_create(c"t_abi3", 0).unwrap_or(-1);
    let _ = write(m, b"memfd");
    let m2 = reopen(m, O_RDWR);
    t.check_why("open fd/<memfd>", m2.is_ok(), format!("{m2:?}"));
    let m2 = m2.unwrap_or(-1);
    t.eq(
        "reads the memfd's bytes from 0",
        read_str(m2),
        "memfd".into(),
    );
    let _ = pwrite(m2, b"M", 0);
    t.eq("writes reach the same object", pread_str(m), "Memfd".into());

    // O_PATH through the link: a new description that only names the memfd.
    let mp = reopen(m, O_PATH).unwrap_or(-1);
    t.check("open fd/<memfd> O_PATH", mp >= 0 && mp != m);
    let mut b = [0u8; 4];
    t.eq("pread on it is EBADF", pread(mp, &mut b, 0), Err(Errno(9)));
    t.eq(
        "it stats as the memfd",
        fstat(mp).map(|s| s.st_size),
        fstat(m).map(|s| s.st_size),
    );
    t.eq(
        "its status flags are its own (O_PATH)",
        fcntl(mp, 3, 0).map(|f| f as u32 & O_PATH != 0),
        Ok(true),
    );

    other_user(&mut t, m);
    t.finish()
}

const O_PATH: u32 = 0o10000000;

fn epoll_ctl_add(ep: i32, fd: i32, ev: &[u8; 12]) -> Result<usize, Errno> {
    // SAFETY: `ev` is a live `struct epoll_event` (packed, 12 bytes).
    unsafe {
        raw(
            233,
            [ep as usize, 1, fd as usize, ev.as_ptr() as usize, 0, 0],
        )
    }
}

fn epoll_wait(ep: i32, timeout_ms: i32) -> Result<usize, Errno> {
    let mut out = [0u8; 12];
    // SAFETY: room for one event.
    unsafe {
        raw(
            232,
            [
                ep as usize,
                out.as_mut_ptr() as usize,
                1,
                timeout_ms as usize,
                0,
                0,
            ],
        )
    }
}
const EACCES: i32 = 13;
const EBADF: i32 = 9;

/// The errno of `r` (0 for success).
fn errno<T>(r: Result<T, Errno>) -> i32 {
    r.err().map_or(0, |e| e.0)
}

/// Runs `f` in a child at uid/gid 1000 and gives its exit code (255: could not drop).
fn as_user(f: impl FnOnce() -> i32) -> i32 {
    let status = cowlab_userland::test::in_child(|| {
        if cowlab_userland::cred::drop_to(1000, 1000).is_err() {
            return 255;
        }
        f()
    });
    if status & 0x7f == 0 {
        (status >> 8) & 0xff
    } else {
        -1
    }
}

fn readlink_errno(path: &CString) -> i32 {
    let mut buf = [0u8; 128];
    // SAFETY: readlink writes at most `buf.len()` bytes into `buf`.
    let r = unsafe {
        raw(
            89,
            [
                path.as_ptr() as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            ],
        )
    };
    errno(r)
}

/// What an unprivileged process may do with root's process and files.
fn other_user(t: &mut Tester, m: i32) {
    let me = alloc::format!("{}", getpid());
    let fdp = fdpath(&me, m);
    t.eq(
        "uid 1000: root's fd/<memfd> O_RDWR is EACCES",
        as_user(|| errno(open(&fdp, O_RDWR))),
        EACCES,
    );
    t.eq(
        "uid 1000: root's fd/<memfd> O_RDONLY is EACCES",
        as_user(|| errno(open(&fdp, O_RDONLY))),
        EACCES,
    );
    t.eq(
        "uid 1000: root's fd/<memfd> O_PATH is EACCES",
        as_user(|| errno(open(&fdp, O_PATH))),
        EACCES,
    );
    t.eq(
        "uid 1000: readlink root's fd/<memfd> is EACCES",
        as_user(|| readlink_errno(&fdp)),
        EACCES,
    );
    for link in ["exe", "cwd"] {
        let p = CString::new(format!("/proc/{me}/{link}")).expect("no NUL");
        t.eq(
            &format!("uid 1000: readlink root's {link} is EACCES"),
            as_user(|| readlink_errno(&p)),
            EACCES,
        );
    }
    let mem = CString::new(format!("/proc/{me}/mem")).expect("no NUL");
    t.eq(
        "uid 1000: root's mem is EACCES",
        as_user(|| errno(open(&mem, O_RDONLY))),
        EACCES,
    );
    t.eq(
        "uid 1000: its own fd/<n> still opens",
        as_user(|| {
            let n = memfd_create(c"own", 0).unwrap_or(-1);
            errno(open(&fdpath("self", n), O_RDWR))
        }),
        0,
    );

    // O_PATH ignores the access mode: a root 0600 file is named, not readable or writable.
    let dir = cowlab_userland::cred::work_dir("t_abi3_procfd");
    let cdir = CString::new(dir.clone()).expect("no NUL");
    // SAFETY: mkdir reads the path.
    let _ = unsafe { raw(83, [cdir.as_ptr() as usize, 0o755, 0, 0, 0, 0]) };
    let secret = CString::new(format!("{dir}/secret")).expect("no NUL");
    if let Ok(fd) = open_mode(&secret, O_CREAT | O_WRONLY | O_TRUNC, 0o600) {
        let _ = write(fd, b"rootonly");
        let _ = close(fd);
    }
    t.eq(
        "uid 1000: the 0600 file O_RDONLY is EACCES",
        as_user(|| errno(open(&secret, O_RDONLY))),
        EACCES,
    );
    let path_checks = |fd: i32| -> i32 {
        let mut b = [0u8; 8];
        if errno(pread(fd, &mut b, 0)) != EBADF {
            return 1;
        }
        if errno(read(fd, &mut b)) != EBADF {
            return 2;
        }
        if errno(write(fd, b"x")) != EBADF {
            return 3;
        }
        if errno(pwrite(fd, b"x", 0)) != EBADF {
            return 4;
        }
        // SAFETY: a file mapping of a descriptor; no memory is touched.
        let map = unsafe { raw(9, [0, 4096, 1, 1, fd as usize, 0]) };
        if errno(map) != EBADF {
            return 5;
        }
        // SAFETY: fchmod takes integers.
        if errno(unsafe { raw(91, [fd as usize, 0o666, 0, 0, 0, 0]) }) != EBADF {
            return 6;
        }
        if fstat(fd).map(|s| s.st_size) != Ok(8) {
            return 7;
        }
        if fcntl(fd, 3, 0).map(|f| f as u32 & (O_PATH | 3)) != Ok(O_PATH) {
            return 8;
        }
        0
    };
    t.eq(
        "uid 1000: O_PATH|O_RDWR of the 0600 file opens but reads, writes, maps, chmods EBADF",
        as_user(|| match open(&secret, O_PATH | O_RDWR) {
            Ok(fd) => path_checks(fd),
            Err(e) => 100 + e.0,
        }),
        0,
    );
    t.eq(
        "root: O_PATH|O_RDWR likewise",
        match open(&secret, O_PATH | O_RDWR) {
            Ok(fd) => path_checks(fd),
            Err(e) => 100 + e.0,
        },
        0,
    );
    let absent = CString::new(format!("{dir}/absent")).expect("no NUL");
    t.eq(
        "O_PATH|O_CREAT creates nothing (ENOENT)",
        errno(open_mode(&absent, O_PATH | O_CREAT, 0o644)),
        2,
    );
    let _ = unlink(&secret);
    // SAFETY: rmdir reads the path.
    let _ = unsafe { raw(84, [cdir.as_ptr() as usize, 0, 0, 0, 0, 0]) };
}

fn pread_str(fd: i32) -> alloc::string::String {
    let mut buf = [0u8; 64];
    let n = pread(fd, &mut buf, 0).unwrap_or(0);
    alloc::string::String::from_utf8_lossy(&buf[..n]).into()
}
