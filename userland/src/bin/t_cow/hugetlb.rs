//! cow.c's hugetlb memory type (`run_with_hugetlb`, 2 MiB, and 1 GiB with `t_cow hugetlb=1G`):
//! every anon family on a private `MAP_HUGETLB | MAP_HUGE_<size>` page, every non-anon family
//! on a `MFD_HUGETLB` memfd's page (private R/W and shared R/O mappings of it). The 1 GiB
//! pool is sized through its sysfs directory (`hugepages-1048576kB/nr_hugepages`) and counted
//! by its `free_hugepages`; the 2 MiB one as before. The program sizes the pool itself
//! (`/proc/sys/vm/nr_hugepages`, root only) and restores it at the end; where it cannot (not
//! root, a read-only `/proc/sys` in a container, no free 2 MiB page) the cases are SKIPs with
//! the reason, which on cowlab is a failure. Each case also checks that every huge page went
//! back to the pool (`HugePages_Free` in `/proc/meminfo`).

use cowlab_userland::calls::{
    close, fallocate, mmap, munmap, open, read_file, write, MAP_ANONYMOUS, MAP_PRIVATE, O_WRONLY,
    PROT_READ, PROT_WRITE,
};

use crate::families::{self, Msg, Need, PinTest, R};
use crate::sys::*;
use crate::{Anon, Ctx, NonAnon};

/// Bytes of a 2 MiB hugetlb page.
pub const HPAGE: usize = 2 << 20;
/// Bytes of a 1 GiB hugetlb page.
pub const GPAGE: usize = 1 << 30;
const MAP_HUGETLB: u32 = 0x4_0000;

/// `MAP_HUGE_<size>` (and `MFD_HUGE_<size>`): log2(size) << 26.
fn huge_flag(size: usize) -> u32 {
    size.trailing_zeros() << 26
}
const MFD_HUGETLB: u32 = 4;
/// Free huge pages a case may need at once: the page, a COW copy, an unshare copy.
const WANT_FREE: u64 = 3;

/// `memfd_create(name, flags)`.
fn memfd_create_flags(
    name: &core::ffi::CStr,
    flags: u32,
) -> Result<i32, cowlab_userland::sys::Errno> {
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    unsafe {
        cowlab_userland::calls::raw(319, [name.as_ptr() as usize, flags as usize, 0, 0, 0, 0])
    }
    .map(|fd| fd as i32)
}

/// The pool as found, to restore it.
pub struct Pool {
    /// The page size.
    size: usize,
    /// `nr_hugepages` before the program raised it, if it did.
    restore: Option<u64>,
    /// The host-wide pool lock ([`lock_pool`]), held until [`teardown`].
    lock: Option<i32>,
}

/// On the host, xtask runs programs in parallel and they share one pool: `t_cow` and
/// `t_hugetlb` each hold this lock (`flock` on `/tmp/cowlab-hugetlb.lock`) while they size the
/// pool and count its pages. cowlab runs one program per boot and has no `flock`.
fn lock_pool() -> Option<i32> {
    if cowlab_userland::test::on_cowlab() {
        return None;
    }
    let fd = open_mode(c"/tmp/cowlab-hugetlb.lock", O_RDWR | 0o100, 0o666).ok()?;
    // SAFETY: flock(fd, LOCK_EX) takes no memory.
    let _ = unsafe { cowlab_userland::calls::raw(73, [fd as usize, 2, 0, 0, 0, 0]) };
    Some(fd)
}

/// The number after `key` in `/proc/meminfo`.
fn meminfo(key: &[u8]) -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/meminfo", &mut buf)?;
    let text = &buf[..n];
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = text[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit());
    Some(digits.fold(0, |v, d| v * 10 + u64::from(d - b'0')))
}

/// Free pages of `size` (the default size's from `/proc/meminfo`, 1 GiB's from sysfs).
pub fn free_huge_pages(size: usize) -> Option<u64> {
    if size == GPAGE {
        return read_num(c"/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages");
    }
    meminfo(b"HugePages_Free:")
}

/// The pool size file of `size`.
fn nr_path(size: usize) -> &'static core::ffi::CStr {
    if size == GPAGE {
        c"/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"
    } else {
        c"/proc/sys/vm/nr_hugepages"
    }
}

fn read_num(path: &core::ffi::CStr) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = read_file(path, &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    text.trim().parse().ok()
}

fn nr_hugepages(size: usize) -> Option<u64> {
    read_num(nr_path(size))
}

fn set_nr_hugepages(size: usize, n: u64) -> bool {
    let Ok(fd) = open(nr_path(size), O_WRONLY) else {
        return false;
    };
    let mut m = Msg::new();
    let _ = core::fmt::Write::write_fmt(&mut m, format_args!("{n}\n"));
    let ok = write(fd, m.as_str().as_bytes()).is_ok();
    let _ = close(fd);
    ok
}

/// Makes [`WANT_FREE`] huge pages free, raising the pool if needed: the reason if it cannot.
// The reason is a stack-built `Msg` on purpose: nothing here may grow the heap.
#[allow(clippy::result_large_err)]
pub fn setup(size: usize) -> Result<Pool, Msg> {
    let mut pool = Pool {
        size,
        restore: None,
        lock: lock_pool(),
    };
    let Some(free) = free_huge_pages(size) else {
        teardown(pool);
        return Err(msg!("no pool of {} kB pages", size / 1024));
    };
    if free >= WANT_FREE {
        return Ok(pool);
    }
    let Some(nr) = nr_hugepages(size) else {
        teardown(pool);
        return Err(msg!("no {:?}", nr_path(size)));
    };
    if !set_nr_hugepages(size, nr + WANT_FREE - free) {
        teardown(pool);
        return Err(msg!("cannot write {:?} (not root?)", nr_path(size)));
    }
    pool.restore = Some(nr);
    let now = free_huge_pages(size).unwrap_or(0);
    if now < WANT_FREE {
        teardown(pool);
        return Err(msg!(
            "only {now} free {} kB hugetlb pages after raising the pool",
            size / 1024
        ));
    }
    Ok(pool)
}

/// Puts the pool back as it was.
pub fn teardown(pool: Pool) {
    if let Some(nr) = pool.restore {
        let _ = set_nr_hugepages(pool.size, nr);
    }
    if let Some(fd) = pool.lock {
        let _ = close(fd);
    }
}

/// A case's verdict, failed if a huge page did not come back to the pool.
fn with_pool_check(size: usize, case: impl FnOnce() -> R) -> R {
    let before = free_huge_pages(size);
    let r = case();
    let after = free_huge_pages(size);
    match r {
        R::Pass(_) | R::Fail(_) if before != after => R::Fail(msg!(
            "hugetlb pages not back in the pool: HugePages_Free {before:?} -> {after:?}"
        )),
        r => r,
    }
}

/// cow.c `run_with_hugetlb` for an anon family: a private hugetlb page of the pool's size,
/// populated.
pub fn run_anon(ctx: &mut Ctx, family: Anon, pool: &Result<Pool, Msg>) -> R {
    let pool = match pool {
        Err(why) => return R::Skip(Need::Hugetlb, msg!("{why}")),
        Ok(pool) => pool,
    };
    let size = pool.size;
    with_pool_check(size, || {
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | huge_flag(size);
        let mem = match mmap(0, size, PROT_READ | PROT_WRITE, flags) {
            Ok(m) => m,
            Err(e) => return R::Skip(Need::Hugetlb, msg!("MAP_HUGETLB: {e:?}")),
        };
        fill(mem, size, 1);
        let r = match family {
            Anon::Cow { mprotect } => families::cow_in_parent(ctx, mem, size, mprotect, false),
            Anon::VmspliceInChild { mprotect } => {
                families::cow_in_parent(ctx, mem, size, mprotect, true)
            }
            Anon::VmspliceInParent { before_fork } => {
                families::vmsplice_in_parent(ctx, mem, size, before_fork)
            }
            Anon::IoUring { fork } => families::iouring(ctx, mem, size, fork),
            Anon::RoPin { test, fast } => {
                let exclusive = test == PinTest::RoExclusive;
                families::ro_pin(ctx, mem, size, test, fast, true, exclusive)
            }
        };
        let _ = munmap(mem, size);
        xfail_on_linux(family, r)
    })
}

/// cow.c flags the vmsplice families on hugetlb as expected failures (`KSFT_XFAIL`): Linux's
/// `hugetlb_wp` still reuses an anon hugetlb folio when `folio_mapcount == 1`, so a pipe's
/// reference is not counted (the 2016 rule). On the host such a failure is reported as what it
/// is and passes; cowlab applies its era's rule at huge-page granularity and must pass them.
fn xfail_on_linux(family: Anon, r: R) -> R {
    let vmsplice = matches!(
        family,
        Anon::VmspliceInChild { .. } | Anon::VmspliceInParent { .. }
    );
    match r {
        R::Fail(why) if vmsplice && !cowlab_userland::test::on_cowlab() => {
            R::Pass(msg!("XFAIL as cow.c on Linux: {why}"))
        }
        r => r,
    }
}

/// cow.c `run_with_memfd_hugetlb`: a private R/W and a shared R/O mapping of page 0 of a
/// `MFD_HUGETLB | MFD_HUGE_<size>` memfd, both read.
pub fn run_non_anon(ctx: &mut Ctx, family: NonAnon, pool: &Result<Pool, Msg>) -> R {
    let pool = match pool {
        Err(why) => return R::Skip(Need::Hugetlb, msg!("{why}")),
        Ok(pool) => pool,
    };
    let size = pool.size;
    with_pool_check(size, || {
        let fd = match memfd_create_flags(c"test", MFD_HUGETLB | huge_flag(size)) {
            Ok(fd) => fd,
            Err(e) => return R::Skip(Need::Hugetlb, msg!("memfd_create(MFD_HUGETLB): {e:?}")),
        };
        let r = match fallocate(fd, 0, 0, size as i64) {
            Err(e) => R::Fail(msg!("fallocate: {e:?}")),
            Ok(_) => {
                let mem = mmap_fd(size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
                let smem = mmap_fd(size, PROT_READ, MAP_SHARED, fd);
                let r = match (mem, smem) {
                    (Ok(mem), Ok(smem)) => {
                        touch(mem);
                        touch(smem);
                        match family {
                            NonAnon::Cow => families::non_anon_cow(ctx, mem, smem, size),
                            NonAnon::RoPin { fast } => {
                                families::ro_pin(ctx, mem, size, PinTest::Plain, fast, false, false)
                            }
                        }
                    }
                    (m, s) => R::Fail(msg!("mmap: {m:?} {s:?}")),
                };
                for m in [mem, smem].into_iter().flatten() {
                    let _ = munmap(m, size);
                }
                r
            }
        };
        let _ = close(fd);
        r
    })
}
