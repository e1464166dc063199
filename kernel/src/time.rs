//! Time: the TSC as the clock, the ACPI PM timer (else PIT channel 2's counter) to calibrate it,
//! and PIT channel 0 to drive the 100 Hz tick.
//!
//! The TSC is cheap to read and monotonic on every CPU QEMU emulates, but its rate is unknown.
//! [`calibrate`] ties it to a counter of known rate by reads bracketed by TSC reads
//! (`calibrate`, which explains why waiting for a PIT countdown gave 2.6-9.8 GHz on a loaded
//! 2.6 GHz host). That rate turns TSC deltas into the log's timestamps and every clock.
//! PIT channel 0 then runs as the periodic timer interrupt (IRQ 0 through the remapped 8259, see
//! `pic`); each interrupt only increments a counter, so interrupt-driven code can wait on ticks.
//! Test durations (`KTEST PASS ... <ticks>`) are raw TSC deltas, not converted: under `-icount`
//! they are instruction counts and comparable across runs.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

use crate::calibrate::{self, Counter, Point};
use crate::pmtimer::{self, PmTimer};

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;
/// Timer interrupt rate.
pub const TICK_HZ: u64 = 100;
/// Length of one calibration window; `calibrate::tsc_hz` takes two that must agree. Brackets of
/// a few microseconds tie each end to well under 500 ppm of it.
pub const CALIBRATION_MS: u64 = 25;
/// The rate assumed when no reference counter moves (no PM timer and no PIT): a guess, logged.
const FALLBACK_HZ: u64 = 1_000_000_000;

const PIT_CHANNEL0: u16 = 0x40;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// Keyboard controller port B: bit 0 gates PIT channel 2, bit 1 drives the speaker.
const PORT_B: u16 = 0x61;

static BOOT_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Reads the time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter into edx:eax; CR4.TSD is clear (kernel mode anyway).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Records the boot TSC (the zero of every boot-relative time). Interrupts must be off.
pub fn init() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// PIT channel 2 as a free-running 16-bit counter (mode 2, reload 65536: one period is 54.9 ms),
/// read through the latch command: the calibration reference where ACPI has no PM timer, and the
/// in-kernel test's second clock. Nothing else uses channel 2 (it only drives the speaker, which
/// stays off).
pub struct PitCounter(());

impl PitCounter {
    /// Gates channel 2 on (speaker off) and starts it counting.
    pub fn start() -> PitCounter {
        // SAFETY: the PIT and port B are standard PC devices owned by this module; channel 2
        // only drives the disabled speaker, so reprogramming it affects nothing else.
        unsafe {
            let mut port_b = Port::<u8>::new(PORT_B);
            let b = port_b.read();
            port_b.write((b & !0x02) | 0x01);
            // Channel 2, lobyte/hibyte, mode 2 (rate generator), binary; a count of 0 is 65536.
            Port::<u8>::new(PIT_COMMAND).write(0b1011_0100);
            let mut channel2 = Port::<u8>::new(PIT_CHANNEL2);
            channel2.write(0);
            channel2.write(0);
        }
        PitCounter(())
    }
}

impl Counter for PitCounter {
    fn read(&mut self) -> u64 {
        // SAFETY: as in `start`; the latch command freezes channel 2's count for the two reads.
        let count = unsafe {
            Port::<u8>::new(PIT_COMMAND).write(0b1000_0000);
            let mut channel2 = Port::<u8>::new(PIT_CHANNEL2);
            let lo = channel2.read();
            let hi = channel2.read();
            u16::from_le_bytes([lo, hi])
        };
        // It counts down; the ticks elapsed are its negation modulo 65536.
        u64::from(count.wrapping_neg())
    }

    fn mask(&self) -> u64 {
        0xffff
    }
}

/// Calibrates the TSC against `counter` at `counter_hz` (two windows of [`CALIBRATION_MS`]),
/// calling `stall` at each step (see `calibrate::Point`).
pub fn calibrate_against(
    counter: &mut dyn Counter,
    counter_hz: u64,
    stall: &mut dyn FnMut(Point),
) -> Result<u64, u64> {
    calibrate::tsc_hz(
        counter,
        counter_hz,
        counter_hz * CALIBRATION_MS / 1000,
        stall,
    )
}

/// The machine's PM timer, found once by [`calibrate`].
static PM_TIMER: spin::Once<Option<PmTimer>> = spin::Once::new();

/// The ACPI PM timer, if the firmware describes one ([`calibrate`] has looked).
pub fn pm_timer() -> Option<PmTimer> {
    PM_TIMER.get().copied().flatten()
}

/// Measures the TSC's rate: against the ACPI PM timer the FADT (from `rsdp`) describes, else
/// against PIT channel 2's counter, and logs it. Runs once at boot, interrupts off, after
/// `memory::init` (the ACPI tables are read through the physical-memory mapping).
pub fn calibrate(rsdp: Option<u64>) {
    let pm = *PM_TIMER.call_once(|| rsdp.and_then(PmTimer::find));
    let mut attempts = alloc::vec::Vec::new();
    if let Some(mut timer) = pm {
        let result = calibrate_against(&mut timer, pmtimer::HZ, &mut calibrate::no_stall);
        let (space, at) = timer.describe();
        attempts.push((
            result,
            alloc::format!("the ACPI PM timer ({space} {at:#x})"),
        ));
    }
    if attempts.iter().all(|(result, _)| result.is_err()) {
        let result = calibrate_against(&mut PitCounter::start(), PIT_HZ, &mut calibrate::no_stall);
        attempts.push((result, "PIT channel 2's counter".into()));
    }
    let measured = match attempts.last().map(|(result, _)| *result) {
        Some(Ok(hz) | Err(hz)) if hz > 0 => Some(hz),
        _ => None,
    };
    let hz = measured.unwrap_or(FALLBACK_HZ);
    // Stored before logging, so that the log line's own timestamp is already right.
    TSC_HZ.store(hz, Ordering::Relaxed);
    for (result, against) in attempts {
        match result {
            Ok(hz) => info!(
                "tsc: {} kHz (calibrated against {against}, 2 x {CALIBRATION_MS} ms)",
                hz / 1000
            ),
            Err(0) => warn!("tsc: {against} does not count"),
            Err(hz) => warn!(
                "tsc: {} kHz against {against}, but no two windows agreed within {} ppm",
                hz / 1000,
                2 * calibrate::PRECISE_PPM
            ),
        }
    }
    if measured.is_none() {
        error!("tsc: no reference counter moved; assuming {FALLBACK_HZ} Hz");
    }
}

/// Programs PIT channel 0 as the periodic timer interrupt at [`TICK_HZ`].
pub fn start_timer() {
    let divisor = PIT_HZ / TICK_HZ;
    let mut command = Port::<u8>::new(PIT_COMMAND);
    let mut channel0 = Port::<u8>::new(PIT_CHANNEL0);
    // SAFETY: channel 0 is the PIT's system-timer channel, owned by this module; its only effect
    // is IRQ 0, which `idt` routes to `on_tick`.
    unsafe {
        // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary.
        command.write(0b0011_0100);
        channel0.write((divisor & 0xff) as u8);
        channel0.write((divisor >> 8) as u8);
    }
}

/// The timer interrupt's work: count one tick.
pub fn on_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// A job due once every `period` ticks (at each multiple of it, tick 0 excepted) that catches
/// up: [`Periodic::due`] says how many of its points the clock has passed since the last
/// [`Periodic::done`], so a tick whose work ran late (deferred to the big lock's next holder,
/// `tick.rs`) or a look skipped because a lock was busy is made up at the next tick that gets
/// to it, rather than lost until the next multiple (the hung-task check and the load average
/// acted only on `now % period == 0`). Linux keeps the same idea in `calc_load_update` (the
/// load average's next sample time, advanced past every window it folds).
pub struct Periodic {
    /// The number of the last point done (`tick / period`).
    done: AtomicU64,
}

impl Periodic {
    pub const fn new() -> Self {
        Self {
            done: AtomicU64::new(0),
        }
    }

    /// How many points (multiples of `period`) `now` is past that were not done yet.
    pub fn due(&self, now: u64, period: u64) -> u64 {
        (now / period).saturating_sub(self.done.load(Ordering::Relaxed))
    }

    /// Every point up to `now` is done.
    pub fn done(&self, now: u64, period: u64) {
        self.done.fetch_max(now / period, Ordering::Relaxed);
    }
}

impl Default for Periodic {
    fn default() -> Self {
        Self::new()
    }
}

/// Timer interrupts since the timer started.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// The calibrated TSC rate in kHz (0 before calibration).
pub fn tsc_khz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed) / 1000
}

/// Microseconds since `init`, from the TSC (0 before calibration).
pub fn micros_since_boot() -> u64 {
    cycles_to_micros(rdtsc().wrapping_sub(BOOT_TSC.load(Ordering::Relaxed)))
}

/// Converts a TSC delta to microseconds (0 before calibration).
pub fn cycles_to_micros(cycles: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    (u128::from(cycles) * 1_000_000 / u128::from(hz)) as u64
}
