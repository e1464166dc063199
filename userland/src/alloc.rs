//! A simple allocator for user programs: small blocks are carved from 256 KiB arenas obtained
//! with `mmap` and never reused; blocks of 64 KiB or more get their own mapping, returned with
//! `munmap`. Programs are short-lived and single-threaded, so this is all they need.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

use crate::calls::{mmap, munmap, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE};

const ARENA: usize = 256 * 1024;
const BIG: usize = 64 * 1024;

pub struct Allocator {
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: user programs are single-threaded.
unsafe impl Sync for Allocator {}

fn map(len: usize) -> *mut u8 {
    match mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
        Ok(addr) => addr as *mut u8,
        Err(_) => core::ptr::null_mut(),
    }
}

// SAFETY: returned blocks are fresh, disjoint and aligned as asked; big blocks are unmapped
// exactly once, on dealloc.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if size >= BIG || layout.align() > 4096 {
            return map(size.next_multiple_of(4096));
        }
        let align = layout.align();
        let mut start = self.next.get().next_multiple_of(align);
        if self.next.get() == 0 || start + size > self.end.get() {
            let arena = map(ARENA);
            if arena.is_null() {
                return arena;
            }
            self.next.set(arena as usize);
            self.end.set(arena as usize + ARENA);
            start = (arena as usize).next_multiple_of(align);
        }
        self.next.set(start + size);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = layout.size().max(1);
        if size >= BIG || layout.align() > 4096 {
            let _ = munmap(ptr as usize, size.next_multiple_of(4096));
        }
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator {
    next: Cell::new(0),
    end: Cell::new(0),
};
