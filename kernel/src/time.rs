//! Time: the TSC as the clock, the PIT to calibrate it and to drive the 100 Hz tick.
//!
//! The TSC is cheap to read and monotonic on every CPU QEMU emulates, but its rate is unknown; the
//! PIT's input clock is fixed at 1.193182 MHz, so at boot we let PIT channel 2 count down a known
//! interval and see how far the TSC moved. That rate turns TSC deltas into the log's timestamps.
//! PIT channel 0 then runs as the periodic timer interrupt (IRQ 0 through the remapped 8259, see
//! `pic`); each interrupt only increments a counter, so interrupt-driven code can wait on ticks.
//! Test durations (`KTEST PASS ... <ticks>`) are raw TSC deltas, not converted: under `-icount`
//! they are instruction counts and comparable across runs.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

/// PIT input clock in Hz.
const PIT_HZ: u64 = 1_193_182;
/// Timer interrupt rate.
pub const TICK_HZ: u64 = 100;
/// Length of the calibration interval: long enough for a few-ppm rate, short enough not to slow
/// boot under TCG.
const CALIBRATION_MS: u64 = 20;

const PIT_CHANNEL0: u16 = 0x40;
const PIT_CHANNEL2: u16 = 0x42;
const PIT_COMMAND: u16 = 0x43;
/// Keyboard controller port B: bit 0 gates PIT channel 2, bit 1 drives the speaker, bit 5 reads
/// channel 2's output.
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

/// Records the boot TSC and calibrates the TSC rate against PIT channel 2. Interrupts must be off.
pub fn init() {
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
    let count = PIT_HZ * CALIBRATION_MS / 1000;
    let mut port_b = Port::<u8>::new(PORT_B);
    let mut command = Port::<u8>::new(PIT_COMMAND);
    let mut channel2 = Port::<u8>::new(PIT_CHANNEL2);
    // SAFETY: the PIT and port B are standard PC devices owned by this module; channel 2 only
    // drives the (disabled) speaker, so reprogramming it affects nothing else.
    let elapsed = unsafe {
        // Gate channel 2 on, speaker off.
        let b = port_b.read();
        port_b.write((b & !0x02) | 0x01);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count), binary.
        command.write(0b1011_0000);
        channel2.write((count & 0xff) as u8);
        channel2.write((count >> 8) as u8);
        let start = rdtsc();
        // OUT goes high when the count reaches zero.
        while port_b.read() & 0x20 == 0 {
            core::hint::spin_loop();
        }
        rdtsc() - start
    };
    TSC_HZ.store(elapsed * 1000 / CALIBRATION_MS, Ordering::Relaxed);
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
