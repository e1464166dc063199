//! Large folios: a naturally aligned run of 2^order frames managed as one unit (SEMANTICS.md
//! section 11): PMD-mapped THPs, hugetlb pages and the huge zero folio (order 9), and mTHPs
//! (orders 2..=8, PTE-mapped only: `mthp.rs`).
//!
//! Picture: a large folio keeps the 16-byte [`FrameMeta`] of each of its frames, and Linux's
//! trick of storing the folio-wide fields in the *tail* frames' words that a tail does not need.
//!
//! | frame | `refcount` word | `mapcount` word | `pincount` word | `flags` |
//! |---|---|---|---|---|
//! | head (subpage 0) | the folio's refcount | subpage 0's PTE mapcount | the folio's pin count | `HEAD` + order field + per-subpage (`ANON`, `ANON_EXCLUSIVE`) |
//! | tail 1 | entire mapcount: PMDs mapping the whole folio (always 0 below order 9) | subpage 1's PTE mapcount | head PFN | `TAIL` + per-subpage |
//! | tail 2, 3 | the deferred split queue's next/previous head (while queued), else 0 | subpage's PTE mapcount | head PFN | `TAIL` + per-subpage |
//! | other tails | 0 | subpage's PTE mapcount | head PFN | `TAIL` + per-subpage |
//!
//! The order lives in the head's flags (bits 10..13), so the smallest mTHP (order 2: head and
//! tails 1..3) has room for every field.
//!
//! Counting, as Linux: every PTE that maps a subpage and every PMD that maps the folio holds one
//! reference on the folio; a GUP reference or pin of a subpage holds one reference (and one pin)
//! on the folio. So `refcount >= entire + sum(subpage mapcounts) + pincount`, and a subpage is
//! mapped `page_mapcount = own + entire` times. `ANON_EXCLUSIVE` is per subpage; while the folio
//! is PMD-mapped every subpage carries the same bit (set and cleared for all 512 together), so
//! "the PMD mapping is exclusive" is the head's bit and a split keeps each subpage's.
//!
//! Everything that takes or drops a reference or a pin goes through [`FrameTable::head_meta`],
//! so code written for small pages handles a PTE-mapped subpage correctly: the count moves on
//! the head, the mapcount and the exclusive bit stay on the subpage.

use core::sync::atomic::Ordering;

use crate::addr::PhysAddr;
use crate::frame::{FrameFlags, FrameMeta, FrameTable, BLOCK_FRAMES, BLOCK_ORDER};

/// Order of a PMD-mapped THP.
pub const HPAGE_PMD_ORDER: u32 = BLOCK_ORDER;
/// Subpages of a PMD-mapped THP.
pub const HPAGE_PMD_NR: usize = BLOCK_FRAMES;
/// Bytes of a PMD-mapped THP (`/sys/kernel/mm/transparent_hugepage/hpage_pmd_size`).
pub const HPAGE_PMD_SIZE: u64 = (BLOCK_FRAMES * crate::PAGE_SIZE) as u64;

impl FrameTable {
    /// The head frame of the folio `frame` belongs to (Linux `page_folio`): `frame` itself for
    /// a small page.
    #[inline]
    pub fn folio_head(&self, frame: PhysAddr) -> PhysAddr {
        let meta = self.meta(frame);
        if meta.test(FrameFlags::TAIL) {
            PhysAddr::from_pfn(meta.pincount.load(Ordering::Relaxed) as usize)
        } else {
            frame
        }
    }

    /// The metadata holding the folio-wide counts (refcount, pincount) for the frame `meta`
    /// describes: its own for a small page or a head, the head's for a tail. The tail's link
    /// never changes while the folio is in use, and reaching a tail at all means holding the
    /// folio (a PTE, a PMD, a reference) or GUP-fast's interrupts-off walk.
    #[inline]
    pub(crate) fn head_meta<'a>(&'a self, meta: &'a FrameMeta) -> &'a FrameMeta {
        if meta.test(FrameFlags::TAIL) {
            &self.metas()[meta.pincount.load(Ordering::Relaxed) as usize]
        } else {
            meta
        }
    }

    /// Is `frame` part of a large folio?
    #[inline]
    pub fn is_large(&self, frame: PhysAddr) -> bool {
        self.meta(frame)
            .flags()
            .intersects(FrameFlags::HEAD | FrameFlags::TAIL)
    }

    /// Order of the folio `frame` belongs to (0 for a small page).
    pub fn folio_order(&self, frame: PhysAddr) -> u32 {
        let head = self.folio_head(frame);
        let f = self.meta(head).flags();
        if f.contains(FrameFlags::HEAD) {
            f.order_of()
        } else {
            0
        }
    }

    /// Frames in the folio whose head is `head` (Linux `folio_nr_pages`); 1 for a small page.
    #[inline]
    pub fn folio_nr(&self, head: PhysAddr) -> usize {
        1 << self.folio_order(head)
    }

    /// The folio's reference count (Linux `folio_ref_count`).
    #[inline]
    pub fn folio_refcount(&self, frame: PhysAddr) -> u32 {
        self.head_meta(self.meta(frame)).refcount()
    }

    /// The folio's exact pin count (Linux `folio_pincount`, kept in a separate field for large
    /// folios and exact here for all).
    #[inline]
    pub fn folio_pincount(&self, frame: PhysAddr) -> u32 {
        self.head_meta(self.meta(frame)).pincount()
    }

    /// Linux `folio_maybe_dma_pinned` for the folio of `meta`.
    #[inline]
    pub(crate) fn folio_maybe_dma_pinned(&self, meta: &FrameMeta) -> bool {
        self.head_meta(meta).maybe_dma_pinned()
    }

    /// PMD mappings of the whole folio (Linux `folio_entire_mapcount`); 0 for a small page.
    pub fn entire_mapcount(&self, frame: PhysAddr) -> u32 {
        let head = self.folio_head(frame);
        if self.meta(head).test(FrameFlags::HEAD) {
            self.meta(head + 4096).refcount.load(Ordering::Acquire)
        } else {
            0
        }
    }

    /// How many page-table entries map this subpage, through a PTE or through a PMD of its
    /// folio (Linux `page_mapcount`).
    pub fn page_mapcount(&self, frame: PhysAddr) -> u32 {
        self.meta(frame).mapcount() + self.entire_mapcount(frame)
    }

    /// Mappings of any part of the folio: PMDs plus every subpage's PTEs (Linux
    /// `folio_mapcount`); a small page's mapcount.
    pub fn folio_mapcount(&self, frame: PhysAddr) -> u32 {
        let head = self.folio_head(frame);
        if !self.meta(head).test(FrameFlags::HEAD) {
            return self.meta(head).mapcount();
        }
        // One bounds check for the run and a wrapping u64 sum (2^order <= 512 words of 32 bits
        // cannot overflow it): the per-subpage `meta` lookup with its bounds check and the
        // checked add of each term cost the THP COW fault ~10 instructions per subpage (5,400)
        // once the order stopped being the constant 512.
        let first = head.pfn();
        let ptes = self.metas()[first..first + self.folio_nr(head)]
            .iter()
            .fold(0u64, |sum, m| sum.wrapping_add(u64::from(m.mapcount())));
        u32::try_from(ptes)
            .unwrap_or(u32::MAX)
            .saturating_add(self.entire_mapcount(head))
    }

    /// Adds a PMD mapping of the folio at `head` and its reference (Linux
    /// `folio_add_anon_rmap_pmd` + `folio_get`).
    pub(crate) fn add_entire_mapping(&self, head: PhysAddr) {
        self.meta(head).get();
        self.meta(head + 4096)
            .refcount
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Adds a PMD mapping of the folio at `head` whose reference the caller already holds (a
    /// hugetlb fault mapping the folio it just got).
    pub(crate) fn add_entire_mapcount_only(&self, head: PhysAddr) {
        self.meta(head + 4096)
            .refcount
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Drops a PMD mapping of the folio at `head` (Linux `folio_remove_rmap_pmd`); its
    /// reference is left to the caller, who drops it after the TLB flush. The last mapping of
    /// the folio clears the exclusive bits, as for small pages.
    pub(crate) fn remove_entire_mapping(&self, head: PhysAddr) {
        let old = self
            .meta(head + 4096)
            .refcount
            .fetch_sub(1, Ordering::AcqRel);
        assert!(old > 0, "entire mapcount underflow on folio {head:#x}");
        if old == 1 {
            self.set_folio_exclusive(head, false);
        }
    }

    /// Turns the block `head` just returned by [`FrameTable::alloc_block`] into a large anon
    /// folio mapped by one PMD: refcount 1 (that PMD's), entire mapcount 1, every subpage
    /// `ANON|ANON_EXCLUSIVE` with PTE mapcount 0 (Linux `folio_prep_large_rmappable` +
    /// `folio_add_new_anon_rmap` with `RMAP_EXCLUSIVE`). Nobody else can reach it yet.
    pub(crate) fn prep_anon_thp(&self, head: PhysAddr, extra: FrameFlags) {
        self.prep_large(head, FrameFlags::ANON | extra, 1, HPAGE_PMD_ORDER);
    }

    /// Turns the run `head` just returned by [`FrameTable::alloc_run`] into an mTHP about to be
    /// mapped by one PTE per subpage (Linux `alloc_anon_folio` + `folio_add_new_anon_rmap` +
    /// `folio_ref_add(nr - 1)`): refcount `2^order` (one per PTE), no entire mapping, every
    /// subpage `ANON|ANON_EXCLUSIVE` with PTE mapcount 1. Nobody else can reach it yet.
    pub(crate) fn prep_anon_mthp(&self, head: PhysAddr, order: u32) {
        let nr = 1usize << order;
        self.prep_large(
            head,
            FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE,
            0,
            order,
        );
        let metas = &self.metas()[head.pfn()..head.pfn() + nr];
        metas[0].init_counts(nr as u32, 1);
        for m in &metas[1..] {
            m.mapcount.store(1, Ordering::Release);
        }
    }

    /// Lays out the folio metadata of a fresh run of `2^order` frames at `head`: refcount 1,
    /// entire mapcount `entire`, every subpage flagged `per` with PTE mapcount 0 (the table
    /// above).
    pub(crate) fn prep_large(&self, head: PhysAddr, per: FrameFlags, entire: u32, order: u32) {
        let first = head.pfn();
        let metas = self.metas();
        metas[first].init_flags(FrameFlags::HEAD | FrameFlags::order(order) | per);
        metas[first].init_counts(1, 0);
        for (i, m) in metas[first + 1..first + (1 << order)].iter().enumerate() {
            let word = if i == 0 { entire } else { 0 };
            m.refcount.store(word, Ordering::Relaxed);
            m.mapcount.store(0, Ordering::Relaxed);
            m.pincount.store(first as u32, Ordering::Relaxed);
            m.init_flags(FrameFlags::TAIL | per);
        }
    }

    /// Counts one more PMD mapping of the folio at `head` whose reference the caller already
    /// took (the huge zero folio: `Mm::get_huge_zero_folio` hands out the reference).
    pub(crate) fn inc_entire_mapcount(&self, head: PhysAddr) {
        self.meta(head + 4096)
            .refcount
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Adds `n` references to the folio at `head` (a split turns one PMD reference into 512 PTE
    /// references).
    pub(crate) fn add_folio_refs(&self, head: PhysAddr, n: u32) {
        self.meta(head).refcount.fetch_add(n, Ordering::Relaxed);
    }

    /// Drops the entire mapcount of a PMD mapping that a split turns into PTEs: unlike
    /// [`Self::remove_entire_mapping`], the subpages stay mapped, so their exclusive bits stay.
    pub(crate) fn drop_entire_mapcount_for_split(&self, head: PhysAddr) {
        let old = self
            .meta(head + 4096)
            .refcount
            .fetch_sub(1, Ordering::AcqRel);
        assert!(old > 0, "entire mapcount underflow on folio {head:#x}");
    }

    /// Sets or clears `ANON_EXCLUSIVE` on every subpage of the folio at `head`.
    pub(crate) fn set_folio_exclusive(&self, head: PhysAddr, exclusive: bool) {
        let first = head.pfn();
        for m in &self.metas()[first..first + self.folio_nr(head)] {
            if exclusive {
                m.set_flags(FrameFlags::ANON_EXCLUSIVE);
            } else {
                m.clear_flags(FrameFlags::ANON_EXCLUSIVE);
            }
        }
    }

    /// Dismantles a large folio whose last reference is gone and returns its frames (Linux
    /// `free_large_folio` -> `free_pages` of its order): a whole 2 MiB block, or an mTHP's run
    /// to the 4 KiB lists. Every subpage must be unmapped. Returns the frames freed.
    pub(crate) fn free_large_folio(&self, head: PhysAddr) -> usize {
        let first = head.pfn();
        let metas = self.metas();
        let order = self.folio_order(head);
        assert!(
            metas[first].test(FrameFlags::HEAD),
            "free_large_folio: {head:#x} is not a folio head"
        );
        if metas[first].test(FrameFlags::SPLIT_QUEUED) {
            self.deferred_split_remove(head);
        }
        let nr = 1usize << order;
        for m in &metas[first + 1..first + nr] {
            assert!(
                m.test(FrameFlags::TAIL),
                "free_large_folio: folio {head:#x} has a non-tail frame"
            );
            m.refcount.store(0, Ordering::Relaxed);
            m.pincount.store(0, Ordering::Relaxed);
            m.init_flags(FrameFlags::NONE);
        }
        metas[first].init_flags(FrameFlags::NONE);
        if order == crate::frame::GIGANTIC_ORDER {
            self.free_gigantic(head);
        } else if order == BLOCK_ORDER {
            self.free_block(head);
        } else {
            self.free_run(head, order);
        }
        nr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static FrameTable {
        let t = FrameTable::new_leaked(2 * HPAGE_PMD_NR);
        t.add_free_range(PhysAddr::from_pfn(1), PhysAddr::from_pfn(2 * HPAGE_PMD_NR));
        t
    }

    #[test]
    fn metadata_layout_fits_and_routes_counts_to_the_head() {
        assert_eq!(core::mem::size_of::<FrameMeta>(), 16, "16 bytes per frame");
        let t = table();
        let boot = t.free_frames();
        let head = t.alloc_block(true).unwrap();
        t.prep_anon_thp(head, FrameFlags::ANON_EXCLUSIVE);
        let sub = head + 37 * 4096;
        assert_eq!(t.folio_head(sub), head);
        assert_eq!(t.folio_head(head), head);
        assert_eq!(t.folio_order(sub), HPAGE_PMD_ORDER);
        assert_eq!(t.entire_mapcount(sub), 1);
        assert_eq!(t.folio_refcount(sub), 1);
        assert_eq!(t.page_mapcount(sub), 1, "mapped once, through the PMD");
        assert_eq!(t.folio_mapcount(head), 1);
        assert!(t.meta(sub).test(FrameFlags::ANON_EXCLUSIVE));
        // A pin of a subpage counts on the folio.
        let hm = t.head_meta(t.meta(sub));
        hm.get();
        hm.add_pincount(1);
        assert_eq!((t.folio_refcount(head), t.folio_pincount(sub)), (2, 1));
        assert!(t.folio_maybe_dma_pinned(t.meta(head + 511 * 4096)));
        hm.dec_pincount();
        assert!(!t.put(head));
        // The PMD goes: exclusive bits cleared with the last mapping, folio freed whole.
        t.remove_entire_mapping(head);
        assert!(!t.meta(sub).test(FrameFlags::ANON_EXCLUSIVE));
        assert_eq!(t.entire_mapcount(head), 0);
        assert_eq!(t.meta(head).refcount(), 1);
        t.meta(head).refcount.store(0, Ordering::Relaxed);
        t.free_large_folio(head);
        assert_eq!(t.free_frames(), boot);
        assert_eq!(t.folio_order(sub), 0, "a freed block is no folio");
    }

    #[test]
    fn per_subpage_mapcount_and_exclusive_bits_are_independent() {
        let t = table();
        let head = t.alloc_block(true).unwrap();
        t.prep_anon_thp(head, FrameFlags::NONE);
        let a = head + 4096;
        let b = head + 2 * 4096;
        t.meta(a).inc_mapcount();
        t.meta(b).inc_mapcount();
        t.meta(b).inc_mapcount();
        t.meta(b).set_flags(FrameFlags::ANON_EXCLUSIVE);
        // Tail 1's and 2's refcount words hold folio fields; their mapcounts are their own.
        assert_eq!((t.page_mapcount(a), t.page_mapcount(b)), (2, 3));
        assert_eq!(t.folio_mapcount(head), 1 + 1 + 2);
        assert!(!t.meta(a).test(FrameFlags::ANON_EXCLUSIVE));
        assert!(t.meta(b).test(FrameFlags::ANON_EXCLUSIVE));
        assert_eq!(
            t.folio_order(b),
            HPAGE_PMD_ORDER,
            "tail 2's mapcount left the order"
        );
    }
}
