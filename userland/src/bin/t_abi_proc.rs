//! Issue 13's process calls, with Linux's answers (the same checks pass on the host):
//! `nanosleep`/`clock_nanosleep` interrupted by a handler fail with `EINTR` and write the time
//! left; `SIGCHLD` set to `SIG_IGN` or `SA_NOCLDWAIT` reap children automatically (no zombie,
//! `wait` fails with `ECHILD` once they are gone, the handler still runs with `SA_NOCLDWAIT`);
//! `vfork` shares the memory and blocks the parent until the child exits or execs (the child
//! runs only assembly: it must not touch the stack it shares with its blocked parent).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const SIGCHLD: usize = 17;
const SIGALRM: usize = 14;
const SA_NOCLDWAIT: u64 = 2;
const SA_RESTORER: u64 = 0x0400_0000;
const SIG_IGN: usize = 1;

static CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_sig: i32) {
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

// The return from a handler: rt_sigreturn (15), as libc's `__restore_rt`.
core::arch::global_asm!(
    ".globl t_abi_proc_restorer",
    "t_abi_proc_restorer:",
    "mov eax, 15",
    "syscall",
);

extern "C" {
    fn t_abi_proc_restorer();
}

fn sc(n: usize, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the calls below pass valid pointers to local structures.
    unsafe { raw(n, a) }
}

/// rt_sigaction(signal, handler, flags) with the restorer above.
fn sigaction(signal: usize, handler: usize, flags: u64) -> Result<usize, Errno> {
    let act: [u64; 4] = [
        handler as u64,
        flags | SA_RESTORER,
        t_abi_proc_restorer as *const () as usize as u64,
        0,
    ];
    sc(13, [signal, &act as *const _ as usize, 0, 8, 0, 0])
}

/// A one-shot ITIMER_REAL of `ms` milliseconds.
fn alarm_ms(ms: i64) {
    let it: [i64; 4] = [0, 0, 0, ms * 1000];
    let _ = sc(38, [0, &it as *const _ as usize, 0, 0, 0, 0]);
}

fn spawn_exiting_child() -> i32 {
    match fork() {
        Ok(0) => exit_now(0),
        Ok(pid) => pid,
        Err(_) => -1,
    }
}

/// The vfork child's flag, written by the child in the shared memory.
static FLAG: AtomicU32 = AtomicU32::new(0);

/// vfork; the child sleeps `*ts`, stores 42 in `FLAG` and exits with 5. Returns the child's pid
/// in the parent.
fn vfork_sleep_store_exit(ts: &[i64; 2]) -> isize {
    let ret: isize;
    // SAFETY: the child runs only this block's instructions after the vfork (nanosleep, a
    // store to a static, exit) and never returns into Rust code, so it writes nothing to the
    // stack it shares with the parent; the parent continues after the block.
    unsafe {
        core::arch::asm!(
            "mov eax, 58",
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {ts}",
            "xor esi, esi",
            "mov eax, 35",
            "syscall",
            "mov dword ptr [{flag}], 42",
            "mov edi, 5",
            "mov eax, 60",
            "syscall",
            "2:",
            ts = in(reg) ts as *const _ as usize,
            flag = in(reg) FLAG.as_ptr() as usize,
            out("rax") ret,
            out("rdi") _,
            out("rsi") _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// vfork; the child execs `path` with `argv` (a NULL-terminated array) or exits 127.
fn vfork_exec(path: *const u8, argv: *const *const u8) -> isize {
    let ret: isize;
    // SAFETY: as in `vfork_sleep_store_exit`: the child only makes system calls.
    unsafe {
        core::arch::asm!(
            "mov eax, 58",
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, {path}",
            "mov rsi, {argv}",
            "xor edx, edx",
            "mov eax, 59",
            "syscall",
            "mov edi, 127",
            "mov eax, 60",
            "syscall",
            "2:",
            path = in(reg) path as usize,
            argv = in(reg) argv as usize,
            out("rax") ret,
            out("rdi") _,
            out("rsi") _,
            out("rdx") _,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// times(): (utime, stime, cutime, cstime) in ticks of 1/100 s.
fn times() -> [i64; 4] {
    let mut tms = [0i64; 4];
    let _ = sc(100, [tms.as_mut_ptr() as usize, 0, 0, 0, 0, 0]);
    tms
}

/// Burns user time until `times()` shows `ticks` of it, or 20 s of wall time pass.
fn spin_user(ticks: i64) -> bool {
    let deadline = monotonic_ns() + 20_000_000_000;
    let mut x = 1u64;
    while monotonic_ns() < deadline {
        for _ in 0..100_000 {
            x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        if times()[0] >= ticks {
            return true;
        }
    }
    false
}

fn main() -> i32 {
    if cowlab_userland::args()
        .nth(1)
        .is_some_and(|a| a.to_bytes() == b"sleep-exit")
    {
        let _ = sleep_ms(300);
        return 7;
    }
    let mut t = Tester::new("t_abi_proc");

    // vfork: shared memory, the parent waits for the child's exit.
    let ts: [i64; 2] = [0, 100_000_000];
    let start = monotonic_ns();
    let pid = vfork_sleep_store_exit(&ts);
    let waited = monotonic_ns() - start;
    t.check_why("vfork", pid > 0, pid);
    t.eq(
        "the vfork child wrote the parent's memory before the parent ran",
        FLAG.load(Ordering::SeqCst),
        42,
    );
    t.check_why(
        "the parent was blocked while the child slept",
        waited >= 90_000_000,
        waited,
    );
    t.eq(
        "the vfork child is reaped with its status",
        waitpid(pid as i32, 0).map(|(p, s)| (p, wexitstatus(s))),
        Ok((pid as i32, 5)),
    );
    // vfork + exec: the parent runs again at the exec, while the child still lives.
    let me = cowlab_userland::test::sibling("t_abi_proc");
    let mut path = me.clone();
    path.push(0);
    let arg1 = b"sleep-exit\0";
    let argv: [*const u8; 3] = [path.as_ptr(), arg1.as_ptr(), core::ptr::null()];
    let start = monotonic_ns();
    let pid = vfork_exec(path.as_ptr(), argv.as_ptr()) as i32;
    let waited = monotonic_ns() - start;
    t.check_why("vfork then exec", pid > 0, pid);
    t.check_why(
        "the parent resumed at the exec, not at the exit",
        waited < 250_000_000,
        waited,
    );
    t.eq(
        "the exec'd child still runs",
        waitpid(pid, 1).map(|r| r.0),
        Ok(0),
    );
    t.eq(
        "the exec'd child exits 7",
        waitpid(pid, 0).map(|(p, s)| (p, wexitstatus(s))),
        Ok((pid, 7)),
    );
    let eintr = Err(Errno(cowlab_userland::sys::EINTR));
    let echild = Err(Errno(errno::ECHILD));

    // CPU time: times, getrusage and wait4's rusage.
    t.check("user time reaches 20 ticks", spin_user(20));
    let z = open(c"/dev/zero", O_RDONLY).unwrap_or(-1);
    let mut chunk = alloc::vec![0u8; 1 << 20];
    let deadline = monotonic_ns() + 20_000_000_000;
    while times()[1] < 10 && monotonic_ns() < deadline {
        let _ = read(z, &mut chunk);
    }
    let _ = close(z);
    t.check_why(
        "reads of /dev/zero count as system time",
        times()[1] >= 10,
        format_args!("{:?}", times()),
    );
    let mut ru = [0i64; 18];
    t.eq(
        "getrusage(RUSAGE_SELF)",
        sc(98, [0, ru.as_mut_ptr() as usize, 0, 0, 0, 0]),
        Ok(0),
    );
    t.check_why(
        "ru_utime >= 200 ms",
        ru[0] * 1_000_000 + ru[1] >= 200_000,
        format_args!("{:?}", &ru[..4]),
    );
    t.check_why(
        "ru_stime >= 100 ms",
        ru[2] * 1_000_000 + ru[3] >= 100_000,
        format_args!("{:?}", &ru[..4]),
    );
    let mut thread_ru = [0i64; 18];
    t.eq(
        "getrusage(RUSAGE_THREAD)",
        sc(98, [1, thread_ru.as_mut_ptr() as usize, 0, 0, 0, 0]),
        Ok(0),
    );
    t.check(
        "RUSAGE_THREAD utime > 0",
        thread_ru[0] * 1_000_000 + thread_ru[1] > 0,
    );
    t.eq(
        "getrusage(2)",
        sc(98, [2, ru.as_mut_ptr() as usize, 0, 0, 0, 0]),
        Err(Errno(errno::EINVAL)),
    );
    t.check("times(NULL) succeeds", sc(100, [0; 6]).is_ok());
    t.eq(
        "times to a bad address",
        sc(100, [8, 0, 0, 0, 0, 0]),
        Err(Errno(errno::EFAULT)),
    );
    let before = times();
    match fork() {
        Ok(0) => {
            let mine = times()[0];
            exit_now(i32::from(!spin_user(mine + 20)));
        }
        Ok(child) => {
            let mut status = 0i32;
            let mut cru = [0i64; 18];
            let r = sc(
                61,
                [
                    child as usize,
                    &mut status as *mut i32 as usize,
                    0,
                    cru.as_mut_ptr() as usize,
                    0,
                    0,
                ],
            );
            t.eq("wait4 with rusage", r, Ok(child as usize));
            t.eq("the child burned its 20 ticks", wexitstatus(status), 0);
            t.check_why(
                "wait4's ru_utime >= 200 ms",
                cru[0] * 1_000_000 + cru[1] >= 200_000,
                format_args!("{:?}", &cru[..4]),
            );
            let after = times();
            t.check_why(
                "times' cutime grew by the child's",
                after[2] - before[2] >= 20,
                format_args!("{before:?} {after:?}"),
            );
            let mut chru = [0i64; 18];
            let _ = sc(98, [usize::MAX, chru.as_mut_ptr() as usize, 0, 0, 0, 0]);
            t.check_why(
                "RUSAGE_CHILDREN utime >= 200 ms",
                chru[0] * 1_000_000 + chru[1] >= 200_000,
                format_args!("{:?}", &chru[..4]),
            );
            let stat = alloc::string::String::from_utf8(slurp_stat()).unwrap_or_default();
            let fields: alloc::vec::Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().collect())
                .unwrap_or_default();
            // Fields 14..17 (utime, stime, cutime, cstime) are the 12th..15th after the name.
            let utime: i64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(-1);
            let cutime: i64 = fields.get(13).and_then(|f| f.parse().ok()).unwrap_or(-1);
            t.check_why(
                "/proc/self/stat utime and cutime",
                utime >= 20 && cutime >= 20,
                &stat,
            );
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }

    // clone3: Linux's argument checks, then a fork-like child.
    let e2big = Err(Errno(7));
    let einval = Err(Errno(errno::EINVAL));
    let mut ca = [0u64; 11];
    ca[4] = SIGCHLD as u64;
    let c3 = |args: &[u64; 11], size: usize| sc(435, [args.as_ptr() as usize, size, 0, 0, 0, 0]);
    t.eq("clone3 size below VER0", c3(&ca, 63), einval);
    let mut big = [0u64; 40];
    big[4] = SIGCHLD as u64;
    t.eq(
        "clone3 size above a page",
        sc(435, [big.as_ptr() as usize, 5000, 0, 0, 0, 0]),
        e2big,
    );
    big[20] = 1;
    t.eq(
        "clone3 non-zero unknown tail",
        sc(435, [big.as_ptr() as usize, 200, 0, 0, 0, 0]),
        e2big,
    );
    let mut bad = ca;
    bad[0] = SIGCHLD as u64;
    bad[4] = 0;
    t.eq("clone3 CSIGNAL bits in flags", c3(&bad, 88), einval);
    let mut bad = ca;
    bad[4] = 65;
    t.eq("clone3 exit_signal 65", c3(&bad, 88), einval);
    let mut bad = ca;
    bad[6] = 4096;
    t.eq("clone3 stack_size without stack", c3(&bad, 88), einval);
    let mut bad = ca;
    bad[0] = 0x10000 | 0x800 | 0x100;
    t.eq("clone3 thread with an exit signal", c3(&bad, 88), einval);
    let mut bad = ca;
    bad[8] = 1;
    t.eq("clone3 set_tid without set_tid_size", c3(&bad, 88), einval);
    t.eq(
        "clone3 unreadable args",
        sc(435, [8, 88, 0, 0, 0, 0]),
        Err(Errno(errno::EFAULT)),
    );
    match c3(&ca, 64) {
        Ok(0) => exit_now(3),
        Ok(pid) => t.eq(
            "a clone3 child is a process with SIGCHLD",
            waitpid(pid as i32, 0).map(|(p, s)| (p as usize, wexitstatus(s))),
            Ok((pid, 3)),
        ),
        Err(e) => t.check_why("clone3 fork-like", false, format_args!("{e:?}")),
    }

    // nanosleep: EINTR and the remaining time.
    t.eq(
        "SIGALRM handler",
        sigaction(SIGALRM, on_signal as *const () as usize, 0),
        Ok(0),
    );
    alarm_ms(100);
    let req: [i64; 2] = [2, 0];
    let mut rem: [i64; 2] = [-1, -1];
    let r = sc(
        35,
        [
            &req as *const _ as usize,
            rem.as_mut_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    t.eq("nanosleep interrupted by a handler", r, eintr);
    t.eq("the handler ran", CAUGHT.load(Ordering::SeqCst), 1);
    let left = rem[0] * 1_000_000_000 + rem[1];
    t.check_why(
        "nanosleep wrote the time left (about 1.9 s of 2 s)",
        (1_000_000_000..2_000_000_000).contains(&left) && (0..1_000_000_000).contains(&rem[1]),
        format_args!("{rem:?}"),
    );
    alarm_ms(100);
    let mut rem2: [i64; 2] = [-1, -1];
    let r = sc(
        230,
        [
            1,
            0,
            &req as *const _ as usize,
            rem2.as_mut_ptr() as usize,
            0,
            0,
        ],
    );
    t.eq("clock_nanosleep interrupted", r, eintr);
    let left = rem2[0] * 1_000_000_000 + rem2[1];
    t.check_why(
        "clock_nanosleep wrote the time left",
        (1_000_000_000..2_000_000_000).contains(&left),
        format_args!("{rem2:?}"),
    );
    alarm_ms(100);
    let r = sc(35, [&req as *const _ as usize, 8, 0, 0, 0, 0]);
    t.eq(
        "nanosleep with an unwritable rem",
        r,
        Err(Errno(errno::EFAULT)),
    );
    let short: [i64; 2] = [0, 1_000_000];
    let mut rem3: [i64; 2] = [7, 7];
    let r = sc(
        35,
        [
            &short as *const _ as usize,
            rem3.as_mut_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    t.eq("an uninterrupted nanosleep", r, Ok(0));
    t.eq("an uninterrupted nanosleep leaves rem alone", rem3, [7, 7]);

    // SIGCHLD ignored: children are reaped at exit.
    t.eq("SIGCHLD SIG_IGN", sigaction(SIGCHLD, SIG_IGN, 0), Ok(0));
    let a = spawn_exiting_child();
    let b = spawn_exiting_child();
    t.check("fork", a > 0 && b > 0);
    t.eq(
        "wait with SIGCHLD ignored: ECHILD once both are gone",
        waitpid(-1, 0).map(|r| r.0),
        echild,
    );
    t.check(
        "no zombie left in /proc",
        read_file(&cpath(a), &mut [0u8; 64]).is_none()
            && read_file(&cpath(b), &mut [0u8; 64]).is_none(),
    );

    // SA_NOCLDWAIT with a handler: reaped too, and SIGCHLD still delivered.
    CAUGHT.store(0, Ordering::SeqCst);
    t.eq(
        "SIGCHLD SA_NOCLDWAIT",
        sigaction(SIGCHLD, on_signal as *const () as usize, SA_NOCLDWAIT),
        Ok(0),
    );
    let c = spawn_exiting_child();
    let mut r = waitpid(c, 0).map(|r| r.0);
    // A handler interrupting the wait is EINTR; wait again.
    while r == Err(Errno(cowlab_userland::sys::EINTR)) {
        r = waitpid(c, 0).map(|r| r.0);
    }
    t.eq("wait with SA_NOCLDWAIT: ECHILD", r, echild);
    for _ in 0..1000 {
        if CAUGHT.load(Ordering::SeqCst) > 0 {
            break;
        }
        let _ = sleep_ms(1);
    }
    t.eq(
        "SIGCHLD was still delivered",
        CAUGHT.load(Ordering::SeqCst),
        1,
    );

    // Back to SIG_DFL: a zombie waits to be reaped.
    t.eq("SIGCHLD SIG_DFL", sigaction(SIGCHLD, 0, 0), Ok(0));
    let d = spawn_exiting_child();
    t.eq(
        "with SIG_DFL the child is waited for",
        waitpid(d, 0).map(|r| (r.0, r.1)),
        Ok((d, 0)),
    );
    cpu_clocks(&mut t);
    cpu_clock_sleeps(&mut t);
    t.finish()
}

fn slurp_stat() -> alloc::vec::Vec<u8> {
    let mut buf = alloc::vec![0u8; 1024];
    let n = read_file(c"/proc/self/stat", &mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

fn cpath(pid: i32) -> alloc::ffi::CString {
    alloc::ffi::CString::new(alloc::format!("/proc/{pid}/stat")).unwrap_or_default()
}

extern crate alloc;

const CLOCK_PROCESS_CPUTIME_ID: usize = 2;
const CLOCK_THREAD_CPUTIME_ID: usize = 3;

/// `clock_gettime(clock)` in nanoseconds.
fn clock_ns(clock: usize) -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime writes one timespec to `ts`.
    let _ = unsafe {
        cowlab_userland::calls::raw(
            cowlab_userland::sys::nr::CLOCK_GETTIME,
            [clock, ts.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    };
    ts[0] as u64 * 1_000_000_000 + ts[1] as u64
}

/// `clock_nanosleep(clock, flags, {sec, nsec})`: 0 or the negated errno.
fn clock_nanosleep(clock: usize, flags: usize, sec: u64, nsec: u64) -> isize {
    let ts = [sec as i64, nsec as i64];
    // SAFETY: clock_nanosleep reads one timespec from `ts`; no remainder is asked for.
    match unsafe {
        cowlab_userland::calls::raw(
            cowlab_userland::sys::nr::CLOCK_NANOSLEEP,
            [clock, flags, ts.as_ptr() as usize, 0, 0, 0],
        )
    } {
        Ok(_) => 0,
        Err(e) => -(e.0 as isize),
    }
}

static SPINNING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

fn spin_until_told(_: usize) -> i32 {
    while SPINNING.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    0
}

/// Sleeping on the CPU clocks, as Linux: a thread's own clock has no sleep, the raw and coarse
/// clocks none either (`EOPNOTSUPP`), and the process clock sleeps until the group
/// has used that CPU time: with a second thread spinning, a 50 ms sleep on it ends once the
/// group's clock has moved 50 ms (cowlab's absolute sleep compared CPU time with the time since
/// boot and returned at once).
fn cpu_clock_sleeps(t: &mut Tester) {
    // The system call's answer; glibc's wrapper says EINVAL for the thread clock before it.
    let raw = (3..=6)
        .map(|c| clock_nanosleep(c, 0, 0, 1_000_000))
        .collect::<alloc::vec::Vec<_>>();
    t.check_why(
        "clock_nanosleep on THREAD_CPUTIME_ID, MONOTONIC_RAW and the coarse clocks is EOPNOTSUPP",
        raw.iter().all(|&r| r == -95),
        alloc::format!("{raw:?}"),
    );
    let now = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    t.check(
        "an absolute CLOCK_PROCESS_CPUTIME_ID sleep to a CPU time already used returns at once",
        clock_nanosleep(
            CLOCK_PROCESS_CPUTIME_ID,
            1,
            now / 1_000_000_000,
            now % 1_000_000_000,
        ) == 0,
    );
    SPINNING.store(true, Ordering::Release);
    let Ok(spinner) = cowlab_userland::thread::spawn(spin_until_told, 0) else {
        t.check("spawn a spinning thread", false);
        return;
    };
    let before = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    let relative = clock_nanosleep(CLOCK_PROCESS_CPUTIME_ID, 0, 0, 50_000_000);
    let mid = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    let target = mid + 50_000_000;
    let absolute = clock_nanosleep(
        CLOCK_PROCESS_CPUTIME_ID,
        1,
        target / 1_000_000_000,
        target % 1_000_000_000,
    );
    let after = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    SPINNING.store(false, Ordering::Release);
    spinner.join();
    cowlab_userland::println!(
        "t_abi_proc: 50 ms CLOCK_PROCESS_CPUTIME_ID sleeps beside a spinning thread: relative +{} ms, absolute +{} ms",
        (mid - before) / 1_000_000,
        (after - mid) / 1_000_000
    );
    t.check_why(
        "a relative 50 ms CLOCK_PROCESS_CPUTIME_ID sleep ends once the group used 50 ms",
        relative == 0 && mid - before >= 50_000_000,
        alloc::format!("returned {relative}, +{} ns", mid - before),
    );
    t.check_why(
        "an absolute CLOCK_PROCESS_CPUTIME_ID sleep ends at its CPU time",
        absolute == 0 && after >= target,
        alloc::format!("returned {absolute}, clock {after} against {target}"),
    );
}

/// The CPU-time clocks count the caller's CPU time: they stand still over a sleep and advance
/// over a spin (cowlab's returned the time since boot, which a sleep advances too).
fn cpu_clocks(t: &mut Tester) {
    let (p0, t0) = (
        clock_ns(CLOCK_PROCESS_CPUTIME_ID),
        clock_ns(CLOCK_THREAD_CPUTIME_ID),
    );
    let _ = sleep_ms(300);
    let (p1, t1) = (
        clock_ns(CLOCK_PROCESS_CPUTIME_ID),
        clock_ns(CLOCK_THREAD_CPUTIME_ID),
    );
    let start = monotonic_ns();
    while monotonic_ns() - start < 300_000_000 {
        core::hint::spin_loop();
    }
    let (p2, t2) = (
        clock_ns(CLOCK_PROCESS_CPUTIME_ID),
        clock_ns(CLOCK_THREAD_CPUTIME_ID),
    );
    cowlab_userland::println!(
        "t_abi_proc: CPU clocks over a 300 ms sleep: process +{} ms, thread +{} ms; over a 300 ms spin: +{} ms, +{} ms",
        (p1 - p0) / 1_000_000,
        (t1 - t0) / 1_000_000,
        (p2 - p1) / 1_000_000,
        (t2 - t1) / 1_000_000
    );
    // Bounds loose enough for tick sampling (10 ms) and a loaded host's share of a spin.
    t.check_why(
        "CLOCK_PROCESS/THREAD_CPUTIME_ID stand still over a 300 ms sleep",
        p1 - p0 < 100_000_000 && t1 - t0 < 100_000_000,
        alloc::format!("+{} / +{} ns", p1 - p0, t1 - t0),
    );
    t.check_why(
        "CLOCK_PROCESS/THREAD_CPUTIME_ID advance over a 300 ms spin",
        p2 - p1 >= 20_000_000 && t2 - t1 >= 20_000_000,
        alloc::format!("+{} / +{} ns", p2 - p1, t2 - t1),
    );
}
