//! The VMA set of an address space with a one-entry lookup cache (Linux's per-mm `vmacache`,
//! the fast path the maple tree kept): consecutive faults nearly always hit the VMA of the
//! previous one, and checking one cached VMA costs a handful of instructions where the
//! `BTreeMap` range search costs about a hundred.
//!
//! Soundness is local to this module: the cache is a raw pointer into the map, and the map is
//! private, reachable mutably only through [`VmaTree::map_mut`] (and by value through
//! [`VmaTree::into_map`]), both of which clear the cache first. Reads go through `Deref`.

use alloc::collections::BTreeMap;
use core::ops::Deref;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::addr::VirtAddr;
use crate::vma::Vma;

/// VMAs keyed by start address, plus the last one [`VmaTree::find`] returned.
pub(crate) struct VmaTree {
    map: BTreeMap<u64, Vma>,
    /// Null, or a `Vma` stored in `map` since the last mutable access to `map`. Atomic (not a
    /// `Cell`) so that `&AddressSpace` stays `Sync` for the lock-free GUP-fast readers; relaxed
    /// is enough because it is only a hint about data that no one mutates while `&self` lives.
    last: AtomicPtr<Vma>,
    /// Bumped on every mutable access to `map` (Linux's old `vmacache_seqnum` role): batched
    /// munmap compares it across batches to know the VMA set is still the one it started with.
    changes: u64,
}

impl VmaTree {
    pub(crate) fn new() -> VmaTree {
        VmaTree {
            map: BTreeMap::new(),
            last: AtomicPtr::new(ptr::null_mut()),
            changes: 0,
        }
    }

    /// The map for changes: invalidates the cache, since a change may move or drop the cached
    /// `Vma` (B-tree nodes split, merge and shift their values on insert and remove).
    pub(crate) fn map_mut(&mut self) -> &mut BTreeMap<u64, Vma> {
        *self.last.get_mut() = ptr::null_mut();
        self.changes = self.changes.wrapping_add(1);
        &mut self.map
    }

    /// How many times the map was handed out for changes (see `changes`).
    pub(crate) fn changes(&self) -> u64 {
        self.changes
    }

    pub(crate) fn into_map(self) -> BTreeMap<u64, Vma> {
        self.map
    }

    /// The VMA containing `va` (Linux `vma_lookup`): the cached one if it contains `va`, else
    /// an O(log n) search whose result becomes the cached one. The hit is inlined into the
    /// callers (the fault path); the search is not, so that its B-tree code does not keep this
    /// function out of line (an out-of-line `find` cost every fault a call with its prologue).
    #[inline(always)]
    pub(crate) fn find(&self, va: VirtAddr) -> Option<&Vma> {
        let last = self.last.load(Ordering::Relaxed);
        if !last.is_null() {
            // SAFETY: a non-null `last` was stored below from a `&Vma` into `self.map` while
            // `self` was shared; `self.map` has not been mutated since, because every mutable
            // access (`map_mut`, `into_map`, drop) goes through `&mut self` / `self`, and
            // `map_mut` nulls `last`. So the `Vma` is still at that address, alive, and only
            // shared-borrowed, for at least as long as this `&self`.
            let vma = unsafe { &*last };
            if vma.contains(va) {
                return Some(vma);
            }
        }
        self.find_slow(va)
    }

    /// [`Self::find`] on a cache miss: the tree search, which refills the cache.
    #[inline(never)]
    fn find_slow(&self, va: VirtAddr) -> Option<&Vma> {
        let (_, vma) = self.map.range(..=va.as_u64()).next_back()?;
        if !vma.contains(va) {
            return None;
        }
        self.last
            .store(ptr::from_ref(vma).cast_mut(), Ordering::Relaxed);
        Some(vma)
    }
}

impl Deref for VmaTree {
    type Target = BTreeMap<u64, Vma>;

    fn deref(&self) -> &BTreeMap<u64, Vma> {
        &self.map
    }
}
