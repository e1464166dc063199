//! Measuring a clock's rate against the TSC when the vCPU can lose the host CPU between any two
//! of its instructions.
//!
//! Under TCG the guest's TSC is the host's TSC, and every emulated timer (the PIT, the ACPI PM
//! timer, the HPET, the local APIC timer) computes its value from the host's monotonic clock
//! when it is read: all of them run in real time, also while the vCPU thread is descheduled. A
//! calibration that waits for a timer *event* (the PIT's OUT pin going high after a countdown)
//! measures the deadline plus however long the vCPU took to notice it, and on a loaded host that
//! is a whole scheduling slice: tens of milliseconds against a 20 ms window (rates of 2.6 to 9.8
//! GHz on a 2.6 GHz host). What can be trusted is a *read* of a free-running counter with a TSC
//! read on each side: the counter's value was taken somewhere between the two TSC values, so a
//! narrow bracket ties the two clocks together, and a bracket a deschedule fell into is wide and
//! is thrown away (Linux's `tsc_read_refs` retries on its SMI threshold for the same reason).
//! A deschedule between two brackets costs nothing: both clocks keep counting through it.
#![deny(unsafe_code)]

use crate::time::rdtsc;

/// A free-running, up-counting reference clock.
pub trait Counter {
    /// The counter's current value; only the bits of [`Counter::mask`] are meaningful.
    fn read(&mut self) -> u64;
    /// The counter's width: it wraps from `mask` to 0.
    fn mask(&self) -> u64;
}

/// Which end of a measurement a bracket belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Start,
    End,
}

/// Where a measurement is when it calls its `stall` hook: the in-kernel test simulates a
/// deschedule there by spinning; the boot passes a hook that does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Inside bracket number `try_` (between the first TSC read and the counter read).
    Bracket(End, u32),
    /// Between two counter reads of the wait (`poll` counts them).
    Wait(u32),
}

/// Counter reads per end; the narrowest bracket wins. A deschedule takes one or two of them.
pub const TRIES: u32 = 8;
/// Longest wait (TSC cycles: seconds at any plausible rate) for a counter that does not move.
const WAIT_LIMIT: u64 = 1 << 34;
/// Pause iterations between two counter reads of the wait: fewer device exits, which matters
/// under `-icount` where every wait instruction is virtual time.
const SPIN: u32 = 64;

/// One counter value and where it sits on the TSC.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// The TSC midway between the reads around the counter's.
    tsc: u64,
    /// The TSC between those two reads: the counter was read within `width / 2` of `tsc`.
    width: u64,
    count: u64,
}

/// Reads `counter` [`TRIES`] times between two TSC reads and keeps the narrowest bracket.
fn sample(counter: &mut dyn Counter, end: End, stall: &mut dyn FnMut(Point)) -> Sample {
    let mut best: Option<Sample> = None;
    for try_ in 0..TRIES {
        let before = rdtsc();
        stall(Point::Bracket(end, try_));
        let count = counter.read();
        let width = rdtsc().wrapping_sub(before);
        if best.is_none_or(|b| width < b.width) {
            best = Some(Sample {
                tsc: before.wrapping_add(width / 2),
                width,
                count,
            });
        }
    }
    best.expect("TRIES > 0")
}

/// How long a measurement waits between its two ends.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// Until the counter advanced this much (the TSC's rate unknown).
    Counts(u64),
    /// Until the TSC advanced this much (the counter's rate unknown).
    Cycles(u64),
}

/// Both clocks' progress over one window.
#[derive(Clone, Copy, Debug)]
pub struct Measurement {
    /// TSC cycles between the two ends.
    pub cycles: u64,
    /// Counter ticks between the two ends (wraps accumulated during the wait).
    pub counts: u64,
    /// How far (TSC cycles) each end's counter read may sit from its TSC value, summed.
    pub uncertainty: u64,
}

impl Measurement {
    /// Whether both ends are tied to the TSC within `ppm` parts per million of the window (and
    /// the counter's own resolution is that fine).
    pub fn precise(&self, ppm: u64) -> bool {
        self.counts > 0
            && u128::from(self.uncertainty) * 1_000_000 <= u128::from(self.cycles) * u128::from(ppm)
            && u128::from(self.counts) * u128::from(ppm) >= 1_000_000
    }

    /// The TSC's rate (Hz) when the counter runs at `counter_hz`.
    pub fn tsc_hz(&self, counter_hz: u64) -> u64 {
        (u128::from(self.cycles) * u128::from(counter_hz) / u128::from(self.counts.max(1))) as u64
    }

    /// The counter's rate (Hz) when the TSC runs at `tsc_hz`.
    pub fn counter_hz(&self, tsc_hz: u64) -> u64 {
        (u128::from(self.counts) * u128::from(tsc_hz) / u128::from(self.cycles.max(1))) as u64
    }
}

/// Measures `counter` against the TSC over `window`. A wrap of the counter is counted as long as
/// no single gap between two reads of the wait lasts a whole counter period.
pub fn measure(
    counter: &mut dyn Counter,
    window: Window,
    stall: &mut dyn FnMut(Point),
) -> Measurement {
    let mask = counter.mask();
    let start = sample(counter, End::Start, stall);
    let mut last = start.count;
    let mut counts = 0u64;
    let mut poll = 0;
    loop {
        for _ in 0..SPIN {
            core::hint::spin_loop();
        }
        stall(Point::Wait(poll));
        poll = poll.wrapping_add(1);
        let now = counter.read();
        counts += now.wrapping_sub(last) & mask;
        last = now;
        let waited = rdtsc().wrapping_sub(start.tsc);
        let done = match window {
            Window::Counts(n) => counts >= n || waited >= WAIT_LIMIT,
            Window::Cycles(n) => waited >= n,
        };
        if done {
            break;
        }
    }
    let end = sample(counter, End::End, stall);
    counts += end.count.wrapping_sub(last) & mask;
    Measurement {
        cycles: end.tsc.wrapping_sub(start.tsc),
        counts,
        uncertainty: start.width / 2 + end.width / 2,
    }
}

/// Bound on a usable measurement's error from its brackets, in parts per million.
pub const PRECISE_PPM: u64 = 500;
/// Measurement pairs tried before giving up on agreement.
const ATTEMPTS: u32 = 6;

/// The TSC's rate (Hz) from `counter` ticking at `counter_hz`: two windows of `window_counts`
/// ticks, each tied to the TSC within [`PRECISE_PPM`], that agree with each other within twice
/// that (a counter wrap lost inside one window, a deschedule longer than its period, shows up as
/// disagreement). `Err` carries the last estimate when no attempt passed.
pub fn tsc_hz(
    counter: &mut dyn Counter,
    counter_hz: u64,
    window_counts: u64,
    stall: &mut dyn FnMut(Point),
) -> Result<u64, u64> {
    let mut estimate = 0;
    for _ in 0..ATTEMPTS {
        let a = measure(counter, Window::Counts(window_counts), stall);
        if a.counts == 0 {
            // Not a counter (a missing device reads as all ones).
            return Err(0);
        }
        let b = measure(counter, Window::Counts(window_counts), stall);
        let (ha, hb) = (a.tsc_hz(counter_hz), b.tsc_hz(counter_hz));
        let both = Measurement {
            cycles: a.cycles + b.cycles,
            counts: a.counts + b.counts,
            uncertainty: a.uncertainty + b.uncertainty,
        };
        estimate = both.tsc_hz(counter_hz);
        let apart = u128::from(ha.abs_diff(hb)) * 1_000_000;
        if a.precise(PRECISE_PPM)
            && b.precise(PRECISE_PPM)
            && apart <= u128::from(estimate) * u128::from(2 * PRECISE_PPM)
        {
            return Ok(estimate);
        }
    }
    Err(estimate)
}

/// A `stall` hook that does nothing (every calibration outside the test).
pub fn no_stall(_: Point) {}
