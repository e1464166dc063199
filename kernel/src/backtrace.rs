//! Frame-pointer backtraces, printed as `bt #<n> 0x<addr>` for xtask to symbolize.
//!
//! The kernel is built with `-C force-frame-pointers=yes`, so every Rust frame starts with
//! `push rbp; mov rbp, rsp`: `[rbp]` is the caller's RBP and `[rbp + 8]` the return address.
//! Walking that chain needs no unwind tables and no symbols in the kernel; the host turns the
//! addresses into function names from the unstripped ELF (the kernel is loaded at its link
//! address). The chain may be corrupt when we print it (that is often why we print it), so each
//! word is read through a quiet exception-table fixup and the walk stops at the first
//! implausible frame rather than faulting again. Return addresses are printed as they are (the
//! instruction after the call).

use core::arch::asm;

use crate::extable;

/// Deepest chain we follow; deeper is a loop or garbage.
const MAX_FRAMES: usize = 64;
/// Kernel addresses (upper half); a frame pointer outside it ends the chain.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Prints the backtrace of an interrupted context: its RIP, then the chain from its RBP.
pub fn print_from(rip: u64, rbp: u64) {
    println!("bt #0 {rip:#018x}");
    walk(rbp, 1);
}

/// Prints the backtrace of the caller.
#[inline(never)]
pub fn print_current() {
    let rbp: u64;
    // SAFETY: reads the frame-pointer register; no memory or flags touched.
    unsafe { asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    walk(rbp, 0);
}

fn walk(mut rbp: u64, mut index: usize) {
    while index < MAX_FRAMES {
        if rbp < KERNEL_HALF || rbp % 8 != 0 {
            return;
        }
        let (Ok(caller_rbp), Ok(return_address)) = (
            extable::read_u64_quiet(rbp),
            extable::read_u64_quiet(rbp + 8),
        ) else {
            println!("bt: frame pointer {rbp:#x} is unreadable; stopping");
            return;
        };
        if return_address == 0 {
            return;
        }
        println!("bt #{index} {return_address:#018x}");
        index += 1;
        // The stack grows down, so each caller's frame is above its callee's.
        if caller_rbp <= rbp {
            return;
        }
        rbp = caller_rbp;
    }
}
