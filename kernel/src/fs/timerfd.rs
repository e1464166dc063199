//! timerfd (Linux `fs/timerfd.c`): a timer as a file. `read` returns the number of expirations
//! since the last read (8 bytes), blocking while there are none; the file is readable while
//! some are counted. Deadlines are kept in microseconds of the monotonic clock; a
//! `CLOCK_REALTIME` absolute time is converted when it is set (cowlab's wall clock is never
//! set, so `TFD_TIMER_CANCEL_ON_SET` never fires).
//!
//! The timer tick ([`on_tick`], Linux's hrtimer callback `timerfd_tmrproc`) counts the
//! expirations of every armed timer and wakes its readers' channel, which epoll links to, once
//! per read (see `State::expired`); reads, polls and `timerfd_gettime` count them too, so their
//! answers do not wait for a tick.
#![deny(unsafe_code)]

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::any::Any;

use spin::Mutex;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::poll::{POLLIN, POLLRDNORM};
use super::stat::{statfs_of, Stat, StatFs, ANON_INODE_FS_MAGIC};
use crate::errno::Errno;
use crate::{proc, time};

pub const CLOCK_REALTIME: i32 = 0;
pub const CLOCK_MONOTONIC: i32 = 1;
pub const CLOCK_BOOTTIME: i32 = 7;
pub const TFD_TIMER_ABSTIME: u32 = 1;
pub const TFD_TIMER_CANCEL_ON_SET: u32 = 2;

#[derive(Default)]
struct State {
    /// The next expiry (monotonic microseconds); `None`: disarmed.
    next: Option<u64>,
    /// Period in microseconds (0: one shot).
    interval: u64,
    /// Expirations not read yet.
    ticks: u64,
    /// The tick announced an expiry that no read has taken yet: Linux's hrtimer is not
    /// restarted until a read (`timerfd_tmrproc` returns `HRTIMER_NORESTART`), so a periodic
    /// timer nobody reads wakes its waiters once, not every period.
    expired: bool,
}

impl State {
    /// Counts the expirations up to `now` (Linux `hrtimer_forward_now` in `timerfd_tmrproc`);
    /// whether there were new ones.
    fn forward(&mut self, now: u64) -> bool {
        let Some(next) = self.next else {
            return false;
        };
        if now < next {
            return false;
        }
        match (now - next).checked_div(self.interval) {
            None => {
                self.ticks = self.ticks.saturating_add(1);
                self.next = None;
            }
            Some(more) => {
                self.ticks = self.ticks.saturating_add(more + 1);
                self.next = Some(next.saturating_add((more + 1).saturating_mul(self.interval)));
            }
        }
        true
    }
}

struct Timer {
    clock: i32,
    state: Mutex<State>,
}

impl Timer {
    fn channel(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }
}

/// Every timerfd, for the tick. Weak: a closed one is pruned at the next creation.
static TIMERS: Mutex<Vec<Weak<Timer>>> = Mutex::new(Vec::new());

/// The tick's work (timer interrupt): count expirations, wake the readers of timers that
/// expired. Skips a tick when the list or a timer is locked by the interrupted code.
pub fn on_tick() {
    let Some(timers) = TIMERS.try_lock() else {
        return;
    };
    let now = time::micros_since_boot();
    for t in timers.iter().filter_map(Weak::upgrade) {
        let fired = t.state.try_lock().is_some_and(|mut s| {
            // Expirations a poll counted before this tick are announced too.
            let fire = !s.expired && (s.forward(now) || s.ticks > 0);
            s.expired |= fire;
            fire
        });
        if fired {
            proc::wakeup(t.channel());
        }
    }
}

pub struct TimerFd {
    timer: Arc<Timer>,
}

/// An `itimerspec` in microseconds: (interval, value).
pub type Spec = (u64, u64);

impl TimerFd {
    /// A disarmed timer on `clock` (checked by the caller).
    pub fn new(clock: i32) -> Result<TimerFd, Errno> {
        let timer = Arc::new(Timer {
            clock,
            state: Mutex::new(State::default()),
        });
        let mut timers = TIMERS.lock();
        timers.retain(|w| w.strong_count() > 0);
        crate::heap::try_reserve(&mut timers, 1)?;
        timers.push(Arc::downgrade(&timer));
        Ok(TimerFd { timer })
    }

    /// What is left and the period (Linux `timerfd_gettime`).
    pub fn get(&self) -> Spec {
        let now = time::micros_since_boot();
        let mut s = self.timer.state.lock();
        s.forward(now);
        (s.interval, s.next.map_or(0, |n| n - now))
    }

    /// Arms (a zero `value` disarms) the timer; the old setting (Linux `timerfd_settime`).
    /// `value` is relative, or with `TFD_TIMER_ABSTIME` a time of the timer's clock.
    pub fn set(&self, flags: u32, interval: u64, value: u64) -> Spec {
        let old = self.get();
        let now = time::micros_since_boot();
        let next = if value == 0 {
            None
        } else if flags & TFD_TIMER_ABSTIME != 0 {
            let clock_now = if self.timer.clock == CLOCK_REALTIME {
                crate::rtc::realtime_micros()
            } else {
                now
            };
            // A time already past expires at once (next tick or read).
            Some(now.saturating_add(value.saturating_sub(clock_now)))
        } else {
            Some(now.saturating_add(value))
        };
        {
            let mut s = self.timer.state.lock();
            *s = State {
                next,
                interval,
                ticks: 0,
                expired: false,
            };
            s.forward(now);
        }
        // Readers sleeping on an old setting look again.
        proc::wakeup(self.timer.channel());
        old
    }
}

impl FileOps for TimerFd {
    /// Linux `timerfd_read`: 8 bytes at least; the expirations counted, then 0 again.
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        if to.count() < 8 {
            return Err(Errno::EINVAL);
        }
        let ticks = loop {
            let wait_until = {
                let mut s = self.timer.state.lock();
                s.forward(time::micros_since_boot());
                if s.ticks > 0 {
                    s.expired = false;
                    break core::mem::take(&mut s.ticks);
                }
                s.next
            };
            if io.nonblock() {
                return Err(Errno::EAGAIN);
            }
            // The tick wakes the channel at expiry; the deadline bounds the sleep anyway.
            match wait_until {
                Some(d) => {
                    let left = d.saturating_sub(time::micros_since_boot());
                    let ticks = left.div_ceil(1_000_000 / time::TICK_HZ).max(1);
                    proc::sleep_interruptible_until(self.timer.channel(), time::ticks() + ticks)?
                }
                None => proc::sleep_interruptible(self.timer.channel())?,
            }
        };
        if to.copy_to(&ticks.to_ne_bytes()) < 8 {
            return Err(Errno::EFAULT);
        }
        Ok(8)
    }

    /// No write method on Linux: `EINVAL`.
    fn write_iter(&self, _io: &mut Kiocb, _from: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn poll(&self, _file: &OpenFile) -> u32 {
        let mut s = self.timer.state.lock();
        s.forward(time::micros_since_boot());
        if s.ticks > 0 {
            POLLIN | POLLRDNORM
        } else {
            0
        }
    }

    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        Some([self.timer.channel(); 2])
    }

    fn stat(&self) -> Stat {
        super::epoll::anon_stat(&self.timer)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(ANON_INODE_FS_MAGIC, 0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
