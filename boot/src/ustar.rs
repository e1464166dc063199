//! The ramdisk format: an uncompressed POSIX ustar archive of top-level regular files.
//!
//! A ustar archive is a sequence of 512-byte blocks: for each file a header block (name, mode,
//! size in octal, a checksum over the header) followed by the file's bytes padded to a block
//! boundary, and two zero blocks at the end. That is all the kernel has to parse, so the writer
//! keeps to the common subset: names of at most 100 bytes with no directories, no links, and
//! fixed owner and time fields so that the same programs always give the same archive.
//!
//! [`Archive`] writes; [`entries`] reads back (host tests, `cargo xtask` diagnostics).

use std::fmt;

/// Size of a tar block; headers and data are padded to it.
pub const BLOCK: usize = 512;

/// Longest name a ustar header holds without its `prefix` field (we put no directories there).
pub const MAX_NAME: usize = 100;

/// Largest file the 11 octal digits of the size field can describe.
pub const MAX_SIZE: u64 = 0o777_7777_7777;

/// Why an archive could not be written or read. The caller is at fault for the `Name*`,
/// `Duplicate` and `TooLarge` variants; the input bytes are for the `Corrupt*` ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UstarError {
    /// Empty, `.`/`..`, contains `/` or a NUL byte, or is not ASCII.
    NameInvalid(String),
    /// Longer than [`MAX_NAME`] bytes.
    NameTooLong(String),
    /// A second file with the same name.
    Duplicate(String),
    /// Bigger than [`MAX_SIZE`].
    TooLarge { name: String, size: u64 },
    /// The archive ends inside a header or inside a file's data.
    CorruptTruncated { offset: usize },
    /// A header's checksum does not match its bytes.
    CorruptChecksum { offset: usize },
    /// A header field that must be octal is not, or the magic is not `ustar`.
    CorruptHeader { offset: usize, field: &'static str },
}

impl fmt::Display for UstarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameInvalid(n) => write!(
                f,
                "ramdisk file name {n:?} is not a plain top-level ASCII name"
            ),
            Self::NameTooLong(n) => {
                write!(f, "ramdisk file name {n:?} is longer than {MAX_NAME} bytes")
            }
            Self::Duplicate(n) => write!(f, "ramdisk already has a file named {n:?}"),
            Self::TooLarge { name, size } => {
                write!(
                    f,
                    "ramdisk file {name:?} is {size} bytes, ustar allows {MAX_SIZE}"
                )
            }
            Self::CorruptTruncated { offset } => {
                write!(f, "ustar archive truncated at byte {offset}")
            }
            Self::CorruptChecksum { offset } => {
                write!(f, "ustar header at byte {offset} has a bad checksum")
            }
            Self::CorruptHeader { offset, field } => {
                write!(
                    f,
                    "ustar header at byte {offset} has a malformed {field} field"
                )
            }
        }
    }
}

impl std::error::Error for UstarError {}

// Byte ranges of the header fields (POSIX.1-1988 ustar).
const NAME: std::ops::Range<usize> = 0..100;
const MODE: std::ops::Range<usize> = 100..108;
const UID: std::ops::Range<usize> = 108..116;
const GID: std::ops::Range<usize> = 116..124;
const SIZE: std::ops::Range<usize> = 124..136;
const MTIME: std::ops::Range<usize> = 136..148;
const CHKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..263;
const VERSION: std::ops::Range<usize> = 263..265;
const UNAME: std::ops::Range<usize> = 265..297;
const GNAME: std::ops::Range<usize> = 297..329;

/// Type flag of a regular file.
const REGTYPE: u8 = b'0';

/// A ustar archive being built in memory. Files keep the order they were added in.
#[derive(Debug, Default)]
pub struct Archive {
    bytes: Vec<u8>,
    names: Vec<String>,
}

impl Archive {
    /// An archive with no files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a regular file `name` (top level, see [`UstarError::NameInvalid`]) with permission
    /// bits `mode` (e.g. `0o755` for a program) and contents `data`.
    pub fn add_file(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<(), UstarError> {
        check_name(name)?;
        if self.names.iter().any(|n| n == name) {
            return Err(UstarError::Duplicate(name.to_owned()));
        }
        let size = data.len() as u64;
        if size > MAX_SIZE {
            return Err(UstarError::TooLarge {
                name: name.to_owned(),
                size,
            });
        }

        let mut header = [0u8; BLOCK];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut header[MODE], u64::from(mode & 0o7777));
        put_octal(&mut header[UID], 0);
        put_octal(&mut header[GID], 0);
        put_octal(&mut header[SIZE], size);
        put_octal(&mut header[MTIME], 0);
        header[TYPEFLAG] = REGTYPE;
        header[MAGIC].copy_from_slice(b"ustar\0");
        header[VERSION].copy_from_slice(b"00");
        header[UNAME][..4].copy_from_slice(b"root");
        header[GNAME][..4].copy_from_slice(b"root");
        // The checksum is computed with its own field read as eight spaces, then stored as six
        // octal digits, a NUL and a space.
        header[CHKSUM].fill(b' ');
        let sum = checksum(&header);
        put_octal(&mut header[CHKSUM.start..CHKSUM.start + 7], sum);
        header[CHKSUM.end - 1] = b' ';

        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(data);
        self.bytes
            .resize(self.bytes.len().next_multiple_of(BLOCK), 0);
        self.names.push(name.to_owned());
        Ok(())
    }

    /// The finished archive: the files followed by the two zero blocks that end it.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 2 * BLOCK, 0);
        self.bytes
    }
}

/// One file read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub name: String,
    pub mode: u32,
    pub data: &'a [u8],
}

/// Reads the regular files of `archive`, in order, up to the first zero block (or the end of the
/// bytes). Other entry types are skipped.
pub fn entries(archive: &[u8]) -> Result<Vec<Entry<'_>>, UstarError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < archive.len() {
        let header = archive
            .get(offset..offset + BLOCK)
            .ok_or(UstarError::CorruptTruncated { offset })?;
        if header.iter().all(|&b| b == 0) {
            break;
        }
        if &header[MAGIC.start..MAGIC.start + 5] != b"ustar" {
            return Err(UstarError::CorruptHeader {
                offset,
                field: "magic",
            });
        }
        let stored = parse_octal(&header[CHKSUM]).ok_or(UstarError::CorruptHeader {
            offset,
            field: "chksum",
        })?;
        let mut blanked = [0u8; BLOCK];
        blanked.copy_from_slice(header);
        blanked[CHKSUM].fill(b' ');
        if checksum(&blanked) != stored {
            return Err(UstarError::CorruptChecksum { offset });
        }
        let size = parse_octal(&header[SIZE]).ok_or(UstarError::CorruptHeader {
            offset,
            field: "size",
        })?;
        let mode = parse_octal(&header[MODE]).ok_or(UstarError::CorruptHeader {
            offset,
            field: "mode",
        })?;
        let name_field = &header[NAME];
        let name_len = name_field.iter().position(|&b| b == 0).unwrap_or(MAX_NAME);
        let name = String::from_utf8_lossy(&name_field[..name_len]).into_owned();

        let data_start = offset + BLOCK;
        let data_end = usize::try_from(size)
            .ok()
            .and_then(|s| data_start.checked_add(s))
            .filter(|&end| end <= archive.len())
            .ok_or(UstarError::CorruptTruncated { offset: data_start })?;
        let typeflag = header[TYPEFLAG];
        if typeflag == REGTYPE || typeflag == 0 {
            out.push(Entry {
                name,
                mode: (mode & 0o7777) as u32,
                data: &archive[data_start..data_end],
            });
        }
        offset = data_end.next_multiple_of(BLOCK);
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<(), UstarError> {
    if name.len() > MAX_NAME {
        return Err(UstarError::NameTooLong(name.to_owned()));
    }
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if plain {
        Ok(())
    } else {
        Err(UstarError::NameInvalid(name.to_owned()))
    }
}

/// Unsigned sum of the header bytes.
fn checksum(header: &[u8; BLOCK]) -> u64 {
    header.iter().map(|&b| u64::from(b)).sum()
}

/// Writes `value` as zero-padded octal digits filling all of `field` but its last byte, which
/// becomes the terminating NUL. The callers' values always fit.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert_eq!(
        text.len(),
        digits,
        "{value} does not fit a {digits}-digit ustar field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// Reads an octal field: optional leading spaces, digits, then NULs or spaces.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut archive = Archive::new();
        archive.add_file("init", 0o755, b"\x7fELF program").unwrap();
        archive.add_file("empty", 0o644, b"").unwrap();
        archive.add_file("block", 0o600, &[0xab; BLOCK]).unwrap();
        archive
            .add_file(&"n".repeat(MAX_NAME), 0o644, b"long name")
            .unwrap();
        archive.finish()
    }

    #[test]
    fn round_trips_names_modes_and_contents() {
        let bytes = sample();
        assert_eq!(bytes.len() % BLOCK, 0);
        let got = entries(&bytes).unwrap();
        let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["init", "empty", "block", &"n".repeat(MAX_NAME)]);
        assert_eq!(got[0].mode, 0o755);
        assert_eq!(got[0].data, b"\x7fELF program");
        assert_eq!(got[1].data, b"");
        assert_eq!(got[2].data, &[0xab; BLOCK][..]);
        assert_eq!(got[3].data, b"long name");
    }

    #[test]
    fn layout_is_header_padded_data_and_two_zero_blocks() {
        let mut archive = Archive::new();
        archive.add_file("a", 0o755, &[1; 513]).unwrap();
        let bytes = archive.finish();
        // header + two data blocks + two end blocks
        assert_eq!(bytes.len(), 5 * BLOCK);
        assert!(bytes[3 * BLOCK..].iter().all(|&b| b == 0));
        assert_eq!(&bytes[MAGIC], b"ustar\0");
        assert_eq!(&bytes[SIZE], b"00000001001\0");
    }

    #[test]
    fn same_input_same_archive() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn empty_archive_has_no_entries() {
        let bytes = Archive::new().finish();
        assert_eq!(bytes.len(), 2 * BLOCK);
        assert!(entries(&bytes).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_names() {
        let mut archive = Archive::new();
        for bad in ["", ".", "..", "bin/init", "sp ace", "nul\0"] {
            assert_eq!(
                archive.add_file(bad, 0o644, b""),
                Err(UstarError::NameInvalid(bad.to_owned()))
            );
        }
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            archive.add_file(&long, 0o644, b""),
            Err(UstarError::NameTooLong(long.clone()))
        );
        archive.add_file("init", 0o755, b"").unwrap();
        assert_eq!(
            archive.add_file("init", 0o755, b""),
            Err(UstarError::Duplicate("init".to_owned()))
        );
    }

    #[test]
    fn reader_detects_corruption() {
        let mut bytes = sample();
        bytes[0] ^= 1;
        assert_eq!(
            entries(&bytes),
            Err(UstarError::CorruptChecksum { offset: 0 })
        );

        let bytes = sample();
        assert_eq!(
            entries(&bytes[..BLOCK + 3]),
            Err(UstarError::CorruptTruncated { offset: BLOCK })
        );
    }

    /// The archive is what the system `tar` thinks it is (skipped where `tar` is not installed).
    #[test]
    fn system_tar_lists_it() {
        let dir = std::env::temp_dir().join(format!("cowlab-ustar-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ramdisk.tar");
        std::fs::write(&path, sample()).unwrap();
        let output = match std::process::Command::new("tar")
            .arg("-tvf")
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("no system tar; skipping");
                return;
            }
            Err(e) => panic!("running tar: {e}"),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            output.status.success(),
            "tar -tvf failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listing = String::from_utf8(output.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 4, "{listing}");
        // e.g. "-rwxr-xr-x root/root        12 1970-01-01 00:00 init"
        assert!(lines[0].starts_with("-rwxr-xr-x root/root"), "{}", lines[0]);
        assert!(lines[0].ends_with(" init"), "{}", lines[0]);
        assert!(lines[0].contains(" 12 "), "{}", lines[0]);
        assert!(lines[2].starts_with("-rw-------"), "{}", lines[2]);
        assert!(lines[2].contains(" 512 "), "{}", lines[2]);
        assert!(lines[3].ends_with(&"n".repeat(MAX_NAME)), "{}", lines[3]);
    }
}
