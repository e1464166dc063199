//! `MAP_LOCKED` (issue 12, pcfix4; it was accepted and ignored): the new mapping is locked as
//! `mlock` locks it (Linux `do_mmap`: `VM_LOCKED`, then `mm_populate`). It is resident at
//! once, its smaps entry shows the resident pages as `Locked:` and `/proc/self/status`
//! counts it in `VmLck`; a page the population cannot bring in (past the end of the file)
//! does not fail the mmap. With `RLIMIT_MEMLOCK` too small a `MAP_LOCKED` mapping is `EAGAIN`
//! (`mlock_future_ok`), with a zero limit `EPERM` (`can_do_mlock`); those run after
//! `setuid(65534)`, since root's `CAP_IPC_LOCK` bypasses the limit.
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::base_dir;
use cowlab_userland::rlimit::set_soft;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 8;
const LEN: usize = PAGES * PAGE;
const PROT_RW: usize = 3;
const MAP_SHARED_: usize = 1;
const MAP_PRIVATE_: usize = 2;
const MAP_ANON: usize = 0x20;
const MAP_LOCKED: usize = 0x2000;
const SETUID: usize = 105;
const RLIMIT_MEMLOCK: u32 = 8;

fn map(len: usize, flags: usize, fd: i32) -> Result<usize, Errno> {
    sys(9, &[0, len, PROT_RW, flags, fd as usize, 0])
}

fn unmap(addr: usize, len: usize) {
    let _ = sys(11, &[addr, len]);
}

/// One field (in kB) of the `/proc/self/smaps` entry of the VMA starting at `start`.
fn smaps_kb(start: usize, name: &str) -> Option<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let n = read_file(c"/proc/self/smaps", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let head = format!("{start:x}-");
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    for line in lines {
        let mut words = line.split_whitespace();
        let key = words.next()?;
        if !key.ends_with(':') {
            return None;
        }
        if &key[..key.len() - 1] == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// `VmLck` of `/proc/self/status`, in kB.
fn vmlck_kb() -> Option<u64> {
    let mut buf = vec![0u8; 8192];
    let n = read_file(c"/proc/self/status", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmLck:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn pattern() -> Vec<u8> {
    (0..LEN).map(|i| (i as u8).wrapping_mul(7) ^ 0xa5).collect()
}

/// A `MAP_LOCKED` mapping of `pages` pages made with `flags`: locked and resident.
fn locked(t: &mut Tester, what: &str, flags: usize, fd: i32, resident: usize) {
    let before = vmlck_kb().unwrap_or(u64::MAX);
    let p = match map(LEN, flags | MAP_LOCKED, fd) {
        Ok(p) => p,
        Err(e) => {
            t.check_why(&format!("{what}: mmap MAP_LOCKED"), false, e.0);
            return;
        }
    };
    let kb = (resident * PAGE / 1024) as u64;
    t.eq(
        &format!("{what}: resident at once (Rss)"),
        smaps_kb(p, "Rss"),
        Some(kb),
    );
    t.eq(
        &format!("{what}: smaps Locked"),
        smaps_kb(p, "Locked"),
        Some(kb),
    );
    t.eq(
        &format!("{what}: VmLck grew by the mapping"),
        vmlck_kb().map(|v| v.wrapping_sub(before)),
        Some((LEN / 1024) as u64),
    );
    if fd >= 0 {
        // SAFETY: the first page lies inside the file and the live mapping.
        let first = unsafe { core::slice::from_raw_parts(p as *const u8, PAGE) };
        t.check(
            &format!("{what}: the file's bytes"),
            first == &pattern()[..PAGE],
        );
    }
    unmap(p, LEN);
    t.eq(
        &format!("{what}: VmLck back after munmap"),
        vmlck_kb(),
        Some(before),
    );
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc4_maplocked");
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pc4_maplocked.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    t.eq("write 8 pages", pwrite(fd, &pattern(), 0), Ok(LEN));
    t.eq("fsync", sys(74, &[fd as usize]), Ok(0));
    locked(
        &mut t,
        "anonymous private",
        MAP_PRIVATE_ | MAP_ANON,
        -1,
        PAGES,
    );
    locked(&mut t, "file shared", MAP_SHARED_, fd, PAGES);
    locked(&mut t, "file private", MAP_PRIVATE_, fd, PAGES);
    // A file of one page mapped over eight: the population stops at the end of the file
    // (those pages are SIGBUS), which does not fail the mmap; all eight are locked.
    t.eq("truncate to one page", sys(77, &[fd as usize, PAGE]), Ok(0));
    locked(&mut t, "past the end of the file", MAP_SHARED_, fd, 1);
    let _ = close(fd);
    t.eq("unlink", unlink(path.c()), Ok(0));

    // The limit: in a child that dropped root's CAP_IPC_LOCK.
    let status = in_child(|| {
        // SAFETY: setuid takes an integer (EPERM when not root: nothing to drop).
        let _ = unsafe { raw(SETUID, [65534, 0, 0, 0, 0, 0]) };
        if set_soft(RLIMIT_MEMLOCK, 64 * 1024).is_err() {
            return 1;
        }
        let anon = MAP_PRIVATE_ | MAP_ANON | MAP_LOCKED;
        // 16 pages allowed: 32 are EAGAIN, 16 fit, then one more is EAGAIN.
        if map(32 * PAGE, anon, -1) != Err(Errno(11)) {
            return 2;
        }
        let Ok(a) = map(16 * PAGE, anon, -1) else {
            return 3;
        };
        if map(PAGE, anon, -1) != Err(Errno(11)) {
            return 4;
        }
        // Without MAP_LOCKED the limit does not apply.
        if map(PAGE, MAP_PRIVATE_ | MAP_ANON, -1).is_err() {
            return 5;
        }
        unmap(a, 16 * PAGE);
        if set_soft(RLIMIT_MEMLOCK, 0).is_err() {
            return 6;
        }
        if map(PAGE, anon, -1) != Err(Errno(1)) {
            return 7;
        }
        0
    });
    t.check_why(
        "RLIMIT_MEMLOCK: MAP_LOCKED past it is EAGAIN, within it succeeds, a zero limit is EPERM",
        status == 0,
        status >> 8,
    );
    t.finish()
}
