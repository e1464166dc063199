//! The mounted root filesystem: one `cowlab_ext2::Ext2` over the second virtio-blk disk
//! (`vdb`), behind one lock, mounted at boot ([`mount_root`]) and unmounted at power-off
//! ([`unmount_root`]).
//!
//! Lock rule: [`with_fs`] holds the filesystem's sleeping lock (`proc::sleeplock`, Linux's
//! per-filesystem mutex) across the crate's block requests, and the glue sleeps until the
//! virtio completion interrupt wakes it (`ext2_glue`); other tasks wanting the filesystem sleep
//! on the lock meanwhile, and the CPU runs whoever is runnable. No spin lock is held across
//! either sleep. The virtio interrupt handler never takes this lock. A caller of [`with_fs`]
//! must not hold a spin lock (the frame allocator, an address-space lock, a driver queue lock:
//! exec copies a program out first, then builds the address space), and nothing under this
//! lock may call back into the file layer (the lock is not recursive). The page cache's I/O,
//! done under its spin locks, uses [`with_fs_atomic`] instead, which polls.
#![deny(unsafe_code)]

use alloc::string::String;

use alloc::boxed::Box;
use cowlab_ext2::{Errno as Ext2Errno, Ext2, MountOptions};

use super::ext2_glue::VirtioDisk;
use crate::drivers::virtio_blk;
use crate::errno::Errno;
use crate::proc::sleeplock::SleepLock;

static ROOT: SleepLock<Box<Ext2<VirtioDisk>>> = SleepLock::new("the ext2 root filesystem");

/// Whether `/` is the ext2 root (else the ramdisk).
pub fn mounted() -> bool {
    ROOT.is_present()
}

/// The crate's errno as the kernel's (the same Linux numbers).
pub fn errno(e: Ext2Errno) -> Errno {
    match e {
        Ext2Errno::EPERM => Errno::EPERM,
        Ext2Errno::ENOENT => Errno::ENOENT,
        Ext2Errno::ENXIO => Errno::ENXIO,
        Ext2Errno::EOPNOTSUPP => Errno::EOPNOTSUPP,
        Ext2Errno::EIO => Errno::EIO,
        Ext2Errno::ENOMEM => Errno::ENOMEM,
        Ext2Errno::EACCES => Errno::EACCES,
        Ext2Errno::EBUSY => Errno::EBUSY,
        Ext2Errno::EEXIST => Errno::EEXIST,
        Ext2Errno::EXDEV => Errno::EXDEV,
        Ext2Errno::ENOTDIR => Errno::ENOTDIR,
        Ext2Errno::EISDIR => Errno::EISDIR,
        Ext2Errno::EINVAL => Errno::EINVAL,
        Ext2Errno::EFBIG => Errno::EFBIG,
        Ext2Errno::ENOSPC => Errno::ENOSPC,
        Ext2Errno::EROFS => Errno::EROFS,
        Ext2Errno::EMLINK => Errno::EMLINK,
        Ext2Errno::ENAMETOOLONG => Errno::ENAMETOOLONG,
        Ext2Errno::ENOTEMPTY => Errno::ENOTEMPTY,
        Ext2Errno::ELOOP => Errno::ELOOP,
        Ext2Errno::EOVERFLOW => Errno::EOVERFLOW,
        Ext2Errno::EUCLEAN => Errno::EUCLEAN,
    }
}

/// Seconds since the epoch, for the filesystem's timestamps.
/// The filesystem's clock: seconds since the epoch (timestamps).
pub fn clock() -> u32 {
    (crate::rtc::realtime_micros() / 1_000_000) as u32
}

/// Runs `f` on the mounted filesystem (`ENOENT` if there is none), with the crate's errors as
/// the kernel's; a corruption the crate found is reported as one console line.
pub fn with_fs<T>(
    f: impl FnOnce(&mut Ext2<VirtioDisk>) -> cowlab_ext2::Result<T>,
) -> Result<T, Errno> {
    with_fs_sleeping(true, f)
}

/// [`with_fs`] for a caller holding a spin lock (the page cache's I/O): neither the lock nor
/// the block requests are waited for asleep (`ext2_glue::without_sleeping`).
pub fn with_fs_atomic<T>(
    f: impl FnOnce(&mut Ext2<VirtioDisk>) -> cowlab_ext2::Result<T>,
) -> Result<T, Errno> {
    super::ext2_glue::without_sleeping(|| with_fs_sleeping(false, f))
}

fn with_fs_sleeping<T>(
    may_sleep: bool,
    f: impl FnOnce(&mut Ext2<VirtioDisk>) -> cowlab_ext2::Result<T>,
) -> Result<T, Errno> {
    let result = ROOT
        .with_sleeping(may_sleep, |fs| {
            let result = f(fs);
            (result, fs.take_error())
        })
        .ok_or(Errno::ENOENT)?;
    if let (_, Some(line)) = &result {
        warn!("{line}");
    }
    result.0.map_err(errno)
}

/// Mounts the root disk (`vdb`) if there is one. On any failure the ramdisk stays the root,
/// with one console line saying why.
pub fn mount_root() {
    let Some(device) = virtio_blk::root_device() else {
        info!("ext2: no root disk (vdb); / is the ramdisk");
        return;
    };
    let Some(disk) = VirtioDisk::new(device) else {
        warn!("ext2: no memory for the root disk's bounce buffer; / is the ramdisk");
        return;
    };
    let opts = MountOptions {
        read_only: disk.read_only(),
        ..MountOptions::default()
    };
    match Ext2::mount(disk, opts) {
        Ok(mut fs) => {
            fs.set_clock(clock);
            if let Some(w) = fs.mount_warning() {
                warn!("{w}");
            }
            let st = fs.statfs();
            info!(
                "ext2: mounted vdb at / ({} blocks of {} bytes, {} free{})",
                st.f_blocks,
                st.f_bsize,
                st.f_bfree,
                match fs.read_only_reason() {
                    Some(r) => alloc::format!(", read-only: {r}"),
                    None if fs.is_read_only() => String::from(", read-only"),
                    None => String::new(),
                }
            );
            ROOT.replace(Some(Box::new(fs)));
            crate::memory::mm().set_shrinker(super::ext2_cache::shrink);
            super::ext2_cache::init();
        }
        Err(e) => warn!(
            "ext2: cannot mount vdb ({:?}: {}); / is the ramdisk",
            e.errno, e.reason
        ),
    }
}

/// `sync(2)`/`syncfs(2)`: every dirty page of the open files' caches, then every dirty
/// metadata block, written back.
pub fn sync() -> Result<(), Errno> {
    if !mounted() {
        return Ok(());
    }
    let pages = super::ext2_cache::sync_all();
    with_fs(|fs| fs.sync()).and(pages)
}

/// Unmounts the root at power-off: orphans freed, the clean state and every dirty block
/// written back. One console line if the write-back failed.
pub fn unmount_root() {
    if let Err(e) = super::ext2_cache::sync_all() {
        warn!("ext2: page-cache writeback at unmount failed: {e:?}");
    }
    super::ext2_cache::evict_all();
    let Some(fs) = ROOT.replace(None) else {
        return;
    };
    let (_disk, result) = fs.unmount();
    match result {
        Ok(()) => info!("ext2: unmounted /"),
        Err(e) => warn!("ext2: unmount of / failed to write back: {e:?}"),
    }
}
