//! A regression test for a user-triggerable kernel panic (docs/file-memory.md, "The page
//! lock"): `MADV_POPULATE_READ` and `mlock` faulted file pages in with the address space
//! locked, and waited there (yielding) for a page lock another thread's fill held; that
//! thread's `read(2)` into a buffer in the mapping then faulted in the kernel, found the
//! address space locked and panicked ("page fault at ... while its address space is locked").
//!
//! Over 64 pages of a file, the caches dropped each round: one thread populates the private,
//! writable mapping (`MADV_POPULATE_READ`, `mlock` then `munlock`, or a GUP read of it through
//! `/proc/self/mem` with the bytes checked) while the main thread
//! reads it, odd pages by touching them, even pages by `pread`ing the file's page into itself
//! (the kernel's copy faults). Then every byte is checked. Runs on the host too (dropping the
//! caches needs root; without it the pages are cached, said so).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, drop_caches};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 64;
const ROUNDS: usize = 3;
const MADV_POPULATE_READ: usize = 22;

fn byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(37) ^ (i / PAGE) as u8 ^ 0x3c
}

/// The mapping the populating thread works on, and its result (-1: running, 0: ok, else the
/// errno).
static MAP_AT: AtomicUsize = AtomicUsize::new(0);
static RESULT: AtomicI32 = AtomicI32::new(-1);

fn populate_thread(use_mlock: usize) -> i32 {
    let at = MAP_AT.load(Ordering::SeqCst);
    let len = PAGES * PAGE;
    let r = match use_mlock {
        1 => sys(149, &[at, len]).and_then(|_| sys(150, &[at, len])),
        // GUP's slow path: a read of the mapping through /proc/self/mem.
        2 => {
            let mut buf = alloc::vec![0u8; len];
            // Short reads (a chunk at a time) are read on.
            let r = open(c"/proc/self/mem", O_RDONLY).and_then(|mem| {
                let mut done = 0;
                let mut r = Ok(0);
                while done < len {
                    match pread(mem, &mut buf[done..], (at + done) as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                let _ = close(mem);
                r.map(|_| done)
            });
            match r {
                Ok(n) if n == len && buf.iter().enumerate().all(|(i, &b)| b == byte(i)) => Ok(0),
                Ok(_) => Err(Errno(5)),
                Err(e) => Err(e),
            }
        }
        _ => sys(28, &[at, len, MADV_POPULATE_READ]),
    };
    RESULT.store(r.map_or_else(|e| e.0 as i32, |_| 0), Ordering::SeqCst);
    0
}

/// One round: whether every byte of the mapping is the file's, and the populating call's
/// result.
fn round(fd: i32, use_mlock: usize) -> Result<i32, &'static str> {
    let _ = drop_caches();
    let len = PAGES * PAGE;
    let prot = (PROT_READ | PROT_WRITE) as usize;
    let at = sys(9, &[0, len, prot, MAP_PRIVATE as usize, fd as usize, 0]).map_err(|_| "mmap")?;
    MAP_AT.store(at, Ordering::SeqCst);
    RESULT.store(-1, Ordering::SeqCst);
    let thread = cowlab_userland::thread::spawn(populate_thread, use_mlock).map_err(|_| "spawn")?;
    let mut ok = true;
    for p in 0..PAGES {
        let page = at + p * PAGE;
        if p % 2 == 0 {
            // SAFETY: `page..page + PAGE` lies in the live, writable private mapping.
            let buf = unsafe { core::slice::from_raw_parts_mut(page as *mut u8, PAGE) };
            ok &= pread(fd, buf, (p * PAGE) as u64) == Ok(PAGE);
        } else {
            // SAFETY: as above, read only.
            ok &=
                unsafe { core::ptr::read_volatile((page + 7) as *const u8) } == byte(p * PAGE + 7);
        }
    }
    thread.join();
    for i in 0..len {
        // SAFETY: the mapping is still live.
        ok &= unsafe { core::ptr::read_volatile((at + i) as *const u8) } == byte(i);
    }
    let _ = sys(11, &[at, len]);
    if ok {
        Ok(RESULT.load(Ordering::SeqCst))
    } else {
        Err("wrong bytes")
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_pcfix_populate");
    let base = base_dir();
    let pid = cowlab_userland::sys::getpid();
    let name = format!("{base}/t_pcfix_populate.{pid}");
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
        println!("t_pcfix_populate: note: no drop_caches (not root): the pages stay cached");
    }
    for (what, use_mlock) in [
        ("MADV_POPULATE_READ", 0),
        ("mlock", 1),
        ("/proc/self/mem", 2),
    ] {
        for r in 0..ROUNDS {
            let got = round(fd, use_mlock);
            t.check_why(
                &format!("{what} round {r}: right bytes, the call succeeded"),
                got == Ok(0),
                format!("{got:?}"),
            );
        }
    }
    let _ = close(fd);
    t.check("unlink", unlink(path.c()).is_ok());
    t.finish()
}
