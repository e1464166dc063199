//! Operations on names (Linux `fs/namei.c`): paths relative to the working directory or a
//! directory descriptor, and unlink, link, rename, mkdir, access, chdir and readlink through
//! the mount table (`mount`): the mounted directory a path leads to does the work. The system
//! calls read the path strings and resolve descriptors; everything else is here.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use super::file::OpenFile;
use super::mount::walk_checked;
use super::perm;
use super::stat::{ST_RDONLY, S_IFDIR, S_IFMT};
use super::{name_too_long, open};
use crate::errno::Errno;

pub const AT_REMOVEDIR: u64 = 0x200;
pub const RENAME_NOREPLACE: u64 = 1;

fn is_dir(file: &OpenFile) -> bool {
    file.ops.stat().st_mode & S_IFMT == S_IFDIR
}

fn read_only_fs(file: &OpenFile) -> bool {
    file.ops.statfs().f_flags & ST_RDONLY != 0
}

/// The calling process's working directory.
pub fn cwd() -> String {
    crate::proc::with_group(|g| String::from(g.cwd.as_deref().unwrap_or("/")))
}

/// `base/path` with `.` and `..` resolved lexically (there are no symbolic links), keeping a
/// trailing slash (it asks for a directory).
fn join(base: &str, path: &str) -> String {
    let mut comps: Vec<&str> = Vec::new();
    for comp in base.split('/').chain(path.split('/')) {
        match comp {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let mut out = String::new();
    for c in &comps {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() || path.ends_with('/') {
        out.push('/');
    }
    out
}

/// `path` as seen from the directory `dir` (Linux `path_init`), or from the working directory
/// when `dir` is `None` (`AT_FDCWD`): absolute paths as they are; relative ones below the
/// directory's path (relative to `/` they stay as they are); `ENOTDIR` if `dir` is not a
/// directory.
pub fn at_path(dir: Option<&OpenFile>, path: &str) -> Result<String, Errno> {
    if path.starts_with('/') {
        return Ok(String::from(path));
    }
    let base = match dir {
        None => match crate::proc::with_group(|g| g.cwd.clone()) {
            None => return Ok(String::from(path)),
            Some(cwd) => String::from(&*cwd),
        },
        Some(dir) => String::from(dir.ops.dir_path().ok_or(Errno::ENOTDIR)?),
    };
    if base == "/" {
        return Ok(String::from(path));
    }
    Ok(join(&base, path))
}

/// unlink/rmdir of `path`: the mount's directory removes the entry. A mount point itself is
/// `EBUSY` for rmdir and `EISDIR` for unlink; a directory is `EISDIR` for unlink, a file
/// `ENOTDIR` for rmdir (and for unlink with a trailing slash).
pub fn unlink(path: &str, rmdir: bool) -> Result<(), Errno> {
    if name_too_long(path) {
        return Err(Errno::ENAMETOOLONG);
    }
    let w = walk_checked(path)?;
    let Some(name) = w.name else {
        return Err(if rmdir { Errno::EBUSY } else { Errno::EISDIR });
    };
    let dir = w.mount.root;
    let is_dir = dir.lookup(&name)?;
    if rmdir {
        if !is_dir {
            return Err(Errno::ENOTDIR);
        }
        return dir.rmdir(&name);
    }
    if is_dir {
        return Err(Errno::EISDIR);
    }
    if w.trailing_slash {
        return Err(Errno::ENOTDIR);
    }
    dir.unlink(&name)
}

/// Gives `source` the name `new` (`link`, `linkat`): `EEXIST` if `new` exists, `EPERM` for a
/// directory, then the target directory decides (tmpfs links its own files; `EXDEV` across
/// file systems, `EROFS` on the ramdisk).
pub fn link(source: &OpenFile, new: &str) -> Result<(), Errno> {
    let w = walk_checked(new)?;
    let Some(name) = w.name else {
        return Err(Errno::EEXIST);
    };
    let dir = w.mount.root;
    match dir.lookup(&name) {
        Ok(_) => return Err(Errno::EEXIST),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if w.trailing_slash {
        return Err(Errno::ENOENT);
    }
    if is_dir(source) {
        return Err(Errno::EPERM);
    }
    dir.link(source, &name)
}

/// Renames `old` to `new` (`RENAME_NOREPLACE` honoured) within one file system: `EXDEV`
/// across mounts, `EBUSY` for a mount point, `EISDIR` onto one.
pub fn rename(old: &str, new: &str, flags: u64) -> Result<(), Errno> {
    if name_too_long(old) || name_too_long(new) {
        return Err(Errno::ENAMETOOLONG);
    }
    let (from, to) = (walk_checked(old)?, walk_checked(new)?);
    let Some(oname) = from.name else {
        return Err(Errno::EBUSY);
    };
    from.mount.root.lookup(&oname)?;
    if from.mount.path != to.mount.path {
        return Err(Errno::EXDEV);
    }
    let Some(nname) = to.name else {
        return Err(Errno::EISDIR);
    };
    from.mount.root.rename(&oname, &nname, flags)
}

/// `mkdir(path)`: the mount's directory creates it (tmpfs here has no subdirectories: `EPERM`;
/// the ramdisk is read-only: `EROFS`); a mount point exists.
pub fn mkdir(path: &str, mode: u32) -> Result<(), Errno> {
    let w = walk_checked(path)?;
    match w.name {
        None => Err(Errno::EEXIST),
        Some(name) => {
            let mode = mode & 0o7777 & !crate::proc::cred::current_umask();
            w.mount.root.mkdir(&name, mode)
        }
    }
}

/// The ext2 inode behind an open file, if it is one.
fn ext2_ino(file: &OpenFile) -> Option<u32> {
    use super::{ext2_dir::Ext2Dir, ext2_file::Ext2File};
    file.downcast::<Ext2File>()
        .map(|f| f.ino)
        .or_else(|| file.downcast::<Ext2Dir>().map(|d| d.ino))
}

/// `chmod`/`fchmod`/`fchmodat` (Linux `chmod_common`): the permission bits of an ext2 file;
/// `EROFS` on a read-only file system; `EPERM` for the other file types, whose modes are fixed
/// here.
pub fn chmod(file: &OpenFile, mode: u32) -> Result<(), Errno> {
    match ext2_ino(file) {
        Some(ino) => {
            let cred = crate::proc::cred::current();
            let inode = owner_of(file);
            perm::owner_or_capable(&cred, inode)?;
            let mode = perm::chmod_bits(&cred, inode, mode);
            let r = super::ext2_mount::with_fs(|fs| fs.chmod(ino, mode as u16));
            super::ext2_file::attr_changed();
            r
        }
        None if read_only_fs(file) => Err(Errno::EROFS),
        None => Err(Errno::EPERM),
    }
}

/// `chown`/`fchown`/`lchown`/`fchownat` (Linux `chown_common`): the owner and group of an
/// ext2 file (`None`: left as it is), as `perm::chown_prepare` allows, which also says which
/// set-id bits go; other file types as [`chmod`].
pub fn chown(file: &OpenFile, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    match ext2_ino(file) {
        Some(ino) => {
            let inode = owner_of(file);
            let mode = perm::chown_prepare(&crate::proc::cred::current(), inode, uid, gid)?;
            let r = super::ext2_mount::with_fs(|fs| {
                fs.chown(ino, uid, gid)?;
                if mode != inode.mode & 0o7777 {
                    fs.chmod(ino, mode as u16)?;
                }
                Ok(())
            });
            super::ext2_file::attr_changed();
            r
        }
        None if read_only_fs(file) => Err(Errno::EROFS),
        None => Err(Errno::EPERM),
    }
}

/// `utimensat`/`futimens`: access and modification times in seconds (`None`: left as they
/// are) of an ext2 file, as `perm::may_utimes` allows (`touch`: both set to now; `explicit`:
/// one given); other file types as [`chmod`].
pub fn set_times(
    file: &OpenFile,
    atime: Option<u32>,
    mtime: Option<u32>,
    touch: bool,
    explicit: bool,
) -> Result<(), Errno> {
    match ext2_ino(file) {
        Some(ino) => {
            let cred = crate::proc::cred::current();
            perm::may_utimes(&cred, owner_of(file), touch, explicit)?;
            let r = super::ext2_mount::with_fs(|fs| fs.set_times(ino, atime, mtime));
            // A write's note that mtime and ctime are already "now" no longer holds.
            super::ext2_file::attr_changed();
            r
        }
        None if read_only_fs(file) => Err(Errno::EROFS),
        None => Err(Errno::EPERM),
    }
}

/// `sync(2)` and `syncfs(2)`: the root filesystem's dirty metadata written back (file data is
/// written through already). Linux's `sync` cannot fail; `syncfs` reports a write-back error.
pub fn sync() -> Result<(), Errno> {
    super::ext2_mount::sync()
}

/// `access(path, mode)`: the file must exist; write access (`W_OK`) on a read-only file
/// system is `EROFS`.
pub fn access(path: &str, mode: u64, eaccess: bool) -> Result<(), Errno> {
    if mode & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    let file = open(path, 0)?;
    if mode & 2 != 0 && read_only_fs(&file) {
        return Err(Errno::EROFS);
    }
    // Linux `do_faccessat`: the real ids unless AT_EACCESS (a set-user-ID program asks what
    // its user may do); a real uid 0 keeps the overrides.
    let mut cred = crate::proc::cred::current();
    if !eaccess {
        cred.fsuid = cred.uid;
        cred.fsgid = cred.gid;
    }
    perm::generic_permission(&cred, owner_of(&file), mode as u32)
}

/// The owner and mode of an open file, for `perm`.
fn owner_of(file: &OpenFile) -> perm::Owner {
    let st = file.ops.stat();
    perm::Owner {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// `chdir(path)` (`path` already seen from the working directory): it must be a directory
/// (`ENOTDIR`), which becomes the group's working directory.
pub fn chdir(path: &str) -> Result<(), Errno> {
    fchdir(&*open(path, 0)?)
}

/// `fchdir(fd)`: the open directory `dir` becomes the working directory.
pub fn fchdir(dir: &OpenFile) -> Result<(), Errno> {
    let path = dir.ops.dir_path().ok_or(Errno::ENOTDIR)?;
    // Linux `set_fs_pwd` after `path_permission(MAY_EXEC | MAY_CHDIR)`.
    perm::generic_permission(&crate::proc::cred::current(), owner_of(dir), perm::MAY_EXEC)?;
    let cwd = (path != "/").then(|| alloc::sync::Arc::from(path));
    // The old directory's reference is dropped outside the group lock.
    let old = crate::proc::with_group(|g| core::mem::replace(&mut g.cwd, cwd));
    drop(old);
    Ok(())
}

/// `getcwd` into `buf`: the path and its NUL; `ERANGE` if it does not fit.
pub fn getcwd(buf: &crate::uaccess::UserSlice) -> Result<usize, Errno> {
    let mut path = cwd().into_bytes();
    path.push(0);
    if buf.len() < path.len() {
        return Err(Errno::ERANGE);
    }
    buf.write(&path)?;
    Ok(path.len())
}

/// `readlink(path)`: the target of a symbolic link; `EINVAL` for anything else (a mount point
/// included).
pub fn readlink(path: &str) -> Result<String, Errno> {
    let w = walk_checked(path)?;
    match w.name {
        None => Err(Errno::EINVAL),
        Some(name) => w.mount.root.readlink(&name),
    }
}

/// `symlink(target, path)`: the mount's directory creates it (none of today's file systems
/// has symbolic links: `EPERM`, `EROFS` on the ramdisk, `EEXIST` if `path` exists).
pub fn symlink(target: &str, path: &str) -> Result<(), Errno> {
    if name_too_long(path) {
        return Err(Errno::ENAMETOOLONG);
    }
    let w = walk_checked(path)?;
    match w.name {
        None => Err(Errno::EEXIST),
        Some(name) => w.mount.root.symlink(&name, target),
    }
}
