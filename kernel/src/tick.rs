//! The timer tick's work under the big kernel lock, and its deferral to the lock's holder.
//!
//! The PIT's tick (100 Hz, on the boot CPU) advances the clock (`time::on_tick`, an atomic)
//! and then does work that needs the big kernel lock: it wakes timed sleepers, fires interval
//! timers and timerfds, takes the terminal's input and runs the hung-task watchdog. All of it
//! looks at the time now and acts on what expired, so two ticks' work done at once is one
//! tick's work done late, never lost; the periodic looks (the hung-task check each second, the
//! load average's sample each 5 s) count the points passed since their last one
//! (`time::Periodic`) rather than wait for a tick that is a multiple of their period, which a
//! deferred tick's late work never is.
//!
//! A tick that arrives while another CPU holds the lock (the boot CPU idle or waiting for the
//! lock while an application processor runs a system call) used to spin for it, interrupts
//! off, for as long as that call ran: under TCG a spinning vCPU is a busy host thread beside
//! the holder's (issue 16; `bklstat`'s `idle_irq` waits). Now such a tick advances the clock,
//! marks its work [`PENDING`] and returns (Linux's NO_HZ idle CPUs likewise leave the
//! timekeeping and timer work to a busy CPU); whoever holds the lock next at a point where
//! interrupt work may run does it: the next PIT tick that gets the lock, an application
//! processor's own tick (taken under the lock anyway), or any CPU's idle loop.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Whether a tick's lock-holding work waits for the next holder ([`defer`]).
static PENDING: AtomicBool = AtomicBool::new(false);
/// PIT ticks deferred since the work last ran ([`deferred_ticks`]).
static DEFERRED: AtomicU32 = AtomicU32::new(0);

/// The tick's work that needs the big kernel lock (held by the caller, or off).
pub fn run() {
    PENDING.store(false, Ordering::Relaxed);
    DEFERRED.store(0, Ordering::Relaxed);
    crate::proc::on_tick();
    crate::fs::tty::on_tick();
    crate::fs::timerfd::on_tick();
    crate::watchdog::hung::on_tick();
}

/// Leaves this tick's work to the lock's holder (the caller could not take the lock).
pub fn defer() {
    PENDING.store(true, Ordering::Relaxed);
    DEFERRED.fetch_add(1, Ordering::Relaxed);
    crate::bklstat::tick_deferred(crate::percpu::cpu_id());
}

/// How many ticks' work has waited since it last ran: a ring-3 tick that would skip the lock
/// waits for it instead once this reaches a bound, so sleepers, timers and the hung-task check
/// are never late by more than a few ticks however the lock's holders alternate.
pub fn deferred_ticks() -> u32 {
    DEFERRED.load(Ordering::Relaxed)
}

/// Runs a deferred tick's work, if any (the caller holds the big kernel lock). One load when
/// there is none.
#[inline]
pub fn run_deferred() {
    if PENDING.load(Ordering::Relaxed) {
        run();
    }
}

/// Whether a tick's work waits for the holder (for tests).
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed)
}
