//! Harness self-tests: each fails in one specific way, so `cargo xtask test` can check that the
//! way is reported as what it is. Run only by name (`ktest=selftest_...`).

use core::arch::asm;

use super::TestResult;
use crate::idt;

/// Panics: must be reported as a failure carrying this message (exit status 2).
pub fn selftest_panic() -> TestResult {
    panic!("deliberate panic");
}

/// Never returns, with interrupts on: must be reported as a timeout.
pub fn selftest_hang() -> TestResult {
    x86_64::instructions::interrupts::enable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Loads an empty IDT and raises a breakpoint: #BP cannot be delivered, nor the #GP/#DF that
/// follow, so the CPU shuts down (QEMU with `-no-reboot` exits with status 0).
pub fn selftest_triple_fault() -> TestResult {
    x86_64::instructions::interrupts::disable();
    // SAFETY: a triple fault is the point of this test.
    unsafe {
        idt::load_empty_for_triple_fault();
        asm!("int3", options(nomem, nostack));
    }
    unreachable!("the CPU shut down at int3");
}

/// Writes to an unmapped kernel address outside any fixup: must be reported as an unexpected
/// exception (the #PF crash dump) with exit status 3.
pub fn selftest_page_fault() -> TestResult {
    let address = 0xffff_fe00_dead_b000u64 as *mut u64;
    // SAFETY: not safe at all, and not meant to be: nothing is mapped there, so the write
    // faults and the kernel reports the crash and exits.
    unsafe { address.write_volatile(0xdead) };
    unreachable!("the write to an unmapped address faulted");
}

/// Recurses until the kernel stack overflows into its guard page: the #PF cannot be delivered
/// on the dead stack, so the CPU raises a double fault, which runs on its own IST stack and must
/// be reported as an exception (status 3), not a triple fault.
pub fn selftest_stack_overflow() -> TestResult {
    #[allow(unconditional_recursion)]
    fn recurse(depth: u64) -> u64 {
        let frame = [depth; 64];
        // black_box keeps the frame (and the recursion) from being optimised away.
        core::hint::black_box(&frame);
        recurse(depth + 1) + frame[0]
    }
    let depth = recurse(0);
    unreachable!("recursion returned {depth}");
}
