//! SIGKILL ends every sleep a system call can leave a task in (issue 17, `t_fuzz` seed
//! 0x9740c6bd0002a3fb). That seed's child wrote 5 MiB into a pipe whose read end it held
//! itself: Linux blocks in that write for good too (a writer waits for room while a reader
//! exists, even when the reader is the writer), so the call is not the bug; what must hold is
//! that the parent can end such a child. Each case runs in a child that first blocks every
//! signal it can and ignores `SIGALRM`, then makes the call: the call must still be blocked
//! after 200 ms (as on Linux), and `SIGKILL` must end the child within 3 s. The cases cover
//! the kinds of sleep a system call reaches (pipe waits, futex, timers, poll, pause, io_uring).
//! Passes on the host Linux too.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;

use core::sync::atomic::AtomicU32;

use cowlab_userland::calls::*;
use cowlab_userland::sys::nr;
use cowlab_userland::test::{kill_and_reap, reap_within, Tester, SIGKILL};

cowlab_userland::entry!(main);

const SIG_BLOCK: usize = 0;
const SIG_IGN: usize = 1;
const SIGALRM: usize = 14;
const POLL: usize = 7;
const PAUSE: usize = 34;

/// Blocks every signal (SIGKILL and SIGSTOP cannot be) and ignores SIGALRM, as a fuzzed program
/// may have done before its blocking call.
fn shut_out_signals() {
    let all = u64::MAX;
    // sa_handler, sa_flags, sa_restorer, sa_mask.
    let ignore = [SIG_IGN, 0, 0, 0];
    // SAFETY: a live 8-byte mask and a live 32-byte sigaction; no old values asked for.
    unsafe {
        let _ = raw(
            nr::RT_SIGPROCMASK,
            [SIG_BLOCK, &all as *const u64 as usize, 0, 8, 0, 0],
        );
        let _ = raw(
            nr::RT_SIGACTION,
            [SIGALRM, ignore.as_ptr() as usize, 0, 8, 0, 0],
        );
    }
}

/// The blocking calls: the seed's pipe write, a writev of the same, a read of an empty pipe
/// whose write end the reader holds, a futex wait nobody wakes, an hour's nanosleep, a poll of
/// that empty pipe, pause, and an io_uring wait for a completion nothing posts.
fn sleeper(case: u32) -> i32 {
    shut_out_signals();
    let Ok([rd, w]) = pipe() else {
        return 2;
    };
    let big = [0x5au8; 256 * 1024];
    let came_back = match case {
        0 => write(w, &big),
        1 => {
            let iov = [
                [big.as_ptr() as usize, big.len()],
                [big.as_ptr() as usize, 1],
            ];
            // SAFETY: two live iovecs over `big`.
            unsafe { raw(nr::WRITEV, [w as usize, iov.as_ptr() as usize, 2, 0, 0, 0]) }
        }
        2 => read(rd, &mut [0u8; 16]),
        3 => {
            let word = AtomicU32::new(7);
            cowlab_userland::thread::futex_wait(&word, 7, None)
        }
        4 => sleep_ms(3_600_000),
        5 => {
            // pollfd { fd, events: POLLIN, revents }, no timeout.
            let fds = [rd as u32 as u64 | (1 << 32)];
            // SAFETY: one live pollfd.
            unsafe { raw(POLL, [fds.as_ptr() as usize, 1, usize::MAX, 0, 0, 0]) }
        }
        6 => {
            // SAFETY: pause takes no arguments.
            unsafe { raw(PAUSE, [0; 6]) }
        }
        _ => {
            let mut p = IoUringParams::default();
            match io_uring_setup(4, &mut p) {
                // SAFETY: nothing is submitted; the call only waits for a completion.
                Ok(ring) => unsafe { io_uring_enter(ring, 0, 1, IORING_ENTER_GETEVENTS) },
                Err(e) => Err(e),
            }
        }
    };
    // Returning at all is the failure: exit 3 says the call came back (with its result).
    let _ = came_back;
    3
}

fn main() -> i32 {
    let mut t = Tester::new("t_fuzz3_killsleep");
    let names = [
        "write of 256 KiB into its own pipe",
        "writev of 256 KiB into its own pipe",
        "read of its own empty pipe",
        "futex wait nobody wakes",
        "nanosleep of an hour",
        "poll of its own empty pipe without a timeout",
        "pause",
        "io_uring_enter waiting for a completion nothing posts",
    ];
    // The host may refuse io_uring (a container's seccomp, io_uring_disabled): that case needs it.
    let mut p = IoUringParams::default();
    let uring = io_uring_setup(4, &mut p).map(close).is_ok();
    for (case, name) in names.iter().enumerate() {
        if case == 7 && !uring {
            cowlab_userland::println!("# skipped: {name}: io_uring_setup refused here");
            continue;
        }
        let pid = match fork() {
            Ok(0) => exit_now(sleeper(case as u32)),
            Ok(pid) => pid,
            Err(e) => {
                t.check_why("fork", false, format_args!("{e:?}"));
                continue;
            }
        };
        let early = reap_within(pid, 200);
        t.check_why(
            &format!("still blocked after 200 ms: {name}"),
            matches!(early, Ok(None)),
            format_args!("{early:?}"),
        );
        let (status, took_ms) = kill_and_reap(pid, 3000);
        let killed = matches!(status, Ok(Some(s)) if wifsignaled(s) && wtermsig(s) == SIGKILL);
        t.check_why(
            &format!("SIGKILL ends it within 3 s: {name}"),
            killed,
            format_args!("{status:?} after {took_ms} ms"),
        );
    }
    t.finish()
}
