//! The ramdisk: a POSIX ustar archive of the userland programs, loaded by the bootloader.
//!
//! ustar is the simplest archive format that standard tools write: 512-byte blocks, each file a
//! header block (name, octal size, type) followed by its data padded to a block, and two zero
//! blocks at the end. The kernel only needs to find top-level regular files by name, so this
//! reads the headers in place over the bootloader's mapping, without copying or allocating.
//! A malformed header ends the listing (and is reported) rather than panicking: the archive is
//! input, not a kernel invariant.

use core::fmt;

use bootloader_api::BootInfo;
use spin::Once;

const BLOCK: usize = 512;

static ARCHIVE: Once<&'static [u8]> = Once::new();

/// Records where the bootloader put the ramdisk (an empty archive if there is none).
pub fn init(boot_info: &BootInfo) {
    ARCHIVE.call_once(|| match boot_info.ramdisk_addr.into_option() {
        // SAFETY: the bootloader mapped `ramdisk_len` bytes at `ramdisk_addr` for the kernel's
        // lifetime, in memory it marked as used (never handed to the frame allocator), and
        // nothing writes to it.
        Some(addr) => unsafe {
            core::slice::from_raw_parts(addr as *const u8, boot_info.ramdisk_len as usize)
        },
        None => &[],
    });
}

/// The raw archive bytes.
pub fn archive() -> &'static [u8] {
    ARCHIVE.get().copied().unwrap_or(&[])
}

/// One regular file of the archive.
#[derive(Clone, Copy)]
pub struct File {
    pub name: &'static str,
    pub data: &'static [u8],
}

/// Why an archive could not be read to its end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ArchiveError {
    /// The header at this offset lacks the `ustar` magic.
    NotUstar { offset: usize },
    /// The header at this offset has a size field that is not octal.
    BadSize { offset: usize },
    /// The file whose header is at this offset extends beyond the archive.
    Truncated { offset: usize },
}

impl fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ArchiveError::NotUstar { offset } => write!(f, "no ustar header at offset {offset}"),
            ArchiveError::BadSize { offset } => write!(f, "bad size field at offset {offset}"),
            ArchiveError::Truncated { offset } => write!(f, "file at offset {offset} is truncated"),
        }
    }
}

/// Iterates over the regular files of a ustar archive (directories and links are skipped).
pub struct Files {
    archive: &'static [u8],
    offset: usize,
}

/// The files of `archive`.
pub fn files_of(archive: &'static [u8]) -> Files {
    Files { archive, offset: 0 }
}

/// The files of the boot ramdisk.
pub fn files() -> Files {
    files_of(archive())
}

/// Finds a top-level regular file by name.
pub fn find(name: &str) -> Option<File> {
    files()
        .filter_map(Result::ok)
        .find(|file| file.name == name)
}

/// A NUL-terminated (or full-width) string field.
fn field(bytes: &'static [u8]) -> &'static str {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..len]).unwrap_or("")
}

/// An octal number field (space or NUL terminated).
fn octal(bytes: &[u8]) -> Option<usize> {
    let digits = bytes.iter().take_while(|&&b| b != 0 && b != b' ');
    let mut value: usize = 0;
    let mut any = false;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(usize::from(b - b'0'))?;
        any = true;
    }
    any.then_some(value)
}

impl Iterator for Files {
    type Item = Result<File, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let offset = self.offset;
            let header = self.archive.get(offset..offset + BLOCK)?;
            if header.iter().all(|&b| b == 0) {
                // End-of-archive marker.
                return None;
            }
            // Any error ends the iteration after it is returned.
            self.offset = self.archive.len();
            if &header[257..262] != b"ustar" {
                return Some(Err(ArchiveError::NotUstar { offset }));
            }
            let Some(size) = octal(&header[124..136]) else {
                return Some(Err(ArchiveError::BadSize { offset }));
            };
            let data_start = offset + BLOCK;
            let Some(data) = self.archive.get(data_start..data_start + size) else {
                return Some(Err(ArchiveError::Truncated { offset }));
            };
            self.offset = data_start + size.div_ceil(BLOCK) * BLOCK;
            let typeflag = header[156];
            let prefix = field(&header[345..500]);
            let name = field(&header[0..100]);
            // Regular files only; the programs are top-level, so a prefix means "not ours".
            if (typeflag == b'0' || typeflag == 0) && prefix.is_empty() {
                let name = name.strip_prefix("./").unwrap_or(name);
                return Some(Ok(File { name, data }));
            }
        }
    }
}

/// Prints the ramdisk's file listing.
pub fn print_listing() {
    let archive = archive();
    if archive.is_empty() {
        info!("ramdisk: none");
        return;
    }
    info!(
        "ramdisk: {} bytes at {:#x}",
        archive.len(),
        archive.as_ptr() as u64
    );
    for file in files() {
        match file {
            // One line per file (dozens): shown with `loglevel=debug`, not on every boot.
            Ok(file) => debug!("  {} ({} bytes)", file.name, file.data.len()),
            Err(error) => warn!("ramdisk: {error}"),
        }
    }
}
