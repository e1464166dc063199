//! `mlockall(MCL_FUTURE)` (issue 17; it was `EINVAL`): mappings made afterwards are locked
//! and populated at once (`MCL_ONFAULT`: locked, populated as they fault), a fork child does
//! not inherit it, `munlockall` ends it; with `RLIMIT_MEMLOCK` too small a new mapping is
//! `EAGAIN`, `brk` keeps its break, and growing a locked mapping with `mremap` is `EAGAIN`
//! (Linux `mlock_future_ok`); a growth within the limit is populated. Runs on the host Linux
//! too. The limit checks run after `setuid(65534)`: root's `CAP_IPC_LOCK` bypasses the limit on
//! both systems (`kernel/src/proc/rlimit.rs`).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EAGAIN: Errno = Errno(11);
const MCL_FUTURE: usize = 2;
const MCL_ONFAULT: usize = 4;
const MLOCKALL: usize = 151;
const MUNLOCKALL: usize = 152;
const SETUID: usize = 105;
const RLIMIT_MEMLOCK: u32 = 8;
const PAGE: usize = 4096;
const MREMAP_MAYMOVE: u32 = 1;

fn mlockall(flags: usize) -> Result<usize, Errno> {
    // SAFETY: mlockall takes an integer.
    unsafe { raw(MLOCKALL, [flags, 0, 0, 0, 0, 0]) }
}

fn munlockall() {
    // SAFETY: no arguments.
    let _ = unsafe { raw(MUNLOCKALL, [0; 6]) };
}

/// How many of the `pages` pages at `at` are present (bit 63 of `/proc/self/pagemap`).
fn resident(at: usize, pages: usize) -> usize {
    let Ok(fd) = open(c"/proc/self/pagemap", O_RDONLY) else {
        return usize::MAX;
    };
    let mut entries = [0u8; 8 * 64];
    let n = pages.min(64) * 8;
    let got = pread(fd, &mut entries[..n], (at / PAGE * 8) as u64);
    let _ = close(fd);
    if got != Ok(n) {
        return usize::MAX;
    }
    entries[..n].chunks(8).filter(|e| e[7] & 0x80 != 0).count()
}

fn anon(pages: usize) -> usize {
    mmap(
        0,
        pages * PAGE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    )
    .unwrap_or(0)
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob_mlock");
    // Each case in a child: the locks and limits die with it.
    let status = in_child(|| {
        if mlockall(MCL_FUTURE).is_err() {
            return 1;
        }
        let a = anon(16);
        if a == 0 || resident(a, 16) != 16 {
            return 2;
        }
        // A fork child does not inherit MCL_FUTURE.
        let child = in_child(|| {
            let c = anon(8);
            if c != 0 && resident(c, 8) == 0 {
                0
            } else {
                1
            }
        });
        if child != 0 {
            return 3;
        }
        munlockall();
        let b = anon(16);
        if b == 0 || resident(b, 16) != 0 {
            return 4;
        }
        if mlockall(MCL_FUTURE | MCL_ONFAULT).is_err() {
            return 5;
        }
        let c = anon(16);
        if c == 0 || resident(c, 16) != 0 {
            return 6;
        }
        0
    });
    t.check_why(
        "mlockall(MCL_FUTURE): new mappings populated, not in a fork child, not after munlockall; MCL_ONFAULT not populated",
        status == 0,
        status >> 8,
    );
    let status = in_child(|| {
        if mlockall(MCL_FUTURE).is_err() {
            return 1;
        }
        let a = anon(4);
        let Ok(grown) = mremap(a, 4 * PAGE, 12 * PAGE, MREMAP_MAYMOVE) else {
            return 2;
        };
        if resident(grown, 12) != 12 {
            return 3;
        }
        0
    });
    t.check_why(
        "mremap growing a locked mapping populates the new part",
        status == 0,
        status >> 8,
    );
    // Root has CAP_IPC_LOCK, which bypasses the limit: the child drops it with setuid to an
    // unprivileged uid.
    let status = in_child(|| {
        // SAFETY: setuid takes an integer. (EPERM when not run as root: nothing to drop.)
        let _ = unsafe { raw(SETUID, [65534, 0, 0, 0, 0, 0]) };
        let a = anon(4);
        if set_soft(RLIMIT_MEMLOCK, 64 * 1024).is_err() || mlockall(MCL_FUTURE).is_err() {
            return 1;
        }
        // 16 pages are the limit; none locked yet (the 4 above predate MCL_FUTURE).
        let err = mmap(
            0,
            32 * PAGE,
            PROT_READ | PROT_WRITE,
            MAP_PRIVATE | MAP_ANONYMOUS,
        );
        if err != Err(EAGAIN) {
            return 2;
        }
        let b = anon(8);
        if b == 0 {
            return 3;
        }
        let cur = brk(0);
        if brk(cur + 64 * PAGE) != cur {
            return 4;
        }
        if mremap(b, 8 * PAGE, 32 * PAGE, MREMAP_MAYMOVE) != Err(EAGAIN) {
            return 5;
        }
        let _ = a;
        0
    });
    t.check_why(
        "past RLIMIT_MEMLOCK after MCL_FUTURE: mmap and mremap growth EAGAIN, brk refused",
        status == 0,
        status >> 8,
    );
    t.finish()
}
