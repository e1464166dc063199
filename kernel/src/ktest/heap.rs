//! Tests of the kernel heap (`linked_list_allocator` over the carved region).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::{ensure, TestResult};
use crate::memory;

/// Vec growth, boxes and a BTreeMap allocate, hold their contents, and give every byte back.
pub fn heap_alloc_and_free() -> TestResult {
    let used_before = memory::heap_used();
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
            memory::heap_used() > used_before,
            "allocations did not use the heap"
        );
    }
    let used_after = memory::heap_used();
    ensure!(
        used_after == used_before,
        "heap usage {used_before} bytes before, {used_after} after freeing everything"
    );
    Ok(())
}
