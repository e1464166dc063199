//! The memory manager's counters, in one place so a number always means the same thing.
//!
//! Gauges (`anon_pages`, `pagetable_pages`) move up and down with the frames they count and are
//! cross-checked against the frame table by `check`; events (`cow_copies`, reuses, ...) only
//! grow. All are `Relaxed` atomics: they order nothing, and a reader gets a snapshot that may
//! be a few events stale, never a torn value.

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) anon_pages: AtomicU64,
    /// Large anon folios (THPs) allocated and not yet freed.
    pub(crate) anon_thps: AtomicU64,
    pub(crate) pagetable_pages: AtomicU64,
    pub(crate) anon_faults: AtomicU64,
    pub(crate) zero_page_faults: AtomicU64,
    pub(crate) cow_copies: AtomicU64,
    pub(crate) zero_page_copies: AtomicU64,
    pub(crate) wp_reuses_exclusive: AtomicU64,
    pub(crate) wp_reuses_proven: AtomicU64,
    pub(crate) unshares: AtomicU64,
    pub(crate) fork_pinned_copies: AtomicU64,
    pub(crate) hugetlb_faults: AtomicU64,
    pub(crate) hugetlb_cow_copies: AtomicU64,
    pub(crate) forks: AtomicU64,
    pub(crate) gup_pins_held: AtomicU64,
    pub(crate) gup_refs_held: AtomicU64,
    pub(crate) gup_slow_pages: AtomicU64,
    pub(crate) gup_fast_pages: AtomicU64,
    pub(crate) gup_fast_fallbacks: AtomicU64,
    pub(crate) gup_fast_seq_retries: AtomicU64,
    pub(crate) gup_unshare_faults: AtomicU64,
    pub(crate) shmem_pages: AtomicU64,
    pub(crate) shmem_faults: AtomicU64,
    pub(crate) file_pages: AtomicU64,
    pub(crate) file_faults: AtomicU64,
    pub(crate) writenotify_faults: AtomicU64,
    pub(crate) file_dirty: AtomicU64,
    pub(crate) thp_fault_alloc: AtomicU64,
    pub(crate) thp_fault_fallback: AtomicU64,
    pub(crate) thp_split_pmd: AtomicU64,
    pub(crate) thp_wp_splits: AtomicU64,
    pub(crate) thp_fork_shared: AtomicU64,
    pub(crate) fault_around_pages: AtomicU64,
    // thp2 (issue 14): the huge zero folio, folio splits, collapse.
    pub(crate) thp_zero_page_alloc: AtomicU64,
    pub(crate) thp_split_page: AtomicU64,
    pub(crate) thp_collapse_alloc: AtomicU64,
}

#[inline]
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[inline]
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[inline]
pub(crate) fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

#[inline]
pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Ordering::Relaxed);
}

/// A snapshot of [`crate::Mm::stats`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct MmStats {
    /// Frames on the free list.
    pub free_frames: u64,
    /// Frames ever handed to the allocator.
    pub usable_frames: u64,
    /// Frames currently holding anonymous memory.
    pub anon_pages: u64,
    /// PTEs currently mapping the shared zero page.
    pub zero_page_mappings: u64,
    /// Page-table pages currently allocated (roots included).
    pub pagetable_pages: u64,
    /// Write faults on an empty PTE that allocated a zeroed page.
    pub anon_faults: u64,
    /// Read faults on an empty PTE that mapped the zero page.
    pub zero_page_faults: u64,
    /// COW copies of an anon page by a write or unshare fault.
    pub cow_copies: u64,
    /// Write or unshare faults on the zero page that allocated a zeroed page.
    pub zero_page_copies: u64,
    /// Write faults that reused a page because it was `ANON_EXCLUSIVE`.
    pub wp_reuses_exclusive: u64,
    /// Write faults that reused a page proven unshared by the era's count rule.
    pub wp_reuses_proven: u64,
    /// Unshare faults that changed something (copy or proven reuse).
    pub unshares: u64,
    /// Pages fork copied for the child because they may be pinned (`fork_must_copy`).
    pub fork_pinned_copies: u64,
    /// hugetlb pages taken from the pool by a fault or fallocate (`hugetlb.rs`).
    pub hugetlb_faults: u64,
    /// Whole-page hugetlb copies: a private write or unshare fault, or fork of a maybe-pinned
    /// page.
    pub hugetlb_cow_copies: u64,
    /// Successful forks.
    pub forks: u64,
    /// `FOLL_PIN` pins currently held (gauge; back to its old value when every pin is released).
    pub gup_pins_held: u64,
    /// `FOLL_GET` references currently held through GUP, including pins of eras without
    /// `FOLL_PIN` (gauge).
    pub gup_refs_held: u64,
    /// Pages taken by the GUP slow path (VMA lookup, faults).
    pub gup_slow_pages: u64,
    /// Pages taken by GUP-fast without the address-space lock.
    pub gup_fast_pages: u64,
    /// Pages GUP-fast could not take and left to the slow path.
    pub gup_fast_fallbacks: u64,
    /// GUP-fast pin attempts abandoned because a fork was write-protecting (`write_protect_seq`).
    pub gup_fast_seq_retries: u64,
    /// Unshare faults GUP raised before a read-only pin (`gup_must_unshare`).
    pub gup_unshare_faults: u64,
    /// Frames currently held by shmem page caches (gauge).
    pub shmem_pages: u64,
    /// Faults on an empty PTE of a shmem mapping.
    pub shmem_faults: u64,
    /// Frames currently held by file (ext2) page caches (gauge).
    pub file_pages: u64,
    /// Of those, the ones marked `DIRTY` (gauge).
    pub file_dirty: u64,
    /// Faults on an empty PTE of a file mapping.
    pub file_faults: u64,
    /// Write faults of a shared file mapping that told the filesystem (`page_mkwrite`): the
    /// first store to a page, and the first after each writeback (write-notify).
    pub writenotify_faults: u64,
    /// Large anon folios (2 MiB THPs) in use.
    pub anon_thps: u64,
    /// Faults that mapped a new THP with a PMD (Linux `thp_fault_alloc`).
    pub thp_fault_alloc: u64,
    /// THP faults that found no free 2 MiB block and fell back to 4 KiB pages.
    pub thp_fault_fallback: u64,
    /// PMD mappings split into 512 PTEs (Linux `thp_split_pmd`).
    pub thp_split_pmd: u64,
    /// Of those, splits by a write or unshare fault the folio could not reuse.
    pub thp_wp_splits: u64,
    /// PMD mappings fork shared with a child write-protected.
    pub thp_fork_shared: u64,
    /// File pages mapped by fault-around next to a read fault's page (`faultaround.rs`).
    pub fault_around_pages: u64,
    // thp2 (issue 14): the huge zero folio, folio splits, collapse.
    /// Times the huge zero folio was allocated (Linux `thp_zero_page_alloc`).
    pub thp_zero_page_alloc: u64,
    /// PMDs currently mapping the huge zero folio (gauge).
    pub huge_zero_mappings: u64,
    /// Large folios split into small ones (Linux `thp_split_page`).
    pub thp_split_page: u64,
    /// Folios waiting on the deferred split queue (gauge).
    pub deferred_split_queued: u64,
    /// THPs made by `MADV_COLLAPSE` (Linux `thp_collapse_alloc`).
    pub thp_collapse_alloc: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> MmStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MmStats {
            anon_pages: r(&self.anon_pages),
            pagetable_pages: r(&self.pagetable_pages),
            anon_faults: r(&self.anon_faults),
            zero_page_faults: r(&self.zero_page_faults),
            cow_copies: r(&self.cow_copies),
            zero_page_copies: r(&self.zero_page_copies),
            wp_reuses_exclusive: r(&self.wp_reuses_exclusive),
            wp_reuses_proven: r(&self.wp_reuses_proven),
            unshares: r(&self.unshares),
            fork_pinned_copies: r(&self.fork_pinned_copies),
            hugetlb_faults: r(&self.hugetlb_faults),
            hugetlb_cow_copies: r(&self.hugetlb_cow_copies),
            forks: r(&self.forks),
            gup_pins_held: r(&self.gup_pins_held),
            gup_refs_held: r(&self.gup_refs_held),
            gup_slow_pages: r(&self.gup_slow_pages),
            gup_fast_pages: r(&self.gup_fast_pages),
            gup_fast_fallbacks: r(&self.gup_fast_fallbacks),
            gup_fast_seq_retries: r(&self.gup_fast_seq_retries),
            gup_unshare_faults: r(&self.gup_unshare_faults),
            shmem_pages: r(&self.shmem_pages),
            shmem_faults: r(&self.shmem_faults),
            file_pages: r(&self.file_pages),
            file_dirty: r(&self.file_dirty),
            file_faults: r(&self.file_faults),
            writenotify_faults: r(&self.writenotify_faults),
            anon_thps: r(&self.anon_thps),
            thp_fault_alloc: r(&self.thp_fault_alloc),
            thp_fault_fallback: r(&self.thp_fault_fallback),
            thp_split_pmd: r(&self.thp_split_pmd),
            thp_wp_splits: r(&self.thp_wp_splits),
            thp_fork_shared: r(&self.thp_fork_shared),
            fault_around_pages: r(&self.fault_around_pages),
            thp_zero_page_alloc: r(&self.thp_zero_page_alloc),
            thp_split_page: r(&self.thp_split_page),
            thp_collapse_alloc: r(&self.thp_collapse_alloc),
            ..MmStats::default()
        }
    }
}
