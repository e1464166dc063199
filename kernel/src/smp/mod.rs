//! Multiprocessor bring-up and the inter-processor interrupts.
//!
//! The boot CPU reads the processors from ACPI's MADT ([`madt`]), then starts each application
//! processor (AP) in turn with INIT, STARTUP, STARTUP (the MultiProcessor Specification's
//! sequence, with its 10 ms and 200 µs waits) at the real-mode [`trampoline`], and waits for it
//! to report itself online. An AP comes up on its own stacks (a kernel stack and three IST
//! stacks from the heap), its own GDT/TSS (`gdt::init_cpu`) and per-CPU area (`percpu::init`),
//! the shared IDT, its local APIC with both LINT pins masked, and the `syscall` MSRs.
//!
//! Stage 2 (`smp_sched=1`): every AP runs the scheduler's idle loop (`proc::sched::run_ap`)
//! and tasks, kernel code under the big kernel lock (`bkl`). By default (and below) the APs
//! are parked. They run no tasks: each halts with interrupts enabled and
//! wakes for inter-processor interrupts (TLB shootdowns, [`call`] requests) and for its own
//! local APIC timer tick (100 Hz, calibrated against the TSC on the boot CPU; counted per CPU,
//! the preemption source once tasks run there). The scheduler,
//! the device interrupts (8259 PIC, virtual wire to the boot CPU) and the timer tick stay on the
//! boot CPU, so user code runs on one CPU whatever `-smp` says. What the parked APs already
//! give: the shootdown protocol (`shootdown`) runs against real remote CPUs, and bring-up, IPIs
//! and per-CPU state are tested on 1, 2 and 4 CPUs (the `smp_*` kernel tests).

pub mod call;
pub mod cpuinfo;
pub(crate) mod madt;
pub mod shootdown;
mod trampoline;

use alloc::boxed::Box;
use alloc::vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use bootloader_api::BootInfo;
use cowlab_mm::addr::PhysAddr;
use x86_64::registers::control::Cr3;
use x86_64::VirtAddr;

use crate::idt::vector;
use crate::percpu::MAX_CPUS;
use crate::{apic, gdt, memory, percpu, time};

/// Bit `i` set: CPU `i` is up and serving IPIs.
static ONLINE: AtomicU64 = AtomicU64::new(1);
/// CPUs the MADT lists (usable ones), the boot CPU included; 1 without ACPI.
static PRESENT: AtomicUsize = AtomicUsize::new(1);
/// Local APIC ID of each CPU index (as the CPU itself read it when it came up).
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// IPIs each CPU has handled (all vectors but the spurious one).
static IPIS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Local APIC timer ticks each CPU has taken (the application processors' own tick).
static LOCAL_TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The boot PML4, which every AP loads once it runs in the kernel half.
static BOOT_CR3: AtomicU64 = AtomicU64::new(0);
/// The IST and ring-0 stack tops of the AP being started: [double fault, NMI, MCE, ring 0].
static NEXT_STACKS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

const KERNEL_STACK_SIZE: usize = 64 * 1024;
const IST_STACK_SIZE: usize = 32 * 1024;

/// The CPUs online, as a bit set.
pub fn online_mask() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

/// Whether the application processors run tasks (`smp_sched=1`), set once at boot.
static SCHED_ON_APS: AtomicBool = AtomicBool::new(false);

/// The CPUs the scheduler runs tasks on (Linux `cpu_active_mask`): every CPU online with
/// `smp_sched=1`, else the boot CPU alone (the application processors online but parked).
#[inline]
pub fn active_mask() -> u64 {
    if SCHED_ON_APS.load(Ordering::Relaxed) {
        online_mask()
    } else {
        1
    }
}

/// Sends the reschedule IPI to every CPU in `cpus` (halted idle CPUs, `proc::sched`).
pub fn send_resched(cpus: u64) {
    let mut rest = cpus & online_mask();
    while rest != 0 {
        let cpu = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        apic::send_ipi(apic_id_of(cpu), vector::IPI_RESCHED);
    }
}

/// Number of CPUs online.
pub fn online_count() -> usize {
    online_mask().count_ones() as usize
}

/// Number of usable CPUs the firmware describes.
pub fn present_count() -> usize {
    PRESENT.load(Ordering::Relaxed)
}

/// Local APIC ID of CPU `cpu`.
pub fn apic_id_of(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Relaxed)
}

/// The boot PML4, loaded on every parked CPU.
pub fn boot_root() -> PhysAddr {
    PhysAddr::new(BOOT_CR3.load(Ordering::Relaxed))
}

/// Local APIC timer ticks CPU `cpu` has taken since it came up.
pub fn local_ticks(cpu: usize) -> u64 {
    LOCAL_TICKS[cpu].load(Ordering::Relaxed)
}

/// IPIs CPU `cpu` has handled since boot.
pub fn ipis_handled(cpu: usize) -> u64 {
    IPIS[cpu].load(Ordering::Relaxed)
}

/// A leaked, 16-byte aligned stack of `bytes`; returns its top.
fn leak_stack(bytes: usize) -> u64 {
    let stack: &'static mut [u128] = Box::leak(vec![0u128; bytes / 16].into_boxed_slice());
    stack.as_ptr() as u64 + bytes as u64
}

/// Waits about `micros` microseconds on the TSC.
fn delay_us(micros: u64) {
    let start = time::rdtsc();
    let cycles = time::tsc_khz().max(1) * micros / 1000;
    while time::rdtsc().wrapping_sub(start) < cycles {
        core::hint::spin_loop();
    }
}

/// Enables the boot CPU's local APIC, reads the MADT and starts every other usable CPU. Runs
/// once, with interrupts disabled, after the heap, the frame allocator and the kernel half of
/// the page tables exist, and before the boot's free-frame count is taken (the temporary page
/// tables are returned before it).
pub fn init(boot_info: &BootInfo, sched_on_aps: bool) {
    SCHED_ON_APS.store(sched_on_aps, Ordering::Relaxed);
    let (boot_pml4, _) = Cr3::read();
    BOOT_CR3.store(boot_pml4.start_address().as_u64(), Ordering::Relaxed);
    let Some(rsdp) = boot_info.rsdp_addr.into_option() else {
        apic::init_local(false);
        apic::calibrate_timer();
        APIC_IDS[0].store(apic::id(), Ordering::Relaxed);
        info!("smp: no ACPI RSDP from the bootloader: 1 CPU");
        return;
    };
    let topology = match madt::read(rsdp) {
        Ok(topology) => topology,
        Err(error) => {
            apic::init_local(false);
            apic::calibrate_timer();
            APIC_IDS[0].store(apic::id(), Ordering::Relaxed);
            warn!("smp: no usable MADT ({error:?}): 1 CPU");
            return;
        }
    };
    apic::set_base(topology.local_apic);
    apic::init_local(false);
    apic::calibrate_timer();
    let boot_apic = apic::id();
    APIC_IDS[0].store(boot_apic, Ordering::Relaxed);
    PRESENT.store(
        topology.apic_ids.len().clamp(1, MAX_CPUS),
        Ordering::Relaxed,
    );
    let aps: alloc::vec::Vec<u32> = topology
        .apic_ids
        .iter()
        .copied()
        .filter(|&id| id != boot_apic)
        .take(MAX_CPUS - 1)
        .collect();
    if aps.is_empty() {
        info!(
            "smp: 1 CPU (local APIC {boot_apic} at {:#x})",
            topology.local_apic
        );
        return;
    }
    let Some(frame) = memory::trampoline_frame() else {
        warn!("smp: no free page below 1 MiB for the AP trampoline: 1 CPU");
        return;
    };
    let Some(tables) =
        trampoline::LowTables::new(PhysAddr::new(BOOT_CR3.load(Ordering::Relaxed)), frame)
    else {
        warn!("smp: no frames below 4 GiB for the AP start-up page tables: 1 CPU");
        return;
    };
    trampoline::install(frame);
    for (index, &apic_id) in aps.iter().enumerate() {
        let cpu = index + 1;
        if !start_ap(cpu, apic_id, frame, tables.pml4()) {
            warn!("smp: CPU {cpu} (local APIC {apic_id}) did not come up");
        }
    }
    // Every AP that came up runs on the boot PML4 now; one that did not may still be executing
    // the trampoline, so its tables stay allocated (a leak of four frames, reported above).
    if online_count() == aps.len() + 1 {
        tables.free();
    }
    // The lock only once a second CPU will run tasks: on one CPU (the default machine of the
    // benchmarks) `smp_sched=1` costs nothing. The APs wait, halted, for the scheduler's start
    // before they take it.
    if sched_on_aps && online_count() > 1 {
        crate::bkl::enable();
    }
    info!(
        "smp: {} of {} CPUs online (local APIC IDs {:?}); {}",
        online_count(),
        present_count(),
        (0..MAX_CPUS)
            .filter(|cpu| online_mask() & (1 << cpu) != 0)
            .map(apic_id_of)
            .collect::<alloc::vec::Vec<_>>(),
        if sched_on_aps {
            "tasks run on every CPU (smp_sched=1, big kernel lock)"
        } else {
            "APs parked (idle, IPIs only)"
        }
    );
}

/// Starts CPU `cpu` (local APIC `apic_id`) at the trampoline in `frame` over the page tables
/// `pml4`; whether it reported itself online within a second.
fn start_ap(cpu: usize, apic_id: u32, frame: PhysAddr, pml4: u64) -> bool {
    NEXT_STACKS[0].store(leak_stack(IST_STACK_SIZE), Ordering::Relaxed);
    NEXT_STACKS[1].store(leak_stack(IST_STACK_SIZE), Ordering::Relaxed);
    NEXT_STACKS[2].store(leak_stack(IST_STACK_SIZE), Ordering::Relaxed);
    NEXT_STACKS[3].store(leak_stack(KERNEL_STACK_SIZE), Ordering::Relaxed);
    trampoline::set_launch(
        frame,
        &trampoline::Launch {
            cr3: pml4,
            stack_top: leak_stack(KERNEL_STACK_SIZE),
            entry: ap_entry as *const () as u64,
            argument: cpu as u64,
        },
    );
    let page = (frame.as_u64() >> 12) as u8;
    let bit = 1u64 << cpu;
    apic::send_init(apic_id);
    delay_us(10_000);
    for _ in 0..2 {
        apic::send_startup(apic_id, page);
        delay_us(200);
        if online_mask() & bit != 0 {
            return true;
        }
    }
    let start = time::rdtsc();
    let second = time::tsc_khz().max(1) * 1000;
    while time::rdtsc().wrapping_sub(start) < second {
        if online_mask() & bit != 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Where an application processor enters the kernel half (from the trampoline's `call`).
extern "C" fn ap_entry(cpu: u64) -> ! {
    let cpu = cpu as usize;
    // SAFETY: the boot PML4 maps the kernel half exactly as the temporary tables do (they copied
    // it), so the code and stack in use stay mapped across the switch.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) BOOT_CR3.load(Ordering::Relaxed), options(nostack));
    }
    let top = |i: usize| VirtAddr::new(NEXT_STACKS[i].load(Ordering::Relaxed));
    gdt::init_cpu(
        cpu,
        gdt::CpuStacks {
            double_fault: top(0),
            nmi: top(1),
            machine_check: top(2),
            ring0: top(3),
        },
    );
    crate::idt::init();
    percpu::init(cpu);
    crate::syscall::entry::init();
    crate::proc::switch::enable_sse();
    apic::init_local(true);
    apic::start_timer();
    APIC_IDS[cpu].store(apic::id(), Ordering::Relaxed);
    // Release: the boot CPU that sees the bit sees the APIC ID and this CPU's state.
    ONLINE.fetch_or(1 << cpu, Ordering::Release);
    if SCHED_ON_APS.load(Ordering::Relaxed) {
        crate::proc::sched::run_ap()
    }
    idle()
}

/// A parked CPU: halts with interrupts enabled, wakes for IPIs.
fn idle() -> ! {
    loop {
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// The local APIC's vectors ([`vector::IPI_BASE`] and up), from the trap dispatcher.
pub fn on_ipi(number: u8) {
    if number == vector::SPURIOUS {
        return;
    }
    let cpu = percpu::cpu_id();
    if number == vector::LOCAL_TIMER {
        LOCAL_TICKS[cpu].fetch_add(1, Ordering::Relaxed);
        // A tick in the idle loop is idle time (`/proc/stat`); one that interrupted a task is
        // charged as its user or system time by the trap dispatcher (`smp_sched=1`), so it must
        // not count here too.
        if crate::proc::current_tid() == 0 {
            crate::proc::kstat::tick(cpu, crate::proc::kstat::IDLE);
        }
        crate::proc::kstat::apic_irq(number);
        apic::end_of_interrupt();
        return;
    }
    IPIS[cpu].fetch_add(1, Ordering::Relaxed);
    crate::proc::kstat::apic_irq(number);
    match number {
        vector::IPI_SHOOTDOWN => shootdown::service(),
        vector::IPI_CALL => call::service(),
        _ => {}
    }
    apic::end_of_interrupt();
}
