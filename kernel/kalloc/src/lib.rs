//! cowlab's kernel heap: size-class slab caches in front of a first-fit linked-list heap.
//!
//! `linked_list_allocator` alone is first-fit over one address-ordered list of holes: every
//! allocation and every free walks it, so with many live objects (tens of thousands of memfds,
//! each a few small records) each `memfd_create` cost milliseconds. Here requests up to
//! [`classes::MAX_SLAB_OBJECT`] bytes are served by one [`slab::SlabCache`] per size class in
//! O(1) (per-slab free lists, the slab found by rounding the address down); the linked list only
//! hands out whole slabs and the large or rare blocks, so it stays short. Linux's SLUB is the
//! model (kmalloc caches by size, slabs from the page allocator); here the slabs come from the
//! same fixed heap region, so the kernel heap's footprint in frames never changes.
//!
//! The crate is `no_std` and free of kernel types so that `cargo test` checks it on the host
//! against a model (random sequences, alignment, reuse, exhaustion); the kernel wraps [`Kalloc`]
//! in its lock and `GlobalAlloc` (`kernel/src/memory.rs`).

#![cfg_attr(not(test), no_std)]

pub mod classes;
pub mod slab;

use core::alloc::Layout;
use core::ptr::NonNull;

use linked_list_allocator::Heap;

use classes::{class_of, slab_bytes, SIZES};
use slab::{PageSource, SlabCache};

const CLASSES: usize = SIZES.len();

/// The heap: the slab caches and the linked list they take their slabs from.
pub struct Kalloc {
    caches: [SlabCache; CLASSES],
    large: Heap,
    /// Bytes handed out and not freed: class sizes of slab objects, request sizes of large
    /// blocks (returns exactly to its old value when everything allocated since is freed).
    allocated: usize,
    /// Large blocks handed out and not freed.
    large_blocks: usize,
    /// Object bytes of the slabs held (used or free), kept so [`Kalloc::available`] is O(1).
    slab_room: usize,
    /// Object bytes handed out by the slab caches.
    slab_allocated: usize,
    /// Requests refused for want of memory.
    failures: u64,
}

// SAFETY: the raw pointers inside (slab headers, the linked list's holes) point into the heap
// region this value owns; nothing else reaches them, so moving it to another thread is sound.
unsafe impl Send for Kalloc {}

/// Counters of [`Kalloc::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Size of the heap region.
    pub heap_bytes: usize,
    /// Bytes handed out (see [`Kalloc`]'s `allocated`).
    pub allocated: usize,
    /// Bytes of the region held by slabs (used or not).
    pub slab_bytes: usize,
    /// Objects handed out by the slab caches.
    pub slab_objects: usize,
    /// Large blocks handed out.
    pub large_blocks: usize,
    /// Bytes the linked list has free (outside slabs).
    pub free_bytes: usize,
    /// Requests refused for want of memory since boot.
    pub failures: u64,
}

/// The linked list as the slab caches' page source.
struct Pages<'a>(&'a mut Heap);

impl PageSource for Pages<'_> {
    fn alloc_slab(&mut self, bytes: usize) -> Option<NonNull<u8>> {
        let layout = Layout::from_size_align(bytes, bytes).ok()?;
        self.0.allocate_first_fit(layout).ok()
    }

    unsafe fn free_slab(&mut self, block: NonNull<u8>, bytes: usize) {
        let layout = Layout::from_size_align(bytes, bytes).expect("slab sizes are powers of two");
        // SAFETY: the caller's contract: `block` came from `alloc_slab(bytes)`, i.e. from
        // `allocate_first_fit` with this very layout.
        unsafe { self.0.deallocate(block, layout) };
    }
}

const fn caches() -> [SlabCache; CLASSES] {
    const UNSET: SlabCache = SlabCache::new(16, 4096);
    let mut caches = [UNSET; CLASSES];
    let mut i = 0;
    while i < CLASSES {
        caches[i] = SlabCache::new(SIZES[i], slab_bytes(SIZES[i]));
        i += 1;
    }
    caches
}

impl Kalloc {
    /// A heap with no memory: every request fails until [`Kalloc::init`].
    pub const fn empty() -> Kalloc {
        Kalloc {
            caches: caches(),
            large: Heap::empty(),
            allocated: 0,
            large_blocks: 0,
            slab_room: 0,
            slab_allocated: 0,
            failures: 0,
        }
    }

    /// Gives the heap the region `[start, start + size)`.
    ///
    /// # Safety
    ///
    /// The region is valid, writable memory used by nothing else for as long as this heap
    /// lives, and `init` is called once.
    pub unsafe fn init(&mut self, start: *mut u8, size: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.large.init(start, size) };
    }

    /// A block for `layout`, or `None` if the heap cannot hold it.
    pub fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let block = match class_of(layout.size(), layout.align()) {
            Some(class) => {
                let cache = &mut self.caches[class];
                let slabs = cache.slabs();
                let block = cache.alloc(&mut Pages(&mut self.large));
                // At most one slab taken.
                self.slab_room += (cache.slabs() - slabs) * cache.capacity() * SIZES[class];
                if block.is_some() {
                    self.allocated += SIZES[class];
                    self.slab_allocated += SIZES[class];
                }
                block
            }
            None => {
                let block = self.large.allocate_first_fit(layout).ok();
                if block.is_some() {
                    self.allocated += layout.size();
                    self.large_blocks += 1;
                }
                block
            }
        };
        if block.is_none() {
            self.failures += 1;
        }
        block
    }

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `block` came from [`Kalloc::alloc`] on this heap with this `layout` and is not used
    /// any more.
    pub unsafe fn dealloc(&mut self, block: NonNull<u8>, layout: Layout) {
        match class_of(layout.size(), layout.align()) {
            Some(class) => {
                let cache = &mut self.caches[class];
                let slabs = cache.slabs();
                // SAFETY: the same layout chose the same class at allocation.
                unsafe { cache.free(block, &mut Pages(&mut self.large)) };
                // At most one slab returned.
                self.slab_room -= (slabs - cache.slabs()) * cache.capacity() * SIZES[class];
                self.allocated -= SIZES[class];
                self.slab_allocated -= SIZES[class];
            }
            None => {
                // SAFETY: the same layout went to the linked list at allocation.
                unsafe { self.large.deallocate(block, layout) };
                self.allocated -= layout.size();
                self.large_blocks -= 1;
            }
        }
    }

    /// Whether a block allocated for `layout` can serve `new_size` bytes as it is (`realloc`
    /// within one size class: no copy).
    pub fn fits_in_place(layout: Layout, new_size: usize) -> bool {
        let old = class_of(layout.size(), layout.align());
        old.is_some() && old == class_of(new_size, layout.align())
    }

    /// Returns the empty slabs every cache keeps to the linked list.
    pub fn shrink(&mut self) {
        for cache in &mut self.caches {
            let slabs = cache.slabs();
            cache.shrink(&mut Pages(&mut self.large));
            self.slab_room -= (slabs - cache.slabs()) * cache.capacity() * cache.object_size();
        }
    }

    /// Bytes the linked list has free (outside slabs).
    pub fn free_bytes(&self) -> usize {
        self.large.free()
    }

    /// Bytes free for new requests: the linked list's and the free objects' inside slabs (each
    /// usable only by its own size class, so this is what the heap could still give if the
    /// requests came in the sizes that were freed: a fair measure of room, not a promise).
    /// O(1): the system-call gate asks on every creating call.
    pub fn available(&self) -> usize {
        self.large.free() + (self.slab_room - self.slab_allocated)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            heap_bytes: self.large.size(),
            allocated: self.allocated,
            slab_bytes: self.caches.iter().map(|c| c.slabs() * c.slab_bytes()).sum(),
            slab_objects: self.caches.iter().map(SlabCache::objects).sum(),
            large_blocks: self.large_blocks,
            free_bytes: self.large.free(),
            failures: self.failures,
        }
    }

    /// The slab caches, smallest first (for `/proc`-style reports).
    pub fn caches(&self) -> &[SlabCache] {
        &self.caches
    }
}

#[cfg(test)]
mod tests;
