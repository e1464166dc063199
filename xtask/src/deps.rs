//! Host programs xtask needs that cargo does not provide: QEMU, OVMF for `--uefi`, and
//! e2fsprogs' `mke2fs` for the root filesystem image.
//!
//! A fresh machine may lack them. When we run as root without a terminal on stdin (as CI does)
//! we install them with `apt-get`; otherwise we print the exact command and stop, because
//! installing packages on a developer's machine is their call.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// Where Debian's `ovmf` package puts the UEFI firmware, newest layout first.
const OVMF_PATHS: [&str; 2] = ["/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/ovmf/OVMF.fd"];

/// The path of `qemu-system-x86_64`, installing Debian's `qemu-system-x86` if allowed.
pub fn qemu() -> Result<PathBuf> {
    if let Some(path) = find_in_path(QEMU) {
        return Ok(path);
    }
    install("qemu-system-x86", &format!("{QEMU} is not installed"))?;
    find_in_path(QEMU).with_context(|| format!("{QEMU} still missing after installing it"))
}

/// The OVMF firmware image for `--uefi`, installing Debian's `ovmf` if allowed.
pub fn ovmf() -> Result<PathBuf> {
    let find = || OVMF_PATHS.iter().map(PathBuf::from).find(|p| p.is_file());
    if let Some(path) = find() {
        return Ok(path);
    }
    install(
        "ovmf",
        &format!("no OVMF firmware (looked for {})", OVMF_PATHS.join(", ")),
    )?;
    find().context("OVMF still missing after installing the ovmf package")
}

/// `mke2fs` from `$PATH` or the sbin directories (not in a normal user's `$PATH` on Debian).
pub fn find_mke2fs() -> Result<PathBuf> {
    find_in_path("mke2fs")
        .or_else(|| {
            ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
                .iter()
                .map(PathBuf::from)
                .find(|p| is_executable(p))
        })
        .context("mke2fs not found")
}

/// `mke2fs`, installing Debian's `e2fsprogs` if allowed.
pub fn mke2fs() -> Result<PathBuf> {
    if let Ok(path) = find_mke2fs() {
        return Ok(path);
    }
    install("e2fsprogs", "mke2fs (e2fsprogs) is not installed")?;
    find_mke2fs().context("mke2fs still missing after installing e2fsprogs")
}

/// Debian `busybox-static`'s `/bin/busybox` (statically linked: the dynamic `busybox` package
/// cannot run on cowlab), installing the package if allowed; `None` with a warning otherwise.
pub fn busybox() -> Option<PathBuf> {
    let find = || {
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| is_executable(p) && is_static_elf(p))
    };
    if let Some(path) = find() {
        return Some(path);
    }
    match install(
        "busybox-static",
        "no statically linked busybox (Debian's busybox-static)",
    ) {
        Ok(()) => find(),
        Err(e) => {
            eprintln!(
                "xtask: warning: {e}
xtask: the root image gets no BusyBox; the shell is cowsh"
            );
            None
        }
    }
}

/// Whether `path` is an ELF without a `PT_INTERP` program header (needs no dynamic loader).
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bytes
            .get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) != 3)
    })
}

/// Installs Debian `package` non-interactively when we are root with no terminal on stdin,
/// otherwise fails with `missing` and the command to run.
fn install(package: &str, missing: &str) -> Result<()> {
    if !(is_root() && !std::io::stdin().is_terminal()) {
        bail!(
            "{missing}. Install it with:\n    sudo apt-get install {package}\n\
             (xtask installs it by itself only when run as root without a terminal, as CI is)"
        );
    }
    eprintln!("xtask: {missing}; installing the Debian package {package}");
    for args in [&["update"][..], &["install", "-y", "--quiet", package][..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// Whether this process runs as root: `/proc/self` belongs to the process's effective user.
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The first executable file called `name` in `$PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
