//! An open ext2 regular file (or symbolic link opened through `O_PATH`-like stat): reads and
//! writes go straight to the file's blocks through the crate (the page cache is the next
//! issue), a chunk at a time through a kernel buffer, the user copy done outside the
//! filesystem lock (a copy may fault, and the fault path must not wait for this lock).
//!
//! The description holds an open reference on the inode (`Ext2::open`), dropped at the last
//! close (`Ext2::release`): an unlinked file lives until then.
//!
//! `mmap` answers `ENODEV` (Linux's answer for a file without `mmap`): file mappings need the
//! page cache.
#![deny(unsafe_code)]

use core::any::Any;

use super::ext2_mount::with_fs;
use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::stat::{statfs_of, Stat, StatFs};
use crate::errno::Errno;

/// The most bytes moved under one hold of the filesystem lock.
const CHUNK: usize = 64 * 1024;
pub const EXT2_SUPER_MAGIC: u64 = 0xEF53;
/// `st_dev` of the root disk (`vdb` is major 254 minor 16 on Linux's virtio-blk).
pub const EXT2_DEV: u64 = (254 << 8) | 16;

/// `stat` of inode `ino` (zeroes but the number if it cannot be read: the error was reported).
pub fn ext2_stat(ino: u32) -> Stat {
    let Ok(st) = with_fs(|fs| fs.stat(ino)) else {
        return Stat::base(0, u64::from(ino));
    };
    Stat {
        st_dev: EXT2_DEV,
        st_ino: u64::from(st.ino),
        st_nlink: u64::from(st.nlink),
        st_mode: u32::from(st.mode),
        st_uid: st.uid,
        st_gid: st.gid,
        st_rdev: u64::from(st.rdev),
        st_size: st.size as i64,
        st_blksize: i64::from(st.blksize),
        st_blocks: st.blocks as i64,
        st_atime: i64::from(st.atime),
        st_mtime: i64::from(st.mtime),
        st_ctime: i64::from(st.ctime),
        ..Stat::default()
    }
}

/// `statfs` of the root filesystem (`f_type` 0xEF53).
pub fn ext2_statfs() -> StatFs {
    let Ok((s, ro)) = with_fs(|fs| Ok((fs.statfs(), fs.is_read_only()))) else {
        return statfs_of(EXT2_SUPER_MAGIC, 0);
    };
    let mut st = statfs_of(
        EXT2_SUPER_MAGIC,
        if ro { super::stat::ST_RDONLY } else { 0 },
    );
    st.f_bsize = u64::from(s.f_bsize);
    st.f_frsize = u64::from(s.f_bsize);
    st.f_blocks = s.f_blocks;
    st.f_bfree = s.f_bfree;
    st.f_bavail = s.f_bavail;
    st.f_files = s.f_files;
    st.f_ffree = s.f_ffree;
    st.f_namelen = u64::from(s.f_namelen);
    st.f_fsid = [EXT2_DEV as i32, 0];
    st
}

/// An open ext2 file.
pub struct Ext2File {
    pub ino: u32,
}

impl Ext2File {
    /// Opens inode `ino` (takes the open reference that keeps an unlinked inode alive).
    pub fn open(ino: u32) -> Result<Ext2File, Errno> {
        with_fs(|fs| fs.open(ino))?;
        Ok(Ext2File { ino })
    }

    fn size(&self) -> u64 {
        with_fs(|fs| fs.stat(self.ino)).map_or(0, |s| s.size)
    }

    /// The whole file, for exec (read before any address-space lock is taken).
    pub fn read_all(&self) -> Result<alloc::vec::Vec<u8>, Errno> {
        with_fs(|fs| {
            let size = fs.stat(self.ino)?.size as usize;
            let mut data = alloc::vec::Vec::new();
            data.try_reserve_exact(size)
                .map_err(|_| cowlab_ext2::Errno::ENOMEM)?;
            data.resize(size, 0);
            let n = fs.read(self.ino, 0, &mut data)?;
            data.truncate(n);
            Ok(data)
        })
    }
}

impl Drop for Ext2File {
    fn drop(&mut self) {
        // The last close of an unlinked inode frees it here.
        let _ = with_fs(|fs| fs.release(self.ino));
    }
}

impl FileOps for Ext2File {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let mut kbuf = alloc::vec::Vec::new();
        kbuf.try_reserve_exact(to.count().min(CHUNK))
            .map_err(|_| Errno::ENOMEM)?;
        kbuf.resize(to.count().min(CHUNK), 0);
        let mut done = 0;
        while to.count() > 0 {
            let want = to.count().min(CHUNK);
            let n = with_fs(|fs| fs.read(self.ino, io.pos, &mut kbuf[..want]));
            let n = match n {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            let copied = to.copy_to(&kbuf[..n]);
            io.pos += copied as u64;
            done += copied;
            if copied < want {
                break;
            }
        }
        to.finish(done)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        if io.append {
            io.pos = self.size();
        }
        let mut done = 0;
        while from.count() > 0 {
            let data = from.copy_from_vec(CHUNK)?;
            if data.is_empty() {
                break;
            }
            let written = match with_fs(|fs| fs.write(self.ino, io.pos, &data)) {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            done += written;
            io.pos += written as u64;
            if written < data.len() || from.faulted() {
                break;
            }
        }
        from.finish(done)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.size())
    }

    fn fsync(&self) -> Result<(), Errno> {
        with_fs(|fs| fs.fsync(self.ino))
    }

    fn stat(&self) -> Stat {
        ext2_stat(self.ino)
    }

    fn statfs(&self) -> StatFs {
        ext2_statfs()
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        with_fs(|fs| fs.truncate(self.ino, len))
    }

    /// The ext4-like subset a block map can hold (`cowlab_ext2::space`; Linux's ext2 itself
    /// answers `EOPNOTSUPP` to every mode).
    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        with_fs(|fs| fs.fallocate(self.ino, mode as u32, offset, len))
    }

    fn seek_data_hole(&self, offset: u64, hole: bool) -> Option<Result<u64, Errno>> {
        Some(with_fs(|fs| fs.seek_data_hole(self.ino, offset, hole)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A symbolic link opened with `O_PATH|O_NOFOLLOW` (for `lstat`): it can be stat-ed, not read.
pub struct Ext2Path {
    pub ino: u32,
}

impl FileOps for Ext2Path {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EBADF)
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn stat(&self) -> Stat {
        ext2_stat(self.ino)
    }

    fn statfs(&self) -> StatFs {
        ext2_statfs()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
