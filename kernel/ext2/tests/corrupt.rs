//! Damaged images: each kind of corruption the issue names is refused at mount or gets `EUCLEAN`
//! (with a description) for the damaged file, never a panic, a hang or a write outside the
//! filesystem.

mod common;

use std::path::Path;

use common::*;
use cowlab_ext2::{Errno, Ext2, MountOptions};

const GUARD: usize = 256 * 1024;

/// An image of a small tree: `/file` (20 KiB: direct and indirect blocks), `/a/b`, `/a/c`.
fn base_image(dir: &Path, block: u32) -> Option<Vec<u8>> {
    let mke2fs = mke2fs_or_skip("corrupt")?;
    let src = dir.join("root");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir_all(src.join("a/c")).unwrap();
    std::fs::write(src.join("file"), pattern(1, 20 * 1024)).unwrap();
    std::fs::write(src.join("a/b/inner"), pattern(2, 3000)).unwrap();
    let img = dir.join("img");
    mkfs(&mke2fs, &img, block, 4096, Some(&src), &[]);
    Some(std::fs::read(&img).unwrap())
}

fn with_guard(mut img: Vec<u8>) -> Vec<u8> {
    img.resize(img.len() + GUARD, 0xA5);
    img
}

fn guard_intact(data: &[u8]) -> bool {
    data[data.len() - GUARD..].iter().all(|&b| b == 0xA5)
}

fn mount_err(img: Vec<u8>) -> cowlab_ext2::MountError {
    match Ext2::mount(MemDevice::new(img), MountOptions::default()) {
        Ok(_) => panic!("a damaged image was mounted"),
        Err(e) => e,
    }
}

/// The block number debugfs reports for `(IND)` of `path`, or the first data block.
fn debugfs_block(img: &Path, path: &str, tag: &str) -> u32 {
    let out = String::from_utf8_lossy(&debugfs(img, &format!("stat {path}"))).into_owned();
    let i = out.find(tag).unwrap_or_else(|| panic!("no {tag} in {out}"));
    out[i + tag.len()..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

fn put_u32(img: &mut [u8], at: usize, v: u32) {
    img[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u16(img: &mut [u8], at: usize, v: u16) {
    img[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn bad_magic_is_refused() {
    let dir = scratch("magic");
    let Some(mut img) = base_image(&dir, 1024) else {
        return;
    };
    put_u16(&mut img, 1024 + 56, 0x1234);
    let e = mount_err(img);
    assert_eq!(e.errno, Errno::EINVAL);
    assert!(e.to_string().contains("bad magic 0x1234"), "{e}");
}

#[test]
fn truncated_image_is_refused() {
    let dir = scratch("trunc");
    let Some(mut img) = base_image(&dir, 4096) else {
        return;
    };
    img.truncate(img.len() / 2);
    let e = mount_err(img);
    assert!(e.reason.contains("truncated"), "{e}");
    let e = mount_err(vec![0u8; 1000]);
    assert!(e.reason.contains("too small"), "{e}");
}

#[test]
fn inode_table_on_the_superblock_is_refused() {
    for block in [1024u32, 4096] {
        let dir = scratch("itable");
        let Some(img) = base_image(&dir, block) else {
            return;
        };
        let gdt = if block == 1024 { 2048 } else { 4096 };
        // Group 0's inode table onto the superblock / the descriptor table.
        let mut bad = img.clone();
        put_u32(&mut bad, gdt + 8, 1024 / block);
        let e = mount_err(bad);
        assert_eq!(e.errno, Errno::EUCLEAN);
        assert!(e.reason.contains("inode table"), "{e}");
        // Group 0's block bitmap past the end of the disk.
        let mut bad = img.clone();
        put_u32(&mut bad, gdt, u32::MAX - 5);
        assert!(mount_err(bad).reason.contains("block bitmap"));
    }
}

#[test]
fn unsupported_features() {
    let dir = scratch("feat");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let mut bad = img.clone();
    let incompat = u32::from_le_bytes(bad[1024 + 96..1024 + 100].try_into().unwrap());
    put_u32(&mut bad, 1024 + 96, incompat | 0x40); // extents
    let e = mount_err(bad);
    assert!(e.reason.contains("incompatible features 0x40"), "{e}");
    let mut ro = img.clone();
    let rc = u32::from_le_bytes(ro[1024 + 100..1024 + 104].try_into().unwrap());
    put_u32(&mut ro, 1024 + 100, rc | 0x8); // huge_file
    let before = ro.clone();
    let mut fs = Ext2::mount(MemDevice::new(ro), MountOptions::default()).unwrap();
    assert!(fs.is_read_only());
    assert!(fs.read_only_reason().unwrap().contains("0x8"));
    let root = fs.root();
    let f = fs.lookup(root, b"file").unwrap();
    assert_eq!(read_all(&mut fs, f), pattern(1, 20 * 1024));
    assert_eq!(fs.create(root, b"x", 0o644, 0, 0), Err(Errno::EROFS));
    assert_eq!(
        fs.mkdir(root, b"a", 0o755, 0, 0),
        Err(Errno::EEXIST),
        "EEXIST before EROFS"
    );
    assert_eq!(fs.write(f, 0, b"x"), Err(Errno::EROFS));
    assert_eq!(fs.unlink(root, b"file"), Err(Errno::EROFS));
    let (dev, r) = fs.unmount();
    r.unwrap();
    assert!(dev.data == before, "a read-only mount writes nothing");
}

#[test]
fn zero_length_directory_entry() {
    let dir = scratch("reclen");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let path = dir.join("img");
    let blk = debugfs_block(&path, "/a", "(0):");
    let mut bad = img.clone();
    let at = blk as usize * 1024;
    // "..", the second entry: rec_len 0 (a walk that trusted it would never advance).
    put_u16(&mut bad, at + 12 + 4, 0);
    let mut fs = mount(with_guard(bad));
    let root = fs.root();
    let a = fs.lookup(root, b"a").unwrap();
    assert_eq!(fs.lookup(a, b"b"), Err(Errno::EUCLEAN));
    let msg = fs.take_error().unwrap();
    assert!(msg.contains("zero-length directory entry"), "{msg}");
    assert!(!msg.contains('\n'));
    assert_eq!(fs.readdir(a, 0, |_, _| true), Err(Errno::EUCLEAN));
    assert_eq!(fs.create(a, b"new", 0o644, 0, 0), Err(Errno::EUCLEAN));
    // The rest of the filesystem works.
    let f = fs.lookup(root, b"file").unwrap();
    assert_eq!(read_all(&mut fs, f), pattern(1, 20 * 1024));
    let (dev, r) = fs.unmount();
    r.unwrap();
    assert!(guard_intact(&dev.data));
    // The error is recorded on disk as Linux does (s_state has the error bit).
    assert_eq!(
        u16::from_le_bytes([dev.data[1024 + 58], dev.data[1024 + 59]]),
        3
    );
}

#[test]
fn block_pointer_past_the_end() {
    let dir = scratch("past");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let path = dir.join("img");
    debugfs_w(&path, "sif /file block[2] 4000000");
    let bad = std::fs::read(&path).unwrap();
    assert_eq!(bad.len(), img.len());
    let mut fs = mount(with_guard(bad));
    let f = fs.lookup(fs.root(), b"file").unwrap();
    let mut buf = vec![0u8; 4096];
    assert_eq!(fs.read(f, 0, &mut buf), Err(Errno::EUCLEAN));
    assert!(fs.take_error().unwrap().contains("block pointer 4000000"));
    assert_eq!(fs.write(f, 2048, b"xyz"), Err(Errno::EUCLEAN));
    assert_eq!(fs.truncate(f, 0), Err(Errno::EUCLEAN));
    let (dev, r) = fs.unmount();
    r.unwrap();
    assert!(guard_intact(&dev.data), "no write outside the filesystem");
}

#[test]
fn block_pointer_into_metadata() {
    let dir = scratch("meta");
    let Some(_) = base_image(&dir, 1024) else {
        return;
    };
    let path = dir.join("img");
    // Block 5 is in group 0's descriptor/bitmap/inode-table area.
    debugfs_w(&path, "sif /file block[0] 5");
    let bad = std::fs::read(&path).unwrap();
    let before = bad[5 * 1024..6 * 1024].to_vec();
    let mut fs = mount(bad);
    let f = fs.lookup(fs.root(), b"file").unwrap();
    assert_eq!(fs.write(f, 0, &[0xEE; 1024]), Err(Errno::EUCLEAN));
    assert_eq!(fs.truncate(f, 0), Err(Errno::EUCLEAN));
    let (dev, _) = fs.unmount();
    assert!(
        dev.data[5 * 1024..6 * 1024] == before[..],
        "metadata block not overwritten"
    );
}

#[test]
fn loop_in_indirect_blocks() {
    let dir = scratch("loop");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let path = dir.join("img");
    let ind = debugfs_block(&path, "/file", "(IND):");
    let mut bad = img.clone();
    // The indirect block points at itself, then at block 0 of the file's data: a cycle and a
    // block shared twice.
    put_u32(&mut bad, ind as usize * 1024, ind);
    let mut fs = mount(with_guard(bad));
    let f = fs.lookup(fs.root(), b"file").unwrap();
    let mut buf = vec![0u8; 20 * 1024];
    // Reading is bounded (the map is at most 3 levels deep) and returns what the blocks hold.
    assert_eq!(fs.read(f, 0, &mut buf), Ok(20 * 1024));
    // Freeing finds the second reference to an already freed block.
    assert_eq!(fs.truncate(f, 0), Err(Errno::EUCLEAN));
    assert!(fs.take_error().unwrap().contains("freeing free block"));
    let (dev, _) = fs.unmount();
    assert!(guard_intact(&dev.data));
}

#[test]
fn cyclic_directories() {
    let dir = scratch("cycle");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let path = dir.join("img");
    let a_blk = debugfs_block(&path, "/a", "(0):") as usize * 1024;
    let b_blk = debugfs_block(&path, "/a/b", "(0):") as usize * 1024;
    let mut fs = mount(img.clone());
    let a = resolve(&mut fs, "/a").unwrap();
    let b = resolve(&mut fs, "/a/b").unwrap();
    let c = resolve(&mut fs, "/a/c").unwrap();
    drop(fs);
    // a/.. -> b and b/.. -> a: a cycle that never reaches the root.
    let mut bad = img.clone();
    put_u32(&mut bad, a_blk + 12, b);
    put_u32(&mut bad, b_blk + 12, a);
    let mut fs = mount(with_guard(bad));
    // Moving c under b asks whether b lies inside c: the '..' walk must end.
    assert_eq!(fs.rename(a, b"c", b, b"c"), Err(Errno::EUCLEAN));
    assert!(fs.take_error().unwrap().contains("directory loop"));
    assert_eq!(fs.lookup(c, b".."), Ok(a));
    let (dev, _) = fs.unmount();
    assert!(guard_intact(&dev.data));
}

#[test]
fn small_cache_evicts_dirty_blocks_correctly() {
    let Some(mke2fs) = mke2fs_or_skip("small_cache") else {
        return;
    };
    let dir = scratch("smallcache");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 8192, None, &[]);
    let opts = MountOptions {
        cache_blocks: 8,
        ..MountOptions::default()
    };
    let mut fs = Ext2::mount(MemDevice::new(std::fs::read(&img).unwrap()), opts).unwrap();
    let root = fs.root();
    let d = fs.mkdir(root, b"d", 0o755, 0, 0).unwrap();
    for i in 0..200u32 {
        let f = fs
            .create(d, format!("file{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        fs.write(f, 0, &pattern(i, (i as usize % 7) * 3000 + 1))
            .unwrap();
    }
    let st = fs.cache_stats();
    assert!(st.cached <= 8, "{st:?}");
    assert!(st.evictions > 0 && st.writebacks > 0, "{st:?}");
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "{out}");
    assert_eq!(
        debugfs(&img, "cat /d/file199"),
        pattern(199, (199 % 7) * 3000 + 1)
    );
}

/// A disk that fails some requests (deterministically, by a seed).
struct FlakyDevice {
    inner: MemDevice,
    state: u64,
    one_in: u64,
    failures: u64,
    /// While set, nothing fails.
    healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FlakyDevice {
    fn fail(&mut self) -> bool {
        if self.healthy.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let f = (self.state >> 33).is_multiple_of(self.one_in);
        self.failures += f as u64;
        f
    }
}

impl cowlab_ext2::BlockDevice for FlakyDevice {
    fn sector_size(&self) -> usize {
        self.inner.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read_sectors(&mut self, s: u64, buf: &mut [u8]) -> Result<(), cowlab_ext2::IoError> {
        if self.fail() {
            return Err(cowlab_ext2::IoError);
        }
        self.inner.read_sectors(s, buf)
    }
    fn write_sectors(&mut self, s: u64, buf: &[u8]) -> Result<(), cowlab_ext2::IoError> {
        if self.fail() {
            return Err(cowlab_ext2::IoError);
        }
        self.inner.write_sectors(s, buf)
    }
}

/// Device errors are `EIO` for the operation that met them: never a panic, never mistaken
/// for corruption (a failed read leaves nothing half-parsed, a failed write-back stays dirty),
/// and once the device recovers, the unmounted image is e2fsck-clean (nothing leaked).
#[test]
fn device_errors_are_eio() {
    let dir = scratch("flaky");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let mut saw_eio = 0;
    let mut unclean = Vec::new();
    for seed in 0..30u64 {
        let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dev = FlakyDevice {
            inner: MemDevice::new(img.clone()),
            state: seed,
            one_in: 8 + seed % 30,
            failures: 0,
            healthy: healthy.clone(),
        };
        let opts = MountOptions {
            cache_blocks: 16,
            ..MountOptions::default()
        };
        let mut fs = match Ext2::mount(dev, opts) {
            Ok(fs) => fs,
            Err(e) => {
                assert_eq!(e.errno, Errno::EIO, "seed {seed}: {e}");
                continue;
            }
        };
        let root = fs.root();
        let mut note = |r: Result<(), Errno>| match r {
            Ok(()) => {}
            Err(Errno::EIO) => saw_eio += 1,
            Err(e) => panic!("seed {seed}: {e:?}"),
        };
        for path in ["/file", "/a/b/inner"] {
            note(resolve(&mut fs, path).and_then(|ino| {
                let mut buf = vec![0u8; 32 * 1024];
                fs.read(ino, 0, &mut buf).map(drop)
            }));
        }
        let mut created = Vec::new();
        for i in 0..20 {
            let name = format!("new{i}");
            let r = fs.create(root, name.as_bytes(), 0o644, 0, 0);
            created.push(r.is_ok());
            note(r.and_then(|f| fs.write(f, 0, &pattern(i, 5000)).map(drop)));
        }
        note(fs.mkdir(root, b"dir", 0o755, 0, 0).map(drop));
        if created[3] {
            note(fs.rename(root, b"new3", root, b"renamed"));
        }
        if created[4] {
            note(fs.unlink(root, b"new4"));
        }
        note(fs.sync());
        assert_eq!(fs.error_count(), 0, "seed {seed}: {:?}", fs.take_error());
        // The device recovers: what reaches the disk now must be consistent.
        healthy.store(true, std::sync::atomic::Ordering::SeqCst);
        let (dev, r) = fs.unmount();
        r.unwrap();
        let path = dir.join(format!("seed{seed}"));
        std::fs::write(&path, &dev.inner.data).unwrap();
        let (clean, out) = e2fsck(&path);
        if !clean {
            unclean.push((seed, out));
        }
    }
    assert!(saw_eio > 0, "the device failed some requests");
    assert!(
        unclean.is_empty(),
        "e2fsck after device errors: {unclean:#?}"
    );
}

/// A disk whose writes fail while a shared switch is on.
struct WriteSwitchDevice {
    inner: MemDevice,
    fail: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl cowlab_ext2::BlockDevice for WriteSwitchDevice {
    fn sector_size(&self) -> usize {
        512
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read_sectors(&mut self, s: u64, buf: &mut [u8]) -> Result<(), cowlab_ext2::IoError> {
        self.inner.read_sectors(s, buf)
    }
    fn write_sectors(&mut self, s: u64, buf: &[u8]) -> Result<(), cowlab_ext2::IoError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(cowlab_ext2::IoError);
        }
        self.inner.write_sectors(s, buf)
    }
}

/// Regression: a block allocated for a new indirect block whose buffer could not be set up (the
/// cache had to write back a dirty block, and the write failed) was neither linked nor freed,
/// and `i_blocks` kept its charge. Now the allocation is undone: after the device recovers, the
/// unmounted image is e2fsck-clean.
#[test]
fn eio_while_linking_a_new_block_leaks_nothing() {
    eio_during(|fs, _root, f| fs.write(f, 12 * 1024, b"needs an indirect block").map(drop));
}

/// Regression: `mkdir` whose directory block could not be set up (the same failing write-back)
/// returned with the new inode and its block allocated but owned by nothing.
#[test]
fn eio_while_making_a_directory_leaks_nothing() {
    eio_during(|fs, root, _f| fs.mkdir(root, b"newdir", 0o755, 0, 0).map(drop));
}

/// Runs `op` while every device write fails and the buffer cache is full of dirty blocks; `op`
/// must fail with `EIO`, and after the device recovers the image must be e2fsck-clean.
fn eio_during(op: impl FnOnce(&mut Ext2<WriteSwitchDevice>, u32, u32) -> Result<(), Errno>) {
    let dir = scratch("eiolink");
    let Some(img) = base_image(&dir, 1024) else {
        return;
    };
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dev = WriteSwitchDevice {
        inner: MemDevice::new(img),
        fail: fail.clone(),
    };
    let opts = MountOptions {
        cache_blocks: 8,
        ..MountOptions::default()
    };
    let mut fs = Ext2::mount(dev, opts).unwrap();
    let root = fs.root();
    let f = fs.create(root, b"grow", 0o644, 0, 0).unwrap();
    // Exactly the 12 direct blocks: the next write needs the indirect block and nothing else.
    fs.write(f, 0, &pattern(3, 12 * 1024)).unwrap();
    // Fill the cache with dirty blocks, so the next new block needs a write-back first.
    for i in 0..12 {
        fs.mkdir(root, format!("d{i}").as_bytes(), 0o755, 0, 0)
            .unwrap();
    }
    // Then make the blocks the write needs the most recent ones: another allocation (the block
    // bitmap) and the file's inode. The least recently used blocks are dirty directory blocks.
    let g = fs.create(root, b"other", 0o644, 0, 0).unwrap();
    fs.write(g, 0, b"x").unwrap();
    let blocks_before = fs.stat(f).unwrap().blocks;
    let free_before = fs.statfs().f_bfree;
    let evictions = fs.cache_stats().evictions;
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let free_inodes_before = fs.statfs().f_ffree;
    assert_eq!(op(&mut fs, root, f), Err(Errno::EIO));
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        fs.cache_stats().evictions > evictions,
        "the failure came from a write-back"
    );
    assert_eq!(
        fs.stat(f).unwrap().blocks,
        blocks_before,
        "no charge for an unlinked block"
    );
    assert_eq!(
        fs.statfs().f_bfree,
        free_before,
        "the block went back to the bitmap"
    );
    assert_eq!(fs.statfs().f_ffree, free_inodes_before, "no inode kept");
    assert_eq!(fs.error_count(), 0);
    let (dev, r) = fs.unmount();
    r.unwrap();
    let path = dir.join("after");
    std::fs::write(&path, &dev.inner.data).unwrap();
    let (clean, out) = e2fsck(&path);
    assert!(clean, "{out}");
}
