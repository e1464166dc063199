//! madvise: `MADV_DONTNEED`, `MADV_FREE`, `MADV_DONTFORK`/`DOFORK`,
//! `MADV_WIPEONFORK`/`KEEPONFORK`, `MADV_DONTDUMP`/`DODUMP`, `MADV_POPULATE_READ`/`WRITE`,
//! `MADV_COLD`/`PAGEOUT`.
//!
//! Picture: advice about a range that the kernel acts on right away. `DONTNEED` throws the
//! pages away but keeps the mapping, so the next read of a private anonymous page sees zeros;
//! `FREE` allows the same at any later time, and without swap dropping them now is allowed
//! (private anonymous memory only); the flag pairs set or clear a VMA flag (splitting VMAs as
//! needed) that fork (`DONTFORK`, `WIPEONFORK`) or a core dump (`DONTDUMP`) consults;
//! `POPULATE_*` fault every page in now, as a read or a write would; `COLD`/`PAGEOUT` only
//! reorder reclaim, of which there is none without swap, so they check and do nothing.
//! As in Linux, holes in the range do not stop the advice from applying to the mapped parts, but
//! are reported with `ENOMEM`.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::FaultError;
use crate::error::MmError;
use crate::fault::{handle_mm_fault, FaultKind};
use crate::mm::Mm;
use crate::munmap::zap_pages;
use crate::vma::VmaFlags;
use crate::PAGE_SIZE;

/// The supported `MADV_*` values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Advice {
    /// Drop the pages; private anonymous memory reads back as zeros.
    DontNeed,
    /// The pages may be dropped any time (private anonymous memory only).
    Free,
    /// Do not give this range to fork children.
    DontFork,
    /// Undo `DontFork`.
    DoFork,
    /// Fork children get this range empty (zero-filled on touch; anonymous private only).
    WipeOnFork,
    /// Undo `WipeOnFork`.
    KeepOnFork,
    /// Leave the range out of core dumps.
    DontDump,
    /// Undo `DontDump`.
    DoDump,
    /// Fault every page in as a read (`MADV_POPULATE_READ`) or a write (`..._WRITE`).
    PopulateRead,
    PopulateWrite,
    /// Reclaim hints (`MADV_COLD`, `MADV_PAGEOUT`): nothing to do without swap.
    Cold,
    /// THPs wanted here (`MADV_HUGEPAGE`; clears `NoHugePage`). Existing mappings stay.
    HugePage,
    /// No THPs here (`MADV_NOHUGEPAGE`; clears `HugePage`). Existing THPs stay mapped, as in
    /// Linux; only new faults use small pages.
    NoHugePage,
    /// Collapse the range's small pages into THPs now (`MADV_COLLAPSE`, `khugepaged.rs`).
    Collapse,
}

impl Advice {
    pub const MADV_DONTNEED: i32 = 4;
    pub const MADV_FREE: i32 = 8;
    pub const MADV_DONTFORK: i32 = 10;
    pub const MADV_HUGEPAGE: i32 = 14;
    pub const MADV_NOHUGEPAGE: i32 = 15;
    pub const MADV_DOFORK: i32 = 11;
    pub const MADV_DONTDUMP: i32 = 16;
    pub const MADV_DODUMP: i32 = 17;
    pub const MADV_WIPEONFORK: i32 = 18;
    pub const MADV_KEEPONFORK: i32 = 19;
    pub const MADV_COLD: i32 = 20;
    pub const MADV_PAGEOUT: i32 = 21;
    pub const MADV_POPULATE_READ: i32 = 22;
    pub const MADV_POPULATE_WRITE: i32 = 23;
    pub const MADV_COLLAPSE: i32 = 25;

    /// Decodes a user-supplied advice (`EINVAL` for anything else).
    pub const fn from_linux(advice: i32) -> Result<Advice, MmError> {
        match advice {
            Self::MADV_DONTNEED => Ok(Advice::DontNeed),
            Self::MADV_FREE => Ok(Advice::Free),
            Self::MADV_DONTFORK => Ok(Advice::DontFork),
            Self::MADV_DOFORK => Ok(Advice::DoFork),
            Self::MADV_DONTDUMP => Ok(Advice::DontDump),
            Self::MADV_DODUMP => Ok(Advice::DoDump),
            Self::MADV_WIPEONFORK => Ok(Advice::WipeOnFork),
            Self::MADV_KEEPONFORK => Ok(Advice::KeepOnFork),
            Self::MADV_COLD | Self::MADV_PAGEOUT => Ok(Advice::Cold),
            Self::MADV_POPULATE_READ => Ok(Advice::PopulateRead),
            Self::MADV_POPULATE_WRITE => Ok(Advice::PopulateWrite),
            Self::MADV_HUGEPAGE => Ok(Advice::HugePage),
            Self::MADV_NOHUGEPAGE => Ok(Advice::NoHugePage),
            Self::MADV_COLLAPSE => Ok(Advice::Collapse),
            _ => Err(MmError::Inval),
        }
    }

    /// The VMA flag the advice sets or clears, and whether it sets it.
    const fn flag(self) -> Option<(VmaFlags, bool)> {
        match self {
            Advice::DontFork => Some((VmaFlags::DONTFORK, true)),
            Advice::DoFork => Some((VmaFlags::DONTFORK, false)),
            Advice::WipeOnFork => Some((VmaFlags::WIPEONFORK, true)),
            Advice::KeepOnFork => Some((VmaFlags::WIPEONFORK, false)),
            Advice::DontDump => Some((VmaFlags::DONTDUMP, true)),
            Advice::DoDump => Some((VmaFlags::DONTDUMP, false)),
            Advice::HugePage => Some((VmaFlags::HUGEPAGE, true)),
            Advice::NoHugePage => Some((VmaFlags::NOHUGEPAGE, true)),
            _ => None,
        }
    }

    /// The VMA flag the advice clears besides (`HUGEPAGE` and `NOHUGEPAGE` exclude each other,
    /// Linux `hugepage_madvise`).
    const fn clears(self) -> VmaFlags {
        match self {
            Advice::HugePage => VmaFlags::NOHUGEPAGE,
            Advice::NoHugePage => VmaFlags::HUGEPAGE,
            _ => VmaFlags::NONE,
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
        if let Some(e) = self.madvise_behavior_valid(start, end, advice) {
            return Err(e);
        }
        match advice {
            // PTEs only exist inside VMAs, so zapping the whole range touches the mapped parts.
            Advice::DontNeed | Advice::Free => {
                let (start, end) = self.hugetlb_dontneed_range(start, end)?;
                self.hiwater_rss(mm);
                zap_pages(mm, &self.shared, start, end)
            }
            Advice::PopulateRead | Advice::PopulateWrite => {
                return self
                    .madvise_populate(mm, start, end, advice == Advice::PopulateWrite, None)
                    .map(|_| ())
            }
            Advice::Cold => {}
            Advice::Collapse => return self.madvise_collapse(mm, start, end, holes),
            _ => {
                let (flag, set) = advice.flag().expect("a flag advice");
                self.hugetlb_check_split(start, end)?;
                self.check_map_count(mm, self.splits_needed(start, end))?;
                crate::huge_memory::vma_adjust_trans_huge(mm, &self.shared, start, end);
                let before = self.vmas.len();
                let keys = self.isolate(start, end);
                for key in &keys {
                    let vma = self.vmas.map_mut().get_mut(key).expect("isolated VMA");
                    vma.flags = if set {
                        vma.flags | flag
                    } else {
                        vma.flags.without(flag)
                    }
                    .without(advice.clears());
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

impl AddressSpace {
    /// Advice a VMA of the range refuses with `EINVAL` before anything changes (Linux checks
    /// per VMA as it walks): `FREE` and `WIPEONFORK` only on private anonymous memory
    /// (`madvise_free_single_vma`, `madvise_vma_behavior`), `COLD`/`PAGEOUT` not on locked
    /// memory (`can_madv_lru_vma`).
    fn madvise_behavior_valid(
        &self,
        start: VirtAddr,
        end: VirtAddr,
        advice: Advice,
    ) -> Option<MmError> {
        let refuses = |vma: &crate::vma::Vma| match advice {
            Advice::Free | Advice::WipeOnFork => !vma.is_anonymous(),
            Advice::Cold => vma.flags().contains(VmaFlags::LOCKED),
            _ => false,
        };
        self.vmas
            .values()
            .filter(|v| v.start() < end && v.end() > start)
            .any(refuses)
            .then_some(MmError::Inval)
    }

    /// `MADV_POPULATE_READ`/`WRITE` (Linux `madvise_populate`): faults the pages in VMA by
    /// VMA; an inaccessible VMA, or a non-writable one for a write, is `EINVAL`; a hole is
    /// `ENOMEM` (the pages before it stay populated); a fault that would raise SIGBUS or
    /// SIGSEGV is `EFAULT`, one without memory `ENOMEM`.
    ///
    /// With `fill` (the kernel, which can let its hold go) a file page not cached yet stops
    /// it there with `fill` set ([`crate::fault::populate_fault`]): the caller fills the page
    /// unlocked and calls again from the address returned. Else it returns `end`.
    pub fn madvise_populate<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
        mut fill: Option<&mut Option<crate::fault::PendingFill>>,
    ) -> Result<VirtAddr, MmError> {
        let kind = if write {
            FaultKind::Write
        } else {
            FaultKind::Read
        };
        let mut va = start.as_u64();
        while va < end.as_u64() {
            let (prot, vma_end) = self
                .find_vma(VirtAddr::new(va))
                .map(|v| (v.prot(), v.end().as_u64()))
                .ok_or(MmError::NoMem)?;
            if !prot.accessible() || (write && !prot.write()) {
                return Err(MmError::Inval);
            }
            let stop = vma_end.min(end.as_u64());
            let error = |e| match e {
                FaultError::Oom => MmError::NoMem,
                _ => MmError::Fault,
            };
            while va < stop {
                let at = VirtAddr::new(va);
                if let Some(fill) = fill.as_deref_mut() {
                    *fill = crate::fault::populate_fault(mm, self, at, kind).map_err(error)?;
                    if fill.is_some() {
                        return Ok(at);
                    }
                } else {
                    handle_mm_fault(mm, self, at, kind).map_err(error)?;
                }
                va += PAGE_SIZE as u64;
            }
        }
        Ok(end)
    }
}
