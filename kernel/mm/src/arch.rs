//! The mechanism boundary: what the memory manager needs from the CPU and the platform.
//!
//! Three things, nothing more: a linear window over all physical memory (physical address 0 at
//! [`Arch::phys_window`]), TLB invalidation, and interrupt masking for GUP-fast. The kernel
//! implements it with the bootloader's offset mapping, `invlpg` and `cli`/`popf`; the host
//! implementation (`host::HostArch`) uses a page-aligned buffer and an emulated TLB. Everything
//! above this trait, including the page-table format, is shared by both.

use crate::addr::{PhysAddr, VirtAddr};

/// Interrupt state saved by [`Arch::irq_save`] (on x86_64, RFLAGS).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IrqState(pub u64);

/// The platform under the memory manager.
///
/// # Safety
///
/// Implementors promise:
/// 1. [`Arch::phys_window`] returns the same pointer for the lifetime of the value, and
///    `phys_window() + p` is valid for reads and writes (non-overlapping with any Rust object
///    the kernel uses otherwise) for every physical address `p` below
///    `frames.len() * PAGE_SIZE`, for the [`crate::frame::FrameTable`] the `Mm` is built with;
///    the pointer is page aligned.
/// 2. After [`Arch::flush_page`] (resp. [`Arch::flush_all`]) returns, no CPU uses a translation of
///    that page (resp. of any page) under the given root that was cached before the call.
pub unsafe trait Arch: Sync {
    /// Where physical address 0 appears in the kernel's virtual memory.
    fn phys_window(&self) -> *mut u8;

    /// Invalidates any cached translation of `va` in the address space whose PML4 is `root`.
    /// May do nothing when `root` is not loaded on any CPU and loading it flushes.
    fn flush_page(&self, root: PhysAddr, va: VirtAddr);

    /// Invalidates every cached user translation of the address space whose PML4 is `root`.
    fn flush_all(&self, root: PhysAddr);

    /// Disables interrupts on this CPU, returning the previous state.
    fn irq_save(&self) -> IrqState;

    /// Restores the state returned by the matching [`Arch::irq_save`].
    fn irq_restore(&self, state: IrqState);

    /// Debug hook: `frame` just lost its last reference and went back to the allocator. No
    /// cached translation may still reach it (pages are freed only after the flush that
    /// removes their last translation). The kernel does nothing; the host's emulated TLB
    /// panics if one of its entries still maps the frame.
    fn frame_freed(&self, frame: PhysAddr) {
        let _ = frame;
    }
}
