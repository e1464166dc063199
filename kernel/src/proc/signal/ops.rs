//! The signal system calls' work below argument decoding: actions, masks, pending sets,
//! waiting for signals, the alternate stack.
#![deny(unsafe_code)]

use super::deliver::{deliverable, request_check};
use super::{
    bit, default_action, AltStack, Default_, SigAction, SigInfo, SIGKILL, SIGSTOP, SIG_DFL,
    SIG_IGN, SS_AUTODISARM, SS_DISABLE, SS_ONSTACK, UNBLOCKABLE,
};
use crate::errno::Errno;
use crate::proc::{current_tid, with_current, TABLE};

/// rt_sigaction: sets the action of `signal` (1..=64) if `new` is given; returns the old one.
/// Setting "ignore" (or a default that ignores) discards the signal where it is pending
/// (Linux `do_sigaction`).
#[doc(alias = "do_sigaction")]
pub fn sigaction(signal: u8, new: Option<SigAction>) -> Result<SigAction, Errno> {
    if signal == 0 || signal > 64 || (new.is_some() && (signal == SIGKILL || signal == SIGSTOP)) {
        return Err(Errno::EINVAL);
    }
    let mut table = TABLE.lock();
    let me = table.get(&current_tid()).expect("a task");
    let (tgid, group) = (me.tgid, me.group.clone());
    let mut g = group.lock();
    let old = g.sigactions[signal as usize];
    if let Some(mut new) = new {
        new.mask &= !UNBLOCKABLE;
        g.sigactions[signal as usize] = new;
        let ignores = new.handler == SIG_IGN
            || (new.handler == SIG_DFL
                && matches!(
                    default_action(signal),
                    Default_::Ignore | Default_::Continue
                ));
        if ignores {
            g.sig.shared.discard(bit(signal));
            drop(g);
            for t in table.values_mut().filter(|t| t.tgid == tgid) {
                t.sig.pending.discard(bit(signal));
            }
        }
    }
    Ok(old)
}

/// rt_sigprocmask: `how` 0 block, 1 unblock, 2 set; returns the old mask.
pub fn sigprocmask(how: u32, set: Option<u64>) -> Result<u64, Errno> {
    if set.is_some() && how > 2 {
        return Err(Errno::EINVAL);
    }
    let old = with_current(|p| {
        let old = p.sigmask;
        if let Some(set) = set {
            p.sigmask = match how {
                0 => old | set,
                1 => old & !set,
                _ => set,
            } & !UNBLOCKABLE;
        }
        old
    });
    // Unblocking may make a pending signal deliverable now.
    request_check();
    Ok(old)
}

/// rt_sigpending: the signals pending for the thread or its process that it blocks.
pub fn sigpending() -> u64 {
    with_current(|t| (t.sig.pending.mask | t.group.lock().sig.shared.mask) & t.sigmask)
}

fn channel(tid: u32) -> usize {
    0x4_0000_0000 + tid as usize
}

/// rt_sigsuspend: waits with `mask` in place until a signal is delivered; always ends with
/// `-ERESTARTNOHAND` (so `EINTR` after the handler; the old mask is restored once the handler
/// frame saved it: `ThreadSignals::saved_mask`).
pub fn sigsuspend(mask: u64) -> Errno {
    with_current(|t| {
        t.sig.saved_mask = Some(t.sigmask);
        t.sigmask = mask & !UNBLOCKABLE;
    });
    let tid = current_tid();
    loop {
        match crate::proc::sleep_interruptible(channel(tid)) {
            Err(Errno::ERESTARTSYS) => return Errno::ERESTARTNOHAND,
            Err(e) => return e,
            Ok(()) => {}
        }
    }
}

/// Takes the lowest pending signal of `set`, the calling thread's own before its process's
/// (Linux `dequeue_signal`): for sigtimedwait and signalfd reads.
pub fn dequeue_signal(set: u64) -> Option<SigInfo> {
    with_current(|t| {
        let mut g = t.group.lock();
        let own = t.sig.pending.mask & set;
        let shared = g.sig.shared.mask & set;
        if own != 0 {
            Some(t.sig.pending.take(own.trailing_zeros() as u8 + 1))
        } else if shared != 0 {
            Some(g.sig.shared.take(shared.trailing_zeros() as u8 + 1))
        } else {
            None
        }
    })
}

/// The signals of `set` pending for the calling thread (its own and its process's).
pub fn pending_in(set: u64) -> u64 {
    with_current(|t| (t.sig.pending.mask | t.group.lock().sig.shared.mask) & set)
}

/// rt_sigtimedwait: takes a pending signal of `set` (waiting for one until `deadline`, in
/// microseconds since boot); `EAGAIN` at the deadline, `EINTR` if another signal interrupts.
#[doc(alias = "do_sigtimedwait")]
pub fn sigtimedwait(set: u64, deadline: Option<u64>) -> Result<SigInfo, Errno> {
    let set = set & !UNBLOCKABLE;
    let tid = current_tid();
    loop {
        if let Some(info) = dequeue_signal(set) {
            return Ok(info);
        }
        let now = crate::time::micros_since_boot();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Errno::EAGAIN);
        }
        // While waiting, the signals of `set` count as deliverable, so they wake the sleep;
        // `real_blocked` keeps them from being discarded as ignored meanwhile.
        let saved = with_current(|t| {
            let saved = t.sigmask;
            t.sig.real_blocked = saved;
            t.sigmask &= !set;
            saved
        });
        let r = match deadline {
            Some(_) => {
                crate::proc::sleep_interruptible_until(channel(tid), crate::time::ticks() + 1)
            }
            None => crate::proc::sleep_interruptible(channel(tid)),
        };
        let other = with_current(|t| {
            t.sigmask = saved;
            t.sig.real_blocked = 0;
            let shared = t.group.lock().sig.shared.mask;
            (t.sig.pending.mask | shared) & set == 0 && deliverable(t)
        });
        match r {
            Err(Errno::EINTR) => return Err(Errno::EINTR),
            Err(_) if other => return Err(Errno::EINTR),
            _ => {}
        }
    }
}

/// sigaltstack: installs `new` (flags 0, `SS_DISABLE`, or with `SS_AUTODISARM`) unless the
/// thread runs on its alternate stack now (`EPERM`); returns the old one with `SS_ONSTACK` /
/// `SS_DISABLE` in its flags. `rsp` is the caller's user stack pointer.
#[doc(alias = "do_sigaltstack")]
pub fn sigaltstack(new: Option<AltStack>, rsp: u64) -> Result<AltStack, Errno> {
    with_current(|t| {
        let cur = t.sig.altstack;
        let on = cur.contains(rsp);
        let mut old = cur;
        old.flags = if on {
            SS_ONSTACK
        } else if cur.size == 0 {
            SS_DISABLE
        } else {
            0
        } | (cur.flags & SS_AUTODISARM);
        if cur.size == 0 {
            old.sp = 0;
        }
        if let Some(new) = new {
            if on {
                return Err(Errno::EPERM);
            }
            let mode = new.flags & !SS_AUTODISARM;
            if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
                return Err(Errno::EINVAL);
            }
            t.sig.altstack = if mode == SS_DISABLE {
                AltStack::default()
            } else {
                // Linux MINSIGSTKSZ.
                if new.size < 2048 {
                    return Err(Errno::ENOMEM);
                }
                AltStack {
                    sp: new.sp,
                    size: new.size,
                    flags: new.flags & SS_AUTODISARM,
                }
            };
        }
        Ok(old)
    })
}

/// ppoll/pselect6: `mask` replaces the thread's mask while it waits; the old one is kept in
/// `saved_mask` (Linux `set_user_sigmask`), so a handler that interrupts the wait returns to it.
pub fn set_temporary_mask(mask: u64) {
    with_current(|t| {
        t.sig.saved_mask = Some(t.sigmask);
        t.sigmask = mask & !UNBLOCKABLE;
    });
    request_check();
}

/// The wait ended without a signal to deliver: the old mask is back (Linux
/// `restore_saved_sigmask_unless`).
pub fn restore_temporary_mask() {
    with_current(|t| {
        if let Some(mask) = t.sig.saved_mask.take() {
            t.sigmask = mask;
        }
    });
}
