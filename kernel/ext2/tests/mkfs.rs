//! Our `format` against e2fsck: empty filesystems of several block sizes and group counts are
//! clean, mount, take a workload and stay clean.

mod common;

use common::*;
use cowlab_ext2::{format, Errno, Ext2, FormatOptions, MountOptions};

#[test]
fn format_is_e2fsck_clean_and_usable() {
    if tool("e2fsck").is_none() {
        eprintln!(
            "SKIPPED format_is_e2fsck_clean_and_usable: e2fsck not found (install e2fsprogs)"
        );
        return;
    }
    let dir = scratch("mkfs");
    // (block size, device bytes): one group, several groups, a short last group.
    let cases = [
        (1024u32, 2u64 << 20),
        (1024, (20 << 20) + 5 * 1024),
        (2048, 50 << 20),
        (4096, 64 << 20),
        (4096, (300 << 20) + 12 * 4096),
    ];
    for (bs, bytes) in cases {
        let mut dev = MemDevice::new(vec![0xEE; bytes as usize]);
        let opts = FormatOptions {
            block_size: bs,
            now: now(),
            uuid: [7; 16],
            label: "cowlab",
            ..FormatOptions::default()
        };
        format(&mut dev, &opts).unwrap();
        let img = dir.join(format!("img-{bs}-{bytes}"));
        std::fs::write(&img, &dev.data).unwrap();
        let (clean, out) = e2fsck(&img);
        assert!(clean, "{bs}/{bytes}: e2fsck -fn of a fresh format:\n{out}");
        let mut fs = Ext2::mount(dev, MountOptions::default()).unwrap();
        fs.set_clock(now);
        let root = fs.root();
        assert_eq!(
            list(&mut fs, root)
                .iter()
                .map(|e| e.0.as_str())
                .collect::<Vec<_>>(),
            ["lost+found"]
        );
        let st = fs.statfs();
        assert_eq!(st.f_bsize, bs);
        assert!(st.f_bfree > 0 && st.f_ffree > 0);
        let d = fs.mkdir(root, b"dir", 0o755, 0, 0).unwrap();
        for i in 0..50u32 {
            let f = fs
                .create(d, format!("f{i}").as_bytes(), 0o644, 0, 0)
                .unwrap();
            fs.write(f, 0, &pattern(i, 1000 + 700 * i as usize))
                .unwrap();
        }
        let big = fs.create(root, b"big", 0o644, 0, 0).unwrap();
        let data = pattern(99, 600 * 1024);
        assert_eq!(fs.write(big, 0, &data), Ok(data.len()));
        fs.symlink(root, b"link", b"dir/f1", 0, 0).unwrap();
        fs.unlink(d, b"f2").unwrap();
        assert_eq!(fs.lookup(d, b"f2"), Err(Errno::ENOENT));
        assert_eq!(fs.error_count(), 0);
        unmount_to(fs, &img);
        let (clean, out) = e2fsck(&img);
        assert!(clean, "{bs}/{bytes}: e2fsck -fn after a workload:\n{out}");
        assert_eq!(debugfs(&img, "cat /big"), data);
        assert_eq!(debugfs(&img, "cat /dir/f7"), pattern(7, 1000 + 700 * 7));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn format_refuses_bad_options_and_tiny_disks() {
    let mut dev = MemDevice::new(vec![0; 1 << 20]);
    let bad = FormatOptions {
        block_size: 8192,
        ..FormatOptions::default()
    };
    assert_eq!(format(&mut dev, &bad), Err(Errno::EINVAL));
    let mut tiny = MemDevice::new(vec![0; 32 * 1024]);
    let opts = FormatOptions {
        block_size: 1024,
        ..FormatOptions::default()
    };
    assert_eq!(format(&mut tiny, &opts), Err(Errno::ENOSPC));
}
