//! The dirty-memory tunables of `/proc/sys/vm` (docs/file-memory.md, "Dirty limits"):
//! `dirty_ratio`/`dirty_bytes`, `dirty_background_ratio`/`dirty_background_bytes`,
//! `dirty_expire_centisecs`, `dirty_writeback_centisecs`.
//!
//! Everywhere (cowlab and the host): each file reads a number; where they can be written
//! (root: skipped, said so, on a host without it) the ranges and errnos are Linux's (a ratio
//! over 100, a negative or non-numeric value, `dirty_bytes` under two pages, a
//! `dirty_background_bytes` of 0, white space only: `EINVAL`; an empty write changes nothing;
//! numbers in C's base 0, `0x10` and `010`; a byte count of 2^32 pages or more: `ERANGE`), and
//! writing one of a ratio/bytes pair zeroes the other (the background pair's on any write, the
//! limit pair's on a change). The writing checks run in a forked child; the parent restores
//! every value after it ends, whatever it did (a failed check, a panic, a kill). On cowlab also
//! (cowlab's defaults, and the effect, through `/proc/cowlab/mmstat`): with the background
//! threshold above what a writer leaves dirty, nothing is written back (the age limit set
//! far away); once `dirty_background_bytes` is below it, the flusher writes back without any
//! `fsync` until the dirty count is under the threshold; with `dirty_bytes` below it, the
//! writer is throttled (`dirty_throttled`).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::CPath as P;
use cowlab_userland::pcfile::{base_dir, mmstat};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, on_cowlab, Tester};

cowlab_userland::entry!(main);

const EINVAL: i32 = 22;
const ERANGE: i32 = 34;
const MIB: usize = 1 << 20;
const NAMES: [&str; 6] = [
    "dirty_ratio",
    "dirty_bytes",
    "dirty_background_ratio",
    "dirty_background_bytes",
    "dirty_expire_centisecs",
    "dirty_writeback_centisecs",
];

fn path(name: &str) -> P {
    P::new(&format!("/proc/sys/vm/{name}"))
}

fn get(name: &str) -> Option<i64> {
    let mut buf = [0u8; 64];
    let n = read_file(path(name).c(), &mut buf)?;
    core::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

fn set(name: &str, text: &str) -> Result<usize, Errno> {
    let fd = open(path(name).c(), O_WRONLY)?;
    let r = write(fd, text.as_bytes());
    let _ = close(fd);
    r
}

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn delta(name: &str, before: Option<u64>) -> Option<u64> {
    Some(mmstat(name)?.wrapping_sub(before?))
}

/// Restores a ratio/bytes pair: the non-zero one counts (writing it zeroes the other).
fn restore_pair(saved: &[(&str, i64)], ratio: &str, bytes: &str) {
    let value = |n: &str| saved.iter().find(|s| s.0 == n).map(|s| s.1);
    match (value(ratio), value(bytes)) {
        (_, Some(b)) if b > 0 => {
            let _ = set(bytes, &format!("{b}"));
        }
        (Some(r), _) => {
            let _ = set(ratio, &format!("{r}"));
        }
        _ => {}
    }
}

/// Whether the files can be written (the same value written back).
fn writable() -> bool {
    let r = get("dirty_ratio").unwrap_or(20);
    match set("dirty_ratio", &format!("{r}")) {
        Ok(_) => true,
        Err(e) => {
            println!(
                "t_pcache_dirty: skip the writes (/proc/sys/vm is not writable here: errno {}; needs root)",
                e.0
            );
            false
        }
    }
}

/// The errno checks and the ratio/bytes pairing (values harmless to a host's writeback while
/// they last).
fn ranges(t: &mut Tester) {
    let r = get("dirty_ratio").unwrap_or(20);
    for (name, text) in [
        ("dirty_ratio", "101"),
        ("dirty_ratio", "-1"),
        ("dirty_ratio", "abc"),
        ("dirty_ratio", "20x"),
        ("dirty_background_ratio", "101"),
        ("dirty_bytes", "4096"),
        ("dirty_bytes", "0"),
        ("dirty_bytes", "-5"),
        ("dirty_background_bytes", "0"),
        ("dirty_expire_centisecs", "-1"),
        ("dirty_expire_centisecs", "2147483648"),
        // White space only is not an empty write.
        ("dirty_ratio", "   "),
        ("dirty_ratio", "\n"),
        ("dirty_bytes", " \t\n"),
        ("dirty_background_bytes", "\n"),
        ("dirty_expire_centisecs", " "),
        ("dirty_writeback_centisecs", "\t"),
        // Base 0: `08` is an octal 0 followed by a stray digit; `0x` has no digits.
        ("dirty_ratio", "08"),
        ("dirty_ratio", "0x"),
        ("dirty_ratio", "+5"),
        ("dirty_ratio", "12\0"),
        ("dirty_bytes", "-0"),
        ("dirty_bytes", "18446744073709551616"),
    ] {
        t.eq(
            &format!("{name} = {text:?} is EINVAL"),
            errno_of(set(name, text)),
            EINVAL,
        );
    }
    t.eq(
        "the refused writes left dirty_ratio",
        get("dirty_ratio"),
        Some(r),
    );
    t.eq("an empty write is 0 bytes", set("dirty_ratio", ""), Ok(0));
    t.eq("and changes nothing", get("dirty_ratio"), Some(r));
    // C's base 0 (`kstrtoul(.., 0)`), and the count: the number and the white space after it.
    t.eq("dirty_ratio = \"0x10\"", set("dirty_ratio", "0x10"), Ok(4));
    t.eq("reads 16", get("dirty_ratio"), Some(16));
    t.eq("dirty_ratio = \"010\"", set("dirty_ratio", "010"), Ok(3));
    t.eq("reads 8 (octal)", get("dirty_ratio"), Some(8));
    t.eq("dirty_ratio = \"0X11\"", set("dirty_ratio", "0X11"), Ok(4));
    t.eq("reads 17", get("dirty_ratio"), Some(17));
    t.eq(
        "dirty_ratio = \"  12  13\" counts up to 13",
        set("dirty_ratio", "  12  13"),
        Ok(6),
    );
    t.eq("reads 12", get("dirty_ratio"), Some(12));
    t.eq("dirty_ratio = \"-0\"", set("dirty_ratio", "-0"), Ok(2));
    t.eq("reads 0", get("dirty_ratio"), Some(0));
    t.eq(
        "dirty_writeback_centisecs = -1 (an unsigned int)",
        set("dirty_writeback_centisecs", "-1"),
        Ok(2),
    );
    t.eq("reads -1", get("dirty_writeback_centisecs"), Some(-1));
    t.eq(
        "dirty_writeback_centisecs = 500",
        set("dirty_writeback_centisecs", "500"),
        Ok(3),
    );
    t.eq("dirty_ratio = 20", set("dirty_ratio", "20"), Ok(2));
    t.eq(
        "dirty_bytes = \"0x2000\" (two pages)",
        set("dirty_bytes", "0x2000"),
        Ok(6),
    );
    t.eq("reads 8192", get("dirty_bytes"), Some(8192));
    t.eq(
        "dirty_bytes = \"020000\"",
        set("dirty_bytes", "020000\n"),
        Ok(7),
    );
    t.eq("reads 8192 (octal)", get("dirty_bytes"), Some(8192));
    // Byte counts whose pages do not fit an unsigned int: ERANGE, the value kept.
    for (name, text) in [
        ("dirty_bytes", "17592186044416"),
        ("dirty_background_bytes", "17592186044416"),
        ("dirty_bytes", "18446744073709547520"),
    ] {
        t.eq(
            &format!("{name} = {text} (2^32 pages or more) is ERANGE"),
            errno_of(set(name, text)),
            ERANGE,
        );
    }
    t.eq("dirty_bytes kept", get("dirty_bytes"), Some(8192));
    t.eq(
        "dirty_background_bytes kept (0)",
        get("dirty_background_bytes"),
        Some(0),
    );
    t.eq(
        "dirty_bytes = 2^32 - 1 pages",
        set("dirty_bytes", "17592186040320"),
        Ok(14),
    );
    t.eq("reads it", get("dirty_bytes"), Some(17592186040320));
    // The twins. dirty_ratio and dirty_bytes zero each other only on a change.
    t.eq("dirty_bytes = 8192", set("dirty_bytes", "8192"), Ok(4));
    t.eq("dirty_ratio reads 0", get("dirty_ratio"), Some(0));
    t.eq("an empty dirty_ratio write", set("dirty_ratio", ""), Ok(0));
    t.eq(
        "dirty_ratio = 0 (no change)",
        set("dirty_ratio", "0"),
        Ok(1),
    );
    t.eq("dirty_bytes survives both", get("dirty_bytes"), Some(8192));
    // The background pair: any successful write zeroes the twin, an empty one too.
    t.eq(
        "dirty_background_bytes = 8192",
        set("dirty_background_bytes", "8192"),
        Ok(4),
    );
    t.eq(
        "an empty dirty_background_ratio write",
        set("dirty_background_ratio", ""),
        Ok(0),
    );
    t.eq(
        "zeroes dirty_background_bytes",
        get("dirty_background_bytes"),
        Some(0),
    );
    t.eq(
        "dirty_background_ratio = 10",
        set("dirty_background_ratio", "10"),
        Ok(2),
    );
    t.eq(
        "an empty dirty_background_bytes write",
        set("dirty_background_bytes", ""),
        Ok(0),
    );
    t.eq(
        "zeroes dirty_background_ratio",
        get("dirty_background_ratio"),
        Some(0),
    );
    t.eq(
        "dirty_background_ratio = 10",
        set("dirty_background_ratio", "10"),
        Ok(2),
    );
    // The pairs: the one written last counts, the other reads 0.
    t.eq(
        "dirty_bytes = 1 GiB",
        set("dirty_bytes", "1073741824"),
        Ok(10),
    );
    t.eq("dirty_bytes reads it", get("dirty_bytes"), Some(1 << 30));
    t.eq("dirty_ratio then reads 0", get("dirty_ratio"), Some(0));
    t.eq("dirty_ratio = 25", set("dirty_ratio", "25\n"), Ok(3));
    t.eq("dirty_ratio reads it", get("dirty_ratio"), Some(25));
    t.eq("dirty_bytes then reads 0", get("dirty_bytes"), Some(0));
    t.eq(
        "dirty_background_bytes = 512 MiB",
        set("dirty_background_bytes", "536870912"),
        Ok(9),
    );
    t.eq(
        "dirty_background_ratio then reads 0",
        get("dirty_background_ratio"),
        Some(0),
    );
    t.eq(
        "dirty_background_ratio = 10",
        set("dirty_background_ratio", "10"),
        Ok(2),
    );
    t.eq(
        "dirty_background_bytes then reads 0",
        get("dirty_background_bytes"),
        Some(0),
    );
    t.eq(
        "dirty_expire_centisecs = 1500",
        set("dirty_expire_centisecs", "1500"),
        Ok(4),
    );
    t.eq("reads 1500", get("dirty_expire_centisecs"), Some(1500));
}

/// Writes `len` bytes at the end of `fd` in 64 KiB calls.
fn append(fd: i32, len: usize, seed: u8) -> bool {
    let chunk = vec![seed; 64 * 1024];
    (0..len / chunk.len()).all(|_| write(fd, &chunk) == Ok(chunk.len()))
}

/// Waits up to `limit_ms` for `ok()`; whether it came.
fn wait_for(limit_ms: u64, ok: impl Fn() -> bool) -> bool {
    let start = monotonic_ns();
    while (monotonic_ns() - start) / 1_000_000 < limit_ms {
        if ok() {
            return true;
        }
        let _ = sleep_ms(20);
    }
    ok()
}

/// The thresholds at work (cowlab: observed through mmstat).
fn effect(t: &mut Tester, base: &str) {
    let name = format!("{base}/t_pcache_dirty.{}", cowlab_userland::sys::getpid());
    let file = P::new(&name);
    let fd = open_mode(file.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.check("create the file", fd >= 0);
    if fd < 0 {
        return;
    }
    // Only the thresholds may start writeback: the age limit an hour away.
    t.check(
        "dirty_expire_centisecs = 1 hour",
        set("dirty_expire_centisecs", "360000").is_ok(),
    );
    t.check("dirty_ratio = 20", set("dirty_ratio", "20").is_ok());
    t.check(
        "dirty_background_bytes = 64 MiB",
        set("dirty_background_bytes", "67108864").is_ok(),
    );
    let wb = mmstat("writeback_pages");
    let rounds = mmstat("background_writebacks");
    let throttled = mmstat("dirty_throttled");
    t.check("write 2 MiB", append(fd, 2 * MIB, 1));
    let _ = sleep_ms(300);
    t.eq_some(
        "under the background threshold: nothing written back",
        delta("writeback_pages", wb),
        Some(0),
    );
    t.check(
        "and the 512 pages stay dirty",
        mmstat("file_dirty").is_some_and(|d| d >= 512),
    );
    // 256 pages: the next 32 pages written find 512+ dirty and wake the flusher.
    t.check(
        "dirty_background_bytes = 1 MiB",
        set("dirty_background_bytes", "1048576").is_ok(),
    );
    t.check("write 1 MiB more", append(fd, MIB, 2));
    let under = wait_for(10_000, || mmstat("file_dirty").is_some_and(|d| d <= 256));
    t.check_why(
        "past the background threshold the flusher writes back, no fsync, to under it",
        under,
        format!("file_dirty {:?}", mmstat("file_dirty")),
    );
    t.check(
        "counted as pages written back and a background round",
        delta("writeback_pages", wb).is_some_and(|n| n >= 512)
            && delta("background_writebacks", rounds).is_some_and(|n| n >= 1),
    );
    t.eq_some(
        "no writer throttled (the dirty limit is 20% of memory)",
        delta("dirty_throttled", throttled),
        Some(0),
    );
    // The hard limit: two pages (the background threshold is then one): each look at the
    // count, right after a 16-page write, finds more dirty whatever the flusher did (with
    // 1 MiB, on one CPU the flusher kept the count under it between the looks).
    t.check("dirty_bytes = 2 pages", set("dirty_bytes", "8192").is_ok());
    let throttled = mmstat("dirty_throttled");
    t.check("write 2 MiB past it", append(fd, 2 * MIB, 3));
    t.check(
        "past dirty_bytes the writer is throttled (writes its file back)",
        delta("dirty_throttled", throttled).is_some_and(|n| n >= 1),
    );
    let _ = close(fd);
    t.check("unlink", unlink(file.c()).is_ok());
}

fn main() -> i32 {
    let mut t = Tester::new("t_pcache_dirty");
    let cowlab = on_cowlab();
    let base = base_dir();
    let mut saved: Vec<(&str, i64)> = Vec::new();
    for name in NAMES {
        let v = get(name);
        t.check(&format!("{name} reads a number"), v.is_some());
        if let Some(v) = v {
            saved.push((name, v));
        }
    }
    if cowlab {
        t.eq(
            "Linux's defaults",
            NAMES.map(get),
            [Some(20), Some(0), Some(10), Some(0), Some(3000), Some(500)],
        );
    }
    if writable() {
        // The writes in a child: whatever it does (a failed check, a panic, a kill), the
        // parent restores every value after it, so the host keeps its writeback settings.
        let status = in_child(|| {
            let mut c = Tester::new("t_pcache_dirty");
            ranges(&mut c);
            if cowlab {
                effect(&mut c, &base);
            } else {
                println!("t_pcache_dirty: the writeback effect is checked on cowlab only (mmstat)");
            }
            c.status()
        });
        restore_pair(&saved, "dirty_ratio", "dirty_bytes");
        restore_pair(&saved, "dirty_background_ratio", "dirty_background_bytes");
        for name in ["dirty_expire_centisecs", "dirty_writeback_centisecs"] {
            if let Some(&(_, v)) = saved.iter().find(|s| s.0 == name) {
                let _ = set(name, &format!("{v}"));
            }
        }
        t.eq("the writing checks (a child) passed", status, 0);
        t.eq(
            "every value restored",
            NAMES.map(get),
            NAMES.map(|n| saved.iter().find(|s| s.0 == n).map(|s| s.1)),
        );
    }
    t.finish()
}
