//! The periodic flusher (docs/file-memory.md; Linux's writeback of old dirty data): a store
//! through a `MAP_SHARED` ext2 mapping reaches the disk by itself once it is older than
//! `/proc/sys/vm/dirty_expire_centisecs`, the flusher waking every
//! `dirty_writeback_centisecs` (0: never); writeback write-protects the page, so the next
//! store faults again (write-notify).
//!
//! On cowlab (lowered tunables: expire 1 s, interval 0.2 s): the page is dirty after the
//! store (`file_dirty` in /proc/cowlab/mmstat), clean no sooner than the expire time and within
//! a few seconds, the next store is a write-notify fault, a second round cleans it again, and
//! after `drop_caches` the file read back from the disk holds the last store. With the interval
//! at 0 a dirty page stays dirty; setting it again wakes the flusher. On the host the tunables
//! are only read (writing them would change the host's own writeback).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, mmstat};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const EINVAL: i32 = 22;
const EXPIRE: &CStr = c"/proc/sys/vm/dirty_expire_centisecs";
const INTERVAL: &CStr = c"/proc/sys/vm/dirty_writeback_centisecs";

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn read_number(path: &CStr) -> Option<i64> {
    let mut buf = [0u8; 64];
    let n = read_file(path, &mut buf)?;
    core::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

fn set(path: &CStr, text: &str) -> Result<usize, Errno> {
    let fd = open(path, O_WRONLY)?;
    let r = write(fd, text.as_bytes());
    let _ = close(fd);
    r
}

/// Milliseconds until no file page is dirty (`None` after `limit_ms`).
fn wait_clean(limit_ms: u64) -> Option<u64> {
    let start = monotonic_ns();
    loop {
        let elapsed = (monotonic_ns() - start) / 1_000_000;
        if mmstat("file_dirty") == Some(0) {
            return Some(elapsed);
        }
        if elapsed > limit_ms {
            return None;
        }
        let _ = sleep_ms(20);
    }
}

fn store(addr: usize, byte: u8) {
    // SAFETY: `addr` lies in a live shared writable mapping of the test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, byte) };
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc2_flush");
    let expire = read_number(EXPIRE);
    let interval = read_number(INTERVAL);
    t.check("dirty_expire_centisecs reads a number", expire.is_some());
    t.check(
        "dirty_writeback_centisecs reads a number",
        interval.is_some(),
    );
    if !on_cowlab() {
        println!("t_pc2_flush: the flusher checks lower the tunables: cowlab only");
        return t.finish();
    }
    t.eq("default expire: 30 s", expire, Some(3000));
    t.eq("default interval: 5 s", interval, Some(500));
    t.eq("a word is EINVAL", errno_of(set(EXPIRE, "soon")), EINVAL);
    t.eq(
        "a negative value is EINVAL",
        errno_of(set(EXPIRE, "-1")),
        EINVAL,
    );
    t.eq("set expire to 1 s", set(EXPIRE, "100\n"), Ok(4));
    t.eq("set the interval to 0.2 s", set(INTERVAL, "20"), Ok(2));
    t.eq("expire reads back", read_number(EXPIRE), Some(100));

    let base = base_dir();
    let name = format!("{base}/t_pc2_flush.{}", cowlab_userland::sys::getpid());
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("write a page of 'A'", write(fd, &[b'A'; PAGE]), Ok(PAGE));
    t.eq("fsync", errno_of(sys(74, &[fd as usize])), 0);
    let map = sys(
        9,
        &[
            0,
            PAGE,
            (PROT_READ | PROT_WRITE) as usize,
            MAP_SHARED as usize,
            fd as usize,
            0,
        ],
    )
    .unwrap_or(0);
    t.check("mmap MAP_SHARED", map != 0);
    if map == 0 {
        return t.finish();
    }

    store(map, b'B');
    t.eq("the store dirtied the page", mmstat("file_dirty"), Some(1));
    let clean = wait_clean(10_000);
    t.check_why(
        "the flusher cleaned it, no sooner than the expire time (1 s)",
        clean.is_some_and(|ms| ms >= 900),
        format!("after {clean:?} ms"),
    );
    let notified = mmstat("writenotify_faults");
    store(map + 1, b'C');
    t.eq(
        "writeback write-protected the page: the next store is a write-notify fault",
        mmstat("writenotify_faults"),
        notified.map(|n| n + 1),
    );
    t.check(
        "a second round cleans it again",
        wait_clean(10_000).is_some(),
    );

    // Interval 0: no periodic writeback; setting it again wakes the flusher.
    t.eq("interval 0", set(INTERVAL, "0"), Ok(1));
    store(map + 2, b'D');
    let _ = sleep_ms(1500);
    t.eq(
        "with the interval at 0 the page stays dirty past the expire time",
        mmstat("file_dirty"),
        Some(1),
    );
    t.eq("interval 0.2 s again", set(INTERVAL, "20"), Ok(2));
    t.check("the woken flusher cleans it", wait_clean(10_000).is_some());

    let _ = munmap(map, PAGE);
    let drop = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
    t.eq("drop_caches", write(drop, b"1"), Ok(1));
    let _ = close(drop);
    let mut back = [0u8; 4];
    t.eq("read back from the disk", pread(fd, &mut back, 0), Ok(4));
    t.eq(
        "the disk holds every store, no fsync or msync called",
        back,
        *b"BCDA",
    );
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
    t.eq("restore expire", set(EXPIRE, "3000"), Ok(4));
    t.eq("restore the interval", set(INTERVAL, "500"), Ok(3));
    t.finish()
}
