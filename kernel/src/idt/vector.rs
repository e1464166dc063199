//! Interrupt vector numbers and the names of the CPU exceptions.
//!
//! Vectors 0-31 are the CPU's exceptions (Intel SDM vol. 3, table 6-1); 32-47 are the legacy
//! PIC's 16 IRQ lines after `pic` remaps them; 0xf0 and up are the local APIC's inter-processor
//! interrupts and its spurious vector (`apic`, `smp`).
#![deny(unsafe_code)]

pub const NMI: u8 = 2;
pub const BREAKPOINT: u8 = 3;
pub const DOUBLE_FAULT: u8 = 8;
pub const GENERAL_PROTECTION: u8 = 13;
pub const PAGE_FAULT: u8 = 14;
pub const MACHINE_CHECK: u8 = 18;

/// First vector of the remapped 8259 PIC (IRQ 0, the PIT).
pub const PIC_BASE: u8 = 32;
/// The timer interrupt (PIT channel 0 on IRQ 0).
pub const TIMER: u8 = PIC_BASE;
/// One past the PIC's last vector.
pub const PIC_END: u8 = PIC_BASE + 16;
/// First vector of the I/O APIC's routed ISA lines (`ioapic`): line `n` is `IOAPIC_BASE + n`.
pub const IOAPIC_BASE: u8 = 0x30;
/// One past the I/O APIC's last routed vector.
pub const IOAPIC_END: u8 = IOAPIC_BASE + 16;
/// First inter-processor interrupt vector: everything from here on is the local APIC's.
pub const IPI_BASE: u8 = 0xf0;
/// TLB shootdown request (`smp::shootdown`).
pub const IPI_SHOOTDOWN: u8 = 0xf0;
/// "Run the function posted for you" (`smp::call`), also the kernel tests' ping.
pub const IPI_CALL: u8 = 0xf1;
/// Reschedule: a task became runnable while this CPU was idle (`proc::sched::kick_idle`); the
/// interrupt only ends its `hlt`.
pub const IPI_RESCHED: u8 = 0xf2;
/// The local APIC timer of an application processor (its own tick, `smp`).
pub const LOCAL_TIMER: u8 = 0xf3;
/// The local APIC's spurious-interrupt vector: no handler work, no end-of-interrupt.
pub const SPURIOUS: u8 = 0xff;
/// Number of vectors with an entry stub: all of them (unused ones die with a dump).
pub const STUB_COUNT: usize = 256;

/// Exceptions for which the CPU pushes an error code, as a bit mask over vectors 0-31.
pub const HAS_ERROR_CODE: u32 = (1 << 8)
    | (1 << 10)
    | (1 << 11)
    | (1 << 12)
    | (1 << 13)
    | (1 << 14)
    | (1 << 17)
    | (1 << 21)
    | (1 << 29)
    | (1 << 30);

/// Mnemonic and name of a CPU exception (or of an IRQ line).
pub fn name(vector: u8) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "Divide Error"),
        1 => ("#DB", "Debug"),
        2 => ("NMI", "Non-Maskable Interrupt"),
        3 => ("#BP", "Breakpoint"),
        4 => ("#OF", "Overflow"),
        5 => ("#BR", "BOUND Range Exceeded"),
        6 => ("#UD", "Invalid Opcode"),
        7 => ("#NM", "Device Not Available"),
        8 => ("#DF", "Double Fault"),
        9 => ("CSO", "Coprocessor Segment Overrun"),
        10 => ("#TS", "Invalid TSS"),
        11 => ("#NP", "Segment Not Present"),
        12 => ("#SS", "Stack-Segment Fault"),
        13 => ("#GP", "General Protection"),
        14 => ("#PF", "Page Fault"),
        16 => ("#MF", "x87 Floating-Point Error"),
        17 => ("#AC", "Alignment Check"),
        18 => ("#MC", "Machine Check"),
        19 => ("#XM", "SIMD Floating-Point Exception"),
        20 => ("#VE", "Virtualization Exception"),
        21 => ("#CP", "Control Protection Exception"),
        28 => ("#HV", "Hypervisor Injection Exception"),
        29 => ("#VC", "VMM Communication Exception"),
        30 => ("#SX", "Security Exception"),
        15 | 22..=27 | 31 => ("RSVD", "Reserved"),
        _ => ("IRQ", "Interrupt"),
    }
}
