//! The I/O APIC: device interrupt lines delivered as vectors to a local APIC.
//!
//! The MADT names the I/O APIC (its address and first GSI) and how ISA lines map to its pins
//! (interrupt source overrides: QEMU's `pc` routes the PCI INTx lines 5, 9, 10 and 11 level
//! triggered, active high). [`route_isa`] programs one redirection entry: fixed delivery of
//! vector [`vector::IOAPIC_BASE`] + line to one CPU's local APIC, with the override's trigger
//! mode and polarity. Routing happens at boot only (drivers' init), before the watchdog starts:
//! the watchdog's NMI handler also writes the I/O APIC's select/window pair (its pin 8), and a
//! select written here could otherwise be changed under it. The 8259 keeps the lines not routed
//! here (the PIT's IRQ 0); a routed line stays masked at the 8259.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::addr::PhysAddr;

use crate::idt::vector;
use crate::memory;

const SELECT: usize = 0x00;
const WINDOW: usize = 0x10;
const VERSION: u32 = 0x01;
const REDIRECTION: u32 = 0x10;
const LEVEL: u32 = 1 << 15;
const ACTIVE_LOW: u32 = 1 << 13;

/// Physical address and first GSI of the I/O APIC (0: none described).
static BASE: AtomicU64 = AtomicU64::new(0);
static GSI_BASE: AtomicU32 = AtomicU32::new(0);
/// Per ISA line: `gsi | flags << 16 | 1 << 31` when the MADT overrides it, else 0.
static OVERRIDES: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];

/// Records the I/O APIC the MADT describes (the first one).
pub fn set_base(phys: u64, gsi_base: u32) {
    if BASE.load(Ordering::Relaxed) == 0 {
        BASE.store(phys, Ordering::Relaxed);
        GSI_BASE.store(gsi_base, Ordering::Relaxed);
    }
}

/// Records an interrupt source override: ISA `irq` is `gsi` with MPS INTI `flags`.
pub fn set_override(irq: u8, gsi: u32, flags: u16) {
    if let Some(slot) = OVERRIDES.get(usize::from(irq)) {
        slot.store(
            (gsi & 0x7fff) | (u32::from(flags & 0xf) << 16) | (1 << 31),
            Ordering::Relaxed,
        );
    }
}

fn register(offset: usize) -> *mut u32 {
    memory::phys_to_virt(PhysAddr::new(BASE.load(Ordering::Relaxed)))
        .wrapping_add(offset)
        .cast()
}

fn write(index: u32, value: u32) {
    // SAFETY: the select/window registers of the I/O APIC the MADT names, inside the offset
    // mapping (the first 4 GiB); boot-time only, before the watchdog's NMI uses them.
    unsafe {
        register(SELECT).write_volatile(index);
        register(WINDOW).write_volatile(value);
    }
}

fn read(index: u32) -> u32 {
    // SAFETY: as `write`.
    unsafe {
        register(SELECT).write_volatile(index);
        register(WINDOW).read_volatile()
    }
}

/// Routes ISA line `irq` to the local APIC `apic_id` as vector `IOAPIC_BASE + irq`; `false` when
/// there is no I/O APIC or it has no such pin (the caller then uses the 8259).
pub fn route_isa(irq: u8, apic_id: u32) -> bool {
    if BASE.load(Ordering::Relaxed) == 0 || irq >= 16 {
        return false;
    }
    let word = OVERRIDES[usize::from(irq)].load(Ordering::Relaxed);
    let (gsi, flags) = if word != 0 {
        (word & 0x7fff, (word >> 16) & 0xf)
    } else {
        (u32::from(irq), 0)
    };
    // MPS INTI flags: polarity bits 0-1 (3: active low), trigger bits 2-3 (3: level); 0 is
    // the bus default, for ISA edge and active high.
    let mut entry = u32::from(vector::IOAPIC_BASE + irq);
    if (flags >> 2) & 3 == 3 {
        entry |= LEVEL;
    }
    if flags & 3 == 3 {
        entry |= ACTIVE_LOW;
    }
    let Some(pin) = gsi.checked_sub(GSI_BASE.load(Ordering::Relaxed)) else {
        return false;
    };
    let pins = ((read(VERSION) >> 16) & 0xff) + 1;
    if pin >= pins {
        return false;
    }
    write(REDIRECTION + 2 * pin + 1, apic_id << 24);
    write(REDIRECTION + 2 * pin, entry);
    true
}
