//! The soft-lockup detector: a CPU that has not scheduled for `softlockup=` seconds.
//!
//! The scheduler [`touch`]es a timestamp each time it goes round (every switch and every wake
//! of the idle loop's `hlt`, which a tick ends at least every 10 ms), so while tasks run or the
//! CPU idles it stays fresh. A kernel path that loops with interrupts disabled stops touching
//! it, and nothing but an NMI can then run: [`on_nmi`] (twice a second, see `nmi`) compares the
//! timestamp with the TSC and, past the threshold, prints one line and the backtrace of the
//! interrupted context (Linux `watchdog_timer_fn`, which runs from an hrtimer; its NMI side,
//! the hard-lockup detector, is what this amounts to on a kernel that runs with interrupts
//! off). The detector is armed once the scheduler runs: boot and the in-kernel tests do long
//! work on purpose without scheduling (one test arms it on purpose, [`arm`]).
//!
//! NMI context rules: no lock is waited for and nothing is allocated. If the console is busy
//! (the interrupted code was printing), the report waits for the next NMI, twice, and then
//! takes the console. A page fault taken while reading the interrupted stack (the backtrace
//! reads it through exception-table fixups) ends with `iretq`, which unblocks NMIs early; with
//! two NMIs a second and reports that take milliseconds, a nested NMI is unlikely, and the
//! source is masked while a report prints to make it more so.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::idt::TrapFrame;
use crate::{backtrace, proc, serial, time};

static TOUCHED: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
/// The `TOUCHED` value of the stall last reported (one report per stall).
static REPORTED: AtomicU64 = AtomicU64::new(u64::MAX);
static DEFERRED: AtomicU32 = AtomicU32::new(0);
static NMIS: AtomicU64 = AtomicU64::new(0);
static REPORTS: AtomicU64 = AtomicU64::new(0);

/// Records that this CPU scheduled (or idled) now.
#[inline]
pub fn touch() {
    TOUCHED.store(time::rdtsc(), Ordering::Relaxed);
}

/// Arms (or disarms) the detector; touches first so the time before does not count.
pub fn arm(on: bool) {
    touch();
    ARMED.store(on, Ordering::SeqCst);
}

/// NMIs seen since boot.
pub fn nmis() -> u64 {
    NMIS.load(Ordering::Relaxed)
}

/// Soft lockups reported since boot.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Relaxed)
}

/// The NMI's work: report a stall past the threshold. Runs on the NMI stack; see the module
/// comment for what it must not do.
pub fn on_nmi(frame: &TrapFrame) {
    NMIS.fetch_add(1, Ordering::Relaxed);
    super::nmi::rearm();
    let secs = super::softlockup_secs();
    if !ARMED.load(Ordering::Relaxed) || secs == 0 {
        return;
    }
    let touched = TOUCHED.load(Ordering::Relaxed);
    let stuck = time::cycles_to_micros(time::rdtsc().wrapping_sub(touched)) / 1_000_000;
    if stuck < secs || REPORTED.load(Ordering::Relaxed) == touched {
        return;
    }
    if serial::is_busy() && DEFERRED.fetch_add(1, Ordering::Relaxed) < 2 {
        return;
    }
    DEFERRED.store(0, Ordering::Relaxed);
    REPORTED.store(touched, Ordering::Relaxed);
    super::nmi::mask(true);
    serial::break_lock_for_crash();
    let tid = proc::current_tid();
    let name = super::task_name(tid);
    let mode = if frame.cs & 3 == 3 { "user" } else { "kernel" };
    println!(
        "cowlab: watchdog: soft lockup: CPU#0 stuck for {stuck}s without scheduling, in {mode} \
         mode at rip={:#x}, task tid {tid} ({name})",
        frame.rip
    );
    if mode == "kernel" {
        backtrace::print_from(frame.rip, frame.rbp);
    }
    REPORTS.fetch_add(1, Ordering::Relaxed);
    super::nmi::mask(false);
}
