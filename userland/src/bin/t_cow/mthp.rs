//! cow.c's mTHP memory types (issue 14): every anon family on a PTE-mapped THP, a single PTE
//! of a THP, a partially mremap()ed THP and a partially shared THP of each mTHP size, 16 kB to
//! 1024 kB (cow.c `run_anon_test_case` over `thpsizes`, the PMD size left to `thp.rs`). As
//! cow.c, a size runs with its `hugepages-<N>kB/enabled` at `always` and the PMD size at
//! `never`: on cowlab the suite writes both and restores them after the size; on a host
//! Linux it writes nothing and a size that is not `always` there is a SKIP (cow.c, which
//! writes the settings as root, would run it).
//!
//! The sizes run only when asked for, in a boot of their own: `t_cow mthp=16,32` runs the
//! cases of those sizes and nothing else, `t_cow mthp=all` every size (392 cases); plain
//! `t_cow` none. The programs tier boots `t_cow mthp=...` three times (xtask's
//! `OPTION_RUNS`), so each boot stays within the tier's time limit.

use alloc::format;

use cowlab_userland::calls::{close, open, read_file, write, O_WRONLY};
use cowlab_userland::test::Tap;

use crate::families::{Msg, Need, R};
use crate::thp::{run_thp, ThpRun};
use crate::{run_case, Ctx, ANON};

/// The mTHP sizes in kB (orders 2..=8).
pub const SIZES_KB: [usize; 7] = [16, 32, 64, 128, 256, 512, 1024];

/// The sizes `mthp=LIST` asks for (`all`, or kB values separated by commas), from argv;
/// `Err` names a value that is no mTHP size.
pub fn sizes_from_args() -> Result<alloc::vec::Vec<usize>, alloc::string::String> {
    let mut out = alloc::vec::Vec::new();
    for arg in cowlab_userland::args::args().skip(1) {
        if arg.to_bytes() == b"hugetlb=1G" {
            // huge3's 1 GiB hugetlb run (`t_cow.rs`), not an mTHP size.
            continue;
        }
        let Some(list) = arg.to_bytes().strip_prefix(b"mthp=") else {
            return Err(format!(
                "unknown argument {arg:?} (mthp=all or mthp=16,64,...)"
            ));
        };
        if list == b"all" {
            out.extend(SIZES_KB);
            continue;
        }
        for word in list.split(|b| *b == b',') {
            let kb = core::str::from_utf8(word)
                .ok()
                .and_then(|w| w.parse::<usize>().ok())
                .filter(|kb| SIZES_KB.contains(kb))
                .ok_or_else(|| format!("no mTHP size {:?}", core::str::from_utf8(word)))?;
            out.push(kb);
        }
    }
    Ok(out)
}

/// cow.c's runs on an mTHP size (the PMD-mapped run only exists for the PMD size).
const RUNS: &[(&str, ThpRun)] = &[
    ("PTE-mapped THP", ThpRun::Pte),
    ("single PTE-mapped THP", ThpRun::SinglePte),
    ("partially mremap()'ed THP", ThpRun::PartialMremap),
    ("partially shared THP", ThpRun::PartialShared),
];

/// The cases of `sizes`.
pub fn planned(sizes: &[usize]) -> u32 {
    (sizes.len() * ANON.len() * RUNS.len()) as u32
}

fn enabled_path(kb: usize) -> alloc::ffi::CString {
    alloc::ffi::CString::new(format!(
        "/sys/kernel/mm/transparent_hugepage/hugepages-{kb}kB/enabled"
    ))
    .expect("no NUL in the path")
}

fn set(kb: usize, value: &[u8]) -> bool {
    let Ok(fd) = open(&enabled_path(kb), O_WRONLY) else {
        return false;
    };
    let ok = write(fd, value).is_ok();
    let _ = close(fd);
    ok
}

/// Is the size `kb` `always` (cow.c's setting for its run)?
fn always(kb: usize) -> bool {
    let mut b = [0u8; 96];
    read_file(&enabled_path(kb), &mut b)
        .is_some_and(|n| b[..n].windows(8).any(|w| w == b"[always]"))
}

/// Every anon family on each of `sizes`.
pub fn run_all(tap: &mut Tap, ctx: &mut Ctx, cowlab: bool, sizes: &[usize]) {
    for &kb in sizes {
        if cowlab {
            let ok = set(2048, b"never") && set(kb, b"always");
            if !ok {
                tap.diag(format_args!(
                    "mTHP {kb} kB: the settings could not be written"
                ));
            }
        }
        let on = always(kb);
        for &(desc, family) in ANON {
            for &(mem_name, run) in RUNS {
                let desc = format!("{desc} ({mem_name} ({kb} kB))");
                run_case(tap, ctx, cowlab, &desc, |ctx| {
                    if on {
                        run_thp(ctx, family, run, kb * 1024)
                    } else {
                        R::Skip(Need::Thp, msg!("hugepages-{kb}kB is not enabled"))
                    }
                });
            }
        }
        if cowlab {
            let _ = set(kb, b"never") && set(2048, b"inherit");
        }
    }
}
