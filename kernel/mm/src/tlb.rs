//! TLB-flush tokens and the deferred freeing of unmapped pages (Linux's `mmu_gather`).
//!
//! Removing or weakening a translation is not finished until every CPU has forgotten it. So the
//! page-table code never flushes by itself: it returns a `#[must_use]` [`TlbFlush`] describing
//! what must be invalidated, and the operation flushes it before returning to user space.
//! Frames and page-table pages that lost their last mapping are worse: if they were freed before
//! the flush, a stale translation could write into their next owner. `MmuGather` therefore
//! holds them until it has flushed, in a fixed-size batch (no heap allocation on unmap).

#![deny(unsafe_code)]

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::PAGE_SIZE;

/// Above this many pages a range flush becomes a full flush (Linux's
/// `tlb_single_page_flush_ceiling` is 33).
const SINGLE_PAGE_FLUSH_CEILING: u64 = 32;

/// Translations of one address space that must be invalidated. Consume it with
/// [`TlbFlush::flush`]; dropping it is a missing TLB flush.
#[must_use = "a TLB flush that is not performed leaves stale translations"]
#[derive(Debug)]
pub struct TlbFlush {
    root: PhysAddr,
    /// Page-aligned `[start, end)`; empty when `start >= end`.
    start: u64,
    end: u64,
    all: bool,
}

impl TlbFlush {
    /// Nothing to flush yet.
    pub fn none(root: PhysAddr) -> TlbFlush {
        TlbFlush {
            root,
            start: u64::MAX,
            end: 0,
            all: false,
        }
    }

    /// Adds the page containing `va`.
    pub(crate) fn add_page(&mut self, va: VirtAddr) {
        let va = va.align_down().as_u64();
        self.start = self.start.min(va);
        self.end = self.end.max(va + PAGE_SIZE as u64);
    }

    /// Adds the pages of `[start, end)` (page aligned).
    pub(crate) fn add_range(&mut self, start: VirtAddr, end: VirtAddr) {
        self.start = self.start.min(start.as_u64());
        self.end = self.end.max(end.as_u64());
    }

    /// Adds every translation of the address space.
    pub(crate) fn add_all(&mut self) {
        self.all = true;
    }

    /// Merges another flush of the same address space into this one.
    pub(crate) fn merge(&mut self, other: TlbFlush) {
        debug_assert_eq!(
            self.root, other.root,
            "merging flushes of two address spaces"
        );
        self.all |= other.all;
        self.start = self.start.min(other.start);
        self.end = self.end.max(other.end);
        other.forget();
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.start >= self.end
    }

    /// Performs the flush on every CPU that may cache the address space (`shared`'s
    /// `mm_cpumask`, read after the PTE changes, plus this CPU) and returns when all have
    /// done it: a range for small ranges, else everything.
    pub fn flush<A: Arch>(self, arch: &A, shared: &MmShared) {
        if self.is_empty() {
            return;
        }
        debug_assert_eq!(
            self.root,
            shared.root(),
            "flushing through another space's mask"
        );
        let all =
            self.all || (self.end - self.start) / PAGE_SIZE as u64 > SINGLE_PAGE_FLUSH_CEILING;
        let cpus = shared.flush_targets(arch.cpu_id());
        arch.flush_tlb_cpus(
            cpus,
            self.root,
            VirtAddr::new(self.start.min(self.end)),
            VirtAddr::new(self.end),
            all,
        );
    }

    /// [`TlbFlush::none`] + [`TlbFlush::add_page`] + [`TlbFlush::flush`] of the one page at
    /// `va` of `shared`, at once: the COW and zero-page copy's flush (`wp_page_copy`). Inlined
    /// there, the range arithmetic folds away; as a token passed to the out-of-line `flush` it
    /// cost those faults ~25 instructions more. The same targets (`flush_targets`, its fence)
    /// and the same `flush_tlb_cpus`.
    #[inline(always)]
    pub(crate) fn flush_one_page<A: Arch>(arch: &A, shared: &MmShared, va: VirtAddr) {
        let start = va.align_down();
        let end = VirtAddr::new(start.as_u64() + PAGE_SIZE as u64);
        let cpus = shared.flush_targets(arch.cpu_id());
        arch.flush_tlb_cpus(cpus, shared.root(), start, end, false);
    }

    /// Drops the token without flushing. Only for tokens already covered by another flush, and
    /// for tests that simulate a missing flush.
    pub fn forget(self) {}

    fn take(&mut self) -> TlbFlush {
        core::mem::replace(self, TlbFlush::none(self.root))
    }
}

const GATHER_PAGES: usize = 64;
const GATHER_TABLES: usize = 8;

/// Pages and page-table pages unmapped from one address space, freed only after the TLB flush.
#[must_use = "finish() performs the flush and frees the gathered pages"]
pub(crate) struct MmuGather<'m, A: Arch> {
    mm: &'m Mm<A>,
    shared: &'m MmShared,
    flush: TlbFlush,
    pages: [PhysAddr; GATHER_PAGES],
    npages: usize,
    tables: [PhysAddr; GATHER_TABLES],
    ntables: usize,
    /// The shared zero page (not resident memory of anyone), and how many other pages
    /// [`Self::remove_page`] took: the RSS count drops by it at [`Self::finish`] (a PMD leaf
    /// takes its 512 off in `zap_huge_pmd`).
    zero: PhysAddr,
    resident: u64,
}

impl<'m, A: Arch> MmuGather<'m, A> {
    pub(crate) fn new(mm: &'m Mm<A>, shared: &'m MmShared) -> Self {
        MmuGather {
            mm,
            shared,
            flush: TlbFlush::none(shared.root()),
            pages: [PhysAddr::zero(); GATHER_PAGES],
            npages: 0,
            tables: [PhysAddr::zero(); GATHER_TABLES],
            ntables: 0,
            zero: mm.zero_page(),
            resident: 0,
        }
    }

    /// Whether the page batch is full: the zap loop then flushes the pages it cleared so far
    /// ([`Self::flush_range_and_free`]) before its next [`Self::remove_page`].
    #[inline]
    pub(crate) fn pages_full(&self) -> bool {
        self.npages == GATHER_PAGES
    }

    /// Adds `[start, end)` (page aligned; nothing if empty) to the pending flush.
    #[inline]
    pub(crate) fn add_flush_range(&mut self, start: u64, end: u64) {
        if start < end {
            self.flush
                .add_range(VirtAddr::new(start), VirtAddr::new(end));
        }
    }

    /// [`Self::add_flush_range`], then flushes and frees everything gathered.
    pub(crate) fn flush_range_and_free(&mut self, start: u64, end: u64) {
        self.add_flush_range(start, end);
        self.flush_and_free();
    }

    /// A PTE no longer maps `frame` (its mapcount is already dropped); the reference the
    /// mapping held is dropped after the flush. The caller adds the PTE's address to the flush
    /// ([`Self::add_flush_range`], once per run of pages: a range update per page cost the zap
    /// ~10 instructions per page) before the batch is flushed, and flushes a full batch first
    /// ([`Self::pages_full`]).
    #[inline]
    pub(crate) fn remove_page(&mut self, frame: PhysAddr) {
        if self.npages == GATHER_PAGES {
            // The caller's duty; kept as a check so a missed flush cannot index out of the
            // batch. Flushing here would miss the caller's range: a bug, not a fallback.
            panic!("MmuGather::remove_page on a full batch");
        }
        self.pages[self.npages] = frame;
        // Below `GATHER_PAGES`, checked above.
        self.npages = self.npages.wrapping_add(1);
        // Wrapping: at most one per page of the address space, far from 2^64 (and an overflow
        // check here costs two instructions per unmapped page).
        self.resident = self.resident.wrapping_add(u64::from(frame != self.zero));
    }

    /// `va`'s 2 MiB no longer map the large folio `head` through a PMD (its entire mapcount
    /// is already dropped); the PMD's one reference is dropped after the flush.
    pub(crate) fn remove_huge(&mut self, va: VirtAddr, head: PhysAddr) {
        if self.npages == GATHER_PAGES {
            self.flush_and_free();
        }
        self.flush.add_range(va, va + crate::folio::HPAGE_PMD_SIZE);
        self.pages[self.npages] = head;
        self.npages += 1;
    }

    /// As [`Self::remove_huge`] for a leaf mapping `bytes` (a 1 GiB PUD leaf).
    pub(crate) fn remove_huge_sized(&mut self, va: VirtAddr, head: PhysAddr, bytes: u64) {
        if self.npages == GATHER_PAGES {
            self.flush_and_free();
        }
        self.flush.add_range(va, va + bytes);
        self.pages[self.npages] = head;
        self.npages += 1;
    }

    /// The address space being changed.
    pub(crate) fn shared(&self) -> &'m MmShared {
        self.shared
    }

    /// `table`, which translated `va`, is unlinked from its parent; freed after the flush
    /// (the CPU's paging-structure caches may still hold it).
    pub(crate) fn remove_table(&mut self, va: VirtAddr, table: PhysAddr) {
        if self.ntables == GATHER_TABLES {
            self.flush_and_free();
        }
        self.flush.add_page(va);
        self.tables[self.ntables] = table;
        self.ntables += 1;
    }

    fn flush_and_free(&mut self) {
        // Every CPU of the mask has flushed (and none is still inside a GUP-fast walk) when
        // this returns: only now may the pages and tables be reused.
        self.flush.take().flush(self.mm.arch(), self.shared);
        // One free-list lock for the whole batch, not one per page.
        self.mm.release_pages(&mut self.pages[..self.npages]);
        self.npages = 0;
        for &table in &self.tables[..self.ntables] {
            // Only emptied tables are gathered (`zap_level` checks every entry is zero).
            self.mm.free_pagetable_zeroed(table);
        }
        self.ntables = 0;
    }

    /// Flushes and frees everything gathered (Linux `tlb_finish_mmu`).
    pub(crate) fn finish(mut self) {
        self.shared.sub_rss(self.resident);
        self.flush_and_free();
        self.flush.take().forget();
    }
}
