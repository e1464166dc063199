//! cowlab's ext2 filesystem: revision 1 as `mke2fs -t ext2` makes it (1 to 4 KiB blocks, direct,
//! indirect, double- and triple-indirect block maps, block and inode bitmaps, linear directories
//! with the `filetype` feature, `i_size_high` for files past 4 GiB), read and written over a
//! small [`BlockDevice`] trait so the same code runs in the kernel over virtio-blk and on the
//! host over an image file, where e2fsprogs checks what it wrote.
//!
//! The pieces: `layout` (the on-disk structures), `cache` (the bounded write-back buffer cache for
//! metadata), `fs` (mount-time validation, sync, unmount, statfs), `balloc` (bitmaps), `inode`
//! (block maps, truncation, eviction), `dir` (directory blocks), `file` (read/write/truncate),
//! `ops` (the namespace operations a VFS calls), `space` (fallocate, SEEK_DATA/SEEK_HOLE), `wb` (block mapping for the kernel's write-back page cache), `mkfs` (an empty filesystem). A corrupted image is refused at mount or gets
//! `EUCLEAN` for the damaged file with a one-line description ([`Ext2::take_error`]); nothing
//! panics, loops without bound or writes outside the filesystem. See docs/filesystem.md.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

mod balloc;
mod cache;
mod device;
mod dir;
mod direct;
mod errno;
mod file;
mod fs;
mod inode;
pub mod layout;
mod le;
mod mkfs;
mod ops;
mod space;
mod wb;

pub use cache::CacheStats;
pub use device::{BlockDevice, IoError};
pub use dir::DirEntry;
pub use errno::{Errno, Result};
pub use fs::{Ext2, MetaKind, MountError, MountOptions, StatFs};
pub use mkfs::{format, FormatOptions};
pub use ops::Stat;
pub use space::{FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
