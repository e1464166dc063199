//! File system calls: argument decoding in front of `fs` (descriptors resolved, user strings
//! and pointers read, user buffers turned into `fs::iter::IoIter`s), then one call down.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use cowlab_mm::opstat::{self, Op, Phase};

use super::{Args, Errno, SysResult};
use crate::fs::iter::IoIter;
use crate::fs::{self, namei, rw, Fd, OpenFile};
use crate::proc::with_current;
use crate::uaccess::{read_cstr, UserPtr, UserSlice};

const AT_FDCWD: i64 = -100;
const AT_EMPTY_PATH: u64 = 0x1000;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const PATH_MAX: usize = 4096;

/// The descriptor's file for an operation on its contents (Linux `fdget`): an `O_PATH`
/// descriptor only names a file, `EBADF`.
fn file(fd: i64) -> Result<Arc<OpenFile>, Errno> {
    let f = file_raw(fd)?;
    if f.is_path() {
        return Err(Errno::EBADF);
    }
    Ok(f)
}

/// The descriptor's file for the calls an `O_PATH` descriptor allows (Linux `fdget_raw`):
/// fstat, fstatfs, fchdir, a `*at` directory and `AT_EMPTY_PATH`.
fn file_raw(fd: i64) -> Result<Arc<OpenFile>, Errno> {
    with_current(|p| p.fds.get(fd))
}

/// An explicit file offset argument: `EINVAL` if negative.
fn offset(v: i64) -> Result<u64, Errno> {
    u64::try_from(v).map_err(|_| Errno::EINVAL)
}

fn done(n: usize) -> SysResult {
    Ok(n as u64)
}

/// fsync(fd) (74) and fdatasync(fd) (75).
pub fn fsync(a: Args) -> SysResult {
    rw::vfs_fsync(&*file(a.int(0))?)
}

pub fn read(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    done(rw::vfs_read(
        &f,
        None,
        &mut IoIter::user(a.get(1), a.get(2) as usize)?,
    )?)
}

pub fn write(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    done(rw::vfs_write(
        &f,
        None,
        &mut IoIter::user(a.get(1), a.get(2) as usize)?,
    )?)
}

/// pread64(fd, buf, count, offset) (17). Measured per phase by a `faultstat` kernel
/// (`opstat`'s `file_read`, `cargo xtask bench --breakdown`): nothing in any other build.
pub fn pread64(a: Args) -> SysResult {
    opstat::begin(Op::FileRead);
    let r = (|| {
        let f = file(a.int(0))?;
        opstat::mark(Phase::FileFd);
        let at = offset(a.int(3))?;
        let mut iter = IoIter::user(a.get(1), a.get(2) as usize)?;
        done(rw::vfs_read(&f, Some(at), &mut iter)?)
    })();
    opstat::end(Op::FileRead, Phase::FileLeave, u64::from(r.is_ok()));
    r
}

/// pwrite64(fd, buf, count, offset) (18), measured as [`pread64`] (`file_write`).
pub fn pwrite64(a: Args) -> SysResult {
    opstat::begin(Op::FileWrite);
    let r = (|| {
        let f = file(a.int(0))?;
        opstat::mark(Phase::FileFd);
        let at = offset(a.int(3))?;
        let mut iter = IoIter::user(a.get(1), a.get(2) as usize)?;
        done(rw::vfs_write(&f, Some(at), &mut iter)?)
    })();
    opstat::end(Op::FileWrite, Phase::FileLeave, u64::from(r.is_ok()));
    r
}

pub fn readv(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    done(rw::vfs_read(
        &f,
        None,
        &mut IoIter::iovec(a.get(1), a.int(2))?,
    )?)
}

pub fn writev(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    done(rw::vfs_write(
        &f,
        None,
        &mut IoIter::iovec(a.get(1), a.int(2))?,
    )?)
}

/// `RWF_HIPRI | RWF_DSYNC | RWF_SYNC`: accepted by `preadv2`/`pwritev2` (polling means nothing
/// here; memory-backed files and the block device are as synchronous as those ask).
const RWF_ACCEPTED: u64 = 1 | 2 | 4;

/// preadv(fd, iov, iovcnt, pos_l, pos_h) (295) and preadv2(..., flags) (327): on x86_64 the
/// position is `pos_l`; for preadv2 an offset of -1 is the file's own position. Flags other
/// than `RWF_HIPRI|RWF_DSYNC|RWF_SYNC` answer `EOPNOTSUPP`.
pub fn preadv(a: Args, v2: bool) -> SysResult {
    let f = file(a.int(0))?;
    let at = vector_position(a, v2)?;
    done(rw::vfs_read(
        &f,
        at,
        &mut IoIter::iovec(a.get(1), a.int(2))?,
    )?)
}

/// pwritev (296) and pwritev2 (328), as [`preadv`].
pub fn pwritev(a: Args, v2: bool) -> SysResult {
    let f = file(a.int(0))?;
    let at = vector_position(a, v2)?;
    done(rw::vfs_write(
        &f,
        at,
        &mut IoIter::iovec(a.get(1), a.int(2))?,
    )?)
}

fn vector_position(a: Args, v2: bool) -> Result<Option<u64>, Errno> {
    if v2 && a.get(5) & !RWF_ACCEPTED != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    match a.int(3) {
        -1 if v2 => Ok(None),
        pos => offset(pos).map(Some),
    }
}

pub fn open(a: Args) -> SysResult {
    open_at(AT_FDCWD, a.get(0), a.get(1) as u32, a.get(2) as u32)
}

pub fn openat(a: Args) -> SysResult {
    open_at(a.int(0), a.get(1), a.get(2) as u32, a.get(3) as u32)
}

/// `path` as seen from `dirfd` (`AT_FDCWD` or a directory descriptor; see `namei::at_path`).
fn at_path(dirfd: i64, path: &str) -> Result<alloc::string::String, Errno> {
    if dirfd == AT_FDCWD || path.starts_with('/') {
        return namei::at_path(None, path);
    }
    namei::at_path(Some(&*file_raw(dirfd)?), path)
}

/// Installs `file` at the lowest free descriptor.
fn install(file: Arc<OpenFile>, cloexec: bool) -> SysResult {
    let fd = Fd { file, cloexec };
    // A failed install hands the descriptor back: drop it outside the table lock.
    let installed = with_current(|p| p.fds.install(fd.clone()));
    drop(fd);
    Ok(installed? as u64)
}

/// An `open(O_CREAT|O_EXCL)` starts a `file_create_unlink` record in a `faultstat` kernel
/// (`opstat`, `cargo xtask bench --breakdown`; closed by `unlink`): nothing in any other build.
fn open_at(dirfd: i64, path: u64, flags: u32, mode: u32) -> SysResult {
    if flags & (fs::O_CREAT | fs::tmpfs::O_EXCL) == fs::O_CREAT | fs::tmpfs::O_EXCL {
        opstat::begin(Op::FileCreateUnlink);
    }
    let path = read_cstr(path, PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let path = at_path(dirfd, &path)?;
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    opstat::mark(Phase::CuPath);
    let file = fs::open_mode(&path, flags, mode)?;
    opstat::mark(Phase::CuOpen);
    let r = install(file, flags & fs::O_CLOEXEC != 0);
    opstat::mark(Phase::CuInstall);
    r
}

pub fn close(a: Args) -> SysResult {
    opstat::mark(Phase::CuBetween);
    let closed = with_current(|p| p.fds.close(a.int(0)))?;
    drop(closed);
    opstat::mark(Phase::CuClose);
    Ok(0)
}

pub fn lseek(a: Args) -> SysResult {
    rw::lseek(&*file(a.int(0))?, a.int(1), a.get(2))
}

pub fn fstat(a: Args) -> SysResult {
    let f = file_raw(a.int(0))?;
    UserPtr::<fs::Stat>::new(a.get(1))?.write(&fs::stat(&f))?;
    Ok(0)
}

/// stat/lstat(path, buf).
/// stat (4) and lstat (6, `nofollow`: a symbolic link itself).
pub fn stat(a: Args, nofollow: bool) -> SysResult {
    let flags = if nofollow { AT_SYMLINK_NOFOLLOW } else { 0 };
    stat_at(AT_FDCWD, a.get(0), a.get(1), flags)
}

pub fn newfstatat(a: Args) -> SysResult {
    stat_at(a.int(0), a.get(1), a.get(2), a.get(3))
}

/// The file `path` names from `dirfd`, or with `AT_EMPTY_PATH` and an empty path the
/// descriptor's own file.
fn resolve(dirfd: i64, path: &str, flags: u64) -> Result<Arc<OpenFile>, Errno> {
    if !path.is_empty() {
        // lstat: an `O_PATH|O_NOFOLLOW` open, which gives a symbolic link itself.
        let open_flags = if flags & AT_SYMLINK_NOFOLLOW != 0 {
            fs::O_PATH | fs::O_NOFOLLOW
        } else {
            0
        };
        return fs::open(&at_path(dirfd, path)?, open_flags);
    }
    if flags & AT_EMPTY_PATH == 0 {
        return Err(Errno::ENOENT);
    }
    if dirfd == AT_FDCWD {
        fs::open(&namei::cwd(), 0)
    } else {
        file_raw(dirfd)
    }
}

fn stat_at(dirfd: i64, path: u64, buf: u64, flags: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    let out = UserPtr::<fs::Stat>::new(buf)?;
    let f = resolve(dirfd, &path, flags)?;
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
    let f = fs::open(&at_path(AT_FDCWD, &path)?, 0)?;
    out.write(&fs::statfs(&f))?;
    Ok(0)
}

/// fstatfs(fd, buf) (Linux 138).
pub fn fstatfs(a: Args) -> SysResult {
    let f = file_raw(a.int(0))?;
    UserPtr::<fs::StatFs>::new(a.get(1))?.write(&fs::statfs(&f))?;
    Ok(0)
}

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
    unlink_at(AT_FDCWD, a.get(0), namei::AT_REMOVEDIR)
}

/// Ends a `file_create_unlink` record (`open_at`) in a `faultstat` kernel.
fn unlink_at(dirfd: i64, path: u64, flags: u64) -> SysResult {
    opstat::mark(Phase::CuBetween);
    let r = (|| {
        if flags & !namei::AT_REMOVEDIR != 0 {
            return Err(Errno::EINVAL);
        }
        let path = read_cstr(path, PATH_MAX)?;
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        let path = at_path(dirfd, &path)?;
        namei::unlink(&path, flags & namei::AT_REMOVEDIR != 0)?;
        Ok(0)
    })();
    opstat::end(Op::FileCreateUnlink, Phase::FileLeave, u64::from(r.is_ok()));
    r
}

/// link(old, new) (86).
pub fn link(a: Args) -> SysResult {
    link_at(AT_FDCWD, a.get(0), AT_FDCWD, a.get(1), 0)
}

/// linkat(olddirfd, old, newdirfd, new, flags) (265). With `AT_EMPTY_PATH` and an empty `old`
/// it names the open file `olddirfd` (how an `O_TMPFILE` file gets a name).
pub fn linkat(a: Args) -> SysResult {
    link_at(a.int(0), a.get(1), a.int(2), a.get(3), a.get(4))
}

fn link_at(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
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
    let source = resolve(olddir, &old, flags)?;
    namei::link(&source, &new)?;
    Ok(0)
}

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

fn rename_at(olddir: i64, old: u64, newdir: i64, new: u64, flags: u64) -> SysResult {
    if flags & !namei::RENAME_NOREPLACE != 0 {
        return Err(Errno::EINVAL);
    }
    let old = read_cstr(old, PATH_MAX)?;
    let new = read_cstr(new, PATH_MAX)?;
    if old.is_empty() || new.is_empty() {
        return Err(Errno::ENOENT);
    }
    let (old, new) = (at_path(olddir, &old)?, at_path(newdir, &new)?);
    namei::rename(&old, &new, flags)?;
    Ok(0)
}

pub fn access(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    namei::access(&at_path(AT_FDCWD, &path)?, a.get(1), false)?;
    Ok(0)
}

const AT_EACCESS: u64 = 0x200;

/// faccessat(dirfd, path, mode) (269) and faccessat2(dirfd, path, mode, flags) (439, which
/// alone takes `AT_EACCESS`, `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`: `EINVAL` for others).
pub fn faccessat(a: Args, with_flags: bool) -> SysResult {
    let flags = if with_flags { a.get(3) } else { 0 };
    if flags & !(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    let path = read_cstr(a.get(1), PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    namei::access(
        &at_path(a.int(0), &path)?,
        a.get(2),
        flags & AT_EACCESS != 0,
    )?;
    Ok(0)
}

pub fn ioctl(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    f.ops.ioctl(&f, a.get(1), a.get(2))
}

const F_DUPFD: u64 = 0;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const F_ADD_SEALS: u64 = 1033;
const F_GET_SEALS: u64 = 1034;
const FD_CLOEXEC: u64 = 1;

pub fn fcntl(a: Args) -> SysResult {
    let fd = a.int(0);
    let arg = a.get(2);
    with_current(|p| match a.get(1) {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let file = p.fds.get(fd)?;
            if arg as usize >= fs::max_fds() {
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
        F_ADD_SEALS | F_GET_SEALS => {
            fs::memfd::fcntl_seals(&*p.fds.get(fd)?, a.get(1) == F_ADD_SEALS, arg)
        }
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
    if !(0..fs::max_fds() as i64).contains(&new) {
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
        file_raw(a.int(0))?;
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
    let (reader, writer) = fs::pipe::open_pair(flags & fs::O_NONBLOCK)?;
    let cloexec = flags & fs::O_CLOEXEC != 0;
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
    done(namei::getcwd(&buf)?)
}

pub fn chdir(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    namei::chdir(&at_path(AT_FDCWD, &path)?)?;
    Ok(0)
}

/// fchdir(fd) (81).
pub fn fchdir(a: Args) -> SysResult {
    namei::fchdir(&*file_raw(a.int(0))?)?;
    Ok(0)
}

pub fn mkdir(a: Args) -> SysResult {
    let path = read_cstr(a.get(0), PATH_MAX)?;
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    namei::mkdir(&at_path(AT_FDCWD, &path)?, a.get(1) as u32)?;
    Ok(0)
}

/// sync() (162): cannot fail.
pub fn sync(_a: Args) -> SysResult {
    let _ = namei::sync();
    Ok(0)
}

/// syncfs(fd) (306).
pub fn syncfs(a: Args) -> SysResult {
    file(a.int(0))?;
    namei::sync()?;
    Ok(0)
}

/// chmod(path, mode) (90).
pub fn chmod(a: Args) -> SysResult {
    chmod_at(AT_FDCWD, a.get(0), a.get(1), 0)
}

/// fchmod(fd, mode) (91).
pub fn fchmod(a: Args) -> SysResult {
    namei::chmod(&*file(a.int(0))?, a.get(1) as u32)?;
    Ok(0)
}

/// fchmodat(dirfd, path, mode) (268): glibc's fchmodat passes no flags argument to the kernel.
pub fn fchmodat(a: Args) -> SysResult {
    chmod_at(a.int(0), a.get(1), a.get(2), 0)
}

fn chmod_at(dirfd: i64, path: u64, mode: u64, flags: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    let f = resolve(dirfd, &path, flags)?;
    namei::chmod(&f, mode as u32)?;
    Ok(0)
}

/// `UTIME_NOW` and `UTIME_OMIT` in a `tv_nsec`.
const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// utimensat(dirfd, path, times, flags) (280); a null path with a descriptor is `futimens`.
pub fn utimensat(a: Args) -> SysResult {
    let f = if a.get(1) == 0 {
        if a.int(0) == AT_FDCWD {
            return Err(Errno::EFAULT);
        }
        file(a.int(0))?
    } else {
        let path = read_cstr(a.get(1), PATH_MAX)?;
        resolve(a.int(0), &path, a.get(3))?
    };
    let now = (crate::rtc::realtime_micros() / 1_000_000) as u32;
    // Linux `vfs_utimes`: a null `times` or two `UTIME_NOW` is a "touch" (write permission
    // suffices); anything else that sets a time needs ownership.
    let mut touch = true;
    let (atime, mtime) = if a.get(2) == 0 {
        (Some(now), Some(now))
    } else {
        let ts = UserPtr::<[i64; 4]>::new(a.get(2))?.read()?;
        touch = ts[1] == UTIME_NOW && ts[3] == UTIME_NOW;
        let one = |sec: i64, nsec: i64| -> Result<Option<u32>, Errno> {
            match nsec {
                UTIME_OMIT => Ok(None),
                UTIME_NOW => Ok(Some(now)),
                0..=999_999_999 => Ok(Some(sec as u32)),
                _ => Err(Errno::EINVAL),
            }
        };
        (one(ts[0], ts[1])?, one(ts[2], ts[3])?)
    };
    if atime.is_none() && mtime.is_none() {
        return Ok(0);
    }
    namei::set_times(&f, atime, mtime, touch, !touch)?;
    Ok(0)
}

/// An id argument of the chown family: `-1` leaves it (`None`).
fn chown_id(v: u64) -> Option<u32> {
    Some(v as u32).filter(|&id| id != u32::MAX)
}

/// chown(path, uid, gid) (92): follows a final symbolic link.
pub fn chown(a: Args) -> SysResult {
    chown_at(AT_FDCWD, a.get(0), a.get(1), a.get(2), 0)
}

/// lchown(path, uid, gid) (94): a final symbolic link itself.
pub fn lchown(a: Args) -> SysResult {
    chown_at(AT_FDCWD, a.get(0), a.get(1), a.get(2), AT_SYMLINK_NOFOLLOW)
}

/// fchown(fd, uid, gid) (93).
pub fn fchown(a: Args) -> SysResult {
    namei::chown(&*file(a.int(0))?, chown_id(a.get(1)), chown_id(a.get(2)))?;
    Ok(0)
}

/// fchownat(dirfd, path, uid, gid, flags) (260): `AT_SYMLINK_NOFOLLOW`, `AT_EMPTY_PATH`;
/// other flags `EINVAL`.
pub fn fchownat(a: Args) -> SysResult {
    if a.get(4) & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(Errno::EINVAL);
    }
    chown_at(a.int(0), a.get(1), a.get(2), a.get(3), a.get(4))
}

fn chown_at(dirfd: i64, path: u64, uid: u64, gid: u64, flags: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    let f = resolve(dirfd, &path, flags)?;
    namei::chown(&f, chown_id(uid), chown_id(gid))?;
    Ok(0)
}

fn readlink_path(dirfd: i64, path: u64, buf: u64, size: u64) -> SysResult {
    let path = read_cstr(path, PATH_MAX)?;
    at_path(dirfd, &path)?;
    UserSlice::new(buf, size as usize)?;
    if size == 0 {
        return Err(Errno::EINVAL);
    }
    let target = namei::readlink(&at_path(dirfd, &path)?)?;
    let n = target.len().min(size as usize);
    UserSlice::new(buf, n)?.write(&target.as_bytes()[..n])?;
    done(n)
}

/// symlink(target, path) (88) and symlinkat(target, newdirfd, path) (266).
pub fn symlink_at(target: u64, dirfd: i64, path: u64) -> SysResult {
    let target = read_cstr(target, PATH_MAX)?;
    let path = read_cstr(path, PATH_MAX)?;
    if target.is_empty() || path.is_empty() {
        return Err(Errno::ENOENT);
    }
    namei::symlink(&target, &at_path(dirfd, &path)?)?;
    Ok(0)
}

pub fn symlink(a: Args) -> SysResult {
    symlink_at(a.get(0), AT_FDCWD, a.get(1))
}

pub fn symlinkat(a: Args) -> SysResult {
    symlink_at(a.get(0), a.int(1), a.get(2))
}

pub fn readlink(a: Args) -> SysResult {
    readlink_path(AT_FDCWD, a.get(0), a.get(1), a.get(2))
}

pub fn readlinkat(a: Args) -> SysResult {
    readlink_path(a.int(0), a.get(1), a.get(2), a.get(3))
}

/// getdents64(fd, dirp, count) (see `fs::rw::getdents64`).
pub fn getdents64(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    let out = UserSlice::new(a.get(1), a.get(2) as usize)?;
    done(rw::getdents64(&f, out)?)
}

const MFD_CLOEXEC: u32 = 1;
const MFD_ALLOW_SEALING: u32 = 2;
const MFD_HUGETLB: u32 = 4;
/// Linux's limit on a memfd name (`MFD_NAME_MAX_LEN`), without the "memfd:" prefix.
const MFD_NAME_MAX: usize = 249;

/// memfd_create(name, flags): an anonymous shmem file of size 0, open read-write.
pub fn memfd_create(a: Args) -> SysResult {
    let flags = a.get(1) as u32;
    // Linux `memfd_create`: the page-size bits only with MFD_HUGETLB; a size with no pool is
    // ENODEV (cowlab has 2 MiB only).
    let huge = flags & MFD_HUGETLB != 0;
    let known = MFD_CLOEXEC | MFD_ALLOW_SEALING | if huge { MFD_HUGETLB | 0xfc00_0000 } else { 0 };
    if flags & !known != 0 {
        return Err(Errno::EINVAL);
    }
    let name = read_cstr(a.get(0), PATH_MAX)?;
    if name.len() > MFD_NAME_MAX {
        return Err(Errno::EINVAL);
    }
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    if huge {
        let Some(size) = cowlab_mm::hugetlb::huge_size_of(flags) else {
            return Err(Errno::ENODEV);
        };
        return install(fs::hugetlbfs::create(&name, size), flags & MFD_CLOEXEC != 0);
    }
    install(
        fs::memfd::create(&name, flags & MFD_ALLOW_SEALING != 0),
        flags & MFD_CLOEXEC != 0,
    )
}

/// ftruncate(fd, length).
pub fn ftruncate(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    rw::truncate(&f, offset(a.int(1))?)?;
    Ok(0)
}

/// fallocate(fd, mode, offset, len).
pub fn fallocate(a: Args) -> SysResult {
    let f = file(a.int(0))?;
    rw::fallocate(&f, a.i32(1), a.int(2), a.int(3))?;
    Ok(0)
}

const SPLICE_F_NONBLOCK: u64 = 2;
/// SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT.
const SPLICE_F_ALL: u64 = 15;

/// vmsplice(fd, iov, nr_segs, flags) (see `fs::splice`).
/// Measured per phase by a `faultstat` kernel (`opstat`'s `vmsplice`, per page queued).
pub fn vmsplice(a: Args) -> SysResult {
    opstat::begin(Op::Vmsplice);
    let r = (|| {
        let f = file(a.int(0))?;
        let flags = a.get(3);
        if flags & !SPLICE_F_ALL != 0 {
            return Err(Errno::EINVAL);
        }
        // Borrowed where it was made: moving the iterator (its inline iovecs) out of the
        // `Result` was a 164-byte copy per call.
        let mut made = IoIter::iovec(a.get(1), a.int(2));
        let iter = made.as_mut().map_err(|e| *e)?;
        fs::splice::vmsplice(&f, iter, flags & SPLICE_F_NONBLOCK != 0)
    })();
    let pages = r.as_ref().map_or(0, |n| n.div_ceil(4096));
    opstat::end(Op::Vmsplice, Phase::VsReturn, pages);
    r
}

/// io_uring_setup(entries, params) (425); `entries` is a C `u32`: the upper half of the
/// register is not part of it.
pub fn io_uring_setup(a: Args) -> SysResult {
    fs::io_uring::setup(a.get(0) as u32, a.get(1))
}

/// io_uring_enter(fd, to_submit, min_complete, flags, sig, sigsz) (426).
pub fn io_uring_enter(a: Args) -> SysResult {
    fs::io_uring::enter(a.int(0), a.get(1) as u32, a.get(2) as u32, a.get(3) as u32)
}

/// io_uring_register(fd, opcode, arg, nr_args) (427).
pub fn io_uring_register(a: Args) -> SysResult {
    fs::io_uring::register(a.int(0), a.get(1) as u32, a.get(2), a.get(3) as u32)
}

/// io_setup(nr_events, ctx_idp) (206).
pub fn io_setup(a: Args) -> SysResult {
    fs::aio::io_setup(a.get(0) as u32, a.get(1))
}

/// io_destroy(ctx_id) (207).
pub fn io_destroy(a: Args) -> SysResult {
    fs::aio::io_destroy(a.get(0))
}

/// io_getevents(ctx_id, min_nr, nr, events, timeout) (208).
pub fn io_getevents(a: Args) -> SysResult {
    fs::aio::io_getevents(a.get(0), a.int(1), a.int(2), a.get(3), a.get(4))
}

/// io_submit(ctx_id, nr, iocbpp) (209).
pub fn io_submit(a: Args) -> SysResult {
    fs::aio::io_submit(a.get(0), a.int(1), a.get(2))
}

/// io_cancel(ctx_id, iocb, result) (210).
pub fn io_cancel(a: Args) -> SysResult {
    fs::aio::io_cancel(a.get(0), a.get(1))
}

/// An optional `loff_t *` argument: its value (`EFAULT` if it cannot be read), None for NULL.
fn read_off(ptr: u64) -> Result<Option<i64>, Errno> {
    if ptr == 0 {
        return Ok(None);
    }
    UserPtr::<i64>::new(ptr)?.read().map(Some)
}

/// Stores a position back through a `loff_t *` argument (`EFAULT` overrides the result, as
/// Linux's `put_user` after the copy).
fn write_off(ptr: u64, value: Option<i64>, result: Result<usize, Errno>) -> SysResult {
    if let (Some(v), true) = (value, ptr != 0) {
        UserPtr::<i64>::new(ptr)?.write(&v)?;
    }
    done(result?)
}

/// sendfile(out_fd, in_fd, offset, count) (40).
pub fn sendfile(a: Args) -> SysResult {
    let pos = read_off(a.get(2))?;
    let input = file(a.int(1))?;
    let out = file(a.int(0))?;
    let (result, pos) = fs::copy::sendfile(&out, &input, pos, a.get(3) as usize);
    write_off(a.get(2), pos, result)
}

/// copy_file_range(fd_in, off_in, fd_out, off_out, len, flags) (326).
pub fn copy_file_range(a: Args) -> SysResult {
    let input = file(a.int(0))?;
    let out = file(a.int(2))?;
    let (pin, pout) = (read_off(a.get(1))?, read_off(a.get(3))?);
    let (result, pin, pout) =
        fs::copy::copy_file_range(&input, pin, &out, pout, a.get(4) as usize, a.get(5));
    let result = write_off(a.get(1), pin, result);
    write_off(a.get(3), pout, result.map(|n| n as usize))
}
