//! The buffer cache: metadata blocks (superblock, group descriptors, bitmaps, inode tables,
//! directories, indirect blocks) kept in memory and written back on sync, with a bounded number
//! of blocks (least recently used goes first; a dirty block is written before it leaves). File
//! data bypasses it (`read_data`/`write_data`), but stays coherent with it: a cached copy of a
//! block is what those calls read and update.
//!
//! This is also the last line of defence against writes outside the filesystem: every request is
//! checked against `s_blocks_count` (which mount checked against the device size).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};

struct Buf {
    data: Box<[u8]>,
    dirty: bool,
    tick: u64,
}

/// Counters, for tests and the kernel's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub writebacks: u64,
    pub evictions: u64,
    pub cached: usize,
}

pub(crate) struct Disk<D> {
    pub dev: D,
    bs: usize,
    sectors_per_block: u64,
    nblocks: u64,
    cap: usize,
    bufs: BTreeMap<u32, Buf>,
    lru: BTreeMap<u64, u32>,
    tick: u64,
    stats: CacheStats,
}

impl<D: BlockDevice> Disk<D> {
    pub fn new(dev: D, bs: usize, nblocks: u64, cap: usize) -> Disk<D> {
        let ss = dev.sector_size().max(1);
        Disk {
            dev,
            bs,
            sectors_per_block: (bs / ss) as u64,
            nblocks,
            cap: cap.max(8),
            bufs: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            cached: self.bufs.len(),
            ..self.stats
        }
    }

    fn dev_read(&mut self, blk: u32, buf: &mut [u8]) -> Result<()> {
        if blk as u64 >= self.nblocks || buf.len() != self.bs {
            return Err(Errno::EIO);
        }
        self.dev
            .read_sectors(blk as u64 * self.sectors_per_block, buf)
            .map_err(|_| Errno::EIO)
    }

    fn dev_write(&mut self, blk: u32, buf: &[u8]) -> Result<()> {
        if blk as u64 >= self.nblocks || buf.len() != self.bs {
            return Err(Errno::EIO);
        }
        self.dev
            .write_sectors(blk as u64 * self.sectors_per_block, buf)
            .map_err(|_| Errno::EIO)
    }

    /// Makes room for one more block: writes back and drops the least recently used ones.
    fn make_room(&mut self) -> Result<()> {
        while self.bufs.len() >= self.cap {
            let Some((&tick, &blk)) = self.lru.iter().next() else {
                return Ok(());
            };
            self.lru.remove(&tick);
            if let Some(b) = self.bufs.remove(&blk) {
                self.stats.evictions += 1;
                if b.dirty {
                    self.stats.writebacks += 1;
                    if let Err(e) = self.dev_write(blk, &b.data) {
                        // Keep the only copy of the data; the cache grows past its bound.
                        self.bufs.insert(blk, b);
                        self.lru.insert(tick, blk);
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn load(&mut self, blk: u32, read: bool) -> Result<&mut Buf> {
        if self.bufs.contains_key(&blk) {
            self.stats.hits += 1;
        } else {
            if blk as u64 >= self.nblocks {
                return Err(Errno::EIO);
            }
            self.stats.misses += 1;
            self.make_room()?;
            let mut data = vec![0u8; self.bs].into_boxed_slice();
            if read {
                self.dev_read(blk, &mut data)?;
            }
            self.bufs.insert(
                blk,
                Buf {
                    data,
                    dirty: !read,
                    tick: 0,
                },
            );
        }
        self.tick += 1;
        let tick = self.tick;
        let buf = self.bufs.get_mut(&blk).ok_or(Errno::EIO)?;
        self.lru.remove(&buf.tick);
        buf.tick = tick;
        self.lru.insert(tick, blk);
        Ok(buf)
    }

    /// A metadata block, read through the cache.
    pub fn bread(&mut self, blk: u32) -> Result<&[u8]> {
        Ok(&self.load(blk, true)?.data)
    }

    /// A metadata block to change; it is written back at the next sync.
    pub fn bread_mut(&mut self, blk: u32) -> Result<&mut [u8]> {
        let b = self.load(blk, true)?;
        b.dirty = true;
        Ok(&mut b.data)
    }

    /// A freshly allocated metadata block: zeroed, dirty, never read from the disk.
    pub fn bnew(&mut self, blk: u32) -> Result<&mut [u8]> {
        let b = self.load(blk, false)?;
        b.data.fill(0);
        b.dirty = true;
        Ok(&mut b.data)
    }

    /// Drops a block without writing it (it was freed).
    pub fn forget(&mut self, blk: u32) {
        if let Some(b) = self.bufs.remove(&blk) {
            self.lru.remove(&b.tick);
        }
    }

    /// Reads a whole file-data block.
    pub fn read_data(&mut self, blk: u32, buf: &mut [u8]) -> Result<()> {
        if let Some(b) = self.bufs.get(&blk) {
            if buf.len() != b.data.len() {
                return Err(Errno::EIO);
            }
            buf.copy_from_slice(&b.data);
            return Ok(());
        }
        self.dev_read(blk, buf)
    }

    /// Writes a whole file-data block (and any cached copy of it).
    pub fn write_data(&mut self, blk: u32, buf: &[u8]) -> Result<()> {
        if let Some(b) = self.bufs.get_mut(&blk) {
            if buf.len() == b.data.len() {
                b.data.copy_from_slice(buf);
            }
        }
        self.dev_write(blk, buf)
    }

    /// Writes every dirty block back, in block order, then flushes the device.
    pub fn sync(&mut self) -> Result<()> {
        let mut first_err = None;
        let blocks: alloc::vec::Vec<u32> = self
            .bufs
            .iter()
            .filter(|(_, b)| b.dirty)
            .map(|(&k, _)| k)
            .collect();
        for blk in blocks {
            let Some(b) = self.bufs.get_mut(&blk) else {
                continue;
            };
            b.dirty = false;
            let data = core::mem::take(&mut b.data);
            let r = self.dev_write(blk, &data);
            self.stats.writebacks += 1;
            if let Some(b) = self.bufs.get_mut(&blk) {
                b.data = data;
                if r.is_err() {
                    b.dirty = true;
                }
            }
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        if self.dev.flush().is_err() {
            first_err.get_or_insert(Errno::EIO);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn into_device(self) -> D {
        self.dev
    }
}
