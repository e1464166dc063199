//! Page-cache fills under the per-page lock (docs/file-memory.md, "The page lock"): two
//! processes fault the same file pages, none of them cached, at the same moment (on two CPUs
//! under `cargo xtask qemu --smp 2`); each sees the file's bytes, and each page is read from the
//! disk once: the first fault inserts the page locked and reads it with no lock held but the
//! page's, the other finds it and sleeps on its lock until it is filled.
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory): both processes read the right bytes through a private mapping and through
//! `read(2)`, rounds after a cache drop. On cowlab also, through `/proc/cowlab/mmstat`: the
//! disk reads (`file_fills`) are exactly the file's pages per round, and `page_lock_waits` is
//! reported. Dropping the cache needs root on the host (skipped, said so, without it).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches, mmstat};
use cowlab_userland::println;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 64;
const ROUNDS: usize = 3;

fn byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(29) ^ (i / PAGE) as u8 ^ 0x5a
}

/// Faults every page of the file through a fresh private mapping, in order, comparing every
/// byte; then reads it with `read(2)`. Whether all matched.
fn read_all(path: &CStr) -> bool {
    let Ok(fd) = open(path, O_RDONLY) else {
        return false;
    };
    let len = PAGES * PAGE;
    let Ok(at) = sys(
        9,
        &[
            0,
            len,
            PROT_READ as usize,
            MAP_PRIVATE as usize,
            fd as usize,
            0,
        ],
    ) else {
        let _ = close(fd);
        return false;
    };
    let mut ok = true;
    for i in 0..len {
        // SAFETY: `at..at + len` is a live readable mapping of the file.
        ok &= unsafe { core::ptr::read_volatile((at + i) as *const u8) } == byte(i);
    }
    let _ = sys(11, &[at, len]);
    let mut buf = alloc::vec![0u8; PAGE];
    for p in 0..PAGES {
        ok &= pread(fd, &mut buf, (p * PAGE) as u64) == Ok(PAGE);
        ok &= buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == byte(p * PAGE + i));
    }
    let _ = close(fd);
    ok
}

fn main() -> i32 {
    let mut t = Tester::new("t_pcache_fill");
    let cowlab = on_cowlab();
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pcache_fill.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    let data: Vec<u8> = (0..PAGES * PAGE).map(byte).collect();
    t.check("write it", write(fd, &data) == Ok(data.len()));
    t.check("fsync it", sys(74, &[fd as usize]).is_ok());
    let _ = close(fd);

    let mut dropped_every_round = true;
    let mut fills = 0u64;
    let waits_before = mmstat("page_lock_waits");
    for round in 0..ROUNDS {
        dropped_every_round &= drop_caches();
        let before = mmstat("file_fills");
        let (Ok([r0, w0]), Ok([r1, w1])) = (pipe(), pipe()) else {
            t.check("pipes", false);
            break;
        };
        let child = fork().unwrap_or(-1);
        if child == 0 {
            // Tell the parent this side is ready, wait for the go, then race it.
            let _ = write(w1, b"r");
            let mut go = [0u8; 1];
            let _ = read(r0, &mut go);
            exit_now(if read_all(path.c()) { 0 } else { 1 });
        }
        t.check("fork", child > 0);
        if child < 0 {
            break;
        }
        let mut ready = [0u8; 1];
        let _ = read(r1, &mut ready);
        let _ = write(w0, b"g");
        let mine = read_all(path.c());
        let status = waitpid(child, 0).map(|(_, s)| s).unwrap_or(-1);
        for fd in [r0, w0, r1, w1] {
            let _ = close(fd);
        }
        t.check(
            &format!("round {round}: the parent's faults and reads see the file's bytes"),
            mine,
        );
        t.check(
            &format!("round {round}: so do the child's, racing it"),
            wifexited(status) && wexitstatus(status) == 0,
        );
        if let (Some(b), Some(a)) = (before, mmstat("file_fills")) {
            fills += a - b;
        }
    }
    if !dropped_every_round && !cowlab {
        println!("t_pcache_fill: skip (the disk-read count needs /proc/sys/vm/drop_caches: root)");
    } else {
        t.check("drop the caches every round", dropped_every_round);
    }
    if cowlab {
        t.check_why(
            "each page read from the disk once per round, however many faulted it",
            fills == (ROUNDS * PAGES) as u64,
            format!("{fills} fills for {} pages", ROUNDS * PAGES),
        );
        if let (Some(b), Some(a)) = (waits_before, mmstat("page_lock_waits")) {
            println!(
                "t_pcache_fill: {} waits for a page lock in {ROUNDS} rounds of 2 processes",
                a - b
            );
        }
    }
    t.check("unlink", unlink(path.c()).is_ok());
    t.finish()
}
