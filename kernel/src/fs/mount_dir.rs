//! The open root directory of an in-memory mount (the ramdisk's `/`, tmpfs's `/tmp`): one
//! `FileOps` for both, parameterized by what differs (its path, `stat`, `statfs`, and the
//! mounted directory that lists it).
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::any::Any;

use super::file::{DirEntry, FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::mount::DirInode;
use super::stat::{Stat, StatFs};
use crate::errno::Errno;

pub struct MountRootDir {
    /// The mounted directory (its entries).
    pub dir: &'static dyn DirInode,
    /// Its absolute path (`openat` relative to it, `fchdir`).
    pub path: &'static str,
    pub stat: fn() -> Stat,
    pub statfs: fn() -> StatFs,
}

impl FileOps for MountRootDir {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EISDIR)
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        (self.stat)()
    }

    fn statfs(&self) -> StatFs {
        (self.statfs)()
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        self.dir.getdents()
    }

    fn dir_path(&self) -> Option<&str> {
        Some(self.path)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
