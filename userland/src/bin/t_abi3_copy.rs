//! `sendfile` (40) and `copy_file_range` (326): the bytes, where the offsets end up (the
//! pointer's value or the file position), and Linux's errors (`EBADF`, `EINVAL`, `ESPIPE`,
//! `EISDIR`, `EFAULT`, `EOVERFLOW`), a copy longer than the kernel's bounce buffer, and
//! overlapping ranges of one file. The same assertions on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::ffi::CString;
use alloc::format;
use alloc::vec::Vec;
use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const EBADF: Errno = Errno(9);
const EFAULT: Errno = Errno(14);
const EISDIR: Errno = Errno(21);
const EINVAL: Errno = Errno(22);
const ESPIPE: Errno = Errno(29);
const EOVERFLOW: Errno = Errno(75);

fn off_ptr(off: &mut Option<i64>) -> usize {
    off.as_mut().map_or(0, |o| o as *mut i64 as usize)
}

fn sendfile(out: i32, input: i32, off: &mut Option<i64>, count: usize) -> Result<usize, Errno> {
    // SAFETY: the offset pointer is null or a live i64.
    unsafe {
        raw(
            40,
            [out as usize, input as usize, off_ptr(off), count, 0, 0],
        )
    }
}

fn cfr(
    input: i32,
    off_in: &mut Option<i64>,
    out: i32,
    off_out: &mut Option<i64>,
    len: usize,
    flags: usize,
) -> Result<usize, Errno> {
    let (a, b) = (off_ptr(off_in), off_ptr(off_out));
    // SAFETY: the offset pointers are null or live i64s.
    unsafe { raw(326, [input as usize, a, out as usize, b, len, flags]) }
}

fn contents(fd: i32) -> Vec<u8> {
    let mut buf = alloc::vec![0u8; 300 * 1024];
    let n = pread(fd, &mut buf, 0).unwrap_or(0);
    buf.truncate(n);
    buf
}

fn drain(fd: i32) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = read(fd, &mut buf).unwrap_or(0);
    buf[..n].to_vec()
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi3_copy");
    let base = format!("/tmp/t_abi3_copy.{}", getpid());
    let name = |s: &str| CString::new(format!("{base}.{s}")).expect("no NUL");
    let (src, dst) = (name("src"), name("dst"));
    let w = open_mode(&src, O_WRONLY | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let _ = write(w, b"0123456789");
    let i = open(&src, O_RDONLY).unwrap_or(-1);
    let o = open_mode(&dst, O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let [pr, pw] = pipe().expect("pipe");

    // sendfile
    t.eq("file -> pipe", sendfile(pw, i, &mut None, 4), Ok(4));
    t.eq("the pipe has the bytes", drain(pr), b"0123".to_vec());
    t.eq("the input's position moved", lseek(i, 0, 1), Ok(4));
    let mut off = Some(6);
    t.eq(
        "with an offset: to the end",
        sendfile(pw, i, &mut off, 100),
        Ok(4),
    );
    t.eq("the offset is stored back", off, Some(10));
    t.eq("those bytes", drain(pr), b"6789".to_vec());
    t.eq("the position stays", lseek(i, 0, 1), Ok(4));
    t.eq(
        "negative offset: EINVAL",
        sendfile(pw, i, &mut Some(-1), 1),
        Err(EINVAL),
    );
    t.eq(
        "input not readable: EBADF",
        sendfile(pw, w, &mut None, 1),
        Err(EBADF),
    );
    t.eq(
        "output not writable: EBADF",
        sendfile(i, i, &mut None, 1),
        Err(EBADF),
    );
    t.eq(
        "bad descriptors: EBADF",
        sendfile(99, i, &mut None, 1),
        Err(EBADF),
    );
    t.eq(
        "bad input descriptor: EBADF",
        sendfile(o, 99, &mut None, 1),
        Err(EBADF),
    );
    let _ = write(pw, b"xyz");
    t.eq(
        "a pipe as input: EINVAL",
        sendfile(o, pr, &mut None, 3),
        Err(EINVAL),
    );
    t.eq(
        "with an offset: ESPIPE",
        sendfile(o, pr, &mut Some(0), 3),
        Err(ESPIPE),
    );
    let _ = drain(pr);
    let a = open(&dst, O_WRONLY | O_APPEND).unwrap_or(-1);
    t.eq(
        "O_APPEND output: EINVAL",
        sendfile(a, i, &mut Some(0), 3),
        Err(EINVAL),
    );
    t.eq("file -> file", sendfile(o, i, &mut Some(0), 5), Ok(5));
    t.eq("at the output's position", contents(o), b"01234".to_vec());
    t.eq("which moved", lseek(o, 0, 1), Ok(5));
    t.eq("count 0", sendfile(o, i, &mut None, 0), Ok(0));
    t.eq("at end of file", sendfile(o, i, &mut Some(100), 5), Ok(0));
    let d = open(c"/tmp", O_RDONLY | O_DIRECTORY).unwrap_or(-1);
    t.eq(
        "a directory as input: EINVAL",
        sendfile(o, d, &mut None, 5),
        Err(EINVAL),
    );
    // SAFETY: address 8 is never mapped; the kernel must answer EFAULT.
    let bad = unsafe { raw(40, [o as usize, i as usize, 8, 1, 0, 0]) };
    t.eq("unreadable offset pointer: EFAULT", bad, Err(EFAULT));

    // A copy larger than one bounce buffer, file to file.
    let (big, big2) = (name("big"), name("big2"));
    let b = open_mode(&big, O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let data: Vec<u8> = (0..200 * 1024u32)
        .map(|x| (x * 7 + x / 4096) as u8)
        .collect();
    let _ = write(b, &data);
    let b2 = open_mode(&big2, O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    t.eq(
        "200 KiB by sendfile",
        sendfile(b2, b, &mut Some(0), data.len()),
        Ok(data.len()),
    );
    t.check("the same bytes", contents(b2) == data);
    let _ = ftruncate(b2, 0);
    t.eq(
        "200 KiB by copy_file_range",
        cfr(b, &mut Some(0), b2, &mut Some(0), data.len(), 0),
        Ok(data.len()),
    );
    t.check("the same bytes again", contents(b2) == data);

    // copy_file_range
    let _ = ftruncate(o, 0);
    let (mut oi, mut oo) = (Some(2), Some(1));
    t.eq("copy_file_range", cfr(i, &mut oi, o, &mut oo, 3, 0), Ok(3));
    t.eq("the bytes at the offset", contents(o), b"\x00234".to_vec());
    t.eq("both offsets stored back", (oi, oo), (Some(5), Some(4)));
    let _ = lseek(i, 0, 0);
    let _ = lseek(o, 0, 0);
    t.eq("NULL offsets", cfr(i, &mut None, o, &mut None, 4, 0), Ok(4));
    t.eq(
        "move both positions",
        (lseek(i, 0, 1), lseek(o, 0, 1)),
        (Ok(4), Ok(4)),
    );
    t.eq(
        "flags: EINVAL",
        cfr(i, &mut None, o, &mut None, 3, 1),
        Err(EINVAL),
    );
    t.eq(
        "pipe input: EINVAL",
        cfr(pr, &mut None, o, &mut None, 3, 0),
        Err(EINVAL),
    );
    t.eq(
        "pipe output: EINVAL",
        cfr(i, &mut None, pw, &mut None, 3, 0),
        Err(EINVAL),
    );
    t.eq(
        "directory: EISDIR",
        cfr(d, &mut None, o, &mut None, 3, 0),
        Err(EISDIR),
    );
    t.eq(
        "O_APPEND output: EBADF",
        cfr(i, &mut None, a, &mut None, 3, 0),
        Err(EBADF),
    );
    t.eq(
        "write-only input: EBADF",
        cfr(w, &mut None, o, &mut None, 3, 0),
        Err(EBADF),
    );
    t.eq(
        "read-only output: EBADF",
        cfr(i, &mut None, i, &mut None, 3, 0),
        Err(EBADF),
    );
    t.eq(
        "bad descriptor: EBADF",
        cfr(99, &mut None, o, &mut None, 3, 0),
        Err(EBADF),
    );
    let s = open(&src, O_RDWR).unwrap_or(-1);
    t.eq(
        "overlapping ranges of one file: EINVAL",
        cfr(s, &mut Some(0), s, &mut Some(1), 3, 0),
        Err(EINVAL),
    );
    t.eq(
        "disjoint ranges of one file",
        cfr(s, &mut Some(0), s, &mut Some(5), 3, 0),
        Ok(3),
    );
    t.eq("copied within", contents(s), b"0123401289".to_vec());
    t.eq("len 0", cfr(i, &mut Some(0), o, &mut None, 0, 0), Ok(0));
    t.eq(
        "at end of file",
        cfr(i, &mut Some(100), o, &mut None, 3, 0),
        Ok(0),
    );
    t.eq(
        "short at the end",
        cfr(i, &mut Some(8), o, &mut None, 5, 0),
        Ok(2),
    );
    let neg = cfr(i, &mut Some(-1), o, &mut None, 3, 0);
    t.check_why(
        "negative offset: EOVERFLOW (EINVAL on older kernels)",
        neg == Err(EOVERFLOW) || neg == Err(EINVAL),
        format!("{neg:?}"),
    );
    // SAFETY: address 8 is never mapped.
    let bad = unsafe { raw(326, [i as usize, 8, o as usize, 0, 1, 0]) };
    t.eq("unreadable offset pointer: EFAULT", bad, Err(EFAULT));

    for f in [&src, &dst, &big, &big2] {
        let _ = unlink(f);
    }
    t.finish()
}
