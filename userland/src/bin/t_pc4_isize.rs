//! A dirty page asks `page_mkwrite` for the blocks its store reaches (issue 12, pcfix4; Linux
//! `block_page_mkwrite` maps every buffer of the page, and `pagecache_isize_extended`
//! write-protects a partial last page the size grows past). With blocks smaller than a page a
//! dirty page may lack blocks under part of its bytes; before the fix a store there took no
//! `page_mkwrite` (a writable PTE, or the dirty page's shortcut in the fault), so the block
//! came only at writeback, where a full disk lost the store silently instead of `SIGBUS` at
//! it. The block count (`st_blocks`) right after the store, before any writeback, says whether
//! the store's page got its blocks then:
//!
//! 1. Growth: a file of 100 bytes written, mapped shared, stored to (dirty, writable), grown
//!    to a page by `ftruncate`; a store at byte 3000 gets the page's blocks at once.
//! 2. Dirty through `write(2)`: a page of holes, 10 bytes written at its start (one block),
//!    then a store at byte 3000 through a shared mapping gets the page's other blocks.
//!
//! Both end with `msync`, the caches dropped and the bytes read back. On cowlab the counts are
//! exact (a page's blocks below the size); on the host at least that (a filesystem may
//! preallocate). The programs tier runs it on the default image and again on the 1 KiB-block
//! one (`root_bs=1024`, second argument 1024), where the fix shows.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MS_SYNC: usize = 4;

fn map(len: usize, fd: i32) -> usize {
    sys(9, &[0, len, 3, 1, fd as usize, 0]).unwrap_or(0)
}

fn poke(addr: usize, v: u8) {
    // SAFETY: `addr` lies in a live shared writable mapping of a test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn sectors(fd: i32) -> i64 {
    fstat(fd).map(|s| s.st_blocks).unwrap_or(-1)
}

fn read_all(fd: i32, len: usize) -> Vec<u8> {
    let mut back = vec![0u8; len];
    let n = pread(fd, &mut back, 0).unwrap_or(0);
    back.truncate(n);
    back
}

/// `st_blocks` of a page whose every block is allocated: exact on cowlab, at least on the host.
fn whole_page(t: &mut Tester, what: &str, got: i64, cowlab: bool) {
    let want = (PAGE / 512) as i64;
    t.check_why(
        what,
        if cowlab { got == want } else { got >= want },
        format!("{got} sectors, want {want}"),
    );
}

fn case(t: &mut Tester, base: &str, grow: bool, cowlab: bool) {
    let what = if grow { "growth" } else { "write(2)" };
    let name = format!("{base}/t_pc4_isize.{}", if grow { "g" } else { "w" });
    let fd = open_mode(P::new(&name).c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("{what}: create {name}"), fd >= 0);
    if fd < 0 {
        return;
    }
    let head: Vec<u8> = (0..100u8).map(|i| i | 0x80).collect();
    let p;
    if grow {
        t.eq(
            &format!("{what}: write 100 bytes"),
            pwrite(fd, &head, 0),
            Ok(100),
        );
        p = map(2 * PAGE, fd);
        t.check(&format!("{what}: map"), p != 0);
        if p == 0 {
            return;
        }
        // Dirty and mapped writable, then the size grows past the page's old end.
        poke(p + 10, 0x11);
        t.eq(
            &format!("{what}: ftruncate to a page"),
            ftruncate(fd, PAGE as i64),
            Ok(0),
        );
    } else {
        t.eq(
            &format!("{what}: ftruncate to a page of holes"),
            ftruncate(fd, PAGE as i64),
            Ok(0),
        );
        t.eq(
            &format!("{what}: write 100 bytes"),
            pwrite(fd, &head, 0),
            Ok(100),
        );
        p = map(2 * PAGE, fd);
        t.check(&format!("{what}: map"), p != 0);
        if p == 0 {
            return;
        }
        poke(p + 10, 0x11);
    }
    poke(p + 3000, 0x22);
    whole_page(
        t,
        &format!("{what}: the store at byte 3000 got the page's blocks at once"),
        sectors(fd),
        cowlab,
    );
    t.eq(
        &format!("{what}: msync"),
        sys(26, &[p, 2 * PAGE, MS_SYNC]),
        Ok(0),
    );
    let _ = sys(11, &[p, 2 * PAGE]);
    let _ = drop_caches();
    let back = read_all(fd, 2 * PAGE);
    t.eq(&format!("{what}: the size"), back.len(), PAGE);
    t.check(
        &format!("{what}: the bytes read back"),
        back.iter().enumerate().all(|(i, &v)| {
            v == match i {
                10 => 0x11,
                3000 => 0x22,
                i if i < 100 => head[i],
                _ => 0,
            }
        }),
    );
    let _ = close(fd);
    t.eq(&format!("{what}: unlink"), unlink(P::new(&name).c()), Ok(0));
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc4_isize");
    let cowlab = on_cowlab();
    let base = base_dir();
    let want_bs: Option<usize> = cowlab_userland::args::args()
        .nth(2)
        .and_then(|a| a.to_str().ok().and_then(|s| s.parse().ok()));
    let bs = open(P::new(&base).c(), O_RDONLY).ok().and_then(|fd| {
        let st = fstatfs(fd).ok();
        let _ = close(fd);
        Some(st?.f_bsize as usize)
    });
    t.check_why(
        "the filesystem's block size",
        bs.is_some() && want_bs.is_none_or(|w| bs == Some(w)),
        format!("{bs:?}, wanted {want_bs:?}"),
    );
    case(&mut t, &base, true, cowlab);
    case(&mut t, &base, false, cowlab);
    t.finish()
}
