//! System-wide scheduler and CPU statistics for `/proc/stat` (Linux `kernel_cpustat`,
//! `nr_context_switches`, `total_forks`, `kstat_irqs`) and `/proc/loadavg` (`calc_global_load`).
//!
//! Each timer tick charges one [`CpuStat`] slot of the CPU it lands on: `user` or `system` when
//! it interrupted a task (`cputime::account_tick`), `idle` when it interrupted the idle loop.
//! The application processors charge their own local APIC ticks the same way (a parked one
//! to idle; the trap dispatcher charges a task's user or system tick there). Counters are relaxed atomics: written from interrupts, read by `/proc/stat` without a
//! lock (a reader may see one slot a tick ahead of another, as on Linux).
//!
//! The load average is Linux's fixed-point exponential decay (`FSHIFT` = 11, the 1/5/15-minute
//! factors of `calc_load`) sampled every 5 seconds (`LOAD_FREQ`) over the tasks runnable or
//! running; cowlab has no uninterruptible sleep, so nothing else counts.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use crate::percpu::MAX_CPUS;

/// The slots of one CPU's line, in `/proc/stat` order.
pub const USER: usize = 0;
pub const SYSTEM: usize = 2;
pub const IDLE: usize = 3;
pub const SLOTS: usize = 10;

static CPU: [[AtomicU64; SLOTS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; SLOTS] }; MAX_CPUS];
static CONTEXT_SWITCHES: AtomicU64 = AtomicU64::new(0);
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Interrupts taken, by CPU and legacy IRQ line (0..16) (Linux `kstat_irqs_cpu`), and all of
/// them together (IPIs included).
static IRQS: [[AtomicU64; 16]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; 16] }; MAX_CPUS];
static IRQ_TOTAL: AtomicU64 = AtomicU64::new(0);
/// The local APIC's own interrupts by CPU, in [`APIC_KINDS`] order (Linux `irq_cpustat_t`).
static APIC_IRQS: [[AtomicU64; 4]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; MAX_CPUS];
/// `/proc/interrupts` rows of the local APIC's interrupts: Linux's label and description.
pub const APIC_KINDS: [(&str, &str); 4] = [
    ("LOC", "Local timer interrupts"),
    ("RES", "Rescheduling interrupts"),
    ("CAL", "Function call interrupts"),
    ("TLB", "TLB shootdowns"),
];

const FSHIFT: u32 = 11;
const FIXED_1: u64 = 1 << FSHIFT;
/// Linux `EXP_1`, `EXP_5`, `EXP_15`: `FIXED_1 / exp(5s / 1, 5, 15 min)`.
const EXP: [u64; 3] = [1884, 2014, 2037];
/// Ticks between load samples (Linux `LOAD_FREQ`: 5 s).
const LOAD_FREQ: u64 = 5 * crate::time::TICK_HZ;

/// Charges one tick on `cpu` to `slot`.
pub fn tick(cpu: usize, slot: usize) {
    if let Some(row) = CPU.get(cpu) {
        row[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// One switch to a task (Linux counts `nr_switches` in `__schedule`).
pub fn context_switch() {
    CONTEXT_SWITCHES.fetch_add(1, Ordering::Relaxed);
}

/// One task created by fork, vfork or clone (Linux `total_forks` in `copy_process`).
pub fn fork() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// One interrupt on this CPU: `line` is a legacy IRQ line, `None` one of the local APIC's
/// (counted by kind with [`apic_irq`]).
pub fn irq(line: Option<u8>) {
    IRQ_TOTAL.fetch_add(1, Ordering::Relaxed);
    let cpu = crate::percpu::cpu_id();
    if let Some(c) = line.and_then(|l| IRQS.get(cpu)?.get(usize::from(l))) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// One local APIC interrupt `vector` on this CPU (the local timer or an IPI), counted in
/// the total and in its `/proc/interrupts` row.
pub fn apic_irq(vector: u8) {
    use crate::idt::vector as v;
    irq(None);
    let kind = match vector {
        v::LOCAL_TIMER => 0,
        v::IPI_RESCHED => 1,
        v::IPI_CALL => 2,
        v::IPI_SHOOTDOWN => 3,
        _ => return,
    };
    if let Some(row) = APIC_IRQS.get(crate::percpu::cpu_id()) {
        row[kind].fetch_add(1, Ordering::Relaxed);
    }
}

/// Interrupts on legacy line `line` that CPU `cpu` took.
pub fn irq_on(cpu: usize, line: u8) -> u64 {
    IRQS.get(cpu)
        .and_then(|row| row.get(usize::from(line)))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// CPU `cpu`'s local APIC interrupts, in [`APIC_KINDS`] order.
pub fn apic_irqs(cpu: usize) -> [u64; 4] {
    core::array::from_fn(|i| {
        APIC_IRQS
            .get(cpu)
            .map_or(0, |r| r[i].load(Ordering::Relaxed))
    })
}

/// A CPU's ten counters in ticks.
pub fn cpu(cpu: usize) -> [u64; SLOTS] {
    core::array::from_fn(|i| CPU[cpu][i].load(Ordering::Relaxed))
}

pub fn context_switches() -> u64 {
    CONTEXT_SWITCHES.load(Ordering::Relaxed)
}

pub fn forks() -> u64 {
    FORKS.load(Ordering::Relaxed)
}

/// The interrupt total and the per-line counts (all CPUs).
pub fn irqs() -> (u64, [u64; 16]) {
    (
        IRQ_TOTAL.load(Ordering::Relaxed),
        core::array::from_fn(|i| (0..MAX_CPUS).map(|cpu| irq_on(cpu, i as u8)).sum()),
    )
}

/// Linux `calc_load`: one step of the exponential decay towards `active` (`FIXED_1` units).
pub fn calc_load(load: u64, exp: u64, active: u64) -> u64 {
    let mut newload = load * exp + active * (FIXED_1 - exp);
    if active >= load {
        newload += FIXED_1 - 1;
    }
    newload / FIXED_1
}

/// Every `LOAD_FREQ` ticks, folds the number of runnable tasks into the averages (Linux
/// `calc_global_load`). Timer interrupt; `active` is counted by the caller.
pub fn sample_load(ticks: u64, active: impl FnOnce() -> Option<u64>) {
    LOAD.sample(ticks, active);
}

/// The load average's state: Linux's `avenrun` (the 1, 5 and 15 minute averages in `FIXED_1`
/// units) and the sample points done.
pub struct LoadAvg {
    avenrun: [AtomicU64; 3],
    sampled: crate::time::Periodic,
}

/// The system's ([`sample_load`], [`loadavg`]).
static LOAD: LoadAvg = LoadAvg::new();

/// Sample points folded at most at once: past a few hundred windows (half an hour) every
/// average has converged to the count anyway.
const MAX_MISSED_WINDOWS: u64 = 512;

impl LoadAvg {
    pub const fn new() -> Self {
        Self {
            avenrun: [const { AtomicU64::new(0) }; 3],
            sampled: crate::time::Periodic::new(),
        }
    }

    /// Folds the runnable count `active` (asked only when a sample is due; `None`: the task
    /// table is busy, try again at the next tick) once for each sample point (every
    /// `LOAD_FREQ` ticks) passed since the last sample. A tick whose work ran late (deferred
    /// to the big lock's next holder, `tick.rs`) or found the table busy used to skip the
    /// sample until the next point, 5 s on; now the next tick that gets here makes it up, and
    /// points missed altogether are folded with the count of now, as Linux's
    /// `calc_global_nohz` folds the windows a tickless CPU slept through.
    pub fn sample(&self, ticks: u64, active: impl FnOnce() -> Option<u64>) {
        let missed = self.sampled.due(ticks, LOAD_FREQ);
        if missed == 0 {
            return;
        }
        let Some(active) = active() else {
            return;
        };
        self.sampled.done(ticks, LOAD_FREQ);
        let active = active * FIXED_1;
        for (avg, exp) in self.avenrun.iter().zip(EXP) {
            let mut load = avg.load(Ordering::Relaxed);
            for _ in 0..missed.min(MAX_MISSED_WINDOWS) {
                load = calc_load(load, exp, active);
            }
            avg.store(load, Ordering::Relaxed);
        }
    }

    /// The three averages in `FIXED_1` units.
    pub fn raw(&self) -> [u64; 3] {
        core::array::from_fn(|i| self.avenrun[i].load(Ordering::Relaxed))
    }
}

impl Default for LoadAvg {
    fn default() -> Self {
        Self::new()
    }
}

/// One step of the 1-minute average (for tests): `calc_load` with Linux's `EXP_1`.
pub fn calc_load_1min(load: u64, active: u64) -> u64 {
    calc_load(load, EXP[0], active * FIXED_1)
}

/// The three averages as Linux prints them: integer part and hundredths (`LOAD_INT`,
/// `LOAD_FRAC` with Linux's rounding offset of `FIXED_1/200`).
pub fn loadavg() -> [(u64, u64); 3] {
    core::array::from_fn(|i| {
        let x = LOAD.avenrun[i].load(Ordering::Relaxed) + FIXED_1 / 200;
        (x >> FSHIFT, ((x & (FIXED_1 - 1)) * 100) >> FSHIFT)
    })
}
