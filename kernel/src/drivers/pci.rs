//! PCI configuration space through the legacy I/O ports (configuration mechanism #1).
//!
//! Writing `0x8000_0000 | bus << 16 | device << 11 | function << 8 | offset` to `0xCF8` selects a
//! dword of one function's 256-byte configuration space, which then reads and writes through
//! `0xCFC`. This is all QEMU's i440fx machine needs and works before any memory-mapped
//! configuration (ECAM) is known. The kernel runs on one CPU with interrupts disabled while it
//! talks to the ports, so the address/data pair cannot be interleaved.

use x86_64::instructions::port::Port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

const VENDOR_ID: u8 = 0x00;
const COMMAND: u8 = 0x04;
const HEADER_TYPE: u8 = 0x0e;
const BAR0: u8 = 0x10;
const INTERRUPT_LINE: u8 = 0x3c;

/// Command register bits: respond to I/O space accesses, act as a bus master (DMA).
const COMMAND_IO_SPACE: u16 = 1 << 0;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register bit 10: INTx# disabled. Cleared so the legacy interrupt line works.
const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// One PCI function, by its bus/device/function address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PciFunction {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl PciFunction {
    fn address(self, offset: u8) -> u32 {
        0x8000_0000
            | u32::from(self.bus) << 16
            | u32::from(self.device) << 11
            | u32::from(self.function) << 8
            | u32::from(offset & 0xfc)
    }

    /// The configuration dword containing `offset`.
    pub fn read32(self, offset: u8) -> u32 {
        let interrupts = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        // SAFETY: configuration mechanism #1: the address port selects a dword of a function's
        // configuration space and the data port reads it; neither touches memory. Interrupts
        // are off so no other configuration access sits between the two.
        let value = unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(self.address(offset));
            Port::<u32>::new(CONFIG_DATA).read()
        };
        if interrupts {
            x86_64::instructions::interrupts::enable();
        }
        value
    }

    /// Writes the configuration dword containing `offset`.
    pub fn write32(self, offset: u8, value: u32) {
        let interrupts = x86_64::instructions::interrupts::are_enabled();
        x86_64::instructions::interrupts::disable();
        // SAFETY: as in `read32`; the callers write only the command register, whose bits they
        // choose (no BAR is moved).
        unsafe {
            Port::<u32>::new(CONFIG_ADDRESS).write(self.address(offset));
            Port::<u32>::new(CONFIG_DATA).write(value);
        }
        if interrupts {
            x86_64::instructions::interrupts::enable();
        }
    }

    pub fn read8(self, offset: u8) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    pub fn vendor_device(self) -> (u16, u16) {
        let id = self.read32(VENDOR_ID);
        (id as u16, (id >> 16) as u16)
    }

    /// Base address register `n` (0-5) as an I/O port base, if it is an I/O BAR.
    pub fn io_bar(self, n: u8) -> Option<u16> {
        let bar = self.read32(BAR0 + 4 * n);
        (bar & 1 == 1).then_some((bar & !3) as u16)
    }

    /// The legacy interrupt line the firmware routed INTx# to (8259 IRQ number), if any.
    pub fn interrupt_line(self) -> Option<u8> {
        let line = self.read8(INTERRUPT_LINE);
        (line < 16).then_some(line)
    }

    /// Lets the function answer I/O accesses, do DMA, and raise INTx#.
    pub fn enable_io_and_bus_master(self) {
        let status_command = self.read32(COMMAND);
        let command =
            (status_command as u16 | COMMAND_IO_SPACE | COMMAND_BUS_MASTER) & !COMMAND_INTX_DISABLE;
        // The upper half is the status register, whose bits are write-1-to-clear: write 0s.
        self.write32(COMMAND, u32::from(command));
    }
}

/// The `n`th (from 0) function with this vendor and device id, scanning every bus, device and
/// function in order.
pub fn find_nth(vendor: u16, device: u16, n: usize) -> Option<PciFunction> {
    let mut seen = 0;
    for bus in 0..=255u8 {
        for dev in 0..32u8 {
            let first = PciFunction {
                bus,
                device: dev,
                function: 0,
            };
            if first.vendor_device().0 == 0xffff {
                continue;
            }
            let functions = if first.read8(HEADER_TYPE) & 0x80 != 0 {
                8
            } else {
                1
            };
            for function in 0..functions {
                let f = PciFunction { function, ..first };
                if f.vendor_device() == (vendor, device) {
                    if seen == n {
                        return Some(f);
                    }
                    seen += 1;
                }
            }
        }
    }
    None
}
