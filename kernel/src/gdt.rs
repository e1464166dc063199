//! The GDT and TSS: segments only because x86_64 still insists on a few.
//!
//! Long mode ignores segment bases and limits, but the CPU still needs code/data descriptors for
//! ring 0 and ring 3, and a TSS for the stacks it switches to on its own. The order of the
//! descriptors is dictated by `syscall`/`sysret` (programmed through the STAR MSR, used from the
//! next issue on): `syscall` loads CS = STAR.syscall and SS = STAR.syscall + 8, so kernel data
//! follows kernel code; 64-bit `sysret` loads SS = STAR.sysret + 8 and CS = STAR.sysret + 16, so
//! the user slots are "32-bit user code (compat, unused), user data, 64-bit user code". This is
//! Linux's layout. STAR is written here already so that a wrong layout fails at boot.
//!
//! The TSS provides separate Interrupt Stack Table stacks for the exceptions that can arrive when
//! the current stack is unusable: a double fault (often caused by a kernel stack overflow), an
//! NMI and a machine check, each on its own stack so that one nesting inside another does not
//! clobber it. `rsp0` (the stack for interrupts taken in ring 3) is set up for user mode.

use core::cell::UnsafeCell;

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::Star;
use x86_64::structures::gdt::{
    Descriptor, DescriptorFlags, GlobalDescriptorTable, SegmentSelector,
};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use crate::percpu::MAX_CPUS;

/// User code and data selectors with RPL 3 (GDT slots 5 and 4).
pub const USER_CS: u64 = 0x2b;
pub const USER_DS: u64 = 0x23;

/// IST slot (0-based, as in `TaskStateSegment::interrupt_stack_table`) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot of the NMI stack.
pub const NMI_IST: u16 = 1;
/// IST slot of the machine-check stack.
pub const MACHINE_CHECK_IST: u16 = 2;

const IST_STACK_SIZE: usize = 32 * 1024;
const RING0_STACK_SIZE: usize = 64 * 1024;

/// A statically allocated stack the CPU switches to by itself. `UnsafeCell` keeps it in writable
/// memory; Rust code never forms a reference to its contents.
#[repr(C, align(16))]
struct Stack<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: only the CPU writes to these stacks (on exception entry); Rust code only takes their
// address.
unsafe impl<const N: usize> Sync for Stack<N> {}

impl<const N: usize> Stack<N> {
    const fn new() -> Self {
        Stack(UnsafeCell::new([0; N]))
    }

    /// The initial stack pointer: one past the highest byte (stacks grow down).
    fn top(&self) -> VirtAddr {
        VirtAddr::from_ptr(self.0.get()) + N as u64
    }
}

static DOUBLE_FAULT_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static NMI_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static MACHINE_CHECK_STACK: Stack<IST_STACK_SIZE> = Stack::new();
static RING0_STACK: Stack<RING0_STACK_SIZE> = Stack::new();

/// The segment selectors, with their RPL.
#[derive(Clone, Copy, Debug)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

/// A CPU's TSS: written once when the CPU comes up, then only its `rsp0` by [`set_rsp0`] on a
/// process switch.
struct TssCell(UnsafeCell<TaskStateSegment>);

// SAFETY: entry `i` is written by CPU `i` only: at its bring-up (before its TR points at it) and
// by `set_rsp0` with interrupts disabled (the CPU reads rsp0 only on an interrupt from ring 3).
unsafe impl Sync for TssCell {}

static TSS: [TssCell; MAX_CPUS] =
    [const { TssCell(UnsafeCell::new(TaskStateSegment::new())) }; MAX_CPUS];
/// One GDT per CPU: the descriptors are the same, but a TSS descriptor names one TSS and is
/// marked busy by `ltr`, so every CPU needs its own.
static GDT: [Once<GlobalDescriptorTable>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static SELECTORS: Once<Selectors> = Once::new();

/// The top of each stack the TSS of one CPU names (double fault, NMI, machine check, rsp0).
pub struct CpuStacks {
    pub double_fault: VirtAddr,
    pub nmi: VirtAddr,
    pub machine_check: VirtAddr,
    pub ring0: VirtAddr,
}

/// Builds and loads the boot CPU's GDT and TSS, reloads the segment registers and writes STAR.
pub fn init() {
    init_cpu(
        0,
        CpuStacks {
            double_fault: DOUBLE_FAULT_STACK.top(),
            nmi: NMI_STACK.top(),
            machine_check: MACHINE_CHECK_STACK.top(),
            ring0: RING0_STACK.top(),
        },
    );
}

/// Builds and loads CPU `cpu`'s GDT and TSS over `stacks`. Each CPU calls it once for itself
/// (the boot CPU through [`init`], an application processor from `smp`'s entry).
pub fn init_cpu(cpu: usize, stacks: CpuStacks) {
    let tss_cell = &TSS[cpu];
    // SAFETY: this CPU's TSS, before its TR points at it: nothing else reads or writes it.
    let tss = unsafe { &mut *tss_cell.0.get() };
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] = stacks.double_fault;
    tss.interrupt_stack_table[NMI_IST as usize] = stacks.nmi;
    tss.interrupt_stack_table[MACHINE_CHECK_IST as usize] = stacks.machine_check;
    tss.privilege_stack_table[0] = stacks.ring0;
    let mut built = None;
    let gdt = GDT[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        // The 32-bit user code slot that 64-bit sysret skips over; never loaded.
        gdt.append(Descriptor::UserSegment(DescriptorFlags::USER_CODE32.bits()));
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        // SAFETY: the TSS is a 'static that stays valid and is only changed through `set_rsp0`.
        let tss = gdt.append(unsafe { Descriptor::tss_segment_unchecked(tss_cell.0.get()) });
        built = Some(Selectors {
            kernel_code,
            kernel_data,
            user_data,
            user_code,
            tss,
        });
        gdt
    });
    // Every CPU's GDT has the same layout, so the boot CPU's selectors are everyone's.
    let selectors = *SELECTORS.call_once(|| built.expect("the boot CPU builds its GDT first"));
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, of the right kinds (code
    // for CS, data for SS/DS/ES, an available TSS for TR); the GDT and TSS are 'static.
    unsafe {
        CS::set_reg(selectors.kernel_code);
        SS::set_reg(selectors.kernel_data);
        DS::set_reg(selectors.kernel_data);
        ES::set_reg(selectors.kernel_data);
        load_tss(selectors.tss);
    }
    Star::write(
        selectors.user_code,
        selectors.user_data,
        selectors.kernel_code,
        selectors.kernel_data,
    )
    .expect("GDT layout satisfies the syscall/sysret ordering");
}

/// Sets the stack the CPU switches to on an interrupt or exception from ring 3 (the running
/// process's kernel stack) of CPU `cpu`, the calling CPU. Call with interrupts disabled.
pub fn set_rsp0(cpu: usize, top: u64) {
    // SAFETY: the caller's own TSS with interrupts disabled: no interrupt can read rsp0 during
    // the write, no other CPU writes it, and no reference to it is held anywhere else.
    unsafe { (*TSS[cpu].0.get()).privilege_stack_table[0] = VirtAddr::new(top) };
}

/// The selectors of the loaded GDT. Panics before [`init`].
pub fn selectors() -> &'static Selectors {
    SELECTORS.get().expect("gdt::init has run")
}
