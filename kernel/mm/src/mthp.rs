//! Multi-size THP (mTHP): anonymous large folios of 16 KiB..1 MiB mapped by one PTE per
//! subpage (Linux 6.8+ `alloc_anon_folio`, the per-size sysfs of `mm/huge_memory.c`).
//!
//! Picture: each size has its own `/sys/kernel/mm/transparent_hugepage/hugepages-<N>kB/enabled`
//! (`always`, `inherit`, `madvise`, `never`; 2048 kB is the PMD size and defaults to
//! `inherit`, every smaller size to `never`, as Linux). A write fault on an empty PTE of a
//! private anonymous VMA for which some size is enabled (Linux `thp_vma_allowable_orders`)
//! tries the largest enabled size first whose naturally aligned range lies inside the VMA and
//! whose PTEs are all empty (`pte_range_none`), allocates a naturally aligned run of frames of
//! that order (`FrameTable::alloc_run`), zeroes it and maps every subpage writable with its
//! own PTE at once (`set_ptes`); a size whose range does not fit or whose run cannot be had
//! falls back to the next smaller one, and the last fallback is the 4 KiB page. A read fault
//! still maps the 4 KiB zero page, as Linux.
//!
//! From then on the folio is a *PTE-mapped large folio* like a PMD THP after its split, and the
//! small-page code handles it through the folio layout of `folio.rs`: references and pins on
//! the head, mapcount and `ANON_EXCLUSIVE` per subpage (so COW, fork, GUP, mprotect, mremap and
//! partial unmaps need nothing of their own), and a partly unmapped mTHP goes on the deferred
//! split queue (`folio_split.rs`).
//!
//! Cost: with no smaller size enabled (the default) a write fault on an empty PTE pays one load
//! and one branch ([`MthpSizes::any`]); everything else here is cold.

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU16, AtomicU64, AtomicU8, Ordering};

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::error::{FaultError, MmError};
use crate::folio::HPAGE_PMD_ORDER;
use crate::huge_memory::ThpEnabled;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{PageTable, Pte};
use crate::vma::{Sharing, Vma, VmaFlags};
use crate::wp::write_grant;
use crate::PAGE_SIZE;

/// The smallest anon mTHP order Linux offers (16 KiB); order 1 folios cannot be anon THPs.
pub const MTHP_MIN_ORDER: u32 = 2;
/// Orders with a `hugepages-<N>kB` directory: 2 (16 kB) ..= 9 (2048 kB, the PMD size).
pub const ORDERS: core::ops::RangeInclusive<u32> = MTHP_MIN_ORDER..=HPAGE_PMD_ORDER;

/// The value of one `hugepages-<N>kB/enabled`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum SizeEnabled {
    Always = 0,
    /// Follow the top-level `enabled`.
    Inherit = 1,
    Madvise = 2,
    Never = 3,
}

const SIZE_NAMES: [&str; 4] = ["always", "inherit", "madvise", "never"];

/// One size's counters (Linux `hugepages-<N>kB/stats/`).
#[derive(Default)]
struct SizeStats {
    anon_fault_alloc: AtomicU64,
    anon_fault_fallback: AtomicU64,
    /// mTHPs of this size in use (Linux `nr_anon`).
    nr_anon: AtomicU64,
    /// Folios of this size split into small pages (Linux `split`).
    split: AtomicU64,
}

/// A snapshot of one size's counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct SizeStatsSnapshot {
    pub anon_fault_alloc: u64,
    pub anon_fault_fallback: u64,
    pub nr_anon: u64,
    pub split: u64,
}

const N_ORDERS: usize = HPAGE_PMD_ORDER as usize + 1;

/// The per-size controls and counters, in [`crate::huge_memory::ThpSettings`].
pub struct MthpSizes {
    enabled: [AtomicU8; N_ORDERS],
    /// Bit `order` set: that order (< 9) is not `never`. The fault path's one test.
    any: AtomicU16,
    stats: [SizeStats; N_ORDERS],
}

impl Default for MthpSizes {
    /// Linux's defaults: the PMD size `inherit`, every smaller size `never`.
    fn default() -> MthpSizes {
        let enabled = core::array::from_fn(|order| {
            AtomicU8::new(if order as u32 == HPAGE_PMD_ORDER {
                SizeEnabled::Inherit as u8
            } else {
                SizeEnabled::Never as u8
            })
        });
        MthpSizes {
            enabled,
            any: AtomicU16::new(0),
            stats: core::array::from_fn(|_| SizeStats::default()),
        }
    }
}

/// The order of the size named `kb` kilobytes, if it has a directory.
pub fn order_of_kb(kb: u64) -> Option<u32> {
    let pages = kb / 4;
    if !kb.is_multiple_of(4) || !pages.is_power_of_two() {
        return None;
    }
    let order = pages.trailing_zeros();
    ORDERS.contains(&order).then_some(order)
}

impl MthpSizes {
    /// The setting of the size of `order` (in [`ORDERS`]).
    pub fn enabled(&self, order: u32) -> SizeEnabled {
        match self.enabled[order as usize].load(Ordering::Relaxed) {
            0 => SizeEnabled::Always,
            1 => SizeEnabled::Inherit,
            2 => SizeEnabled::Madvise,
            _ => SizeEnabled::Never,
        }
    }

    pub fn set_enabled(&self, order: u32, v: SizeEnabled) {
        assert!(ORDERS.contains(&order), "no mTHP size of order {order}");
        self.enabled[order as usize].store(v as u8, Ordering::Relaxed);
        if order < HPAGE_PMD_ORDER {
            let bit = 1u16 << order;
            if v == SizeEnabled::Never {
                self.any.fetch_and(!bit, Ordering::Relaxed);
            } else {
                self.any.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// Is any size below the PMD size other than `never`? One load on the anon write fault.
    #[inline(always)]
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Relaxed) != 0
    }

    /// The text of `hugepages-<N>kB/enabled`, e.g. `always inherit madvise [never]\n`.
    pub fn show_enabled(&self, order: u32, out: &mut alloc::string::String) {
        for (i, n) in SIZE_NAMES.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            if i == self.enabled(order) as usize {
                out.push('[');
                out.push_str(n);
                out.push(']');
            } else {
                out.push_str(n);
            }
        }
        out.push('\n');
    }

    /// A write to `hugepages-<N>kB/enabled`: one of the four names, else `EINVAL`.
    pub fn store_enabled(&self, order: u32, input: &str) -> Result<(), MmError> {
        let word = input.strip_suffix('\n').unwrap_or(input);
        let i = SIZE_NAMES
            .iter()
            .position(|n| *n == word)
            .ok_or(MmError::Inval)?;
        let v = [
            SizeEnabled::Always,
            SizeEnabled::Inherit,
            SizeEnabled::Madvise,
            SizeEnabled::Never,
        ][i];
        self.set_enabled(order, v);
        Ok(())
    }

    /// Is the size of `order` enabled for a VMA with `flags` under the top-level `global`
    /// (Linux `thp_vma_allowable_orders` for anon memory: `MADV_NOHUGEPAGE` refuses every size;
    /// `inherit` follows `global`)?
    #[inline]
    pub fn allowed(&self, order: u32, global: ThpEnabled, flags: VmaFlags) -> bool {
        if flags.contains(VmaFlags::NOHUGEPAGE) {
            return false;
        }
        let hinted = flags.contains(VmaFlags::HUGEPAGE);
        match self.enabled(order) {
            SizeEnabled::Always => true,
            SizeEnabled::Madvise => hinted,
            SizeEnabled::Never => false,
            SizeEnabled::Inherit => match global {
                ThpEnabled::Always => true,
                ThpEnabled::Madvise => hinted,
                ThpEnabled::Never => false,
            },
        }
    }

    /// The counters of the size of `order`.
    pub fn stats(&self, order: u32) -> SizeStatsSnapshot {
        let s = &self.stats[order as usize];
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SizeStatsSnapshot {
            anon_fault_alloc: r(&s.anon_fault_alloc),
            anon_fault_fallback: r(&s.anon_fault_fallback),
            nr_anon: r(&s.nr_anon),
            split: r(&s.split),
        }
    }

    /// A folio of `order` was freed whole.
    pub(crate) fn freed(&self, order: u32) {
        if let Some(s) = self.stats.get(order as usize) {
            s.nr_anon.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A folio of `order` was split into small pages.
    pub(crate) fn split(&self, order: u32) {
        let s = &self.stats[order as usize];
        s.nr_anon.fetch_sub(1, Ordering::Relaxed);
        s.split.fetch_add(1, Ordering::Relaxed);
    }
}

/// A write fault on the empty PTE at `va` of the private anon `vma` with some mTHP size not
/// `never` (Linux `do_anonymous_page` -> `alloc_anon_folio`): maps a new zeroed mTHP of the
/// largest size that is enabled, fits the VMA naturally aligned, finds every PTE of its range
/// empty and can be allocated. `Ok(false)`: none did; the caller maps a 4 KiB page.
#[cold]
#[inline(never)]
pub(crate) fn do_anonymous_mthp<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    va: VirtAddr,
) -> Result<bool, FaultError> {
    if !vma.is_anonymous() || vma.sharing() != Sharing::Private {
        return Ok(false);
    }
    let sizes = &mm.thp().sizes;
    let global = mm.thp().enabled();
    let flags = vma.flags();
    let pt = PageTable::new(mm, shared.root());
    let Some(table) = pt.walk_pt(va) else {
        return Ok(false);
    };
    for order in (MTHP_MIN_ORDER..HPAGE_PMD_ORDER).rev() {
        if !sizes.allowed(order, global, flags) {
            continue;
        }
        let nr = 1usize << order;
        let size = (nr * PAGE_SIZE) as u64;
        let start = va.as_u64() & !(size - 1);
        if start < vma.start().as_u64() || start + size > vma.end().as_u64() {
            continue;
        }
        let first = VirtAddr::new(start).table_index(1);
        if (first..first + nr).any(|i| !pt.entry(table, i).load().is_empty()) {
            continue;
        }
        let stats = &sizes.stats[order as usize];
        let Some(head) = mm.frames().alloc_run(order, true) else {
            stats.anon_fault_fallback.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        mm.zero_frames_owned(head, nr);
        mm.frames().prep_anon_mthp(head, order);
        mm.counters
            .anon_pages
            .fetch_add(nr as u64, Ordering::Relaxed);
        crate::stats::inc(&mm.counters.anon_faults);
        stats.anon_fault_alloc.fetch_add(1, Ordering::Relaxed);
        stats.nr_anon.fetch_add(1, Ordering::Relaxed);
        // Every subpage writable and dirty at once, as Linux's `set_ptes` of the new folio.
        let bits = vma.page_prot() | write_grant(vma);
        for i in 0..nr {
            pt.entry(table, first + i)
                .store(Pte::new(head + (i * PAGE_SIZE) as u64, bits));
        }
        shared.add_rss(nr as u64);
        return Ok(true);
    }
    Ok(false)
}
