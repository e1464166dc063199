//! Waiting for readiness on several files: the core of poll/ppoll/select/pselect6 (Linux
//! `do_poll`). Each file answers [`super::file::FileOps::poll`] with its ready events; the
//! waiter checks them all, and if none is ready sleeps until the next timer tick (or its
//! deadline) and checks again. There is no per-file wait queue: a waiter sees new data at
//! most one tick (10 ms) late, and a wake-up costs nothing to the files' fast paths.
#![deny(unsafe_code)]

use alloc::sync::Arc;

use super::file::OpenFile;
use crate::errno::Errno;
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

/// The wait channel of pollers: nobody wakes it, the tick (or the deadline) does.
const POLL_CHANNEL: usize = 0x7_1000_0000;

/// Waits until some entry is ready or `deadline` (microseconds since boot; `None`: forever,
/// `Some(0)`: do not wait) passes; the number ready (0 at the deadline). A signal ends the wait
/// with `ERESTARTNOHAND` (poll and select are never restarted after a handler, even under
/// `SA_RESTART`).
#[doc(alias = "do_poll")]
pub fn wait(entries: &mut [PollEntry], deadline: Option<u64>) -> Result<usize, Errno> {
    loop {
        let ready = scan(entries);
        if ready > 0 {
            return Ok(ready);
        }
        let now = time::micros_since_boot();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(0);
        }
        match proc::sleep_interruptible_until(POLL_CHANNEL, time::ticks() + 1) {
            Ok(()) => {}
            Err(Errno::ERESTARTSYS) => return Err(Errno::ERESTARTNOHAND),
            Err(e) => return Err(e),
        }
    }
}
