//! waitid, with Linux's answers (the same checks pass on the host): the argument errors, the
//! six `siginfo_t` fields for an exit, a kill, a stop and a continue, `WNOHANG` with nothing
//! to report and on failure (zeros), `WNOWAIT` leaving the child (a stop, a continue)
//! waitable, `P_PGID` 0 and a group by id, the rusage of the reaped child, and a bad `infop`
//! failing with `EFAULT` even after the child was reaped (Linux reaps, then copies out) or
//! with no child at all.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::sys::errno::{EBADF, ECHILD, EFAULT, EINVAL};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const WAITID: usize = 247;
const SETPGID: usize = 109;

const P_ALL: i32 = 0;
const P_PID: i32 = 1;
const P_PGID: i32 = 2;
const P_PIDFD: i32 = 3;

const WNOHANG: u32 = 1;
const WSTOPPED: u32 = 2;
const WEXITED: u32 = 4;
const WCONTINUED: u32 = 8;
const WNOWAIT: u32 = 0x0100_0000;

const SIGKILL: i32 = 9;
const SIGCHLD: i32 = 17;
const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_STOPPED: i32 = 5;
const CLD_CONTINUED: i32 = 6;

/// The `siginfo_t` fields waitid writes, after a fill of 0x55 bytes so that unwritten fields
/// show.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Info {
    signo: i32,
    errno: i32,
    code: i32,
    pid: i32,
    uid: i32,
    status: i32,
}

/// waitid(idtype, id, &info, options, ru): the result and the six fields.
fn waitid(idtype: i32, id: i32, options: u32, ru: usize) -> (Result<usize, i32>, Info) {
    let mut si = [0x5555_5555i32; 32];
    // SAFETY: `si` is a 128-byte siginfo_t; `ru` is 0 or a caller's 144-byte rusage.
    let r = unsafe {
        raw(
            WAITID,
            [
                idtype as isize as usize,
                id as isize as usize,
                si.as_mut_ptr() as usize,
                options as usize,
                ru,
                0,
            ],
        )
    };
    let info = Info {
        signo: si[0],
        errno: si[1],
        code: si[2],
        pid: si[4],
        uid: si[5],
        status: si[6],
    };
    (r.map_err(|e| e.0), info)
}

fn err(idtype: i32, id: i32, options: u32) -> Result<usize, i32> {
    waitid(idtype, id, options, 0).0
}

fn getuid() -> i32 {
    // SAFETY: getuid takes no arguments.
    unsafe { raw(cowlab_userland::sys::nr::GETUID, [0; 6]) }.unwrap_or(0) as i32
}

/// A child that runs `body` then exits with its result.
fn child(body: fn() -> i32) -> i32 {
    match fork() {
        Ok(0) => exit_now(body()),
        Ok(pid) => pid,
        Err(e) => -e.0,
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_waitid");
    let uid = getuid();
    t.eq("no children: ECHILD", err(P_ALL, 0, WEXITED), Err(ECHILD));
    let bad = [
        err(P_ALL, 0, 0),
        err(P_ALL, 0, WEXITED | 0x10),
        err(P_PID, 0, WEXITED),
        err(P_PID, -5, WEXITED),
        err(P_PGID, -3, WEXITED),
        err(7, 0, WEXITED),
    ];
    t.check_why(
        "no WEXITED/WSTOPPED/WCONTINUED, an unknown option, P_PID <= 0, P_PGID < 0, an unknown idtype: EINVAL",
        bad.iter().all(|r| *r == Err(EINVAL)),
        alloc::format!("{bad:?}"),
    );
    t.eq(
        "P_PIDFD with a descriptor that is no pidfd: EBADF; a negative one: EINVAL",
        (err(P_PIDFD, 0, WEXITED), err(P_PIDFD, -1, WEXITED)),
        (Err(EBADF), Err(EINVAL)),
    );
    // A failing call still writes the six fields (zeros), so a bad infop is EFAULT first.
    let zeroed = [waitid(P_ALL, 0, 0, 0), waitid(P_ALL, 0, WEXITED, 0)];
    t.check_why(
        "a failing waitid (EINVAL, ECHILD) zeroes the six fields",
        zeroed[0].0 == Err(EINVAL)
            && zeroed[1].0 == Err(ECHILD)
            && zeroed
                .iter()
                .all(|(_, i)| [i.signo, i.errno, i.code, i.pid, i.uid, i.status] == [0; 6]),
        alloc::format!("{zeroed:?}"),
    );
    // SAFETY: address 8 is never mapped; the kernel must refuse to write there.
    let bad = unsafe { raw(WAITID, [P_ALL as usize, 0, 8, WEXITED as usize, 0, 0]) };
    t.eq(
        "with no child and an unmapped infop: EFAULT, not ECHILD",
        bad.map_err(|e| e.0),
        Err(EFAULT),
    );

    // An exit, seen with WNOHANG (nothing yet), WNOWAIT (stays), then reaped with rusage.
    let pid = child(|| {
        let _ = sleep_ms(200);
        7
    });
    let (r, info) = waitid(P_PID, pid, WEXITED | WNOHANG, 0);
    let zeros = Info {
        signo: 0,
        errno: 0,
        code: 0,
        pid: 0,
        uid: 0,
        status: 0,
    };
    t.check_why(
        "WNOHANG with the child still running: 0, the six fields zero",
        r == Ok(0) && info == zeros,
        alloc::format!("{r:?} {info:?}"),
    );
    let exited = Info {
        signo: SIGCHLD,
        errno: 0,
        code: CLD_EXITED,
        pid,
        uid,
        status: 7,
    };
    let (r, info) = waitid(P_PID, pid, WEXITED | WNOWAIT, 0);
    t.check_why(
        "WNOWAIT: SIGCHLD, CLD_EXITED, the pid, the uid, exit status 7",
        r == Ok(0) && info == exited,
        alloc::format!("{r:?} {info:?}"),
    );
    let mut ru = [-1i64; 18];
    let (r, info) = waitid(P_ALL, 0, WEXITED, ru.as_mut_ptr() as usize);
    t.check_why(
        "after WNOWAIT the child is still waitable: P_ALL reaps it with the same fields",
        r == Ok(0) && info == exited,
        alloc::format!("{r:?} {info:?}"),
    );
    // struct rusage: ru_utime, ru_stime (timevals), ru_maxrss, ...: written over the -1
    // fill, the microseconds in range.
    t.check_why(
        "the reaped child's rusage is written",
        ru[..4].iter().all(|&w| w != -1)
            && (0..1_000_000).contains(&ru[1])
            && (0..1_000_000).contains(&ru[3]),
        alloc::format!("{:?}", &ru[..6]),
    );
    t.eq(
        "then nothing is left: ECHILD",
        err(P_PID, pid, WEXITED),
        Err(ECHILD),
    );

    // A stop and a continue: each reported once, or kept with WNOWAIT.
    let pid = child(|| loop {
        let _ = sleep_ms(1000);
    });
    let _ = kill(pid, SIGSTOP);
    let (r, info) = waitid(P_PID, pid, WSTOPPED, 0);
    t.check_why(
        "a stop: CLD_STOPPED, status SIGSTOP",
        r == Ok(0) && info.code == CLD_STOPPED && info.status == SIGSTOP && info.pid == pid,
        alloc::format!("{r:?} {info:?}"),
    );
    let (r, info) = waitid(P_PID, pid, WSTOPPED | WNOHANG, 0);
    t.check_why(
        "the stop is reported once",
        r == Ok(0) && info.pid == 0,
        alloc::format!("{r:?} {info:?}"),
    );
    let _ = kill(pid, SIGCONT);
    let _ = waitid(P_PID, pid, WCONTINUED, 0);
    let _ = kill(pid, SIGSTOP);
    let (r1, i1) = waitid(P_PID, pid, WSTOPPED | WNOWAIT, 0);
    let (r2, i2) = waitid(P_PID, pid, WSTOPPED, 0);
    t.check_why(
        "WNOWAIT keeps a stop reportable: the next wait reports it again",
        r1 == Ok(0) && i1.code == CLD_STOPPED && r2 == Ok(0) && i2 == i1,
        alloc::format!("{r1:?} {i1:?} / {r2:?} {i2:?}"),
    );
    let _ = kill(pid, SIGCONT);
    let (r1, i1) = waitid(P_PID, pid, WCONTINUED | WNOWAIT, 0);
    let (r2, i2) = waitid(P_PID, pid, WCONTINUED, 0);
    let (r3, i3) = waitid(P_PID, pid, WCONTINUED | WNOHANG, 0);
    t.check_why(
        "a continue: CLD_CONTINUED, status SIGCONT; kept by WNOWAIT, then reported once",
        r1 == Ok(0)
            && i1.code == CLD_CONTINUED
            && i1.status == SIGCONT
            && r2 == Ok(0)
            && i2 == i1
            && r3 == Ok(0)
            && i3.pid == 0,
        alloc::format!("{r1:?} {i1:?} / {r2:?} {i2:?} / {r3:?} {i3:?}"),
    );
    let _ = kill(pid, SIGKILL);
    let (r, info) = waitid(P_PID, pid, WEXITED, 0);
    t.check_why(
        "a kill: CLD_KILLED, status SIGKILL",
        r == Ok(0) && info.code == CLD_KILLED && info.status == SIGKILL && info.pid == pid,
        alloc::format!("{r:?} {info:?}"),
    );

    // A bad infop: the child is reaped first, then the copy fails.
    let pid = child(|| 3);
    let _ = sleep_ms(100);
    // SAFETY: address 8 is never mapped; the kernel must refuse to write there.
    let r = unsafe {
        raw(
            WAITID,
            [P_PID as usize, pid as usize, 8, WEXITED as usize, 0, 0],
        )
    };
    t.eq("an unmapped infop: EFAULT", r.map_err(|e| e.0), Err(EFAULT));
    t.eq(
        "and the child was reaped all the same",
        err(P_PID, pid, WEXITED | WNOHANG),
        Err(ECHILD),
    );

    // Process groups: P_PGID 0 is the caller's, P_PGID n a group by id.
    let pid = child(|| 4);
    let (r, info) = waitid(P_PGID, 0, WEXITED, 0);
    t.check_why(
        "P_PGID 0 waits for a child in the caller's group",
        r == Ok(0) && info.pid == pid && info.status == 4,
        alloc::format!("{r:?} {info:?}"),
    );
    let pid = child(|| {
        let _ = sleep_ms(100);
        5
    });
    // SAFETY: setpgid(pid, pid) takes two integers.
    let moved = unsafe { raw(SETPGID, [pid as usize, pid as usize, 0, 0, 0, 0]) };
    let (r0, _) = waitid(P_PGID, 0, WEXITED | WNOHANG, 0);
    let (r, info) = waitid(P_PGID, pid, WEXITED, 0);
    t.check_why(
        "a child moved to its own group: not in ours (ECHILD), found by P_PGID of its group",
        moved.is_ok() && r0 == Err(ECHILD) && r == Ok(0) && info.pid == pid && info.status == 5,
        alloc::format!("setpgid {moved:?}, ours {r0:?}, its {r:?} {info:?}"),
    );
    t.finish()
}
