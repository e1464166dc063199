//! epoll_create/epoll_create1, epoll_ctl, epoll_wait/epoll_pwait/epoll_pwait2, eventfd/
//! eventfd2, timerfd_create/settime/gettime and signalfd/signalfd4: argument decoding around
//! `fs::epoll`, `fs::eventfd`, `fs::timerfd` and `fs::signalfd` (Linux `fs/eventpoll.c`,
//! `fs/eventfd.c`, `fs/timerfd.c`, `fs/signalfd.c`), in Linux's order of checks so each bad
//! argument gets Linux's errno.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::{Args, SysResult};
use crate::errno::Errno;
use crate::fs::epoll::{Epoll, EPOLL_CTL_DEL};
use crate::fs::eventfd::{EventFd, EFD_SEMAPHORE};
use crate::fs::signalfd::SignalFd;
use crate::fs::timerfd::{self, TimerFd};
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

/// `CLOCK_REALTIME_ALARM` and `CLOCK_BOOTTIME_ALARM`: their base clocks here (cowlab never
/// suspends), for callers Linux would let use them (`CAP_WAKE_ALARM`: root).
const CLOCK_REALTIME_ALARM: i32 = 8;
const CLOCK_BOOTTIME_ALARM: i32 = 9;

/// timerfd_create(int clockid, int flags): `TFD_NONBLOCK`, `TFD_CLOEXEC`.
pub fn timerfd_create(a: Args) -> SysResult {
    let (clock, flags) = (a.i32(0), a.i32(1) as u32);
    let base = match clock {
        timerfd::CLOCK_REALTIME | CLOCK_REALTIME_ALARM => timerfd::CLOCK_REALTIME,
        timerfd::CLOCK_MONOTONIC => timerfd::CLOCK_MONOTONIC,
        timerfd::CLOCK_BOOTTIME | CLOCK_BOOTTIME_ALARM => timerfd::CLOCK_BOOTTIME,
        _ => return Err(Errno::EINVAL),
    };
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    if matches!(clock, CLOCK_REALTIME_ALARM | CLOCK_BOOTTIME_ALARM)
        && crate::proc::cred::current().euid != 0
    {
        return Err(Errno::EPERM);
    }
    let tfd = crate::heap::try_box(TimerFd::new(base)?)?;
    install(
        OpenFile::new(tfd as Box<_>, O_RDWR | (flags & O_NONBLOCK)),
        flags & O_CLOEXEC != 0,
    )
}

/// A timespec as microseconds, rounded up so a non-zero time stays non-zero; `EINVAL` for a
/// negative or denormal one (Linux `timespec64_valid`).
fn micros_of(sec: i64, nsec: i64) -> Result<u64, Errno> {
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add((nsec as u64).div_ceil(1000)))
}

fn itimerspec(spec: timerfd::Spec) -> [i64; 4] {
    let (interval, value) = spec;
    let ts = |us: u64| [(us / 1_000_000) as i64, (us % 1_000_000 * 1000) as i64];
    let [a, b] = ts(interval);
    let [c, d] = ts(value);
    [a, b, c, d]
}

fn timer_of(fd: i32) -> Result<Arc<OpenFile>, Errno> {
    let file = with_current(|p| p.fds.get(i64::from(fd)))?;
    if file.downcast::<TimerFd>().is_none() {
        return Err(Errno::EINVAL);
    }
    Ok(file)
}

/// timerfd_settime(int fd, int flags, const struct itimerspec *new, struct itimerspec *old).
pub fn timerfd_settime(a: Args) -> SysResult {
    let (fd, flags) = (a.i32(0), a.i32(1) as u32);
    let new = UserPtr::<[i64; 4]>::new(a.get(2))?.read()?;
    if flags & !(timerfd::TFD_TIMER_ABSTIME | timerfd::TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(Errno::EINVAL);
    }
    let interval = micros_of(new[0], new[1])?;
    let value = micros_of(new[2], new[3])?;
    let file = timer_of(fd)?;
    let tfd = file.downcast::<TimerFd>().ok_or(Errno::EINVAL)?;
    let old = tfd.set(flags, interval, value);
    if a.get(3) != 0 {
        UserPtr::<[i64; 4]>::new(a.get(3))?.write(&itimerspec(old))?;
    }
    Ok(0)
}

/// timerfd_gettime(int fd, struct itimerspec *cur).
pub fn timerfd_gettime(a: Args) -> SysResult {
    let file = timer_of(a.i32(0))?;
    let tfd = file.downcast::<TimerFd>().ok_or(Errno::EINVAL)?;
    UserPtr::<[i64; 4]>::new(a.get(1))?.write(&itimerspec(tfd.get()))?;
    Ok(0)
}

/// signalfd4(int ufd, const sigset_t *mask, size_t sizemask, int flags): a new signalfd for
/// `ufd` -1, else a new mask for the signalfd `ufd`. `SFD_NONBLOCK`, `SFD_CLOEXEC`.
pub fn signalfd4(a: Args) -> SysResult {
    if a.get(2) != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = UserPtr::<u64>::new(a.get(1))?.read()?;
    let (ufd, flags) = (a.i32(0), a.i32(3) as u32);
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    if ufd == -1 {
        let sfd = crate::heap::try_box(SignalFd::new(mask))?;
        return install(
            OpenFile::new(sfd as Box<_>, O_RDWR | (flags & O_NONBLOCK)),
            flags & O_CLOEXEC != 0,
        );
    }
    let file = with_current(|p| p.fds.get(i64::from(ufd)))?;
    file.downcast::<SignalFd>()
        .ok_or(Errno::EINVAL)?
        .set_mask(mask);
    Ok(ufd as u64)
}

/// signalfd(int ufd, const sigset_t *mask, size_t sizemask): signalfd4 without flags.
pub fn signalfd(a: Args) -> SysResult {
    let mut regs = [0u64; 6];
    regs[..3].copy_from_slice(&[a.get(0), a.get(1), a.get(2)]);
    signalfd4(Args(regs))
}
