//! Threads: `clone` with the flags `pthread_create` passes, tid and tgid, shared memory and
//! descriptors, `CLONE_SETTLS`, `CLONE_{PARENT,CHILD}_SETTID`, the `CLONE_CHILD_CLEARTID` +
//! futex join, futex wait/wake/requeue/bitset and their errors, `exit` of one thread vs
//! `exit_group`, a process whose leader exited first, a fault or a kill ending every thread,
//! fork and execve from a thread, frames back to baseline, and the Dirty COW pattern from two
//! threads (one writes through /proc/self/mem, the other drops the page with MADV_DONTNEED).
//!
//! Threads here never allocate (the runtime's allocator is single-threaded): they share
//! statics.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::println;
use cowlab_userland::sys::{self, errno, nr, Errno};
use cowlab_userland::test::{in_child, on_cowlab, sibling, Tester};
use cowlab_userland::thread::{
    clone_raw, futex_wait, futex_wake, gettid, spawn, Thread, CLONE_CHILD_SETTID, CLONE_SETTLS,
    FUTEX, FUTEX_PRIVATE_FLAG, FUTEX_WAKE, STACK_SIZE, THREAD_FLAGS,
};

cowlab_userland::entry!(main);

const FUTEX_WAIT_BITSET: usize = 9;
const FUTEX_WAKE_BITSET: usize = 10;
const FUTEX_CMP_REQUEUE: usize = 4;
const FUTEX_CLOCK_REALTIME: usize = 256;
const ARCH_PRCTL: usize = 158;
const ARCH_GET_FS: usize = 0x1003;
const MEMFD_CREATE: usize = 319;
const TKILL: usize = 200;
const TGKILL: usize = 234;
const MADV_DONTNEED: i32 = 4;
const WNOHANG: u32 = 1;
const SIGSEGV: i32 = 11;
const SIGTERM: i32 = 15;
const PAGE: usize = 4096;
const EAGAIN: i32 = 11;
const O_RDONLY: u32 = 0;
const O_RDWR: u32 = 2;

/// A word nobody ever wakes: threads that must be ended from outside block on it.
static NEVER: AtomicU32 = AtomicU32::new(0);

fn block_forever() -> ! {
    loop {
        let _ = futex_wait(&NEVER, 0, None);
    }
}

fn futex(
    addr: usize,
    op: usize,
    val: usize,
    timeout: usize,
    addr2: usize,
    val3: usize,
) -> Result<usize, Errno> {
    // SAFETY: the callers pass live words, null, or addresses whose refusal is the test; the
    // timeout is null or a live timespec.
    unsafe { raw(FUTEX, [addr, op, val, timeout, addr2, val3]) }
}

fn now_ts(clock: usize) -> [i64; 2] {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime writes one timespec into `ts`.
    let _ = unsafe {
        raw(
            nr::CLOCK_GETTIME,
            [clock, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    };
    ts
}

fn plus_ms(ts: [i64; 2], ms: i64) -> [i64; 2] {
    let ns = ts[1] + ms * 1_000_000;
    [ts[0] + ns / 1_000_000_000, ns % 1_000_000_000]
}

/// Waits (polling, up to `secs`) for child `pid`; its status, or None if it did not end.
fn wait_with_deadline(pid: i32, secs: u64) -> Option<i32> {
    let end = monotonic_ns() + secs * 1_000_000_000;
    loop {
        match waitpid(pid, WNOHANG) {
            Ok((p, status)) if p == pid => return Some(status),
            Ok(_) => {}
            Err(_) => return None,
        }
        if monotonic_ns() > end {
            let _ = kill(pid, 9);
            let _ = waitpid(pid, 0);
            return None;
        }
        let _ = sleep_ms(5);
    }
}

// ---- identity, shared memory and descriptors -------------------------------------------------

static SEEN_TID: AtomicI32 = AtomicI32::new(0);
static SEEN_PID: AtomicI32 = AtomicI32::new(0);
static SEEN_PPID: AtomicI32 = AtomicI32::new(0);
static SHARED: AtomicU32 = AtomicU32::new(0);
static PIPE_R: AtomicI32 = AtomicI32::new(-1);
static PIPE_W: AtomicI32 = AtomicI32::new(-1);

fn identity(arg: usize) -> i32 {
    SEEN_TID.store(gettid(), Ordering::SeqCst);
    SEEN_PID.store(sys::getpid(), Ordering::SeqCst);
    SEEN_PPID.store(sys::getppid(), Ordering::SeqCst);
    SHARED.store(arg as u32, Ordering::SeqCst);
    if let Ok([r, w]) = pipe() {
        PIPE_R.store(r, Ordering::SeqCst);
        PIPE_W.store(w, Ordering::SeqCst);
    }
    0
}

fn identity_and_sharing(t: &mut Tester) {
    let th = spawn(identity, 0xfeed);
    t.check("clone a thread", th.is_ok());
    let Ok(th) = th else { return };
    let tid = th.tid();
    th.join();
    t.eq(
        "the thread's gettid is clone's result",
        SEEN_TID.load(Ordering::SeqCst),
        tid,
    );
    t.check("a thread's tid differs from the pid", tid != sys::getpid());
    t.eq(
        "the thread's getpid is the process's",
        SEEN_PID.load(Ordering::SeqCst),
        sys::getpid(),
    );
    t.eq(
        "the thread's getppid is the process's",
        SEEN_PPID.load(Ordering::SeqCst),
        sys::getppid(),
    );
    t.eq(
        "the main thread's gettid is the pid",
        gettid(),
        sys::getpid(),
    );
    t.eq(
        "memory is shared: the thread's store is seen",
        SHARED.load(Ordering::SeqCst),
        0xfeed,
    );
    let (r, w) = (PIPE_R.load(Ordering::SeqCst), PIPE_W.load(Ordering::SeqCst));
    let mut buf = [0u8; 5];
    let shared_fds = r >= 0 && write(w, b"hello") == Ok(5) && read(r, &mut buf) == Ok(5);
    t.check(
        "descriptors are shared: the thread's pipe works here",
        shared_fds && &buf == b"hello",
    );
    let _ = close(r);
    let _ = close(w);
}

// ---- CLONE_SETTLS, CLONE_PARENT_SETTID, CLONE_CHILD_SETTID -------------------------------------

static TLS_SEEN: AtomicU64 = AtomicU64::new(0);
static CTID_SEEN: AtomicU32 = AtomicU32::new(0);
static PTID: AtomicU32 = AtomicU32::new(0);
static CTID: AtomicU32 = AtomicU32::new(0);
const TLS_VALUE: u64 = 0x7000_1234_5000;

extern "C" fn tls_thread(_arg: usize) -> ! {
    let mut fs = 0u64;
    // SAFETY: ARCH_GET_FS writes one u64.
    let _ = unsafe {
        raw(
            ARCH_PRCTL,
            [ARCH_GET_FS, &mut fs as *mut u64 as usize, 0, 0, 0, 0],
        )
    };
    CTID_SEEN.store(CTID.load(Ordering::SeqCst), Ordering::SeqCst);
    TLS_SEEN.store(fs, Ordering::SeqCst);
    sys::exit(0)
}

fn settls_and_settid(t: &mut Tester) {
    let Ok(stack) = mmap(
        0,
        STACK_SIZE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    ) else {
        t.check("mmap a stack", false);
        return;
    };
    let ptid = PTID.as_ptr() as usize;
    let ctid = CTID.as_ptr() as usize;
    // SAFETY: the stack is ours alone; the tid words are statics; the entry ends with exit.
    let tid = unsafe {
        clone_raw(
            THREAD_FLAGS | CLONE_SETTLS | CLONE_CHILD_SETTID,
            stack + STACK_SIZE,
            ptid,
            ctid,
            TLS_VALUE as usize,
            tls_thread,
            0,
        )
    };
    let Ok(tid) = tid else {
        t.check("clone with CLONE_SETTLS", false);
        return;
    };
    t.eq(
        "CLONE_PARENT_SETTID wrote the tid before clone returned",
        PTID.load(Ordering::SeqCst),
        tid as u32,
    );
    // TLS_SEEN is stored last by the thread; CHILD_SETTID happened before it ran.
    while TLS_SEEN.load(Ordering::SeqCst) == 0 {
        sched_yield();
    }
    loop {
        let v = CTID.load(Ordering::SeqCst);
        if v == 0 {
            break;
        }
        let _ = futex_wait(&CTID, v, None);
    }
    t.eq(
        "CLONE_SETTLS: the thread's FS base",
        TLS_SEEN.load(Ordering::SeqCst),
        TLS_VALUE,
    );
    t.eq(
        "CLONE_CHILD_SETTID: the thread saw its tid",
        CTID_SEEN.load(Ordering::SeqCst),
        tid as u32,
    );
    t.eq(
        "CLONE_CHILD_CLEARTID: zero after exit",
        CTID.load(Ordering::SeqCst),
        0,
    );
    let mut fs = 1u64;
    // SAFETY: ARCH_GET_FS writes one u64.
    let _ = unsafe {
        raw(
            ARCH_PRCTL,
            [ARCH_GET_FS, &mut fs as *mut u64 as usize, 0, 0, 0, 0],
        )
    };
    t.check("the caller's FS base is unchanged", fs != TLS_VALUE);
    let _ = munmap(stack, STACK_SIZE);
    // SAFETY: no pointers are used by a failing clone.
    let bad = unsafe { raw(nr::CLONE, [0x800 | 0x10000, 0, 0, 0, 0, 0]) };
    t.eq(
        "CLONE_THREAD|CLONE_SIGHAND without CLONE_VM is EINVAL",
        bad,
        Err(Errno(errno::EINVAL)),
    );
    // SAFETY: as above.
    let bad = unsafe { raw(nr::CLONE, [0x100 | 0x10000, 0, 0, 0, 0, 0]) };
    t.eq(
        "CLONE_THREAD without CLONE_SIGHAND is EINVAL",
        bad,
        Err(Errno(errno::EINVAL)),
    );
}

// ---- futexes between threads -----------------------------------------------------------------

static WORD: AtomicU32 = AtomicU32::new(0);
static WAKE_RESULT: AtomicI32 = AtomicI32::new(-100);

fn waker(_: usize) -> i32 {
    // Wake only once the main thread is queued (a wake before that finds nobody: 0).
    loop {
        match futex_wake(&WORD, 1) {
            Ok(0) => sched_yield(),
            Ok(n) => {
                WAKE_RESULT.store(n as i32, Ordering::SeqCst);
                return 0;
            }
            Err(e) => {
                WAKE_RESULT.store(-e.0, Ordering::SeqCst);
                return 1;
            }
        }
    }
}

static BITS_WORD: AtomicU32 = AtomicU32::new(0);
static READY: AtomicU32 = AtomicU32::new(0);
static WAIT_RESULT: AtomicI32 = AtomicI32::new(-100);

fn bitset_waiter(bits: usize) -> i32 {
    READY.fetch_add(1, Ordering::SeqCst);
    let r = futex(
        BITS_WORD.as_ptr() as usize,
        FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
        0,
        0,
        0,
        bits,
    );
    WAIT_RESULT.store(r.map_or_else(|e| -e.0, |v| v as i32), Ordering::SeqCst);
    0
}

static REQ_A: AtomicU32 = AtomicU32::new(0);
static REQ_B: AtomicU32 = AtomicU32::new(0);
static REQ_DONE: AtomicU32 = AtomicU32::new(0);

fn requeue_waiter(_: usize) -> i32 {
    READY.fetch_add(1, Ordering::SeqCst);
    let _ = futex_wait(&REQ_A, 0, None);
    REQ_DONE.fetch_add(1, Ordering::SeqCst);
    0
}

fn futex_between_threads(t: &mut Tester) {
    let th = spawn(waker, 0);
    let r = futex_wait(&WORD, 0, None);
    if let Ok(th) = th {
        th.join();
    }
    t.eq("FUTEX_WAIT returns 0 when woken", r, Ok(0));
    t.eq(
        "FUTEX_WAKE woke the one waiter",
        WAKE_RESULT.load(Ordering::SeqCst),
        1,
    );

    // WAKE_BITSET: only a waiter whose bitset meets the wake's.
    READY.store(0, Ordering::SeqCst);
    let th = spawn(bitset_waiter, 0b01);
    while READY.load(Ordering::SeqCst) == 0 {
        sched_yield();
    }
    let _ = sleep_ms(50);
    let word = BITS_WORD.as_ptr() as usize;
    let other = futex(word, FUTEX_WAKE_BITSET | FUTEX_PRIVATE_FLAG, 1, 0, 0, 0b10);
    let same = futex(word, FUTEX_WAKE_BITSET | FUTEX_PRIVATE_FLAG, 1, 0, 0, 0b01);
    if let Ok(th) = th {
        th.join();
    }
    t.eq(
        "FUTEX_WAKE_BITSET with a disjoint bitset wakes nobody",
        other,
        Ok(0),
    );
    t.eq(
        "FUTEX_WAKE_BITSET with a common bit wakes the waiter",
        same,
        Ok(1),
    );
    t.eq(
        "the bitset waiter returned 0",
        WAIT_RESULT.load(Ordering::SeqCst),
        0,
    );

    // CMP_REQUEUE: one woken, one moved to REQ_B, then woken there.
    READY.store(0, Ordering::SeqCst);
    let a = spawn(requeue_waiter, 0);
    let b = spawn(requeue_waiter, 0);
    while READY.load(Ordering::SeqCst) < 2 {
        sched_yield();
    }
    let _ = sleep_ms(50);
    let wrong = futex(
        REQ_A.as_ptr() as usize,
        FUTEX_CMP_REQUEUE,
        1,
        1,
        REQ_B.as_ptr() as usize,
        7,
    );
    t.eq(
        "FUTEX_CMP_REQUEUE with a stale value is EAGAIN",
        wrong,
        Err(Errno(EAGAIN)),
    );
    let moved = futex(
        REQ_A.as_ptr() as usize,
        FUTEX_CMP_REQUEUE,
        1,
        1,
        REQ_B.as_ptr() as usize,
        0,
    );
    t.eq("FUTEX_CMP_REQUEUE woke one and moved one", moved, Ok(2));
    let _ = sleep_ms(50);
    t.eq(
        "only the woken one returned",
        REQ_DONE.load(Ordering::SeqCst),
        1,
    );
    t.eq(
        "a wake on the old word finds nobody",
        futex_wake(&REQ_A, 1),
        Ok(0),
    );
    t.eq(
        "a wake on the new word finds the moved one",
        futex_wake(&REQ_B, 1),
        Ok(1),
    );
    for th in [a, b].into_iter().flatten() {
        th.join();
    }
    t.eq(
        "both requeue waiters returned",
        REQ_DONE.load(Ordering::SeqCst),
        2,
    );
}

static ERR_WORD: AtomicU32 = AtomicU32::new(5);

fn futex_errors(t: &mut Tester) {
    let w = ERR_WORD.as_ptr() as usize;
    t.eq(
        "FUTEX_WAIT on a different value is EAGAIN",
        futex_wait(&ERR_WORD, 6, None),
        Err(Errno(EAGAIN)),
    );
    let start = monotonic_ns();
    let r = futex_wait(&ERR_WORD, 5, Some(&[0, 30_000_000]));
    let took = monotonic_ns() - start;
    t.eq(
        "FUTEX_WAIT with a relative timeout is ETIMEDOUT",
        r,
        Err(Errno(110)),
    );
    t.check_why(
        "... after at least the timeout",
        took >= 30_000_000,
        format_args!("{took} ns"),
    );
    t.eq(
        "FUTEX_WAIT on an unmapped address is EFAULT",
        futex(0x1000, 0, 0, 0, 0, 0),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "FUTEX_WAIT on a misaligned address is EINVAL",
        futex(w + 1, 0, 5, 0, 0, 0),
        Err(Errno(errno::EINVAL)),
    );
    let bad_ts = [0i64, 2_000_000_000];
    t.eq(
        "FUTEX_WAIT with a bad timespec is EINVAL",
        futex(w, 0, 5, bad_ts.as_ptr() as usize, 0, 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "FUTEX_WAIT_BITSET with an empty bitset is EINVAL",
        futex(w, FUTEX_WAIT_BITSET, 5, 0, 0, 0),
        Err(Errno(errno::EINVAL)),
    );
    let deadline = plus_ms(now_ts(1), 30);
    let start = monotonic_ns();
    let r = futex(
        w,
        FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG,
        5,
        deadline.as_ptr() as usize,
        0,
        !0,
    );
    let took = monotonic_ns() - start;
    t.eq(
        "FUTEX_WAIT_BITSET to an absolute CLOCK_MONOTONIC deadline is ETIMEDOUT",
        r,
        Err(Errno(110)),
    );
    t.check_why(
        "... not before the deadline",
        took >= 25_000_000,
        format_args!("{took} ns"),
    );
    let deadline = plus_ms(now_ts(0), 30);
    let r = futex(
        w,
        FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME,
        5,
        deadline.as_ptr() as usize,
        0,
        !0,
    );
    t.eq(
        "FUTEX_WAIT_BITSET|FUTEX_CLOCK_REALTIME to a wall-clock deadline is ETIMEDOUT",
        r,
        Err(Errno(110)),
    );
    let past = [0i64, 0];
    t.eq(
        "FUTEX_WAIT_BITSET to a past deadline is ETIMEDOUT at once",
        futex(w, FUTEX_WAIT_BITSET, 5, past.as_ptr() as usize, 0, !0),
        Err(Errno(110)),
    );
    t.eq(
        "FUTEX_WAKE with no waiter wakes 0",
        futex_wake(&ERR_WORD, 1),
        Ok(0),
    );
    t.eq(
        "FUTEX_WAKE|PRIVATE of an unmapped word wakes 0",
        futex(0x1000, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 1, 0, 0, 0),
        Ok(0),
    );
    t.eq(
        "an unknown futex op is ENOSYS",
        futex(w, 99, 0, 0, 0, 0),
        Err(Errno(errno::ENOSYS)),
    );
}

/// Shared futexes meet across processes in `MAP_SHARED` memory; a private wake does not reach a
/// shared waiter there (different keys, as in Linux).
fn futex_across_processes(t: &mut Tester) {
    const MAP_SHARED: u32 = 0x01;
    let Ok(m) = mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS) else {
        t.check("mmap MAP_SHARED|MAP_ANONYMOUS", false);
        return;
    };
    // SAFETY: both words lie in the new page, 4-aligned, and live until the munmap below.
    let (ready, word) = unsafe { (&*(m as *const AtomicU32), &*((m + 64) as *const AtomicU32)) };
    match fork() {
        Ok(0) => {
            ready.store(1, Ordering::SeqCst);
            let r = futex(
                word.as_ptr() as usize,
                0,
                0,
                [5i64, 0].as_ptr() as usize,
                0,
                0,
            );
            exit_now(match r {
                Ok(0) => 0,
                Err(Errno(110)) => 2,
                _ => 1,
            })
        }
        Ok(pid) => {
            while ready.load(Ordering::SeqCst) == 0 {
                let _ = sleep_ms(1);
            }
            let _ = sleep_ms(50);
            let private = futex(
                word.as_ptr() as usize,
                FUTEX_WAKE | FUTEX_PRIVATE_FLAG,
                1,
                0,
                0,
                0,
            );
            let shared = futex(word.as_ptr() as usize, FUTEX_WAKE, 1, 0, 0, 0);
            let status = wait_with_deadline(pid, 10);
            t.eq(
                "a private wake does not reach a shared waiter in another process",
                private,
                Ok(0),
            );
            t.eq(
                "a shared wake reaches the waiter in another process (MAP_SHARED)",
                shared,
                Ok(1),
            );
            t.check_why(
                "... which returned 0 from FUTEX_WAIT",
                status.is_some_and(|s| wifexited(s) && wexitstatus(s) == 0),
                format_args!("status {status:?}"),
            );
        }
        Err(_) => t.check("fork", false),
    }
    let _ = munmap(m, PAGE);
}

// ---- exit, exit_group, faults, kill ----------------------------------------------------------

fn spinner(_: usize) -> i32 {
    loop {
        core::hint::spin_loop();
    }
}

fn blocker(_: usize) -> i32 {
    block_forever()
}

fn group_exiter(_: usize) -> i32 {
    let _ = sleep_ms(20);
    sys::exit_group(9)
}

fn returns_five(_: usize) -> i32 {
    5
}

static EXIT_PIPE_R: AtomicI32 = AtomicI32::new(-1);

fn exits_after_pipe_byte(_: usize) -> i32 {
    let mut b = [0u8; 1];
    let _ = read(EXIT_PIPE_R.load(Ordering::SeqCst), &mut b);
    4
}

fn faulter(_: usize) -> i32 {
    let _ = sleep_ms(10);
    // SAFETY: deliberately invalid: the fault is the test.
    unsafe { core::ptr::write_volatile(0x8 as *mut u8, 1) };
    0
}

fn exits(t: &mut Tester) {
    let status = in_child(|| {
        let _ = spawn(blocker, 0);
        let _ = spawn(spinner, 0);
        let _ = sleep_ms(30);
        7
    });
    t.check_why(
        "exit_group from the main thread ends a blocked and a spinning thread",
        wifexited(status) && wexitstatus(status) == 7,
        format_args!("status {status:#x}"),
    );
    let status = in_child(|| {
        let _ = spawn(group_exiter, 0);
        let _ = spawn(spinner, 0);
        block_forever()
    });
    t.check_why(
        "exit_group from another thread ends the blocked main thread",
        wifexited(status) && wexitstatus(status) == 9,
        format_args!("status {status:#x}"),
    );
    let status = in_child(|| match spawn(returns_five, 0) {
        Ok(th) => {
            th.join();
            SHARED.store(1234, Ordering::SeqCst);
            if SHARED.load(Ordering::SeqCst) == 1234 {
                0
            } else {
                2
            }
        }
        Err(_) => 3,
    });
    t.check_why(
        "a thread's exit leaves the process running",
        wifexited(status) && wexitstatus(status) == 0,
        format_args!("status {status:#x}"),
    );

    // The leader exits first: the process lives on; the last thread's exit status is the
    // process's (Linux's behaviour, checked here on the host).
    let Ok([r, w]) = pipe() else {
        t.check("pipe", false);
        return;
    };
    EXIT_PIPE_R.store(r, Ordering::SeqCst);
    match fork() {
        Ok(0) => {
            let _ = spawn(exits_after_pipe_byte, 0);
            sys::exit(0)
        }
        Ok(pid) => {
            let _ = sleep_ms(50);
            t.eq(
                "leader exited, other thread alive: not reapable yet",
                waitpid(pid, WNOHANG),
                Ok((0, 0)),
            );
            t.eq(
                "leader exited, other thread alive: kill(pid, 0) finds it",
                kill(pid, 0),
                Ok(0),
            );
            let _ = write(w, b"x");
            let status = wait_with_deadline(pid, 10);
            t.check_why(
                "the last thread's exit ends it, with that thread's status",
                status.is_some_and(|s| wifexited(s) && wexitstatus(s) == 4),
                format_args!("status {status:?}"),
            );
        }
        Err(_) => t.check("fork", false),
    }
    let _ = close(r);
    let _ = close(w);

    let status = in_child(|| {
        let _ = spawn(faulter, 0);
        let _ = spawn(spinner, 0);
        block_forever()
    });
    t.check_why(
        "a fault in a thread kills the whole process (SIGSEGV)",
        wifsignaled(status) && wtermsig(status) == SIGSEGV,
        format_args!("status {status:#x}"),
    );

    for how in ["kill(pid)", "kill(tid)", "tgkill(pid, tid)"] {
        let Ok([r, w]) = pipe() else { return };
        match fork() {
            Ok(0) => {
                let th = spawn(blocker, 0).map_or(0, |th: Thread| th.tid());
                let _ = spawn(spinner, 0);
                let _ = write(w, &th.to_le_bytes());
                block_forever()
            }
            Ok(pid) => {
                let mut b = [0u8; 4];
                let _ = read(r, &mut b);
                let tid = i32::from_le_bytes(b);
                let sent = match how {
                    "kill(pid)" => kill(pid, SIGTERM),
                    "kill(tid)" => kill(tid, SIGTERM),
                    _ => tgkill(pid, tid, SIGTERM),
                };
                let status = wait_with_deadline(pid, 10);
                t.check_why(
                    &alloc::format!("{how} of a thread's process with SIGTERM ends every thread"),
                    sent.is_ok()
                        && status.is_some_and(|s| wifsignaled(s) && wtermsig(s) == SIGTERM),
                    format_args!("{how} {sent:?}, status {status:?}"),
                );
            }
            Err(_) => t.check("fork", false),
        }
        let _ = close(r);
        let _ = close(w);
    }
    let (me, tid) = (sys::getpid(), gettid());
    t.eq(
        "tgkill(pid, tid, 0) finds the thread",
        tgkill(me, tid, 0),
        Ok(0),
    );
    t.eq(
        "tgkill with another process's pid is ESRCH",
        tgkill(0x3fff_fff0, tid, 0),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "tgkill with pid 0 is EINVAL",
        tgkill(0, tid, 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "tgkill with signal 65 is EINVAL",
        tgkill(me, tid, 65),
        Err(Errno(errno::EINVAL)),
    );
    // SAFETY: tkill takes no pointers.
    let r = unsafe { raw(TKILL, [usize::MAX, 0, 0, 0, 0, 0]) };
    t.eq("tkill(-1) is EINVAL", r, Err(Errno(errno::EINVAL)));
}

fn tgkill(tgid: i32, tid: i32, signal: i32) -> Result<usize, Errno> {
    // SAFETY: tgkill takes no pointers.
    unsafe {
        raw(
            TGKILL,
            [tgid as usize, tid as usize, signal as usize, 0, 0, 0],
        )
    }
}

// ---- fork and execve from a thread -----------------------------------------------------------

static FORK_STATUS: AtomicI32 = AtomicI32::new(-1);
static FORK_PARENT: AtomicI32 = AtomicI32::new(0);
static COPY_WORD: AtomicU32 = AtomicU32::new(1);

fn forks(_: usize) -> i32 {
    match fork() {
        Ok(0) => {
            COPY_WORD.store(2, Ordering::SeqCst);
            let ok =
                sys::getpid() == gettid() && sys::getppid() == FORK_PARENT.load(Ordering::SeqCst);
            // Thread exit: the process ends only if this is its only thread.
            sys::exit(if ok { 3 } else { 1 })
        }
        Ok(pid) => {
            FORK_STATUS.store(wait_with_deadline(pid, 10).unwrap_or(-2), Ordering::SeqCst);
            0
        }
        Err(_) => 1,
    }
}

static EXEC_ARGV: AtomicUsize = AtomicUsize::new(0);

fn execs(_: usize) -> i32 {
    let argv = EXEC_ARGV.load(Ordering::SeqCst) as *const *const u8;
    // SAFETY: the main thread built a NULL-terminated argv and blocks while we exec.
    let _ = unsafe {
        raw(
            nr::EXECVE,
            [
                *argv as usize,
                argv as usize,
                [0usize; 1].as_ptr() as usize,
                0,
                0,
                0,
            ],
        )
    };
    1
}

fn fork_and_exec(t: &mut Tester) {
    let status = in_child(|| {
        FORK_PARENT.store(sys::getpid(), Ordering::SeqCst);
        let _ = spawn(blocker, 0);
        match spawn(forks, 0) {
            Ok(th) => th.join(),
            Err(_) => return 1,
        }
        let s = FORK_STATUS.load(Ordering::SeqCst);
        if COPY_WORD.load(Ordering::SeqCst) != 1 {
            return 2;
        }
        if s >= 0 && wifexited(s) {
            wexitstatus(s)
        } else {
            4
        }
    });
    t.check_why(
        "fork from a thread: the child is one thread, with the process as parent",
        wifexited(status) && wexitstatus(status) == 3,
        format_args!("status {status:#x}"),
    );

    let path = sibling("status");
    let mut path_z = path.clone();
    path_z.push(0);
    let arg = b"5\0";
    let argv = [path_z.as_ptr(), arg.as_ptr(), core::ptr::null()];
    EXEC_ARGV.store(argv.as_ptr() as usize, Ordering::SeqCst);
    match fork() {
        Ok(0) => {
            let _ = spawn(spinner, 0);
            let _ = spawn(execs, 0);
            block_forever()
        }
        Ok(pid) => {
            let status = wait_with_deadline(pid, 20);
            t.check_why(
                "execve from a thread: the other threads end, the program runs as the same pid",
                status.is_some_and(|s| wifexited(s) && wexitstatus(s) == 5),
                format_args!("status {status:?}"),
            );
        }
        Err(_) => t.check("fork", false),
    }
}

// ---- frames -----------------------------------------------------------------------------------

fn mem_free_kb() -> Option<u64> {
    let fd = open(c"/proc/meminfo", O_RDONLY).ok()?;
    let mut buf = [0u8; 1024];
    let n = read(fd, &mut buf).unwrap_or(0);
    let _ = close(fd);
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemFree:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn toucher(pages: usize) -> i32 {
    let Ok(m) = mmap(
        0,
        pages * PAGE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    ) else {
        return 1;
    };
    for i in 0..pages {
        // SAFETY: inside the new mapping.
        unsafe { core::ptr::write_volatile((m + i * PAGE) as *mut u8, 1) };
    }
    0
}

fn frames(t: &mut Tester) {
    let before = mem_free_kb();
    let status = in_child(|| {
        let mut threads = [const { None }; 4];
        for (i, slot) in threads.iter_mut().enumerate() {
            *slot = spawn(toucher, 8 + i).ok();
        }
        let spawned = threads.iter().flatten().count() + usize::from(spawn(blocker, 0).is_ok());
        let touched = toucher(16);
        for th in threads.into_iter().flatten() {
            th.join();
        }
        // Five threads besides this one, and this one's own pages: the six of the name.
        i32::from(spawned != 5 || touched != 0)
    });
    let after = mem_free_kb();
    t.check(
        "a process of six threads ran",
        wifexited(status) && wexitstatus(status) == 0,
    );
    if on_cowlab() {
        t.check_why(
            "MemFree back to its value once the process of threads is reaped",
            before.is_some() && before == after,
            format_args!("before {before:?} kB, after {after:?} kB"),
        );
    }
}

// ---- Dirty COW from two threads ---------------------------------------------------------------

static STOP: AtomicBool = AtomicBool::new(false);
static DC_MEM: AtomicI32 = AtomicI32::new(-1);
static DC_FD: AtomicI32 = AtomicI32::new(-1);
static DC_ADDR: AtomicUsize = AtomicUsize::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
static LEAKS: AtomicU64 = AtomicU64::new(0);
static MADVISES: AtomicU64 = AtomicU64::new(0);
/// Iterations of one thread that saw the other thread's count move since its own previous
/// iteration: the other ran in between (a switch away and back, or true parallelism).
static INTERLEAVINGS: AtomicU64 = AtomicU64::new(0);

fn dirty_writer(_: usize) -> i32 {
    let (mem, fd, addr) = (
        DC_MEM.load(Ordering::SeqCst),
        DC_FD.load(Ordering::SeqCst),
        DC_ADDR.load(Ordering::SeqCst),
    );
    let mut last_other = MADVISES.load(Ordering::SeqCst);
    let mut i = 0u64;
    let mut one = [0u8; 1];
    while !STOP.load(Ordering::SeqCst) {
        if pwrite(mem, b"M", addr as u64 + i % 7) != Ok(1) {
            WRITE_ERRORS.fetch_add(1, Ordering::SeqCst);
        }
        if pread(fd, &mut one, i % 7) != Ok(1) || one[0] != b'A' {
            LEAKS.fetch_add(1, Ordering::SeqCst);
        }
        WRITES.fetch_add(1, Ordering::SeqCst);
        let other = MADVISES.load(Ordering::SeqCst);
        if other != last_other {
            INTERLEAVINGS.fetch_add(1, Ordering::SeqCst);
            last_other = other;
        }
        i += 1;
    }
    0
}

fn dirty_madviser(_: usize) -> i32 {
    let addr = DC_ADDR.load(Ordering::SeqCst);
    let mut last_other = WRITES.load(Ordering::SeqCst);
    while !STOP.load(Ordering::SeqCst) {
        let _ = madvise(addr, PAGE, MADV_DONTNEED);
        MADVISES.fetch_add(1, Ordering::SeqCst);
        let other = WRITES.load(Ordering::SeqCst);
        if other != last_other {
            INTERLEAVINGS.fetch_add(1, Ordering::SeqCst);
            last_other = other;
        }
    }
    0
}

fn dirty_cow_two_threads(t: &mut Tester) {
    // SAFETY: memfd_create reads a NUL-terminated name.
    let fd = unsafe {
        raw(
            MEMFD_CREATE,
            [c"t_threads".as_ptr() as usize, 0, 0, 0, 0, 0],
        )
    }
    .map_or(-1, |f| f as i32);
    let _ = write(fd, &[b'A'; PAGE]);
    // SAFETY: a new mapping at an address the kernel chooses.
    let ro = unsafe {
        raw(
            nr::MMAP,
            [
                0,
                PAGE,
                PROT_READ as usize,
                MAP_PRIVATE as usize,
                fd as usize,
                0,
            ],
        )
    }
    .unwrap_or(0);
    let mem = open(c"/proc/self/mem", O_RDWR).unwrap_or(-1);
    t.check(
        "Dirty COW set-up: memfd, private read-only mapping, /proc/self/mem",
        fd >= 0 && ro != 0 && mem >= 0,
    );
    if fd < 0 || ro == 0 || mem < 0 {
        return;
    }
    DC_MEM.store(mem, Ordering::SeqCst);
    DC_FD.store(fd, Ordering::SeqCst);
    DC_ADDR.store(ro, Ordering::SeqCst);
    let w = spawn(dirty_writer, 0);
    let m = spawn(dirty_madviser, 0);
    // Long enough for many timer slices (10 ms on cowlab) in each thread, and then until both
    // sides made enough calls for the interleaving check below (bounded): on 2 or 4 CPUs under
    // a loaded host each madvise waits for a TLB shootdown acknowledged by a descheduled vCPU,
    // and 3 s gave 70 madvises (t_threads on 4 CPUs, session 11).
    let _ = sleep_ms(if on_cowlab() { 3000 } else { 1000 });
    for _ in 0..68 {
        if INTERLEAVINGS.load(Ordering::SeqCst) >= 20
            && WRITES.load(Ordering::SeqCst) > 100
            && MADVISES.load(Ordering::SeqCst) > 100
        {
            break;
        }
        let _ = sleep_ms(250);
    }
    STOP.store(true, Ordering::SeqCst);
    for th in [w, m].into_iter().flatten() {
        th.join();
    }
    let mut page = [0u8; PAGE];
    let intact = pread(fd, &mut page, 0) == Ok(PAGE) && page.iter().all(|&b| b == b'A');
    let (writes, madvises, inter) = (
        WRITES.load(Ordering::SeqCst),
        MADVISES.load(Ordering::SeqCst),
        INTERLEAVINGS.load(Ordering::SeqCst),
    );
    println!("t_threads: dirty cow: {writes} forced writes, {madvises} madvise(DONTNEED), {inter} interleavings observed");
    t.check_why(
        "Dirty COW from two threads: the memfd never changed",
        LEAKS.load(Ordering::SeqCst) == 0 && intact,
        format_args!("{} leaks seen during the run", LEAKS.load(Ordering::SeqCst)),
    );
    t.eq(
        "every forced write succeeded",
        WRITE_ERRORS.load(Ordering::SeqCst),
        0,
    );
    t.check_why(
        "the two threads interleaved many times",
        inter >= 20 && writes > 100 && madvises > 100,
        format_args!("{inter} interleavings, {writes} writes, {madvises} madvises"),
    );
    let _ = munmap(ro, PAGE);
    let _ = close(mem);
    let _ = close(fd);
}

fn main() -> i32 {
    let mut t = Tester::new("t_threads");
    identity_and_sharing(&mut t);
    settls_and_settid(&mut t);
    futex_between_threads(&mut t);
    futex_errors(&mut t);
    futex_across_processes(&mut t);
    exits(&mut t);
    fork_and_exec(&mut t);
    frames(&mut t);
    dirty_cow_two_threads(&mut t);
    t.finish()
}
