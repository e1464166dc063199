//! The file's writer lock (issue 12, pcfix6; Linux `i_rwsem`, `inode_lock`): a second writer
//! of a file waits for a whole `ftruncate` or `fallocate` instead of running between its
//! filesystem half and its page-cache half. On cowlab the kernel's test window
//! (`/proc/cowlab/race_window`) makes the call sleep between its halves, once, and the second
//! writer starts only once it sleeps there; the window's `left` count, read when the writer
//! returns, says whether it waited. Without the lock each case ends wrong:
//!
//! 1. `ftruncate` to 100 bytes of a two-page file, with an `O_DIRECT` write of page 1 inside
//!    the window (race (b) of docs/file-memory.md): the write grew the disk's size and the
//!    cache's, then the truncation cut the cache's only (`st_size` 100, the inode 8192, the
//!    page's bytes unreadable).
//! 2. The same with a buffered write: the truncation dropped the written (dirty) page.
//! 3. A chunked `fallocate` of 1 MiB, with an `O_DIRECT` write that fails (`EFBIG`, at 2^62)
//!    inside the window after the first chunk (race (a)): the failed write gave back the
//!    blocks past the cache's size, which had not learnt of the chunk yet (a 256 KiB hole at
//!    the start of a preallocated file).
//!
//! 4. (cowlab) A writer asleep on the lock while `ftruncate` holds it is killed: it is reaped
//!    at once, not when the holder leaves (the wait is killable, Linux `inode_lock_killable`).
//!
//! On the host (no window) the second writer runs after the first call returns, and the same
//! end state is checked: the program runs there too, in a directory on a disk filesystem that
//! takes `O_DIRECT`. Argument: the directory.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use core::sync::atomic::{AtomicI32, AtomicI64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::base_dir;
use cowlab_userland::test::{kill_and_reap, ms_since, on_cowlab, Tester};
use cowlab_userland::thread;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
/// Where the truncations cut: inside page 0.
const CUT: usize = 100;
/// The preallocation: four of the kernel's 256 KiB chunks.
const FALLOC_LEN: usize = 1 << 20;
/// How long the armed window sleeps (the second writer needs a few milliseconds of it).
const WINDOW_MS: u64 = 1000;
const SEEK_HOLE: u32 = 4;
const EFBIG: i32 = 27;
const WINDOW: &core::ffi::CStr = c"/proc/cowlab/race_window";

/// The first call's descriptor and its result (the thread's).
static FD: AtomicI32 = AtomicI32::new(-1);
static RESULT: AtomicI64 = AtomicI64::new(i64::MIN);

fn truncator(_: usize) -> i32 {
    let r = ftruncate(FD.load(Ordering::Relaxed), CUT as i64);
    RESULT.store(
        r.map_or_else(|e| -i64::from(e.0), |n| n as i64),
        Ordering::Release,
    );
    0
}

fn preallocator(_: usize) -> i32 {
    let r = fallocate(FD.load(Ordering::Relaxed), 0, 0, FALLOC_LEN as i64);
    RESULT.store(
        r.map_or_else(|e| -i64::from(e.0), |n| n as i64),
        Ordering::Release,
    );
    0
}

/// The window's (entered, left) counts.
fn window_counts() -> Option<(u64, u64)> {
    let mut buf = [0u8; 256];
    let n = read_file(WINDOW, &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let count = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((count("entered ")?, count("left ")?))
}

fn arm(what: &str) -> bool {
    arm_ms(what, WINDOW_MS)
}

fn arm_ms(what: &str, ms: u64) -> bool {
    let Ok(fd) = open(WINDOW, O_WRONLY) else {
        return false;
    };
    let text = format!("{what} {ms}");
    let ok = write(fd, text.as_bytes()) == Ok(text.len());
    let _ = close(fd);
    ok
}

/// The first call runs on a thread; once it sleeps in the armed window (cowlab) or has
/// returned (the host), `second` runs here. Returns whether `second` returned while the
/// window was still open (it ran between the call's halves), or `None` if there was no
/// window, and the thread's result.
fn race(
    t: &mut Tester,
    what: &str,
    point: &str,
    fd: i32,
    first: fn(usize) -> i32,
    second: impl FnOnce(),
) -> (Option<bool>, i64) {
    FD.store(fd, Ordering::Relaxed);
    RESULT.store(i64::MIN, Ordering::Relaxed);
    let before = window_counts().filter(|_| arm(point));
    if on_cowlab() {
        t.check(&format!("{what}: arm the {point} window"), before.is_some());
    }
    let Ok(th) = thread::spawn(first, 0) else {
        t.check(&format!("{what}: spawn the thread"), false);
        return (None, i64::MIN);
    };
    let mut inside = None;
    match before {
        Some((entered, left)) => {
            let start = monotonic_ns();
            while window_counts().is_some_and(|c| c.0 == entered) && ms_since(start) < 20_000 {
                let _ = sys(24, &[]); // sched_yield
            }
            let entered_now = window_counts().is_some_and(|c| c.0 > entered);
            t.check(&format!("{what}: the call reached its window"), entered_now);
            second();
            inside = window_counts().map(|c| c.1 == left);
        }
        None => {
            th_wait(&th);
            second();
        }
    }
    th.join();
    let _ = window_counts().is_some() && disarm();
    (inside, RESULT.load(Ordering::Acquire))
}

fn th_wait(th: &thread::Thread) {
    while !th.finished() {
        let _ = sys(24, &[]);
    }
}

fn disarm() -> bool {
    let Ok(fd) = open(WINDOW, O_WRONLY) else {
        return false;
    };
    let ok = write(fd, b"off") == Ok(3);
    let _ = close(fd);
    ok
}

/// A page-aligned anonymous buffer of `len` bytes filled with `byte`.
fn buffer(len: usize, byte: u8) -> Option<&'static mut [u8]> {
    let addr = sys(9, &[0, len, 3, 0x22, usize::MAX, 0]).ok()?;
    // SAFETY: a fresh private anonymous mapping of `len` bytes, never unmapped.
    let data = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) };
    data.fill(byte);
    Some(data)
}

/// Cases 1 and 2: `ftruncate` against a write of page 1 (direct or buffered).
fn truncate_case(t: &mut Tester, base: &str, direct: bool) {
    let what = if direct {
        "ftruncate vs O_DIRECT write"
    } else {
        "ftruncate vs buffered write"
    };
    let name = format!("{base}/t_pc5_ilock.t{}", u8::from(direct));
    let path = P::new(&name);
    let _ = unlink(path.c());
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("{what}: create {name}"), fd >= 0);
    if fd < 0 {
        return;
    }
    t.eq(
        &format!("{what}: two pages"),
        pwrite(fd, &vec![0x11u8; 2 * PAGE], 0).ok(),
        Some(2 * PAGE),
    );
    let _ = sys(74, &[fd as usize]); // fsync
    let wfd = if direct {
        open(path.c(), O_RDWR | O_DIRECT).unwrap_or(-1)
    } else {
        fd
    };
    let Some(data) = buffer(PAGE, 0xab) else {
        t.check(&format!("{what}: a buffer"), false);
        return;
    };
    if wfd < 0 {
        // A host filesystem without O_DIRECT.
        let _ = close(fd);
        let _ = unlink(path.c());
        return;
    }
    let mut wrote = None;
    let (inside, truncated) = race(t, what, "truncate", fd, truncator, || {
        wrote = Some(pwrite(wfd, data, PAGE as u64));
    });
    t.eq(&format!("{what}: ftruncate"), truncated, 0);
    t.eq(&format!("{what}: the write"), wrote, Some(Ok(PAGE)));
    if let Some(inside) = inside {
        t.check_why(
            &format!("{what}: the write waited for the whole ftruncate"),
            !inside,
            "it returned while ftruncate slept between the disk's truncation and the cache's",
        );
    }
    let size = fstat(fd).map(|s| s.st_size).unwrap_or(-1);
    t.eq(
        &format!("{what}: st_size (truncated, then written)"),
        size,
        2 * PAGE as i64,
    );
    let mut back = vec![0u8; 2 * PAGE];
    let n = pread(fd, &mut back, 0).unwrap_or(0);
    t.eq(&format!("{what}: read back"), n, 2 * PAGE);
    let good = back[..CUT].iter().all(|&b| b == 0x11)
        && back[CUT..PAGE].iter().all(|&b| b == 0)
        && back[PAGE..].iter().all(|&b| b == 0xab);
    t.check(
        &format!("{what}: the old bytes below the cut, zeroes, the written page"),
        good,
    );
    if wfd != fd {
        let _ = close(wfd);
    }
    let _ = sys(74, &[fd as usize]);
    let _ = close(fd);
    // After the last close `stat` reads the inode (cowlab), not the cache.
    let st = stat(path.c()).map(|s| s.st_size).unwrap_or(-1);
    t.eq(
        &format!("{what}: the inode's size after the last close"),
        st,
        2 * PAGE as i64,
    );
    t.eq(&format!("{what}: unlink"), unlink(path.c()), Ok(0));
}

/// Case 3: a chunked `fallocate` against an `O_DIRECT` write that fails.
fn fallocate_case(t: &mut Tester, base: &str, cowlab: bool) {
    let what = "fallocate vs failed O_DIRECT write";
    let name = format!("{base}/t_pc5_ilock.f");
    let path = P::new(&name);
    let _ = unlink(path.c());
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("{what}: create {name}"), fd >= 0);
    if fd < 0 {
        return;
    }
    let dfd = open(path.c(), O_RDWR | O_DIRECT).unwrap_or(-1);
    let Some(data) = buffer(PAGE, 0xcd) else {
        t.check(&format!("{what}: a buffer"), false);
        return;
    };
    if dfd < 0 {
        let _ = close(fd);
        let _ = unlink(path.c());
        return;
    }
    let mut wrote = None;
    let (inside, allocated) = race(t, what, "fallocate", fd, preallocator, || {
        wrote = Some(pwrite(dfd, &data[..1024], 1 << 62));
    });
    t.eq(&format!("{what}: fallocate"), allocated, 0);
    let refused = wrote == Some(Err(cowlab_userland::sys::Errno(EFBIG)));
    if cowlab {
        t.check_why(
            &format!("{what}: the write at 2^62 is EFBIG"),
            refused,
            format!("{wrote:?}"),
        );
    } else if !refused {
        // A host filesystem whose limit is past 2^62 (tmpfs) took it: cut it off again.
        let _ = ftruncate(fd, FALLOC_LEN as i64);
    }
    if let Some(inside) = inside {
        t.check_why(
            &format!("{what}: the write waited for the whole fallocate"),
            !inside,
            "it returned while fallocate slept between two chunks",
        );
    }
    let st = fstat(fd).unwrap_or_default();
    t.eq(&format!("{what}: st_size"), st.st_size, FALLOC_LEN as i64);
    t.check_why(
        &format!("{what}: every preallocated block is there"),
        st.st_blocks as usize * 512 >= FALLOC_LEN,
        format!("{} sectors", st.st_blocks),
    );
    // cowlab's preallocation writes zeroes (data); Linux's ext4 and tmpfs keep unwritten
    // extents, which SEEK_HOLE reports as holes.
    if cowlab {
        t.eq(
            &format!("{what}: the first hole is at the end"),
            lseek(fd, 0, SEEK_HOLE),
            Ok(FALLOC_LEN),
        );
    }
    let _ = close(dfd);
    let _ = close(fd);
    t.eq(&format!("{what}: unlink"), unlink(path.c()), Ok(0));
}

/// Case 4 (cowlab only: it needs the window): a writer asleep on the lock dies at `SIGKILL`
/// without waiting for the holder (Linux `inode_lock_killable`). The holder of the lock makes
/// user copies that may need a frame; an OOM victim asleep on the lock must be able to exit
/// and free its memory, or every fault waits for it. Before the wait was killable the killed
/// child was reaped only when the holder left its 3 s window.
fn kill_case(t: &mut Tester, base: &str) {
    let what = "a writer waiting for the lock";
    let name = format!("{base}/t_pc5_ilock.k");
    let path = P::new(&name);
    let _ = unlink(path.c());
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check(&format!("{what}: create {name}"), fd >= 0);
    if fd < 0 {
        return;
    }
    let _ = pwrite(fd, &[7u8; 2 * PAGE], 0);
    FD.store(fd, Ordering::Relaxed);
    RESULT.store(i64::MIN, Ordering::Relaxed);
    let before = window_counts().filter(|_| arm_ms("truncate", 3000));
    t.check(
        &format!("{what}: arm a 3 s truncate window"),
        before.is_some(),
    );
    let Some((entered, left)) = before else {
        let _ = close(fd);
        let _ = unlink(path.c());
        return;
    };
    let Ok(th) = thread::spawn(truncator, 0) else {
        t.check(&format!("{what}: spawn the thread"), false);
        return;
    };
    let start = monotonic_ns();
    while window_counts().is_some_and(|c| c.0 == entered) && ms_since(start) < 20_000 {
        let _ = sys(24, &[]); // sched_yield
    }
    t.check(
        &format!("{what}: ftruncate holds the lock, asleep in its window"),
        window_counts().is_some_and(|c| c.0 > entered),
    );
    match fork() {
        Ok(0) => {
            // Waits for the lock the truncation holds.
            let _ = pwrite(fd, b"x", 0);
            exit_now(0);
        }
        Ok(child) => {
            // Time for the child to reach the lock and sleep on it.
            let _ = sleep_ms(300);
            let (status, ms) = kill_and_reap(child, 10_000);
            let still_open = window_counts().is_some_and(|c| c.1 == left);
            t.check_why(
                &format!("{what}: killed, reaped while the holder still sleeps"),
                status.is_ok_and(|s| s.is_some()) && still_open && ms < 1500,
                format!("reaped {status:?} after {ms} ms, window still open: {still_open}"),
            );
        }
        Err(e) => t.check_why(&format!("{what}: fork"), false, e.0),
    }
    th.join();
    let _ = disarm();
    t.eq(
        &format!("{what}: the truncation finished"),
        RESULT.load(Ordering::Acquire),
        0,
    );
    let _ = close(fd);
    t.eq(&format!("{what}: unlink"), unlink(path.c()), Ok(0));
}

fn main() -> i32 {
    let mut t = Tester::new("t_pc5_ilock");
    let base = base_dir();
    truncate_case(&mut t, &base, true);
    truncate_case(&mut t, &base, false);
    fallocate_case(&mut t, &base, on_cowlab());
    if on_cowlab() {
        kill_case(&mut t, &base);
    }
    t.finish()
}
