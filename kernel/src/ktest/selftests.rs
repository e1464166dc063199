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
