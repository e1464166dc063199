//! A store through a shared file mapping into a hole of a full filesystem is `SIGBUS`
//! (`BUS_ADRERR`) at the store, as Linux's `block_page_mkwrite` makes it: cowlab allocates a
//! page's blocks when the page is first dirtied (`page_mkwrite`), so a full disk never turns
//! into a page lost at writeback (docs/file-memory.md).
//!
//! In `<dir>/t_pc2_enospc.PID` (`<dir>` the first argument, else the working directory): a
//! sparse file of 8 pages is mapped `MAP_SHARED`; a store to page 0 gets its block at once;
//! the disk is filled; a store to the allocated page 0 still works, a store to the hole at page
//! 3 kills the storing child with `SIGBUS`/`BUS_ADRERR` and allocates nothing; once space is
//! freed the same store works and reaches the file.
//!
//! QEMU-only (`xtask/src/usertest.rs`): it fills the filesystem it runs on, which on a host is
//! a real disk shared with everything else.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::base_dir;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PAGES: usize = 8;
const ENOSPC: i32 = 28;
const SIGBUS: usize = 7;
const BUS_ADRERR: i32 = 2;
const SA_SIGINFO: u64 = 4;
const SA_RESTORER: u64 = 0x0400_0000;
const MS_SYNC: usize = 4;

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

/// The child's `SIGBUS` handler: exits with 100 + `si_code`, so the parent sees both the
/// signal (the handler ran) and its code.
extern "C" fn on_sigbus(_sig: i32, info: *const i32, _ctx: usize) {
    // SAFETY: the kernel passes a valid siginfo; `si_code` is its third int.
    let code = unsafe { info.add(2).read() };
    exit_now(100 + code)
}

/// A store of `byte` at `addr` in a child: 0 if it worked, 100 + `si_code` if it got
/// `SIGBUS`, else the raw wait status.
fn store_in_child(addr: usize, byte: u8) -> i32 {
    let status = in_child(|| {
        // handler, flags, restorer, mask. The handler exits, so the restorer never runs; x86-64
        // Linux wants one anyway.
        let act = [
            on_sigbus as *const () as usize as u64,
            SA_SIGINFO | SA_RESTORER,
            on_sigbus as *const () as usize as u64,
            0,
        ];
        if sys(13, &[SIGBUS, act.as_ptr() as usize, 0, 8]).is_err() {
            return 99;
        }
        // SAFETY: `addr` lies in a live shared writable mapping (the store may fault).
        unsafe { core::ptr::write_volatile(addr as *mut u8, byte) };
        0
    });
    if wifexited(status) {
        wexitstatus(status)
    } else {
        status
    }
}

fn blocks(fd: i32) -> i64 {
    fstat(fd).map(|s| s.st_blocks).unwrap_or(-1)
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc2_enospc");
    let base = base_dir();
    let dir = format!("{base}/t_pc2_enospc.{}", cowlab_userland::sys::getpid());
    t.eq(
        "mkdir",
        errno_of(sys(83, &[P::new(&dir).c().as_ptr() as usize, 0o755])),
        0,
    );
    let hole_name = P::new(&format!("{dir}/hole"));
    let fill_name = P::new(&format!("{dir}/fill"));
    let fd = open_mode(hole_name.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq(
        "ftruncate to 8 pages (all hole)",
        ftruncate(fd, (PAGES * PAGE) as i64),
        Ok(0),
    );
    t.eq("no blocks yet", blocks(fd), 0);
    let map = sys(
        9,
        &[
            0,
            PAGES * PAGE,
            (PROT_READ | PROT_WRITE) as usize,
            MAP_SHARED as usize,
            fd as usize,
            0,
        ],
    )
    .unwrap_or(0);
    t.check("mmap MAP_SHARED PROT_READ|PROT_WRITE", map != 0);
    if map == 0 {
        return t.finish();
    }
    t.eq(
        "a store into the hole at page 0",
        store_in_child(map, b'a'),
        0,
    );
    t.check(
        "page_mkwrite allocated its block at the store (before any writeback)",
        blocks(fd) > 0,
    );
    t.eq(
        "msync(MS_SYNC) cleans page 0",
        errno_of(sys(26, &[map, PAGE, MS_SYNC])),
        0,
    );

    // Fill the disk.
    let fill = open_mode(fill_name.c(), O_CREAT | O_EXCL | O_WRONLY, 0o644).unwrap_or(-1);
    let mut last = Ok(0);
    for chunk in [1 << 20, PAGE, 1024] {
        let buf = vec![0x5au8; chunk];
        for _ in 0..100_000 {
            last = write(fill, &buf);
            if last != Ok(chunk) {
                break;
            }
        }
    }
    t.eq("the filler ends in ENOSPC", errno_of(last), ENOSPC);
    let before = blocks(fd);

    t.eq(
        "full disk: a store to the allocated page 0 works (write-notify fault)",
        store_in_child(map + 1, b'b'),
        0,
    );
    t.eq(
        "full disk: a store into the hole at page 3 is SIGBUS with BUS_ADRERR",
        store_in_child(map + 3 * PAGE, b'c'),
        100 + BUS_ADRERR,
    );
    t.eq("the refused store allocated nothing", blocks(fd), before);
    let mut b = [0u8; 2];
    t.eq(
        "page 3 reads zeroes",
        pread(fd, &mut b, (3 * PAGE) as u64),
        Ok(2),
    );
    t.eq("(its bytes)", b, [0, 0]);

    let _ = close(fill);
    t.eq("unlink the filler", errno_of(unlink(fill_name.c())), 0);
    t.eq(
        "with room again the store into page 3 works",
        store_in_child(map + 3 * PAGE, b'c'),
        0,
    );
    t.eq(
        "and reaches the file",
        pread(fd, &mut b, (3 * PAGE) as u64),
        Ok(2),
    );
    t.eq("(its bytes)", b, [b'c', 0]);
    t.eq("page 0 kept both stores", pread(fd, &mut b, 0), Ok(2));
    t.eq("(page 0's bytes)", b, *b"ab");
    t.eq("fsync", errno_of(sys(74, &[fd as usize])), 0);

    let _ = munmap(map, PAGES * PAGE);
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(hole_name.c())), 0);
    t.eq("rmdir", errno_of(rmdir(P::new(&dir).c())), 0);
    t.finish()
}
