//! Physically contiguous kernel memory a device may read and write: the virtqueue rings, the
//! request headers and status bytes, and the bounce buffers of buffered block I/O.
//!
//! Where it comes from: the kernel heap. `memory::init` carves the heap out of *one* usable
//! physical range and reaches it through the bootloader's linear offset mapping, so every heap
//! allocation is physically contiguous and its physical address is its virtual address minus
//! that offset. A page-aligned heap allocation is therefore exactly what a legacy virtqueue
//! needs (contiguous, page-aligned, below 2^44 for the 32-bit queue PFN), with no second
//! allocator and no frames kept from the frame allocator's count. User memory never comes
//! here: O_DIRECT I/O hands the device the pinned user frames themselves (`fs::vda`).

use core::alloc::Layout;
use core::ptr::NonNull;

use cowlab_mm::addr::PhysAddr;

use crate::memory;

const PAGE: usize = 4096;

/// A zeroed, page-aligned, physically contiguous allocation, freed on drop.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the region is plain memory owned by this value; who may touch it while a device
// does is the driver's protocol (a region is handed to the device only inside a request that
// owns it until completion), not a property of the thread.
unsafe impl Send for DmaRegion {}
// SAFETY: shared access goes through raw-pointer reads and writes whose ordering against the
// device the driver orders; `&DmaRegion` gives no Rust reference into the memory.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    /// `bytes` (rounded up to whole pages) of zeroed memory; `None` if the heap is exhausted.
    pub fn new(bytes: usize) -> Option<DmaRegion> {
        let size = bytes.max(1).div_ceil(PAGE) * PAGE;
        let layout = Layout::from_size_align(size, PAGE).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })?;
        Some(DmaRegion { ptr, layout })
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// The kernel's address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The physical address of byte `offset` (see the module comment for why it is linear).
    pub fn phys(&self, offset: usize) -> u64 {
        assert!(offset <= self.len(), "DMA offset {offset} past the region");
        let base = memory::phys_to_virt(PhysAddr::new(0)) as u64;
        self.ptr.as_ptr() as u64 - base + offset as u64
    }

    /// Copies `out.len()` bytes at `offset` out of the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= self.len(),
            "DMA region read out of bounds"
        );
        // SAFETY: in bounds (checked); the region is live and no device writes it while its
        // owner reads (a request's region is read only after its completion).
        unsafe {
            core::ptr::copy_nonoverlapping(self.as_ptr().add(offset), out.as_mut_ptr(), out.len())
        };
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= self.len(),
            "DMA region write out of bounds"
        );
        // SAFETY: in bounds (checked); the region is not yet handed to a device.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.as_ptr().add(offset), data.len())
        };
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
