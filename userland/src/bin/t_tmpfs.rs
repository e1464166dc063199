//! tmpfs at /tmp: open with O_CREAT/O_EXCL/O_TRUNC/O_APPEND, the mkstemp and tmpfile()
//! patterns (O_CREAT|O_EXCL|O_RDWR, O_TMPFILE), read/write/pread/pwrite/lseek/ftruncate/
//! fallocate, stat/fstat (nlink 0 after unlink), getdents64 of /tmp, openat relative to /tmp,
//! rename/renameat2, unlink (the data live until the last descriptor and mapping go), MAP_SHARED
//! and MAP_PRIVATE mappings, statfs/fstatfs (TMPFS_MAGIC on cowlab), the errors Linux gives,
//! and, on cowlab, MemFree back to its baseline once an unlinked file's last holder goes.
//! Runs on the host too (its /tmp need not be a tmpfs: the magic is checked on cowlab only).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::sys::errno::{self, ENAMETOOLONG, EOPNOTSUPP};
use cowlab_userland::sys::{nr, Errno};
use cowlab_userland::test::{in_child, on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;

/// A NUL-terminated copy of `s` (owned, so names can be built at run time).
struct CPath(Vec<u8>);

impl CPath {
    fn new(s: &str) -> CPath {
        let mut v = Vec::from(s.as_bytes());
        v.push(0);
        CPath(v)
    }

    fn c(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.0).expect("one NUL at the end")
    }
}

fn e<T>(n: i32) -> Result<T, Errno> {
    Err(Errno(n))
}

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside live mappings.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn getpid() -> usize {
    // SAFETY: getpid takes no arguments.
    unsafe { raw(nr::GETPID, [0; 6]) }.unwrap_or(0)
}

/// MemFree in kB from /proc/meminfo.
fn mem_free() -> Option<u64> {
    let fd = open(c"/proc/meminfo", O_RDONLY).ok()?;
    let mut buf = [0u8; 2048];
    let n = read(fd, &mut buf).ok()?;
    let _ = close(fd);
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemFree:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Whether getdents64 of `dirfd` lists `name`.
fn dir_lists(dirfd: i32, name: &str) -> Result<bool, Errno> {
    lseek(dirfd, 0, 0)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = getdents64(dirfd, &mut buf)?;
        if n == 0 {
            return Ok(false);
        }
        let mut at = 0;
        while at < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let entry = &buf[at + 19..at + reclen];
            let len = entry.iter().position(|&b| b == 0).unwrap_or(entry.len());
            if &entry[..len] == name.as_bytes() && buf[at + 18] == 8 {
                return Ok(true);
            }
            at += reclen;
        }
    }
}

fn read_at(fd: i32, off: u64, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = alloc::vec![0u8; len];
    let n = pread(fd, &mut buf, off)?;
    buf.truncate(n);
    Ok(buf)
}

fn main() -> i32 {
    let mut t = Tester::new("t_tmpfs");
    let cowlab = on_cowlab();
    let base = format!("t_tmpfs.{}", getpid());
    let name = format!("{base}.a");
    let path = CPath::new(&format!("/tmp/{name}"));
    let _ = unlink(path.c());

    // statfs
    match statfs(c"/tmp") {
        Ok(st) => {
            t.check("statfs(/tmp) f_namelen 255", st.f_namelen == 255);
            if cowlab {
                t.eq("statfs(/tmp) is TMPFS_MAGIC", st.f_type, TMPFS_MAGIC);
                t.check(
                    "statfs(/tmp) blocks: free <= total, size > 0",
                    st.f_blocks > 0 && st.f_bfree <= st.f_blocks && st.f_bsize == 4096,
                );
            }
        }
        Err(err) => t.check_why("statfs(/tmp)", false, err.0),
    }
    t.eq(
        "statfs of a missing path is ENOENT",
        statfs(c"/tmp/no/such").map(drop),
        e(errno::ENOENT),
    );
    // SAFETY: address 8 is unmapped: the kernel must fail the copy.
    let bad = unsafe { raw(137, [c"/tmp".as_ptr() as usize, 8, 0, 0, 0, 0]) };
    t.eq("statfs to a bad buffer is EFAULT", bad, e(errno::EFAULT));
    t.eq(
        "fstatfs(-1) is EBADF",
        fstatfs(-1).map(drop),
        e(errno::EBADF),
    );

    // mkstemp: O_CREAT|O_EXCL|O_RDWR, 0600.
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600).unwrap_or(-1);
    t.check("create a file in /tmp (O_CREAT|O_EXCL|O_RDWR)", fd >= 0);
    t.eq(
        "O_CREAT|O_EXCL on an existing name is EEXIST",
        open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o600),
        e(errno::EEXIST),
    );
    match fstat(fd) {
        Ok(st) => {
            t.eq("fstat: S_IFREG", st.st_mode & S_IFMT, S_IFREG);
            t.eq("fstat: mode 0600", st.st_mode & 0o7777, 0o600);
            t.eq("fstat: size 0, nlink 1", (st.st_size, st.st_nlink), (0, 1));
        }
        Err(err) => t.check_why("fstat", false, err.0),
    }
    if let Ok(st) = fstatfs(fd) {
        if cowlab {
            t.eq(
                "fstatfs of a /tmp file is TMPFS_MAGIC",
                st.f_type,
                TMPFS_MAGIC,
            );
        }
    } else {
        t.check("fstatfs of a /tmp file", false);
    }

    // Data: write, lseek, read, pread, pwrite.
    let data: Vec<u8> = (0..10000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.eq("write 10000 bytes", write(fd, &data), Ok(10000));
    t.eq("lseek SEEK_END", lseek(fd, 0, 2), Ok(10000));
    t.eq("lseek SEEK_SET", lseek(fd, 0, 0), Ok(0));
    let mut back = alloc::vec![0u8; 12000];
    t.eq("read stops at EOF", read(fd, &mut back), Ok(10000));
    t.check("read returns what was written", back[..10000] == data[..]);
    t.eq("pwrite in the middle", pwrite(fd, b"HELLO", 4090), Ok(5));
    t.eq(
        "pread across a page boundary",
        read_at(fd, 4090, 5),
        Ok(Vec::from(&b"HELLO"[..])),
    );
    match stat(path.c()) {
        Ok(st) => {
            t.eq("stat by path: size", st.st_size, 10000);
            if cowlab {
                t.eq("stat: st_blocks counts 3 pages", st.st_blocks, 24);
            }
        }
        Err(err) => t.check_why("stat by path", false, err.0),
    }

    // O_APPEND through a second description; O_TRUNC seen by the first one.
    let fd2 = open(path.c(), O_WRONLY | O_APPEND).unwrap_or(-1);
    t.check("reopen O_WRONLY|O_APPEND", fd2 >= 0);
    t.eq("O_APPEND write", write(fd2, b"tail"), Ok(4));
    t.eq(
        "O_APPEND wrote at the end",
        read_at(fd, 10000, 10),
        Ok(Vec::from(&b"tail"[..])),
    );
    let _ = close(fd2);
    let fd3 = open(path.c(), O_RDWR | O_TRUNC).unwrap_or(-1);
    t.check("reopen O_TRUNC", fd3 >= 0);
    t.eq(
        "O_TRUNC emptied the file for every descriptor",
        fstat(fd).map(|s| s.st_size),
        Ok(0),
    );
    let _ = close(fd3);

    // fsync, fdatasync: nothing to write back, 0.
    // SAFETY: fsync and fdatasync take a descriptor only.
    let synced = unsafe {
        (
            raw(74, [fd as usize, 0, 0, 0, 0, 0]),
            raw(75, [fd as usize, 0, 0, 0, 0, 0]),
        )
    };
    t.eq("fsync and fdatasync", synced, (Ok(0), Ok(0)));
    if let Ok(p) = pipe() {
        // SAFETY: as above.
        let r = unsafe { raw(74, [p[0] as usize, 0, 0, 0, 0, 0]) };
        t.eq("fsync of a pipe is EINVAL", r, e(errno::EINVAL));
        let _ = close(p[0]);
        let _ = close(p[1]);
    } else {
        t.check("pipe for the fsync check", false);
    }

    // ftruncate, fallocate.
    t.eq("ftruncate grows", ftruncate(fd, 3 * PAGE as i64), Ok(0));
    t.eq(
        "a hole reads as zeros",
        read_at(fd, 100, 4),
        Ok(alloc::vec![0u8; 4]),
    );
    t.eq(
        "fallocate grows",
        fallocate(fd, 0, 0, 4 * PAGE as i64),
        Ok(0),
    );
    t.eq(
        "size after fallocate",
        fstat(fd).map(|s| s.st_size),
        Ok(4 * PAGE as i64),
    );
    if cowlab {
        t.eq(
            "fallocate mode 1 (KEEP_SIZE) is EOPNOTSUPP here",
            fallocate(fd, 1, 0, 10),
            e(EOPNOTSUPP),
        );
    }

    // Shared and private mappings.
    // SAFETY: a new mapping at an address the kernel chooses.
    let shared = unsafe { mmap_fd(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) };
    // SAFETY: as above.
    let private = unsafe { mmap_fd(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) };
    match (shared, private) {
        (Ok(s), Ok(p)) => {
            poke(s + PAGE + 1, 0x5a);
            t.eq(
                "a MAP_SHARED store reaches the file",
                read_at(fd, PAGE as u64 + 1, 1),
                Ok(alloc::vec![0x5a]),
            );
            t.eq("MAP_PRIVATE sees the file", peek(p + PAGE + 1), 0x5a);
            poke(p + 2 * PAGE, 0x77);
            t.eq(
                "a MAP_PRIVATE store does not reach the file",
                read_at(fd, 2 * PAGE as u64, 1),
                Ok(alloc::vec![0]),
            );
            t.eq(
                "pwrite is seen through MAP_SHARED",
                pwrite(fd, b"Q", 3),
                Ok(1),
            );
            t.eq("... the shared mapping", peek(s + 3), b'Q');
            let _ = munmap(p, 4 * PAGE);
            // Keep `s` across unlink below.
            unlink_checks(&mut t, fd, &path, &name, s);
        }
        _ => t.check_why(
            "mmap of a /tmp file",
            false,
            format_args!("{shared:?} {private:?}"),
        ),
    }
    let _ = close(fd);

    errors(&mut t, &base);
    names(&mut t, &base);
    tmpfile(&mut t);
    links(&mut t, &base);
    times(&mut t, &base);
    across_fork(&mut t, &base);
    working_directory(&mut t, &base);
    mount_paths(&mut t);
    memfd_unlimited(&mut t);
    if cowlab {
        frames_return(&mut t, &base);
        inode_limit(&mut t, &base);
        size_limit(&mut t, &base);
    }
    t.finish()
}

/// Unlink while a descriptor and a mapping hold the file.
fn unlink_checks(t: &mut Tester, fd: i32, path: &CPath, name: &str, map: usize) {
    let dir = open(c"/tmp", O_RDONLY | O_DIRECTORY).unwrap_or(-1);
    t.check("open /tmp O_DIRECTORY", dir >= 0);
    t.eq(
        "getdents64 of /tmp lists the file",
        dir_lists(dir, name),
        Ok(true),
    );
    t.eq("unlink", unlink(path.c()), Ok(0));
    t.eq(
        "stat after unlink is ENOENT",
        stat(path.c()).map(drop),
        e(errno::ENOENT),
    );
    t.eq("unlink again is ENOENT", unlink(path.c()), e(errno::ENOENT));
    t.eq(
        "fstat after unlink: nlink 0",
        fstat(fd).map(|s| s.st_nlink),
        Ok(0),
    );
    t.eq(
        "getdents64 no longer lists it",
        dir_lists(dir, name),
        Ok(false),
    );
    t.eq(
        "the data stay readable through the descriptor",
        read_at(fd, 3, 1),
        Ok(Vec::from(&b"Q"[..])),
    );
    t.eq("... and the mapping", peek(map + PAGE + 1), 0x5a);
    poke(map, 9);
    t.eq(
        "a store through the mapping still reaches the file",
        read_at(fd, 0, 1),
        Ok(alloc::vec![9]),
    );
    let _ = munmap(map, 4 * PAGE);
    let _ = close(dir);
}

/// ENOENT, ENOTDIR, EISDIR, ENAMETOOLONG.
fn errors(t: &mut Tester, base: &str) {
    let missing = CPath::new(&format!("/tmp/{base}.missing"));
    t.eq(
        "open a missing name is ENOENT",
        open(missing.c(), O_RDONLY),
        e(errno::ENOENT),
    );
    let file = CPath::new(&format!("/tmp/{base}.f"));
    let fd = open_mode(file.c(), O_CREAT | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create with O_CREAT", fd >= 0);
    let below = CPath::new(&format!("/tmp/{base}.f/x"));
    t.eq(
        "a path below a file is ENOTDIR",
        open_mode(below.c(), O_CREAT | O_RDWR, 0o600),
        e(errno::ENOTDIR),
    );
    t.eq(
        "O_DIRECTORY on a file is ENOTDIR",
        open(file.c(), O_RDONLY | O_DIRECTORY),
        e(errno::ENOTDIR),
    );
    let slash = CPath::new(&format!("/tmp/{base}.f/"));
    t.eq(
        "a file with a trailing slash is ENOTDIR",
        open(slash.c(), O_RDONLY),
        e(errno::ENOTDIR),
    );
    let newslash = CPath::new(&format!("/tmp/{base}.new/"));
    t.eq(
        "creating a name with a trailing slash is EISDIR",
        open_mode(newslash.c(), O_CREAT | O_RDWR, 0o600),
        e(errno::EISDIR),
    );
    t.eq(
        "open /tmp for writing is EISDIR",
        open(c"/tmp", O_RDWR),
        e(errno::EISDIR),
    );
    let dir = open(c"/tmp", O_RDONLY | O_DIRECTORY).unwrap_or(-1);
    let mut b = [0u8; 8];
    t.eq(
        "read of /tmp is EISDIR",
        read(dir, &mut b),
        e(errno::EISDIR),
    );
    t.eq("unlink /tmp is EISDIR", unlink(c"/tmp"), e(errno::EISDIR));
    t.eq(
        "rmdir of a file is ENOTDIR",
        rmdir(file.c()),
        e(errno::ENOTDIR),
    );
    let long = CPath::new(&format!("/tmp/{}", "a".repeat(256)));
    t.eq(
        "a 256-byte name is ENAMETOOLONG",
        open_mode(long.c(), O_CREAT | O_RDWR, 0o600),
        e(ENAMETOOLONG),
    );
    let ok255 = format!("{base}{}", "b".repeat(255 - base.len()));
    let fd255 = openat(dir, CPath::new(&ok255).c(), O_CREAT | O_RDWR, 0o600);
    t.check("openat(/tmp fd, 255-byte name) creates", fd255.is_ok());
    t.eq(
        "unlinkat(/tmp fd, name)",
        unlinkat(dir, CPath::new(&ok255).c(), 0),
        Ok(0),
    );
    t.eq(
        "unlinkat bad flags is EINVAL",
        unlinkat(dir, CPath::new(&ok255).c(), 1),
        e(errno::EINVAL),
    );
    if let Ok(f) = fd255 {
        let _ = close(f);
    }
    t.eq(
        "write on a read-only tmpfs fd is EBADF",
        {
            let r = open(file.c(), O_RDONLY).unwrap_or(-1);
            let res = write(r, b"x");
            let _ = close(r);
            res
        },
        e(errno::EBADF),
    );
    let _ = unlink(file.c());
    let _ = close(fd);
    let _ = close(dir);
}

/// rename within /tmp.
fn names(t: &mut Tester, base: &str) {
    let a = CPath::new(&format!("/tmp/{base}.r1"));
    let b = CPath::new(&format!("/tmp/{base}.r2"));
    let c = CPath::new(&format!("/tmp/{base}.r3"));
    let fa = open_mode(a.c(), O_CREAT | O_RDWR, 0o600).unwrap_or(-1);
    let _ = write(fa, b"first");
    let fc = open_mode(c.c(), O_CREAT | O_RDWR, 0o600).unwrap_or(-1);
    let _ = write(fc, b"third");
    t.eq("rename", rename(a.c(), b.c()), Ok(0));
    t.eq(
        "the old name is gone",
        stat(a.c()).map(drop),
        e(errno::ENOENT),
    );
    let fb = open(b.c(), O_RDONLY).unwrap_or(-1);
    t.eq(
        "the new name has the data",
        read_at(fb, 0, 10),
        Ok(Vec::from(&b"first"[..])),
    );
    t.eq(
        "renameat2 RENAME_NOREPLACE onto an existing name is EEXIST",
        renameat2(AT_FDCWD, c.c(), AT_FDCWD, b.c(), RENAME_NOREPLACE),
        e(errno::EEXIST),
    );
    t.eq(
        "rename replaces an existing name",
        rename(c.c(), b.c()),
        Ok(0),
    );
    t.eq(
        "the replaced file is unlinked (nlink 0) but still open",
        (fstat(fb).map(|s| s.st_nlink), read_at(fb, 0, 10)),
        (Ok(0), Ok(Vec::from(&b"first"[..]))),
    );
    let fb2 = open(b.c(), O_RDONLY).unwrap_or(-1);
    t.eq(
        "the name now holds the renamed file",
        read_at(fb2, 0, 10),
        Ok(Vec::from(&b"third"[..])),
    );
    t.eq(
        "rename a missing name is ENOENT",
        rename(a.c(), c.c()),
        e(errno::ENOENT),
    );
    for fd in [fa, fb, fb2, fc] {
        let _ = close(fd);
    }
    let _ = unlink(b.c());
}

/// tmpfile(): O_TMPFILE on /tmp.
fn tmpfile(t: &mut Tester) {
    match open_mode(c"/tmp", O_TMPFILE | O_RDWR, 0o600) {
        Ok(fd) => {
            let st = fstat(fd).unwrap_or_default();
            t.eq(
                "O_TMPFILE: a regular file with no name",
                (st.st_mode & S_IFMT, st.st_nlink),
                (S_IFREG, 0),
            );
            t.eq("O_TMPFILE: write", write(fd, b"unnamed"), Ok(7));
            t.eq(
                "O_TMPFILE: read back",
                read_at(fd, 0, 20),
                Ok(Vec::from(&b"unnamed"[..])),
            );
            let _ = close(fd);
        }
        Err(err) => t.check_why("open(/tmp, O_TMPFILE|O_RDWR)", false, err.0),
    }
    t.eq(
        "O_TMPFILE read-only is EINVAL",
        open_mode(c"/tmp", O_TMPFILE | O_RDONLY, 0o600),
        e(errno::EINVAL),
    );
    t.eq(
        "O_TMPFILE with O_CREAT is EINVAL",
        open_mode(c"/tmp", O_TMPFILE | O_CREAT | O_RDWR, 0o600),
        e(errno::EINVAL),
    );
    t.eq(
        "__O_TMPFILE without O_DIRECTORY is EINVAL",
        open_mode(c"/tmp", (O_TMPFILE & !O_DIRECTORY) | O_RDWR, 0o600),
        e(errno::EINVAL),
    );
}

/// A child writes through the inherited descriptor; the parent reads it.
fn across_fork(t: &mut Tester, base: &str) {
    let p = CPath::new(&format!("/tmp/{base}.fork"));
    let fd = open_mode(p.c(), O_CREAT | O_RDWR | O_TRUNC, 0o600).unwrap_or(-1);
    let status = in_child(|| {
        if pwrite(fd, b"child", 0) != Ok(5) {
            return 1;
        }
        // A name the child creates is visible to the parent.
        let q = CPath::new(&format!("/tmp/{}.fork2", "t_tmpfs_child"));
        match open_mode(q.c(), O_CREAT | O_RDWR | O_TRUNC, 0o600) {
            Ok(f) => i32::from(write(f, b"2") != Ok(1)) * 2,
            Err(_) => 3,
        }
    });
    t.eq("child exited 0", status, 0);
    t.eq(
        "the child's write is in the file",
        read_at(fd, 0, 8),
        Ok(Vec::from(&b"child"[..])),
    );
    t.eq(
        "the child's new file exists",
        stat(c"/tmp/t_tmpfs_child.fork2").map(|s| s.st_size),
        Ok(1),
    );
    let _ = unlink(c"/tmp/t_tmpfs_child.fork2");
    let _ = close(fd);
    let _ = unlink(p.c());
}

/// A memfd lives on Linux's internal shmem mount, which has no size or inode limit: fstatfs
/// reports zero blocks and inodes (and /tmp's limit does not apply to it). A store beyond its
/// end is SIGBUS.
fn memfd_unlimited(t: &mut Tester) {
    let fd = memfd_create(c"t_tmpfs.limit", 0).unwrap_or(-1);
    match fstatfs(fd) {
        Ok(st) => t.eq(
            "fstatfs of a memfd: TMPFS_MAGIC, no block or inode limit",
            (st.f_type, st.f_blocks, st.f_bfree, st.f_files),
            (TMPFS_MAGIC, 0, 0, 0),
        ),
        Err(err) => t.check_why("fstatfs of a memfd", false, err.0),
    }
    // A store past the end of the object (Linux: SIGBUS with BUS_ADRERR, not SIGSEGV).
    let _ = ftruncate(fd, PAGE as i64);
    let status = in_child(|| {
        // SAFETY: a new shared mapping of two pages of a one-page memfd.
        match unsafe { mmap_fd(0, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) } {
            Ok(m) => {
                poke(m, 1);
                poke(m + PAGE, 1);
                0
            }
            Err(_) => 2,
        }
    });
    t.check_why(
        "a store past the end of a memfd is SIGBUS",
        wifsignaled(status) && wtermsig(status) == 7,
        status,
    );
    let _ = close(fd);
}

/// MemTotal in kB from /proc/meminfo.
fn mem_total() -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// /tmp's size limit (Linux's default `size=`: half of RAM): statfs reports it; a file filled
/// to it gets short writes then ENOSPC, fallocate past it ENOSPC, a shared-mapping fault past
/// it SIGBUS; other processes keep allocating memory; unlink gives every page back. (cowlab
/// only: on the host this would fill the host's /tmp.)
fn size_limit(t: &mut Tester, base: &str) {
    let chunk = alloc::vec![0x5au8; 3 * PAGE];
    let (Some(before), Some(total_kb), Ok(st)) = (mem_free(), mem_total(), statfs(c"/tmp")) else {
        t.check("read MemFree, MemTotal and statfs(/tmp)", false);
        return;
    };
    t.eq(
        "statfs(/tmp) f_blocks is half of MemTotal",
        st.f_blocks,
        total_kb / 4 / 2,
    );
    let p = CPath::new(&format!("/tmp/{base}.full"));
    let fd = open_mode(p.c(), O_CREAT | O_RDWR, 0o600).unwrap_or(-1);
    let fill = (st.f_bfree - 2) * PAGE as u64;
    t.eq(
        "fallocate up to two pages below the limit",
        fallocate(fd, 0, 0, fill as i64),
        Ok(0),
    );
    t.eq(
        "statfs f_bfree is 2",
        statfs(c"/tmp").map(|s| (s.f_blocks - s.f_bfree, s.f_bfree)),
        Ok((st.f_blocks - 2, 2)),
    );
    t.eq(
        "a 3-page write at the limit stops after 2 pages",
        pwrite(fd, &chunk, fill),
        Ok(2 * PAGE),
    );
    let end = fill + 2 * PAGE as u64;
    t.eq(
        "the next write is ENOSPC",
        pwrite(fd, &chunk[..1], end),
        e(28),
    );
    t.eq(
        "fallocate past the limit is ENOSPC",
        fallocate(fd, 0, end as i64, PAGE as i64),
        e(28),
    );
    t.eq(
        "a write into an allocated page still works",
        pwrite(fd, b"x", 5),
        Ok(1),
    );
    t.eq(
        "statfs f_bfree is 0 when full",
        statfs(c"/tmp").map(|s| s.f_bfree),
        Ok(0),
    );
    // A shared mapping of a hole past the limit: the store cannot get a page.
    let _ = ftruncate(fd, (end + PAGE as u64) as i64);
    let status = in_child(|| {
        // SAFETY: a new shared mapping of the file's last page, chosen by the kernel.
        match unsafe { mmap_fd(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, end) } {
            Ok(m) => {
                poke(m, 1);
                0
            }
            Err(_) => 2,
        }
    });
    t.check_why(
        "a store faulting a page past the limit is SIGBUS",
        wifsignaled(status) && wtermsig(status) == 7,
        status,
    );
    let status = in_child(|| {
        let len = 4 << 20;
        let Ok(m) = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
            return 2;
        };
        for i in (0..len).step_by(PAGE) {
            poke(m + i, 1);
        }
        i32::from((0..len).step_by(PAGE).any(|i| peek(m + i) != 1))
    });
    t.eq("another process still gets 4 MiB of memory", status, 0);
    let _ = unlink(p.c());
    let _ = close(fd);
    t.eq(
        "unlink frees the limit",
        statfs(c"/tmp").map(|s| s.f_bfree),
        Ok(st.f_bfree),
    );
    t.eq(
        "MemFree back to baseline after the full file",
        mem_free(),
        Some(before),
    );
}

/// An unlinked 1 MiB file's frames go back with its last descriptor and mapping.
fn frames_return(t: &mut Tester, base: &str) {
    const LEN: usize = 256 * PAGE;
    // The write buffer first: the user allocator keeps its memory, which is not the file's.
    let chunk = alloc::vec![0xabu8; 64 * 1024];
    let Some(before) = mem_free() else {
        t.check("read MemFree", false);
        return;
    };
    let p = CPath::new(&format!("/tmp/{base}.big"));
    let fd = open_mode(p.c(), O_CREAT | O_RDWR, 0o600).unwrap_or(-1);
    for i in 0..LEN / chunk.len() {
        let _ = pwrite(fd, &chunk, (i * chunk.len()) as u64);
    }
    // SAFETY: a new mapping at an address the kernel chooses.
    let map = unsafe { mmap_fd(0, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) };
    let mut sum = 0u64;
    if let Ok(m) = map {
        for i in (0..LEN).step_by(PAGE) {
            sum += u64::from(peek(m + i));
        }
    }
    t.eq("1 MiB file mapped and read", sum, 0xab * 256);
    let during = mem_free().unwrap_or(before);
    t.check_why(
        "MemFree dropped by at least 1 MiB",
        before >= during + 1024,
        format_args!("before {before} kB, during {during} kB"),
    );
    let _ = unlink(p.c());
    let _ = close(fd);
    let still = mem_free().unwrap_or(0);
    t.check_why(
        "the mapping keeps the unlinked file's frames",
        still + 1024 <= before,
        format_args!("before {before} kB, now {still} kB"),
    );
    if let Ok(m) = map {
        let _ = munmap(m, LEN);
    }
    let after = mem_free().unwrap_or(0);
    t.eq(
        "MemFree back to baseline after close and munmap",
        after,
        before,
    );
}

/// Hard links, and giving an O_TMPFILE file a name with linkat(AT_EMPTY_PATH).
fn links(t: &mut Tester, base: &str) {
    let a = CPath::new(&format!("/tmp/{base}.l1"));
    let b = CPath::new(&format!("/tmp/{base}.l2"));
    let fa = open_mode(a.c(), O_CREAT | O_RDWR | O_TRUNC, 0o600).unwrap_or(-1);
    let _ = write(fa, b"linked");
    t.eq("link", link(a.c(), b.c()), Ok(0));
    t.eq(
        "both names: nlink 2, same inode",
        (
            stat(a.c()).map(|s| (s.st_nlink, s.st_ino)),
            stat(b.c()).map(|s| s.st_ino),
        ),
        (
            Ok((2, fstat(fa).map(|s| s.st_ino).unwrap_or(0))),
            fstat(fa).map(|s| s.st_ino),
        ),
    );
    t.eq(
        "link onto an existing name is EEXIST",
        link(a.c(), b.c()),
        e(errno::EEXIST),
    );
    let missing = CPath::new(&format!("/tmp/{base}.l-missing"));
    t.eq(
        "link of a missing name is ENOENT",
        link(missing.c(), a.c()),
        e(errno::ENOENT),
    );
    t.eq(
        "link of /tmp is EPERM",
        link(c"/tmp", missing.c()),
        e(errno::EPERM),
    );
    t.eq("unlink the first name", unlink(a.c()), Ok(0));
    t.eq("nlink 1", fstat(fa).map(|s| s.st_nlink), Ok(1));
    let fb = open(b.c(), O_RDONLY).unwrap_or(-1);
    t.eq(
        "the other name keeps the data",
        read_at(fb, 0, 10),
        Ok(Vec::from(&b"linked"[..])),
    );
    let _ = close(fb);
    let _ = unlink(b.c());
    t.eq(
        "nlink 0 after both unlinks",
        fstat(fa).map(|s| s.st_nlink),
        Ok(0),
    );
    t.eq(
        "an unlinked (not O_TMPFILE) file cannot be linked again",
        linkat(fa, c"", AT_FDCWD, a.c(), AT_EMPTY_PATH),
        e(errno::ENOENT),
    );
    let _ = close(fa);

    // linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH on Linux: root, as on cowlab.
    // SAFETY: getuid takes no arguments.
    let root = unsafe { raw(102, [0; 6]) } == Ok(0);
    if !root {
        return;
    }
    let named = CPath::new(&format!("/tmp/{base}.named"));
    match open_mode(c"/tmp", O_TMPFILE | O_RDWR, 0o600) {
        Ok(fd) => {
            let _ = write(fd, b"was unnamed");
            t.eq(
                "linkat(AT_EMPTY_PATH) names an O_TMPFILE file",
                linkat(fd, c"", AT_FDCWD, named.c(), AT_EMPTY_PATH),
                Ok(0),
            );
            t.eq("it has nlink 1", fstat(fd).map(|s| s.st_nlink), Ok(1));
            let g = open(named.c(), O_RDONLY).unwrap_or(-1);
            t.eq(
                "its name opens its data",
                read_at(g, 0, 20),
                Ok(Vec::from(&b"was unnamed"[..])),
            );
            let _ = close(g);
            let _ = close(fd);
            let _ = unlink(named.c());
        }
        Err(err) => t.check_why("O_TMPFILE for linkat", false, err.0),
    }
    match open_mode(c"/tmp", O_TMPFILE | O_RDWR | O_EXCL, 0o600) {
        Ok(fd) => {
            t.eq(
                "an O_TMPFILE|O_EXCL file cannot be linked (ENOENT)",
                linkat(fd, c"", AT_FDCWD, named.c(), AT_EMPTY_PATH),
                e(errno::ENOENT),
            );
            let _ = close(fd);
        }
        Err(err) => t.check_why("O_TMPFILE|O_EXCL", false, err.0),
    }
}

/// Nanoseconds of a (sec, nsec) pair of `st_times`.
fn ns(st: &Stat, which: usize) -> i128 {
    i128::from(st.st_times[2 * which]) * 1_000_000_000 + i128::from(st.st_times[2 * which + 1])
}

/// st_mtime/st_ctime: set at creation, advanced by a write, ctime by a link.
fn times(t: &mut Tester, base: &str) {
    let mut tv = [0i64; 2];
    // SAFETY: gettimeofday writes a struct timeval (16 bytes) into `tv`.
    let _ = unsafe { raw(96, [tv.as_mut_ptr() as usize, 0, 0, 0, 0, 0]) };
    let now = i128::from(tv[0]) * 1_000_000_000 + i128::from(tv[1]) * 1000;
    let p = CPath::new(&format!("/tmp/{base}.times"));
    let fd = open_mode(p.c(), O_CREAT | O_RDWR | O_TRUNC, 0o600).unwrap_or(-1);
    let created = fstat(fd).unwrap_or_default();
    t.check_why(
        "a new file's mtime is the current time",
        (ns(&created, 1) - now).abs() < 2_000_000_000,
        format_args!("mtime {} ns, now {now} ns", ns(&created, 1)),
    );
    let _ = sleep_ms(20);
    let _ = write(fd, b"later");
    let written = fstat(fd).unwrap_or_default();
    t.check_why(
        "a write advances mtime and ctime",
        ns(&written, 1) > ns(&created, 1) && ns(&written, 2) > ns(&created, 2),
        format_args!("{:?} -> {:?}", created.st_times, written.st_times),
    );
    let _ = sleep_ms(20);
    let q = CPath::new(&format!("/tmp/{base}.times2"));
    let _ = link(p.c(), q.c());
    let linked = fstat(fd).unwrap_or_default();
    t.check_why(
        "a link advances ctime, not mtime",
        ns(&linked, 2) > ns(&written, 2) && ns(&linked, 1) == ns(&written, 1),
        format_args!("{:?} -> {:?}", written.st_times, linked.st_times),
    );
    let _ = unlink(q.c());
    let _ = unlink(p.c());
    let _ = close(fd);
}

/// tmpfs holds at most f_files inodes: creating beyond answers ENOSPC, statfs counts them.
fn inode_limit(t: &mut Tester, base: &str) {
    const ENOSPC: i32 = 28;
    let Ok(st) = statfs(c"/tmp") else {
        t.check("statfs(/tmp)", false);
        return;
    };
    let mut made = Vec::new();
    let mut last = Ok(0);
    for i in 0..st.f_files + 1 {
        let p = CPath::new(&format!("/tmp/{base}.n{i}"));
        last = open_mode(p.c(), O_CREAT | O_EXCL | O_RDWR, 0o600);
        match last {
            Ok(fd) => {
                let _ = close(fd);
                made.push(p);
            }
            Err(_) => break,
        }
    }
    t.eq(
        "creating files until f_files are in use ends with ENOSPC",
        (made.len() as u64 == st.f_ffree, last),
        (true, e(ENOSPC)),
    );
    t.eq(
        "statfs f_ffree 0 when full",
        statfs(c"/tmp").map(|s| s.f_ffree),
        Ok(0),
    );
    for p in &made {
        let _ = unlink(p.c());
    }
    t.eq(
        "unlinking gives the inodes back",
        statfs(c"/tmp").map(|s| s.f_ffree),
        Ok(st.f_ffree),
    );
}

const CHDIR: usize = 80;
const FCHDIR: usize = 81;

fn chdir(path: &CStr) -> Result<usize, Errno> {
    // SAFETY: `path` is NUL-terminated.
    unsafe { raw(CHDIR, [path.as_ptr() as usize, 0, 0, 0, 0, 0]) }
}

fn fchdir(fd: i32) -> Result<usize, Errno> {
    // SAFETY: no pointer arguments.
    unsafe { raw(FCHDIR, [fd as usize, 0, 0, 0, 0, 0]) }
}

/// The working directory as `getcwd` reports it.
fn cwd() -> Result<Vec<u8>, Errno> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is live and 256 bytes long.
    let n = unsafe {
        raw(
            nr::GETCWD,
            [buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0, 0],
        )
    }?;
    Ok(Vec::from(&buf[..n.saturating_sub(1)]))
}

/// A per-process working directory: chdir into /tmp, relative paths resolve there (open,
/// stat, unlink, `..`), getcwd reports it, fork copies it, fchdir to a directory descriptor,
/// and the errors (a file: ENOTDIR; a short buffer: ERANGE). Ends back in `/`.
fn working_directory(t: &mut Tester, base: &str) {
    let start = cwd();
    t.eq("chdir /tmp", chdir(c"/tmp"), Ok(0));
    t.eq("getcwd is /tmp", cwd(), Ok(Vec::from(&b"/tmp"[..])));
    let name = format!("{base}.cwd");
    let rel = CPath::new(&name);
    let fd = open_mode(rel.c(), O_CREAT | O_EXCL | O_RDWR, 0o600).unwrap_or(-1);
    t.check("a relative O_CREAT lands in the working directory", fd >= 0);
    let _ = write(fd, b"here");
    let _ = close(fd);
    let abs = CPath::new(&format!("/tmp/{name}"));
    t.eq("it is /tmp/NAME", stat(abs.c()).map(|s| s.st_size), Ok(4));
    t.eq(
        "stat of the relative name",
        stat(rel.c()).map(|s| s.st_size),
        Ok(4),
    );
    let child =
        in_child(|| i32::from(cwd() != Ok(Vec::from(&b"/tmp"[..])) || stat(rel.c()).is_err()));
    t.eq("fork copies the working directory", child, 0);
    t.eq(
        "chdir to a file: ENOTDIR",
        chdir(rel.c()).map_err(|e| e.0),
        Err(errno::ENOTDIR),
    );
    let mut small = [0u8; 4];
    // SAFETY: `small` is live and 4 bytes long.
    let short = unsafe { raw(nr::GETCWD, [small.as_mut_ptr() as usize, 4, 0, 0, 0, 0]) };
    t.eq(
        "getcwd into 4 bytes: ERANGE",
        short.map_err(|e| e.0),
        Err(errno::ERANGE),
    );
    t.eq("chdir ..", chdir(c".."), Ok(0));
    t.eq("getcwd is / again", cwd(), Ok(Vec::from(&b"/"[..])));
    let up = CPath::new(&format!("tmp/{name}"));
    t.eq(
        "a relative path from /",
        stat(up.c()).map(|s| s.st_size),
        Ok(4),
    );
    let tmp = open(c"/tmp", O_DIRECTORY).unwrap_or(-1);
    t.eq("fchdir to an open /tmp", fchdir(tmp), Ok(0));
    t.eq("getcwd after fchdir", cwd(), Ok(Vec::from(&b"/tmp"[..])));
    t.eq("unlink of the relative name", unlink(rel.c()), Ok(0));
    t.check("the file is gone", stat(abs.c()).is_err());
    let _ = close(tmp);
    let root = open(c"/", O_DIRECTORY).unwrap_or(-1);
    t.eq("fchdir to /", fchdir(root), Ok(0));
    let _ = close(root);
    // Back where the program started (the host runs it from anywhere).
    if let Ok(start) = start {
        let mut p = start;
        p.push(0);
        if let Ok(c) = CStr::from_bytes_with_nul(&p) {
            let _ = chdir(c);
        }
    }
}

/// Paths resolve through the mount table, as on Linux: `..` out of `/tmp` into `/dev`, a
/// relative path from `/` into `/dev`, and a path below a file (`ENOTDIR`, not `ENOENT`).
fn mount_paths(t: &mut Tester) {
    t.eq(
        "stat /tmp/../dev/null is the character device",
        stat(c"/tmp/../dev/null").map(|s| s.st_mode & 0o170000),
        Ok(0o020000),
    );
    let start = cwd();
    let _ = chdir(c"/");
    let fd = open(c"dev/null", O_RDWR);
    t.check_why(
        "open of dev/null relative to /",
        fd.is_ok(),
        format_args!("{fd:?}"),
    );
    if let Ok(fd) = fd {
        let _ = close(fd);
    }
    t.eq(
        "open below a device file: ENOTDIR",
        open(c"/dev/null/x", 0).map_err(|e| e.0),
        Err(errno::ENOTDIR),
    );
    t.eq(
        "open below a /tmp directory entry that is missing: ENOENT",
        open(c"/tmp/no-such-dir-cowlab/x", 0).map_err(|e| e.0),
        Err(errno::ENOENT),
    );
    if let Ok(start) = start {
        let mut p = start;
        p.push(0);
        if let Ok(c) = CStr::from_bytes_with_nul(&p) {
            let _ = chdir(c);
        }
    }
}
