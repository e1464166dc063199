//! The kernel heap: `cowlab_kalloc` (size-class slabs in front of a linked list) as the global
//! allocator, and the fallible helpers user-driven allocations go through.
//!
//! Two kinds of allocation share the heap. Kernel-internal ones (a task's records at exit, a
//! wake-up queued from an interrupt, the bookkeeping of a page fault) use the ordinary
//! infallible `Box`/`Vec`/`BTreeMap`: a failure there still ends in `handle_alloc_error`. The
//! ones a user program can multiply (one record per memfd, pipe, ring, VMA, name...) go through
//! [`try_box`], [`try_arc`], [`try_reserve`], [`try_string`] or a [`headroom`] check first, and
//! those fail with `ENOMEM` once the heap's free space falls to [`reserve`]: the last part of
//! the heap is kept for the kernel-internal allocations, so the process that exhausted the heap
//! gets an errno and everything else (closing, exiting, reaping, faulting) still has room to run.
//! This is Linux's watermark idea (`__GFP_NOMEMALLOC` allocations stop at the `min` watermark,
//! the rest of the kernel may dip below it) applied to one fixed region.
//!
//! The lock is taken with interrupts disabled: an interrupt handler that allocated while the
//! interrupted code held it would otherwise spin forever on the one CPU.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_kalloc::{Kalloc, Stats};
use spin::Mutex;
use x86_64::instructions::interrupts;

use crate::errno::Errno;

struct KernelHeap(Mutex<Kalloc>);

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(Kalloc::empty()));

/// Bytes of the heap kept for kernel-internal allocations (see the module comment).
static RESERVE: AtomicUsize = AtomicUsize::new(0);

fn with_heap<R>(f: impl FnOnce(&mut Kalloc) -> R) -> R {
    interrupts::without_interrupts(|| f(&mut HEAP.0.lock()))
}

// SAFETY: every block comes from `Kalloc::alloc` under the lock and goes back to it with the
// layout it was allocated with (the `GlobalAlloc` contract binds the callers); `realloc` keeps a
// block only when `Kalloc` says its size class already covers the new size.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        with_heap(|h| h.alloc(layout)).map_or(ptr::null_mut(), NonNull::as_ptr)
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if let Some(block) = NonNull::new(block) {
            // SAFETY: the caller's contract (allocated here with `layout`).
            with_heap(|h| unsafe { h.dealloc(block, layout) });
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Kalloc::fits_in_place(layout, new_size) {
            return block;
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: non-zero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least the smaller size long.
            unsafe {
                ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        new
    }
}

/// Gives the heap its region and sets the reserve to a 32nd of it (at least 1 MiB).
///
/// # Safety
///
/// `[start, start + size)` is writable memory used by nothing else, for the kernel's life;
/// called once.
pub unsafe fn init(start: *mut u8, size: usize) {
    // SAFETY: the caller's contract.
    with_heap(|h| unsafe { h.init(start, size) });
    RESERVE.store((size / 32).max(1 << 20).min(size / 4), Ordering::Relaxed);
}

/// The heap's counters.
pub fn stats() -> Stats {
    with_heap(|h| h.stats())
}

/// Bytes handed out and not freed.
pub fn used() -> usize {
    stats().allocated
}

/// Bytes kept for kernel-internal allocations.
pub fn reserve() -> usize {
    RESERVE.load(Ordering::Relaxed)
}

/// `ENOMEM` unless `bytes` more can be allocated for a user-driven object and leave the
/// reserve intact. For allocations made through containers that have no fallible API
/// (`BTreeMap` inserts): check first, then allocate.
pub fn headroom(bytes: usize) -> Result<(), Errno> {
    let free = with_heap(|h| h.available());
    if free >= bytes.saturating_add(reserve()) {
        Ok(())
    } else {
        Err(Errno::ENOMEM)
    }
}

/// `Box::new` for a user-driven object: `ENOMEM` instead of a panic.
pub fn try_box<T>(value: T) -> Result<Box<T>, Errno> {
    headroom(size_of::<T>())?;
    Box::try_new(value).map_err(|_| Errno::ENOMEM)
}

/// `Vec::reserve` for user-driven growth: `ENOMEM` instead of a panic.
pub fn try_reserve<T>(vec: &mut Vec<T>, additional: usize) -> Result<(), Errno> {
    if vec.capacity() - vec.len() >= additional {
        return Ok(());
    }
    // Growth may double the capacity: check for what the new block can take.
    let wanted = (vec.len().saturating_add(additional)).max(vec.capacity().saturating_mul(2));
    headroom(wanted.saturating_mul(size_of::<T>()))?;
    vec.try_reserve(additional).map_err(|_| Errno::ENOMEM)
}

/// `String::from` for a user-supplied name: `ENOMEM` instead of a panic.
pub fn try_string(s: &str) -> Result<String, Errno> {
    let mut out = String::new();
    headroom(s.len())?;
    out.try_reserve_exact(s.len()).map_err(|_| Errno::ENOMEM)?;
    out.push_str(s);
    Ok(out)
}

/// Returns the empty slabs the caches keep to the linked list (so its free space is whole).
pub fn shrink() {
    with_heap(Kalloc::shrink);
}
