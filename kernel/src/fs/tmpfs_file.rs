//! Open tmpfs files (see `tmpfs` for the directory itself): a file's data go through the
//! memfd description (`memfd::Memfd`); writes, truncation and allocation through a descriptor
//! update the inode's times. Also the `stat`/`statfs` of `/tmp` for `mount_dir`.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::any::Any;

use cowlab_mm::shmem::ShmemObject;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::memfd::{shmem_stat, Memfd};
use super::stat::{tmp_statfs, Stat, StatFs, ST_NODEV, ST_NOSUID, S_IFDIR, S_IFREG};
use super::tmpfs::{self, TmpInode};
use crate::errno::Errno;

/// An open tmpfs file: its data as a memfd description holds them (one reference, put when
/// it is dropped: the same ownership and data paths), and its inode, whose times the writes,
/// truncation and allocation through the descriptor update.
pub struct TmpfsFile {
    data: Memfd,
    pub inode: Arc<TmpInode>,
}

impl TmpfsFile {
    pub fn new(obj: Arc<ShmemObject>, inode: Arc<TmpInode>) -> TmpfsFile {
        TmpfsFile {
            data: Memfd::new(obj),
            inode,
        }
    }

    pub fn obj(&self) -> &Arc<ShmemObject> {
        self.data.obj()
    }

    /// Gives the file the name `/tmp/name` (`link`, `linkat`).
    pub fn link(&self, name: &str) -> Result<(), Errno> {
        tmpfs::link_open(self.obj(), &self.inode, name)
    }
}

impl FileOps for TmpfsFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        self.data.read_iter(io, to)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        let n = self.data.write_iter(io, from)?;
        self.inode.touch_modified();
        Ok(n)
    }

    fn seek(&self) -> Seek {
        self.data.seek()
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        let inode = &self.inode;
        let mut st = shmem_stat(self.obj(), S_IFREG | inode.mode);
        st.st_dev = tmpfs::TMPFS_DEV;
        st.st_nlink = u64::from(inode.nlink());
        st.st_ino = inode.ino;
        st.st_uid = inode.uid;
        st.st_gid = inode.gid;
        let [a, m, c] = inode
            .times()
            .map(|us| ((us / 1_000_000) as i64, (us % 1_000_000 * 1000) as i64));
        (st.st_atime, st.st_atime_nsec) = a;
        (st.st_mtime, st.st_mtime_nsec) = m;
        (st.st_ctime, st.st_ctime_nsec) = c;
        st
    }

    fn statfs(&self) -> StatFs {
        tmp_statfs(ST_NOSUID | ST_NODEV)
    }

    fn mmap_target(&self, offset: u64, len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        self.data.mmap_target(offset, len)
    }

    fn shmem_object(&self) -> Option<&Arc<ShmemObject>> {
        self.data.shmem_object()
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        self.data.truncate(len)?;
        self.inode.touch_modified();
        Ok(())
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        self.data.fallocate(mode, offset, len)?;
        self.inode.touch_modified();
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `stat` of the `/tmp` directory (root's, sticky and world-writable).
pub fn tmp_dir_stat() -> Stat {
    Stat {
        st_dev: tmpfs::TMPFS_DEV,
        st_nlink: 2,
        ..Stat::base(S_IFDIR | 0o1777, tmpfs::TMPFS_ROOT_INO)
    }
}

/// `statfs` of `/tmp`.
pub fn tmp_dir_statfs() -> StatFs {
    tmp_statfs(ST_NOSUID | ST_NODEV)
}
