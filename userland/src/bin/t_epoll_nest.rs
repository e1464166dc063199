//! How deep epoll instances may watch each other (Linux `EP_MAX_NESTS` = 4 links): a chain built
//! top-down (each new, empty instance added under one that is already watched) stops with ELOOP
//! at the same link as one built bottom-up, and two short chains cannot be joined into a long
//! one. A chain of the longest allowed length still carries a wake-up from a pipe at the bottom
//! to an epoll_wait and a poll() at the top. The same checks on the host Linux (a kernel with
//! the upward depth check, 6.x). Before the fix cowlab let the top-down chain grow without bound
//! and overflowed its kernel stack waking it.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::epoll::{epoll_create1, epoll_ctl, epoll_wait, ADD, DEL, IN};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const POLL: usize = 7;
const ELOOP: i32 = 40;
/// Instances per chain: enough to go well past the limit, few enough to be quick.
const N: usize = 64;
/// Links the longest allowed chain has (Linux `EP_MAX_NESTS`).
const MAX_LINKS: usize = 4;

/// epoll_ctl with the descriptor as the data.
fn ctl(ep: i32, op: i32, fd: i32, events: u32) -> Result<usize, Errno> {
    epoll_ctl(ep, op, fd, events, fd as u64)
}

fn wait(ep: i32, ms: i32) -> Result<Vec<(u32, u64)>, Errno> {
    epoll_wait(ep, 4, ms)
}

/// poll() for input on one descriptor with a timeout; the revents.
fn poll_in(fd: i32, ms: i32) -> Result<u16, Errno> {
    #[repr(C)]
    struct PollFd {
        fd: i32,
        events: i16,
        revents: i16,
    }
    let mut p = PollFd {
        fd,
        events: 1,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    unsafe {
        raw(
            POLL,
            [
                &mut p as *mut PollFd as usize,
                1,
                ms as u32 as usize,
                0,
                0,
                0,
            ],
        )
    }?;
    Ok(p.revents as u16)
}

fn create(n: usize) -> Vec<i32> {
    (0..n).map(|_| epoll_create1(0).unwrap_or(-1)).collect()
}

fn close_all(fds: &[i32]) {
    for &fd in fds {
        let _ = close(fd);
    }
}

/// Adds `eps[i + 1]` to `eps[i]` for each `i` in `order`; the first `i` that fails and its
/// error, and how many links were made.
fn build(eps: &[i32], order: impl Iterator<Item = usize>) -> (Option<(usize, Errno)>, usize) {
    let mut made = 0;
    for i in order {
        match ctl(eps[i], ADD, eps[i + 1], IN) {
            Ok(_) => made += 1,
            Err(e) => return (Some((i, e)), made),
        }
    }
    (None, made)
}

fn main() -> i32 {
    let mut t = Tester::new("t_epoll_nest");

    // Top-down: eps[i] is watched by eps[i - 1] (above it) when eps[i + 1] is added to it.
    let eps = create(N);
    t.check("epoll_create1 x64", eps.iter().all(|&f| f >= 0));
    let (fail, made) = build(&eps, 0..N - 1);
    t.eq(
        "top-down chain: the fifth ADD (i = 4) is ELOOP",
        fail,
        Some((MAX_LINKS, Errno(ELOOP))),
    );
    t.eq("top-down chain: 4 links made", made, MAX_LINKS);
    // The refused ADD changed nothing: the deepest allowed instance still takes plain files,
    // and a retry is refused the same way.
    t.eq(
        "top-down chain: a retry is still ELOOP",
        ctl(eps[MAX_LINKS], ADD, eps[MAX_LINKS + 1], IN),
        Err(Errno(ELOOP)),
    );
    // An instance from the top of the chain cannot go under the bottom either (a loop).
    t.eq(
        "adding the top under the bottom is ELOOP",
        ctl(eps[MAX_LINKS], ADD, eps[0], IN),
        Err(Errno(ELOOP)),
    );

    // The longest chain still carries a wake-up from a pipe at its bottom to its top, for a
    // sleeping epoll_wait and for poll().
    let p = pipe().unwrap_or([-1, -1]);
    t.eq(
        "a pipe under the deepest instance",
        ctl(eps[MAX_LINKS], ADD, p[0], IN),
        Ok(0),
    );
    t.eq(
        "top of the chain: nothing ready yet",
        wait(eps[0], 0).map(|v| v.len()),
        Ok(0),
    );
    let writer = p[1];
    let st = in_child(|| {
        let _ = sleep_ms(30);
        match write(writer, b"x") {
            Ok(1) => 0,
            _ => 1,
        }
    });
    t.check("the writer child ran", st == 0);
    // The child has already written: the blocking wait below must find it at once; the same
    // through a child that writes while the parent sleeps follows.
    t.eq(
        "top of the chain: epoll_wait reports the level below",
        wait(eps[0], 1000),
        Ok(alloc::vec![(IN, eps[1] as u64)]),
    );
    let mut b = [0u8; 4];
    let _ = read(p[0], &mut b);
    let pid = fork();
    if pid == Ok(0) {
        let _ = sleep_ms(50);
        let _ = write(writer, b"y");
        exit_now(0);
    }
    t.eq(
        "a sleeping epoll_wait on the top is woken through 5 instances",
        wait(eps[0], 2000).map(|v| v.len()),
        Ok(1),
    );
    if let Ok(pid) = pid {
        let _ = waitpid(pid, 0);
    }
    t.eq(
        "poll() on the top sees it readable",
        poll_in(eps[0], 0),
        Ok(IN as u16),
    );
    let _ = read(p[0], &mut b);
    let pid = fork();
    if pid == Ok(0) {
        let _ = sleep_ms(50);
        let _ = write(writer, b"z");
        exit_now(0);
    }
    t.eq(
        "a sleeping poll() on the top is woken through 5 instances",
        poll_in(eps[0], 2000),
        Ok(IN as u16),
    );
    if let Ok(pid) = pid {
        let _ = waitpid(pid, 0);
    }
    close_all(&p);
    // Taking the top link off makes room for one more at the bottom.
    t.eq("DEL the top link", ctl(eps[0], DEL, eps[1], 0), Ok(0));
    t.eq(
        "then the bottom ADD that was ELOOP succeeds",
        ctl(eps[MAX_LINKS], ADD, eps[MAX_LINKS + 1], IN),
        Ok(0),
    );
    close_all(&eps);

    // Bottom-up: each ADD puts a longer chain under an instance nobody watches yet.
    let eps = create(N);
    let (fail, made) = build(&eps, (0..N - 1).rev());
    t.eq(
        "bottom-up chain: ELOOP at the fifth ADD",
        fail,
        Some((N - 2 - MAX_LINKS, Errno(ELOOP))),
    );
    t.eq("bottom-up chain: 4 links made", made, MAX_LINKS);
    close_all(&eps);

    // Two chains of 2 links each: joining them would make 5.
    let a = create(3);
    let b = create(3);
    let (fa, _) = build(&a, 0..2);
    let (fb, _) = build(&b, 0..2);
    t.check("two 2-link chains", fa.is_none() && fb.is_none());
    t.eq(
        "joining them end to top (5 links) is ELOOP",
        ctl(a[2], ADD, b[0], IN),
        Err(Errno(ELOOP)),
    );
    t.eq(
        "joining into the middle (4 links) is allowed",
        ctl(a[2], ADD, b[1], IN),
        Ok(0),
    );
    let c = epoll_create1(0).unwrap_or(-1);
    t.eq(
        "then nothing more below the bottom (5 links)",
        ctl(b[2], ADD, c, IN),
        Err(Errno(ELOOP)),
    );
    let _ = close(c);
    close_all(&a);
    close_all(&b);

    // The reviewer's case: many instances, top-down, then survive a wake-up and a wait.
    let eps = create(256);
    let (fail, _) = build(&eps, 0..255);
    t.eq(
        "256 instances top-down: ELOOP at i = 4",
        fail.map(|f| f.0),
        Some(MAX_LINKS),
    );
    close_all(&eps);
    t.finish()
}
