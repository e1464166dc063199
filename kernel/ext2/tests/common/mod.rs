//! Shared test helpers: an in-memory block device, and e2fsprogs (mke2fs, e2fsck, debugfs) to make
//! images and to check what the filesystem wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use cowlab_ext2::{BlockDevice, Ext2, IoError, MountOptions};

/// A disk in memory.
pub struct MemDevice {
    pub data: Vec<u8>,
    pub sector: usize,
}

impl MemDevice {
    pub fn new(data: Vec<u8>) -> MemDevice {
        MemDevice { data, sector: 512 }
    }
}

impl BlockDevice for MemDevice {
    fn sector_size(&self) -> usize {
        self.sector
    }
    fn sector_count(&self) -> u64 {
        (self.data.len() / self.sector) as u64
    }
    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let start = sector as usize * self.sector;
        let src = self.data.get(start..start + buf.len()).ok_or(IoError)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let start = sector as usize * self.sector;
        let dst = self.data.get_mut(start..start + buf.len()).ok_or(IoError)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

pub fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// mke2fs's path, or a loud skip message (a failure with COWLAB_REQUIRE_E2FSPROGS=1).
pub fn mke2fs_or_skip(test: &str) -> Option<PathBuf> {
    match tool("mke2fs") {
        Some(p) => Some(p),
        None => {
            if std::env::var_os("COWLAB_REQUIRE_E2FSPROGS").is_some() {
                panic!("{test}: mke2fs not found and COWLAB_REQUIRE_E2FSPROGS is set");
            }
            eprintln!(
                "SKIPPED {test}: mke2fs not found (install e2fsprogs: apt-get install e2fsprogs)"
            );
            None
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh scratch directory, removed when the test drops it (kept when the test panics, so a
/// failure's images can be inspected). Every run used to leave its images in /tmp (~8 MB each).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn scratch(name: &str) -> Scratch {
    let base = std::env::temp_dir().join(format!(
        "cowlab-ext2-{}-{}-{}",
        name,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    Scratch(base)
}

/// Makes an ext2 image of `size_kib` KiB with `block`-byte blocks, populated from `dir` if given.
pub fn mkfs(
    mke2fs: &Path,
    img: &Path,
    block: u32,
    size_kib: u64,
    dir: Option<&Path>,
    extra: &[&str],
) {
    let mut c = Command::new(mke2fs);
    c.args(["-q", "-F", "-t", "ext2", "-b", &block.to_string()]);
    c.args(extra);
    if let Some(d) = dir {
        c.arg("-d").arg(d);
    }
    c.arg(img).arg(format!("{size_kib}k"));
    let out = c.output().expect("running mke2fs");
    assert!(
        out.status.success(),
        "mke2fs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `e2fsck -fn`: (clean, output).
pub fn e2fsck(img: &Path) -> (bool, String) {
    let p = tool("e2fsck").expect("e2fsck (e2fsprogs) is installed with mke2fs");
    let out = Command::new(p)
        .arg("-fn")
        .arg(img)
        .output()
        .expect("running e2fsck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code() == Some(0), text)
}

/// `debugfs -R CMD img`'s stdout.
pub fn debugfs(img: &Path, cmd: &str) -> Vec<u8> {
    let p = tool("debugfs").expect("debugfs (e2fsprogs) is installed with mke2fs");
    let out = Command::new(p)
        .arg("-R")
        .arg(cmd)
        .arg(img)
        .output()
        .expect("running debugfs");
    out.stdout
}

/// `debugfs -w -R CMD img`, to damage an image on purpose.
pub fn debugfs_w(img: &Path, cmd: &str) {
    let p = tool("debugfs").expect("debugfs");
    let out = Command::new(p)
        .arg("-w")
        .arg("-R")
        .arg(cmd)
        .arg(img)
        .output()
        .expect("running debugfs");
    assert!(
        out.status.success(),
        "debugfs -w {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn mount(data: Vec<u8>) -> Ext2<MemDevice> {
    let mut fs = Ext2::mount(MemDevice::new(data), MountOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    fs.set_clock(now);
    fs
}

pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// Unmounts and writes the image back to `img`.
pub fn unmount_to(fs: Ext2<MemDevice>, img: &Path) {
    let (dev, r) = fs.unmount();
    r.expect("unmount");
    std::fs::write(img, &dev.data).unwrap();
}

/// A deterministic byte pattern that differs per seed.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Resolves a path from the root.
pub fn resolve<D: BlockDevice>(fs: &mut Ext2<D>, path: &str) -> cowlab_ext2::Result<u32> {
    let mut ino = fs.root();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part.as_bytes())?;
    }
    Ok(ino)
}

/// Reads a whole regular file.
pub fn read_all<D: BlockDevice>(fs: &mut Ext2<D>, ino: u32) -> Vec<u8> {
    let size = fs.stat(ino).unwrap().size as usize;
    let mut buf = vec![0u8; size];
    let mut off = 0;
    while off < size {
        let n = fs.read(ino, off as u64, &mut buf[off..]).unwrap();
        assert!(n > 0, "short read at {off} of {size}");
        off += n;
    }
    buf
}

/// The names in a directory (without `.` and `..`), sorted, with inode and `d_type`.
pub fn list<D: BlockDevice>(fs: &mut Ext2<D>, dir: u32) -> Vec<(String, u32, u8)> {
    let mut out = Vec::new();
    fs.readdir(dir, 0, |e, _| {
        if e.name != b"." && e.name != b".." {
            out.push((
                String::from_utf8_lossy(&e.name).into_owned(),
                e.ino,
                e.d_type,
            ));
        }
        true
    })
    .unwrap();
    out.sort();
    out
}
