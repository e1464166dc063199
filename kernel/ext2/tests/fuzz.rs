//! A seeded image fuzzer: mutate the metadata blocks of a valid image (superblock, group
//! descriptors, bitmaps, inode tables, directory blocks, indirect blocks), mount, walk the whole
//! tree reading every file, make some changes, unmount, mount again and walk again. Errors are
//! fine; a panic, a hang or a write outside the filesystem is not.
//!
//! `COWLAB_FUZZ_ITERS` (default 60 per block size) sets the number of images, `COWLAB_FUZZ_SEED`
//! the first seed; a failure prints the seed that reproduces it.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use cowlab_ext2::layout::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use cowlab_ext2::{Ext2, MetaKind, MountOptions};

const GUARD: usize = 64 * 1024;
/// Bounds of one walk: entries visited, directory depth, bytes read per file.
const MAX_ENTRIES: usize = 4000;
const MAX_DEPTH: usize = 24;
const MAX_READ: u64 = 96 * 1024;
/// An iteration longer than this is a hang.
const HANG: Duration = Duration::from_secs(60);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
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

#[derive(Default, Debug)]
struct Tally {
    refused: u32,
    mounted: u32,
    files_read: u64,
    errors: u64,
}

/// A valid image and its metadata blocks.
type Base = (Vec<u8>, Vec<(u32, MetaKind)>);

fn base_image(block: u32) -> Option<Base> {
    let mke2fs = mke2fs_or_skip("fuzz")?;
    let dir = scratch("fuzzbase");
    let src = dir.join("root");
    std::fs::create_dir_all(src.join("d1/d2/d3")).unwrap();
    std::fs::create_dir_all(src.join("many")).unwrap();
    std::fs::write(src.join("small"), pattern(1, 700)).unwrap();
    std::fs::write(src.join("ind"), pattern(2, 40 * 1024)).unwrap();
    std::fs::write(src.join("dind"), pattern(3, 400 * 1024)).unwrap();
    std::fs::write(src.join("d1/d2/d3/deep"), pattern(4, 5000)).unwrap();
    for i in 0..120 {
        std::fs::write(src.join(format!("many/entry-{i}")), pattern(10 + i, 100)).unwrap();
    }
    std::os::unix::fs::symlink("small", src.join("fast")).unwrap();
    std::os::unix::fs::symlink("d1/".repeat(30), src.join("slow")).unwrap();
    let img = dir.join("img");
    mkfs(&mke2fs, &img, block, 2048, Some(&src), &[]);
    // A sparse file reaching the triple-indirect blocks, written by us (and checked by e2fsck),
    // so the mutations also hit every level of a block map.
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let f = fs.create(root, b"tind", 0o644, 0, 0).unwrap();
    let far = if block == 1024 {
        70u64 << 20
    } else {
        5u64 << 30
    };
    fs.write(f, 0, b"start").unwrap();
    fs.write(f, far, &pattern(9, 3 * block as usize)).unwrap();
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "fuzz base image:\n{out}");
    let data = std::fs::read(&img).unwrap();
    let mut fs = mount(data.clone());
    let meta = fs.metadata_blocks().unwrap();
    drop(fs);
    for kind in [
        MetaKind::Directory,
        MetaKind::Indirect,
        MetaKind::InodeTable,
        MetaKind::Bitmap,
    ] {
        assert!(
            meta.iter().any(|m| m.1 == kind),
            "the base image has {kind:?} blocks"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some((data, meta))
}

/// Damages `img` at a few places inside metadata blocks: each kind of block is equally likely
/// (inode tables and bitmaps would otherwise swamp the directory and indirect blocks), and in an
/// inode table the first blocks, where the files live.
fn mutate(rng: &mut Rng, img: &mut [u8], meta: &[(u32, MetaKind)], block: usize) {
    let blocks_count = u32::from_le_bytes(img[1028..1032].try_into().unwrap());
    let kinds: BTreeSet<MetaKind> = meta.iter().map(|m| m.1).collect();
    let kinds: Vec<MetaKind> = kinds.into_iter().collect();
    let numbers: Vec<u32> = meta.iter().map(|m| m.0).collect();
    for _ in 0..1 + rng.below(8) {
        let kind = kinds[rng.below(kinds.len() as u64) as usize];
        let of_kind: Vec<u32> = meta.iter().filter(|m| m.1 == kind).map(|m| m.0).collect();
        let pick = if kind == MetaKind::InodeTable {
            of_kind.len().min(2)
        } else {
            of_kind.len()
        };
        let blk = of_kind[rng.below(pick as u64) as usize] as usize;
        let (start, len) = if kind == MetaKind::Superblock && block > 1024 && blk == 0 {
            (1024, 1024)
        } else if kind == MetaKind::Superblock {
            (0, 1024)
        } else {
            (0, block)
        };
        let at = blk * block + start + (rng.below(len as u64) as usize & !3);
        if at + 4 > img.len() {
            continue;
        }
        match rng.below(6) {
            0 => img[at] ^= 1 << rng.below(8),
            1 => img[at] = rng.next() as u8,
            2 => img[at..at + 4].copy_from_slice(&0u32.to_le_bytes()),
            3 => img[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes()),
            4 => {
                // A block number: metadata (a loop or a pointer into the tables) or past the end.
                let v = if rng.below(2) == 0 {
                    numbers[rng.below(numbers.len() as u64) as usize]
                } else {
                    blocks_count + rng.below(1000) as u32
                };
                img[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let v = rng.below(64) as u16;
                img[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Walks the tree from the root reading everything (bounded); returns the regular files seen.
fn walk(fs: &mut Ext2<MemDevice>, tally: &mut Tally) -> Vec<(u32, u32, Vec<u8>)> {
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![(fs.root(), 0usize)];
    let mut entries = 0;
    let mut buf = vec![0u8; 8192];
    while let Some((dir, depth)) = stack.pop() {
        if !seen.insert(dir) || depth > MAX_DEPTH {
            continue;
        }
        let mut names = Vec::new();
        if fs
            .readdir(dir, 0, |e, _| {
                names.push((e.ino, e.name.clone()));
                names.len() < MAX_ENTRIES
            })
            .is_err()
        {
            tally.errors += 1;
        }
        for (ino, name) in names {
            entries += 1;
            if entries > MAX_ENTRIES {
                return files;
            }
            if name == b"." || name == b".." {
                continue;
            }
            let Ok(looked) = fs.lookup(dir, &name) else {
                tally.errors += 1;
                continue;
            };
            let _ = ino;
            let Ok(st) = fs.stat(looked) else {
                tally.errors += 1;
                continue;
            };
            match st.mode & S_IFMT {
                S_IFDIR => stack.push((looked, depth + 1)),
                S_IFLNK => {
                    if fs.readlink(looked).is_err() {
                        tally.errors += 1;
                    }
                }
                S_IFREG => {
                    tally.files_read += 1;
                    let mut off = 0;
                    while off < st.size.min(MAX_READ) {
                        match fs.read(looked, off, &mut buf) {
                            Ok(0) => break,
                            Ok(n) => off += n as u64,
                            Err(_) => {
                                tally.errors += 1;
                                break;
                            }
                        }
                    }
                    if st.size > MAX_READ {
                        let _ = fs.read(looked, st.size - 100, &mut buf);
                    }
                    files.push((dir, looked, name));
                }
                _ => {}
            }
        }
    }
    files
}

/// Some changes, all errors ignored.
fn scribble(fs: &mut Ext2<MemDevice>, rng: &mut Rng, files: &[(u32, u32, Vec<u8>)]) {
    let root = fs.root();
    if let Ok(f) = fs.create(root, b"fuzz-new", 0o644, 0, 0) {
        let _ = fs.write(f, 0, &pattern(5, 20_000));
        let _ = fs.truncate(f, 3000);
    }
    if let Ok(d) = fs.mkdir(root, b"fuzz-dir", 0o755, 0, 0) {
        let _ = fs.rename(root, b"fuzz-new", d, b"moved");
        let _ = fs.symlink(d, b"link", &[b'z'; 100], 0, 0);
    }
    if !files.is_empty() {
        let (dir, ino, name) = &files[rng.below(files.len() as u64) as usize];
        let _ = fs.write(*ino, rng.below(300_000), b"scribble");
        let _ = fs.truncate(*ino, rng.below(50_000));
        let (dir2, _, name2) = &files[rng.below(files.len() as u64) as usize];
        let _ = fs.rename(*dir, name, *dir2, b"renamed");
        let _ = fs.unlink(*dir2, name2);
    }
    let _ = fs.rmdir(root, b"d1");
    let _ = fs.sync();
}

fn run(block: u32) {
    let Some((base, meta)) = base_image(block) else {
        return;
    };
    let iters: u64 = std::env::var("COWLAB_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed0: u64 = std::env::var("COWLAB_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let current = Arc::new(AtomicU64::new(u64::MAX));
    let started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    {
        let (current, started) = (current.clone(), started.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let seed = current.load(Ordering::SeqCst);
            if seed == u64::MAX - 1 {
                return;
            }
            let since = epoch.elapsed().as_millis() as u64 - started.load(Ordering::SeqCst);
            if seed != u64::MAX && since > HANG.as_millis() as u64 {
                eprintln!("fuzz: seed {seed} ({block}-byte blocks) hangs: over {HANG:?}");
                std::process::abort();
            }
        });
    }
    let mut tally = Tally::default();
    for seed in seed0..seed0 + iters {
        current.store(seed, Ordering::SeqCst);
        started.store(epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        let mut rng = Rng(seed * 7919 + block as u64);
        let mut img = base.clone();
        mutate(&mut rng, &mut img, &meta, block as usize);
        let fs_len = img.len();
        img.resize(fs_len + GUARD, 0xA5);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut tally = Tally::default();
            let mut fs = match Ext2::mount(MemDevice::new(img), MountOptions::default()) {
                Ok(fs) => fs,
                Err(e) => {
                    assert!(!e.to_string().contains('\n'));
                    tally.refused += 1;
                    return tally;
                }
            };
            tally.mounted += 1;
            // A mutated block count may legitimately cover part of the guard: what lies past the
            // filesystem as mounted must stay untouched.
            let limit = (fs.size_bytes() as usize).max(fs_len);
            let files = walk(&mut fs, &mut tally);
            scribble(&mut fs, &mut rng, &files);
            tally.errors += fs.error_count();
            if let Some(msg) = fs.take_error() {
                assert!(!msg.contains('\n'), "one console line: {msg}");
            }
            let (dev, _) = fs.unmount();
            assert!(
                dev.data[limit..].iter().all(|&b| b == 0xA5),
                "a write outside the filesystem"
            );
            // What we wrote must mount and walk again without trouble of our own making.
            if let Ok(mut fs) = Ext2::mount(dev, MountOptions::default()) {
                walk(&mut fs, &mut tally);
                let (dev, _) = fs.unmount();
                assert!(dev.data[limit..].iter().all(|&b| b == 0xA5));
            }
            tally
        }));
        match outcome {
            Ok(t) => {
                tally.refused += t.refused;
                tally.mounted += t.mounted;
                tally.files_read += t.files_read;
                tally.errors += t.errors;
            }
            Err(_) => panic!("fuzz: seed {seed} ({block}-byte blocks) panicked; rerun with COWLAB_FUZZ_SEED={seed} COWLAB_FUZZ_ITERS=1"),
        }
    }
    current.store(u64::MAX - 1, Ordering::SeqCst);
    eprintln!("fuzz {block}: {iters} images from seed {seed0}: {tally:?}");
    assert!(
        tally.mounted > 0,
        "some mutated images mount (the fuzzer reaches the walk)"
    );
    assert!(tally.files_read > 0);
}

#[test]
fn fuzz_images_1k() {
    run(1024);
}

#[test]
fn fuzz_images_4k() {
    run(4096);
}
