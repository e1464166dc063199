//! Replacing a build output without ever exposing a half-written file.
//!
//! Several xtask runs may share one `target/` (a `cargo xtask qemu` while `cargo xtask test`
//! runs), and QEMU reads the disk image lazily while the guest boots. Writing an output in place
//! lets a concurrent run, or a running QEMU, read a torn file: seen as kernels that triple-fault
//! and ramdisks without a ustar header. So every output is written under a name private to this
//! process and renamed over the old one: `rename` is atomic, readers see the old file or the new
//! one, and a reader that has the old one open keeps reading it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Creates `out` through `write`, which is given a temporary path beside `out` to write to;
/// the result replaces `out` atomically. On error the temporary file is removed and `out` is
/// left as it was.
pub fn replace_atomically(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let temp = temp_path(out);
    let result = write(&temp).and_then(|()| {
        std::fs::rename(&temp, out)
            .with_context(|| format!("renaming {} to {}", temp.display(), out.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// `DIR/.NAME.tmp-PID`: beside `out` (same file system, so `rename` works), hidden, and
/// private to this process.
fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = format!(".{}.tmp-{}", name.unwrap_or_default(), std::process::id());
    out.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_reader_of_the_old_file_keeps_it_whole_and_new_opens_see_the_new_one() {
        let dir = std::env::temp_dir().join(format!("cowlab-replace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("image.img");
        std::fs::write(&out, b"old contents").unwrap();
        let mut old_reader = std::fs::File::open(&out).unwrap();
        replace_atomically(&out, |temp| Ok(std::fs::write(temp, b"new")?)).unwrap();
        let mut old = String::new();
        old_reader.read_to_string(&mut old).unwrap();
        assert_eq!(old, "old contents");
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = std::env::temp_dir().join(format!("cowlab-replace-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("ramdisk.tar");
        std::fs::write(&out, b"old").unwrap();
        let result = replace_atomically(&out, |temp| {
            std::fs::write(temp, b"partial")?;
            anyhow::bail!("the writer failed")
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
