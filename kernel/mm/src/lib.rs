//! cowlab's memory-management core.
//!
//! The picture: physical memory is an array of 4 KiB frames, each described by a 16-byte
//! [`frame::FrameMeta`]; user address spaces are x86_64 4-level page tables plus a sorted set of
//! VMAs; and the copy-on-write rules of SEMANTICS.md decide, per fault and per fork, whether a
//! page may be written in place or must be copied. Mechanism (raw physical memory, page-table
//! entries, TLB flushes) sits behind the small `Arch` trait; everything else is safe policy code
//! that runs unchanged on the host under `cargo test` and in the kernel.
#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod frame;

/// Size of a base page and of a physical frame.
pub const PAGE_SIZE: usize = 4096;
