//! The local APIC (xAPIC, memory-mapped): inter-processor interrupts and their end-of-interrupt.
//!
//! Every CPU has one at the same physical address (the MADT's, normally 0xfee00000), reached
//! through the bootloader's mapping of physical memory; each CPU's accesses go to its own. The
//! device interrupts still come through the 8259 PIC in virtual-wire mode (the firmware leaves the
//! boot CPU's LINT0 as ExtINT, and this module never touches it there): the local APIC is used
//! for IPIs only, so enabling it changes nothing on one CPU. An application processor masks both
//! LINT pins, so the PIC's interrupts keep going to the boot CPU alone.

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_mm::addr::PhysAddr;

use crate::idt::vector;
use crate::memory;

const ID: usize = 0x20;
const TPR: usize = 0x80;
const EOI: usize = 0xb0;
const SVR: usize = 0xf0;
const ICR_LOW: usize = 0x300;
const ICR_HIGH: usize = 0x310;
const LVT_LINT0: usize = 0x350;
const LVT_LINT1: usize = 0x360;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_CURRENT: usize = 0x390;
const TIMER_DIVIDE: usize = 0x3e0;
/// Divide configuration "by 16" (bits 0, 1, 3 = 0b0011).
const DIVIDE_BY_16: u32 = 0b0011;
const TIMER_PERIODIC: u32 = 1 << 17;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_NMI: u32 = 0x400;
const ICR_INIT: u32 = 0x500;
const ICR_STARTUP: u32 = 0x600;

/// Timer counts (bus clock / 16) per scheduler tick (`time::TICK_HZ`), from [`calibrate_timer`].
static COUNTS_PER_TICK: AtomicU64 = AtomicU64::new(0);

/// Physical base of the local APIC registers (set from the MADT, else the architectural default).
static BASE: AtomicU64 = AtomicU64::new(0xfee0_0000);

/// Records the local APIC's physical address (the MADT's).
pub fn set_base(phys: u64) {
    BASE.store(phys, Ordering::Relaxed);
}

fn register(offset: usize) -> *mut u32 {
    memory::phys_to_virt(PhysAddr::new(BASE.load(Ordering::Relaxed)))
        .wrapping_add(offset)
        .cast::<u32>()
}

fn read(offset: usize) -> u32 {
    // SAFETY: `offset` is one of the architectural register offsets above, inside the 4 KiB
    // register page the bootloader maps with the rest of physical memory; 32-bit aligned.
    unsafe { register(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as `read`; writes only the registers this module owns.
    unsafe { register(offset).write_volatile(value) }
}

/// Software-enables this CPU's local APIC with [`vector::SPURIOUS`] and accepts every priority.
/// `application_processor` also masks LINT0/LINT1 (the boot CPU keeps the firmware's virtual
/// wire, through which the PIC's interrupts arrive).
pub fn init_local(application_processor: bool) {
    if application_processor {
        write(LVT_LINT0, LVT_MASKED);
        write(LVT_LINT1, LVT_MASKED);
    }
    write(TPR, 0);
    write(SVR, SVR_ENABLE | u32::from(vector::SPURIOUS));
}

/// This CPU's local APIC ID.
pub fn id() -> u32 {
    read(ID) >> 24
}

/// Signals the end of the interrupt being serviced (for vectors the local APIC delivered).
pub fn end_of_interrupt() {
    write(EOI, 0);
}

/// Writes the interrupt command register for `apic_id` and waits until the APIC has sent it.
fn send(apic_id: u32, low: u32) {
    let state = crate::arch::irq_save_raw();
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, low);
    while read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    crate::arch::irq_restore_raw(state);
}

/// Sends the fixed interrupt `vector` to the CPU with local APIC ID `apic_id` (itself included).
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(apic_id, ICR_LEVEL_ASSERT | u32::from(vector));
}

/// Sends an NMI to the CPU with local APIC ID `apic_id`, from an NMI handler (the watchdog's,
/// to a stuck application processor). The NMI may have interrupted [`send`] on this CPU
/// between its two ICR writes or in its wait: so this waits for the pending IPI to go first,
/// and puts back the destination half it found, which the interrupted `send` then completes
/// with its own low half as if nothing happened.
pub fn send_nmi_from_nmi(apic_id: u32) {
    while read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    let high = read(ICR_HIGH);
    write(ICR_HIGH, apic_id << 24);
    write(ICR_LOW, ICR_LEVEL_ASSERT | ICR_NMI);
    while read(ICR_LOW) & ICR_DELIVERY_PENDING != 0 {
        core::hint::spin_loop();
    }
    write(ICR_HIGH, high);
}

/// Sends an INIT IPI (the first step of starting an application processor).
pub fn send_init(apic_id: u32) {
    send(apic_id, ICR_LEVEL_ASSERT | ICR_INIT);
}

/// Sends a STARTUP IPI: the target starts in real mode at `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    send(apic_id, ICR_LEVEL_ASSERT | ICR_STARTUP | u32::from(page));
}

/// The local APIC timer counting down from `u32::MAX` (one-shot, masked), seen as a counter
/// going up, for `calibrate::measure`.
struct TimerCounter;

impl crate::calibrate::Counter for TimerCounter {
    fn read(&mut self) -> u64 {
        u64::from(u32::MAX - read(TIMER_CURRENT))
    }

    fn mask(&self) -> u64 {
        u64::from(u32::MAX)
    }
}

/// Measures the local APIC timer's rate against the TSC (10 ms windows, interrupts disabled,
/// timer masked) and records the count of one tick. The rate is the same on every CPU of a
/// machine. The current-count reads are bracketed by TSC reads (`calibrate`): reading the count
/// once after a TSC deadline counted a descheduled vCPU's absence as timer ticks.
pub fn calibrate_timer() {
    use crate::calibrate::{measure, no_stall, Window, PRECISE_PPM};
    const SAMPLE_US: u64 = 10_000;
    const ATTEMPTS: u32 = 4;
    let tsc_hz = crate::time::tsc_khz().max(1) * 1000;
    let mut hz = 0;
    for _ in 0..ATTEMPTS {
        write(TIMER_DIVIDE, DIVIDE_BY_16);
        write(LVT_TIMER, LVT_MASKED | u32::from(vector::LOCAL_TIMER));
        write(TIMER_INITIAL, u32::MAX);
        let window = Window::Cycles(tsc_hz / 1_000_000 * SAMPLE_US);
        let m = measure(&mut TimerCounter, window, &mut no_stall);
        write(TIMER_INITIAL, 0);
        hz = m.counter_hz(tsc_hz);
        if m.precise(PRECISE_PPM) {
            break;
        }
    }
    let per_tick = hz / crate::time::TICK_HZ;
    COUNTS_PER_TICK.store(per_tick.max(1), Ordering::Relaxed);
}

/// Timer counts per tick (0 before [`calibrate_timer`]).
pub fn counts_per_tick() -> u64 {
    COUNTS_PER_TICK.load(Ordering::Relaxed)
}

/// Starts this CPU's local APIC timer: [`vector::LOCAL_TIMER`] at `time::TICK_HZ`.
pub fn start_timer() {
    let count = COUNTS_PER_TICK
        .load(Ordering::Relaxed)
        .clamp(1, u64::from(u32::MAX)) as u32;
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, TIMER_PERIODIC | u32::from(vector::LOCAL_TIMER));
    write(TIMER_INITIAL, count);
}
