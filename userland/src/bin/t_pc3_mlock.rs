//! Populating a file mapping (`mlock`, `mlockall(MCL_FUTURE)`, `MAP_POPULATE`; docs/file-memory.md,
//! "Following one store"): Linux's `populate_vma_page_range` faults pages in for writing only
//! when the mapping is private and writable. A shared writable file mapping is populated for
//! reading: every page resident, none dirty (smaps `Shared_Dirty` + `Private_Dirty` 0), and
//! a store dirties its page (on cowlab that page alone; Linux's ext4 dirties its large folio). A private writable one gets its own
//! copies (smaps `Anonymous` is the whole range) and the file is untouched.
//!
//! Everywhere (cowlab and the host, in the directory given as the argument or the working
//! directory: mlock needs RLIMIT_MEMLOCK room, which root has). On cowlab also: locking the
//! shared mapping leaves `file_dirty` in `/proc/cowlab/mmstat` unchanged.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, mmstat};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 8;
const LEN: usize = PAGES * PAGE;
const PROT_RW: usize = 3;
const MAP_SHARED: usize = 1;
const MAP_PRIVATE: usize = 2;
const MCL_FUTURE: usize = 2;
const MAP_POPULATE: usize = 0x8000;

fn map(flags: usize, fd: i32) -> usize {
    sys(9, &[0, LEN, PROT_RW, flags, fd as usize, 0]).unwrap_or(0)
}

fn mlock(addr: usize) -> Result<usize, Errno> {
    sys(149, &[addr, LEN])
}

fn unmap(addr: usize) {
    let _ = sys(11, &[addr, LEN]);
}

fn poke(addr: usize, v: u8) {
    // SAFETY: `addr` lies in a live writable mapping of the test file.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn bytes(addr: usize) -> Vec<u8> {
    // SAFETY: `[addr, addr + LEN)` is a live readable mapping.
    unsafe { core::slice::from_raw_parts(addr as *const u8, LEN).to_vec() }
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
            return None; // the next VMA's header: no such field
        }
        if &key[..key.len() - 1] == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

fn dirty_kb(start: usize) -> Option<u64> {
    Some(smaps_kb(start, "Shared_Dirty")? + smaps_kb(start, "Private_Dirty")?)
}

fn pattern() -> Vec<u8> {
    (0..LEN)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5c)
        .collect()
}

/// A shared writable mapping populated by `how`: resident, clean, the file's bytes; one store
/// dirties one page.
fn shared(t: &mut Tester, fd: i32, how: &str, cowlab: bool) {
    let dirty0 = mmstat("file_dirty");
    let extra = match how {
        "MAP_POPULATE" => MAP_POPULATE,
        _ => 0,
    };
    if how == "MCL_FUTURE" {
        t.eq("mlockall(MCL_FUTURE)", sys(151, &[MCL_FUTURE]), Ok(0));
    }
    let p = map(MAP_SHARED | extra, fd);
    if how == "MCL_FUTURE" {
        t.eq("munlockall", sys(152, &[]), Ok(0));
    }
    t.check(&format!("{how}: map shared writable"), p != 0);
    if p == 0 {
        return;
    }
    if how == "mlock" {
        t.eq("mlock", mlock(p), Ok(0));
    }
    t.eq(
        &format!("{how}: every page resident (Rss)"),
        smaps_kb(p, "Rss"),
        Some((LEN / 1024) as u64),
    );
    t.eq(
        &format!("{how}: none dirty (Shared_Dirty + Private_Dirty)"),
        dirty_kb(p),
        Some(0),
    );
    if cowlab {
        t.eq(
            &format!("{how}: file_dirty unchanged"),
            mmstat("file_dirty"),
            dirty0,
        );
    }
    t.check(&format!("{how}: the file's bytes"), bytes(p) == pattern());
    poke(p + 3 * PAGE + 5, 0xee);
    // One page on cowlab; Linux's ext4 caches files in large folios, dirtied whole.
    let after = dirty_kb(p).unwrap_or(0);
    t.check_why(
        &format!("{how}: a store dirties its page"),
        after >= (PAGE / 1024) as u64 && (!cowlab || after == (PAGE / 1024) as u64),
        format!("{after} kB dirty"),
    );
    poke(p + 3 * PAGE + 5, pattern()[3 * PAGE + 5]);
    unmap(p);
    t.eq(&format!("{how}: fsync"), sys(74, &[fd as usize]), Ok(0));
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc3_mlock");
    let cowlab = on_cowlab();
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pc3_mlock.{pid}");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return t.finish();
    }
    t.eq("write 8 pages", pwrite(fd, &pattern(), 0), Ok(LEN));
    t.eq("fsync", sys(74, &[fd as usize]), Ok(0));
    for how in ["mlock", "MCL_FUTURE", "MAP_POPULATE"] {
        shared(&mut t, fd, how, cowlab);
    }
    // A private writable mapping is populated for writing: its own copies.
    let p = map(MAP_PRIVATE, fd);
    t.check("map private writable", p != 0);
    if p != 0 {
        t.eq("mlock the private mapping", mlock(p), Ok(0));
        t.eq(
            "private: every page copied (Anonymous)",
            smaps_kb(p, "Anonymous"),
            Some((LEN / 1024) as u64),
        );
        poke(p, 0x11);
        let mut first = [0u8; 1];
        t.eq("pread", pread(fd, &mut first, 0), Ok(1));
        t.eq("the file is untouched", first[0], pattern()[0]);
        unmap(p);
    }
    let _ = close(fd);
    t.eq("unlink", unlink(path.c()), Ok(0));
    t.finish()
}
