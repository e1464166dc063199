//! The interrupt descriptor table: every CPU exception and the PIC's IRQs, through one entry path.
//!
//! We build the table ourselves instead of using `x86_64::structures::idt` because every vector
//! points at one of our assembly stubs (see [`entry`]), including the reserved ones the crate
//! keeps private: one path for all vectors means one trap-frame layout, one dispatcher
//! ([`dispatch`]) and one crash dump ([`dump`]). All gates are interrupt gates (IF cleared on
//! entry), ring 0 only but for the breakpoint (`int3` in ring 3 is SIGTRAP, as Linux). The double fault, NMI and machine check run on their own IST
//! stacks (see `gdt`), so a kernel stack overflow is reported instead of triple-faulting.

mod dispatch;
mod dump;
mod entry;
pub mod vector;

pub use dispatch::{breakpoint_count, lock_for_user_trap};
pub use entry::TrapFrame;

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS};
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use crate::gdt;

/// One 16-byte IDT gate descriptor (Intel SDM vol. 3, figure 6-8).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST slot + 1 (0 = no stack switch).
    ist: u8,
    /// Present, DPL, type.
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u8 = 0x8e;
/// The same with DPL 3: `int3` from ring 3 raises #BP (SIGTRAP) rather than #GP, as on Linux.
const USER_INTERRUPT_GATE: u8 = 0xee;

impl Gate {
    fn interrupt(handler: u64, code_selector: u16, ist_slot: Option<u16>, user: bool) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: code_selector,
            ist: ist_slot.map_or(0, |slot| slot as u8 + 1),
            attributes: if user {
                USER_INTERRUPT_GATE
            } else {
                INTERRUPT_GATE
            },
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

/// The IST slot an exception runs on, if it must not use the interrupted stack.
fn ist_slot(vector: u8) -> Option<u16> {
    match vector {
        vector::DOUBLE_FAULT => Some(gdt::DOUBLE_FAULT_IST),
        vector::NMI => Some(gdt::NMI_IST),
        vector::MACHINE_CHECK => Some(gdt::MACHINE_CHECK_IST),
        _ => None,
    }
}

/// Builds and loads the IDT. Needs the GDT (the gates name the kernel code selector and IST).
pub fn init() {
    let idt = IDT.call_once(|| {
        let code_selector = CS::get_reg();
        let mut gates = [Gate::default(); 256];
        for (vector, gate) in gates.iter_mut().enumerate().take(vector::STUB_COUNT) {
            let vector = vector as u8;
            *gate = Gate::interrupt(
                entry::stub_address(vector),
                code_selector.0,
                ist_slot(vector),
                vector == vector::BREAKPOINT,
            );
        }
        Idt(gates)
    });
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(idt),
    };
    // SAFETY: the table is 'static and every present gate points at an entry stub that saves
    // the registers, handles the vector and returns with `iretq` (or exits QEMU).
    unsafe { lidt(&pointer) };
    assert!(
        crate::extable::len() > 0,
        "the cowlab_extable section was not linked in"
    );
}

/// Loads an IDT with no entries, so that the next exception escalates to a triple fault.
///
/// # Safety
///
/// Every interrupt or exception after this resets the machine (QEMU with `-no-reboot` exits);
/// only the `selftest_triple_fault` harness test may call it.
pub unsafe fn load_empty_for_triple_fault() {
    let pointer = DescriptorTablePointer {
        limit: 0,
        base: VirtAddr::zero(),
    };
    // SAFETY: deliberately invalid table; the caller accepts the triple fault it causes.
    unsafe { lidt(&pointer) };
}
