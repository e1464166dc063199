//! The ext2 glue on real hardware (QEMU's virtio-blk): `VirtioDisk` reads the stamped raw disk
//! (`/dev/vda`) sector for sector, and the ext2 crate, running in the kernel over it, refuses that
//! disk (no ext2 magic) with a one-line reason instead of panicking.
#![deny(unsafe_code)]

use alloc::vec;

use cowlab_ext2::{BlockDevice, Errno as Ext2Errno, Ext2, MountOptions};

use super::{ensure, TestResult};
use crate::drivers::virtio_blk;
use crate::fs::ext2_glue::{VirtioDisk, CHUNK};

/// The pristine disk's byte at offset `pos` (sector `n` is the u64 `n` repeated).
fn stamp(pos: u64) -> u8 {
    (pos / 512).to_le_bytes()[(pos % 8) as usize]
}

pub fn ext2_glue_reads_vda_and_refuses_a_raw_disk() -> TestResult {
    let Some(device) = virtio_blk::device() else {
        return Err(super::TestFailure("no virtio-blk device attached".into()));
    };
    let Some(mut disk) = VirtioDisk::new(device) else {
        return Err(super::TestFailure("no heap for the bounce buffer".into()));
    };
    ensure!(
        disk.sector_size() == 512,
        "sector size {}",
        disk.sector_size()
    );
    ensure!(!disk.read_only(), "the test disk is writable");
    ensure!(
        disk.sector_count() == device.capacity_bytes() / 512,
        "sector count {}",
        disk.sector_count()
    );
    // More than one bounce buffer's worth, so the transfer is split.
    let first = 100u64;
    let mut buf = vec![0u8; CHUNK + 3 * 512];
    ensure!(
        disk.read_sectors(first, &mut buf).is_ok(),
        "read of {} bytes failed",
        buf.len()
    );
    let base = first * 512;
    let bad = buf
        .iter()
        .enumerate()
        .position(|(i, &b)| b != stamp(base + i as u64));
    ensure!(bad.is_none(), "byte {:?} is not the stamp", bad);
    let past = disk.sector_count();
    ensure!(
        disk.read_sectors(past, &mut buf[..512]).is_err(),
        "a read past the end succeeded"
    );
    match Ext2::mount(disk, MountOptions::default()) {
        Ok(_) => Err(super::TestFailure("mounted a raw disk as ext2".into())),
        Err(e) => {
            ensure!(e.errno == Ext2Errno::EINVAL, "errno {:?}", e.errno);
            ensure!(e.reason.contains("bad magic"), "reason: {}", e.reason);
            info!("ext2 glue: {e}");
            Ok(())
        }
    }
}
