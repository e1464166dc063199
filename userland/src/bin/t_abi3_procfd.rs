//! Opening `/proc/<pid>/fd/<n>` gives a new open file description of what the descriptor
//! refers to, as on Linux: a regular file reopened with its own offset and the new flags, a
//! pipe end as a new reader, writer or both of the same pipe (also another process's), a memfd
//! as the same object; a closed descriptor is `ENOENT`, `O_CREAT|O_EXCL` `EEXIST`,
//! `O_DIRECTORY` on a pipe `ENOTDIR`. The same assertions on the host Linux.
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
    t.finish()
}

fn pread_str(fd: i32) -> alloc::string::String {
    let mut buf = [0u8; 64];
    let n = pread(fd, &mut buf, 0).unwrap_or(0);
    alloc::string::String::from_utf8_lossy(&buf[..n]).into()
}
