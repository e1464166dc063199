//! The console as a terminal (TAP): termios defaults and TCSETS, the window size, the
//! foreground process group and session, and, with input pushed by TIOCSTI as if typed, the
//! line discipline: canonical erase/kill/word-erase/EOF, partial reads, ICRNL, raw mode with
//! VMIN/VTIME, O_NONBLOCK, FIONREAD, poll, a read into a faulting buffer (EFAULT, the bytes stay
//! queued), ^C/^\/^Z to the foreground group, SIGTTIN/SIGTTOU for a background group. Errors on
//! a pipe (ENOTTY) run everywhere; the terminal points are skipped, with a reason, where stdin
//! is no terminal or TIOCSTI is refused (the host harness runs with stdin from /dev/null).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, nr, Errno};
use cowlab_userland::test::{Outcome, Tap};

cowlab_userland::entry!(main);

const TCGETS: usize = 0x5401;
const TCSETS: usize = 0x5402;
const TIOCSCTTY: usize = 0x540e;
const TIOCGPGRP: usize = 0x540f;
const TIOCSPGRP: usize = 0x5410;
const TIOCSTI: usize = 0x5412;
const TIOCGWINSZ: usize = 0x5413;
const TIOCSWINSZ: usize = 0x5414;
const FIONREAD: usize = 0x541b;
const TIOCNOTTY: usize = 0x5422;
const ICRNL: u32 = 0o400;
const ISIG: u32 = 1;
const ICANON: u32 = 2;
const ECHO: u32 = 0o10;
const TOSTOP: u32 = 0o400;
const VINTR: usize = 0;
const VERASE: usize = 2;
const VKILL: usize = 3;
const VEOF: usize = 4;
const VTIME: usize = 5;
const VMIN: usize = 6;
const VSUSP: usize = 10;
const PLANNED: u32 = 41;

#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
}

fn ioctl(fd: i32, cmd: usize, arg: usize) -> Result<usize, Errno> {
    // SAFETY: every caller passes a pointer to a live object of the size `cmd` uses, or an
    // integer.
    unsafe { raw(nr::IOCTL, [fd as usize, cmd, arg, 0, 0, 0]) }
}

fn tcgets(fd: i32) -> Result<Termios, Errno> {
    let mut t = Termios::default();
    ioctl(fd, TCGETS, &mut t as *mut Termios as usize).map(|_| t)
}

fn tcsets(fd: i32, t: &Termios) -> Result<usize, Errno> {
    ioctl(fd, TCSETS, t as *const Termios as usize)
}

fn get_int(fd: i32, cmd: usize) -> Result<i32, Errno> {
    let mut v = 0i32;
    ioctl(fd, cmd, &mut v as *mut i32 as usize).map(|_| v)
}

fn set_pgrp(fd: i32, pgrp: i32) -> Result<usize, Errno> {
    ioctl(fd, TIOCSPGRP, &pgrp as *const i32 as usize)
}

fn type_in(fd: i32, text: &[u8]) -> Result<(), Errno> {
    for b in text {
        ioctl(fd, TIOCSTI, b as *const u8 as usize)?;
    }
    Ok(())
}

fn read_str(fd: i32, len: usize) -> String {
    let mut buf = alloc::vec![0u8; len];
    match read(fd, &mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => format!("<errno {}>", e.0),
    }
}

fn id(nr_: usize, arg: i32) -> i32 {
    // SAFETY: integer arguments only.
    unsafe { raw(nr_, [arg as u32 as usize, 0, 0, 0, 0, 0]) }.map_or(-1, |v| v as i32)
}

fn getpgrp() -> i32 {
    id(111, 0)
}

fn setpgid(pid: i32, pgid: i32) {
    // SAFETY: integer arguments only.
    let _ = unsafe { raw(109, [pid as usize, pgid as usize, 0, 0, 0, 0]) };
}

fn ignore(signal: usize) {
    let act = [1u64, 0, 0, 0]; // SIG_IGN
                               // SAFETY: rt_sigaction reads a 32-byte struct sigaction from `act`.
    let _ = unsafe {
        raw(
            nr::RT_SIGACTION,
            [signal, act.as_ptr() as usize, 0, 8, 0, 0],
        )
    };
}

fn pass_if(ok: bool, why: impl Into<String>) -> Outcome {
    if ok {
        Outcome::Pass(String::new())
    } else {
        Outcome::Fail(why.into())
    }
}

fn eq<T: PartialEq + core::fmt::Debug>(got: T, want: T) -> Outcome {
    let why = format!("got {got:?}, want {want:?}");
    pass_if(got == want, why)
}

/// A child in a new process group made the foreground group, running `body`; the parent
/// (ignoring SIGTTOU, as a shell does) takes the terminal back afterwards. Returns the child's
/// pid (not waited for) or -1.
fn foreground_child(fd: i32, body: impl FnOnce() -> i32) -> i32 {
    let pipe = pipe().unwrap_or([-1, -1]);
    match fork() {
        Ok(0) => {
            setpgid(0, 0);
            let mut b = [0u8; 1];
            let _ = close(pipe[1]);
            let _ = read(pipe[0], &mut b); // until the parent made us the foreground
            exit_now(body())
        }
        Ok(pid) => {
            setpgid(pid, pid);
            let _ = set_pgrp(fd, pid);
            let _ = close(pipe[0]);
            let _ = close(pipe[1]);
            pid
        }
        Err(_) => -1,
    }
}

fn main() -> i32 {
    let mut t = Tap::new("t_tty", PLANNED);

    // Everywhere: a pipe is no terminal.
    let p = pipe().unwrap_or([-1, -1]);
    t.result(
        "TCGETS on a pipe is ENOTTY",
        &eq(tcgets(p[0]).err(), Some(Errno(errno::ENOTTY))),
    );
    t.result(
        "TIOCGPGRP on a pipe is ENOTTY",
        &eq(get_int(p[0], TIOCGPGRP).err(), Some(Errno(errno::ENOTTY))),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);

    let fd = 0;
    let saved = tcgets(fd);
    let skip = match saved {
        Err(e) => Some(format!("stdin is not a terminal (TCGETS: errno {})", e.0)),
        Ok(_) => {
            // Probe TIOCSTI with echo off, then take the byte back out.
            let mut quiet = saved.unwrap_or_default();
            quiet.lflag &= !ECHO;
            let _ = tcsets(fd, &quiet);
            match type_in(fd, b"\n") {
                Ok(()) => {
                    let _ = read_str(fd, 8);
                    None
                }
                Err(e) => Some(format!(
                    "TIOCSTI refused (errno {}): cannot type input",
                    e.0
                )),
            }
        }
    };
    if let Some(why) = skip {
        for _ in 2..PLANNED {
            t.result("terminal check", &Outcome::Skip(why.clone()));
        }
        return t.finish(PLANNED);
    }
    let saved = saved.unwrap_or_default();
    t.result(
        "default lflag has ISIG|ICANON|ECHO",
        &pass_if(
            saved.lflag & (ISIG | ICANON | ECHO) == (ISIG | ICANON | ECHO),
            format!("{:#o}", saved.lflag),
        ),
    );
    t.result(
        "default c_cc: ^C ^? ^U ^D ^Z",
        &eq(
            [
                saved.cc[VINTR],
                saved.cc[VERASE],
                saved.cc[VKILL],
                saved.cc[VEOF],
                saved.cc[VSUSP],
            ],
            [3, 0x7f, 0x15, 4, 0x1a],
        ),
    );
    let mut quiet = saved;
    quiet.lflag &= !ECHO;
    let _ = tcsets(fd, &quiet);
    t.result("TCSETS then TCGETS round-trips", &eq(tcgets(fd), Ok(quiet)));

    let mut ws = [0u16; 4];
    let _ = ioctl(fd, TIOCGWINSZ, ws.as_mut_ptr() as usize);
    let old_ws = ws;
    let new_ws = [50u16, 132, 0, 0];
    let _ = ioctl(fd, TIOCSWINSZ, new_ws.as_ptr() as usize);
    let _ = ioctl(fd, TIOCGWINSZ, ws.as_mut_ptr() as usize);
    t.result("TIOCSWINSZ then TIOCGWINSZ", &eq(ws, new_ws));
    let _ = ioctl(fd, TIOCSWINSZ, old_ws.as_ptr() as usize);

    t.result(
        "TIOCGPGRP is our group (the foreground)",
        &eq(get_int(fd, TIOCGPGRP), Ok(getpgrp())),
    );
    t.result(
        "TIOCGSID is our session",
        &eq(get_int(fd, 0x5429), Ok(id(124, 0))),
    );
    t.result(
        "TIOCSPGRP to a group that does not exist is ESRCH",
        &eq(set_pgrp(fd, 0x3fff_fff0), Err(Errno(errno::ESRCH))),
    );
    // A pid of our session that names no group: Linux's session_of_pgrp takes the process's
    // session, so the terminal accepts it as its foreground group.
    let child = match fork() {
        Ok(0) => {
            let _ = sleep_ms(5000);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    ignore(22);
    let r = set_pgrp(fd, child);
    let fg = get_int(fd, TIOCGPGRP);
    let _ = set_pgrp(fd, getpgrp());
    let _ = kill(child, 9);
    let _ = waitpid(child, 0);
    t.result(
        "TIOCSPGRP to a pid of our session that is no group id is accepted",
        &eq((r, fg), (Ok(0), Ok(child))),
    );
    t.result(
        "TIOCSPGRP -1 is EINVAL",
        &eq(set_pgrp(fd, -1), Err(Errno(errno::EINVAL))),
    );
    // In a child, which leads no session (run from a terminal, we may lead ours).
    let s = cowlab_userland::test::in_child(|| {
        i32::from(ioctl(0, TIOCSCTTY, 0) != Err(Errno(errno::EPERM)))
    });
    t.result(
        "TIOCSCTTY by a non-leader is EPERM",
        &pass_if(
            wifexited(s) && wexitstatus(s) == 0,
            format!("status {s:#x}"),
        ),
    );

    // Canonical editing.
    let _ = type_in(fd, b"ab\x7fc\n");
    t.result(
        "FIONREAD counts the line",
        &eq(get_int(fd, FIONREAD), Ok(3)),
    );
    t.result(
        "erase (^?) removes a character",
        &eq(read_str(fd, 64), "ac\n".into()),
    );
    let _ = type_in(fd, b"xyz\x15ok\n");
    t.result(
        "kill (^U) removes the line",
        &eq(read_str(fd, 64), "ok\n".into()),
    );
    let _ = type_in(fd, b"one two\x17three\n");
    t.result(
        "word erase (^W)",
        &eq(read_str(fd, 64), "one three\n".into()),
    );
    let _ = type_in(fd, b"abc\x04");
    t.result(
        "^D after text ends the read without a newline",
        &eq(read_str(fd, 64), "abc".into()),
    );
    let _ = type_in(fd, b"\x04");
    t.result(
        "^D at the start of a line reads as end of file",
        &eq(read_str(fd, 64), String::new()),
    );
    let _ = type_in(fd, b"hello\n");
    let first = read_str(fd, 2);
    t.result(
        "a short read takes part of the line",
        &eq(first, "he".into()),
    );
    t.result(
        "the next read the rest",
        &eq(read_str(fd, 64), "llo\n".into()),
    );
    let _ = type_in(fd, b"x\r");
    t.result(
        "ICRNL: CR ends the line as NL",
        &eq(read_str(fd, 64), "x\n".into()),
    );
    let mut no_icrnl = quiet;
    no_icrnl.iflag &= !ICRNL;
    let _ = tcsets(fd, &no_icrnl);
    let _ = type_in(fd, b"y\r\n");
    t.result(
        "without ICRNL the CR is data",
        &eq(read_str(fd, 64), "y\r\n".into()),
    );
    let _ = tcsets(fd, &quiet);

    // A read into a faulting buffer: EFAULT, the line stays (cowlab's rule, as for pipes;
    // Linux since 5.11 reads the line into a kernel buffer first and drops it on EFAULT).
    let _ = type_in(fd, b"keep\n");
    // SAFETY: address 8 is never mapped: the kernel must fail the copy, not us.
    let r = unsafe { raw(nr::READ, [fd as usize, 8, 64, 0, 0, 0]) };
    t.result(
        "read into an unmapped buffer is EFAULT",
        &eq(r, Err(Errno(errno::EFAULT))),
    );
    if cowlab_userland::test::on_cowlab() {
        t.result(
            "... and the bytes are still queued",
            &eq(read_str(fd, 64), "keep\n".into()),
        );
    } else {
        t.result(
            "... and the bytes are still queued",
            &Outcome::Skip("Linux's n_tty drops a line whose copy faults".into()),
        );
    }
    let _ = ioctl(fd, 0x540b, 0); // TCFLSH(TCIFLUSH): nothing left over either way

    // poll and O_NONBLOCK.
    let mut pfd = [fd, 1];
    // SAFETY: one live struct pollfd (fd, events=POLLIN, revents).
    let r = unsafe { raw(7, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.result(
        "poll: nothing typed, not readable",
        &eq((r, pfd[1] >> 16), (Ok(0), 0)),
    );
    let _ = type_in(fd, b"p\n");
    let mut pfd = [fd, 1];
    // SAFETY: as above.
    let r = unsafe { raw(7, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.result(
        "poll: a typed line is POLLIN",
        &eq((r, pfd[1] >> 16), (Ok(1), 1)),
    );
    let _ = read_str(fd, 64);
    let tty = open(c"/dev/tty", O_RDWR | 0o4000).unwrap_or(-1);
    let mut b = [0u8; 4];
    t.result(
        "O_NONBLOCK read with nothing typed is EAGAIN",
        &eq(read(tty, &mut b), Err(Errno(11))),
    );
    let _ = close(tty);

    // Raw mode.
    let mut raw_mode = quiet;
    raw_mode.lflag &= !ICANON;
    raw_mode.cc[VMIN] = 1;
    raw_mode.cc[VTIME] = 0;
    let _ = tcsets(fd, &raw_mode);
    let _ = type_in(fd, b"q");
    t.result(
        "raw (VMIN 1): one byte, no newline needed",
        &eq(read_str(fd, 64), "q".into()),
    );
    raw_mode.cc[VMIN] = 0;
    let _ = tcsets(fd, &raw_mode);
    t.result(
        "raw VMIN 0 VTIME 0: 0 at once",
        &eq(read_str(fd, 64), String::new()),
    );
    raw_mode.cc[VTIME] = 2;
    let _ = tcsets(fd, &raw_mode);
    let start = monotonic_ns();
    let got = read_str(fd, 64);
    let ms = (monotonic_ns() - start) / 1_000_000;
    t.result(
        "raw VMIN 0 VTIME 2: 0 after about 200 ms",
        &pass_if(
            got.is_empty() && (150..3000).contains(&ms),
            format!("{got:?} after {ms} ms"),
        ),
    );
    // VMIN 5 VTIME 2 with one byte typed: the inter-byte timer ends the read with that byte.
    // The read runs in a child so that a read that never times out fails instead of hanging.
    raw_mode.cc[VMIN] = 5;
    let _ = tcsets(fd, &raw_mode);
    let _ = type_in(fd, b"a");
    let start = monotonic_ns();
    let child = match fork() {
        Ok(0) => {
            let mut b = [0u8; 8];
            exit_now(match read(fd, &mut b) {
                Ok(n) => n as i32,
                Err(e) => 100 + e.0 as i32,
            })
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let mut s = -1;
    while monotonic_ns() - start < 3_000_000_000 {
        if let Ok((pid, status)) = waitpid(child, 1) {
            if pid == child {
                s = status;
                break;
            }
        }
        let _ = sleep_ms(20);
    }
    let ms = (monotonic_ns() - start) / 1_000_000;
    if s == -1 {
        let _ = kill(child, 9);
        let _ = waitpid(child, 0);
    }
    t.result(
        "raw VMIN 5 VTIME 2: one typed byte read after about 200 ms",
        &pass_if(
            wifexited(s) && wexitstatus(s) == 1 && (150..3000).contains(&ms),
            format!("status {s:#x} after {ms} ms"),
        ),
    );
    raw_mode.cc[VMIN] = 0;
    raw_mode.cc[VTIME] = 0;
    let _ = tcsets(fd, &raw_mode);
    let _ = read_str(fd, 64);

    // Concurrent readers: every typed byte is read exactly once (one reader at a time holds the
    // terminal across its copy to the user).
    raw_mode.cc[VTIME] = 5;
    let _ = tcsets(fd, &raw_mode);
    let typed: alloc::vec::Vec<u8> = (b'A'..b'A' + 48).collect();
    let _ = type_in(fd, &typed);
    let out = pipe().unwrap_or([-1, -1]);
    let readers: alloc::vec::Vec<i32> = (0..3)
        .map(|_| match fork() {
            Ok(0) => {
                let _ = close(out[0]);
                let mut b = [0u8; 1];
                while let Ok(1) = read(fd, &mut b) {
                    let _ = write(out[1], &b);
                }
                exit_now(0)
            }
            Ok(pid) => pid,
            Err(_) => -1,
        })
        .collect();
    let _ = close(out[1]);
    let mut got = alloc::vec::Vec::new();
    let mut b = [0u8; 64];
    while let Ok(n @ 1..) = read(out[0], &mut b) {
        got.extend_from_slice(&b[..n]);
    }
    let _ = close(out[0]);
    for pid in readers {
        let _ = waitpid(pid, 0);
    }
    got.sort_unstable();
    t.result(
        "three concurrent raw readers get every typed byte exactly once",
        &eq(
            String::from_utf8_lossy(&got).into_owned(),
            String::from_utf8_lossy(&typed).into_owned(),
        ),
    );
    raw_mode.cc[VTIME] = 0;
    let _ = tcsets(fd, &raw_mode);
    let _ = read_str(fd, 64);
    let _ = tcsets(fd, &quiet);

    // Signal characters to the foreground group.
    ignore(22); // SIGTTOU: we take the terminal back from the background
    for (key, signal, name) in [
        (b'\x03', 2, "^C sends SIGINT to the foreground group"),
        (b'\x1c', 3, "^\\ sends SIGQUIT to the foreground group"),
    ] {
        let child = foreground_child(fd, || {
            let _ = read_str(0, 64);
            0
        });
        let _ = sleep_ms(100);
        let _ = type_in(fd, &[key]);
        let s = waitpid(child, 0).map(|r| r.1).unwrap_or(-1);
        t.result(
            name,
            &pass_if(
                wifsignaled(s) && wtermsig(s) == signal,
                format!("status {s:#x}"),
            ),
        );
        let _ = set_pgrp(fd, getpgrp());
    }
    let child = foreground_child(fd, || {
        let _ = read_str(0, 64);
        0
    });
    let _ = sleep_ms(100);
    let _ = type_in(fd, b"\x1a");
    let s = waitpid(child, 2).map(|r| r.1).unwrap_or(-1);
    t.result(
        "^Z stops the foreground group (SIGTSTP)",
        &pass_if(
            s & 0xff == 0x7f && (s >> 8) & 0xff == 20,
            format!("status {s:#x}"),
        ),
    );
    let _ = kill(child, 9);
    let _ = waitpid(child, 0);
    let _ = set_pgrp(fd, getpgrp());
    t.result(
        "the terminal is ours again",
        &eq(get_int(fd, TIOCGPGRP), Ok(getpgrp())),
    );

    // A background group: SIGTTIN on read, EIO if it ignores SIGTTIN, SIGTTOU with TOSTOP.
    let background = |body: fn() -> i32| match fork() {
        Ok(0) => {
            setpgid(0, 0);
            exit_now(body())
        }
        Ok(pid) => {
            setpgid(pid, pid);
            pid
        }
        Err(_) => -1,
    };
    let child = background(|| {
        let _ = read_str(0, 8);
        0
    });
    let s = waitpid(child, 2).map(|r| r.1).unwrap_or(-1);
    t.result(
        "a background read stops with SIGTTIN",
        &pass_if(
            s & 0xff == 0x7f && (s >> 8) & 0xff == 21,
            format!("status {s:#x}"),
        ),
    );
    let _ = kill(child, 9);
    let _ = waitpid(child, 0);
    let child = background(|| {
        ignore(21);
        let mut b = [0u8; 8];
        match read(0, &mut b) {
            Err(Errno(5)) => 0,
            _ => 1,
        }
    });
    let s = waitpid(child, 0).map(|r| r.1).unwrap_or(-1);
    t.result(
        "... ignoring SIGTTIN it gets EIO",
        &pass_if(
            wifexited(s) && wexitstatus(s) == 0,
            format!("status {s:#x}"),
        ),
    );
    let mut tostop = quiet;
    tostop.lflag |= TOSTOP;
    let _ = tcsets(fd, &tostop);
    let child = background(|| {
        // SIGTTOU back to its default (the parent ignores it).
        let act = [0u64; 4];
        // SAFETY: rt_sigaction reads a 32-byte struct sigaction from `act`.
        let _ = unsafe { raw(nr::RT_SIGACTION, [22, act.as_ptr() as usize, 0, 8, 0, 0]) };
        let _ = write(1, b"t_tty: background write\n");
        0
    });
    let s = waitpid(child, 2).map(|r| r.1).unwrap_or(-1);
    t.result(
        "with TOSTOP a background write stops with SIGTTOU",
        &pass_if(
            s & 0xff == 0x7f && (s >> 8) & 0xff == 22,
            format!("status {s:#x}"),
        ),
    );
    let _ = kill(child, 9);
    let _ = waitpid(child, 0);
    let _ = tcsets(fd, &quiet);

    // A new session has no controlling terminal.
    let s = cowlab_userland::test::in_child(|| {
        let _ = id(112, 0); // setsid
        let mut bad = 0;
        if get_int(0, TIOCGPGRP) != Err(Errno(errno::ENOTTY)) {
            bad |= 1;
        }
        if ioctl(0, TIOCNOTTY, 0) != Err(Errno(errno::ENOTTY)) {
            bad |= 2;
        }
        // The console is init's session's: no stealing without arg 1.
        if ioctl(0, TIOCSCTTY, 0) != Err(Errno(errno::EPERM)) {
            bad |= 4;
        }
        if open(c"/dev/tty", O_RDWR) != Err(Errno(6)) {
            bad |= 8; // ENXIO: no controlling terminal
        }
        bad
    });
    t.result(
        "after setsid: TIOCGPGRP/TIOCNOTTY ENOTTY, TIOCSCTTY of a taken terminal EPERM, /dev/tty ENXIO",
        &pass_if(
            wifexited(s) && wexitstatus(s) == 0,
            format!("status {s:#x}"),
        ),
    );
    let _ = tcsets(fd, &saved);

    // Last, as it takes the terminal away from our session: a session leader's end releases
    // its controlling terminal, SIGHUP killing its foreground job, and another session leader
    // can then take it without stealing (Linux `disassociate_ctty` from `do_exit`). The host
    // uses a fresh pseudo-terminal; cowlab has only the console.
    let slave = pty_slave();
    let term_fd = |slave: &Option<String>| match slave {
        Some(path) => {
            let c = alloc::ffi::CString::new(path.as_str()).unwrap_or_default();
            open(&c, O_RDWR | 0o400).unwrap_or(-1)
        }
        None => fd,
    };
    let out = pipe().unwrap_or([-1, -1]);
    let leader = match fork() {
        Ok(0) => {
            let _ = id(112, 0); // setsid
            let tfd = term_fd(&slave);
            if ioctl(tfd, TIOCSCTTY, 1).is_err() {
                exit_now(2);
            }
            if let Ok(0) = fork() {
                let _ = close(out[0]);
                let _ = sleep_ms(2000);
                let _ = write(out[1], b"alive");
                exit_now(0);
            }
            let _ = sleep_ms(200);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let _ = close(out[1]);
    let _ = waitpid(leader, 0);
    let _ = sleep_ms(300);
    let s = cowlab_userland::test::in_child(|| {
        let _ = id(112, 0); // setsid
        match ioctl(term_fd(&slave), TIOCSCTTY, 0) {
            Ok(_) => 0,
            Err(e) => e.0 as i32,
        }
    });
    let mut b = [0u8; 8];
    let n = read(out[0], &mut b);
    let _ = close(out[0]);
    t.result(
        "a session leader's exit frees its terminal (TIOCSCTTY 0 by a new leader) and SIGHUPs its foreground job",
        &eq((wifexited(s).then(|| wexitstatus(s)), n), (Some(0), Ok(0))),
    );
    t.finish(PLANNED)
}

/// A fresh pseudo-terminal's slave path where there is `/dev/ptmx` (the host), else `None`.
fn pty_slave() -> Option<String> {
    let master = open(c"/dev/ptmx", O_RDWR | 0o400).ok()?;
    let unlock = 0i32;
    ioctl(master, 0x4004_5431, &unlock as *const i32 as usize).ok()?; // TIOCSPTLCK
    let n = get_int(master, 0x8004_5430).ok()?; // TIOCGPTN
                                                // The master stays open (leaked on purpose) so the slave lives until we exit.
    Some(format!("/dev/pts/{n}"))
}
