//! cowlab's data disk `/dev/vda` (docs/dma.md): its pristine contents (every 512-byte sector
//! holds its LBA as a little-endian u64, repeated) and the cowlab-only ioctls that script DMA
//! races (hold submitted requests away from the device, hand them over, count them).

use crate::calls::raw;
use crate::sys::{nr, Errno};

/// The device's logical sector size (`BLKSSZGET`).
pub const SECTOR: usize = 512;
/// `COWLAB_VDA_HOLD`: requests submitted from now on wait (pages pinned) until `RELEASE`.
pub const HOLD: usize = 0xcb01;
/// `COWLAB_VDA_RELEASE`: hands the held requests to the device; returns how many.
pub const RELEASE: usize = 0xcb02;
/// `COWLAB_VDA_INFLIGHT`: the number of requests not yet completed.
pub const INFLIGHT: usize = 0xcb03;

/// The stamped byte at disk offset `pos` of the pristine image.
pub fn stamp_byte(pos: u64) -> u8 {
    let lba = pos / SECTOR as u64;
    lba.to_le_bytes()[(pos % 8) as usize]
}

/// Whether `buf` holds the pristine image's bytes from disk offset `pos` on.
pub fn is_stamped(buf: &[u8], pos: u64) -> bool {
    buf.iter()
        .enumerate()
        .all(|(i, &b)| b == stamp_byte(pos + i as u64))
}

/// `ioctl(fd, cmd, 0)`: the `/dev/vda` controls above take no argument.
pub fn control(fd: i32, cmd: usize) -> Result<usize, Errno> {
    // SAFETY: no pointer is passed; a command that expects one gets NULL, which the kernel
    // refuses (EFAULT) rather than writing through.
    unsafe { raw(nr::IOCTL, [fd as usize, cmd, 0, 0, 0, 0]) }
}
