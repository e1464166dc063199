//! Long-term registered buffers: user memory a device may DMA into at any time (io_uring fixed
//! buffers, RDMA memory regions; the block-I/O issue's DMA target).
//!
//! Picture: registering pins every page of a user range once, with `FOLL_WRITE|FOLL_LONGTERM`
//! (Linux `io_sqe_buffer_register` -> `io_pin_pages` -> `pin_user_pages_fast` since 6.5; the
//! fast path falls back to the slow one for every page that needs its VMA), and keeps the frames; later I/O reads
//! and writes those frames directly, bypassing the page tables, until the buffer is
//! unregistered. For this to be coherent with what the process sees, the process's mapping must
//! keep pointing at the pinned frames: under the 2022+ rules the pages are exclusive anon (or
//! shmem) pages, which faults reuse, mprotect/soft-dirty write-protection does not copy away,
//! and fork copies for the child instead of sharing. Older eras lose that coherence exactly as
//! Linux did (`tests/regbuf_tests.rs`). The invariant: a [`RegisteredBuffer`] holds one pin per
//! page its range touches from registration to `unregister`. As io_uring's, the range need not
//! be page aligned: byte 0 of the buffer lies at `start`'s offset in the first pinned page.

#![deny(unsafe_code)]

use alloc::vec::Vec;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::user_range;
use crate::error::MmError;
use crate::foll::FollFlags;
use crate::gup::{unpin_user_pages_dirty_lock, user_pages_held, MmapHold};
use crate::mm::Mm;
use crate::pin::DmaFromDevice;
use crate::pin::{PinnedPage, UnpinDirty};
use crate::PAGE_SIZE;

/// A registered buffer: the pinned frames of a user range. Release with
/// [`RegisteredBuffer::unregister`]; dropping it leaks the pins.
#[must_use = "a registered buffer must be released with unregister()"]
#[derive(Debug)]
pub struct RegisteredBuffer {
    start: VirtAddr,
    len: usize,
    pages: Vec<Option<PinnedPage>>,
}

/// Pins the pages of `[va, va + len)` long-term for writing (Linux `io_sqe_buffer_register`).
/// `len` must be non-zero and the range inside user space (`EINVAL`); `va` may be unaligned.
/// All or nothing: if any page cannot be pinned (unmapped, not writable, a dirty-tracked file
/// page) the pins taken are dropped and `EFAULT` (or `ENOMEM`) is returned.
#[doc(alias = "io_sqe_buffer_register")]
pub fn register_buffer<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    va: VirtAddr,
    len: usize,
) -> Result<RegisteredBuffer, MmError> {
    let first = VirtAddr::new(va.as_u64() & !(PAGE_SIZE as u64 - 1));
    let span = len.checked_add(va.page_offset()).ok_or(MmError::Inval)?;
    let (first, end) = user_range(first, span)?;
    let npages = ((end.as_u64() - first.as_u64()) / PAGE_SIZE as u64) as usize;
    let mut pages: Vec<Option<PinnedPage>> = Vec::new();
    // The page list lives on the kernel heap: a failure to grow it is the caller's ENOMEM.
    pages
        .try_reserve_exact(npages)
        .map_err(|_| MmError::NoMem)?;
    pages.resize_with(npages, || None);
    let flags = FollFlags::WRITE | FollFlags::LONGTERM;
    match user_pages_held(mm, hold, first, flags, true, true, &mut pages) {
        Ok(n) if n == npages => Ok(RegisteredBuffer {
            start: va,
            len,
            pages,
        }),
        Ok(_) => {
            unpin_user_pages_dirty_lock(mm, &mut pages, UnpinDirty::Clean);
            Err(MmError::Fault)
        }
        Err(e) => Err(e),
    }
}

impl RegisteredBuffer {
    /// The user address the buffer was registered at.
    pub fn start(&self) -> VirtAddr {
        self.start
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pinned page backing byte `offset` of the buffer.
    pub fn page(&self, offset: usize) -> &PinnedPage {
        assert!(
            offset < self.len,
            "offset {offset} beyond the registered buffer"
        );
        self.pages[(offset + self.start.page_offset()) / PAGE_SIZE]
            .as_ref()
            .expect("a registered buffer holds every page")
    }

    /// A device writes `data` at `offset` of the buffer (DMA from the device into memory).
    pub fn dma_write<A: Arch>(&self, mm: &Mm<A>, offset: usize, data: &[u8]) {
        self.for_each_segment(offset, data.len(), |page, off, range| {
            page.dma_write(mm, off, &data[range]);
        });
    }

    /// A device reads `buf.len()` bytes at `offset` of the buffer (DMA to the device).
    pub fn dma_read<A: Arch>(&self, mm: &Mm<A>, offset: usize, buf: &mut [u8]) {
        self.for_each_segment(offset, buf.len(), |page, off, range| {
            page.page().dma_read(mm, off, &mut buf[range]);
        });
    }

    /// The device's view of `[offset, offset + len)` of the buffer: calls `f` once per
    /// physically contiguous piece, in order, with the write handle of its pinned page, the
    /// offset in that page and the piece's range within `[0, len)` (a scatter-gather list: a
    /// driver puts `page.frame() + off` and the range's length in one descriptor each).
    /// Panics if the range leaves the buffer: callers check user-supplied ranges first.
    pub fn for_each_segment(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(DmaFromDevice<'_>, usize, core::ops::Range<usize>),
    ) {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= self.len),
            "DMA beyond the registered buffer"
        );
        let mut done = 0;
        while done < len {
            let at = offset + done + self.start.page_offset();
            let off = at % PAGE_SIZE;
            let n = (PAGE_SIZE - off).min(len - done);
            let page = self.pages[at / PAGE_SIZE]
                .as_ref()
                .expect("a registered buffer holds every page");
            let handle = page
                .dma_from_device()
                .expect("registered buffers are pinned with FOLL_WRITE");
            f(handle, off, done..done + n);
            done += n;
        }
    }

    /// Pages pinned (the range's pages, not `len / PAGE_SIZE`).
    pub fn nr_pages(&self) -> usize {
        self.pages.len()
    }

    /// Unpins every page without marking it dirty, as Linux does (`io_release_ubuf` ->
    /// `unpin_user_page`; nor do fixed reads dirty the pages they fill): a device's writes into
    /// a registered page never reach a filesystem that cleaned it meanwhile. That is the lost
    /// write of seed 002, which the 2023 rule (`writable_file_mapping_allowed`) prevents by
    /// refusing such registrations of dirty-tracked file pages (docs/file-memory.md).
    pub fn unregister<A: Arch>(mut self, mm: &Mm<A>) {
        unpin_user_pages_dirty_lock(mm, &mut self.pages, UnpinDirty::Clean);
    }
}

impl<'p> DmaFromDevice<'p> {
    /// The pinned page this handle writes (its frame is the DMA address; a device may also
    /// read it).
    pub fn page(&self) -> &'p PinnedPage {
        self.page
    }
}
