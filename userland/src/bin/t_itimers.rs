//! `ITIMER_VIRTUAL` and `ITIMER_PROF`, with Linux's answers (the same checks pass on the host):
//! they count the process's CPU time (user time; user and system time: time in the kernel
//! moves only PROF), not the time that passes: `SIGVTALRM` or `SIGPROF` once the process has run that long, nothing while it
//! sleeps; they are armed a tick later than asked; an interval re-arms them; `getitimer` reads
//! what is left and the interval; a value of 0 disarms and keeps the interval; a forked child
//! starts without them; an unknown timer is `EINVAL`.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::sys::errno::EINVAL;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const GETITIMER: usize = 36;
const SETITIMER: usize = 38;
const ITIMER_VIRTUAL: usize = 1;
const ITIMER_PROF: usize = 2;
const SIGVTALRM: usize = 26;
const SIGPROF: usize = 27;
const SA_RESTORER: u64 = 0x0400_0000;
const CLOCK_PROCESS_CPUTIME_ID: usize = 2;
/// Linux and cowlab arm a CPU timer a tick later than asked (Linux's `set_cpu_itimer` adds
/// `TICK_NSEC`: 4 ms at 250 Hz; cowlab's tick is 10 ms), and `getitimer` shows it.
const TICK_US: i64 = 10_000;

static VTALRMS: AtomicU32 = AtomicU32::new(0);
static PROFS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: i32) {
    if sig as usize == SIGVTALRM {
        VTALRMS.fetch_add(1, Ordering::SeqCst);
    } else {
        PROFS.fetch_add(1, Ordering::SeqCst);
    }
}

// The return from a handler: rt_sigreturn (15), as libc's `__restore_rt`.
core::arch::global_asm!(
    ".globl t_itimers_restorer",
    "t_itimers_restorer:",
    "mov eax, 15",
    "syscall",
);

extern "C" {
    fn t_itimers_restorer();
}

fn sc(n: usize, a: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: the calls below pass valid pointers to local structures.
    unsafe { raw(n, a) }
}

fn sigaction(signal: usize) -> Result<usize, Errno> {
    let act: [u64; 4] = [
        on_signal as *const () as usize as u64,
        SA_RESTORER,
        t_itimers_restorer as *const () as usize as u64,
        0,
    ];
    sc(13, [signal, &act as *const _ as usize, 0, 8, 0, 0])
}

/// setitimer(which, {interval, value} in microseconds): the old `(value, interval)`.
fn setitimer(which: usize, value_us: i64, interval_us: i64) -> Result<(i64, i64), i32> {
    let new = [
        interval_us / 1_000_000,
        interval_us % 1_000_000,
        value_us / 1_000_000,
        value_us % 1_000_000,
    ];
    let mut old = [-1i64; 4];
    sc(
        SETITIMER,
        [
            which,
            new.as_ptr() as usize,
            old.as_mut_ptr() as usize,
            0,
            0,
            0,
        ],
    )
    .map_err(|e| e.0)?;
    Ok((old[2] * 1_000_000 + old[3], old[0] * 1_000_000 + old[1]))
}

/// getitimer(which): `(value, interval)` in microseconds.
fn getitimer(which: usize) -> Result<(i64, i64), i32> {
    let mut cur = [-1i64; 4];
    sc(GETITIMER, [which, cur.as_mut_ptr() as usize, 0, 0, 0, 0]).map_err(|e| e.0)?;
    Ok((cur[2] * 1_000_000 + cur[3], cur[0] * 1_000_000 + cur[1]))
}

fn cpu_ms() -> u64 {
    let mut ts = [0i64; 2];
    let _ = sc(
        cowlab_userland::sys::nr::CLOCK_GETTIME,
        [
            CLOCK_PROCESS_CPUTIME_ID,
            ts.as_mut_ptr() as usize,
            0,
            0,
            0,
            0,
        ],
    );
    ts[0] as u64 * 1000 + ts[1] as u64 / 1_000_000
}

/// Spins in user mode until `counter` reaches `want` or 3 s pass; the counter's value.
fn spin_until(counter: &AtomicU32, want: u32) -> u32 {
    let start = monotonic_ns();
    while counter.load(Ordering::SeqCst) < want && monotonic_ns() - start < 3_000_000_000 {
        core::hint::spin_loop();
    }
    counter.load(Ordering::SeqCst)
}

fn main() -> i32 {
    let mut t = Tester::new("t_itimers");
    let handlers = sigaction(SIGVTALRM).and(sigaction(SIGPROF));
    t.check("handlers for SIGVTALRM and SIGPROF", handlers.is_ok());
    t.eq(
        "both timers start disarmed",
        (getitimer(ITIMER_VIRTUAL), getitimer(ITIMER_PROF)),
        (Ok((0, 0)), Ok((0, 0))),
    );
    t.eq(
        "an unknown timer is EINVAL (getitimer, setitimer)",
        (getitimer(3), setitimer(3, 1000, 0).map(|_| ())),
        (Err(EINVAL), Err(EINVAL)),
    );

    // ITIMER_VIRTUAL: 50 ms of user time.
    let before = cpu_ms();
    let armed = setitimer(ITIMER_VIRTUAL, 50_000, 0);
    let left = getitimer(ITIMER_VIRTUAL);
    t.check_why(
        "ITIMER_VIRTUAL armed for 50 ms reads 0 < left <= 50 ms and a tick, no interval",
        armed == Ok((0, 0)) && matches!(left, Ok((v, 0)) if v > 0 && v <= 50_000 + TICK_US),
        alloc::format!("{armed:?} {left:?}"),
    );
    let got = spin_until(&VTALRMS, 1);
    let used = cpu_ms() - before;
    t.check_why(
        "SIGVTALRM arrives once the process has run about 50 ms",
        got == 1 && used >= 40,
        alloc::format!("{got} signals after {used} ms of CPU time"),
    );
    t.eq(
        "a one-shot timer is disarmed after it fired",
        getitimer(ITIMER_VIRTUAL),
        Ok((0, 0)),
    );

    // Time that passes without running does not count.
    let _ = setitimer(ITIMER_VIRTUAL, 1_000_000, 0);
    let _ = sleep_ms(200);
    let left = getitimer(ITIMER_VIRTUAL);
    t.check_why(
        "a 200 ms sleep leaves ITIMER_VIRTUAL's 1 s nearly whole (> 900 ms left)",
        matches!(left, Ok((v, _)) if v > 900_000),
        alloc::format!("{left:?}"),
    );
    let old = setitimer(ITIMER_VIRTUAL, 0, 0);
    t.check_why(
        "setitimer returns the old value",
        matches!(old, Ok((v, 0)) if v > 900_000 && v <= 1_000_000 + TICK_US),
        alloc::format!("{old:?}"),
    );

    // ITIMER_PROF with an interval: three signals, then disarmed by value 0.
    let _ = setitimer(ITIMER_PROF, 20_000, 20_000);
    let got = spin_until(&PROFS, 3);
    let old = setitimer(ITIMER_PROF, 0, 20_000);
    t.check_why(
        "ITIMER_PROF of 20 ms every 20 ms: three SIGPROFs while spinning",
        got >= 3,
        alloc::format!("{got}"),
    );
    t.check_why(
        "setitimer(ITIMER_PROF, 0) returns the interval and a value <= 20 ms",
        matches!(old, Ok((v, 20_000)) if v > 0 && v <= 20_000),
        alloc::format!("{old:?}"),
    );
    t.eq(
        "value 0 disarms and keeps the interval given",
        getitimer(ITIMER_PROF),
        Ok((0, 20_000)),
    );
    let _ = setitimer(ITIMER_PROF, 0, 0);

    // Time in the kernel counts for ITIMER_PROF, not for ITIMER_VIRTUAL: 1 MiB reads of
    // /dev/zero spend nearly all their time in the kernel (with 64 KiB ones cowlab charged
    // half the ticks to the loop around them).
    let vt = VTALRMS.load(Ordering::SeqCst);
    let pf = PROFS.load(Ordering::SeqCst);
    let _ = setitimer(ITIMER_VIRTUAL, 80_000, 0);
    let _ = setitimer(ITIMER_PROF, 80_000, 0);
    let zero = open(c"/dev/zero", 0).unwrap_or(-1);
    let mut buf = alloc::vec![0u8; 1024 * 1024];
    let start = cpu_ms();
    while PROFS.load(Ordering::SeqCst) == pf && cpu_ms() - start < 2_000 {
        let _ = read(zero, &mut buf);
    }
    let _ = close(zero);
    let virt_left = getitimer(ITIMER_VIRTUAL);
    let _ = setitimer(ITIMER_VIRTUAL, 0, 0);
    t.check_why(
        "reading /dev/zero until SIGPROF: no SIGVTALRM, ITIMER_VIRTUAL barely moved",
        PROFS.load(Ordering::SeqCst) > pf
            && VTALRMS.load(Ordering::SeqCst) == vt
            && matches!(virt_left, Ok((v, _)) if v > 40_000),
        alloc::format!(
            "SIGPROF {} -> {}, SIGVTALRM {vt} -> {}, ITIMER_VIRTUAL left {virt_left:?}",
            pf,
            PROFS.load(Ordering::SeqCst),
            VTALRMS.load(Ordering::SeqCst)
        ),
    );

    // fork: the child starts without the parent's timers.
    let _ = setitimer(ITIMER_PROF, 5_000_000, 0);
    let status =
        cowlab_userland::test::in_child(|| i32::from(getitimer(ITIMER_PROF) != Ok((0, 0))));
    let parent = getitimer(ITIMER_PROF);
    let _ = setitimer(ITIMER_PROF, 0, 0);
    t.check_why(
        "a forked child starts with ITIMER_PROF disarmed; the parent's stays",
        status == 0 && matches!(parent, Ok((v, 0)) if v > 0),
        alloc::format!("child status {status:#x}, parent {parent:?}"),
    );
    t.finish()
}
