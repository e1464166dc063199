//! One slab cache: objects of one size carved from slabs (whole, size-aligned runs of pages).
//!
//! A slab is `slab_bytes` long and aligned to its own size, so the slab an object belongs to is
//! its address rounded down: no lookup, O(1) free. The slab's header ([`Slab`]) sits at its end
//! and objects start at its first byte, so an object's alignment is that of its offset: the
//! largest power of two dividing the object size (what [`crate::classes`] relies on). Each slab
//! keeps its own free list, threaded through the free objects themselves, plus a bump index for
//! objects never handed out (a new slab costs O(1), not O(objects)).
//!
//! The cache keeps the slabs that have a free object on a doubly linked *partial* list: a slab
//! that fills up leaves it, a full slab that gets an object back rejoins it at the head, so
//! allocation always takes the head in O(1). A slab whose last object is freed goes to the tail
//! (partly used slabs are preferred, so empty ones can go back) and is returned to the page
//! source unless it is the only empty one the cache keeps ([`KEEP_EMPTY`]): that one spare slab
//! stops an alloc/free pair at a slab boundary from taking and returning a page every time
//! (Linux's SLUB keeps `min_partial` slabs for the same reason).

use core::ptr::{self, NonNull};

/// Empty slabs a cache keeps instead of returning them.
pub const KEEP_EMPTY: usize = 1;

/// Where slabs come from: `bytes`-long blocks aligned to `bytes`.
pub trait PageSource {
    /// A block of `bytes` (a multiple of 4096) aligned to `bytes`, or `None`.
    fn alloc_slab(&mut self, bytes: usize) -> Option<NonNull<u8>>;
    /// Returns a block from [`PageSource::alloc_slab`].
    ///
    /// # Safety
    ///
    /// `block` came from `alloc_slab(bytes)` on this source and is no longer used.
    unsafe fn free_slab(&mut self, block: NonNull<u8>, bytes: usize);
}

/// A free object: the link of its slab's free list, stored in the object.
struct FreeObject {
    next: *mut FreeObject,
}

/// The header at the end of every slab.
struct Slab {
    /// Objects given back, most recent first.
    free: *mut FreeObject,
    /// Objects `bump..capacity` were never handed out.
    bump: u32,
    in_use: u32,
    /// Links of the cache's partial list (null when the slab is full).
    prev: *mut Slab,
    next: *mut Slab,
}

const HEADER: usize = core::mem::size_of::<Slab>();

/// A cache of objects of one size.
pub struct SlabCache {
    object_size: usize,
    slab_bytes: usize,
    capacity: u32,
    /// Slabs with at least one free object; partly used ones first, empty ones last.
    head: *mut Slab,
    tail: *mut Slab,
    /// Empty slabs (all on the partial list, at its tail).
    empty: usize,
    slabs: usize,
    objects: usize,
}

impl SlabCache {
    /// A cache of `object_size`-byte objects in slabs of `slab_bytes` (a power of two, a multiple
    /// of 4096, room for at least one object after the header).
    pub const fn new(object_size: usize, slab_bytes: usize) -> SlabCache {
        assert!(object_size >= core::mem::size_of::<FreeObject>());
        assert!(slab_bytes.is_power_of_two() && slab_bytes >= 4096);
        let capacity = (slab_bytes - HEADER) / object_size;
        assert!(capacity >= 1 && capacity <= u32::MAX as usize);
        SlabCache {
            object_size,
            slab_bytes,
            capacity: capacity as u32,
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            empty: 0,
            slabs: 0,
            objects: 0,
        }
    }

    pub fn object_size(&self) -> usize {
        self.object_size
    }

    pub fn slab_bytes(&self) -> usize {
        self.slab_bytes
    }

    /// Objects per slab.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Slabs the cache holds (bytes: `slabs() * slab_bytes()`).
    pub fn slabs(&self) -> usize {
        self.slabs
    }

    /// Objects handed out and not freed.
    pub fn objects(&self) -> usize {
        self.objects
    }

    /// Free objects in the slabs the cache holds.
    pub fn free_objects(&self) -> usize {
        self.slabs * self.capacity() - self.objects
    }

    fn header_of(&self, slab_base: *mut u8) -> *mut Slab {
        slab_base.wrapping_add(self.slab_bytes - HEADER).cast()
    }

    /// One object, from the head of the partial list or from a new slab. O(1).
    pub fn alloc(&mut self, pages: &mut impl PageSource) -> Option<NonNull<u8>> {
        if self.head.is_null() {
            self.grow(pages)?;
        }
        let slab = self.head;
        // SAFETY: `slab` is the header of a live slab of this cache (the partial list holds only
        // those), written by `grow` and only through `&mut self` since.
        let object = unsafe {
            let s = &mut *slab;
            if s.in_use == 0 {
                self.empty -= 1;
            }
            let object = if s.free.is_null() {
                let base = slab.cast::<u8>().wrapping_sub(self.slab_bytes - HEADER);
                let object = base.wrapping_add(s.bump as usize * self.object_size);
                s.bump += 1;
                object
            } else {
                let object = s.free;
                s.free = (*object).next;
                object.cast()
            };
            s.in_use += 1;
            if s.in_use == self.capacity {
                self.unlink(slab);
            }
            object
        };
        self.objects += 1;
        NonNull::new(object)
    }

    /// Gives `object` back to its slab. O(1).
    ///
    /// # Safety
    ///
    /// `object` came from [`SlabCache::alloc`] on this cache and is not used any more.
    pub unsafe fn free(&mut self, object: NonNull<u8>, pages: &mut impl PageSource) {
        let address = object.as_ptr() as usize;
        let base = (address & !(self.slab_bytes - 1)) as *mut u8;
        debug_assert!(
            (address - base as usize).is_multiple_of(self.object_size)
                && (address - base as usize) / self.object_size < self.capacity(),
            "freeing {address:#x}, not an object of this {}-byte cache",
            self.object_size
        );
        let slab = self.header_of(base);
        // SAFETY: the caller's contract: `object` is ours, so `base` is the slab holding it
        // (slabs are aligned to their size) and `slab` its live header; the object is free to
        // hold the free-list link.
        unsafe {
            let was_full = (*slab).in_use == self.capacity;
            let link = object.as_ptr().cast::<FreeObject>();
            (*link).next = (*slab).free;
            (*slab).free = link;
            (*slab).in_use -= 1;
            self.objects -= 1;
            if was_full {
                self.push_front(slab);
            }
            if (*slab).in_use == 0 {
                if self.empty >= KEEP_EMPTY {
                    self.unlink(slab);
                    self.slabs -= 1;
                    // SAFETY: no object of the slab is in use; it came from `alloc_slab`.
                    pages.free_slab(NonNull::new_unchecked(base), self.slab_bytes);
                } else {
                    self.empty += 1;
                    self.unlink(slab);
                    self.push_back(slab);
                }
            }
        }
    }

    /// Returns every empty slab to `pages` (e.g. before measuring the heap's free space).
    pub fn shrink(&mut self, pages: &mut impl PageSource) {
        while self.empty > 0 {
            let slab = self.tail;
            // SAFETY: empty slabs sit at the tail of the partial list; `slab` is a live header.
            unsafe {
                debug_assert!((*slab).in_use == 0);
                self.unlink(slab);
                let base = slab.cast::<u8>().wrapping_sub(self.slab_bytes - HEADER);
                pages.free_slab(NonNull::new_unchecked(base), self.slab_bytes);
            }
            self.empty -= 1;
            self.slabs -= 1;
        }
    }

    /// Takes a new slab from `pages` and puts it at the head of the partial list.
    fn grow(&mut self, pages: &mut impl PageSource) -> Option<()> {
        let base = pages.alloc_slab(self.slab_bytes)?;
        debug_assert!((base.as_ptr() as usize).is_multiple_of(self.slab_bytes));
        let slab = self.header_of(base.as_ptr());
        // SAFETY: the block is ours, `slab_bytes` long and aligned (the source's contract), so
        // the header fits at its end, 8-aligned (HEADER is a multiple of 8).
        unsafe {
            slab.write(Slab {
                free: ptr::null_mut(),
                bump: 0,
                in_use: 0,
                prev: ptr::null_mut(),
                next: ptr::null_mut(),
            });
            self.push_front(slab);
        }
        self.slabs += 1;
        self.empty += 1;
        Some(())
    }

    /// # Safety
    ///
    /// `slab` is a live header of this cache not on the partial list.
    unsafe fn push_front(&mut self, slab: *mut Slab) {
        // SAFETY: the caller's contract; `head`, if any, is a live header.
        unsafe {
            (*slab).prev = ptr::null_mut();
            (*slab).next = self.head;
            match self.head.as_mut() {
                Some(head) => head.prev = slab,
                None => self.tail = slab,
            }
        }
        self.head = slab;
    }

    /// # Safety
    ///
    /// `slab` is a live header of this cache not on the partial list.
    unsafe fn push_back(&mut self, slab: *mut Slab) {
        // SAFETY: the caller's contract; `tail`, if any, is a live header.
        unsafe {
            (*slab).next = ptr::null_mut();
            (*slab).prev = self.tail;
            match self.tail.as_mut() {
                Some(tail) => tail.next = slab,
                None => self.head = slab,
            }
        }
        self.tail = slab;
    }

    /// # Safety
    ///
    /// `slab` is a live header of this cache on the partial list.
    unsafe fn unlink(&mut self, slab: *mut Slab) {
        // SAFETY: the caller's contract; its neighbours are live headers on the list.
        unsafe {
            let (prev, next) = ((*slab).prev, (*slab).next);
            match prev.as_mut() {
                Some(p) => p.next = next,
                None => self.head = next,
            }
            match next.as_mut() {
                Some(n) => n.prev = prev,
                None => self.tail = prev,
            }
            (*slab).prev = ptr::null_mut();
            (*slab).next = ptr::null_mut();
        }
    }
}
