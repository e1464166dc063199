//! The kernel's system-wide budgets for user-sized kernel memory: a program (or several) that
//! asks for more than the fixed-size kernel heap can give must get Linux's errno, never crash
//! the kernel, and everything comes back when it ends. Each case reproduces a way a review
//! found to exhaust the heap before the budgets existed:
//! - AIO contexts: `io_setup(65536)` again and again (each context's event ring is heap);
//! - `vmsplice` of one-byte iovecs: a pipe holds at most 16 segments, as Linux's 16 buffers;
//! - many full pipes in several processes: pipes reserve their capacity from a budget and get
//!   Linux's minimum (two pages) past the soft limit, `ENFILE` past the hard one.
//!
//! QEMU only: the budgets are cowlab's (a host's differ).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, getppid, Errno};
use cowlab_userland::test::{meminfo_kb, try_reap, Tester};

cowlab_userland::entry!(main);

const AIO_MAX_NR: usize = 65536;
const EAGAIN: Errno = Errno(11);
const ENFILE: Errno = Errno(23);
const SPLICE_F_NONBLOCK: usize = 2;
const O_NONBLOCK: u32 = 0o4000;
const NR_IO_SETUP: usize = 206;
const NR_IO_DESTROY: usize = 207;
const NR_VMSPLICE: usize = 278;

static BYTES: [u8; 65536] = [7u8; 65536];

fn main() -> i32 {
    let mut t = Tester::new("t_limits");
    // The first run also grows this program's stack (the iovec array is 16 KiB), so the
    // baseline is taken after it, and the second run is inside the measured stretch.
    vmsplice_segments(&mut t);
    let before = meminfo_kb("MemAvailable");
    aio_contexts(&mut t);
    vmsplice_segments(&mut t);
    pipes_in_several_processes(&mut t);
    t.eq_some(
        "MemFree back to its value",
        meminfo_kb("MemAvailable"),
        before,
    );
    t.finish()
}

fn io_setup(nr: usize) -> Result<u64, Errno> {
    let mut ctx = 0u64;
    // SAFETY: `ctx` is a live u64 the call writes the context id into.
    unsafe { raw(NR_IO_SETUP, [nr, &mut ctx as *mut u64 as usize, 0, 0, 0, 0]) }.map(|_| ctx)
}

fn io_destroy(ctx: u64) -> Result<usize, Errno> {
    // SAFETY: no user memory is passed.
    unsafe { raw(NR_IO_DESTROY, [ctx as usize, 0, 0, 0, 0, 0]) }
}

/// The events of all AIO contexts together stay under aio-max-nr: the second full-size context
/// is refused with EAGAIN (twenty tries, each of which used to take 2 MiB of kernel heap), and
/// destroying the first makes room again.
fn aio_contexts(t: &mut Tester) {
    let first = io_setup(AIO_MAX_NR);
    t.check_why(
        "io_setup(aio-max-nr) succeeds",
        first.is_ok(),
        format_args!("{first:?}"),
    );
    let refused = (0..20)
        .map(|_| io_setup(AIO_MAX_NR))
        .filter(|r| *r == Err(EAGAIN))
        .count();
    t.eq("20 more full-size contexts: all EAGAIN", refused, 20);
    t.eq(
        "a one-event context past the budget: EAGAIN",
        io_setup(1),
        Err(EAGAIN),
    );
    if let Ok(ctx) = first {
        t.eq("io_destroy", io_destroy(ctx), Ok(0));
        let again = io_setup(AIO_MAX_NR);
        t.check_why(
            "after io_destroy the budget is back",
            again.is_ok(),
            format_args!("{again:?}"),
        );
        if let Ok(ctx) = again {
            let _ = io_destroy(ctx);
        }
    }
}

/// 1024 one-byte iovecs into one pipe: 16 segments (16 bytes) are queued, then the pipe is full
/// (EAGAIN), as on Linux; reading them back gives the bytes.
fn vmsplice_segments(t: &mut Tester) {
    let Ok([rfd, wfd]) = pipe() else {
        return t.check("pipe", false);
    };
    let mut iovs = [[0usize; 2]; 1024];
    for (i, iov) in iovs.iter_mut().enumerate() {
        iov[0] = BYTES.as_ptr() as usize + i;
        iov[1] = 1;
    }
    let splice = || {
        // SAFETY: `iovs` is 1024 `struct iovec`s over our own static bytes, live for the call.
        unsafe {
            raw(
                NR_VMSPLICE,
                [
                    wfd as usize,
                    iovs.as_ptr() as usize,
                    1024,
                    SPLICE_F_NONBLOCK,
                    0,
                    0,
                ],
            )
        }
    };
    t.eq(
        "vmsplice of 1024 one-byte iovecs queues 16",
        splice(),
        Ok(16),
    );
    t.eq("then the pipe is full", splice(), Err(EAGAIN));
    let mut buf = [0u8; 64];
    t.eq("the 16 bytes read back", read(rfd, &mut buf), Ok(16));
    let _ = close(rfd);
    let _ = close(wfd);
}

/// Three processes each open up to 500 pipes and fill every one: the kernel survives, the
/// later pipes are smaller (the soft budget) and `pipe2` eventually answers ENFILE (the hard
/// budget); every child exits normally and all memory comes back.
///
/// The budgets hold 256 full pipes and then 1024 small ones, 1280 in all: only the three
/// children's 1500 pipes together exceed them, so each child keeps its pipes until all three
/// have filled theirs (a barrier in shared memory, without a time bound: a child that ends early
/// ends the parent's wait, a parent that ends releases the children). Without it the check depended on the
/// children overlapping: a child that got through its 500 pipes in one time slice exited (and
/// freed them) before the next one started, which is what happened in a direct boot on one
/// CPU and on two, while the programs tier's timing happened to interleave them.
fn pipes_in_several_processes(t: &mut Tester) {
    let Ok(shared) = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        return t.check("map the children's barrier", false);
    };
    // SAFETY: a fresh shared mapping of one page, aligned; the children inherit it and only
    // ever use these two words atomically; unmapped after they are reaped.
    let (filled, release) = unsafe {
        (
            &*(shared as *const AtomicU32),
            &*((shared + 4) as *const AtomicU32),
        )
    };
    let parent = getpid();
    let mut children = [0i32; 3];
    for child in children.iter_mut() {
        match fork() {
            Ok(0) => {
                let code = fill_pipes();
                filled.fetch_add(1, Ordering::SeqCst);
                // Until released, or the parent is gone (reparented): no child outlives it.
                while release.load(Ordering::SeqCst) == 0 && getppid() == parent {
                    let _ = sleep_ms(1);
                }
                exit_now(code)
            }
            Ok(pid) => *child = pid,
            Err(e) => return t.check_why("fork", false, format_args!("{e:?}")),
        }
    }
    // No time bound (filling 1500 pipes took minutes on 2 CPUs of a loaded host; xtask's
    // timeout is the backstop), but a child that ended early ends the wait.
    let mut early = [None; 3];
    while filled.load(Ordering::SeqCst) < 3 {
        for (i, pid) in children.iter().enumerate() {
            if early[i].is_none() {
                early[i] = try_reap(*pid).ok().flatten();
            }
        }
        if early.iter().any(Option::is_some) {
            break;
        }
        let _ = sleep_ms(1);
    }
    t.eq(
        "all three children filled their pipes",
        filled.load(Ordering::SeqCst),
        3,
    );
    release.store(1, Ordering::SeqCst);
    let mut statuses = [0i32; 3];
    for (i, pid) in children.iter().enumerate() {
        statuses[i] = match early[i] {
            Some(status) => status,
            None => waitpid(*pid, 0).map(|(_, s)| s).unwrap_or(-1),
        };
    }
    let _ = munmap(shared, 4096);
    // Exit status bits: 1 = some pipe got less than 64 KiB, 2 = pipe2 answered ENFILE; a
    // kernel crash would end the whole boot instead.
    t.check_why(
        "every child exited normally",
        statuses.iter().all(|s| s & 0x7f == 0 && (s >> 8) & !3 == 0),
        format_args!("{statuses:?}"),
    );
    let codes = statuses.map(|s| (s >> 8) & 3);
    t.check_why(
        "past the soft budget new pipes hold less",
        codes.iter().any(|c| c & 1 != 0),
        format_args!("{codes:?}"),
    );
    t.check_why(
        "past the hard budget pipe2 answers ENFILE",
        codes.iter().any(|c| c & 2 != 0),
        format_args!("{codes:?}"),
    );
}

fn fill_pipes() -> i32 {
    let mut code = 0;
    for _ in 0..500 {
        let fds = match pipe2(O_NONBLOCK) {
            Ok(fds) => fds,
            Err(ENFILE) => {
                code |= 2;
                break;
            }
            Err(_) => return 4,
        };
        let mut total = 0;
        while let Ok(n) = write(fds[1], &BYTES) {
            if n == 0 {
                break;
            }
            total += n;
        }
        if total < BYTES.len() {
            code |= 1;
        }
    }
    code
}
