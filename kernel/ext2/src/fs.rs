//! The mounted filesystem: mount-time validation of the superblock and the group descriptors,
//! the metadata zones a block pointer may never reach, error recording, sync and unmount.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::cache::{CacheStats, Disk};
use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::layout::*;

/// How to mount.
#[derive(Clone, Copy, Debug)]
pub struct MountOptions {
    /// Mount read-only even if the image could be written.
    pub read_only: bool,
    /// The buffer cache's bound, in filesystem blocks.
    pub cache_blocks: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            cache_blocks: 1024,
        }
    }
}

/// Why a mount failed: the errno and one console line describing what is wrong with the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountError {
    pub errno: Errno,
    pub reason: String,
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ext2: cannot mount: {} ({})",
            self.reason,
            self.errno.name()
        )
    }
}

fn refuse(errno: Errno, reason: String) -> MountError {
    MountError { errno, reason }
}

/// `statfs` as Linux's ext2 fills it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// `EXT2_SUPER_MAGIC`, 0xEF53.
    pub f_type: u32,
    pub f_bsize: u32,
    /// Data blocks: the block count less the metadata overhead (Linux's default `bsddf`).
    pub f_blocks: u64,
    pub f_bfree: u64,
    /// Free blocks less the blocks reserved for root.
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_namelen: u32,
}

/// What a metadata block holds (see [`Ext2::metadata_blocks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetaKind {
    Superblock,
    GroupDescriptors,
    Bitmap,
    InodeTable,
    Directory,
    Indirect,
}

/// A mounted ext2 filesystem over a [`BlockDevice`]. Every operation takes `&mut self`: the
/// kernel serialises callers with one lock around it.
pub struct Ext2<D: BlockDevice> {
    pub(crate) disk: Disk<D>,
    pub(crate) sb: Superblock,
    pub(crate) groups: Vec<GroupDesc>,
    pub(crate) bs: u32,
    pub(crate) ngroups: u32,
    /// Metadata block ranges `[start, end)`, sorted and merged: superblocks and descriptor tables
    /// (with their reserved growth blocks), bitmaps, inode tables. No block pointer may land here.
    pub(crate) sys_zones: Vec<(u32, u32)>,
    pub(crate) read_only: bool,
    ro_reason: Option<String>,
    /// `s_state` as found at mount, restored at unmount (Linux's `s_mount_state`).
    mount_state: u16,
    /// Open counts the kernel reports with `open`/`release`.
    pub(crate) open: BTreeMap<u32, u32>,
    /// Inodes with no links left that are still open: freed on their last `release`.
    pub(crate) orphans: BTreeSet<u32>,
    last_error: Option<String>,
    warning: Option<String>,
    error_count: u64,
    clock: Option<fn() -> u32>,
    fallback_time: u32,
    pub(crate) next_generation: u32,
}

/// Whether group `g` holds a superblock and descriptor copy (with `sparse_super`: groups 0, 1 and
/// powers of 3, 5 and 7).
pub(crate) fn has_super(sparse: bool, g: u32) -> bool {
    if !sparse || g <= 1 {
        return true;
    }
    for base in [3u32, 5, 7] {
        let mut p = base;
        while p < g {
            match p.checked_mul(base) {
                Some(n) => p = n,
                None => break,
            }
        }
        if p == g {
            return true;
        }
    }
    false
}

impl<D: BlockDevice> Ext2<D> {
    /// Mounts the filesystem on `dev`, or says why the image is refused.
    pub fn mount(mut dev: D, opts: MountOptions) -> core::result::Result<Ext2<D>, MountError> {
        let ss = dev.sector_size();
        if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
            return Err(refuse(
                Errno::EINVAL,
                format!("unsupported sector size {ss}"),
            ));
        }
        let head_len = ss.max(2048);
        let sectors = dev.sector_count();
        if sectors.saturating_mul(ss as u64) < head_len as u64 {
            return Err(refuse(
                Errno::EINVAL,
                format!("device too small ({sectors} sectors)"),
            ));
        }
        let mut head = vec![0u8; head_len];
        dev.read_sectors(0, &mut head)
            .map_err(|_| refuse(Errno::EIO, "cannot read the superblock".into()))?;
        let sb = Superblock::parse(&head[1024..2048]);
        if sb.magic != EXT2_MAGIC {
            return Err(refuse(
                Errno::EINVAL,
                format!("bad magic 0x{:04x}", sb.magic),
            ));
        }
        if sb.rev_level > 1 {
            return Err(refuse(
                Errno::EINVAL,
                format!("unknown revision {}", sb.rev_level),
            ));
        }
        if sb.log_block_size > 2 {
            return Err(refuse(
                Errno::EINVAL,
                format!(
                    "unsupported block size (s_log_block_size {})",
                    sb.log_block_size
                ),
            ));
        }
        let bs = 1024u32 << sb.log_block_size;
        if (bs as usize) < ss {
            return Err(refuse(
                Errno::EINVAL,
                format!("block size {bs} below sector size {ss}"),
            ));
        }
        let unknown_incompat = sb.feature_incompat & !INCOMPAT_SUPPORTED;
        if unknown_incompat != 0 {
            return Err(refuse(
                Errno::EINVAL,
                format!("unsupported incompatible features 0x{unknown_incompat:x}"),
            ));
        }
        let isz = sb.inode_size as u32;
        if isz < GOOD_OLD_INODE_SIZE as u32 || !isz.is_power_of_two() || isz > bs {
            return Err(refuse(Errno::EUCLEAN, format!("bad inode size {isz}")));
        }
        let want_fdb = if bs == 1024 { 1 } else { 0 };
        if sb.first_data_block != want_fdb {
            return Err(refuse(
                Errno::EUCLEAN,
                format!(
                    "bad first data block {} for block size {bs}",
                    sb.first_data_block
                ),
            ));
        }
        if sb.blocks_per_group == 0 || sb.blocks_per_group > 8 * bs {
            return Err(refuse(
                Errno::EUCLEAN,
                format!("bad blocks per group {}", sb.blocks_per_group),
            ));
        }
        if sb.inodes_per_group == 0
            || sb.inodes_per_group > 8 * bs
            || !(sb.inodes_per_group as u64 * isz as u64).is_multiple_of(bs as u64)
        {
            return Err(refuse(
                Errno::EUCLEAN,
                format!("bad inodes per group {}", sb.inodes_per_group),
            ));
        }
        if sb.blocks_count <= sb.first_data_block + 1 {
            return Err(refuse(
                Errno::EUCLEAN,
                format!("bad block count {}", sb.blocks_count),
            ));
        }
        let dev_blocks = sectors.saturating_mul(ss as u64) / bs as u64;
        if sb.blocks_count as u64 > dev_blocks {
            return Err(refuse(
                Errno::EINVAL,
                format!(
                    "image truncated: {} blocks in the superblock, {dev_blocks} on the device",
                    sb.blocks_count
                ),
            ));
        }
        let ngroups = (sb.blocks_count - sb.first_data_block).div_ceil(sb.blocks_per_group);
        if sb.inodes_count as u64 != ngroups as u64 * sb.inodes_per_group as u64 {
            return Err(refuse(
                Errno::EUCLEAN,
                format!(
                    "inode count {} is not {ngroups} groups of {}",
                    sb.inodes_count, sb.inodes_per_group
                ),
            ));
        }
        if sb.rev_level == 1
            && (sb.first_ino < GOOD_OLD_FIRST_INO || sb.first_ino >= sb.inodes_count)
        {
            return Err(refuse(
                Errno::EUCLEAN,
                format!("bad first inode {}", sb.first_ino),
            ));
        }
        if sb.r_blocks_count > sb.blocks_count {
            return Err(refuse(
                Errno::EUCLEAN,
                "reserved blocks past the block count".into(),
            ));
        }
        let gdt_blocks = (ngroups as u64 * GROUP_DESC_SIZE as u64).div_ceil(bs as u64) as u32;
        let sb_zone_len = 1 + gdt_blocks as u64 + sb.reserved_gdt_blocks as u64;
        if sb_zone_len > sb.blocks_per_group as u64 {
            return Err(refuse(
                Errno::EUCLEAN,
                "group descriptors do not fit in a group".into(),
            ));
        }

        let mut disk = Disk::new(dev, bs as usize, sb.blocks_count as u64, opts.cache_blocks);
        let mut groups = Vec::with_capacity(ngroups as usize);
        let per_block = bs / GROUP_DESC_SIZE as u32;
        for g in 0..ngroups {
            let blk = sb.first_data_block + 1 + g / per_block;
            let off = (g % per_block) as usize * GROUP_DESC_SIZE;
            let buf = disk
                .bread(blk)
                .map_err(|e| refuse(e, format!("cannot read group descriptor block {blk}")))?;
            groups.push(GroupDesc::parse(&buf[off..off + GROUP_DESC_SIZE]));
        }

        let sparse = sb.feature_ro_compat & RO_COMPAT_SPARSE_SUPER != 0;
        let itb = sb.inodes_per_group * isz / bs;
        let mut zones: Vec<(u32, u32)> = Vec::new();
        for (g, gd) in groups.iter().enumerate() {
            let g = g as u32;
            let first = sb.first_data_block + g * sb.blocks_per_group;
            let last =
                (first as u64 + sb.blocks_per_group as u64).min(sb.blocks_count as u64) as u32;
            let mut own: Vec<(u32, u32, &str)> = Vec::new();
            if has_super(sparse, g) {
                // With 4 KiB blocks group 0's superblock shares block 0 with the boot sector.
                let start = if g == 0 { 0 } else { first };
                own.push((start, first + sb_zone_len as u32, "superblock/descriptors"));
            }
            own.push((
                gd.block_bitmap,
                gd.block_bitmap.wrapping_add(1),
                "block bitmap",
            ));
            own.push((
                gd.inode_bitmap,
                gd.inode_bitmap.wrapping_add(1),
                "inode bitmap",
            ));
            own.push((
                gd.inode_table,
                gd.inode_table.saturating_add(itb),
                "inode table",
            ));
            for &(s, e, what) in &own[..] {
                let in_group = s >= first && e <= last && s < e;
                let sb_ok = what == "superblock/descriptors" && e <= last;
                if !(in_group || sb_ok) {
                    return Err(refuse(
                        Errno::EUCLEAN,
                        format!(
                            "group {g}: {what} at block {s} outside the group ({first}..{last})"
                        ),
                    ));
                }
            }
            for i in 0..own.len() {
                for j in i + 1..own.len() {
                    let (a, b) = (own[i], own[j]);
                    if a.0 < b.1 && b.0 < a.1 {
                        return Err(refuse(
                            Errno::EUCLEAN,
                            format!("group {g}: {} at block {} overlaps the {}", b.2, b.0, a.2),
                        ));
                    }
                }
            }
            if gd.free_blocks_count as u32 > last - first
                || gd.free_inodes_count as u32 > sb.inodes_per_group
                || gd.used_dirs_count as u32 > sb.inodes_per_group
            {
                return Err(refuse(
                    Errno::EUCLEAN,
                    format!("group {g}: impossible free counts"),
                ));
            }
            zones.extend(own.iter().map(|&(s, e, _)| (s, e)));
        }
        zones.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(zones.len());
        for (s, e) in zones {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }

        let unknown_ro = sb.feature_ro_compat & !RO_COMPAT_SUPPORTED;
        let ro_reason = if unknown_ro != 0 {
            Some(format!(
                "unsupported read-only-compatible features 0x{unknown_ro:x}"
            ))
        } else {
            None
        };
        let fallback_time = sb.wtime();
        let mut fs = Ext2 {
            disk,
            mount_state: sb.state,
            sb,
            groups,
            bs,
            ngroups,
            sys_zones: merged,
            read_only: opts.read_only || ro_reason.is_some(),
            ro_reason,
            open: BTreeMap::new(),
            orphans: BTreeSet::new(),
            last_error: None,
            warning: None,
            error_count: 0,
            clock: None,
            fallback_time,
            next_generation: fallback_time,
        };
        let root = fs
            .read_inode(ROOT_INO)
            .map_err(|e| refuse(e, "cannot read the root inode".into()))?;
        if !root.is_dir() || root.links_count == 0 {
            return Err(refuse(
                Errno::EUCLEAN,
                "the root inode is not a directory".into(),
            ));
        }
        if fs.mount_state & STATE_VALID == 0 || fs.mount_state & STATE_ERROR != 0 {
            // Linux's `ext2_setup_super` warns and mounts anyway.
            fs.warning = Some(if fs.mount_state & STATE_ERROR != 0 {
                "ext2: warning: mounting a filesystem with errors, running e2fsck is recommended"
                    .into()
            } else {
                "ext2: warning: mounting an unchecked filesystem, running e2fsck is recommended"
                    .into()
            });
        }
        if !fs.read_only {
            // As Linux: a mounted read-write filesystem is marked not clean on disk until it is
            // unmounted, so a crash leaves it for e2fsck.
            fs.sb.state &= !STATE_VALID;
            fs.sb.bump_mount_count();
            let now = fs.now();
            fs.sb.set_mtime(now);
            fs.sync()
                .map_err(|e| refuse(e, "cannot write the superblock".into()))?;
        }
        Ok(fs)
    }

    /// Sets the clock (seconds since the epoch) used for timestamps; without one, the
    /// superblock's last write time is used.
    pub fn set_clock(&mut self, clock: fn() -> u32) {
        self.clock = Some(clock);
    }

    pub(crate) fn now(&self) -> u32 {
        match self.clock {
            Some(f) => f(),
            None => self.fallback_time,
        }
    }

    /// Whether the filesystem is mounted read-only, and why if the image forced it.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    pub fn read_only_reason(&self) -> Option<&str> {
        self.ro_reason.as_deref()
    }

    pub fn block_size(&self) -> u32 {
        self.bs
    }

    /// The filesystem's size in bytes (`s_blocks_count` blocks): no write goes past it.
    pub fn size_bytes(&self) -> u64 {
        self.sb.blocks_count as u64 * self.bs as u64
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.disk.stats()
    }

    /// Records corruption as Linux's `ext2_error` does (the on-disk state gets the error bit) and
    /// returns `EUCLEAN` for the caller to pass up.
    pub(crate) fn corrupt(&mut self, what: String) -> Errno {
        self.error_count += 1;
        self.last_error = Some(format!("ext2: corruption: {what}"));
        self.sb.state |= STATE_ERROR;
        self.mount_state |= STATE_ERROR;
        Errno::EUCLEAN
    }

    /// The description of the last corruption found (one console line), once.
    pub fn take_error(&mut self) -> Option<String> {
        self.last_error.take()
    }

    /// The warning a mount of a not cleanly unmounted (or erroneous) filesystem gives, as one
    /// console line.
    pub fn mount_warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// How many times corruption was found since mount.
    pub fn error_count(&self) -> u64 {
        self.error_count
    }

    pub(crate) fn writable(&self) -> Result<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    pub(crate) fn in_sys_zone(&self, blk: u32) -> bool {
        let i = self.sys_zones.partition_point(|z| z.0 <= blk);
        i > 0 && blk < self.sys_zones[i - 1].1
    }

    /// Whether `blk` may be a file's data or indirect block.
    pub(crate) fn valid_data_block(&self, blk: u32) -> bool {
        blk >= self.sb.first_data_block && blk < self.sb.blocks_count && !self.in_sys_zone(blk)
    }

    pub(crate) fn check_block(&mut self, ino: u32, blk: u32) -> Result<()> {
        if self.valid_data_block(blk) {
            Ok(())
        } else {
            Err(self.corrupt(format!(
                "inode {ino}: block pointer {blk} outside the data area"
            )))
        }
    }

    pub(crate) fn group_first_block(&self, g: u32) -> u32 {
        self.sb.first_data_block + g * self.sb.blocks_per_group
    }

    pub(crate) fn group_block_count(&self, g: u32) -> u32 {
        let first = self.group_first_block(g);
        (self.sb.blocks_count - first).min(self.sb.blocks_per_group)
    }

    /// Serialises the superblock and the group descriptors into the buffer cache.
    fn write_super(&mut self) -> Result<()> {
        let mut fb: u64 = 0;
        let mut fi: u64 = 0;
        for gd in &self.groups {
            fb += gd.free_blocks_count as u64;
            fi += gd.free_inodes_count as u64;
        }
        self.sb.free_blocks_count = fb.min(self.sb.blocks_count as u64) as u32;
        self.sb.free_inodes_count = fi.min(self.sb.inodes_count as u64) as u32;
        let now = self.now();
        self.sb.set_wtime(now);
        let raw = *self.sb.serialize();
        let bs = self.bs as u64;
        let blk = (SUPERBLOCK_OFFSET / bs) as u32;
        let off = (SUPERBLOCK_OFFSET % bs) as usize;
        self.disk.bread_mut(blk)?[off..off + SUPERBLOCK_SIZE].copy_from_slice(&raw);
        let per_block = self.bs / GROUP_DESC_SIZE as u32;
        for g in 0..self.ngroups {
            let blk = self.sb.first_data_block + 1 + g / per_block;
            let off = (g % per_block) as usize * GROUP_DESC_SIZE;
            let gd = self.groups[g as usize];
            gd.serialize(&mut self.disk.bread_mut(blk)?[off..off + GROUP_DESC_SIZE]);
        }
        Ok(())
    }

    /// Writes every dirty metadata block back (superblock free counts, group descriptors,
    /// bitmaps, inode tables, directories) and flushes the device: `sync(2)`/`syncfs(2)`.
    pub fn sync(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.write_super()?;
        self.disk.sync()
    }

    /// `fsync(2)`/`fdatasync(2)` of one file. File data is written through already, so this is
    /// the metadata write-back; it writes the whole cache (ext2 has no per-inode dirty lists).
    pub fn fsync(&mut self, _ino: u32) -> Result<()> {
        self.sync()
    }

    /// Unmounts: frees the inodes still waiting for their last close, restores `s_state` (clean,
    /// or with the error bit if corruption was found) and writes everything back. The device is
    /// handed back with the result of the final write-back.
    pub fn unmount(mut self) -> (D, Result<()>) {
        let mut result = Ok(());
        if !self.read_only {
            let orphans: Vec<u32> = self.orphans.iter().copied().collect();
            for ino in orphans {
                self.open.remove(&ino);
                if let Err(e) = self.evict(ino) {
                    result = Err(e);
                }
            }
            self.sb.state = self.mount_state;
            if let Err(e) = self.sync() {
                result = Err(e);
            }
        }
        (self.disk.into_device(), result)
    }

    /// `statfs(2)`.
    pub fn statfs(&self) -> StatFs {
        let mut overhead: u64 = self.sb.first_data_block as u64;
        for &(s, e) in &self.sys_zones {
            overhead += (e - s) as u64;
        }
        // Group 0's zone starts at block 0, which `first_data_block` already counts on 1 KiB.
        overhead = overhead.saturating_sub(self.sb.first_data_block as u64);
        let bfree: u64 = self.groups.iter().map(|g| g.free_blocks_count as u64).sum();
        let ffree: u64 = self.groups.iter().map(|g| g.free_inodes_count as u64).sum();
        StatFs {
            f_type: EXT2_MAGIC as u32,
            f_bsize: self.bs,
            f_blocks: (self.sb.blocks_count as u64).saturating_sub(overhead),
            f_bfree: bfree,
            f_bavail: bfree.saturating_sub(self.sb.r_blocks_count as u64),
            f_files: self.sb.inodes_count as u64,
            f_ffree: ffree,
            f_namelen: NAME_MAX as u32,
        }
    }

    /// Every metadata block in use, with what it holds: superblocks and descriptor tables,
    /// bitmaps, inode tables, directory blocks and indirect blocks. For tools and the fuzzer.
    pub fn metadata_blocks(&mut self) -> Result<Vec<(u32, MetaKind)>> {
        let mut out: Vec<(u32, MetaKind)> = Vec::new();
        let sparse = self.sb.feature_ro_compat & RO_COMPAT_SPARSE_SUPER != 0;
        let gdt_blocks =
            (self.ngroups as u64 * GROUP_DESC_SIZE as u64).div_ceil(self.bs as u64) as u32;
        let itb = self.sb.inodes_per_group * self.sb.inode_size as u32 / self.bs;
        for g in 0..self.ngroups {
            let first = self.group_first_block(g);
            if has_super(sparse, g) {
                let sb_blk = if g == 0 {
                    (SUPERBLOCK_OFFSET / self.bs as u64) as u32
                } else {
                    first
                };
                out.push((sb_blk, MetaKind::Superblock));
                out.extend(
                    (first + 1..first + 1 + gdt_blocks).map(|b| (b, MetaKind::GroupDescriptors)),
                );
            }
            let gd = self.groups[g as usize];
            out.push((gd.block_bitmap, MetaKind::Bitmap));
            out.push((gd.inode_bitmap, MetaKind::Bitmap));
            out.extend((gd.inode_table..gd.inode_table + itb).map(|b| (b, MetaKind::InodeTable)));
        }
        for ino in 1..=self.sb.inodes_count {
            let inode = self.read_inode(ino)?;
            if inode.mode == 0 || inode.links_count == 0 || !self.has_block_map(&inode) {
                continue;
            }
            let p = (self.bs / 4) as usize;
            let mut level: Vec<u32> = Vec::new();
            for (slot, depth) in [(IND_BLOCK, 1), (DIND_BLOCK, 2), (TIND_BLOCK, 3)] {
                level.clear();
                level.push(inode.block[slot]);
                for d in 0..depth {
                    let mut next = Vec::new();
                    for &b in &level {
                        if b == 0 || !self.valid_data_block(b) {
                            continue;
                        }
                        out.push((b, MetaKind::Indirect));
                        if d + 1 < depth {
                            let buf = self.disk.bread(b)?;
                            next.extend(
                                (0..p)
                                    .map(|i| crate::le::u32_at(buf, 4 * i))
                                    .filter(|&x| x != 0),
                            );
                        }
                    }
                    level = next;
                }
            }
            if inode.is_dir() {
                for lblk in 0..inode.size / self.bs as u64 {
                    let b = self.bmap(ino, &inode, lblk)?;
                    if b != 0 {
                        out.push((b, MetaKind::Directory));
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup_by_key(|m| m.0);
        Ok(out)
    }
}
