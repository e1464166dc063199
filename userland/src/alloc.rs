//! The user programs' allocator. Small blocks come in power-of-two size classes carved from
//! 256 KiB arenas obtained with `mmap`; a freed small block goes on its class's free list and is
//! handed out again, so a long-running program (the fuzz parent runs for hundreds of thousands
//! of calls) keeps a bounded heap. Blocks of 64 KiB or more, or aligned beyond a page, get their
//! own mapping, returned with `munmap`. Programs are single-threaded (threads made with `clone`
//! by the test programs do not allocate), so plain cells suffice.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

use crate::calls::{mmap, munmap, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};

const ARENA: usize = 256 * 1024;
const BIG: usize = 64 * 1024;
/// The smallest class holds the free list's link.
const MIN_CLASS_SHIFT: u32 = 4;
/// Classes 16 B .. 64 KiB (a size just under `BIG` rounds up to 64 KiB).
const CLASSES: usize = (BIG.trailing_zeros() - MIN_CLASS_SHIFT + 1) as usize;

pub struct Allocator {
    next: Cell<usize>,
    end: Cell<usize>,
    /// Head of each class's free list; a free block's first word links to the next.
    free: [Cell<usize>; CLASSES],
}

// SAFETY: user programs are single-threaded.
unsafe impl Sync for Allocator {}

fn map(len: usize) -> *mut u8 {
    match mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
        Ok(addr) => addr as *mut u8,
        Err(_) => core::ptr::null_mut(),
    }
}

/// A mapping of `len` bytes (a multiple of the page) aligned to `align`: `mmap` aligns to a
/// page only, so a larger alignment maps `align` more and unmaps the slack on either side
/// (what `dealloc` unmaps is then exactly the block).
fn map_aligned(len: usize, align: usize) -> *mut u8 {
    if align <= 4096 {
        return map(len);
    }
    let raw = map(len + align);
    if raw.is_null() {
        return raw;
    }
    let start = (raw as usize).next_multiple_of(align);
    let end = start + len;
    if start > raw as usize {
        let _ = munmap(raw as usize, start - raw as usize);
    }
    if raw as usize + len + align > end {
        let _ = munmap(end, raw as usize + len + align - end);
    }
    start as *mut u8
}

fn is_big(layout: &Layout) -> bool {
    layout.size() >= BIG || layout.align() > 4096
}

/// The class of a small layout: a power of two at least the size and the alignment, so a block
/// carved at a multiple of `min(class, 4096)` is aligned for every layout of its class.
fn class_of(layout: &Layout) -> usize {
    let bytes = layout.size().max(layout.align()).max(1 << MIN_CLASS_SHIFT);
    (bytes.next_power_of_two().trailing_zeros() - MIN_CLASS_SHIFT) as usize
}

fn class_bytes(class: usize) -> usize {
    1 << (class as u32 + MIN_CLASS_SHIFT)
}

impl Allocator {
    fn carve(&self, bytes: usize) -> *mut u8 {
        let align = bytes.min(4096);
        let mut start = self.next.get().next_multiple_of(align);
        if self.next.get() == 0 || start + bytes > self.end.get() {
            let arena = map(ARENA);
            if arena.is_null() {
                return arena;
            }
            self.end.set(arena as usize + ARENA);
            start = arena as usize;
        }
        self.next.set(start + bytes);
        start as *mut u8
    }
}

// SAFETY: a block is handed out at most once until it is freed: carved blocks are disjoint, and a
// freed block leaves its class's list when it is handed out again. Blocks are aligned as asked
// (`class_of`). Big blocks are unmapped exactly once, on dealloc; `dealloc` gets the layout the
// block was allocated with (GlobalAlloc's contract), so it finds the same class.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_big(&layout) {
            return map_aligned(layout.size().next_multiple_of(4096), layout.align());
        }
        let class = class_of(&layout);
        let head = self.free[class].get();
        if head != 0 {
            // SAFETY: `head` is a freed block of this class, at least 16 bytes and aligned to
            // 16; its first word was written by `dealloc`.
            self.free[class].set(unsafe { *(head as *const usize) });
            return head as *mut u8;
        }
        self.carve(class_bytes(class))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_big(&layout) {
            let _ = munmap(ptr as usize, layout.size().next_multiple_of(4096));
            return;
        }
        let class = class_of(&layout);
        // SAFETY: the caller gives the block back, so its bytes are ours to reuse for the link.
        unsafe { *(ptr as *mut usize) = self.free[class].get() };
        self.free[class].set(ptr as usize);
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator {
    next: Cell::new(0),
    end: Cell::new(0),
    free: [const { Cell::new(0) }; CLASSES],
};
