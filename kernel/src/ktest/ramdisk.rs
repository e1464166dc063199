//! Tests of the ramdisk (the ustar archive the bootloader loaded).
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use crate::ramdisk;

/// The archive parses to its end, holds at least one file, and `init` (if present, as it is in
/// every image xtask builds) is an ELF file.
pub fn ramdisk_archive_readable() -> TestResult {
    ensure!(!ramdisk::archive().is_empty(), "no ramdisk was loaded");
    let mut count = 0;
    for file in ramdisk::files() {
        let file = file.map_err(|e| super::TestFailure(alloc::format!("archive: {e}")))?;
        ensure!(!file.name.is_empty(), "a file has an empty name");
        count += 1;
    }
    ensure!(count > 0, "the archive holds no regular file");
    if let Some(init) = ramdisk::find("init") {
        ensure!(init.data.starts_with(b"\x7fELF"), "init is not an ELF file");
    }
    Ok(())
}
