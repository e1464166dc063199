//! The THP memory types of cow.c (issue 14, thp2): every anon family on a PMD-mapped THP, a
//! PTE-mapped THP, a single PTE of a THP, a partially mremap()ed THP and a partially shared
//! THP (cow.c `do_run_with_thp`), and the non-anon families on the huge zero page (cow.c
//! `run_with_huge_zeropage`). The cases come after the base-page ones, so the earlier case
//! numbers stay as `docs/cow-suite.md` lists them.
//!
//! A kernel that gives no THP (none configured, `enabled=never`, no free 2 MiB block) or has
//! the huge zero page off makes these SKIPs with cow.c's reasons; on cowlab they are failures
//! (`Need::Thp` is not in `COWLAB_MAY_SKIP`).

use alloc::format;

use cowlab_userland::calls::{
    close, exit_now, fork, madvise, mmap, mprotect, munmap, pread, raw, read_file, MAP_ANONYMOUS,
    MAP_PRIVATE, PROT_READ, PROT_WRITE,
};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tap;

use crate::families::{self, Msg, Need, PinTest, R};
use crate::sys::*;
use crate::{run_case, Anon, Ctx, NonAnon, ANON, NON_ANON};

/// The PMD size cow.c reads from `hpage_pmd_size`; the suite's buffers are this large.
pub const THP: usize = 2 << 20;

const MADV_DONTNEED: i32 = 4;
const MADV_DONTFORK: i32 = 10;
const MADV_DOFORK: i32 = 11;
const MADV_HUGEPAGE: i32 = 14;
const NR_MREMAP: usize = 25;
const MREMAP_MAYMOVE: usize = 1;
const MREMAP_FIXED: usize = 2;

/// cow.c `enum thp_run` without the swap-out variants (cowlab has no swap).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThpRun {
    Pmd,
    Pte,
    SinglePte,
    PartialMremap,
    PartialShared,
}

const THP_RUNS: &[(&str, ThpRun)] = &[
    ("THP", ThpRun::Pmd),
    ("PTE-mapped THP", ThpRun::Pte),
    ("single PTE-mapped THP", ThpRun::SinglePte),
    ("partially mremap()'ed THP", ThpRun::PartialMremap),
    ("partially shared THP", ThpRun::PartialShared),
];

/// The cases this module adds to the plan.
pub fn planned() -> u32 {
    (ANON.len() * THP_RUNS.len() + NON_ANON.len()) as u32
}

/// Runs every THP case after the base-page ones.
pub fn run_all(tap: &mut Tap, ctx: &mut Ctx, cowlab: bool) {
    for &(desc, family) in ANON {
        for &(mem_name, run) in THP_RUNS {
            let desc = format!("{desc} ({mem_name})");
            run_case(tap, ctx, cowlab, &desc, |ctx| {
                run_thp(ctx, family, run, THP)
            });
        }
    }
    for &(desc, family) in NON_ANON {
        let desc = format!("{desc} (huge zeropage)");
        run_case(tap, ctx, cowlab, &desc, |ctx| {
            run_huge_zeropage(ctx, family)
        });
    }
}

/// Is the page at `addr` present (or swapped) according to `/proc/self/pagemap` (cow.c
/// `pagemap_is_populated`)? Needs no privilege: only the flag bits are read.
fn populated(addr: usize) -> bool {
    let Ok(fd) = open_mode(c"/proc/self/pagemap", 0, 0) else {
        return false;
    };
    let mut w = [0u8; 8];
    let ok = pread(fd, &mut w, (addr / PAGE * 8) as u64) == Ok(8);
    let _ = close(fd);
    ok && u64::from_le_bytes(w) & (3 << 62) != 0
}

/// `mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new)`.
fn mremap_fixed(old: usize, len: usize, new: usize) -> Result<usize, Errno> {
    // SAFETY: moves a mapping of this process onto another one of its own; no memory is
    // passed to the kernel.
    unsafe {
        raw(
            NR_MREMAP,
            [old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, new, 0],
        )
    }
}

/// Runs `family` on `size` bytes at `mem` (the dispatch of `run_anon`, with the page state
/// the GUP-fast expectation needs: a partially shared THP's first page is not exclusive).
fn anon_family(ctx: &mut Ctx, family: Anon, mem: usize, size: usize, run: ThpRun) -> R {
    match family {
        Anon::Cow { mprotect } => families::cow_in_parent(ctx, mem, size, mprotect, false),
        Anon::VmspliceInChild { mprotect } => {
            families::cow_in_parent(ctx, mem, size, mprotect, true)
        }
        Anon::VmspliceInParent { before_fork } => {
            families::vmsplice_in_parent(ctx, mem, size, before_fork)
        }
        Anon::IoUring { fork } => families::iouring(ctx, mem, size, fork),
        Anon::RoPin { test, fast } => {
            let exclusive = test == PinTest::RoExclusive && run != ThpRun::PartialShared;
            families::ro_pin(ctx, mem, size, test, fast, true, exclusive)
        }
    }
}

/// cow.c `do_run_with_thp`: a `thp`-aligned range (`MADV_HUGEPAGE` for the PMD size) whose
/// first touch must populate the whole THP or mTHP of `thp` bytes, filled with 1, then shaped
/// as `run` says.
pub(crate) fn run_thp(ctx: &mut Ctx, family: Anon, run: ThpRun, thp: usize) -> R {
    let rw = PROT_READ | PROT_WRITE;
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    let mmap_mem = match mmap(0, 2 * thp, rw, anon) {
        Ok(m) => m,
        Err(e) => return R::Fail(msg!("mmap: {e:?}")),
    };
    let mem = (mmap_mem + thp - 1) & !(thp - 1);
    let mut mremap_mem = None;
    let r = shape_and_run(ctx, family, run, mem, thp, &mut mremap_mem);
    let _ = munmap(mmap_mem, 2 * thp);
    if let Some(m) = mremap_mem {
        let _ = munmap(m, thp / 2);
    }
    r
}

fn shape_and_run(
    ctx: &mut Ctx,
    family: Anon,
    run: ThpRun,
    mem: usize,
    thp: usize,
    mremap_mem: &mut Option<usize>,
) -> R {
    // cow.c advises every size; an mTHP size runs only where it is `always` (`mthp.rs`), and
    // without the hint a host's `inherit` PMD size cannot take the range instead.
    if thp == THP {
        if let Err(e) = madvise(mem, THP, MADV_HUGEPAGE) {
            return R::Fail(msg!("MADV_HUGEPAGE: {e:?}"));
        }
    }
    fill(mem, 1, 1);
    if !populated(mem + thp - PAGE) {
        return R::Skip(Need::Thp, "Did not get a THP populated".into());
    }
    fill(mem, thp, 1);
    let mut size = thp;
    match run {
        ThpRun::Pmd => {}
        ThpRun::Pte | ThpRun::SinglePte => {
            // PTE-map the THP by mapping one subpage R/O for a moment.
            let ok = mprotect(mem + PAGE, PAGE, PROT_READ).is_ok()
                && mprotect(mem + PAGE, PAGE, PROT_READ | PROT_WRITE).is_ok();
            if !ok {
                return R::Fail("mprotect failed".into());
            }
            if run == ThpRun::SinglePte {
                if let Err(e) = madvise(mem + PAGE, thp - PAGE, MADV_DONTNEED) {
                    return R::Fail(msg!("MADV_DONTNEED: {e:?}"));
                }
                size = PAGE;
            }
        }
        ThpRun::PartialMremap => {
            // Move the second half somewhere else; the test runs on the first half.
            let half = thp / 2;
            let to = match mmap(0, half, 0, MAP_PRIVATE | MAP_ANONYMOUS) {
                Ok(m) => m,
                Err(e) => return R::Fail(msg!("mmap: {e:?}")),
            };
            *mremap_mem = Some(to);
            if let Err(e) = mremap_fixed(mem + half, half, to) {
                return R::Fail(msg!("mremap: {e:?}"));
            }
            size = half;
        }
        ThpRun::PartialShared => {
            // Share the first page with a child that exits at once: the rest of the THP was
            // never shared.
            if let Err(e) = madvise(mem + PAGE, thp - PAGE, MADV_DONTFORK) {
                return R::Fail(msg!("MADV_DONTFORK: {e:?}"));
            }
            match fork() {
                Ok(0) => exit_now(0),
                Ok(pid) => {
                    let _ = wait_exit(pid);
                }
                Err(e) => return R::Fail(msg!("fork: {e:?}")),
            }
            if let Err(e) = madvise(mem + PAGE, thp - PAGE, MADV_DOFORK) {
                return R::Fail(msg!("MADV_DOFORK: {e:?}"));
            }
        }
    }
    anon_family(ctx, family, mem, size, run)
}

/// cow.c `has_huge_zeropage`: `use_zero_page` reads 1.
fn has_huge_zeropage() -> bool {
    let mut b = [0u8; 8];
    read_file(c"/sys/kernel/mm/transparent_hugepage/use_zero_page", &mut b)
        .is_some_and(|n| n > 0 && b[0] == b'1')
}

/// cow.c `run_with_huge_zeropage`: a R/W and a R/O private anon THP-aligned range, both read,
/// so both map the huge zero page.
fn run_huge_zeropage(ctx: &mut Ctx, family: NonAnon) -> R {
    if !has_huge_zeropage() {
        return R::Skip(Need::Thp, "Huge zeropage not enabled".into());
    }
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    let (m, s) = (
        mmap(0, 2 * THP, PROT_READ | PROT_WRITE, anon),
        mmap(0, 2 * THP, PROT_READ, anon),
    );
    let r = match (m, s) {
        (Ok(m), Ok(s)) => {
            let mem = (m + THP - 1) & !(THP - 1);
            let smem = (s + THP - 1) & !(THP - 1);
            huge_zeropage_case(ctx, family, mem, smem)
        }
        (m, s) => R::Fail(msg!("mmap: {m:?} {s:?}")),
    };
    for m in [m, s].into_iter().flatten() {
        let _ = munmap(m, 2 * THP);
    }
    r
}

fn huge_zeropage_case(ctx: &mut Ctx, family: NonAnon, mem: usize, smem: usize) -> R {
    let ok = madvise(mem, THP, MADV_HUGEPAGE).is_ok() && madvise(smem, THP, MADV_HUGEPAGE).is_ok();
    if !ok {
        return R::Fail("MADV_HUGEPAGE failed".into());
    }
    touch(mem);
    touch(smem);
    if !populated(mem + PAGE) || !populated(smem + PAGE) {
        return R::Skip(Need::Thp, "Did not get THPs populated".into());
    }
    match family {
        NonAnon::Cow => families::non_anon_cow(ctx, mem, smem, THP),
        NonAnon::RoPin { fast } => {
            families::ro_pin(ctx, mem, THP, PinTest::Plain, fast, false, false)
        }
    }
}
