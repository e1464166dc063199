//! The kernel half of the page tables, and the paging control bits.
//!
//! Every user address space will get its own PML4 whose entries 256..511 are copied from the
//! boot PML4 (docs/architecture.md). A copy only keeps seeing later kernel mappings if those
//! mappings never create a *new* PML4 entry, so at boot we allocate a zeroed PDPT for every
//! empty upper-half entry: from then on the kernel half of every PML4 is identical forever, and
//! new kernel mappings only fill lower levels that all address spaces share. The cost is at most
//! 256 frames (1 MiB). The entries are supervisor-only (no U/S bit), as all kernel memory is.
//!
//! We also set CR0.WP (ring 0 honours read-only pages: needed for copy-on-write of pages the
//! kernel writes on a user's behalf) and EFER.NXE (the NX bit is valid in entries). SMEP and SMAP
//! stay off for now (and qemu64 lacks them).

use x86_64::registers::control::{Cr0, Cr0Flags, Cr3};
use x86_64::registers::model_specific::{Efer, EferFlags};
use x86_64::structures::paging::{PageTable, PageTableFlags};

use cowlab_mm::addr::PhysAddr;
use cowlab_mm::PAGE_SIZE;

use crate::memory;

/// First PML4 index of the kernel half.
pub const KERNEL_PML4_START: usize = 256;

/// Sets CR0.WP and EFER.NXE, then pre-allocates the kernel half's PDPTs in the active PML4.
pub fn init() {
    // SAFETY: WP only makes ring 0 respect read-only mappings, which the kernel never relies on
    // writing; NXE only makes the NX bit meaningful (the bootloader already maps with it).
    unsafe {
        Cr0::update(|flags| flags.insert(Cr0Flags::WRITE_PROTECT));
        Efer::update(|flags| flags.insert(EferFlags::NO_EXECUTE_ENABLE));
    }

    let (pml4_frame, _) = Cr3::read();
    let pml4_phys = PhysAddr::new(pml4_frame.start_address().as_u64());
    // SAFETY: CR3 names the active PML4, a page-table frame the bootloader allocated and we now
    // own; it is mapped at the physical-memory offset; nothing else holds a reference to it
    // during boot. Writing an empty entry does not change any existing translation.
    let pml4 = unsafe { &mut *memory::phys_to_virt(pml4_phys).cast::<PageTable>() };
    let mut added = 0;
    for entry in pml4.iter_mut().skip(KERNEL_PML4_START) {
        if !entry.is_unused() {
            continue;
        }
        let frame = memory::frames()
            .alloc()
            .expect("frames for the kernel-half PDPTs");
        // SAFETY: the frame is freshly allocated (ours alone) and mapped at the offset.
        unsafe { core::ptr::write_bytes(memory::phys_to_virt(frame), 0, PAGE_SIZE) };
        entry.set_addr(
            x86_64::PhysAddr::new(frame.as_u64()),
            PageTableFlags::PRESENT | PageTableFlags::WRITABLE,
        );
        added += 1;
    }
    info!(
        "paging: kernel half shared: {added} PDPTs pre-allocated for PML4 entries \
         {KERNEL_PML4_START}..511; CR0.WP and EFER.NXE set"
    );
}
