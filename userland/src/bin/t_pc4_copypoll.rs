//! A kernel-mode user copy that faults on a file page takes the fault's retry path, as a ring-3
//! fault does (issue 12, pcfix4; Linux's `do_user_addr_fault` lets the mmap lock go with
//! `FAULT_FLAG_ALLOW_RETRY` for kernel-mode faults on user addresses too): the page's read and
//! its `page_mkwrite` run asleep with the address space unlocked, never polling the filesystem
//! with it held (mmstat `file_polled` unchanged on cowlab).
//!
//! 1. `read(2)` from one file into a shared writable mapping of another whose pages are not
//!    cached (`drop_caches`): the copy's store faults on a page that needs both a read and
//!    `page_mkwrite`. The mapping's file then holds the bytes (`msync`, `pread`).
//! 2. `write(2)` from that mapping's other, uncached page: the copy's load faults on a page
//!    that needs a read.
//!
//! Everywhere (on the host: the data checks, in the directory given as the argument or the
//! working directory; `drop_caches` needs root there, and without it the pages are merely
//! cached).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches, mmstat};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MS_SYNC: usize = 4;

fn pattern(seed: u8) -> Vec<u8> {
    (0..PAGE)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

fn create(t: &mut Tester, name: &str, data: &[u8]) -> i32 {
    let fd = open_mode(P::new(name).c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("create {name}"), fd >= 0);
    if fd >= 0 {
        t.eq(
            &format!("write {name}"),
            pwrite(fd, data, 0),
            Ok(data.len()),
        );
        t.eq(&format!("fsync {name}"), sys(74, &[fd as usize]), Ok(0));
    }
    fd
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc4_copypoll");
    let cowlab = on_cowlab();
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let src_name = format!("{base}/t_pc4_copypoll.src.{pid}");
    let dst_name = format!("{base}/t_pc4_copypoll.dst.{pid}");
    let src = create(&mut t, &src_name, &pattern(0x3c));
    let mut dst_data = pattern(0x81);
    dst_data.extend_from_slice(&pattern(0x42));
    let dst = create(&mut t, &dst_name, &dst_data);
    if src < 0 || dst < 0 {
        return t.finish();
    }
    let p = sys(9, &[0, 2 * PAGE, 3, 1, dst as usize, 0]).unwrap_or(0);
    t.check("map the destination shared writable", p != 0);
    if p == 0 {
        return t.finish();
    }
    let dropped = drop_caches();
    t.check("drop_caches (cowlab)", dropped || !cowlab);
    let polled = mmstat("file_polled");
    // SAFETY: `[p, p + PAGE)` is the live shared writable mapping's first page.
    let first = unsafe { core::slice::from_raw_parts_mut(p as *mut u8, PAGE) };
    t.eq(
        "read(2) into the uncached mapping",
        pread(src, first, 0),
        Ok(PAGE),
    );
    // SAFETY: `[p + PAGE, p + 2 * PAGE)` is the mapping's second page, read only here.
    let second = unsafe { core::slice::from_raw_parts((p + PAGE) as *const u8, PAGE) };
    t.eq(
        "write(2) from the uncached mapping",
        pwrite(src, second, PAGE as u64),
        Ok(PAGE),
    );
    if cowlab {
        t.eq(
            "no fault polled the filesystem (file_polled)",
            mmstat("file_polled").zip(polled).map(|(a, b)| a - b),
            Some(0),
        );
    }
    t.eq("msync", sys(26, &[p, 2 * PAGE, MS_SYNC]), Ok(0));
    let _ = sys(11, &[p, 2 * PAGE]);
    let _ = drop_caches();
    let mut back = vec![0u8; 2 * PAGE];
    t.eq(
        "pread the destination",
        pread(dst, &mut back, 0),
        Ok(2 * PAGE),
    );
    t.check(
        "it holds the source's page",
        back[..PAGE] == pattern(0x3c)[..],
    );
    t.check("and its own second page", back[PAGE..] == pattern(0x42)[..]);
    t.eq("pread the source", pread(src, &mut back, 0), Ok(2 * PAGE));
    t.check(
        "the source got the mapping's second page",
        back[PAGE..] == pattern(0x42)[..] && back[..PAGE] == pattern(0x3c)[..],
    );
    let _ = close(src);
    let _ = close(dst);
    t.eq("unlink", unlink(P::new(&src_name).c()), Ok(0));
    t.eq("unlink", unlink(P::new(&dst_name).c()), Ok(0));
    t.finish()
}
