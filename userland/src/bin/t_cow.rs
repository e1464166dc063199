//! The COW conformance suite: the families of Linux's `tools/testing/selftests/mm/cow.c` on
//! every memory type cowlab has (an anonymous base page; the shared zero page, a memfd and a
//! `/tmp` tmpfile for the non-anon families), with cow.c's parent/child pipe handshake and
//! memcmp verdicts, in KTAP/TAP form (`ok N - FAMILY (MEMORY TYPE)`).
//!
//! On cowlab, after each case (child reaped, memory unmapped, files closed) the frame,
//! reference and pin gauges of `/proc/cowlab/mmstat` must be back at their values before it,
//! and each gup_test pin must show through the GUP-fast counters that the fast path was taken
//! exactly when `rules::gup_must_unshare` allows it. On the host Linux the same binary runs the
//! families that need nothing cowlab-specific; those needing gup_test or io_uring the host lacks
//! are SKIPs. Which families fail under older rule sets (`era=` on the command line):
//! `docs/cow-suite.md`.
#![no_std]
#![no_main]

extern crate alloc;

#[macro_use]
#[path = "t_cow/families.rs"]
mod families;
#[path = "t_cow/hugetlb.rs"]
mod hugetlb;
#[path = "t_cow/mthp.rs"]
mod mthp;
#[path = "t_cow/stats.rs"]
mod stats;
#[path = "t_cow/sys.rs"]
mod sys;
#[path = "t_cow/thp.rs"]
mod thp;
#[path = "t_cow/uring.rs"]
mod uring;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cowlab_mm::Era;
use cowlab_userland::calls::{
    close, fallocate, mmap, munmap, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE,
};
use cowlab_userland::test::{on_cowlab, Outcome, Tap};

use families::{Msg, Need, PinTest, R};
use sys::*;

cowlab_userland::entry!(main);

/// Shared by the families: the gup_test file, the era, and page-sized scratch buffers
/// allocated once (so a case allocates nothing that outlives it and would spoil the baseline).
pub struct Ctx {
    pub gup_fd: Option<i32>,
    pub era: Option<Era>,
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub tmp: Vec<u8>,
}

/// Needs cowlab may still lack: their SKIPs are allowed there. Everything else cowlab must run.
const COWLAB_MAY_SKIP: &[Need] = &[];

#[derive(Clone, Copy)]
enum Anon {
    Cow { mprotect: bool },
    VmspliceInChild { mprotect: bool },
    VmspliceInParent { before_fork: bool },
    IoUring { fork: bool },
    RoPin { test: PinTest, fast: bool },
}

const ANON: &[(&str, Anon)] = &[
    ("Basic COW after fork()", Anon::Cow { mprotect: false }),
    (
        "Basic COW after fork() with mprotect() optimization",
        Anon::Cow { mprotect: true },
    ),
    (
        "vmsplice() + unmap in child",
        Anon::VmspliceInChild { mprotect: false },
    ),
    (
        "vmsplice() + unmap in child with mprotect() optimization",
        Anon::VmspliceInChild { mprotect: true },
    ),
    (
        "vmsplice() before fork(), unmap in parent after fork()",
        Anon::VmspliceInParent { before_fork: true },
    ),
    (
        "vmsplice() + unmap in parent after fork()",
        Anon::VmspliceInParent { before_fork: false },
    ),
    (
        "R/O-mapping a page registered as iouring fixed buffer",
        Anon::IoUring { fork: false },
    ),
    (
        "fork() with an iouring fixed buffer",
        Anon::IoUring { fork: true },
    ),
    (
        "R/O GUP pin on R/O-mapped shared page",
        Anon::RoPin {
            test: PinTest::Shared,
            fast: false,
        },
    ),
    (
        "R/O GUP-fast pin on R/O-mapped shared page",
        Anon::RoPin {
            test: PinTest::Shared,
            fast: true,
        },
    ),
    (
        "R/O GUP pin on R/O-mapped previously-shared page",
        Anon::RoPin {
            test: PinTest::PreviouslyShared,
            fast: false,
        },
    ),
    (
        "R/O GUP-fast pin on R/O-mapped previously-shared page",
        Anon::RoPin {
            test: PinTest::PreviouslyShared,
            fast: true,
        },
    ),
    (
        "R/O GUP pin on R/O-mapped exclusive page",
        Anon::RoPin {
            test: PinTest::RoExclusive,
            fast: false,
        },
    ),
    (
        "R/O GUP-fast pin on R/O-mapped exclusive page",
        Anon::RoPin {
            test: PinTest::RoExclusive,
            fast: true,
        },
    ),
];

#[derive(Clone, Copy)]
enum NonAnon {
    Cow,
    RoPin { fast: bool },
}

const NON_ANON: &[(&str, NonAnon)] = &[
    ("Basic COW", NonAnon::Cow),
    ("R/O longterm GUP pin", NonAnon::RoPin { fast: false }),
    ("R/O longterm GUP-fast pin", NonAnon::RoPin { fast: true }),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum NonAnonMem {
    ZeroPage,
    Memfd,
    Tmpfile,
}

const NON_ANON_MEMS: &[(&str, NonAnonMem)] = &[
    ("shared zeropage", NonAnonMem::ZeroPage),
    ("memfd", NonAnonMem::Memfd),
    ("tmpfile", NonAnonMem::Tmpfile),
];

/// cow.c `do_run_with_base_page`: one private anonymous page, populated.
fn run_anon(ctx: &mut Ctx, family: Anon) -> R {
    let rw = PROT_READ | PROT_WRITE;
    let mem = match mmap(0, PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS) {
        Ok(m) => m,
        Err(e) => return R::Fail(msg!("mmap: {e:?}")),
    };
    fill(mem, PAGE, 1);
    let r = match family {
        Anon::Cow { mprotect } => families::cow_in_parent(ctx, mem, PAGE, mprotect, false),
        Anon::VmspliceInChild { mprotect } => {
            families::cow_in_parent(ctx, mem, PAGE, mprotect, true)
        }
        Anon::VmspliceInParent { before_fork } => {
            families::vmsplice_in_parent(ctx, mem, PAGE, before_fork)
        }
        Anon::IoUring { fork } => families::iouring(ctx, mem, PAGE, fork),
        Anon::RoPin { test, fast } => {
            // At pin time the page is anon; exclusive only if it was never shared.
            let exclusive = test == PinTest::RoExclusive;
            families::ro_pin(ctx, mem, PAGE, test, fast, true, exclusive)
        }
    };
    // Some families unmap it themselves; unmapping a hole is not an error.
    let _ = munmap(mem, PAGE);
    r
}

/// cow.c `run_with_zeropage`, `run_with_memfd`, `run_with_tmpfile`: a private writable mapping
/// `mem` and a read-only one `smem` of the same page (the zero page, or page 0 of the file),
/// both faulted in by a read.
fn run_non_anon(ctx: &mut Ctx, family: NonAnon, kind: NonAnonMem) -> R {
    let rw = PROT_READ | PROT_WRITE;
    let fd = match kind {
        NonAnonMem::ZeroPage => -1,
        NonAnonMem::Memfd => match memfd_create(c"test") {
            Ok(fd) => fd,
            Err(e) => return R::Fail(msg!("memfd_create: {e:?}")),
        },
        NonAnonMem::Tmpfile => match families::tmpfile() {
            Ok(fd) => fd,
            Err(e) => return R::Skip(Need::Tmpfile, msg!("open(/tmp, O_TMPFILE): {e:?}")),
        },
    };
    let r = run_non_anon_fd(ctx, family, fd, rw);
    if fd >= 0 {
        let _ = close(fd);
    }
    r
}

fn run_non_anon_fd(ctx: &mut Ctx, family: NonAnon, fd: i32, rw: u32) -> R {
    let (mem, smem) = if fd < 0 {
        let anon = MAP_PRIVATE | MAP_ANONYMOUS;
        (mmap(0, PAGE, rw, anon), mmap(0, PAGE, PROT_READ, anon))
    } else {
        // A file of one page of zeroes.
        if let Err(e) = fallocate(fd, 0, 0, PAGE as i64) {
            return R::Fail(msg!("fallocate: {e:?}"));
        }
        (
            mmap_fd(PAGE, rw, MAP_PRIVATE, fd),
            mmap_fd(PAGE, PROT_READ, MAP_SHARED, fd),
        )
    };
    let r = match (mem, smem) {
        (Ok(mem), Ok(smem)) => {
            touch(mem);
            touch(smem);
            match family {
                NonAnon::Cow => families::non_anon_cow(ctx, mem, smem, PAGE),
                NonAnon::RoPin { fast } => {
                    families::ro_pin(ctx, mem, PAGE, PinTest::Plain, fast, false, false)
                }
            }
        }
        (m, s) => R::Fail(msg!("mmap: {m:?} {s:?}")),
    };
    for m in [mem, smem].into_iter().flatten() {
        let _ = munmap(m, PAGE);
    }
    r
}

/// Runs one case between two counter snapshots and prints its TAP line.
fn run_case(
    tap: &mut Tap,
    ctx: &mut Ctx,
    cowlab: bool,
    desc: &str,
    case: impl FnOnce(&mut Ctx) -> R,
) {
    let before = stats::read();
    let r = case(ctx);
    let after = stats::read();
    let leaks = match (cowlab, before, after) {
        (true, Some(b), Some(a)) => a.leaks_since(&b),
        (true, _, _) => String::from("/proc/cowlab/mmstat unreadable"),
        (false, _, _) => String::new(),
    };
    let outcome = match r {
        R::Pass(diag) if leaks.is_empty() => Outcome::Pass(diag.as_str().into()),
        R::Pass(_) => Outcome::Fail(format!("not back to baseline: {leaks}")),
        R::Fail(why) if leaks.is_empty() => Outcome::Fail(why.as_str().into()),
        R::Fail(why) => Outcome::Fail(format!("{}; not back to baseline: {leaks}", why.as_str())),
        R::Skip(need, why) if cowlab && !COWLAB_MAY_SKIP.contains(&need) => Outcome::Fail(format!(
            "cowlab must support this ({need:?}): {}",
            why.as_str()
        )),
        R::Skip(_, why) => Outcome::Skip(why.as_str().into()),
    };
    tap.result(desc, &outcome);
}

/// Every family on cow.c's hugetlb memory type of `size` (2 MiB, or 1 GiB with `hugetlb=1G`:
/// `t_cow/hugetlb.rs`), with the pool raised for the run and restored after it.
fn run_hugetlb_cases(tap: &mut Tap, ctx: &mut Ctx, cowlab: bool, size: usize) {
    let pool = hugetlb::setup(size);
    if let Err(why) = &pool {
        tap.diag(format_args!("hugetlb: {why}"));
    }
    let kb = size / 1024;
    for &(desc, family) in ANON {
        let desc = format!("{desc} (hugetlb {kb} kB)");
        run_case(tap, ctx, cowlab, &desc, |ctx| {
            hugetlb::run_anon(ctx, family, &pool)
        });
    }
    for &(desc, family) in NON_ANON {
        let desc = format!("{desc} (hugetlb {kb} kB)");
        run_case(tap, ctx, cowlab, &desc, |ctx| {
            hugetlb::run_non_anon(ctx, family, &pool)
        });
    }
    if let Ok(pool) = pool {
        hugetlb::teardown(pool);
    }
}

/// Touches 64 KiB of stack so that no case faults a new stack page in (which would move the
/// frame counts between a case's two snapshots).
#[inline(never)]
fn prefault_stack() {
    let mut probe = [0u8; 64 * 1024];
    core::hint::black_box(&mut probe);
}

fn main() -> i32 {
    let cowlab = on_cowlab();
    // `mthp=SIZES`: only cow.c's mTHP memory types of those sizes (`t_cow/mthp.rs`).
    let mthp_sizes = match mthp::sizes_from_args() {
        Ok(sizes) => sizes,
        Err(why) => {
            cowlab_userland::println!("t_cow: {why}");
            return 2;
        }
    };
    // huge3: `hugetlb=1G`: only cow.c's hugetlb 1 GiB memory type (every family on 1 GiB
    // pages, with 1 GiB scratch buffers: a boot of its own with 1 GiB pages, and long).
    let gigantic = cowlab_userland::args::args()
        .skip(1)
        .any(|a| a.to_bytes() == b"hugetlb=1G");
    if gigantic {
        return run_gigantic(cowlab);
    }
    let base = mthp_sizes.is_empty();
    let planned = (ANON.len() + NON_ANON.len() * NON_ANON_MEMS.len()) as u32;
    let planned = planned + (ANON.len() + NON_ANON.len()) as u32; // hugetlb (2048 kB)
                                                                  // thp2: the THP memory types (cases after the base-page ones).
    let planned = planned + thp::planned();
    let planned = if base {
        planned
    } else {
        mthp::planned(&mthp_sizes)
    };
    let mut tap = Tap::new("t_cow", planned);
    prefault_stack();
    let first = stats::read();
    let era = first.and_then(|s| Era::from_year(s.era));
    let gup_fd = open_mode(c"/sys/kernel/debug/gup_test", O_RDWR, 0).ok();
    let mut ctx = Ctx {
        gup_fd,
        era,
        old: alloc::vec![0u8; thp::THP],
        new: alloc::vec![0u8; thp::THP],
        tmp: alloc::vec![0u8; thp::THP],
    };
    // thp2: THP-sized buffers, every page touched before the first baseline.
    for buf in [&mut ctx.old, &mut ctx.new, &mut ctx.tmp] {
        fill(buf.as_mut_ptr() as usize, buf.len(), 0);
    }
    match (cowlab, first) {
        (true, Some(s)) => tap.diag(format_args!(
            "cowlab era {}: baselines from /proc/cowlab/mmstat",
            s.era
        )),
        (true, None) => tap.diag("cowlab without a readable /proc/cowlab/mmstat"),
        (false, _) => tap.diag("host Linux: no /proc/cowlab/mmstat, baselines not checked"),
    }
    if gup_fd.is_none() {
        tap.diag("/sys/kernel/debug/gup_test unavailable");
    }

    if !base {
        mthp::run_all(&mut tap, &mut ctx, cowlab, &mthp_sizes);
        if let Some(fd) = ctx.gup_fd {
            let _ = close(fd);
        }
        return tap.finish(planned);
    }
    for &(desc, family) in ANON {
        let desc = format!("{desc} (base page)");
        run_case(&mut tap, &mut ctx, cowlab, &desc, |ctx| {
            run_anon(ctx, family)
        });
    }
    for &(desc, family) in NON_ANON {
        for &(mem_name, kind) in NON_ANON_MEMS {
            let desc = format!("{desc} ({mem_name})");
            run_case(&mut tap, &mut ctx, cowlab, &desc, |ctx| {
                run_non_anon(ctx, family, kind)
            });
        }
    }
    run_hugetlb_cases(&mut tap, &mut ctx, cowlab, hugetlb::HPAGE);
    thp::run_all(&mut tap, &mut ctx, cowlab);
    if let Some(fd) = ctx.gup_fd {
        let _ = close(fd);
    }
    tap.finish(planned)
}

/// `t_cow hugetlb=1G`: every family on 1 GiB hugetlb pages (cow.c runs them for each hugetlb
/// size the machine has). The scratch buffers are 1 GiB each, as cow.c's `malloc(size)`.
/// Where there are no 1 GiB pages (no `hugepages-1048576kB`, or none can be had) every case is
/// a SKIP, as cow.c's, and on cowlab a failure.
fn run_gigantic(cowlab: bool) -> i32 {
    let planned = (ANON.len() + NON_ANON.len()) as u32;
    let mut tap = Tap::new("t_cow", planned);
    let t_setup = cowlab_userland::calls::monotonic_ns();
    let big = || alloc::vec![0u8; hugetlb::GPAGE];
    let mut ctx = Ctx {
        gup_fd: open_mode(c"/sys/kernel/debug/gup_test", O_RDWR, 0).ok(),
        era: stats::read().and_then(|s| Era::from_year(s.era)),
        old: big(),
        new: big(),
        tmp: big(),
    };
    for buf in [&mut ctx.old, &mut ctx.new, &mut ctx.tmp] {
        // THPs where the kernel gives them (cowlab's `enabled` is `madvise`): 1536 2 MiB
        // faults instead of 786432 4 KiB ones for the 3 GiB, minutes of TCG time less. The
        // buffers are scratch, not memory under test; a refusal only costs time.
        let (start, end) = (buf.as_ptr() as usize, buf.as_ptr() as usize + buf.len());
        let aligned = start.next_multiple_of(thp::THP);
        if aligned < end {
            let _ = cowlab_userland::calls::madvise(aligned, (end - aligned) & !(thp::THP - 1), 14);
        }
        fill(buf.as_mut_ptr() as usize, buf.len(), 0);
    }
    prefault_stack();
    let t0 = cowlab_userland::calls::monotonic_ns();
    tap.diag(format_args!(
        "3 GiB of scratch buffers ready in {} ms",
        (t0 - t_setup) / 1_000_000
    ));
    run_hugetlb_cases(&mut tap, &mut ctx, cowlab, hugetlb::GPAGE);
    let ms = (cowlab_userland::calls::monotonic_ns() - t0) / 1_000_000;
    tap.diag(format_args!(
        "hugetlb 1048576 kB: {planned} cases in {ms} ms"
    ));
    if let Some(fd) = ctx.gup_fd {
        let _ = close(fd);
    }
    tap.finish(planned)
}
