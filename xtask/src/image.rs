//! From the built ELFs to the disk image, through `cowlab-boot`.
//!
//! Files (under `target/`, `-release` suffixed for release builds):
//! `cowlab-kernel.stripped` (what the image holds), `cowlab-ramdisk.tar` (the userland programs,
//! stripped of debug info, plus `--add` files), `cowlab-bios.img` / `cowlab-uefi.img`, and the
//! data disk `cowlab-vda.img` (`disk`, shared by both profiles). The
//! full ELFs stay where cargo put them, for gdb and the backtrace symbolizer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cowlab_boot::{ustar, Firmware};

use crate::build::{self, Profile};
use crate::{target_dir, BuildArgs};

/// What [`build_all`] made.
#[derive(Debug)]
pub struct Built {
    /// The unstripped kernel: load it in gdb, symbolize with it.
    pub kernel_elf: PathBuf,
    /// What the image holds of the kernel.
    pub stripped_kernel: PathBuf,
    pub firmware: Firmware,
    pub ramdisk: PathBuf,
    pub image: PathBuf,
    /// The LBA-stamped data disk behind `/dev/vda` (see `disk`).
    pub disk: PathBuf,
    /// What the ramdisk holds (name, host file): the root filesystem image is made from it
    /// (see `rootfs`).
    pub files: Vec<(String, PathBuf)>,
}

/// Builds the kernel and the programs, writes the ramdisk and the disk image.
pub fn build_all(args: &BuildArgs, firmware: Firmware) -> Result<Built> {
    build_all_in(args, firmware, &target_dir())
}

/// [`build_all`] writing the ramdisk, the images and the data disk under `out` (`cargo xtask
/// fuzz` keeps its kcov images apart from the default ones).
pub fn build_all_in(args: &BuildArgs, firmware: Firmware, out: &Path) -> Result<Built> {
    let profile = Profile::from_release_flag(args.release);
    let kernel = match &args.kernel {
        Some(path) => build::Executable {
            name: "kernel".to_owned(),
            path: std::path::absolute(path)?,
        },
        None => build::kernel(profile)?,
    };
    let programs = build::userland(profile)?;

    let out = out.to_path_buf();
    std::fs::create_dir_all(&out)?;
    let suffix = profile.file_suffix();

    let stripped_dir = out.join(format!("cowlab-stripped{suffix}"));
    std::fs::create_dir_all(&stripped_dir)?;
    let mut files = Vec::new();
    for program in &programs {
        let stripped = stripped_dir.join(&program.name);
        cowlab_boot::strip_debug_info(&program.path, &stripped)?;
        files.push((program.name.clone(), stripped));
    }
    let (c_programs, missing) = build::c_programs()?;
    if !missing.is_empty() {
        eprintln!(
            "xtask: warning: {} not found: the C test programs it builds are left out (apt-get install gcc musl-tools)",
            missing.join(", ")
        );
    }
    for program in &c_programs {
        files.push((program.name.clone(), program.path.clone()));
    }
    for extra in &args.add {
        let (path, name) = split_add(extra)?;
        files.retain(|(existing, _)| *existing != name);
        files.push((name, path));
    }
    let ramdisk = out.join(format!("cowlab-ramdisk{suffix}.tar"));
    write_ramdisk(&files, &ramdisk)?;

    let stripped_kernel = out.join(format!("cowlab-kernel{suffix}.stripped"));
    cowlab_boot::strip_debug_info(&kernel.path, &stripped_kernel)?;
    let image = out.join(format!("cowlab-{}{suffix}.img", firmware.name()));
    cowlab_boot::build_disk_image(&stripped_kernel, &ramdisk, firmware, &image)?;
    let disk = crate::disk::ensure(&out)?;
    Ok(Built {
        kernel_elf: kernel.path,
        stripped_kernel,
        firmware,
        ramdisk,
        image,
        disk,
        files,
    })
}

/// What the ramdisk of [`slim`] holds: `init`, the fallback when the root disk's cannot be
/// loaded, and `fswork`, which the fuzzed-root boots run whether or not the damaged image
/// mounts.
pub const SLIM_RAMDISK: [&str; 2] = ["init", "fswork"];

/// A second image for boots with the root disk attached (`init` and every program are loaded
/// from the ext2 root then): the same kernel with only [`SLIM_RAMDISK`] in its ramdisk. The
/// firmware reads the whole image through BIOS disk calls before the kernel runs, about 0.4 s
/// per MiB under TCG: the full image's 14 MiB ramdisk is most of a short test boot.
pub fn slim(built: &Built) -> Result<PathBuf> {
    let files: Vec<(String, PathBuf)> = built
        .files
        .iter()
        .filter(|(name, _)| SLIM_RAMDISK.contains(&name.as_str()))
        .cloned()
        .collect();
    anyhow::ensure!(
        files.len() == SLIM_RAMDISK.len(),
        "the slim ramdisk needs {SLIM_RAMDISK:?}, built: {:?}",
        files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let with = |ext: &str| {
        let stem = built
            .image
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        built.image.with_file_name(format!("{stem}-slim.{ext}"))
    };
    let ramdisk = with("tar");
    write_ramdisk(&files, &ramdisk)?;
    let image = with("img");
    cowlab_boot::build_disk_image(&built.stripped_kernel, &ramdisk, built.firmware, &image)?;
    Ok(image)
}

/// `--add HOST_PATH[:NAME]`: the host file and its name in the ramdisk (default: its file name).
/// A NAME is recognised only after the last `:` and when it contains no `/`, so host paths with
/// colons still work when no name is given.
pub fn split_add(arg: &Path) -> Result<(PathBuf, String)> {
    let text = arg.to_string_lossy();
    if let Some((path, name)) = text.rsplit_once(':') {
        if !name.is_empty() && !name.contains('/') && !path.is_empty() {
            return Ok((PathBuf::from(path), name.to_owned()));
        }
    }
    let name = arg
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--add {}: no usable file name", arg.display()))?;
    Ok((arg.to_path_buf(), name.to_owned()))
}

/// Packs `files` (archive name, host path) into a ustar ramdisk at `out`.
fn write_ramdisk(files: &[(String, PathBuf)], out: &Path) -> Result<()> {
    let mut archive = ustar::Archive::new();
    for (name, path) in files {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mode = file_mode(path)?;
        archive
            .add_file(name, mode, &data)
            .with_context(|| format!("adding {} to the ramdisk", path.display()))?;
    }
    let bytes = archive.finish();
    cowlab_boot::replace_atomically(out, |temp| {
        std::fs::write(temp, &bytes).with_context(|| format!("writing {}", temp.display()))
    })
}

fn file_mode(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o777)
}

#[cfg(test)]
mod add_tests {
    use super::*;

    #[test]
    fn add_takes_an_optional_name() {
        let (path, name) = split_add(Path::new("/tmp/a.out:hello")).unwrap();
        assert_eq!(
            (path, name.as_str()),
            (PathBuf::from("/tmp/a.out"), "hello")
        );
        let (path, name) = split_add(Path::new("/tmp/prog")).unwrap();
        assert_eq!((path, name.as_str()), (PathBuf::from("/tmp/prog"), "prog"));
    }
}
