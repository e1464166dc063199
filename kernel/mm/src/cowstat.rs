//! Per-address-space COW counters (cowlab's own, behind `/proc/<pid>/cowlab`): how many
//! write-protect faults on COW mappings this process took and how each ended (a copy, a reuse
//! in place, an unshare). The global `MmStats` says what the machine did; these say which
//! process did it. Relaxed atomic adds in `do_wp_page`, next to the global ones; a fork child
//! and an exec'd image start from zero (a new address space).

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

/// The live counters (in `MmShared`, so the fault path reaches them without the address space).
#[derive(Debug, Default)]
pub struct CowCounts {
    /// Write or unshare faults on a read-only PTE of a COW mapping (`do_wp_page`).
    pub(crate) faults: AtomicU64,
    /// Of those, the ones that copied the page (`wp_page_copy`).
    pub(crate) copies: AtomicU64,
    /// Write faults that made the page writable in place (`wp_page_reuse`).
    pub(crate) reuses: AtomicU64,
    /// Unshare faults that marked the page exclusive without copying.
    pub(crate) unshares: AtomicU64,
}

/// One reading of [`CowCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CowSnapshot {
    pub faults: u64,
    pub copies: u64,
    pub reuses: u64,
    pub unshares: u64,
}

impl CowCounts {
    #[inline(always)]
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CowSnapshot {
        CowSnapshot {
            faults: self.faults.load(Ordering::Relaxed),
            copies: self.copies.load(Ordering::Relaxed),
            reuses: self.reuses.load(Ordering::Relaxed),
            unshares: self.unshares.load(Ordering::Relaxed),
        }
    }
}
