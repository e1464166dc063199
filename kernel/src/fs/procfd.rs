//! Opening `/proc/<pid>/fd/<n>` (Linux `proc_fd_link` as a "magic link": the open follows it
//! to the file the descriptor refers to and opens that afresh, a new open file description
//! with the new flags and its own offset):
//!
//! - a file opened by path is reopened by that path (Linux reopens the same dentry; the two
//!   differ only once the name is unlinked or replaced);
//! - a pipe end gives a new end of the same pipe, reader, writer or both by the access mode
//!   (Linux `fifo_open` on the pipe's inode);
//! - a memfd gives a new description of the same shmem object;
//! - other anonymous inodes (io_uring, eventfd, ...) have no open: `ENXIO`, as on Linux.
//!
//! `O_CREAT|O_EXCL` is `EEXIST` (the link exists), `O_DIRECTORY` on a non-directory `ENOTDIR`.
//! An `O_PATH` open of a pipe or memfd is a new description naming the same file (only
//! `fstat` and the like can use it).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::any::Any;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::memfd::Memfd;
use super::pipe::PipeEnd;
use super::stat::{Stat, StatFs};
use super::{O_ACCMODE, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_NOFOLLOW, O_PATH, O_RDWR, O_TRUNC};
use crate::errno::Errno;

/// `name` below `/proc/` if it is `<pid>/fd/<n>`: the open, else `None` (not such a name, or
/// an `O_NOFOLLOW` open, which looks at the link itself).
pub fn open(name: &str, flags: u32, mode: u32) -> Option<Result<Arc<OpenFile>, Errno>> {
    let (who, rest) = name.split_once('/')?;
    let fd = rest.strip_prefix("fd/")?;
    if fd.contains('/') || flags & O_NOFOLLOW != 0 {
        return None;
    }
    Some(reopen(who, fd, flags, mode))
}

fn reopen(who: &str, fd: &str, flags: u32, mode: u32) -> Result<Arc<OpenFile>, Errno> {
    let pid = super::procdir::pid_of(who).ok_or(Errno::ENOENT)?;
    let n: usize = fd.parse().map_err(|_| Errno::ENOENT)?;
    // Following the link needs the right to inspect the process (Linux `proc_fd_get_link`
    // through `proc_fd_access_allowed`), whatever the file's own mode would allow.
    super::procdir::may_inspect(pid)?;
    let file = super::procdir::fds_of(pid)
        .ok_or(Errno::ENOENT)?
        .into_iter()
        .find(|(i, _)| *i == n)
        .ok_or(Errno::ENOENT)?
        .1;
    if flags & (O_CREAT | super::tmpfs::O_EXCL) == O_CREAT | super::tmpfs::O_EXCL {
        return Err(Errno::EEXIST);
    }
    if let Some(path) = file.path.get() {
        return super::open_mode(path, flags, mode);
    }
    if flags & O_DIRECTORY != 0 {
        return Err(Errno::ENOTDIR);
    }
    if flags & O_PATH != 0 {
        // A new description that only names the same file (Linux opens the dentry afresh):
        // sharing the target's would hand out its offset and status flags.
        return Ok(OpenFile::new(Box::new(PathOnly(file)), flags & PATH_FLAGS));
    }
    let status = flags & !(O_CLOEXEC | O_CREAT | O_TRUNC | super::tmpfs::O_EXCL);
    let ops: Box<dyn FileOps> = if let Some(end) = file.downcast::<PipeEnd>() {
        let pipe = end.pipe.clone();
        match flags & O_ACCMODE {
            0 => Box::new(PipeEnd::new(pipe, false)),
            O_RDWR => Box::new(PipeBoth {
                read: PipeEnd::new(pipe.clone(), false),
                write: PipeEnd::new(pipe, true),
            }),
            _ => Box::new(PipeEnd::new(pipe, true)),
        }
    } else if let Some(m) = file.downcast::<Memfd>() {
        let fresh = Memfd::new(m.obj().clone());
        if flags & O_TRUNC != 0 && flags & O_ACCMODE != 0 {
            fresh.truncate(0)?;
        }
        Box::new(fresh)
    } else {
        return Err(Errno::ENXIO);
    };
    Ok(OpenFile::new(ops, status))
}

/// `O_PATH` keeps only these flags (Linux `O_PATH_FLAGS`).
const PATH_FLAGS: u32 = O_PATH | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW;

/// An `O_PATH` description of a pipe or memfd reopened through `/proc/<pid>/fd/<n>`: it
/// stats as the file and gives no access to its contents (the open file is `is_path`).
struct PathOnly(Arc<OpenFile>);

impl FileOps for PathOnly {
    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn stat(&self) -> Stat {
        self.0.ops.stat()
    }

    fn statfs(&self) -> StatFs {
        self.0.ops.statfs()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A pipe opened for reading and writing through `/proc/<pid>/fd/<n>`: counts as a reader
/// and a writer (Linux `fifo_open` with `FMODE_READ | FMODE_WRITE`).
struct PipeBoth {
    read: PipeEnd,
    write: PipeEnd,
}

impl FileOps for PipeBoth {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        self.read.read_iter(io, to)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        self.write.write_iter(io, from)
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn poll(&self, file: &OpenFile) -> u32 {
        self.read.poll(file) | self.write.poll(file)
    }

    /// Both ends' channels: readers' (data, hang-up) and writers' (room), so epoll and poll
    /// sleep on them like on a pipe end (Linux `pipe_poll` on a `FMODE_READ|FMODE_WRITE` file).
    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        let pipe = &self.read.pipe;
        Some([pipe.poll_channel(false), pipe.poll_channel(true)])
    }

    fn stat(&self) -> Stat {
        self.read.stat()
    }

    fn statfs(&self) -> StatFs {
        self.read.statfs()
    }

    fn fallocate(&self, _mode: i32, _offset: u64, _len: u64) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
