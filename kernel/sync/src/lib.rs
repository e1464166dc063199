//! Locks that know their place in the kernel's lock order.
//!
//! Picture: every lock belongs to a [`LockClass`] (a `static` naming what the lock protects,
//! e.g. "mmap_lock" for every address space's reader/writer lock). In debug builds each
//! acquisition is checked against the order in which classes have been taken so far, on any
//! CPU: taking B while holding A records the edge A -> B with where it happened, and taking A
//! while holding B then closes a cycle, which is reported with both places ([`lockdep`]), the
//! first time the order is inverted rather than the rare time the inversion deadlocks. A
//! [`might_sleep`] hook reports a context that would sleep or switch while holding a spin lock.
//! Release builds compile the checker out: the locks are then a bare atomic or two.
//!
//! The wrappers: [`SpinLock`] (mutual exclusion, never sleeps), [`RwLock`] (many readers or one
//! writer, the shape of Linux's `mmap_lock`; a "sleeping" class for [`might_sleep`]), and
//! [`SeqCount`] (a writer-side sequence count readers retry on, like `write_protect_seq`), and
//! [`MmapLock`] (the address space's reader/writer semaphore with its page-table lock inside,
//! whose waits sleep through the kernel's hooks).
//! `no_std`, no allocation; the host runs the same code under `cargo test`.
#![no_std]
// Release builds compile the checker out; class ids and its tables are then unused.
#![cfg_attr(not(debug_assertions), allow(dead_code, unused_imports))]

#[cfg(test)]
extern crate std;

mod class;
pub mod lockdep;
mod mmap_lock;
mod rwlock;
mod seqcount;
mod spinlock;

pub use class::LockClass;
pub use lockdep::{might_sleep, set_context_fn, set_report_hook, LockReport};
pub use mmap_lock::{
    set_ptl_spin_hook, set_wait_hooks, MmapLock, MmapReadGuard, MmapReadPtlGuard, MmapWriteGuard,
    PtlGuard,
};
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
pub use seqcount::{SeqCount, SeqWriteGuard};
pub use spinlock::{SpinGuard, SpinLock};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mmap;
