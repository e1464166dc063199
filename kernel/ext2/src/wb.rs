//! Block mapping for a write-back page cache (Linux ext2's `write_begin`/`write_end` and
//! `writepages` through `ext2_get_block`): `write(2)` into the cache allocates the blocks under
//! the bytes and moves the size at the call ([`Ext2::write_begin`], so a full disk is `ENOSPC`
//! there), and writeback later asks where a run of pages goes ([`Ext2::writeback_blocks`]) and
//! moves the data itself. The crate never sees the data on either path.
//!
//! Unlike [`Ext2::direct_write_begin`], new blocks are not zeroed on the disk: the cache pages
//! over them hold the file's bytes (zeroes where nothing was written) and writeback stores whole
//! blocks from them. Until then a new block's old contents are on the disk, unreachable through
//! the kernel (the dirty page is cached until it is written), as with Linux's ext2 after a crash.

use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;

/// The page cache's page (the kernel's `PAGE_SIZE`): a short [`Ext2::write_begin`] cares about
/// the page its count ends in.
const PAGE: u64 = 4096;

impl<D: BlockDevice> Ext2<D> {
    /// Prepares a buffered write of `[off, off + len)` to regular file `ino`: every missing block
    /// under the range is allocated (contents left to the caller's writeback), the size grows to
    /// cover what got blocks, and mtime/ctime move (the inode is written to the buffer cache only
    /// if something changed). Returns the bytes from `off` that have blocks: `len`, or fewer
    /// when the disk filled (`ENOSPC` if none did). `EFBIG` at or past the size limit; a range
    /// crossing it is cut there.
    pub fn write_begin(&mut self, ino: u32, off: u64, len: u64) -> Result<u64> {
        self.writable()?;
        let mut inode = self.regular(ino)?;
        let max = self.max_file_size();
        if off >= max {
            return Err(Errno::EFBIG);
        }
        let end = off.saturating_add(len).min(max);
        if len == 0 {
            return Ok(0);
        }
        let before = inode.clone();
        if off > inode.size {
            // The old last block's tail must read as zeroes once the size passes it.
            self.zero_block_tail(ino, &inode, inode.size)?;
        }
        let bs = u64::from(self.bs);
        let mut goal = 0;
        let mut failure = None;
        let mut covered = end;
        // The blocks this call allocated since the last page boundary (at most a page's worth
        // of the smallest block, 1 KiB).
        let mut new_in_page = [0u32; (PAGE / 1024) as usize];
        let mut new_count = 0;
        for lblk in off / bs..end.div_ceil(bs) {
            if goal == 0 && lblk > 0 {
                // Locality: right after the file's previous block.
                if let Ok(prev) = self.bmap(ino, &inode, lblk - 1) {
                    if prev != 0 {
                        goal = prev + 1;
                    }
                }
            }
            if (lblk * bs).is_multiple_of(PAGE) {
                new_count = 0;
            }
            match self.bmap_alloc(ino, &mut inode, lblk, &mut goal) {
                Ok((blk, true)) => {
                    new_in_page[new_count] = blk;
                    new_count += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    covered = (lblk * bs).max(off);
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_some() && !covered.is_multiple_of(PAGE) {
            // The count ends inside a page: the page cache reads that page back from the disk
            // before it copies the count's bytes over it, and if that read fails it takes
            // nothing of the page (`FileCache::write_begin_end`), so the blocks allocated under
            // it would keep an earlier owner's bytes inside the size, readable by the next
            // fill. They get zeroes, as Linux's `folio_zero_new_buffers` gives the new
            // buffers of a failed write.
            // If the device fails that too, the count stops before the page (its blocks past
            // the size are freed below; inside the size a device that fails writes leaves
            // them as they are, as Linux's would).
            if self.zero_new_blocks(&new_in_page[..new_count]).is_err() {
                covered = (covered - covered % PAGE).max(off);
            }
        }
        if failure.is_some() {
            // The failed block's allocation may have linked indirect blocks for it before the
            // disk filled (or the device failed): past the size the write reaches they map
            // nothing, so they go, as Linux's `ext2_write_failed` truncates what a failed
            // write allocated beyond `i_size`. Below the old size a hole stays a hole.
            let size = match covered > off {
                true => covered.max(inode.size),
                false => inode.size,
            };
            if let Err(e) = self.free_blocks_from(ino, &mut inode, size.div_ceil(bs)) {
                self.write_inode(ino, &inode)?;
                return Err(e);
            }
        }
        // Only bytes that got blocks move the size: a write refused at its first block leaves
        // it (before, a write past the end that found the disk full grew it to the offset).
        if covered > off && covered > inode.size {
            inode.size = covered;
            self.note_size(covered);
        }
        if covered > off {
            let now = self.now();
            inode.mtime = now;
            inode.ctime = now;
        }
        if inode != before {
            self.write_inode(ino, &inode)?;
        }
        match failure {
            Some(e) if covered == off => Err(e),
            _ => Ok(covered - off),
        }
    }

    /// A buffered write of `[off, off + len)` that lies inside the size of regular file `ino`
    /// over pages whose blocks the page cache already knows are all mapped (its
    /// `MAPPED_TO_DISK`, set when a write or a write-notify fault had [`Self::write_begin`]
    /// or `allocate_range` cover them, cleared where blocks can go): nothing to allocate and
    /// no size to move, so only mtime/ctime move (Linux `file_update_time` before
    /// `generic_perform_write`, whose `ext2_write_begin` then finds the page's buffers mapped
    /// and asks `ext2_get_block` nothing). The inode goes to the buffer cache only if the
    /// times changed. Returns `len`; `EROFS` as [`Self::write_begin`]. The caller knows the
    /// range is inside the size (it holds the file's writer lock and the pages' locks); a
    /// range that is not gets the full [`Self::write_begin`].
    pub fn write_begin_mapped(&mut self, ino: u32, off: u64, len: u64) -> Result<u64> {
        self.writable()?;
        let mut inode = self.regular(ino)?;
        if len == 0 {
            return Ok(0);
        }
        if off.saturating_add(len) > inode.size {
            return self.write_begin(ino, off, len);
        }
        let now = self.now();
        if inode.mtime != now || inode.ctime != now {
            inode.mtime = now;
            inode.ctime = now;
            self.write_inode(ino, &inode)?;
        }
        Ok(len)
    }

    /// Writes zeroes over `blocks` (just allocated: nothing of the file is in them yet).
    fn zero_new_blocks(&mut self, blocks: &[u32]) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let zero = alloc::vec![0u8; self.bs as usize];
        for &blk in blocks {
            self.disk.write_data(blk, &zero)?;
        }
        Ok(())
    }

    /// Undoes the end of a buffered write that [`Self::write_begin`] prepared but the caller
    /// could not finish (Linux `ext2_write_failed`): the page cache took only the bytes below
    /// `keep` (a fill failed, or the count ended inside a page it could not complete), so a size
    /// `write_begin` grew past `keep` comes back to it and the blocks it allocated past it are
    /// freed (`ext2_truncate_blocks`). A size at or below `keep` is left alone: nothing of
    /// this write lies beyond it.
    pub fn write_failed(&mut self, ino: u32, keep: u64) -> Result<()> {
        let mut inode = self.regular(ino)?;
        if inode.size <= keep {
            return Ok(());
        }
        self.writable()?;
        let bs = u64::from(self.bs);
        let freed = self.free_blocks_from(ino, &mut inode, keep.div_ceil(bs));
        if freed.is_ok() {
            inode.size = keep;
        }
        self.write_inode(ino, &inode)?;
        freed
    }

    /// Where writeback stores logical blocks `[first, first + count)` of regular file `ino`:
    /// their disk blocks in order, 0 for a block at or past the size (nothing to store: the
    /// file was truncated since the pages were dirtied). A hole below the size (a page dirtied
    /// behind the mappings' backs, by a device writing into a pinned page) is allocated here,
    /// so its `ENOSPC` is the writeback's error, as on Linux, unless `zeroes(i)` says the
    /// caller's data for block `first + i` are all zeroes: then it stays a hole (0), which
    /// reads the same. With blocks smaller than a page, a page written in part has holes
    /// beside its written blocks; Linux writes only a page's dirty, mapped buffers and leaves
    /// those holes, where this allocated them (found on a 1 KiB-block image).
    pub fn writeback_blocks(
        &mut self,
        ino: u32,
        first: u64,
        count: u64,
        zeroes: impl Fn(u64) -> bool,
    ) -> Result<Vec<u32>> {
        let mut inode = self.regular(ino)?;
        let bs = u64::from(self.bs);
        let live = inode.size.div_ceil(bs);
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(count as usize)
            .map_err(|_| Errno::ENOMEM)?;
        let mut goal = 0;
        let mut allocated = false;
        let mut failure = None;
        for lblk in first..first.saturating_add(count) {
            if lblk >= live {
                blocks.push(0);
                continue;
            }
            let blk = self.bmap(ino, &inode, lblk)?;
            if blk != 0 {
                goal = blk + 1;
                blocks.push(blk);
                continue;
            }
            if zeroes(lblk - first) {
                blocks.push(0);
                continue;
            }
            self.writable()?;
            match self.bmap_alloc(ino, &mut inode, lblk, &mut goal) {
                Ok((blk, _)) => {
                    allocated = true;
                    blocks.push(blk);
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if allocated {
            self.write_inode(ino, &inode)?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(blocks),
        }
    }
}
