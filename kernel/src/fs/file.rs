//! The seam between the system calls and the file types: [`FileOps`], what an open file can do,
//! with one implementation per file type, each in its own module (`console`, `null`, `ramfs`,
//! `pipe`, `memfd`, `tmpfs_file`, `proc_file`, `guptest`, `vda`, `io_uring`), and
//! [`OpenFile`], the open-file description that holds one (Linux `struct file` and its
//! `file_operations`). The system calls decode their arguments and call the functions of
//! `fs::rw`, which check what is common to every file (access mode, positions, `ESPIPE`) and
//! call down through this trait; nothing above `fs/` matches on the type of a file.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::shmem::ShmemObject;

use super::iter::IoIter;
use super::stat::{Stat, StatFs};
use super::vda::{AsyncDone, Op, Started};
use super::{O_ACCMODE, O_NONBLOCK, O_PATH, O_WRONLY};
use crate::errno::{Errno, SysResult};

/// How `lseek` and positioned I/O treat a file (Linux `llseek` and `FMODE_PREAD`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Seek {
    /// No position: `lseek`, `pread64`, `pwrite64` answer `ESPIPE` (pipes, terminals).
    Stream,
    /// Any non-negative position; `SEEK_END` is relative to this size (`generic_file_llseek`).
    Size(u64),
    /// Positions within `[0, size]` only (`fixed_size_llseek`: block devices).
    Fixed(u64),
    /// Positions are addresses: any 64-bit value, wrapping, with no end (Linux
    /// `FMODE_UNSIGNED_OFFSET` and `mem_lseek`: `/proc/<pid>/mem`).
    Address,
}

/// One directory entry for `getdents64`.
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    /// `DT_*`.
    pub kind: u8,
}

pub const DT_DIR: u8 = 4;
pub const DT_REG: u8 = 8;

/// One read or write in progress (Linux `struct kiocb`): the file and the position, which the
/// file type moves on by what it transferred.
pub struct Kiocb<'f> {
    pub file: &'f OpenFile,
    pub pos: u64,
    /// A write at the file's own position with `O_APPEND`: the file type starts it at its end.
    pub append: bool,
}

impl Kiocb<'_> {
    pub fn nonblock(&self) -> bool {
        self.file.flags.load(Ordering::Relaxed) & O_NONBLOCK != 0
    }
}

/// What an open file can do. Every method has Linux's answer for a file that cannot do it, so a
/// file type implements only what it supports.
pub trait FileOps: Send + Sync {
    /// Reads at `io.pos` into `to`, moving `io.pos` on; bytes read (Linux `read_iter`).
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }

    /// Writes `from` at `io.pos` (its end with `io.append`), moving `io.pos` on; bytes written.
    fn write_iter(&self, _io: &mut Kiocb, _from: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EBADF)
    }

    /// Whether an I/O on `file` completes later ([`FileOps::start_async`]) rather than inside
    /// the call (Linux AIO's `-EIOCBQUEUED`).
    fn is_async(&self, _file: &OpenFile) -> bool {
        false
    }

    /// Starts an asynchronous transfer at `pos` (only when [`FileOps::is_async`]): the user
    /// memory is taken now, `done` runs with the result when the device finishes.
    fn start_async(&self, _op: Op, _iter: &mut IoIter, _pos: u64, _done: AsyncDone) -> Started {
        Started::Done(-(Errno::EINVAL as i64))
    }

    /// How positions work on this file.
    fn seek(&self) -> Seek;

    /// `fsync`/`fdatasync` (Linux `vfs_fsync`): `EINVAL` for files without one.
    fn fsync(&self) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }

    fn stat(&self) -> Stat;

    /// The file system the file lives on, as `fstatfs` reports it.
    fn statfs(&self) -> StatFs;

    fn ioctl(&self, _file: &OpenFile, _cmd: u64, _arg: u64) -> SysResult {
        Err(Errno::ENOTTY)
    }

    /// The poll events ready now (Linux `f_op->poll`); files that never wait are always
    /// readable and writable (`DEFAULT_POLLMASK`).
    fn poll(&self, _file: &OpenFile) -> u32 {
        super::poll::DEFAULT_POLLMASK
    }

    /// The wait channels woken whenever the answer of [`FileOps::poll`] may change: readers'
    /// (input events, hang-ups) and writers' (room to write), the same one twice for a file with
    /// one queue (Linux: the wait queues `f_op->poll` hands to `poll_wait`, and the event key of
    /// their wake-ups). epoll links to them (`proc::waitlink`). `None`: the file has no poll
    /// method of its own (regular files, directories, most devices), which epoll refuses with
    /// `EPERM` as Linux's `file_can_poll`.
    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        None
    }

    /// A directory's entries; `ENOTDIR` for other files.
    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        Err(Errno::ENOTDIR)
    }

    /// For a directory: its absolute path (the base of paths relative to its descriptor).
    fn dir_path(&self) -> Option<&str> {
        None
    }

    /// The memory object an `mmap` of the file at `offset` for `len` bytes maps, and the
    /// offset in it (Linux `f_op->mmap`); `ENODEV` for files that cannot be mapped.
    fn mmap_target(&self, _offset: u64, _len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        Err(Errno::ENODEV)
    }

    /// For a file with a page cache (ext2): the object a mapping of it holds, which keeps the
    /// file open while mapped (Linux `f_op->mmap` of a disk file). `None`: see `mmap_target`.
    fn mmap_file(&self) -> Option<Result<cowlab_mm::pagecache::FileRef, Errno>> {
        None
    }

    /// The hugetlb file of a `MFD_HUGETLB` memfd (`hugetlbfs`), which mmap maps in huge pages.
    fn hugetlb_file(&self) -> Option<&Arc<cowlab_mm::hugetlb::HugetlbFile>> {
        None
    }

    /// The shmem object holding the file's data (memfds, tmpfs files): where seals live.
    fn shmem_object(&self) -> Option<&Arc<ShmemObject>> {
        None
    }

    /// `ftruncate` (the descriptor is writable): `EINVAL` where a size cannot be set.
    fn truncate(&self, _len: u64) -> Result<(), Errno> {
        Err(Errno::EINVAL)
    }

    /// `fallocate` (the descriptor is writable, `offset >= 0`, `len > 0`).
    fn fallocate(&self, _mode: i32, _offset: u64, _len: u64) -> Result<(), Errno> {
        Err(Errno::ENODEV)
    }

    /// `SEEK_DATA` (`hole` false) or `SEEK_HOLE` from `offset` (`0 <= offset`) for a file that
    /// knows its holes; `None`: the generic answer (all data up to the size).
    fn seek_data_hole(&self, _offset: u64, _hole: bool) -> Option<Result<u64, Errno>> {
        None
    }

    /// The concrete type, for the few callers that need it (an io_uring descriptor for
    /// `io_uring_enter`, a pipe for `vmsplice`, a tmpfs file for `linkat`).
    fn as_any(&self) -> &dyn Any;
}

/// An open-file description: the file, its position and its status flags; shared by `dup` and
/// `fork`. Dropping the last reference drops the file type's state (a pipe end closes, a
/// shmem reference is put).
pub struct OpenFile {
    pub ops: Box<dyn FileOps>,
    pub offset: AtomicU64,
    /// `O_*` status flags (access mode, `O_APPEND`, `O_NONBLOCK`, `O_DIRECT`).
    pub flags: AtomicU32,
    /// The absolute path it was opened by (Linux `f_path`, what `/proc/<pid>/fd/<n>` names);
    /// unset for files no path names (pipes, memfds, io_uring).
    pub path: spin::Once<String>,
}

impl OpenFile {
    pub fn new(ops: Box<dyn FileOps>, flags: u32) -> Arc<OpenFile> {
        Arc::new(OpenFile {
            ops,
            offset: AtomicU64::new(0),
            flags: AtomicU32::new(flags),
            path: spin::Once::new(),
        })
    }

    /// The target of its `/proc/<pid>/fd/<n>` link (Linux `d_path`): the path it was opened
    /// by; a pipe is `pipe:[ino]` as on Linux; any other file without a path
    /// `anon_inode:[ino]` (Linux names the kind of anonymous inode; cowlab its number).
    pub fn link_target(&self) -> String {
        if let Some(path) = self.path.get() {
            return path.clone();
        }
        let st = self.ops.stat();
        if st.st_mode & super::stat::S_IFMT == super::stat::S_IFIFO {
            alloc::format!("pipe:[{}]", st.st_ino)
        } else {
            alloc::format!("anon_inode:[{}]", st.st_ino)
        }
    }

    /// An `O_PATH` description: it names a file but gives no access to its contents (Linux
    /// `FMODE_PATH`), whatever access mode the open asked for.
    pub fn is_path(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & O_PATH != 0
    }

    pub fn readable(&self) -> bool {
        !self.is_path() && self.flags.load(Ordering::Relaxed) & O_ACCMODE != O_WRONLY
    }

    pub fn writable(&self) -> bool {
        !self.is_path() && self.flags.load(Ordering::Relaxed) & O_ACCMODE != 0
    }

    /// The file type as `T`, if it is one.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.ops.as_any().downcast_ref::<T>()
    }
}
