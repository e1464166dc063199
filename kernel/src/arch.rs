//! The hardware side of `cowlab_mm::Arch`: how the memory manager touches this machine.
//!
//! `cowlab-mm` keeps its policy in safe code over three mechanisms, and this is the kernel's
//! implementation of them: physical memory is the bootloader's offset mapping of all RAM, a TLB
//! flush is `invlpg` (or a CR3 reload for a whole address space), and interrupt masking for
//! GUP-fast is `cli` with RFLAGS saved. There is one CPU and no PCID, so only the address space
//! loaded in CR3 can hold cached user translations: flushing any other root is a no-op, because
//! loading it later flushes the TLB anyway (user pages are never global).

use cowlab_mm::addr::{PhysAddr, VirtAddr};
use cowlab_mm::arch::{Arch, IrqState};
use x86_64::instructions::{interrupts, tlb};
use x86_64::registers::control::Cr3;
use x86_64::registers::rflags::{self, RFlags};

/// The kernel's platform for `cowlab_mm::Mm`.
pub struct KernelArch {
    /// Virtual address of physical address 0 (the bootloader's offset mapping).
    physical_memory_offset: u64,
}

impl KernelArch {
    /// # Safety
    ///
    /// `physical_memory_offset` must be where the bootloader mapped all of physical memory
    /// (writable, for the kernel's lifetime): `Arch` obligation 1 rests on it.
    pub unsafe fn new(physical_memory_offset: u64) -> KernelArch {
        KernelArch {
            physical_memory_offset,
        }
    }

    /// Whether `root` is the PML4 loaded in CR3.
    fn is_loaded(root: PhysAddr) -> bool {
        Cr3::read().0.start_address().as_u64() == root.as_u64()
    }
}

// SAFETY: obligation 1: the window is the bootloader's mapping of all physical memory, fixed for
// the kernel's lifetime and page aligned (`KernelArch::new`'s contract); the frames the memory
// manager touches through it are the ones the frame table hands out, which no Rust object
// overlaps. Obligation 2: one CPU, no PCID, no global user pages; a root that is not in CR3 has
// no cached translations (they were flushed when CR3 last changed), and for the loaded root
// `invlpg`/a CR3 reload drop them.
unsafe impl Arch for KernelArch {
    fn phys_window(&self) -> *mut u8 {
        self.physical_memory_offset as *mut u8
    }

    fn flush_page(&self, root: PhysAddr, va: VirtAddr) {
        if Self::is_loaded(root) {
            tlb::flush(x86_64::VirtAddr::new_truncate(va.as_u64()));
        }
    }

    fn flush_all(&self, root: PhysAddr) {
        if Self::is_loaded(root) {
            tlb::flush_all();
        }
    }

    fn irq_save(&self) -> IrqState {
        let flags = rflags::read_raw();
        interrupts::disable();
        IrqState(flags)
    }

    fn irq_restore(&self, state: IrqState) {
        if RFlags::from_bits_truncate(state.0).contains(RFlags::INTERRUPT_FLAG) {
            interrupts::enable();
        }
    }
}
