//! `msync` (Linux `mm/msync.c`): which file mappings of a range must be written back. The
//! memory manager checks the arguments and walks the VMAs; the kernel writes the files back
//! outside the address-space lock ([`crate::pagecache::MappedFile::writeback`]).

#![deny(unsafe_code)]

use alloc::vec::Vec;

use crate::aspace::{AddressSpace, USER_END};
use crate::error::MmError;
use crate::pagecache::FileRef;
use crate::vma::{Backing, Sharing, VmaFlags};
use crate::PAGE_SIZE;

pub const MS_ASYNC: u32 = 1;
pub const MS_INVALIDATE: u32 = 2;
pub const MS_SYNC: u32 = 4;

impl AddressSpace {
    /// The files `msync(start, len, flags)` must write back (Linux `msync`): `EINVAL` for
    /// unknown flags, both `MS_ASYNC` and `MS_SYNC`, or an unaligned start; `EBUSY` for
    /// `MS_INVALIDATE` over an mlocked mapping; `ENOMEM` if part of the range is unmapped
    /// (after the mapped parts were handled, as Linux, which still syncs them: the files are
    /// returned with the error). Only `MS_SYNC` writes anything: `MS_ASYNC` is a no-op on
    /// Linux since 2.6.19, and cowlab's caches are the only copy `MS_INVALIDATE` could drop.
    #[allow(clippy::type_complexity)]
    pub fn msync_files(
        &self,
        start: u64,
        len: u64,
        flags: u32,
    ) -> Result<Vec<FileRef>, (MmError, Vec<FileRef>)> {
        let fail = |e| Err((e, Vec::new()));
        if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
            || !start.is_multiple_of(PAGE_SIZE as u64)
            || (flags & MS_ASYNC != 0 && flags & MS_SYNC != 0)
        {
            return fail(MmError::Inval);
        }
        let Some(end) = len
            .checked_add(PAGE_SIZE as u64 - 1)
            .map(|l| l & !(PAGE_SIZE as u64 - 1))
            .and_then(|l| start.checked_add(l))
        else {
            return fail(MmError::NoMem);
        };
        if end == start {
            return Ok(Vec::new());
        }
        let mut files = Vec::new();
        let mut at = start;
        let mut unmapped = false;
        while at < end {
            let Some(vma) = (at < USER_END)
                .then(|| self.vmas().find(|v| v.end().as_u64() > at))
                .flatten()
            else {
                unmapped = true;
                break;
            };
            if vma.start().as_u64() >= end {
                unmapped = true;
                break;
            }
            if vma.start().as_u64() > at {
                unmapped = true;
            }
            if flags & MS_INVALIDATE != 0 && vma.flags().contains(VmaFlags::LOCKED) {
                return fail(MmError::Busy);
            }
            if let Backing::File(file, _) = vma.backing() {
                if flags & MS_SYNC != 0
                    && vma.sharing() == Sharing::Shared
                    && !files.iter().any(|f: &FileRef| f == file)
                {
                    files.push(file.clone());
                }
            }
            at = vma.end().as_u64();
        }
        if unmapped {
            Err((MmError::NoMem, files))
        } else {
            Ok(files)
        }
    }
}
