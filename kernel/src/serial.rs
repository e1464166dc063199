//! The serial console: COM1, the only output device the kernel has.
//!
//! Everything the kernel says goes through one lock-protected UART so that lines from different
//! contexts do not interleave mid-line. The lock is taken with interrupts disabled, so an
//! interrupt handler that prints cannot deadlock against the code it interrupted. The one
//! context that can still find the lock held is a CPU exception or panic raised *while printing*;
//! those paths call [`break_lock_for_crash`] first: a garbled line is better than a silent hang
//! when the kernel is dying anyway.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::SerialPort;
use x86_64::instructions::interrupts;

/// The standard PC I/O port base of COM1.
const COM1: u16 = 0x3f8;

// SAFETY: 0x3f8 is COM1 on every PC-compatible machine (and in QEMU's `-serial`); nothing else
// in the kernel drives these ports, so this is the only owner of the device.
static COM1_PORT: Mutex<SerialPort> = Mutex::new(unsafe { SerialPort::new(COM1) });

/// Programs the UART (baud rate, 8N1, FIFOs). Call once, first thing at boot.
pub fn init() {
    COM1_PORT.lock().init();
}

/// Writes formatted text to the console as one unit. Used by the print and log macros.
pub fn write_fmt(args: fmt::Arguments) {
    interrupts::without_interrupts(|| {
        // Writing to the UART cannot fail.
        let _ = COM1_PORT.lock().write_fmt(args);
    });
}

/// Whether some context holds the console (an NMI that interrupted it must not wait for it).
pub fn is_busy() -> bool {
    COM1_PORT.is_locked()
}

/// Releases the console lock if some interrupted context holds it.
///
/// Only for the exception, panic and watchdog paths, which may have interrupted a `print!` on
/// this same CPU: waiting for the lock would hang forever. With several CPUs the holder may
/// instead be another CPU, mid-line; it then finds the port unlocked under it.
pub fn break_lock_for_crash() {
    if COM1_PORT.is_locked() {
        // SAFETY: the lock guards no memory, only the UART's registers and the order of the
        // bytes written to them: a holder on this CPU is the context this exception, panic or
        // NMI interrupted, which will not run again before the kernel exits or our output is
        // complete; a holder on another CPU keeps writing bytes of its own line, which then
        // interleave with ours. Either way the cost is mixed output, never a hang.
        unsafe { COM1_PORT.force_unlock() };
    }
}

/// Prints to the serial console, without a newline and without a log prefix.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::serial::write_fmt(format_args!($($arg)*))
    };
}

/// Prints a raw line to the serial console (no log prefix): for protocol lines such as `KTEST`.
macro_rules! println {
    () => {
        $crate::serial::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::serial::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes raw bytes (a terminal's output: no UTF-8 or backspace translation) as one unit.
pub fn write_bytes(data: &[u8]) {
    interrupts::without_interrupts(|| {
        let mut port = COM1_PORT.lock();
        for &b in data {
            port.send_raw(b);
        }
    });
}

/// A received byte if one is waiting and the port is free: for the timer tick, which must not
/// wait for a lock the code it interrupted may hold.
pub fn try_read_byte_nowait() -> Option<u8> {
    let mut port = COM1_PORT.try_lock()?;
    port.try_receive().ok()
}
