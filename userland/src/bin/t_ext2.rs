//! The root filesystem (ext2 on cowlab) through every call that touches files, in a directory
//! of its own (`$T_EXT2_DIR/t_ext2.PID`, else `./t_ext2.PID` from the working directory):
//! the mkstemp pattern in the working directory, write/read/pread/pwrite/readv/writev, fstatfs
//! (0xEF53 on cowlab; on the host the magic is printed), O_EXCL/O_TRUNC/O_APPEND, lseek and
//! sparse files reading zeroes, ftruncate growing and shrinking (st_blocks falls), rename across
//! directories, rmdir ENOTEMPTY, unlink/rmdir errors, ENAMETOOLONG, link counts, symlink/readlink
//! and paths through a symlinked directory, ELOOP, chmod/fchmod/fchmodat, utimensat, getdents64,
//! an unlinked open file living until its close, reads into and writes from buffers that
//! fault (short counts to the byte, EFAULT, a shared mapping of the same file page),
//! a rewrite's mtime after utimensat in the same second (same fd, another fd, another process),
//! fsync/fdatasync/sync/syncfs, and (cowlab only: the host's disk is not ours to fill) ENOSPC
//! on a big write with existing files intact.
//! Runs natively on the host in a directory on a real disk filesystem.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{errno_of, p, sys};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const EXT2_SUPER_MAGIC: u64 = 0xEF53;
const ENOTEMPTY: i32 = 39;
const ELOOP: i32 = 40;
const ENOSPC: i32 = 28;
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const ENAMETOOLONG: i32 = 36;
const ENXIO: i32 = 6;

fn mkdir(path: &str, mode: u32) -> Result<usize, Errno> {
    let c = p(path);
    sys(83, &[c.c().as_ptr() as usize, mode as usize])
}

fn chdir(path: &str) -> Result<usize, Errno> {
    let c = p(path);
    sys(80, &[c.c().as_ptr() as usize])
}

fn symlink(target: &str, path: &str) -> Result<usize, Errno> {
    let (t, l) = (p(target), p(path));
    sys(88, &[t.c().as_ptr() as usize, l.c().as_ptr() as usize])
}

fn readlink(path: &str) -> Result<String, Errno> {
    let c = p(path);
    let mut buf = [0u8; 256];
    let n = sys(
        89,
        &[
            c.c().as_ptr() as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
        ],
    )?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn lstat(path: &str) -> Result<Stat, Errno> {
    let c = p(path);
    let mut st = Stat::default();
    sys(6, &[c.c().as_ptr() as usize, &mut st as *mut Stat as usize])?;
    Ok(st)
}

fn open_c(path: &str, flags: u32, mode: u32) -> Result<i32, Errno> {
    open_mode(p(path).c(), flags, mode)
}

fn stat_p(path: &str) -> Result<Stat, Errno> {
    stat(p(path).c())
}

/// Whether getdents64 of the directory `path` lists `name`.
fn lists(path: &str, name: &str) -> bool {
    let Ok(fd) = open_c(path, O_RDONLY | O_DIRECTORY, 0) else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let mut found = false;
    while let Ok(n) = getdents64(fd, &mut buf) {
        if n == 0 {
            break;
        }
        let mut at = 0;
        while at < n {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let raw = &buf[at + 19..at + reclen];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            if &raw[..end] == name.as_bytes() {
                found = true;
            }
            at += reclen;
        }
    }
    let _ = close(fd);
    found
}

fn base_dir() -> String {
    for var in cowlab_userland::args::env() {
        if let Some(v) = var.to_bytes().strip_prefix(b"T_EXT2_DIR=") {
            return String::from_utf8_lossy(v).into_owned();
        }
    }
    String::from(".")
}

/// The argument the exec checks start their child with: it only exits with this status.
const EXEC_PROBE: &str = "--exec-probe";
const EXEC_PROBE_STATUS: i32 = 42;

fn main() -> i32 {
    if cowlab_userland::args::args().nth(1).map(CStr::to_bytes) == Some(EXEC_PROBE.as_bytes()) {
        return EXEC_PROBE_STATUS;
    }
    let mut t = Tester::new("t_ext2");
    let cowlab = on_cowlab();
    let dir = format!("{}/t_ext2.{}", base_dir(), cowlab_userland::sys::getpid());
    t.eq(
        "mkdir of the test directory",
        errno_of(mkdir(&dir, 0o755)),
        0,
    );
    t.eq("chdir into it", errno_of(chdir(&dir)), 0);

    basic_io(&mut t, cowlab);
    pread_into_faulting_buffers(&mut t);
    pwrite_from_faulting_buffers(&mut t);
    sparse_and_truncate(&mut t);
    space(&mut t, cowlab);
    exec_relative(&mut t);
    concurrent(&mut t);
    names(&mut t);
    links(&mut t);
    attributes(&mut t);
    write_times(&mut t);
    unlinked_open(&mut t);
    syncs(&mut t);
    if cowlab {
        full_disk(&mut t);
    } else {
        println!("t_ext2: skipped the full-disk checks on the host");
    }

    let _ = chdir("..");
    let name = dir.rsplit('/').next().unwrap_or("");
    t.eq(
        "rmdir of the emptied test directory",
        errno_of(rmdir(p(name).c())),
        0,
    );
    t.finish()
}

fn basic_io(t: &mut Tester, cowlab: bool) {
    // mkstemp: a unique name in the working directory, O_CREAT|O_EXCL|O_RDWR, 0600.
    let name = format!("tmp{}", cowlab_userland::sys::getpid());
    let fd = open_c(&name, O_CREAT | O_EXCL | O_RDWR, 0o600);
    t.check("mkstemp-style create in the working directory", fd.is_ok());
    let fd = fd.unwrap_or(-1);
    t.eq("write", write(fd, b"hello, ext2\n"), Ok(12));
    let mut buf = [0u8; 32];
    t.eq("pread back", pread(fd, &mut buf, 0), Ok(12));
    t.check("the bytes read back", &buf[..12] == b"hello, ext2\n");
    match fstatfs(fd) {
        Ok(st) if cowlab => t.eq(
            "fstatfs f_type is EXT2_SUPER_MAGIC",
            st.f_type,
            EXT2_SUPER_MAGIC,
        ),
        Ok(st) => {
            println!("t_ext2: the host's filesystem magic is {:#x}", st.f_type);
            t.check("fstatfs answers on the host", st.f_type != 0);
        }
        Err(e) => t.check_why("fstatfs", false, e.0),
    }
    t.eq("stat size", stat_p(&name).map(|s| s.st_size), Ok(12));
    t.eq(
        "stat mode",
        stat_p(&name).map(|s| s.st_mode),
        Ok(S_IFREG | 0o600),
    );
    t.eq(
        "O_CREAT|O_EXCL of an existing name: EEXIST",
        errno_of(open_c(&name, O_CREAT | O_EXCL | O_RDWR, 0o600)),
        EEXIST,
    );
    t.eq("lseek SEEK_END", lseek(fd, 0, 2), Ok(12));
    t.eq("lseek past the end", lseek(fd, 100, 0), Ok(100));
    t.eq(
        "SEEK_HOLE at the size: ENXIO",
        errno_of(lseek(fd, 12, 4)),
        ENXIO,
    );
    t.eq(
        "SEEK_DATA past the size: ENXIO",
        errno_of(lseek(fd, 13, 3)),
        ENXIO,
    );
    // writev/readv through two buffers.
    let (a, b) = (*b"abc", *b"defgh");
    let iov = [[a.as_ptr() as usize, 3], [b.as_ptr() as usize, 5]];
    let _ = lseek(fd, 12, 0);
    t.eq(
        "writev",
        sys(20, &[fd as usize, iov.as_ptr() as usize, 2]),
        Ok(8),
    );
    let (mut x, mut y) = ([0u8; 4], [0u8; 16]);
    let iov = [[x.as_mut_ptr() as usize, 4], [y.as_mut_ptr() as usize, 16]];
    let _ = lseek(fd, 10, 0);
    t.eq(
        "readv",
        sys(19, &[fd as usize, iov.as_ptr() as usize, 2]),
        Ok(10),
    );
    t.check("readv's bytes", &x == b"2\nab" && &y[..6] == b"cdefgh");
    t.eq("close", close(fd), Ok(0));
    // O_APPEND writes at the end whatever the position; O_TRUNC empties.
    let fd = open_c(&name, O_WRONLY | O_APPEND, 0).unwrap_or(-1);
    let _ = lseek(fd, 0, 0);
    t.eq("O_APPEND write", write(fd, b"XY"), Ok(2));
    let _ = close(fd);
    let mut buf = [0u8; 4];
    let fd = open_c(&name, O_RDONLY, 0).unwrap_or(-1);
    t.eq(
        "O_APPEND went to the end",
        pread(fd, &mut buf[..2], 20),
        Ok(2),
    );
    t.check("the appended bytes", &buf[..2] == b"XY");
    let _ = close(fd);
    let fd = open_c(&name, O_RDWR | O_TRUNC, 0).unwrap_or(-1);
    t.eq(
        "O_TRUNC empties the file",
        fstat(fd).map(|s| s.st_size),
        Ok(0),
    );
    let _ = close(fd);
    t.eq("unlink", unlink(p(&name).c()), Ok(0));
    t.eq("stat after unlink: ENOENT", errno_of(stat_p(&name)), ENOENT);
}

/// `pread(fd, buf, count, offset)` with a raw buffer address (parts of it unmapped).
fn pread_raw(fd: i32, addr: usize, len: usize, offset: u64) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `len` bytes at `addr`, memory of this process that is
    // either a mapping the test owns or unmapped (then the call answers EFAULT or short).
    unsafe { cowlab_userland::calls::raw(17, [fd as usize, addr, len, offset as usize, 0, 0]) }
}

/// The faulting-buffer tests' set-up: a new file `<prefix><pid>` holding 3 pages of a known
/// pattern (its name, descriptor and bytes) and a 2-page anonymous buffer.
fn file_and_buffer(t: &mut Tester, prefix: &str) -> Option<(String, i32, Vec<u8>, usize)> {
    const PAGE: usize = 4096;
    let name = format!("{prefix}{}", cowlab_userland::sys::getpid());
    let fd = open_c(&name, O_CREAT | O_EXCL | O_RDWR, 0o600).unwrap_or(-1);
    let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 251) as u8).collect();
    t.eq("write 3 pages", write(fd, &data), Ok(3 * PAGE));
    let rw = PROT_READ | PROT_WRITE;
    let Ok(buf) = mmap(0, 2 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS) else {
        t.check("mmap of the buffer", false);
        return None;
    };
    Some((name, fd, data, buf))
}

/// A read copies from the cached page straight to the user (session 13): a buffer whose end
/// is unmapped gets a short count that stops exactly at the unmapped byte, a wholly unmapped
/// one EFAULT, and a buffer that is a shared mapping of the same file (its page faulted in
/// during the copy, while the source page is held) gets the bytes.
fn pread_into_faulting_buffers(t: &mut Tester) {
    const PAGE: usize = 4096;
    let Some((name, fd, data, buf)) = file_and_buffer(t, "fault") else {
        return;
    };
    let _ = munmap(buf + PAGE, PAGE);
    t.eq(
        "pread into a buffer whose last bytes are unmapped: short, to the byte",
        pread_raw(fd, buf + PAGE - 10, 100, 5),
        Ok(10),
    );
    // SAFETY: the first page of `buf` is mapped and ours.
    let got = unsafe { core::slice::from_raw_parts((buf + PAGE - 10) as *const u8, 10) };
    t.check("the 10 bytes read", got == &data[5..15]);
    t.eq(
        "pread into an unmapped buffer: EFAULT",
        pread_raw(fd, buf + PAGE, 100, 0).map_err(|e| e.0),
        Err(14),
    );
    let _ = munmap(buf, PAGE);
    // SAFETY: mmap of our own file, no fixed address: touches no memory of ours.
    let map = unsafe {
        cowlab_userland::calls::raw(
            9,
            [
                0,
                3 * PAGE,
                (PROT_READ | PROT_WRITE) as usize,
                MAP_SHARED as usize,
                fd as usize,
                0,
            ],
        )
    };
    match map {
        Ok(map) => {
            t.eq(
                "pread of page 0 into the file's own page 2 (shared mapping)",
                pread_raw(fd, map + 2 * PAGE, PAGE, 0),
                Ok(PAGE),
            );
            let mut back = vec![0u8; PAGE];
            t.eq(
                "pread of page 2",
                pread(fd, &mut back, 2 * PAGE as u64),
                Ok(PAGE),
            );
            t.check("page 2 now holds page 0's bytes", back == data[..PAGE]);
            let _ = munmap(map, 3 * PAGE);
        }
        Err(e) => t.eq("mmap of the file", Err::<usize, _>(e.0), Ok(0)),
    }
    let _ = close(fd);
    let _ = unlink(p(&name).c());
}

/// `pwrite(fd, buf, count, offset)` with a raw buffer address (parts of it unmapped).
fn pwrite_raw(fd: i32, addr: usize, len: usize, offset: u64) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most `len` bytes at `addr`, memory of this process that is
    // either a mapping the test owns or unmapped (then the call answers EFAULT or short).
    unsafe { cowlab_userland::calls::raw(18, [fd as usize, addr, len, offset as usize, 0, 0]) }
}

/// A one-page `MAP_SHARED` read/write mapping of `fd` at file offset `offset`.
fn map_file_page(fd: i32, offset: usize) -> Result<usize, Errno> {
    let rw = (PROT_READ | PROT_WRITE) as usize;
    // SAFETY: mmap of our own file, no fixed address: touches no memory of ours.
    unsafe {
        cowlab_userland::calls::raw(9, [0, 4096, rw, MAP_SHARED as usize, fd as usize, offset])
    }
}

/// Whether the page at `addr` is mapped (bit 63 of its `/proc/self/pagemap` entry); `None`
/// when pagemap cannot be read.
fn page_present(addr: usize) -> Option<bool> {
    let fd = open(c"/proc/self/pagemap", O_RDONLY).ok()?;
    let mut b = [0u8; 8];
    let r = pread(fd, &mut b, (addr / 4096 * 8) as u64);
    let _ = close(fd);
    match r {
        Ok(8) => Some(u64::from_le_bytes(b) >> 63 == 1),
        _ => None,
    }
}

/// A buffered write copies from the user straight into the locked cache page (session 14,
/// Linux's `generic_perform_write`, page faults off during the copy): a source whose end is
/// unmapped gets a short count that stops exactly at the unmapped byte (also when the write
/// grows the file: the size is what was written), a wholly unmapped one EFAULT with the file
/// unchanged, a source that is a shared mapping of the same file not yet faulted in (its pages
/// come in with no page lock held) gets the bytes, and so does a source that is the very page
/// being written, mapped (a fault on it under the page's lock would wait for that lock).
fn pwrite_from_faulting_buffers(t: &mut Tester) {
    const PAGE: usize = 4096;
    let Some((name, fd, data, buf)) = file_and_buffer(t, "wfault") else {
        return;
    };
    // SAFETY: the two pages of `buf` are mapped and ours.
    unsafe { core::ptr::write_bytes(buf as *mut u8, 0xa5, 2 * PAGE) };
    let _ = munmap(buf + PAGE, PAGE);
    t.eq(
        "pwrite from a buffer whose last bytes are unmapped: short, to the byte",
        pwrite_raw(fd, buf + PAGE - 10, 100, 5),
        Ok(10),
    );
    let mut back = vec![0u8; 3 * PAGE];
    t.eq("read back", pread(fd, &mut back, 0), Ok(3 * PAGE));
    t.check(
        "the 10 bytes written, nothing around them",
        back[5..15].iter().all(|&b| b == 0xa5)
            && back[..5] == data[..5]
            && back[15..] == data[15..],
    );
    t.eq(
        "pwrite from an unmapped buffer: EFAULT",
        pwrite_raw(fd, buf + PAGE, 100, 0).map_err(|e| e.0),
        Err(14),
    );
    t.eq(
        "a write past the end from a short buffer",
        pwrite_raw(fd, buf + PAGE - 10, 100, 3 * PAGE as u64),
        Ok(10),
    );
    t.eq(
        "the size grows by what was written",
        fstat(fd).map(|s| s.st_size),
        Ok(3 * PAGE as i64 + 10),
    );
    let _ = munmap(buf, PAGE);
    t.eq("back to 3 pages", ftruncate(fd, 3 * PAGE as i64), Ok(0));
    t.eq("rewrite 3 pages", pwrite(fd, &data, 0), Ok(3 * PAGE));
    // Each source is a one-page shared mapping of its own: a read fault maps the pages around
    // it (fault-around), but only inside the faulting mapping, so a case's source page is
    // surely not mapped before its write (checked in /proc/self/pagemap: Linux and cowlab
    // both show the present bit to anyone).
    let Ok(map2) = map_file_page(fd, 2 * PAGE) else {
        t.check("mmap of the file's page 2", false);
        return;
    };
    t.eq(
        "page 2's mapping is not faulted in before the write",
        page_present(map2),
        Some(false),
    );
    t.eq(
        "pwrite of the file's own page 2 (a shared mapping, not faulted in) to page 0",
        pwrite_raw(fd, map2, PAGE, 0),
        Ok(PAGE),
    );
    let _ = munmap(map2, PAGE);
    let Ok(map0) = map_file_page(fd, 0) else {
        t.check("mmap of the file's page 0", false);
        return;
    };
    t.eq(
        "page 0's mapping is not faulted in before the write",
        page_present(map0),
        Some(false),
    );
    t.eq(
        "pwrite of page 0 from its own mapping (not faulted in)",
        pwrite_raw(fd, map0, PAGE, 0),
        Ok(PAGE),
    );
    t.eq(
        "page 0's mapping is faulted in after that write",
        page_present(map0),
        Some(true),
    );
    t.eq(
        "pwrite of page 0 from its own mapping, 100 bytes on (mapped now)",
        pwrite_raw(fd, map0 + 100, PAGE - 100, 0),
        Ok(PAGE - 100),
    );
    let _ = munmap(map0, PAGE);
    let mut back = vec![0u8; 3 * PAGE];
    t.eq("read back", pread(fd, &mut back, 0), Ok(3 * PAGE));
    let mut want = data.clone();
    want[..PAGE].copy_from_slice(&data[2 * PAGE..]);
    want.copy_within(100..PAGE, 0);
    t.check("page 0: page 2's bytes, moved 100 bytes down", back == want);
    let _ = close(fd);
    let _ = unlink(p(&name).c());
}

fn sparse_and_truncate(t: &mut Tester) {
    let fd = open_c("sparse", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("a byte at 1 MiB", pwrite(fd, b"Z", 1 << 20), Ok(1));
    let st = fstat(fd).unwrap_or_default();
    t.eq("sparse size", st.st_size, (1 << 20) + 1);
    t.check_why(
        "a sparse file holds few blocks",
        st.st_blocks <= 64,
        st.st_blocks,
    );
    let mut buf = vec![0xffu8; 8192];
    t.eq("read inside the hole", pread(fd, &mut buf, 4096), Ok(8192));
    t.check("the hole reads as zeroes", buf.iter().all(|&b| b == 0));
    t.eq("ftruncate grows", ftruncate(fd, 3 << 20), Ok(0));
    t.eq(
        "size after growing",
        fstat(fd).map(|s| s.st_size),
        Ok(3 << 20),
    );
    t.eq(
        "read in the grown part",
        pread(fd, &mut buf[..16], 2 << 20),
        Ok(16),
    );
    t.check(
        "the grown part reads as zeroes",
        buf[..16].iter().all(|&b| b == 0),
    );
    let _ = close(fd);
    let _ = unlink(p("sparse").c());

    let fd = open_c("dense", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    t.eq("256 KiB written", write(fd, &data), Ok(data.len()));
    let before = fstat(fd).map(|s| s.st_blocks).unwrap_or(0);
    t.check_why("256 KiB holds at least 512 sectors", before >= 512, before);
    t.eq("ftruncate shrinks to 4 KiB", ftruncate(fd, 4096), Ok(0));
    let after = fstat(fd).map(|s| s.st_blocks).unwrap_or(i64::MAX);
    t.check_why(
        "shrinking frees blocks",
        after <= 16,
        format!("{before} -> {after}"),
    );
    let mut back = vec![0u8; 8192];
    t.eq(
        "read after shrink is short",
        pread(fd, &mut back, 0),
        Ok(4096),
    );
    t.check("the kept bytes", back[..4096] == data[..4096]);
    let _ = close(fd);
    let _ = unlink(p("dense").c());
}

const FALLOC_FL_KEEP_SIZE: i32 = 1;
const FALLOC_FL_PUNCH_HOLE: i32 = 2;
const SEEK_DATA: u32 = 3;
const SEEK_HOLE: u32 = 4;
const EOPNOTSUPP: i32 = 95;
const KIB64: i64 = 64 * 1024;

/// fallocate and SEEK_DATA/SEEK_HOLE from the block map, at 64 KiB granularity so the answers
/// are the same for every block size (cowlab's ext2; the host's ext4 in its directory).
fn space(t: &mut Tester, cowlab: bool) {
    let fd = open_c("falloc", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("fallocate mode 0", fallocate(fd, 0, 0, 4 * KIB64), Ok(0));
    let st = fstat(fd).unwrap_or_default();
    t.eq("fallocate mode 0 sets the size", st.st_size, 4 * KIB64);
    t.check_why(
        "fallocate mode 0 allocates the blocks",
        st.st_blocks >= 4 * KIB64 / 512,
        st.st_blocks,
    );
    let mut buf = vec![0xffu8; 4 * KIB64 as usize];
    t.eq(
        "read of preallocated blocks",
        pread(fd, &mut buf, 0),
        Ok(buf.len()),
    );
    t.check(
        "preallocated blocks read as zeroes",
        buf.iter().all(|&b| b == 0),
    );
    let data: Vec<u8> = (0..4 * KIB64).map(|i| (i % 253) as u8 + 1).collect();
    t.eq(
        "overwrite the preallocated file",
        pwrite(fd, &data, 0),
        Ok(data.len()),
    );
    let before = fstat(fd).map(|s| s.st_blocks).unwrap_or(0);
    t.eq(
        "PUNCH_HOLE|KEEP_SIZE of the second 64 KiB",
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, KIB64, KIB64),
        Ok(0),
    );
    let st = fstat(fd).unwrap_or_default();
    t.eq("punching keeps the size", st.st_size, 4 * KIB64);
    t.eq(
        "punching frees exactly the punched blocks",
        before - st.st_blocks,
        KIB64 / 512,
    );
    t.eq(
        "read across the hole",
        pread(fd, &mut buf, 0),
        Ok(buf.len()),
    );
    let mut want = data.clone();
    want[KIB64 as usize..2 * KIB64 as usize].fill(0);
    t.check(
        "the punched range reads as zeroes, the rest kept",
        buf == want,
    );
    t.eq(
        "SEEK_HOLE from 0",
        lseek(fd, 0, SEEK_HOLE),
        Ok(KIB64 as usize),
    );
    t.eq("SEEK_DATA from 0", lseek(fd, 0, SEEK_DATA), Ok(0));
    t.eq(
        "SEEK_DATA inside the hole",
        lseek(fd, KIB64 + 5, SEEK_DATA),
        Ok(2 * KIB64 as usize),
    );
    t.eq(
        "SEEK_HOLE inside the hole is where it is",
        lseek(fd, KIB64 + 5, SEEK_HOLE),
        Ok(KIB64 as usize + 5),
    );
    t.eq(
        "SEEK_HOLE after the hole is the size",
        lseek(fd, 2 * KIB64, SEEK_HOLE),
        Ok(4 * KIB64 as usize),
    );
    t.eq(
        "SEEK_DATA at the size is ENXIO",
        errno_of(lseek(fd, 4 * KIB64, SEEK_DATA)),
        ENXIO,
    );
    t.eq(
        "KEEP_SIZE inside the file",
        fallocate(fd, FALLOC_FL_KEEP_SIZE, KIB64, KIB64),
        Ok(0),
    );
    t.eq(
        "KEEP_SIZE keeps the size",
        fstat(fd).map(|s| s.st_size),
        Ok(4 * KIB64),
    );
    t.eq(
        "PUNCH_HOLE without KEEP_SIZE is EOPNOTSUPP",
        errno_of(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, KIB64)),
        EOPNOTSUPP,
    );
    t.eq(
        "an unknown mode is EOPNOTSUPP",
        errno_of(fallocate(fd, 0x1000, 0, KIB64)),
        EOPNOTSUPP,
    );
    // ext2 cannot hold blocks past the end-of-file block (e2fsck: "i_size is X, should be Y");
    // the host's ext4 can.
    let past = fallocate(fd, FALLOC_FL_KEEP_SIZE, 4 * KIB64, KIB64);
    if cowlab {
        t.eq(
            "KEEP_SIZE past the end is EOPNOTSUPP on ext2",
            errno_of(past),
            EOPNOTSUPP,
        );
    } else {
        t.eq("KEEP_SIZE past the end (host)", past, Ok(0));
    }
    t.eq(
        "mode 0 past the end grows the file",
        fallocate(fd, 0, 5 * KIB64, KIB64),
        Ok(0),
    );
    t.eq(
        "the grown size",
        fstat(fd).map(|s| s.st_size),
        Ok(6 * KIB64),
    );
    let _ = close(fd);
    let _ = unlink(p("falloc").c());

    let fd = open_c("holes", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("a byte at 4 MiB", pwrite(fd, b"Z", 4 << 20), Ok(1));
    t.eq(
        "SEEK_DATA skips the leading hole",
        lseek(fd, 0, SEEK_DATA),
        Ok(4 << 20),
    );
    t.eq(
        "SEEK_HOLE at the start of a hole",
        lseek(fd, 0, SEEK_HOLE),
        Ok(0),
    );
    let _ = close(fd);
    let _ = unlink(p("holes").c());
}

/// The absolute path of this program (xtask runs it by full path on the host; on cowlab the
/// programs sit in `/`).
fn own_path() -> String {
    let argv0 = cowlab_userland::args::args()
        .next()
        .map(|a| String::from_utf8_lossy(a.to_bytes()).into_owned())
        .unwrap_or_default();
    if argv0.starts_with('/') {
        return argv0;
    }
    let name = argv0.rsplit('/').next().unwrap_or("t_ext2");
    format!("/{name}")
}

/// The exit status of a child that execs `path` as the probe (`errno` if the exec fails).
fn exec_status(path: &str) -> i32 {
    let Ok(pid) = fork() else {
        return -1;
    };
    if pid == 0 {
        let path = p(path);
        let probe = p(EXEC_PROBE);
        let argv = [path.0.as_ptr(), probe.0.as_ptr(), core::ptr::null()];
        let envp = [core::ptr::null()];
        let e = execve(path.c(), &argv, &envp);
        cowlab_userland::calls::exit_now(e.0);
    }
    match waitpid(pid, 0) {
        Ok((_, status)) if status & 0x7f == 0 => (status >> 8) & 0xff,
        _ => -1,
    }
}

/// execve of a name without `/` is relative to the working directory (Linux `getname` +
/// `do_open_execat`: no search, that is the C library's `execvp`): a program that exists only
/// elsewhere is ENOENT, one reached from the working directory runs.
fn exec_relative(t: &mut Tester) {
    let me = own_path();
    let name = me.rsplit('/').next().unwrap_or("t_ext2");
    t.eq(
        "execve of a bare name not in the working directory is ENOENT",
        exec_status(name),
        ENOENT,
    );
    t.eq(
        "symlink to this program",
        errno_of(symlink(&me, "selfexe")),
        0,
    );
    t.eq(
        "execve of a bare name in the working directory runs it",
        exec_status("selfexe"),
        EXEC_PROBE_STATUS,
    );
    t.eq(
        "execve of ./name runs it",
        exec_status("./selfexe"),
        EXEC_PROBE_STATUS,
    );
    let _ = unlink(p("selfexe").c());
}

/// Three processes write and read back files of their own at once: on cowlab each sleeps on
/// its disk requests and on the filesystem lock while another holds it (`ext2_glue`,
/// `proc::sleeplock`); every byte must still land where its writer put it.
fn concurrent(t: &mut Tester) {
    const CHUNKS: usize = 16;
    let mut pids = Vec::new();
    for k in 0..3u8 {
        match fork() {
            Ok(0) => {
                let name = format!("conc{k}");
                let Ok(fd) = open_c(&name, O_CREAT | O_RDWR | O_TRUNC, 0o644) else {
                    cowlab_userland::calls::exit_now(10);
                };
                let chunk: Vec<u8> = (0..65536).map(|i| (i as u8) ^ (k * 85)).collect();
                for c in 0..CHUNKS {
                    if pwrite(fd, &chunk, (c * chunk.len()) as u64) != Ok(chunk.len()) {
                        cowlab_userland::calls::exit_now(11);
                    }
                }
                let mut back = vec![0u8; chunk.len()];
                for c in 0..CHUNKS {
                    if pread(fd, &mut back, (c * chunk.len()) as u64) != Ok(back.len())
                        || back != chunk
                    {
                        cowlab_userland::calls::exit_now(12);
                    }
                }
                let _ = close(fd);
                let _ = unlink(p(&name).c());
                cowlab_userland::calls::exit_now(0);
            }
            Ok(pid) => pids.push(pid),
            Err(_) => t.check("fork for the concurrent writers", false),
        }
    }
    for (k, pid) in pids.into_iter().enumerate() {
        let status = waitpid(pid, 0).map(|(_, s)| s);
        t.eq(
            &format!("concurrent writer {k} read back its 1 MiB"),
            status,
            Ok(0),
        );
    }
}

fn names(t: &mut Tester) {
    t.eq("mkdir a", errno_of(mkdir("a", 0o755)), 0);
    t.eq("mkdir b", errno_of(mkdir("b", 0o755)), 0);
    t.eq(
        "mkdir of an existing name: EEXIST",
        errno_of(mkdir("a", 0o755)),
        EEXIST,
    );
    let fd = open_c("a/f", O_CREAT | O_WRONLY, 0o644).unwrap_or(-1);
    t.eq("write a/f", write(fd, b"moved"), Ok(5));
    let _ = close(fd);
    t.eq(
        "rename across directories",
        rename(p("a/f").c(), p("b/g").c()),
        Ok(0),
    );
    t.eq("the old name is gone", errno_of(stat_p("a/f")), ENOENT);
    let mut buf = [0u8; 8];
    t.eq("read_file b/g", read_file(p("b/g").c(), &mut buf), Some(5));
    t.check("the renamed file's bytes", &buf[..5] == b"moved");
    t.check("getdents64 lists g in b", lists("b", "g"));
    t.check("getdents64 no longer lists f in a", !lists("a", "f"));
    t.eq(
        "rmdir of a non-empty directory: ENOTEMPTY",
        errno_of(rmdir(p("b").c())),
        ENOTEMPTY,
    );
    t.eq(
        "rmdir of a file: ENOTDIR",
        errno_of(rmdir(p("b/g").c())),
        ENOTDIR,
    );
    t.eq(
        "unlink of a directory: EISDIR",
        errno_of(unlink(p("a").c())),
        EISDIR,
    );
    t.eq(
        "open below a file: ENOTDIR",
        errno_of(open_c("b/g/x", O_RDONLY, 0)),
        ENOTDIR,
    );
    let long = "n".repeat(256);
    t.eq(
        "a 256-byte name: ENAMETOOLONG",
        errno_of(open_c(&long, O_CREAT | O_WRONLY, 0o644)),
        ENAMETOOLONG,
    );
    let ok255 = "m".repeat(255);
    let fd = open_c(&ok255, O_CREAT | O_WRONLY, 0o644);
    t.check("a 255-byte name is fine", fd.is_ok());
    let _ = fd.map(close);
    let _ = unlink(p(&ok255).c());
    // Symbolic links: readlink, a path through a linked directory, a loop.
    t.eq("symlink lb -> b", errno_of(symlink("b", "lb")), 0);
    t.eq("readlink lb", readlink("lb"), Ok(String::from("b")));
    t.eq(
        "stat follows the link",
        stat_p("lb").map(|s| s.st_mode & S_IFMT),
        Ok(S_IFDIR),
    );
    t.eq(
        "lstat gives the link itself",
        lstat("lb").map(|s| s.st_mode & S_IFMT),
        Ok(0o120000),
    );
    t.eq(
        "lstat's size is the target's length",
        lstat("lb").map(|s| s.st_size),
        Ok(1),
    );
    t.eq(
        "symlink dangling -> nowhere",
        errno_of(symlink("nowhere", "dangling")),
        0,
    );
    t.eq(
        "stat of a dangling link: ENOENT",
        errno_of(stat_p("dangling")),
        ENOENT,
    );
    t.check("lstat of a dangling link", lstat("dangling").is_ok());
    t.eq("unlink removes the link", unlink(p("dangling").c()), Ok(0));
    t.eq(
        "read through the linked directory",
        read_file(p("lb/g").c(), &mut buf),
        Some(5),
    );
    t.eq(
        "symlink loop1 -> loop2",
        errno_of(symlink("loop2", "loop1")),
        0,
    );
    t.eq(
        "symlink loop2 -> loop1",
        errno_of(symlink("loop1", "loop2")),
        0,
    );
    t.eq(
        "open through a loop: ELOOP",
        errno_of(open_c("loop1", O_RDONLY, 0)),
        ELOOP,
    );
    t.eq("readlink of a file: EINVAL", errno_of(readlink("b/g")), 22);
    for name in ["lb", "loop1", "loop2", "b/g"] {
        let _ = unlink(p(name).c());
    }
    t.eq("rmdir a", rmdir(p("a").c()), Ok(0));
    t.eq("rmdir b", rmdir(p("b").c()), Ok(0));
}

fn links(t: &mut Tester) {
    let fd = open_c("l1", O_CREAT | O_WRONLY, 0o644).unwrap_or(-1);
    let _ = close(fd);
    t.eq(
        "nlink of a new file",
        stat_p("l1").map(|s| s.st_nlink),
        Ok(1),
    );
    t.eq("link", link(p("l1").c(), p("l2").c()), Ok(0));
    t.eq("nlink after link", stat_p("l1").map(|s| s.st_nlink), Ok(2));
    t.eq(
        "the same inode",
        stat_p("l1").map(|s| s.st_ino),
        stat_p("l2").map(|s| s.st_ino),
    );
    t.eq(
        "link onto an existing name: EEXIST",
        errno_of(link(p("l1").c(), p("l2").c())),
        EEXIST,
    );
    t.eq("unlink l1", unlink(p("l1").c()), Ok(0));
    t.eq(
        "nlink after unlink",
        stat_p("l2").map(|s| s.st_nlink),
        Ok(1),
    );
    let _ = unlink(p("l2").c());
    let before = stat_p(".").map(|s| s.st_nlink).unwrap_or(0);
    let _ = mkdir("sub", 0o755);
    t.eq(
        "a new directory's nlink",
        stat_p("sub").map(|s| s.st_nlink),
        Ok(2),
    );
    t.eq(
        "the parent's nlink grows by one",
        stat_p(".").map(|s| s.st_nlink),
        Ok(before + 1),
    );
    let _ = rmdir(p("sub").c());
    t.eq(
        "and falls back after rmdir",
        stat_p(".").map(|s| s.st_nlink),
        Ok(before),
    );
}

fn attributes(t: &mut Tester) {
    let fd = open_c("attr", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    let c = p("attr");
    t.eq(
        "chmod 0600",
        sys(90, &[c.c().as_ptr() as usize, 0o600]),
        Ok(0),
    );
    t.eq(
        "mode after chmod",
        fstat(fd).map(|s| s.st_mode),
        Ok(S_IFREG | 0o600),
    );
    t.eq("fchmod 0640", sys(91, &[fd as usize, 0o640]), Ok(0));
    t.eq(
        "mode after fchmod",
        stat_p("attr").map(|s| s.st_mode),
        Ok(S_IFREG | 0o640),
    );
    let at_fdcwd = -100isize as usize;
    t.eq(
        "fchmodat 0444",
        sys(268, &[at_fdcwd, c.c().as_ptr() as usize, 0o444]),
        Ok(0),
    );
    t.eq(
        "mode after fchmodat",
        stat_p("attr").map(|s| s.st_mode),
        Ok(S_IFREG | 0o444),
    );
    // utimensat: atime and mtime set to fixed seconds.
    let times: [i64; 4] = [1_000_000, 0, 2_000_000, 0];
    t.eq(
        "utimensat",
        sys(
            280,
            &[
                at_fdcwd,
                c.c().as_ptr() as usize,
                times.as_ptr() as usize,
                0,
            ],
        ),
        Ok(0),
    );
    let st = stat_p("attr").unwrap_or_default();
    t.eq(
        "atime and mtime after utimensat",
        (st.st_times[0], st.st_times[2]),
        (1_000_000, 2_000_000),
    );
    let _ = close(fd);
    let _ = unlink(c.c());
}

/// The wall clock's seconds (`clock_gettime(CLOCK_REALTIME)`).
fn now_s() -> i64 {
    let mut ts = [0i64; 2];
    let _ = sys(228, &[0, ts.as_mut_ptr() as usize]);
    ts[0]
}

/// `futimens(fd, [atime, mtime])` with whole seconds (`utimensat(fd, NULL, times, 0)`).
fn futimens_s(fd: i32, atime: i64, mtime: i64) -> Result<usize, Errno> {
    let times: [i64; 4] = [atime, 0, mtime, 0];
    sys(280, &[fd as usize, 0, times.as_ptr() as usize, 0])
}

/// `utimensat(AT_FDCWD, name, [atime, mtime], 0)` with whole seconds.
fn utimens_path_s(name: &str, atime: i64, mtime: i64) -> Result<usize, Errno> {
    let times: [i64; 4] = [atime, 0, mtime, 0];
    let c = p(name);
    sys(
        280,
        &[
            (-100i64) as usize,
            c.c().as_ptr() as usize,
            times.as_ptr() as usize,
            0,
        ],
    )
}

/// Runs `set` (which sets the file's mtime far back), between two rewrites of page 0 through
/// `fd` made in one second of the clock (a few tries if the second turns over), and returns
/// the seconds before and after and the mtime after the second rewrite.
fn rewrite_around(fd: i32, set: &dyn Fn() -> bool) -> Option<(i64, i64, i64)> {
    let page = [0x5au8; 4096];
    for _ in 0..5 {
        let t0 = now_s();
        let first = pwrite(fd, &page, 0);
        let set_ok = set();
        let second = pwrite(fd, &page, 0);
        let t1 = now_s();
        if first != Ok(4096) || second != Ok(4096) || !set_ok {
            return None;
        }
        if t0 == t1 {
            return Some((t0, t1, fstat(fd).ok()?.st_times[2]));
        }
    }
    None
}

/// A rewrite (over blocks the file has, inside its size) moves mtime to now; cowlab remembers
/// per open file that it set the times in this second and skips the inode update for the
/// next write in that second (Linux `file_update_time` compares with the clock). That memory
/// must not outlive a `utimensat` made through the same fd, another fd or another process.
fn write_times(t: &mut Tester) {
    let name = format!("times{}", cowlab_userland::sys::getpid());
    let fd = open_c(&name, O_CREAT | O_EXCL | O_RDWR, 0o600).unwrap_or(-1);
    t.eq("write a page", pwrite(fd, &[1u8; 4096], 0), Ok(4096));
    let far = 1_000_000;
    let in_window = |r: Option<(i64, i64, i64)>| match r {
        Some((t0, t1, m)) => (t0..=t1).contains(&m),
        None => false,
    };
    let r = rewrite_around(fd, &|| futimens_s(fd, far, far) == Ok(0));
    t.check_why(
        "a rewrite in the same second after futimens: mtime is now again",
        in_window(r),
        format!("{r:?}"),
    );
    let fd2 = open_c(&name, O_RDWR, 0).unwrap_or(-1);
    let r = rewrite_around(fd, &|| futimens_s(fd2, far, far) == Ok(0));
    t.check_why(
        "a rewrite in the same second after futimens through another fd: mtime is now",
        in_window(r),
        format!("{r:?}"),
    );
    let _ = close(fd2);
    let child_sets = || match fork() {
        Ok(0) => {
            cowlab_userland::calls::exit_now(i32::from(utimens_path_s(&name, far, far) != Ok(0)))
        }
        Ok(pid) => matches!(waitpid(pid, 0), Ok((_, 0))),
        Err(_) => false,
    };
    let r = rewrite_around(fd, &child_sets);
    t.check_why(
        "a rewrite in the same second after utimensat in another process: mtime is now",
        in_window(r),
        format!("{r:?}"),
    );
    t.eq("rewrite", pwrite(fd, &[2u8; 4096], 0), Ok(4096));
    let before = fstat(fd).map(|s| s.st_times[2]).unwrap_or(0);
    let _ = sleep_ms(1100);
    t.eq("rewrite 1.1 s later", pwrite(fd, &[3u8; 4096], 0), Ok(4096));
    let after = fstat(fd).map(|s| s.st_times[2]).unwrap_or(0);
    t.check_why(
        "a rewrite 1.1 s later moves mtime",
        after > before,
        format!("{before} -> {after}"),
    );
    let _ = close(fd);
    let _ = unlink(p(&name).c());
}

fn unlinked_open(t: &mut Tester) {
    let fd = open_c("orphan", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("write before unlink", write(fd, &[7u8; 10000]), Ok(10000));
    t.eq("unlink while open", unlink(p("orphan").c()), Ok(0));
    t.eq(
        "nlink 0 through the descriptor",
        fstat(fd).map(|s| s.st_nlink),
        Ok(0),
    );
    t.eq("write after unlink", pwrite(fd, b"after", 10000), Ok(5));
    let mut buf = vec![0u8; 10005];
    t.eq("read after unlink", pread(fd, &mut buf, 0), Ok(10005));
    t.check(
        "the data live on",
        buf[..10000].iter().all(|&b| b == 7) && &buf[10000..] == b"after",
    );
    t.eq("the name is gone", errno_of(stat_p("orphan")), ENOENT);
    t.eq("the last close", close(fd), Ok(0));
}

fn syncs(t: &mut Tester) {
    let fd = open_c("synced", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    let _ = write(fd, b"durable");
    t.eq("fsync", sys(74, &[fd as usize]), Ok(0));
    t.eq("fdatasync", sys(75, &[fd as usize]), Ok(0));
    t.eq("syncfs", sys(306, &[fd as usize]), Ok(0));
    t.eq("sync", sys(162, &[]), Ok(0));
    let dfd = open_c(".", O_RDONLY | O_DIRECTORY, 0).unwrap_or(-1);
    t.eq("fsync of a directory", sys(74, &[dfd as usize]), Ok(0));
    let _ = close(dfd);
    let _ = close(fd);
    let _ = unlink(p("synced").c());
}

/// Fills the disk: the big write ends in ENOSPC (or a short count, then ENOSPC), a file
/// written before reads back intact, and unlinking the big file gives the blocks back.
fn full_disk(t: &mut Tester) {
    let keep = open_c("keep", O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    let pattern: Vec<u8> = (0..20000).map(|i| (i * 7 % 256) as u8).collect();
    let _ = write(keep, &pattern);
    let free_before = fstatfs(keep).map(|s| s.f_bfree).unwrap_or(0);
    let big = open_c("big", O_CREAT | O_WRONLY, 0o644).unwrap_or(-1);
    let chunk = vec![0x5au8; 1 << 20];
    let mut result = Ok(0);
    for _ in 0..4096 {
        result = write(big, &chunk);
        match result {
            Ok(n) if n == chunk.len() => continue,
            _ => break,
        }
    }
    // A short write is followed by ENOSPC on the next one.
    if let Ok(n) = result {
        if n < chunk.len() {
            result = write(big, &chunk);
        }
    }
    t.eq("a big write ends in ENOSPC", errno_of(result), ENOSPC);
    t.eq(
        "statfs f_bavail 0 when full",
        fstatfs(big).map(|s| s.f_bavail),
        Ok(0),
    );
    let mut back = vec![0u8; 20000];
    t.eq(
        "the existing file reads back",
        pread(keep, &mut back, 0),
        Ok(20000),
    );
    t.check("the existing file is intact", back == pattern);
    let _ = close(big);
    t.eq("unlink the big file", unlink(p("big").c()), Ok(0));
    let free_after = fstatfs(keep).map(|s| s.f_bfree).unwrap_or(0);
    t.eq("the blocks come back", free_after, free_before);
    let _ = close(keep);
    let _ = unlink(p("keep").c());
}
