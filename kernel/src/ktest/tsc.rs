//! The TSC's calibration: a vCPU descheduled at any step of it does not skew the rate, and the
//! rate found at boot agrees with a second clock.
#![deny(unsafe_code)]

use alloc::format;

use super::{ensure, TestFailure, TestResult};
use crate::calibrate::{End, Point, TRIES};
use crate::time::{self, PitCounter, PIT_HZ};

/// How far two calibrations may differ (ppm): each is bounded by `calibrate::PRECISE_PPM`.
const AGREE_PPM: u64 = 2_000;
/// A simulated deschedule: longer than a calibration window, as under a loaded host.
const STALL_MS: u64 = 30;

fn agree(a: u64, b: u64) -> bool {
    u128::from(a.abs_diff(b)) * 1_000_000 <= u128::from(b) * u128::from(AGREE_PPM)
}

/// Spins for [`STALL_MS`] of TSC time: all a guest sees of its vCPU thread losing the host CPU
/// is the clocks jumping forward between two instructions.
fn stall() {
    let start = time::rdtsc();
    let cycles = time::tsc_khz() * STALL_MS;
    while time::rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// Calibrates against the PM timer with a deschedule simulated wherever `at` says (it sees each
/// point and how many end-bracket points came before it) and checks the rate against the boot's.
/// The PIT-countdown calibration this replaced read `(window + stall) / window` times the rate
/// for a stall after the deadline (2.2x here) and less for one before the countdown started.
fn calibrate_with_stalls(name: &str, at: &dyn Fn(Point, u32) -> bool) -> TestResult {
    let boot = time::tsc_khz() * 1000;
    let Some(mut pm) = time::pm_timer() else {
        return Err(TestFailure(format!(
            "{name}: the boot found no ACPI PM timer"
        )));
    };
    let mut end_brackets = 0;
    let mut stalls = 0;
    let mut hook = |point: Point| {
        if at(point, end_brackets) {
            stalls += 1;
            stall();
        }
        if matches!(point, Point::Bracket(End::End, _)) {
            end_brackets += 1;
        }
    };
    let result = time::calibrate_against(&mut pm, crate::pmtimer::HZ, &mut hook);
    let Ok(hz) = result else {
        return Err(TestFailure(format!(
            "{name}: no two windows agreed (last {result:?} Hz)"
        )));
    };
    ensure!(
        agree(hz, boot),
        "{name}: {hz} Hz with {stalls} stall(s) of {STALL_MS} ms, {boot} Hz at boot"
    );
    Ok(())
}

/// Deschedules simulated inside a bracket, in the wait, and in every bracket of one end leave
/// the calibrated rate within 0.2% of the boot's (as does an undisturbed run).
pub fn tsc_calibration_survives_a_descheduled_vcpu() -> TestResult {
    calibrate_with_stalls("no stall", &|_, _| false)?;
    calibrate_with_stalls("stall before the start read", &|p, _| {
        p == Point::Bracket(End::Start, 0)
    })?;
    calibrate_with_stalls("stall before the end read", &|p, seen| {
        p == Point::Bracket(End::End, 0) && seen == 0
    })?;
    calibrate_with_stalls("stall in the wait", &|p, _| p == Point::Wait(3))?;
    calibrate_with_stalls("stall in every end read of a window", &|p, seen| {
        matches!(p, Point::Bracket(End::End, _)) && seen < TRIES
    })
}

/// The boot's rate (from the ACPI PM timer) agrees within 0.2% with one measured against a
/// different emulated device, PIT channel 2's counter.
pub fn tsc_rate_agrees_with_the_pit() -> TestResult {
    let boot = time::tsc_khz() * 1000;
    let result = time::calibrate_against(
        &mut PitCounter::start(),
        PIT_HZ,
        &mut crate::calibrate::no_stall,
    );
    let Ok(hz) = result else {
        return Err(TestFailure(format!(
            "no two PIT windows agreed (last {result:?} Hz)"
        )));
    };
    ensure!(
        agree(hz, boot),
        "the PIT says the TSC runs at {hz} Hz, the boot calibrated {boot} Hz"
    );
    Ok(())
}
