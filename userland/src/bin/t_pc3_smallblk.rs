//! The page cache over blocks smaller than a page (docs/file-memory.md; the programs tier boots
//! it a second time on the 1 KiB-block variant of the root image, `root_bs=1024`, where a page
//! spans four blocks). The block size is the filesystem's (`fstatfs`), so the same checks hold
//! on the default 4 KiB image and on the host:
//!
//! 1. Writeback of a page whose blocks are not contiguous on the disk (block 0 of a file, then
//!    a block of another file, then the rest of the page): a store through a shared mapping,
//!    `msync(MS_SYNC)`, the caches dropped, the bytes read back. On cowlab with small blocks
//!    the page goes to the disk as two requests (mmstat `writeback_requests`), so the split
//!    was taken.
//! 2. `page_mkwrite` allocating only the blocks of the page below the size: a store into the
//!    last page of a file of `PAGE + 1000` bytes gets `ceil(1000 / bs)` blocks (`st_blocks`).
//! 3. Holes inside a page: blocks 0 and 3 written, a store into block 1 through a mapping
//!    gets the blocks of its page below the size, and the others read back as zeroes.
//! 4. Truncation inside a page: the blocks past the new size are freed (`st_blocks`), and a
//!    growth back shows zeroes past the cut, in the mapping and through `read`.
//!
//! Arguments: the directory (default the working directory), then the block size the boot
//! must have (the `root_bs=1024` boot passes 1024, so it cannot pass on a 4 KiB image).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches, mmstat};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MS_SYNC: usize = 4;

fn create(t: &mut Tester, name: &str) -> i32 {
    let fd = open_mode(P::new(name).c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("create {name}"), fd >= 0);
    fd
}

fn map(len: usize, fd: i32) -> usize {
    sys(9, &[0, len, 3, 1, fd as usize, 0]).unwrap_or(0)
}

fn peek(addr: usize) -> u8 {
    // SAFETY: `addr` lies in a live readable mapping of a test file.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: `addr` lies in a live shared writable mapping of a test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn fsync(fd: i32) -> Result<usize, cowlab_userland::sys::Errno> {
    sys(74, &[fd as usize])
}

fn sectors(fd: i32) -> i64 {
    fstat(fd).map(|s| s.st_blocks).unwrap_or(-1)
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(41) ^ seed | 1)
        .collect()
}

fn read_all(fd: i32, len: usize) -> Vec<u8> {
    let mut back = vec![0u8; len];
    let n = pread(fd, &mut back, 0).unwrap_or(0);
    back.truncate(n);
    back
}

fn noncontiguous(t: &mut Tester, base: &str, bs: usize, cowlab: bool) -> Vec<String> {
    let (a_name, b_name) = (format!("{base}/t_pc3_sb_a"), format!("{base}/t_pc3_sb_b"));
    let a = create(t, &a_name);
    let b = create(t, &b_name);
    if a < 0 || b < 0 {
        return vec![a_name, b_name];
    }
    // Block 0 of A, then a block of B (the next free one), then the rest of A's page: its
    // blocks are not contiguous when a page holds several.
    t.eq("A: block 0", pwrite(a, &pattern(1, bs), 0), Ok(bs));
    t.eq("fsync A", fsync(a), Ok(0));
    t.eq("B: one block", pwrite(b, &pattern(2, bs), 0), Ok(bs));
    t.eq("fsync B", fsync(b), Ok(0));
    if bs < PAGE {
        t.eq(
            "A: the rest of page 0",
            pwrite(a, &pattern(3, PAGE - bs), bs as u64),
            Ok(PAGE - bs),
        );
    }
    t.eq("fsync A again", fsync(a), Ok(0));
    let p = map(PAGE, a);
    t.check("map A", p != 0);
    if p == 0 {
        return vec![a_name, b_name];
    }
    let want = pattern(4, PAGE);
    let requests = mmstat("writeback_requests");
    for (i, &v) in want.iter().enumerate() {
        poke(p + i, v);
    }
    t.eq("msync(MS_SYNC)", sys(26, &[p, PAGE, MS_SYNC]), Ok(0));
    if cowlab {
        let runs = if bs < PAGE { 2 } else { 1 };
        t.eq(
            "the page went to the disk as one request per run of blocks",
            Some(mmstat("writeback_requests").unwrap_or(0) - requests.unwrap_or(0)),
            Some(runs),
        );
    }
    let _ = sys(11, &[p, PAGE]);
    let _ = drop_caches();
    t.check("A reads back the stores", read_all(a, PAGE) == want);
    t.check("B is untouched", read_all(b, bs) == pattern(2, bs));
    let _ = close(a);
    let _ = close(b);
    vec![a_name, b_name]
}

fn partial_page(t: &mut Tester, base: &str, bs: usize) -> String {
    let name = format!("{base}/t_pc3_sb_c");
    let fd = create(t, &name);
    if fd < 0 {
        return name;
    }
    let size = PAGE + 1000;
    t.eq(
        "ftruncate to a page and 1000 bytes",
        ftruncate(fd, size as i64),
        Ok(0),
    );
    let p = map(2 * PAGE, fd);
    t.check("map it", p != 0);
    if p == 0 {
        return name;
    }
    poke(p + PAGE + 10, 0x77);
    t.eq("msync", sys(26, &[p, 2 * PAGE, MS_SYNC]), Ok(0));
    let tail = 1000usize.div_ceil(bs) * bs / 512;
    t.eq(
        "a store into the last page gets the blocks below the size",
        sectors(fd),
        tail as i64,
    );
    poke(p + 5, 0x55);
    t.eq("msync", sys(26, &[p, 2 * PAGE, MS_SYNC]), Ok(0));
    t.eq(
        "a store into page 0 gets its whole page",
        sectors(fd),
        (tail + PAGE / 512) as i64,
    );
    let _ = sys(11, &[p, 2 * PAGE]);
    let _ = drop_caches();
    let back = read_all(fd, 2 * PAGE);
    t.eq("the size", back.len(), size);
    t.check(
        "the stores, zeroes elsewhere",
        back.iter().enumerate().all(|(i, &v)| {
            v == match i {
                5 => 0x55,
                i if i == PAGE + 10 => 0x77,
                _ => 0,
            }
        }),
    );
    let _ = close(fd);
    name
}

fn holes(t: &mut Tester, base: &str, bs: usize) -> String {
    let name = format!("{base}/t_pc3_sb_d");
    let fd = create(t, &name);
    if fd < 0 {
        return name;
    }
    t.eq(
        "100 bytes in block 0",
        pwrite(fd, &pattern(5, 100), 0),
        Ok(100),
    );
    let at3 = 3 * bs;
    t.eq(
        "100 bytes in block 3",
        pwrite(fd, &pattern(6, 100), at3 as u64),
        Ok(100),
    );
    t.eq("fsync", fsync(fd), Ok(0));
    let size = at3 + 100;
    t.eq("two blocks", sectors(fd), (2 * bs / 512) as i64);
    let len = size.div_ceil(PAGE) * PAGE;
    let p = map(len, fd);
    t.check("map it", p != 0);
    if p == 0 {
        return name;
    }
    t.check(
        "the holes read zeroes",
        (100..at3).all(|i| peek(p + i) == 0),
    );
    let at = bs + 5;
    poke(p + at, 0x99);
    t.eq("msync", sys(26, &[p, len, MS_SYNC]), Ok(0));
    // The store's page gets its blocks below the size.
    let mut blocks: BTreeSet<usize> = [0, 3].into_iter().collect();
    let page = at / PAGE;
    let blocks_per_page = PAGE / bs;
    for blk in page * blocks_per_page..(page + 1) * blocks_per_page {
        if blk * bs < size {
            blocks.insert(blk);
        }
    }
    t.eq(
        "the store's page got its blocks",
        sectors(fd),
        (blocks.len() * bs / 512) as i64,
    );
    let _ = sys(11, &[p, len]);
    let _ = drop_caches();
    let back = read_all(fd, size + 10);
    t.eq("the size", back.len(), size);
    let (one, two) = (pattern(5, 100), pattern(6, 100));
    t.check(
        "the bytes, the store, zeroes in the holes",
        back.iter().enumerate().all(|(i, &v)| {
            v == if i < 100 {
                one[i]
            } else if i >= at3 {
                two[i - at3]
            } else if i == at {
                0x99
            } else {
                0
            }
        }),
    );
    let _ = close(fd);
    name
}

fn truncate_inside(t: &mut Tester, base: &str, bs: usize) -> String {
    let name = format!("{base}/t_pc3_sb_e");
    let fd = create(t, &name);
    if fd < 0 {
        return name;
    }
    let data = pattern(7, 3 * PAGE);
    t.eq("3 pages", pwrite(fd, &data, 0), Ok(3 * PAGE));
    t.eq("fsync", fsync(fd), Ok(0));
    let p = map(3 * PAGE, fd);
    t.check("map it", p != 0);
    if p == 0 {
        return name;
    }
    t.check(
        "the mapping reads the file",
        (0..3 * PAGE).all(|i| peek(p + i) == data[i]),
    );
    let cut = PAGE + 1500;
    t.eq("ftruncate inside page 1", ftruncate(fd, cut as i64), Ok(0));
    t.eq(
        "the blocks past the cut are freed",
        sectors(fd),
        ((PAGE + 1500usize.div_ceil(bs) * bs) / 512) as i64,
    );
    t.eq(
        "ftruncate back to 3 pages",
        ftruncate(fd, 3 * PAGE as i64),
        Ok(0),
    );
    t.check(
        "the mapping: the bytes below the cut, zeroes past it",
        (0..3 * PAGE).all(|i| peek(p + i) == if i < cut { data[i] } else { 0 }),
    );
    let _ = sys(11, &[p, 3 * PAGE]);
    let _ = drop_caches();
    let back = read_all(fd, 3 * PAGE);
    t.check(
        "read: the same",
        back.len() == 3 * PAGE
            && back
                .iter()
                .enumerate()
                .all(|(i, &v)| v == if i < cut { data[i] } else { 0 }),
    );
    let _ = close(fd);
    name
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_smallblk");
    let cowlab = on_cowlab();
    let base = base_dir();
    let want_bs: Option<usize> = cowlab_userland::args::args()
        .nth(2)
        .and_then(|a| a.to_str().ok().and_then(|s| s.parse().ok()));
    let bs = fstatfs_of(&base);
    t.check_why(
        "the filesystem's block size",
        bs.is_some_and(|bs| bs.is_power_of_two() && bs <= PAGE && want_bs.is_none_or(|w| w == bs)),
        format!("{bs:?}, wanted {want_bs:?}"),
    );
    let Some(bs) = bs.filter(|&b| b.is_power_of_two() && b <= PAGE) else {
        return t.finish();
    };
    // The non-contiguous page first, on the fresh disk: its blocks then follow each other
    // except where the other file's block sits.
    let mut names = noncontiguous(&mut t, &base, bs, cowlab);
    names.push(partial_page(&mut t, &base, bs));
    names.push(holes(&mut t, &base, bs));
    names.push(truncate_inside(&mut t, &base, bs));
    for name in names {
        t.eq(&format!("unlink {name}"), unlink(P::new(&name).c()), Ok(0));
    }
    t.finish()
}

fn fstatfs_of(dir: &str) -> Option<usize> {
    let fd = open(P::new(dir).c(), O_RDONLY).ok()?;
    let st = fstatfs(fd).ok();
    let _ = close(fd);
    Some(st?.f_bsize as usize)
}
