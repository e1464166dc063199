//! The context switch: kernel stack to kernel stack, and the frame a new process starts from.
//!
//! Model: every process has its own kernel stack. A process that is not running is stopped
//! inside [`cowlab_switch`], with its callee-saved registers pushed on that stack and the stack
//! pointer saved in its `Process::ctx_rsp`. The scheduler's idle loop runs on the boot stack and
//! is the other end of every switch (process -> idle -> process). A new process's stack is
//! prepared so that its first switch-in "returns" into `cowlab_trap_return` with a
//! [`TrapFrame`] above it, which enters ring 3 with `iretq`. FPU/SSE state is saved with
//! `fxsave64` by the idle loop around each run of a process (the kernel itself never uses it).

use alloc::boxed::Box;
use core::arch::{asm, global_asm};
use core::mem::MaybeUninit;

use crate::idt::TrapFrame;

global_asm!(
    ".pushsection .text.cowlab_switch, \"ax\"",
    // void cowlab_switch(u64 *save_rsp, u64 new_rsp)
    ".global cowlab_switch",
    "cowlab_switch:",
    "    push rbp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov [rdi], rsp",
    "    mov rsp, rsi",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    // A new task's first switch-in returns here: it leaves the kernel holding the big lock its
    // CPU's idle loop handed over, so it releases it on its way to ring 3 (`bkl`).
    ".global cowlab_first_return",
    "cowlab_first_return:",
    "    call {release}",
    "    jmp cowlab_trap_return",
    ".popsection",
    release = sym first_return_release,
);

/// The big lock's release on a new task's first way out (`cowlab_first_return`). The stack is
/// 16-byte aligned here: the switch popped six registers and the return address off the layout
/// `KernelStack::prepare` made, leaving the 22-word frame.
extern "C" fn first_return_release() {
    crate::bkl::release_to_user();
}

extern "C" {
    /// Saves the callee-saved registers and RSP in `*save_rsp`, resumes the context at `new_rsp`.
    pub fn cowlab_switch(save_rsp: *mut u64, new_rsp: u64);
    fn cowlab_first_return();
}

/// Size of a process's kernel stack.
pub const KERNEL_STACK_SIZE: usize = 32 * 1024;

/// A process's kernel stack (heap memory, 16-byte aligned). Left uninitialised but for the
/// canary, as Linux's stacks are: only the CPU's pushes and `prepare` write it, and nothing
/// reads a word before writing it, so zeroing 32 KiB per fork (4096 `rep stosq` iterations,
/// a fifth of a bare fork) would buy nothing.
pub struct KernelStack(Box<[MaybeUninit<u128>]>);

/// The word at the bottom of every kernel stack: if it changes, the stack overflowed into the
/// heap below it (there is no guard page: the stacks are heap memory).
const CANARY: u128 = 0x6b73_7461_6b5f_776f_6c62_6f77_5f6b_7473;

impl KernelStack {
    pub fn new() -> KernelStack {
        let mut words = Box::new_uninit_slice(KERNEL_STACK_SIZE / 16);
        words[0].write(CANARY);
        KernelStack(words)
    }

    /// One past the highest byte (what `canary_intact_below` takes).
    pub fn top(&self) -> u64 {
        self.0.as_ptr() as u64 + KERNEL_STACK_SIZE as u64
    }

    /// Lays out a first switch-in that enters `frame` through `cowlab_trap_return`; returns the
    /// `ctx_rsp` to switch to.
    pub fn prepare(&mut self, frame: &TrapFrame) -> u64 {
        let frame_at = self.top() - core::mem::size_of::<TrapFrame>() as u64;
        // Six callee-saved registers (zero) and the return address below the frame.
        let ctx = frame_at - 7 * 8;
        // SAFETY: both ranges lie inside this stack's buffer, which we own mutably, and are
        // 8-aligned (the top is 16-aligned, the frame is 22 words).
        unsafe {
            (frame_at as *mut TrapFrame).write(*frame);
            let words = ctx as *mut u64;
            for i in 0..6 {
                words.add(i).write(0);
            }
            words.add(6).write(cowlab_first_return as *const () as u64);
        }
        ctx
    }
}

/// FPU/SSE register image for `fxsave64`/`fxrstor64`.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

impl FpuState {
    /// The state after `fninit` with the default MXCSR: what a new program starts with.
    pub fn initial() -> Box<FpuState> {
        let mut state = Box::new(FpuState([0; 512]));
        // FCW = 0x37f (all exceptions masked, 64-bit precision), MXCSR = 0x1f80.
        state.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        state.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        state
    }

    pub fn save(&mut self) {
        // SAFETY: 512 writable bytes, 16-aligned; SSE is enabled by `enable_sse`.
        unsafe { asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    pub fn restore(&self) {
        // SAFETY: a valid image (from `initial` or `save`), 16-aligned.
        unsafe { asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }
}

/// Lets ring 3 use x87/SSE: CR0.EM off, CR0.MP on, CR4.OSFXSR and OSXMMEXCPT on.
pub fn enable_sse() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: only changes how FPU/SSE instructions behave; the kernel does not use them and
    // the state is saved per process.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
}

/// Whether the canary of the kernel stack whose top is `top` (a `KernelStack::top` of a live
/// stack) is intact: the check of every return to ring 3, from the top the scheduler recorded,
/// without finding the task. Only the idle loop has no stack top (0), and it never returns to
/// ring 3 (a test for 0 here cost every return 2 instructions).
#[inline]
pub fn canary_intact_below(top: u64) -> bool {
    debug_assert_ne!(top, 0, "return to ring 3 without a task's kernel stack");
    // The canary's upper half only (one 64-bit compare, not two, on every return to ring 3):
    // the stack grows down, so an overflow reaches the upper half (the higher address) first.
    let upper = top.wrapping_sub(KERNEL_STACK_SIZE as u64 - 8) as *const u64;
    // SAFETY: `top` is the top of a live `KernelStack` (the running task's, which it keeps
    // until it is reaped, never while it runs), so `upper` is the high half of its first
    // 16-byte word: in bounds, 8-byte aligned (a `Vec<u128>`), and written only through
    // `KernelStack::new` or by a stack overflow, which is what this read detects.
    unsafe { upper.read_volatile() == (CANARY >> 64) as u64 }
}
