//! Deferred eviction of large shmem caches (Linux: the last `fput` of a file is queued as
//! `task_work` and runs at the task's return to user mode, where `shmem_evict_inode`'s
//! truncate may `cond_resched`).
//!
//! The last [`cowlab_mm::shmem::ShmemObject::put`] of an object with more than
//! `DEFER_EVICT_PAGES` cache pages runs inside a `Drop` (a descriptor table entry, a VMA),
//! often with locks held, where pausing is not allowed. Freeing a 1 GiB memfd there held the
//! CPU for the whole free (cowlab's kernel is not preemptible). Instead the cache is queued
//! here, tagged with the task that dropped it, and that task frees it in batches, pausing
//! (`sched::cond_resched`) every [`PAUSE_US`], before its system call returns
//! ([`run_own`] from the syscall exit) or before its exit is reported to the parent (the exit
//! path). So the frames are back when `close`/`munmap`/`exit` return, as before, but other
//! tasks run meanwhile. Outside a task (boot, the in-kernel tests) the cache is freed at once;
//! power-off frees whatever is left ([`run_all`]).
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_mm::shmem::DeadCache;
use spin::Mutex;

use super::{current_tid, sched, Pid};
use crate::{memory, time};

/// Queued caches and the task that must free each.
static QUEUE: Mutex<Vec<(Pid, DeadCache)>> = Mutex::new(Vec::new());
/// Entries in [`QUEUE`]: the syscall exit's one-load test.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Pages freed between two looks at the clock.
const BATCH: usize = 32;
/// Time a task frees pages for before it lets others run (the exit path's pause).
const PAUSE_US: u64 = 2000;

/// `Arch::defer_evict`: queues `dead` for the current task; `Err` (free it at once) outside a
/// task (boot, the in-kernel tests: nobody returns to user mode to free it) or when the queue
/// cannot grow (kernel heap exhausted).
pub fn defer(dead: DeadCache) -> Result<(), DeadCache> {
    let tid = current_tid();
    if tid == 0 {
        return Err(dead);
    }
    let mut q = QUEUE.lock();
    if q.try_reserve(1).is_err() {
        return Err(dead);
    }
    q.push((tid, dead));
    QUEUED.fetch_add(1, Ordering::Release);
    Ok(())
}

/// Whether any cache waits (one relaxed load: the syscall exit calls this every time).
#[inline]
pub fn pending() -> bool {
    QUEUED.load(Ordering::Relaxed) != 0
}

/// Frees the caches the current task dropped, pausing every
/// [`PAUSE_US`] if `pause`. Called where the task holds no lock: its syscall exit, its exit.
pub fn run_own(pause: bool) {
    let me = current_tid();
    run(pause, |tid| tid == me);
}

/// Frees every queued cache (power-off, after every task's descriptors are closed).
pub fn run_all() {
    run(false, |_| true);
}

fn run(pause: bool, mine: impl Fn(Pid) -> bool) {
    let mm = memory::mm();
    let mut since = time::micros_since_boot();
    loop {
        let taken = {
            let mut q = QUEUE.lock();
            q.iter()
                .position(|(tid, _)| mine(*tid))
                .map(|i| q.swap_remove(i))
        };
        let Some((tid, mut dead)) = taken else {
            return;
        };
        loop {
            if dead.free_some(mm, BATCH) {
                QUEUED.fetch_sub(1, Ordering::Release);
                break;
            }
            if pause && time::micros_since_boot().saturating_sub(since) >= PAUSE_US {
                // Back in the queue across the pause: while this task is away the system may
                // power off (init's reboot does not wait for init itself, which frees its
                // caches on that very exit path), and `run_all` frees only what is queued.
                let mut q = QUEUE.lock();
                if q.try_reserve(1).is_ok() {
                    q.push((tid, dead));
                    drop(q);
                    sched::cond_resched();
                    since = time::micros_since_boot();
                    break;
                }
                // No room to queue it (a full kernel heap): pause holding it, as before.
                drop(q);
                sched::cond_resched();
                since = time::micros_since_boot();
            }
        }
    }
}
