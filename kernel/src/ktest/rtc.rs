//! The wall clock: the civil-date conversion and a plausible time from the CMOS RTC.
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use crate::rtc;

pub fn rtc_wall_clock_is_plausible() -> TestResult {
    for (date, want) in [
        ((1970, 1, 1), 0),
        ((2000, 3, 1), 11_017),
        ((2024, 2, 29), 19_782),
        ((2026, 11, 21), 20_778),
    ] {
        let got = rtc::days_since_epoch(date.0, date.1, date.2);
        ensure!(got == want, "{date:?}: {got} days, want {want}");
    }
    let secs = rtc::realtime_micros() / 1_000_000;
    // 2020-01-01 .. 2100-01-01
    ensure!(
        (1_577_836_800..4_102_444_800).contains(&secs),
        "RTC time {secs} is not between 2020 and 2100"
    );
    Ok(())
}
