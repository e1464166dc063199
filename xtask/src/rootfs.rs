//! The root filesystem disk: `target/cowlab-root.img`, an ext2 image made by e2fsprogs'
//! `mke2fs -t ext2 -d DIR` from the programs (at the top level, as in the ramdisk) and the
//! directories `/etc`, `/home` and `/tmp`, attached to QEMU as a second legacy virtio-blk disk
//! (after `/dev/vda`, so the raw stamped disk keeps the lower PCI slot).
//!
//! By default QEMU opens it with `snapshot=on` (writes go to a temporary overlay, every boot starts
//! from the fresh image, several QEMUs can share it) and xtask rebuilds it on each run.
//! `--persist` attaches it writable and keeps an existing image as it is, so writes survive from
//! one boot to the next (delete the file to start over); the host can then read it with
//! `debugfs` and check it with `e2fsck -fn`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Room left free beyond the programs.
pub const FREE_BYTES: u64 = 128 * 1024 * 1024;
/// The filesystem's block size.
pub const BLOCK_SIZE: u32 = 4096;

/// Where the image lives: `target/cowlab-root.img`.
pub fn path(target: &Path) -> PathBuf {
    target.join("cowlab-root.img")
}

/// The block size of the variant image (pcache3): 1 KiB, four blocks to a page, so the page
/// cache's partial-page block allocation, holes and truncation inside a page, and the
/// writeback of a page whose blocks are not contiguous run on a real disk.
pub const SMALL_BLOCK_SIZE: u32 = 1024;

/// The kernel command-line token that attaches the 1 KiB-block variant instead of the root
/// image (xtask's own: [`take_small_blocks`] removes it before the kernel sees the line).
pub const SMALL_BLOCKS_TOKEN: &str = "root_bs=1024";

/// The variant built beside `root` with the same files and [`SMALL_BLOCK_SIZE`] blocks.
pub fn small_blocks_path(root: &Path) -> PathBuf {
    root.with_file_name("cowlab-root-1k.img")
}

/// `cmdline` without [`SMALL_BLOCKS_TOKEN`], and whether it was there.
pub fn take_small_blocks(cmdline: &str) -> (String, bool) {
    let (before, after) = match cmdline.split_once("-- ") {
        Some((b, a)) => (b, Some(a)),
        None => (cmdline, None),
    };
    let kept: Vec<&str> = before
        .split_whitespace()
        .filter(|t| *t != SMALL_BLOCKS_TOKEN)
        .collect();
    let found = kept.len() != before.split_whitespace().count();
    let mut out = kept.join(" ");
    if let Some(after) = after {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("-- ");
        out.push_str(after);
    }
    (if found { out } else { cmdline.to_owned() }, found)
}

/// Lays out the tree the image holds under `stage` (emptied first): `files` (name in the root,
/// host path) and the empty directories `/etc`, `/home`, `/tmp` (`/tmp` sticky and world-writable
/// as on Linux; the kernel mounts its tmpfs there).
fn stage_tree(stage: &Path, files: &[(String, PathBuf)]) -> Result<u64> {
    use std::os::unix::fs::PermissionsExt;
    if stage.exists() {
        std::fs::remove_dir_all(stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    std::fs::create_dir_all(stage)?;
    let mut bytes = 0;
    for (name, host) in files {
        if name.contains('/') || name.is_empty() {
            bail!("root image: bad file name {name:?}");
        }
        let to = stage.join(name);
        std::fs::copy(host, &to)
            .with_context(|| format!("copying {} into the root image", host.display()))?;
        bytes += std::fs::metadata(&to)?.len();
    }
    for dir in ["etc", "home", "tmp"] {
        std::fs::create_dir_all(stage.join(dir))?;
    }
    if let Some(busybox) = crate::deps::busybox() {
        bytes += stage_busybox(stage, &busybox)?;
    }
    std::fs::set_permissions(stage.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(bytes)
}

/// BusyBox as the shell and the usual commands: `/bin/busybox` and a symbolic link to it in
/// `/bin` for each applet it lists (`busybox --list`; the applet is chosen by the name it is
/// run as). Returns the bytes copied.
fn stage_busybox(stage: &Path, busybox: &Path) -> Result<u64> {
    let bin = stage.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(busybox, bin.join("busybox"))
        .with_context(|| format!("copying {} into the root image", busybox.display()))?;
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !list.status.success() {
        bail!("{} --list failed ({})", busybox.display(), list.status);
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet.contains('/') || applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    // Login-less defaults the applets read.
    std::fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/home:/bin/sh\n")?;
    std::fs::write(stage.join("etc/group"), "root:x:0:\n")?;
    Ok(std::fs::metadata(bin.join("busybox"))?.len())
}

/// Builds the image from `files` unless `keep` and it already exists; returns its path.
pub fn ensure(target: &Path, files: &[(String, PathBuf)], keep: bool) -> Result<PathBuf> {
    let out = path(target);
    if keep && out.is_file() {
        eprintln!(
            "xtask: keeping {} and its writes (--persist); delete it to rebuild",
            out.display()
        );
        return Ok(out);
    }
    let mke2fs = crate::deps::mke2fs()?;
    let stage = target.join("cowlab-root-tree");
    let bytes = stage_tree(&stage, files)?;
    // Twice the files (block rounding, inode tables) plus free room, in KiB for mke2fs.
    let kib = (2 * bytes + FREE_BYTES).div_ceil(1024);
    make_image(&mke2fs, &stage, &out, kib, BLOCK_SIZE)?;
    make_image(
        &mke2fs,
        &stage,
        &small_blocks_path(&out),
        kib,
        SMALL_BLOCK_SIZE,
    )?;
    Ok(out)
}

/// `mke2fs -t ext2 -b BLOCK -d STAGE` into `out` (replaced atomically), `kib` KiB.
fn make_image(mke2fs: &Path, stage: &Path, out: &Path, kib: u64, block: u32) -> Result<()> {
    cowlab_boot::replace_atomically(out, |temp| {
        let output = Command::new(mke2fs)
            .args(["-q", "-F", "-t", "ext2", "-b", &block.to_string()])
            .args(["-L", "cowlab-root", "-E", "root_owner=0:0"])
            .arg("-d")
            .arg(stage)
            .arg(temp)
            .arg(format!("{kib}k"))
            .output()
            .with_context(|| format!("running {}", mke2fs.display()))?;
        if !output.status.success() {
            bail!(
                "mke2fs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    })
}

/// The QEMU options that attach `image` as the second virtio-blk disk (`vdb`).
pub fn qemu_args(image: &Path, persist: bool) -> Vec<std::ffi::OsString> {
    let mut drive = std::ffi::OsString::from("file=");
    drive.push(image.to_string_lossy().replace(',', ",,"));
    drive.push(",if=none,format=raw,id=vdb");
    if !persist {
        drive.push(",snapshot=on");
    }
    vec![
        "-drive".into(),
        drive,
        "-device".into(),
        "virtio-blk-pci,drive=vdb,disable-modern=on".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_blocks_token_is_taken_before_the_program() {
        assert_eq!(
            take_small_blocks("root_bs=1024 -- t_pc3_k1 root_bs=1024"),
            ("-- t_pc3_k1 root_bs=1024".to_owned(), true)
        );
        assert_eq!(
            take_small_blocks("mem=16 root_bs=1024 -- t_x"),
            ("mem=16 -- t_x".to_owned(), true)
        );
        assert_eq!(take_small_blocks("-- t_x"), ("-- t_x".to_owned(), false));
        assert_eq!(
            small_blocks_path(Path::new("/t/cowlab-root.img")),
            Path::new("/t/cowlab-root-1k.img")
        );
    }

    #[test]
    fn qemu_args_snapshot_unless_persist() {
        let args = qemu_args(Path::new("/t/a,b.img"), false);
        assert_eq!(
            args[1],
            "file=/t/a,,b.img,if=none,format=raw,id=vdb,snapshot=on"
        );
        assert_eq!(args[3], "virtio-blk-pci,drive=vdb,disable-modern=on");
        let args = qemu_args(Path::new("/t/root.img"), true);
        assert_eq!(args[1], "file=/t/root.img,if=none,format=raw,id=vdb");
    }

    /// The image mke2fs makes from a staged tree holds the files, `/etc`, `/home` and a sticky
    /// `/tmp`, and e2fsck finds it clean; `keep` leaves an existing image alone.
    #[test]
    fn builds_a_clean_ext2_image() {
        let Ok(mke2fs) = crate::deps::find_mke2fs() else {
            eprintln!("SKIPPED builds_a_clean_ext2_image: mke2fs not found (install e2fsprogs)");
            return;
        };
        let dir = std::env::temp_dir().join(format!("cowlab-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("prog");
        std::fs::write(&prog, b"\x7fELF not really").unwrap();
        let target = dir.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let img = ensure(&target, &[("t_prog".into(), prog.clone())], false).unwrap();
        let sbin = mke2fs.parent().unwrap();
        let fsck = Command::new(sbin.join("e2fsck"))
            .arg("-fn")
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let cat = Command::new(sbin.join("debugfs"))
            .args(["-R", "cat /t_prog"])
            .arg(&img)
            .output()
            .unwrap();
        assert_eq!(cat.stdout, b"\x7fELF not really");
        let ls = Command::new(sbin.join("debugfs"))
            .args(["-R", "stat /tmp"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&ls.stdout).contains("Mode:  01777"),
            "{}",
            String::from_utf8_lossy(&ls.stdout)
        );
        let before = std::fs::metadata(&img).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        ensure(&target, &[], true).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), before);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
