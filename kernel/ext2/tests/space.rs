//! fallocate and SEEK_DATA/SEEK_HOLE over the block map, checked against e2fsprogs: after
//! preallocating, punching and seeking, `e2fsck -fn` finds nothing and `debugfs` reads back the
//! bytes the map now describes.

mod common;

use common::*;
use cowlab_ext2::{Errno, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};

const PUNCH: u32 = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

fn space(block: u32) {
    let Some(mke2fs) = mke2fs_or_skip("space") else {
        return;
    };
    let dir = scratch("space");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, block, 8 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let bs = u64::from(block);
    let free0 = fs.statfs().f_bfree;

    // Mode 0 on an empty file: the size grows, the blocks are there and read as zeroes.
    let f = fs.create(root, b"pre", 0o644, 0, 0).unwrap();
    fs.fallocate(f, 0, 0, 20 * bs + 7).unwrap();
    let st = fs.stat(f).unwrap();
    assert_eq!(st.size, 20 * bs + 7);
    assert!(st.blocks >= 21 * bs / 512, "blocks {}", st.blocks);
    assert!(
        free0 - fs.statfs().f_bfree >= 21,
        "the blocks left the free count"
    );
    assert!(read_all(&mut fs, f).iter().all(|&b| b == 0));
    // Fully allocated: no hole before the end, no data past it.
    assert_eq!(fs.seek_data_hole(f, 0, true), Ok(20 * bs + 7));
    assert_eq!(fs.seek_data_hole(f, 5, false), Ok(5));
    assert_eq!(fs.seek_data_hole(f, 20 * bs + 7, false), Err(Errno::ENXIO));

    // Write a pattern, punch the middle: whole blocks leave the map, edges become zeroes.
    let data = pattern(7, (20 * bs + 7) as usize);
    fs.write(f, 0, &data).unwrap();
    let before = fs.stat(f).unwrap().blocks;
    fs.fallocate(f, PUNCH, 2 * bs + 100, 5 * bs).unwrap();
    let mut want = data.clone();
    want[(2 * bs + 100) as usize..(7 * bs + 100) as usize].fill(0);
    assert!(read_all(&mut fs, f) == want, "punched bytes read as zeroes");
    let st = fs.stat(f).unwrap();
    assert_eq!(st.size, 20 * bs + 7, "KEEP_SIZE");
    assert_eq!(before - st.blocks, 4 * bs / 512, "blocks 3..7 freed");
    assert_eq!(fs.seek_data_hole(f, 0, true), Ok(3 * bs));
    assert_eq!(fs.seek_data_hole(f, 3 * bs + 1, true), Ok(3 * bs + 1));
    assert_eq!(fs.seek_data_hole(f, 3 * bs, false), Ok(7 * bs));
    assert_eq!(fs.seek_data_hole(f, 7 * bs, true), Ok(20 * bs + 7));
    // Punching past the end changes nothing; KEEP_SIZE inside the last block refills.
    fs.fallocate(f, PUNCH, 30 * bs, bs).unwrap();
    assert_eq!(fs.stat(f).unwrap().size, 20 * bs + 7);
    fs.fallocate(f, FALLOC_FL_KEEP_SIZE, 3 * bs, 2 * bs)
        .unwrap();
    assert_eq!(fs.seek_data_hole(f, 3 * bs, false), Ok(3 * bs));
    assert_eq!(fs.seek_data_hole(f, 3 * bs, true), Ok(5 * bs));
    assert_eq!(fs.stat(f).unwrap().size, 20 * bs + 7);
    // KEEP_SIZE past the last block would leave blocks e2fsck reports: refused.
    assert_eq!(
        fs.fallocate(f, FALLOC_FL_KEEP_SIZE, 20 * bs, 2 * bs),
        Err(Errno::EOPNOTSUPP)
    );
    assert_eq!(
        fs.fallocate(f, FALLOC_FL_PUNCH_HOLE, 0, bs),
        Err(Errno::EOPNOTSUPP)
    );
    assert_eq!(fs.fallocate(f, 0x10, 0, bs), Err(Errno::EOPNOTSUPP));
    assert_eq!(fs.fallocate(f, 0, u64::MAX - 10, 100), Err(Errno::EFBIG));

    // A sparse file with a hole spanning a missing indirect block, found in one step.
    let s = fs.create(root, b"sparse", 0o644, 0, 0).unwrap();
    let far = 3000 * bs;
    fs.write(s, far, b"tail").unwrap();
    fs.write(s, 0, b"head").unwrap();
    assert_eq!(fs.seek_data_hole(s, 0, true), Ok(bs));
    assert_eq!(fs.seek_data_hole(s, bs, false), Ok(far));
    assert_eq!(fs.seek_data_hole(s, far, true), Ok(far + 4));
    assert_eq!(fs.seek_data_hole(s, far + 4, true), Err(Errno::ENXIO));
    // Mode 0 past the end grows it, the old tail stays.
    fs.fallocate(s, 0, far + 2, 3 * bs).unwrap();
    assert_eq!(fs.stat(s).unwrap().size, far + 2 + 3 * bs);
    let all = read_all(&mut fs, s);
    assert_eq!(&all[far as usize..far as usize + 4], b"tail");
    assert!(all[far as usize + 4..].iter().all(|&b| b == 0));

    let expect_pre = read_all(&mut fs, f);
    let expect_sparse = read_all(&mut fs, s);
    assert_eq!(fs.error_count(), 0, "{:?}", fs.take_error());
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn after fallocate ({block}):\n{out}");
    assert!(debugfs(&img, "cat /pre") == expect_pre);
    assert!(debugfs(&img, "cat /sparse") == expect_sparse);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fallocate_and_seek_1k() {
    space(1024);
}

#[test]
fn fallocate_and_seek_4k() {
    space(4096);
}

/// `allocate_range` (the kernel's `page_mkwrite`): blocks under a hole of a sparse file are
/// allocated and read as zeroes, blocks already there are left alone, and on a full disk the
/// call is `ENOSPC` with the image still consistent.
#[test]
fn allocate_range_fills_holes_and_reports_a_full_disk() {
    let Some(mke2fs) = mke2fs_or_skip("allocate_range") else {
        return;
    };
    let dir = scratch("allocate_range");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 2 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let f = fs.create(root, b"sparse", 0o644, 0, 0).unwrap();
    fs.write(f, 0, b"head").unwrap();
    fs.truncate(f, 64 * 1024).unwrap();
    let blocks = fs.stat(f).unwrap().blocks;
    fs.allocate_range(f, 0, 4096).unwrap();
    assert_eq!(
        fs.stat(f).unwrap().blocks - blocks,
        3 * 1024 / 512,
        "three of the first page's four blocks were holes"
    );
    let free = fs.statfs().f_bfree;
    fs.allocate_range(f, 0, 4096).unwrap();
    assert_eq!(fs.statfs().f_bfree, free, "nothing missing, nothing taken");
    let data = read_all(&mut fs, f);
    assert_eq!(&data[..4], b"head");
    assert!(data[4..].iter().all(|&b| b == 0));
    assert_eq!(fs.stat(f).unwrap().size, 64 * 1024, "the size stays");
    // Fill the disk, then a hole can get no block.
    let big = fs.create(root, b"big", 0o644, 0, 0).unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut off = 0;
    while let Ok(n) = fs.write(big, off, &chunk) {
        if n == 0 {
            break;
        }
        off += n as u64;
    }
    assert_eq!(fs.allocate_range(f, 32 * 1024, 4096), Err(Errno::ENOSPC));
    fs.allocate_range(f, 0, 4096)
        .expect("an allocated page needs no block");
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(
        clean,
        "e2fsck -fn after allocate_range on a full disk:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `allocate_range` never grows the size: the kernel's `page_mkwrite` computed its range from
/// the cache's size, and an `ftruncate` that cut the file meanwhile (the filesystem first, then
/// the cache) must stay cut. A range reaching past the size is cut at it; one wholly past it
/// is `ENXIO` (the store's `SIGBUS`). Before, the allocation set the size to the range's end.
#[test]
fn allocate_range_never_grows_the_size() {
    let Some(mke2fs) = mke2fs_or_skip("allocate_range_size") else {
        return;
    };
    let dir = scratch("allocate_range_size");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 2 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let f = fs.create(root, b"cut", 0o644, 0, 0).unwrap();
    fs.truncate(f, 8192).unwrap();
    // Truncated to half a page after the caller read the size.
    fs.truncate(f, 2048).unwrap();
    fs.allocate_range(f, 0, 4096).unwrap();
    assert_eq!(fs.stat(f).unwrap().size, 2048, "the truncation stays");
    assert_eq!(
        fs.stat(f).unwrap().blocks,
        2 * 1024 / 512,
        "blocks below it only"
    );
    assert_eq!(fs.allocate_range(f, 4096, 4096), Err(Errno::ENXIO));
    assert_eq!(fs.stat(f).unwrap().size, 2048);
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(
        clean,
        "e2fsck -fn after allocate_range past the size:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `write_begin` and `writeback_blocks` (the kernel's write-back page cache): a buffered write
/// gets its blocks and its size at the call, a short count then `ENOSPC` on a full disk;
/// writeback finds where each block goes (0 past the size), allocating a hole below it; the
/// data then written to those blocks reads back, and e2fsck finds the image consistent.
#[test]
fn write_begin_allocates_at_the_call_and_writeback_maps() {
    let Some(mke2fs) = mke2fs_or_skip("write_begin") else {
        return;
    };
    let dir = scratch("write_begin");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 2 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    let f = fs.create(root, b"wb", 0o644, 0, 0).unwrap();
    let free = fs.statfs().f_bfree;
    assert_eq!(fs.write_begin(f, 1000, 3000), Ok(3000));
    assert_eq!(fs.stat(f).unwrap().size, 4000, "the size covers the write");
    assert_eq!(
        free - fs.statfs().f_bfree,
        4,
        "blocks 0..4 (1000..4000) allocated"
    );
    assert_eq!(fs.write_begin(f, 0, 100), Ok(100));
    assert_eq!(fs.statfs().f_bfree, free - 4, "block 0 was there");
    assert_eq!(
        fs.stat(f).unwrap().size,
        4000,
        "a write inside keeps the size"
    );
    let map = fs.writeback_blocks(f, 0, 6, |_| false).unwrap();
    assert!(map[..4].iter().all(|&b| b != 0), "{map:?}");
    assert_eq!(&map[4..], &[0, 0], "past the size: nothing to store");
    // A hole below the size (grown by truncate) is allocated by writeback.
    fs.truncate(f, 6000).unwrap();
    let free = fs.statfs().f_bfree;
    let map = fs.writeback_blocks(f, 4, 2, |i| i == 0).unwrap();
    assert_eq!(map[0], 0, "a hole whose data are zeroes stays a hole");
    assert!(map[1] != 0, "{map:?}");
    assert_eq!(
        free - fs.statfs().f_bfree,
        1,
        "only the other was allocated"
    );
    let map = fs.writeback_blocks(f, 4, 2, |_| false).unwrap();
    assert!(map.iter().all(|&b| b != 0), "{map:?}");
    let data = pattern(3, 6000);
    fs.write(f, 0, &data).unwrap();
    assert!(read_all(&mut fs, f) == data);
    // Fill the disk: a write past every free block is cut short, then ENOSPC.
    let big = fs.create(root, b"big", 0o644, 0, 0).unwrap();
    let left = fs.statfs().f_bfree;
    let n = fs.write_begin(big, 0, (left + 100) * 1024).unwrap();
    assert!(n > 0 && n < (left + 100) * 1024, "short count {n}");
    assert_eq!(
        fs.stat(big).unwrap().size,
        n,
        "the size covers only the blocks"
    );
    assert_eq!(fs.write_begin(big, n, 1024), Err(Errno::ENOSPC));
    let zeroes = vec![0u8; n as usize];
    fs.write(big, 0, &zeroes).unwrap();
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn after write_begin:\n{out}");
    assert!(debugfs(&img, "cat /wb") == data);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The number of free blocks brought to exactly `want`: the disk filled by `big`, cut back a
/// block at a time until at least `want` are free, then `spare` takes the extra ones.
fn leave_free(fs: &mut cowlab_ext2::Ext2<MemDevice>, root: u32, want: u64) {
    let big = fs.create(root, b"big", 0o644, 0, 0).unwrap();
    let spare = fs.create(root, b"spare", 0o644, 0, 0).unwrap();
    let left = fs.statfs().f_bfree;
    let n = fs.write_begin(big, 0, (left + 100) * 1024).unwrap();
    let mut size = n;
    while fs.statfs().f_bfree < want {
        size -= 1024;
        fs.truncate(big, size).unwrap();
    }
    let mut blocks = 0;
    while fs.statfs().f_bfree > want {
        assert_eq!(fs.write_begin(spare, blocks * 1024, 1024), Ok(1024));
        blocks += 1;
    }
    fs.write(spare, 0, &vec![0u8; blocks as usize * 1024])
        .unwrap();
    assert_eq!(fs.statfs().f_bfree, want);
}

/// pcache3 (Linux `ext2_write_failed`): a buffered write that fails part-way keeps no block
/// past the file's size. `write_begin` on a disk with one free block, for the first block
/// past the twelve direct ones, needs an indirect block and a data block: it gets the indirect
/// one, then `ENOSPC`; the indirect block is freed again (before, it stayed linked, mapping
/// nothing, past the size) and the size is left alone. `write_failed` gives back the size and
/// the blocks a prepared write allocated past the bytes the page cache took. e2fsck -fn is
/// clean after both, and the freed blocks are free again.
#[test]
fn a_failed_write_keeps_no_block_past_the_size() {
    let Some(mke2fs) = mke2fs_or_skip("write_failed") else {
        return;
    };
    let dir = scratch("write_failed");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 2 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    // write_failed: 1000 bytes, a write to 9000 prepared, only 2500 taken.
    let f = fs.create(root, b"short", 0o644, 0, 0).unwrap();
    let free = fs.statfs().f_bfree;
    assert_eq!(fs.write_begin(f, 0, 1000), Ok(1000));
    assert_eq!(fs.write_begin(f, 1000, 8000), Ok(8000));
    assert_eq!(free - fs.statfs().f_bfree, 9);
    assert_eq!(fs.write_failed(f, 2500), Ok(()));
    let st = fs.stat(f).unwrap();
    assert_eq!(st.size, 2500, "the size the cache took");
    assert_eq!(st.blocks, 3 * 2, "blocks 0..3 kept");
    assert_eq!(free - fs.statfs().f_bfree, 3, "blocks 3..9 free again");
    // Never grows nor cuts below the size.
    assert_eq!(fs.write_failed(f, 4000), Ok(()));
    assert_eq!(fs.stat(f).unwrap().size, 2500);
    fs.write(f, 0, &pattern(1, 2500)).unwrap();
    // A file of twelve direct blocks, one free block on the disk.
    let d = fs.create(root, b"direct", 0o644, 0, 0).unwrap();
    assert_eq!(fs.write_begin(d, 0, 12 * 1024), Ok(12 * 1024));
    fs.write(d, 0, &pattern(2, 12 * 1024)).unwrap();
    leave_free(&mut fs, root, 1);
    assert_eq!(fs.write_begin(d, 12 * 1024, 1024), Err(Errno::ENOSPC));
    assert_eq!(
        fs.statfs().f_bfree,
        1,
        "the indirect block allocated for the failed block is free again"
    );
    let st = fs.stat(d).unwrap();
    assert_eq!(
        (st.size, st.blocks),
        (12 * 1024, 24),
        "size and blocks as before"
    );
    // A write past the end refused at its first block leaves the size.
    assert_eq!(fs.write_begin(d, 20 * 1024, 1024), Err(Errno::ENOSPC));
    assert_eq!(fs.stat(d).unwrap().size, 12 * 1024, "no hole grown");
    assert_eq!(fs.statfs().f_bfree, 1);
    let big = resolve(&mut fs, "/big").unwrap();
    let bsize = fs.stat(big).unwrap().size;
    fs.write(big, 0, &vec![0u8; bsize as usize]).unwrap();
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn after failed writes:\n{out}");
    assert!(debugfs(&img, "cat /direct") == pattern(2, 12 * 1024));
    assert!(debugfs(&img, "cat /short") == pattern(1, 2500));
    let _ = std::fs::remove_dir_all(&dir);
}

/// pcfix4 (Linux `folio_zero_new_buffers` on a failed write): a buffered write into holes
/// inside the size that fills the disk part-way through a page gets blocks for the start of
/// that page only. The page cache then reads the page back before copying the count over it;
/// when that read fails it takes nothing of the page, so the new blocks must not hold what
/// their earlier owner left there: a read of them finds zeroes (the holes they were). Before
/// the fix the first 2 KiB read back as the unlinked file's 0xee bytes. e2fsck -fn is clean.
#[test]
fn a_write_that_fills_the_disk_inside_a_page_leaves_no_stale_bytes() {
    let Some(mke2fs) = mke2fs_or_skip("write_stale") else {
        return;
    };
    let dir = scratch("write_stale");
    let img = dir.join("img");
    mkfs(&mke2fs, &img, 1024, 2 * 1024, None, &[]);
    let mut fs = mount(std::fs::read(&img).unwrap());
    let root = fs.root();
    // A file of 8 KiB of holes, made before the disk fills.
    let f = fs.create(root, b"holes", 0o644, 0, 0).unwrap();
    fs.truncate(f, 8192).unwrap();
    // The last two free blocks get an earlier owner's bytes, then are free again.
    leave_free(&mut fs, root, 2);
    let junk = fs.create(root, b"junk", 0o644, 0, 0).unwrap();
    assert_eq!(fs.write_begin(junk, 0, 2048), Ok(2048));
    fs.write(junk, 0, &[0xee; 2048]).unwrap();
    assert_eq!(fs.statfs().f_bfree, 0);
    fs.unlink(root, b"junk").unwrap();
    assert_eq!(fs.statfs().f_bfree, 2);
    // A page-sized write at 0: two blocks, then ENOSPC; the count ends inside the page.
    assert_eq!(fs.write_begin(f, 0, 4096), Ok(2048));
    assert_eq!(fs.statfs().f_bfree, 0);
    // What a fill of page 0 (or a reader after the cache dropped it) gets from the disk.
    let mut page = vec![0x55u8; 4096];
    assert_eq!(fs.read(f, 0, &mut page), Ok(4096));
    assert!(
        page.iter().all(|&b| b == 0),
        "the new blocks read as the holes they were, not the unlinked file's bytes (first \
         non-zero at {:?})",
        page.iter().position(|&b| b != 0)
    );
    let big = resolve(&mut fs, "/big").unwrap();
    let bsize = fs.stat(big).unwrap().size;
    fs.write(big, 0, &vec![0u8; bsize as usize]).unwrap();
    unmount_to(fs, &img);
    let (clean, out) = e2fsck(&img);
    assert!(clean, "e2fsck -fn after the failed write:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
