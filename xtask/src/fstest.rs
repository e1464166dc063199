//! The root-disk tests of the programs tier (issue 11's "done when"):
//!
//! - [`persist`]: boots with a copy of `target/cowlab-root.img` attached writable
//!   (`--persist`), runs `fswork` (t_ext2 in a child, then files written and fsync'ed), powers
//!   off, runs `e2fsck -fn` on the copy (must be clean), and reads every file `fswork` wrote back
//!   with `debugfs -R 'cat PATH'` (must be the same bytes);
//! - [`fuzz`]: mutates a copy's metadata blocks (the ext2 crate's `metadata_blocks`) with a
//!   seeded generator, boots it and runs `fswork walk`: the kernel must power off cleanly (no
//!   panic, no hang, no triple fault); errors in the walk are fine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cowlab_ext2::{BlockDevice, Ext2, IoError, MountOptions};

use crate::qemu::{Machine, QemuExit};
use crate::usertest;

/// How many seeds `cargo xtask test` boots.
pub const FUZZ_SEEDS: u64 = 3;

/// Byte `j` of `fswork`'s file `i` (the same function as `userland/src/bin/fswork.rs`).
pub fn byte(i: usize, j: usize) -> u8 {
    ((i * 131 + j * 7 + j / 4096) % 251) as u8
}

/// What `fswork` leaves on the disk: path and contents.
pub fn expected_files() -> Vec<(String, Vec<u8>)> {
    const SIZES: [usize; 9] = [0, 1, 4095, 4096, 4097, 65549, 300_000, 1_100_000, 12345];
    let pattern = |i: usize| (0..SIZES[i]).map(|j| byte(i, j)).collect::<Vec<u8>>();
    let mut out: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("/fsdata/f{i}"), pattern(i)))
        .collect();
    let mut sparse = vec![0u8; 5_000_000];
    sparse.extend_from_slice(b"END");
    out.push(("/fsdata/sparse".to_owned(), sparse));
    out.push(("/fsdata/renamed".to_owned(), pattern(8)));
    out
}

fn e2fsprogs_tool(name: &str) -> Result<PathBuf> {
    let mke2fs = crate::deps::mke2fs()?;
    let tool = mke2fs.with_file_name(name);
    if tool.is_file() {
        Ok(tool)
    } else {
        bail!("{} not found next to {}", name, mke2fs.display())
    }
}

/// `e2fsck -fn image`: `Ok` if it found nothing to fix.
pub fn e2fsck_clean(image: &Path) -> Result<()> {
    let out = Command::new(e2fsprogs_tool("e2fsck")?)
        .arg("-fn")
        .arg(image)
        .output()
        .context("running e2fsck")?;
    if !out.status.success() {
        bail!(
            "e2fsck -fn: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `debugfs -R 'cat PATH' image`.
pub fn debugfs_cat(image: &Path, path: &str) -> Result<Vec<u8>> {
    let out = Command::new(e2fsprogs_tool("debugfs")?)
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image)
        .output()
        .context("running debugfs")?;
    if !out.status.success() {
        bail!("debugfs cat {path}: {}", out.status);
    }
    Ok(out.stdout)
}

fn boot_ok(verdict: &usertest::Verdict, want_clean: bool) -> Result<()> {
    if verdict.timed_out {
        bail!("timed out (a hang)");
    }
    match verdict.exit {
        Some(QemuExit::Kernel(_)) if !want_clean => {}
        Some(QemuExit::Kernel(0)) => {}
        other => bail!("QEMU ended with {other:?}, summary {:?}", verdict.summary),
    }
    if want_clean && !verdict.summary.is_some_and(|(_, failed)| failed == 0) {
        bail!(
            "fswork summary {:?}: {:?}",
            verdict.summary,
            verdict.failures
        );
    }
    match verdict.frames {
        Some((free, boot)) if free == boot => Ok(()),
        other => bail!("frames free/boot {other:?}"),
    }
}

fn log_mentions_panic(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("panicked"))
}

/// The persistence test; returns the number of files checked.
pub fn persist(
    machine: &Machine,
    qemu: &Path,
    kernel_elf: &Path,
    root: &Path,
    logs: &Path,
    timeout: Duration,
) -> Result<usize> {
    let copy = logs.join("fs-persist.img");
    std::fs::copy(root, &copy).context("copying the root image")?;
    let mut machine = machine.clone();
    machine.root = Some((copy.clone(), true));
    machine.cmdline = "-- fswork".to_owned();
    let log = logs.join("fs-persist.log");
    let verdict = usertest::run_in_qemu(&machine, qemu, kernel_elf, &log, "fswork", timeout)?;
    boot_ok(&verdict, true)?;
    e2fsck_clean(&copy)?;
    let files = expected_files();
    for (path, want) in &files {
        let got = debugfs_cat(&copy, path)?;
        if &got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b);
            bail!(
                "{path}: debugfs read {} bytes, fswork wrote {} (first difference at {at:?})",
                got.len(),
                want.len()
            );
        }
    }
    let _ = std::fs::remove_file(&copy);
    Ok(files.len())
}

/// An image in memory as the ext2 crate's disk.
struct MemDisk(Vec<u8>);

impl BlockDevice for MemDisk {
    fn sector_size(&self) -> usize {
        512
    }
    fn sector_count(&self) -> u64 {
        self.0.len() as u64 / 512
    }
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let at = sector as usize * 512;
        buf.copy_from_slice(self.0.get(at..at + buf.len()).ok_or(IoError)?);
        Ok(())
    }
    fn write_sectors(&mut self, _sector: u64, _buf: &[u8]) -> Result<(), IoError> {
        Err(IoError)
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// `image` with a few bytes of a few metadata blocks overwritten (seeded).
pub fn mutate(image: Vec<u8>, seed: u64) -> Result<Vec<u8>> {
    let opts = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let mut fs = Ext2::mount(MemDisk(image), opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let blocks = fs
        .metadata_blocks()
        .map_err(|e| anyhow::anyhow!("metadata_blocks: {e:?}"))?;
    let bs = fs.block_size() as usize;
    let (disk, _) = fs.unmount();
    let mut image = disk.0;
    let mut rng = Rng(seed);
    for _ in 0..1 + rng.below(8) {
        let (block, _kind) = blocks[rng.below(blocks.len() as u64) as usize];
        for _ in 0..1 + rng.below(4) {
            let at = block as usize * bs + rng.below(bs as u64) as usize;
            if let Some(b) = image.get_mut(at) {
                *b = rng.next() as u8;
            }
        }
    }
    Ok(image)
}

/// One fuzz boot: `Ok` if the kernel powered off cleanly.
pub fn fuzz(
    machine: &Machine,
    qemu: &Path,
    kernel_elf: &Path,
    root: &Path,
    logs: &Path,
    seed: u64,
    timeout: Duration,
) -> Result<()> {
    let image = mutate(std::fs::read(root)?, seed)?;
    let copy = logs.join(format!("fs-fuzz-{seed}.img"));
    std::fs::write(&copy, image)?;
    let mut machine = machine.clone();
    machine.root = Some((copy.clone(), false));
    machine.cmdline = "-- fswork walk".to_owned();
    let log = logs.join(format!("fs-fuzz-{seed}.log"));
    let verdict = usertest::run_in_qemu(&machine, qemu, kernel_elf, &log, "fswork", timeout)?;
    if log_mentions_panic(&log) {
        bail!("the kernel panicked (seed {seed}; see {})", log.display());
    }
    boot_ok(&verdict, false).with_context(|| format!("seed {seed}"))?;
    let _ = std::fs::remove_file(&copy);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_files_follow_the_pattern() {
        let files = expected_files();
        assert_eq!(files.len(), 10);
        assert_eq!(files[7].1.len(), 1_100_000);
        assert_eq!(files[2].1[4094], byte(2, 4094));
        assert_eq!(&files[8].1[5_000_000..], b"END");
    }
}
