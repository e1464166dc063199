//! Process groups and sessions: setpgid/getpgid/getpgrp/setsid/getsid and Linux's errnos,
//! kill(0)/kill(-pgrp)/kill(-1) reaching exactly the group's members, waitpid(0)/waitpid(-pgrp)
//! reaping only them. The same checks on the host Linux.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{sibling, Tester};
use cowlab_userland::{args, process};

cowlab_userland::entry!(main);

const SETPGID: usize = 109;
const GETPGRP: usize = 111;
const SETSID: usize = 112;
const GETPGID: usize = 121;
const GETSID: usize = 124;
const PAUSE: usize = 34;
const RT_SIGPENDING: usize = 127;
const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;
const NO_PID: i32 = 0x3fff_fff0;

fn setpgid(pid: i32, pgid: i32) -> Result<usize, Errno> {
    // SAFETY: integer arguments only. The upper halves are garbage on purpose: pid_t is an int.
    unsafe {
        raw(
            SETPGID,
            [
                pid as u32 as usize | 0xdead_0000_0000_0000,
                pgid as u32 as usize,
                0,
                0,
                0,
                0,
            ],
        )
    }
}

fn id_call(nr: usize, pid: i32) -> Result<i32, Errno> {
    // SAFETY: integer arguments only.
    unsafe { raw(nr, [pid as u32 as usize, 0, 0, 0, 0, 0]) }.map(|v| v as i32)
}

fn getpgid(pid: i32) -> Result<i32, Errno> {
    id_call(GETPGID, pid)
}

fn getsid(pid: i32) -> Result<i32, Errno> {
    id_call(GETSID, pid)
}

fn getpgrp() -> i32 {
    id_call(GETPGRP, 0).unwrap_or(-1)
}

fn setsid() -> Result<i32, Errno> {
    id_call(SETSID, 0)
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: no arguments.
        let _ = unsafe { raw(PAUSE, [0; 6]) };
    }
}

fn block_sigterm(block: bool) {
    let set: u64 = 1 << (SIGTERM - 1);
    // SAFETY: `set` is a live u64 for the call; no old set is written.
    let _ = unsafe {
        raw(
            cowlab_userland::sys::nr::RT_SIGPROCMASK,
            [
                if block { 0 } else { 1 },
                &set as *const u64 as usize,
                0,
                8,
                0,
                0,
            ],
        )
    };
}

/// A child that pauses until killed, in group `pgid` (0: its own; -1: the parent's), set by
/// both sides as a shell does so neither order races.
fn paused_child(pgid: i32) -> i32 {
    match fork() {
        Ok(0) => {
            if pgid >= 0 {
                let _ = setpgid(0, pgid);
            }
            pause_forever()
        }
        Ok(pid) => {
            if pgid >= 0 {
                let _ = setpgid(pid, if pgid == 0 { pid } else { pgid });
            }
            pid
        }
        Err(_) => -1,
    }
}

fn status_of(pid: i32) -> i32 {
    loop {
        match waitpid(pid, 0) {
            Ok((_, s)) => return s,
            Err(Errno(cowlab_userland::sys::EINTR)) => {}
            Err(e) => return -e.0,
        }
    }
}

fn main() -> i32 {
    let argv: alloc::vec::Vec<&[u8]> = args().map(|a| a.to_bytes()).collect();
    if argv.get(1) == Some(&&b"pause"[..]) {
        pause_forever();
    }
    // The checks run in a child that first makes its own session, so they see a group and a
    // session whose leader is in our PID namespace: under a CI container's PID namespace the
    // inherited leader can live outside it, and Linux then reports a group and session of 0.
    match fork() {
        Ok(0) => {
            let _ = setsid();
            exit_now(checks())
        }
        Ok(pid) => match waitpid(pid, 0) {
            Ok((_, s)) if wifexited(s) => wexitstatus(s),
            other => {
                cowlab_userland::println!("t_pgrp: the checking child ended with {other:?}");
                1
            }
        },
        Err(e) => {
            cowlab_userland::println!("t_pgrp: fork failed: {e:?}");
            1
        }
    }
}

fn checks() -> i32 {
    let mut t = Tester::new("t_pgrp");
    let me = cowlab_userland::sys::getpid();

    // The getters.
    let pgrp = getpgrp();
    t.eq("getpgid(0) is getpgrp()", getpgid(0), Ok(pgrp));
    t.eq("getpgid(getpid()) is getpgrp()", getpgid(me), Ok(pgrp));
    t.check("getsid(0) is positive", getsid(0).is_ok_and(|s| s > 0));
    t.eq("getsid(getpid()) is getsid(0)", getsid(me), getsid(0));
    t.eq(
        "getpgid(no such pid) is ESRCH",
        getpgid(NO_PID),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "getsid(no such pid) is ESRCH",
        getsid(NO_PID),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "getpgid(-1) is ESRCH",
        getpgid(-1),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "setpgid(0, -1) is EINVAL",
        setpgid(0, -1),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "setpgid(our parent, 0) is ESRCH (not our child)",
        setpgid(cowlab_userland::sys::getppid(), 0),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "setpgid(no such pid) is ESRCH",
        setpgid(NO_PID, 0),
        Err(Errno(errno::ESRCH)),
    );

    // A thread id that is not its process's leader: Linux finds it, then says EINVAL.
    static QUIT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    fn idle(_: usize) -> i32 {
        while !QUIT.load(core::sync::atomic::Ordering::Acquire) {
            let _ = sleep_ms(1);
        }
        0
    }
    match cowlab_userland::thread::spawn(idle, 0) {
        Ok(thread) => {
            t.eq(
                "setpgid(a non-leader thread, 0) is EINVAL",
                setpgid(thread.tid(), 0),
                Err(Errno(errno::EINVAL)),
            );
            QUIT.store(true, core::sync::atomic::Ordering::Release);
            thread.join();
        }
        Err(e) => t.check_why("spawn a thread", false, e.0),
    }

    // setpgid on a child.
    let child = paused_child(-1);
    t.eq("a forked child is in our group", getpgid(child), Ok(pgrp));
    t.eq("a forked child is in our session", getsid(child), getsid(0));
    t.eq(
        "setpgid(child, 0) makes it a leader",
        setpgid(child, 0),
        Ok(0),
    );
    t.eq("getpgid(child) is its pid", getpgid(child), Ok(child));
    t.eq(
        "setpgid(child, our group) moves it back",
        setpgid(child, pgrp),
        Ok(0),
    );
    t.eq("getpgid(child) is ours again", getpgid(child), Ok(pgrp));
    t.eq(
        "setpgid(child, a group that does not exist) is EPERM",
        setpgid(child, NO_PID),
        Err(Errno(errno::EPERM)),
    );
    let _ = kill(child, SIGKILL);
    let _ = status_of(child);

    // A child that has exec'd cannot be moved by its parent: EACCES.
    let path = sibling("t_pgrp");
    let fds = pipe2(0o2000000).unwrap_or([-1, -1]); // O_CLOEXEC: EOF once the child exec'd
    let exec_child = match fork() {
        Ok(0) => {
            let _ = process::exec(&[&path, b"pause"]);
            exit_now(127);
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let _ = close(fds[1]);
    let mut b = [0u8; 1];
    let _ = read(fds[0], &mut b);
    let _ = close(fds[0]);
    t.eq(
        "setpgid(child after execve) is EACCES",
        setpgid(exec_child, 0),
        Err(Errno(errno::EACCES)),
    );
    let _ = kill(exec_child, SIGKILL);
    let _ = status_of(exec_child);

    // setsid: a new session, then the session leader's own errors.
    let r = cowlab_userland::test::in_child(|| {
        let me = cowlab_userland::sys::getpid();
        let mut bad = 0;
        if setsid() != Ok(me) {
            bad |= 1;
        }
        if getsid(0) != Ok(me) || getpgrp() != me {
            bad |= 2;
        }
        if setsid() != Err(Errno(errno::EPERM)) {
            bad |= 4;
        }
        // A session leader cannot change its group.
        if setpgid(0, 0) != Err(Errno(errno::EPERM)) {
            bad |= 8;
        }
        bad
    });
    t.check_why(
        "setsid in a child: new session and group, then EPERM for setsid and setpgid",
        wifexited(r) && wexitstatus(r) == 0,
        format_args!("status {r:#x}"),
    );
    let r = cowlab_userland::test::in_child(|| {
        let _ = setpgid(0, 0);
        if setsid() == Err(Errno(errno::EPERM)) {
            0
        } else {
            1
        }
    });
    t.check(
        "setsid of a group leader is EPERM",
        wifexited(r) && wexitstatus(r) == 0,
    );

    // The parent cannot move a child that is in another session.
    let fds = pipe().unwrap_or([-1, -1]);
    let other = match fork() {
        Ok(0) => {
            let _ = setsid();
            let _ = write(fds[1], b"s");
            pause_forever()
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let _ = read(fds[0], &mut b);
    t.eq(
        "getsid(child after setsid) is its pid",
        getsid(other),
        Ok(other),
    );
    t.eq(
        "setpgid(child in another session) is EPERM",
        setpgid(other, other),
        Err(Errno(errno::EPERM)),
    );
    t.eq(
        "setpgid(0, the child's group in another session) is EPERM",
        setpgid(0, other),
        Err(Errno(errno::EPERM)),
    );
    let _ = kill(other, SIGKILL);
    let _ = status_of(other);
    let _ = close(fds[0]);
    let _ = close(fds[1]);

    // kill(-pgrp): every member, nobody else.
    let a = paused_child(0);
    let b2 = paused_child(a);
    let outsider = paused_child(-1);
    t.eq("second child joined the first's group", getpgid(b2), Ok(a));
    t.eq("kill(-pgrp, SIGTERM)", kill(-a, SIGTERM), Ok(0));
    let (sa, sb) = (status_of(a), status_of(b2));
    t.check_why(
        "both members died of SIGTERM",
        wifsignaled(sa) && wtermsig(sa) == SIGTERM && wifsignaled(sb) && wtermsig(sb) == SIGTERM,
        format_args!("{sa:#x} {sb:#x}"),
    );
    t.eq(
        "the outsider was not signalled",
        waitpid(outsider, 1),
        Ok((0, 0)),
    );
    t.eq(
        "kill(-pgrp) of an empty group is ESRCH",
        kill(-a, SIGTERM),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "kill(-no such group) is ESRCH",
        kill(-NO_PID, 0),
        Err(Errno(errno::ESRCH)),
    );
    t.eq(
        "kill(INT_MIN) is ESRCH",
        kill(i32::MIN, 0),
        Err(Errno(errno::ESRCH)),
    );
    t.eq("kill(0, 0) checks our own group", kill(0, 0), Ok(0));
    let _ = kill(outsider, SIGKILL);
    let _ = status_of(outsider);

    // kill(0): the caller's group, the caller included (it blocks SIGTERM here), not outside it.
    let bystander = paused_child(-1);
    let r = cowlab_userland::test::in_child(|| {
        let _ = setpgid(0, 0);
        block_sigterm(true);
        let member = match fork() {
            Ok(0) => {
                block_sigterm(false);
                pause_forever()
            }
            Ok(pid) => pid,
            Err(_) => return 10,
        };
        if kill(0, SIGTERM).is_err() {
            return 11;
        }
        let s = status_of(member);
        if !(wifsignaled(s) && wtermsig(s) == SIGTERM) {
            return 12;
        }
        // SIGTERM is pending for the caller itself (blocked).
        let mut pending = 0u64;
        // SAFETY: `pending` is a live u64 the call writes 8 bytes to.
        let _ = unsafe {
            raw(
                RT_SIGPENDING,
                [&mut pending as *mut u64 as usize, 8, 0, 0, 0, 0],
            )
        };
        if pending & (1 << (SIGTERM - 1)) == 0 {
            return 13;
        }
        0
    });
    t.check_why(
        "kill(0, SIGTERM) reaches the group's other member and the caller",
        wifexited(r) && wexitstatus(r) == 0,
        format_args!("status {r:#x}"),
    );
    t.eq(
        "kill(0) in the child's group spared the parent's group",
        waitpid(bystander, 1),
        Ok((0, 0)),
    );
    let _ = kill(bystander, SIGKILL);
    let _ = status_of(bystander);

    // waitpid(-pgrp) and waitpid(0) reap only their groups' children.
    let quick = |pgid: i32| match fork() {
        Ok(0) => {
            if pgid == 0 {
                let _ = setpgid(0, 0);
            }
            // Wait for the parent to have set the group too.
            sleep_ms(50).ok();
            exit_now(if pgid == 0 { 21 } else { 22 })
        }
        Ok(pid) => {
            if pgid == 0 {
                let _ = setpgid(pid, pid);
            }
            pid
        }
        Err(_) => -1,
    };
    let other_group = quick(0);
    let same_group = quick(-1);
    let r = waitpid(-other_group, 0);
    t.check_why(
        "waitpid(-pgrp) reaps the child in that group",
        r.is_ok_and(|(p, s)| p == other_group && wexitstatus(s) == 21),
        format_args!("{r:?}"),
    );
    t.eq(
        "waitpid(-pgrp) again is ECHILD",
        waitpid(-other_group, 0),
        Err(Errno(errno::ECHILD)),
    );
    let r = waitpid(0, 0);
    t.check_why(
        "waitpid(0) reaps the child in our group",
        r.is_ok_and(|(p, s)| p == same_group && wexitstatus(s) == 22),
        format_args!("{r:?}"),
    );
    // Descriptor arguments are C ints too: glibc passes AT_FDCWD as 0x00000000ffffff9c (32-bit
    // moves); cowlab once took that for a descriptor and answered EBADF.
    // SAFETY: a NUL-terminated path; integer arguments otherwise.
    let fd = unsafe {
        raw(
            257, // openat
            [
                0xffff_ff9c,
                c"t_pgrp_int_args".as_ptr() as usize,
                0o102,
                0o600,
                0,
                0,
            ],
        )
    };
    t.check_why(
        "openat(AT_FDCWD as a 32-bit int, relative path)",
        fd.is_ok(),
        format_args!("{fd:?}"),
    );
    // SAFETY: integer argument only.
    let closed = unsafe { raw(3, [fd.unwrap_or(0) | 0xffff_ffff_0000_0000, 0, 0, 0, 0, 0]) };
    t.eq("close(fd with garbage in the upper half)", closed, Ok(0));
    let _ = unlink(c"t_pgrp_int_args");
    t.eq(
        "waitpid(0) with none left is ECHILD",
        waitpid(0, 1),
        Err(Errno(errno::ECHILD)),
    );
    t.finish()
}

extern crate alloc;
