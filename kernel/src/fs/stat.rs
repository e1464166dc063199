//! `struct stat` and `struct statfs` as Linux lays them out on x86_64, and the `statfs` answers
//! the file types share (which file system Linux would report for each).
#![deny(unsafe_code)]

use super::tmpfs;

/// Linux `struct stat` (x86_64).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub pad0: u32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
    pub reserved: [i64; 3],
}

impl Stat {
    /// What every file starts from: one link, 4 KiB blocks.
    pub fn base(mode: u32, ino: u64) -> Stat {
        Stat {
            st_mode: mode,
            st_ino: ino,
            st_nlink: 1,
            st_blksize: 4096,
            ..Stat::default()
        }
    }
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFREG: u32 = 0o100000;

/// Linux `struct statfs` (x86_64, 120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct StatFs {
    pub f_type: u64,
    pub f_bsize: u64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: u64,
    pub f_frsize: u64,
    pub f_flags: u64,
    pub f_spare: [u64; 4],
}

const _: () = assert!(core::mem::size_of::<StatFs>() == 120);

pub const RAMFS_MAGIC: u64 = 0x8584_58f6;
pub const PROC_SUPER_MAGIC: u64 = 0x9fa0;
pub const DEBUGFS_MAGIC: u64 = 0x6462_6720;
pub const PIPEFS_MAGIC: u64 = 0x5049_5045;
pub const ANON_INODE_FS_MAGIC: u64 = 0x0904_1934;
/// `f_flags` bits (`ST_*`): valid, read-only, nosuid, nodev, noexec.
pub const ST_VALID: u64 = 0x20;
pub const ST_RDONLY: u64 = 1;
pub const ST_NOSUID: u64 = 2;
pub const ST_NODEV: u64 = 4;
pub const ST_NOEXEC: u64 = 8;

/// A `statfs` of the file system `f_type` with the `ST_*` bits `flags` (besides `ST_VALID`).
pub fn statfs_of(f_type: u64, flags: u64) -> StatFs {
    StatFs {
        f_type,
        f_bsize: 4096,
        f_frsize: 4096,
        f_namelen: tmpfs::NAME_MAX as u64,
        f_flags: ST_VALID | flags,
        ..StatFs::default()
    }
}

/// The devices (Linux's devtmpfs) report `TMPFS_MAGIC` with Linux's default size, half of
/// memory, in pages, none of it used (`f_bfree` never above the free frames).
pub fn tmpfs_statfs(flags: u64) -> StatFs {
    let half = crate::memory::mm().stats().usable_frames / 2;
    tmpfs_sized(flags, half, 0)
}

/// `/tmp` reports `TMPFS_MAGIC` with its size limit and usage (`tmpfs::quota`, half of memory,
/// in pages).
pub fn tmp_statfs(flags: u64) -> StatFs {
    let quota = tmpfs::quota();
    tmpfs_sized(flags, quota.max_pages(), quota.used_pages())
}

/// memfds live on Linux's internal shmem mount, which has no limits: `TMPFS_MAGIC` with zero
/// blocks and inodes.
pub fn shmem_mount_statfs(flags: u64) -> StatFs {
    statfs_of(tmpfs::TMPFS_MAGIC, flags)
}

/// A tmpfs `statfs` of `max` blocks, `used` of them in use (`f_bfree` never above the free
/// frames), with the inode limit `tmpfs::MAX_INODES`.
fn tmpfs_sized(flags: u64, max: u64, used: u64) -> StatFs {
    let stats = crate::memory::mm().stats();
    let mut st = statfs_of(tmpfs::TMPFS_MAGIC, flags);
    st.f_blocks = max;
    st.f_bfree = max.saturating_sub(used).min(stats.free_frames);
    st.f_bavail = st.f_bfree;
    st.f_files = tmpfs::MAX_INODES;
    st.f_ffree = tmpfs::MAX_INODES.saturating_sub(tmpfs::inodes_in_use());
    st.f_fsid = [tmpfs::TMPFS_DEV as i32, 0];
    st
}
