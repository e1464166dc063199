//! The hardware side of `cowlab_mm::Arch`: how the memory manager touches this machine.
//!
//! `cowlab-mm` keeps its policy in safe code over three mechanisms, and this is the kernel's
//! implementation of them: physical memory is the bootloader's offset mapping of all RAM, a TLB
//! flush is `invlpg` (or a CR3 reload for a whole address space), and interrupt masking for
//! GUP-fast is `cli` with RFLAGS saved. There is no PCID, so on each CPU only the address space
//! loaded in its CR3 can hold cached user translations: flushing any other root is a no-op on
//! that CPU, because loading it later flushes the TLB anyway (user pages are never global).
//! `flush_page`/`flush_all` act on this CPU; `flush_tlb_cpus` reaches the others by IPI
//! (`smp::shootdown`).

use cowlab_mm::addr::{PhysAddr, VirtAddr};
use cowlab_mm::arch::{Arch, IrqState};
use x86_64::instructions::{interrupts, tlb};
use x86_64::registers::control::Cr3;
use x86_64::registers::rflags::{self, RFlags};

/// The kernel's platform for `cowlab_mm::Mm`.
pub struct KernelArch {
    /// Virtual address of physical address 0 (the bootloader's offset mapping).
    physical_memory_offset: u64,
}

impl KernelArch {
    /// # Safety
    ///
    /// `physical_memory_offset` must be where the bootloader mapped all of physical memory
    /// (writable, for the kernel's lifetime): `Arch` obligation 1 rests on it.
    pub unsafe fn new(physical_memory_offset: u64) -> KernelArch {
        KernelArch {
            physical_memory_offset,
        }
    }

    /// Whether `root` is the PML4 loaded in CR3.
    fn is_loaded(root: PhysAddr) -> bool {
        Cr3::read().0.start_address().as_u64() == root.as_u64()
    }
}

// SAFETY: obligation 1: the window is the bootloader's mapping of all physical memory, fixed for
// the kernel's lifetime and page aligned (`KernelArch::new`'s contract); the frames the memory
// manager touches through it are the ones the frame table hands out, which no Rust object
// overlaps. Obligation 2: no PCID, no global user pages; on each CPU a root that is not in its
// CR3 has no cached translations (they were flushed when CR3 last changed), and for the loaded
// root `invlpg`/a CR3 reload drop them; `flush_tlb_cpus` runs that on every named CPU and
// returns only after each acknowledged (`smp::shootdown`).
unsafe impl Arch for KernelArch {
    fn phys_window(&self) -> *mut u8 {
        self.physical_memory_offset as *mut u8
    }

    fn flush_page(&self, root: PhysAddr, va: VirtAddr) {
        if Self::is_loaded(root) {
            tlb::flush(x86_64::VirtAddr::new_truncate(va.as_u64()));
        }
    }

    fn flush_all(&self, root: PhysAddr) {
        if Self::is_loaded(root) {
            tlb::flush_all();
        }
    }

    fn cpu_id(&self) -> usize {
        crate::percpu::cpu_id()
    }

    /// The space cached on this CPU alone (one CPU, or a process that never ran elsewhere: the
    /// COW and zero-page faults' flush) is flushed here without entering the shootdown code,
    /// whose out-of-line call and general range loop cost ~40 instructions per fault.
    #[inline]
    fn flush_tlb_cpus(&self, cpus: u64, root: PhysAddr, start: VirtAddr, end: VirtAddr, all: bool) {
        let me = 1u64 << crate::percpu::cpu_id();
        if cpus & !me != 0 {
            crate::smp::shootdown::flush_tlb_cpus(cpus, root, start, end, all);
        } else if cpus & me != 0 {
            let (start, end) = (start.as_u64(), end.as_u64());
            if !all
                && end.wrapping_sub(start & !(cowlab_mm::PAGE_SIZE as u64 - 1))
                    <= cowlab_mm::PAGE_SIZE as u64
            {
                // One page: `flush_local`'s loop, once.
                if start < end && Self::is_loaded(root) {
                    tlb::flush(x86_64::VirtAddr::new_truncate(start));
                }
            } else {
                flush_local(root, start, end, all);
            }
        }
    }

    fn irq_save(&self) -> IrqState {
        IrqState(irq_save_raw())
    }

    fn irq_restore(&self, state: IrqState) {
        irq_restore_raw(state.0)
    }

    fn may_reclaim(&self) -> bool {
        // Direct reclaim walks the page caches and other address spaces, which only the big
        // lock's holder may do; a fault without it (`fault_unlocked.rs`) fails the allocation
        // instead and is retried under the lock.
        crate::bkl::held()
    }

    fn metadata_room(&self) -> bool {
        // A B-tree node of a cache index with its slab slack; a page added within an existing
        // node takes nothing, so this is conservative by one node at most.
        crate::heap::headroom(256).is_ok()
    }

    fn long_work_progress(&self) {
        crate::watchdog::soft::touch();
    }

    fn defer_evict(
        &self,
        dead: cowlab_mm::shmem::DeadCache,
    ) -> Result<(), cowlab_mm::shmem::DeadCache> {
        crate::proc::evict::defer(dead)
    }
}

/// Disables interrupts on this CPU, returning the RFLAGS to give [`irq_restore_raw`].
pub fn irq_save_raw() -> u64 {
    let flags = rflags::read_raw();
    interrupts::disable();
    flags
}

/// Re-enables interrupts if `flags` (from [`irq_save_raw`]) had them enabled.
pub fn irq_restore_raw(flags: u64) {
    if RFlags::from_bits_truncate(flags).contains(RFlags::INTERRUPT_FLAG) {
        interrupts::enable();
    }
}

/// Invalidates this CPU's translations of `[start, end)` (or all of them) under `root`, if
/// `root` is the loaded PML4; a long range is one CR3 reload rather than many `invlpg`s.
pub fn flush_local(root: PhysAddr, start: u64, end: u64, all: bool) {
    /// Past this many pages a full flush is cheaper (Linux's `tlb_single_page_flush_ceiling`).
    const CEILING: u64 = 33;
    if !KernelArch::is_loaded(root) {
        return;
    }
    let pages = end.saturating_sub(start) / cowlab_mm::PAGE_SIZE as u64;
    if all || pages > CEILING {
        tlb::flush_all();
        return;
    }
    let mut va = start & !(cowlab_mm::PAGE_SIZE as u64 - 1);
    while va < end {
        tlb::flush(x86_64::VirtAddr::new_truncate(va));
        va += cowlab_mm::PAGE_SIZE as u64;
    }
}
