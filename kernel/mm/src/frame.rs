//! Per-frame metadata and the O(1) frame allocator.
//!
//! Every physical 4 KiB frame below the highest usable PFN has one 16-byte [`FrameMeta`] in a
//! flat array indexed by PFN (Linux's `mem_map` of `struct page`, a quarter of the size). The
//! allocator is a LIFO free list threaded *through that array*: a free frame's metadata holds
//! the PFN of the next free frame, so allocation and free are a pop and a push under one spin
//! lock, with no walk of any bitmap or map. The invariant this module keeps: a frame is in
//! exactly one of the states documented on [`FrameMeta`], and only [`FrameTable::alloc`] and
//! [`FrameTable::free`] move it between *reserved/free* and *in use*.

use core::mem::MaybeUninit;
use core::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};

use spin::Mutex;

use crate::addr::PhysAddr;

mod gigantic;
mod huge;
mod hugetlb_pool;

pub use gigantic::{GIGANTIC_FRAMES, GIGANTIC_ORDER};
pub use huge::{BLOCK_FRAMES, BLOCK_ORDER};
pub use hugetlb_pool::{HugeCounts, HugeSize};

#[cfg(test)]
std::thread_local! {
    /// Host tests: how often this thread took the free list's lock to free frames (one per
    /// frame freed alone, one per batch), to check that long frees are batched.
    pub(crate) static FREE_LIST_LOCKS: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

/// Frame flags, one bit each, stored in [`FrameMeta::flags`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FrameFlags(u32);

/// Where [`FrameFlags::ORDER_MASK`] starts.
pub(crate) const ORDER_SHIFT: u32 = 10;

impl FrameFlags {
    /// The order field of a folio head's flags. Orders 0..=14 are stored as they are; the
    /// 4-bit field's last value stands for [`gigantic::GIGANTIC_ORDER`] (a 1 GiB hugetlb
    /// folio), the one larger order a folio can have (orders 10..=17 never occur).
    pub const fn order(order: u32) -> FrameFlags {
        let field = if order == gigantic::GIGANTIC_ORDER {
            0xf
        } else {
            order & 0xf
        };
        FrameFlags(field << ORDER_SHIFT)
    }

    /// The order [`Self::order`] stored in these flags.
    pub const fn order_of(self) -> u32 {
        match (self.0 & Self::ORDER_MASK.0) >> ORDER_SHIFT {
            0xf => gigantic::GIGANTIC_ORDER,
            field => field,
        }
    }

    pub const NONE: FrameFlags = FrameFlags(0);
    /// Anonymous memory (Linux `PageAnon`): reached only through private page tables and pins,
    /// never through a file or the page cache.
    pub const ANON: FrameFlags = FrameFlags(1 << 0);
    /// Exactly one process maps this anon page, through one PTE, and may write it without
    /// copying (Linux `PageAnonExclusive`). See the state machine on [`FrameMeta`].
    pub const ANON_EXCLUSIVE: FrameFlags = FrameFlags(1 << 1);
    /// The contents differ from the backing store (file and shmem pages; set on anon pages by
    /// DMA reads for symmetry with Linux's `set_page_dirty_lock`).
    pub const DIRTY: FrameFlags = FrameFlags(1 << 2);
    /// Being written back to its file.
    pub const WRITEBACK: FrameFlags = FrameFlags(1 << 3);
    /// The shared zero page: never written, never freed, never exclusive.
    pub const ZERO: FrameFlags = FrameFlags(1 << 4);
    /// Owned by a file's page cache.
    pub const PAGECACHE: FrameFlags = FrameFlags(1 << 5);
    /// Owned by a shmem/memfd object (a page-cache page without writeback).
    pub const SHMEM: FrameFlags = FrameFlags(1 << 6);
    /// A page-table page (PML4, PDPT, PD or PT) of some address space.
    pub const PAGETABLE: FrameFlags = FrameFlags(1 << 7);
    /// Head of a large folio (`folio.rs`): its `refcount` and `pincount` are the folio's.
    pub const HEAD: FrameFlags = FrameFlags(1 << 8);
    /// A tail frame of a large folio (`folio.rs`): its `pincount` field holds the head's PFN,
    /// its `refcount` one of the folio's extra counts; only `mapcount` and the per-subpage
    /// flags (`ANON_EXCLUSIVE`) are its own.
    pub const TAIL: FrameFlags = FrameFlags(1 << 9);
    /// On a large folio's head: the folio's order (2..=9), a 4-bit field (`folio.rs`).
    pub const ORDER_MASK: FrameFlags = FrameFlags(0xf << ORDER_SHIFT);
    /// Every frame of a hugetlb folio (`hugetlb_pool.rs`): its last reference returns it to
    /// the hugetlb pool, not to the frame allocator (Linux `folio_test_hugetlb`).
    pub const HUGETLB: FrameFlags = FrameFlags(1 << 14);
    /// A page-cache page held by one task (Linux `PG_locked`, `folio_lock`): set while the page
    /// is filled from its store, and while truncation removes it; others wait for it to clear
    /// asleep (`pagecache::wait_on_page_locked`), never spinning.
    pub const LOCKED: FrameFlags = FrameFlags(1 << 16);
    /// A page-cache page whose bytes are valid (Linux `PG_uptodate`): set once its fill from the
    /// store completes (or it was created over bytes the file does not hold). A cached page
    /// without it is locked and being filled; one that loses its lock without it failed its
    /// read (`EIO` to every waiter).
    pub const UPTODATE: FrameFlags = FrameFlags(1 << 17);
    /// On a large folio's head: queued for a deferred split (`folio_split.rs`).
    pub const SPLIT_QUEUED: FrameFlags = FrameFlags(1 << 24);
    /// Free, and part of a whole free 2 MiB block on the block list (`frame/huge.rs`).
    pub const BLOCK: FrameFlags = FrameFlags(1 << 29);
    /// On the free list. Only the allocator sets or clears it.
    pub const FREE: FrameFlags = FrameFlags(1 << 30);
    /// Never handed out: firmware, the kernel image, the metadata array, holes.
    pub const RESERVED: FrameFlags = FrameFlags(1 << 31);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn from_bits(bits: u32) -> FrameFlags {
        FrameFlags(bits)
    }

    pub const fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn intersects(self, other: FrameFlags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | other.0)
    }
}

impl core::ops::BitOr for FrameFlags {
    type Output = FrameFlags;
    fn bitor(self, rhs: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | rhs.0)
    }
}

/// The metadata of one physical frame (SEMANTICS.md section 1).
///
/// # States
///
/// | state | `flags` | `refcount` | `mapcount` | `pincount` |
/// |---|---|---|---|---|
/// | reserved | `RESERVED` | 0 | 0 | 0 |
/// | free | `FREE` | 0 | *next free PFN* (`u32::MAX` ends the list) | 0 |
/// | kernel use / page table | `0` / `PAGETABLE` | >= 1 | 0 | 0 |
/// | anon page | `ANON` [+ `ANON_EXCLUSIVE`, `DIRTY`] | >= mapcount + pincount, >= 1 | PTEs mapping it | pins |
/// | zero page | `ZERO` | 1 (the `Mm`'s) + mapcount + pins | PTEs mapping it | pins |
/// | shmem cache page | `PAGECACHE\|SHMEM` [+ `DIRTY`] | >= 1 (the cache's) + mapcount + pincount | PTEs mapping it (shared mappings, and private ones that have not copied) | pins |
/// | orphan (left a shrinking shmem cache while mapped) | `0` [+ `DIRTY`] | >= mapcount + pincount, >= 1 | PTEs mapping it | pins |
///
/// Transitions: `reserved -> free` only by [`FrameTable::add_free_range`]; `free -> in use`
/// only by [`FrameTable::alloc`], which leaves refcount 1, everything else 0; `in use -> free`
/// only by [`FrameTable::free`] (directly by the single owner, or by [`FrameTable::put`] when the
/// last reference goes), which requires mapcount and pincount 0.
///
/// `refcount` counts every reference: each PTE mapping the frame, each pin (a pin holds one
/// reference *and* one `pincount`), each plain GUP reference, transient kernel uses. So
/// `refcount >= mapcount + pincount` always, and `refcount == 1` on a mapped anon page proves
/// that the single PTE is the only user (Linux `wp_can_reuse_anon_folio`).
///
/// # `ANON_EXCLUSIVE`
///
/// Set only when exclusivity is proven or created, always by the holder of the address space:
/// a write fault on an empty PTE (new zeroed frame), a COW copy (new frame, also fork's copy of
/// a pinned page), and a write or unshare fault that reuses the page because the era's count
/// rule proved it unshared (`rules::wp_can_reuse`). Cleared by fork when it shares the page
/// with the child (`copy_present_pte`), when the last PTE mapping the page goes away, and by
/// the allocator when the frame is freed. Once cleared it is never set again except by such a
/// fault. It implies `ANON` and `mapcount <= 1`.
///
/// # Memory ordering
///
/// - `refcount`: increments are `Relaxed` (the caller already holds a reference, as with
///   `Arc::clone`), except GUP-fast's `try_get_many`, which holds none and so refuses a frame whose
///   count already reached 0 (a compare-exchange, `Acquire` on success); decrements are
///   `Release`, and the decrement that reaches 0 is followed by an `Acquire` fence before the
///   frame is freed, so every access made through any reference happens-before the frame's
///   reuse.
/// - `mapcount` and `flags` change only under the lock of an address space mapping the frame, or
///   on a frame nobody else can reach yet; they are written `Release` and read `Acquire` so that
///   lock-free readers (GUP-fast, the checker) see a consistent page once they see the PTE.
/// - `pincount` vs fork is a Dekker pair: fork makes its address space's `write_protect_seq`
///   odd, issues a `SeqCst` fence, and only then reads `pincount` (to decide `fork_must_copy`)
///   and clears `ANON_EXCLUSIVE`. GUP-fast (`gup::gup_fast`) first samples the sequence count
///   (`Acquire`) and backs off if it is odd; then, per page or per run of subpages of one
///   folio, takes the references (`try_get_many`), adds to `pincount` (`SeqCst`) followed by a
///   `SeqCst` fence (`pin::add_pins`), and re-reads the PTEs, giving back the pages whose
///   PTE changed; after the walk it issues another `SeqCst` fence and re-reads the sequence count, giving every pin back if it moved. One
///   side always sees the other: either fork's `pincount` read sees the pin and copies the
///   page, or the pinner's re-read sees the odd or advanced count and drops its pins.
/// - GUP-fast vs. unmap on another CPU (issue 16): a PTE store is `Release` and GUP-fast's PTE
///   load `Acquire`, so a frame GUP-fast reaches through a PTE has the metadata (`flags`,
///   `mapcount`) its mapper wrote before the PTE. The reference GUP-fast's `try_get_many` takes
///   cannot race the frame's freeing: the zapper clears the PTE, then flushes through
///   `Arch::flush_tlb_cpus`, which does not return while GUP-fast's CPU has interrupts off,
///   and only then drops the mapping's reference (`MmuGather`). So inside GUP-fast's
///   interrupts-off section the mapping's reference is still held by the time `try_get_many` runs
///   (it sees a count >= 1 and its `Acquire` pairs with the `Release` of earlier puts), and the
///   page-table pages it walks are not yet freed. The PTE re-read after the grab (`Acquire`)
///   then decides whether to keep it: a PTE that changed meanwhile (a COW break's clear, a
///   fork's write-protect, a zap) gives the page back; one that did not means the page was
///   mapped at some instant during the walk, which is all GUP promises.
/// - The free-list link is touched only under the allocator's lock.
#[repr(C)]
pub struct FrameMeta {
    /// On a tail of a large folio, a folio field (`folio.rs`).
    pub(crate) refcount: AtomicU32,
    /// Number of PTEs mapping the frame; on a free frame, the next free PFN.
    pub(crate) mapcount: AtomicU32,
    /// On a tail of a large folio, the head's PFN (`folio.rs`).
    pub(crate) pincount: AtomicU32,
    flags: AtomicU32,
}

const _: () = assert!(core::mem::size_of::<FrameMeta>() == 16);
const _: () = assert!(core::mem::align_of::<FrameMeta>() == 4);

/// Ends the intrusive free list.
pub(crate) const NIL: u32 = u32::MAX;

// The small accessors and state changes below are `#[inline]`: they are non-generic, so without
// it the kernel crate's monomorphised fault, fork and zap paths call each one out of line through
// the GOT (a handful per fault, one or more per page in fork and munmap).
impl FrameMeta {
    const fn reserved() -> FrameMeta {
        FrameMeta {
            refcount: AtomicU32::new(0),
            mapcount: AtomicU32::new(0),
            pincount: AtomicU32::new(0),
            flags: AtomicU32::new(FrameFlags::RESERVED.0),
        }
    }

    #[inline]
    pub fn refcount(&self) -> u32 {
        self.refcount.load(Ordering::Acquire)
    }

    /// PTEs mapping the frame. Meaningless on a free frame.
    #[inline]
    pub fn mapcount(&self) -> u32 {
        self.mapcount.load(Ordering::Acquire)
    }

    #[inline]
    pub fn pincount(&self) -> u32 {
        self.pincount.load(Ordering::Acquire)
    }

    #[inline]
    pub fn flags(&self) -> FrameFlags {
        FrameFlags(self.flags.load(Ordering::Acquire))
    }

    #[inline]
    pub fn test(&self, flag: FrameFlags) -> bool {
        self.flags().contains(flag)
    }

    /// Linux `folio_maybe_dma_pinned`: a device may be accessing the frame behind the page
    /// tables. Exact here (no bias), but named "maybe" because a pin may be released any moment.
    #[inline]
    pub fn maybe_dma_pinned(&self) -> bool {
        self.pincount() > 0
    }

    #[inline]
    pub fn is_free(&self) -> bool {
        self.test(FrameFlags::FREE)
    }

    #[inline]
    pub fn is_reserved(&self) -> bool {
        self.test(FrameFlags::RESERVED)
    }

    /// Takes one more reference. The caller must already hold one (or the frame must be
    /// reachable only by the caller).
    #[inline]
    pub(crate) fn get(&self) {
        self.refcount.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes `refs` references unless the frame is being freed (refcount 0): GUP-fast's
    /// `try_get_folio`, which reaches the frame through a PTE without holding any reference
    /// (`refs` > 1 for a run of subpages of one folio: Linux `folio_ref_try_add`).
    #[inline(always)]
    pub(crate) fn try_get_many(&self, refs: u32) -> bool {
        let mut cur = self.refcount.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            let Some(new) = cur.checked_add(refs) else {
                return false;
            };
            match self.refcount.compare_exchange_weak(
                cur,
                new,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// Drops `n` references that cannot be the last (the caller still holds another one, put
    /// afterwards through [`FrameTable::put_meta`]): the batched part of an unpin of a run of
    /// subpages.
    #[inline]
    pub(crate) fn put_many_not_last(&self, n: u32) {
        if n == 0 {
            return;
        }
        let old = self.refcount.fetch_sub(n, Ordering::Release);
        assert!(
            old > n,
            "refcount underflow: a batched put reached the last reference"
        );
    }

    #[inline]
    pub(crate) fn set_flags(&self, flags: FrameFlags) {
        self.flags.fetch_or(flags.0, Ordering::Release);
    }

    /// Sets `flag` and says whether this call set it (it was clear): a test-and-set for
    /// [`FrameFlags::LOCKED`] (Linux `folio_trylock`).
    #[inline]
    pub(crate) fn test_and_set(&self, flag: FrameFlags) -> bool {
        self.flags.fetch_or(flag.0, Ordering::AcqRel) & flag.0 == 0
    }

    #[inline]
    pub(crate) fn clear_flags(&self, flags: FrameFlags) {
        self.flags.fetch_and(!flags.0, Ordering::Release);
    }

    /// Replaces all flags of a frame nobody else can reach yet (fresh from `alloc`): one plain
    /// store instead of a read-modify-write on the fault path.
    #[inline]
    pub(crate) fn init_flags(&self, flags: FrameFlags) {
        self.flags.store(flags.0, Ordering::Release);
    }

    /// Initialises the counts of a frame nobody else can reach yet, with plain stores.
    #[inline]
    pub(crate) fn init_counts(&self, refcount: u32, mapcount: u32) {
        self.refcount.store(refcount, Ordering::Relaxed);
        self.mapcount.store(mapcount, Ordering::Release);
    }

    #[inline]
    pub(crate) fn inc_mapcount(&self) {
        self.mapcount.fetch_add(1, Ordering::AcqRel);
    }

    /// Returns the mapcount before the decrement.
    #[inline]
    pub(crate) fn dec_mapcount(&self) -> u32 {
        let old = self.mapcount.fetch_sub(1, Ordering::AcqRel);
        assert!(
            old > 0,
            "mapcount underflow: unmapping a frame that is not mapped"
        );
        old
    }

    /// Drops `n` mappings at once (exit's teardown of the zero page's PTEs, one per table).
    #[inline]
    pub(crate) fn sub_mapcount(&self, n: u32) {
        let old = self.mapcount.fetch_sub(n, Ordering::AcqRel);
        assert!(
            old >= n,
            "mapcount underflow: unmapping a frame more often than it is mapped"
        );
    }

    /// `refs` pins at once (a run of subpages of one folio).
    #[inline]
    pub(crate) fn add_pincount(&self, refs: u32) {
        self.pincount.fetch_add(refs, Ordering::SeqCst);
    }

    /// Gives back `refs` pins at once.
    #[inline]
    pub(crate) fn sub_pincount(&self, refs: u32) {
        let old = self.pincount.fetch_sub(refs, Ordering::SeqCst);
        assert!(
            old >= refs,
            "pincount underflow: unpinning a frame that is not pinned"
        );
    }

    #[inline]
    pub(crate) fn dec_pincount(&self) {
        let old = self.pincount.fetch_sub(1, Ordering::SeqCst);
        assert!(
            old > 0,
            "pincount underflow: unpinning a frame that is not pinned"
        );
    }
}

struct FreeList {
    head: u32,
    /// Free frames whose contents are known to be all zero (page-table pages whose entries
    /// were all cleared before they were freed): handed out first by
    /// [`FrameTable::alloc_prefer_zeroed`], so a new page-table page need not be zeroed again
    /// (the idea of Linux's old page-table quicklists). [`FrameTable::alloc`] takes them last.
    zeroed: u32,
    /// Whole free 2 MiB-aligned blocks of [`huge::BLOCK_FRAMES`] frames (`frame/huge.rs`),
    /// linked through the first frame's `mapcount`.
    blocks: u32,
    /// `count` when a harvest last came back empty: the next one waits for a block's worth of
    /// frees (`FrameTable::alloc_block`).
    harvest_mark: usize,
    /// Frames on all lists (blocks included).
    count: usize,
}

impl FreeList {
    /// Unlinks the first frame of the zeroed list or of the other (a free frame's `mapcount`
    /// holds the next PFN); the caller checked that list is not empty.
    #[inline(always)]
    fn pop(&mut self, metas: &[FrameMeta], zeroed: bool) -> usize {
        let head = if zeroed {
            &mut self.zeroed
        } else {
            &mut self.head
        };
        let pfn = *head as usize;
        *head = metas[pfn].mapcount.load(Ordering::Relaxed);
        self.count -= 1;
        pfn
    }
}

/// All frame metadata plus the free list. One per machine, `'static`, shared by every CPU.
pub struct FrameTable {
    meta: &'static [FrameMeta],
    free: Mutex<FreeList>,
    usable: AtomicUsize,
    /// The hugetlb pools of 2 MiB and 1 GiB folios (`hugetlb_pool.rs`, indexed by
    /// `HugeSize`): here because the last `put` of a hugetlb folio, wherever it happens,
    /// returns it there.
    hugetlb: [Mutex<hugetlb_pool::HugePool>; 2],
    /// The huge zero folio's head PFN, [`NIL`] while there is none (`huge_zero.rs`). Its lock
    /// also serialises the folio's last put against a new mapping's get.
    pub(crate) huge_zero: Mutex<u32>,
    /// The deferred split queue (`folio_split.rs`) and its length, readable without the lock.
    pub(crate) split_queue: Mutex<crate::folio_split::SplitQueue>,
    pub(crate) split_pending: AtomicUsize,
}

impl FrameTable {
    /// Takes ownership of the metadata array. Every entry is initialised as a reserved frame
    /// (never handed out); `meta[i]` describes PFN `i`.
    pub fn new(meta: &'static mut [MaybeUninit<FrameMeta>]) -> FrameTable {
        assert!(
            meta.len() < NIL as usize,
            "frame table too large for 32-bit free-list links"
        );
        for slot in meta.iter_mut() {
            slot.write(FrameMeta::reserved());
        }
        let len = meta.len();
        let ptr = meta.as_mut_ptr().cast::<FrameMeta>();
        // SAFETY: every element was initialised by the loop above and `MaybeUninit<FrameMeta>`
        // has the layout of `FrameMeta`. The `&'static mut` was moved into this call, so the
        // shared slice created here is the only way left to reach the array.
        let meta: &'static [FrameMeta] = unsafe { core::slice::from_raw_parts(ptr, len) };
        FrameTable {
            meta,
            free: Mutex::new(FreeList {
                head: NIL,
                zeroed: NIL,
                blocks: NIL,
                harvest_mark: 0,
                count: 0,
            }),
            usable: AtomicUsize::new(0),
            hugetlb: [
                Mutex::new(hugetlb_pool::HugePool::new()),
                Mutex::new(hugetlb_pool::HugePool::new()),
            ],
            huge_zero: Mutex::new(NIL),
            split_queue: Mutex::new(crate::folio_split::SplitQueue::new()),
            split_pending: AtomicUsize::new(0),
        }
    }

    /// A leaked table of `frames` reserved entries, for host tests and host tools.
    #[cfg(any(test, feature = "host"))]
    pub fn new_leaked(frames: usize) -> &'static FrameTable {
        let meta = alloc::boxed::Box::leak(alloc::boxed::Box::new_uninit_slice(frames));
        alloc::boxed::Box::leak(alloc::boxed::Box::new(FrameTable::new(meta)))
    }

    /// Hands the frames of `[start, end)` (page aligned, PFNs below the table's length, all
    /// currently reserved) to the allocator.
    pub fn add_free_range(&self, start: PhysAddr, end: PhysAddr) {
        assert!(
            start.is_page_aligned() && end.is_page_aligned() && start <= end,
            "add_free_range: [{start:#x}, {end:#x}) is not a page-aligned range"
        );
        assert!(
            end.pfn() <= self.meta.len(),
            "add_free_range: range beyond the frame table"
        );
        let mut list = self.free.lock();
        // Push in descending order so the list hands out ascending frames: easier to read in a
        // debugger, and no other effect.
        for pfn in (start.pfn()..end.pfn()).rev() {
            let meta = &self.meta[pfn];
            assert!(
                meta.is_reserved(),
                "add_free_range: PFN {pfn:#x} was already handed to the allocator"
            );
            meta.mapcount.store(list.head, Ordering::Relaxed);
            meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
            list.head = pfn as u32;
            list.count += 1;
        }
        self.usable
            .fetch_add(end.pfn() - start.pfn(), Ordering::Relaxed);
    }

    /// O(1). A frame with refcount 1, mapcount 0, pincount 0 and no flags. Contents are not
    /// zeroed.
    pub fn alloc(&self) -> Option<PhysAddr> {
        self.alloc_as(FrameFlags::NONE, 0)
    }

    /// [`Self::alloc`] whose frame gets `flags` and `mapcount` (and refcount 1) in the stores
    /// that set up every allocated frame: the anon fault's page (`Mm::alloc_anon_page`) is
    /// initialised once, not as a plain frame and then again as an anon page. Inlined there
    /// (the call, its frame and the second metadata lookup were ~15 instructions of the write
    /// fault); only the ordinary list's pop is inline, the rest out of line.
    #[inline(always)]
    pub(crate) fn alloc_as(&self, flags: FrameFlags, mapcount: u32) -> Option<PhysAddr> {
        let mut list = self.free.lock();
        // The ordinary list first (the fault path's one test of it), the zeroed one last.
        let pfn = if list.head != NIL {
            list.pop(self.meta, false)
        } else {
            self.alloc_not_head(&mut list)?
        };
        drop(list);
        let meta = &self.meta[pfn];
        // The frame is off the list and unreachable by anyone else: plain stores suffice. Our
        // *acquire* of the lock (synchronising with the unlock that ended the previous owner's
        // `free`) orders them after that free; the release above only publishes the list.
        meta.refcount.store(1, Ordering::Relaxed);
        meta.mapcount.store(mapcount, Ordering::Relaxed);
        meta.flags.store(flags.0, Ordering::Relaxed);
        Some(PhysAddr::from_pfn(pfn))
    }

    /// [`Self::alloc_as`] when the ordinary list is empty: the zeroed list, else a block.
    #[cold]
    #[inline(never)]
    fn alloc_not_head(&self, list: &mut FreeList) -> Option<usize> {
        if list.zeroed != NIL {
            Some(list.pop(self.meta, true))
        } else if list.blocks != NIL {
            Some(self.break_block(list))
        } else {
            None
        }
    }

    /// [`Self::alloc`] that prefers a frame known to be all zero; says whether it got one (else
    /// the contents are arbitrary and the caller zeroes them).
    pub fn alloc_prefer_zeroed(&self) -> Option<(PhysAddr, bool)> {
        let mut list = self.free.lock();
        let zeroed = list.zeroed != NIL;
        if !zeroed && list.head == NIL {
            if list.blocks == NIL {
                return None;
            }
            let pfn = self.break_block(&mut list);
            drop(list);
            return Some((self.init_allocated(pfn), false));
        }
        let pfn = list.pop(self.meta, zeroed);
        drop(list);
        Some((self.init_allocated(pfn), zeroed))
    }

    /// Sets up the counts and flags of frame `pfn`, just unlinked from a free list.
    #[inline(always)]
    fn init_allocated(&self, pfn: usize) -> PhysAddr {
        let meta = &self.meta[pfn];
        // The frame is off the list and unreachable by anyone else: plain stores suffice. Our
        // *acquire* of the lock (synchronising with the unlock that ended the previous owner's
        // `free`) orders them after that free; the release above only publishes the list.
        meta.refcount.store(1, Ordering::Relaxed);
        meta.mapcount.store(0, Ordering::Relaxed);
        meta.flags.store(0, Ordering::Relaxed);
        PhysAddr::from_pfn(pfn)
    }

    /// O(1). Returns a frame to the free list. The caller must be its last owner: refcount at
    /// most 1, no mapping, no pin. Panics (a broken kernel invariant) if the frame is reserved,
    /// already free, mapped or pinned.
    pub fn free(&self, frame: PhysAddr) {
        let meta = self.meta(frame);
        assert!(
            meta.refcount() <= 1,
            "freeing frame {frame:#x} that is still referenced"
        );
        self.release(frame);
    }

    /// [`Self::free`] for a frame whose contents the caller knows to be all zero (every word of
    /// a page-table page cleared): [`Self::alloc_prefer_zeroed`] hands it out without zeroing.
    /// A frame that is not all zero here becomes a page table with stray entries, so callers
    /// check it in debug builds (`Mm::free_pagetable_zeroed`).
    pub fn free_zeroed(&self, frame: PhysAddr) {
        let meta = self.meta(frame);
        assert!(
            meta.refcount() <= 1,
            "freeing frame {frame:#x} that is still referenced"
        );
        self.release_to(frame, true);
    }

    /// Takes one more reference on an in-use frame (Linux `get_page`), on its folio.
    pub fn get(&self, frame: PhysAddr) {
        self.head_meta(self.meta(frame)).get();
    }

    /// Drops one reference (Linux `put_page`); the last one frees the frame. Returns whether it
    /// did.
    pub fn put(&self, frame: PhysAddr) -> bool {
        self.put_meta(self.meta(frame), frame)
    }

    /// [`Self::put`] for a caller holding `frame`'s metadata already (unpin paths).
    #[inline]
    pub(crate) fn put_meta(&self, meta: &FrameMeta, frame: PhysAddr) -> bool {
        self.put_meta_then(meta, frame, |_, _| {}) != 0
    }

    /// [`Self::put_meta`] that runs `last(first, frames)` after the last reference is gone but
    /// before the folio's frames go back on the free list: once there, another CPU may
    /// allocate and map them at once, so anything that inspects "the frames being freed" must
    /// run in between. The reference is the folio's: a subpage of a large folio drops it on the
    /// head, and the last one frees the whole folio. Returns the frames freed (0: not the last
    /// reference).
    #[inline(always)]
    pub(crate) fn put_meta_then(
        &self,
        meta: &FrameMeta,
        frame: PhysAddr,
        last: impl FnOnce(PhysAddr, usize),
    ) -> usize {
        if meta.flags().intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
            return self.put_large(meta, last);
        }
        let old = meta.refcount.fetch_sub(1, Ordering::Release);
        assert!(old > 0, "refcount underflow on frame {frame:#x}");
        if old != 1 {
            return 0;
        }
        // Pairs with the Release decrements of every other reference holder.
        fence(Ordering::Acquire);
        last(frame, 1);
        self.release(frame);
        1
    }

    /// [`Self::put_meta_then`] for a frame of a large folio.
    #[cold]
    #[inline(never)]
    fn put_large(&self, meta: &FrameMeta, last: impl FnOnce(PhysAddr, usize)) -> usize {
        let head_meta = self.head_meta(meta);
        let head = self.folio_head_of_meta(head_meta);
        if head_meta.test(FrameFlags::ZERO) {
            return self.put_huge_zero(head, last);
        }
        let old = head_meta.refcount.fetch_sub(1, Ordering::Release);
        assert!(old > 0, "refcount underflow on folio {head:#x}");
        if old != 1 {
            return 0;
        }
        fence(Ordering::Acquire);
        last(head, self.folio_nr(head));
        if head_meta.test(FrameFlags::HUGETLB) {
            // Back to the pool: no frame reaches the allocator, no anon counter moves.
            self.free_huge_folio(head);
            return 0;
        }
        self.free_large_folio(head)
    }

    /// The PFN of the frame `meta` describes (a pointer into the metadata array).
    fn folio_head_of_meta(&self, meta: &FrameMeta) -> PhysAddr {
        let base = self.meta.as_ptr() as usize;
        let at = meta as *const FrameMeta as usize;
        PhysAddr::from_pfn((at - base) / core::mem::size_of::<FrameMeta>())
    }

    /// Pushes a frame whose last reference is gone onto the free list.
    fn release(&self, frame: PhysAddr) {
        self.release_to(frame, false);
    }

    /// Drops one reference of a frame that is not part of a large folio; `true` if it was the
    /// last, and the caller then owes [`Self::release_batch`] the frame (after any check that
    /// must see it still allocated: see [`Self::put_meta_then`]). The batched form of
    /// [`Self::put_meta`] for paths that free many single frames together.
    pub(crate) fn put_small_deferred(&self, meta: &FrameMeta, frame: PhysAddr) -> bool {
        debug_assert!(!meta.flags().intersects(FrameFlags::HEAD | FrameFlags::TAIL));
        let old = meta.refcount.fetch_sub(1, Ordering::Release);
        assert!(old > 0, "refcount underflow on frame {frame:#x}");
        if old != 1 {
            return false;
        }
        // Pairs with the Release decrements of every other reference holder.
        fence(Ordering::Acquire);
        true
    }

    /// Returns frames whose last reference [`Self::put_small_deferred`] dropped to the free
    /// list under one acquisition of its lock (Linux `free_unref_folios` frees a batch the
    /// same way), with [`Self::release`]'s checks on each.
    pub(crate) fn release_batch(&self, frames: &[PhysAddr]) {
        if frames.is_empty() {
            return;
        }
        #[cfg(test)]
        FREE_LIST_LOCKS.with(|n| n.set(n.get() + 1));
        // A local copy: the stores below would otherwise make the compiler reload the slice
        // from `self` for every frame.
        let metas = self.meta;
        let mut list = self.free.lock();
        // One pass under the lock: the checks of `release_to` and the push (a second pass for
        // the checks cost the batch's callers a metadata lookup and a loop per frame). A failed
        // check panics with the lock held; the kernel does not come back from a panic.
        for &frame in frames {
            let meta = &metas[frame.pfn()];
            let flags = meta.flags();
            if flags.intersects(FrameFlags::FREE | FrameFlags::RESERVED | FrameFlags::ZERO)
                || meta.mapcount() != 0
                || meta.pincount() != 0
            {
                bad_release(frame, meta);
            }
            meta.refcount.store(0, Ordering::Relaxed);
            meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
            meta.mapcount.store(list.head, Ordering::Relaxed);
            list.head = frame.pfn() as u32;
        }
        list.count += frames.len();
    }

    /// [`Self::release`] onto the zeroed list if `zeroed` (a constant at each call).
    #[inline(always)]
    fn release_to(&self, frame: PhysAddr, zeroed: bool) {
        let meta = self.meta(frame);
        let flags = meta.flags();
        assert!(
            !flags.intersects(FrameFlags::FREE | FrameFlags::RESERVED),
            "freeing frame {frame:#x} that is already free or reserved (flags {:#x})",
            flags.0
        );
        assert!(
            !flags.contains(FrameFlags::ZERO),
            "the shared zero page is never freed"
        );
        assert!(
            meta.mapcount() == 0 && meta.pincount() == 0,
            "freeing frame {frame:#x} that is still mapped or pinned"
        );
        let pfn = frame.pfn() as u32;
        #[cfg(test)]
        FREE_LIST_LOCKS.with(|n| n.set(n.get() + 1));
        let mut list = self.free.lock();
        meta.refcount.store(0, Ordering::Relaxed);
        meta.flags.store(FrameFlags::FREE.0, Ordering::Relaxed);
        let head = if zeroed {
            &mut list.zeroed
        } else {
            &mut list.head
        };
        meta.mapcount.store(*head, Ordering::Relaxed);
        *head = pfn;
        list.count += 1;
    }

    pub fn free_frames(&self) -> usize {
        self.free.lock().count
    }

    /// Frames ever handed to [`Self::add_free_range`].
    pub fn usable_frames(&self) -> usize {
        self.usable.load(Ordering::Relaxed)
    }

    /// Number of PFNs the table describes (the highest PFN plus one).
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Every frame's metadata indexed by PFN, for loops that look up many frames (fork's
    /// `copy_pte_range`): the slice stays in registers across the loop's atomic operations,
    /// where `meta` reloads it from the table each time.
    #[inline]
    pub(crate) fn metas(&self) -> &'static [FrameMeta] {
        self.meta
    }

    /// The metadata of `frame`. Panics if the frame is beyond the table.
    pub fn meta(&self, frame: PhysAddr) -> &FrameMeta {
        &self.meta[frame.pfn()]
    }

    /// Every frame's metadata by PFN, for the invariant checker.
    pub fn iter(&self) -> impl Iterator<Item = (PhysAddr, &FrameMeta)> {
        self.meta
            .iter()
            .enumerate()
            .map(|(pfn, m)| (PhysAddr::from_pfn(pfn), m))
    }
}

/// [`FrameTable::release_batch`]'s checks failed: the same panics as [`FrameTable::release`]'s.
/// Out of line so the batch loop keeps no copy of its values for the message.
#[cold]
#[inline(never)]
fn bad_release(frame: PhysAddr, meta: &FrameMeta) -> ! {
    let flags = meta.flags();
    assert!(
        !flags.intersects(FrameFlags::FREE | FrameFlags::RESERVED | FrameFlags::ZERO),
        "freeing frame {frame:#x} that is already free, reserved or the zero page (flags {:#x})",
        flags.0
    );
    panic!("freeing frame {frame:#x} that is still mapped or pinned");
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn table(frames: usize, free_from: usize) -> &'static FrameTable {
        let t = FrameTable::new_leaked(frames);
        t.add_free_range(PhysAddr::from_pfn(free_from), PhysAddr::from_pfn(frames));
        t
    }

    #[test]
    fn new_table_is_all_reserved() {
        let t = FrameTable::new_leaked(8);
        assert_eq!(t.free_frames(), 0);
        assert_eq!(t.usable_frames(), 0);
        assert!(t.alloc().is_none());
        assert!(t.iter().all(|(_, m)| m.is_reserved()));
    }

    #[test]
    fn alloc_all_then_free_all() {
        let t = table(64, 4);
        assert_eq!(t.free_frames(), 60);
        assert_eq!(t.usable_frames(), 60);
        let mut got = Vec::new();
        while let Some(f) = t.alloc() {
            let m = t.meta(f);
            assert_eq!(
                (m.refcount(), m.mapcount(), m.pincount()),
                (1, 0, 0),
                "fresh frame state"
            );
            assert_eq!(m.flags(), FrameFlags::NONE);
            assert!(f.pfn() >= 4, "reserved frame handed out");
            got.push(f);
        }
        assert_eq!(got.len(), 60);
        assert_eq!(t.free_frames(), 0);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 60, "a frame was handed out twice");
        for f in got {
            t.free(f);
        }
        assert_eq!(t.free_frames(), 60);
        assert_eq!(t.usable_frames(), 60);
    }

    #[test]
    fn lifo_reuse() {
        let t = table(16, 1);
        let a = t.alloc().unwrap();
        t.free(a);
        assert_eq!(t.alloc(), Some(a));
    }

    #[test]
    fn zeroed_frames_go_first_to_those_who_prefer_them_and_last_to_alloc() {
        let t = table(8, 4); // frames 4..8 free
        let a = t.alloc().unwrap();
        let b = t.alloc().unwrap();
        t.free_zeroed(a);
        assert_eq!(t.free_frames(), 3, "a zeroed frame counts as free");
        // `alloc` takes the ordinary frames first, so zeroed ones stay for page tables.
        let c = t.alloc().unwrap();
        assert_ne!(c, a);
        t.free(c);
        assert_eq!(t.alloc_prefer_zeroed(), Some((a, true)));
        assert_eq!(
            t.alloc_prefer_zeroed(),
            Some((c, false)),
            "no zeroed frame left"
        );
        t.free_zeroed(a);
        // With the ordinary list empty `alloc` still finds the zeroed frame: none is lost.
        let d = t.alloc().unwrap();
        assert_ne!(d, a);
        assert_eq!(t.alloc(), Some(a));
        assert_eq!(t.alloc(), None);
        assert_eq!(t.free_frames(), 0);
        for f in [a, b, c, d] {
            t.free(f);
        }
        assert_eq!(t.free_frames(), 4);
        let meta = t.meta(a);
        assert!(meta.is_free() && meta.refcount() == 0);
    }

    #[test]
    fn put_frees_on_last_reference() {
        let t = table(16, 1);
        let a = t.alloc().unwrap();
        t.get(a);
        assert!(!t.put(a));
        assert!(!t.meta(a).is_free());
        assert!(t.put(a));
        assert!(t.meta(a).is_free());
        assert_eq!(t.free_frames(), 15);
    }

    #[test]
    #[should_panic(expected = "already free")]
    fn double_free_panics() {
        let t = table(16, 1);
        let a = t.alloc().unwrap();
        t.free(a);
        t.free(a);
    }

    #[test]
    #[should_panic(expected = "already free or reserved")]
    fn freeing_reserved_panics() {
        let t = table(16, 1);
        t.free(PhysAddr::from_pfn(0));
    }

    #[test]
    #[should_panic(expected = "still mapped")]
    fn freeing_mapped_frame_panics() {
        let t = table(16, 1);
        let a = t.alloc().unwrap();
        t.meta(a).inc_mapcount();
        t.free(a);
    }

    #[test]
    #[should_panic(expected = "already handed")]
    fn adding_a_range_twice_panics() {
        let t = table(16, 1);
        t.add_free_range(PhysAddr::from_pfn(2), PhysAddr::from_pfn(3));
    }
}
