//! Write-back caching of ext2 files (docs/file-memory.md, "Following one write(2)"): `write(2)`
//! puts the bytes in the page cache, dirty, and the disk gets them later; `fsync`, `O_SYNC` and
//! `msync` write them back in batches (one virtio-blk request per run of consecutive pages and
//! blocks); read faults map cached neighbours (fault-around).
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory): what `write(2)` stored is seen at once by `read(2)` and by a shared mapping, the
//! size follows (`fstat`, `SEEK_END`), `fsync` keeps the bytes through a cache drop (cowlab
//! drops its caches; the host reads back what it has), `O_SYNC`/`O_DSYNC` writes land, and
//! reading 16 cached pages of a fresh mapping costs fewer minor faults than pages. On cowlab
//! also, through `/proc/cowlab/mmstat`: a buffered write leaves its pages dirty and writes
//! nothing (`file_dirty` up, `writeback_pages` unchanged), `fsync` of 64 contiguous pages is at
//! most 2 requests, an `O_SYNC` write leaves no dirty page, `msync` of 64 dirtied pages is at
//! most 2 requests, and one read fault maps exactly 15 neighbours (`fault_around_pages`).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches, mmstat};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 64;
const O_DSYNC: u32 = 0o10000;
const O_SYNC: u32 = 0o4010000;
const SEEK_END: u32 = 2;
const MS_SYNC: usize = 4;

fn fsync(fd: i32) -> Result<usize, Errno> {
    sys(74, &[fd as usize])
}

fn map(len: usize, prot: u32, flags: u32, fd: i32) -> usize {
    sys(9, &[0, len, prot as usize, flags as usize, fd as usize, 0]).unwrap_or(0)
}

fn delta(name: &str, before: Option<u64>) -> Option<u64> {
    Some(mmstat(name)?.wrapping_sub(before?))
}

fn peek(addr: usize) -> u8 {
    // SAFETY: `addr` lies in a live readable mapping of the test file.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: `addr` lies in a live shared writable mapping of the test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed ^ (i / PAGE) as u8)
        .collect()
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_writeback");
    let cowlab = on_cowlab();
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pc3_wb.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }

    // write(2) into the cache: seen by read(2), the size, and a shared mapping at once.
    let data = pattern(1, PAGES * PAGE);
    let (dirty0, wb0) = (mmstat("file_dirty"), mmstat("writeback_pages"));
    t.eq("write 64 pages", write(fd, &data), Ok(data.len()));
    if cowlab {
        t.eq(
            "the pages are dirty in the cache",
            delta("file_dirty", dirty0),
            Some(PAGES as u64),
        );
        t.eq(
            "and nothing was written back (write-back, not write-through)",
            delta("writeback_pages", wb0),
            Some(0),
        );
    }
    let mut back = vec![0u8; data.len()];
    t.eq(
        "read(2) sees the bytes",
        pread(fd, &mut back, 0),
        Ok(back.len()),
    );
    t.check("the same bytes", back == data);
    t.eq(
        "fstat's size follows the write",
        fstat(fd).map(|s| s.st_size),
        Ok(data.len() as i64),
    );
    t.eq(
        "SEEK_END follows the write",
        lseek(fd, 0, SEEK_END),
        Ok(data.len()),
    );
    let sh = map(PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
    t.check("mmap MAP_SHARED", sh != 0);
    if sh != 0 {
        t.eq("the mapping sees page 0", peek(sh + 7), data[7]);
        t.eq(
            "the mapping sees the last page",
            peek(sh + PAGES * PAGE - 1),
            data[PAGES * PAGE - 1],
        );
        t.eq(
            "pwrite into page 3",
            pwrite(fd, b"W", (3 * PAGE + 9) as u64),
            Ok(1),
        );
        t.eq("the mapping sees the write", peek(sh + 3 * PAGE + 9), b'W');
        // Unmapped, so dropping the caches below leaves no page of the file cached.
        let _ = munmap(sh, PAGES * PAGE);
    }

    // fsync: the dirty pages go to the disk in batches and survive dropping the cache.
    let (req0, wb0) = (mmstat("writeback_requests"), mmstat("writeback_pages"));
    t.eq("fsync", fsync(fd), Ok(0));
    if cowlab {
        t.eq("fsync cleaned every page", mmstat("file_dirty"), dirty0);
        t.eq(
            "fsync wrote the 64 pages",
            delta("writeback_pages", wb0),
            Some(PAGES as u64),
        );
        let reqs = delta("writeback_requests", req0);
        t.check_why(
            "in at most 2 requests (contiguous pages and blocks batch)",
            reqs.is_some_and(|r| (1..=2).contains(&r)),
            format!("{reqs:?} requests"),
        );
        t.check("drop_caches", drop_caches());
    }
    let mut want = data.clone();
    want[3 * PAGE + 9] = b'W';
    back.fill(0);
    t.eq(
        "read back after fsync",
        pread(fd, &mut back, 0),
        Ok(back.len()),
    );
    t.check("the disk held every byte", back == want);

    // msync of 64 pages dirtied through the mapping: batched too.
    let sh = map(PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd);
    if sh != 0 {
        for i in 0..PAGES {
            poke(sh + i * PAGE + 1, 0xa0 ^ i as u8);
            want[i * PAGE + 1] = 0xa0 ^ i as u8;
        }
        let (req0, wb0) = (mmstat("writeback_requests"), mmstat("writeback_pages"));
        t.eq(
            "msync MS_SYNC",
            sys(26, &[sh, PAGES * PAGE, MS_SYNC]),
            Ok(0),
        );
        if cowlab {
            t.eq(
                "msync wrote the 64 pages",
                delta("writeback_pages", wb0),
                Some(PAGES as u64),
            );
            let reqs = delta("writeback_requests", req0);
            t.check_why(
                "in at most 2 requests",
                reqs.is_some_and(|r| (1..=2).contains(&r)),
                format!("{reqs:?} requests"),
            );
            t.check("drop_caches after msync", drop_caches());
        }
        back.fill(0);
        t.eq(
            "read back after msync",
            pread(fd, &mut back, 0),
            Ok(back.len()),
        );
        t.check("the disk holds the stores", back == want);
        let _ = munmap(sh, PAGES * PAGE);
    }

    // Fault-around: 16 cached pages of a fresh mapping, read from a 64 KiB-aligned address.
    back.fill(0);
    let _ = pread(fd, &mut back, 0);
    let ro = map(PAGES * PAGE, PROT_READ, MAP_PRIVATE, fd);
    t.check("mmap MAP_PRIVATE PROT_READ", ro != 0);
    if ro != 0 {
        let start = (ro + 0xffff) & !0xffff;
        let around0 = mmstat("fault_around_pages");
        let flt0 = minflt(0).unwrap_or(0);
        let mut sum = 0u32;
        for i in 0..16 {
            sum += u32::from(peek(start + i * PAGE));
        }
        let faults = minflt(0).unwrap_or(0) - flt0;
        let at = start - ro;
        let expect: u32 = (0..16).map(|i| u32::from(want[at + i * PAGE])).sum();
        t.eq("the 16 pages read the file", sum, expect);
        t.check_why(
            "16 cached pages cost fewer minor faults than pages (fault-around)",
            (1..16).contains(&faults),
            format!("{faults} faults"),
        );
        if cowlab {
            t.eq("exactly one fault", faults, 1);
            t.eq(
                "which mapped 15 neighbours",
                delta("fault_around_pages", around0),
                Some(15),
            );
        }
        let _ = munmap(ro, PAGES * PAGE);
    }
    let _ = close(fd);

    // O_SYNC and O_DSYNC: the write is on the disk when the call returns.
    for (flag, what) in [(O_SYNC, "O_SYNC"), (O_DSYNC, "O_DSYNC")] {
        let fd = open(path.c(), O_RDWR | flag).unwrap_or(-1);
        let (dirty0, wb0) = (mmstat("file_dirty"), mmstat("writeback_pages"));
        let chunk = pattern(7 + flag as u8, 4 * PAGE);
        t.eq(
            &format!("{what} write"),
            pwrite(fd, &chunk, (8 * PAGE) as u64),
            Ok(chunk.len()),
        );
        if cowlab {
            t.eq(
                &format!("{what}: no page left dirty"),
                mmstat("file_dirty"),
                dirty0,
            );
            t.eq(
                &format!("{what}: 4 pages written back"),
                delta("writeback_pages", wb0),
                Some(4),
            );
            t.check(&format!("drop_caches after {what}"), drop_caches());
        }
        let mut got = vec![0u8; chunk.len()];
        t.eq(
            &format!("{what} read back"),
            pread(fd, &mut got, (8 * PAGE) as u64),
            Ok(got.len()),
        );
        t.check(&format!("{what}: the bytes are there"), got == chunk);
        let _ = close(fd);
    }
    t.eq("unlink", unlink(path.c()).map(drop), Ok(()));
    if !cowlab {
        println!("t_pc3_writeback: the mmstat counters are cowlab's; checked the data paths only");
    }
    t.finish()
}
