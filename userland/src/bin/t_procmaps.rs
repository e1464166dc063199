//! `/proc/self/maps` names (`[heap]` for the brk area, `[stack]`, `/memfd:NAME (deleted)` for a
//! memfd mapping, as Linux prints them) and cowlab's counter files `/proc/cowlab/mmstat` (every
//! `MmStats` field) and `/proc/cowlab/faultstat` (absent without the `faultstat` feature). The
//! `/proc/cowlab` checks run on cowlab only; the maps checks on the host too.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;

fn read_all(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, Errno> {
    let fd = open(path, 0)?;
    let mut n = 0;
    while n < buf.len() {
        match read(fd, &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let _ = close(fd);
    Ok(n)
}

/// The `maps` line whose range contains `addr`.
fn line_for(maps: &str, addr: usize) -> Option<&str> {
    maps.lines().find(|l| {
        let Some((range, _)) = l.split_once(' ') else {
            return false;
        };
        let Some((s, e)) = range.split_once('-') else {
            return false;
        };
        match (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)) {
            (Ok(s), Ok(e)) => (s..e).contains(&addr),
            _ => false,
        }
    })
}

fn main() -> i32 {
    let mut t = Tester::new("t_procmaps");
    let rw = PROT_READ | PROT_WRITE;

    // The heap: grow the break by two pages and touch them.
    let base = brk(0);
    let grown = brk(base + 2 * PAGE);
    t.check("brk grows", grown == base + 2 * PAGE);
    // SAFETY: the two pages above the old break were just added to the heap.
    unsafe { core::ptr::write_volatile(base as *mut u8, 1) };
    let local = 0u8;
    let stack_addr = &local as *const u8 as usize;

    // A memfd mapped shared.
    // SAFETY: the name is a NUL-terminated string; memfd_create reads only it.
    let fd = unsafe { raw(319, [c"cowtest".as_ptr() as usize, 0, 0, 0, 0, 0]) }
        .map(|fd| fd as i32)
        .unwrap_or(-1);
    t.eq("ftruncate memfd", ftruncate(fd, PAGE as i64), Ok(0));
    // SAFETY: a new shared mapping of the memfd; no user memory is passed.
    let m = unsafe { raw(9, [0, PAGE, rw as usize, 1, fd as usize, 0]) }.unwrap_or(0);

    let mut buf = [0u8; 8192];
    let n = read_all(c"/proc/self/maps", &mut buf).unwrap_or(0);
    let maps = core::str::from_utf8(&buf[..n]).unwrap_or("");
    let heap = line_for(maps, base).unwrap_or("");
    t.check_why("the brk area is [heap]", heap.ends_with(" [heap]"), heap);
    let stack = line_for(maps, stack_addr).unwrap_or("");
    t.check_why("the stack is [stack]", stack.ends_with(" [stack]"), stack);
    let memfd = line_for(maps, m).unwrap_or("");
    t.check_why(
        "a memfd mapping is /memfd:NAME (deleted)",
        memfd.ends_with(" /memfd:cowtest (deleted)") && memfd.contains(" rw-s "),
        memfd,
    );
    t.eq("only one [heap]", maps.matches("[heap]").count(), 1);
    t.eq("only one [stack]", maps.matches("[stack]").count(), 1);
    let _ = munmap(m, PAGE);
    let _ = close(fd);
    brk(base);

    if on_cowlab() {
        let n = read_all(c"/proc/cowlab/mmstat", &mut buf).unwrap_or(0);
        let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<u64>().ok())
        };
        t.check_why(
            "mmstat starts with the era",
            text.starts_with("era 20"),
            text,
        );
        for name in [
            "free_frames",
            "usable_frames",
            "anon_pages",
            "zero_page_mappings",
            "pagetable_pages",
            "anon_faults",
            "zero_page_faults",
            "cow_copies",
            "zero_page_copies",
            "wp_reuses_exclusive",
            "wp_reuses_proven",
            "unshares",
            "fork_pinned_copies",
            "forks",
            "gup_pins_held",
            "gup_refs_held",
            "gup_slow_pages",
            "gup_fast_pages",
            "gup_fast_fallbacks",
            "gup_fast_seq_retries",
            "gup_unshare_faults",
            "shmem_pages",
            "shmem_faults",
        ] {
            t.check_why(name, value(name).is_some(), "missing from mmstat");
        }
        // The counters move: a write fault on a fresh page is an anon fault.
        let before = value("anon_faults").unwrap_or(0);
        let p = mmap(0, PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
        // SAFETY: `p` is a fresh private writable page.
        unsafe { core::ptr::write_volatile(p as *mut u8, 1) };
        let n = read_all(c"/proc/cowlab/mmstat", &mut buf).unwrap_or(0);
        let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
        let after = text
            .lines()
            .find_map(|l| l.strip_prefix("anon_faults ")?.parse::<u64>().ok())
            .unwrap_or(0);
        t.check_why(
            "a write fault counts in anon_faults",
            after > before,
            format_args!("{before} -> {after}"),
        );
        let _ = munmap(p, PAGE);
        t.eq(
            "mmstat is read-only",
            open(c"/proc/cowlab/mmstat", 2).err(),
            Some(Errno(errno::EACCES)),
        );
        // Present exactly when the kernel measures (its lines then name every fault kind).
        match read_all(c"/proc/cowlab/faultstat", &mut buf) {
            Err(e) => t.eq(
                "faultstat absent without the feature",
                e,
                Errno(errno::ENOENT),
            ),
            Ok(n) => {
                let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
                let kinds = text.lines().filter(|l| l.starts_with("FAULTSTAT kind="));
                let ops = text.lines().filter(|l| l.starts_with("OPSTAT op="));
                t.check_why(
                    "faultstat has a line per fault kind, then one per operation (fork, gup_fast)",
                    kinds.count() == 8 && ops.count() == 2 && text.lines().count() == 10,
                    text,
                );
            }
        }
    }
    t.finish()
}
