//! Waiting for readiness on several files: the core of poll/ppoll/select/pselect6 (Linux
//! `do_poll`). Each file answers [`super::file::FileOps::poll`] with its ready events; the
//! waiter checks them all, and if none is ready sleeps until one of the files wakes a channel
//! it names in [`super::file::FileOps::poll_channels`] (linked to the waiter for the wait,
//! `proc::waitlink`, as Linux's `poll_wait` queues a poll-table entry), or its deadline, then
//! checks again. A file without channels makes the waiter look again on each timer tick (at
//! most 10 ms late).
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::file::OpenFile;
use crate::errno::Errno;
use crate::proc::waitlink::{self, WakeTarget};
use crate::{proc, time};

pub const POLLIN: u32 = 0x1;
pub const POLLPRI: u32 = 0x2;
pub const POLLOUT: u32 = 0x4;
pub const POLLERR: u32 = 0x8;
pub const POLLHUP: u32 = 0x10;
pub const POLLNVAL: u32 = 0x20;
pub const POLLRDNORM: u32 = 0x40;
pub const POLLWRNORM: u32 = 0x100;
/// What a file without a poll method reports (Linux `DEFAULT_POLLMASK`).
pub const DEFAULT_POLLMASK: u32 = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

/// One watched descriptor: its file (`None`: not open, which reports `POLLNVAL`), the events
/// asked for, and what was found.
pub struct PollEntry {
    pub file: Option<Arc<OpenFile>>,
    pub events: u32,
    pub revents: u32,
}

/// Checks every entry once; the number with events. `POLLERR`/`POLLHUP`/`POLLNVAL` are
/// reported whether asked for or not (Linux `mangle_poll`/`vfs_poll`).
pub fn scan(entries: &mut [PollEntry]) -> usize {
    let mut ready = 0;
    for e in entries.iter_mut() {
        e.revents = match &e.file {
            None => POLLNVAL,
            Some(f) => f.ops.poll(f) & (e.events | POLLERR | POLLHUP),
        };
        if e.revents != 0 {
            ready += 1;
        }
    }
    ready
}

/// One poll call's wake-up point: linked to every watched file's channels for the wait; its
/// address is the channel the caller sleeps on.
struct Waiter {
    /// Not zero-sized, so every waiter has its own address.
    _unique: u8,
}

impl WakeTarget for Waiter {
    fn fire(&self) {
        proc::wakeup(self as *const Waiter as usize);
    }
}

/// The links of one wait, removed when it ends however it ends.
struct Links {
    waiter: Arc<dyn WakeTarget>,
    channels: Vec<usize>,
    /// Some file has no channel (or one could not be linked): look again each tick.
    ticking: bool,
}

impl Links {
    fn new(entries: &[PollEntry], waiter: Arc<dyn WakeTarget>) -> Links {
        let mut links = Links {
            waiter,
            channels: Vec::new(),
            ticking: false,
        };
        for f in entries.iter().filter_map(|e| e.file.as_ref()) {
            let Some(chans) = f.ops.poll_channels(f) else {
                links.ticking = true;
                continue;
            };
            for c in chans {
                if links.channels.contains(&c) {
                    continue;
                }
                if links.channels.try_reserve(1).is_err()
                    || waitlink::link(c, &links.waiter).is_err()
                {
                    links.ticking = true;
                    continue;
                }
                links.channels.push(c);
            }
        }
        links
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        for &c in &self.channels {
            waitlink::unlink(c, &self.waiter);
        }
    }
}

/// Waits until some entry is ready or `deadline` (microseconds since boot; `None`: forever,
/// `Some(0)`: do not wait) passes; the number ready (0 at the deadline). A signal ends the wait
/// with `ERESTARTNOHAND` (poll and select are never restarted after a handler, even under
/// `SA_RESTART`).
#[doc(alias = "do_poll")]
pub fn wait(entries: &mut [PollEntry], deadline: Option<u64>) -> Result<usize, Errno> {
    let ready = scan(entries);
    if ready > 0 || deadline == Some(0) {
        return Ok(ready);
    }
    let waiter = Arc::new(Waiter { _unique: 0 });
    let channel = Arc::as_ptr(&waiter) as usize;
    let links = Links::new(entries, waiter);
    loop {
        // System calls run with interrupts off on one CPU: no wake-up slips in between the
        // scan and the sleep (the rule every `proc::sleep` user relies on).
        let ready = scan(entries);
        if ready > 0 {
            return Ok(ready);
        }
        let now = time::micros_since_boot();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(0);
        }
        let until = match deadline {
            _ if links.ticking => Some(time::ticks() + 1),
            Some(d) => Some(time::ticks() + (d - now).div_ceil(1_000_000 / time::TICK_HZ)),
            None => None,
        };
        let slept = match until {
            Some(t) => proc::sleep_interruptible_until(channel, t),
            None => proc::sleep_interruptible(channel),
        };
        match slept {
            Ok(()) => {}
            Err(Errno::ERESTARTSYS) => return Err(Errno::ERESTARTNOHAND),
            Err(e) => return Err(e),
        }
    }
}
