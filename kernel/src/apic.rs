//! The local APIC (xAPIC, memory-mapped): inter-processor interrupts and their end-of-interrupt.
//!
//! Every CPU has one at the same physical address (the MADT's, normally 0xfee00000), reached
//! through the bootloader's mapping of physical memory; each CPU's accesses go to its own. The
//! device interrupts still come through the 8259 PIC in virtual-wire mode (the firmware leaves the
//! boot CPU's LINT0 as ExtINT, and this module never touches it there): the local APIC is used
//! for IPIs only, so enabling it changes nothing on one CPU. An application processor masks both
//! LINT pins, so the PIC's interrupts keep going to the boot CPU alone.

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_mm::addr::PhysAddr;

use crate::idt::vector;
use crate::memory;

const ID: usize = 0x20;
const TPR: usize = 0x80;
const EOI: usize = 0xb0;
const SVR: usize = 0xf0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 0x500;
const ICR_STARTUP: u32 = 0x600;

/// Physical base of the local APIC registers (set from the MADT, else the architectural default).
static BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);

/// Records the local APIC's physical address (the MADT's).
pub fn set_base(phys: u64) {
    BASE.store(phys, Ordering::Relaxed);
}

fn register(offset: usize) -> *mut u32 {
    memory::phys_to_virt(PhysAddr::new(BASE.load(Ordering::Relaxed)))
        .wrapping_add(offset)
        .cast::<u32>()
}

fn read(offset: usize) -> u32 {
    // SAFETY: `offset` is one of the architectural register offsets above, inside the 4 KiB
    // register page the bootloader maps with the rest of physical memory; 32-bit aligned.
    unsafe { register(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as `read`; writes only the registers this module owns.
    unsafe { register(offset).write_volatile(value) }
}

/// Software-enables this CPU's local APIC with [`vector::SPURIOUS`] and accepts every priority.
/// `application_processor` also masks LINT0/LINT1 (the boot CPU keeps the firmware's virtual
/// wire, through which the PIC's interrupts arrive).
pub fn init_local(application_processor: bool) {
    if application_processor {
        write(LVT_LINT0, LVT_MASKED);
        write(LVT_LINT1, LVT_MASKED);
    }
    write(TPR, 0);
    write(SVR, SVR_ENABLE | u32::from(vector::SPURIOUS));
}

/// This CPU's local APIC ID.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Signals the end of the interrupt being serviced (for vectors the local APIC delivered).
pub fn end_of_interrupt() {
    write(EOI, 0);
}

/// Writes the interrupt command register for `apic_id` and waits until the APIC has sent it.
fn send(apic_id: u32, low: u32) {
    let state = crate::arch::irq_save_raw();
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, low);
    while read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    crate::arch::irq_restore_raw(state);
}

/// Sends the fixed interrupt `vector` to the CPU with local APIC ID `apic_id` (itself included).
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(apic_id, ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Sends an INIT IPI (the first step of starting an application processor).
pub fn send_init(apic_id: u32) {
    send(apic_id, ICR_LEVEL_ASSERT | ICR_INIT);
}

/// Sends a STARTUP IPI: the target starts in real mode at `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    send(apic_id, ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(page));
}
