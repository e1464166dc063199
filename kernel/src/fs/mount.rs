//! The mount table and the directory interface a file system implements to be mounted
//! (Linux's `vfsmount` list and a directory's `inode_operations`).
//!
//! A path is first made absolute and resolved lexically (`.` and `..`; there are no symbolic
//! links at this level), then the mount with the longest matching prefix takes the rest of it
//! ([`walk`]): `/` is the ext2 root disk, or the ramdisk without one ([`RootFs`]), `/tmp` the tmpfs ([`TmpfsRoot`]),
//! `/dev` the devices, `/proc` procfs and `/sys/kernel/debug` debugfs. The mounted directory
//! resolves what is below it (a name, or for a file system with subdirectories a relative
//! path). A disk file system mounts at `/` by implementing [`DirInode`] for its root and taking
//! the first row of [`MOUNTS`].
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use super::file::{DirEntry, FileOps, OpenFile, DT_DIR, DT_REG};
use super::mount_dir::MountRootDir;
use super::stat::ST_RDONLY;
use super::tmpfs_file::{self, TmpfsFile};
use super::{console, guptest, null, procdir, procfs, ramfs, tmpfs, vda};
use super::{O_ACCMODE, O_CREAT, O_DIRECTORY, O_PATH, O_TRUNC};
use crate::errno::Errno;
use crate::proc::cred::Cap;
use crate::ramdisk;

/// A mounted directory: what the path walk asks of it. `name` is what lies below the
/// directory: one component, or a relative path for a file system with subdirectories; a flat
/// directory answers a longer one with [`flat_error`].
pub trait DirInode: Send + Sync {
    /// Opens the directory itself (`open("/tmp")`, `O_TMPFILE` in it).
    fn open_self(&self, flags: u32, mode: u32) -> Result<Box<dyn FileOps>, Errno>;

    /// Opens `name` with the `open` flags; `O_CREAT` creates it with the permission bits
    /// `mode`; `trailing_slash`: the path ended in `/` (it must be a directory).
    fn open(
        &self,
        name: &str,
        trailing_slash: bool,
        flags: u32,
        mode: u32,
    ) -> Result<Box<dyn FileOps>, Errno>;

    /// Whether `name` is a directory (`ENOENT` if it does not exist).
    fn lookup(&self, name: &str) -> Result<bool, Errno>;

    fn mkdir(&self, name: &str, mode: u32) -> Result<(), Errno>;

    /// Removes the file `name` (the caller checked it is not a directory).
    fn unlink(&self, name: &str) -> Result<(), Errno>;

    /// Removes the directory `name` (the caller checked it is one).
    fn rmdir(&self, name: &str) -> Result<(), Errno>;

    /// Renames `old` to `new` within this file system (`RENAME_*` flags).
    fn rename(&self, old: &str, new: &str, flags: u64) -> Result<(), Errno>;

    /// Gives the open file `file` the new name `name` (which does not exist).
    fn link(&self, file: &OpenFile, name: &str) -> Result<(), Errno>;

    /// Creates the symbolic link `name` to `target`: `EEXIST` if `name` exists, else `EPERM`
    /// for a file system without symbolic links (Linux, when a directory has no `symlink`).
    fn symlink(&self, name: &str, _target: &str) -> Result<(), Errno> {
        match self.lookup(name) {
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) => Err(Errno::EPERM),
            Err(e) => Err(e),
        }
    }

    /// The target of the symbolic link `name` (`EINVAL` for anything else).
    fn readlink(&self, name: &str) -> Result<String, Errno> {
        self.lookup(name)?;
        Err(Errno::EINVAL)
    }

    /// The entries of the directory itself.
    fn getdents(&self) -> Result<Vec<DirEntry>, Errno>;
}

/// One row of the mount table.
pub struct Mount {
    /// Absolute, without a trailing slash (`/` for the root).
    pub path: &'static str,
    pub root: &'static dyn DirInode,
}

/// The mounts, root first.
pub static MOUNTS: [Mount; 6] = [
    Mount {
        path: "/",
        root: &RootFs,
    },
    Mount {
        path: "/tmp",
        root: &TmpfsRoot,
    },
    Mount {
        path: "/dev",
        root: &DevDir,
    },
    Mount {
        path: "/proc",
        root: &ProcDir,
    },
    Mount {
        path: "/sys/kernel/debug",
        root: &DebugDir,
    },
    Mount {
        path: "/sys/kernel/mm",
        root: &SysMmDir,
    },
];

/// `/proc/mounts` (Linux `show_vfsmnt`): one line per row of [`MOUNTS`], root first:
/// source, mount point, file-system type, options, and the two zeros of `fstab`'s dump and
/// pass fields. The types are the ones `statfs` reports (the root disk's ext2, or the
/// read-only ramdisk's ramfs, `/tmp` and `/dev` tmpfs, proc, debugfs, and the sysfs
/// directory `/sys/kernel/mm`).
pub fn mounts_table() -> String {
    let mut text = String::new();
    for mount in &MOUNTS {
        let (source, fstype, options) = match mount.path {
            "/" if super::ext2_mount::mounted() => ("/dev/vdb", "ext2", "rw"),
            "/" => ("rootfs", "ramfs", "ro"),
            "/tmp" => ("tmpfs", "tmpfs", "rw,nosuid,nodev"),
            "/dev" => ("devtmpfs", "devtmpfs", "rw,nosuid"),
            "/proc" => ("proc", "proc", "rw,nosuid,nodev,noexec"),
            "/sys/kernel/debug" => ("debugfs", "debugfs", "rw,nosuid,nodev,noexec"),
            _ => ("sysfs", "sysfs", "rw,nosuid,nodev,noexec"),
        };
        text.push_str(&alloc::format!(
            "{source} {} {fstype} {options} 0 0\n",
            mount.path
        ));
    }
    text
}

/// Where a path leads: a mount, and what lies below its root.
pub struct Walk {
    pub mount: &'static Mount,
    /// `None`: the mount's root itself.
    pub name: Option<String>,
    pub trailing_slash: bool,
}

/// Resolves the absolute path `path` lexically and finds its mount (the longest prefix).
pub fn walk(path: &str) -> Walk {
    let mut comps: Vec<&str> = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    let mut best = &MOUNTS[0];
    let mut depth = 0;
    for mount in &MOUNTS[1..] {
        let mcomps: Vec<&str> = mount.path.split('/').filter(|c| !c.is_empty()).collect();
        if mcomps.len() > depth && comps.starts_with(&mcomps) {
            best = mount;
            depth = mcomps.len();
        }
    }
    let rest = &comps[depth..];
    Walk {
        mount: best,
        name: (!rest.is_empty()).then(|| rest.join("/")),
        trailing_slash: path.ends_with('/') && !rest.is_empty(),
    }
}

/// [`walk`] with Linux's `may_lookup` on the directories of the file systems it crosses: a
/// path into another mount (`/tmp`, `/proc`, ...) first passes through `/` (and the
/// directories above the mount point) of the root file system, which need search permission
/// (`EACCES`) as within one file system. Callers with `CAP_DAC_OVERRIDE` skip the look-ups.
pub fn walk_checked(path: &str) -> Result<Walk, Errno> {
    let w = walk(path);
    if w.mount.path != "/"
        && !crate::proc::cred::has_cap(&crate::proc::cred::current(), Cap::DacOverride)
    {
        may_cross(w.mount.path)?;
    }
    Ok(w)
}

/// Search permission on each directory of the root file system above the mount point
/// `mount` (`/` for `/tmp`; `/`, `/sys`, `/sys/kernel` for `/sys/kernel/debug`). A missing
/// one (the ramdisk has no `/sys`) is not checked.
fn may_cross(mount: &str) -> Result<(), Errno> {
    let root = MOUNTS[0].root;
    let parent = mount.rsplit_once('/').map_or("", |(p, _)| p);
    let dir = match parent.trim_start_matches('/') {
        "" => root.open_self(O_PATH, 0),
        p => match root.open(p, false, O_PATH, 0) {
            Ok(dir) => Ok(dir),
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => Err(e),
        },
    }?;
    let st = dir.stat();
    let inode = super::perm::Owner {
        mode: st.st_mode,
        uid: st.st_uid,
        gid: st.st_gid,
    };
    super::perm::generic_permission(&crate::proc::cred::current(), inode, super::perm::MAY_EXEC)
}

/// For a flat directory, a path below one of its entries: `ENOTDIR` if the entry exists (a
/// file), else `ENOENT`.
pub fn flat_error(dir: &dyn DirInode, name: &str) -> Option<Errno> {
    let (first, _) = name.split_once('/')?;
    Some(if dir.lookup(first).is_ok() {
        Errno::ENOTDIR
    } else {
        Errno::ENOENT
    })
}

/// The `/` row: the ext2 root disk when it is mounted (`ext2_mount::mount_root`), else the
/// ramdisk (no root disk attached, or its mount failed).
pub struct RootFs;

impl RootFs {
    fn pick(&self) -> &'static dyn DirInode {
        if super::ext2_mount::mounted() {
            &super::ext2_dir::Ext2Root
        } else {
            &RamfsRoot
        }
    }
}

impl DirInode for RootFs {
    fn open_self(&self, flags: u32, mode: u32) -> Result<Box<dyn FileOps>, Errno> {
        self.pick().open_self(flags, mode)
    }
    fn open(
        &self,
        name: &str,
        trailing_slash: bool,
        flags: u32,
        mode: u32,
    ) -> Result<Box<dyn FileOps>, Errno> {
        self.pick().open(name, trailing_slash, flags, mode)
    }
    fn lookup(&self, name: &str) -> Result<bool, Errno> {
        self.pick().lookup(name)
    }
    fn mkdir(&self, name: &str, mode: u32) -> Result<(), Errno> {
        self.pick().mkdir(name, mode)
    }
    fn unlink(&self, name: &str) -> Result<(), Errno> {
        self.pick().unlink(name)
    }
    fn rmdir(&self, name: &str) -> Result<(), Errno> {
        self.pick().rmdir(name)
    }
    fn rename(&self, old: &str, new: &str, flags: u64) -> Result<(), Errno> {
        self.pick().rename(old, new, flags)
    }
    fn link(&self, file: &OpenFile, name: &str) -> Result<(), Errno> {
        self.pick().link(file, name)
    }
    fn symlink(&self, name: &str, target: &str) -> Result<(), Errno> {
        self.pick().symlink(name, target)
    }
    fn readlink(&self, name: &str) -> Result<String, Errno> {
        self.pick().readlink(name)
    }
    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        self.pick().getdents()
    }
}

/// The ramdisk's files, read-only: the root without a root disk.
pub struct RamfsRoot;

impl SpecialDir for RamfsRoot {
    fn file(&self, name: &str, _flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        ramdisk::find(name).map(|f| Ok(Box::new(ramfs::RamFile(f)) as Box<dyn FileOps>))
    }

    fn read_only(&self) -> bool {
        true
    }

    fn open_self(&self, flags: u32) -> Result<Box<dyn FileOps>, Errno> {
        if tmpfs::tmpfile_flags(flags).is_some() {
            return Err(Errno::EROFS);
        }
        if flags & O_ACCMODE != 0 {
            return Err(Errno::EISDIR);
        }
        Ok(Box::new(MountRootDir {
            dir: &RamfsRoot,
            path: "/",
            stat: ramfs::root_stat,
            statfs: ramfs::ramfs_statfs,
        }))
    }

    /// `.`, `..`, `tmp`, then the ramdisk's files.
    fn entries(&self) -> Result<Vec<DirEntry>, Errno> {
        let entry = |name: &str, ino, kind| DirEntry {
            name: String::from(name),
            ino,
            kind,
        };
        let mut out = alloc::vec![
            entry(".", 1, DT_DIR),
            entry("..", 1, DT_DIR),
            entry("tmp", tmpfs::TMPFS_ROOT_INO, DT_DIR),
        ];
        for (i, f) in ramdisk::files().filter_map(Result::ok).enumerate() {
            out.push(entry(f.name, 16 + i as u64, DT_REG));
        }
        Ok(out)
    }
}

/// The root of the tmpfs at `/tmp` (see `tmpfs`): one flat directory.
pub struct TmpfsRoot;

impl DirInode for TmpfsRoot {
    fn open_self(&self, flags: u32, mode: u32) -> Result<Box<dyn FileOps>, Errno> {
        if tmpfs::tmpfile_flags(flags).is_some() {
            return Ok(Box::new(tmpfs::open_tmpfile(flags, mode)?));
        }
        if flags & O_CREAT != 0 || flags & O_ACCMODE != 0 {
            return Err(Errno::EISDIR);
        }
        Ok(Box::new(MountRootDir {
            dir: &TmpfsRoot,
            path: "/tmp",
            stat: tmpfs_file::tmp_dir_stat,
            statfs: tmpfs_file::tmp_dir_statfs,
        }))
    }

    fn open(
        &self,
        name: &str,
        trailing_slash: bool,
        flags: u32,
        mode: u32,
    ) -> Result<Box<dyn FileOps>, Errno> {
        if let Some(e) = flat_error(self, name) {
            return Err(e);
        }
        Ok(Box::new(tmpfs::open(name, trailing_slash, flags, mode)?))
    }

    fn lookup(&self, name: &str) -> Result<bool, Errno> {
        if let Some(e) = flat_error(self, name) {
            return Err(e);
        }
        if tmpfs::exists(name) {
            Ok(false)
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// No subdirectories (Linux: `EPERM` when the file system has no `mkdir`).
    fn mkdir(&self, name: &str, _mode: u32) -> Result<(), Errno> {
        match self.lookup(name) {
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) if !name.contains('/') => Err(Errno::EPERM),
            Err(e) => Err(e),
        }
    }

    fn unlink(&self, name: &str) -> Result<(), Errno> {
        tmpfs::unlink(name)
    }

    fn rmdir(&self, name: &str) -> Result<(), Errno> {
        self.lookup(name)?;
        Err(Errno::ENOTDIR)
    }

    fn rename(&self, old: &str, new: &str, flags: u64) -> Result<(), Errno> {
        if let Some(e) = flat_error(self, new) {
            return Err(e);
        }
        tmpfs::rename(old, new, flags & super::namei::RENAME_NOREPLACE != 0)
    }

    fn link(&self, file: &OpenFile, name: &str) -> Result<(), Errno> {
        if let Some(e) = flat_error(self, name) {
            return Err(e);
        }
        match file.downcast::<TmpfsFile>() {
            Some(f) => f.link(name),
            None => Err(Errno::EXDEV),
        }
    }

    /// `.`, `..`, then the files in name order.
    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        let mut out = alloc::vec![
            DirEntry {
                name: String::from("."),
                ino: tmpfs::TMPFS_ROOT_INO,
                kind: DT_DIR,
            },
            DirEntry {
                name: String::from(".."),
                ino: 1,
                kind: DT_DIR,
            },
        ];
        let entries = tmpfs::entries()?;
        crate::heap::try_reserve(&mut out, entries.len())?;
        for (name, ino) in entries {
            out.push(DirEntry {
                name,
                ino,
                kind: DT_REG,
            });
        }
        Ok(out)
    }
}

/// A directory whose names cannot change: the special files (`/dev`, `/proc`,
/// `/sys/kernel/debug`: changes are `EPERM`) and the ramdisk (`read_only`: changes are `EROFS`,
/// and so is creating a name). Open and look up; nothing is created or removed.
trait SpecialDir: Send + Sync {
    /// The file `name` opened with `flags`: `None` if there is none.
    fn file(&self, name: &str, flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>>;

    /// Whether names are single components (procfs has `<pid>/` subdirectories).
    fn flat(&self) -> bool {
        true
    }

    /// A read-only file system rather than a directory that has no such operations.
    fn read_only(&self) -> bool {
        false
    }

    /// Opening the directory itself.
    fn open_self(&self, _flags: u32) -> Result<Box<dyn FileOps>, Errno> {
        Err(Errno::ENOENT)
    }

    /// The directory's entries.
    fn entries(&self) -> Result<Vec<DirEntry>, Errno> {
        Err(Errno::ENOENT)
    }

    /// The target of the symbolic link `name`: `None` if it is not one.
    fn link(&self, _name: &str) -> Option<Result<String, Errno>> {
        None
    }

    /// The directory `name` (`None`: the mount's root) opened: `None` if it is not one (the
    /// root of a directory without one cannot be opened or listed).
    fn dir(&self, _name: Option<&str>) -> Option<Box<dyn FileOps>> {
        None
    }
}

/// A directory opened for reading only (Linux `may_open`: `EISDIR` for write access or
/// `O_CREAT`).
fn open_dir_only(dir: Box<dyn FileOps>, flags: u32) -> Result<Box<dyn FileOps>, Errno> {
    if flags & O_ACCMODE != 0 || flags & O_CREAT != 0 {
        return Err(Errno::EISDIR);
    }
    Ok(dir)
}

fn special_error<T: SpecialDir>(dir: &T, name: &str) -> Option<Errno> {
    if dir.flat() {
        flat_error(dir, name)
    } else {
        None
    }
}

impl<T: SpecialDir> DirInode for T {
    fn open_self(&self, flags: u32, _mode: u32) -> Result<Box<dyn FileOps>, Errno> {
        match self.dir(None) {
            Some(dir) => open_dir_only(dir, flags),
            None => SpecialDir::open_self(self, flags),
        }
    }

    fn open(
        &self,
        name: &str,
        trailing_slash: bool,
        flags: u32,
        _mode: u32,
    ) -> Result<Box<dyn FileOps>, Errno> {
        if let Some(e) = special_error(self, name) {
            return Err(e);
        }
        if let Some(dir) = self.dir(Some(name)) {
            return open_dir_only(dir, flags);
        }
        let ro = self.read_only();
        let file = match self.file(name, flags) {
            Some(file) => file?,
            None if ro && flags & O_CREAT != 0 && trailing_slash => return Err(Errno::EISDIR),
            None if ro && flags & O_CREAT != 0 => return Err(Errno::EROFS),
            None => return Err(Errno::ENOENT),
        };
        if trailing_slash || flags & O_DIRECTORY != 0 {
            return Err(Errno::ENOTDIR);
        }
        if ro && (flags & O_ACCMODE != 0 || flags & O_TRUNC != 0) {
            return Err(Errno::EROFS);
        }
        Ok(file)
    }

    fn lookup(&self, name: &str) -> Result<bool, Errno> {
        if let Some(e) = special_error(self, name) {
            return Err(e);
        }
        if self.dir(Some(name)).is_some() {
            return Ok(true);
        }
        self.file(name, 0).ok_or(Errno::ENOENT)?.map(|_| false)
    }

    fn readlink(&self, name: &str) -> Result<String, Errno> {
        match self.link(name) {
            Some(target) => target,
            None => self.lookup(name).and(Err(Errno::EINVAL)),
        }
    }

    fn mkdir(&self, name: &str, _mode: u32) -> Result<(), Errno> {
        match self.lookup(name) {
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) if self.read_only() && !name.contains('/') => Err(Errno::EROFS),
            Err(e) => Err(e),
        }
    }

    fn unlink(&self, name: &str) -> Result<(), Errno> {
        self.lookup(name)?;
        Err(if self.read_only() {
            Errno::EROFS
        } else {
            Errno::EPERM
        })
    }

    fn rmdir(&self, name: &str) -> Result<(), Errno> {
        self.unlink(name)
    }

    fn rename(&self, old: &str, _new: &str, _flags: u64) -> Result<(), Errno> {
        self.lookup(old)?;
        Err(Errno::EROFS)
    }

    /// `EEXIST`, else `EROFS` on the ramdisk, `EPERM` where there is no `symlink` (Linux).
    fn symlink(&self, name: &str, _target: &str) -> Result<(), Errno> {
        if self.read_only() {
            return self.mkdir(name, 0);
        }
        match self.lookup(name) {
            Ok(_) => Err(Errno::EEXIST),
            Err(Errno::ENOENT) => Err(Errno::EPERM),
            Err(e) => Err(e),
        }
    }

    fn link(&self, file: &OpenFile, _name: &str) -> Result<(), Errno> {
        Err(match () {
            _ if file.downcast::<TmpfsFile>().is_some() => Errno::EXDEV,
            _ if self.read_only() && file.ops.statfs().f_flags & ST_RDONLY != 0 => Errno::EROFS,
            _ => Errno::EPERM,
        })
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        match self.dir(None) {
            Some(dir) => dir.getdents(),
            None => self.entries(),
        }
    }
}

/// `/dev`: the console (`console`, `tty`), `null`, `zero`, `full`, `random`, `urandom`, and `vda` when the machine has the disk.
pub struct DevDir;

impl SpecialDir for DevDir {
    fn file(&self, name: &str, _flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        Some(Ok(match name {
            "console" => Box::new(console::Console),
            // The caller's controlling terminal: ENXIO without one (Linux `tty_open_current_tty`).
            "tty" if !super::tty::has_ctty() => return Some(Err(Errno::ENXIO)),
            "tty" => Box::new(console::Console),
            "null" => Box::new(null::Null),
            "zero" | "full" | "random" | "urandom" => {
                Box::new(super::memdev::MemDev::by_name(name)?)
            }
            "vda" => {
                return Some(
                    vda::device().map(|_| Box::new(vda::VdaFile::open()) as Box<dyn FileOps>),
                )
            }
            _ => return None,
        }))
    }
}

/// `/sys/kernel/debug`: `gup_test`.
pub struct DebugDir;

impl SpecialDir for DebugDir {
    fn file(&self, name: &str, _flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        match name {
            "gup_test" => Some(Ok(Box::new(guptest::GupTestFile::default()))),
            #[cfg(feature = "kcov")]
            "kcov" => Some(Ok(Box::new(super::kcov::KcovFile::default()))),
            _ => None,
        }
    }
}

/// `/sys/kernel/mm`: `transparent_hugepage/{enabled,defrag,use_zero_page,hpage_pmd_size}`
/// (`sysmm`).
pub struct SysMmDir;

impl SpecialDir for SysMmDir {
    fn file(&self, name: &str, flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        super::sysmm::SysMmFile::open(name, flags)
    }

    fn flat(&self) -> bool {
        false
    }
}

/// `/proc` (see `procfs`): `meminfo`, `cowlab/*`, `<pid>/*` and `self/*`; the files that are
/// not writable refuse write access (`EACCES`).
pub struct ProcDir;

impl SpecialDir for ProcDir {
    fn file(&self, name: &str, flags: u32) -> Option<Result<Box<dyn FileOps>, Errno>> {
        let proc = match procfs::lookup(&alloc::format!("/proc/{name}"))? {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        if flags & O_ACCMODE != 0 && !proc.writable() {
            return Some(Err(Errno::EACCES));
        }
        // A sysctl file is root's: its mode decides who opens it (Linux `proc_sys_permission`).
        if let Some(mode) = proc.sysctl_mode() {
            let owner = super::perm::Owner {
                mode: super::stat::S_IFREG | mode,
                uid: 0,
                gid: 0,
            };
            if let Err(e) = super::perm::may_open(&crate::proc::cred::current(), owner, flags) {
                return Some(Err(e));
            }
        }
        Some(Ok(Box::new(proc)))
    }

    fn flat(&self) -> bool {
        false
    }

    fn link(&self, name: &str) -> Option<Result<String, Errno>> {
        procfs::readlink(name)
    }

    /// `/proc` itself, `/proc/<pid>` (`self` too) and `/proc/<pid>/fd` are directories
    /// (`procdir`).
    fn dir(&self, name: Option<&str>) -> Option<Box<dyn FileOps>> {
        Some(match name {
            None => Box::new(procdir::ProcDirFile::root()),
            Some(n) => Box::new(procdir::ProcDirFile::named(n)?),
        })
    }
}
