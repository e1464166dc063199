//! epoll_create/epoll_create1, epoll_ctl, epoll_wait/epoll_pwait/epoll_pwait2 and eventfd/
//! eventfd2: argument decoding around `fs::epoll` and `fs::eventfd` (Linux `fs/eventpoll.c`,
//! `fs/eventfd.c`), in Linux's order of checks so each bad argument gets Linux's errno.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Args, SysResult};
use crate::errno::Errno;
use crate::fs::epoll::{Epoll, EPOLL_CTL_DEL};
use crate::fs::eventfd::{EventFd, EFD_SEMAPHORE};
use crate::fs::{Fd, OpenFile, O_CLOEXEC, O_NONBLOCK, O_RDWR};
use crate::proc::{signal::ops, with_current};
use crate::time;
use crate::uaccess::{UserPtr, UserSlice};

/// `struct epoll_event` is packed on x86_64: a u32 and a u64 in 12 bytes.
const EVENT_SIZE: usize = 12;
/// Linux `EP_MAX_EVENTS`: `INT_MAX / sizeof(struct epoll_event)`.
const MAX_EVENTS: i32 = i32::MAX / EVENT_SIZE as i32;

fn install(file: Arc<OpenFile>, cloexec: bool) -> SysResult {
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    let fd = Fd { file, cloexec };
    // A failed install hands the descriptor back: drop it outside the table lock.
    let installed = with_current(|p| p.fds.install(fd.clone()));
    drop(fd);
    Ok(installed? as u64)
}

fn new_epoll(cloexec: bool) -> SysResult {
    let ep = crate::heap::try_box(Epoll::new())?;
    install(OpenFile::new(ep as Box<_>, O_RDWR), cloexec)
}

/// epoll_create(int size): any positive size (Linux ignores it since 2.6.8).
pub fn epoll_create(a: Args) -> SysResult {
    if a.i32(0) <= 0 {
        return Err(Errno::EINVAL);
    }
    new_epoll(false)
}

/// epoll_create1(int flags): `EPOLL_CLOEXEC` (= `O_CLOEXEC`) only.
pub fn epoll_create1(a: Args) -> SysResult {
    let flags = a.i32(0) as u32;
    if flags & !O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    new_epoll(flags & O_CLOEXEC != 0)
}

/// epoll_ctl(int epfd, int op, int fd, struct epoll_event *event).
pub fn epoll_ctl(a: Args) -> SysResult {
    let (epfd, op, fd) = (a.i32(0), a.i32(1), a.i32(2));
    // Linux copies the event first, for every op but DEL (an unknown op included).
    let (events, data) = if op != EPOLL_CTL_DEL {
        let mut raw = [0u8; EVENT_SIZE];
        UserSlice::new(a.get(3), EVENT_SIZE)?.read(&mut raw)?;
        let (ev, data) = raw.split_at(4);
        (
            u32::from_ne_bytes(ev.try_into().map_err(|_| Errno::EFAULT)?),
            u64::from_ne_bytes(data.try_into().map_err(|_| Errno::EFAULT)?),
        )
    } else {
        (0, 0)
    };
    let ep_file = with_current(|p| p.fds.get(i64::from(epfd)))?;
    let target = with_current(|p| p.fds.get(i64::from(fd)))?;
    if target.ops.poll_channels(&target).is_none() {
        return Err(Errno::EPERM);
    }
    if Arc::ptr_eq(&ep_file, &target) {
        return Err(Errno::EINVAL);
    }
    let ep = ep_file.downcast::<Epoll>().ok_or(Errno::EINVAL)?;
    ep.ctl(op, fd, &target, events, data)?;
    Ok(0)
}

/// The common wait (Linux `do_epoll_wait`) with `sigmask` installed for its duration (Linux
/// keeps it installed after `EINTR`, for the handler, as ppoll does).
fn do_wait(a: Args, deadline: Option<u64>, sigmask: Option<u64>) -> SysResult {
    let (epfd, max) = (a.i32(0), a.i32(2));
    if max <= 0 || max > MAX_EVENTS {
        return Err(Errno::EINVAL);
    }
    let out = UserSlice::new(a.get(1), max as usize * EVENT_SIZE)?;
    let file = with_current(|p| p.fds.get(i64::from(epfd)))?;
    let ep = file.downcast::<Epoll>().ok_or(Errno::EINVAL)?;
    if let Some(mask) = sigmask {
        ops::set_temporary_mask(mask);
    }
    let r = ep.wait(max as usize, deadline);
    if sigmask.is_some() && !matches!(r, Err(Errno::EINTR)) {
        ops::restore_temporary_mask();
    }
    let events = r?;
    let mut raw = Vec::new();
    crate::heap::try_reserve(&mut raw, events.len() * EVENT_SIZE)?;
    for (ev, data) in &events {
        raw.extend_from_slice(&ev.to_ne_bytes());
        raw.extend_from_slice(&data.to_ne_bytes());
    }
    out.sub(0, raw.len()).write(&raw)?;
    Ok(events.len() as u64)
}

fn ms_deadline(ms: i32) -> Option<u64> {
    (ms >= 0).then(|| time::micros_since_boot().saturating_add(ms as u64 * 1000))
}

/// The signal mask of epoll_pwait/epoll_pwait2 (Linux `set_user_sigmask`).
fn sigmask(ptr: u64, size: u64) -> Result<Option<u64>, Errno> {
    if ptr == 0 {
        return Ok(None);
    }
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    Ok(Some(UserPtr::<u64>::new(ptr)?.read()?))
}

/// epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout).
pub fn epoll_wait(a: Args) -> SysResult {
    do_wait(a, ms_deadline(a.i32(3)), None)
}

/// epoll_pwait(epfd, events, maxevents, timeout, const sigset_t *sigmask, size_t sigsetsize).
pub fn epoll_pwait(a: Args) -> SysResult {
    let mask = sigmask(a.get(4), a.get(5))?;
    do_wait(a, ms_deadline(a.i32(3)), mask)
}

/// epoll_pwait2: as epoll_pwait with a `struct timespec *` timeout (NULL: none).
pub fn epoll_pwait2(a: Args) -> SysResult {
    let deadline = if a.get(3) != 0 {
        let [sec, nsec] = UserPtr::<[i64; 2]>::new(a.get(3))?.read()?;
        if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
            return Err(Errno::EINVAL);
        }
        let us = (sec as u64)
            .saturating_mul(1_000_000)
            .saturating_add(nsec as u64 / 1000);
        Some(time::micros_since_boot().saturating_add(us))
    } else {
        None
    };
    let mask = sigmask(a.get(4), a.get(5))?;
    do_wait(a, deadline, mask)
}

/// eventfd2(unsigned int initval, int flags): `EFD_SEMAPHORE`, `EFD_NONBLOCK` (= `O_NONBLOCK`),
/// `EFD_CLOEXEC` (= `O_CLOEXEC`).
pub fn eventfd2(a: Args) -> SysResult {
    let flags = a.i32(1) as u32;
    if flags & !(EFD_SEMAPHORE | O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let efd = crate::heap::try_box(EventFd::new(a.get(0) as u32, flags & EFD_SEMAPHORE != 0))?;
    install(
        OpenFile::new(efd as Box<_>, O_RDWR | (flags & O_NONBLOCK)),
        flags & O_CLOEXEC != 0,
    )
}

/// eventfd(unsigned int initval): eventfd2 without flags.
pub fn eventfd(a: Args) -> SysResult {
    let mut regs = [0u64; 6];
    regs[0] = a.get(0);
    eventfd2(Args(regs))
}
