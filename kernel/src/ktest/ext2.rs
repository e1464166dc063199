//! The ext2 glue on real hardware (QEMU's virtio-blk): `VirtioDisk` reads the stamped raw disk
//! (`/dev/vda`) sector for sector, and the ext2 crate, running in the kernel over it, refuses that
//! disk (no ext2 magic) with a one-line reason instead of panicking; and the whole crate runs in
//! the kernel over a RAM disk it formats itself.
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

/// A disk in kernel memory.
struct RamDisk(alloc::vec::Vec<u8>);

impl BlockDevice for RamDisk {
    fn sector_size(&self) -> usize {
        512
    }
    fn sector_count(&self) -> u64 {
        (self.0.len() / 512) as u64
    }
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), cowlab_ext2::IoError> {
        let at = sector as usize * 512;
        let src = self.0.get(at..at + buf.len()).ok_or(cowlab_ext2::IoError)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), cowlab_ext2::IoError> {
        let at = sector as usize * 512;
        let dst = self
            .0
            .get_mut(at..at + buf.len())
            .ok_or(cowlab_ext2::IoError)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

fn byte(seed: u32, i: usize) -> u8 {
    (seed as usize * 31 + i * 7 + i / 251) as u8
}

/// The whole crate in the kernel (its heap, its stack): format a 2 MiB RAM disk, mount, make
/// directories and files (one through double-indirect blocks), rename and unlink, unmount, mount
/// again and read everything back; a damaged superblock is then refused.
pub fn ext2_in_kernel_format_write_remount() -> TestResult {
    let mut ram = RamDisk(vec![0u8; 2 << 20]);
    let opts = cowlab_ext2::FormatOptions {
        block_size: 1024,
        now: 1_700_000_000,
        ..Default::default()
    };
    ensure!(
        cowlab_ext2::format(&mut ram, &opts).is_ok(),
        "format failed"
    );
    let fail = |what: &str, e: Ext2Errno| super::TestFailure(alloc::format!("{what}: {e:?}"));
    let mut fs = Ext2::mount(ram, MountOptions::default())
        .map_err(|e| super::TestFailure(alloc::format!("{e}")))?;
    let root = fs.root();
    let dir = fs
        .mkdir(root, b"dir", 0o755, 0, 0)
        .map_err(|e| fail("mkdir", e))?;
    let sizes = [0usize, 1, 1024, 5000, 300 * 1024];
    for (i, &size) in sizes.iter().enumerate() {
        let name = alloc::format!("file{i}");
        let f = fs
            .create(dir, name.as_bytes(), 0o644, 0, 0)
            .map_err(|e| fail("create", e))?;
        let data: alloc::vec::Vec<u8> = (0..size).map(|k| byte(i as u32, k)).collect();
        let n = fs.write(f, 0, &data).map_err(|e| fail("write", e))?;
        ensure!(n == size, "wrote {n} of {size}");
    }
    fs.rename(dir, b"file1", root, b"moved")
        .map_err(|e| fail("rename", e))?;
    fs.unlink(dir, b"file0").map_err(|e| fail("unlink", e))?;
    ensure!(
        fs.lookup(dir, b"file0") == Err(Ext2Errno::ENOENT),
        "unlinked name still there"
    );
    ensure!(fs.statfs().f_type == 0xEF53, "statfs f_type");
    let (ram, r) = fs.unmount();
    ensure!(r.is_ok(), "unmount: {:?}", r);

    let mut fs = Ext2::mount(ram, MountOptions::default())
        .map_err(|e| super::TestFailure(alloc::format!("remount: {e}")))?;
    ensure!(fs.mount_warning().is_none(), "unmounted cleanly");
    let root = fs.root();
    let dir = fs.lookup(root, b"dir").map_err(|e| fail("lookup dir", e))?;
    let mut names = 0;
    fs.readdir(dir, 0, |_, _| {
        names += 1;
        true
    })
    .map_err(|e| fail("readdir", e))?;
    ensure!(
        names == 2 + 3,
        "{names} entries in dir, want . .. and 3 files"
    );
    for (i, &size) in sizes.iter().enumerate().skip(1) {
        let (parent, name) = if i == 1 {
            (root, alloc::string::String::from("moved"))
        } else {
            (dir, alloc::format!("file{i}"))
        };
        let f = fs
            .lookup(parent, name.as_bytes())
            .map_err(|e| fail("lookup", e))?;
        let mut back = vec![0u8; size + 10];
        let n = fs.read(f, 0, &mut back).map_err(|e| fail("read", e))?;
        ensure!(n == size, "{name}: read {n} of {size}");
        let bad = (0..size).position(|k| back[k] != byte(i as u32, k));
        ensure!(bad.is_none(), "{name}: byte {:?} differs", bad);
    }
    ensure!(
        fs.error_count() == 0,
        "corruption reported: {:?}",
        fs.take_error()
    );
    let (mut ram, r) = fs.unmount();
    ensure!(r.is_ok(), "second unmount: {:?}", r);
    ram.0[1024 + 56] ^= 0xff;
    match Ext2::mount(ram, MountOptions::default()) {
        Ok(_) => Err(super::TestFailure("mounted a bad magic".into())),
        Err(e) => {
            ensure!(e.reason.contains("bad magic"), "{e}");
            Ok(())
        }
    }
}
