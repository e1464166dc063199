//! hugetlb memfds (`memfd_create(MFD_HUGETLB)`): a `cowlab_mm::hugetlb::HugetlbFile` as an
//! open file, as Linux's hugetlbfs files: readable, not writable by `write(2)` (`EINVAL`, no
//! `write_iter`), sized in whole huge pages by `ftruncate` (`EINVAL` otherwise), filled by
//! `fallocate` (`ENOSPC` when the pool runs out) or by shared mappings.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::any::Any;

use cowlab_mm::hugetlb::HugetlbFile;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::rw::CHUNK;
use super::stat::{statfs_of, Stat, StatFs, ST_NODEV, ST_NOSUID, S_IFREG};
use crate::errno::Errno;
use crate::memory;

/// Linux's `HUGETLBFS_MAGIC`.
pub const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;

/// An open hugetlb memfd; the description holds one reference to the file.
pub struct HugetlbMemfd {
    /// `Some` until drop, which puts it.
    file: Option<Arc<HugetlbFile>>,
}

impl HugetlbMemfd {
    fn file(&self) -> &Arc<HugetlbFile> {
        self.file.as_ref().expect("the file lives until drop")
    }
}

impl Drop for HugetlbMemfd {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            HugetlbFile::put(file, memory::mm());
        }
    }
}

impl FileOps for HugetlbMemfd {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let mut kbuf = alloc::vec![0u8; to.count().min(CHUNK)];
        let mut done = 0;
        while to.count() > 0 {
            let want = to.count().min(CHUNK);
            let n = self.file().read_at(memory::mm(), io.pos, &mut kbuf[..want]);
            let copied = to.copy_to(&kbuf[..n]);
            io.pos += copied as u64;
            done += copied;
            if copied < want {
                break;
            }
        }
        to.finish(done)
    }

    fn write_iter(&self, _io: &mut Kiocb, _from: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.file().size())
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        let f = self.file();
        Stat {
            st_size: f.size() as i64,
            st_blocks: (f.cached_pages() * (f.page_bytes() / 512)) as i64,
            st_blksize: f.page_bytes() as i64,
            ..Stat::base(S_IFREG | 0o777, Arc::as_ptr(f) as u64 % 1_000_000)
        }
    }

    fn statfs(&self) -> StatFs {
        statfs_of(HUGETLBFS_MAGIC, ST_NOSUID | ST_NODEV)
    }

    fn hugetlb_file(&self) -> Option<&Arc<HugetlbFile>> {
        Some(self.file())
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        Ok(self.file().set_size(memory::mm(), len)?)
    }

    /// Mode 0 only here (Linux also punches holes).
    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        if mode != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        Ok(self.file().fallocate(memory::mm(), offset, len)?)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `memfd_create(name, MFD_HUGETLB)`: an empty hugetlb file open read-write, named as Linux
/// names memfd mappings.
pub fn create(name: &str, size: cowlab_mm::frame::HugeSize) -> Arc<super::OpenFile> {
    let file = HugetlbFile::new_sized(size, 0, &alloc::format!("/memfd:{name} (deleted)"));
    super::OpenFile::new(
        alloc::boxed::Box::new(HugetlbMemfd { file: Some(file) }),
        super::O_RDWR,
    )
}
