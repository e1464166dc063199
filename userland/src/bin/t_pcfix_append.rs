//! A regression test for a whole-kernel hang (docs/file-memory.md, "The page lock"): a buffered
//! append called the filesystem's `write_begin` holding the file cache's spin lock; when another
//! task held the filesystem across a fill of another page of the same file (asleep on the
//! disk), the appender yielded with the spin lock held, and the filler, back from the disk,
//! spun on that spin lock forever with interrupts off (on one CPU: `cargo xtask qemu --smp 1`).
//!
//! Child A reads (`pread` and faults through a private mapping) the file's first pages, the
//! caches dropped before each pass so every page is read from the disk; child B appends one
//! byte at a time meanwhile. Both are bounded in time; the parent reaps both within a loose
//! bound, then checks the bytes A saw and the file's size and tail. Runs on the host too (in
//! the directory given as the argument or the working directory; dropping the caches needs
//! root there, else A reads cached pages, said so).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches};
use cowlab_userland::println;
use cowlab_userland::test::{reap_within, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 64;
/// How long each child keeps at it (ms): the race needs only a few passes.
const RUN_MS: u64 = 400;
/// The parent's bound for each child (ms): loose, for a loaded CI machine.
const REAP_MS: u64 = 60_000;

fn byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(31) ^ (i / PAGE) as u8 ^ 0xa5
}

/// One pass of child A: the caches dropped, every page of the file's first `PAGES` read with
/// `pread` (even pages) or faulted through a private mapping (odd pages), every byte compared.
fn read_pass(path: &CStr) -> Result<(), &'static str> {
    let _ = drop_caches();
    let fd = open(path, O_RDONLY).map_err(|_| "open")?;
    let len = PAGES * PAGE;
    let prot = PROT_READ as usize;
    let at = sys(9, &[0, len, prot, MAP_PRIVATE as usize, fd as usize, 0]).map_err(|_| "mmap")?;
    let mut buf = alloc::vec![0u8; PAGE];
    let mut ok = true;
    for p in 0..PAGES {
        if p % 2 == 0 {
            ok &= pread(fd, &mut buf, (p * PAGE) as u64) == Ok(PAGE);
            ok &= buf
                .iter()
                .enumerate()
                .all(|(i, &b)| b == byte(p * PAGE + i));
        } else {
            for i in (0..PAGE).step_by(61) {
                // SAFETY: `at..at + len` is a live readable mapping of the file.
                let b = unsafe { core::ptr::read_volatile((at + p * PAGE + i) as *const u8) };
                ok &= b == byte(p * PAGE + i);
            }
        }
    }
    let _ = sys(11, &[at, len]);
    let _ = close(fd);
    if ok {
        Ok(())
    } else {
        Err("wrong bytes")
    }
}

fn reader(path: &CStr) -> i32 {
    let end = monotonic_ns() + RUN_MS * 1_000_000;
    let mut passes = 0;
    while passes == 0 || monotonic_ns() < end {
        if let Err(why) = read_pass(path) {
            println!("t_pcfix_append: reader: {why} in pass {passes}");
            return 1;
        }
        passes += 1;
    }
    0
}

/// Child B: appends one `x` at a time until the time is up; exits with how many (capped).
fn appender(path: &CStr) -> i32 {
    let Ok(fd) = open(path, O_WRONLY | O_APPEND) else {
        return 255;
    };
    let end = monotonic_ns() + RUN_MS * 1_000_000;
    let mut n = 0;
    while n < 200 && (n == 0 || monotonic_ns() < end) {
        if write(fd, b"x") != Ok(1) {
            return 255;
        }
        n += 1;
    }
    let _ = close(fd);
    n
}

fn main() -> i32 {
    let mut t = Tester::new("t_pcfix_append");
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pcfix_append.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    let data: Vec<u8> = (0..PAGES * PAGE).map(byte).collect();
    t.check("write it", write(fd, &data) == Ok(data.len()));
    t.check("fsync it", sys(74, &[fd as usize]).is_ok());
    if !drop_caches() {
        println!("t_pcfix_append: note: no drop_caches (not root): the reader hits the cache");
    }

    let a = fork().unwrap_or(-1);
    if a == 0 {
        exit_now(reader(path.c()));
    }
    let b = fork().unwrap_or(-1);
    if b == 0 {
        exit_now(appender(path.c()));
    }
    t.check("fork both", a > 0 && b > 0);
    let ra = if a > 0 {
        reap_within(a, REAP_MS)
    } else {
        Ok(None)
    };
    let rb = if b > 0 {
        reap_within(b, REAP_MS)
    } else {
        Ok(None)
    };
    let (sa, sb) = match (ra, rb) {
        (Ok(Some(sa)), Ok(Some(sb))) => (sa, sb),
        _ => {
            t.check("both children end (no hang)", false);
            return t.finish();
        }
    };
    t.check("both children end (no hang)", true);
    t.check(
        "the reader saw the file's bytes in every pass",
        wifexited(sa) && wexitstatus(sa) == 0,
    );
    let appended = if wifexited(sb) { wexitstatus(sb) } else { 255 };
    t.check_why(
        "the appender's 1-byte writes all succeeded",
        (1..255).contains(&appended),
        format!("status {sb:#x}"),
    );
    let appended = appended as usize;
    let size = fstat(fd).map(|s| s.st_size as usize).unwrap_or(0);
    t.check_why(
        "the size is the file's pages plus one byte per append",
        size == PAGES * PAGE + appended,
        format!("{size} for {appended} appends"),
    );
    let mut tail = alloc::vec![0u8; appended];
    let n = pread(fd, &mut tail, (PAGES * PAGE) as u64);
    t.check(
        "the appended bytes read back",
        n == Ok(appended) && tail.iter().all(|&b| b == b'x'),
    );
    let _ = close(fd);
    t.check("unlink", unlink(path.c()).is_ok());
    t.finish()
}
