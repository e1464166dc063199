//! The fixup sites: small assembly routines whose one memory access may fault.
//!
//! Each routine is an `extern "C"` function that returns 0 on success and 1 after a fault, in
//! which case its landing pad has stored the fixup registers (r10/r11, see the parent module)
//! through its last argument. The Rust wrappers turn that into `Result<_, Fault>`. The
//! `extable_entry` assembler macro is how a site registers itself; user copies will be written
//! the same way, in this file's assembly block (an assembler macro can be defined only once per
//! crate, and every `global_asm!` of the crate is assembled as one module).

use core::arch::global_asm;

use super::{Fault, KIND_PROBE, KIND_QUIET};

/// What a landing pad stores: the two fixup registers.
#[repr(C)]
#[derive(Default)]
struct RawFault {
    r10: u64,
    r11: u64,
}

// The fixup sites. Each function returns 0 on success and 1 after a fault, having stored r10/r11
// through its `fault` argument. SysV: arguments in rdi, rsi, rdx; result in rax.
global_asm!(
    // Registers one faulting instruction `\insn` with landing pad `\fixup`.
    ".macro extable_entry insn, fixup, kind",
    ".pushsection cowlab_extable, \"aR\"",
    ".balign 4",
    ".long \\insn - .",
    ".long \\fixup - .",
    ".long \\kind",
    ".popsection",
    ".endm",
    "",
    // The common landing pad: store r10/r11 through rdx, return 1.
    ".pushsection .text.cowlab_extable_fixups, \"ax\"",
    "cowlab_fixup_store_rdx:",
    "    mov [rdx], r10",
    "    mov [rdx + 8], r11",
    "    mov eax, 1",
    "    ret",
    "",
    // u64 cowlab_probe_read_u8(const u8 *addr, u64 *out, RawFault *fault)
    ".global cowlab_probe_read_u8",
    "cowlab_probe_read_u8:",
    "1:  movzx eax, byte ptr [rdi]",
    "    mov [rsi], rax",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {probe}",
    "",
    // u64 cowlab_probe_write_u8(u8 *addr, u64 value, RawFault *fault)
    ".global cowlab_probe_write_u8",
    "cowlab_probe_write_u8:",
    "1:  mov byte ptr [rdi], sil",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {probe}",
    "",
    // u64 cowlab_read_u64_quiet(const u64 *addr, u64 *out, RawFault *fault)
    ".global cowlab_read_u64_quiet",
    "cowlab_read_u64_quiet:",
    "1:  mov rax, [rdi]",
    "    mov [rsi], rax",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {quiet}",
    "",
    // u64 cowlab_user_copy(u8 *dst, const u8 *src, u64 len): bytes NOT copied (0 = all).
    // Quadwords first (`rep movsq`), then the 0-7 bytes left (`rep movsb`): a string
    // instruction's every repetition is an instruction, so a 4 KiB copy is 512 of them rather
    // than 4096 (`file_read_4k` and `file_write_4k` spent about 4100 guest instructions in
    // the byte copy). `rep movsb` keeps the remaining count in rcx as it goes, so after its
    // fault the count is exact. After a fault in `rep movsq` (rcx quadwords and rdx bytes
    // left, rsi/rdi at the quadword that faulted) the bytes before the faulting one are
    // copied and the rest reported left: the fault address (r10) lies within 8 bytes of rdi
    // (the destination faulted) or of rsi (the source did), and the bytes before it sit on
    // the page that did not fault, so no second fault is taken (a failed 8-byte copy counts
    // one fault, as with `rep movsb`: ktest `mmap_lock_kernel_fault_...` counts them). If the
    // address says neither (a #GP: r10 = 0), the rest is retried byte by byte, which faults
    // again exactly at the refused byte (Linux's `copy_user_handle_tail`).
    // The user copy's body, as `cowlab_user_copy` and `cowlab_user_copy_nofault` use it.
    ".macro user_copy_body name",
        "\\name:",
    "    mov rcx, rdx",
    "    shr rcx, 3",
    "    and edx, 7",
    "1:  rep movsq",
    "    mov ecx, edx",
    "2:  rep movsb",
    "    xor eax, eax",
    "    ret",
    "\\name\\()_quad_fault:",
    "    lea rcx, [rdx + rcx * 8]",
    "    mov rax, r10",
    "    sub rax, rdi",
    "    cmp rax, 8",
    "    jb 4f",
    "    mov rax, r10",
    "    sub rax, rsi",
    "    cmp rax, 8",
    "    jb 4f",
    "3:  rep movsb",
    "    xor eax, eax",
    "    ret",
    // rax (0-7, < rcx) bytes precede the faulting one: copy them, report the rest (r8).
    "4:  mov r8, rcx",
    "    sub r8, rax",
    "    mov rcx, rax",
    "5:  rep movsb",
    "    mov rax, r8",
    "    ret",
    "\\name\\()_tail_fault:",
    "    lea rax, [rcx + r8]",
    "    ret",
    "\\name\\()_fault:",
    "    mov rax, rcx",
    "    ret",
    "    extable_entry 1b, \\name\\()_quad_fault, {quiet}",
    "    extable_entry 2b, \\name\\()_fault, {quiet}",
    "    extable_entry 3b, \\name\\()_fault, {quiet}",
    "    extable_entry 5b, \\name\\()_tail_fault, {quiet}",
    ".endm",
    "",
    ".global cowlab_user_copy",
    "cowlab_user_copy:",
    "    user_copy_body cowlab_user_copy_body",
    "",
    // u64 cowlab_user_copy_nofault(u8 *dst, const u8 *src, u64 len): the same copy, but a
    // page fault at any of its instructions is not served (Linux `pagefault_disable` around
    // `copy_page_from_iter_atomic`): the kernel's page-fault handler sees the RIP inside
    // [cowlab_user_copy_nofault, cowlab_user_copy_nofault_end) and goes straight to the
    // fixup, so the copy stops short at a page that is not present.
    ".global cowlab_user_copy_nofault",
    ".global cowlab_user_copy_nofault_end",
    "cowlab_user_copy_nofault:",
    "    user_copy_body cowlab_user_copy_nofault_body",
    "cowlab_user_copy_nofault_end:",
    ".popsection",
    probe = const KIND_PROBE,
    quiet = const KIND_QUIET,
);

extern "C" {
    /// Copies `len` bytes; returns how many were not copied because of a fault.
    pub fn cowlab_user_copy(dst: *mut u8, src: *const u8, len: u64) -> u64;
    /// [`cowlab_user_copy`] with page faults not served: stops at the first page that is not
    /// present (or refuses the access); returns how many bytes were not copied.
    pub fn cowlab_user_copy_nofault(dst: *mut u8, src: *const u8, len: u64) -> u64;
    static cowlab_user_copy_nofault_end: u8;
    fn cowlab_probe_read_u8(addr: *const u8, out: *mut u64, fault: *mut RawFault) -> u64;
    fn cowlab_probe_write_u8(addr: *mut u8, value: u64, fault: *mut RawFault) -> u64;
    fn cowlab_read_u64_quiet(addr: *const u64, out: *mut u64, fault: *mut RawFault) -> u64;
}

/// Whether `rip` lies in [`cowlab_user_copy_nofault`]: a page fault there is not served, only
/// fixed up (the copy stops short).
pub fn in_nofault_copy(rip: u64) -> bool {
    let start = cowlab_user_copy_nofault as *const () as u64;
    // Only the address of the linker-placed label is taken, never read through.
    let end = &raw const cowlab_user_copy_nofault_end as u64;
    (start..end).contains(&rip)
}

/// Reads the byte at `addr`, or reports how that faulted. Any address is allowed: unmapped,
/// non-canonical, user. The fault is printed and recorded ([`last_recovered`]).
pub fn probe_read_u8(addr: u64) -> Result<u8, Fault> {
    let mut value = 0;
    let mut fault = RawFault::default();
    // SAFETY: the function reads one byte at `addr`, and its only possibly faulting instruction
    // is registered in the exception table, so a bad address comes back as an error; the out
    // pointers are valid locals.
    let status = unsafe { cowlab_probe_read_u8(addr as *const u8, &mut value, &mut fault) };
    match status {
        0 => Ok(value as u8),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}

/// Writes `value` to the byte at `addr`, or reports how that faulted.
///
/// # Safety
///
/// If `addr` is mapped writable, the byte there is overwritten: the caller must own it (the
/// probe only protects against addresses that fault).
pub unsafe fn probe_write_u8(addr: u64, value: u8) -> Result<(), Fault> {
    let mut fault = RawFault::default();
    // SAFETY: the caller owns the byte if it is mapped; a fault at the one registered instruction
    // comes back as an error; `fault` is a valid local.
    let status = unsafe { cowlab_probe_write_u8(addr as *mut u8, u64::from(value), &mut fault) };
    match status {
        0 => Ok(()),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}

/// Reads the u64 at `addr` without any console output on a fault (for the backtrace walker).
pub fn read_u64_quiet(addr: u64) -> Result<u64, Fault> {
    let mut value = 0;
    let mut fault = RawFault::default();
    // SAFETY: as for `probe_read_u8`: one read at a registered instruction, valid out pointers.
    let status = unsafe { cowlab_read_u64_quiet(addr as *const u64, &mut value, &mut fault) };
    match status {
        0 => Ok(value),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}
