//! mTHP (issue 14) from user space: the per-size knobs
//! `/sys/kernel/mm/transparent_hugepage/hugepages-<N>kB/enabled` (Linux's defaults and
//! `EINVAL`, written on cowlab only), a write fault with 64 KiB enabled mapping 16 pages at once
//! (pagemap: all present, contiguous PFNs from a 64 KiB-aligned one; the size's
//! `stats/anon_fault_alloc` grows), fork with a COW write in the child, a partial munmap whose
//! unmapped part comes back after the deferred split (`drop_caches` 2; cowlab only) and
//! `MemFree` back at its start. On a host whose 64 kB size is not enabled (Linux before 6.8,
//! or `never`, the default) the fault checks are skipped with the reason, as cow.c skips its
//! mTHP sizes; PFNs are compared only where pagemap shows them (root).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, mem_free_kb, on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const NR: usize = 16;
const HPAGE: usize = 2 << 20;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const PRESENT: u64 = 1 << 63;
const PFN: u64 = (1 << 55) - 1;
const E64: &core::ffi::CStr = c"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled";

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside their own live mappings.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside their own live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn read_text(path: &core::ffi::CStr, buf: &mut [u8; 128]) -> Option<usize> {
    read_file(path, buf)
}

fn number(path: &core::ffi::CStr) -> Option<u64> {
    let mut b = [0u8; 128];
    let n = read_text(path, &mut b)?;
    let mut v = 0u64;
    for d in b[..n].iter().take_while(|d| d.is_ascii_digit()) {
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

fn write_to(path: &core::ffi::CStr, text: &[u8]) -> Result<usize, Errno> {
    let fd = open(path, O_WRONLY)?;
    let r = write(fd, text);
    let _ = close(fd);
    r
}

fn pagemap(addr: usize) -> u64 {
    let Ok(fd) = open(c"/proc/self/pagemap", O_RDONLY) else {
        return 0;
    };
    let mut b = [0u8; 8];
    let r = pread(fd, &mut b, (addr / PAGE * 8) as u64);
    let _ = close(fd);
    match r {
        Ok(8) => u64::from_le_bytes(b),
        _ => 0,
    }
}

/// A 2 MiB-aligned private anon range of 2 MiB (over-mapped, then trimmed).
fn map_aligned() -> usize {
    let raw_start = mmap(0, 2 * HPAGE, RW, ANON).unwrap_or(0);
    if raw_start == 0 {
        return 0;
    }
    let start = (raw_start + HPAGE - 1) & !(HPAGE - 1);
    if start > raw_start {
        let _ = munmap(raw_start, start - raw_start);
    }
    let _ = munmap(start + HPAGE, raw_start + HPAGE - start);
    start
}

fn main() -> i32 {
    let mut t = Tester::new("t_mthp");
    let cowlab = on_cowlab();
    let mut text = [0u8; 128];
    if read_text(E64, &mut text).is_none() {
        println!("t_mthp: skip: no hugepages-64kB (a kernel without mTHP, before Linux 6.8)");
        t.check("cowlab has mTHP sizes", !cowlab);
        return t.finish();
    }
    let free0 = mem_free_kb();
    if cowlab {
        knobs(&mut t);
        t.check("enable 64 kB", write_to(E64, b"always\n").is_ok());
    }
    let n = read_text(E64, &mut text).unwrap_or(0);
    let on = contains(&text[..n], b"[always]");
    if on {
        fault_fork_split(&mut t, cowlab);
    } else {
        println!("t_mthp: skip: hugepages-64kB/enabled is not always on this host");
    }
    if cowlab {
        t.check("64 kB back to never", write_to(E64, b"never").is_ok());
        let free1 = mem_free_kb();
        t.check_why(
            "MemFree back to its value before the mTHPs",
            free0.is_some() && free0 == free1,
            format_args!("{free0:?} -> {free1:?}"),
        );
    }
    t.finish()
}

/// Every size's `enabled` with Linux's defaults, `EINVAL` for a bad word, read-only stats.
fn knobs(t: &mut Tester) {
    let sizes: [(&core::ffi::CStr, &[u8]); 8] = [
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-16kB/enabled",
            b"[never]",
        ),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-32kB/enabled",
            b"[never]",
        ),
        (E64, b"[never]"),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-128kB/enabled",
            b"[never]",
        ),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-256kB/enabled",
            b"[never]",
        ),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-512kB/enabled",
            b"[never]",
        ),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-1024kB/enabled",
            b"[never]",
        ),
        (
            c"/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/enabled",
            b"[inherit]",
        ),
    ];
    for (path, want) in sizes {
        let mut b = [0u8; 128];
        let n = read_text(path, &mut b).unwrap_or(0);
        t.check_why(
            "a size's default",
            contains(&b[..n], want)
                && [&b"always"[..], b"inherit", b"madvise", b"never"]
                    .iter()
                    .all(|w| contains(&b[..n], w)),
            format_args!("{path:?}: {:?}", core::str::from_utf8(&b[..n])),
        );
    }
    let mut b = [0u8; 128];
    t.check(
        "no 8 kB or 4096 kB size",
        read_text(
            c"/sys/kernel/mm/transparent_hugepage/hugepages-8kB/enabled",
            &mut b,
        )
        .is_none()
            && read_text(
                c"/sys/kernel/mm/transparent_hugepage/hugepages-4096kB/enabled",
                &mut b,
            )
            .is_none(),
    );
    t.eq(
        "a bad word is EINVAL",
        write_to(E64, b"sometimes").err().map(|e| e.0),
        Some(errno::EINVAL),
    );
    t.eq(
        "stats are read-only (EACCES)",
        open(
            c"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc",
            O_WRONLY,
        )
        .err()
        .map(|e| e.0),
        Some(errno::EACCES),
    );
}

/// The fault, fork + COW, and a partial munmap with the deferred split.
fn fault_fork_split(t: &mut Tester, cowlab: bool) {
    let alloc_path = c"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/anon_fault_alloc";
    let split_path = c"/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats/split";
    let allocs0 = number(alloc_path);
    let a = map_aligned();
    t.check("a 2 MiB-aligned mapping", a != 0);
    if a == 0 {
        return;
    }
    // Not MADV_HUGEPAGE: under the default `madvise` no PMD THP competes.
    poke(a + 5 * PAGE, 0x5a);
    let pm: [u64; NR + 1] = core::array::from_fn(|i| pagemap(a + i * PAGE));
    t.check_why(
        "one write fault mapped all 16 pages",
        pm[..NR].iter().all(|e| e & PRESENT != 0),
        format_args!("{:x?}", &pm[..NR]),
    );
    t.check("the next 64 KiB is untouched", pm[NR] & PRESENT == 0);
    let head = pm[0] & PFN;
    if head != 0 {
        t.check_why(
            "contiguous PFNs from a 64 KiB-aligned one",
            head.is_multiple_of(NR as u64) && (0..NR).all(|i| pm[i] & PFN == head + i as u64),
            format_args!("head {head:#x}"),
        );
    } else {
        println!("t_mthp: skip: pagemap shows no PFNs (not root)");
    }
    if let (Some(x), Some(y)) = (allocs0, number(alloc_path)) {
        t.check_why(
            "stats/anon_fault_alloc grew",
            y > x,
            format_args!("{x} -> {y}"),
        );
    }
    for i in 0..NR {
        poke(a + i * PAGE, i as u8 + 1);
    }
    // fork: the child's write copies its page; the parent keeps its data.
    let st = in_child(|| {
        poke(a + 3 * PAGE, 0xcc);
        let ok = peek(a + 3 * PAGE) == 0xcc
            && (0..NR)
                .filter(|i| *i != 3)
                .all(|i| peek(a + i * PAGE) == i as u8 + 1);
        i32::from(!ok)
    });
    t.eq("the child saw its write and the rest", st, 0);
    t.check(
        "the parent's page is unchanged",
        (0..NR).all(|i| peek(a + i * PAGE) == i as u8 + 1),
    );
    poke(a + 4 * PAGE, 0xaa);
    t.eq(
        "the parent writes after the child left",
        peek(a + 4 * PAGE),
        0xaa,
    );
    // Partial munmap: half the folio goes; the deferred split frees it (cowlab).
    let splits0 = number(split_path);
    let before = mem_free_kb();
    t.check("munmap of 8 pages", munmap(a + 8 * PAGE, 8 * PAGE).is_ok());
    if cowlab {
        let held = mem_free_kb();
        t.check_why(
            "the folio holds the unmapped half",
            before == held,
            format_args!("{before:?} -> {held:?}"),
        );
        t.check(
            "drop_caches 2 runs the split",
            write_to(c"/proc/sys/vm/drop_caches", b"2").is_ok(),
        );
        let after = mem_free_kb();
        t.check_why(
            "MemFree grew by the unmapped 32 KiB (and what else drop_caches freed)",
            matches!((held, after), (Some(h), Some(f)) if f >= h + 32),
            format_args!("{held:?} -> {after:?}"),
        );
        if let (Some(x), Some(y)) = (splits0, number(split_path)) {
            t.eq("stats/split grew by one", y, x + 1);
        }
    }
    t.check(
        "the mapped half keeps its bytes",
        (0..8).all(|i| peek(a + i * PAGE) == if i == 4 { 0xaa } else { i as u8 + 1 }),
    );
    t.check("munmap of the rest", munmap(a, HPAGE).is_ok());
}
