//! Fault-around for read faults on file mappings (Linux `do_fault_around` ->
//! `filemap_map_pages`): after a read fault maps its page, the neighbouring pages the page
//! cache already holds are mapped too, read-only, so a sequential reader of a cached file takes
//! one fault per window instead of one per page.
//!
//! The window is [`fault_around_bytes`] (default 64 KiB, 16 pages, as Linux), aligned down to
//! its size, cut to the VMA, to the page-table page of the faulting address (one PT: no table is
//! allocated for a neighbour) and to the file's size. Only empty PTEs are filled, only with
//! pages already cached and `UPTODATE` (nothing is read in, and a page still being filled is
//! skipped, as Linux skips pages not uptodate or locked), each with `vma.page_prot()` (read-only for a
//! private mapping and for a writable shared one, whose first store then takes write-notify's
//! `do_wp_page` path, as after a read fault), accessed. Each mapped page takes a reference and
//! a mapcount under the cache's lock, so truncation (which drops pages under it, then unmaps)
//! cannot race it. Counted in mmstat's `fault_around_pages`.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;
use crate::pagecache::MappedFile;
use crate::pagetable::Pte;
use crate::stats;
use crate::vma::Vma;
use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;
/// Bytes one page-table page translates.
const PT_SPAN: u64 = 512 * PAGE;

/// Linux's default `fault_around_bytes` (64 KiB: 16 pages).
pub const DEFAULT_FAULT_AROUND_BYTES: u64 = 64 * 1024;

static FAULT_AROUND_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_FAULT_AROUND_BYTES);

/// The fault-around window in bytes (a power of two pages; one page turns it off).
pub fn fault_around_bytes() -> u64 {
    FAULT_AROUND_BYTES.load(Ordering::Relaxed)
}

/// Sets the window (Linux's debugfs `fault_around_bytes` write): rounded down to a power of two
/// pages, at most one page table's span; 0 or one page turns fault-around off.
pub fn set_fault_around_bytes(bytes: u64) {
    let pages = (bytes / PAGE).clamp(1, PT_SPAN / PAGE);
    let pages = 1u64 << (63 - pages.leading_zeros());
    FAULT_AROUND_BYTES.store(pages * PAGE, Ordering::Relaxed);
}

/// Maps the cached neighbours of the page a read fault at `va` of file page `index` just mapped
/// (see the module comment). Returns how many were mapped.
#[doc(alias = "filemap_map_pages")]
pub(crate) fn do_fault_around<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    vma: &Vma,
    va: VirtAddr,
    file: &dyn MappedFile,
    index: u64,
) -> usize {
    let window = fault_around_bytes();
    if window <= PAGE {
        return 0;
    }
    let addr = va.as_u64() & !(PAGE - 1);
    let pt_start = addr & !(PT_SPAN - 1);
    let start = (addr & !(window - 1))
        .max(vma.start().as_u64())
        .max(pt_start);
    let end = ((addr & !(window - 1)) + window)
        .min(vma.end().as_u64())
        .min(pt_start + PT_SPAN);
    if end <= start + PAGE {
        return 0;
    }
    let pt = aspace.page_table(mm);
    let Some(table) = pt.walk_pt(va) else {
        return 0;
    };
    let slots = pt.slots(table);
    let first = index - (addr - start) / PAGE;
    let last = index + (end - addr) / PAGE;
    let prot = vma.page_prot() | Pte::ACCESSED;
    let uptodate = |frame| {
        mm.frames()
            .meta(frame)
            .test(crate::frame::FrameFlags::UPTODATE)
    };
    let mapped = file.cache().map_pages(first, last, uptodate, |i, frame| {
        if i == index {
            return false;
        }
        let at = match i < index {
            true => VirtAddr::new(addr - (index - i) * PAGE),
            false => VirtAddr::new(addr + (i - index) * PAGE),
        };
        let slot = slots.at(at.table_index(1));
        if slot.load().raw() != 0 {
            return false;
        }
        let meta = mm.frames().meta(frame);
        meta.get();
        meta.inc_mapcount();
        slot.store(Pte::new(frame, prot));
        true
    });
    if mapped > 0 {
        stats::add(&mm.counters.fault_around_pages, mapped as u64);
    }
    mapped
}
