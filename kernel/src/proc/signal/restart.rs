//! The restart block (Linux `struct restart_block`): a blocking call whose arguments cannot
//! simply be passed again, because part of its timeout has elapsed, records what is left here
//! and returns `-ERESTART_RESTARTBLOCK`. If a handler runs, the call fails with `EINTR`; if
//! none does (a stop and continue, a signal that only woke it), the return path rewinds to
//! `restart_syscall` (219), which continues the call from this record with the time left.
//! One record per thread, replaced by each such call and cleared by `rt_sigreturn`.
#![deny(unsafe_code)]

use crate::proc::with_current;

/// Linux `__NR_restart_syscall` on x86_64.
pub const RESTART_SYSCALL: u64 = 219;

/// What to continue. Deadlines are microseconds since boot.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Nothing: `restart_syscall` fails with `EINTR` (Linux `do_no_restart_syscall`).
    #[default]
    None,
    /// A relative nanosleep/clock_nanosleep: until `deadline`, the time left to `rem`.
    Nanosleep { deadline: u64, rem: u64 },
    /// poll(ufds, nfds) until `deadline` (`None`: no timeout).
    Poll {
        ufds: u64,
        nfds: u64,
        deadline: Option<u64>,
    },
}

/// Records `r` for the calling thread's next `restart_syscall`.
pub fn set(r: Restart) {
    with_current(|t| t.sig.restart = r);
}

/// Takes the calling thread's record, leaving `None`.
pub fn take() -> Restart {
    with_current(|t| core::mem::take(&mut t.sig.restart))
}
