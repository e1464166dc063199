//! The processors and interrupt controllers the firmware describes: ACPI's MADT.
//!
//! The bootloader hands over the RSDP's physical address; rust-osdev's `acpi` crate validates the
//! RSDP, walks the RSDT/XSDT, checks the MADT's checksum and iterates its entries, so the kernel
//! only maps physical memory for it (all of it is already mapped at the bootloader's offset:
//! mapping is address arithmetic and unmapping is nothing).

use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use cowlab_mm::addr::PhysAddr;

use crate::memory;

/// What the MADT says about this machine.
pub struct Topology {
    /// Physical address of the local APIC registers.
    pub local_apic: u64,
    /// Local APIC IDs of the usable processors (enabled, or online-capable), in table order.
    pub apic_ids: Vec<u32>,
}

/// Maps ACPI tables through the bootloader's offset mapping of all physical memory.
#[derive(Clone, Copy)]
pub(crate) struct OffsetMapping;

impl AcpiHandler for OffsetMapping {
    unsafe fn map_physical_region<T>(
        &self,
        physical: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = memory::phys_to_virt(PhysAddr::new(physical as u64)).cast::<T>();
        let virt = NonNull::new(virt).expect("the physical-memory offset is not null");
        // SAFETY: `virt` maps `size` bytes at `physical` for the kernel's lifetime (the
        // bootloader's offset mapping covers all physical memory, firmware tables included).
        unsafe { PhysicalMapping::new(physical, virt, size, size, OffsetMapping) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// MADT local APIC flags: bit 0 enabled, bit 1 online-capable (may be enabled later).
const PROCESSOR_USABLE: u32 = 0b11;

/// Reads the MADT reached from the RSDP at `rsdp`.
pub fn read(rsdp: u64) -> Result<Topology, acpi::AcpiError> {
    // SAFETY: `rsdp` is the address the bootloader found the RSDP at; `OffsetMapping` maps
    // any physical range the tables point to.
    let tables = unsafe { AcpiTables::from_rsdp(OffsetMapping, rsdp as usize) }?;
    let madt = tables.find_table::<Madt>()?;
    let madt = madt.get();
    let mut apic_ids = Vec::new();
    for entry in madt.entries() {
        match entry {
            MadtEntry::LocalApic(cpu) if cpu.flags & PROCESSOR_USABLE != 0 => {
                apic_ids.push(u32::from(cpu.apic_id))
            }
            MadtEntry::LocalX2Apic(cpu) if cpu.flags & PROCESSOR_USABLE != 0 => {
                apic_ids.push(cpu.x2apic_id)
            }
            MadtEntry::IoApic(io) => crate::ioapic::set_base(
                u64::from(io.io_apic_address),
                io.global_system_interrupt_base,
            ),
            MadtEntry::InterruptSourceOverride(o) if o.bus == 0 => {
                crate::ioapic::set_override(o.irq, o.global_system_interrupt, o.flags)
            }
            _ => {}
        }
    }
    Ok(Topology {
        local_apic: u64::from(madt.local_apic_address),
        apic_ids,
    })
}
