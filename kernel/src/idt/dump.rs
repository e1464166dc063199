//! The crash report for an exception the kernel did not expect.
//!
//! Printed with raw `println!`s (not the logger) so that it appears whatever the log level, in
//! one block: the exception, the interrupt frame, CR2/CR3, every general-purpose register and a
//! frame-pointer backtrace whose `bt #n 0x...` lines xtask symbolizes from the unstripped ELF.
//! If a test is running, its `KTEST FAIL` line comes first so that xtask attributes the crash.
//! Then QEMU exits with status 3 (docs/architecture.md).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr2, Cr3};

use super::{vector, TrapFrame};
use crate::extable::PageFaultError;
use crate::qemu::{self, ExitStatus};
use crate::{backtrace, ktest, serial};

static DYING: AtomicBool = AtomicBool::new(false);

/// Reports `frame` as an unexpected exception and exits QEMU with status 3.
pub fn die(frame: &TrapFrame) -> ! {
    serial::break_lock_for_crash();
    let number = frame.vector as u8;
    let (mnemonic, name) = vector::name(number);
    if DYING.swap(true, Ordering::SeqCst) {
        // Faulted while reporting: say the minimum and stop.
        println!(
            "\nnested exception {mnemonic} at rip={:#x} while reporting a crash",
            frame.rip
        );
        qemu::exit(ExitStatus::Exception);
    }
    if let Some(test) = ktest::current() {
        println!(
            "KTEST FAIL {} {}: unexpected exception {mnemonic} {name} at rip={:#x}",
            test.index, test.name, frame.rip
        );
    }
    let mode = if frame.cs & 3 == 3 { "user" } else { "kernel" };
    println!(
        "EXCEPTION {mnemonic} {name} (vector {number}) error_code={:#x} in {mode} mode",
        frame.error_code
    );
    println!(
        "  RIP={:#018x} CS={:#06x} RFLAGS={:#010x}",
        frame.rip, frame.cs, frame.rflags
    );
    println!("  RSP={:#018x} SS={:#06x}", frame.rsp, frame.ss);
    match number {
        vector::PAGE_FAULT => {
            println!(
                "  CR2={:#018x} err={}",
                Cr2::read_raw(),
                PageFaultError(frame.error_code)
            );
        }
        // A double fault is often a page fault that could not be delivered: CR2 tells which.
        vector::DOUBLE_FAULT => println!("  CR2={:#018x} (last page fault)", Cr2::read_raw()),
        _ => {}
    }
    let (cr3, _) = Cr3::read_raw();
    println!("  CR3={:#018x}", cr3.start_address().as_u64());
    let f = frame;
    println!(
        "  RAX={:#018x} RBX={:#018x} RCX={:#018x}",
        f.rax, f.rbx, f.rcx
    );
    println!(
        "  RDX={:#018x} RSI={:#018x} RDI={:#018x}",
        f.rdx, f.rsi, f.rdi
    );
    println!(
        "  RBP={:#018x} R8 ={:#018x} R9 ={:#018x}",
        f.rbp, f.r8, f.r9
    );
    println!(
        "  R10={:#018x} R11={:#018x} R12={:#018x}",
        f.r10, f.r11, f.r12
    );
    println!(
        "  R13={:#018x} R14={:#018x} R15={:#018x}",
        f.r13, f.r14, f.r15
    );
    backtrace::print_from(frame.rip, frame.rbp);
    qemu::exit(ExitStatus::Exception)
}
