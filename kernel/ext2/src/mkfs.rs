//! Making a filesystem (`mkfs`): an empty ext2 revision 1 with the `filetype`, `sparse_super` and
//! `large_file` features, 128-byte inodes, a root directory and `lost+found`, laid out group by
//! group as described in docs/filesystem.md. The kernel's tests use it to make a disk without
//! e2fsprogs; the host tests check its output with `e2fsck -fn`.

use alloc::vec;
use alloc::vec::Vec;

use crate::device::BlockDevice;
use crate::errno::{Errno, Result};
use crate::fs::has_super;
use crate::layout::*;
use crate::le::{put_u16, put_u32};

/// What to make.
#[derive(Clone, Copy, Debug)]
pub struct FormatOptions {
    /// 1024, 2048 or 4096.
    pub block_size: u32,
    /// Bytes of disk per inode (mke2fs's `inode_ratio`).
    pub bytes_per_inode: u32,
    /// The creation time, seconds since the epoch.
    pub now: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name` (at most 16 bytes are kept).
    pub label: &'static str,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            block_size: 4096,
            bytes_per_inode: 16384,
            now: 0,
            uuid: [0; 16],
            label: "",
        }
    }
}

const INODE_SIZE: u32 = 128;
const LOST_FOUND_INO: u32 = 11;

fn write_block<D: BlockDevice>(dev: &mut D, bs: u32, blk: u32, data: &[u8]) -> Result<()> {
    let ss = dev.sector_size() as u64;
    dev.write_sectors(blk as u64 * bs as u64 / ss, data)
        .map_err(|_| Errno::EIO)
}

fn set_bits(buf: &mut [u8], range: core::ops::Range<u32>) {
    for i in range {
        if let Some(b) = buf.get_mut((i / 8) as usize) {
            *b |= 1 << (i % 8);
        }
    }
}

/// Writes an empty filesystem over the whole of `dev`.
pub fn format<D: BlockDevice>(dev: &mut D, opts: &FormatOptions) -> Result<()> {
    let bs = opts.block_size;
    let ss = dev.sector_size();
    if !matches!(bs, 1024 | 2048 | 4096) || ss > bs as usize || opts.bytes_per_inode < bs {
        return Err(Errno::EINVAL);
    }
    let fdb: u32 = if bs == 1024 { 1 } else { 0 };
    let bpg = 8 * bs;
    let total =
        (dev.sector_count().saturating_mul(ss as u64) / bs as u64).min(u32::MAX as u64) as u32;
    let per_block = bs / INODE_SIZE;
    let itb_for = |ipg: u32| ipg / per_block;

    // Groups, inodes per group (whole inode-table blocks, at most one bitmap block's worth), and
    // a last group big enough for its own metadata and some data (else it is dropped).
    let mut blocks = total;
    let (ngroups, ipg, gdt_blocks) = loop {
        if blocks <= fdb + 64 {
            return Err(Errno::ENOSPC);
        }
        let ngroups = (blocks - fdb).div_ceil(bpg);
        let want = ((blocks as u64 * bs as u64 / opts.bytes_per_inode as u64) / ngroups as u64)
            .max(16) as u32;
        let ipg = want
            .div_ceil(per_block)
            .saturating_mul(per_block)
            .min(8 * bs);
        let gdt_blocks = (ngroups * GROUP_DESC_SIZE as u32).div_ceil(bs);
        let last = ngroups - 1;
        let last_len = blocks - fdb - last * bpg;
        let overhead = if has_super(true, last) {
            1 + gdt_blocks
        } else {
            0
        } + 2
            + itb_for(ipg);
        if last_len >= overhead + 50 || ngroups == 1 && last_len > overhead + 8 {
            break (ngroups, ipg, gdt_blocks);
        }
        if ngroups == 1 {
            return Err(Errno::ENOSPC);
        }
        blocks = fdb + last * bpg;
    };
    let itb = itb_for(ipg);
    let inodes = ngroups * ipg;

    // Group layout and free counts.
    let mut groups = Vec::with_capacity(ngroups as usize);
    let mut free_blocks_total = 0u32;
    let root_blk;
    let lf_blk;
    {
        let mut data_start = Vec::new();
        for g in 0..ngroups {
            let start = fdb + g * bpg;
            let mut next = start;
            if has_super(true, g) {
                next += 1 + gdt_blocks;
            }
            let gd = GroupDesc {
                block_bitmap: next,
                inode_bitmap: next + 1,
                inode_table: next + 2,
                free_blocks_count: 0,
                free_inodes_count: ipg as u16,
                used_dirs_count: 0,
            };
            data_start.push(next + 2 + itb);
            groups.push(gd);
        }
        root_blk = data_start[0];
        lf_blk = data_start[0] + 1;
        for g in 0..ngroups {
            let start = fdb + g * bpg;
            let len = (blocks - start).min(bpg);
            let mut used = data_start[g as usize] - start;
            if g == 0 {
                used += 2;
                groups[0].free_inodes_count = (ipg - LOST_FOUND_INO) as u16;
                groups[0].used_dirs_count = 2;
            }
            groups[g as usize].free_blocks_count = (len - used) as u16;
            free_blocks_total += len - used;
        }
    }

    // Superblock.
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    put_u32(&mut sb, 0, inodes);
    put_u32(&mut sb, 4, blocks);
    put_u32(&mut sb, 8, blocks / 20);
    put_u32(&mut sb, 12, free_blocks_total);
    put_u32(&mut sb, 16, inodes - LOST_FOUND_INO);
    put_u32(&mut sb, 20, fdb);
    put_u32(&mut sb, 24, bs.trailing_zeros() - 10);
    put_u32(&mut sb, 28, bs.trailing_zeros() - 10);
    put_u32(&mut sb, 32, bpg);
    put_u32(&mut sb, 36, bpg);
    put_u32(&mut sb, 40, ipg);
    put_u32(&mut sb, 48, opts.now);
    put_u16(&mut sb, 54, 0xffff); // s_max_mnt_count -1: no mount-count checks
    put_u16(&mut sb, 56, EXT2_MAGIC);
    put_u16(&mut sb, 58, STATE_VALID);
    put_u16(&mut sb, 60, 1); // s_errors: continue
    put_u32(&mut sb, 64, opts.now); // s_lastcheck
    put_u32(&mut sb, 76, 1); // s_rev_level
    put_u32(&mut sb, 84, LOST_FOUND_INO); // s_first_ino
    put_u16(&mut sb, 88, INODE_SIZE as u16);
    put_u32(&mut sb, 96, INCOMPAT_FILETYPE);
    put_u32(&mut sb, 100, RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE);
    sb[104..120].copy_from_slice(&opts.uuid);
    let label = opts.label.as_bytes();
    let n = label.len().min(16);
    sb[120..120 + n].copy_from_slice(&label[..n]);
    put_u32(&mut sb, 264, opts.now); // s_mkfs_time

    // Descriptor table (the same in every copy).
    let mut gdt = vec![0u8; (gdt_blocks * bs) as usize];
    for (g, gd) in groups.iter().enumerate() {
        gd.serialize(&mut gdt[g * GROUP_DESC_SIZE..(g + 1) * GROUP_DESC_SIZE]);
    }

    let mut block = vec![0u8; bs as usize];
    for g in 0..ngroups {
        let start = fdb + g * bpg;
        let len = (blocks - start).min(bpg);
        let gd = groups[g as usize];
        if has_super(true, g) {
            put_u16(&mut sb, 90, g as u16); // s_block_group_nr
            if g == 0 {
                // Byte 1024: in block 0 for 2 and 4 KiB blocks (after the boot sector), block 1
                // for 1 KiB.
                block.fill(0);
                let off = if bs == 1024 { 0 } else { 1024 };
                block[off..off + SUPERBLOCK_SIZE].copy_from_slice(&sb);
                write_block(dev, bs, start.max(1024 / bs), &block)?;
            } else {
                block.fill(0);
                block[..SUPERBLOCK_SIZE].copy_from_slice(&sb);
                write_block(dev, bs, start, &block)?;
            }
            write_block(dev, bs, start + 1, &gdt)?;
        }
        // Block bitmap: metadata (and, in group 0, the two directory blocks) used; the bits past
        // the group's end set, as e2fsck expects.
        block.fill(0);
        let used = gd.inode_table + itb - start + if g == 0 { 2 } else { 0 };
        set_bits(&mut block, 0..used);
        set_bits(&mut block, len..8 * bs);
        write_block(dev, bs, gd.block_bitmap, &block)?;
        // Inode bitmap: reserved inodes and lost+found in group 0; padding set.
        block.fill(0);
        if g == 0 {
            set_bits(&mut block, 0..LOST_FOUND_INO);
        }
        set_bits(&mut block, ipg..8 * bs);
        write_block(dev, bs, gd.inode_bitmap, &block)?;
        // Inode table: zeroed (a device may hold anything).
        block.fill(0);
        for i in 0..itb {
            write_block(dev, bs, gd.inode_table + i, &block)?;
        }
    }

    // The root directory and lost+found.
    let dir_inode = |mode: u16, links: u16, blk: u32| {
        let mut inode = Inode {
            mode,
            atime: opts.now,
            ctime: opts.now,
            mtime: opts.now,
            links_count: links,
            size: bs as u64,
            blocks: bs / 512,
            ..Inode::default()
        };
        inode.block[0] = blk;
        inode
    };
    let put_dir = |block: &mut [u8], entries: &[(u32, &[u8])]| {
        block.fill(0);
        let mut off = 0;
        for (i, (ino, name)) in entries.iter().enumerate() {
            let rec = if i + 1 == entries.len() {
                bs as usize - off
            } else {
                rec_len_for(name.len())
            };
            crate::dir::put_entry(block, off, *ino, rec, name, Some(2));
            off += rec;
        }
    };
    put_dir(
        &mut block,
        &[
            (ROOT_INO, b"."),
            (ROOT_INO, b".."),
            (LOST_FOUND_INO, b"lost+found"),
        ],
    );
    write_block(dev, bs, root_blk, &block)?;
    put_dir(&mut block, &[(LOST_FOUND_INO, b"."), (ROOT_INO, b"..")]);
    write_block(dev, bs, lf_blk, &block)?;

    let table = groups[0].inode_table;
    block.fill(0);
    let root = dir_inode(S_IFDIR | 0o755, 3, root_blk);
    let off = (ROOT_INO - 1) * INODE_SIZE;
    root.serialize(&mut block[off as usize..(off + INODE_SIZE) as usize]);
    let lf = dir_inode(S_IFDIR | 0o700, 2, lf_blk);
    let lf_off = (LOST_FOUND_INO - 1) * INODE_SIZE;
    if lf_off / bs == 0 {
        lf.serialize(&mut block[lf_off as usize..(lf_off + INODE_SIZE) as usize]);
        write_block(dev, bs, table, &block)?;
    } else {
        write_block(dev, bs, table, &block)?;
        block.fill(0);
        let o = (lf_off % bs) as usize;
        lf.serialize(&mut block[o..o + INODE_SIZE as usize]);
        write_block(dev, bs, table + lf_off / bs, &block)?;
    }
    dev.flush().map_err(|_| Errno::EIO)
}
