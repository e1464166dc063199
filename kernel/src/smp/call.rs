//! Running a function on another CPU (Linux `smp_call_function_single`, waiting form).
//!
//! Each CPU has one slot holding the function posted for it. [`run_on`] claims the target's slot,
//! sends [`vector::IPI_CALL`] and waits until the target's handler ([`service`]) has run the
//! function and emptied the slot. The slot holds only `fn()` pointers (no captured state), so
//! posting one needs no allocation; callers pass arguments through statics.
//!
//! Publication order (review of session 8; the same under x86's TSO and Rust's model, where
//! what matters on x86 is what the compiler may move: every access below is a plain `mov` or a
//! `lock`ed instruction):
//! - the poster's arguments, then its claim of the slot (`compare_exchange`, `AcqRel`: on x86
//!   a `lock cmpxchg`, which also drains the store buffer), then the IPI (an uncached write to
//!   the ICR, which the `Acquire` half keeps after the claim): the target cannot take the IPI
//!   and find the slot empty, nor the arguments stale, since its load of the slot is `Acquire`;
//! - the target claims [`RUNNING`] before it calls the function (an opaque call: the compiler
//!   cannot move the store past it) and clears it before it empties the slot. [`RUNNING`] is
//!   read only by its own CPU ([`service`] when a function spins for a lock and services its
//!   requests meanwhile, `locking::lock_tid`), so `Relaxed` is enough, and its order against
//!   the slot's store matters only to this CPU, where nothing runs between the two: [`service`]
//!   runs with interrupts off (the IPI handler, the lock spins, and it turns them off for a
//!   caller that had them on), so no IPI can find
//!   the slot still posted with [`RUNNING`] clear and run the function twice (nor, the other
//!   order, find a new posting with [`RUNNING`] still set and drop its IPI);
//! - the target empties the slot with `Release` after the function returns: the poster, whose
//!   wait loads it with `Acquire`, sees every effect of the function once it sees 0.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::{apic_id_of, online_mask};
use crate::idt::vector;
use crate::percpu::MAX_CPUS;
use crate::{apic, percpu, time};

static SLOTS: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
/// Set while a CPU runs its posted function: a function that spins for a lock services this
/// CPU's requests meanwhile (`locking::service_cross_cpu_requests`), and must not find its own
/// still-posted slot and run itself again.
static RUNNING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Why [`run_on`] did not run the function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No such CPU is online.
    Offline,
    /// The target did not run it within the time given (interrupts disabled there for longer,
    /// or the IPI was lost).
    Timeout,
}

/// Runs `function` on CPU `cpu` in its IPI handler (interrupts disabled there) and waits for it,
/// at most `timeout_us` microseconds. On the calling CPU itself it goes through a self-IPI too,
/// so the caller must have interrupts enabled for that case.
pub fn run_on(cpu: usize, function: fn(), timeout_us: u64) -> Result<(), CallError> {
    if cpu >= MAX_CPUS || online_mask() & (1 << cpu) == 0 {
        return Err(CallError::Offline);
    }
    let deadline = time::tsc_khz().max(1) * timeout_us / 1000;
    let start = time::rdtsc();
    let expired = || time::rdtsc().wrapping_sub(start) > deadline;
    while SLOTS[cpu]
        .compare_exchange(0, function as usize, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        if expired() {
            return Err(CallError::Timeout);
        }
        core::hint::spin_loop();
    }
    apic::send_ipi(apic_id_of(cpu), vector::IPI_CALL);
    while SLOTS[cpu].load(Ordering::Acquire) == function as usize {
        if expired() {
            // The request stays posted: the target runs it when it takes the IPI and only then
            // empties the slot, so no later request can be overwritten by this one's end.
            return Err(CallError::Timeout);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// Whether this CPU is running a function posted by another CPU (its locks are held for that
/// CPU's request, not for the task it interrupted: `locking::lock_tid`).
pub fn running_here() -> bool {
    RUNNING[percpu::cpu_id()].load(Ordering::Relaxed)
}

/// Runs the function posted for this CPU, if any (the [`vector::IPI_CALL`] handler).
#[inline]
pub fn service() {
    // The lock spins call this on every turn: an empty slot costs one load, as it did before
    // the interrupt guard below came in. `service_irqs_off` looks again.
    if SLOTS[percpu::cpu_id()].load(Ordering::Relaxed) == 0 {
        return;
    }
    // Mostly called with interrupts off already (the IPI handler, the lock spins); a spin
    // outside a task (`locking::wait` in an in-kernel test) may have them on.
    x86_64::instructions::interrupts::without_interrupts(service_irqs_off);
}

fn service_irqs_off() {
    let cpu = percpu::cpu_id();
    let slot = &SLOTS[cpu];
    let posted = slot.load(Ordering::Acquire);
    if posted == 0 || RUNNING[cpu].swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the slot holds 0 or a value `run_on` stored from a `fn()`; non-zero here.
    let function: fn() = unsafe { core::mem::transmute::<usize, fn()>(posted) };
    function();
    RUNNING[cpu].store(false, Ordering::Relaxed);
    slot.store(0, Ordering::Release);
}
