//! Where the big kernel lock's waits go, per CPU (`/proc/cowlab/bklstat`, the power-off line).
//!
//! Only the contended path counts (`bkl::lock_slow`), so the uncontended entry costs nothing.
//! A wait is classed by who waited: a task's entry from ring 3 (`task`), an interrupt handler
//! in a task's context (`irq`), the idle loop (`idle`), or an interrupt taken in the idle loop
//! (`idle_irq`, the boot CPU's PIT tick while another CPU runs a system call). For each: how
//! many waits, how many spin iterations (under `-icount` the spins are guest instructions the
//! holder's CPU did not get: one host thread runs every vCPU), and the TSC cycles waited.
//! Halts are the waits' `hlt`s (a halted vCPU costs the host nothing, but its wake-up is an
//! IPI and a host thread switch); hand-offs are the holder's releases to a waiting CPU
//! (`bkl::let_waiters_in`, `bkl::relax`). Unlocked ticks are ring-3 ticks (an application
//! processor's own, the PIT's on the boot CPU) that went back to the task instead of waiting
//! (`idt::dispatch::user_tick_lock`).
#![deny(unsafe_code)]

use alloc::string::String;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::percpu::MAX_CPUS;

/// Who waited for the lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Waiter {
    /// An entry from ring 3 (system call, page fault) of a task.
    Task = 0,
    /// An interrupt or exception handler that arrived while a task ran here.
    Irq = 1,
    /// The idle loop (between tasks, or after its `hlt`).
    Idle = 2,
    /// An interrupt taken by the idle loop's `hlt` (the PIT tick, a device's completion).
    IdleIrq = 3,
}

const CLASSES: usize = 4;
const NAMES: [&str; CLASSES] = ["task", "irq", "idle", "idle_irq"];

/// Per class: waits, spins, TSC cycles; then halts, hand-offs, deferred and unlocked ticks.
const WAITS: usize = 0;
const SPINS: usize = CLASSES;
const TSC: usize = 2 * CLASSES;
const HALTS: usize = 3 * CLASSES;
const HANDOFFS: usize = HALTS + 1;
const TICKS_DEFERRED: usize = HANDOFFS + 1;
const TICKS_UNLOCKED: usize = TICKS_DEFERRED + 1;
const FIELDS: usize = TICKS_UNLOCKED + 1;

static STATS: [[AtomicU64; FIELDS]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; FIELDS] }; MAX_CPUS];

fn add(cpu: usize, field: usize, n: u64) {
    STATS[cpu & (MAX_CPUS - 1)][field].fetch_add(n, Ordering::Relaxed);
}

/// One contended acquisition by `who` on `cpu`: `spins` loop iterations over `tsc` cycles.
pub fn waited(cpu: usize, who: Waiter, spins: u64, tsc: u64) {
    let class = who as usize;
    add(cpu, WAITS + class, 1);
    add(cpu, SPINS + class, spins);
    add(cpu, TSC + class, tsc);
}

/// A waiter on `cpu` halted until a release.
pub fn halted(cpu: usize) {
    add(cpu, HALTS, 1);
}

/// The holder on `cpu` let a waiting CPU in.
pub fn handed_off(cpu: usize) {
    add(cpu, HANDOFFS, 1);
}

/// A timer tick on `cpu` found the lock held by another CPU and left its work to the holder.
pub fn tick_deferred(cpu: usize) {
    add(cpu, TICKS_DEFERRED, 1);
}

/// An application processor's ring-3 tick on `cpu` went back to its task without the lock.
pub fn tick_unlocked(cpu: usize) {
    add(cpu, TICKS_UNLOCKED, 1);
}

/// The sum over CPUs of the waits of `who` (for tests).
pub fn waits(who: Waiter) -> u64 {
    sum(WAITS + who as usize)
}

/// The halts of `cpu`'s waits and the spins of its waits as `who` (for tests).
pub fn halts_and_spins(cpu: usize, who: Waiter) -> (u64, u64) {
    let stats = &STATS[cpu & (MAX_CPUS - 1)];
    (
        stats[HALTS].load(Ordering::Relaxed),
        stats[SPINS + who as usize].load(Ordering::Relaxed),
    )
}

/// Ticks deferred to the holder, every CPU (for tests).
pub fn ticks_deferred() -> u64 {
    sum(TICKS_DEFERRED)
}

fn sum(field: usize) -> u64 {
    STATS
        .iter()
        .map(|cpu| cpu[field].load(Ordering::Relaxed))
        .sum()
}

/// `/proc/cowlab/bklstat`: a header, then one line per online CPU (`cpuN` and the fields in
/// the header's order); the same for the sum (`all`).
pub fn text() -> String {
    let mut out = String::from("cpu");
    for what in ["waits", "spins", "tsc"] {
        for name in NAMES {
            let _ = write!(out, " {name}_{what}");
        }
    }
    out.push_str(" halts handoffs ticks_deferred ticks_unlocked\n");
    let online = crate::smp::online_mask();
    for cpu in (0..MAX_CPUS).filter(|cpu| online >> cpu & 1 != 0) {
        let _ = write!(out, "cpu{cpu}");
        for field in &STATS[cpu] {
            let _ = write!(out, " {}", field.load(Ordering::Relaxed));
        }
        out.push('\n');
    }
    out.push_str("all");
    for field in 0..FIELDS {
        let _ = write!(out, " {}", sum(field));
    }
    out.push('\n');
    out
}

/// The power-off line's summary: waits and spins by class, halts, hand-offs, deferred and
/// unlocked ticks.
pub fn summary() -> String {
    let mut out = String::new();
    for (class, name) in NAMES.iter().enumerate() {
        let _ = write!(out, "{name} {}/{} ", sum(WAITS + class), sum(SPINS + class));
    }
    let _ = write!(
        out,
        "(waits/spins); {} halts, {} hand-offs, {} ticks deferred, {} ring-3 ticks without it",
        sum(HALTS),
        sum(HANDOFFS),
        sum(TICKS_DEFERRED),
        sum(TICKS_UNLOCKED)
    );
    out
}
