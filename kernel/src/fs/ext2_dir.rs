//! ext2 directories: the root mount's [`DirInode`] ([`Ext2Root`]), which resolves the path below
//! `/` one component at a time through ext2 lookups (following symbolic links in intermediate
//! components, and in the last one where the call does: Linux `link_path_walk`), and an open
//! directory's [`FileOps`] ([`Ext2Dir`]).
//!
//! A symbolic link's absolute target is resolved again from the ext2 root (a target below
//! another mount, `/tmp/x` say, is looked up in ext2's own `/tmp` directory, not the tmpfs).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::any::Any;

use cowlab_ext2::Ext2;
use cowlab_mm::opstat::{self, Phase};

use super::ext2_file::{ext2_stat, ext2_statfs, Ext2File, Ext2Path};
use super::ext2_glue::VirtioDisk;
use super::ext2_mount::with_fs;
use super::file::{DirEntry, FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::mount::DirInode;
use super::perm::{self, Owner};
use super::stat::{Stat, StatFs, S_IFDIR, S_IFMT, S_IFREG};
use super::tmpfs;
use super::{O_ACCMODE, O_CREAT, O_DIRECTORY, O_NOFOLLOW, O_PATH, O_TRUNC};
use crate::errno::Errno;
use crate::proc::cred::{self, Cred};

/// Linux's `MAXSYMLINKS`: more links followed in one walk is `ELOOP`.
const MAX_SYMLINKS: usize = 40;
const S_IFLNK: u16 = 0o120000;

type Fs = Ext2<VirtioDisk>;

fn is_symlink(fs: &mut Fs, ino: u32) -> cowlab_ext2::Result<bool> {
    Ok(fs.stat(ino)?.mode & 0o170000 == S_IFLNK)
}

/// The owner and mode of inode `ino`, for the permission checks (`fs::perm`).
fn owner(fs: &mut Fs, ino: u32) -> cowlab_ext2::Result<Owner> {
    let st = fs.stat(ino)?;
    Ok(Owner {
        mode: u32::from(st.mode),
        uid: st.uid,
        gid: st.gid,
    })
}

/// A refused permission check in the crate's errno type.
fn denied(e: Errno) -> cowlab_ext2::Errno {
    match e {
        Errno::EPERM => cowlab_ext2::Errno::EPERM,
        _ => cowlab_ext2::Errno::EACCES,
    }
}

/// `check` on inode `ino`, skipped for the filesystem uid 0 (it passes every check on a
/// directory, and the skipped inode read keeps root's path walk as cheap as before).
fn check(
    fs: &mut Fs,
    cred: &Cred,
    ino: u32,
    check: impl FnOnce(Owner) -> Result<(), Errno>,
) -> cowlab_ext2::Result<()> {
    if cred.fsuid == 0 {
        return Ok(());
    }
    check(owner(fs, ino)?).map_err(denied)
}

/// Search permission on the directory `dir` (Linux `may_lookup`).
fn search(fs: &mut Fs, cred: &Cred, dir: u32) -> cowlab_ext2::Result<()> {
    check(fs, cred, dir, |o| {
        perm::generic_permission(cred, o, perm::MAY_EXEC)
    })
}

/// Write and search permission on `dir`, for a new name in it.
fn may_create(fs: &mut Fs, cred: &Cred, dir: u32) -> cowlab_ext2::Result<()> {
    check(fs, cred, dir, |o| perm::may_change_dir(cred, o))
}

/// Removing `name` from `dir` (Linux `may_delete`).
fn may_delete(fs: &mut Fs, cred: &Cred, dir: u32, name: &str) -> cowlab_ext2::Result<()> {
    if cred.fsuid == 0 {
        return Ok(());
    }
    let victim = fs.lookup(dir, name.as_bytes())?;
    let victim = owner(fs, victim)?;
    perm::may_delete(cred, owner(fs, dir)?, victim).map_err(denied)
}

/// A new name `name` in `dir` (Linux `may_create` after the lookup): `EEXIST` first, then
/// write and search permission.
fn new_name(fs: &mut Fs, cred: &Cred, dir: u32, name: &str) -> cowlab_ext2::Result<()> {
    if fs.lookup(dir, name.as_bytes()).is_ok() {
        return Err(cowlab_ext2::Errno::EEXIST);
    }
    may_create(fs, cred, dir)
}

/// Linux `vfs_rename`'s checks: removing the old name, adding (or replacing, sticky rule) the
/// new one, and write permission on a directory that moves to another parent (its `..`).
fn may_rename(
    fs: &mut Fs,
    cred: &Cred,
    (odir, oname): (u32, &str),
    ndir: u32,
    target: Option<u32>,
) -> cowlab_ext2::Result<()> {
    if cred.fsuid == 0 {
        return Ok(());
    }
    may_delete(fs, cred, odir, oname)?;
    let dir = owner(fs, ndir)?;
    perm::may_change_dir(cred, dir).map_err(denied)?;
    if let Some(t) = target {
        let victim = owner(fs, t)?;
        perm::check_sticky(cred, dir, victim).map_err(denied)?;
    }
    let moved = fs.lookup(odir, oname.as_bytes())?;
    if odir != ndir && is_dir_ino(fs, moved)? {
        check(fs, cred, moved, |o| {
            perm::generic_permission(cred, o, perm::MAY_WRITE)
        })?;
    }
    Ok(())
}

/// The uid, gid and mode of a new inode of type and mode `mode` in `dir`.
fn new_owner(
    fs: &mut Fs,
    cred: &Cred,
    dir: u32,
    mode: u32,
) -> cowlab_ext2::Result<(u32, u32, u16)> {
    let (uid, gid, mode) = perm::init_owner(cred, owner(fs, dir)?, mode);
    Ok((uid, gid, (mode & 0o7777) as u16))
}

/// The directory holding the last component of `path` (relative to the ext2 root) and that
/// component (`None` for the root itself), every intermediate symbolic link followed.
fn walk_parent(
    fs: &mut Fs,
    cred: &Cred,
    path: &str,
    links: &mut usize,
) -> cowlab_ext2::Result<(u32, Option<String>)> {
    let mut comps: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(String::from)
        .collect();
    comps.reverse();
    // `stack` holds the directories walked through, for `..`.
    let mut stack: Vec<u32> = alloc::vec![fs.root()];
    loop {
        let Some(comp) = comps.pop() else {
            return Ok((*stack.last().expect("root"), None));
        };
        // Every name is looked up in a directory the caller may search, the last one too.
        search(fs, cred, *stack.last().expect("root"))?;
        if comps.is_empty() && comp != ".." {
            return Ok((*stack.last().expect("root"), Some(comp)));
        }
        if comp == ".." {
            if stack.len() > 1 {
                stack.pop();
            }
            continue;
        }
        let dir = *stack.last().expect("root");
        let ino = fs.lookup(dir, comp.as_bytes())?;
        if is_symlink(fs, ino)? {
            *links += 1;
            if *links > MAX_SYMLINKS {
                return Err(cowlab_ext2::Errno::ELOOP);
            }
            let target = fs.readlink(ino)?;
            let target = String::from_utf8(target).map_err(|_| cowlab_ext2::Errno::ENOENT)?;
            if target.starts_with('/') {
                stack.truncate(1);
            }
            for c in target.split('/').rev() {
                if !c.is_empty() && c != "." {
                    comps.push(String::from(c));
                }
            }
            continue;
        }
        if fs.stat(ino)?.mode & 0o170000 != 0o040000 {
            return Err(cowlab_ext2::Errno::ENOTDIR);
        }
        stack.push(ino);
    }
}

/// The directory holding the last component of `path` and that component; `none` for the
/// root itself (which has no name in a parent).
fn parent(
    fs: &mut Fs,
    cred: &Cred,
    path: &str,
    none: cowlab_ext2::Errno,
) -> cowlab_ext2::Result<(u32, String)> {
    let mut links = 0;
    let (dir, last) = walk_parent(fs, cred, path, &mut links)?;
    Ok((dir, last.ok_or(none)?))
}

/// The inode `path` names, the last symbolic link followed if `follow`.
fn resolve(fs: &mut Fs, cred: &Cred, path: &str, follow: bool) -> cowlab_ext2::Result<u32> {
    let mut links = 0;
    let mut path = String::from(path);
    loop {
        let (dir, last) = walk_parent(fs, cred, &path, &mut links)?;
        let Some(last) = last else {
            return Ok(dir);
        };
        let ino = fs.lookup(dir, last.as_bytes())?;
        if !follow || !is_symlink(fs, ino)? {
            return Ok(ino);
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(cowlab_ext2::Errno::ELOOP);
        }
        let target =
            String::from_utf8(fs.readlink(ino)?).map_err(|_| cowlab_ext2::Errno::ENOENT)?;
        path = if target.starts_with('/') {
            target
        } else {
            let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
            alloc::format!("{parent}/{target}")
        };
    }
}

fn is_dir_ino(fs: &mut Fs, ino: u32) -> cowlab_ext2::Result<bool> {
    Ok(fs.stat(ino)?.mode & 0o170000 == 0o040000)
}

/// The absolute path of `name` below `/`, for an open directory's `dir_path`.
fn absolute(name: &str) -> String {
    let mut out = String::new();
    for c in name.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            if let Some(i) = out.rfind('/') {
                out.truncate(i);
            }
            continue;
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// The ext2 root directory as the `/` mount.
pub struct Ext2Root;

impl Ext2Root {
    fn open_dir(&self, ino: u32, flags: u32, path: String) -> Result<Box<dyn FileOps>, Errno> {
        if tmpfs::tmpfile_flags(flags).is_some() {
            return Err(Errno::EOPNOTSUPP);
        }
        if flags & O_ACCMODE != 0 || flags & O_CREAT != 0 {
            return Err(Errno::EISDIR);
        }
        Ok(Box::new(Ext2Dir { ino, path }))
    }
}

impl DirInode for Ext2Root {
    fn open_self(&self, flags: u32, _mode: u32) -> Result<Box<dyn FileOps>, Errno> {
        let root = with_fs(|fs| Ok(fs.root()))?;
        self.open_dir(root, flags, String::from("/"))
    }

    fn open(
        &self,
        name: &str,
        trailing_slash: bool,
        flags: u32,
        mode: u32,
    ) -> Result<Box<dyn FileOps>, Errno> {
        let excl = flags & O_CREAT != 0 && flags & tmpfs::O_EXCL != 0;
        let cred = cred::current();
        let found = with_fs(|fs| {
            // O_CREAT|O_EXCL never follows a final link (Linux: it is EEXIST).
            let follow = !excl && flags & O_NOFOLLOW == 0;
            match resolve(fs, &cred, name, follow) {
                Ok(ino) => Ok(Ok(ino)),
                Err(cowlab_ext2::Errno::ENOENT) => Ok(Err(())),
                Err(e) => Err(e),
            }
        })?;
        opstat::mark(Phase::CuResolve);
        let ino = match found {
            Ok(ino) => {
                if excl {
                    return Err(Errno::EEXIST);
                }
                ino
            }
            Err(()) => {
                if flags & O_CREAT == 0 {
                    return Err(Errno::ENOENT);
                }
                if trailing_slash {
                    return Err(Errno::EISDIR);
                }
                // A dangling final link is created through; keep it simple: the name itself.
                let ino = with_fs(|fs| {
                    let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EEXIST)?;
                    may_create(fs, &cred, dir)?;
                    let (uid, gid, mode) = new_owner(fs, &cred, dir, S_IFREG | mode)?;
                    fs.create(dir, last.as_bytes(), mode, uid, gid)
                })?;
                opstat::mark(Phase::CuCreate);
                return Ok(Box::new(Ext2File::open(ino)?));
            }
        };
        let st = with_fs(|fs| fs.stat(ino))?;
        let kind = u32::from(st.mode) & S_IFMT;
        if kind != u32::from(S_IFLNK) {
            let inode = Owner {
                mode: u32::from(st.mode),
                uid: st.uid,
                gid: st.gid,
            };
            perm::may_open(&cred, inode, flags)?;
        }
        if kind == S_IFDIR {
            return self.open_dir(ino, flags, absolute(name));
        }
        if u32::from(st.mode) & 0o170000 == u32::from(S_IFLNK) {
            // O_NOFOLLOW: ELOOP, but with O_PATH the link itself (lstat).
            if flags & O_PATH != 0 {
                return Ok(Box::new(Ext2Path { ino }));
            }
            return Err(Errno::ELOOP);
        }
        if trailing_slash || flags & O_DIRECTORY != 0 {
            return Err(Errno::ENOTDIR);
        }
        let file = Ext2File::open(ino)?;
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != 0 {
            file.truncate(0)?;
        }
        Ok(Box::new(file))
    }

    fn lookup(&self, name: &str) -> Result<bool, Errno> {
        let cred = cred::current();
        with_fs(|fs| {
            let ino = resolve(fs, &cred, name, false)?;
            is_dir_ino(fs, ino)
        })
    }

    fn mkdir(&self, name: &str, mode: u32) -> Result<(), Errno> {
        let cred = cred::current();
        with_fs(|fs| {
            let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EEXIST)?;
            new_name(fs, &cred, dir, &last)?;
            let (uid, gid, mode) = new_owner(fs, &cred, dir, S_IFDIR | mode)?;
            fs.mkdir(dir, last.as_bytes(), mode, uid, gid).map(|_| ())
        })
    }

    fn unlink(&self, name: &str) -> Result<(), Errno> {
        let cred = cred::current();
        let ino = with_fs(|fs| {
            let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EISDIR)?;
            may_delete(fs, &cred, dir, &last)?;
            let ino = fs.lookup(dir, last.as_bytes())?;
            opstat::mark(Phase::CuUnlinkLookup);
            fs.unlink(dir, last.as_bytes()).map(|()| ino)
        })?;
        opstat::mark(Phase::CuUnlink);
        super::ext2_cache::forget_closed(ino);
        opstat::mark(Phase::CuForget);
        Ok(())
    }

    fn rmdir(&self, name: &str) -> Result<(), Errno> {
        let cred = cred::current();
        with_fs(|fs| {
            let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EBUSY)?;
            if last == "." {
                return Err(cowlab_ext2::Errno::EINVAL);
            }
            may_delete(fs, &cred, dir, &last)?;
            fs.rmdir(dir, last.as_bytes())
        })
    }

    fn rename(&self, old: &str, new: &str, flags: u64) -> Result<(), Errno> {
        let cred = cred::current();
        let replaced = with_fs(|fs| {
            let mut links = 0;
            let (odir, oname) = walk_parent(fs, &cred, old, &mut links)?;
            let (ndir, nname) = walk_parent(fs, &cred, new, &mut links)?;
            let (Some(oname), Some(nname)) = (oname, nname) else {
                return Err(cowlab_ext2::Errno::EBUSY);
            };
            let target = fs.lookup(ndir, nname.as_bytes());
            if flags & super::namei::RENAME_NOREPLACE != 0 && target.is_ok() {
                return Err(cowlab_ext2::Errno::EEXIST);
            }
            may_rename(fs, &cred, (odir, &oname), ndir, target.ok())?;
            fs.rename(odir, oname.as_bytes(), ndir, nname.as_bytes())
                .map(|()| target.ok())
        })?;
        // The file renamed over lost its name.
        if let Some(ino) = replaced {
            super::ext2_cache::forget_closed(ino);
        }
        Ok(())
    }

    fn link(&self, file: &OpenFile, name: &str) -> Result<(), Errno> {
        let Some(f) = file.downcast::<Ext2File>() else {
            return Err(Errno::EXDEV);
        };
        let cred = cred::current();
        with_fs(|fs| {
            let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EEXIST)?;
            new_name(fs, &cred, dir, &last)?;
            fs.link(f.ino, dir, last.as_bytes())
        })
    }

    fn symlink(&self, name: &str, target: &str) -> Result<(), Errno> {
        let cred = cred::current();
        with_fs(|fs| {
            let (dir, last) = parent(fs, &cred, name, cowlab_ext2::Errno::EEXIST)?;
            new_name(fs, &cred, dir, &last)?;
            let (uid, gid, _) = new_owner(fs, &cred, dir, u32::from(S_IFLNK) | 0o777)?;
            fs.symlink(dir, last.as_bytes(), target.as_bytes(), uid, gid)
                .map(|_| ())
        })
    }

    fn readlink(&self, name: &str) -> Result<String, Errno> {
        let cred = cred::current();
        let bytes = with_fs(|fs| {
            let ino = resolve(fs, &cred, name, false)?;
            if !is_symlink(fs, ino)? {
                return Err(cowlab_ext2::Errno::EINVAL);
            }
            fs.readlink(ino)
        })?;
        String::from_utf8(bytes).map_err(|_| Errno::EINVAL)
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        let root = with_fs(|fs| Ok(fs.root()))?;
        read_dir(root)
    }
}

/// Every entry of the directory `ino`.
fn read_dir(ino: u32) -> Result<Vec<DirEntry>, Errno> {
    with_fs(|fs| {
        let mut out = Vec::new();
        fs.readdir(ino, 0, |e, _| {
            out.push(DirEntry {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                ino: u64::from(e.ino),
                kind: e.d_type,
            });
            true
        })?;
        Ok(out)
    })
}

/// An open ext2 directory: its inode and its absolute path (the base of `openat` relative to
/// it, and of `fchdir`).
pub struct Ext2Dir {
    pub ino: u32,
    path: String,
}

impl FileOps for Ext2Dir {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EISDIR)
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn fsync(&self) -> Result<(), Errno> {
        with_fs(|fs| fs.fsync(self.ino))
    }

    fn stat(&self) -> Stat {
        ext2_stat(self.ino)
    }

    fn statfs(&self) -> StatFs {
        ext2_statfs()
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        read_dir(self.ino)
    }

    fn dir_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
