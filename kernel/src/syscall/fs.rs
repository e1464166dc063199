//! File system calls: descriptors, reads and writes, pipes, stat and statfs, and the directory
//! calls of a read-only root directory and the flat tmpfs at `/tmp` (create, unlink, rename).

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::{Args, Errno, SysResult};
use crate::fs::{self, console, pipe::Pipe, Fd, FileKind, OpenFile};
use crate::proc::with_current;
use crate::uaccess::{read_cstr, UserPtr, UserSlice};
use cowlab_mm::pin::PinnedPage;

const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const PATH_MAX: usize = 4096;
/// The most a read or write moves per step (a kernel bounce buffer).
const CHUNK: usize = 64 * 1024;

fn file(fd: i64) -> Result<Arc<OpenFile>, Errno> {
    with_current(|p| p.fds.get(fd))
}

fn nonblock(file: &OpenFile) -> bool {
    file.flags.load(Ordering::Relaxed) & fs::O_NONBLOCK != 0
}

/// Reads from `file` at `offset` (None: the file's own offset) into user memory.
pub(crate) fn read_file(file: &OpenFile, buf: UserSlice, offset: Option<u64>) -> SysResult {
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    match &file.kind {
        FileKind::Console => {
            let data = console::read(buf.len().min(CHUNK))?;
            buf.write(&data)?;
            Ok(data.len() as u64)
        }
        FileKind::Null => Ok(0),
        FileKind::Regular(f) => {
            let at = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
            let start = (at as usize).min(f.data.len());
            let end = start + buf.len().min(f.data.len() - start);
            buf.write(&f.data[start..end])?;
            if offset.is_none() {
                file.offset.store((end) as u64, Ordering::Relaxed);
            }
            Ok((end - start) as u64)
        }
        FileKind::Root | FileKind::TmpDir => Err(Errno::EISDIR),
        FileKind::IoUring(_) => Err(Errno::EINVAL),
        FileKind::PipeRead(pipe) => {
            if offset.is_some() {
                return Err(Errno::ESPIPE);
            }
            let n = pipe.read(nonblock(file), buf.len().min(CHUNK), &mut |chunk| {
                buf.write(chunk)
            })?;
            Ok(n as u64)
        }
        FileKind::PipeWrite(_) => Err(Errno::EBADF),
        FileKind::GupTest(_) => Err(Errno::EINVAL),
        #[cfg(feature = "kcov")]
        FileKind::Kcov(_) => Err(Errno::EINVAL),
        FileKind::Vda => fs::vda::read(file, buf, offset),
        FileKind::Proc(proc) => {
            let at = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
            let data = proc.read(at, buf.len().min(CHUNK))?;
            buf.write(&data)?;
            if offset.is_none() {
                file.offset.store(at + data.len() as u64, Ordering::Relaxed);
            }
            Ok(data.len() as u64)
        }
        FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) => {
            let at = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
            let mut kbuf = alloc::vec![0u8; buf.len().min(CHUNK)];
            let n = obj.read_at(crate::memory::mm(), at, &mut kbuf);
            buf.write(&kbuf[..n])?;
            if offset.is_none() {
                file.offset.store(at + n as u64, Ordering::Relaxed);
            }
            Ok(n as u64)
        }
    }
}

/// Writes user memory to a memfd at `offset` (None: the file's offset, or its end with
/// `O_APPEND`), a bounce-buffer chunk at a time.
fn write_memfd(
    file: &OpenFile,
    obj: &cowlab_mm::shmem::ShmemObject,
    buf: UserSlice,
    offset: Option<u64>,
) -> SysResult {
    let append = file.flags.load(Ordering::Relaxed) & fs::O_APPEND != 0;
    let mut at = match offset {
        Some(o) => o,
        None if append => obj.size(),
        None => file.offset.load(Ordering::Relaxed),
    };
    let mut done = 0;
    while done < buf.len() {
        let data = match buf.sub(done, CHUNK).read_vec() {
            Ok(data) => data,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        let written = match obj.write_at(crate::memory::mm(), at, &data) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e.into()),
            Err(_) => break,
        };
        done += written;
        at += written as u64;
        if written < data.len() {
            break;
        }
    }
    if offset.is_none() {
        file.offset.store(at, Ordering::Relaxed);
    }
    Ok(done as u64)
}

/// Writes user memory to `file`.
pub(crate) fn write_file(file: &OpenFile, buf: UserSlice, offset: Option<u64>) -> SysResult {
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    match &file.kind {
        FileKind::Console | FileKind::PipeWrite(_) => {
            if offset.is_some() {
                return Err(Errno::ESPIPE);
            }
            let mut done = 0;
            loop {
                let part = buf.sub(done, CHUNK);
                let data = match part.read_vec() {
                    Ok(data) => data,
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => break,
                };
                let written = match &file.kind {
                    FileKind::PipeWrite(pipe) => match pipe.write(nonblock(file), &data) {
                        Ok(n) => n,
                        Err(e) if done == 0 => return Err(e),
                        Err(_) => break,
                    },
                    _ => console::write(&data),
                };
                done += written;
                if written < data.len() || done >= buf.len() {
                    break;
                }
            }
            Ok(done as u64)
        }
        FileKind::Null => Ok(buf.len() as u64),
        FileKind::Memfd(obj) => write_memfd(file, obj, buf, offset),
        FileKind::Tmpfs(obj, inode) => {
            let n = write_memfd(file, obj, buf, offset)?;
            inode.touch_modified();
            Ok(n)
        }
        FileKind::Vda => fs::vda::write(file, buf, offset),
        FileKind::Proc(proc) => {
            let at = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
            let data = buf.sub(0, CHUNK).read_vec()?;
            let n = proc.write(at, &data)?;
            if offset.is_none() {
                file.offset.store(at + n as u64, Ordering::Relaxed);
            }
            Ok(n as u64)
        }
        _ => Err(Errno::EBADF),
    }
}

/// fsync/fdatasync of an open file (Linux `vfs_fsync`): memory-backed files (tmpfs, memfds,
/// the ramdisk, their directories) have nothing to write back (`noop_fsync`); files without an
/// `fsync` (pipes, the console, `/dev/null`, `/proc`, io_uring) answer `EINVAL`.
pub(crate) fn fsync_file(file: &OpenFile) -> SysResult {
    match file.kind {
        FileKind::Memfd(_)
        | FileKind::Tmpfs(..)
        | FileKind::TmpDir
        | FileKind::Regular(_)
        | FileKind::Root => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

/// fsync(fd) (74) and fdatasync(fd) (75).
pub fn fsync(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    fsync_file(&f)
}

pub fn read(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    read_file(&f, UserSlice::new(a.get(1), a.get(2) as usize)?, None)
}

pub fn write(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    write_file(&f, UserSlice::new(a.get(1), a.get(2) as usize)?, None)
}

pub fn pread64(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    if a.int(3) < 0 {
        return Err(Errno::EINVAL);
    }
    match f.kind {
        FileKind::Regular(_)
        | FileKind::Memfd(_)
        | FileKind::Tmpfs(..)
        | FileKind::Proc(_)
        | FileKind::Vda => read_file(
            &f,
            UserSlice::new(a.get(1), a.get(2) as usize)?,
            Some(a.get(3)),
        ),
        FileKind::Root | FileKind::TmpDir => Err(Errno::EISDIR),
        _ => Err(Errno::ESPIPE),
    }
}

pub fn pwrite64(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    if a.int(3) < 0 {
        return Err(Errno::EINVAL);
    }
    match f.kind {
        // As write: EBADF on a read-only descriptor, EFAULT for a buffer outside user memory.
        FileKind::Null => write_file(&f, UserSlice::new(a.get(1), a.get(2) as usize)?, None),
        FileKind::Memfd(_) | FileKind::Tmpfs(..) | FileKind::Proc(_) | FileKind::Vda => write_file(
            &f,
            UserSlice::new(a.get(1), a.get(2) as usize)?,
            Some(a.get(3)),
        ),
        FileKind::Regular(_) | FileKind::Root | FileKind::TmpDir => Err(Errno::EBADF),
        _ => Err(Errno::ESPIPE),
    }
}

/// One `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

fn iovecs(addr: u64, count: i64) -> Result<Vec<UserSlice>, Errno> {
    if !(0..=1024).contains(&count) {
        return Err(Errno::EINVAL);
    }
    let mut out = Vec::new();
    for i in 0..count as u64 {
        let at = addr.checked_add(16 * i).ok_or(Errno::EFAULT)?;
        let iov = UserPtr::<IoVec>::new(at)?.read()?;
        out.push(UserSlice::new(iov.base, iov.len as usize)?);
    }
    Ok(out)
}

pub fn readv(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let mut total = 0;
    for (i, iov) in iovecs(a.get(1), a.int(2))?.into_iter().enumerate() {
        if iov.len() == 0 {
            continue;
        }
        match read_file(&f, iov, None) {
            Ok(n) => {
                total += n;
                if (n as usize) < iov.len() {
                    break;
                }
            }
            Err(e) if i == 0 || total == 0 => return Err(e),
            Err(_) => break,
        }
        // A pipe or console read that returned data should not block for more.
        if !matches!(f.kind, FileKind::Regular(_)) {
            break;
        }
    }
    Ok(total)
}

pub fn writev(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let mut total = 0;
    for iov in iovecs(a.get(1), a.int(2))? {
        match write_file(&f, iov, None) {
            Ok(n) => {
                total += n;
                if (n as usize) < iov.len() {
                    break;
                }
            }
            Err(e) if total == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(total)
}

pub fn open(a: Args) -> SysResult {
    open_at(AT_FDCWD, a.get(0), a.get(1) as u32, a.get(2) as u32)
}

pub fn openat(a: Args) -> SysResult {
    open_at(a.int(0), a.get(1), a.get(2) as u32, a.get(3) as u32)
}

/// Checks that `dirfd` can be the base of a relative path (`/` or `/tmp`).
fn check_dirfd(dirfd: i64, path: &str) -> Result<(), Errno> {
    at_path(dirfd, path).map(drop)
}

/// `path` as seen from `dirfd` (Linux `path_init`): absolute paths and `AT_FDCWD` (every
/// process works in `/`) as they are; relative ones below a directory descriptor's path.
fn at_path(dirfd: i64, path: &str) -> Result<String, Errno> {
    if dirfd == AT_FDCWD || path.starts_with('/') {
        return Ok(String::from(path));
    }
    match file(dirfd)?.kind {
        FileKind::Root => Ok(String::from(path)),
        FileKind::TmpDir => Ok(alloc::format!("/tmp/{path}")),
        _ => Err(Errno::ENOTDIR),
    }
}

fn open_at(dirfd: i64, path: u64, flags: u32, mode: u32) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let path = at_path(dirfd, &path)?;
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    let file = fs::open_mode(&path, flags, mode)?;
    let fd = Fd {
        file,
        cloexec: flags & fs::O_CLOEXEC != 0,
    };
    // A failed install hands the descriptor back: drop it outside the table lock.
    let installed = with_current(|p| p.fds.install(fd.clone()));
    drop(fd);
    Ok(installed? as u64)
}

pub fn close(a: Args) -> SysResult {
    let closed = with_current(|p| p.fds.close(a.int(0)))?;
    drop(closed);
    Ok(0)
}

pub fn lseek(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    if let FileKind::Vda = f.kind {
        return fs::vda::lseek(&f, a.int(1), a.get(2));
    }
    let size = match &f.kind {
        FileKind::Regular(r) => r.data.len() as i64,
        FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) => obj.size() as i64,
        FileKind::Root | FileKind::TmpDir | FileKind::Null | FileKind::Proc(_) => 0,
        _ => return Err(Errno::ESPIPE),
    };
    let base = match a.get(2) {
        0 => 0,
        1 => f.offset.load(Ordering::Relaxed) as i64,
        2 => size,
        _ => return Err(Errno::EINVAL),
    };
    let new = base.checked_add(a.int(1)).ok_or(Errno::EINVAL)?;
    if new < 0 {
        return Err(Errno::EINVAL);
    }
    f.offset.store(new as u64, Ordering::Relaxed);
    Ok(new as u64)
}

pub fn fstat(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    UserPtr::<fs::Stat>::new(a.get(1))?.write(&fs::stat(&f))?;
    Ok(0)
}

/// stat/lstat(path, buf).
pub fn stat(a: Args, _follow: bool) -> SysResult {
    stat_at(AT_FDCWD, a.get(0), a.get(1), 0)
}

pub fn newfstatat(a: Args) -> SysResult {
    stat_at(a.int(0), a.get(1), a.get(2), a.get(3))
}

fn stat_at(dirfd: i64, path: u64, buf: u64, flags: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    let out = UserPtr::<fs::Stat>::new(buf)?;
    let f = if path.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::ENOENT);
        }
        if dirfd == AT_FDCWD {
            fs::open("/", 0)?
        } else {
            file(dirfd)?
        }
    } else {
        fs::open(&at_path(dirfd, &path)?, 0)?
    };
    out.write(&fs::stat(&f))?;
    Ok(0)
}

/// statfs(path, buf) (Linux 137): the file system of `path` (see `fs::statfs`).
pub fn statfs(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    let out = UserPtr::<fs::StatFs>::new(a.get(1))?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let f = fs::open(&path, 0)?;
    out.write(&fs::statfs(&f))?;
    Ok(0)
}

/// fstatfs(fd, buf) (Linux 138).
pub fn fstatfs(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    UserPtr::<fs::StatFs>::new(a.get(1))?.write(&fs::statfs(&f))?;
    Ok(0)
}

const AT_REMOVEDIR: u64 = 0x200;

/// unlink(path) (87).
pub fn unlink(a: Args) -> SysResult {
    unlink_at(AT_FDCWD, a.get(0), 0)
}

/// unlinkat(dirfd, path, flags) (263); `AT_REMOVEDIR` is rmdir.
pub fn unlinkat(a: Args) -> SysResult {
    unlink_at(a.int(0), a.get(1), a.get(2))
}

/// rmdir(path) (84).
pub fn rmdir(a: Args) -> SysResult {
    unlink_at(AT_FDCWD, a.get(0), AT_REMOVEDIR)
}

/// Only tmpfs files can be removed: `/tmp` itself is a mount point (`EBUSY` for rmdir,
/// `EISDIR` for unlink), the ramdisk is read-only (`EROFS`), and the device, proc and debugfs
/// files cannot be removed (`EPERM`).
fn unlink_at(dirfd: i64, path: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(Errno::EINVAL);
    }
    let rmdir = flags & AT_REMOVEDIR != 0;
    let path = read_cstr(path, PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let path = at_path(dirfd, &path)?;
    if fs::name_too_long(&path) {
        return Err(Errno::ENAMETOOLONG);
    }
    match fs::tmpfs::parse(&path) {
        Some(Err(e)) => Err(e),
        Some(Ok(fs::tmpfs::TmpPath::Dir)) if rmdir => Err(Errno::EBUSY),
        Some(Ok(fs::tmpfs::TmpPath::Dir)) => Err(Errno::EISDIR),
        Some(Ok(fs::tmpfs::TmpPath::Name {
            name,
            trailing_slash,
        })) => {
            if !fs::tmpfs::exists(&name) {
                return Err(Errno::ENOENT);
            }
            if rmdir || trailing_slash {
                return Err(Errno::ENOTDIR);
            }
            fs::tmpfs::unlink(&name)?;
            Ok(0)
        }
        None => match fs::open(&path, 0)?.kind {
            FileKind::Root if rmdir => Err(Errno::EBUSY),
            FileKind::Root => Err(Errno::EISDIR),
            _ if rmdir => Err(Errno::ENOTDIR),
            FileKind::Regular(_) => Err(Errno::EROFS),
            _ => Err(Errno::EPERM),
        },
    }
}

const AT_SYMLINK_FOLLOW: u64 = 0x400;

/// link(old, new) (86).
pub fn link(a: Args) -> SysResult {
    link_at(AT_FDCWD, a.get(0), AT_FDCWD, a.get(1), 0)
}

/// linkat(olddirfd, old, newdirfd, new, flags) (265). With `AT_EMPTY_PATH` and an empty `old`
/// it names the open file `olddirfd` (how an `O_TMPFILE` file gets a name).
pub fn linkat(a: Args) -> SysResult {
    link_at(a.int(0), a.get(1), a.int(2), a.get(3), a.get(4))
}

/// Hard links within `/tmp`; `EXDEV` between `/tmp` and elsewhere, `EROFS` on the ramdisk,
/// `EPERM` for a directory.
fn link_at(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
    use fs::tmpfs::{parse, TmpPath};
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let old = read_cstr(old, PATH_MAX)?;
    let new = read_cstr(new, PATH_MAX)?;
    if new.is_empty() {
        return Err(Errno::ENOENT);
    }
    let new = at_path(newdir, &new)?;
    if fs::name_too_long(&new) || fs::name_too_long(&old) {
        return Err(Errno::ENAMETOOLONG);
    }
    // What `old` names: an open file (AT_EMPTY_PATH) or a path.
    let source = if old.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(Errno::ENOENT);
        }
        if olddir == AT_FDCWD {
            fs::open("/", 0)?
        } else {
            file(olddir)?
        }
    } else {
        fs::open(&at_path(olddir, &old)?, 0)?
    };
    let target = match parse(&new) {
        Some(Err(e)) => return Err(e),
        Some(Ok(TmpPath::Dir)) => return Err(Errno::EEXIST),
        Some(Ok(TmpPath::Name {
            name,
            trailing_slash,
        })) => {
            if fs::tmpfs::exists(&name) {
                return Err(Errno::EEXIST);
            }
            if trailing_slash {
                return Err(Errno::ENOENT);
            }
            Some(name)
        }
        None => None,
    };
    match (&source.kind, target) {
        (FileKind::Root | FileKind::TmpDir, _) => Err(Errno::EPERM),
        (FileKind::Tmpfs(obj, inode), Some(name)) => {
            fs::tmpfs::link_open(obj, inode, &name)?;
            Ok(0)
        }
        (FileKind::Tmpfs(..), None) | (_, Some(_)) => Err(Errno::EXDEV),
        (FileKind::Regular(_), None) => Err(Errno::EROFS),
        (_, None) => Err(Errno::EPERM),
    }
}

const RENAME_NOREPLACE: u64 = 1;

/// rename(old, new) (82).
pub fn rename(a: Args) -> SysResult {
    rename_at(AT_FDCWD, a.get(0), AT_FDCWD, a.get(1), 0)
}

/// renameat(olddirfd, old, newdirfd, new) (264).
pub fn renameat(a: Args) -> SysResult {
    rename_at(a.int(0), a.get(1), a.int(2), a.get(3), 0)
}

/// renameat2(olddirfd, old, newdirfd, new, flags) (316): `RENAME_NOREPLACE` only
/// (`RENAME_EXCHANGE` and `RENAME_WHITEOUT` answer `EINVAL`).
pub fn renameat2(a: Args) -> SysResult {
    rename_at(a.int(0), a.get(1), a.int(2), a.get(3), a.get(4))
}

/// Renames within `/tmp`; `EXDEV` between `/tmp` and elsewhere, `EROFS`/`EPERM` elsewhere.
fn rename_at(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(Errno::EINVAL);
    }
    let old = read_cstr(old, PATH_MAX)?;
    let new = read_cstr(new, PATH_MAX)?;
    if old.is_empty() || new.is_empty() {
        return Err(Errno::ENOENT);
    }
    let (old, new) = (at_path(olddir, &old)?, at_path(newdir, &new)?);
    if fs::name_too_long(&old) || fs::name_too_long(&new) {
        return Err(Errno::ENAMETOOLONG);
    }
    use fs::tmpfs::{parse, TmpPath};
    match (parse(&old), parse(&new)) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
        (Some(Ok(TmpPath::Name { name: o, .. })), Some(Ok(TmpPath::Name { name: n, .. }))) => {
            fs::tmpfs::rename(&o, &n, flags & RENAME_NOREPLACE != 0)?;
            Ok(0)
        }
        (Some(Ok(TmpPath::Dir)), _) => Err(Errno::EBUSY),
        (Some(Ok(TmpPath::Name { name, .. })), _) if !fs::tmpfs::exists(&name) => {
            Err(Errno::ENOENT)
        }
        (Some(Ok(_)), None) | (None, Some(Ok(_))) => {
            fs::open(&old, 0)?;
            Err(Errno::EXDEV)
        }
        (Some(Ok(TmpPath::Name { .. })), Some(Ok(TmpPath::Dir))) => Err(Errno::EISDIR),
        (None, None) => {
            fs::open(&old, 0)?;
            Err(Errno::EROFS)
        }
    }
}

pub fn access(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    let f = fs::open(&path, 0)?;
    if a.get(1) & 2 != 0 && matches!(f.kind, FileKind::Regular(_) | FileKind::Root) {
        return Err(Errno::EROFS);
    }
    Ok(0)
}

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TIOCGWINSZ: u64 = 0x5413;

/// The kernel's `struct termios` (36 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Winsize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

pub fn ioctl(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    if let FileKind::GupTest(gup) = &f.kind {
        return gup.ioctl(a.get(1) & 0xffff_ffff, a.get(2));
    }
    if let FileKind::Vda = f.kind {
        return fs::vda::ioctl(a.get(1) & 0xffff_ffff, a.get(2));
    }
    #[cfg(feature = "kcov")]
    if let FileKind::Kcov(kcov) = &f.kind {
        return kcov.ioctl(a.get(1) & 0xffff_ffff, a.get(2));
    }
    if !matches!(f.kind, FileKind::Console) {
        return Err(Errno::ENOTTY);
    }
    match a.get(1) {
        TCGETS => {
            let t = Termios {
                iflag: 0o2400,   // ICRNL | IXON
                oflag: 0o5,      // OPOST | ONLCR
                cflag: 0o277,    // B38400 | CS8 | CREAD
                lflag: 0o105073, // ISIG | ICANON | ECHO...
                ..Termios::default()
            };
            UserPtr::<Termios>::new(a.get(2))?.write(&t)?;
            Ok(0)
        }
        TCSETS | 0x5403 | 0x5404 => Ok(0),
        TIOCGWINSZ => {
            let w = Winsize {
                rows: 24,
                cols: 80,
                ..Winsize::default()
            };
            UserPtr::<Winsize>::new(a.get(2))?.write(&w)?;
            Ok(0)
        }
        _ => Err(Errno::ENOTTY),
    }
}

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const FD_CLOEXEC: u64 = 1;

pub fn fcntl(a: Args) -> SysResult {
    let fd = a.int(0);
    let arg = a.get(2);
    with_current(|p| match a.get(1) {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let file = p.fds.get(fd)?;
            if arg as usize >= fs::MAX_FDS {
                return Err(Errno::EINVAL);
            }
            let cloexec = a.get(1) == F_DUPFD_CLOEXEC;
            Ok(p.fds.install_from(arg as usize, Fd { file, cloexec })? as u64)
        }
        F_GETFD => Ok(if p.fds.slot(fd)?.cloexec {
            FD_CLOEXEC
        } else {
            0
        }),
        F_SETFD => {
            p.fds.slot_mut(fd)?.cloexec = arg & FD_CLOEXEC != 0;
            Ok(0)
        }
        F_GETFL => Ok(u64::from(p.fds.get(fd)?.flags.load(Ordering::Relaxed))),
        F_SETFL => {
            let file = p.fds.get(fd)?;
            let settable = fs::O_APPEND | fs::O_NONBLOCK | fs::vda::O_DIRECT;
            let old = file.flags.load(Ordering::Relaxed);
            file.flags.store(
                (old & !settable) | (arg as u32 & settable),
                Ordering::Relaxed,
            );
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    })
}

pub fn dup(a: Args) -> SysResult {
    with_current(|p| {
        let file = p.fds.get(a.int(0))?;
        Ok(p.fds.install(Fd {
            file,
            cloexec: false,
        })? as u64)
    })
}

fn dup_to(old: i64, new: i64, cloexec: bool) -> SysResult {
    if !(0..fs::MAX_FDS as i64).contains(&new) {
        return Err(Errno::EBADF);
    }
    let replaced = with_current(|p| {
        let file = p.fds.get(old)?;
        Ok::<_, Errno>(p.fds.set(new as usize, Fd { file, cloexec }))
    })?;
    drop(replaced);
    Ok(new as u64)
}

pub fn dup2(a: Args) -> SysResult {
    if a.int(0) == a.int(1) {
        file(a.int(0))?;
        return Ok(a.get(1));
    }
    dup_to(a.int(0), a.int(1), false)
}

pub fn dup3(a: Args) -> SysResult {
    let flags = a.get(2) as u32;
    if a.int(0) == a.int(1) || flags & !fs::O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    dup_to(a.int(0), a.int(1), flags & fs::O_CLOEXEC != 0)
}

pub fn pipe2(fds: u64, flags: u32) -> SysResult {
    if flags & !(fs::O_CLOEXEC | fs::O_NONBLOCK) != 0 {
        return Err(Errno::EINVAL);
    }
    let out = UserPtr::<[i32; 2]>::new(fds)?;
    if !with_current(|p| p.fds.has_room_for(2)) {
        return Err(Errno::EMFILE);
    }
    let pipe = Arc::new(Pipe::new()?);
    let cloexec = flags & fs::O_CLOEXEC != 0;
    let status = flags & fs::O_NONBLOCK;
    let reader = OpenFile::new(FileKind::PipeRead(pipe.clone()), status);
    let writer = OpenFile::new(FileKind::PipeWrite(pipe), fs::O_WRONLY | status);
    // A failed second install closes the first descriptor: drop it after the table lock is
    // released (closing a pipe end wakes sleepers, which takes that lock).
    let installed = with_current(|p| {
        let r = p.fds.install(Fd {
            file: reader,
            cloexec,
        })?;
        match p.fds.install(Fd {
            file: writer,
            cloexec,
        }) {
            Ok(w) => Ok::<_, Errno>(Ok((r, w))),
            Err(e) => Ok(Err((e, p.fds.close(r as i64)))),
        }
    })?;
    let (r, w) = match installed {
        Ok(fds) => fds,
        Err((e, closed)) => {
            drop(closed);
            return Err(e);
        }
    };
    if let Err(e) = out.write(&[r as i32, w as i32]) {
        let closed = with_current(|p| (p.fds.close(r as i64), p.fds.close(w as i64)));
        drop(closed);
        return Err(e);
    }
    Ok(0)
}

pub fn getcwd(a: Args) -> SysResult {
    let buf = UserSlice::new(a.get(0), a.get(1) as usize)?;
    if buf.len() < 2 {
        return Err(Errno::ERANGE);
    }
    buf.write(b"/\0")?;
    Ok(2)
}

pub fn chdir(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    match fs::open(&path, 0)?.kind {
        FileKind::Root => Ok(0),
        _ => Err(Errno::ENOTDIR),
    }
}

pub fn mkdir(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if let Some(Ok(fs::tmpfs::TmpPath::Name { name, .. })) = fs::tmpfs::parse(&path) {
        // tmpfs here has no subdirectories (Linux: EPERM when the file system has no mkdir).
        return Err(if fs::tmpfs::exists(&name) {
            Errno::EEXIST
        } else {
            Errno::EPERM
        });
    }
    match fs::open(&path, 0) {
        Ok(_) => Err(Errno::EEXIST),
        Err(Errno::ENOENT) if !path.trim_start_matches('/').contains('/') => Err(Errno::EROFS),
        Err(e) => Err(e),
    }
}

fn readlink_path(dirfd: i64, path: u64, buf: u64, size: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    check_dirfd(dirfd, &path)?;
    UserSlice::new(buf, size as usize)?;
    if size == 0 {
        return Err(Errno::EINVAL);
    }
    // No symbolic links: an existing file is "not a link".
    fs::open(&path, 0)?;
    Err(Errno::EINVAL)
}

pub fn readlink(a: Args) -> SysResult {
    readlink_path(AT_FDCWD, a.get(0), a.get(1), a.get(2))
}

pub fn readlinkat(a: Args) -> SysResult {
    readlink_path(a.int(0), a.get(1), a.get(2), a.get(3))
}

/// getdents64 on `/` (`.`, `..`, `tmp`, then the ramdisk's files) or `/tmp` (`.`, `..`, then
/// its files in name order). The open file's offset counts entries already returned.
pub fn getdents64(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let names = fs::dir_entries(&f)?;
    let out = UserSlice::new(a.get(1), a.get(2) as usize)?;
    let start = f.offset.load(Ordering::Relaxed) as usize;
    let mut buf = Vec::new();
    let mut next = start;
    for (i, (name, ino, kind)) in names.iter().enumerate().skip(start) {
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if buf.len() + reclen > out.len() {
            break;
        }
        let at = buf.len();
        buf.resize(at + reclen, 0);
        buf[at..at + 8].copy_from_slice(&ino.to_le_bytes());
        buf[at + 8..at + 16].copy_from_slice(&(i as i64 + 1).to_le_bytes());
        buf[at + 16..at + 18].copy_from_slice(&(reclen as u16).to_le_bytes());
        buf[at + 18] = *kind;
        buf[at + 19..at + 19 + name.len()].copy_from_slice(name.as_bytes());
        next = i + 1;
    }
    if buf.is_empty() && next < names.len() {
        return Err(Errno::EINVAL);
    }
    out.write(&buf)?;
    f.offset.store(next as u64, Ordering::Relaxed);
    Ok(buf.len() as u64)
}

const MFD_CLOEXEC: u32 = 1;
const MFD_ALLOW_SEALING: u32 = 2;
/// Linux's limit on a memfd name (`MFD_NAME_MAX_LEN`), without the "memfd:" prefix.
const MFD_NAME_MAX: usize = 249;

/// memfd_create(name, flags): an anonymous shmem file of size 0, open read-write.
pub fn memfd_create(a: Args) -> SysResult {
    let flags = a.get(1) as u32;
    if flags & !(MFD_CLOEXEC | MFD_ALLOW_SEALING) != 0 {
        return Err(Errno::EINVAL);
    }
    let name = read_cstr(a.get(0), PATH_MAX)?;
    if name.len() > MFD_NAME_MAX {
        return Err(Errno::EINVAL);
    }
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    let obj = cowlab_mm::shmem::ShmemObject::new();
    // What /proc/<pid>/maps prints for its mappings, as Linux (`memfd:` dentries, unlinked).
    obj.set_maps_name(&alloc::format!("/memfd:{name} (deleted)"));
    let file = OpenFile::new(FileKind::Memfd(obj), fs::O_RDWR);
    let fd = Fd {
        file,
        cloexec: flags & MFD_CLOEXEC != 0,
    };
    // A failed install hands the descriptor back: drop it outside the table lock.
    let installed = with_current(|p| p.fds.install(fd.clone()));
    drop(fd);
    Ok(installed? as u64)
}

/// ftruncate(fd, length): memfds and tmpfs files (the ramdisk is read-only).
pub fn ftruncate(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    if a.int(1) < 0 {
        return Err(Errno::EINVAL);
    }
    match &f.kind {
        FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) if f.writable() => {
            obj.set_size(crate::memory::mm(), a.get(1))?;
            if let FileKind::Tmpfs(_, inode) = &f.kind {
                inode.touch_modified();
            }
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// fallocate(fd, mode, offset, len): mode 0 on memfds and tmpfs files.
pub fn fallocate(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let (mode, offset, len) = (a.i32(1), a.int(2), a.int(3));
    if offset < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    if !f.writable() {
        return Err(Errno::EBADF);
    }
    match &f.kind {
        FileKind::PipeRead(_) | FileKind::PipeWrite(_) => Err(Errno::ESPIPE),
        FileKind::Memfd(_) | FileKind::Tmpfs(..) if mode != 0 => Err(Errno::EOPNOTSUPP),
        FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) => {
            if offset.checked_add(len).is_none() {
                return Err(Errno::EFBIG);
            }
            obj.fallocate(crate::memory::mm(), offset as u64, len as u64)?;
            if let FileKind::Tmpfs(_, inode) = &f.kind {
                inode.touch_modified();
            }
            Ok(0)
        }
        _ => Err(Errno::ENODEV),
    }
}

const SPLICE_F_NONBLOCK: u64 = 2;
/// SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT.
const SPLICE_F_ALL: u64 = 15;
/// Pages taken per GUP call and queued per pipe lock by `vmsplice`.
const VMSPLICE_BATCH: usize = 16;

/// vmsplice(fd, iov, nr_segs, flags) into a pipe's write end: plain page references
/// (`get_user_pages`, `FOLL_GET`) queued in the pipe, held until the data is read. On the read
/// end it copies pipe data out to the iovecs, as Linux's `vmsplice_to_user`.
pub fn vmsplice(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let flags = a.get(3);
    if flags & !SPLICE_F_ALL != 0 {
        return Err(Errno::EINVAL);
    }
    let iovs = iovecs(a.get(1), a.int(2))?;
    let nonblock = flags & SPLICE_F_NONBLOCK != 0 || nonblock(&f);
    let pipe = match &f.kind {
        FileKind::PipeWrite(pipe) => pipe.clone(),
        FileKind::PipeRead(_) => {
            let mut total = 0;
            for iov in iovs {
                if iov.len() == 0 {
                    continue;
                }
                match read_file(&f, iov, None) {
                    Ok(n) => {
                        total += n;
                        break;
                    }
                    Err(e) if total == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            return Ok(total);
        }
        _ => return Err(Errno::EBADF),
    };
    let mm = crate::memory::mm();
    let aspace = crate::proc::current_aspace();
    let mut total: u64 = 0;
    for iov in iovs {
        let end = iov.addr() + iov.len() as u64;
        let mut va = iov.addr();
        while va < end {
            // Up to VMSPLICE_BATCH pages per GUP call and per pipe lock (Linux `iter_to_pipe`
            // takes 16 pages per `iov_iter_get_pages2`, through GUP-fast).
            let first = va & !0xfff;
            let nr = ((end - first).div_ceil(4096) as usize).min(VMSPLICE_BATCH);
            let mut pages: [Option<PinnedPage>; VMSPLICE_BATCH] = Default::default();
            let got = cowlab_mm::gup::get_user_pages_fast(
                mm,
                &mut aspace.lock(),
                cowlab_mm::VirtAddr::new(first),
                cowlab_mm::foll::FollFlags::NONE,
                &mut pages[..nr],
            )
            .unwrap_or(0);
            if got == 0 {
                return if total > 0 {
                    Ok(total)
                } else {
                    Err(Errno::EFAULT)
                };
            }
            let off = (va & 0xfff) as usize;
            let len = ((first + got as u64 * 4096).min(end) - va) as usize;
            let pushed = pipe.push_pages(nonblock, &mut pages[..got], off, len);
            cowlab_mm::gup::unpin_user_pages(mm, &mut pages[..got]);
            match pushed {
                Ok(n) => {
                    total += n as u64;
                    va += n as u64;
                    if n < len {
                        return Ok(total);
                    }
                }
                Err(e) => return if total > 0 { Ok(total) } else { Err(e) },
            }
            if got < nr {
                // GUP stopped early (an unmapped or inaccessible page): a short count.
                return Ok(total);
            }
        }
    }
    Ok(total)
}
