//! Long-term registered buffers: user memory a device may DMA into at any time (io_uring fixed
//! buffers, RDMA memory regions; the block-I/O issue's DMA target).
//!
//! Picture: registering pins every page of a user range once, with `FOLL_WRITE|FOLL_LONGTERM`
//! (Linux `io_sqe_buffer_register` -> `pin_user_pages`), and keeps the frames; later I/O reads
//! and writes those frames directly, bypassing the page tables, until the buffer is
//! unregistered. For this to be coherent with what the process sees, the process's mapping must
//! keep pointing at the pinned frames: under the 2022+ rules the pages are exclusive anon (or
//! shmem) pages, which faults reuse, mprotect/soft-dirty write-protection does not copy away,
//! and fork copies for the child instead of sharing. Older eras lose that coherence exactly as
//! Linux did (`tests/regbuf_tests.rs`). The invariant: a [`RegisteredBuffer`] holds one pin per
//! page of its range from registration to `unregister`.

#![deny(unsafe_code)]

use alloc::vec::Vec;

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{user_range, AddressSpace};
use crate::error::MmError;
use crate::foll::FollFlags;
use crate::gup::{pin_user_pages, unpin_user_pages_dirty_lock};
use crate::mm::Mm;
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

/// Pins `[va, va + len)` long-term for writing (Linux `io_sqe_buffer_register`). `va` must be
/// page aligned and `len` non-zero (`EINVAL`). All or nothing: if any page cannot be pinned
/// (unmapped, not writable, a dirty-tracked file page) the pins taken are dropped and `EFAULT`
/// (or `ENOMEM`) is returned.
#[doc(alias = "io_sqe_buffer_register")]
pub fn register_buffer<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    len: usize,
) -> Result<RegisteredBuffer, MmError> {
    let (start, end) = user_range(va, len)?;
    let npages = ((end.as_u64() - start.as_u64()) / PAGE_SIZE as u64) as usize;
    let mut pages: Vec<Option<PinnedPage>> = Vec::new();
    pages.resize_with(npages, || None);
    let flags = FollFlags::WRITE | FollFlags::LONGTERM;
    match pin_user_pages(mm, aspace, start, flags, &mut pages) {
        Ok(n) if n == npages => Ok(RegisteredBuffer { start, len, pages }),
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
        self.pages[offset / PAGE_SIZE]
            .as_ref()
            .expect("a registered buffer holds every page")
    }

    /// A device writes `data` at `offset` of the buffer (DMA from the device into memory).
    pub fn dma_write<A: Arch>(&self, mm: &Mm<A>, offset: usize, data: &[u8]) {
        self.for_each_chunk(offset, data.len(), |page, off, range| {
            page.dma_from_device()
                .expect("registered buffers are pinned with FOLL_WRITE")
                .dma_write(mm, off, &data[range]);
        });
    }

    /// A device reads `buf.len()` bytes at `offset` of the buffer (DMA to the device).
    pub fn dma_read<A: Arch>(&self, mm: &Mm<A>, offset: usize, buf: &mut [u8]) {
        self.for_each_chunk(offset, buf.len(), |page, off, range| {
            page.dma_read(mm, off, &mut buf[range]);
        });
    }

    fn for_each_chunk(
        &self,
        offset: usize,
        len: usize,
        mut f: impl FnMut(&PinnedPage, usize, core::ops::Range<usize>),
    ) {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= self.len),
            "DMA beyond the registered buffer"
        );
        let mut done = 0;
        while done < len {
            let at = offset + done;
            let off = at % PAGE_SIZE;
            let n = (PAGE_SIZE - off).min(len - done);
            f(self.page(at), off, done..done + n);
            done += n;
        }
    }

    /// Unpins every page, marking them dirty (the device may have written them) (Linux
    /// `io_buffer_unmap` -> `unpin_user_pages`).
    pub fn unregister<A: Arch>(mut self, mm: &Mm<A>) {
        unpin_user_pages_dirty_lock(mm, &mut self.pages, UnpinDirty::MakeDirty);
    }
}
