//! rt_sigtimedwait for SIGCHLD (issue 17): with SIGCHLD blocked and its action the default
//! (ignore), a child that exits while the parent waits must end the wait with SIGCHLD. cowlab
//! unblocks the waited-for set while it sleeps, and its `sig_ignored` looked only at the mask then:
//! the SIGCHLD counted as unblocked-and-ignored and was thrown away, so the wait ran to its
//! timeout. Linux keeps the caller's mask in `real_blocked` for that check. Runs on the host too.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::nr;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const SIGCHLD: usize = 17;
const SIG_BLOCK: usize = 0;
const SIG_SETMASK: usize = 2;
const RT_SIGTIMEDWAIT: usize = 128;
const CLD_EXITED: i32 = 1;

/// `rt_sigtimedwait(&{SIGCHLD}, info, {secs, 0}, 8)`: the signal, and the siginfo words
/// (signo, errno, code, pad, pid, uid, status).
fn wait_sigchld(secs: i64) -> (Result<usize, cowlab_userland::sys::Errno>, [i32; 32]) {
    let set: u64 = 1 << (SIGCHLD - 1);
    let mut info = [0i32; 32];
    let ts = [secs, 0i64];
    // SAFETY: the set, the 128-byte siginfo and the timespec are live locals.
    let r = unsafe {
        raw(
            RT_SIGTIMEDWAIT,
            [
                &set as *const u64 as usize,
                info.as_mut_ptr() as usize,
                ts.as_ptr() as usize,
                8,
                0,
                0,
            ],
        )
    };
    (r, info)
}

fn set_mask(how: usize, mask: u64) {
    // SAFETY: the new mask is a live local; no old mask is asked for.
    let _ = unsafe {
        raw(
            nr::RT_SIGPROCMASK,
            [how, &mask as *const u64 as usize, 0, 8, 0, 0],
        )
    };
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob2_sigwait");
    set_mask(SIG_BLOCK, 1 << (SIGCHLD - 1));

    // The child exits while the parent already waits.
    let pid = match fork() {
        Ok(0) => {
            let _ = sleep_ms(200);
            exit_now(7);
        }
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    let start = monotonic_ns();
    let (r, info) = wait_sigchld(5);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    t.eq("sigtimedwait returns SIGCHLD", r, Ok(SIGCHLD));
    t.check_why(
        "it returned when the child exited, not at the 5 s timeout",
        took_ms < 3000,
        Ms(took_ms),
    );
    t.eq("si_pid is the child", info[4], pid);
    t.eq("si_code is CLD_EXITED", info[2], CLD_EXITED);
    t.eq("si_status is the exit code", info[6], 7);
    t.eq(
        "the child is reaped",
        waitpid(pid, 0).map(|(p, _)| p),
        Ok(pid),
    );

    // The child exits before the wait: the blocked SIGCHLD stays pending and is taken at once.
    let pid = match fork() {
        Ok(0) => exit_now(3),
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    let _ = sleep_ms(200);
    let start = monotonic_ns();
    let (r, info) = wait_sigchld(5);
    let took_ms = (monotonic_ns() - start) / 1_000_000;
    t.eq("a pending SIGCHLD is taken", r, Ok(SIGCHLD));
    t.check_why("at once", took_ms < 1000, Ms(took_ms));
    t.eq("its si_pid is the second child", info[4], pid);
    let _ = waitpid(pid, 0);

    set_mask(SIG_SETMASK, 0);
    t.finish()
}

struct Ms(u64);

impl core::fmt::Display for Ms {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        write!(f, "took {} ms", self.0)
    }
}
