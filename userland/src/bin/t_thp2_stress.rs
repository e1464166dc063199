//! A seeded THP stress test (issue 14): random THP faults (reads of untouched ranges map the
//! huge zero page, writes THPs), PMD splits (mprotect of one page), partial `MADV_DONTNEED`,
//! munmap and remap of parts, `MADV_COLLAPSE`, fork with the child checking and writing its
//! copy, vmsplice references, and on cowlab the deferred split (`drop_caches` 2), over 4 MiB of
//! `MADV_HUGEPAGE` memory; every byte is checked against a model (one value per page) after
//! each step that could break it and in full at the end. `t_thp2_stress [SEED [STEPS]]`
//! (default seed 1, 150 steps: a few seconds under TCG). On cowlab `MemFree` must be back at
//! its start value.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::rng::Rng;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const HPAGE: usize = 2 << 20;
const REGIONS: usize = 2;
const LEN: usize = REGIONS * HPAGE;
const PAGES: usize = LEN / PAGE;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const MADV_DONTNEED: i32 = 4;
const MADV_HUGEPAGE: i32 = 14;
const MADV_COLLAPSE: i32 = 25;
const VMSPLICE: usize = 278;

fn word(v: u8) -> u64 {
    u64::from(v) * 0x0101_0101_0101_0101
}

/// Writes `v` over the whole page at `addr`.
fn fill_page(addr: usize, v: u8) {
    for off in (0..PAGE).step_by(8) {
        // SAFETY: `addr` is a mapped, writable page of this process.
        unsafe { core::ptr::write_volatile((addr + off) as *mut u64, word(v)) }
    }
}

/// Does every byte of the page at `addr` hold `v`?
fn page_is(addr: usize, v: u8) -> bool {
    (0..PAGE).step_by(8).all(|off| {
        // SAFETY: `addr` is a mapped, readable page of this process.
        unsafe { core::ptr::read_volatile((addr + off) as *const u64) == word(v) }
    })
}

/// The first page whose contents differ from the model.
fn first_mismatch(base: usize, model: &[u8; PAGES]) -> Option<usize> {
    (0..PAGES).find(|&i| !page_is(base + i * PAGE, model[i]))
}

fn vmsplice(fd: i32, base: usize, len: usize) -> Result<usize, Errno> {
    let iov = [base, len];
    // SAFETY: one iovec naming a page of this process; the kernel only takes references.
    unsafe { raw(VMSPLICE, [fd as usize, iov.as_ptr() as usize, 1, 0, 0, 0]) }
}

fn mem_free_kb() -> Option<u64> {
    let mut buf = [0u8; 2048];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    let text = &buf[..n];
    let at = text.windows(8).position(|w| w == b"MemFree:")? + 8;
    let mut v = 0;
    for d in text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
    {
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

fn arg(n: usize) -> Option<u64> {
    cowlab_userland::args::args()
        .nth(n)
        .and_then(|a| core::str::from_utf8(a.to_bytes()).ok()?.parse().ok())
}

fn main() -> i32 {
    let mut t = Tester::new("t_thp2_stress");
    let cowlab = on_cowlab();
    let seed = arg(1).unwrap_or(1).max(1);
    let steps = arg(2).unwrap_or(150);
    println!("t_thp2_stress: seed {seed}, {steps} steps");
    let mut model = [0u8; PAGES];
    let mut scratch = [0u8; PAGE];
    let free0 = mem_free_kb();
    let raw_start = mmap(0, LEN + HPAGE, RW, ANON).unwrap_or(0);
    t.check("mmap", raw_start != 0);
    if raw_start == 0 {
        return t.finish();
    }
    let base = (raw_start + HPAGE - 1) & !(HPAGE - 1);
    let _ = munmap(raw_start, base - raw_start);
    let _ = munmap(base + LEN, raw_start + HPAGE - base);
    t.eq("MADV_HUGEPAGE", madvise(base, LEN, MADV_HUGEPAGE), Ok(0));
    let mut rng = Rng(seed);
    let mut counts = [0u32; 9];
    let mut bad = None;
    for step in 0..steps {
        let op = rng.below(counts.len());
        counts[op] += 1;
        let i = rng.below(PAGES);
        let v = (rng.below(255) + 1) as u8;
        match op {
            // A write fault (a THP, a huge-zero break, a COW, a small page).
            0 | 1 => {
                fill_page(base + i * PAGE, v);
                model[i] = v;
            }
            // A read fault (maybe the huge zero page) checked at once.
            2 => {
                if !page_is(base + i * PAGE, model[i]) {
                    bad = Some((step, "read", i));
                }
            }
            // MADV_DONTNEED of a run of pages.
            3 => {
                let n = 1 + rng.below(600).min(PAGES - i - 1);
                let _ = madvise(base + i * PAGE, n * PAGE, MADV_DONTNEED);
                model[i..i + n].fill(0);
            }
            // Split a PMD by mprotect of one page.
            4 => {
                let _ = mprotect(base + i * PAGE, PAGE, PROT_READ);
                let _ = mprotect(base + i * PAGE, PAGE, RW);
            }
            // MADV_COLLAPSE of one region: any of Linux's answers, contents unchanged.
            5 => {
                let r = base + (i / 512) * HPAGE;
                match madvise(r, HPAGE, MADV_COLLAPSE) {
                    Ok(_) | Err(Errno(11 | 12 | 22)) => {}
                    Err(_) => bad = Some((step, "collapse errno", i)),
                }
            }
            // munmap a run and map it back (zeros, MADV_HUGEPAGE again).
            6 => {
                let n = 1 + rng.below(300).min(PAGES - i - 1);
                let at = base + i * PAGE;
                let _ = munmap(at, n * PAGE);
                let back = mmap_fixed(at, n * PAGE);
                if back != Ok(at) {
                    bad = Some((step, "remap", i));
                    break;
                }
                let _ = madvise(at, n * PAGE, MADV_HUGEPAGE);
                model[i..i + n].fill(0);
            }
            // fork: the child checks everything and writes its own copy.
            7 => {
                let pid = match fork() {
                    Ok(0) => {
                        if first_mismatch(base, &model).is_some() {
                            exit_now(1);
                        }
                        for k in 0..64 {
                            fill_page(base + ((i + k * 31) % PAGES) * PAGE, 0xee);
                        }
                        exit_now(0)
                    }
                    Ok(pid) => pid,
                    Err(_) => {
                        bad = Some((step, "fork", i));
                        break;
                    }
                };
                let status = waitpid(pid, 0).map(|(_, s)| s).unwrap_or(-1);
                if !(wifexited(status) && wexitstatus(status) == 0) {
                    bad = Some((step, "child saw wrong data", i));
                }
                if let Some(p) = first_mismatch(base, &model) {
                    bad = Some((step, "parent after the child's writes", p));
                }
            }
            // A vmsplice reference, a write, the pipe's page is the old or the new contents.
            _ => {
                let Ok(p) = pipe() else {
                    bad = Some((step, "pipe", i));
                    break;
                };
                let old = model[i];
                let spliced = vmsplice(p[1], base + i * PAGE, PAGE);
                fill_page(base + i * PAGE, v);
                model[i] = v;
                if spliced == Ok(PAGE) {
                    let n = read(p[0], &mut scratch).unwrap_or(0);
                    let ok = n == PAGE
                        && (scratch.iter().all(|&b| b == old) || scratch.iter().all(|&b| b == v));
                    if !ok {
                        bad = Some((step, "vmsplice", i));
                    }
                }
                let _ = close(p[0]);
                let _ = close(p[1]);
                if cowlab && rng.below(4) == 0 {
                    // The deferred split, as a shrinker would run it.
                    if let Ok(fd) = open(c"/proc/sys/vm/drop_caches", O_WRONLY) {
                        let _ = write(fd, b"2");
                        let _ = close(fd);
                    }
                }
            }
        }
        if bad.is_some() {
            break;
        }
        if step % 16 == 15 {
            if let Some(p) = first_mismatch(base, &model) {
                bad = Some((step, "periodic check", p));
                break;
            }
        }
    }
    t.check_why(
        "no step saw wrong data",
        bad.is_none(),
        format_args!("{bad:?}"),
    );
    t.check_why(
        "every byte matches the model at the end",
        first_mismatch(base, &model).is_none(),
        format_args!("{:?}", first_mismatch(base, &model)),
    );
    println!("t_thp2_stress: ops {counts:?}");
    t.eq("munmap", munmap(base, LEN), Ok(0));
    if cowlab {
        let free1 = mem_free_kb();
        t.check_why(
            "MemFree back at its start value",
            free0.is_some() && free0 == free1,
            format_args!("{free0:?} -> {free1:?}"),
        );
    }
    t.finish()
}

fn mmap_fixed(at: usize, len: usize) -> Result<usize, Errno> {
    const MAP_FIXED: u32 = 0x10;
    mmap(at, len, RW, ANON | MAP_FIXED)
}
