//! The disk image: bootloader stages, the (stripped) kernel, the ramdisk and a boot config.
//!
//! The `bootloader` crate (pinned `=0.11.17`) lays out a FAT partition holding the kernel as
//! `kernel-x86_64`, the ramdisk as `ramdisk` and the config as `boot.json`, behind an MBR (BIOS)
//! or a GPT with an EFI system partition (UEFI). At boot it loads both files, maps the kernel at
//! the address the kernel's `bootloader_api` config asks for, and passes the ramdisk's address in
//! `BootInfo::ramdisk_addr`.

use std::path::Path;

use anyhow::{Context, Result};
use bootloader::{BootConfig, DiskImageBuilder};
use bootloader_boot_config::LevelFilter;

/// Which firmware the image boots from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS: an MBR disk; QEMU's default SeaBIOS boots it.
    Bios,
    /// UEFI: a GPT disk with an EFI system partition; needs OVMF in QEMU.
    Uefi,
}

impl Firmware {
    /// Short lower-case name, used in file names (`cowlab-bios.img`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bios => "bios",
            Self::Uefi => "uefi",
        }
    }
}

/// Writes a bootable disk image to `out` holding `kernel` (give it a stripped ELF, see
/// [`crate::strip`]) and `ramdisk` (a ustar archive, see [`crate::ustar`]).
pub fn build_disk_image(
    kernel: &Path,
    ramdisk: &Path,
    firmware: Firmware,
    out: &Path,
) -> Result<()> {
    let mut builder = DiskImageBuilder::new(kernel.to_owned());
    builder.set_ramdisk(ramdisk.to_owned());
    builder.set_boot_config(&boot_config());
    crate::replace_atomically(out, |temp| match firmware {
        Firmware::Bios => builder.create_bios_image(temp),
        Firmware::Uefi => builder.create_uefi_image(temp),
    })
    .with_context(|| {
        format!(
            "creating the {} disk image {} from {} and {}",
            firmware.name(),
            out.display(),
            kernel.display(),
            ramdisk.display()
        )
    })
}

/// The bootloader's own logging: on the serial console only (QEMU runs with `-display none`;
/// drawing text into the framebuffer is slow under TCG) and at `Warn`: its twenty `Info` lines
/// per boot (segments, GDT, mappings) buried the kernel's own first lines; a boot that fails
/// before the kernel's banner still prints the bootloader's warnings and its panic.
fn boot_config() -> BootConfig {
    let mut config = BootConfig::default();
    config.frame_buffer_logging = false;
    config.serial_logging = true;
    config.log_level = LevelFilter::Warn;
    config
}
