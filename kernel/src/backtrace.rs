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

/// Most `bt` lines printed.
const MAX_LINES: usize = 64;
/// Most frames followed; deeper is a loop or garbage.
const MAX_FRAMES: usize = 4096;
/// A return address repeated more often than this in a row (deep recursion) is summarized.
const MAX_REPEATS: usize = 3;
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

/// Follows the RBP chain from `rbp`, numbering lines from `index`.
fn walk(mut rbp: u64, mut index: usize) {
    let mut previous = 0;
    let mut repeats = 0;
    for _ in 0..MAX_FRAMES {
        if index >= MAX_LINES || rbp < KERNEL_HALF || !rbp.is_multiple_of(8) {
            break;
        }
        let (Ok(caller_rbp), Ok(return_address)) = (
            extable::read_u64_quiet(rbp),
            extable::read_u64_quiet(rbp + 8),
        ) else {
            println!("bt: frame pointer {rbp:#x} is unreadable; stopping");
            break;
        };
        if return_address == 0 {
            break;
        }
        if return_address == previous {
            repeats += 1;
        } else {
            report_repeats(repeats);
            repeats = 0;
        }
        if repeats < MAX_REPEATS {
            println!("bt #{index} {return_address:#018x}");
            index += 1;
        }
        previous = return_address;
        // The stack grows down, so each caller's frame is above its callee's.
        if caller_rbp <= rbp {
            break;
        }
        rbp = caller_rbp;
    }
    report_repeats(repeats);
}

/// Summarizes the lines a run of identical return addresses did not print.
fn report_repeats(repeats: usize) {
    if repeats >= MAX_REPEATS {
        println!(
            "bt: ... the frame above repeats {} more times",
            repeats + 1 - MAX_REPEATS
        );
    }
}
