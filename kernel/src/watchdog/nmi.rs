//! The NMI source of the soft-lockup detector: the RTC's periodic interrupt at 2 Hz (ISA IRQ 8),
//! whose I/O APIC redirection entry delivers it to the boot CPU as an NMI.
//!
//! Why this one: TCG has no performance counters (Linux's hard-lockup detector uses a perf
//! NMI); the local APIC timer cannot deliver NMIs; QEMU's `pc` machine lets HPET timers reach
//! only I/O APIC pin 2, which the PIT drives too (the PIT's 100 Hz would all become NMIs). The
//! RTC's line reaches the I/O APIC on its own pin 8, and the 8259 PIC, which delivers the
//! kernel's ordinary interrupts, keeps IRQ 8 masked, so only the NMI path sees it. The RTC
//! raises its line again only after register C is read, so every NMI reads it ([`rearm`]);
//! nothing else touches the CMOS ports after boot (`rtc::init` reads the clock once, before
//! the watchdog starts), so the NMI cannot interrupt another CMOS access. The I/O APIC is
//! probed at its fixed address 0xfec0_0000 (no ACPI parsing) through the bootloader's mapping
//! of physical memory, which covers the first 4 GiB. Under `-icount` (`clock=vm`) the RTC runs
//! on virtual time, so runs stay deterministic.

use core::sync::atomic::{AtomicBool, Ordering};

use cowlab_mm::addr::PhysAddr;
use x86_64::instructions::port::Port;

use crate::memory;

const IOAPIC_BASE: u64 = 0xfec0_0000;
const IOAPIC_SELECT: u64 = 0x00;
const IOAPIC_WINDOW: u64 = 0x10;
const IOAPIC_VERSION: u32 = 0x01;
/// ISA IRQ 8 (the RTC) is I/O APIC pin 8 on QEMU's machines.
pub const PIN: u32 = 8;
/// Redirection entry: delivery mode NMI (0b100), physical destination, edge, active high.
const DELIVERY_NMI: u32 = 0b100 << 8;
const MASKED: u32 = 1 << 16;

const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;
const RTC_A: u8 = 0x0a;
const RTC_B: u8 = 0x0b;
const RTC_C: u8 = 0x0c;
/// Register A: the 32.768 kHz time base (0b010) and rate 15: 32768 >> (15 - 1) = 2 Hz.
const RTC_A_2HZ: u8 = 0x20 | 15;
/// Register B: periodic interrupt enable.
const RTC_B_PIE: u8 = 0x40;

static RUNNING: AtomicBool = AtomicBool::new(false);

fn ioapic_register(offset: u64) -> *mut u32 {
    memory::phys_to_virt(PhysAddr::new(IOAPIC_BASE + offset)).cast()
}

/// Writes one I/O APIC register and puts back the select it found: this runs in the NMI (on
/// the boot CPU), which may have interrupted `ioapic::set_destination` between its select and
/// its window write there.
fn ioapic_write(index: u32, value: u32) {
    // SAFETY: the I/O APIC's select and window registers, 4-byte aligned, inside the offset
    // mapping; besides this module only `ioapic` uses them, on the boot CPU too.
    unsafe {
        let select = ioapic_register(IOAPIC_SELECT).read_volatile();
        ioapic_register(IOAPIC_SELECT).write_volatile(index);
        ioapic_register(IOAPIC_WINDOW).write_volatile(value);
        ioapic_register(IOAPIC_SELECT).write_volatile(select);
    }
}

fn ioapic_read(index: u32) -> u32 {
    // SAFETY: as `ioapic_write`.
    unsafe {
        ioapic_register(IOAPIC_SELECT).write_volatile(index);
        ioapic_register(IOAPIC_WINDOW).read_volatile()
    }
}

fn cmos_read(register: u8) -> u8 {
    // SAFETY: the CMOS index/data pair; after boot only this module uses it (module comment).
    unsafe {
        Port::<u8>::new(CMOS_INDEX).write(register);
        Port::<u8>::new(CMOS_DATA).read()
    }
}

fn cmos_write(register: u8, value: u8) {
    // SAFETY: as `cmos_read`; registers A and B only set the periodic rate and its enable.
    unsafe {
        Port::<u8>::new(CMOS_INDEX).write(register);
        Port::<u8>::new(CMOS_DATA).write(value);
    }
}

/// Starts the NMI twice a second; `Err` says why there is none.
pub fn start() -> Result<(), &'static str> {
    let version = ioapic_read(IOAPIC_VERSION);
    if version == u32::MAX || (version >> 16) & 0xff < PIN {
        return Err("no I/O APIC at 0xfec00000 with a pin 8");
    }
    // Boot CPU's APIC id 0 (the only CPU); the vector field is unused for NMIs.
    ioapic_write(0x11 + 2 * PIN, 0);
    ioapic_write(0x10 + 2 * PIN, DELIVERY_NMI);
    cmos_write(RTC_A, RTC_A_2HZ);
    let b = cmos_read(RTC_B);
    cmos_write(RTC_B, b | RTC_B_PIE);
    RUNNING.store(true, Ordering::SeqCst);
    rearm();
    Ok(())
}

/// Reads RTC register C, which lets the RTC raise its next periodic interrupt. Called by every
/// NMI.
pub fn rearm() {
    if RUNNING.load(Ordering::Relaxed) {
        cmos_read(RTC_C);
    }
}

/// Masks (or unmasks) the NMI at the I/O APIC, while a report prints.
pub fn mask(masked: bool) {
    if RUNNING.load(Ordering::Relaxed) {
        ioapic_write(
            0x10 + 2 * PIN,
            DELIVERY_NMI | if masked { MASKED } else { 0 },
        );
    }
}
