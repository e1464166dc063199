//! eventfd/eventfd2: the counter (read takes it all, or 1 with EFD_SEMAPHORE), EFD_NONBLOCK
//! (EAGAIN at 0 and at the top), EFD_CLOEXEC, Linux's errnos (short buffers, a write of
//! u64::MAX, unknown flags), a blocked read woken by another process, poll, and epoll on it:
//! level- and edge-triggered (a write, even of 0, is a new edge; a read is not one for the
//! reader's side) and EPOLLOUT at the top. The same checks on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use cowlab_userland::calls::*;
use cowlab_userland::epoll::{
    epoll_create1, epoll_ctl as ctl, epoll_wait, read_u64 as get, ERR, ET, IN, OUT,
};
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{ms_since, Tester};

cowlab_userland::entry!(main);

const POLL: usize = 7;
const EVENTFD: usize = 284;
const EVENTFD2: usize = 290;
const EFD_SEMAPHORE: u32 = 1;
const EFD_NONBLOCK: u32 = 0o4000;
const EFD_CLOEXEC: u32 = 0o2000000;
const EAGAIN: i32 = 11;
const F_GETFD: u32 = 1;
const F_GETFL: u32 = 3;

fn eventfd2(init: u32, flags: u32) -> Result<i32, Errno> {
    // SAFETY: no pointer arguments.
    unsafe { raw(EVENTFD2, [init as usize, flags as usize, 0, 0, 0, 0]) }.map(|f| f as i32)
}

fn put(fd: i32, v: u64) -> Result<usize, Errno> {
    write(fd, &v.to_ne_bytes())
}

fn wait(ep: i32, ms: i32) -> Result<alloc::vec::Vec<(u32, u64)>, Errno> {
    epoll_wait(ep, 4, ms)
}

/// poll's revents for `fd` asked for POLLIN|POLLOUT.
fn revents(fd: i32) -> i64 {
    let mut pfd = [fd as u32 as i64 | (i64::from((IN | OUT) as u16) << 32)];
    // SAFETY: one live pollfd (fd, events, revents in 8 bytes).
    let _ = unsafe { raw(POLL, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    pfd[0] >> 48
}

fn main() -> i32 {
    let mut t = Tester::new("t_epoll_eventfd");
    let e = Errno;

    t.eq(
        "eventfd2 with an unknown flag is EINVAL",
        eventfd2(0, 2),
        Err(e(errno::EINVAL)),
    );
    // SAFETY: no pointer arguments.
    let plain = unsafe { raw(EVENTFD, [3, 0, 0, 0, 0, 0]) }.map_or(-1, |f| f as i32);
    t.eq("eventfd(3): read takes 3", get(plain), Ok(3));
    t.eq("... without FD_CLOEXEC", fcntl(plain, F_GETFD, 0), Ok(0));
    let _ = close(plain);

    let fd = eventfd2(5, EFD_NONBLOCK | EFD_CLOEXEC).unwrap_or(-1);
    t.eq("EFD_CLOEXEC", fcntl(fd, F_GETFD, 0), Ok(1));
    t.eq(
        "EFD_NONBLOCK is O_NONBLOCK, file is O_RDWR",
        fcntl(fd, F_GETFL, 0),
        Ok((EFD_NONBLOCK | 2) as usize),
    );
    let mut small = [0u8; 4];
    t.eq(
        "a 4-byte read is EINVAL",
        read(fd, &mut small),
        Err(e(errno::EINVAL)),
    );
    t.eq(
        "a 4-byte write is EINVAL",
        write(fd, &small),
        Err(e(errno::EINVAL)),
    );
    t.eq(
        "poll: readable and writable",
        revents(fd),
        i64::from(IN | OUT),
    );
    t.eq("read takes the whole count", get(fd), Ok(5));
    t.eq("read at 0 (nonblocking): EAGAIN", get(fd), Err(e(EAGAIN)));
    t.eq("poll at 0: writable only", revents(fd), i64::from(OUT));
    t.eq(
        "a write of u64::MAX is EINVAL",
        put(fd, u64::MAX),
        Err(e(errno::EINVAL)),
    );
    t.eq("writes add up", (put(fd, 2), put(fd, 40)), (Ok(8), Ok(8)));
    let mut big = [0u8; 16];
    t.eq("a 16-byte read returns 8", read(fd, &mut big), Ok(8));
    t.eq(
        "... the sum",
        u64::from_ne_bytes(big[..8].try_into().unwrap_or([0; 8])),
        42,
    );
    t.eq("u64::MAX - 1 fits", put(fd, u64::MAX - 1), Ok(8));
    t.eq("poll at the top: readable only", revents(fd), i64::from(IN));
    t.eq(
        "one more is EAGAIN (nonblocking)",
        put(fd, 1),
        Err(e(EAGAIN)),
    );
    t.eq("0 still fits", put(fd, 0), Ok(8));
    let _ = get(fd);

    // Semaphore mode.
    let sem = eventfd2(2, EFD_SEMAPHORE | EFD_NONBLOCK).unwrap_or(-1);
    t.eq(
        "semaphore: reads give 1, 1, then EAGAIN",
        (get(sem), get(sem), get(sem)),
        (Ok(1), Ok(1), Err(e(EAGAIN))),
    );
    let _ = close(sem);

    // A blocked read woken by another process. The clock starts before the fork: with a
    // second CPU the child runs (and starts its 50 ms) at once, while the parent may still be
    // on its way back from `fork` (on 2 CPUs under load the parent measured 42 ms).
    let blocking = eventfd2(0, 0).unwrap_or(-1);
    let start = monotonic_ns();
    let child = match fork() {
        Ok(0) => {
            let _ = sleep_ms(50);
            let _ = put(blocking, 7);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    t.eq("a blocked read gets a child's write", get(blocking), Ok(7));
    let waited = ms_since(start);
    t.check_why(
        "... after the child's 50 ms",
        (45..2000).contains(&waited),
        waited,
    );
    let _ = waitpid(child, 0);

    // epoll on an eventfd.
    let ep = epoll_create1(0).unwrap_or(-1);
    t.eq("ADD an eventfd", ctl(ep, 1, fd, IN | OUT, 1), Ok(0));
    t.eq("count 0: EPOLLOUT", wait(ep, 0), Ok(alloc::vec![(OUT, 1)]));
    let _ = put(fd, 1);
    t.eq(
        "count 1: EPOLLIN|EPOLLOUT",
        wait(ep, 0),
        Ok(alloc::vec![(IN | OUT, 1)]),
    );
    let _ = put(fd, u64::MAX - 2);
    t.eq("at the top: EPOLLIN", wait(ep, 0), Ok(alloc::vec![(IN, 1)]));
    let _ = get(fd);
    t.eq("ET on the read side", ctl(ep, 3, fd, IN | ET, 2), Ok(0));
    t.eq("ET, count 0: nothing", wait(ep, 0), Ok(alloc::vec![]));
    let _ = put(fd, 3);
    t.eq(
        "ET: the write is an edge",
        wait(ep, 0),
        Ok(alloc::vec![(IN, 2)]),
    );
    t.eq("ET: once", wait(ep, 0), Ok(alloc::vec![]));
    let _ = put(fd, 0);
    t.eq(
        "ET: a write of 0 is an edge too",
        wait(ep, 0),
        Ok(alloc::vec![(IN, 2)]),
    );
    let sem = eventfd2(3, EFD_SEMAPHORE | EFD_NONBLOCK).unwrap_or(-1);
    t.eq("ET on a semaphore", ctl(ep, 1, sem, IN | ET, 3), Ok(0));
    let got = wait(ep, 0).unwrap_or_default();
    t.check_why(
        "... reported at first",
        got.contains(&(IN, 3)),
        format_args!("{got:?}"),
    );
    let _ = get(sem);
    t.eq(
        "a semaphore read is no edge for readers",
        wait(ep, 0),
        Ok(alloc::vec![]),
    );
    let _ = close(sem);
    let _ = get(fd);
    let child = match fork() {
        Ok(0) => {
            let _ = sleep_ms(40);
            let _ = put(fd, 9);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => -1,
    };
    t.eq(
        "epoll_wait(-1) woken by a child's write",
        wait(ep, -1),
        Ok(alloc::vec![(IN, 2)]),
    );
    let _ = waitpid(child, 0);
    t.check("no EPOLLERR ever", revents(fd) & i64::from(ERR) == 0);
    let _ = close(fd);
    t.eq("closed: nothing reported", wait(ep, 0), Ok(alloc::vec![]));
    let _ = close(ep);
    let _ = close(blocking);
    t.finish()
}
