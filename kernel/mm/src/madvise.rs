//! madvise: `MADV_DONTNEED`, `MADV_DONTFORK`, `MADV_DOFORK`.
//!
//! Picture: advice about a range that the kernel acts on right away. `DONTNEED` throws the
//! pages away but keeps the mapping, so the next read of a private anonymous page sees zeros;
//! `DONTFORK`/`DOFORK` set or clear a VMA flag that fork consults (splitting VMAs as needed).
//! As in Linux, holes in the range do not stop the advice from applying to the mapped parts, but
//! are reported with `ENOMEM`.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::MmError;
use crate::mm::Mm;
use crate::munmap::zap_pages;
use crate::vma::VmaFlags;

/// The supported `MADV_*` values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Advice {
    /// Drop the pages; private anonymous memory reads back as zeros.
    DontNeed,
    /// Do not give this range to fork children.
    DontFork,
    /// Undo `DontFork`.
    DoFork,
}

impl Advice {
    pub const MADV_DONTNEED: i32 = 4;
    pub const MADV_DONTFORK: i32 = 10;
    pub const MADV_DOFORK: i32 = 11;

    /// Decodes a user-supplied advice (`EINVAL` for anything else).
    pub const fn from_linux(advice: i32) -> Result<Advice, MmError> {
        match advice {
            Self::MADV_DONTNEED => Ok(Advice::DontNeed),
            Self::MADV_DONTFORK => Ok(Advice::DontFork),
            Self::MADV_DOFORK => Ok(Advice::DoFork),
            _ => Err(MmError::Inval),
        }
    }
}

impl AddressSpace {
    /// Applies `advice` to `[addr, addr + len)` (Linux `do_madvise`).
    #[doc(alias = "do_madvise")]
    pub fn madvise<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        advice: Advice,
    ) -> Result<(), MmError> {
        if !addr.is_page_aligned() {
            return Err(MmError::Inval);
        }
        if len == 0 {
            return Ok(());
        }
        let end = addr
            .as_u64()
            .checked_add(len as u64)
            .and_then(|e| VirtAddr::new(e).checked_align_up())
            .ok_or(MmError::Inval)?;
        if end.as_u64() > USER_END {
            return Err(MmError::NoMem);
        }
        let start = addr;
        let holes = !self.fully_mapped(start, end);
        match advice {
            // PTEs only exist inside VMAs, so zapping the whole range touches the mapped parts.
            Advice::DontNeed => zap_pages(mm, &self.shared, start, end),
            Advice::DontFork | Advice::DoFork => {
                self.check_map_count(mm, self.splits_needed(start, end))?;
                let before = self.vmas.len();
                let keys = self.isolate(start, end);
                for key in &keys {
                    let vma = self.vmas.map_mut().get_mut(key).expect("isolated VMA");
                    vma.flags = if advice == Advice::DontFork {
                        vma.flags | VmaFlags::DONTFORK
                    } else {
                        vma.flags.without(VmaFlags::DONTFORK)
                    };
                }
                for key in keys {
                    if self.vmas.contains_key(&key) {
                        self.merge_around(VirtAddr::new(key));
                    }
                }
                mm.account_vmas(before, self.vmas.len());
            }
        }
        if holes {
            Err(MmError::NoMem)
        } else {
            Ok(())
        }
    }
}
