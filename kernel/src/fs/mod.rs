//! Files: open-file descriptions and each process's descriptor table.
//!
//! Model (Linux): a descriptor is an index into the process's [`FdTable`]; it names an
//! [`OpenFile`] (an open-file description: what the file is, its offset, its status flags),
//! shared by `dup` and by `fork`. `FD_CLOEXEC` belongs to the descriptor, not the description.
//! Files are the console (`/dev/console` and descriptors 0-2 of `init`), `/dev/null`, read-only
//! regular files of the ramdisk (the root directory `/`), pipe ends, memfds, the tmpfs at
//! `/tmp` (see `tmpfs`) and io_uring instances (see `io_uring`). Dropping the last descriptor
//! of a pipe end closes it (see `pipe`).

pub mod aio;
pub mod console;
pub mod guptest;
pub mod io_uring;
#[cfg(feature = "kcov")]
pub mod kcov;
pub mod pipe;
pub mod procfs;
pub mod tmpfs;
pub mod vda;

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::shmem::ShmemObject;

use crate::errno::Errno;
use crate::ramdisk;
use pipe::Pipe;

pub const O_ACCMODE: u32 = 3;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DIRECTORY: u32 = 0o200000;
pub const O_CLOEXEC: u32 = 0o2000000;

/// What an open file is.
pub enum FileKind {
    Console,
    Null,
    Regular(ramdisk::File),
    /// The root directory (only fstat and close make sense).
    Root,
    PipeRead(Arc<Pipe>),
    PipeWrite(Arc<Pipe>),
    /// A `memfd_create` file: a shmem object. The open-file description holds one reference,
    /// released with `ShmemObject::put` when the description is dropped.
    Memfd(Arc<ShmemObject>),
    /// `/sys/kernel/debug/gup_test` (see `guptest`); its long-term pins live in the file.
    GupTest(guptest::GupTestFile),
    /// A `/proc` file (see `procfs`).
    Proc(procfs::ProcFile),
    /// A tmpfs file (see `tmpfs`): its data, with one reference held by this description (put
    /// when it is dropped, as for `Memfd`), and its inode.
    Tmpfs(Arc<ShmemObject>, Arc<tmpfs::TmpInode>),
    /// The `/tmp` directory.
    TmpDir,
    /// An io_uring instance (see `io_uring`).
    IoUring(io_uring::IoUring),
    /// `/dev/vda`, the virtio block device (see `vda`).
    Vda,
    /// `/sys/kernel/debug/kcov` (see `kcov`; `kcov` feature only).
    #[cfg(feature = "kcov")]
    Kcov(kcov::KcovFile),
}

/// An open-file description.
pub struct OpenFile {
    pub kind: FileKind,
    pub offset: AtomicU64,
    /// `O_*` status flags (access mode, `O_APPEND`, `O_NONBLOCK`).
    pub flags: AtomicU32,
}

impl OpenFile {
    pub fn new(kind: FileKind, flags: u32) -> Arc<OpenFile> {
        match &kind {
            FileKind::PipeRead(p) => p.add_end(false),
            FileKind::PipeWrite(p) => p.add_end(true),
            _ => {}
        }
        Arc::new(OpenFile {
            kind,
            offset: AtomicU64::new(0),
            flags: AtomicU32::new(flags),
        })
    }

    pub fn readable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_ACCMODE != O_WRONLY
    }

    pub fn writable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_ACCMODE != 0
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        match &self.kind {
            FileKind::PipeRead(p) => p.drop_end(false),
            FileKind::PipeWrite(p) => p.drop_end(true),
            FileKind::Memfd(_) | FileKind::Tmpfs(..) => {
                match core::mem::replace(&mut self.kind, FileKind::Null) {
                    FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) => {
                        ShmemObject::put(obj, crate::memory::mm())
                    }
                    _ => unreachable!("matched above"),
                }
            }
            _ => {}
        }
    }
}

/// One descriptor slot.
#[derive(Clone)]
pub struct Fd {
    pub file: Arc<OpenFile>,
    pub cloexec: bool,
}

/// Linux's default `RLIMIT_NOFILE`.
pub const MAX_FDS: usize = 1024;

/// A process's descriptors.
#[derive(Clone, Default)]
pub struct FdTable {
    slots: Vec<Option<Fd>>,
}

impl FdTable {
    /// Descriptors 0, 1, 2 on the console (what `init` starts with).
    pub fn with_console() -> FdTable {
        let console = OpenFile::new(FileKind::Console, O_RDWR);
        let fd = Fd {
            file: console,
            cloexec: false,
        };
        FdTable {
            slots: alloc::vec![Some(fd.clone()), Some(fd.clone()), Some(fd)],
        }
    }

    pub fn get(&self, fd: i64) -> Result<Arc<OpenFile>, Errno> {
        self.slot(fd).map(|s| s.file.clone())
    }

    pub fn slot(&self, fd: i64) -> Result<&Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
            .ok_or(Errno::EBADF)
    }

    pub fn slot_mut(&mut self, fd: i64) -> Result<&mut Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(Errno::EBADF)
    }

    /// Installs `fd` at the lowest free slot at or above `min`.
    pub fn install_from(&mut self, min: usize, fd: Fd) -> Result<usize, Errno> {
        let index = (min..MAX_FDS)
            .find(|&i| self.slots.get(i).is_none_or(Option::is_none))
            .ok_or(Errno::EMFILE)?;
        self.set(index, fd);
        Ok(index)
    }

    /// Whether `n` more descriptors fit (checked before creating what would be installed, so a
    /// failure drops nothing while the caller holds locks).
    pub fn has_room_for(&self, n: usize) -> bool {
        let used = self.slots.iter().filter(|s| s.is_some()).count();
        MAX_FDS - used >= n
    }

    pub fn install(&mut self, fd: Fd) -> Result<usize, Errno> {
        self.install_from(0, fd)
    }

    /// Puts `fd` at `index`, closing what was there. Returns the old one (drop it outside
    /// locks: closing a pipe end wakes sleepers).
    pub fn set(&mut self, index: usize, fd: Fd) -> Option<Fd> {
        if self.slots.len() <= index {
            self.slots.resize(index + 1, None);
        }
        self.slots[index].replace(fd)
    }

    pub fn close(&mut self, fd: i64) -> Result<Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::take)
            .ok_or(Errno::EBADF)
    }

    /// Closes the `FD_CLOEXEC` descriptors (execve).
    pub fn close_on_exec(&mut self) -> Vec<Fd> {
        let mut closed = Vec::new();
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|f| f.cloexec) {
                closed.extend(slot.take());
            }
        }
        closed
    }

    /// Takes every descriptor (exit).
    pub fn take_all(&mut self) -> Vec<Fd> {
        self.slots.drain(..).flatten().collect()
    }
}

/// Opens `path` (absolute or relative to `/`, the working directory of every process).
pub fn open(path: &str, flags: u32) -> Result<Arc<OpenFile>, Errno> {
    open_mode(path, flags, 0)
}

/// Whether some component of `path` is longer than `NAME_MAX` (Linux checks this for every
/// path before looking anything up: `ENAMETOOLONG`).
pub fn name_too_long(path: &str) -> bool {
    path.split('/').any(|c| c.len() > tmpfs::NAME_MAX)
}

/// Opens `path` with the permission bits `mode` for a file `O_CREAT` or `O_TMPFILE` creates.
pub fn open_mode(path: &str, flags: u32, mode: u32) -> Result<Arc<OpenFile>, Errno> {
    if name_too_long(path) {
        return Err(Errno::ENAMETOOLONG);
    }
    // Linux keeps every other flag in `f_flags` (`do_dentry_open`), O_TMPFILE included.
    let status = flags & !(O_CLOEXEC | O_CREAT | O_TRUNC | tmpfs::O_EXCL);
    let tmpfile = tmpfs::tmpfile_flags(flags).transpose()?.is_some();
    if let Some(tmp) = tmpfs::parse(path) {
        let kind = match tmp? {
            tmpfs::TmpPath::Dir if tmpfile => tmpfs::open_tmpfile(flags, mode)?,
            tmpfs::TmpPath::Dir if flags & O_CREAT != 0 || flags & O_ACCMODE != 0 => {
                return Err(Errno::EISDIR)
            }
            tmpfs::TmpPath::Dir => FileKind::TmpDir,
            tmpfs::TmpPath::Name { name, .. } if tmpfile => {
                return Err(if tmpfs::exists(&name) {
                    Errno::ENOTDIR
                } else {
                    Errno::ENOENT
                })
            }
            tmpfs::TmpPath::Name {
                name,
                trailing_slash,
            } => tmpfs::open(&name, trailing_slash, flags, mode)?,
        };
        return Ok(OpenFile::new(kind, status));
    }
    if tmpfile {
        // O_TMPFILE elsewhere: the ramdisk is read-only; anything else is not a directory.
        return match open(path, 0)?.kind {
            FileKind::Root => Err(Errno::EROFS),
            _ => Err(Errno::ENOTDIR),
        };
    }
    if let Some(proc) = procfs::lookup(path) {
        let proc = proc?;
        if flags & O_ACCMODE != 0 && !proc.writable() {
            return Err(Errno::EACCES);
        }
        if flags & O_DIRECTORY != 0 {
            return Err(Errno::ENOTDIR);
        }
        return Ok(OpenFile::new(
            FileKind::Proc(proc),
            flags & !(O_CLOEXEC | O_CREAT | O_TRUNC),
        ));
    }
    let kind = match path {
        "/dev/console" | "/dev/tty" => FileKind::Console,
        "/dev/null" => FileKind::Null,
        "/sys/kernel/debug/gup_test" => FileKind::GupTest(guptest::GupTestFile::default()),
        #[cfg(feature = "kcov")]
        "/sys/kernel/debug/kcov" => FileKind::Kcov(kcov::KcovFile::default()),
        "/dev/vda" => vda::device().map(|_| FileKind::Vda)?,
        "/" | "." | "/." => FileKind::Root,
        _ => {
            let name = path.trim_start_matches("./").trim_start_matches('/');
            if name.is_empty() || name.contains('/') {
                return Err(Errno::ENOENT);
            }
            let file = ramdisk::find(name).ok_or(if flags & O_CREAT != 0 {
                Errno::EROFS
            } else {
                Errno::ENOENT
            })?;
            if flags & O_DIRECTORY != 0 {
                return Err(Errno::ENOTDIR);
            }
            if flags & O_ACCMODE != 0 || flags & O_TRUNC != 0 {
                return Err(Errno::EROFS);
            }
            FileKind::Regular(file)
        }
    };
    if matches!(kind, FileKind::Root) && flags & O_ACCMODE != 0 {
        return Err(Errno::EISDIR);
    }
    Ok(OpenFile::new(
        kind,
        flags & !(O_CLOEXEC | O_CREAT | O_TRUNC),
    ))
}

/// Linux `struct stat` (x86_64).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub pad0: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
    pub reserved: [i64; 3],
}

pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFREG: u32 = 0o100000;

/// `fstat` of an open file.
pub fn stat(file: &OpenFile) -> Stat {
    let mut st = Stat {
        st_nlink: 1,
        st_blksize: 4096,
        ..Stat::default()
    };
    match &file.kind {
        FileKind::Console => {
            st.st_mode = S_IFCHR | 0o620;
            st.st_rdev = (5 << 8) | 1;
            st.st_ino = 2;
        }
        FileKind::Null => {
            st.st_mode = S_IFCHR | 0o666;
            st.st_rdev = (1 << 8) | 3;
            st.st_ino = 3;
        }
        FileKind::Regular(f) => {
            st.st_mode = S_IFREG | 0o555;
            st.st_size = f.data.len() as i64;
            st.st_blocks = f.data.len().div_ceil(512) as i64;
            st.st_ino = 16 + (f.data.as_ptr() as u64 % 100_000);
        }
        FileKind::Root => {
            st.st_mode = S_IFDIR | 0o555;
            st.st_ino = 1;
            st.st_nlink = 2;
        }
        FileKind::PipeRead(p) | FileKind::PipeWrite(p) => {
            st.st_mode = S_IFIFO | 0o600;
            st.st_ino = Arc::as_ptr(p) as u64 % 1_000_000;
            st.st_blksize = 4096;
        }
        FileKind::GupTest(_) => {
            st.st_mode = S_IFREG | 0o600;
            st.st_ino = 4;
        }
        #[cfg(feature = "kcov")]
        FileKind::Kcov(_) => {
            st.st_mode = S_IFREG | 0o600;
            st.st_ino = 6;
        }
        FileKind::Proc(p) => {
            st.st_mode = S_IFREG | if p.writable() { 0o600 } else { 0o444 };
            st.st_ino = 0x1000 + p.pid as u64 * 8 + p.what as u64;
        }
        FileKind::Vda => {
            st.st_mode = S_IFBLK | 0o660;
            st.st_rdev = vda::VDA_RDEV;
            st.st_ino = 5;
        }
        FileKind::Memfd(obj) => {
            st.st_mode = S_IFREG | 0o777;
            st.st_size = obj.size() as i64;
            st.st_blocks = obj.cached_pages() as i64 * 8;
            st.st_ino = Arc::as_ptr(obj) as u64 % 1_000_000;
        }
        FileKind::Tmpfs(obj, inode) => {
            st.st_dev = tmpfs::TMPFS_DEV;
            st.st_mode = S_IFREG | inode.mode;
            st.st_nlink = u64::from(inode.nlink());
            st.st_size = obj.size() as i64;
            st.st_blocks = obj.cached_pages() as i64 * 8;
            st.st_ino = inode.ino;
            let [a, m, c] = inode
                .times()
                .map(|us| ((us / 1_000_000) as i64, (us % 1_000_000 * 1000) as i64));
            (st.st_atime, st.st_atime_nsec) = a;
            (st.st_mtime, st.st_mtime_nsec) = m;
            (st.st_ctime, st.st_ctime_nsec) = c;
        }
        FileKind::TmpDir => {
            st.st_dev = tmpfs::TMPFS_DEV;
            st.st_mode = S_IFDIR | 0o1777;
            st.st_ino = tmpfs::TMPFS_ROOT_INO;
            st.st_nlink = 2;
        }
        FileKind::IoUring(_) => {
            // Linux: an anonymous inode ("[io_uring]"), mode 0600 without a file type.
            st.st_mode = 0o600;
            st.st_ino = 5;
        }
    }
    st
}

/// Linux `struct statfs` (x86_64, 120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct StatFs {
    pub f_type: u64,
    pub f_bsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: u64,
    pub f_frsize: u64,
    pub f_flags: u64,
    pub f_spare: [u64; 4],
}

const _: () = assert!(core::mem::size_of::<StatFs>() == 120);

const RAMFS_MAGIC: u64 = 0x8584_58f6;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
const DEBUGFS_MAGIC: u64 = 0x6462_6720;
const PIPEFS_MAGIC: u64 = 0x5049_5045;
const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
/// `f_flags` bits (`ST_*`): valid, read-only, nosuid, nodev, noexec.
const ST_VALID: u64 = 0x20;
const ST_RDONLY: u64 = 1;
const ST_NOSUID: u64 = 2;
const ST_NODEV: u64 = 4;
const ST_NOEXEC: u64 = 8;

/// `fstatfs` of an open file: the file system Linux would report for it. tmpfs (`/tmp`,
/// memfds: Linux keeps those on its internal shmem mount) reports `TMPFS_MAGIC` with Linux's
/// default size, half of memory, in pages (`f_bfree` from the free frames, never above it),
/// and its inode limit (`tmpfs::MAX_INODES`);
/// the read-only ramdisk reports `RAMFS_MAGIC` (Linux's initramfs) with `ST_RDONLY`; `/proc`,
/// `/sys/kernel/debug`, pipes and io_uring report procfs, debugfs, pipefs and anon-inode; the
/// devices report `TMPFS_MAGIC` (Linux's devtmpfs).
pub fn statfs(file: &OpenFile) -> StatFs {
    let stats = crate::memory::mm().stats();
    let mut st = StatFs {
        f_bsize: 4096,
        f_frsize: 4096,
        f_namelen: tmpfs::NAME_MAX as u64,
        f_flags: ST_VALID,
        ..StatFs::default()
    };
    let tmpfs_sized = |st: &mut StatFs| {
        let half = stats.usable_frames / 2;
        st.f_blocks = half;
        st.f_bfree = half
            .saturating_sub(stats.shmem_pages)
            .min(stats.free_frames);
        st.f_bavail = st.f_bfree;
        st.f_files = tmpfs::MAX_INODES;
        st.f_ffree = tmpfs::MAX_INODES.saturating_sub(tmpfs::inodes_in_use());
        st.f_fsid = [tmpfs::TMPFS_DEV as i32, 0];
    };
    match &file.kind {
        FileKind::Tmpfs(..) | FileKind::TmpDir | FileKind::Memfd(_) => {
            st.f_type = tmpfs::TMPFS_MAGIC;
            st.f_flags |= ST_NOSUID | ST_NODEV;
            tmpfs_sized(&mut st);
        }
        FileKind::Console | FileKind::Null | FileKind::Vda => {
            st.f_type = tmpfs::TMPFS_MAGIC;
            st.f_flags |= ST_NOSUID;
            tmpfs_sized(&mut st);
        }
        FileKind::Regular(_) | FileKind::Root => {
            st.f_type = RAMFS_MAGIC;
            st.f_flags |= ST_RDONLY;
            st.f_files = ramdisk::files().count() as u64 + 1;
        }
        FileKind::Proc(_) => {
            st.f_type = PROC_SUPER_MAGIC;
            st.f_flags |= ST_NOSUID | ST_NODEV | ST_NOEXEC;
        }
        #[cfg(feature = "kcov")]
        FileKind::Kcov(_) => {
            st.f_type = DEBUGFS_MAGIC;
            st.f_flags |= ST_NOSUID | ST_NODEV | ST_NOEXEC;
        }
        FileKind::GupTest(_) => {
            st.f_type = DEBUGFS_MAGIC;
            st.f_flags |= ST_NOSUID | ST_NODEV | ST_NOEXEC;
        }
        FileKind::PipeRead(_) | FileKind::PipeWrite(_) => st.f_type = PIPEFS_MAGIC,
        FileKind::IoUring(_) => st.f_type = ANON_INODE_FS_MAGIC,
    }
    st
}

/// The entries of a directory for `getdents64`: (name, inode number, `d_type`).
pub fn dir_entries(file: &OpenFile) -> Result<Vec<(String, u64, u8)>, Errno> {
    const DT_DIR: u8 = 4;
    const DT_REG: u8 = 8;
    let mut out = Vec::new();
    match file.kind {
        FileKind::Root => {
            out.push((String::from("."), 1, DT_DIR));
            out.push((String::from(".."), 1, DT_DIR));
            out.push((String::from("tmp"), tmpfs::TMPFS_ROOT_INO, DT_DIR));
            for (i, f) in ramdisk::files().filter_map(Result::ok).enumerate() {
                out.push((String::from(f.name), 16 + i as u64, DT_REG));
            }
        }
        FileKind::TmpDir => {
            out.push((String::from("."), tmpfs::TMPFS_ROOT_INO, DT_DIR));
            out.push((String::from(".."), 1, DT_DIR));
            for (name, ino) in tmpfs::entries() {
                out.push((name, ino, DT_REG));
            }
        }
        _ => return Err(Errno::ENOTDIR),
    }
    Ok(out)
}
