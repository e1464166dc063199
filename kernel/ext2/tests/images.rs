//! ext2 against e2fsprogs: images made by `mke2fs -t ext2 -d DIR` read back byte for byte; a
//! workload of every operation, after which `e2fsck -fn` finds nothing and `debugfs` reads back
//! what was written.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use common::*;
use cowlab_ext2::layout::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use cowlab_ext2::{Errno, Ext2};

/// Fills `dir` with a tree that uses every kind of block map and a large directory.
fn populate(dir: &Path) -> usize {
    let w = |p: &str, data: &[u8]| std::fs::write(dir.join(p), data).unwrap();
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(dir.join("big_dir")).unwrap();
    w("empty", b"");
    w("small.txt", &pattern(1, 100));
    w("one_block", &pattern(2, 1024));
    w("direct", &pattern(3, 12 * 1024));
    w("indirect", &pattern(4, 200 * 1024));
    w("dind", &pattern(5, 1536 * 1024 + 77));
    w("sub/deeper/file", &pattern(6, 5000));
    for i in 0..300 {
        w(
            &format!("big_dir/entry_{i:03}_with_a_longer_name"),
            &pattern(100 + i, 10 + i as usize),
        );
    }
    symlink("small.txt", dir.join("fastlink")).unwrap();
    let long = "x/".repeat(50) + "target";
    symlink(&long, dir.join("slowlink")).unwrap();
    w("exec.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(dir.join("exec.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    w("ro", b"read only\n");
    std::fs::set_permissions(dir.join("ro"), std::fs::Permissions::from_mode(0o400)).unwrap();
    let f = std::fs::File::create(dir.join("sparse")).unwrap();
    f.set_len(3 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"tail bytes", 3 << 20).unwrap();
    f.write_at(b"head", 0).unwrap();
    12 + 300
}

/// Compares the host tree `host` with the directory `ino` of `fs`; returns files checked.
fn compare(fs: &mut Ext2<MemDevice>, host: &Path, ino: u32) -> usize {
    let mut checked = 0;
    let mut host_names: Vec<String> = std::fs::read_dir(host)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    host_names.sort();
    let ours = list(fs, ino);
    let our_names: Vec<String> = ours
        .iter()
        .map(|e| e.0.clone())
        .filter(|n| n != "lost+found")
        .collect();
    assert_eq!(our_names, host_names, "directory {}", host.display());
    for (name, child, d_type) in ours {
        if name == "lost+found" {
            continue;
        }
        let hp = host.join(&name);
        let meta = std::fs::symlink_metadata(&hp).unwrap();
        let st = fs.stat(child).unwrap();
        assert_eq!(st.ino, child);
        assert_eq!(
            st.mode as u32 & 0o7777,
            meta.permissions().mode() & 0o7777,
            "{name}"
        );
        if meta.is_dir() {
            assert_eq!(st.mode & S_IFMT, S_IFDIR);
            assert_eq!(d_type, 4);
            checked += compare(fs, &hp, child);
        } else if meta.file_type().is_symlink() {
            assert_eq!(st.mode & S_IFMT, S_IFLNK);
            assert_eq!(d_type, 10);
            let target = std::fs::read_link(&hp).unwrap();
            assert_eq!(
                fs.readlink(child).unwrap(),
                target.as_os_str().as_encoded_bytes()
            );
            checked += 1;
        } else {
            assert_eq!(st.mode & S_IFMT, S_IFREG);
            assert_eq!(d_type, 8);
            let want = std::fs::read(&hp).unwrap();
            assert_eq!(st.size, want.len() as u64, "{name}");
            assert!(read_all(fs, child) == want, "contents of {name}");
            checked += 1;
        }
    }
    checked
}

fn read_back(block: u32) {
    let Some(mke2fs) = mke2fs_or_skip("read_back") else {
        return;
    };
    let dir = scratch("src");
    let files = populate(&dir.join("root").tap_mkdir());
    let img = dir.join("img");
    mkfs(
        &mke2fs,
        &img,
        block,
        16 * 1024,
        Some(&dir.join("root")),
        &[],
    );
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    assert_eq!(compare(&mut fs, &dir.join("root"), root), files);
    assert_eq!(fs.statfs().f_type, 0xEF53);
    // A read-only check must not have damaged anything.
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck after a read-back:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn mke2fs_image_reads_back_1k() {
    read_back(1024);
}

#[test]
fn mke2fs_image_reads_back_4k() {
    read_back(4096);
}

/// Every operation, checked in the filesystem; returns files to check with debugfs afterwards.
fn workload(fs: &mut Ext2<MemDevice>, block: u32) -> BTreeMap<String, Vec<u8>> {
    let root = fs.root();
    let mut expect: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let free0 = fs.statfs().f_bfree;

    // create, write, read, overwrite, append.
    let a = fs.create(root, b"a.txt", 0o644, 1000, 1000).unwrap();
    assert_eq!(fs.create(root, b"a.txt", 0o644, 0, 0), Err(Errno::EEXIST));
    let mut data = pattern(7, 10_000);
    assert_eq!(fs.write(a, 0, &data).unwrap(), 10_000);
    fs.write(a, 5000, b"OVERWRITE").unwrap();
    data[5000..5009].copy_from_slice(b"OVERWRITE");
    fs.write(a, 10_000, b"appended").unwrap();
    data.extend_from_slice(b"appended");
    assert_eq!(read_all(fs, a), data);
    let st = fs.stat(a).unwrap();
    assert_eq!(
        (st.uid, st.gid, st.nlink, st.mode),
        (1000, 1000, 1, S_IFREG | 0o644)
    );
    assert_eq!(st.blksize, block);
    assert_eq!(
        st.blocks,
        (data.len() as u64).div_ceil(block as u64) * (block as u64 / 512)
    );
    expect.insert("/a.txt".into(), data.clone());

    // A dense file through the double-indirect range on 1 KiB blocks (12 + 256 + ... blocks).
    let big = fs.create(root, b"dense", 0o600, 0, 0).unwrap();
    let dense = pattern(8, 3 << 20);
    for (i, chunk) in dense.chunks(65536 + 13).enumerate() {
        let off = i * (65536 + 13);
        assert_eq!(fs.write(big, off as u64, chunk).unwrap(), chunk.len());
    }
    assert_eq!(read_all(fs, big), dense);
    expect.insert("/dense".into(), dense.clone());

    // Sparse: holes read as zero; only written blocks (and their indirect blocks) are counted.
    let sp = fs.create(root, b"sparse", 0o644, 0, 0).unwrap();
    let far = 70u64 << 20; // past 12+256+65536 KiB: triple indirect on 1 KiB blocks
    fs.write(sp, far, b"far away").unwrap();
    fs.write(sp, 3, b"near").unwrap();
    let st = fs.stat(sp).unwrap();
    assert_eq!(st.size, far + 8);
    let per = block as u64 / 512;
    let want_blocks = if block == 1024 { 2 + 3 } else { 2 + 2 };
    assert_eq!(
        st.blocks,
        want_blocks * per,
        "data + indirect blocks of the sparse file"
    );
    let mut buf = vec![1u8; 4096];
    assert_eq!(fs.read(sp, far - 4000, &mut buf).unwrap(), 4008);
    assert!(buf[..4000].iter().all(|&b| b == 0));
    assert_eq!(&buf[4000..4008], b"far away");
    let mut buf = vec![1u8; 16];
    fs.read(sp, 0, &mut buf).unwrap();
    assert_eq!(&buf[..8], b"\0\0\0near\0");

    // Across each boundary of the block map (direct/single, single/double, double/triple): one
    // write spanning the last block before it and the first after it.
    let p = block as u64 / 4;
    let edges = [12, 12 + p, 12 + p + p * p];
    let span = pattern(12, 2 * block as usize + 100);
    for (i, edge) in edges.iter().enumerate() {
        let f = fs
            .create(root, format!("edge{i}").as_bytes(), 0o644, 0, 0)
            .unwrap();
        let at = (edge - 1) * block as u64 + 7;
        assert_eq!(fs.write(f, at, &span).unwrap(), span.len());
        let mut back = vec![0u8; span.len()];
        assert_eq!(fs.read(f, at, &mut back).unwrap(), span.len());
        assert!(back == span, "edge {i}");
        if at < 80 << 20 {
            let mut whole = vec![0u8; at as usize];
            whole.extend_from_slice(&span);
            expect.insert(format!("/edge{i}"), whole);
        }
    }

    // Past 4 GiB: i_size_high.
    let huge = fs.create(root, b"huge", 0o644, 0, 0).unwrap();
    let off5g = (5u64 << 30) + 123;
    fs.write(huge, off5g, b"beyond 4 GiB").unwrap();
    assert_eq!(fs.stat(huge).unwrap().size, off5g + 12);
    let mut buf = [0u8; 12];
    fs.read(huge, off5g, &mut buf).unwrap();
    assert_eq!(&buf, b"beyond 4 GiB");
    assert_eq!(fs.write(huge, fs.max_file_size(), b"x"), Err(Errno::EFBIG));

    // Truncate: shrink through every level, then grow (zeroes, not old bytes).
    let t = fs.create(root, b"trunc", 0o644, 0, 0).unwrap();
    let tdata = pattern(9, 400 * 1024);
    fs.write(t, 0, &tdata).unwrap();
    let before = fs.statfs().f_bfree;
    fs.truncate(t, 5000).unwrap();
    assert_eq!(fs.stat(t).unwrap().size, 5000);
    fs.truncate(t, 9000).unwrap();
    let back = read_all(fs, t);
    assert_eq!(&back[..5000], &tdata[..5000]);
    assert!(
        back[5000..].iter().all(|&b| b == 0),
        "grown part reads as zeroes"
    );
    let mut tdata2 = tdata[..5000].to_vec();
    tdata2.resize(9000, 0);
    expect.insert("/trunc".into(), tdata2);
    assert!(fs.statfs().f_bfree > before);
    fs.truncate(sp, 0).unwrap();
    assert_eq!(
        fs.stat(sp).unwrap().blocks,
        0,
        "truncate to 0 frees indirect blocks too"
    );

    // Directories: mkdir, many entries, readdir, rmdir.
    let d1 = fs.mkdir(root, b"d1", 0o755, 0, 0).unwrap();
    let d2 = fs.mkdir(root, b"d2", 0o750, 0, 0).unwrap();
    assert_eq!(fs.stat(root).unwrap().nlink, 5); // ., .., lost+found, d1, d2
    assert_eq!(fs.mkdir(root, b"d1", 0o755, 0, 0), Err(Errno::EEXIST));
    let many = fs.mkdir(d1, b"many", 0o755, 0, 0).unwrap();
    for i in 0..600u32 {
        let name = format!("file-{i:04}-{}", "n".repeat((i % 40) as usize));
        let f = fs.create(many, name.as_bytes(), 0o644, 0, 0).unwrap();
        fs.write(f, 0, format!("{i}").as_bytes()).unwrap();
    }
    for i in (0..600u32).step_by(2) {
        let name = format!("file-{i:04}-{}", "n".repeat((i % 40) as usize));
        fs.unlink(many, name.as_bytes()).unwrap();
    }
    let names = list(fs, many);
    assert_eq!(names.len(), 300);
    for (name, ino, dt) in &names {
        assert_eq!(*dt, 8);
        let i: u32 = name[5..9].parse().unwrap();
        assert_eq!(i % 2, 1);
        assert_eq!(read_all(fs, *ino), format!("{i}").into_bytes());
    }
    // readdir resumes at the position it returned.
    let mut seen = 0;
    let mut pos = 0;
    loop {
        let mut got = 0;
        pos = fs
            .readdir(many, pos, |_, _| {
                got += 1;
                got <= 7
            })
            .unwrap();
        let n = got.min(7);
        seen += n;
        if got <= 7 {
            break;
        }
    }
    assert_eq!(seen, 302);
    expect.insert(
        format!("/d1/many/file-0599-{}", "n".repeat(599 % 40)),
        b"599".to_vec(),
    );

    assert_eq!(fs.rmdir(d1, b"many"), Err(Errno::ENOTEMPTY));
    assert_eq!(fs.rmdir(root, b"a.txt"), Err(Errno::ENOTDIR));
    assert_eq!(fs.unlink(root, b"d1"), Err(Errno::EISDIR));
    assert_eq!(fs.rmdir(d1, b"."), Err(Errno::EINVAL));
    assert_eq!(fs.rmdir(d1, b".."), Err(Errno::ENOTEMPTY));
    let e = fs.mkdir(d2, b"empty", 0o755, 0, 0).unwrap();
    assert_eq!(fs.stat(d2).unwrap().nlink, 3);
    fs.rmdir(d2, b"empty").unwrap();
    assert_eq!(fs.stat(d2).unwrap().nlink, 2);
    assert!(fs.stat(e).is_err());

    // Names.
    let long = vec![b'x'; 256];
    assert_eq!(
        fs.create(root, &long, 0o644, 0, 0),
        Err(Errno::ENAMETOOLONG)
    );
    assert_eq!(fs.lookup(root, &long), Err(Errno::ENAMETOOLONG));
    let max = vec![b'y'; 255];
    let m = fs.create(d2, &max, 0o644, 0, 0).unwrap();
    assert_eq!(fs.lookup(d2, &max), Ok(m));
    assert_eq!(fs.lookup(root, b"nope"), Err(Errno::ENOENT));
    assert_eq!(fs.lookup(a, b"x"), Err(Errno::ENOTDIR));

    // link and rename.
    fs.link(a, d2, b"a-link").unwrap();
    assert_eq!(fs.stat(a).unwrap().nlink, 2);
    assert_eq!(fs.link(d1, d2, b"dirlink"), Err(Errno::EPERM));
    fs.rename(d2, b"a-link", d1, b"moved").unwrap(); // across directories
    assert_eq!(fs.lookup(d1, b"moved"), Ok(a));
    assert_eq!(fs.lookup(d2, b"a-link"), Err(Errno::ENOENT));
    fs.rename(d1, b"moved", d1, b"moved2").unwrap(); // within
    fs.rename(d1, b"moved2", root, b"a.txt").unwrap(); // onto another name of the same inode
    assert_eq!(fs.stat(a).unwrap().nlink, 2);
    // Replace a file: the old target loses its link and is freed.
    let victim = fs.create(d2, b"victim", 0o644, 0, 0).unwrap();
    fs.write(victim, 0, &pattern(10, 50_000)).unwrap();
    fs.rename(d1, b"moved2", d2, b"victim").unwrap();
    assert_eq!(fs.lookup(d2, b"victim"), Ok(a));
    assert!(fs.stat(victim).is_err(), "replaced target freed");
    expect.insert("/d2/victim".into(), data.clone());
    // Directories: into own subtree, onto non-empty, file onto dir and back.
    let sub = fs.mkdir(d1, b"sub", 0o755, 0, 0).unwrap();
    assert_eq!(fs.rename(root, b"d1", sub, b"x"), Err(Errno::EINVAL));
    assert_eq!(fs.rename(root, b"d1", d1, b"x"), Err(Errno::EINVAL));
    assert_eq!(fs.rename(root, b"d2", d1, b"many"), Err(Errno::ENOTEMPTY));
    assert_eq!(fs.rename(root, b"a.txt", d1, b"sub"), Err(Errno::EISDIR));
    assert_eq!(fs.rename(d1, b"sub", root, b"a.txt"), Err(Errno::ENOTDIR));
    // Move a directory across: link counts and '..' follow.
    let d1_links = fs.stat(d1).unwrap().nlink;
    fs.rename(d1, b"sub", d2, b"sub").unwrap();
    assert_eq!(fs.stat(d1).unwrap().nlink, d1_links - 1);
    assert_eq!(fs.lookup(sub, b".."), Ok(d2));
    // Replace an empty directory with a directory.
    let empty = fs.mkdir(d1, b"empty2", 0o755, 0, 0).unwrap();
    let d2_links = fs.stat(d2).unwrap().nlink;
    fs.rename(d2, b"sub", d1, b"empty2").unwrap();
    assert!(fs.stat(empty).is_err());
    assert_eq!(fs.stat(d2).unwrap().nlink, d2_links - 1);
    assert_eq!(fs.lookup(sub, b".."), Ok(d1));

    // Symlinks.
    let fast = fs.symlink(root, b"fast", b"a.txt", 0, 0).unwrap();
    let slow_target = "/some/long/path/".repeat(10);
    let slow = fs
        .symlink(root, b"slow", slow_target.as_bytes(), 0, 0)
        .unwrap();
    assert_eq!(fs.readlink(fast).unwrap(), b"a.txt");
    assert_eq!(fs.readlink(slow).unwrap(), slow_target.as_bytes());
    assert_eq!(fs.stat(fast).unwrap().blocks, 0);
    assert_eq!(fs.stat(slow).unwrap().blocks, block as u64 / 512);
    assert_eq!(fs.readlink(a), Err(Errno::EINVAL));
    assert_eq!(fs.read(fast, 0, &mut [0u8; 4]), Err(Errno::EINVAL));
    let at59 = vec![b'q'; 59];
    let l59 = fs.symlink(root, b"l59", &at59, 0, 0).unwrap();
    assert_eq!(fs.stat(l59).unwrap().blocks, 0);
    let at60 = vec![b'r'; 60];
    let l60 = fs.symlink(root, b"l60", &at60, 0, 0).unwrap();
    assert_eq!(fs.readlink(l60).unwrap(), at60);
    assert_eq!(fs.stat(l60).unwrap().blocks, block as u64 / 512);
    fs.unlink(root, b"l60").unwrap();

    // chmod, chown, times, statfs.
    fs.chmod(a, 0o4711).unwrap();
    assert_eq!(fs.stat(a).unwrap().mode, S_IFREG | 0o4711);
    fs.chown(a, Some(7), None).unwrap();
    assert_eq!(
        (fs.stat(a).unwrap().uid, fs.stat(a).unwrap().gid),
        (7, 1000)
    );
    fs.set_times(a, Some(1_000_000), Some(2_000_000)).unwrap();
    let st = fs.stat(a).unwrap();
    assert_eq!((st.atime, st.mtime), (1_000_000, 2_000_000));
    assert!(st.ctime >= now() - 60);
    let sfs = fs.statfs();
    assert_eq!(sfs.f_type, 0xEF53);
    assert_eq!(sfs.f_bsize, block);
    assert!(sfs.f_bfree < free0 && sfs.f_bfree <= sfs.f_blocks && sfs.f_ffree < sfs.f_files);

    // Unlinked while open: still readable, freed at the last release.
    let o = fs.create(root, b"orphan", 0o644, 0, 0).unwrap();
    fs.write(o, 0, &pattern(11, 30_000)).unwrap();
    fs.open(o).unwrap();
    fs.open(o).unwrap();
    let bfree = fs.statfs().f_bfree;
    fs.unlink(root, b"orphan").unwrap();
    assert_eq!(fs.lookup(root, b"orphan"), Err(Errno::ENOENT));
    assert_eq!(read_all(fs, o), pattern(11, 30_000));
    assert_eq!(fs.statfs().f_bfree, bfree, "blocks kept while open");
    fs.release(o).unwrap();
    assert_eq!(fs.statfs().f_bfree, bfree);
    fs.release(o).unwrap();
    assert!(fs.statfs().f_bfree > bfree, "freed at the last close");
    // One left open at unmount is freed there.
    let o2 = fs.create(root, b"orphan2", 0o644, 0, 0).unwrap();
    fs.write(o2, 0, b"bye").unwrap();
    fs.open(o2).unwrap();
    fs.unlink(root, b"orphan2").unwrap();

    expect
}

fn workload_image(block: u32) {
    let Some(mke2fs) = mke2fs_or_skip("workload") else {
        return;
    };
    let dir = scratch("work");
    let src = dir.join("root").tap_mkdir();
    std::fs::write(src.join("pre-existing"), pattern(42, 70_000)).unwrap();
    let img = dir.join("img");
    mkfs(&mke2fs, &img, block, 24 * 1024, Some(&src), &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let mut expect = workload(&mut fs, block);
    expect.insert("/pre-existing".into(), pattern(42, 70_000));
    assert_eq!(
        fs.error_count(),
        0,
        "no corruption reported: {:?}",
        fs.take_error()
    );
    let cache = fs.cache_stats();
    assert!(
        cache.cached <= 1024,
        "the buffer cache stays bounded: {cache:?}"
    );
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(
        clean,
        "e2fsck -fn after the workload ({block}-byte blocks):\n{out}"
    );
    for (path, want) in &expect {
        let got = debugfs(&img, &format!("cat {path}"));
        assert!(
            got == *want,
            "debugfs cat {path}: {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
    let stat = String::from_utf8_lossy(&debugfs(&img, "stat /huge")).into_owned();
    assert!(
        stat.contains(&format!("Size: {}", (5u64 << 30) + 123 + 12)),
        "{stat}"
    );
    let link = String::from_utf8_lossy(&debugfs(&img, "stat /slow")).into_owned();
    assert!(link.contains("Type: symlink"), "{link}");
    // Clean state after unmount, errors bit clear.
    let sb = std::fs::read(&img).unwrap();
    assert_eq!(
        u16::from_le_bytes([sb[1024 + 58], sb[1024 + 59]]),
        1,
        "s_state clean"
    );
    // Mount again: everything still there.
    let mut fs = mount(sb);
    for (path, want) in &expect {
        let ino = resolve(&mut fs, path).unwrap();
        assert!(read_all(&mut fs, ino) == *want, "{path} after remount");
    }
    let (dev, r) = fs.unmount();
    r.unwrap();
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn workload_1k_e2fsck_clean() {
    workload_image(1024);
}

#[test]
fn workload_4k_e2fsck_clean() {
    workload_image(4096);
}

/// Fill the disk: ENOSPC, then every structure is still consistent and older files intact.
fn fill_disk(block: u32) {
    let Some(mke2fs) = mke2fs_or_skip("fill_disk") else {
        return;
    };
    let dir = scratch("fill");
    let src = dir.join("root").tap_mkdir();
    std::fs::write(src.join("keep"), pattern(50, 20_000)).unwrap();
    let img = dir.join("img");
    mkfs(&mke2fs, &img, block, 2048, Some(&src), &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let free0 = fs.statfs();
    let d = fs.mkdir(root, b"fill", 0o755, 0, 0).unwrap();
    let chunk = pattern(51, 64 * 1024);
    let mut files = Vec::new();
    let mut full = false;
    for i in 0..10_000 {
        let name = format!("f{i}");
        let f = match fs.create(d, name.as_bytes(), 0o644, 0, 0) {
            Ok(f) => f,
            Err(Errno::ENOSPC) => {
                full = true;
                break;
            }
            Err(e) => panic!("create: {e:?}"),
        };
        let mut off = 0u64;
        loop {
            match fs.write(f, off, &chunk) {
                Ok(n) if n == chunk.len() => off += n as u64,
                Ok(n) => {
                    off += n as u64;
                    assert_eq!(fs.write(f, off, &chunk), Err(Errno::ENOSPC));
                    full = true;
                    break;
                }
                Err(Errno::ENOSPC) => {
                    full = true;
                    break;
                }
                Err(e) => panic!("write: {e:?}"),
            }
            if off >= 256 * 1024 {
                break;
            }
        }
        files.push((name, f, off));
        if full {
            break;
        }
    }
    assert!(full, "the disk filled up");
    assert_eq!(
        fs.error_count(),
        0,
        "no corruption reported: {:?}",
        fs.take_error()
    );
    assert_eq!(fs.statfs().f_bfree, 0);
    // Everything that needs a block fails cleanly.
    assert_eq!(fs.mkdir(root, b"nodir", 0o755, 0, 0), Err(Errno::ENOSPC));
    let long_target = vec![b't'; 200];
    assert_eq!(
        fs.symlink(root, b"nolink", &long_target, 0, 0),
        Err(Errno::ENOSPC)
    );
    let fill_inodes = fs.statfs().f_ffree;
    assert_eq!(fs.lookup(root, b"nodir"), Err(Errno::ENOENT));
    assert_eq!(fs.lookup(root, b"nolink"), Err(Errno::ENOENT));
    assert_eq!(
        fs.statfs().f_ffree,
        fill_inodes,
        "rolled-back inodes are free again"
    );
    // Adding entries until the directory needs a new block.
    let mut n = 0;
    let err = loop {
        match fs.create(
            d,
            format!("empty-file-with-a-long-name-{n:05}").as_bytes(),
            0o644,
            0,
            0,
        ) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 100_000);
    };
    assert_eq!(err, Errno::ENOSPC);
    let keep = resolve(&mut fs, "/keep").unwrap();
    assert_eq!(read_all(&mut fs, keep), pattern(50, 20_000));
    for (_, f, len) in &files {
        let got = read_all(&mut fs, *f);
        assert_eq!(got.len() as u64, *len);
        assert!(got.chunks(chunk.len()).all(|c| c == &chunk[..c.len()]));
    }
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn on a full disk:\n{out}");
    // Delete everything we made: the free counts come back.
    let mut fs = mount(std::fs::read(&img).unwrap());
    for (name, _) in list(&mut fs, d).into_iter().map(|(n, i, _)| (n, i)) {
        fs.unlink(d, name.as_bytes()).unwrap();
    }
    fs.rmdir(root, b"fill").unwrap();
    let after = fs.statfs();
    assert_eq!(after.f_bfree, free0.f_bfree);
    assert_eq!(after.f_ffree, free0.f_ffree);
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn after emptying:\n{out}");
    assert_eq!(debugfs(&img, "cat /keep"), pattern(50, 20_000));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fill_disk_to_enospc_1k() {
    fill_disk(1024);
}

#[test]
fn fill_disk_to_enospc_4k() {
    fill_disk(4096);
}

/// Formats without `filetype` and `dir_index`, revision 0, 2 KiB blocks and 4 KiB sectors: a small
/// workload on each, then e2fsck.
#[test]
fn other_formats_e2fsck_clean() {
    let Some(mke2fs) = mke2fs_or_skip("other_formats") else {
        return;
    };
    let cases: [(&str, u32, &[&str], usize); 4] = [
        ("nofiletype", 1024, &["-O", "^filetype,^dir_index"], 512),
        ("rev0", 1024, &["-r", "0"], 512),
        ("2k", 2048, &[], 512),
        ("4ksector", 4096, &[], 4096),
    ];
    for (name, block, extra, sector) in cases {
        let dir = scratch(name);
        let src = dir.join("root").tap_mkdir();
        std::fs::write(src.join("old"), pattern(60, 30_000)).unwrap();
        let img = dir.join("img");
        mkfs(&mke2fs, &img, block, 8192, Some(&src), extra);
        let dev = MemDevice {
            data: std::fs::read(&img).unwrap(),
            sector,
        };
        let mut fs = Ext2::mount(dev, cowlab_ext2::MountOptions::default()).unwrap();
        fs.set_clock(now);
        let root = fs.root();
        let d = fs.mkdir(root, b"dir", 0o755, 0, 0).unwrap();
        for i in 0..100u32 {
            let f = fs
                .create(d, format!("f{i}").as_bytes(), 0o644, 0, 0)
                .unwrap();
            fs.write(f, 0, &pattern(i, 2000 + i as usize * 50)).unwrap();
        }
        fs.rename(d, b"f7", root, b"seven").unwrap();
        fs.unlink(d, b"f8").unwrap();
        let want_dtype = if name == "nofiletype" || name == "rev0" {
            0
        } else {
            8
        };
        let listed = list(&mut fs, d);
        assert_eq!(listed.len(), 98, "{name}");
        assert!(listed.iter().all(|e| e.2 == want_dtype), "{name}: d_type");
        let big = fs.create(root, b"big", 0o644, 0, 0).unwrap();
        fs.write(big, 3 << 20, b"end").unwrap();
        let past2g = fs.write(big, 1 << 31, b"x");
        if name == "rev0" {
            assert_eq!(past2g, Err(Errno::EFBIG), "revision 0 has no large_file");
        } else {
            assert_eq!(past2g, Ok(1));
        }
        assert_eq!(fs.error_count(), 0, "{name}: {:?}", fs.take_error());
        let (dev, r) = fs.unmount();
        r.unwrap();
        std::fs::write(&img, &dev.data).unwrap();
        let (clean, out) = e2fsck(&img);
        assert!(clean, "{name}: e2fsck -fn:\n{out}");
        assert_eq!(
            debugfs(&img, "cat /seven"),
            pattern(7, 2000 + 7 * 50),
            "{name}"
        );
        assert_eq!(debugfs(&img, "cat /old"), pattern(60, 30_000), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A directory e2fsck turned into a hashed index (`e2fsck -fD`): read linearly, changed, its
/// index flag dropped as Linux's ext2 does, and e2fsck is content; an image left mounted (not
/// unmounted) is reported as unchecked at the next mount.
#[test]
fn htree_directory_and_unclean_mount() {
    let Some(mke2fs) = mke2fs_or_skip("htree") else {
        return;
    };
    let dir = scratch("htree");
    let src = dir.join("root").tap_mkdir();
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..400 {
        std::fs::write(
            src.join(format!("big/name-{i:04}-padding-padding")),
            format!("{i}"),
        )
        .unwrap();
    }
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 8192, Some(&src), &[]);
    let out = std::process::Command::new(tool("e2fsck").unwrap())
        .args(["-fyD"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(8) <= 1,
        "e2fsck -fyD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let flags = String::from_utf8_lossy(&debugfs(&img, "stat /big")).into_owned();
    assert!(
        flags.contains("Flags: 0x1000"),
        "e2fsck -D made an indexed directory: {flags}"
    );
    let mut fs = mount(std::fs::read(&img).unwrap());
    assert_eq!(fs.mount_warning(), None);
    let big = resolve(&mut fs, "/big").unwrap();
    assert_eq!(list(&mut fs, big).len(), 400);
    let f = fs.lookup(big, b"name-0123-padding-padding").unwrap();
    assert_eq!(read_all(&mut fs, f), b"123");
    fs.unlink(big, b"name-0007-padding-padding").unwrap();
    fs.create(big, b"a-new-name", 0o644, 0, 0).unwrap();
    assert_eq!(list(&mut fs, big).len(), 400);
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(
        clean,
        "e2fsck -fn after changing an indexed directory:\n{out}"
    );
    let flags = String::from_utf8_lossy(&debugfs(&img, "stat /big")).into_owned();
    assert!(flags.contains("Flags: 0x0"), "index flag dropped: {flags}");
    // Mounted and never unmounted: the on-disk state says not clean.
    let fs = mount(std::fs::read(&img).unwrap());
    let (dev, _) = fs.unmount();
    let mut unclean = dev.data.clone();
    unclean[1024 + 58] = 0; // s_state without EXT2_VALID_FS, as a crash leaves it
    let fs = mount(unclean);
    assert!(fs.mount_warning().unwrap().contains("unchecked"));
}

#[test]
fn the_filesystem_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Ext2<MemDevice>>();
}
