//! Group stop with a thread running in ring 3 on another CPU: a child process whose second
//! thread counts in a shared page is stopped with SIGSTOP; once `waitpid(WUNTRACED)` reports it
//! stopped, the counter must not move (Linux reports a group stop only when every thread has
//! stopped, `task_participate_group_stop`). Then SIGCONT, and the counter must move again.
//! `rounds=N` (default 20) stop/continue rounds.
//!
//! Regression test (branch smp2): cowlab notified the parent when the first thread took the
//! stop, so on 2 CPUs the other thread could still count after `waitpid` returned
//! (c_signals_glibc: one increment after the report, 2 boots of 7). Booted with 2 CPUs
//! (`usertest::OWN_CPUS`); with one CPU it passes trivially, the other thread not running then.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_userland::calls::*;
use cowlab_userland::test::{ms_since, Tester};
use cowlab_userland::thread::spawn;

cowlab_userland::entry!(main);

const SIGKILL: i32 = 9;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;
const WUNTRACED: u32 = 2;

/// The `key=N` argument, if any.
fn arg(key: &[u8]) -> Option<u64> {
    cowlab_userland::args().skip(1).find_map(|a| {
        let v = a.to_bytes().strip_prefix(key)?;
        core::str::from_utf8(v).ok()?.parse().ok()
    })
}

fn count(counter: usize) -> i32 {
    // SAFETY: `counter` is the address of an `AtomicU64` in a shared page mapped by the parent
    // before the fork and never unmapped in the child.
    let counter = unsafe { &*(counter as *const AtomicU64) };
    loop {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits up to 10 s for `counter` to move past `from`; whether it did.
fn moves(counter: &AtomicU64, from: u64) -> bool {
    let t0 = monotonic_ns();
    while counter.load(Ordering::Relaxed) == from {
        if ms_since(t0) > 10_000 {
            return false;
        }
        let _ = sleep_ms(1);
    }
    true
}

fn main() -> i32 {
    let mut t = Tester::new("t_smp2_groupstop");
    let rounds = arg(b"rounds=").unwrap_or(20);
    let page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS).expect("mmap");
    // SAFETY: a fresh, zeroed, page-aligned read-write page.
    let counter = unsafe { &*(page as *const AtomicU64) };
    let child = match fork() {
        Ok(0) => {
            if spawn(count, page).is_err() {
                cowlab_userland::sys::exit(2);
            }
            loop {
                let _ = sleep_ms(1000);
            }
        }
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    t.check("the child's thread counts", moves(counter, 0));
    let (mut reported, mut moved_after, mut resumed) = (0u64, 0u64, 0u64);
    let mut first_bad = None;
    for round in 0..rounds {
        let _ = kill(child, SIGSTOP);
        let stopped =
            matches!(waitpid(child, WUNTRACED), Ok((p, s)) if p == child && s & 0xff == 0x7f);
        let c1 = counter.load(Ordering::Relaxed);
        let _ = sleep_ms(20);
        let c2 = counter.load(Ordering::Relaxed);
        reported += u64::from(stopped);
        if c1 != c2 {
            moved_after += 1;
            first_bad.get_or_insert((round, c1, c2));
        }
        let _ = kill(child, SIGCONT);
        resumed += u64::from(moves(counter, c2));
    }
    let _ = kill(child, SIGKILL);
    let _ = waitpid(child, 0);
    t.check_why(
        "waitpid(WUNTRACED) reports every stop",
        reported == rounds,
        format_args!("{reported} of {rounds}"),
    );
    t.check_why(
        "no thread counts after waitpid reported the group stopped",
        moved_after == 0,
        format_args!(
            "{moved_after} of {rounds} rounds; first (round, before, 20 ms later): {first_bad:?}"
        ),
    );
    t.check_why(
        "the thread counts again after each SIGCONT",
        resumed == rounds,
        format_args!("{resumed} of {rounds}"),
    );
    t.finish()
}
