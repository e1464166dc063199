//! `msync`: which ranges and flags Linux accepts and what it answers for holes and locked
//! memory. Nothing is written back here: anonymous and shmem pages have no backing store, and
//! file writeback belongs to the page cache (whose `MS_SYNC` would start it).
#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::aspace::AddressSpace;
use crate::error::MmError;
use crate::vma::VmaFlags;

pub const MS_ASYNC: u32 = 1;
pub const MS_INVALIDATE: u32 = 2;
pub const MS_SYNC: u32 = 4;

impl AddressSpace {
    /// Checks `msync(addr, len, flags)` as Linux's `msync` syscall does: unknown flags, an
    /// unaligned start or `MS_SYNC | MS_ASYNC` are `Inval`; a length that wraps is `NoMem`; an
    /// empty range is fine. The VMAs over the range are then walked in order: `MS_INVALIDATE`
    /// reaching a locked one is `Busy`; any hole makes the answer `NoMem` (for plain
    /// `MS_ASYNC` at once, otherwise after the walk, as Linux's `unmapped_error`).
    #[doc(alias = "ksys_msync")]
    pub fn msync(&self, addr: VirtAddr, len: usize, flags: u32) -> Result<(), MmError> {
        if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
            || !addr.is_page_aligned()
            || (flags & MS_ASYNC != 0 && flags & MS_SYNC != 0)
        {
            return Err(MmError::Inval);
        }
        let start = addr.as_u64();
        let end = start
            .checked_add(len as u64)
            .and_then(|e| e.checked_next_multiple_of(crate::PAGE_SIZE as u64))
            .ok_or(MmError::NoMem)?;
        if end == start {
            return Ok(());
        }
        let mut cursor = start;
        let mut unmapped = false;
        for vma in self
            .vmas()
            .filter(|v| v.end().as_u64() > start && v.start().as_u64() < end)
        {
            if vma.start().as_u64() > cursor {
                if flags == MS_ASYNC {
                    return Err(MmError::NoMem);
                }
                unmapped = true;
            }
            if flags & MS_INVALIDATE != 0 && vma.flags().contains(VmaFlags::LOCKED) {
                return Err(MmError::Busy);
            }
            cursor = vma.end().as_u64();
            if cursor >= end {
                return if unmapped {
                    Err(MmError::NoMem)
                } else {
                    Ok(())
                };
            }
        }
        Err(MmError::NoMem)
    }
}
