//! The per-CPU area, reached through GS: what the `syscall` entry needs before it has a stack.
//!
//! `syscall` does not switch stacks, so its entry (see `syscall::entry`) must find the running
//! process's kernel stack with no free register: it `swapgs`es and reads `gs:[0]`, parking the
//! user RSP in `gs:[8]`. Invariant: while the CPU runs kernel code, `GsBase` points at [`PERCPU`]
//! and `KernelGsBase` holds the user's GS base; in ring 3 the two are swapped. Every entry from
//! ring 3 (`syscall`, interrupts and exceptions with a ring-3 CS) and every return to it
//! `swapgs`es exactly once. `kernel_stack` equals the TSS's `rsp0`: both are set by
//! [`set_kernel_stack`] when the scheduler switches processes.

use core::cell::UnsafeCell;

use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::VirtAddr;

use crate::gdt;

/// The fields the assembly addresses by offset (`gs:[0]`, `gs:[8]`).
#[repr(C)]
pub struct PerCpu {
    /// Top of the running process's kernel stack (offset 0).
    pub kernel_stack: u64,
    /// Scratch slot for the user RSP during `syscall` entry (offset 8).
    pub user_rsp: u64,
}

struct PerCpuCell(UnsafeCell<PerCpu>);

// SAFETY: one CPU; written only with interrupts disabled (`set_kernel_stack`) or by the syscall
// entry assembly, which runs with interrupts masked by SFMASK.
unsafe impl Sync for PerCpuCell {}

static PERCPU: PerCpuCell = PerCpuCell(UnsafeCell::new(PerCpu {
    kernel_stack: 0,
    user_rsp: 0,
}));

/// Points GS at the per-CPU area (the kernel side of the invariant above).
pub fn init() {
    GsBase::write(VirtAddr::from_ptr(PERCPU.0.get()));
    KernelGsBase::write(VirtAddr::zero());
}

/// Makes `top` the stack for entries from ring 3: the `syscall` entry's and the TSS's `rsp0`.
/// Call with interrupts disabled.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: interrupts are disabled (caller) and the syscall entry cannot run while the kernel
    // does: nothing else accesses the area during the write.
    unsafe { (*PERCPU.0.get()).kernel_stack = top };
    gdt::set_rsp0(top);
}
