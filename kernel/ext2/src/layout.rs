//! The on-disk format of ext2 revision 1: the superblock, the group descriptors and the inode,
//! with the byte offsets as `mke2fs -t ext2` and Linux's ext2 write them (all little-endian).

use crate::le::{put_u16, put_u32, u16_at, u32_at};

/// `s_magic`.
pub const EXT2_MAGIC: u16 = 0xEF53;
/// The superblock always starts 1024 bytes into the device.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
pub const SUPERBLOCK_SIZE: usize = 1024;
/// `s_state` bits.
pub const STATE_VALID: u16 = 1;
pub const STATE_ERROR: u16 = 2;

pub const ROOT_INO: u32 = 2;
pub const GOOD_OLD_FIRST_INO: u32 = 11;
pub const GOOD_OLD_INODE_SIZE: u16 = 128;
/// `EXT2_LINK_MAX`: the largest `i_links_count` Linux's ext2 creates.
pub const LINK_MAX: u16 = 32000;
pub const NAME_MAX: usize = 255;
pub const GROUP_DESC_SIZE: usize = 32;

/// Feature flags we implement. Unknown incompatible features refuse the mount; unknown
/// read-only-compatible ones force a read-only mount; compatible ones are ignored as their
/// definition allows.
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
pub const INCOMPAT_SUPPORTED: u32 = INCOMPAT_FILETYPE;
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
pub const RO_COMPAT_SUPPORTED: u32 = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE;

/// `i_flags`: a hashed-index directory (`dir_index`); we read such directories linearly (the index
/// blocks look like empty entries) and drop the flag when we change one, as Linux's ext2 does.
pub const INDEX_FL: u32 = 0x1000;

/// Mode bits (`S_IF*`).
pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;
pub const S_ISGID: u16 = 0o2000;

/// The superblock fields we use, parsed; `raw` keeps the whole 1024 bytes so a write-back
/// preserves every field we do not interpret.
#[derive(Clone)]
pub struct Superblock {
    pub raw: [u8; SUPERBLOCK_SIZE],
    pub inodes_count: u32,
    pub blocks_count: u32,
    pub r_blocks_count: u32,
    pub free_blocks_count: u32,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub log_block_size: u32,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub magic: u16,
    pub state: u16,
    pub rev_level: u32,
    pub first_ino: u32,
    pub inode_size: u16,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub reserved_gdt_blocks: u16,
}

impl Superblock {
    pub fn parse(raw: &[u8]) -> Superblock {
        let mut copy = [0u8; SUPERBLOCK_SIZE];
        let n = raw.len().min(SUPERBLOCK_SIZE);
        copy[..n].copy_from_slice(&raw[..n]);
        let b = &copy;
        let rev_level = u32_at(b, 76);
        let (first_ino, inode_size) = if rev_level == 0 {
            (GOOD_OLD_FIRST_INO, GOOD_OLD_INODE_SIZE)
        } else {
            (u32_at(b, 84), u16_at(b, 88))
        };
        Superblock {
            inodes_count: u32_at(b, 0),
            blocks_count: u32_at(b, 4),
            r_blocks_count: u32_at(b, 8),
            free_blocks_count: u32_at(b, 12),
            free_inodes_count: u32_at(b, 16),
            first_data_block: u32_at(b, 20),
            log_block_size: u32_at(b, 24),
            blocks_per_group: u32_at(b, 32),
            inodes_per_group: u32_at(b, 40),
            magic: u16_at(b, 56),
            state: u16_at(b, 58),
            rev_level,
            first_ino,
            inode_size,
            feature_compat: if rev_level == 0 { 0 } else { u32_at(b, 92) },
            feature_incompat: if rev_level == 0 { 0 } else { u32_at(b, 96) },
            feature_ro_compat: if rev_level == 0 { 0 } else { u32_at(b, 100) },
            reserved_gdt_blocks: if rev_level == 0 { 0 } else { u16_at(b, 206) },
            raw: copy,
        }
    }

    /// The fields we change, written into `raw`; the caller supplies the times and mount count.
    pub fn serialize(&mut self) -> &[u8; SUPERBLOCK_SIZE] {
        put_u32(&mut self.raw, 12, self.free_blocks_count);
        put_u32(&mut self.raw, 16, self.free_inodes_count);
        put_u16(&mut self.raw, 58, self.state);
        if self.rev_level != 0 {
            put_u32(&mut self.raw, 100, self.feature_ro_compat);
        }
        &self.raw
    }

    pub fn set_mtime(&mut self, t: u32) {
        put_u32(&mut self.raw, 44, t);
    }
    pub fn set_wtime(&mut self, t: u32) {
        put_u32(&mut self.raw, 48, t);
    }
    pub fn wtime(&self) -> u32 {
        u32_at(&self.raw, 48)
    }
    pub fn bump_mount_count(&mut self) {
        let n = u16_at(&self.raw, 52).wrapping_add(1);
        put_u16(&mut self.raw, 52, n);
    }
}

/// One block group descriptor (32 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupDesc {
    pub block_bitmap: u32,
    pub inode_bitmap: u32,
    pub inode_table: u32,
    pub free_blocks_count: u16,
    pub free_inodes_count: u16,
    pub used_dirs_count: u16,
}

impl GroupDesc {
    pub fn parse(b: &[u8]) -> GroupDesc {
        GroupDesc {
            block_bitmap: u32_at(b, 0),
            inode_bitmap: u32_at(b, 4),
            inode_table: u32_at(b, 8),
            free_blocks_count: u16_at(b, 12),
            free_inodes_count: u16_at(b, 14),
            used_dirs_count: u16_at(b, 16),
        }
    }

    /// Writes our fields; the flags and reserved bytes (`bg_flags`, unused by ext2) are kept.
    pub fn serialize(&self, b: &mut [u8]) {
        put_u32(b, 0, self.block_bitmap);
        put_u32(b, 4, self.inode_bitmap);
        put_u32(b, 8, self.inode_table);
        put_u16(b, 12, self.free_blocks_count);
        put_u16(b, 14, self.free_inodes_count);
        put_u16(b, 16, self.used_dirs_count);
    }
}

/// Number of block pointers in `i_block`: 12 direct, then single, double and triple indirect.
pub const N_BLOCKS: usize = 15;
pub const NDIR_BLOCKS: usize = 12;
pub const IND_BLOCK: usize = 12;
pub const DIND_BLOCK: usize = 13;
pub const TIND_BLOCK: usize = 14;

/// The first 128 bytes of an on-disk inode (the "good old" part every inode size has), parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// `i_size` plus, for regular files, `i_size_high << 32`.
    pub size: u64,
    pub atime: u32,
    pub ctime: u32,
    pub mtime: u32,
    pub dtime: u32,
    pub links_count: u16,
    /// `i_blocks`: 512-byte units, data and indirect blocks and the xattr block.
    pub blocks: u32,
    pub flags: u32,
    pub block: [u32; N_BLOCKS],
    pub generation: u32,
    pub file_acl: u32,
    /// `i_dir_acl` of a non-regular inode, kept as read.
    pub dir_acl: u32,
}

impl Inode {
    pub fn file_type(&self) -> u16 {
        self.mode & S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }
    pub fn is_reg(&self) -> bool {
        self.file_type() == S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    pub fn parse(b: &[u8]) -> Inode {
        let mode = u16_at(b, 0);
        let size_lo = u32_at(b, 4) as u64;
        let high = u32_at(b, 108);
        let is_reg = mode & S_IFMT == S_IFREG;
        let mut block = [0u32; N_BLOCKS];
        for (i, p) in block.iter_mut().enumerate() {
            *p = u32_at(b, 40 + 4 * i);
        }
        Inode {
            mode,
            uid: u16_at(b, 2) as u32 | (u16_at(b, 120) as u32) << 16,
            gid: u16_at(b, 24) as u32 | (u16_at(b, 122) as u32) << 16,
            size: if is_reg {
                size_lo | (high as u64) << 32
            } else {
                size_lo
            },
            atime: u32_at(b, 8),
            ctime: u32_at(b, 12),
            mtime: u32_at(b, 16),
            dtime: u32_at(b, 20),
            links_count: u16_at(b, 26),
            blocks: u32_at(b, 28),
            flags: u32_at(b, 32),
            block,
            generation: u32_at(b, 100),
            file_acl: u32_at(b, 104),
            dir_acl: if is_reg { 0 } else { high },
        }
    }

    /// Writes the fields above into the first 128 bytes of `b`; `osd1`, `i_faddr`, the fragment
    /// bytes, `i_blocks_hi` and everything past byte 128 stay as they are.
    pub fn serialize(&self, b: &mut [u8]) {
        put_u16(b, 0, self.mode);
        put_u16(b, 2, self.uid as u16);
        put_u32(b, 4, self.size as u32);
        put_u32(b, 8, self.atime);
        put_u32(b, 12, self.ctime);
        put_u32(b, 16, self.mtime);
        put_u32(b, 20, self.dtime);
        put_u16(b, 24, self.gid as u16);
        put_u16(b, 26, self.links_count);
        put_u32(b, 28, self.blocks);
        put_u32(b, 32, self.flags);
        for (i, p) in self.block.iter().enumerate() {
            put_u32(b, 40 + 4 * i, *p);
        }
        put_u32(b, 100, self.generation);
        put_u32(b, 104, self.file_acl);
        let high = if self.is_reg() {
            (self.size >> 32) as u32
        } else {
            self.dir_acl
        };
        put_u32(b, 108, high);
        put_u16(b, 120, (self.uid >> 16) as u16);
        put_u16(b, 122, (self.gid >> 16) as u16);
    }
}

/// Directory entry file types (`EXT2_FT_*`), stored when the `filetype` feature is on.
pub fn ft_from_mode(mode: u16) -> u8 {
    match mode & S_IFMT {
        S_IFREG => 1,
        S_IFDIR => 2,
        S_IFCHR => 3,
        S_IFBLK => 4,
        S_IFIFO => 5,
        S_IFSOCK => 6,
        S_IFLNK => 7,
        _ => 0,
    }
}

/// An `EXT2_FT_*` value as the `d_type` of `getdents64` (`DT_*`).
pub fn ft_to_dtype(ft: u8) -> u8 {
    match ft {
        1 => 8,
        2 => 4,
        3 => 2,
        4 => 6,
        5 => 1,
        6 => 12,
        7 => 10,
        _ => 0,
    }
}

/// `EXT2_DIR_REC_LEN`: the bytes an entry with a name of `name_len` bytes needs (8-byte header,
/// the name, rounded up to 4).
pub fn rec_len_for(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}
