//! The per-process VMA limit (Linux `vm.max_map_count`, 65530 by default): mprotect of every
//! other page of a large mapping splits it until mprotect answers ENOMEM; the process and the
//! kernel carry on, a merge still works at the limit, and unmapping gives every frame back
//! (MemFree at its baseline, on cowlab). Runs on the host too, against its `max_map_count`.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
/// Enough pages to split into more than 65530 VMAs (two per protected page).
const PAGES: usize = 80_000;
/// Linux's default `vm.max_map_count`, cowlab's limit.
const MAX_MAP_COUNT: u64 = 65530;

fn poke(addr: usize, value: u8) {
    // SAFETY: the callers pass addresses inside their own read-write mapping.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

fn peek(addr: usize) -> u8 {
    // SAFETY: as for `poke`, readable pages.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// The first number in the file (e.g. /proc/sys/vm/max_map_count), or one line's kB value.
fn read_number(path: &core::ffi::CStr, line: Option<&str>) -> Option<u64> {
    let fd = open(path, O_RDONLY).ok()?;
    let mut buf = [0u8; 2048];
    let n = read(fd, &mut buf).ok()?;
    let _ = close(fd);
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let text = match line {
        Some(prefix) => {
            text.lines()
                .find(|l| l.starts_with(prefix))?
                .split_at(prefix.len())
                .1
        }
        None => text,
    };
    text.split_whitespace().next()?.parse().ok()
}

fn mem_free() -> Option<u64> {
    read_number(c"/proc/meminfo", Some("MemFree:"))
}

fn main() -> i32 {
    let mut t = Tester::new("t_vmalimit");
    let limit = if on_cowlab() {
        MAX_MAP_COUNT
    } else {
        match read_number(c"/proc/sys/vm/max_map_count", None) {
            Some(l) if (l as usize) < PAGES => l,
            Some(l) => {
                // A raised host limit would not be reached by this mapping: nothing to test,
                // and nothing is claimed.
                cowlab_userland::println!(
                    "t_vmalimit: host max_map_count {l} is not below {PAGES}: skipped"
                );
                return t.finish();
            }
            None => {
                t.check("host /proc/sys/vm/max_map_count readable", false);
                return t.finish();
            }
        }
    };
    let before = mem_free();
    let a = match mmap(0, PAGES * PAGE, RW, ANON) {
        Ok(a) => a,
        Err(e) => {
            t.check_why("mmap of the large mapping", false, e.0);
            return t.finish();
        }
    };
    // Some frames (and page tables) to give back at the end.
    for p in (0..PAGES).step_by(64) {
        poke(a + p * PAGE, p as u8 | 1);
    }
    let mut protected = 0usize;
    let mut refusal = None;
    for p in (0..PAGES).step_by(2) {
        match mprotect(a + p * PAGE, PAGE, PROT_READ) {
            Ok(_) => protected += 1,
            Err(e) => {
                refusal = Some((p, e));
                break;
            }
        }
    }
    let Some((p, e)) = refusal else {
        t.check("mprotect was refused before the mapping ran out", false);
        let _ = munmap(a, PAGES * PAGE);
        return t.finish();
    };
    t.eq("the refusal is ENOMEM", e, Errno(errno::ENOMEM));
    // Page 0 makes two VMAs, each later page two more; the process's other VMAs (program,
    // stack, heap: a few dozen at most) count too.
    let vmas = 2 * protected as u64;
    t.check_why(
        "refused within a few dozen VMAs of max_map_count",
        vmas <= limit && vmas + 200 >= limit,
        format_args!("{protected} pages protected (about {vmas} VMAs), limit {limit}"),
    );
    // The refused call changed nothing: the page is still writable.
    poke(a + p * PAGE, 0x5a);
    t.eq(
        "the refused page is unchanged and writable",
        peek(a + p * PAGE),
        0x5a,
    );
    t.eq(
        "the protected pages kept their contents",
        peek(a + 64 * PAGE),
        64 | 1,
    );
    // At the limit, an mprotect that merges (removes VMAs) still works.
    t.eq(
        "undoing a split at the limit succeeds",
        mprotect(a + (p - 2) * PAGE, PAGE, RW),
        Ok(0),
    );
    t.eq(
        "and the freed VMAs can be used again",
        mprotect(a + (p - 2) * PAGE, PAGE, PROT_READ),
        Ok(0),
    );
    // The kernel survives. Linux forks a process at the limit; cowlab refuses (ENOMEM,
    // cleanly) because the child's copy of 65530 VMAs would pass the system-wide cap that
    // protects its fixed kernel heap.
    let forked = in_child(|| 7);
    if on_cowlab() {
        t.eq(
            "fork at the limit is ENOMEM (system-wide VMA cap)",
            forked,
            -errno::ENOMEM,
        );
    } else {
        t.eq("fork at the limit works", forked, 7 << 8);
    }
    t.eq(
        "munmap of the whole mapping",
        munmap(a, PAGES * PAGE),
        Ok(0),
    );
    let b = mmap(0, PAGE, RW, ANON);
    t.check("mmap works again after munmap", b.is_ok());
    if let Ok(b) = b {
        let _ = munmap(b, PAGE);
    }
    if on_cowlab() {
        t.eq_some("MemFree back to baseline after munmap", mem_free(), before);
    }
    t.finish()
}
