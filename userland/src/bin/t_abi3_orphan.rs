//! Orphaned process groups (POSIX; Linux `kill_orphaned_pgrp`): when a process's exit leaves a
//! process group with no member whose parent is in another group of the same session, and a
//! member is stopped, the group gets SIGHUP then SIGCONT: through the exiting process's own
//! group (its child stopped in it) and through a child's group as the child is reparented.
//! A group that has no stopped member, or is still linked through another member, gets
//! nothing. Each scenario runs in a session of its own (CI's PID namespace hides the outer
//! session leader). The same assertions on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicI32, Ordering};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{getpid, Errno};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const SIGHUP: usize = 1;
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const WUNTRACED: u32 = 2;
const SA_RESTORER: u64 = 0x0400_0000;

/// Where the SIGHUP handler reports.
static REPORT: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_hup(_sig: i32) {
    let _ = write(REPORT.load(Ordering::SeqCst), b"H");
}

core::arch::global_asm!(
    ".globl t_abi3_orphan_restorer",
    "t_abi3_orphan_restorer:",
    "mov eax, 15",
    "syscall",
);

extern "C" {
    fn t_abi3_orphan_restorer();
}

fn on_sighup() {
    let act: [u64; 4] = [
        on_hup as *const () as usize as u64,
        SA_RESTORER,
        t_abi3_orphan_restorer as *const () as usize as u64,
        0,
    ];
    // SAFETY: rt_sigaction reads one struct sigaction.
    let _ = unsafe { raw(13, [SIGHUP, &act as *const _ as usize, 0, 8, 0, 0]) };
}

fn setpgid(pid: i32, pgid: i32) -> Result<usize, Errno> {
    // SAFETY: plain integers.
    unsafe { raw(109, [pid as usize, pgid as usize, 0, 0, 0, 0]) }
}

fn setsid() -> Result<usize, Errno> {
    // SAFETY: no arguments.
    unsafe { raw(112, [0; 6]) }
}

/// What arrives on `fd` within `ms` milliseconds (stops early at `want` bytes or EOF).
fn collect(fd: i32, want: usize, ms: i32) -> Vec<u8> {
    let mut out = Vec::new();
    let end = monotonic_ns() + ms as u64 * 1_000_000;
    while out.len() < want {
        let now = monotonic_ns();
        if now >= end {
            break;
        }
        let mut pfd = [fd as u64 | (1u64 << 32)];
        let left = ((end - now) / 1_000_000) as usize + 1;
        // SAFETY: poll reads and writes one struct pollfd.
        match unsafe { raw(7, [pfd.as_mut_ptr() as usize, 1, left, 0, 0, 0]) } {
            Ok(1) => {}
            _ => continue,
        }
        let mut b = [0u8; 16];
        match read(fd, &mut b[..want - out.len()]) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&b[..n]),
        }
    }
    out
}

/// The stopped child: reports SIGHUP with `H`, and `C` once it runs again, then exits.
fn stopped_child(w: i32) -> ! {
    REPORT.store(w, Ordering::SeqCst);
    on_sighup();
    let _ = kill(getpid(), SIGSTOP);
    let _ = write(w, b"C");
    exit_now(0)
}

/// The middle process: forks the child (`own_group`: in a group of its own), waits until it
/// has stopped, passes its pid up the pipe and exits, orphaning the child.
fn middle(w: i32, own_group: bool) -> ! {
    let c = fork().unwrap_or(-1);
    if c == 0 {
        if own_group {
            let _ = setpgid(0, 0);
        }
        stopped_child(w);
    }
    let stopped = matches!(waitpid(c, WUNTRACED), Ok((_, s)) if s & 0xff == 0x7f);
    let _ = write(w, &c.to_le_bytes());
    exit_now(i32::from(!stopped))
}

/// Runs a scenario in a new session: `setup(w)` forks the middle process; the output the
/// stopped child produced within `ms` (after its pid), and whether the middle exited 0.
fn scenario(ms: i32, setup: impl FnOnce(i32) -> (i32, Vec<i32>)) -> (Vec<u8>, bool) {
    let [r, w] = pipe().expect("pipe");
    let (mid, extra) = setup(w);
    let mid_ok = matches!(waitpid(mid, 0), Ok((_, 0)));
    let pid = collect(r, 4, 2000);
    let child = i32::from_le_bytes(pid.try_into().unwrap_or([0; 4]));
    let out = collect(r, 2, ms);
    for p in extra.into_iter().chain([child]).filter(|&p| p > 0) {
        let _ = kill(p, SIGKILL);
    }
    for p in [r, w] {
        let _ = close(p);
    }
    (out, mid_ok)
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi3_orphan");
    let status = in_child(|| {
        if setsid().is_err() {
            return 2;
        }
        // Its own name: the program's one summary line is the parent's.
        let mut t = Tester::new("t_abi3_orphan[session]");
        // 1. Exit: P leads group P, its child C stops in it; P's exit cuts the group's
        //    only link (P's parent, us, in our group): HUP and CONT to group P.
        let (out, ok) = scenario(3000, |w| {
            let p = fork().unwrap_or(-1);
            if p == 0 {
                let _ = setpgid(0, 0);
                middle(w, false);
            }
            (p, Vec::new())
        });
        t.check("exit: the middle saw its child stop", ok);
        t.eq("exit: SIGHUP, then SIGCONT resumes", out, b"HC".to_vec());
        // 2. Reparent: E stays in our group, its child C leads group C and stops; E's exit
        //    reparents C to init, cutting group C's link: HUP and CONT to group C.
        let (out, ok) = scenario(3000, |w| {
            let e = fork().unwrap_or(-1);
            if e == 0 {
                middle(w, true);
            }
            (e, Vec::new())
        });
        t.check("reparent: the middle saw its child stop", ok);
        t.eq(
            "reparent: SIGHUP, then SIGCONT resumes",
            out,
            b"HC".to_vec(),
        );
        // 3. Still linked: M, our child, joins group P too, so P's exit does not orphan it.
        let (out, ok) = scenario(500, |w| {
            let p = fork().unwrap_or(-1);
            if p == 0 {
                let _ = setpgid(0, 0);
                // Wait until M is in the group before stopping the child and exiting.
                let _ = collect(w, 0, 0);
                sleep_ms(100).ok();
                middle(w, false);
            }
            let _ = setpgid(p, p);
            let m = fork().unwrap_or(-1);
            if m == 0 {
                let _ = setpgid(0, p);
                loop {
                    let _ = sleep_ms(1000);
                }
            }
            let _ = setpgid(m, p);
            (p, Vec::from([m]))
        });
        t.check("linked: the middle saw its child stop", ok);
        t.eq(
            "linked: a group linked through another member: nothing",
            out,
            Vec::new(),
        );
        // 4. No stopped member: orphaning alone sends nothing.
        let [r, w] = pipe().expect("pipe");
        let p = fork().unwrap_or(-1);
        if p == 0 {
            let _ = setpgid(0, 0);
            let c = fork().unwrap_or(-1);
            if c == 0 {
                REPORT.store(w, Ordering::SeqCst);
                on_sighup();
                let _ = sleep_ms(500);
                let _ = write(w, b"C");
                exit_now(0);
            }
            exit_now(0);
        }
        let _ = waitpid(p, 0);
        t.eq(
            "running group orphaned: no SIGHUP",
            collect(r, 2, 2000),
            b"C".to_vec(),
        );
        t.finish()
    });
    t.check_why(
        "the scenarios ran in their own session",
        wifexited(status) && wexitstatus(status) == 0,
        alloc::format!("status {status:#x}"),
    );
    t.finish()
}
