//! The hugetlb pool: 2 MiB folios set aside for `MAP_HUGETLB` and `MFD_HUGETLB` memory
//! (Linux `struct hstate` for the 2 MiB size, `mm/hugetlb.c`).
//!
//! Picture: the administrator sizes the pool (`nr_hugepages`); growing it takes whole blocks
//! from the 2 MiB block allocator (`huge.rs`) and keeps them as free hugetlb folios, shrinking
//! gives free ones back. Mappings *reserve* pages at mmap time, so that a later fault finds one
//! (Linux's reservations: `resv_huge_pages`); a fault consumes its reservation or takes an
//! unreserved free page. A hugetlb folio's last reference brings it back here
//! (`free_huge_folio`), never to the allocator, unless the pool is over its size: then it is a
//! *surplus* page and goes back to the allocator.
//!
//! Counts, as Linux's: `nr` every hugetlb folio (free or in use, surplus included); `free` the
//! folios on the free list; `resv` free folios promised to mappings (`resv <= free` always, no
//! overcommit); `surplus` folios beyond the persistent size (`nr_hugepages` reads
//! `nr - surplus`). Lock order: this pool's lock, then the free lists'.
//!
//! A free folio keeps the large-folio layout of `folio.rs` (`HEAD`/`TAIL`, every frame
//! `HUGETLB`) with refcount 0, so the checker sees it as a folio nobody maps.

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::{FrameFlags, FrameTable, BLOCK_ORDER, GIGANTIC_ORDER};
use crate::addr::PhysAddr;

/// A hugetlb page size (Linux's `struct hstate`, one per size): 2 MiB pages mapped by PMDs,
/// 1 GiB ("gigantic") pages mapped by PUDs. Each has its own pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugeSize {
    /// 2 MiB: `MAP_HUGE_2MB`, the default size.
    Pmd,
    /// 1 GiB: `MAP_HUGE_1GB`, from 1 GiB-aligned contiguous memory (`gigantic.rs`).
    Pud,
}

impl HugeSize {
    /// Both sizes, smallest first (the order of sysfs' directories).
    pub const ALL: [HugeSize; 2] = [HugeSize::Pmd, HugeSize::Pud];

    pub const fn order(self) -> u32 {
        match self {
            HugeSize::Pmd => BLOCK_ORDER,
            HugeSize::Pud => GIGANTIC_ORDER,
        }
    }

    /// Frames of one page.
    pub const fn frames(self) -> usize {
        1 << self.order()
    }

    /// Bytes of one page.
    pub const fn bytes(self) -> u64 {
        (self.frames() * crate::PAGE_SIZE) as u64
    }

    /// The size in KiB (sysfs' `hugepages-<N>kB`).
    pub const fn kib(self) -> u64 {
        self.bytes() / 1024
    }

    /// The size of a folio of `order`, if it is a hugetlb size.
    pub const fn of_order(order: u32) -> Option<HugeSize> {
        match order {
            BLOCK_ORDER => Some(HugeSize::Pmd),
            GIGANTIC_ORDER => Some(HugeSize::Pud),
            _ => None,
        }
    }

    /// The page-table level whose leaf maps one page (2: PMD, 3: PUD).
    pub const fn level(self) -> u8 {
        match self {
            HugeSize::Pmd => 2,
            HugeSize::Pud => 3,
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One size's pool state, under `FrameTable::hugetlb[size]`.
pub(super) struct HugePool {
    /// Heads of the free folios (PFNs); its capacity is kept at `nr`, so a free never allocates.
    free: Vec<u32>,
    nr: u64,
    resv: u64,
    surplus: u64,
}

impl HugePool {
    pub(super) const fn new() -> HugePool {
        HugePool {
            free: Vec::new(),
            nr: 0,
            resv: 0,
            surplus: 0,
        }
    }
}

/// A snapshot of the pool's counts (sysfs and `/proc/meminfo`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HugeCounts {
    /// `HugePages_Total`: every hugetlb folio.
    pub total: u64,
    /// `HugePages_Free` / `free_hugepages`.
    pub free: u64,
    /// `HugePages_Rsvd` / `resv_hugepages`.
    pub resv: u64,
    /// `HugePages_Surp` / `surplus_hugepages`.
    pub surplus: u64,
}

impl HugeCounts {
    /// `nr_hugepages`: the persistent pool size (Linux `persistent_huge_pages`).
    pub fn persistent(&self) -> u64 {
        self.total - self.surplus
    }
}

impl FrameTable {
    /// The 2 MiB pool's counts now.
    pub fn hugetlb_counts(&self) -> HugeCounts {
        self.hugetlb_counts_of(HugeSize::Pmd)
    }

    /// Sets the 2 MiB pool's persistent size (see [`Self::hugetlb_set_max_of`]).
    pub fn hugetlb_set_max(&self, count: u64) {
        self.hugetlb_set_max_of(HugeSize::Pmd, count);
    }

    /// The counts of the pool of size `h` now.
    pub fn hugetlb_counts_of(&self, h: HugeSize) -> HugeCounts {
        let p = self.hugetlb[h.index()].lock();
        HugeCounts {
            total: p.nr,
            free: p.free.len() as u64,
            resv: p.resv,
            surplus: p.surplus,
        }
    }

    /// Sets the persistent pool size to `count` as far as memory allows (Linux
    /// `set_max_huge_pages`): surplus folios become persistent first, then new folios come from
    /// the block allocator until it has none; shrinking frees free unreserved folios, and
    /// turns in-use ones into surplus, which go back to the allocator when freed.
    /// For 1 GiB pages a new folio is an aligned free GiB (`alloc_gigantic`, Linux
    /// `alloc_contig_pages`), so growing stops early where memory is fragmented, as Linux's
    /// does: the count written is what the pool reaches.
    pub fn hugetlb_set_max_of(&self, h: HugeSize, count: u64) {
        let mut p = self.hugetlb[h.index()].lock();
        while p.surplus > 0 && p.nr - p.surplus < count {
            p.surplus -= 1;
        }
        while p.nr - p.surplus < count {
            let head = match h {
                HugeSize::Pmd => self.alloc_block(true),
                HugeSize::Pud => self.alloc_gigantic(),
            };
            let Some(head) = head else {
                break;
            };
            self.prep_hugetlb_folio(head, h);
            // Room for every folio on the free list, so that a free never allocates.
            let extra = (p.nr as usize + 1).saturating_sub(p.free.len());
            if p.free.try_reserve(extra).is_err() {
                self.dismantle_huge_folio(head);
                break;
            }
            p.free.push(head.pfn() as u32);
            p.nr += 1;
        }
        // Never below what is in use or promised (Linux's `min_count`).
        let in_use = p.nr - p.free.len() as u64;
        let keep = count.max(p.resv + in_use);
        while keep < p.nr - p.surplus {
            let Some(pfn) = p.free.pop() else {
                break;
            };
            p.nr -= 1;
            self.dismantle_huge_folio(PhysAddr::from_pfn(pfn as usize));
        }
        while count < p.nr - p.surplus {
            p.surplus += 1;
        }
    }

    /// Promises `n` free folios to a mapping (Linux `hugetlb_acct_memory(h, n)`; with no
    /// overcommit no surplus folio is made): `false` if fewer than `n` are free and unpromised.
    pub(crate) fn hugetlb_reserve(&self, h: HugeSize, n: u64) -> bool {
        let mut p = self.hugetlb[h.index()].lock();
        if p.resv + n > p.free.len() as u64 {
            return false;
        }
        p.resv += n;
        true
    }

    /// Releases `n` promises (Linux `hugetlb_acct_memory(h, -n)` with
    /// `return_unused_surplus_pages`): free surplus folios go back to the allocator.
    pub(crate) fn hugetlb_unreserve(&self, h: HugeSize, n: u64) {
        let mut p = self.hugetlb[h.index()].lock();
        assert!(p.resv >= n, "hugetlb reservation underflow");
        p.resv -= n;
        let mut give = n.min(p.surplus);
        while give > 0 && p.free.len() as u64 > p.resv {
            let pfn = p.free.pop().expect("free > resv");
            p.nr -= 1;
            p.surplus -= 1;
            give -= 1;
            self.dismantle_huge_folio(PhysAddr::from_pfn(pfn as usize));
        }
    }

    /// Takes a free folio (Linux `dequeue_hugetlb_folio_vma`), consuming one reservation when
    /// `reserved`, else only if a free folio is left unpromised. The folio comes with refcount
    /// 1 (the caller's), no mapping, contents as the last user left them.
    pub(crate) fn hugetlb_alloc(&self, h: HugeSize, reserved: bool) -> Option<PhysAddr> {
        let mut p = self.hugetlb[h.index()].lock();
        if reserved {
            assert!(p.resv > 0, "consuming a hugetlb reservation nobody made");
            p.resv -= 1;
        } else if p.free.len() as u64 <= p.resv {
            return None;
        }
        let pfn = p.free.pop().expect("resv <= free");
        drop(p);
        self.metas()[pfn as usize]
            .refcount
            .store(1, Ordering::Relaxed);
        Some(PhysAddr::from_pfn(pfn as usize))
    }

    /// The last reference of the hugetlb folio at `head` is gone (Linux `free_huge_folio`):
    /// its per-subpage state is cleared and it goes back on the free list, or to the allocator
    /// if the pool holds surplus folios.
    pub(super) fn free_huge_folio(&self, head: PhysAddr) {
        let keep =
            FrameFlags::HEAD | FrameFlags::TAIL | FrameFlags::HUGETLB | FrameFlags::ORDER_MASK;
        let first = head.pfn();
        let h = HugeSize::of_order(self.folio_order(head)).expect("a hugetlb folio's order");
        for m in &self.metas()[first..first + h.frames()] {
            m.flags.store(m.flags().0 & keep.0, Ordering::Relaxed);
            debug_assert!(m.mapcount() == 0, "freed hugetlb folio still mapped");
        }
        let mut p = self.hugetlb[h.index()].lock();
        if p.surplus > 0 {
            p.surplus -= 1;
            p.nr -= 1;
            drop(p);
            self.dismantle_huge_folio(head);
            return;
        }
        p.free.push(first as u32);
    }

    /// Makes the block `head` (fresh from `alloc_block`) a free hugetlb folio: the layout of
    /// `folio.rs`, refcount 0, every frame `HUGETLB`.
    fn prep_hugetlb_folio(&self, head: PhysAddr, h: HugeSize) {
        let first = head.pfn();
        let metas = self.metas();
        metas[first]
            .init_flags(FrameFlags::HEAD | FrameFlags::order(h.order()) | FrameFlags::HUGETLB);
        metas[first].init_counts(0, 0);
        for m in &metas[first + 1..first + h.frames()] {
            m.refcount.store(0, Ordering::Relaxed);
            m.mapcount.store(0, Ordering::Relaxed);
            m.pincount.store(first as u32, Ordering::Relaxed);
            m.init_flags(FrameFlags::TAIL | FrameFlags::HUGETLB);
        }
    }

    /// Returns the free hugetlb folio at `head` to the block allocator.
    fn dismantle_huge_folio(&self, head: PhysAddr) {
        self.metas()[head.pfn()]
            .refcount
            .store(0, Ordering::Relaxed);
        self.free_large_folio(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::{BLOCK_FRAMES, GIGANTIC_FRAMES};

    #[test]
    fn gigantic_pool_takes_aligned_gibs_and_gives_them_back() {
        // Three GiB: the first holds frame 0 (reserved), the other two are free.
        let t = FrameTable::new_leaked(3 * GIGANTIC_FRAMES);
        t.add_free_range(
            PhysAddr::from_pfn(1),
            PhysAddr::from_pfn(3 * GIGANTIC_FRAMES),
        );
        let boot = t.free_frames();
        t.hugetlb_set_max_of(HugeSize::Pud, 5);
        let c = t.hugetlb_counts_of(HugeSize::Pud);
        assert_eq!(
            (c.total, c.free),
            (2, 2),
            "two aligned free GiBs: a short count"
        );
        assert_eq!(
            t.hugetlb_counts(),
            HugeCounts::default(),
            "2 MiB pool untouched"
        );
        assert_eq!(t.free_frames(), boot - 2 * GIGANTIC_FRAMES);
        assert!(t.hugetlb_reserve(HugeSize::Pud, 1));
        let page = t.hugetlb_alloc(HugeSize::Pud, true).unwrap();
        assert!(page.pfn().is_multiple_of(GIGANTIC_FRAMES));
        assert_eq!(t.folio_order(page), GIGANTIC_ORDER);
        assert_eq!(t.folio_head(page + 12345 * 4096), page);
        assert!(!t.put(page), "back to the pool, not the allocator");
        assert_eq!(t.hugetlb_counts_of(HugeSize::Pud).free, 2);
        t.hugetlb_set_max_of(HugeSize::Pud, 0);
        assert_eq!(t.hugetlb_counts_of(HugeSize::Pud), HugeCounts::default());
        assert_eq!(t.free_frames(), boot, "every frame back");
        assert!(t.alloc_gigantic().is_some_and(|g| {
            t.free_gigantic(g);
            true
        }));
    }

    fn table(blocks: usize) -> &'static FrameTable {
        let t = FrameTable::new_leaked((blocks + 1) * BLOCK_FRAMES);
        t.add_free_range(
            PhysAddr::from_pfn(1),
            PhysAddr::from_pfn((blocks + 1) * BLOCK_FRAMES),
        );
        t
    }

    #[test]
    fn pool_grows_as_far_as_memory_allows_and_shrinks_back() {
        let t = table(3);
        let boot = t.free_frames();
        t.hugetlb_set_max(10);
        let c = t.hugetlb_counts();
        assert_eq!(
            (c.total, c.free, c.persistent()),
            (3, 3, 3),
            "3 whole blocks"
        );
        assert_eq!(t.free_frames(), boot - 3 * BLOCK_FRAMES);
        t.hugetlb_set_max(1);
        assert_eq!(t.hugetlb_counts().total, 1);
        t.hugetlb_set_max(0);
        assert_eq!(t.hugetlb_counts(), HugeCounts::default());
        assert_eq!(t.free_frames(), boot, "every frame back to the allocator");
    }

    #[test]
    fn reservations_bound_allocation_and_survive_a_shrink_as_surplus() {
        let t = table(3);
        let boot = t.free_frames();
        t.hugetlb_set_max(2);
        assert!(t.hugetlb_reserve(HugeSize::Pmd, 2));
        assert!(!t.hugetlb_reserve(HugeSize::Pmd, 1), "no overcommit");
        assert!(
            t.hugetlb_alloc(HugeSize::Pmd, false).is_none(),
            "both free folios are promised"
        );
        let a = t.hugetlb_alloc(HugeSize::Pmd, true).unwrap();
        // Shrinking keeps the promised and the used folio, as surplus.
        t.hugetlb_set_max(0);
        let c = t.hugetlb_counts();
        assert_eq!((c.total, c.free, c.resv, c.surplus), (2, 1, 1, 2));
        assert_eq!(c.persistent(), 0);
        t.hugetlb_unreserve(HugeSize::Pmd, 1);
        assert_eq!(
            t.hugetlb_counts().total,
            1,
            "the unpromised surplus folio went back"
        );
        assert!(
            !t.put(a),
            "a hugetlb folio's last put frees no frame to the caller"
        );
        assert_eq!(t.hugetlb_counts(), HugeCounts::default());
        assert_eq!(t.free_frames(), boot);
    }

    /// The sequence measured on Linux 6.18 (nr_hugepages sysfs = total, sysctl = persistent).
    #[test]
    fn shrink_and_regrow_under_use_and_promise_follow_linux() {
        let t = table(4);
        let boot = t.free_frames();
        t.hugetlb_set_max(3);
        let used = t.hugetlb_alloc(HugeSize::Pmd, false).unwrap();
        assert!(t.hugetlb_reserve(HugeSize::Pmd, 1));
        let c = |t: &FrameTable| {
            let c = t.hugetlb_counts();
            (c.total, c.free, c.resv, c.surplus, c.persistent())
        };
        t.hugetlb_set_max(0);
        assert_eq!(c(t), (2, 1, 1, 2, 0));
        t.hugetlb_set_max(1);
        assert_eq!(c(t), (2, 1, 1, 1, 1), "a surplus page became persistent");
        t.hugetlb_set_max(0);
        assert_eq!(c(t), (2, 1, 1, 2, 0));
        t.hugetlb_unreserve(HugeSize::Pmd, 1);
        assert_eq!(c(t), (1, 0, 0, 1, 0));
        assert!(!t.put(used));
        assert_eq!(c(t), (0, 0, 0, 0, 0));
        assert_eq!(t.free_frames(), boot);
    }

    #[test]
    fn a_freed_folio_returns_to_the_pool_clean() {
        let t = table(1);
        t.hugetlb_set_max(1);
        let a = t.hugetlb_alloc(HugeSize::Pmd, false).unwrap();
        t.meta(a + 7 * 4096)
            .set_flags(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE);
        assert!(t.hugetlb_alloc(HugeSize::Pmd, false).is_none());
        assert!(!t.put(a));
        assert_eq!(t.hugetlb_counts().free, 1);
        assert!(!t.meta(a + 7 * 4096).test(FrameFlags::ANON));
        assert!(t
            .meta(a + 7 * 4096)
            .test(FrameFlags::TAIL | FrameFlags::HUGETLB));
        t.hugetlb_set_max(0);
    }
}
