//! Host side of booting cowlab: from a kernel ELF and the userland programs to a disk image.
//!
//! The picture: `xtask` builds the kernel (`cowlab-kernel`) and the userland programs, then asks
//! this crate for three things, in order:
//! 1. [`ustar`]: pack the programs into the ramdisk, an uncompressed POSIX ustar archive
//!    (`docs/architecture.md`, "Ramdisk") that the bootloader loads and the kernel reads;
//! 2. [`strip`]: a copy of the kernel without debug info, because the BIOS stages load the kernel
//!    through real-mode disk reads and an unstripped kernel is many times bigger; the full ELF
//!    stays where cargo left it, for gdb and for symbolizing backtraces;
//! 3. [`image`]: the disk image itself, made by the `bootloader` crate's `DiskImageBuilder`.
//!
//! Nothing here knows about QEMU; this crate only writes files, each through
//! [`replace::replace_atomically`] so that a concurrent run never reads a torn one.

pub mod image;
pub mod replace;
pub mod strip;
pub mod ustar;

pub use image::{build_disk_image, Firmware};
pub use replace::replace_atomically;
pub use strip::strip_debug_info;
