//! cowlab's memory-management core.
//!
//! The picture: physical memory is an array of 4 KiB frames, each described by a 16-byte
//! [`frame::FrameMeta`]; user address spaces are x86_64 4-level page tables plus a sorted set of
//! VMAs; and the copy-on-write rules of SEMANTICS.md decide, per fault and per fork, whether a
//! page may be written in place or must be copied. Mechanism (raw physical memory, page-table
//! entries, TLB flushes) sits behind the small [`arch::Arch`] trait and the `phys` module;
//! everything else is safe policy code (`#![deny(unsafe_code)]`) that runs unchanged on the host
//! under `cargo test` (over `host::HostArch`, an emulated MMU) and in the kernel.
//!
//! Where each rule lives: `rules` (every era-dependent decision), `fault` and `wp` (faults and
//! `do_wp_page`), `fork` (`copy_present_pte`), `mprotect` (write permission without a fault),
//! `softdirty`, `gup` (get/pin_user_pages, slow and fast), `pin` (what GUP hands out), `shmem`
//! (memfd/tmpfs objects and their page cache), `pagecache` (disk files' page caches, file
//! mappings' faults, `page_mkwrite`, `folio_mkclean`), `msync`, `regbuf` (long-term registered DMA buffers),
//! `check` (the invariants of SEMANTICS.md section 1).
#![no_std]

extern crate alloc;
#[cfg(any(test, feature = "host"))]
extern crate std;

pub mod addr;
pub mod arch;
pub mod aspace;
mod brk;
pub mod check;
pub mod cowstat;
pub mod era;
pub mod error;
mod exit;
pub mod fault;
pub mod fault_unlocked;
pub mod faultaround;
pub mod faultstat;
pub mod folio;
mod folio_split;
pub mod foll;
mod fork;
pub mod frame;
mod freebatch;
pub mod gup;
pub mod huge_memory;
mod huge_zero;
pub mod hugetlb;
mod hugetlb_mremap;
mod khugepaged;
pub mod layout;
pub mod madvise;
pub mod mincore;
pub mod mlock;
mod mm;
pub mod mmap;
pub mod mmshared;
mod mprotect;
mod mremap;
pub mod msync;
pub mod mthp;
mod munmap;
pub mod oom;
pub mod opstat;
pub mod pagecache;
pub mod pagemap;
pub mod pagetable;
mod phys;
pub mod pin;
pub mod regbuf;
mod rss;
pub mod rules;
pub mod shmem;
pub mod smaps;
mod softdirty;
pub mod stack;
pub mod stats;
pub mod tlb;
pub mod trace;
pub mod uaccess;
pub mod vma;
mod vmacache;
mod wp;

#[cfg(any(test, feature = "host"))]
pub mod host;

#[cfg(test)]
mod tests;

pub use addr::{PhysAddr, VirtAddr};
pub use arch::{Arch, IrqState};
pub use aspace::AddressSpace;
pub use era::Era;
pub use error::{FaultError, MmError, SegvReason};
pub use fault::{handle_mm_fault, handle_x86_page_fault, handle_x86_page_fault_retry, FaultKind};
pub use madvise::Advice;
pub use mm::{Mm, MAX_MAP_COUNT, MAX_VMAS};
pub use mmap::MapFlags;
pub use mmshared::MmShared;
pub use mremap::MremapFlags;
pub use munmap::MunmapCursor;
pub use uaccess::{copy_from_user, copy_to_user};
pub use vma::Prot;

/// Size of a base page and of a physical frame.
pub const PAGE_SIZE: usize = 4096;
