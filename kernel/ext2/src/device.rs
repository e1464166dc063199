//! The block device the filesystem sits on: whole sectors in, whole sectors out.

/// A device error (the driver's request failed); the filesystem turns it into `EIO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError;

/// A disk as the filesystem sees it. The kernel implements it over virtio-blk; the tests over a
/// byte vector.
///
/// `buf.len()` is always a non-zero multiple of `sector_size()`, and every request lies inside
/// `sector_count()` sectors (the filesystem checks before calling).
pub trait BlockDevice {
    /// Bytes per sector: a power of two from 512 to 4096.
    fn sector_size(&self) -> usize;
    /// The device's size in sectors.
    fn sector_count(&self) -> u64;
    /// Reads `buf.len() / sector_size()` sectors starting at `sector`.
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf.len() / sector_size()` sectors starting at `sector`.
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes every completed write durable (a cache flush); called at the end of a sync.
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}
