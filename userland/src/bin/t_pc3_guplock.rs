//! System calls that take user pages (GUP) over a shared ext2 mapping fill its pages and run
//! write-notify's `page_mkwrite` as a page fault does (docs/file-memory.md, step 3): with the
//! address space unlocked, asleep on the filesystem, never polling it with the lock held.
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory): `vmsplice` of a shared mapping of a file whose pages are not cached moves the
//! file's bytes; an `O_DIRECT` read of another file into the mapping (GUP for writing on
//! clean, write-protected pages: write-notify) lands in the file. On cowlab also
//! (`/proc/cowlab/mmstat`): neither polled the filesystem (`file_polled` unchanged; before,
//! each uncached page and each `page_mkwrite` counted one), and the direct read dirtied the
//! pages through write-notify (`writenotify_faults` up by at least the 4 pages).
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
const PAGES: usize = 4;
const LEN: usize = PAGES * PAGE;
const O_DIRECT: u32 = 0o40000;

fn delta(name: &str, before: Option<u64>) -> Option<u64> {
    Some(mmstat(name)?.wrapping_sub(before?))
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed ^ (i / PAGE) as u8)
        .collect()
}

fn bytes(addr: usize) -> Vec<u8> {
    // SAFETY: `[addr, addr + LEN)` is a live readable mapping.
    unsafe { core::slice::from_raw_parts(addr as *const u8, LEN).to_vec() }
}

fn create(t: &mut Tester, name: &str, seed: u8) -> i32 {
    let path = P::new(name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("create {name}"), fd >= 0);
    if fd >= 0 {
        t.eq("write 4 pages", pwrite(fd, &pattern(seed), 0), Ok(LEN));
        t.eq("fsync", sys(74, &[fd as usize]), Ok(0));
    }
    fd
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_guplock");
    let cowlab = on_cowlab();
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let (a_name, b_name) = (
        format!("{base}/t_pc3_gl_a.{pid}"),
        format!("{base}/t_pc3_gl_b.{pid}"),
    );
    let a = create(&mut t, &a_name, 0x3c);
    let b = create(&mut t, &b_name, 0xa5);
    if a < 0 || b < 0 {
        return t.finish();
    }
    // Nothing of either file cached (cowlab, and a host where this runs as root).
    let dropped = drop_caches();
    t.check("drop_caches (cowlab)", dropped || !cowlab);
    let p = sys(9, &[0, LEN, 3, 1, a as usize, 0]).unwrap_or(0);
    t.check("map A shared writable", p != 0);
    if p == 0 {
        return t.finish();
    }
    // vmsplice: GUP (FOLL_GET) of pages not cached.
    let polled = mmstat("file_polled");
    let fills = mmstat("file_fills");
    let fds = pipe().unwrap_or([-1, -1]);
    let iov = [p, LEN];
    let moved = sys(278, &[fds[1] as usize, iov.as_ptr() as usize, 1, 0]);
    t.eq("vmsplice the mapping", moved, Ok(LEN));
    let mut got = vec![0u8; LEN];
    let mut have = 0;
    while have < LEN {
        match read(fds[0], &mut got[have..]) {
            Ok(n) if n > 0 => have += n,
            _ => break,
        }
    }
    t.check("the pipe holds A's bytes", got == pattern(0x3c));
    let _ = close(fds[0]);
    let _ = close(fds[1]);
    if cowlab {
        t.eq(
            "vmsplice filled the pages (file_fills)",
            delta("file_fills", fills),
            Some(PAGES as u64),
        );
        t.eq(
            "without polling the filesystem (file_polled)",
            delta("file_polled", polled),
            Some(0),
        );
    }
    // O_DIRECT read of B into the mapping: GUP for writing on clean, read-only shared file
    // pages is write-notify (page_mkwrite).
    t.check("the mapping reads A", bytes(p) == pattern(0x3c));
    let polled = mmstat("file_polled");
    let notified = mmstat("writenotify_faults");
    let direct = open(P::new(&b_name).c(), O_RDONLY | O_DIRECT).unwrap_or(-1);
    t.check("open B O_DIRECT", direct >= 0);
    // SAFETY: `[p, p + LEN)` is a live shared writable mapping.
    let buf = unsafe { core::slice::from_raw_parts_mut(p as *mut u8, LEN) };
    t.eq(
        "O_DIRECT read of B into the mapping",
        pread(direct, buf, 0),
        Ok(LEN),
    );
    let _ = close(direct);
    if cowlab {
        t.eq(
            "page_mkwrite without polling the filesystem (file_polled)",
            delta("file_polled", polled),
            Some(0),
        );
        let n = delta("writenotify_faults", notified).unwrap_or(0);
        t.check_why(
            "the pages were dirtied through write-notify",
            n >= PAGES as u64,
            format!("{n} write-notify faults"),
        );
    }
    t.check("the mapping holds B's bytes", bytes(p) == pattern(0xa5));
    t.eq("fsync A", sys(74, &[a as usize]), Ok(0));
    let _ = sys(11, &[p, LEN]);
    let _ = drop_caches();
    let mut back = vec![0u8; LEN];
    t.eq("read A back", pread(a, &mut back, 0), Ok(LEN));
    t.check("A's file holds B's bytes", back == pattern(0xa5));
    let _ = close(a);
    let _ = close(b);
    t.eq("unlink A", unlink(P::new(&a_name).c()), Ok(0));
    t.eq("unlink B", unlink(P::new(&b_name).c()), Ok(0));
    t.finish()
}
