//! The data disk behind `/dev/vda`: a raw 64 MiB image whose every 512-byte sector is stamped
//! with its own LBA, so a test can tell from any byte it reads which sector it came from.
//!
//! Format (docs/dma.md): sector `n` (bytes `512 n .. 512 n + 512`) holds the little-endian `u64`
//! `n` repeated 64 times. QEMU attaches it with `snapshot=on` (see `qemu::Machine`), so guest
//! writes go to a temporary overlay and every boot starts from the stamped image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Bytes per sector (virtio-blk's fixed unit).
pub const SECTOR: u64 = 512;
/// Size of the image.
pub const DISK_BYTES: u64 = 64 * 1024 * 1024;

/// The stamped contents of sector `lba`.
pub fn sector(lba: u64) -> [u8; SECTOR as usize] {
    let mut out = [0u8; SECTOR as usize];
    for word in out.as_chunks_mut::<8>().0 {
        word.copy_from_slice(&lba.to_le_bytes());
    }
    out
}

/// Where the image lives: `target/cowlab-vda.img`.
pub fn path(target: &Path) -> PathBuf {
    target.join("cowlab-vda.img")
}

/// Whether `file` already is the stamped image (checked by size and a sample of sectors, so
/// an image of another size or a stale format is rewritten).
fn is_current(file: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return false;
    };
    if f.metadata().map(|m| m.len()).ok() != Some(DISK_BYTES) {
        return false;
    }
    let sectors = DISK_BYTES / SECTOR;
    [0, 1, sectors / 2 + 3, sectors - 1].iter().all(|&lba| {
        let mut buf = [0u8; SECTOR as usize];
        f.seek(SeekFrom::Start(lba * SECTOR)).is_ok()
            && f.read_exact(&mut buf).is_ok()
            && buf == sector(lba)
    })
}

/// Writes the stamped image under `target` unless it is already there; returns its path.
/// Written to a temporary file and renamed, so a QEMU booting meanwhile never sees half of it.
pub fn ensure(target: &Path) -> Result<PathBuf> {
    let out = path(target);
    if is_current(&out) {
        return Ok(out);
    }
    let mut bytes = Vec::with_capacity(DISK_BYTES as usize);
    for lba in 0..DISK_BYTES / SECTOR {
        bytes.extend_from_slice(&sector(lba));
    }
    cowlab_boot::replace_atomically(&out, |temp| {
        std::fs::write(temp, &bytes).with_context(|| format!("writing {}", temp.display()))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_are_stamped_with_their_lba() {
        let s = sector(0x0102_0304_0506_0708);
        assert_eq!(&s[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&s[504..], &s[..8]);
    }

    #[test]
    fn ensure_writes_once_and_checks() {
        let dir = std::env::temp_dir().join(format!("cowlab-disk-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = ensure(&dir).unwrap();
        assert!(is_current(&file));
        let data = std::fs::read(&file).unwrap();
        assert_eq!(data.len() as u64, DISK_BYTES);
        let lba = 12345u64;
        let at = (lba * SECTOR) as usize;
        assert_eq!(&data[at..at + 512], &sector(lba));
        std::fs::write(&file, b"short").unwrap();
        assert!(!is_current(&file));
        ensure(&dir).unwrap();
        assert!(is_current(&file));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
