//! The I/O APIC: device interrupt lines delivered as vectors to a local APIC.
//!
//! The MADT names the I/O APIC (its address and first GSI) and how ISA lines map to its pins
//! (interrupt source overrides: QEMU's `pc` routes the PCI INTx lines 5, 9, 10 and 11 level
//! triggered, active high). [`route_isa`] programs one redirection entry: fixed delivery of
//! vector [`vector::IOAPIC_BASE`] + line to one CPU's local APIC, with the override's trigger
//! mode and polarity, at boot (drivers' init). Afterwards only the destination changes
//! ([`set_destination`], the drivers' interrupt steering), and only on the boot CPU: the
//! watchdog's NMI handler also writes the select/window pair (its pin 8), always on the boot
//! CPU, and restores the select it found, so a select written here survives an NMI between it
//! and its window write; a write from another CPU could interleave with the NMI's pair and
//! land in the wrong register. The 8259 keeps the lines not routed here (the PIT's IRQ 0); a
//! routed line stays masked at the 8259.

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
/// Per ISA line routed by [`route_isa`]: `pin | level << 8 | 1 << 31`, else 0.
static ROUTED: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
/// Per routed line: the CPU index its entry delivers to.
static DESTINATION: [AtomicU32; 16] = [const { AtomicU32::new(0) }; 16];
const ROUTED_BIT: u32 = 1 << 31;
const ROUTED_LEVEL: u32 = 1 << 8;

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

/// Routes ISA line `irq` to CPU `cpu` as vector `IOAPIC_BASE + irq`; `false` when there is no
/// I/O APIC or it has no such pin (the caller then uses the 8259).
pub fn route_isa(irq: u8, cpu: usize) -> bool {
    let apic_id = crate::smp::apic_id_of(cpu);
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
    let level = if entry & LEVEL != 0 { ROUTED_LEVEL } else { 0 };
    DESTINATION[usize::from(irq)].store(cpu as u32, Ordering::Relaxed);
    ROUTED[usize::from(irq)].store(pin | level | ROUTED_BIT, Ordering::Relaxed);
    true
}

/// How ISA line `irq` is routed, for `/proc/interrupts`: `Some((pin, level_triggered))` when
/// through the I/O APIC.
pub fn route_of(irq: u8) -> Option<(u32, bool)> {
    let word = ROUTED.get(usize::from(irq))?.load(Ordering::Relaxed);
    (word & ROUTED_BIT != 0).then_some((word & 0xff, word & ROUTED_LEVEL != 0))
}

/// The CPU index routed line `irq` delivers to, if it is routed here.
pub fn destination_of(irq: u8) -> Option<usize> {
    route_of(irq)?;
    Some(DESTINATION[usize::from(irq)].load(Ordering::Relaxed) as usize)
}

/// Sends routed line `irq`'s next interrupts to CPU `cpu` (Linux `irq_set_affinity` on an I/O
/// APIC pin): one write of the entry's destination half, which QEMU applies at once and a
/// real I/O APIC at its next delivery; a level interrupt already in service is still ended by
/// the old CPU's EOI, which the I/O APIC sees from any local APIC. Boot CPU only (module
/// comment); `false` (nothing written) elsewhere or for a line not routed here.
pub fn set_destination(irq: u8, cpu: usize) -> bool {
    let Some((pin, _)) = route_of(irq) else {
        return false;
    };
    if crate::percpu::cpu_id() != 0 {
        return false;
    }
    if DESTINATION[usize::from(irq)].load(Ordering::Relaxed) as usize == cpu {
        return true;
    }
    let apic_id = crate::smp::apic_id_of(cpu);
    x86_64::instructions::interrupts::without_interrupts(|| {
        write(REDIRECTION + 2 * pin + 1, apic_id << 24)
    });
    DESTINATION[usize::from(irq)].store(cpu as u32, Ordering::Relaxed);
    true
}
