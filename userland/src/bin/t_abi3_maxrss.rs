//! `ru_maxrss` (KiB) in getrusage and wait4: the process's resident high-water mark survives
//! `MADV_DONTNEED` and `munmap` of the pages that made it, a reaped child's peak reaches
//! wait4's rusage and `RUSAGE_CHILDREN` (the largest child, not the sum), and a peak made
//! before exec stays the process's after it. The same assertions on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use cowlab_userland::calls::*;
use cowlab_userland::test::{sibling, Tester};

cowlab_userland::entry!(main);

const MIB: usize = 1 << 20;
const MADV_DONTNEED: i32 = 4;

/// `ru_maxrss` of getrusage(who).
fn maxrss(who: i32) -> i64 {
    let mut ru = [0i64; 18];
    // SAFETY: getrusage writes one struct rusage (18 longs).
    let _ = unsafe { raw(98, [who as usize, ru.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    ru[4]
}

/// Maps and touches `mib` MiB; the address.
fn touch(mib: usize) -> usize {
    let p = mmap(
        0,
        mib * MIB,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    )
    .unwrap_or(0);
    for off in (0..mib * MIB).step_by(4096) {
        // SAFETY: inside the fresh private mapping.
        unsafe { core::ptr::write_volatile((p + off) as *mut u8, 1) };
    }
    p
}

/// Reaps `pid` with wait4: (status, ru_maxrss).
fn wait4(pid: i32) -> (i32, i64) {
    let mut status = 0i32;
    let mut ru = [0i64; 18];
    let args = [
        pid as usize,
        &mut status as *mut i32 as usize,
        0,
        ru.as_mut_ptr() as usize,
        0,
        0,
    ];
    // SAFETY: wait4 writes one int and one struct rusage.
    let _ = unsafe { raw(61, args) };
    (status, ru[4])
}

/// A child that touches `mib` MiB, unmaps it, and then runs `then`.
fn child(mib: usize, then: impl FnOnce()) -> i32 {
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        let p = touch(mib);
        let _ = munmap(p, mib * MIB);
        then();
        exit_now(0);
    }
    pid
}

fn main() -> i32 {
    if cowlab_userland::args::args().nth(1).map(|a| a.to_bytes()) == Some(b"exit") {
        return 0;
    }
    let mut t = Tester::new("t_abi3_maxrss");
    // Linux's RSS counters are per-CPU batched: the mark can lag the true peak by a few
    // hundred KiB, so the bounds below allow 256 KiB.
    let base = maxrss(0);
    t.check_why("a running process has a peak", base > 0, base);
    let p = touch(8);
    let _ = madvise(p, 8 * MIB, MADV_DONTNEED);
    let after = maxrss(0);
    t.check_why(
        "the peak survives MADV_DONTNEED",
        after >= 8 * 1024 - 256,
        format!("{base} -> {after} KiB"),
    );
    let _ = munmap(p, 8 * MIB);
    let p = touch(10);
    let _ = munmap(p, 10 * MIB);
    let own = maxrss(0);
    t.check_why(
        "and munmap: the higher peak counts",
        own >= 10 * 1024 - 256,
        format!("{base} -> {own} KiB"),
    );
    t.eq("no children yet", maxrss(-1), 0);

    let (status, ru) = wait4(child(16, || {}));
    t.eq("child exits 0", status, 0);
    t.check_why(
        "wait4 reports the child's peak",
        ru >= 16 * 1024,
        format!("{ru} KiB"),
    );
    let (_, small) = wait4(child(4, || {}));
    let children = maxrss(-1);
    t.check_why(
        "RUSAGE_CHILDREN: the largest child's peak",
        children >= 16 * 1024 && children == ru.max(small),
        format!("{children} KiB; children {ru} and {small}"),
    );
    t.check_why(
        "not the sum",
        children < 16 * 1024 + 4 * 1024,
        format!("{children} KiB"),
    );
    t.check_why(
        "the parent's own peak is its own",
        maxrss(0) < 16 * 1024,
        format!("{} KiB", maxrss(0)),
    );
    let me = sibling("t_abi3_maxrss");
    let (status, ru) = wait4(child(20, || {
        let _ = cowlab_userland::process::exec(&[me.as_slice(), b"exit"]);
    }));
    t.eq("exec'd child exits 0", status, 0);
    t.check_why(
        "a peak before exec stays the process's",
        ru >= 20 * 1024,
        format!("{ru} KiB"),
    );
    t.finish()
}
