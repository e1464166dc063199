//! epoll over pipes and other epoll instances: creation (EPOLL_CLOEXEC), epoll_ctl's
//! ADD/MOD/DEL and Linux's errnos for each bad argument, level-triggered, edge-triggered
//! (EPOLLET) and one-shot reporting, EPOLLHUP/EPOLLERR (and no EPOLLRDHUP on pipes), timeouts
//! of epoll_wait/epoll_pwait2, a wake-up by another process, EINTR (even under SA_RESTART),
//! epoll_pwait's signal mask, nesting (an epoll watching an epoll, ELOOP), the interest list
//! following the open file (kept across a closed duplicate, dropped with the last close), and
//! fair reporting with a small maxevents. The same checks on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use core::sync::atomic::Ordering;

use cowlab_userland::alarm::{alarm_in, handle_alarm, CAUGHT};
use cowlab_userland::calls::*;
use cowlab_userland::epoll::{
    epoll_create1, epoll_ctl as ctl, epoll_wait as wait, Event, ADD, DEL, EPOLL_CTL, EPOLL_WAIT,
    ERR, ET, EXCLUSIVE, HUP, IN, MOD, ONESHOT, OUT, RDHUP,
};
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, ms_since, Tester};

cowlab_userland::entry!(main);

const POLL: usize = 7;
const EPOLL_CREATE: usize = 213;
const EPOLL_PWAIT: usize = 281;
const EPOLL_PWAIT2: usize = 441;
const EAGAIN: i32 = 11;
const ELOOP: i32 = 40;
const F_GETFD: u32 = 1;
const O_NONBLOCK: u32 = 0o4000;
const SIGALRM: usize = 14;
const SA_RESTART: u64 = 0x1000_0000;

fn epoll_create(size: i32) -> Result<i32, Errno> {
    // SAFETY: no pointer arguments.
    unsafe { raw(EPOLL_CREATE, [size as u32 as usize, 0, 0, 0, 0, 0]) }.map(|f| f as i32)
}

fn pwait2(ep: i32, ts: Option<&[i64; 2]>) -> Result<usize, Errno> {
    let mut evs = [Event::default(); 4];
    let ts = ts.map_or(0, |t| t as *const [i64; 2] as usize);
    // SAFETY: `evs` holds 4 events; `ts` is null or a live timespec.
    unsafe {
        raw(
            EPOLL_PWAIT2,
            [ep as usize, evs.as_mut_ptr() as usize, 4, ts, 0, 8],
        )
    }
}

/// Waits until `fd` is readable, by poll or through `ep` (an epoll instance watching it).
fn wait_readable(fd: i32, ep: Option<i32>) -> bool {
    match ep {
        Some(ep) => wait(ep, 8, 2000).is_ok_and(|v| v.len() == 1),
        None => {
            let mut pfd = [fd as u32 as i64 | (i64::from(IN as u16) << 32)];
            // SAFETY: one live pollfd.
            let n = unsafe { raw(POLL, [pfd.as_mut_ptr() as usize, 1, 2000, 0, 0, 0]) };
            n == Ok(1)
        }
    }
}

/// The median, over 15 writes by a child, of the time from a write (the child's clock, sent in
/// the data) to the waiter's return, in microseconds (u64::MAX on a failure).
fn wake_latency_us(use_epoll: bool) -> u64 {
    const N: usize = 15;
    let p = pipe().unwrap_or([-1, -1]);
    let child = match fork() {
        Ok(0) => {
            for i in 0..N as u64 {
                // Spin 2 to 7 ms: the write lands at varying points between ticks.
                let until = monotonic_ns() + 2_000_000 + i % 6 * 1_000_000;
                while monotonic_ns() < until {}
                let _ = write(p[1], &monotonic_ns().to_ne_bytes());
                // Let the woken waiter run (cowlab does not preempt on a wake-up).
                sched_yield();
            }
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => return u64::MAX,
    };
    let ep = use_epoll.then(|| {
        let ep = epoll_create1(0).unwrap_or(-1);
        let _ = ctl(ep, ADD, p[0], IN, 0);
        ep
    });
    let mut lat = alloc::vec::Vec::new();
    for _ in 0..N {
        if !wait_readable(p[0], ep) {
            break;
        }
        let woke = monotonic_ns();
        let mut b = [0u8; 8];
        if read(p[0], &mut b) != Ok(8) {
            break;
        }
        lat.push(woke.saturating_sub(u64::from_ne_bytes(b)) / 1000);
    }
    let _ = waitpid(child, 0);
    for fd in [p[0], p[1], ep.unwrap_or(-1)] {
        let _ = close(fd);
    }
    if lat.len() < N {
        return u64::MAX;
    }
    lat.sort_unstable();
    lat[N / 2]
}

fn err(e: i32) -> Errno {
    Errno(e)
}

fn main() -> i32 {
    let mut t = Tester::new("t_epoll_basic");
    let mut buf = [0u8; 64];

    // Creation.
    t.eq(
        "epoll_create(0) is EINVAL",
        epoll_create(0),
        Err(err(errno::EINVAL)),
    );
    t.eq(
        "epoll_create1(1) is EINVAL",
        epoll_create1(1),
        Err(err(errno::EINVAL)),
    );
    let old = epoll_create(1).unwrap_or(-1);
    t.check("epoll_create(1) gives a descriptor", old >= 0);
    t.eq("... without FD_CLOEXEC", fcntl(old, F_GETFD, 0), Ok(0));
    let _ = close(old);
    let ep = epoll_create1(O_CLOEXEC).unwrap_or(-1);
    t.eq(
        "epoll_create1(EPOLL_CLOEXEC) sets FD_CLOEXEC",
        fcntl(ep, F_GETFD, 0),
        Ok(1),
    );
    t.eq(
        "read on an epoll fd is EINVAL",
        read(ep, &mut buf),
        Err(err(errno::EINVAL)),
    );

    // epoll_ctl's errnos, in Linux's order.
    let p = pipe().unwrap_or([-1, -1]);
    let file = open_mode(c"/tmp/t_epoll.file", O_RDWR | O_CREAT | O_TRUNC, 0o600).unwrap_or(-1);
    let _ = unlink(c"/tmp/t_epoll.file");
    t.eq(
        "ADD of a regular file is EPERM",
        ctl(ep, ADD, file, IN, 0),
        Err(err(errno::EPERM)),
    );
    t.eq(
        "a regular file as epfd with a pipe target is EINVAL",
        ctl(file, ADD, p[0], IN, 0),
        Err(err(errno::EINVAL)),
    );
    t.eq(
        "ADD of the epoll fd to itself is EINVAL",
        ctl(ep, ADD, ep, IN, 0),
        Err(err(errno::EINVAL)),
    );
    t.eq(
        "ADD of a closed fd is EBADF",
        ctl(ep, ADD, 900, IN, 0),
        Err(err(errno::EBADF)),
    );
    t.eq(
        "a closed epfd is EBADF",
        ctl(900, ADD, p[0], IN, 0),
        Err(err(errno::EBADF)),
    );
    t.eq(
        "DEL of an fd not added is ENOENT",
        ctl(ep, DEL, p[0], 0, 0),
        Err(err(errno::ENOENT)),
    );
    t.eq(
        "MOD of an fd not added is ENOENT",
        ctl(ep, MOD, p[0], IN, 0),
        Err(err(errno::ENOENT)),
    );
    t.eq("ADD of a pipe's read end", ctl(ep, ADD, p[0], IN, 7), Ok(0));
    t.eq(
        "ADD again is EEXIST",
        ctl(ep, ADD, p[0], IN, 7),
        Err(err(errno::EEXIST)),
    );
    t.eq(
        "an unknown op is EINVAL",
        ctl(ep, 9, p[0], IN, 0),
        Err(err(errno::EINVAL)),
    );
    // SAFETY: a null event pointer: the kernel must answer EFAULT.
    let r = unsafe {
        raw(
            EPOLL_CTL,
            [ep as usize, MOD as usize, p[0] as usize, 0, 0, 0],
        )
    };
    t.eq(
        "MOD with a null event is EFAULT",
        r,
        Err(err(errno::EFAULT)),
    );
    t.eq(
        "MOD with EPOLLEXCLUSIVE is EINVAL",
        ctl(ep, MOD, p[0], IN | EXCLUSIVE, 0),
        Err(err(errno::EINVAL)),
    );
    t.eq(
        "ADD with EPOLLEXCLUSIVE|EPOLLONESHOT is EINVAL",
        ctl(ep, ADD, p[1], OUT | EXCLUSIVE | ONESHOT, 0),
        Err(err(errno::EINVAL)),
    );
    let _ = close(file);

    // epoll_wait's errnos.
    let mut evs = [Event::default(); 2];
    // SAFETY: the buffer holds 2 events; maxevents 0 is refused before it is used.
    let r = unsafe {
        raw(
            EPOLL_WAIT,
            [ep as usize, evs.as_mut_ptr() as usize, 0, 0, 0, 0],
        )
    };
    t.eq("maxevents 0 is EINVAL", r, Err(err(errno::EINVAL)));
    // SAFETY: as above.
    let r = unsafe {
        raw(
            EPOLL_WAIT,
            [p[0] as usize, evs.as_mut_ptr() as usize, 2, 0, 0, 0],
        )
    };
    t.eq("waiting on a pipe fd is EINVAL", r, Err(err(errno::EINVAL)));
    // SAFETY: as above.
    let r = unsafe { raw(EPOLL_WAIT, [900, evs.as_mut_ptr() as usize, 2, 0, 0, 0]) };
    t.eq("waiting on a closed fd is EBADF", r, Err(err(errno::EBADF)));
    // SAFETY: a kernel address: access_ok refuses it before anything is written.
    let r = unsafe { raw(EPOLL_WAIT, [ep as usize, 0xffff_8000_0000_0000, 2, 0, 0, 0]) };
    t.eq(
        "a kernel events pointer is EFAULT",
        r,
        Err(err(errno::EFAULT)),
    );
    // SAFETY: an unmapped user pointer and nothing ready: nothing is written.
    let r = unsafe { raw(EPOLL_WAIT, [ep as usize, 8, 2, 0, 0, 0]) };
    t.eq("an unmapped one with nothing ready: 0", r, Ok(0));
    let _ = write(p[1], b"f");
    // SAFETY: an unmapped user pointer: the kernel must answer EFAULT, not touch it from here.
    let r = unsafe { raw(EPOLL_WAIT, [ep as usize, 8, 2, 0, 0, 0]) };
    t.eq(
        "an unmapped one with an event ready: EFAULT",
        r,
        Err(err(errno::EFAULT)),
    );
    let _ = read(p[0], &mut buf);

    // Level-triggered.
    t.eq("empty pipe: no events", wait(ep, 8, 0), Ok(alloc::vec![]));
    let _ = write(p[1], b"ab");
    t.eq(
        "data: EPOLLIN with the datum",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 7)]),
    );
    t.eq(
        "level-triggered: reported again",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 7)]),
    );
    t.eq("MOD changes the datum", ctl(ep, MOD, p[0], IN, 8), Ok(0));
    t.eq(
        "... reported with it",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 8)]),
    );
    let _ = read(p[0], &mut buf);

    // Edge-triggered.
    t.eq("MOD to EPOLLET", ctl(ep, MOD, p[0], IN | ET, 9), Ok(0));
    t.eq("ET, empty: nothing", wait(ep, 8, 0), Ok(alloc::vec![]));
    let _ = write(p[1], b"xyz");
    t.eq(
        "ET: the write is reported",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 9)]),
    );
    t.eq("ET: only once", wait(ep, 8, 0), Ok(alloc::vec![]));
    let _ = read(p[0], &mut buf[..1]);
    t.eq(
        "ET: a partial read is no new edge",
        wait(ep, 8, 0),
        Ok(alloc::vec![]),
    );
    let _ = write(p[1], b"w");
    t.eq(
        "ET: another write is a new edge",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 9)]),
    );
    let _ = read(p[0], &mut buf);

    // One-shot.
    t.eq(
        "MOD to EPOLLONESHOT",
        ctl(ep, MOD, p[0], IN | ONESHOT, 10),
        Ok(0),
    );
    let _ = write(p[1], b"o");
    t.eq(
        "one-shot: reported",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 10)]),
    );
    let _ = write(p[1], b"o");
    t.eq("one-shot: then disabled", wait(ep, 8, 0), Ok(alloc::vec![]));
    t.eq(
        "MOD re-arms it",
        ctl(ep, MOD, p[0], IN | ONESHOT, 11),
        Ok(0),
    );
    t.eq(
        "re-armed: reported",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 11)]),
    );
    let _ = read(p[0], &mut buf);
    t.eq("DEL", ctl(ep, DEL, p[0], 0, 0), Ok(0));
    // SAFETY: a null event pointer: the kernel must answer EFAULT.
    let nul = unsafe {
        raw(
            EPOLL_CTL,
            [ep as usize, ADD as usize, p[0] as usize, 0, 0, 0],
        )
    };
    t.eq(
        "ADD with a null event is EFAULT",
        nul,
        Err(err(errno::EFAULT)),
    );

    // Timeouts.
    t.eq(
        "ADD again after DEL",
        ctl(ep, ADD, p[0], IN | RDHUP, 1),
        Ok(0),
    );
    let start = monotonic_ns();
    t.eq(
        "epoll_wait(100 ms) times out",
        wait(ep, 8, 100),
        Ok(alloc::vec![]),
    );
    let waited = ms_since(start);
    t.check_why(
        "it waited about 100 ms",
        (95..2000).contains(&waited),
        waited,
    );
    let start = monotonic_ns();
    t.eq(
        "epoll_pwait2(50 ms) times out",
        pwait2(ep, Some(&[0, 50_000_000])),
        Ok(0),
    );
    let waited = ms_since(start);
    t.check_why(
        "it waited about 50 ms",
        (45..2000).contains(&waited),
        waited,
    );
    t.eq(
        "epoll_pwait2 with tv_nsec 1e9 is EINVAL",
        pwait2(ep, Some(&[0, 1_000_000_000])),
        Err(err(errno::EINVAL)),
    );
    t.eq(
        "epoll_pwait2 with tv_sec -1 is EINVAL",
        pwait2(ep, Some(&[-1, 0])),
        Err(err(errno::EINVAL)),
    );

    // A writer in another process wakes an infinite wait.
    let writer = match fork() {
        Ok(0) => {
            let _ = sleep_ms(50);
            let _ = write(p[1], b"w");
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    let start = monotonic_ns();
    t.eq(
        "epoll_wait(-1) woken by a write in a child",
        wait(ep, 8, -1),
        Ok(alloc::vec![(IN, 1)]),
    );
    let waited = ms_since(start);
    t.check_why(
        "... after the child's 50 ms",
        (45..2000).contains(&waited),
        waited,
    );
    let _ = waitpid(writer, 0);
    let _ = read(p[0], &mut buf);

    // Hang-up and error; no EPOLLRDHUP from a pipe.
    let _ = write(p[1], b"h");
    let _ = close(p[1]);
    t.eq(
        "writer gone, data left: EPOLLIN|EPOLLHUP (no EPOLLRDHUP)",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN | HUP, 1)]),
    );
    let _ = read(p[0], &mut buf);
    t.eq("MOD to no events", ctl(ep, MOD, p[0], 0, 2), Ok(0));
    t.eq(
        "drained: EPOLLHUP though not asked",
        wait(ep, 8, 0),
        Ok(alloc::vec![(HUP, 2)]),
    );
    let _ = close(p[0]);
    let q = pipe().unwrap_or([-1, -1]);
    t.eq("ADD of a write end", ctl(ep, ADD, q[1], OUT, 3), Ok(0));
    t.eq(
        "write end: EPOLLOUT",
        wait(ep, 8, 0),
        Ok(alloc::vec![(OUT, 3)]),
    );
    let _ = close(q[0]);
    t.eq(
        "reader gone: EPOLLOUT|EPOLLERR",
        wait(ep, 8, 0),
        Ok(alloc::vec![(OUT | ERR, 3)]),
    );
    let _ = close(q[1]);
    t.eq(
        "closed pipe's items are gone",
        wait(ep, 8, 0),
        Ok(alloc::vec![]),
    );

    // The interest list follows the open file: (file, fd) pairs.
    let p = pipe().unwrap_or([-1, -1]);
    let _ = ctl(ep, ADD, p[0], IN, 20);
    let dup_fd = dup(p[0]).unwrap_or(-1);
    let _ = close(p[0]);
    let _ = write(p[1], b"d");
    t.eq(
        "closed fd, file open by a dup: still reported",
        wait(ep, 8, 0),
        Ok(alloc::vec![(IN, 20)]),
    );
    t.eq(
        "DEL of the closed fd is EBADF",
        ctl(ep, DEL, p[0], 0, 0),
        Err(err(errno::EBADF)),
    );
    let _ = close(dup_fd);
    t.eq(
        "last descriptor closed: the item is dropped",
        wait(ep, 8, 0),
        Ok(alloc::vec![]),
    );
    let r = pipe().unwrap_or([-1, -1]);
    t.check("a new pipe reuses the fd number", r[0] == p[0]);
    t.eq(
        "ADD at the reused number is not EEXIST",
        ctl(ep, ADD, r[0], IN, 21),
        Ok(0),
    );
    let _ = close(p[1]);

    // Fair reporting: maxevents 1 over two ready descriptors.
    let s = pipe().unwrap_or([-1, -1]);
    let _ = ctl(ep, ADD, s[0], IN, 22);
    let _ = write(r[1], b"1");
    let _ = write(s[1], b"2");
    let first = wait(ep, 1, 0).unwrap_or_default();
    let second = wait(ep, 1, 0).unwrap_or_default();
    t.check_why(
        "maxevents 1: two waits report both ready descriptors",
        first.len() == 1 && second.len() == 1 && first[0].1 != second[0].1,
        format_args!("{first:?} {second:?}"),
    );
    t.eq(
        "maxevents 8: both at once",
        wait(ep, 8, 0).map(|v| v.len()),
        Ok(2),
    );
    let _ = read(r[0], &mut buf);
    let _ = read(s[0], &mut buf);

    // Nesting: an epoll watching an epoll.
    let outer = epoll_create1(0).unwrap_or(-1);
    t.eq(
        "ADD an epoll to an epoll",
        ctl(outer, ADD, ep, IN, 30),
        Ok(0),
    );
    t.eq(
        "inner idle: outer idle",
        wait(outer, 8, 0),
        Ok(alloc::vec![]),
    );
    let mut pfd = [ep as i64 | (i64::from(IN as u16) << 32)];
    // SAFETY: one live pollfd (fd, events, revents packed in 8 bytes).
    let n = unsafe { raw(POLL, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.eq("poll on an idle epoll: 0", n, Ok(0));
    let _ = write(r[1], b"n");
    t.eq(
        "inner ready: outer reports it",
        wait(outer, 8, 0),
        Ok(alloc::vec![(IN, 30)]),
    );
    // SAFETY: as above.
    let n = unsafe { raw(POLL, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.eq(
        "poll on a ready epoll: POLLIN",
        (n, pfd[0] >> 48),
        (Ok(1), 1),
    );
    let _ = read(r[0], &mut buf);
    let sleeper = match fork() {
        Ok(0) => {
            let _ = sleep_ms(40);
            let _ = write(s[1], b"z");
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    t.eq(
        "outer wait(-1) woken through the inner epoll",
        wait(outer, 8, 2000),
        Ok(alloc::vec![(IN, 30)]),
    );
    let _ = waitpid(sleeper, 0);
    let _ = read(s[0], &mut buf);
    t.eq(
        "a cycle is ELOOP",
        ctl(ep, ADD, outer, IN, 0),
        Err(err(ELOOP)),
    );
    t.eq(
        "EPOLLEXCLUSIVE on an epoll target is EINVAL",
        ctl(epoll_create1(0).unwrap_or(-1), ADD, ep, IN | EXCLUSIVE, 0),
        Err(err(errno::EINVAL)),
    );
    let _ = close(outer);

    // Signals: EINTR, SA_RESTART or not; epoll_pwait's mask.
    for (flags, name) in [
        (0, "epoll_wait(-1) interrupted by a handler: EINTR"),
        (SA_RESTART, "epoll_wait(-1) under SA_RESTART: still EINTR"),
    ] {
        let st = in_child(|| {
            handle_alarm(flags);
            alarm_in(50);
            match wait(ep, 8, -1) {
                Err(Errno(cowlab_userland::sys::EINTR)) if CAUGHT.load(Ordering::SeqCst) == 1 => 0,
                Err(e) => 100 + e.0,
                Ok(v) => 50 + v.len() as i32,
            }
        });
        t.check_why(
            name,
            wifexited(st) && wexitstatus(st) == 0,
            format_args!("{st:#x}"),
        );
    }
    let st = in_child(|| {
        handle_alarm(0);
        alarm_in(20);
        let block = 1u64 << (SIGALRM - 1);
        let mut evs = [Event::default(); 2];
        // SAFETY: 2 live events and a live 8-byte mask.
        let r = unsafe {
            raw(
                EPOLL_PWAIT,
                [
                    ep as usize,
                    evs.as_mut_ptr() as usize,
                    2,
                    150,
                    &block as *const u64 as usize,
                    8,
                ],
            )
        };
        if r != Ok(0) {
            return 1;
        }
        if CAUGHT.load(Ordering::SeqCst) != 1 {
            return 2;
        }
        0
    });
    t.check_why(
        "epoll_pwait with SIGALRM masked: times out, handler runs after",
        wifexited(st) && wexitstatus(st) == 0,
        format_args!("{st:#x}"),
    );
    let mut evs = [Event::default(); 2];
    let mask = 0u64;
    // SAFETY: live events and mask; the size 4 is refused.
    let bad = unsafe {
        raw(
            EPOLL_PWAIT,
            [
                ep as usize,
                evs.as_mut_ptr() as usize,
                2,
                0,
                &mask as *const u64 as usize,
                4,
            ],
        )
    };
    t.eq(
        "epoll_pwait with sigsetsize 4 is EINVAL",
        bad,
        Err(err(errno::EINVAL)),
    );

    // Nonblocking descriptors need no special case: ET with a drained O_NONBLOCK pipe.
    let nb = pipe2(O_NONBLOCK).unwrap_or([-1, -1]);
    let _ = ctl(ep, ADD, nb[0], IN | ET, 40);
    let _ = write(nb[1], b"abc");
    let got = wait(ep, 8, 0).unwrap_or_default();
    t.check_why(
        "ET on a nonblocking pipe: reported",
        got.contains(&(IN, 40)),
        format_args!("{got:?}"),
    );
    let _ = read(nb[0], &mut buf);
    t.eq(
        "drained to EAGAIN, no new edge",
        (read(nb[0], &mut buf), wait(ep, 8, 0)),
        (Err(err(EAGAIN)), Ok(alloc::vec![])),
    );
    // Wake-ups are immediate, not a timer tick late: a child writes its clock after spinning
    // a few milliseconds (so the write falls anywhere between two 10 ms ticks), then yields;
    // the waiter's latency from that write to its return is a context switch, not the time to
    // the next tick (median about 5 ms when cowlab's poll looked again on each tick).
    // The machine running the suite may be loaded (two QEMUs on two cores in CI), which delays
    // a wake-up by host scheduling: take the best median of up to three rounds. A kernel that
    // looks again only on ticks has a median near 5 ms; it passes one round below 2 ms with a
    // probability under 0.5%, three rounds under 1.5%.
    for (name, use_epoll) in [
        (
            "poll wakes within 2 ms of a write (best median of 15)",
            false,
        ),
        (
            "epoll_wait wakes within 2 ms of a write (best median of 15)",
            true,
        ),
    ] {
        let mut rounds = alloc::vec::Vec::new();
        for _ in 0..3 {
            let us = wake_latency_us(use_epoll);
            rounds.push(us);
            if us < 2000 {
                break;
            }
        }
        let best = rounds.iter().copied().min().unwrap_or(u64::MAX);
        t.check_why(name, best < 2000, format_args!("medians {rounds:?} us"));
    }

    for fd in [nb[0], nb[1], r[0], r[1], s[0], s[1], ep] {
        let _ = close(fd);
    }
    t.finish()
}
