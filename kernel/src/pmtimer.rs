//! The ACPI power-management timer: a free-running 3.579545 MHz counter, 24 or 32 bits wide,
//! at the address the FADT gives (I/O port 0x608 on QEMU's PC machines, 24 bits). It is
//! read, never waited on, which is what makes it the TSC's calibration reference (`calibrate`):
//! QEMU computes it from the virtual clock at the moment of the read, so it cannot fall behind or
//! run ahead of the TSC while the vCPU thread is descheduled.

use acpi::address::AddressSpace;
use acpi::fadt::Fadt;
use acpi::AcpiTables;
use cowlab_mm::addr::PhysAddr;
use x86_64::instructions::port::Port;

use crate::calibrate::Counter;
use crate::smp::madt::OffsetMapping;

/// The PM timer's rate (ACPI: 3.579545 MHz, a third of the NTSC colour-burst clock).
pub const HZ: u64 = 3_579_545;

/// Where the counter register is.
#[derive(Clone, Copy, Debug)]
enum Register {
    Port(u16),
    Memory(PhysAddr),
}

/// The machine's PM timer.
#[derive(Clone, Copy, Debug)]
pub struct PmTimer {
    register: Register,
    mask: u64,
}

impl PmTimer {
    /// The PM timer the FADT reached from the RSDP at `rsdp` describes, if any.
    pub fn find(rsdp: u64) -> Option<PmTimer> {
        // SAFETY: `rsdp` is the address the bootloader found the RSDP at; `OffsetMapping` maps
        // any physical range the tables point to.
        let tables = unsafe { AcpiTables::from_rsdp(OffsetMapping, rsdp as usize) }.ok()?;
        let fadt = tables.find_table::<Fadt>().ok()?;
        let fadt = fadt.get();
        let base = fadt.pm_timer_block().ok()??;
        let register = match base.address_space {
            AddressSpace::SystemIo => Register::Port(u16::try_from(base.address).ok()?),
            AddressSpace::SystemMemory => Register::Memory(PhysAddr::new(base.address)),
            _ => return None,
        };
        let mask = if { fadt.flags }.pm_timer_is_32_bit() {
            0xffff_ffff
        } else {
            0x00ff_ffff
        };
        Some(PmTimer { register, mask })
    }

    /// Where the register is, for the boot log.
    pub fn describe(&self) -> (&'static str, u64) {
        match self.register {
            Register::Port(port) => ("port", u64::from(port)),
            Register::Memory(phys) => ("address", phys.as_u64()),
        }
    }
}

impl Counter for PmTimer {
    fn read(&mut self) -> u64 {
        let value = match self.register {
            // SAFETY: the FADT names this port as the PM timer's, a read-only 32-bit register
            // whose read has no side effect.
            Register::Port(port) => unsafe { Port::<u32>::new(port).read() },
            // SAFETY: as above for a memory-mapped register; the bootloader maps all physical
            // memory at the offset `phys_to_virt` adds, and the register is 32-bit aligned.
            Register::Memory(phys) => unsafe {
                crate::memory::phys_to_virt(phys)
                    .cast::<u32>()
                    .read_volatile()
            },
        };
        u64::from(value) & self.mask
    }

    fn mask(&self) -> u64 {
        self.mask
    }
}
