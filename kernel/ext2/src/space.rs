//! A file's space as opposed to its bytes: `fallocate` (preallocate, punch a hole) and the
//! `SEEK_DATA`/`SEEK_HOLE` answers, both from the block map.
//!
//! Linux's own ext2 has no `fallocate` at all (`ext2_file_operations` has no such method, so
//! every mode is `EOPNOTSUPP`) and answers `SEEK_DATA`/`SEEK_HOLE` with the generic "all data up
//! to the size". cowlab gives its ext2 the ext4-like subset a block map can hold: mode 0 and
//! `FALLOC_FL_KEEP_SIZE` inside the file's last block (ext2 has no unwritten extents, so the new
//! blocks are written with zeroes), `PUNCH_HOLE|KEEP_SIZE`, and holes found in the map. A block
//! past the end-of-file block is something e2fsck reports (`i_size is X, should be Y`), so
//! `KEEP_SIZE` reaching past it is `EOPNOTSUPP` (Linux ext2's answer) rather than a fsck error.

use alloc::vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;
use crate::layout::*;
use crate::le::{put_u32, u32_at};

pub const FALLOC_FL_KEEP_SIZE: u32 = 1;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 2;

impl<D: BlockDevice> Ext2<D> {
    /// `fallocate(ino, mode, off, len)` (`len > 0`): see the module comment for what each mode
    /// does here. `EFBIG` past the largest file size.
    pub fn fallocate(&mut self, ino: u32, mode: u32, off: u64, len: u64) -> Result<()> {
        const PUNCH: u32 = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        if mode != 0 && mode != FALLOC_FL_KEEP_SIZE && mode != PUNCH {
            return Err(Errno::EOPNOTSUPP);
        }
        self.writable()?;
        let mut inode = self.regular(ino)?;
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > self.max_file_size() {
            return Err(Errno::EFBIG);
        }
        if mode == PUNCH {
            return self.punch_hole(ino, &mut inode, off, end);
        }
        let bs = self.bs as u64;
        if mode == FALLOC_FL_KEEP_SIZE && end > inode.size.next_multiple_of(bs) {
            return Err(Errno::EOPNOTSUPP);
        }
        let zero = vec![0u8; bs as usize];
        let mut goal = 0;
        let mut result = Ok(());
        for lblk in off / bs..end.div_ceil(bs) {
            let r = self
                .bmap_alloc(ino, &mut inode, lblk, &mut goal)
                .and_then(|(blk, new)| match new {
                    // No unwritten state in ext2: a preallocated block must read as zeroes.
                    true => self.disk.write_data(blk, &zero),
                    false => Ok(()),
                });
            if let Err(e) = r {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() && mode == 0 && end > inode.size {
            self.zero_block_tail(ino, &inode, inode.size)?;
            inode.size = end;
            self.note_size(end);
            let now = self.now();
            inode.mtime = now;
            inode.ctime = now;
        }
        // Written in every case: blocks linked before an ENOSPC stay accounted for.
        self.write_inode(ino, &inode)?;
        result
    }

    /// `PUNCH_HOLE|KEEP_SIZE` over `[off, end)`: the whole blocks inside leave the map (their
    /// indirect blocks stay, as Linux's ext2 keeps them until truncate), the partial blocks at
    /// the edges get zeroes; nothing past the size changes.
    fn punch_hole(&mut self, ino: u32, inode: &mut Inode, off: u64, end: u64) -> Result<()> {
        let end = end.min(inode.size);
        if off >= end {
            return Ok(());
        }
        let bs = self.bs as u64;
        let mut result = Ok(());
        let mut pos = off;
        while pos < end && result.is_ok() {
            let start = pos / bs * bs;
            let to = end.min(start + bs);
            result = if pos == start && to == start + bs {
                self.unmap_block(ino, inode, pos / bs)
            } else {
                self.zero_range(ino, inode, pos, to)
            };
            pos = to;
        }
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        self.write_inode(ino, inode)?;
        result
    }

    /// Writes zeroes over `[from, to)`, which lies in one block (a hole stays a hole).
    fn zero_range(&mut self, ino: u32, inode: &Inode, from: u64, to: u64) -> Result<()> {
        let bs = self.bs as u64;
        let blk = self.bmap(ino, inode, from / bs)?;
        if blk == 0 || from >= to {
            return Ok(());
        }
        let mut tmp = vec![0u8; bs as usize];
        self.disk.read_data(blk, &mut tmp)?;
        tmp[(from % bs) as usize..(to - from / bs * bs) as usize].fill(0);
        self.disk.write_data(blk, &tmp)
    }

    /// Takes logical block `lblk` out of the map and frees its data block.
    fn unmap_block(&mut self, ino: u32, inode: &mut Inode, lblk: u64) -> Result<()> {
        let (slot, idx, depth) = self.block_path(lblk)?;
        if depth == 0 {
            let b = inode.block[slot];
            if b != 0 {
                self.check_block(ino, b)?;
                inode.block[slot] = 0;
                self.free_block(ino, b)?;
                inode.blocks = inode.blocks.saturating_sub(self.bs / 512);
            }
            return Ok(());
        }
        let mut parent = inode.block[slot];
        for (level, &i) in idx[..depth].iter().enumerate() {
            if parent == 0 {
                return Ok(());
            }
            self.check_block(ino, parent)?;
            let b = u32_at(self.disk.bread(parent)?, 4 * i);
            if level + 1 < depth {
                parent = b;
                continue;
            }
            if b != 0 {
                self.check_block(ino, b)?;
                put_u32(self.disk.bread_mut(parent)?, 4 * i, 0);
                self.free_block(ino, b)?;
                inode.blocks = inode.blocks.saturating_sub(self.bs / 512);
            }
        }
        Ok(())
    }

    /// Whether logical block `lblk` is mapped, and how many blocks from it on are certainly
    /// holes when it is not (a missing indirect block is a hole over its whole span).
    fn map_state(&mut self, ino: u32, inode: &Inode, lblk: u64) -> Result<(bool, u64)> {
        let (slot, idx, depth) = self.block_path(lblk)?;
        let p = self.ptrs_per_block();
        let mut b = inode.block[slot];
        // The span of the subtree below each level, and the offset of `lblk` within it.
        let mut span = p.pow(depth as u32);
        let mut within = idx[..depth].iter().fold(0u64, |acc, &i| acc * p + i as u64);
        for &i in &idx[..depth] {
            if b == 0 {
                return Ok((false, span - within));
            }
            self.check_block(ino, b)?;
            b = u32_at(self.disk.bread(b)?, 4 * i);
            span /= p;
            within %= span;
        }
        Ok((b != 0, 1))
    }

    /// `SEEK_DATA` (`hole` false) or `SEEK_HOLE` (`hole` true) from `off`, at block
    /// granularity as ext4 answers: `ENXIO` at or past the size (and for `SEEK_DATA` when only
    /// holes follow); the size is the hole every file ends with.
    pub fn seek_data_hole(&mut self, ino: u32, off: u64, hole: bool) -> Result<u64> {
        let inode = self.regular(ino)?;
        if off >= inode.size {
            return Err(Errno::ENXIO);
        }
        let bs = self.bs as u64;
        let last = inode.size.div_ceil(bs);
        let mut lblk = off / bs;
        while lblk < last {
            let (mapped, run) = self.map_state(ino, &inode, lblk)?;
            if mapped != hole {
                return Ok(off.max(lblk * bs));
            }
            lblk += run;
        }
        if hole {
            Ok(inode.size)
        } else {
            Err(Errno::ENXIO)
        }
    }
}
