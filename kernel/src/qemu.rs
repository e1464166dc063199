//! Leaving QEMU with a status through the `isa-debug-exit` device.
//!
//! Writing `s` to I/O port 0xf4 makes QEMU exit with `(s << 1) | 1`; xtask maps it back. The
//! statuses are the contract of docs/architecture.md, so they are an enum here, not numbers at
//! call sites. Without the device (a bare QEMU, real hardware) the write does nothing and the CPU
//! halts with interrupts off instead.

use x86_64::instructions::port::Port;

/// The `iobase` of `-device isa-debug-exit,iobase=0xf4,iosize=0x04`.
const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the kernel stops (docs/architecture.md, "Kernel exit status").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum ExitStatus {
    /// Clean power-off; all requested tests passed.
    Success = 0,
    /// At least one in-kernel test failed (reported, not panicked).
    TestsFailed = 1,
    /// Kernel panic; the message was printed before exit.
    Panic = 2,
    /// Unexpected CPU exception in the kernel (double fault included).
    Exception = 3,
}

/// Ends the QEMU run with `status`.
pub fn exit(status: ExitStatus) -> ! {
    let mut port = Port::<u32>::new(ISA_DEBUG_EXIT_PORT);
    // SAFETY: port 0xf4 is the isa-debug-exit device (or nothing); writing it has no effect on
    // kernel memory. QEMU stops executing this guest during the write.
    unsafe { port.write(status as u32) };
    halt_forever()
}

/// Stops this CPU for good: interrupts off, `hlt` in a loop (an NMI would only wake it briefly).
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        x86_64::instructions::hlt();
    }
}

/// Ends the QEMU run with a user-chosen status (init's exit status, see docs/architecture.md).
pub fn exit_with(status: u32) -> ! {
    crate::faultstat::print();
    let mut port = Port::<u32>::new(ISA_DEBUG_EXIT_PORT);
    // SAFETY: as in `exit`.
    unsafe { port.write(status) };
    halt_forever()
}
