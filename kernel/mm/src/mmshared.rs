//! The part of an address space that other CPUs touch without its lock (Linux keeps these in
//! `mm_struct` next to `mmap_lock`): the root, `mm_cpumask`, `write_protect_seq` and
//! `MMF_HAS_PINNED`.
//!
//! Picture: [`crate::AddressSpace`] is owned by whoever holds the mmap lock; a scheduler switching
//! CR3 on another CPU, a TLB shootdown reading which CPUs to interrupt, and GUP-fast walking the
//! tables with interrupts off must not need that lock. So these few atomics live in a separately
//! reference-counted [`MmShared`] that the address space points to and the kernel may clone
//! ([`crate::AddressSpace::shared`]) into each task that runs on it.
//!
//! `mm_cpumask` protocol (Linux `switch_mm_irqs_off` / `flush_tlb_mm_range`): a CPU sets its bit
//! ([`MmShared::mm_cpumask_set`], `SeqCst`) *before* it loads the root into CR3, and clears it
//! ([`MmShared::mm_cpumask_clear`]) only after it has loaded another root (without PCIDs the
//! load drops every non-global entry of the old one). A flusher changes the PTEs, then reads
//! the mask after a `SeqCst` fence ([`MmShared::flush_targets`]). Either the flusher's read sees
//! the bit (the CPU is interrupted and flushes), or the CPU's CR3 load comes after the PTE
//! change and its walks see the new PTEs: the `SeqCst` fetch_or and the `SeqCst` fence are the
//! Dekker pair that forbids both missing each other.

#![deny(unsafe_code)]

use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::addr::PhysAddr;

/// Most CPUs an `mm_cpumask` can name (one bit each in a `u64`).
pub const MAX_CPUS: usize = 64;

/// Lock-free state of one address space, shared with the CPUs that run it.
#[derive(Debug)]
pub struct MmShared {
    root: PhysAddr,
    /// Bit `n`: CPU `n` may cache translations of `root` (Linux `mm_cpumask`).
    mm_cpumask: AtomicU64,
    has_pinned: AtomicBool,
    write_protect_seq: AtomicU32,
    /// This address space's COW outcomes (`cowstat`).
    pub(crate) cow: crate::cowstat::CowCounts,
    /// Page-table pages deposited for splitting PMD leaves (`huge_memory.rs`): the physical
    /// address of the first, linked through each one's entry 0; 0 when none. Changed only by
    /// the holder of the address space.
    pub(crate) deposits: AtomicU64,
    pub(crate) deposit_count: core::sync::atomic::AtomicUsize,
    /// Resident pages mapped by this address space (Linux's `mm_struct` rss counters, summed):
    /// anonymous, file and shmem pages, a PMD-mapped THP as its 512 pages, the shared zero page
    /// not at all. Kept by the sites that map and unmap pages ([`Self::add_rss`],
    /// [`Self::sub_rss`]); atomic because zaps reach it through `&MmShared` (a file truncation
    /// unmapping the pages of every mapper).
    rss: AtomicU64,
}

impl MmShared {
    pub(crate) fn new(root: PhysAddr) -> MmShared {
        MmShared {
            root,
            mm_cpumask: AtomicU64::new(0),
            has_pinned: AtomicBool::new(false),
            write_protect_seq: AtomicU32::new(0),
            cow: Default::default(),
            deposits: AtomicU64::new(0),
            deposit_count: core::sync::atomic::AtomicUsize::new(0),
            rss: AtomicU64::new(0),
        }
    }

    /// Resident pages (Linux `get_mm_rss`), exact: every mapping and unmapping site counts.
    #[inline]
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// `pages` more resident pages were mapped (Linux `add_mm_counter`).
    #[inline(always)]
    pub(crate) fn add_rss(&self, pages: u64) {
        self.rss.fetch_add(pages, Ordering::Relaxed);
    }

    /// `pages` resident pages were unmapped.
    #[inline(always)]
    pub(crate) fn sub_rss(&self, pages: u64) {
        let old = self.rss.fetch_sub(pages, Ordering::Relaxed);
        debug_assert!(old >= pages, "rss counter underflow: {old} - {pages}");
    }

    /// Physical address of the PML4 (what CR3 gets).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// CPU `cpu` is about to load this root: call before writing CR3 (see the module doc).
    #[inline]
    pub fn mm_cpumask_set(&self, cpu: usize) {
        let bit = cpu_bit(cpu);
        if self.mm_cpumask.load(Ordering::Relaxed) & bit == 0 {
            self.mm_cpumask.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// CPU `cpu` has loaded another root and keeps no translation of this one: call after
    /// writing CR3 (see the module doc).
    #[inline]
    pub fn mm_cpumask_clear(&self, cpu: usize) {
        self.mm_cpumask.fetch_and(!cpu_bit(cpu), Ordering::SeqCst);
    }

    /// The CPUs that may cache translations of this address space.
    #[inline]
    pub fn mm_cpumask(&self) -> u64 {
        self.mm_cpumask.load(Ordering::Acquire)
    }

    /// Whom a flush issued on CPU `me` must reach, read *after* the PTE changes it covers
    /// (the `SeqCst` fence pairs with [`Self::mm_cpumask_set`]). `me` is always included: the
    /// local TLB may hold entries even when the bit is clear (a kernel access to a user
    /// address of a space loaded lazily).
    #[inline]
    pub(crate) fn flush_targets(&self, me: usize) -> u64 {
        fence(Ordering::SeqCst);
        self.mm_cpumask.load(Ordering::Relaxed) | cpu_bit(me)
    }

    pub(crate) fn has_pinned(&self) -> bool {
        self.has_pinned.load(Ordering::Relaxed)
    }

    pub(crate) fn set_has_pinned(&self) {
        if !self.has_pinned() {
            self.has_pinned.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn write_protect_seq(&self) -> &AtomicU32 {
        &self.write_protect_seq
    }
}

/// The `mm_cpumask` bit of `cpu`; CPUs beyond [`MAX_CPUS`] are a kernel bug.
#[inline]
fn cpu_bit(cpu: usize) -> u64 {
    assert!(
        cpu < MAX_CPUS,
        "CPU {cpu} beyond the mm_cpumask's {MAX_CPUS} bits"
    );
    1u64 << cpu
}

impl AsRef<MmShared> for MmShared {
    fn as_ref(&self) -> &MmShared {
        self
    }
}

impl AsRef<MmShared> for crate::AddressSpace {
    fn as_ref(&self) -> &MmShared {
        &self.shared
    }
}
