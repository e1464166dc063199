//! Block and inode allocation over the group bitmaps, with locality: a file's blocks go after its
//! previous block or into its inode's group, a file's inode into its directory's group, and a new
//! directory into a group with more free inodes than average and the most free blocks (the old
//! ext2 `find_group_dir` spread).

use alloc::format;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;

fn bit(buf: &[u8], i: u32) -> bool {
    buf.get((i / 8) as usize)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn set_bit(buf: &mut [u8], i: u32, v: bool) {
    if let Some(b) = buf.get_mut((i / 8) as usize) {
        if v {
            *b |= 1 << (i % 8);
        } else {
            *b &= !(1 << (i % 8));
        }
    }
}

/// The first clear bit in `[from, to)`.
fn find_zero(buf: &[u8], from: u32, to: u32) -> Option<u32> {
    let mut i = from;
    while i < to {
        if i.is_multiple_of(8) && to - i >= 8 && buf.get((i / 8) as usize) == Some(&0xff) {
            i += 8;
            continue;
        }
        if !bit(buf, i) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl<D: BlockDevice> Ext2<D> {
    pub(crate) fn group_of_block(&self, blk: u32) -> u32 {
        let g = blk.saturating_sub(self.sb.first_data_block) / self.sb.blocks_per_group;
        g.min(self.ngroups - 1)
    }

    pub(crate) fn group_of_inode(&self, ino: u32) -> u32 {
        ((ino.max(1) - 1) / self.sb.inodes_per_group).min(self.ngroups - 1)
    }

    /// Allocates one block, as close after `goal` as the bitmaps allow.
    pub(crate) fn alloc_block(&mut self, goal: u32) -> Result<u32> {
        self.writable()?;
        let goal = if goal >= self.sb.first_data_block && goal < self.sb.blocks_count {
            goal
        } else {
            self.sb.first_data_block
        };
        let g0 = self.group_of_block(goal);
        for i in 0..self.ngroups {
            let g = (g0 + i) % self.ngroups;
            if self.groups[g as usize].free_blocks_count == 0 {
                continue;
            }
            let first = self.group_first_block(g);
            let n = self.group_block_count(g);
            let start = if i == 0 { goal - first } else { 0 };
            let bitmap = self.groups[g as usize].block_bitmap;
            for (mut from, end) in [(start, n), (0, start)] {
                while let Some(b) = find_zero(self.disk.bread(bitmap)?, from, end) {
                    let blk = first + b;
                    if self.in_sys_zone(blk) {
                        let e =
                            format!("group {g}: metadata block {blk} is free in the block bitmap");
                        self.corrupt(e);
                        from = b + 1;
                        continue;
                    }
                    set_bit(self.disk.bread_mut(bitmap)?, b, true);
                    let gd = &mut self.groups[g as usize];
                    gd.free_blocks_count = gd.free_blocks_count.saturating_sub(1);
                    return Ok(blk);
                }
            }
            let e = format!("group {g}: free block count is wrong (the bitmap is full)");
            self.corrupt(e);
            self.groups[g as usize].free_blocks_count = 0;
        }
        Err(Errno::ENOSPC)
    }

    /// Frees one block; freeing a metadata block or an already free one is corruption.
    pub(crate) fn free_block(&mut self, ino: u32, blk: u32) -> Result<()> {
        self.writable()?;
        self.check_block(ino, blk)?;
        let g = self.group_of_block(blk);
        let b = blk - self.group_first_block(g);
        let bitmap = self.groups[g as usize].block_bitmap;
        if !bit(self.disk.bread(bitmap)?, b) {
            return Err(self.corrupt(format!("inode {ino}: freeing free block {blk}")));
        }
        set_bit(self.disk.bread_mut(bitmap)?, b, false);
        let max = self.group_block_count(g);
        let gd = &mut self.groups[g as usize];
        if (gd.free_blocks_count as u32) < max {
            gd.free_blocks_count += 1;
        }
        self.disk.forget(blk);
        Ok(())
    }

    fn pick_group(&self, parent_group: u32, is_dir: bool) -> Option<u32> {
        let n = self.ngroups;
        if is_dir {
            let total_free: u64 = self.groups.iter().map(|g| g.free_inodes_count as u64).sum();
            let avg = total_free / n as u64;
            let mut best: Option<u32> = None;
            for g in 0..n {
                let gd = &self.groups[g as usize];
                if gd.free_inodes_count == 0 || (gd.free_inodes_count as u64) < avg {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some(b) => gd.free_blocks_count > self.groups[b as usize].free_blocks_count,
                };
                if better {
                    best = Some(g);
                }
            }
            if best.is_some() {
                return best;
            }
        }
        for need_blocks in [true, false] {
            for i in 0..n {
                let g = (parent_group + i) % n;
                let gd = &self.groups[g as usize];
                if gd.free_inodes_count > 0 && (!need_blocks || gd.free_blocks_count > 0) {
                    return Some(g);
                }
            }
        }
        None
    }

    /// Allocates an inode number for a new file in the directory `parent`.
    pub(crate) fn alloc_inode(&mut self, parent: u32, is_dir: bool) -> Result<u32> {
        self.writable()?;
        let ipg = self.sb.inodes_per_group;
        let pg = self.group_of_inode(parent);
        let first_choice = self.pick_group(pg, is_dir).ok_or(Errno::ENOSPC)?;
        for i in 0..self.ngroups {
            let g = (first_choice + i) % self.ngroups;
            if self.groups[g as usize].free_inodes_count == 0 {
                continue;
            }
            let bitmap = self.groups[g as usize].inode_bitmap;
            // Inodes below s_first_ino are reserved (root, lost+found's predecessors, ...).
            let mut from = if g == 0 { self.sb.first_ino - 1 } else { 0 };
            loop {
                let found = find_zero(self.disk.bread(bitmap)?, from, ipg);
                let Some(b) = found else { break };
                let ino = g * ipg + b + 1;
                let old = self.read_inode(ino)?;
                if old.mode != 0 && old.links_count != 0 && old.dtime == 0 {
                    self.corrupt(format!(
                        "inode {ino} is in use but free in the inode bitmap"
                    ));
                    from = b + 1;
                    continue;
                }
                set_bit(self.disk.bread_mut(bitmap)?, b, true);
                let gd = &mut self.groups[g as usize];
                gd.free_inodes_count = gd.free_inodes_count.saturating_sub(1);
                if is_dir {
                    gd.used_dirs_count = gd.used_dirs_count.saturating_add(1);
                }
                return Ok(ino);
            }
            let e = format!("group {g}: free inode count is wrong (the bitmap is full)");
            self.corrupt(e);
            self.groups[g as usize].free_inodes_count = 0;
        }
        Err(Errno::ENOSPC)
    }

    pub(crate) fn free_inode(&mut self, ino: u32, was_dir: bool) -> Result<()> {
        self.writable()?;
        let ipg = self.sb.inodes_per_group;
        let g = self.group_of_inode(ino);
        let b = (ino - 1) % ipg;
        let bitmap = self.groups[g as usize].inode_bitmap;
        if !bit(self.disk.bread(bitmap)?, b) {
            return Err(self.corrupt(format!("freeing free inode {ino}")));
        }
        set_bit(self.disk.bread_mut(bitmap)?, b, false);
        let gd = &mut self.groups[g as usize];
        if (gd.free_inodes_count as u32) < ipg {
            gd.free_inodes_count += 1;
        }
        if was_dir {
            gd.used_dirs_count = gd.used_dirs_count.saturating_sub(1);
        }
        Ok(())
    }
}
