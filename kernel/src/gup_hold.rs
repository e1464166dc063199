//! The kernel's hold on an address space for the GUP slow path (`cowlab_mm::gup::MmapHold`):
//! `mmap_lock` read-held with its page-table lock (Linux's GUP callers take `mmap_read_lock`).
//! At the loop's resched point, between a fault and the retry that looks at the PTE again, it
//! lets the address-space lock and the big kernel lock go, so that threads waiting on other
//! CPUs run their system calls there, and takes both back (big lock first, the order of
//! docs/architecture.md). The mm core then looks the VMA up again, as Linux's
//! `__get_user_pages` does after `mmap_lock` was dropped.
//!
//! Why: on Linux both the GUP caller and `madvise(MADV_DONTNEED)` hold `mmap_lock` only for
//! reading, and `__get_user_pages` calls `cond_resched()` before each `follow_page_mask`, so
//! another thread's zap really runs between a `FOLL_FORCE` write's COW break and its retry.
//! That is the Dirty COW window; which outcome it has (the retry finds the page cache page and
//! writes it, or faults again) is the era's rule `foll_force_cow_retry`, not this file's. With
//! one CPU running tasks (`smp_sched=0`), or nobody waiting, the hold never lets go.
#![deny(unsafe_code)]

use cowlab_mm::aspace::AddressSpace;
use cowlab_mm::gup::MmapHold;
use cowlab_mm::Mm;
use cowlab_sync::{MmapLock, MmapReadPtlGuard};

use crate::arch::KernelArch;

/// Times one hold lets go: a hold spans one `/proc/pid/mem` read or write (one 64 KiB chunk,
/// however many pages and GUP rounds), so this is once per such call, not per page. Once is the
/// window Linux's races live in (between the first
/// fault and its retry); each further time costs a hand-off of the big lock both ways (on an
/// overloaded host, a host time slice of the other vCPU thread: 8 per call made the Dirty COW
/// writer 16 writes in 3 s against 79 madvises) and lets a thread that undoes every fault keep
/// the caller looping. After that the loop runs under the mm core's no-progress bound.
const MAX_LETS_GO: u32 = 1;

/// A locked address space that may be let go at the GUP slow path's resched point.
pub struct ReschedHold<'m> {
    lock: &'m MmapLock<AddressSpace>,
    /// Always `Some` outside [`MmapHold::resched`].
    guard: Option<MmapReadPtlGuard<'m, AddressSpace>>,
    lets_go: u32,
    /// The caller was being killed when the last fill let the space go (read then, with no
    /// address-space lock held, so the task table is never locked under it).
    killed: bool,
}

impl<'m> ReschedHold<'m> {
    /// Read-locks `lock` (the caller holds the big kernel lock and no address-space lock).
    pub fn new(lock: &'m MmapLock<AddressSpace>) -> Self {
        ReschedHold {
            lock,
            guard: Some(lock.read_ptl()),
            lets_go: 0,
            killed: false,
        }
    }

    /// A hold that lets the address space go only to fill a file page or let the filesystem
    /// allocate its blocks (`MmapHold::unlocked`, the fault's `Retry`), never at the resched
    /// point: the system calls that take user pages for I/O (O_DIRECT, vmsplice, io_uring
    /// registration, gup_test), which before held the space locked across the whole walk and
    /// so read file pages and ran `page_mkwrite` polling the filesystem under it. Their
    /// callers hold the big kernel lock and no spin lock (the fill sleeps).
    pub fn for_fills(lock: &'m MmapLock<AddressSpace>) -> Self {
        ReschedHold {
            lets_go: MAX_LETS_GO,
            ..Self::new(lock)
        }
    }
}

impl MmapHold<KernelArch> for ReschedHold<'_> {
    fn aspace(&mut self) -> &mut AddressSpace {
        self.guard
            .as_mut()
            .expect("the address space is locked outside resched")
    }

    fn resched(&mut self, _: &Mm<KernelArch>) -> bool {
        if self.lets_go >= MAX_LETS_GO || !crate::bkl::others_waiting() {
            return false;
        }
        self.guard = None;
        let let_go = crate::bkl::relax();
        self.guard = Some(self.lock.read_ptl());
        self.lets_go += u32::from(let_go);
        let_go
    }

    fn can_unlock(&self) -> bool {
        true
    }

    fn unlocked(&mut self, _: &Mm<KernelArch>, f: &mut dyn FnMut()) {
        self.guard = None;
        f();
        self.killed = crate::proc::fatal_signal_pending();
        self.guard = Some(self.lock.read_ptl());
    }

    fn fatal_signal_pending(&self) -> bool {
        self.killed
    }
}
