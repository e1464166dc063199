//! The mechanism boundary: what the memory manager needs from the CPU and the platform.
//!
//! Three things, nothing more: a linear window over all physical memory (physical address 0 at
//! [`Arch::phys_window`]), TLB invalidation, and interrupt masking for GUP-fast. The kernel
//! implements it with the bootloader's offset mapping, `invlpg` and `cli`/`popf`; the host
//! implementation (`host::HostArch`) uses a page-aligned buffer and an emulated TLB. Everything
//! above this trait, including the page-table format, is shared by both.

use crate::addr::{PhysAddr, VirtAddr};

/// Interrupt state saved by [`Arch::irq_save`] (on x86_64, RFLAGS).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct IrqState(pub u64);

/// The platform under the memory manager.
///
/// # Safety
///
/// Implementors promise:
/// 1. [`Arch::phys_window`] returns the same pointer for the lifetime of the value, and
///    `phys_window() + p` is valid for reads and writes (non-overlapping with any Rust object
///    the kernel uses otherwise) for every physical address `p` below
///    `frames.len() * PAGE_SIZE`, for the [`crate::frame::FrameTable`] the `Mm` is built with;
///    the pointer is page aligned.
/// 2. After [`Arch::flush_page`] (resp. [`Arch::flush_all`]) returns, this CPU uses no
///    translation of that page (resp. of any page) under the given root that was cached before
///    the call; after [`Arch::flush_tlb_cpus`] returns, the same holds on every CPU it names.
///    A CPU that is not named and whose `mm_cpumask` bit is clear caches no translation of
///    the root (it loaded another root since, which dropped them).
pub unsafe trait Arch: Sync {
    /// Where physical address 0 appears in the kernel's virtual memory.
    fn phys_window(&self) -> *mut u8;

    /// Invalidates any cached translation of `va` in the address space whose PML4 is `root`.
    /// May do nothing when `root` is not loaded on any CPU and loading it flushes.
    fn flush_page(&self, root: PhysAddr, va: VirtAddr);

    /// Invalidates every cached user translation of the address space whose PML4 is `root`.
    fn flush_all(&self, root: PhysAddr);

    /// The index of the CPU running the caller (its `mm_cpumask` bit). Callers that use it to
    /// decide on a flush run with preemption disabled or accept that a migration only widens
    /// the flush (the mask always includes the CPU they started on).
    fn cpu_id(&self) -> usize {
        0
    }

    /// Invalidates `[start, end)` (or everything when `all`) of the address space `root` on
    /// every CPU whose bit is set in `cpus`, this one included if set, and returns only when
    /// all have done it (Linux `flush_tlb_mm_range` -> `flush_tlb_multi`). A CPU with
    /// interrupts disabled (GUP-fast walking page tables) delays the return until it enables
    /// them: this is what makes freeing page tables after the flush safe. Must not be called
    /// with interrupts disabled (two CPUs flushing each other would deadlock).
    ///
    /// The default is uniprocessor: the local `flush_page` loop, or `flush_all`.
    fn flush_tlb_cpus(&self, cpus: u64, root: PhysAddr, start: VirtAddr, end: VirtAddr, all: bool) {
        if cpus & (1u64 << self.cpu_id()) == 0 {
            return;
        }
        if all {
            self.flush_all(root);
            return;
        }
        let mut va = start.align_down().as_u64();
        while va < end.as_u64() {
            self.flush_page(root, VirtAddr::new(va));
            va += crate::PAGE_SIZE as u64;
        }
    }

    /// Disables interrupts on this CPU, returning the previous state.
    fn irq_save(&self) -> IrqState;

    /// Restores the state returned by the matching [`Arch::irq_save`].
    fn irq_restore(&self, state: IrqState);

    /// Whether the memory manager may grow the heap-held metadata of a cache (one more page in
    /// a shmem object's or a file cache's index) for a page a user program asks for. A kernel
    /// with a fixed heap answers no once the heap is down to what it keeps for itself, and the
    /// page is then refused like a frame the allocator has not got (`ENOMEM`, `VM_FAULT_OOM`):
    /// Linux's `xa_store` failing under `GFP_KERNEL`. The host has no such limit.
    fn metadata_room(&self) -> bool {
        true
    }

    /// Whether an allocation that found no free frame may run direct reclaim here (the
    /// deferred-split scan and the kernel's shrinker, which walk caches and other address
    /// spaces). The kernel answers no on a CPU resolving a fault without its big lock
    /// (`fault_unlocked.rs`): the allocation fails and the fault is retried under the lock.
    fn may_reclaim(&self) -> bool {
        true
    }

    /// Takes the cache of a large shmem object whose last holder just went, to free it where
    /// pausing is allowed (Linux defers the final `fput` to `task_work`, run at the return to
    /// user mode, and `shmem_evict_inode`'s truncate calls `cond_resched`). `Err` gives it
    /// back, to be freed at once (the host's answer: it has nobody to pause for).
    fn defer_evict(&self, dead: crate::shmem::DeadCache) -> Result<(), crate::shmem::DeadCache> {
        Err(dead)
    }

    /// Called every 2 MiB while one operation clears or copies a 1 GiB hugetlb page (seconds
    /// of work in one fault or fork, which cannot give up the CPU while it holds the address
    /// space): the kernel tells its soft-lockup detector the CPU is making progress (Linux's
    /// `clear_gigantic_page` calls `cond_resched` per subpage instead). The host does nothing.
    fn long_work_progress(&self) {}

    /// Debug hook: `frame` just lost its last reference and is about to go back to the
    /// allocator (called before it is reusable, so no other CPU can have mapped it again). No
    /// cached translation may still reach it (pages are freed only after the flush that
    /// removes their last translation). The kernel does nothing; the host's emulated TLB
    /// panics if one of its entries still maps the frame.
    fn frame_freed(&self, frame: PhysAddr) {
        let _ = frame;
    }
}
