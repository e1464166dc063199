//! Links from one wait channel to a target that wakes with it: Linux's `poll_wait` entries on a
//! file's wait queue with a callback (`ep_poll_callback`). A waiter on many files at once (an
//! epoll instance) cannot sleep on all their channels, so each watched file's channel is linked
//! to a [`WakeTarget`]; [`crate::proc::wakeup`] of the channel fires every target linked to it,
//! and the target marks itself and wakes its own channel, on which the waiter sleeps. The files
//! need no change beyond waking the channel they already wake for their own readers and writers.
//!
//! While no link exists [`follow`] is one relaxed load, so wake-ups of pipes and ttys cost
//! nothing more when nobody uses epoll.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;
use x86_64::instructions::interrupts;

use crate::errno::Errno;

/// What a linked channel's wake-up calls (from any context, interrupts included: it must not
/// sleep or take a lock that interrupted code may hold).
pub trait WakeTarget: Send + Sync {
    fn fire(&self);

    /// [`fire`](Self::fire) from a wake-up `depth` links away from the first channel woken. A
    /// target that wakes further channels (an epoll watched by another) passes `depth + 1` to
    /// [`follow_nested`] and stops past its limit, so a chain of links can never take more
    /// than a bounded stack (Linux bounds `ep_poll_callback` nesting the same way).
    fn fire_nested(&self, depth: usize) {
        let _ = depth;
        self.fire();
    }
}

/// Channel -> the targets linked to it. Held with interrupts off: the tty's tick wakes its
/// readers' channel from the timer interrupt.
static LINKS: Mutex<BTreeMap<usize, Vec<Weak<dyn WakeTarget>>>> = Mutex::new(BTreeMap::new());
/// Links in [`LINKS`]: zero means [`follow`] has nothing to look up.
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn same(a: &Weak<dyn WakeTarget>, b: &Arc<dyn WakeTarget>) -> bool {
    core::ptr::addr_eq(a.as_ptr(), Arc::as_ptr(b))
}

/// Links `channel` to `target` (held weakly: a target that is gone is skipped and pruned).
/// `ENOMEM` when the kernel heap cannot take the entry.
pub fn link(channel: usize, target: &Arc<dyn WakeTarget>) -> Result<(), Errno> {
    crate::heap::headroom(256)?;
    interrupts::without_interrupts(|| {
        let mut links = LINKS.lock();
        let list = links.entry(channel).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(target));
        COUNT.store(links.values().map(Vec::len).sum(), Ordering::Relaxed);
    });
    Ok(())
}

/// Removes the link from `channel` to `target` (once; nothing if there is none).
pub fn unlink(channel: usize, target: &Arc<dyn WakeTarget>) {
    interrupts::without_interrupts(|| {
        let mut links = LINKS.lock();
        if let Some(list) = links.get_mut(&channel) {
            if let Some(i) = list.iter().position(|w| same(w, target)) {
                list.swap_remove(i);
            }
            list.retain(|w| w.strong_count() > 0);
            if list.is_empty() {
                links.remove(&channel);
            }
        }
        COUNT.store(links.values().map(Vec::len).sum(), Ordering::Relaxed);
    });
}

/// Fires the targets linked to `channel` (called by `proc::wakeup`). The table lock is
/// released before any target fires, so a target may wake further channels (a nested epoll).
pub fn follow(channel: usize) {
    follow_nested(channel, 0);
}

/// [`follow`] for a wake-up `depth` links away from the first channel woken: each target is
/// told the depth, and one that wakes on must go through here with `depth + 1`.
pub fn follow_nested(channel: usize, depth: usize) {
    if COUNT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let targets: Vec<Arc<dyn WakeTarget>> = interrupts::without_interrupts(|| {
        LINKS
            .lock()
            .get(&channel)
            .map(|list| list.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default()
    });
    for t in targets {
        t.fire_nested(depth);
    }
}
