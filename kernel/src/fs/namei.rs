//! Operations on names (Linux `fs/namei.c`): paths relative to a directory descriptor, and
//! unlink, link, rename, mkdir, access, chdir and readlink over the two directories that exist,
//! the read-only root `/` and the flat tmpfs at `/tmp`. The system calls read the path strings
//! and resolve descriptors; everything else is here.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;

use super::file::OpenFile;
use super::stat::{ST_RDONLY, S_IFDIR, S_IFMT};
use super::tmpfs::{self, parse, TmpPath};
use super::tmpfs_file::TmpfsFile;
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
    crate::proc::with_group(|g| g.cwd.clone())
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
        None => cwd(),
        Some(dir) => String::from(dir.ops.dir_path().ok_or(Errno::ENOTDIR)?),
    };
    if base == "/" {
        return Ok(String::from(path));
    }
    Ok(join(&base, path))
}

/// unlink/rmdir of `path`. Only tmpfs files can be removed: `/tmp` itself is a mount point
/// (`EBUSY` for rmdir, `EISDIR` for unlink), the ramdisk is read-only (`EROFS`), and the
/// device, proc and debugfs files cannot be removed (`EPERM`).
pub fn unlink(path: &str, rmdir: bool) -> Result<(), Errno> {
    if name_too_long(path) {
        return Err(Errno::ENAMETOOLONG);
    }
    match parse(path) {
        Some(Err(e)) => Err(e),
        Some(Ok(TmpPath::Dir)) if rmdir => Err(Errno::EBUSY),
        Some(Ok(TmpPath::Dir)) => Err(Errno::EISDIR),
        Some(Ok(TmpPath::Name {
            name,
            trailing_slash,
        })) => {
            if !tmpfs::exists(&name) {
                return Err(Errno::ENOENT);
            }
            if rmdir || trailing_slash {
                return Err(Errno::ENOTDIR);
            }
            tmpfs::unlink(&name)
        }
        None => {
            let file = open(path, 0)?;
            if is_dir(&file) {
                Err(if rmdir { Errno::EBUSY } else { Errno::EISDIR })
            } else if rmdir {
                Err(Errno::ENOTDIR)
            } else if read_only_fs(&file) {
                Err(Errno::EROFS)
            } else {
                Err(Errno::EPERM)
            }
        }
    }
}

/// Gives `source` the name `new` (`link`, `linkat`): hard links within `/tmp`; `EXDEV` between
/// `/tmp` and elsewhere, `EROFS` on the ramdisk, `EPERM` for a directory.
pub fn link(source: &OpenFile, new: &str) -> Result<(), Errno> {
    let target = match parse(new) {
        Some(Err(e)) => return Err(e),
        Some(Ok(TmpPath::Dir)) => return Err(Errno::EEXIST),
        Some(Ok(TmpPath::Name {
            name,
            trailing_slash,
        })) => {
            if tmpfs::exists(&name) {
                return Err(Errno::EEXIST);
            }
            if trailing_slash {
                return Err(Errno::ENOENT);
            }
            Some(name)
        }
        None => None,
    };
    if is_dir(source) {
        return Err(Errno::EPERM);
    }
    match (source.downcast::<TmpfsFile>(), target) {
        (Some(file), Some(name)) => file.link(&name),
        (Some(_), None) | (None, Some(_)) => Err(Errno::EXDEV),
        (None, None) if read_only_fs(source) => Err(Errno::EROFS),
        (None, None) => Err(Errno::EPERM),
    }
}

/// Renames within `/tmp` (`RENAME_NOREPLACE` honoured); `EXDEV` between `/tmp` and elsewhere,
/// `EROFS`/`EPERM` elsewhere.
pub fn rename(old: &str, new: &str, flags: u64) -> Result<(), Errno> {
    if name_too_long(old) || name_too_long(new) {
        return Err(Errno::ENAMETOOLONG);
    }
    match (parse(old), parse(new)) {
        (Some(Err(e)), _) | (_, Some(Err(e))) => Err(e),
        (Some(Ok(TmpPath::Name { name: o, .. })), Some(Ok(TmpPath::Name { name: n, .. }))) => {
            tmpfs::rename(&o, &n, flags & RENAME_NOREPLACE != 0)
        }
        (Some(Ok(TmpPath::Dir)), _) => Err(Errno::EBUSY),
        (Some(Ok(TmpPath::Name { name, .. })), _) if !tmpfs::exists(&name) => Err(Errno::ENOENT),
        (Some(Ok(_)), None) | (None, Some(Ok(_))) => {
            open(old, 0)?;
            Err(Errno::EXDEV)
        }
        (Some(Ok(TmpPath::Name { .. })), Some(Ok(TmpPath::Dir))) => Err(Errno::EISDIR),
        (None, None) => {
            open(old, 0)?;
            Err(Errno::EROFS)
        }
    }
}

/// `mkdir(path)`: nothing can be created outside `/tmp` (`EROFS`), and tmpfs here has no
/// subdirectories (Linux: `EPERM` when the file system has no mkdir).
pub fn mkdir(path: &str) -> Result<(), Errno> {
    if let Some(Ok(TmpPath::Name { name, .. })) = parse(path) {
        return Err(if tmpfs::exists(&name) {
            Errno::EEXIST
        } else {
            Errno::EPERM
        });
    }
    match open(path, 0) {
        Ok(_) => Err(Errno::EEXIST),
        Err(Errno::ENOENT) if !path.trim_start_matches('/').contains('/') => Err(Errno::EROFS),
        Err(e) => Err(e),
    }
}

/// `access(path, mode)`: the file must exist; write access (`W_OK`) on a read-only file
/// system is `EROFS`.
pub fn access(path: &str, mode: u64) -> Result<(), Errno> {
    let file = open(path, 0)?;
    if mode & 2 != 0 && read_only_fs(&file) {
        return Err(Errno::EROFS);
    }
    Ok(())
}

/// `chdir(path)` (`path` already seen from the working directory): it must be a directory
/// (`ENOTDIR`), which becomes the group's working directory.
pub fn chdir(path: &str) -> Result<(), Errno> {
    fchdir(&*open(path, 0)?)
}

/// `fchdir(fd)`: the open directory `dir` becomes the working directory.
pub fn fchdir(dir: &OpenFile) -> Result<(), Errno> {
    let path = String::from(dir.ops.dir_path().ok_or(Errno::ENOTDIR)?);
    crate::proc::with_group(|g| g.cwd = path);
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

/// `readlink(path)`: there are no symbolic links, so an existing file is "not a link".
pub fn readlink(path: &str) -> Result<usize, Errno> {
    open(path, 0)?;
    Err(Errno::EINVAL)
}
