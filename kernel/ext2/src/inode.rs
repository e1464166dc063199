//! Inodes on disk and their block maps: 12 direct pointers, then single, double and triple
//! indirect blocks. Holes are zero pointers. Every pointer is checked against the data area before
//! it is followed or freed, so a corrupted map gets `EUCLEAN` instead of reaching metadata or a
//! block outside the filesystem; walks are bounded by the tree's depth, so a loop in indirect
//! blocks cannot make them run forever.

use alloc::format;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;
use crate::layout::*;
use crate::le::{put_u32, u32_at};

/// The xattr block header magic and its reference count's offset.
const XATTR_MAGIC: u32 = 0xEA02_0000;

impl<D: BlockDevice> Ext2<D> {
    fn inode_location(&self, ino: u32) -> Result<(u32, usize)> {
        if ino == 0 || ino > self.sb.inodes_count {
            return Err(Errno::EINVAL);
        }
        let ipg = self.sb.inodes_per_group;
        let g = (ino - 1) / ipg;
        let idx = ((ino - 1) % ipg) as u64;
        let isz = self.sb.inode_size as u64;
        let table = self.groups[g as usize].inode_table;
        let byte = idx * isz;
        let blk = table + (byte / self.bs as u64) as u32;
        Ok((blk, (byte % self.bs as u64) as usize))
    }

    pub(crate) fn read_inode(&mut self, ino: u32) -> Result<Inode> {
        let (blk, off) = self.inode_location(ino)?;
        let buf = self.disk.bread(blk)?;
        Ok(Inode::parse(&buf[off..off + GOOD_OLD_INODE_SIZE as usize]))
    }

    pub(crate) fn write_inode(&mut self, ino: u32, inode: &Inode) -> Result<()> {
        self.writable()?;
        let (blk, off) = self.inode_location(ino)?;
        let buf = self.disk.bread_mut(blk)?;
        inode.serialize(&mut buf[off..off + GOOD_OLD_INODE_SIZE as usize]);
        Ok(())
    }

    /// Zeroes a whole on-disk inode (all `s_inode_size` bytes), as Linux does for a new inode.
    pub(crate) fn clear_inode_slot(&mut self, ino: u32) -> Result<()> {
        self.writable()?;
        let (blk, off) = self.inode_location(ino)?;
        let isz = self.sb.inode_size as usize;
        self.disk.bread_mut(blk)?[off..off + isz].fill(0);
        Ok(())
    }

    /// An inode the caller holds (from a lookup or an open file): a freed one is a stale handle,
    /// `ENOENT`.
    pub(crate) fn read_live(&mut self, ino: u32) -> Result<Inode> {
        let inode = self.read_inode(ino)?;
        let held = self.orphans.contains(&ino) || self.open.contains_key(&ino);
        if inode.mode == 0 || (inode.links_count == 0 && !held) {
            return Err(Errno::ENOENT);
        }
        Ok(inode)
    }

    /// An inode a directory entry of `dir` names: it must be in use, or the image is corrupt.
    pub(crate) fn read_referenced(&mut self, dir: u32, ino: u32) -> Result<Inode> {
        match self.read_live(ino) {
            Err(Errno::ENOENT) | Err(Errno::EINVAL) => Err(self.corrupt(format!(
                "directory inode {dir} names inode {ino}, which is not in use"
            ))),
            r => r,
        }
    }

    /// A fast symlink keeps its target in `i_block` and has no blocks besides an xattr block.
    pub(crate) fn is_fast_symlink(&self, inode: &Inode) -> bool {
        let ea = if inode.file_acl != 0 {
            self.bs / 512
        } else {
            0
        };
        inode.is_symlink() && inode.blocks.saturating_sub(ea) == 0
    }

    /// Whether `i_block` holds block pointers (not a fast symlink's text or a device number).
    pub(crate) fn has_block_map(&self, inode: &Inode) -> bool {
        inode.is_reg() || inode.is_dir() || (inode.is_symlink() && !self.is_fast_symlink(inode))
    }

    pub(crate) fn ptrs_per_block(&self) -> u64 {
        (self.bs / 4) as u64
    }

    /// The largest file size: what the pointer tree addresses, within what the 32-bit `i_blocks`
    /// (512-byte units, indirect blocks included) can count (Linux's `ext2_max_size`).
    pub fn max_file_size(&self) -> u64 {
        let p = self.ptrs_per_block();
        let addressable = NDIR_BLOCKS as u64 + p + p * p + p * p * p;
        let per = (self.bs / 512) as u64;
        let meta = 1 + (1 + p) + (1 + p + p * p);
        let countable = (u32::MAX as u64 / per).saturating_sub(meta);
        let max = addressable.min(countable) * self.bs as u64;
        if self.sb.rev_level == 0 {
            // Revision 0 has no feature flags, so no `large_file`: 2 GiB (Linux would first
            // upgrade the revision; we do not rewrite the superblock's layout).
            return max.min(i32::MAX as u64);
        }
        max
    }

    /// Where logical block `lblk` hangs: the `i_block` slot, the index at each indirect level and
    /// the number of levels.
    pub(crate) fn block_path(&self, lblk: u64) -> Result<(usize, [usize; 3], usize)> {
        let p = self.ptrs_per_block();
        let nd = NDIR_BLOCKS as u64;
        if lblk < nd {
            return Ok((lblk as usize, [0; 3], 0));
        }
        let r = lblk - nd;
        if r < p {
            return Ok((IND_BLOCK, [r as usize, 0, 0], 1));
        }
        let r = r - p;
        if r < p * p {
            return Ok((DIND_BLOCK, [(r / p) as usize, (r % p) as usize, 0], 2));
        }
        let r = r - p * p;
        if r < p * p * p {
            let idx = [
                (r / (p * p)) as usize,
                ((r / p) % p) as usize,
                (r % p) as usize,
            ];
            return Ok((TIND_BLOCK, idx, 3));
        }
        Err(Errno::EFBIG)
    }

    /// The disk block holding logical block `lblk` of `inode`, or 0 for a hole.
    pub(crate) fn bmap(&mut self, ino: u32, inode: &Inode, lblk: u64) -> Result<u32> {
        let (slot, idx, depth) = self.block_path(lblk)?;
        let mut b = inode.block[slot];
        for &i in &idx[..depth] {
            if b == 0 {
                return Ok(0);
            }
            self.check_block(ino, b)?;
            b = u32_at(self.disk.bread(b)?, 4 * i);
        }
        if b != 0 {
            self.check_block(ino, b)?;
        }
        Ok(b)
    }

    /// Adds one block to `i_blocks`, or `EFBIG` if the 32-bit count would overflow.
    fn charge(&self, inode: &mut Inode) -> Result<()> {
        inode.blocks = inode
            .blocks
            .checked_add(self.bs / 512)
            .ok_or(Errno::EFBIG)?;
        Ok(())
    }

    fn alloc_charged(&mut self, inode: &mut Inode, goal: &mut u32) -> Result<u32> {
        self.charge(inode)?;
        match self.alloc_block(*goal) {
            Ok(b) => {
                *goal = b + 1;
                Ok(b)
            }
            Err(e) => {
                inode.blocks -= self.bs / 512;
                Err(e)
            }
        }
    }

    /// The disk block for logical block `lblk`, allocating it (and any missing indirect block)
    /// if it is a hole. Returns whether the data block is new: its contents are then undefined
    /// and the caller writes the whole block. Each block is linked as soon as it is allocated, so
    /// an `ENOSPC` half-way leaves a consistent (possibly emptier) map; the caller writes the
    /// inode back in every case.
    pub(crate) fn bmap_alloc(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        lblk: u64,
        goal: &mut u32,
    ) -> Result<(u32, bool)> {
        let (slot, idx, depth) = self.block_path(lblk)?;
        if *goal == 0 {
            let g = self.group_of_inode(ino);
            *goal = self.group_first_block(g);
        }
        let top = inode.block[slot];
        let mut cur = if top == 0 {
            let nb = self.alloc_charged(inode, goal)?;
            if depth > 0 {
                if let Err(e) = self.disk.bnew(nb) {
                    return Err(self.unalloc(ino, inode, nb, e));
                }
            }
            inode.block[slot] = nb;
            if depth == 0 {
                return Ok((nb, true));
            }
            nb
        } else {
            self.check_block(ino, top)?;
            if depth == 0 {
                return Ok((top, false));
            }
            top
        };
        for (level, &i) in idx[..depth].iter().enumerate() {
            let leaf = level + 1 == depth;
            let next = u32_at(self.disk.bread(cur)?, 4 * i);
            if next != 0 {
                self.check_block(ino, next)?;
                if leaf {
                    return Ok((next, false));
                }
                cur = next;
                continue;
            }
            let nb = self.alloc_charged(inode, goal)?;
            let linked = match leaf {
                true => Ok(()),
                false => self.disk.bnew(nb).map(drop),
            }
            .and_then(|()| self.disk.bread_mut(cur).map(|b| put_u32(b, 4 * i, nb)));
            if let Err(e) = linked {
                return Err(self.unalloc(ino, inode, nb, e));
            }
            if leaf {
                return Ok((nb, true));
            }
            cur = nb;
        }
        Err(Errno::EIO)
    }

    /// Gives back a block allocated for `inode` that could not be linked (a device error while
    /// reading its parent), so an `EIO` does not leak it; returns `err` for the caller.
    fn unalloc(&mut self, ino: u32, inode: &mut Inode, blk: u32, err: Errno) -> Errno {
        // Freeing cannot meet a device error here (the bitmap was just cached by the
        // allocation); if it fails anyway, that failure was recorded and `err` still stands.
        let _ = self.release_block(ino, inode, blk);
        err
    }

    fn release_block(&mut self, ino: u32, inode: &mut Inode, blk: u32) -> Result<()> {
        self.free_block(ino, blk)?;
        inode.blocks = inode.blocks.saturating_sub(self.bs / 512);
        Ok(())
    }

    /// Frees every block of logical number `from` and beyond, and the indirect blocks that only
    /// served them (Linux's `ext2_truncate_blocks`).
    pub(crate) fn free_blocks_from(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        from: u64,
    ) -> Result<()> {
        for i in (from.min(NDIR_BLOCKS as u64) as usize)..NDIR_BLOCKS {
            let b = inode.block[i];
            if b != 0 {
                self.release_block(ino, inode, b)?;
                inode.block[i] = 0;
            }
        }
        let p = self.ptrs_per_block();
        let mut base = NDIR_BLOCKS as u64;
        let mut span = p;
        for (slot, depth) in [(IND_BLOCK, 1u32), (DIND_BLOCK, 2), (TIND_BLOCK, 3)] {
            let b = inode.block[slot];
            if b != 0 && from < base + span && self.free_tree(ino, inode, b, depth, base, from)? {
                inode.block[slot] = 0;
            }
            base += span;
            span *= p;
        }
        Ok(())
    }

    /// Frees the part of the indirect tree rooted at `blk` (covering logical blocks from `base`)
    /// that maps blocks `>= from`; frees `blk` itself and returns true if nothing below is kept.
    fn free_tree(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        blk: u32,
        depth: u32,
        base: u64,
        from: u64,
    ) -> Result<bool> {
        self.check_block(ino, blk)?;
        let p = self.ptrs_per_block();
        let child_span = p.pow(depth - 1);
        let entries: Vec<u32> = {
            let buf = self.disk.bread(blk)?;
            (0..p as usize).map(|i| u32_at(buf, 4 * i)).collect()
        };
        let whole = from <= base;
        for (j, &e) in entries.iter().enumerate() {
            let lo = base + j as u64 * child_span;
            if e == 0 || lo + child_span <= from {
                continue;
            }
            let freed = if depth == 1 {
                self.release_block(ino, inode, e)?;
                true
            } else {
                self.free_tree(ino, inode, e, depth - 1, lo, from)?
            };
            if freed && !whole {
                put_u32(self.disk.bread_mut(blk)?, 4 * j, 0);
            }
        }
        if whole {
            self.release_block(ino, inode, blk)?;
        }
        Ok(whole)
    }

    /// Drops the inode's reference to its extended-attribute block (shared, reference-counted).
    fn release_xattr_block(&mut self, ino: u32, inode: &mut Inode) -> Result<()> {
        let blk = inode.file_acl;
        if blk == 0 {
            return Ok(());
        }
        self.check_block(ino, blk)?;
        let (magic, refs) = {
            let buf = self.disk.bread(blk)?;
            (u32_at(buf, 0), u32_at(buf, 4))
        };
        if magic != XATTR_MAGIC {
            return Err(self.corrupt(format!("inode {ino}: bad xattr block {blk}")));
        }
        if refs <= 1 {
            self.release_block(ino, inode, blk)?;
        } else {
            put_u32(self.disk.bread_mut(blk)?, 4, refs - 1);
            inode.blocks = inode.blocks.saturating_sub(self.bs / 512);
        }
        inode.file_acl = 0;
        Ok(())
    }

    /// Frees an inode with no links left and no opener: its blocks, its xattr block, its bitmap
    /// bit; `i_dtime` is set as Linux's ext2 does.
    pub(crate) fn evict(&mut self, ino: u32) -> Result<()> {
        self.writable()?;
        self.orphans.remove(&ino);
        let mut inode = self.read_inode(ino)?;
        if inode.mode == 0 {
            return Err(self.corrupt(format!("evicting free inode {ino}")));
        }
        let was_dir = inode.is_dir();
        let mut result = Ok(());
        if self.has_block_map(&inode) {
            result = self.free_blocks_from(ino, &mut inode, 0);
        }
        if result.is_ok() {
            result = self.release_xattr_block(ino, &mut inode);
        }
        inode.links_count = 0;
        inode.size = 0;
        inode.dtime = self.now();
        self.write_inode(ino, &inode)?;
        result?;
        self.free_inode(ino, was_dir)
    }
}
