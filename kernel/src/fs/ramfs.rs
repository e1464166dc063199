//! The read-only ramdisk as files: its regular files (`/NAME`) and the root directory `/`
//! (Linux's initramfs is a ramfs; cowlab's is read-only, so `statfs` says `ST_RDONLY`).
#![deny(unsafe_code)]

use core::any::Any;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::stat::{statfs_of, Stat, StatFs, RAMFS_MAGIC, ST_RDONLY, S_IFDIR, S_IFREG};
use crate::errno::Errno;
use crate::ramdisk;

/// `statfs` of the ramdisk.
pub fn ramfs_statfs() -> StatFs {
    let mut st = statfs_of(RAMFS_MAGIC, ST_RDONLY);
    st.f_files = ramdisk::files().count() as u64 + 1;
    st
}

/// A regular file of the ramdisk.
pub struct RamFile(pub ramdisk::File);

impl FileOps for RamFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let data = self.0.data;
        let start = (io.pos.min(data.len() as u64)) as usize;
        let n = to.copy_to(&data[start..]);
        io.pos = (start + n) as u64;
        to.finish(n)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.0.data.len() as u64)
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        let data = self.0.data;
        Stat {
            st_size: data.len() as i64,
            st_blocks: data.len().div_ceil(512) as i64,
            ..Stat::base(S_IFREG | 0o555, 16 + (data.as_ptr() as u64 % 100_000))
        }
    }

    fn statfs(&self) -> StatFs {
        ramfs_statfs()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `stat` of the ramdisk's root directory.
pub fn root_stat() -> Stat {
    Stat {
        st_nlink: 2,
        ..Stat::base(S_IFDIR | 0o555, 1)
    }
}
