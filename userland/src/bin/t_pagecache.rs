//! The page cache of disk files (ext2 on cowlab), in a directory of its own
//! (`<dir>/t_pagecache.PID`, `<dir>` the first argument that is not an option, else the working
//! directory): write/read/pread/pwrite coherence between descriptors across page boundaries,
//! sparse writes past the end reading zeroes, ftruncate shrinking then growing (the cut tail of
//! a cached page reads as zeroes), O_APPEND, an unlinked open file, fsync; on cowlab the cache
//! itself through `/proc/cowlab/mmstat` (`file_pages` grows on reads, falls to zero at
//! `echo 3 > /proc/sys/vm/drop_caches`, stays at the last close of a file with a name, so a
//! reopen finds the pages, and falls when a closed file is unlinked or an unlinked one closed)
//! and the data surviving a drop (so it reached the disk).
//!
//! `big`: a file three times the machine's memory (cowlab: its usable frames; `big=<MiB>` sets
//! the size, e.g. on the host) written in 1 MiB chunks (on cowlab the dirty limits start
//! writeback: mmstat `dirty_throttled` or `background_writebacks` grows), fsync'ed, read back
//! and checksummed, then read through 1 MiB shared mappings, overwritten with a second pattern
//! through writable shared mappings (each msync'ed) and read back again;
//! on cowlab the caches are dropped between and the free frames must return to their count
//! before the file was written. Booted as `mem=16 -- t_pagecache big` by the test tier, on a
//! persistent copy of the root image that must pass `e2fsck -fn` afterwards.
//! Runs natively on the host in a directory on a real disk filesystem.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::mmstat;
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const SEEK_END: u32 = 2;
const PAGE: usize = 4096;
const MIB: usize = 1 << 20;
const MS_SYNC: usize = 4;

/// A NUL-terminated copy of `s`.
fn open_c(path: &str, flags: u32, mode: u32) -> Result<i32, Errno> {
    open_mode(P::new(path).c(), flags, mode)
}

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

/// A counter of `/proc/cowlab/mmstat` (`name value` lines); `None` off cowlab.
/// `echo 3 > /proc/sys/vm/drop_caches`.
fn drop_caches() -> Result<usize, Errno> {
    let fd = open(c"/proc/sys/vm/drop_caches", O_WRONLY)?;
    let r = write(fd, b"3\n");
    let _ = close(fd);
    r
}

/// The byte at file offset `off` of test file `seed` (a mix of both, so a misplaced page shows).
fn byte_at(seed: u64, off: u64) -> u8 {
    let mut x = (off / 8) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x >> ((off % 8) * 8)) as u8
}

fn fill(buf: &mut [u8], seed: u64, off: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte_at(seed, off + i as u64);
    }
}

/// FNV-1a, 64-bit, continued from `h`.
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

fn main() -> i32 {
    let mut t = Tester::new("t_pagecache");
    let cowlab = on_cowlab();
    let mut base = String::from(".");
    let mut big: Option<Option<usize>> = None;
    for arg in cowlab_userland::args::args().skip(1) {
        let arg = arg.to_str().unwrap_or("");
        if arg == "big" {
            big = Some(None);
        } else if let Some(mib) = arg.strip_prefix("big=") {
            big = Some(mib.parse().ok());
        } else if !arg.contains('=') {
            base = String::from(arg);
        }
    }
    let dir = format!("{base}/t_pagecache.{}", cowlab_userland::sys::getpid());
    t.eq(
        "mkdir of the test directory",
        errno_of(mkdir(P::new(&dir).c(), 0o755)),
        0,
    );
    let path = |name: &str| format!("{dir}/{name}");

    match big {
        Some(size) => big_file(&mut t, cowlab, &path("big"), size),
        None => {
            coherence(&mut t, cowlab, &path("coherent"));
            truncation(&mut t, &path("trunc"));
            unlinked(&mut t, cowlab, &path("unlinked"));
        }
    }

    t.eq(
        "rmdir of the emptied test directory",
        errno_of(rmdir(P::new(&dir).c())),
        0,
    );
    t.finish()
}

fn mkdir(path: &CStr, mode: u32) -> Result<usize, Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the call.
    unsafe { raw(83, [path.as_ptr() as usize, mode as usize, 0, 0, 0, 0]) }
}

fn fsync(fd: i32) -> Result<usize, Errno> {
    // SAFETY: no pointers.
    unsafe { raw(74, [fd as usize, 0, 0, 0, 0, 0]) }
}

/// Writes through one descriptor are seen through another at once, at any alignment; writes
/// fill the cache (cowlab: `file_pages`; write-back) and reads find it, a drop empties it and
/// the data comes back from disk.
fn coherence(t: &mut Tester, cowlab: bool, name: &str) {
    let len = MIB;
    let fd = open_c(name, O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let mut data = vec![0u8; len];
    fill(&mut data, 1, 0);
    let before = mmstat("file_pages");
    let mut written = 0;
    for chunk in data.chunks(64 * 1024) {
        written += write(fd, chunk).unwrap_or(0);
    }
    t.eq("1 MiB written in 64 KiB writes", written, len);
    let cached = mmstat("file_pages");
    let mut back = vec![0u8; len];
    t.eq("pread of the whole file", pread(fd, &mut back, 0), Ok(len));
    t.check("it reads back what was written", back == data);
    if cowlab {
        // Write-back: the write put the file's 256 pages in the cache, the read found them.
        t.check_why(
            "the write filled the cache (file_pages grew by the file's 256 pages)",
            cached.unwrap_or(0) >= before.unwrap_or(u64::MAX).saturating_add(256),
            format!("{before:?} -> {cached:?}"),
        );
        t.eq(
            "the read found every page cached",
            mmstat("file_pages"),
            cached,
        );
    }

    let other = open_c(name, O_RDWR, 0).unwrap_or(-1);
    // Straddles pages 2 and 3 of a cached file.
    let patch = [0xa5u8; 100];
    t.eq(
        "pwrite across a page boundary (second descriptor)",
        pwrite(other, &patch, 3 * PAGE as u64 - 50),
        Ok(100),
    );
    let mut got = [0u8; 200];
    t.eq(
        "pread around it (first descriptor)",
        pread(fd, &mut got, 3 * PAGE as u64 - 100),
        Ok(200),
    );
    let mut want = [0u8; 200];
    want.copy_from_slice(&data[3 * PAGE - 100..3 * PAGE + 100]);
    want[50..150].fill(0xa5);
    t.check("the first descriptor sees the patch at once", got == want);
    data[3 * PAGE - 50..3 * PAGE + 50].fill(0xa5);

    // A write past the end leaves a hole that reads as zeroes.
    let far = (len + 3 * PAGE + 7) as u64;
    t.eq("pwrite past the end", pwrite(other, b"tail", far), Ok(4));
    t.eq(
        "st_size covers it",
        fstat(fd).map(|s| s.st_size),
        Ok(far as i64 + 4),
    );
    t.eq(
        "SEEK_END agrees",
        lseek(fd, 0, SEEK_END),
        Ok(far as usize + 4),
    );
    let mut hole = vec![0xffu8; 3 * PAGE + 11];
    t.eq(
        "pread of the hole and the tail",
        pread(fd, &mut hole, len as u64),
        Ok(3 * PAGE + 11),
    );
    t.check(
        "the hole reads as zeroes, then the tail",
        hole[..3 * PAGE + 7].iter().all(|&b| b == 0) && &hole[3 * PAGE + 7..] == b"tail",
    );
    t.eq("fsync", fsync(fd), Ok(0));

    if cowlab {
        t.eq("echo 3 > /proc/sys/vm/drop_caches", drop_caches(), Ok(2));
        t.eq(
            "drop_caches empties the cache of the open file",
            mmstat("file_pages"),
            Some(0),
        );
        let bad = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
        t.eq(
            "drop_caches refuses 0 (EINVAL, as Linux's 1..4 bound)",
            errno_of(write(bad, b"0\n")),
            22,
        );
        let _ = close(bad);
    } else {
        println!("t_pagecache: the host's caches are left alone (no drop_caches)");
    }
    t.eq("pread after the drop", pread(fd, &mut back, 0), Ok(len));
    t.check("the data came back from the disk", back == data);
    let cached = mmstat("file_pages");
    let _ = close(other);
    let _ = close(fd);
    if cowlab {
        // Linux keeps a closed file's pages until reclaim; so does cowlab (since pc2).
        t.eq(
            "the last close keeps the file's clean pages",
            mmstat("file_pages"),
            cached,
        );
    }
    let fd = open_c(name, O_RDONLY, 0).unwrap_or(-1);
    back.fill(0);
    t.eq("pread after a reopen", pread(fd, &mut back, 0), Ok(len));
    t.check("the reopened file reads the same bytes", back == data);
    let _ = close(fd);
    if cowlab {
        t.eq(
            "the reopened file found its pages (the cache did not grow)",
            mmstat("file_pages"),
            cached,
        );
    }
    t.eq("unlink", errno_of(unlink(P::new(name).c())), 0);
    if cowlab {
        let now = mmstat("file_pages").unwrap_or(u64::MAX);
        t.check_why(
            "unlinking the closed file frees its pages",
            cached.is_some_and(|c| now + 256 <= c),
            format!("{cached:?} -> {now}"),
        );
    }
    // A new file (on ext2 it likely gets the freed inode number) reads its own bytes, never
    // the kept pages of the file that had the number before.
    let fd = open_c(name, O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("a new file in its place", write(fd, &[b'z'; 100]), Ok(100));
    let _ = close(fd);
    let fd = open_c(name, O_RDONLY, 0).unwrap_or(-1);
    let mut got = [0u8; 200];
    t.eq("reopened, it is 100 bytes", pread(fd, &mut got, 0), Ok(100));
    t.check("of its own", got[..100].iter().all(|&b| b == b'z'));
    let _ = close(fd);
    t.eq("unlink it", errno_of(unlink(P::new(name).c())), 0);
}

/// ftruncate down into a cached page and up again: the cut bytes read as zeroes, through the
/// cache and after it is dropped.
fn truncation(t: &mut Tester, name: &str) {
    let fd = open_c(name, O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let mut data = vec![0u8; 4 * PAGE];
    fill(&mut data, 2, 0);
    t.eq("write 4 pages", write(fd, &data), Ok(4 * PAGE));
    let mut back = vec![0u8; 4 * PAGE];
    t.eq("read them (cached)", pread(fd, &mut back, 0), Ok(4 * PAGE));
    t.eq("ftruncate to 5000", ftruncate(fd, 5000), Ok(0));
    t.eq("st_size is 5000", fstat(fd).map(|s| s.st_size), Ok(5000));
    t.eq(
        "a read stops at the new end",
        pread(fd, &mut back, 0),
        Ok(5000),
    );
    t.check("the kept bytes are intact", back[..5000] == data[..5000]);
    t.eq(
        "ftruncate up to 3 pages",
        ftruncate(fd, 3 * PAGE as i64),
        Ok(0),
    );
    back.fill(0xff);
    t.eq("read the grown file", pread(fd, &mut back, 0), Ok(3 * PAGE));
    t.check(
        "the cut tail and the new pages read as zeroes",
        back[..5000] == data[..5000] && back[5000..3 * PAGE].iter().all(|&b| b == 0),
    );
    let app = open_c(name, O_WRONLY | O_APPEND, 0).unwrap_or(-1);
    t.eq("O_APPEND write", write(app, b"end"), Ok(3));
    let mut end = [0u8; 3];
    t.eq(
        "it landed at the end",
        pread(fd, &mut end, 3 * PAGE as u64),
        Ok(3),
    );
    t.check("the appended bytes", &end == b"end");
    let _ = close(app);
    let _ = close(fd);
    let fd = open_c(name, O_RDONLY, 0).unwrap_or(-1);
    back.fill(0xff);
    t.eq(
        "reopened, the whole file reads",
        pread(fd, &mut back, 0),
        Ok(3 * PAGE + 3),
    );
    t.check(
        "the same bytes after the cache went away",
        back[..5000] == data[..5000]
            && back[5000..3 * PAGE].iter().all(|&b| b == 0)
            && &back[3 * PAGE..3 * PAGE + 3] == b"end",
    );
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(P::new(name).c())), 0);
}

/// An unlinked file stays readable and writable through its open descriptor; its cache goes at
/// the last close.
fn unlinked(t: &mut Tester, cowlab: bool, name: &str) {
    let fd = open_c(name, O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let mut data = vec![0u8; 8 * PAGE];
    fill(&mut data, 3, 0);
    t.eq("write 8 pages", write(fd, &data), Ok(8 * PAGE));
    t.eq(
        "unlink it while open",
        errno_of(unlink(P::new(name).c())),
        0,
    );
    t.eq("pwrite after the unlink", pwrite(fd, b"still", 10), Ok(5));
    let mut back = vec![0u8; 8 * PAGE];
    t.eq("read it back", pread(fd, &mut back, 0), Ok(8 * PAGE));
    data[10..15].copy_from_slice(b"still");
    t.check("the unlinked file's data", back == data);
    let cached = mmstat("file_pages").unwrap_or(0);
    let _ = close(fd);
    if cowlab {
        let now = mmstat("file_pages").unwrap_or(u64::MAX);
        t.check_why(
            "its cache is gone at the close",
            now + 8 <= cached,
            format!("{cached} -> {now}"),
        );
    }
}

/// A file three times memory through write/read, checksummed; the cache streams it.
/// Reads the `size`-byte file back with pread in 1 MiB chunks: the bytes read, the first MiB
/// holding bytes of another place (pattern `seed`, sampled), and the FNV checksum.
fn read_back(fd: i32, size: usize, seed: u64, back: &mut [u8]) -> (usize, Option<usize>, u64) {
    let mut sum = FNV_START;
    let mut total = 0;
    let mut misplaced = None;
    for i in 0..size / MIB {
        match pread(fd, back, (i * MIB) as u64) {
            Ok(n) if n == MIB => total += n,
            r => {
                println!("t_pagecache: read {i} answered {r:?}");
                break;
            }
        }
        sum = fnv(sum, back);
        if misplaced.is_none()
            && (0..MIB)
                .step_by(509)
                .any(|o| back[o] != byte_at(seed, (i * MIB + o) as u64))
        {
            misplaced = Some(i);
        }
    }
    (total, misplaced, sum)
}

fn big_file(t: &mut Tester, cowlab: bool, name: &str, mib: Option<usize>) {
    let size = match (mib, mmstat("usable_frames")) {
        (Some(m), _) => m * MIB,
        (None, Some(frames)) => (3 * frames as usize * PAGE).div_ceil(MIB) * MIB,
        (None, None) => 64 * MIB,
    };
    println!("t_pagecache: big file of {} MiB", size / MIB);
    let mut chunk = vec![0u8; MIB];
    let mut back = vec![0u8; MIB];
    // Touch both buffers before the frame count is taken.
    back.fill(1);
    let _ = drop_caches();
    let free_before = mmstat("free_frames");
    let throttled = mmstat("dirty_throttled");
    let background = mmstat("background_writebacks");
    let fd = open_c(name, O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let mut sum_written = FNV_START;
    let mut written = 0;
    for i in 0..size / MIB {
        fill(&mut chunk, 4, (i * MIB) as u64);
        sum_written = fnv(sum_written, &chunk);
        match write(fd, &chunk) {
            Ok(n) if n == MIB => written += n,
            r => {
                println!("t_pagecache: write {i} answered {r:?}");
                break;
            }
        }
    }
    t.eq("the whole file written", written, size);
    if cowlab {
        // Write-back: three times memory cannot stay dirty; past the background threshold
        // the flusher wrote back, past `dirty_ratio` the writer wrote its file back itself
        // (`balance_dirty_pages`).
        let now = (mmstat("dirty_throttled"), mmstat("background_writebacks"));
        t.check_why(
            "the dirty limits started writeback (dirty_throttled or background_writebacks grew)",
            now.0.unwrap_or(0) > throttled.unwrap_or(u64::MAX)
                || now.1.unwrap_or(0) > background.unwrap_or(u64::MAX),
            format!("{throttled:?}, {background:?} -> {now:?}"),
        );
    }
    t.eq("fsync", fsync(fd), Ok(0));
    if cowlab {
        t.eq("drop_caches", drop_caches(), Ok(2));
    }
    let mut back = back;
    let (read_total, misplaced, sum_read) = read_back(fd, size, 4, &mut back);
    t.eq("the whole file read back", read_total, size);
    t.eq("no MiB holds another's bytes", misplaced, None);
    t.eq("the checksums agree", sum_read, sum_written);

    // Through mmap: the file read in 1 MiB shared windows, then a second pattern stored through
    // writable shared windows (each msync'ed with MS_SYNC and unmapped: write-notify faults,
    // dirty mapped pages written back) and read back with pread after a drop.
    let mut sum_mapped = FNV_START;
    let mut windows = 0;
    for i in 0..size / MIB {
        // SAFETY: no MAP_FIXED: the kernel picks a free range.
        let Ok(addr) = (unsafe { mmap_fd(0, MIB, PROT_READ, MAP_SHARED, fd, (i * MIB) as u64) })
        else {
            break;
        };
        // SAFETY: a live 1 MiB mapping of the file's bytes, unmapped just below.
        let window = unsafe { core::slice::from_raw_parts(addr as *const u8, MIB) };
        sum_mapped = fnv(sum_mapped, window);
        let _ = munmap(addr, MIB);
        windows += 1;
    }
    t.eq("the file mapped 1 MiB at a time", windows, size / MIB);
    t.eq("the checksum through mmap agrees", sum_mapped, sum_written);
    let mut sum_stored = FNV_START;
    let mut stored = 0;
    for i in 0..size / MIB {
        let off = (i * MIB) as u64;
        let prot = PROT_READ | PROT_WRITE;
        // SAFETY: no MAP_FIXED: the kernel picks a free range.
        let Ok(addr) = (unsafe { mmap_fd(0, MIB, prot, MAP_SHARED, fd, off) }) else {
            break;
        };
        // SAFETY: a live, writable 1 MiB shared mapping of the file, unmapped just below.
        let window = unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, MIB) };
        fill(window, 5, off);
        sum_stored = fnv(sum_stored, window);
        let synced = sys(26, &[addr, MIB, MS_SYNC]).is_ok();
        let _ = munmap(addr, MIB);
        if !synced {
            break;
        }
        stored += 1;
    }
    t.eq(
        "stored through writable shared windows, msync each",
        stored,
        size / MIB,
    );
    t.eq("fsync after the stores", fsync(fd), Ok(0));
    if cowlab {
        t.eq("drop_caches after the stores", drop_caches(), Ok(2));
    }
    let (reread, misplaced, sum_reread) = read_back(fd, size, 5, &mut back);
    t.eq("the stored file read back", reread, size);
    t.eq(
        "no MiB of the stores holds another's bytes",
        misplaced,
        None,
    );
    t.eq("the checksum of the stores agrees", sum_reread, sum_stored);
    if cowlab {
        t.check_why(
            "the cache never held the whole file",
            mmstat("file_pages").unwrap_or(u64::MAX) < (size / PAGE) as u64,
            format!("{:?} pages", mmstat("file_pages")),
        );
    }
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(P::new(name).c())), 0);
    if cowlab {
        t.eq("drop_caches again", drop_caches(), Ok(2));
        t.eq("no file page left", mmstat("file_pages"), Some(0));
        t.eq(
            "the free frames are back to their count before the file",
            mmstat("free_frames"),
            free_before,
        );
    }
}
