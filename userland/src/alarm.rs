//! SIGALRM for the test programs that interrupt a blocking call with a timer: a handler that
//! counts deliveries in [`CAUGHT`] (installed with the program's own restorer, as libc does),
//! and a one-shot `ITIMER_REAL`.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::calls::raw;
use crate::sys::nr;

const SIGALRM: usize = 14;
const SA_RESTORER: u64 = 0x0400_0000;
const SETITIMER: usize = 38;

/// SIGALRMs delivered to [`handle_alarm`]'s handler so far.
pub static CAUGHT: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_alarm(_sig: i32) {
    CAUGHT.fetch_add(1, Ordering::SeqCst);
}

core::arch::global_asm!(
    ".globl cowlab_userland_alarm_restorer",
    "cowlab_userland_alarm_restorer:",
    "mov eax, 15",
    "syscall",
);

extern "C" {
    fn cowlab_userland_alarm_restorer();
}

/// Installs the counting SIGALRM handler with `flags` (`SA_RESTART` or 0) besides
/// `SA_RESTORER`.
pub fn handle_alarm(flags: u64) {
    let act = [
        on_alarm as *const () as usize as u64,
        flags | SA_RESTORER,
        cowlab_userland_alarm_restorer as *const () as usize as u64,
        0,
    ];
    // SAFETY: rt_sigaction reads a 32-byte struct sigaction from `act`; the handler and the
    // restorer are functions of this program.
    let _ = unsafe {
        raw(
            nr::RT_SIGACTION,
            [SIGALRM, act.as_ptr() as usize, 0, 8, 0, 0],
        )
    };
}

/// SIGALRM after `ms` milliseconds (setitimer ITIMER_REAL, one shot).
pub fn alarm_in(ms: i64) {
    let it = [0i64, 0, ms / 1000, (ms % 1000) * 1000];
    // SAFETY: a live 32-byte itimerval; no old value written.
    let _ = unsafe { raw(SETITIMER, [0, it.as_ptr() as usize, 0, 0, 0, 0]) };
}
