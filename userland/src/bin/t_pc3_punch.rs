//! A punched hole (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`) unmaps the whole
//! pages it covers from every mapping of the file, as Linux's `truncate_pagecache_range`
//! (`unmap_mapping_range` without `even_cows`): a shared mapping loses those pages (smaps `Rss`
//! drops) and sees zeroes when it touches them again; a private mapping loses its PTEs of
//! cache pages there but keeps its own COW copies (its data, not the file's). The pages at the
//! edges of the hole stay mapped, their punched bytes zeroed (on cowlab; Linux's ext4 holds
//! the file in a large folio and unmaps around the hole too: the counts are upper bounds
//! there).
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory: a filesystem that can punch holes, ext4 on the host).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::base_dir;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 6;
const LEN: usize = PAGES * PAGE;
const PUNCH: usize = 3; // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE

fn peek(addr: usize) -> u8 {
    // SAFETY: `addr` lies in a live readable mapping of the test file.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: `addr` lies in a live writable mapping of the test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
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

fn pattern() -> Vec<u8> {
    (0..LEN).map(|i| (i as u8).wrapping_mul(11) | 1).collect()
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_punch");
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pc3_punch.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    let data = pattern();
    t.eq("write 6 pages", pwrite(fd, &data, 0), Ok(LEN));
    t.eq("fsync", sys(74, &[fd as usize]), Ok(0));
    let s = sys(9, &[0, LEN, 3, 1, fd as usize, 0]).unwrap_or(0);
    let p = sys(9, &[0, LEN, 3, 2, fd as usize, 0]).unwrap_or(0);
    t.check("map shared and private", s != 0 && p != 0);
    if s == 0 || p == 0 {
        return t.finish();
    }
    for i in 0..PAGES {
        let _ = peek(s + i * PAGE);
        let _ = peek(p + i * PAGE);
    }
    // Page 2 of the private mapping becomes its own copy.
    poke(p + 2 * PAGE + 7, 0xcc);
    let kb = |pages: usize| Some((pages * PAGE / 1024) as u64);
    t.eq("shared: 6 pages resident", smaps_kb(s, "Rss"), kb(6));
    t.eq("private: 6 pages resident", smaps_kb(p, "Rss"), kb(6));
    t.eq(
        "private: 1 of them its own",
        smaps_kb(p, "Anonymous"),
        kb(1),
    );
    // Punch [PAGE + 100, 4 * PAGE + 50): pages 2 and 3 whole, 1 and 4 in part.
    let (from, to) = (PAGE + 100, 4 * PAGE + 50);
    let r = sys(285, &[fd as usize, PUNCH, from, to - from]);
    t.eq("punch a hole", r, Ok(0));
    // cowlab unmaps exactly the whole pages; Linux's ext4 caches the file in a large folio,
    // which the punch splits or drops, unmapping the pages around the hole too.
    let at_most = |got: Option<u64>, pages: usize| match got {
        Some(kb) => {
            kb <= (pages * PAGE / 1024) as u64
                && (!on_cowlab() || kb == (pages * PAGE / 1024) as u64)
        }
        None => false,
    };
    let rss = smaps_kb(s, "Rss");
    t.check_why(
        "shared: the two whole pages unmapped",
        at_most(rss, 4),
        format!("Rss {rss:?} kB"),
    );
    let rss = smaps_kb(p, "Rss");
    t.check_why(
        "private: the cache page unmapped, its own copy kept",
        at_most(rss, 5),
        format!("Rss {rss:?} kB"),
    );
    t.eq("private: its copy", smaps_kb(p, "Anonymous"), kb(1));
    let zero = |base: usize, a: usize, b: usize| (a..b).all(|i| peek(base + i) == 0);
    let same = |base: usize, a: usize, b: usize| (a..b).all(|i| peek(base + i) == data[i]);
    t.check("shared: the hole reads zeroes", zero(s, from, to));
    t.check(
        "shared: the bytes around it are the file's",
        same(s, 0, from) && same(s, to, LEN),
    );
    t.check(
        "private: its copy keeps its bytes",
        peek(p + 2 * PAGE + 7) == 0xcc && same(p, 2 * PAGE, 2 * PAGE + 7),
    );
    t.check(
        "private: the cache pages read zeroes in the hole",
        zero(p, from, 2 * PAGE) && zero(p, 3 * PAGE, to),
    );
    t.eq(
        "shared: the refaulted pages are resident again",
        smaps_kb(s, "Rss"),
        kb(6),
    );
    let mut back = vec![0u8; LEN];
    t.eq("pread", pread(fd, &mut back, 0), Ok(LEN));
    t.check(
        "the file reads zeroes in the hole, its bytes around it",
        back[from..to].iter().all(|&b| b == 0)
            && back[..from] == data[..from]
            && back[to..] == data[to..],
    );
    let _ = sys(11, &[s, LEN]);
    let _ = sys(11, &[p, LEN]);
    let _ = close(fd);
    t.eq("unlink", unlink(path.c()), Ok(0));
    t.finish()
}
