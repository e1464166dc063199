//! Cargo invocations for the two `x86_64-unknown-none` packages: the kernel and the userland
//! programs. We ask cargo for JSON messages only to learn where it put the executables.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::workspace_root;

/// The freestanding target of the kernel and the programs.
pub const TARGET: &str = "x86_64-unknown-none";

/// Cargo profile of the kernel and programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release_flag(release: bool) -> Self {
        if release {
            Self::Release
        } else {
            Self::Debug
        }
    }

    fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Self::Debug => &[],
            Self::Release => &["--release"],
        }
    }

    /// Suffix of the files xtask derives from a build (`cowlab-bios.img`,
    /// `cowlab-bios-release.img`), so debug and release images live side by side.
    pub fn file_suffix(self) -> &'static str {
        match self {
            Self::Debug => "",
            Self::Release => "-release",
        }
    }
}

/// An executable cargo built.
#[derive(Debug, Clone)]
pub struct Executable {
    /// Name of the cargo target (`kernel`, `init`, ...).
    pub name: String,
    /// The full ELF, as the linker wrote it.
    pub path: PathBuf,
}

/// Builds the kernel (`cowlab-kernel`, bin `kernel`) and returns its full ELF.
pub fn kernel(profile: Profile) -> Result<Executable> {
    let mut executables = cargo_build("cowlab-kernel", profile)?;
    match executables.iter().position(|e| e.name == "kernel") {
        Some(i) => Ok(executables.swap_remove(i)),
        None => bail!("cargo built no `kernel` executable for cowlab-kernel"),
    }
}

/// Builds every program of `cowlab-userland` and returns them sorted by name.
pub fn userland(profile: Profile) -> Result<Vec<Executable>> {
    let mut programs = cargo_build("cowlab-userland", profile)?;
    if programs.is_empty() {
        bail!("cargo built no executable for cowlab-userland");
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(programs)
}

/// `cargo build -p PACKAGE --target x86_64-unknown-none`; diagnostics go to the terminal, the
/// executables' paths come back.
fn cargo_build(package: &str, profile: Profile) -> Result<Vec<Executable>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--package", package, "--target", TARGET])
        .args(profile.cargo_args())
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("running cargo build for {package}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's messages")?;
        if let Some(executable) = parse_artifact(&line) {
            executables.push(executable);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cargo build --package {package} --target {TARGET} failed ({status})");
    }
    Ok(executables)
}

/// The executable named by one line of cargo's JSON messages, if it is a `compiler-artifact`
/// message with one.
fn parse_artifact(line: &str) -> Option<Executable> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let path = message["executable"].as_str()?;
    let name = message["target"]["name"].as_str()?;
    Some(Executable {
        name: name.to_owned(),
        path: PathBuf::from(path),
    })
}

/// The C test programs, each built with `gcc -static`, `gcc -static-pie` (loaded as a
/// static-PIE `ET_DYN`) and `musl-gcc -static`: `userland/c/forkpipe.c` as `c_glibc`,
/// `c_glibc_pie`, `c_musl`, and `userland/c/threads.c` (with `-pthread`) as `c_threads_glibc`,
/// `c_threads_glibc_pie`, `c_threads_musl`, and `userland/c/signals.c` (`-pthread`) as
/// `c_signals_*`, and `userland/c/abi2.c` as `c_abi2_*`, all stripped. Returns the ones built and the
/// compilers that are missing.
pub fn c_programs() -> Result<(Vec<Executable>, Vec<&'static str>)> {
    let out = crate::target_dir().join("cowlab-c");
    std::fs::create_dir_all(&out)?;
    let mut built = Vec::new();
    let mut missing = Vec::new();
    let sources: [(&str, &str, &[&str]); 4] = [
        ("forkpipe.c", "c", &[]),
        ("threads.c", "c_threads", &["-pthread"]),
        ("signals.c", "c_signals", &["-pthread"]),
        ("abi2.c", "c_abi2", &[]),
    ];
    for (file, prefix, extra) in sources {
        let source = workspace_root().join("userland/c").join(file);
        for (suffix, compiler, flag) in [
            ("glibc", "gcc", "-static"),
            ("glibc_pie", "gcc", "-static-pie"),
            ("musl", "musl-gcc", "-static"),
        ] {
            let name = format!("{prefix}_{suffix}");
            let path = out.join(&name);
            let fresh = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .zip(std::fs::metadata(&source).and_then(|m| m.modified()).ok())
                .is_some_and(|(exe, src)| exe >= src);
            if !fresh {
                let status = match Command::new(compiler)
                    // Stripped (`-s`): the BIOS loads the whole ramdisk before the kernel prints
                    // anything, and symbols would only slow every boot.
                    .args([flag, "-O1", "-s"])
                    .args(extra)
                    .arg("-o")
                    .arg(&path)
                    .arg(&source)
                    .status()
                {
                    Ok(status) => status,
                    Err(_) => {
                        if !missing.contains(&compiler) {
                            missing.push(compiler);
                        }
                        continue;
                    }
                };
                if !status.success() {
                    bail!("{compiler} {flag} {} failed ({status})", source.display());
                }
            }
            built.push(Executable { name, path });
        }
    }
    Ok((built, missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_executables_in_cargo_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"init"},"executable":"/w/target/x86_64-unknown-none/debug/init","fresh":true}"#;
        let exe = parse_artifact(line).unwrap();
        assert_eq!(exe.name, "init");
        assert_eq!(
            exe.path,
            PathBuf::from("/w/target/x86_64-unknown-none/debug/init")
        );

        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"x86_64"},"executable":null}"#;
        assert!(parse_artifact(lib).is_none());
        assert!(parse_artifact(r#"{"reason":"build-finished","success":true}"#).is_none());
        assert!(parse_artifact("not json").is_none());
    }
}
