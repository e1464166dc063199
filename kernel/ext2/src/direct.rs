//! Direct I/O support (Linux `ext2_direct_IO` through `iomap`/`get_block`): the disk blocks
//! under a range of a regular file, so the caller can move the data between user memory and
//! the device itself. The crate never touches the data; it only maps (and, for a write,
//! allocates) the blocks and updates the inode.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;

impl<D: BlockDevice> Ext2<D> {
    /// The disk blocks of logical blocks `[first, first + count)` of regular file `ino`, in
    /// order; 0 for a hole.
    pub fn block_map(&mut self, ino: u32, first: u64, count: u64) -> Result<Vec<u32>> {
        let inode = self.regular(ino)?;
        (first..first + count)
            .map(|lblk| self.bmap(ino, &inode, lblk))
            .collect()
    }

    /// Makes sure every block under `[off, off + len)` of regular file `ino` is allocated (Linux
    /// `block_page_mkwrite` -> `__block_write_begin`): a store through a shared mapping into a
    /// hole gets its blocks when the page is first dirtied, so a full disk is `ENOSPC` at the
    /// store (the kernel's `SIGBUS`) rather than a page lost at writeback. Blocks already there
    /// cost one map lookup each and change nothing; missing ones are allocated as
    /// [`Self::direct_write_begin`] does (zeroed). The range is cut at the size, which this
    /// never grows: the caller computed `len` from its cache's size, and a truncation may have
    /// cut the file since (the filesystem is truncated before the cache); a range wholly past
    /// the size is `ENXIO` (the page was truncated: the store's `SIGBUS`; Linux
    /// `block_page_mkwrite` overloads `-EFAULT`).
    pub fn allocate_range(&mut self, ino: u32, off: u64, len: u64) -> Result<()> {
        let inode = self.regular(ino)?;
        let bs = self.bs as u64;
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?.min(inode.size);
        if off >= end {
            return Err(Errno::ENXIO);
        }
        let len = end - off;
        for lblk in off / bs..end.div_ceil(bs) {
            if self.bmap(ino, &inode, lblk)? == 0 {
                return self.direct_write_begin(ino, off, len).map(drop);
            }
        }
        Ok(())
    }

    /// Prepares a direct write of `[off, off + len)`: every missing block is allocated and
    /// written with zeroes first (ext2 has no unwritten state, so a block whose data transfer
    /// then fails, or that the write covers only partly, must not show an earlier owner's
    /// bytes), the size grows to cover the range, and mtime/ctime move. Returns the range's
    /// blocks (as [`Self::block_map`]). `EFBIG` past the size limit; `ENOSPC` (nothing
    /// changed but the blocks already allocated, which the size then covers) if the disk fills.
    pub fn direct_write_begin(&mut self, ino: u32, off: u64, len: u64) -> Result<Vec<u32>> {
        self.writable()?;
        let mut inode = self.regular(ino)?;
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > self.max_file_size() {
            return Err(Errno::EFBIG);
        }
        if off > inode.size {
            self.zero_block_tail(ino, &inode, inode.size)?;
        }
        let bs = self.bs as u64;
        let zero = vec![0u8; bs as usize];
        let mut goal = 0;
        let mut blocks = Vec::new();
        let mut failure = None;
        for lblk in off / bs..end.div_ceil(bs) {
            let r = self
                .bmap_alloc(ino, &mut inode, lblk, &mut goal)
                .and_then(|(blk, new)| match new {
                    true => self.disk.write_data(blk, &zero).map(|()| blk),
                    false => Ok(blk),
                });
            match r {
                Ok(blk) => blocks.push(blk),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        // On a failure the size still covers the blocks allocated (zeroes): a block past the
        // size is an e2fsck error on ext2.
        let covered = match failure {
            None => end,
            Some(_) => ((off / bs + blocks.len() as u64) * bs).min(end),
        };
        if covered > inode.size {
            inode.size = covered;
            self.note_size(covered);
        }
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, &inode)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(blocks),
        }
    }
}
