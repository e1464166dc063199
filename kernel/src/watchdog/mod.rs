//! Watchdogs: a hang is never silent.
//!
//! - The soft-lockup detector ([`soft`]) reports a CPU that has not scheduled for
//!   `softlockup=` seconds (default [`SOFTLOCKUP_SECS`]): the running task and a kernel
//!   backtrace of where it is stuck. cowlab runs its kernel with interrupts disabled (the timer
//!   only reaches ring 3 and the idle loop's `hlt`), so a kernel loop can only be seen from an
//!   NMI: [`nmi`] turns the RTC's 2 Hz periodic interrupt into one through the I/O APIC.
//! - The hung-task detector ([`hung`]) reports a task that has slept uninterruptibly (waiting
//!   for the kernel, not for a user event: a disk request, a free descriptor of the device) for
//!   `hung_task=` seconds (default [`HUNG_TASK_SECS`]), with its wait channel. It runs from the
//!   timer tick, once a second.
//!
//! Each report is one console line starting `cowlab: watchdog: ` (the soft-lockup one is
//! followed by `bt` lines that xtask symbolizes). Reports never stop the kernel: the stall may
//! end (a held disk released), and a report is made once per stall.

pub mod hung;
pub mod nmi;
pub mod soft;

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cmdline::Cmdline;

/// Linux's default `watchdog_thresh` is 10 s and a soft lockup is twice that.
pub const SOFTLOCKUP_SECS: u64 = 20;
/// Linux's default `hung_task_timeout_secs` is 120 s; cowlab's tests run for minutes, so less.
pub const HUNG_TASK_SECS: u64 = 30;

static SOFTLOCKUP: AtomicU64 = AtomicU64::new(SOFTLOCKUP_SECS);
static HUNG_TASK: AtomicU64 = AtomicU64::new(HUNG_TASK_SECS);

/// Takes the thresholds from the command line and starts the NMI source. Call once the timer
/// is calibrated and the memory map is up (the I/O APIC is reached through it).
pub fn init(cmdline: &Cmdline) {
    if let Some(secs) = cmdline.softlockup_secs {
        SOFTLOCKUP.store(secs, Ordering::Relaxed);
    }
    if let Some(secs) = cmdline.hung_task_secs {
        HUNG_TASK.store(secs, Ordering::Relaxed);
    }
    soft::touch();
    match nmi::start() {
        Ok(()) => info!(
            "watchdog: NMI at 2 Hz from the RTC through I/O APIC pin {}; soft lockup after {} \
             s, hung task after {} s",
            nmi::PIN,
            softlockup_secs(),
            hung_task_secs()
        ),
        Err(why) => warn!(
            "watchdog: no NMI source ({why}): a kernel loop with interrupts off will not be \
             reported; hung tasks still are (after {} s)",
            hung_task_secs()
        ),
    }
}

/// Seconds without a schedule before a soft-lockup report (0: off).
pub fn softlockup_secs() -> u64 {
    SOFTLOCKUP.load(Ordering::Relaxed)
}

/// Seconds of uninterruptible sleep before a hung-task report (0: off).
pub fn hung_task_secs() -> u64 {
    HUNG_TASK.load(Ordering::Relaxed)
}

/// Sets both thresholds (for the in-kernel tests); returns the old ones.
pub fn set_thresholds(softlockup: u64, hung_task: u64) -> (u64, u64) {
    (
        SOFTLOCKUP.swap(softlockup, Ordering::Relaxed),
        HUNG_TASK.swap(hung_task, Ordering::Relaxed),
    )
}

/// A task's name copied for a report without allocating (the reporter may be an NMI that
/// interrupted the heap's lock holder).
pub struct TaskName {
    bytes: [u8; 32],
    len: usize,
}

impl core::fmt::Display for TaskName {
    fn fmt(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
        f.write_str(core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?"))
    }
}

/// The name of task `tid`, or `?` if the table is busy (its holder may be what we interrupted)
/// or has no such task.
fn task_name(tid: u32) -> TaskName {
    let mut name = TaskName {
        bytes: [0; 32],
        len: 1,
    };
    name.bytes[0] = b'?';
    if let Some(table) = crate::proc::TABLE.try_lock() {
        if let Some(task) = table.get(&tid) {
            // Cut at a character boundary so the copy stays UTF-8.
            let mut len = task.name.len().min(name.bytes.len());
            while !task.name.is_char_boundary(len) {
                len -= 1;
            }
            name.bytes[..len].copy_from_slice(&task.name.as_bytes()[..len]);
            name.len = len;
        }
    }
    name
}
