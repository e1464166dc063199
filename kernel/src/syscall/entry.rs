//! The `syscall` instruction's way into the kernel and `sysretq`'s way out.
//!
//! `syscall` leaves the user RIP in RCX and RFLAGS in R11, loads CS/SS from STAR and RIP from
//! LSTAR, masks RFLAGS with SFMASK (interrupts, direction, trap and alignment-check off) and does
//! not touch RSP. The entry `swapgs`es to reach the per-CPU area (see `percpu`), switches to the
//! process's kernel stack, and pushes a [`TrapFrame`] exactly as an interrupt from ring 3 would
//! leave it (vector [`SYSCALL_VECTOR`]), so fork, exec and the scheduler see one frame format.
//! The way out is `sysretq` when the frame's RIP is canonical, else the `iretq` tail of the trap
//! path (`sysretq` with a non-canonical RCX faults in ring 0 on Intel CPUs: the classic
//! CVE-2012-0217). `sysretq`'s way reloads only the registers the Rust code may clobber (the
//! callee-saved ones are still the user's: [`TrapFrame::callee_saved`]); a call that rewrites
//! the frame's callee-saved registers (`execve`, `rt_sigreturn`) changes its vector and leaves
//! through `iretq`, which restores all fifteen. Interrupts stay disabled for the whole system call; they are re-enabled by
//! the RFLAGS the return restores.

use core::arch::global_asm;

use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask};
use x86_64::registers::rflags::RFlags;
use x86_64::VirtAddr;

use crate::errno::Errno;
use crate::gdt;
use crate::idt::TrapFrame;

/// The `vector` field of a frame pushed by the syscall entry (outside the IDT's 0..=255).
pub const SYSCALL_VECTOR: u64 = 0x100;

use crate::gdt::{USER_CS, USER_DS};

global_asm!(
    ".pushsection .text.cowlab_syscall_entry, \"ax\"",
    ".global cowlab_syscall_entry",
    "cowlab_syscall_entry:",
    "    swapgs",
    "    mov gs:[8], rsp",
    "    mov rsp, gs:[0]",
    "    push {user_ds}",
    "    push qword ptr gs:[8]",
    "    push r11",
    "    push {user_cs}",
    "    push rcx",
    "    push 0",
    "    push {vector}",
    "    push r15",
    "    push r14",
    "    push r13",
    "    push r12",
    "    push r11",
    "    push r10",
    "    push r9",
    "    push r8",
    "    push rbp",
    "    push rdi",
    "    push rsi",
    "    push rdx",
    "    push rcx",
    "    push rbx",
    "    push rax",
    "    mov rdi, rsp",
    "    call {dispatch}",
    // A frame whose vector is no longer SYSCALL_VECTOR leaves through iretq, which restores
    // every register: rt_sigreturn restored RCX and R11 too (`deliver::IRET_VECTOR`).
    "    cmp qword ptr [rsp + 15 * 8], {vector}",
    "    jne cowlab_trap_return",
    // A non-canonical (or kernel) RIP returns through iretq, which faults in user mode instead.
    "    mov rcx, [rsp + 17 * 8]",
    "    mov rax, rcx",
    "    shr rax, 47",
    "    jnz cowlab_trap_return",
    // Only the registers the Rust code may have clobbered are reloaded: RBX, RBP and R12-R15
    // still hold the frame's values, since `syscall_entry_rust` preserves them (SysV ABI) and
    // nothing changes them in a frame that leaves here (`TrapFrame::callee_saved`); RCX and R11
    // are the saved RIP and RFLAGS, as `sysretq` wants them.
    "    mov rax, [rsp]",
    "    mov rdx, [rsp + 3 * 8]",
    "    mov rsi, [rsp + 4 * 8]",
    "    mov rdi, [rsp + 5 * 8]",
    "    mov r8, [rsp + 7 * 8]",
    "    mov r9, [rsp + 8 * 8]",
    "    mov r10, [rsp + 9 * 8]",
    "    mov r11, [rsp + 19 * 8]",
    "    mov rsp, [rsp + 20 * 8]",
    "    swapgs",
    "    sysretq",
    ".popsection",
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    vector = const SYSCALL_VECTOR,
    dispatch = sym syscall_entry_rust,
);

extern "C" {
    fn cowlab_syscall_entry();
}

/// Called by the entry with the saved frame; the result goes to the frame's RAX.
extern "C" fn syscall_entry_rust(frame: &mut TrapFrame) {
    #[cfg(debug_assertions)]
    let saved = frame.callee_saved();
    let locked = crate::bkl::lock_from_user();
    let nr = frame.rax;
    super::dispatch(frame);
    if crate::proc::evict::pending() {
        crate::proc::evict::run_own(true);
    }
    // -ERESTARTSYS..=-ERESTART_RESTARTBLOCK in one unsigned compare (515, Linux's
    // ENOIOCTLCMD, is never returned); rt_sigreturn's RAX is the restored one, never a
    // restart request (its frame's vector is `IRET_VECTOR`, no longer `SYSCALL_VECTOR`).
    let ret = frame.rax.wrapping_add(Errno::ERESTART_RESTARTBLOCK as u64);
    if ret <= (Errno::ERESTART_RESTARTBLOCK as u64 - Errno::ERESTARTSYS as u64) {
        restart_requested(frame, nr);
    }
    crate::proc::on_return_to_user(frame);
    crate::bkl::release_to_user_if(locked);
    #[cfg(debug_assertions)]
    if frame.vector == SYSCALL_VECTOR {
        frame.assert_callee_saved(saved);
    }
}

#[cold]
#[inline(never)]
fn restart_requested(frame: &TrapFrame, nr: u64) {
    if frame.vector == SYSCALL_VECTOR {
        crate::proc::signal::deliver::note_restart(nr);
    }
}

/// Enables `syscall`: EFER.SCE, the entry point in LSTAR, the RFLAGS mask (STAR is set by
/// `gdt::init`).
pub fn init() {
    let selectors = gdt::selectors();
    assert_eq!(u64::from(selectors.user_code.0), USER_CS);
    assert_eq!(u64::from(selectors.user_data.0), USER_DS);
    LStar::write(VirtAddr::new(cowlab_syscall_entry as *const () as u64));
    SFMask::write(
        RFlags::INTERRUPT_FLAG
            | RFlags::DIRECTION_FLAG
            | RFlags::TRAP_FLAG
            | RFlags::ALIGNMENT_CHECK
            | RFlags::NESTED_TASK
            | RFlags::IOPL_HIGH
            | RFlags::IOPL_LOW,
    );
    // SAFETY: setting SCE only enables the syscall instruction, whose entry is set up above.
    unsafe { Efer::update(|flags| flags.insert(EferFlags::SYSTEM_CALL_EXTENSIONS)) };
}
