//! Tests of the watchdogs: each detector, with its threshold lowered, reports what it exists
//! to report (and the hung-task one stays quiet about a sleep that ends in time).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use super::{ensure, TestResult};
use crate::time;
use crate::watchdog::{self, hung, soft};

/// Waits (halting between ticks) until `done` or `ticks` ticks have passed; whether `done`.
fn wait_ticks(ticks: u64, done: impl Fn() -> bool) -> bool {
    let until = time::ticks() + ticks;
    while time::ticks() < until {
        if done() {
            return true;
        }
        x86_64::instructions::hlt();
    }
    done()
}

/// The RTC raises an NMI twice a second.
pub fn watchdog_nmi_arrives_twice_a_second() -> TestResult {
    let before = soft::nmis();
    let arrived = wait_ticks(3 * time::TICK_HZ, || soft::nmis() >= before + 4);
    ensure!(
        arrived,
        "{} NMIs in 3 s (the RTC/I/O APIC source is not running)",
        soft::nmis() - before
    );
    Ok(())
}

/// A kernel loop with interrupts disabled, with the threshold at 1 s: the NMI reports it (one
/// console line and a backtrace) while the loop still runs, and only once.
pub fn softlockup_reports_a_kernel_loop() -> TestResult {
    let old = watchdog::set_thresholds(1, watchdog::hung_task_secs());
    let before = soft::reports();
    let limit = time::rdtsc() + 6 * time::tsc_khz() * 1000;
    soft::arm(true);
    x86_64::instructions::interrupts::disable();
    // Keep looping past the first report: the same stall must not be reported again.
    let mut reported_at = None;
    while time::rdtsc() < limit {
        if reported_at.is_none() && soft::reports() > before {
            reported_at = Some(time::rdtsc());
        }
        if reported_at.is_some_and(|at| time::rdtsc() - at > 2 * time::tsc_khz() * 1000) {
            break;
        }
        core::hint::spin_loop();
    }
    x86_64::instructions::interrupts::enable();
    soft::arm(false);
    watchdog::set_thresholds(old.0, old.1);
    ensure!(
        reported_at.is_some(),
        "no soft-lockup report after 6 s stuck with interrupts off ({} NMIs so far)",
        soft::nmis()
    );
    ensure!(
        soft::reports() == before + 1,
        "the stall was reported {} times",
        soft::reports() - before
    );
    Ok(())
}

/// With the threshold at 1 s, an uninterruptible sleep of half a second is not reported and
/// one that lasts is, once, naming the task.
pub fn hung_task_reports_a_long_uninterruptible_sleep() -> TestResult {
    const TID: u32 = 0x7ffe;
    let old = watchdog::set_thresholds(watchdog::softlockup_secs(), 1);
    let before = hung::reports();
    hung::enter(TID, 0x1234, "a short in-kernel test sleep");
    wait_ticks(time::TICK_HZ / 2, || false);
    hung::leave(TID);
    let quiet = !wait_ticks(2 * time::TICK_HZ, || hung::reports() > before);
    hung::enter(TID, 0x1234, "an in-kernel test that never wakes");
    let reported = wait_ticks(4 * time::TICK_HZ, || hung::reports() > before);
    let once = !wait_ticks(2 * time::TICK_HZ, || hung::reports() > before + 1);
    hung::leave(TID);
    watchdog::set_thresholds(old.0, old.1);
    ensure!(quiet, "a sleep of half a second was reported as hung");
    ensure!(
        reported,
        "a sleep of 4 s past a 1 s threshold was not reported"
    );
    ensure!(
        hung::last_reported() == TID,
        "reported tid {}",
        hung::last_reported()
    );
    ensure!(once, "the same sleep was reported twice");
    Ok(())
}

static AP_SPINNING: AtomicBool = AtomicBool::new(false);
static AP_STOP: AtomicBool = AtomicBool::new(false);
static AP_DONE: AtomicBool = AtomicBool::new(false);

/// Posted to an application processor: loops with interrupts off (the cross-CPU call runs in
/// its IPI handler) until told to stop, 10 s at most.
fn spin_with_interrupts_off() {
    AP_SPINNING.store(true, Ordering::Release);
    let limit = time::rdtsc() + 10 * time::tsc_khz() * 1000;
    while !AP_STOP.load(Ordering::Acquire) && time::rdtsc() < limit {
        crate::smp::shootdown::service();
        core::hint::spin_loop();
    }
    AP_DONE.store(true, Ordering::Release);
}

/// An application processor loops with interrupts off past the 1 s threshold while the boot
/// CPU keeps touching its own stamp (halting between ticks, as its idle loop does): the boot
/// CPU's NMI sees the AP's stale stamp and sends it an NMI, and the AP reports itself, once,
/// by its number. With one shared stamp the boot CPU's touches hid the stall and nothing was
/// reported. Skipped (passing) without a second CPU running tasks.
pub fn softlockup_reports_a_stuck_application_processor() -> TestResult {
    let active = crate::smp::active_mask();
    let Some(other) = (1..crate::percpu::MAX_CPUS)
        .rev()
        .find(|c| active & 1 << c != 0)
    else {
        info!("soft-lockup AP test: one CPU runs tasks: nothing to test");
        return Ok(());
    };
    super::tick::slot_free(other)?;
    let old = watchdog::set_thresholds(1, watchdog::hung_task_secs());
    let before = soft::reports();
    let ipis_before = soft::nmi_ipis();
    AP_SPINNING.store(false, Ordering::Relaxed);
    AP_STOP.store(false, Ordering::Relaxed);
    AP_DONE.store(false, Ordering::Relaxed);
    soft::arm(true);
    super::tick::post_long(other, spin_with_interrupts_off);
    let limit = time::ticks() + 6 * time::TICK_HZ;
    let mut reported_at = None;
    // Keep going 2 s past the first report: the same stall must not be reported again.
    while time::ticks() < limit
        && reported_at.is_none_or(|at| time::ticks() < at + 2 * time::TICK_HZ)
    {
        soft::touch();
        if reported_at.is_none() && soft::reports() > before {
            reported_at = Some(time::ticks());
        }
        x86_64::instructions::hlt();
    }
    let spun = AP_SPINNING.load(Ordering::Acquire);
    AP_STOP.store(true, Ordering::Release);
    soft::arm(false);
    watchdog::set_thresholds(old.0, old.1);
    let ended = wait_ticks(2 * time::TICK_HZ, || AP_DONE.load(Ordering::Acquire));
    let ipis = soft::nmi_ipis() - ipis_before;
    ensure!(spun, "CPU {other} never ran the posted loop");
    ensure!(ended, "CPU {other}'s loop did not end when told to");
    ensure!(
        reported_at.is_some(),
        "no soft-lockup report while CPU {other} looped 6 s with interrupts off ({ipis} NMIs \
         sent to it)"
    );
    ensure!(
        soft::last_reported_cpu() == other,
        "the report named CPU#{}, not CPU#{other}",
        soft::last_reported_cpu()
    );
    ensure!(
        soft::reports() == before + 1,
        "the stall was reported {} times",
        soft::reports() - before
    );
    ensure!(ipis >= 1, "reported without an NMI sent to CPU {other}");
    Ok(())
}
