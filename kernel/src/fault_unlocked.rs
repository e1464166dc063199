//! Ring-3 page faults resolved without the big kernel lock (issue 16; Linux's per-VMA-lock
//! fault path, `lock_vma_under_rcu` with `VM_FAULT_RETRY` back to the `mmap_lock` path).
//!
//! Picture: the page-fault branch of `idt::dispatch::user_trap` calls [`fault_unlocked`] before
//! it takes the big lock (`bkl::lock_from_user_unless`; only while the lock is in use, and
//! not with `fault_bkl=1`: on by default since session 9). With interrupts still off from the trap, it takes the current
//! address space's `mmap_lock` for reading with its page-table lock, without waiting
//! (`try_read_ptl`: a writer holding or waiting, or another reader's page-table work, sends the
//! fault to the locked path), and asks the memory manager's unlocked fault
//! (`cowlab_mm::fault_unlocked`), which resolves only private anonymous faults on small pages
//! and answers `Retry` for everything else. On `Retry` nothing was changed and the trap goes on
//! as before. What this may touch, and why each shared structure is safe, is docs/locking.md,
//! "BKL-free fault path".
//!
//! Two other parts of the kernel change with it: a fault in kernel mode that finds the lock
//! taken waits for it like any reader (`vm::lock_at_kernel_fault`: a spin that only waited out
//! in-flight unlocked faults deadlocked against their release's wake-up, which needs the big
//! lock that spinner held), and the `mmap_lock` wake hook takes the big lock for a release made
//! in here ([`inside`], `locking::wake`).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::memory;

/// Per CPU: inside [`fault_unlocked`] (interrupts are off there, so the flag stays this
/// CPU's). The `mmap_lock` wake-up takes the big lock only here (`locking::wake`).
static INSIDE: [AtomicBool; crate::percpu::MAX_CPUS] =
    [const { AtomicBool::new(false) }; crate::percpu::MAX_CPUS];

/// Whether this CPU is resolving a fault without the big lock (its lock release is the one
/// `mmap_lock` release made without the big lock by a task).
pub fn inside() -> bool {
    INSIDE[crate::percpu::cpu_id()].load(Ordering::Relaxed)
}

/// Runs `f` as if inside [`fault_unlocked`] on this CPU (the in-kernel tests of what a release
/// made there does). Interrupts off, as in the fault.
pub(crate) fn as_if_inside<R>(f: impl FnOnce() -> R) -> R {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cpu = crate::percpu::cpu_id();
        INSIDE[cpu].store(true, Ordering::Relaxed);
        let r = f();
        INSIDE[cpu].store(false, Ordering::Relaxed);
        r
    })
}

/// Faults resolved here since boot (for the in-kernel test and `/proc/cowlab/mmstat`-style
/// reports).
static RESOLVED: AtomicUsize = AtomicUsize::new(0);

/// Tries the ring-3 fault at `cr2` without the big lock; `true` when it is resolved (the
/// access can be retried), `false` when the locked path must run it. Interrupts are off.
#[inline(never)]
pub fn fault_unlocked(cr2: u64, error_code: u64) -> bool {
    // A traced task's coverage stays what the locked path records (t_kcov compares it).
    #[cfg(feature = "kcov")]
    if crate::kcov::tracing_here() {
        return false;
    }
    let cpu = crate::percpu::cpu_id();
    INSIDE[cpu].store(true, Ordering::Relaxed);
    let done = crate::vm::with_current_lock(|shared| {
        let Some(mut aspace) = shared.try_read_ptl() else {
            return false;
        };
        cowlab_mm::fault_unlocked::handle_x86_page_fault_unlocked(
            memory::mm(),
            &mut aspace,
            cr2,
            error_code,
        )
        .is_ok()
    })
    .unwrap_or(false);
    INSIDE[cpu].store(false, Ordering::Relaxed);
    if done {
        RESOLVED.fetch_add(1, Ordering::Relaxed);
    }
    done
}

/// Faults resolved without the big lock since boot.
pub fn resolved() -> usize {
    RESOLVED.load(Ordering::Relaxed)
}
