//! Running a function on another CPU (Linux `smp_call_function_single`, waiting form).
//!
//! Each CPU has one slot holding the function posted for it. [`run_on`] claims the target's slot,
//! sends [`vector::IPI_CALL`] and waits until the target's handler ([`service`]) has run the
//! function and emptied the slot. The slot holds only `fn()` pointers (no captured state), so
//! posting one needs no allocation; callers pass arguments through statics.

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

/// Runs the function posted for this CPU, if any (the [`vector::IPI_CALL`] handler).
pub fn service() {
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
