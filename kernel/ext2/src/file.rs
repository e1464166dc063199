//! File contents: read and write at an offset, truncate. Data blocks go straight to the device
//! (the page cache is the next layer up); holes read as zeroes; the bytes past end-of-file in the
//! last block are kept zero, so growing a file (truncate up, or a write past the end) exposes
//! zeroes, as on Linux.

use alloc::vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;
use crate::layout::*;

/// Linux's `relatime`: atime moves when it is not newer than mtime/ctime, or a day old.
fn relatime_due(inode: &Inode, now: u32) -> bool {
    inode.atime <= inode.mtime
        || inode.atime <= inode.ctime
        || now.wrapping_sub(inode.atime) >= 86400
}

impl<D: BlockDevice> Ext2<D> {
    pub(crate) fn regular(&mut self, ino: u32) -> Result<Inode> {
        let inode = self.read_live(ino)?;
        if inode.is_dir() {
            return Err(Errno::EISDIR);
        }
        if !inode.is_reg() {
            return Err(Errno::EINVAL);
        }
        Ok(inode)
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many (0 at or past end-of-file).
    pub fn read(&mut self, ino: u32, off: u64, buf: &mut [u8]) -> Result<usize> {
        let mut inode = self.regular(ino)?;
        if off >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(inode.size - off) as usize;
        let bs = self.bs as usize;
        let mut tmp = vec![0u8; bs];
        let mut done = 0;
        while done < n {
            let pos = off + done as u64;
            let lblk = pos / bs as u64;
            let boff = (pos % bs as u64) as usize;
            let len = (bs - boff).min(n - done);
            let blk = self.bmap(ino, &inode, lblk)?;
            let dst = &mut buf[done..done + len];
            if blk == 0 {
                dst.fill(0);
            } else if len == bs {
                self.disk.read_data(blk, dst)?;
            } else {
                self.disk.read_data(blk, &mut tmp)?;
                dst.copy_from_slice(&tmp[boff..boff + len]);
            }
            done += len;
        }
        let now = self.now();
        if !self.read_only && relatime_due(&inode, now) {
            inode.atime = now;
            self.write_inode(ino, &inode)?;
        }
        Ok(n)
    }

    /// Zeroes the bytes from `from` to the end of the block that holds that offset.
    pub(crate) fn zero_block_tail(&mut self, ino: u32, inode: &Inode, from: u64) -> Result<()> {
        let bs = self.bs as u64;
        if from.is_multiple_of(bs) {
            return Ok(());
        }
        let blk = self.bmap(ino, inode, from / bs)?;
        if blk == 0 {
            return Ok(());
        }
        let mut tmp = vec![0u8; bs as usize];
        self.disk.read_data(blk, &mut tmp)?;
        tmp[(from % bs) as usize..].fill(0);
        self.disk.write_data(blk, &tmp)
    }

    /// Sets the `large_file` feature the first time a file passes 2 GiB (as Linux does).
    pub(crate) fn note_size(&mut self, size: u64) {
        if size > i32::MAX as u64 {
            self.sb.feature_ro_compat |= RO_COMPAT_LARGE_FILE;
        }
    }

    /// Writes `data` at `off`, allocating blocks as needed. A short count is returned if the disk
    /// fills up after some bytes were written; `ENOSPC` if none were. `EFBIG` at the size limit.
    pub fn write(&mut self, ino: u32, off: u64, data: &[u8]) -> Result<usize> {
        self.writable()?;
        let mut inode = self.regular(ino)?;
        if data.is_empty() {
            return Ok(0);
        }
        let max = self.max_file_size();
        if off >= max {
            return Err(Errno::EFBIG);
        }
        let end = off.saturating_add(data.len() as u64).min(max);
        let n = (end - off) as usize;
        if off > inode.size {
            self.zero_block_tail(ino, &inode, inode.size)?;
        }
        let bs = self.bs as usize;
        let mut tmp = vec![0u8; bs];
        let mut goal = 0;
        let mut done = 0;
        let mut failure = None;
        while done < n {
            let pos = off + done as u64;
            let lblk = pos / bs as u64;
            let boff = (pos % bs as u64) as usize;
            let len = (bs - boff).min(n - done);
            if goal == 0 && lblk > 0 {
                // Locality: continue right after the previous block of the file.
                if let Ok(prev) = self.bmap(ino, &inode, lblk - 1) {
                    if prev != 0 {
                        goal = prev + 1;
                    }
                }
            }
            let (blk, new) = match self.bmap_alloc(ino, &mut inode, lblk, &mut goal) {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let src = &data[done..done + len];
            let mut r = Ok(());
            if len == bs {
                r = self.disk.write_data(blk, src);
            } else {
                if new {
                    tmp.fill(0);
                } else {
                    r = self.disk.read_data(blk, &mut tmp);
                }
                if r.is_ok() {
                    tmp[boff..boff + len].copy_from_slice(src);
                    r = self.disk.write_data(blk, &tmp);
                }
            }
            if let Err(e) = r {
                failure = Some(e);
                break;
            }
            done += len;
        }
        let new_size = off + done as u64;
        if new_size > inode.size {
            inode.size = new_size;
            self.note_size(new_size);
        }
        if done > 0 {
            let now = self.now();
            inode.mtime = now;
            inode.ctime = now;
        }
        self.write_inode(ino, &inode)?;
        match failure {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// `truncate`/`ftruncate`: grows (a hole) or shrinks (freeing data and indirect blocks).
    pub fn truncate(&mut self, ino: u32, size: u64) -> Result<()> {
        self.writable()?;
        let mut inode = self.regular(ino)?;
        if size > self.max_file_size() {
            return Err(Errno::EFBIG);
        }
        let bs = self.bs as u64;
        if size < inode.size {
            self.zero_block_tail(ino, &inode, size)?;
            let r = self.free_blocks_from(ino, &mut inode, size.div_ceil(bs));
            if r.is_err() {
                self.write_inode(ino, &inode)?;
                return r;
            }
        } else if size > inode.size {
            self.zero_block_tail(ino, &inode, inode.size)?;
            self.note_size(size);
        }
        inode.size = size;
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, &inode)
    }
}
