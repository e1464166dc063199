//! Splitting a large anon folio into small folios, through a deferred split queue (Linux
//! `deferred_split_folio`, `deferred_split_scan`, `split_huge_page`).
//!
//! Picture: once a THP is mapped by PTEs only (its PMD mapping was split), unmapping part of
//! it leaves subpages nobody maps, still held by the folio until its last reference goes. When
//! a subpage's last PTE mapping goes while the folio has no PMD mapping, the folio is *queued*
//! (`deferred_split_folio`, from `Mm::remove_mapping`; at most once, `SPLIT_QUEUED` on the head).
//! Later — on memory pressure before an allocation fails (`Mm::alloc_reclaim`, as Linux's
//! deferred-split shrinker) or when `2` is written to `/proc/sys/vm/drop_caches` (Linux's
//! `drop_slab` runs the shrinkers) — the scan (`deferred_split_scan`) splits
//! each queued folio it can: every subpage becomes a small anon folio of its own with its own
//! mapcount as its refcount and its own `ANON_EXCLUSIVE` bit, and the subpages no PTE maps are
//! freed. No page-table entry changes: each PTE already names its subpage's frame, which after
//! the split is a small page (this is why only PTE-mapped folios are split).
//!
//! A folio can be split only when nothing but its PTEs holds it (Linux `can_split_folio`): its
//! refcount equals the sum of its subpages' mapcounts. A GUP reference or a pin (a `vmsplice`,
//! an io_uring buffer, a DMA) keeps it whole, and it stays queued for a later scan; a folio
//! freed while queued leaves the queue (`free_large_folio`).
//!
//! The queue is a doubly linked list through words the folio layout leaves unused: tail 2's
//! `refcount` word holds the next head's PFN, tail 3's the previous one's ([`NIL`] ends), so
//! the smallest mTHP (order 2) can be queued too.
//!
//! Concurrency: the split freezes the folio's refcount at 0 with a compare-exchange from the
//! mapcount sum, so a reference taken before it makes the split fail. It rewrites the metadata
//! of frames that other address spaces' PTEs may name, so it relies on no other CPU changing
//! those mappings meanwhile: the kernel runs memory-management code under its big kernel lock
//! (Linux instead replaces every PTE with a migration entry under the anon_vma lock first,
//! which cowlab, without reverse maps, cannot do).

#![deny(unsafe_code)]

use core::sync::atomic::Ordering;

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::folio::HPAGE_PMD_ORDER;
use crate::frame::{FrameFlags, FrameTable, NIL};
use crate::mm::Mm;
use crate::stats;

/// The deferred split queue's head (a folio head PFN or [`NIL`]) and length.
pub(crate) struct SplitQueue {
    head: u32,
    len: usize,
}

impl SplitQueue {
    pub(crate) const fn new() -> SplitQueue {
        SplitQueue { head: NIL, len: 0 }
    }
}

/// Tail frames whose spare `refcount` words link the queue.
const NEXT: usize = 2;
const PREV: usize = 3;

impl FrameTable {
    fn link(&self, head: u32, which: usize) -> &core::sync::atomic::AtomicU32 {
        &self.metas()[head as usize + which].refcount
    }

    /// Queues the folio of `frame`, one of whose subpages just lost its last PTE mapping, for
    /// a later split (Linux `deferred_split_folio`): only anon THPs without a PMD mapping, and
    /// each once.
    #[cold]
    #[inline(never)]
    pub(crate) fn deferred_split_folio(&self, frame: PhysAddr) {
        let head = self.folio_head(frame);
        let hm = self.meta(head);
        let f = hm.flags();
        if !f.contains(FrameFlags::HEAD | FrameFlags::ANON)
            || f.contains(FrameFlags::SPLIT_QUEUED)
            || self.entire_mapcount(head) != 0
        {
            return;
        }
        let mut q = self.split_queue.lock();
        if !hm.test(FrameFlags::SPLIT_QUEUED) {
            self.enqueue(&mut q, head.pfn() as u32);
        }
    }

    /// Links the folio `h` at the queue's front (its lock held) and marks it.
    fn enqueue(&self, q: &mut SplitQueue, h: u32) {
        self.metas()[h as usize].set_flags(FrameFlags::SPLIT_QUEUED);
        self.link(h, NEXT).store(q.head, Ordering::Relaxed);
        self.link(h, PREV).store(NIL, Ordering::Relaxed);
        if q.head != NIL {
            self.link(q.head, PREV).store(h, Ordering::Relaxed);
        }
        q.head = h;
        q.len += 1;
        self.split_pending.store(q.len, Ordering::Relaxed);
    }

    /// Unlinks the queued folio `h` (the queue's lock held) and clears its mark.
    fn unqueue(&self, q: &mut SplitQueue, h: u32) {
        let next = self.link(h, NEXT).swap(0, Ordering::Relaxed);
        let prev = self.link(h, PREV).swap(0, Ordering::Relaxed);
        if prev == NIL {
            q.head = next;
        } else {
            self.link(prev, NEXT).store(next, Ordering::Relaxed);
        }
        if next != NIL {
            self.link(next, PREV).store(prev, Ordering::Relaxed);
        }
        q.len -= 1;
        self.split_pending.store(q.len, Ordering::Relaxed);
        self.metas()[h as usize].clear_flags(FrameFlags::SPLIT_QUEUED);
    }

    /// A queued folio is being freed whole: it leaves the queue (Linux
    /// `folio_undo_large_rmappable`).
    #[cold]
    pub(crate) fn deferred_split_remove(&self, head: PhysAddr) {
        let mut q = self.split_queue.lock();
        if self.meta(head).test(FrameFlags::SPLIT_QUEUED) {
            self.unqueue(&mut q, head.pfn() as u32);
        }
    }

    /// Folios waiting on the deferred split queue.
    pub fn deferred_split_len(&self) -> usize {
        self.split_queue.lock().len
    }

    /// Is anything queued? One load, before an allocation gives up.
    #[inline]
    pub(crate) fn deferred_split_pending(&self) -> bool {
        self.split_pending.load(Ordering::Relaxed) != 0
    }
}

/// What one split attempt did.
enum Split {
    /// Split; this many unmapped subpages were freed.
    Done(usize),
    /// Something besides its PTEs holds it (or a PMD maps it): keep it queued.
    Busy,
}

impl<A: Arch> Mm<A> {
    /// Splits every queued folio that can be split (Linux `deferred_split_scan`, run by the
    /// shrinker); the others stay queued. Returns the frames freed.
    pub fn deferred_split_scan(&self) -> usize {
        let frames = self.frames();
        let mut q = frames.split_queue.lock();
        let mut freed = 0;
        let mut at = q.head;
        while at != NIL {
            let next = frames.link(at, NEXT).load(Ordering::Relaxed);
            let head = PhysAddr::from_pfn(at as usize);
            // Out of the queue first: a split folio's link words become refcounts.
            frames.unqueue(&mut q, at);
            match self.split_folio(head) {
                Split::Done(n) => freed += n,
                // Back on the queue, at its front: the walk goes on behind it.
                Split::Busy => frames.enqueue(&mut q, at),
            }
            at = next;
        }
        freed
    }

    /// Splits the PTE-mapped anon THP or mTHP at `head` into small anon pages and frees those
    /// no PTE maps (Linux `split_huge_page_to_list_to_order` for order 0), if only its PTEs
    /// hold it; called with the split queue locked (lock order: split queue, then free lists).
    fn split_folio(&self, head: PhysAddr) -> Split {
        let frames = self.frames();
        let order = frames.folio_order(head);
        let metas = &frames.metas()[head.pfn()..head.pfn() + (1 << order)];
        if frames.entire_mapcount(head) != 0 || metas[0].pincount() != 0 {
            return Split::Busy;
        }
        let mapped: u32 = metas.iter().map(|m| m.mapcount()).sum();
        if mapped == 0 {
            // Only references remain: the last one frees the folio whole.
            return Split::Busy;
        }
        // Freeze (Linux `folio_ref_freeze`): from here no reference can be taken (GUP-fast's
        // `try_get_many` refuses 0), and one taken before makes this fail.
        if metas[0]
            .refcount
            .compare_exchange(mapped, 0, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Split::Busy;
        }
        for (i, m) in metas.iter().enumerate() {
            m.refcount.store(m.mapcount(), Ordering::Relaxed);
            if i > 0 {
                // The head link: a small page's pin count is its own.
                m.pincount.store(0, Ordering::Relaxed);
            }
            m.clear_flags(FrameFlags::HEAD | FrameFlags::TAIL | FrameFlags::ORDER_MASK);
        }
        let mut freed = 0;
        for (i, m) in metas.iter().enumerate() {
            if m.mapcount() == 0 {
                let frame = head + (i * crate::PAGE_SIZE) as u64;
                m.clear_flags(FrameFlags::ANON_EXCLUSIVE);
                self.arch().frame_freed(frame);
                frames.free(frame);
                freed += 1;
            }
        }
        self.counters
            .anon_pages
            .fetch_sub(freed as u64, Ordering::Relaxed);
        if order == HPAGE_PMD_ORDER {
            stats::dec(&self.counters.anon_thps);
            stats::inc(&self.counters.thp_split_page);
        } else {
            self.thp().sizes.split(order);
        }
        Split::Done(freed)
    }
}
