//! The per-CPU areas, one per CPU, each reached through that CPU's GS.
//!
//! `syscall` does not switch stacks, so its entry (see `syscall::entry`) must find the running
//! process's kernel stack with no free register: it `swapgs`es and reads `gs:[0]`, parking the
//! user RSP in `gs:[8]`. Invariant: while a CPU runs kernel code, its `GsBase` points at its own
//! entry of [`PERCPU`] and `KernelGsBase` holds the user's GS base; in ring 3 the two are swapped.
//! Every entry from ring 3 (`syscall`, interrupts and exceptions with a ring-3 CS) and every
//! return to it `swapgs`es exactly once. `kernel_stack` equals the CPU's TSS `rsp0`: both are set
//! by [`set_kernel_stack`] when the scheduler switches processes. `gs:[16]` is the CPU's index
//! (0 for the boot CPU, then the application processors in MADT order, see `smp`), so
//! [`cpu_id`] is one load with no lock and no table walk.

use core::arch::asm;
use core::cell::UnsafeCell;

use x86_64::registers::model_specific::{GsBase, KernelGsBase};
use x86_64::VirtAddr;

use crate::gdt;

/// Most CPUs the kernel runs on: CPU sets (`mm_cpumask`, affinity masks) are one `u64`.
pub const MAX_CPUS: usize = 64;
const _: () = assert!(MAX_CPUS.is_power_of_two());

/// The fields the assembly addresses by offset (`gs:[0]`, `gs:[8]`, `gs:[16]`), then the
/// running task's state that every entry from ring 3 reads ([`Slot`]): one `mov` from `gs:`
/// each, where an array indexed by [`cpu_id`] costs a load, a mask and an indexed load.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Top of the running process's kernel stack (offset 0).
    pub kernel_stack: u64,
    /// Scratch slot for the user RSP during `syscall` entry (offset 8).
    pub user_rsp: u64,
    /// This CPU's index (offset 16), written once by [`init`].
    pub cpu: u64,
    /// The [`Slot`]s, each owned by the module that names it.
    slots: [u64; Slot::COUNT],
}

/// A word of this CPU's area owned by another module, read and written only by this CPU
/// through [`read`] and [`write`] (Linux's `this_cpu_read`/`this_cpu_write`).
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Slot {
    /// `proc`: the running thread's tid (0 in the idle loop).
    Tid,
    /// `proc`: the running thread's tgid (0 in the idle loop).
    Tgid,
    /// `proc`: the running task's group record (`CURRENT_GROUP`, null in the idle loop).
    Group,
    /// `proc`: the running task's kernel-stack top (0 in the idle loop).
    StackTop,
    /// `vm`: the `MmSpace` of the loaded address space (`CURRENT_RAW`, null for the boot table).
    Aspace,
    /// `kcov`: the running task's coverage page table (null: not traced), read by the hook.
    #[cfg_attr(not(feature = "kcov"), allow(dead_code))]
    KcovPages,
    /// `kcov`: the words of that buffer.
    #[cfg_attr(not(feature = "kcov"), allow(dead_code))]
    KcovWords,
}

impl Slot {
    const COUNT: usize = 7;
    /// Byte offset from GS base.
    const fn offset(self) -> usize {
        core::mem::offset_of!(PerCpu, slots) + 8 * self as usize
    }
}
const _: () = assert!(core::mem::size_of::<PerCpu>() == 128);

struct PerCpuCell(UnsafeCell<PerCpu>);

// SAFETY: entry `i` is written only by CPU `i` (its own `init`, `set_kernel_stack` with
// interrupts disabled, the syscall entry with interrupts masked by SFMASK); other CPUs never
// touch it.
unsafe impl Sync for PerCpuCell {}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: PerCpuCell = PerCpuCell(UnsafeCell::new(PerCpu {
    kernel_stack: 0,
    user_rsp: 0,
    cpu: 0,
    slots: [0; Slot::COUNT],
}));

static PERCPU: [PerCpuCell; MAX_CPUS] = [EMPTY; MAX_CPUS];

/// Points this CPU's GS at its per-CPU area, entry `cpu` (the kernel side of the invariant
/// above). Each CPU calls it once, with interrupts disabled, before anything reads [`cpu_id`].
pub fn init(cpu: usize) {
    assert!(cpu < MAX_CPUS, "CPU index {cpu} past MAX_CPUS");
    // SAFETY: entry `cpu` belongs to the calling CPU alone (the caller's index is its own) and
    // nothing reads it before GS points at it.
    unsafe { (*PERCPU[cpu].0.get()).cpu = cpu as u64 };
    GsBase::write(VirtAddr::from_ptr(PERCPU[cpu].0.get()));
    KernelGsBase::write(VirtAddr::zero());
}

/// The index of the CPU this runs on. Only meaningful in kernel code after [`init`] (GS is the
/// kernel's); a task that can be preempted and migrated must treat the answer as a hint.
#[inline]
pub fn cpu_id() -> usize {
    let cpu: u64;
    // SAFETY: in kernel mode GS points at this CPU's `PerCpu` (invariant above); offset 16 is
    // `cpu`, written once before GS was set.
    unsafe { asm!("mov {}, gs:[16]", out(reg) cpu, options(nostack, readonly, preserves_flags)) };
    // Always below MAX_CPUS (`init` asserts it); the mask tells the compiler so, which drops the
    // bounds check of every per-CPU array access (the fault path makes several).
    cpu as usize & (MAX_CPUS - 1)
}

/// This CPU's `slot`. Kernel code only (GS is the kernel's); a task that can migrate reads the
/// CPU it runs on now, as with [`cpu_id`].
#[inline(always)]
pub fn read<const SLOT: usize>() -> u64 {
    const { assert!(is_slot(SLOT)) };
    let value: u64;
    // SAFETY: in kernel mode GS points at this CPU's `PerCpu` (invariant above) and `SLOT` is the
    // offset of one of its slots (asserted at compile time); the load has no side effect.
    unsafe {
        asm!("mov {}, gs:[{off}]", out(reg) value, off = const SLOT,
             options(nostack, readonly, preserves_flags))
    };
    value
}

/// Sets this CPU's `slot` (see [`read`]). Only this CPU touches its area.
#[inline(always)]
pub fn write<const SLOT: usize>(value: u64) {
    const { assert!(is_slot(SLOT)) };
    // SAFETY: as in `read`; the word belongs to this CPU, and no other CPU reads or writes it.
    unsafe {
        asm!("mov gs:[{off}], {}", in(reg) value, off = const SLOT,
             options(nostack, preserves_flags))
    };
}

/// Whether `offset` is that of a [`Slot`].
const fn is_slot(offset: usize) -> bool {
    offset >= Slot::Tid.offset()
        && offset < core::mem::size_of::<PerCpu>()
        && offset.is_multiple_of(8)
}

/// The offset of `slot` for [`read`]/[`write`]'s const parameter.
pub const fn slot(slot: Slot) -> usize {
    slot.offset()
}

/// Makes `top` the stack for entries from ring 3 on this CPU: the `syscall` entry's and the
/// TSS's `rsp0`. Call with interrupts disabled.
pub fn set_kernel_stack(top: u64) {
    let cpu = cpu_id();
    // SAFETY: interrupts are disabled (caller) and the syscall entry cannot run while this CPU
    // runs the kernel: nothing else accesses this CPU's area during the write.
    unsafe { (*PERCPU[cpu].0.get()).kernel_stack = top };
    gdt::set_rsp0(cpu, top);
}
