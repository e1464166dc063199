//! poll/ppoll/select/pselect6 over pipes and regular files: readiness (POLLIN, POLLOUT,
//! POLLHUP, POLLERR, POLLNVAL), timeouts (and the time left written back), a wake-up by another
//! process, interruption by a signal (EINTR even under SA_RESTART), ppoll/pselect6 signal masks,
//! and Linux's errnos. The same checks on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;

use cowlab_userland::alarm::{alarm_in, handle_alarm, CAUGHT};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, nr, Errno};
use cowlab_userland::test::{in_child, ms_since, Tester};

cowlab_userland::entry!(main);

const POLL: usize = 7;
const SELECT: usize = 23;
const PSELECT6: usize = 270;
const PPOLL: usize = 271;
const POLLIN: i16 = 1;
const POLLOUT: i16 = 4;
const POLLERR: i16 = 8;
const POLLHUP: i16 = 0x10;
const POLLNVAL: i16 = 0x20;
const SIGALRM: usize = 14;
const SA_RESTART: u64 = 0x1000_0000;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn pfd(fd: i32, events: i16) -> PollFd {
    PollFd {
        fd,
        events,
        revents: -1,
    }
}

fn poll(fds: &mut [PollFd], ms: i32) -> Result<usize, Errno> {
    // SAFETY: `fds` is a live array of `fds.len()` pollfds the call reads and writes.
    unsafe {
        raw(
            POLL,
            [
                fds.as_mut_ptr() as usize,
                fds.len(),
                ms as u32 as usize,
                0,
                0,
                0,
            ],
        )
    }
}

fn ppoll(
    fds: &mut [PollFd],
    ts: Option<&mut [i64; 2]>,
    mask: Option<&u64>,
) -> Result<usize, Errno> {
    let ts = ts.map_or(0, |t| t as *mut [i64; 2] as usize);
    let mask = mask.map_or(0, |m| m as *const u64 as usize);
    // SAFETY: every pointer is to a live object of the size the call uses.
    unsafe {
        raw(
            PPOLL,
            [fds.as_mut_ptr() as usize, fds.len(), ts, mask, 8, 0],
        )
    }
}

/// select over `read`/`write` sets of one word each; `tv` in/out.
fn select(
    nfds: i32,
    rd: Option<&mut u64>,
    wr: Option<&mut u64>,
    tv: Option<&mut [i64; 2]>,
) -> Result<usize, Errno> {
    let rd = rd.map_or(0, |s| s as *mut u64 as usize);
    let wr = wr.map_or(0, |s| s as *mut u64 as usize);
    let tv = tv.map_or(0, |t| t as *mut [i64; 2] as usize);
    // SAFETY: every pointer is to a live object of the size the call uses (nfds <= 64).
    unsafe { raw(SELECT, [nfds as u32 as usize, rd, wr, 0, tv, 0]) }
}

fn sigprocmask(how: usize, set: u64) -> u64 {
    let mut old = 0u64;
    // SAFETY: live u64s for the new and old sets.
    let _ = unsafe {
        raw(
            nr::RT_SIGPROCMASK,
            [
                how,
                &set as *const u64 as usize,
                &mut old as *mut u64 as usize,
                8,
                0,
                0,
            ],
        )
    };
    old
}

fn main() -> i32 {
    let mut t = Tester::new("t_poll");
    let p = pipe().unwrap_or([-1, -1]);

    // Readiness of a pipe's two ends.
    let mut fds = [pfd(p[0], POLLIN), pfd(p[1], POLLOUT)];
    t.eq(
        "poll: empty pipe, write end ready",
        poll(&mut fds, 0),
        Ok(1),
    );
    t.eq("empty read end: no events", fds[0].revents, 0);
    t.eq("write end: POLLOUT", fds[1].revents, POLLOUT);
    let _ = write(p[1], b"abc");
    let mut fds = [pfd(p[0], POLLIN | POLLOUT)];
    t.eq("poll: data in the pipe", poll(&mut fds, 0), Ok(1));
    t.eq(
        "read end: POLLIN only (POLLOUT not for a read end)",
        fds[0].revents,
        POLLIN,
    );

    // Negative descriptors are skipped; a closed one is POLLNVAL.
    let mut fds = [pfd(-1, POLLIN), pfd(1000, POLLIN), pfd(p[0], POLLIN)];
    t.eq("poll: a bad fd counts as ready", poll(&mut fds, 0), Ok(2));
    t.eq("negative fd: revents 0", fds[0].revents, 0);
    t.eq("closed fd: POLLNVAL", fds[1].revents, POLLNVAL);

    // Hang-up and error.
    let _ = close(p[1]);
    let mut fds = [pfd(p[0], POLLIN)];
    let _ = poll(&mut fds, 0);
    t.eq(
        "writer gone, data left: POLLIN|POLLHUP",
        fds[0].revents,
        POLLIN | POLLHUP,
    );
    let mut buf = [0u8; 8];
    let _ = read(p[0], &mut buf);
    let mut fds = [pfd(p[0], 0)];
    let _ = poll(&mut fds, 0);
    t.eq(
        "drained: POLLHUP even when not asked",
        fds[0].revents,
        POLLHUP,
    );
    let _ = close(p[0]);
    let q = pipe().unwrap_or([-1, -1]);
    let _ = close(q[0]);
    let mut fds = [pfd(q[1], POLLOUT)];
    let _ = poll(&mut fds, 0);
    t.eq(
        "reader gone: POLLOUT|POLLERR",
        fds[0].revents,
        POLLOUT | POLLERR,
    );
    let _ = close(q[1]);

    // A regular file is always ready.
    let file = open_mode(c"/tmp/t_poll.file", O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let _ = unlink(c"/tmp/t_poll.file");
    let mut fds = [pfd(file, POLLIN | POLLOUT)];
    t.eq("regular file: ready", poll(&mut fds, -1), Ok(1));
    t.eq(
        "regular file: POLLIN|POLLOUT",
        fds[0].revents,
        POLLIN | POLLOUT,
    );
    let _ = close(file);

    // Timeouts.
    let p = pipe().unwrap_or([-1, -1]);
    let start = monotonic_ns();
    let mut fds = [pfd(p[0], POLLIN)];
    t.eq(
        "poll(100 ms) on an empty pipe times out",
        poll(&mut fds, 100),
        Ok(0),
    );
    let waited = ms_since(start);
    t.check_why(
        "it waited about 100 ms",
        (95..2000).contains(&waited),
        waited,
    );
    let mut ts = [0i64, 80_000_000];
    let start = monotonic_ns();
    t.eq(
        "ppoll(80 ms) times out",
        ppoll(&mut fds, Some(&mut ts), None),
        Ok(0),
    );
    t.check_why(
        "it waited about 80 ms",
        (75..2000).contains(&ms_since(start)),
        ms_since(start),
    );
    t.eq("ppoll writes back the time left (none)", ts, [0, 0]);
    let mut bad = [0i64, 1_000_000_000];
    t.eq(
        "ppoll with tv_nsec 1e9 is EINVAL",
        ppoll(&mut fds, Some(&mut bad), None),
        Err(Errno(errno::EINVAL)),
    );

    // A writer in another process wakes an infinite poll.
    let writer = match fork() {
        Ok(0) => {
            let _ = sleep_ms(50);
            let _ = write(p[1], b"w");
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let mut fds = [pfd(p[0], POLLIN)];
    t.eq(
        "poll(-1) woken by a write in a child",
        poll(&mut fds, -1),
        Ok(1),
    );
    t.eq("... with POLLIN", fds[0].revents, POLLIN);
    let _ = waitpid(writer, 0);
    let _ = read(p[0], &mut buf);

    // Errors.
    // SAFETY: an unmapped pointer: the kernel must answer EFAULT, not touch it from here.
    let r = unsafe { raw(POLL, [8, 1, 0, 0, 0, 0]) };
    t.eq(
        "poll with a bad pointer is EFAULT",
        r,
        Err(Errno(errno::EFAULT)),
    );
    // SAFETY: nfds beyond RLIMIT_NOFILE is refused before the pointer is used.
    let r = unsafe { raw(POLL, [8, 1 << 20, 0, 0, 0, 0]) };
    t.eq(
        "poll with nfds > RLIMIT_NOFILE is EINVAL",
        r,
        Err(Errno(errno::EINVAL)),
    );

    // select.
    let mut rd = 1u64 << p[0];
    let mut tv = [0i64, 0];
    t.eq(
        "select: empty pipe not readable",
        select(p[0] + 1, Some(&mut rd), None, Some(&mut tv)),
        Ok(0),
    );
    t.eq("the read set is cleared", rd, 0);
    let _ = write(p[1], b"x");
    let mut rd = 1u64 << p[0];
    let mut wr = 1u64 << p[1];
    t.eq(
        "select: readable and writable",
        select(p[1].max(p[0]) + 1, Some(&mut rd), Some(&mut wr), None),
        Ok(2),
    );
    t.eq("read bit set", rd, 1u64 << p[0]);
    t.eq("write bit set", wr, 1u64 << p[1]);
    let _ = read(p[0], &mut buf);
    let mut rd = 1u64 << 60;
    t.eq(
        "select on a closed fd is EBADF",
        select(61, Some(&mut rd), None, None),
        Err(Errno(errno::EBADF)),
    );
    t.eq(
        "select with nfds < 0 is EINVAL",
        select(-1, None, None, None),
        Err(Errno(errno::EINVAL)),
    );
    let mut tv = [0i64, -1];
    t.eq(
        "select with tv_usec -1 is EINVAL",
        select(0, None, None, Some(&mut tv)),
        Err(Errno(errno::EINVAL)),
    );
    let mut tv = [0i64, 60_000];
    let mut rd = 1u64 << p[0];
    let start = monotonic_ns();
    t.eq(
        "select(60 ms) times out",
        select(p[0] + 1, Some(&mut rd), None, Some(&mut tv)),
        Ok(0),
    );
    t.check_why(
        "it waited about 60 ms",
        (55..2000).contains(&ms_since(start)),
        ms_since(start),
    );
    t.eq("select writes back the time left (none)", tv, [0, 0]);
    let mut ts = [0i64, 30_000_000];
    let mut rd = 1u64 << p[0];
    // SAFETY: live set and timespec; no signal-mask argument.
    let r = unsafe {
        raw(
            PSELECT6,
            [
                (p[0] + 1) as usize,
                &mut rd as *mut u64 as usize,
                0,
                0,
                ts.as_mut_ptr() as usize,
                0,
            ],
        )
    };
    t.eq("pselect6(30 ms) times out", r, Ok(0));

    // Signals: a handler ends poll/select with EINTR, SA_RESTART or not.
    for (flags, name) in [
        (0, "poll(-1) interrupted by a handler: EINTR"),
        (SA_RESTART, "poll(-1) under SA_RESTART: still EINTR"),
    ] {
        let s = in_child(|| {
            handle_alarm(flags);
            alarm_in(50);
            let mut fds = [pfd(p[0], POLLIN)];
            match poll(&mut fds, -1) {
                Err(Errno(cowlab_userland::sys::EINTR)) if CAUGHT.load(Ordering::SeqCst) == 1 => 0,
                Err(e) => 100 + e.0,
                Ok(n) => 50 + n as i32,
            }
        });
        t.check_why(
            name,
            wifexited(s) && wexitstatus(s) == 0,
            format_args!("{s:#x}"),
        );
    }
    let s = in_child(|| {
        handle_alarm(0);
        alarm_in(30);
        let mut rd = 1u64 << p[0];
        match select(p[0] + 1, Some(&mut rd), None, None) {
            Err(Errno(cowlab_userland::sys::EINTR)) => 0,
            _ => 1,
        }
    });
    t.check(
        "select(no timeout) interrupted by a handler: EINTR",
        wifexited(s) && wexitstatus(s) == 0,
    );

    // ppoll's mask: blocked during the wait (timeout, then the handler runs after the call)...
    let s = in_child(|| {
        handle_alarm(0);
        alarm_in(20);
        let block = 1u64 << (SIGALRM - 1);
        let mut fds = [pfd(p[0], POLLIN)];
        let mut ts = [0i64, 150_000_000];
        let r = ppoll(&mut fds, Some(&mut ts), Some(&block));
        if r != Ok(0) {
            return 1;
        }
        // The old (empty) mask is back: the pending SIGALRM has been delivered by now.
        if CAUGHT.load(Ordering::SeqCst) != 1 {
            return 2;
        }
        0
    });
    t.check_why(
        "ppoll with SIGALRM masked: times out, handler runs after",
        wifexited(s) && wexitstatus(s) == 0,
        format_args!("{s:#x}"),
    );
    // ...or unblocked for the wait only.
    let s = in_child(|| {
        handle_alarm(0);
        let block = 1u64 << (SIGALRM - 1);
        sigprocmask(0, block);
        alarm_in(20);
        let empty = 0u64;
        let mut fds = [pfd(p[0], POLLIN)];
        let r = ppoll(&mut fds, None, Some(&empty));
        if r != Err(Errno(cowlab_userland::sys::EINTR)) {
            return 1;
        }
        if CAUGHT.load(Ordering::SeqCst) != 1 {
            return 2;
        }
        if sigprocmask(0, 0) != block {
            return 3;
        }
        0
    });
    t.check_why(
        "ppoll unblocking SIGALRM for the wait: EINTR, handler ran, old mask back",
        wifexited(s) && wexitstatus(s) == 0,
        format_args!("{s:#x}"),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);
    t.finish()
}
