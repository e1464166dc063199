//! The legacy 8259 PIC pair, remapped to vectors 32-47, with the timer and the lines drivers
//! unmask ([`unmask`]).
//!
//! At power-on the PICs deliver IRQs 0-7 on vectors 8-15, on top of CPU exceptions, so they are
//! reinitialised with vector offsets 32 and 40. Only IRQ 0 (PIT channel 0, see `time`) is
//! unmasked at first; drivers unmask their device's line (the virtio block device's PCI INTx,
//! routed by the firmware, see `drivers::virtio_blk`). This is the simplest interrupt
//! controller that QEMU's default machine offers; the local APIC can replace it when there is
//! more than one CPU.

use x86_64::instructions::port::Port;

use crate::idt::vector;

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;

const ICW1_INIT_ICW4: u8 = 0x11;
const ICW4_8086: u8 = 0x01;
const OCW3_READ_ISR: u8 = 0x0b;
const END_OF_INTERRUPT: u8 = 0x20;

/// Writes `value` to `port`, then waits a moment (an unused port) for slow PICs.
///
/// # Safety
///
/// `port` must be one of the PIC ports and the write part of a valid command sequence.
unsafe fn write(port: u16, value: u8) {
    // SAFETY: per the caller for `port`; port 0x80 is the POST diagnostic port, unused.
    unsafe {
        Port::<u8>::new(port).write(value);
        Port::<u8>::new(0x80).write(0);
    }
}

/// Remaps both PICs to vectors 32-47 and masks every line but the timer.
pub fn init() {
    // SAFETY: the standard initialisation sequence (ICW1-ICW4) of a cascaded 8259 pair, then
    // the masks; interrupts are still disabled.
    unsafe {
        write(MASTER_COMMAND, ICW1_INIT_ICW4);
        write(SLAVE_COMMAND, ICW1_INIT_ICW4);
        write(MASTER_DATA, vector::PIC_BASE);
        write(SLAVE_DATA, vector::PIC_BASE + 8);
        // The slave hangs off the master's line 2.
        write(MASTER_DATA, 1 << 2);
        write(SLAVE_DATA, 2);
        write(MASTER_DATA, ICW4_8086);
        write(SLAVE_DATA, ICW4_8086);
        // Mask everything except IRQ 0 (the timer).
        write(MASTER_DATA, !1);
        write(SLAVE_DATA, 0xff);
    }
}

/// Unmasks IRQ `line` (and, for a slave line, the cascade line 2 on the master).
pub fn unmask(line: u8) {
    let (port, bit) = if line < 8 {
        (MASTER_DATA, line)
    } else {
        (SLAVE_DATA, line - 8)
    };
    // SAFETY: read-modify-write of an interrupt mask register (OCW1); only clears mask bits.
    unsafe {
        let mask = Port::<u8>::new(port).read();
        write(port, mask & !(1 << bit));
        if line >= 8 {
            let master = Port::<u8>::new(MASTER_DATA).read();
            write(MASTER_DATA, master & !(1 << 2));
        }
    }
}

/// Reads the in-service register of the PIC whose command port is `command`.
fn in_service(command: u16) -> u8 {
    // SAFETY: OCW3 "read ISR" followed by a read of the same port: no side effect.
    unsafe {
        Port::<u8>::new(command).write(OCW3_READ_ISR);
        Port::<u8>::new(command).read()
    }
}

/// Whether an interrupt on `line` is spurious (lines 7 and 15 with their ISR bit clear). A
/// spurious 15 still owes the master an end-of-interrupt, which this sends.
pub fn is_spurious(line: u8) -> bool {
    match line {
        7 => in_service(MASTER_COMMAND) & 0x80 == 0,
        15 if in_service(SLAVE_COMMAND) & 0x80 == 0 => {
            // SAFETY: EOI to the master, which did see the cascade interrupt.
            unsafe { Port::<u8>::new(MASTER_COMMAND).write(END_OF_INTERRUPT) };
            true
        }
        _ => false,
    }
}

/// Acknowledges the interrupt on `line` so the PIC delivers the next one.
pub fn end_of_interrupt(line: u8) {
    // SAFETY: EOI commands; the line is in service (it was just delivered).
    unsafe {
        if line >= 8 {
            Port::<u8>::new(SLAVE_COMMAND).write(END_OF_INTERRUPT);
        }
        Port::<u8>::new(MASTER_COMMAND).write(END_OF_INTERRUPT);
    }
}
