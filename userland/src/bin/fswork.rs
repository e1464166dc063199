//! The filesystem workloads of xtask's root-disk tests (not a test program of its own).
//!
//! `fswork` (write): runs `t_ext2` in a child (which fills the disk and frees it again), then
//! writes `/fsdata/f0`..`f7` (sizes around block and indirect-block boundaries, byte `j` of
//! file `i` is [`byte`]`(i, j)`), a sparse `/fsdata/sparse` ("END" at 5,000,000), and
//! `/fsdata/d/e/nested` renamed to `/fsdata/renamed` (file 8's pattern), fsyncing each but `f7`
//! (written last, after a `sync`, and never synced: the unmount at power-off writes it back). xtask then checks the
//! image with `e2fsck -fn` and reads every file back with `debugfs`.
//!
//! `fswork walk`: walks the whole tree from `/` (bounded), stat-ing every entry and reading
//! every regular file; errors are counted, not failures (the image-fuzz boot test: the kernel
//! must answer, not panic or hang).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

/// The sizes of `/fsdata/f0`..`f7`, then of `renamed` (file 8).
const SIZES: [usize; 9] = [0, 1, 4095, 4096, 4097, 65549, 300_000, 1_100_000, 12345];

/// Byte `j` of file `i` (xtask computes the same).
fn byte(i: usize, j: usize) -> u8 {
    ((i * 131 + j * 7 + j / 4096) % 251) as u8
}

fn c(s: &str) -> Vec<u8> {
    let mut v = Vec::from(s.as_bytes());
    v.push(0);
    v
}

fn cs(v: &[u8]) -> &CStr {
    CStr::from_bytes_with_nul(v).expect("one NUL")
}

fn sys(n: usize, args: &[usize]) -> Result<usize, cowlab_userland::sys::Errno> {
    let mut a = [0usize; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: the callers pass valid pointers or none.
    unsafe { raw(n, a) }
}

fn mkdir(path: &str) -> bool {
    let p = c(path);
    match sys(83, &[p.as_ptr() as usize, 0o755]) {
        Ok(_) => true,
        Err(e) => {
            println!("fswork: mkdir {path}: errno {}", e.0);
            false
        }
    }
}

/// Writes file `i`; with `sync` it is fsync'ed, else the close (or unmount) writes it back.
fn write_file(t: &mut Tester, path: &str, i: usize, size: usize, sync: bool) {
    let p = c(path);
    let fd = open_mode(cs(&p), O_CREAT | O_TRUNC | O_WRONLY, 0o644).unwrap_or(-1);
    let data: Vec<u8> = (0..size).map(|j| byte(i, j)).collect();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(65536);
        match write(fd, &data[at..at + n]) {
            Ok(w) if w > 0 => at += w,
            _ => break,
        }
    }
    t.eq(&format!("wrote {path}"), at, size);
    if sync {
        t.eq(&format!("fsync {path}"), sys(74, &[fd as usize]), Ok(0));
    }
    let _ = close(fd);
}

fn write_workload(t: &mut Tester) {
    let argv = [c"t_ext2".as_ptr().cast::<u8>(), core::ptr::null()];
    let envp = [core::ptr::null()];
    match fork() {
        Ok(0) => {
            let e = execve(c"t_ext2", &argv, &envp);
            println!("fswork: execve t_ext2: {}", e.0);
            exit_now(127)
        }
        Ok(pid) => {
            let status = waitpid(pid, 0).map(|(_, s)| s).unwrap_or(-1);
            t.eq("t_ext2 passed in a child", status, 0);
        }
        Err(e) => t.check_why("fork", false, e.0),
    }
    t.check("mkdir /fsdata", mkdir("/fsdata"));
    for (i, &size) in SIZES.iter().enumerate().take(7) {
        write_file(t, &format!("/fsdata/f{i}"), i, size, true);
    }
    let p = c("/fsdata/sparse");
    let fd = open_mode(cs(&p), O_CREAT | O_TRUNC | O_WRONLY, 0o644).unwrap_or(-1);
    t.eq("sparse write", pwrite(fd, b"END", 5_000_000), Ok(3));
    t.eq("fsync sparse", sys(74, &[fd as usize]), Ok(0));
    let _ = close(fd);
    t.check(
        "mkdir /fsdata/d/e",
        mkdir("/fsdata/d") && mkdir("/fsdata/d/e"),
    );
    write_file(t, "/fsdata/d/e/nested", 8, SIZES[8], true);
    let (a, b) = (c("/fsdata/d/e/nested"), c("/fsdata/renamed"));
    t.eq("rename nested", rename(cs(&a), cs(&b)), Ok(0));
    t.eq("sync", sys(162, &[]), Ok(0));
    // f7 (1.1 MB) is left to write-back: no fsync and no sync after it; the close keeps its
    // dirty pages cached, and the unmount at power-off writes them back.
    write_file(t, "/fsdata/f7", 7, SIZES[7], false);
}

/// Visits `path` and below; counts entries and errors.
fn walk(path: &str, depth: usize, seen: &mut usize, errors: &mut usize) {
    if depth > 16 || *seen > 4000 {
        return;
    }
    let p = c(path);
    let fd = match open(cs(&p), O_RDONLY | O_DIRECTORY) {
        Ok(fd) => fd,
        Err(_) => {
            *errors += 1;
            return;
        }
    };
    let mut names: Vec<(String, u8)> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match getdents64(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut at = 0;
                while at + 19 <= n {
                    let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                    if reclen < 19 || at + reclen > n {
                        *errors += 1;
                        break;
                    }
                    let kind = buf[at + 18];
                    let raw = &buf[at + 19..at + reclen];
                    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                    names.push((String::from_utf8_lossy(&raw[..end]).into_owned(), kind));
                    at += reclen;
                }
            }
            Err(_) => {
                *errors += 1;
                break;
            }
        }
        if names.len() > 4000 {
            break;
        }
    }
    let _ = close(fd);
    for (name, kind) in names {
        if name == "." || name == ".." {
            continue;
        }
        *seen += 1;
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        if ["/proc", "/dev", "/sys", "/tmp"].contains(&child.as_str()) {
            continue;
        }
        let cp = c(&child);
        if stat(cs(&cp)).is_err() {
            *errors += 1;
        }
        if kind == 4 {
            walk(&child, depth + 1, seen, errors);
        } else if kind == 8 {
            match open(cs(&cp), O_RDONLY) {
                Ok(fd) => {
                    let mut total = 0;
                    while total < 256 * 1024 {
                        match read(fd, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => total += n,
                            Err(_) => {
                                *errors += 1;
                                break;
                            }
                        }
                    }
                    let _ = close(fd);
                }
                Err(_) => *errors += 1,
            }
        }
    }
}

fn main() -> i32 {
    let mut t = Tester::new("fswork");
    let walk_mode = cowlab_userland::args::args()
        .nth(1)
        .is_some_and(|a| a.to_bytes() == b"walk");
    if walk_mode {
        let (mut seen, mut errors) = (0, 0);
        walk("/", 0, &mut seen, &mut errors);
        println!("fswork: walked {seen} entries, {errors} errors");
        t.check("the walk ended", true);
    } else {
        write_workload(&mut t);
    }
    t.finish()
}
