//! Host tests of the heap against a model: every live block keeps its own bytes, is aligned and
//! inside the region, and the counters return to zero when everything is freed.

use std::alloc::{alloc, dealloc};
use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::classes::MAX_SLAB_OBJECT;
use crate::slab::KEEP_EMPTY;

/// A heap over a host buffer, freed when dropped.
struct HostHeap {
    heap: Kalloc,
    region: *mut u8,
    size: usize,
}

impl HostHeap {
    fn new(size: usize) -> HostHeap {
        let layout = Layout::from_size_align(size, 16384).unwrap();
        // SAFETY: non-zero size.
        let region = unsafe { alloc(layout) };
        assert!(!region.is_null());
        let mut heap = Kalloc::empty();
        // SAFETY: the buffer is ours until drop, given once.
        unsafe { heap.init(region, size) };
        HostHeap { heap, region, size }
    }

    fn contains(&self, block: NonNull<u8>, len: usize) -> bool {
        let start = self.region as usize;
        let b = block.as_ptr() as usize;
        b >= start && b + len <= start + self.size
    }
}

impl Drop for HostHeap {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe {
            dealloc(
                self.region,
                Layout::from_size_align(self.size, 16384).unwrap(),
            )
        };
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A live block in the model: its layout and the byte it was filled with.
struct Live {
    layout: Layout,
    fill: u8,
}

fn fill(block: NonNull<u8>, len: usize, byte: u8) {
    // SAFETY: `block` is a live allocation of at least `len` bytes.
    unsafe { core::ptr::write_bytes(block.as_ptr(), byte, len) };
}

fn intact(block: NonNull<u8>, len: usize, byte: u8) -> bool {
    // SAFETY: as `fill`.
    unsafe { core::slice::from_raw_parts(block.as_ptr(), len) }
        .iter()
        .all(|&b| b == byte)
}

fn random_layout(rng: &mut Rng) -> Layout {
    let size = match rng.below(10) {
        0 => 1 + rng.below(64 * 1024) as usize,
        1 => MAX_SLAB_OBJECT - 8 + rng.below(16) as usize,
        _ => 1 + rng.below(600) as usize,
    };
    let max_shift = if rng.below(8) == 0 { 13 } else { 5 };
    let align = 1 << rng.below(max_shift);
    Layout::from_size_align(size, align).unwrap()
}

fn check_model(h: &HostHeap, live: &BTreeMap<usize, Live>) {
    let free_in_slabs: usize = h
        .heap
        .caches()
        .iter()
        .map(|c| c.free_objects() * c.object_size())
        .sum();
    assert_eq!(
        h.heap.available(),
        h.heap.free_bytes() + free_in_slabs,
        "the running count of free slab bytes"
    );
    let allocated: usize = live
        .values()
        .map(|l| match class_of(l.layout.size(), l.layout.align()) {
            Some(c) => SIZES[c],
            None => l.layout.size(),
        })
        .sum();
    let stats = h.heap.stats();
    assert_eq!(stats.allocated, allocated);
    assert_eq!(
        stats.slab_objects + stats.large_blocks,
        live.len(),
        "objects handed out"
    );
}

#[test]
fn random_sequences_match_the_model() {
    for seed in 1..=8u64 {
        let mut h = HostHeap::new(8 << 20);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut live: BTreeMap<usize, Live> = BTreeMap::new();
        for step in 0..20_000 {
            let free_one = !live.is_empty() && rng.below(100) < 45;
            if free_one {
                let nth = rng.below(live.len() as u64) as usize;
                let (&address, _) = live.iter().nth(nth).unwrap();
                let l = live.remove(&address).unwrap();
                let block = NonNull::new(address as *mut u8).unwrap();
                assert!(
                    intact(block, l.layout.size(), l.fill),
                    "seed {seed} step {step}: block {address:#x} {:?} was overwritten",
                    l.layout
                );
                // SAFETY: allocated below with this layout, freed once (removed from the model).
                unsafe { h.heap.dealloc(block, l.layout) };
            } else {
                let layout = random_layout(&mut rng);
                let Some(block) = h.heap.alloc(layout) else {
                    continue;
                };
                let address = block.as_ptr() as usize;
                assert!(
                    address.is_multiple_of(layout.align()),
                    "{layout:?} at {address:#x}"
                );
                assert!(h.contains(block, layout.size()), "outside the region");
                assert!(
                    live.range(..address + layout.size())
                        .next_back()
                        .is_none_or(|(&a, l)| a + l.layout.size() <= address),
                    "seed {seed} step {step}: {address:#x} overlaps a live block"
                );
                let byte = rng.next() as u8;
                fill(block, layout.size(), byte);
                live.insert(address, Live { layout, fill: byte });
            }
            if step % 1000 == 0 {
                check_model(&h, &live);
            }
        }
        for (address, l) in core::mem::take(&mut live) {
            let block = NonNull::new(address as *mut u8).unwrap();
            assert!(intact(block, l.layout.size(), l.fill));
            // SAFETY: live block with its layout.
            unsafe { h.heap.dealloc(block, l.layout) };
        }
        let stats = h.heap.stats();
        assert_eq!(
            (stats.allocated, stats.slab_objects, stats.large_blocks),
            (0, 0, 0)
        );
        assert!(stats.slab_bytes <= CLASSES * KEEP_EMPTY * 16384);
        h.heap.shrink();
        let stats = h.heap.stats();
        assert_eq!(stats.slab_bytes, 0, "shrink returns every empty slab");
        assert_eq!(stats.free_bytes, stats.heap_bytes, "every byte is back");
    }
}

#[test]
fn freed_object_is_reused_first() {
    let mut h = HostHeap::new(1 << 20);
    let layout = Layout::from_size_align(40, 8).unwrap();
    let a = h.heap.alloc(layout).unwrap();
    let b = h.heap.alloc(layout).unwrap();
    assert_eq!(
        b.as_ptr() as usize - a.as_ptr() as usize,
        48,
        "neighbours in one slab"
    );
    // SAFETY: live, this layout.
    unsafe { h.heap.dealloc(a, layout) };
    assert_eq!(
        h.heap.alloc(layout),
        Some(a),
        "LIFO reuse of the freed object"
    );
}

#[test]
fn every_class_honours_alignment_and_size() {
    let mut h = HostHeap::new(4 << 20);
    for &size in &SIZES {
        for align in [1, 8, 16, 64, 512, 2048] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let blocks: Vec<_> = (0..20).map(|_| h.heap.alloc(layout).unwrap()).collect();
            for (i, &b) in blocks.iter().enumerate() {
                assert!((b.as_ptr() as usize).is_multiple_of(align));
                fill(b, size, i as u8);
            }
            for (i, &b) in blocks.iter().enumerate() {
                assert!(intact(b, size, i as u8), "class {size} align {align}");
                // SAFETY: live, this layout.
                unsafe { h.heap.dealloc(b, layout) };
            }
        }
    }
    assert_eq!(h.heap.stats().allocated, 0);
}

#[test]
fn large_blocks_use_the_linked_list() {
    let mut h = HostHeap::new(4 << 20);
    let layout = Layout::from_size_align(100_000, 4096).unwrap();
    let before = h.heap.stats().free_bytes;
    let b = h.heap.alloc(layout).unwrap();
    assert!((b.as_ptr() as usize).is_multiple_of(4096));
    let stats = h.heap.stats();
    assert_eq!((stats.large_blocks, stats.slab_bytes), (1, 0));
    assert!(before - stats.free_bytes >= 100_000);
    // SAFETY: live, this layout.
    unsafe { h.heap.dealloc(b, layout) };
    assert_eq!(h.heap.stats().free_bytes, before);
}

/// Filling the heap with small objects ends in `None`, not a crash; after freeing them the
/// whole heap is again available (the empty slabs went back).
#[test]
fn exhaustion_fails_cleanly_and_recovers() {
    let mut h = HostHeap::new(1 << 20);
    let layout = Layout::from_size_align(64, 8).unwrap();
    let mut blocks = Vec::new();
    while let Some(b) = h.heap.alloc(layout) {
        blocks.push(b);
    }
    assert!(
        blocks.len() > (1 << 20) / 64 * 9 / 10,
        "{} objects",
        blocks.len()
    );
    assert_eq!(h.heap.stats().failures, 1);
    let available = h.heap.available();
    assert!(
        available < 4096,
        "full heap reports {available} bytes available"
    );
    for b in blocks.drain(..100) {
        // SAFETY: live, this layout.
        unsafe { h.heap.dealloc(b, layout) };
    }
    assert!(
        h.heap.available() >= available + 100 * 64,
        "objects freed into slabs count as available"
    );
    assert!(h
        .heap
        .alloc(Layout::from_size_align(5000, 8).unwrap())
        .is_none());
    for b in blocks.drain(..) {
        // SAFETY: live, this layout.
        unsafe { h.heap.dealloc(b, layout) };
    }
    h.heap.shrink();
    let stats = h.heap.stats();
    assert_eq!(stats.free_bytes, stats.heap_bytes);
    let big = Layout::from_size_align(900 * 1024, 8).unwrap();
    let b = h
        .heap
        .alloc(big)
        .expect("the freed slabs merged back into one hole");
    // SAFETY: live, this layout.
    unsafe { h.heap.dealloc(b, big) };
}

/// With many live objects, small allocations and frees do not touch the linked list except to
/// take or return a whole slab: the O(1) property the kernel's memfd_create depends on.
#[test]
fn small_objects_do_not_walk_the_linked_list() {
    let mut h = HostHeap::new(16 << 20);
    let mut rng = Rng(7);
    let mut live = Vec::new();
    for _ in 0..100_000 {
        let layout = Layout::from_size_align(1 + rng.below(200) as usize, 8).unwrap();
        live.push((h.heap.alloc(layout).unwrap(), layout));
    }
    // Free every other one: many partly used slabs, and no hole in the linked list from them.
    let mut kept = Vec::new();
    for (i, (b, layout)) in live.into_iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: live, this layout.
            unsafe { h.heap.dealloc(b, layout) };
        } else {
            kept.push((b, layout));
        }
    }
    let slab_bytes = h.heap.stats().slab_bytes;
    let layout = Layout::from_size_align(100, 8).unwrap();
    for _ in 0..1000 {
        let b = h.heap.alloc(layout).unwrap();
        // SAFETY: live, this layout.
        unsafe { h.heap.dealloc(b, layout) };
    }
    assert_eq!(
        h.heap.stats().slab_bytes,
        slab_bytes,
        "no slab taken or returned"
    );
    for (b, layout) in kept {
        // SAFETY: live, this layout.
        unsafe { h.heap.dealloc(b, layout) };
    }
    assert_eq!(h.heap.stats().allocated, 0);
}
