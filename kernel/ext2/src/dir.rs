//! Linear directories: blocks of variable-length entries (`inode`, `rec_len`, `name_len`,
//! `file_type`, name), each block covered exactly by its entries' `rec_len`s, free space kept as
//! the slack after an entry or as an entry with inode 0, as Linux's ext2 writes them. Every entry
//! is checked before use (Linux's `ext2_check_page`): a zero or misaligned `rec_len`, an entry
//! crossing the block end, a name longer than its record or an inode number past the count is
//! corruption (`EUCLEAN`), never a loop.

use alloc::format;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::Ext2;
use crate::layout::*;
use crate::le::{put_u16, put_u32, u16_at, u32_at};

#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEntry {
    pub off: usize,
    pub ino: u32,
    pub rec_len: usize,
    pub name_len: usize,
    pub ft: u8,
}

/// Where a name was found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Found {
    pub blk: u32,
    pub off: usize,
    pub prev_off: Option<usize>,
    pub ino: u32,
}

/// One entry as `readdir` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u32,
    pub name: Vec<u8>,
    /// `DT_*` (`DT_UNKNOWN` without the `filetype` feature).
    pub d_type: u8,
}

/// Writes one entry header and name at `off`.
pub(crate) fn put_entry(
    buf: &mut [u8],
    off: usize,
    ino: u32,
    rec_len: usize,
    name: &[u8],
    ft: Option<u8>,
) {
    put_u32(buf, off, ino);
    put_u16(buf, off + 4, rec_len as u16);
    match ft {
        Some(ft) => {
            buf[off + 6] = name.len() as u8;
            buf[off + 7] = ft;
        }
        None => put_u16(buf, off + 6, name.len() as u16),
    }
    buf[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

impl<D: BlockDevice> Ext2<D> {
    /// The file type to store in an entry, `None` without the `filetype` feature.
    pub(crate) fn entry_ft(&self, mode: u16) -> Option<u8> {
        self.has_filetype().then(|| ft_from_mode(mode))
    }

    fn has_filetype(&self) -> bool {
        self.sb.feature_incompat & INCOMPAT_FILETYPE != 0
    }

    /// The entries of one directory block, validated.
    pub(crate) fn parse_dir_block(
        &mut self,
        dir: u32,
        lblk: u64,
        buf: &[u8],
    ) -> Result<Vec<RawEntry>> {
        let bs = buf.len();
        let mut out = Vec::new();
        let mut off = 0;
        while off < bs {
            let why = if off + 8 > bs {
                Some("entry header crosses the block end")
            } else {
                None
            };
            let (ino, rec_len, name_len, ft) = if why.is_none() {
                let nl = if self.has_filetype() {
                    buf[off + 6] as usize
                } else {
                    u16_at(buf, off + 6) as usize
                };
                let ft = if self.has_filetype() { buf[off + 7] } else { 0 };
                (u32_at(buf, off), u16_at(buf, off + 4) as usize, nl, ft)
            } else {
                (0, 0, 0, 0)
            };
            let why = why.or(
                if rec_len < 12 && !(rec_len == 8 && ino == 0 && off + 8 == bs) {
                    if rec_len == 0 {
                        Some("zero-length directory entry")
                    } else {
                        Some("rec_len smaller than the minimum")
                    }
                } else if rec_len % 4 != 0 {
                    Some("unaligned rec_len")
                } else if off + rec_len > bs {
                    Some("entry crosses the block end")
                } else if ino != 0 && rec_len < rec_len_for(name_len) {
                    Some("name longer than its record")
                } else if ino > self.sb.inodes_count {
                    Some("inode number past the inode count")
                } else if ino != 0 && name_len == 0 {
                    Some("empty name")
                } else {
                    None
                },
            );
            if let Some(why) = why {
                return Err(self.corrupt(format!(
                    "directory inode {dir}, block {lblk}, offset {off}: {why}"
                )));
            }
            out.push(RawEntry {
                off,
                ino,
                rec_len,
                name_len,
                ft,
            });
            off += rec_len;
        }
        Ok(out)
    }

    /// The number of blocks of a directory; its size must be a whole number of blocks and within
    /// what its `i_blocks` pays for (a directory has no holes), which also bounds every scan.
    pub(crate) fn dir_blocks(&mut self, dir: u32, inode: &Inode) -> Result<u64> {
        let bs = self.bs as u64;
        if !inode.size.is_multiple_of(bs)
            || inode.size / 512 > inode.blocks as u64
            || inode.size / bs > self.sb.blocks_count as u64
        {
            return Err(self.corrupt(format!(
                "directory inode {dir}: size {} does not match its blocks",
                inode.size
            )));
        }
        Ok(inode.size / bs)
    }

    pub(crate) fn dir_block(&mut self, dir: u32, inode: &Inode, lblk: u64) -> Result<u32> {
        let b = self.bmap(dir, inode, lblk)?;
        if b == 0 {
            return Err(self.corrupt(format!("directory inode {dir}: hole at block {lblk}")));
        }
        Ok(b)
    }

    /// Looks `name` up in directory `dir` (whose inode is `inode`).
    pub(crate) fn find_entry(
        &mut self,
        dir: u32,
        inode: &Inode,
        name: &[u8],
    ) -> Result<Option<Found>> {
        let n = self.dir_blocks(dir, inode)?;
        for lblk in 0..n {
            let blk = self.dir_block(dir, inode, lblk)?;
            let buf = self.disk.bread(blk)?.to_vec();
            let entries = self.parse_dir_block(dir, lblk, &buf)?;
            let mut prev = None;
            for e in entries {
                if e.ino != 0
                    && e.name_len == name.len()
                    && &buf[e.off + 8..e.off + 8 + e.name_len] == name
                {
                    return Ok(Some(Found {
                        blk,
                        off: e.off,
                        prev_off: prev,
                        ino: e.ino,
                    }));
                }
                prev = Some(e.off);
            }
        }
        Ok(None)
    }

    fn touch_dir(&mut self, dir: u32, inode: &mut Inode) -> Result<()> {
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        inode.flags &= !INDEX_FL;
        self.write_inode(dir, inode)
    }

    /// Adds the entry `name -> ino` to directory `dir`: into the first slack that fits, else into
    /// a new block at the end. Nothing changes if it fails.
    pub(crate) fn add_entry(&mut self, dir: u32, name: &[u8], ino: u32, mode: u16) -> Result<()> {
        let mut inode = self.read_live(dir)?;
        let need = rec_len_for(name.len());
        let ft = self.entry_ft(mode);
        let n = self.dir_blocks(dir, &inode)?;
        for lblk in 0..n {
            let blk = self.dir_block(dir, &inode, lblk)?;
            let buf = self.disk.bread(blk)?.to_vec();
            let entries = self.parse_dir_block(dir, lblk, &buf)?;
            for e in entries {
                let used = if e.ino == 0 {
                    0
                } else {
                    rec_len_for(e.name_len)
                };
                if e.rec_len < used + need {
                    continue;
                }
                let buf = self.disk.bread_mut(blk)?;
                if e.ino == 0 {
                    put_entry(buf, e.off, ino, e.rec_len, name, ft);
                } else {
                    put_u16(buf, e.off + 4, used as u16);
                    put_entry(buf, e.off + used, ino, e.rec_len - used, name, ft);
                }
                return self.touch_dir(dir, &mut inode);
            }
        }
        let mut goal = 0;
        let before = inode.clone();
        let blk = match self.bmap_alloc(dir, &mut inode, n, &mut goal) {
            Ok((blk, _)) => blk,
            Err(e) => {
                // Indirect blocks allocated before the failure stay linked (and counted).
                if inode.blocks != before.blocks {
                    self.write_inode(dir, &inode)?;
                }
                return Err(e);
            }
        };
        let bs = self.bs as usize;
        put_entry(self.disk.bnew(blk)?, 0, ino, bs, name, ft);
        inode.size += bs as u64;
        self.touch_dir(dir, &mut inode)
    }

    /// Removes the entry `name` from `dir` and returns its inode: merged into the previous
    /// entry's record, or for the first entry of a block, its inode set to 0.
    pub(crate) fn remove_entry(&mut self, dir: u32, name: &[u8]) -> Result<u32> {
        let mut inode = self.read_live(dir)?;
        let f = self.find_entry(dir, &inode, name)?.ok_or(Errno::ENOENT)?;
        let buf = self.disk.bread_mut(f.blk)?;
        if let Some(p) = f.prev_off {
            let merged = u16_at(buf, p + 4) as usize + u16_at(buf, f.off + 4) as usize;
            put_u16(buf, p + 4, merged as u16);
        }
        put_u32(buf, f.off, 0);
        self.touch_dir(dir, &mut inode)?;
        Ok(f.ino)
    }

    /// Points the existing entry `name` of `dir` at `ino` (rename over a target, `..` of a moved
    /// directory).
    pub(crate) fn set_entry(&mut self, dir: u32, name: &[u8], ino: u32, mode: u16) -> Result<()> {
        let mut inode = self.read_live(dir)?;
        let f = self.find_entry(dir, &inode, name)?.ok_or(Errno::ENOENT)?;
        let ftype_on = self.has_filetype();
        let buf = self.disk.bread_mut(f.blk)?;
        put_u32(buf, f.off, ino);
        if ftype_on {
            buf[f.off + 7] = ft_from_mode(mode);
        }
        self.touch_dir(dir, &mut inode)
    }

    /// Whether the directory holds nothing but `.` and `..`.
    pub(crate) fn dir_is_empty(&mut self, dir: u32, inode: &Inode) -> Result<bool> {
        let n = self.dir_blocks(dir, inode)?;
        for lblk in 0..n {
            let blk = self.dir_block(dir, inode, lblk)?;
            let buf = self.disk.bread(blk)?.to_vec();
            for e in self.parse_dir_block(dir, lblk, &buf)? {
                let name = &buf[e.off + 8..e.off + 8 + e.name_len];
                if e.ino != 0 && name != b"." && name != b".." {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// `readdir`/`getdents64`: calls `emit(entry, next_pos)` for each entry at or after the byte
    /// position `pos` until it returns false; returns the position to continue from. Positions
    /// are byte offsets in the directory; a position inside an entry (the directory changed)
    /// resumes at the next entry of that block.
    pub fn readdir(
        &mut self,
        dir: u32,
        pos: u64,
        mut emit: impl FnMut(&DirEntry, u64) -> bool,
    ) -> Result<u64> {
        let inode = self.read_live(dir)?;
        if !inode.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let n = self.dir_blocks(dir, &inode)?;
        let bs = self.bs as u64;
        let mut pos = pos;
        while pos < n * bs {
            let lblk = pos / bs;
            let blk = self.dir_block(dir, &inode, lblk)?;
            let buf = self.disk.bread(blk)?.to_vec();
            let within = (pos % bs) as usize;
            for e in self.parse_dir_block(dir, lblk, &buf)? {
                if e.off < within {
                    continue;
                }
                let next = lblk * bs + (e.off + e.rec_len) as u64;
                if e.ino != 0 {
                    let entry = DirEntry {
                        ino: e.ino,
                        name: buf[e.off + 8..e.off + 8 + e.name_len].to_vec(),
                        d_type: ft_to_dtype(e.ft),
                    };
                    if !emit(&entry, next) {
                        return Ok(lblk * bs + e.off as u64);
                    }
                }
            }
            pos = (lblk + 1) * bs;
        }
        Ok(pos)
    }
}
