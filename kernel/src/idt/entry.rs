//! The assembly between the CPU's interrupt delivery and Rust: entry stubs and the trap frame.
//!
//! The `x86-interrupt` ABI hides the general-purpose registers, but a useful crash dump (and,
//! later, returning to user mode with changed registers) needs all of them. So every vector we
//! wire gets a tiny stub, like xv6's `vectors.S` and Linux's `idtentry`: it pushes a dummy error
//! code when the CPU does not push one, then the vector number, and jumps to `trap_common`, which
//! saves the fifteen GPRs, calls [`super::dispatch::trap_dispatch`] with a pointer to the
//! resulting [`TrapFrame`], restores the (possibly modified) registers and `iretq`s.
//!
//! Stubs are 16 bytes apart, so stub `n` is at `cowlab_trap_stubs + 16 * n` (each is at most
//! 9 bytes: `push imm8`, `push imm8`, `jmp rel32`; `.p2align 4` pads it to 16). Stack alignment: the CPU aligns RSP to 16 before pushing its 5-word
//! frame; with the error code, the vector and 15 registers that is 22 words, so RSP is 16-aligned
//! again at the `call`, as the SysV ABI requires. Kernel code is built without SSE, so no vector
//! state needs saving. Entries from and returns to ring 3 `swapgs` (decided by the RPL of the saved CS), so kernel
//! code always runs with the per-CPU area in GS.

use core::arch::global_asm;

use super::vector;

/// The registers saved on interrupt entry, lowest address first: the layout `trap_common`
/// pushes, then the vector and error code from the stub, then the CPU's interrupt frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Pushed by the stub.
    pub vector: u64,
    /// Pushed by the CPU for some exceptions, else 0 (pushed by the stub).
    pub error_code: u64,
    // The CPU's interrupt frame.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 22 * 8);

impl TrapFrame {
    /// The callee-saved registers of the SysV ABI (RBX, RBP, R12-R15). The ways back from a
    /// trap and from `sysretq`'s system calls do not reload them: the Rust code between entry
    /// and exit preserves them, so they still hold the frame's values, as long as nothing
    /// rewrites them in the frame. Only `rt_sigreturn` and `execve` do, and both leave through
    /// `cowlab_trap_return`'s full restore (their frames' vectors are no longer the system
    /// call's); debug kernels check the rest with [`Self::assert_callee_saved`].
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub fn callee_saved(&self) -> [u64; 6] {
        [self.rbx, self.rbp, self.r12, self.r13, self.r14, self.r15]
    }

    /// Panics if the frame's callee-saved registers differ from `saved` (taken at entry): a
    /// handler changed one in a frame whose exit would not restore it.
    #[track_caller]
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    pub fn assert_callee_saved(&self, saved: [u64; 6]) {
        assert_eq!(
            self.callee_saved(),
            saved,
            "callee-saved register changed in a frame that leaves without reloading them \
             (vector {:#x})",
            self.vector
        );
    }
}

global_asm!(
    ".pushsection .text.cowlab_trap_entry, \"ax\"",
    ".p2align 4",
    ".global cowlab_trap_stubs",
    "cowlab_trap_stubs:",
    ".set vec, 0",
    ".rept {count}",
    "    .p2align 4",
    "    .if ((vec < 32) && (({err_mask} >> vec) & 1))",
    "    .else",
    "        push 0",
    "    .endif",
    "    push vec",
    "    .if vec == {nmi}",
    "        jmp cowlab_nmi_common",
    "    .else",
    "        jmp cowlab_trap_common",
    "    .endif",
    "    .set vec, vec + 1",
    ".endr",
    ".p2align 4",
    "",
    // An NMI can arrive in kernel mode with the user's GS base still loaded: between `syscall`
    // and its `swapgs`, or between the exit's `swapgs` and `sysretq`. The saved CS cannot tell,
    // so the GS base MSR does (Linux `paranoid_entry`): a kernel base has its top bit set. Only
    // then is GS swapped here, and back before the `iretq`; every other case is the common path.
    "cowlab_nmi_common:",
    "    test qword ptr [rsp + 24], 3",
    "    jnz cowlab_trap_common",
    "    push rax",
    "    push rcx",
    "    push rdx",
    "    mov ecx, 0xc0000101",
    "    rdmsr",
    "    test edx, edx",
    "    pop rdx",
    "    pop rcx",
    "    pop rax",
    "    js cowlab_trap_common",
    "    swapgs",
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
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch}",
    "    pop rax",
    "    pop rbx",
    "    pop rcx",
    "    pop rdx",
    "    pop rsi",
    "    pop rdi",
    "    pop rbp",
    "    pop r8",
    "    pop r9",
    "    pop r10",
    "    pop r11",
    "    pop r12",
    "    pop r13",
    "    pop r14",
    "    pop r15",
    "    add rsp, 16",
    "    swapgs",
    "    iretq",
    "",
    "cowlab_trap_common:",
    // From ring 3 (CS at [rsp + 24] has RPL 3): swap in the kernel's GS base (see `percpu`).
    "    test qword ptr [rsp + 24], 3",
    "    jz 1f",
    "    swapgs",
    "1:  push r15",
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
    "    cld",
    "    mov rdi, rsp",
    "    call {dispatch}",
    // Back from a trap: RBX, RBP and R12-R15 still hold the frame's values (`trap_dispatch`
    // preserves them, SysV ABI, and no trap handler rewrites them: `TrapFrame::callee_saved`),
    // so only the nine registers it may clobber are reloaded.
    "    mov rax, [rsp]",
    "    mov rcx, [rsp + 2 * 8]",
    "    mov rdx, [rsp + 3 * 8]",
    "    mov rsi, [rsp + 4 * 8]",
    "    mov rdi, [rsp + 5 * 8]",
    "    mov r8, [rsp + 7 * 8]",
    "    mov r9, [rsp + 8 * 8]",
    "    mov r10, [rsp + 9 * 8]",
    "    mov r11, [rsp + 10 * 8]",
    // The fifteen registers, the vector and the error code.
    "    add rsp, 17 * 8",
    "    test qword ptr [rsp + 8], 3",
    "    jz 3f",
    "    swapgs",
    "3:  iretq",
    // Every register from the frame: the way into ring 3 for a new process (its kernel stack
    // holds a TrapFrame here) and after a system call that rewrote its frame.
    ".global cowlab_trap_return",
    "cowlab_trap_return:",
    "    pop rax",
    "    pop rbx",
    "    pop rcx",
    "    pop rdx",
    "    pop rsi",
    "    pop rdi",
    "    pop rbp",
    "    pop r8",
    "    pop r9",
    "    pop r10",
    "    pop r11",
    "    pop r12",
    "    pop r13",
    "    pop r14",
    "    pop r15",
    // Drop the vector and error code.
    "    add rsp, 16",
    "    test qword ptr [rsp + 8], 3",
    "    jz 2f",
    "    swapgs",
    "2:  iretq",
    ".popsection",
    count = const vector::STUB_COUNT,
    err_mask = const vector::HAS_ERROR_CODE,
    nmi = const vector::NMI,
    dispatch = sym super::dispatch::trap_dispatch,
);

extern "C" {
    /// Restores a [`TrapFrame`] at `rsp` and `iretq`s to it (the tail of `trap_common`; jumped
    /// to by the syscall exit and `proc::switch::cowlab_first_return`).
    #[allow(dead_code)]
    pub fn cowlab_trap_return() -> !;
    static cowlab_trap_stubs: [u8; 16 * vector::STUB_COUNT];
}

/// Address of the entry stub of `vector` (below [`vector::STUB_COUNT`]).
pub fn stub_address(vector: u8) -> u64 {
    assert!(
        (vector as usize) < vector::STUB_COUNT,
        "vector {vector} has no entry stub"
    );
    // Only the symbol's address is taken; the stubs are code and never read as data.
    let base = (&raw const cowlab_trap_stubs) as u64;
    base + 16 * u64::from(vector)
}
