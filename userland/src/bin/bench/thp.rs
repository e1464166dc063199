//! The large-page rows of issue 14, on both kernels in the one-CPU boot:
//!
//! - `thp_fault_2m`: a write to an untouched 2 MiB-aligned part of a `MADV_HUGEPAGE` range: one
//!   fault that allocates, zero-fills (512 x 4 KiB) and maps a PMD; per 2 MiB.
//! - `thp_cow_fault`: a write to a PMD-mapped THP that a live child shares after fork (Linux
//!   since 5.8 and cowlab: the PMD is split and one 4 KiB page copied); per fault.
//! - `thp_zero_read_fault`: a read of an untouched 2 MiB-aligned part of a `MADV_HUGEPAGE` range,
//!   which maps the huge zero page (`use_zero_page=1`) where the kernel has one; per 2 MiB.
//! - `thp_split_pmd`: `mprotect(PROT_READ)` of one 4 KiB subpage in the middle of a PMD-mapped
//!   THP: the VMA split in three and the PMD mapping split into 512 PTEs; per call.
//!
//! Whether a fault really mapped a PMD is checked by timing an access to the next 4 KiB page of
//! the same 2 MiB: a PMD mapping makes it a plain access (the timer's own 5 or so), a PTE
//! mapping another fault (hundreds). A row whose range was not PMD-mapped is skipped with
//! `reason=no-thp` (a kernel without THP, or `enabled=never`), except the zero-page row, which
//! is reported either way with a `bench:` line saying how it was mapped: the huge zero page
//! (read-only: a write then faults), a zero-filled THP the read allocated (cowlab until its huge
//! zero page lands: the row then equals `thp_fault_2m`), or 4 KiB pages.
//!
//! On Linux as `/init` nothing has mounted sysfs: [`linux_thp_setup`] mounts it at `/sys` and
//! makes sure `transparent_hugepage/enabled` is not `never` (Debian's default, `always`, is left
//! as it is, so the other rows, all `MADV_NOHUGEPAGE`, run as before).

use super::{
    fail, madvise, mmap, mprotect, munmap, read_byte, report_samples, tsc, write_byte, Samples,
    ANON, PAGE, PROT_READ, RW, TRIALS,
};
use cowlab_userland::calls::{close, exit_now, fork, pipe, read, waitpid, write};
use cowlab_userland::println;

const HPAGE: usize = 2 << 20;
/// Huge pages per trial (32 MiB).
const HUGE: usize = 16;
const MADV_HUGEPAGE: i32 = 14;
/// An access slower than this (guest instructions, timer included) faulted.
const FAULTED: u64 = 64;

/// The THP rows, in this order.
pub fn thp_rows() {
    linux_thp_setup();
    thp_fault_2m();
    thp_cow_fault();
    thp_zero_read_fault();
    thp_split_pmd();
}

/// A `MADV_HUGEPAGE` range of [`HUGE`] 2 MiB-aligned huge pages inside a larger mapping:
/// `(mapping, its length, the aligned start)`, or the errno of `madvise`.
fn map_huge() -> Result<(usize, usize, usize), cowlab_userland::sys::Errno> {
    let len = (HUGE + 1) * HPAGE;
    let raw = mmap(0, len, RW, ANON).unwrap_or_else(|e| fail("mmap", e));
    let aligned = (raw + HPAGE - 1) & !(HPAGE - 1);
    if let Err(e) = madvise(aligned, HUGE * HPAGE, MADV_HUGEPAGE) {
        let _ = munmap(raw, len);
        return Err(e);
    }
    Ok((raw, len, aligned))
}

/// Whether the 2 MiB at `huge` is mapped by a PMD: the access to its second 4 KiB page takes no
/// fault. A read when `read`, else a write.
fn pmd_mapped(huge: usize, read: bool) -> bool {
    let t0 = tsc();
    if read {
        read_byte(huge + PAGE);
    } else {
        write_byte(huge + PAGE, 1);
    }
    tsc() - t0 < FAULTED
}

fn no_thp(name: &str) {
    println!("BENCH-SKIP name={name} reason=no-thp");
}

fn skip_madvise(name: &str, e: cowlab_userland::sys::Errno) {
    super::skip(name, e);
}

fn thp_fault_2m() {
    const NAME: &str = "thp_fault_2m";
    let mut s = Samples::new(HUGE * TRIALS);
    for _ in 0..TRIALS {
        let (raw, len, huge) = match map_huge() {
            Ok(m) => m,
            Err(e) => return skip_madvise(NAME, e),
        };
        for i in 0..HUGE {
            let at = huge + i * HPAGE;
            let t0 = tsc();
            write_byte(at, 1);
            let t1 = tsc();
            s.push(t1 - t0);
        }
        let ok = pmd_mapped(huge, false);
        let _ = munmap(raw, len);
        if !ok {
            return no_thp(NAME);
        }
    }
    report_samples(NAME, "tsc/2MiB", &mut s);
}

fn thp_cow_fault() {
    const NAME: &str = "thp_cow_fault";
    let mut s = Samples::new(HUGE * TRIALS);
    for _ in 0..TRIALS {
        let (raw, len, huge) = match map_huge() {
            Ok(m) => m,
            Err(e) => return skip_madvise(NAME, e),
        };
        for i in 0..HUGE {
            write_byte(huge + i * HPAGE, 1);
        }
        if !pmd_mapped(huge, false) {
            let _ = munmap(raw, len);
            return no_thp(NAME);
        }
        // The child maps every THP until the parent has written: each write is a COW fault on
        // a shared PMD (as cow_copy_fault, one page per 2 MiB).
        let ready = pipe().unwrap_or_else(|e| fail("pipe", e));
        let done = pipe().unwrap_or_else(|e| fail("pipe", e));
        let pid = fork().unwrap_or_else(|e| fail("fork", e));
        if pid == 0 {
            let _ = write(ready[1], b"r");
            let mut byte = [0u8];
            let _ = read(done[0], &mut byte);
            exit_now(0);
        }
        let mut byte = [0u8];
        if read(ready[0], &mut byte) != Ok(1) {
            fail("read from the child", cowlab_userland::sys::Errno(0));
        }
        for i in 0..HUGE {
            let at = huge + i * HPAGE + 17 * PAGE;
            let t0 = tsc();
            write_byte(at, 2);
            let t1 = tsc();
            s.push(t1 - t0);
        }
        let _ = write(done[1], b"d");
        let _ = waitpid(pid, 0);
        for fd in ready.into_iter().chain(done) {
            let _ = close(fd);
        }
        let _ = munmap(raw, len);
    }
    report_samples(NAME, "tsc/fault", &mut s);
}

fn thp_zero_read_fault() {
    const NAME: &str = "thp_zero_read_fault";
    let mut s = Samples::new(HUGE * TRIALS);
    let mut pmd = true;
    let mut write_faults = true;
    for _ in 0..TRIALS {
        let (raw, len, huge) = match map_huge() {
            Ok(m) => m,
            Err(e) => return skip_madvise(NAME, e),
        };
        for i in 0..HUGE {
            let at = huge + i * HPAGE;
            let t0 = tsc();
            read_byte(at);
            let t1 = tsc();
            s.push(t1 - t0);
        }
        pmd &= pmd_mapped(huge, true);
        // The huge zero page is read-only: a write to it faults. A kernel without one may
        // have allocated a zero-filled THP on the read, which a write does not fault on.
        write_faults &= !pmd_mapped(huge + PAGE, false);
        let _ = munmap(raw, len);
    }
    println!(
        "bench: {NAME}: {}",
        match (pmd, write_faults) {
            (true, true) => "PMD-mapped read-only (the huge zero page)",
            (true, false) => {
                "PMD-mapped writable (the read allocated a zero-filled THP: no huge zero page)"
            }
            (false, _) => "not PMD-mapped (the next 4 KiB read faulted: a 4 KiB read fault)",
        }
    );
    report_samples(NAME, "tsc/2MiB", &mut s);
}

fn thp_split_pmd() {
    const NAME: &str = "thp_split_pmd";
    let mut s = Samples::new(HUGE * TRIALS);
    for _ in 0..TRIALS {
        let (raw, len, huge) = match map_huge() {
            Ok(m) => m,
            Err(e) => return skip_madvise(NAME, e),
        };
        for i in 0..HUGE {
            write_byte(huge + i * HPAGE, 1);
        }
        if !pmd_mapped(huge, false) {
            let _ = munmap(raw, len);
            return no_thp(NAME);
        }
        for i in 0..HUGE {
            let at = huge + i * HPAGE + 256 * PAGE;
            let t0 = tsc();
            let r = mprotect(at, PAGE, PROT_READ);
            let t1 = tsc();
            if let Err(e) = r {
                fail("mprotect", e);
            }
            s.push(t1 - t0);
        }
        let _ = munmap(raw, len);
    }
    report_samples(NAME, "tsc/call", &mut s);
}

/// On Linux as `/init` (pid 1, not cowlab): mounts sysfs at `/sys` if it is not there, and
/// sets `transparent_hugepage/enabled` to `madvise` if it is `never`; prints what it found.
fn linux_thp_setup() {
    use cowlab_userland::calls::{open, O_WRONLY};
    if cowlab_userland::sys::getpid() != 1 || cowlab_userland::test::on_cowlab() {
        return;
    }
    super::linux_mount_sysfs();
    let enabled = c"/sys/kernel/mm/transparent_hugepage/enabled";
    let mut buf = [0u8; 128];
    let n = cowlab_userland::calls::read_file(enabled, &mut buf).unwrap_or(0);
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("?").trim_end();
    if text.contains("[never]") {
        if let Ok(fd) = open(enabled, O_WRONLY) {
            let _ = write(fd, b"madvise");
            let _ = close(fd);
        }
    }
    let mut zero = [0u8; 16];
    let z = cowlab_userland::calls::read_file(
        c"/sys/kernel/mm/transparent_hugepage/use_zero_page",
        &mut zero,
    )
    .unwrap_or(0);
    println!(
        "bench: linux thp enabled={text} use_zero_page={}",
        core::str::from_utf8(&zero[..z]).unwrap_or("?").trim_end()
    );
}
