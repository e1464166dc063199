//! Open tmpfs files and the `/tmp` directory (see `tmpfs` for the directory itself): a file's
//! data go through the memfd paths (`memfd::shmem_*`); writes, truncation and allocation
//! through a descriptor update the inode's times.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use cowlab_mm::shmem::ShmemObject;

use super::file::{DirEntry, FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::memfd::{shmem_fallocate, shmem_read, shmem_stat, shmem_write};
use super::stat::{tmp_statfs, Stat, StatFs, ST_NODEV, ST_NOSUID, S_IFDIR, S_IFREG};
use super::tmpfs::{self, TmpInode};
use crate::errno::Errno;
use crate::memory;

/// An open tmpfs file: its data, with one reference held by this description (put when it is
/// dropped), and its inode.
pub struct TmpfsFile {
    obj: Option<Arc<ShmemObject>>,
    pub inode: Arc<TmpInode>,
}

impl TmpfsFile {
    pub fn new(obj: Arc<ShmemObject>, inode: Arc<TmpInode>) -> TmpfsFile {
        TmpfsFile {
            obj: Some(obj),
            inode,
        }
    }

    pub fn obj(&self) -> &Arc<ShmemObject> {
        self.obj.as_ref().expect("the object lives until drop")
    }

    /// Gives the file the name `/tmp/name` (`link`, `linkat`).
    pub fn link(&self, name: &str) -> Result<(), Errno> {
        tmpfs::link_open(self.obj(), &self.inode, name)
    }
}

impl Drop for TmpfsFile {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            ShmemObject::put(obj, memory::mm());
        }
    }
}

impl FileOps for TmpfsFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        shmem_read(self.obj(), io, to)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        let n = shmem_write(self.obj(), io, from)?;
        self.inode.touch_modified();
        Ok(n)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.obj().size())
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

    fn mmap_target(&self, offset: u64, _len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        Ok((self.obj(), offset))
    }

    fn shmem_object(&self) -> Option<&Arc<ShmemObject>> {
        Some(self.obj())
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        self.obj().set_size(memory::mm(), len)?;
        self.inode.touch_modified();
        Ok(())
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        shmem_fallocate(self.obj(), mode, offset, len)?;
        self.inode.touch_modified();
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The `/tmp` directory.
pub struct TmpDir;

impl FileOps for TmpDir {
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
        Stat {
            st_dev: tmpfs::TMPFS_DEV,
            st_nlink: 2,
            ..Stat::base(S_IFDIR | 0o1777, tmpfs::TMPFS_ROOT_INO)
        }
    }

    fn statfs(&self) -> StatFs {
        tmp_statfs(ST_NOSUID | ST_NODEV)
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        super::mount::DirInode::getdents(&super::mount::TmpfsRoot)
    }

    fn dir_path(&self) -> Option<&str> {
        Some("/tmp")
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
