//! System-call copies faulting user pages in while another thread changes and faults the same
//! address space (issue 16, session 8).
//!
//! A user copy's page fault in kernel mode finds the address-space lock taken whenever another
//! CPU holds it: a sibling's `mmap`/`munmap` (write side) or a sibling's own fault from ring 3
//! (read side and page-table lock). Linux's `do_user_addr_fault` then waits for the lock; cowlab
//! used to panic ("kernel code touched user memory holding the lock"), which once ring-3 faults
//! run without the big kernel lock a program like this one reaches (on this branch's base every
//! ring-3 fault still takes the big lock, so the copier's fault never met a ring-3 holder and
//! this program passed before the fix too: it guards the change that lets faults go without
//! it). Now the copy waits, and every byte arrives.
//!
//! The stormer maps 32 fresh pages, writes each (ring-3 faults), and unmaps them, in a loop.
//! The copier maps 16 fresh pages, `pread`s a memfd's pattern into them (kernel-mode faults),
//! `pwrite`s them back out from another fresh mapping and checks both, for `ROUNDS` rounds
//! (argument 1, default 10).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::test::Tester;
use cowlab_userland::thread;

cowlab_userland::entry!(main);

const STORM_PAGES: usize = 32;
const COPY_PAGES: usize = 16;
const LEN: usize = COPY_PAGES * 4096;

static STOP: AtomicBool = AtomicBool::new(false);
static STORMS: AtomicUsize = AtomicUsize::new(0);
static STORM_ERRORS: AtomicUsize = AtomicUsize::new(0);

fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn stormer(_: usize) -> i32 {
    while !STOP.load(Ordering::Relaxed) {
        match mmap(
            0,
            STORM_PAGES * 4096,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        ) {
            Ok(base) => {
                for page in 0..STORM_PAGES {
                    // SAFETY: inside the fresh private mapping.
                    unsafe { ((base + page * 4096) as *mut u64).write_volatile(page as u64) };
                }
                if munmap(base, STORM_PAGES * 4096).is_err() {
                    STORM_ERRORS.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                STORM_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
        STORMS.fetch_add(1, Ordering::Relaxed);
    }
    0
}

/// One round: `pread` into fresh pages, `pwrite` from another fresh mapping; `Ok` when every
/// byte is the pattern's.
fn round(fd: i32) -> Result<(), &'static str> {
    let rw = PROT_READ | PROT_WRITE;
    let flags = MAP_PRIVATE | MAP_ANONYMOUS;
    let dst = mmap(0, LEN, rw, flags).map_err(|_| "mmap the destination")?;
    // SAFETY: the fresh mapping of LEN bytes, not otherwise referenced.
    let dst_bytes = unsafe { core::slice::from_raw_parts_mut(dst as *mut u8, LEN) };
    let read = pread(fd, dst_bytes, 0);
    let read_ok = read == Ok(LEN) && dst_bytes.iter().enumerate().all(|(i, b)| *b == byte(i));
    let src = mmap(0, LEN, rw, flags).map_err(|_| "mmap the source")?;
    // SAFETY: the fresh mapping of LEN bytes, read only by the kernel's copy (zero pages).
    let src_bytes = unsafe { core::slice::from_raw_parts(src as *const u8, LEN) };
    let wrote = pwrite(fd, src_bytes, LEN as u64);
    let _ = munmap(dst, LEN);
    let _ = munmap(src, LEN);
    if !read_ok {
        return Err("pread into fresh pages");
    }
    if wrote != Ok(LEN) {
        return Err("pwrite from fresh pages");
    }
    let mut back = [1u8; 64];
    if pread(fd, &mut back, LEN as u64) != Ok(64) || back.iter().any(|b| *b != 0) {
        return Err("the pwritten zero pages");
    }
    Ok(())
}

fn main() -> i32 {
    let mut t = Tester::new("t_mmlock2_copystorm");
    let rounds = cowlab_userland::args::args()
        .nth(1)
        .and_then(|a| a.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(10);
    let Ok(fd) = memfd_create(c"pattern", 0) else {
        t.check("memfd_create", false);
        return t.finish();
    };
    let mut pattern = [0u8; 4096];
    let mut ok = true;
    for page in 0..COPY_PAGES {
        for (i, b) in pattern.iter_mut().enumerate() {
            *b = byte(page * 4096 + i);
        }
        ok &= pwrite(fd, &pattern, (page * 4096) as u64) == Ok(4096);
    }
    t.check("write the pattern", ok);
    let Ok(th) = thread::spawn(stormer, 0) else {
        t.check("spawn the stormer", false);
        return t.finish();
    };
    let mut failed = None;
    for _ in 0..rounds {
        if let Err(what) = round(fd) {
            failed = Some(what);
            break;
        }
    }
    STOP.store(true, Ordering::Relaxed);
    th.join();
    t.check_why(
        "every round's copies through faulting pages carried every byte",
        failed.is_none(),
        format_args!("{failed:?} failed"),
    );
    t.check("the stormer ran", STORMS.load(Ordering::Relaxed) > 0);
    t.eq(
        "the stormer's mmap/munmap never failed",
        STORM_ERRORS.load(Ordering::Relaxed),
        0,
    );
    let _ = close(fd);
    t.finish()
}
