//! The test families of Linux's `tools/testing/selftests/mm/cow.c`, each a function over a
//! memory range prepared by a memory-type runner in `main`. Each returns a [`R`]; the caller
//! turns it into a TAP line and checks the counters' baseline.

use cowlab_mm::foll::FollFlags;
use cowlab_mm::rules::{self, CowMapping};
use cowlab_mm::Era;
use cowlab_userland::calls::{
    close, exit_now, fork, mprotect, munmap, pipe, pread, PROT_READ, PROT_WRITE,
};
use cowlab_userland::sys::{errno, Errno};

use crate::stats;
use crate::sys::*;
use crate::uring::Ring;
use crate::Ctx;

/// What a case needs that a kernel may lack, for the SKIP policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Need {
    GupTest,
    IoUring,
    Tmpfile,
    /// Free 2 MiB hugetlb pages (`hugetlb.rs`).
    Hugetlb,
    /// A THP (or the huge zero page) the kernel did not give (thp2).
    Thp,
}

/// A message built on the stack: a case allocates nothing on the heap, so the program's own
/// heap cannot grow between a case's two counter snapshots (a failing case's text would
/// otherwise fault in a new arena page and look like a leaked frame).
pub struct Msg {
    buf: [u8; 320],
    len: usize,
}

impl Msg {
    pub const fn new() -> Msg {
        Msg {
            buf: [0; 320],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Msg {
    /// Truncates what does not fit (at a character boundary).
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            let mut b = [0u8; 4];
            let b = c.encode_utf8(&mut b).as_bytes();
            if self.len + b.len() > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + b.len()].copy_from_slice(b);
            self.len += b.len();
        }
        Ok(())
    }
}

impl core::fmt::Display for Msg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Msg {
    fn from(s: &str) -> Msg {
        let mut m = Msg::new();
        let _ = core::fmt::Write::write_str(&mut m, s);
        m
    }
}

/// `format!` into a [`Msg`].
macro_rules! msg {
    ($($t:tt)*) => {{
        let mut m = Msg::new();
        let _ = core::fmt::Write::write_fmt(&mut m, format_args!($($t)*));
        m
    }};
}

/// A case's verdict.
pub enum R {
    Pass(Msg),
    Fail(Msg),
    Skip(Need, Msg),
}

/// Child exit statuses other than the memcmp verdict (0 same, 1 different).
const CHILD_SETUP_FAILED: i32 = 2;

/// cow.c `child_memcmp_fn`: keep a copy, let the parent write, compare.
fn child_memcmp(ctx: &mut Ctx, mem: usize, size: usize, comm: &CommPipes) -> i32 {
    let old = &mut ctx.old[..size];
    copy_out(mem, old);
    comm.signal_child_ready();
    comm.wait_parent_ready();
    i32::from(!same(mem, old))
}

/// cow.c `child_vmsplice_memcmp_fn`: a R/O GUP reference through vmsplice, unmap, let the
/// parent write, then read the pipe: it must still hold the old contents (CVE-2020-29374).
fn child_vmsplice_memcmp(ctx: &mut Ctx, mem: usize, size: usize, comm: &CommPipes) -> i32 {
    copy_out(mem, &mut ctx.old[..size]);
    let Ok(fds) = pipe() else {
        return CHILD_SETUP_FAILED;
    };
    let transferred = match vmsplice(fds[1], mem, size) {
        Ok(n) if n > 0 => n,
        _ => return CHILD_SETUP_FAILED,
    };
    if munmap(mem, size).is_err() {
        return CHILD_SETUP_FAILED;
    }
    comm.signal_child_ready();
    comm.wait_parent_ready();
    match read_full(fds[0], &mut ctx.new[..transferred]) {
        Ok(n) if n == transferred => i32::from(ctx.old[..n] != ctx.new[..n]),
        _ => CHILD_SETUP_FAILED,
    }
}

/// cow.c `do_test_cow_in_parent`: the child keeps (or splices) the page, the parent writes it;
/// the child must not see the write.
pub fn cow_in_parent(
    ctx: &mut Ctx,
    mem: usize,
    size: usize,
    mprotect_dance: bool,
    vmsplice_child: bool,
) -> R {
    let comm = match CommPipes::new() {
        Ok(c) => c,
        Err(e) => return R::Fail(msg!("pipe: {e:?}")),
    };
    let pid = match fork() {
        Ok(0) => {
            let status = if vmsplice_child {
                child_vmsplice_memcmp(ctx, mem, size, &comm)
            } else {
                child_memcmp(ctx, mem, size, &comm)
            };
            exit_now(status)
        }
        Ok(pid) => pid,
        Err(e) => return R::Fail(msg!("fork: {e:?}")),
    };
    comm.wait_child_ready();
    if mprotect_dance {
        // mprotect's optimisation may map pages writable directly (can_change_pte_writable):
        // the dance must not let the write skip the COW.
        let ok = mprotect(mem, size, PROT_READ).is_ok()
            && mprotect(mem, size, PROT_READ | PROT_WRITE).is_ok();
        if !ok {
            comm.signal_parent_ready();
            let _ = wait_exit(pid);
            return R::Fail("mprotect failed".into());
        }
    }
    fill(mem, size, 0xff);
    comm.signal_parent_ready();
    match wait_exit(pid) {
        Some(0) => R::Pass(Msg::new()),
        Some(1) => R::Fail("leak from parent into child".into()),
        Some(s) => R::Fail(msg!("child setup failed (status {s})")),
        None => R::Fail("child did not exit normally".into()),
    }
}

/// cow.c `do_test_vmsplice_in_parent`: the parent splices (before or after fork) and unmaps,
/// the child writes; the pipe must still hold the parent's old contents.
pub fn vmsplice_in_parent(ctx: &mut Ctx, mem: usize, size: usize, before_fork: bool) -> R {
    copy_out(mem, &mut ctx.old[..size]);
    let comm = match CommPipes::new() {
        Ok(c) => c,
        Err(e) => return R::Fail(msg!("pipe: {e:?}")),
    };
    let fds = match pipe() {
        Ok(f) => f,
        Err(e) => return R::Fail(msg!("pipe: {e:?}")),
    };
    let r = vmsplice_in_parent_piped(ctx, mem, size, before_fork, &comm, fds);
    let _ = close(fds[0]);
    let _ = close(fds[1]);
    r
}

fn vmsplice_in_parent_piped(
    ctx: &mut Ctx,
    mem: usize,
    size: usize,
    before_fork: bool,
    comm: &CommPipes,
    fds: [i32; 2],
) -> R {
    let mut transferred = 0;
    if before_fork {
        match vmsplice(fds[1], mem, size) {
            Ok(n) if n > 0 => transferred = n,
            r => return R::Fail(msg!("vmsplice: {r:?}")),
        }
    }
    let pid = match fork() {
        Ok(0) => {
            comm.signal_child_ready();
            comm.wait_parent_ready();
            fill(mem, size, 0xff);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(e) => return R::Fail(msg!("fork: {e:?}")),
    };
    if !before_fork {
        match vmsplice(fds[1], mem, size) {
            Ok(n) if n > 0 => transferred = n,
            r => {
                comm.signal_parent_ready();
                let _ = wait_exit(pid);
                return R::Fail(msg!("vmsplice: {r:?}"));
            }
        }
    }
    comm.wait_child_ready();
    let unmapped = munmap(mem, size);
    comm.signal_parent_ready();
    if wait_exit(pid).is_none() {
        return R::Fail("child did not exit normally".into());
    }
    if let Err(e) = unmapped {
        return R::Fail(msg!("munmap: {e:?}"));
    }
    match read_full(fds[0], &mut ctx.new[..transferred]) {
        Ok(n) if n == transferred => {
            if ctx.old[..n] == ctx.new[..n] {
                R::Pass(Msg::new())
            } else {
                R::Fail("leak from child into parent".into())
            }
        }
        r => R::Fail(msg!("read: {r:?}")),
    }
}

/// Linux `clear_softdirty()`: `4` to `/proc/self/clear_refs`.
fn clear_softdirty() -> Result<(), Errno> {
    let fd = cowlab_userland::calls::open(c"/proc/self/clear_refs", 1)?;
    let r = cowlab_userland::calls::write(fd, b"4");
    let _ = close(fd);
    r.map(|_| ())
}

/// mprotect R/O, clear soft-dirty, mprotect R/W: the page ends up mapped read-only (soft-dirty
/// tracking forbids mprotect from making it writable at once), so the next write faults.
// The message stays on the stack on purpose (see `Msg`): no heap inside a measured case.
#[allow(clippy::result_large_err)]
fn ro_map_dance(mem: usize, size: usize) -> Result<(), Msg> {
    mprotect(mem, size, PROT_READ).map_err(|e| msg!("mprotect: {e:?}"))?;
    clear_softdirty().map_err(|e| msg!("clear_refs: {e:?}"))?;
    mprotect(mem, size, PROT_READ | PROT_WRITE).map_err(|e| msg!("mprotect: {e:?}"))?;
    Ok(())
}

/// A `tmpfile()`: an unnamed file in `/tmp`.
pub fn tmpfile() -> Result<i32, Errno> {
    open_mode(c"/tmp", O_TMPFILE | O_RDWR, 0o600)
}

/// cow.c `do_test_iouring`: a R/W long-term pin (io_uring fixed buffer), then either the page
/// is mapped R/O by the soft-dirty dance or the process forks; the parent writes and the pin
/// must see the write (checked by writing the buffer to a file through the registration).
pub fn iouring(ctx: &mut Ctx, mem: usize, size: usize, use_fork: bool) -> R {
    let comm = match CommPipes::new() {
        Ok(c) => c,
        Err(e) => return R::Fail(msg!("pipe: {e:?}")),
    };
    let file = match tmpfile() {
        Ok(fd) => fd,
        Err(e) => return R::Skip(Need::Tmpfile, msg!("open(/tmp, O_TMPFILE): {e:?}")),
    };
    let r = iouring_with_file(ctx, mem, size, use_fork, &comm, file);
    let _ = close(file);
    r
}

fn iouring_with_file(
    ctx: &mut Ctx,
    mem: usize,
    size: usize,
    use_fork: bool,
    comm: &CommPipes,
    file: i32,
) -> R {
    let ring = match Ring::new(1) {
        Ok(r) => r,
        Err(e) => return R::Skip(Need::IoUring, msg!("io_uring_setup: {e:?}")),
    };
    if let Err(e) = ring.register_buffer(mem, size) {
        return R::Skip(Need::IoUring, msg!("IORING_REGISTER_BUFFERS: {e:?}"));
    }
    let mut child = None;
    if use_fork {
        // The pinned page must not be shared with the child (fork_must_copy).
        match fork() {
            Ok(0) => {
                comm.signal_child_ready();
                comm.wait_parent_ready();
                exit_now(0)
            }
            Ok(pid) => {
                child = Some(pid);
                comm.wait_child_ready();
            }
            Err(e) => return R::Fail(msg!("fork: {e:?}")),
        }
    } else if let Err(e) = ro_map_dance(mem, size) {
        return R::Fail(e);
    }
    fill(mem, size, 0xff);
    let written = ring.write_fixed(file, mem, size as u32, 0);
    // The file now holds what the pinned pages held: the child has nothing left to change, so
    // it goes before the read-back. cow.c reads into a buffer it mallocs after the fork; ours
    // is scratch the child shares, and reading into it while the child lives would COW-copy
    // it (a whole GiB more memory with `hugetlb=1G`).
    if let Some(pid) = child {
        comm.signal_parent_ready();
        let _ = wait_exit(pid);
    }
    let r = match written {
        Ok(res) if res == size as i32 => match pread(file, &mut ctx.tmp[..size], 0) {
            Ok(n) if n == size => {
                if same(mem, &ctx.tmp[..size]) {
                    R::Pass(Msg::new())
                } else {
                    R::Fail("the registered buffer does not see the write (long-term R/W pin not reliable)".into())
                }
            }
            r => R::Fail(msg!("pread: {r:?}")),
        },
        Ok(res) => R::Fail(msg!("WRITE_FIXED completed with {res}")),
        Err(e) => R::Fail(msg!("io_uring_enter: {e:?}")),
    };
    let _ = ring.unregister_buffers();
    r
}

/// cow.c `enum ro_pin_test`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PinTest {
    /// Non-anon memory: the page as mapped.
    Plain,
    /// Shared with a live child.
    Shared,
    /// Shared with a child that has exited: mapped R/O, no longer shared.
    PreviouslyShared,
    /// Exclusive, mapped R/O by the soft-dirty dance.
    RoExclusive,
}

const PIN_LONGTERM_TEST_START: u64 = 0x4018_6707;
const PIN_LONGTERM_TEST_STOP: u64 = 0x6708;
const PIN_LONGTERM_TEST_READ: u64 = 0x4008_6709;
const PIN_LONGTERM_TEST_FLAG_USE_FAST: u32 = 2;

/// Linux `struct pin_longterm_test`.
#[repr(C)]
struct PinLongterm {
    addr: u64,
    size: u64,
    flags: u32,
}

/// What GUP-fast is expected to do with the R/O long-term pin of one page, derived from the
/// kernel's own rule (`rules::gup_must_unshare` with the mapping unknown, which is all the
/// lockless walk knows): take it, or leave it to the slow path.
fn fast_expected(era: Era, anon: bool, exclusive: bool) -> bool {
    !rules::gup_must_unshare(
        era,
        FollFlags::PIN | FollFlags::LONGTERM,
        anon,
        exclusive,
        CowMapping::Unknown,
    )
}

/// cow.c `do_test_ro_pin`: a R/O long-term pin (gup_test PIN_LONGTERM_TEST_START) must see
/// later writes through the page table. On cowlab also: the GUP-fast counters show the fast
/// path taken or not as the rules say (`anon`/`exclusive` describe the page at pin time).
pub fn ro_pin(
    ctx: &mut Ctx,
    mem: usize,
    size: usize,
    test: PinTest,
    fast: bool,
    anon: bool,
    exclusive: bool,
) -> R {
    let Some(gup) = ctx.gup_fd else {
        return R::Skip(Need::GupTest, "gup_test not available".into());
    };
    let comm = match CommPipes::new() {
        Ok(c) => c,
        Err(e) => return R::Fail(msg!("pipe: {e:?}")),
    };
    let mut child = None;
    match test {
        PinTest::Plain => {}
        PinTest::Shared | PinTest::PreviouslyShared => {
            match fork() {
                Ok(0) => {
                    comm.signal_child_ready();
                    comm.wait_parent_ready();
                    exit_now(0)
                }
                Ok(pid) => child = Some(pid),
                Err(e) => return R::Fail(msg!("fork: {e:?}")),
            }
            comm.wait_child_ready();
            if test == PinTest::PreviouslyShared {
                comm.signal_parent_ready();
                let _ = wait_exit(child.take().unwrap_or(-1));
            }
        }
        PinTest::RoExclusive => {
            if let Err(e) = ro_map_dance(mem, size) {
                return R::Fail(e);
            }
        }
    }
    let args = PinLongterm {
        addr: mem as u64,
        size: size as u64,
        flags: if fast {
            PIN_LONGTERM_TEST_FLAG_USE_FAST
        } else {
            0
        },
    };
    let before = stats::read();
    // SAFETY: `args` is a live `struct pin_longterm_test`.
    let started = unsafe {
        ioctl(
            gup,
            PIN_LONGTERM_TEST_START,
            &args as *const PinLongterm as usize,
        )
    };
    let after = stats::read();
    let r = match started {
        Err(Errno(errno::EINVAL)) => {
            R::Skip(Need::GupTest, "PIN_LONGTERM_TEST_START: EINVAL".into())
        }
        Err(e) => R::Fail(msg!("PIN_LONGTERM_TEST_START: {e:?}")),
        Ok(_) => {
            fill(mem, size, 0xff);
            let addr = ctx.tmp.as_mut_ptr() as u64;
            // SAFETY: READ writes `size` bytes (the pinned range) to `tmp`, which holds a page.
            let read = unsafe { ioctl(gup, PIN_LONGTERM_TEST_READ, &addr as *const u64 as usize) };
            let seen = match read {
                Err(e) => Err(msg!("PIN_LONGTERM_TEST_READ: {e:?}")),
                Ok(_) if same(mem, &ctx.tmp[..size]) => Ok(()),
                Ok(_) => Err(
                    "the R/O pin does not see the write (long-term R/O pin not reliable)".into(),
                ),
            };
            // SAFETY: STOP takes no argument.
            let _ = unsafe { ioctl(gup, PIN_LONGTERM_TEST_STOP, 0) };
            let counted = match (before, after, ctx.era) {
                (Some(b), Some(a), Some(era)) => {
                    Some(fast_path_check(era, &b, &a, size, fast, anon, exclusive))
                }
                _ => None,
            };
            match (seen, counted) {
                (Ok(()), None) => R::Pass(Msg::new()),
                (Ok(()), Some(Ok(diag))) => R::Pass(diag),
                (Ok(()), Some(Err(why))) => R::Fail(why),
                (Err(why), Some(Ok(diag) | Err(diag))) => R::Fail(msg!("{why}; {diag}")),
                (Err(why), None) => R::Fail(why),
            }
        }
    };
    if let Some(pid) = child {
        comm.signal_parent_ready();
        let _ = wait_exit(pid);
    }
    r
}

/// The GUP-fast counters across the START ioctl: `Ok(diag)` if they show what the rules expect.
// The message stays on the stack on purpose (see `Msg`).
#[allow(clippy::result_large_err)]
fn fast_path_check(
    era: Era,
    b: &stats::Snapshot,
    a: &stats::Snapshot,
    size: usize,
    fast: bool,
    anon: bool,
    exclusive: bool,
) -> Result<Msg, Msg> {
    let pages = (size / PAGE) as u64;
    let d_fast = a.gup_fast_pages.wrapping_sub(b.gup_fast_pages);
    let d_fallback = a.gup_fast_fallbacks.wrapping_sub(b.gup_fast_fallbacks);
    let d_slow = a.gup_slow_pages.wrapping_sub(b.gup_slow_pages);
    let d_unshare = a.gup_unshare_faults.wrapping_sub(b.gup_unshare_faults);
    let (want_fast, want_fallback, path) = if !fast {
        (0, 0, "slow path only")
    } else if fast_expected(era, anon, exclusive) {
        (pages, 0, "fast path")
    } else {
        (0, pages, "fallback to the slow path")
    };
    let diag = msg!(
        "gup_fast_pages +{d_fast} gup_fast_fallbacks +{d_fallback} gup_slow_pages +{d_slow} gup_unshare_faults +{d_unshare} (era {era}: expected {path})"
    );
    if d_fast == want_fast && d_fallback == want_fallback {
        Ok(diag)
    } else {
        Err(msg!("counters disagree with the rules: {diag}"))
    }
}

/// cow.c `test_cow` (non-anon): writing the private mapping must leave the other mapping as
/// it was.
pub fn non_anon_cow(ctx: &mut Ctx, mem: usize, smem: usize, size: usize) -> R {
    copy_out(smem, &mut ctx.old[..size]);
    fill(mem, size, 0xff);
    if same(smem, &ctx.old[..size]) {
        R::Pass(Msg::new())
    } else {
        R::Fail("the other mapping was modified".into())
    }
}
