//! An `O_DIRECT` write that grows a file racing `ftruncate` shrinking it, on two threads
//! (docs/file-memory.md, "O_DIRECT on ext2 files"; the programs tier boots it with two CPUs).
//! The direct write grows the size with the disk's under the filesystem lock, and its update
//! of the cached pages stops at the size, so whatever the order:
//!
//! - the file's size as open descriptors see it (the page cache) is the inode's (`stat` after
//!   the last close, which reads the inode);
//! - no block lies past the size (`st_blocks` at most the blocks under it: the file stays
//!   below 12 blocks, so no indirect block counts);
//! - grown back by `ftruncate`, the file reads zeroes past the size it had: no written byte
//!   was left in the cache past the end.
//!
//! A page of the file stays cached and mapped throughout (a shared mapping the main thread
//! reads), so the direct write's update of cached pages runs each time. Everywhere (cowlab and
//! the host, in a directory on a disk filesystem that takes O_DIRECT). Arguments: the
//! directory, then `rounds=N` (default 16: a short boot in the CI tier).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::base_dir;
use cowlab_userland::test::Tester;
use cowlab_userland::thread;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const O_DIRECT: u32 = 0o40000;
/// The direct write: one page at page 1, so the file grows to two pages.
const AT: usize = PAGE;
/// Where the truncating thread cuts: inside page 1's first block.
const CUT: usize = PAGE + 100;

static FD: AtomicI32 = AtomicI32::new(-1);
static STOP: AtomicBool = AtomicBool::new(false);

fn truncator(_: usize) -> i32 {
    let fd = FD.load(Ordering::Relaxed);
    while !STOP.load(Ordering::Relaxed) {
        let _ = ftruncate(fd, CUT as i64);
        let _ = sys(24, &[]); // sched_yield
    }
    0
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_dirace");
    let base = base_dir();
    let rounds: usize = cowlab_userland::args::args()
        .filter_map(|a| {
            a.to_str()
                .ok()
                .and_then(|s| s.strip_prefix("rounds=")?.parse().ok())
        })
        .next()
        .unwrap_or(16);
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pc3_dirace.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    let _ = close(fd);
    // The direct write's buffer: page-aligned (an anonymous mapping), 0xab.
    let buf = sys(9, &[0, PAGE, 3, 0x22, usize::MAX, 0]).unwrap_or(0);
    t.check("a buffer", buf != 0);
    if buf == 0 {
        return t.finish();
    }
    // SAFETY: a fresh private anonymous mapping of one page.
    let data = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, PAGE) };
    data.fill(0xab);
    let mut bad_size = 0;
    let mut bad_blocks = 0;
    let mut bad_tail = 0;
    let mut writes = 0;
    for _ in 0..rounds {
        let fd = open(path.c(), O_RDWR).unwrap_or(-1);
        let dfd = open(path.c(), O_RDWR | O_DIRECT).unwrap_or(-1);
        if fd < 0 || dfd < 0 {
            t.check("open the file, and O_DIRECT", false);
            break;
        }
        let _ = ftruncate(fd, 0);
        t.eq(
            "page 0",
            pwrite(fd, &vec![0x11u8; PAGE], 0).ok(),
            Some(PAGE),
        );
        let _ = sys(74, &[fd as usize]);
        // Page 1 cached and mapped (a grown size, read through the mapping).
        let _ = ftruncate(fd, 2 * PAGE as i64);
        let map = sys(9, &[0, 2 * PAGE, 1, 1, fd as usize, 0]).unwrap_or(0);
        if map != 0 {
            // SAFETY: a live shared read mapping of the file's two pages.
            let _ = unsafe { core::ptr::read_volatile((map + PAGE) as *const u8) };
        }
        FD.store(fd, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        let Ok(th) = thread::spawn(truncator, 0) else {
            t.check("spawn the truncating thread", false);
            break;
        };
        for _ in 0..4 {
            if pwrite(dfd, data, AT as u64) == Ok(PAGE) {
                writes += 1;
            }
        }
        STOP.store(true, Ordering::Relaxed);
        th.join();
        if map != 0 {
            let _ = sys(11, &[map, 2 * PAGE]);
        }
        let size = fstat(fd).map(|s| s.st_size as usize).unwrap_or(0);
        // After the last close `stat` reads the inode (cowlab), not the cache.
        let _ = sys(74, &[fd as usize]);
        let _ = close(dfd);
        let _ = close(fd);
        let st = stat(path.c()).unwrap_or_default();
        if st.st_size as usize != size {
            bad_size += 1;
        }
        let bs = st.st_blksize.max(512) as usize;
        if st.st_blocks as usize * 512 > size.div_ceil(bs) * bs {
            bad_blocks += 1;
        }
        let fd = open(path.c(), O_RDWR).unwrap_or(-1);
        let _ = ftruncate(fd, 2 * PAGE as i64);
        let mut back = vec![0u8; 2 * PAGE];
        let n = pread(fd, &mut back, 0).unwrap_or(0);
        if n != 2 * PAGE || back[size.min(2 * PAGE)..].iter().any(|&b| b != 0) {
            bad_tail += 1;
        }
        let _ = close(fd);
    }
    t.check_why(
        "direct writes went through",
        writes > 0,
        format!("{writes}"),
    );
    t.eq("the cache's size is the inode's, every round", bad_size, 0);
    t.eq("no block past the size, every round", bad_blocks, 0);
    t.eq(
        "zeroes past the size once grown back, every round",
        bad_tail,
        0,
    );
    t.eq("unlink", unlink(path.c()), Ok(0));
    t.finish()
}
