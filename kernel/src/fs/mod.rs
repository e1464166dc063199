//! Files: open-file descriptions and each process's descriptor table.
//!
//! Model (Linux): a descriptor is an index into the process's [`FdTable`]; it names an
//! [`OpenFile`] (an open-file description: what the file is, its offset, its status flags),
//! shared by `dup` and by `fork`. `FD_CLOEXEC` belongs to the descriptor, not the description.
//! Files are the console (`/dev/console` and descriptors 0-2 of `init`), `/dev/null`, read-only
//! regular files of the ramdisk (the root directory `/`), and pipe ends. Dropping the last
//! descriptor of a pipe end closes it (see `pipe`).

pub mod aio;
pub mod console;
pub mod guptest;
pub mod pipe;
pub mod procfs;
pub mod vda;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::shmem::ShmemObject;

use crate::ramdisk;
use crate::syscall::Errno;
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
    /// `/dev/vda`, the virtio block device (see `vda`).
    Vda,
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
            FileKind::Memfd(_) => {
                if let FileKind::Memfd(obj) = core::mem::replace(&mut self.kind, FileKind::Null) {
                    ShmemObject::put(obj, crate::memory::mm());
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

/// Opens `path` (absolute or relative to `/`, the only directory).
pub fn open(path: &str, flags: u32) -> Result<Arc<OpenFile>, Errno> {
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
    }
    st
}
