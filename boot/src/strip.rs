//! A copy of the kernel without debug info, for the disk image.
//!
//! The BIOS stages of the bootloader read the kernel file through real-mode disk calls, so every
//! megabyte of DWARF in the image costs boot time; the loaded kernel never reads it. We give the
//! image builder `llvm-objcopy --strip-debug`'s output and keep the full ELF for gdb and for
//! symbolizing backtraces. Only debug sections go: the symbol table stays, so the stripped file
//! still names its functions.
//!
//! `llvm-objcopy` comes with the toolchain's `llvm-tools-preview` component (rust-toolchain.toml).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Writes `full` with its debug sections removed to `out` (created or replaced).
pub fn strip_debug_info(full: &Path, out: &Path) -> Result<()> {
    let objcopy = llvm_tool("llvm-objcopy")?;
    crate::replace_atomically(out, |temp| {
        let status = Command::new(&objcopy)
            .arg("--strip-debug")
            .arg(full)
            .arg(temp)
            .status()
            .with_context(|| format!("running {}", objcopy.display()))?;
        if !status.success() {
            bail!(
                "{} --strip-debug {} {} failed ({status})",
                objcopy.display(),
                full.display(),
                temp.display()
            );
        }
        Ok(())
    })
}

/// Path of the LLVM tool `name` (e.g. `llvm-objcopy`, `llvm-addr2line`) shipped with the active
/// toolchain's `llvm-tools-preview` component.
pub fn llvm_tool(name: &str) -> Result<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = rustc_print(&rustc, "sysroot")?;
    let host = rustc_print(&rustc, "host-tuple")
        .or_else(|_| host_from_version(&rustc))
        .context("finding the host target of rustc")?;
    let path = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin")
        .join(name);
    if !path.is_file() {
        bail!(
            "{} not found: the toolchain lacks llvm-tools; run `rustup component add llvm-tools-preview`",
            path.display()
        );
    }
    Ok(path)
}

fn rustc_print(rustc: &std::ffi::OsStr, what: &str) -> Result<String> {
    let output = Command::new(rustc)
        .args(["--print", what])
        .output()
        .with_context(|| format!("running rustc --print {what}"))?;
    if !output.status.success() {
        bail!("rustc --print {what} failed");
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// The `host:` line of `rustc -vV`, for compilers that predate `--print host-tuple`.
fn host_from_version(rustc: &std::ffi::OsStr) -> Result<String> {
    let output = Command::new(rustc).arg("-vV").output()?;
    let text = String::from_utf8(output.stdout)?;
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV printed no host line")
}
