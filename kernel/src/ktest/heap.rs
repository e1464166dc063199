//! Tests of the kernel heap (slab caches in front of a linked list over the carved region).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::alloc::Layout;

use super::{ensure, TestResult};
use crate::errno::Errno;
use crate::heap;

/// Vec growth, boxes and a BTreeMap allocate, hold their contents, and give every byte back.
pub fn heap_alloc_and_free() -> TestResult {
    let used_before = heap::used();
    {
        let mut numbers = Vec::new();
        for i in 0..100_000u64 {
            numbers.push(i);
        }
        ensure!(
            numbers.iter().sum::<u64>() == 99_999 * 100_000 / 2,
            "Vec lost elements"
        );

        let boxes: Vec<Box<[u8; 1000]>> = (0..100).map(|i| Box::new([i as u8; 1000])).collect();
        ensure!(
            boxes
                .iter()
                .enumerate()
                .all(|(i, b)| b.iter().all(|&x| x == i as u8)),
            "boxed arrays overlap"
        );

        let mut map = BTreeMap::new();
        for i in 0..5_000u32 {
            map.insert(i.wrapping_mul(2_654_435_761), i);
        }
        ensure!(map.len() == 5_000, "BTreeMap lost keys");
        for i in (0..5_000u32).step_by(2) {
            map.remove(&i.wrapping_mul(2_654_435_761));
        }
        ensure!(map.len() == 2_500, "BTreeMap removal went wrong");
        ensure!(
            heap::used() > used_before,
            "allocations did not use the heap"
        );
    }
    let used_after = heap::used();
    ensure!(
        used_after == used_before,
        "heap usage {used_before} bytes before, {used_after} after freeing everything"
    );
    Ok(())
}

/// Allocates blocks of `size` bytes until the heap refuses, chaining them through their first
/// word onto `chain`; returns how many it got.
pub(super) fn fill_with(size: usize, chain: &mut *mut u8) -> usize {
    let layout = Layout::from_size_align(size, 8).expect("valid layout");
    let mut count = 0;
    loop {
        // SAFETY: non-zero size.
        let block = unsafe { alloc::alloc::alloc(layout) };
        if block.is_null() {
            return count;
        }
        // SAFETY: a fresh block of at least 16 bytes, 8-aligned: room for the link and size.
        unsafe {
            block.cast::<*mut u8>().write(*chain);
            block.cast::<usize>().add(1).write(size);
        }
        *chain = block;
        count += 1;
    }
}

/// Frees one block [`fill_with`] chained; returns the next on its chain.
pub(super) fn free_block(block: *mut u8) -> *mut u8 {
    // SAFETY: `block` came from `fill_with`, which wrote the next link and the block's size in
    // its first two words; it is freed once, with that layout.
    unsafe {
        let next = block.cast::<*mut u8>().read();
        let size = block.cast::<usize>().add(1).read();
        alloc::alloc::dealloc(block, Layout::from_size_align(size, 8).expect("valid"));
        next
    }
}

/// Frees every block [`fill_with`] chained.
pub(super) fn free_chain(mut chain: *mut u8) {
    while !chain.is_null() {
        chain = free_block(chain);
    }
}

/// Filling the whole heap (1 MiB blocks, then ever smaller ones down to 16 bytes, slabs
/// included) ends in refused allocations, not a panic: the fallible helpers answer ENOMEM, the
/// raw allocator null; after freeing, usage is back to its value and a 1 MiB block fits again.
pub fn heap_exhaustion_fails_without_panic() -> TestResult {
    heap::shrink();
    let used_before = heap::used();
    let failures_before = heap::stats().failures;
    let mut chain = core::ptr::null_mut();
    let mut size = 1 << 20;
    let mut blocks = 0;
    while size >= 16 {
        blocks += fill_with(size, &mut chain);
        size /= 2;
    }
    let full = heap::stats();
    let boxed = heap::try_box([0u8; 64]);
    let mut vec: Vec<u64> = Vec::new();
    let reserved = heap::try_reserve(&mut vec, 1000);
    let string = heap::try_string("a name");
    free_chain(chain);
    heap::shrink();
    ensure!(blocks > 0, "nothing was allocated");
    ensure!(
        full.free_bytes < 4096,
        "heap not full after filling: {} bytes free",
        full.free_bytes
    );
    ensure!(
        full.failures - failures_before >= 17,
        "every size ended in a refusal, counted: {} counted",
        full.failures - failures_before
    );
    ensure!(
        boxed.is_err() && reserved == Err(Errno::ENOMEM) && string == Err(Errno::ENOMEM),
        "fallible helpers on a full heap: box {:?} reserve {reserved:?} string {string:?}",
        boxed.map(|_| ())
    );
    let used_after = heap::used();
    ensure!(
        used_after == used_before,
        "heap usage {used_before} bytes before, {used_after} after freeing everything"
    );
    let mut big: Vec<u8> = Vec::new();
    let grown = heap::try_reserve(&mut big, 1 << 20);
    ensure!(
        grown.is_ok(),
        "a 1 MiB block does not fit after freeing everything: {grown:?}"
    );
    Ok(())
}

/// User-driven allocations stop at the reserve: taking 64 KiB blocks through `try_reserve` until
/// ENOMEM leaves at least the reserve free, and kernel-internal (infallible) allocations still
/// succeed from it.
pub fn heap_reserve_outlives_user_allocations() -> TestResult {
    heap::shrink();
    let used_before = heap::used();
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(16384);
    let stopped = loop {
        if held.len() == held.capacity() {
            break None;
        }
        let mut block = Vec::new();
        match heap::try_reserve(&mut block, 65536) {
            Ok(()) => held.push(block),
            Err(e) => break Some(e),
        }
    };
    let free = heap::stats().free_bytes;
    let internal: Vec<Box<u64>> = (0..1000).map(Box::new).collect();
    let internal_ok = internal.iter().enumerate().all(|(i, b)| **b == i as u64);
    drop(internal);
    let count = held.len();
    drop(held);
    ensure!(
        stopped == Some(Errno::ENOMEM),
        "try_reserve of 64 KiB stopped with {stopped:?} after {count}"
    );
    ensure!(
        free >= heap::reserve(),
        "user allocations left {free} bytes, below the reserve of {}",
        heap::reserve()
    );
    ensure!(internal_ok, "kernel allocations from the reserve lost data");
    heap::shrink();
    ensure!(
        heap::used() == used_before,
        "heap usage {used_before} before, {} after",
        heap::used()
    );
    Ok(())
}
