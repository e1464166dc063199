//! Tests of the timer interrupt.
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use crate::time;

/// With interrupts on, the PIT tick counter advances (waiting with `hlt`, bounded by the TSC).
pub fn timer_ticks_advance() -> TestResult {
    ensure!(
        x86_64::instructions::interrupts::are_enabled(),
        "interrupts are disabled while tests run"
    );
    let start_ticks = time::ticks();
    let start = time::rdtsc();
    // Two seconds of TSC cycles for what should take 30 ms.
    let limit = time::tsc_khz() * 2_000;
    while time::ticks() < start_ticks + 3 {
        ensure!(
            time::rdtsc() - start < limit,
            "timer ticks went from {start_ticks} to {} in two seconds",
            time::ticks()
        );
        x86_64::instructions::hlt();
    }
    let micros = time::cycles_to_micros(time::rdtsc() - start);
    // 3 ticks at 100 Hz is 20-30 ms; allow for a sloppy emulated clock but not a wrong rate.
    ensure!(
        (10_000..=500_000).contains(&micros),
        "3 ticks took {micros} us by the TSC: the PIT rate or the TSC calibration is off"
    );
    Ok(())
}
