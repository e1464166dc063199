//! get_user_pages and pin_user_pages: handing user pages to the kernel and to devices
//! (SEMANTICS.md section 6, Linux `mm/gup.c`).
//!
//! Picture: a GUP caller wants the *frames* behind a user range, to use them behind the page
//! tables (DMA, `/proc/pid/mem`, a pipe holding a `vmsplice`d page). The slow path asks the VMA
//! whether the access may happen at all (`check_vma_flags`), then walks the page table and
//! takes the page only if the PTE already allows exactly what the caller will do; otherwise it
//! raises the fault a user access would (a write fault, or for a read-only pin an *unshare*
//! fault) and looks again. The fast path does the same walk with interrupts off and no lock —
//! it cannot see the VMA, so it takes only pages whose PTE alone proves they may be taken, and
//! leaves every other page to the slow path. The invariant: a page GUP hands out for writing is
//! one the process could write itself without a copy (so writes through the pin and through the
//! page tables meet), and, from 2022, a read-only pin of an anon page is on an exclusive page
//! (so the next write by the process reuses it instead of copying away from the pin). Older
//! eras break this invariant exactly as Linux did (`rules.rs`).

#![deny(unsafe_code)]

use core::sync::atomic::{fence, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::era::Era;
use crate::error::{FaultError, MmError};
use crate::fault::{fault_inner, Access, FaultKind};
use crate::foll::FollFlags;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::opstat::{mark, Phase::*};
use crate::pagetable::ENTRIES;
use crate::pagetable::{PageTable, Pte, Slots};
use crate::pin::{
    count_held, grab_kind, grab_page, hold_bits, try_grab_folio_fast, unpin_pages_uncounted,
    PinKind, PinnedPage, UnpinDirty,
};
use crate::rules::{self, CowMapping, FollowWriteState, ForceWriteRetry};
use crate::stats;
use crate::uaccess::access_ok;
use crate::vma::{Sharing, Vma, VmaFlags};
use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

/// A fault that reports success must let the next look take the page within this many rounds
/// (forced write, then unshare, then a retry); more means the fault path makes no progress.
const MAX_FAULT_ROUNDS: usize = 16;

/// Rounds one page may spend filling a file page with the address space let go (the fault's
/// `Retry`) before the walk gives up with `EFAULT`. Not an invariant: while the lock is let go
/// reclaim, `drop_caches` or a hole punch may undo each fill, so each such round is progress
/// that did not stick, and the bound only keeps a caller from looping forever against them
/// (Linux loops until `fatal_signal_pending`, which is checked too).
const MAX_FILL_ROUNDS: usize = 256;

/// Which entry point is validating the caller's flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Entry {
    Get,
    Pin,
}

/// Validates caller flags and adds `FOLL_GET` or `FOLL_PIN` (Linux `is_valid_gup_args`):
/// only `WRITE`, `FORCE`, `LONGTERM` may come from the caller (`GET` is tolerated on the get
/// entry points); `PIN` and `COW` are internal; `LONGTERM` only when pinning.
#[doc(alias = "is_valid_gup_args")]
fn valid_gup_flags(flags: FollFlags, entry: Entry) -> Result<FollFlags, MmError> {
    let allowed = FollFlags::WRITE | FollFlags::FORCE | FollFlags::LONGTERM | FollFlags::GET;
    if flags.without(allowed) != FollFlags::NONE {
        return Err(MmError::Inval);
    }
    match entry {
        Entry::Get if flags.contains(FollFlags::LONGTERM) => Err(MmError::Inval),
        Entry::Get => Ok(flags | FollFlags::GET),
        Entry::Pin if flags.contains(FollFlags::GET) => Err(MmError::Inval),
        Entry::Pin => Ok(flags | FollFlags::PIN),
    }
}

/// Takes plain references (`FOLL_GET`) on `pages.len()` pages from the page containing
/// `start`, faulting them in as needed (Linux `get_user_pages`). Returns how many pages were
/// taken, into `pages[..n]` (each slot must be `None`); an error only if not even the first
/// page could be taken. Release with [`unpin_user_pages`].
#[doc(alias = "get_user_pages_remote")]
pub fn get_user_pages<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Get)?;
    get_user_pages_locked(mm, aspace, start, flags, pages)
}

/// Pins (`FOLL_PIN`) `pages.len()` pages from the page containing `start`, faulting and
/// unsharing as needed (Linux `pin_user_pages`). Results as [`get_user_pages`]. Before 2020
/// the pins are plain references, as they were in Linux.
pub fn pin_user_pages<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Pin)?;
    get_user_pages_locked(mm, aspace, start, flags, pages)
}

/// [`get_user_pages`] trying the lockless fast path first; pages it cannot take go through the
/// slow path (Linux `get_user_pages_fast`).
pub fn get_user_pages_fast<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Get)?;
    gup_fast_fallback(mm, aspace, start, flags, pages)
}

/// [`pin_user_pages`] trying the lockless fast path first (Linux `pin_user_pages_fast`).
pub fn pin_user_pages_fast<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Pin)?;
    gup_fast_fallback(mm, aspace, start, flags, pages)
}

/// [`get_user_pages`] or [`pin_user_pages`] (`pin`), through the fast path first if `fast`,
/// over a hold that may let the address space go: a file page not cached yet, or a
/// write-notify fault that needs the filesystem's blocks, is filled with the address space
/// unlocked and then looked up again (Linux's `VM_FAULT_RETRY` for a caller that passes
/// `FAULT_FLAG_ALLOW_RETRY`), as the page fault does, instead of polling the filesystem
/// with the lock held. The kernel's system calls that take user pages (O_DIRECT, vmsplice,
/// io_uring registration, gup_test) come here.
pub fn user_pages_held<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    start: VirtAddr,
    gup_flags: FollFlags,
    pin: bool,
    fast: bool,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let entry = if pin { Entry::Pin } else { Entry::Get };
    let flags = valid_gup_flags(gup_flags, entry)?;
    if fast {
        gup_fast_fallback(mm, hold, start, flags, pages)
    } else {
        get_user_pages_locked(mm, hold, start, flags, pages)
    }
}

/// Only the lockless fast path, over a shared `&AddressSpace` (Linux
/// `get_user_pages_fast_only`): the number of leading pages taken, possibly 0. A caller that
/// wants the rest takes the address-space lock and continues with [`get_user_pages`] at
/// `start + n` pages — which is what [`get_user_pages_fast`] does.
pub fn get_user_pages_fast_only<A: Arch, S: AsRef<MmShared> + ?Sized>(
    mm: &Mm<A>,
    aspace: &S,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Get)?;
    check_range(start.align_down(), pages.len())?;
    Ok(gup_fast(mm, aspace.as_ref(), start, flags, pages))
}

/// The pinning twin of [`get_user_pages_fast_only`].
pub fn pin_user_pages_fast_only<A: Arch, S: AsRef<MmShared> + ?Sized>(
    mm: &Mm<A>,
    aspace: &S,
    start: VirtAddr,
    gup_flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let flags = valid_gup_flags(gup_flags, Entry::Pin)?;
    check_range(start.align_down(), pages.len())?;
    Ok(gup_fast(mm, aspace.as_ref(), start, flags, pages))
}

/// Releases one page taken by any GUP entry point (Linux `unpin_user_page`, or `put_page` for
/// `FOLL_GET`).
pub fn unpin_user_page<A: Arch>(mm: &Mm<A>, page: PinnedPage) {
    page.unpin(mm);
}

/// Releases every page in `pages`, leaving the slots `None` (Linux `unpin_user_pages`).
pub fn unpin_user_pages<A: Arch>(mm: &Mm<A>, pages: &mut [Option<PinnedPage>]) {
    unpin_user_pages_dirty_lock(mm, pages, UnpinDirty::Clean);
}

/// Releases every page in `pages`, first marking each dirty if the device wrote them (Linux
/// `unpin_user_pages_dirty_lock`).
pub fn unpin_user_pages_dirty_lock<A: Arch>(
    mm: &Mm<A>,
    pages: &mut [Option<PinnedPage>],
    dirty: UnpinDirty,
) {
    crate::pin::unpin_pages(mm, pages, dirty);
}

// ---- the slow path ----

/// A point where Linux's GUP loop may let other threads of the process run: after a fault,
/// before looking at the PTE again (`cond_resched()` in `__get_user_pages`; the mmap lock is
/// only held for reading, so `madvise(MADV_DONTNEED)` may run). Tests use it to play the
/// racing thread of the Dirty COW exploit, through [`Hooked`].
#[cfg(test)]
pub(crate) type RetryHook<'h, A> = dyn FnMut(&Mm<A>, &mut AddressSpace) + 'h;

/// The slow path's hold on the address space (Linux: the caller of `__get_user_pages` holds
/// `mmap_lock` for reading across the whole loop, and the loop calls `cond_resched()` between
/// a fault and the next look at the PTE). A plain `AddressSpace` is a hold that never lets go;
/// the kernel's hold lets the address-space lock and the CPU go there, so that another
/// thread's `madvise` or fork really runs between the fault and the retry, as on Linux.
pub trait MmapHold<A: Arch> {
    /// The address space, locked. Borrowed afresh after every [`MmapHold::resched`].
    fn aspace(&mut self) -> &mut AddressSpace;
    /// The resched point. Returns whether the lock was let go and another task may have
    /// changed the address space meanwhile: the loop then looks the VMA up again (it does each
    /// round, as Linux does after it dropped `mmap_lock`) and does not count the round against
    /// its no-progress bound (`MAX_FAULT_ROUNDS`). The hold itself bounds how often it lets
    /// go within one call, so the loop ends even against a thread that undoes every fault.
    fn resched(&mut self, mm: &Mm<A>) -> bool;
    /// Whether [`MmapHold::unlocked`] really lets the address space go. A hold that cannot
    /// (a bare locked `AddressSpace`) has its faults fill file pages in place, polling.
    fn can_unlock(&self) -> bool {
        false
    }
    /// Runs `f` with the address space unlocked, then locks it again (Linux: `mmap_lock`
    /// dropped for `VM_FAULT_RETRY`, retaken by `__get_user_pages`' caller); only called if
    /// [`MmapHold::can_unlock`].
    fn unlocked(&mut self, _mm: &Mm<A>, f: &mut dyn FnMut()) {
        f();
    }
    /// Whether the caller is being killed (Linux `fatal_signal_pending(current)`), as seen at
    /// the last [`MmapHold::unlocked`]: the fill-retry loop then stops with `EFAULT`.
    fn fatal_signal_pending(&self) -> bool {
        false
    }
}

impl<A: Arch> MmapHold<A> for AddressSpace {
    fn aspace(&mut self) -> &mut AddressSpace {
        self
    }

    fn resched(&mut self, _: &Mm<A>) -> bool {
        false
    }
}

/// A hold that runs a test's [`RetryHook`] at the resched point, without letting go.
#[cfg(test)]
struct Hooked<'a, 'h, A: Arch> {
    aspace: &'a mut AddressSpace,
    hook: &'a mut RetryHook<'h, A>,
}

#[cfg(test)]
impl<A: Arch> MmapHold<A> for Hooked<'_, '_, A> {
    fn aspace(&mut self) -> &mut AddressSpace {
        self.aspace
    }

    fn resched(&mut self, mm: &Mm<A>) -> bool {
        (self.hook)(mm, self.aspace);
        false
    }
}

/// The slow path over validated flags (Linux `__get_user_pages`).
#[doc(alias = "__get_user_pages")]
pub(crate) fn get_user_pages_locked<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    start: VirtAddr,
    flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let start = start.align_down();
    check_range(start, pages.len())?;
    for (i, slot) in pages.iter_mut().enumerate() {
        assert!(slot.is_none(), "GUP output slot {i} already holds a page");
        let va = VirtAddr::new(start.as_u64().wrapping_add(i as u64 * PAGE));
        match get_one_page(mm, hold, va, flags) {
            Ok(page) => {
                *slot = Some(page);
                stats::inc(&mm.counters.gup_slow_pages);
            }
            Err(e) if i == 0 => return Err(e),
            Err(_) => return Ok(i),
        }
    }
    Ok(pages.len())
}

/// `EFAULT` unless the `nr_pages` pages from the page-aligned `start` are all user addresses
/// ([`access_ok`]; Linux `gup_fast_fallback`'s overflow and `TASK_SIZE_MAX` checks).
fn check_range(start: VirtAddr, nr_pages: usize) -> Result<(), MmError> {
    let len = nr_pages.checked_mul(PAGE_SIZE).ok_or(MmError::Fault)?;
    if access_ok(start, len) {
        Ok(())
    } else {
        Err(MmError::Fault)
    }
}

/// What the page-table look at one address found (Linux `follow_page_pte`).
enum Follow {
    /// The PTE allows the access: take this frame.
    Page(PhysAddr),
    /// Raise this fault first, then look again.
    Fault(FaultKind),
}

fn get_one_page<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    va: VirtAddr,
    mut flags: FollFlags,
) -> Result<PinnedPage, MmError> {
    if va.as_u64() >= USER_END {
        return Err(MmError::Fault);
    }
    // The pin's DMA direction is the caller's request, even if a FOLL_FORCE retry below drops
    // FOLL_WRITE from the lookup (the COW was broken for this caller).
    let requested = flags;
    let mut stalled = 0;
    let mut fills = 0;
    while stalled < MAX_FAULT_ROUNDS {
        let era = mm.era();
        let aspace = hold.aspace();
        // The VMA may have changed while the lock was let go at the resched point.
        let vma = aspace.find_vma(va).ok_or(MmError::Fault)?;
        check_vma_flags(mm, vma, flags)?;
        let kind = match follow_page_pte(mm, aspace, vma, va, flags) {
            Follow::Page(frame) => return Ok(grab_page(mm, aspace, frame, requested | flags)),
            Follow::Fault(kind) => kind,
        };
        let forced = (kind == FaultKind::Write && !vma.prot().write()) || !vma.prot().accessible();
        let access = if forced { Access::Force } else { Access::User };
        let may_retry = hold.can_unlock();
        let aspace = hold.aspace();
        match fault_inner(mm, aspace, va, kind, access, may_retry) {
            Ok(()) => {}
            Err(FaultError::Retry) => {
                // The page is read (or another task's read waited for) with the address space
                // unlocked, never with a page lock or the filesystem waited for under it; then
                // the loop looks the VMA up again.
                let (file, index, write) = aspace
                    .find_vma(va)
                    .and_then(|v| {
                        let write = kind == FaultKind::Write && v.vma_wants_writenotify();
                        v.file_page(va).map(|(f, i)| (f.clone(), i, write))
                    })
                    .ok_or(MmError::Fault)?;
                let mut filled = Ok(());
                hold.unlocked(mm, &mut || {
                    filled = crate::pagecache::filemap_fault_fill(mm, &*file.0, index, write);
                });
                filled.map_err(|e| match e {
                    crate::pagecache::FileFault::NoMem => MmError::NoMem,
                    _ => MmError::Fault,
                })?;
                // A fill is progress even if something undid it by the next look (the lock
                // was let go): not a no-progress round, but bounded (Linux `faultin_page`'s
                // caller stops on a fatal signal).
                fills += 1;
                if fills >= MAX_FILL_ROUNDS || hold.fatal_signal_pending() {
                    return Err(MmError::Fault);
                }
                continue;
            }
            Err(FaultError::Segv(_)) => return Err(MmError::Fault),
            Err(FaultError::Oom) => return Err(MmError::NoMem),
        }
        if kind == FaultKind::Unshare {
            stats::inc(&mm.counters.gup_unshare_faults);
        }
        if forced {
            // Linux `faultin_page` after a COW break for FOLL_FORCE.
            match rules::foll_force_cow_retry(era) {
                ForceWriteRetry::DropFollWrite => flags = flags.without(FollFlags::WRITE),
                ForceWriteRetry::SetFollCow => flags = flags | FollFlags::COW,
                ForceWriteRetry::Refault => {}
            }
        }
        let seq = hold.aspace().mmap_write_seq();
        if !hold.resched(mm) {
            stalled += 1;
        } else if hold.aspace().mmap_write_seq() != seq {
            // What ran meanwhile would have waited for Linux's `mmap_lock`, held for reading
            // across `cond_resched()`; Linux sees such a change only where it really drops the
            // lock, and then restarts from the caller's flags. A forced write keeping its
            // dropped FOLL_WRITE (or its FOLL_COW) across a fork could write a page the child
            // now shares.
            flags = requested;
            stalled = 0;
        }
    }
    panic!("GUP at {va:#x}: the fault path resolves but the page never becomes followable");
}

/// May this access through `vma` happen at all (Linux `check_vma_flags`)? `EFAULT` if not.
///
/// A write needs `PROT_WRITE`, or `FOLL_FORCE` on a COW mapping; a long-term write pin of a
/// shared mapping that needs dirty tracking is refused (`writable_file_mapping_allowed`,
/// seed 002). An inaccessible (`PROT_NONE`) mapping is reached only with `FOLL_FORCE` (Linux:
/// `VM_MAYREAD` for a read; a write goes through the COW rule below like any read-only one).
fn check_vma_flags<A: Arch>(mm: &Mm<A>, vma: &Vma, flags: FollFlags) -> Result<(), MmError> {
    if !vma.prot().accessible()
        && (!flags.contains(FollFlags::FORCE) || !vma.flags().contains(VmaFlags::MAYREAD))
    {
        return Err(MmError::Fault);
    }
    if flags.contains(FollFlags::WRITE) {
        if !rules::writable_file_mapping_allowed(mm.era(), flags, vma.needs_dirty_tracking()) {
            return Err(MmError::Fault);
        }
        if !vma.prot().write() && (!flags.contains(FollFlags::FORCE) || !vma.is_cow_mapping()) {
            return Err(MmError::Fault);
        }
    }
    Ok(())
}

/// Looks at the PTE of `va` and decides whether the page can be taken as it is (Linux
/// `follow_page_pte` with `can_follow_write_pte` and `gup_must_unshare`).
fn follow_page_pte<A: Arch>(
    mm: &Mm<A>,
    aspace: &AddressSpace,
    vma: &Vma,
    va: VirtAddr,
    flags: FollFlags,
) -> Follow {
    let write = flags.contains(FollFlags::WRITE);
    let missing = Follow::Fault(if write {
        FaultKind::Write
    } else {
        FaultKind::Read
    });
    // `translate`: on a PMD-mapped THP, the subpage's 4 KiB view of the PMD (Linux
    // `follow_huge_pmd`), so the same rules decide and the pin lands on the subpage's folio.
    let Some(pte) = aspace.page_table(mm).translate(va) else {
        return missing;
    };
    // A `PROTNONE` PTE maps its frame too; only FOLL_FORCE gets here for one (check_vma_flags).
    if !pte.is_mapping() {
        return missing;
    }
    let meta = mm.frames().meta(pte.frame());
    let page_flags = meta.flags();
    let exclusive = page_flags.contains(FrameFlags::ANON_EXCLUSIVE);
    if write {
        let state = FollowWriteState {
            pte_writable: pte.is_writable(),
            pte_dirty: pte.is_dirty(),
            vma_shared: vma.sharing() == Sharing::Shared,
            vma_maywrite: vma.flags().contains(VmaFlags::MAYWRITE),
            vma_write: vma.prot().write(),
            page_anon_exclusive: exclusive,
            vma_soft_dirty_tracking: vma.soft_dirty_tracking(),
            pte_soft_dirty: pte.is_soft_dirty(),
        };
        if !rules::can_follow_write_pte(mm.era(), flags, state) {
            return Follow::Fault(FaultKind::Write);
        }
    }
    let mapping = if vma.is_cow_mapping() {
        CowMapping::Yes
    } else {
        CowMapping::No
    };
    let anon = page_flags.contains(FrameFlags::ANON);
    if !pte.is_writable() && rules::gup_must_unshare(mm.era(), flags, anon, exclusive, mapping) {
        return Follow::Fault(FaultKind::Unshare);
    }
    Follow::Page(pte.frame())
}

// ---- the fast path ----

/// The fast path, then the slow path for the pages it left (Linux
/// `internal_get_user_pages_fast`).
fn gup_fast_fallback<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut dyn MmapHold<A>,
    start: VirtAddr,
    flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> Result<usize, MmError> {
    let start = start.align_down();
    check_range(start, pages.len())?;
    let nr = gup_fast(mm, &aspace.aspace().shared, start, flags, pages);
    if nr == pages.len() {
        return Ok(nr);
    }
    let left = (pages.len() - nr) as u64;
    mm.counters
        .gup_fast_fallbacks
        .fetch_add(left, Ordering::Relaxed);
    let rest_start = VirtAddr::new(start.as_u64().wrapping_add(nr as u64 * PAGE));
    match get_user_pages_locked(mm, aspace, rest_start, flags, &mut pages[nr..]) {
        Ok(more) => Ok(nr + more),
        Err(_) if nr > 0 => Ok(nr),
        Err(e) => Err(e),
    }
}

/// Takes the leading pages of the range whose PTEs alone prove they may be taken, without the
/// address-space lock and without looking at any VMA (Linux `gup_fast`). Interrupts are off
/// throughout: page-table pages are freed only after a TLB flush, which (on the real machine)
/// waits for this CPU, so every table reached stays a table until the walk ends.
/// Allocation-free, log-free. Returns the number of pages taken.
///
/// Both callers checked the range with [`check_range`] (page-aligned, below `USER_END`, no
/// overflow), so the addresses below are computed without checks.
fn gup_fast<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    start: VirtAddr,
    flags: FollFlags,
    pages: &mut [Option<PinnedPage>],
) -> usize {
    let start = start.align_down();
    let era = mm.era();
    // Pin or reference, decided once for the call (every page of it is taken the same way).
    let kind = grab_kind(mm, shared, flags);
    // A pin must not slip past a concurrent fork's pincount check: sample the sequence count
    // first; an odd value means fork is write-protecting right now (Linux
    // `raw_read_seqcount` + `read_seqcount_retry` of `write_protect_seq` in `gup_fast`).
    let seq = if kind == PinKind::Pin {
        let s = shared.write_protect_seq().load(Ordering::Acquire);
        if s % 2 == 1 {
            stats::inc(&mm.counters.gup_fast_seq_retries);
            return 0;
        }
        Some(s)
    } else {
        None
    };
    let take = FastTake {
        era,
        flags,
        kind,
        bits: hold_bits(kind, flags),
        need: if flags.contains(FollFlags::WRITE) {
            Pte::PRESENT | Pte::USER | Pte::WRITABLE
        } else {
            Pte::PRESENT | Pte::USER
        },
        check_keep: !flags.contains(FollFlags::WRITE) || flags.contains(FollFlags::LONGTERM),
    };
    let irq = mm.arch().irq_save();
    let pt = PageTable::new(mm, shared.root());
    let mut nr = 0;
    mark(GupEnter);
    // One walk per PT page (2 MiB), then the PTEs of that table in one loop.
    while nr < pages.len() {
        let va = start.as_u64().wrapping_add((nr as u64).wrapping_mul(PAGE));
        let Some(pt_page) = pt.walk_pt(VirtAddr::new(va)) else {
            // No PT: a PMD leaf (a THP) perhaps, whose subpages are taken from it.
            let (got, whole) = gup_fast_pmd_leaf(mm, &pt, &take, va, &mut pages[nr..]);
            nr += got;
            if whole {
                continue;
            }
            break;
        };
        let first = VirtAddr::new(va).table_index(1);
        let span = (ENTRIES - first).min(pages.len() - nr);
        let out = &mut pages[nr..nr + span];
        let got = gup_fast_pt(mm, &take, pt.slots(pt_page), first, out);
        nr += got;
        if got < span {
            break;
        }
    }
    mm.arch().irq_restore(irq);
    if let Some(seq) = seq {
        // Pairs with fork's fence after making the count odd: either fork's pincount read saw
        // our pins, or we see its odd (or advanced) count here and give the pins back.
        fence(Ordering::SeqCst);
        if shared.write_protect_seq().load(Ordering::Acquire) != seq {
            unpin_pages_uncounted(mm, &mut pages[..nr], UnpinDirty::Clean);
            stats::inc(&mm.counters.gup_fast_seq_retries);
            return 0;
        }
    }
    // The held gauge and the counter move once per call, for the pages handed out.
    count_held(mm, kind, nr as u64);
    mm.counters
        .gup_fast_pages
        .fetch_add(nr as u64, Ordering::Relaxed);
    mark(GupLeave);
    nr
}

/// What one GUP-fast call decided before its loop: the same for every page it takes.
struct FastTake {
    era: Era,
    flags: FollFlags,
    /// Pin or reference ([`grab_kind`]).
    kind: PinKind,
    /// The [`PinnedPage`] bits of `kind` and the DMA direction ([`hold_bits`]).
    bits: u64,
    /// The PTE bits a page needs to be taken here: present, user, and writable for a write.
    need: u64,
    /// Whether [`gup_fast_may_keep`] can say no: not for a write that is not long-term (its
    /// PTE is writable, by `need`, so no unshare; only a long-term write refuses file pages).
    check_keep: bool,
}

/// GUP-fast over the PTEs `first..first + out.len()` of one PT page (Linux
/// `gup_fast_pte_range`): the small pages through [`gup_fast_pte_range`], a run of PTEs
/// mapping consecutive subpages of one large folio with one atomic add of its length
/// ([`gup_fast_folio_run`]). Returns the pages taken, a prefix of `out`; they are not yet
/// counted in the held gauges (the caller counts them once).
#[inline(always)]
fn gup_fast_pt<A: Arch>(
    mm: &Mm<A>,
    take: &FastTake,
    slots: Slots<'_>,
    first: usize,
    out: &mut [Option<PinnedPage>],
) -> usize {
    // One copy of the loop per answer of `check_keep`, each compiled on its own: as one
    // function, LLVM versioned the loop on the flag but gave both versions one register
    // assignment, and the re-read of the frame's flags after the grab in the checking version
    // (`9cfc5d3`) cost the write pin's loop, which never runs it, 3 register moves per page.
    // And one per kind of hold: the pin's extra count (and its fence) or none is then decided
    // at compile time instead of tested per page (a reference's loop, vmsplice's, is 2
    // instructions a page shorter).
    match (take.check_keep, take.kind == PinKind::Pin) {
        (true, true) => gup_fast_pt_checked::<A, true, true>(mm, take, slots, first, out),
        (true, false) => gup_fast_pt_checked::<A, true, false>(mm, take, slots, first, out),
        (false, true) => gup_fast_pt_checked::<A, false, true>(mm, take, slots, first, out),
        (false, false) => gup_fast_pt_checked::<A, false, false>(mm, take, slots, first, out),
    }
}

/// [`gup_fast_pt`] for one value of `take.check_keep` (`CHECK_KEEP`) and of
/// `take.kind == PinKind::Pin` (`PIN`). Out of line: its loop keeps its values in registers
/// instead of sharing them with the walk around it.
#[inline(never)]
fn gup_fast_pt_checked<A: Arch, const CHECK_KEEP: bool, const PIN: bool>(
    mm: &Mm<A>,
    take: &FastTake,
    slots: Slots<'_>,
    first: usize,
    out: &mut [Option<PinnedPage>],
) -> usize {
    let mut done = 0;
    loop {
        let (got, stop) = gup_fast_pte_range::<A, CHECK_KEEP, PIN>(
            mm,
            take,
            slots,
            first + done,
            &mut out[done..],
        );
        done += got;
        let Stop::Large(pte) = stop else {
            return done;
        };
        let (got, whole) = gup_fast_folio_run(mm, take, slots, first + done, pte, &mut out[done..]);
        done += got;
        if !whole {
            return done;
        }
    }
}

/// Why [`gup_fast_pte_range`] stopped.
enum Stop {
    /// At the end of its range, or at a page the fast path cannot take.
    End,
    /// At this PTE, which maps a subpage of a large folio: [`gup_fast_folio_run`]'s.
    Large(Pte),
}

/// The small pages of [`gup_fast_pt`]: each PTE read once, the page taken, the PTE read again.
/// Returns the pages taken, a prefix of `out`, and why it stopped there.
#[inline(always)]
fn gup_fast_pte_range<A: Arch, const CHECK_KEEP: bool, const PIN: bool>(
    mm: &Mm<A>,
    take: &FastTake,
    slots: Slots<'_>,
    first: usize,
    out: &mut [Option<PinnedPage>],
) -> (usize, Stop) {
    let metas = mm.frames().metas();
    let need = take.need;
    let mut i = 0;
    for (slot, o) in slots.beside(first, out) {
        let pte = slot.load();
        if pte.raw() & need != need {
            break;
        }
        // A PTE can map a frame beyond the table (a device's memory): the slow path's.
        let Some(meta) = metas.get(pte.frame().pfn()) else {
            break;
        };
        let page_flags = meta.flags();
        mark(GupWalk);
        if page_flags.intersects(FrameFlags::HEAD | FrameFlags::TAIL) {
            return (i, Stop::Large(pte));
        }
        assert_empty(o);
        debug_assert_eq!(PIN, take.kind == PinKind::Pin);
        let kind = if PIN { PinKind::Pin } else { PinKind::Get };
        if !try_grab_folio_fast(meta, kind, 1) {
            break;
        }
        mark(GupGrab);
        let page = PinnedPage::from_bits(pte.frame(), take.bits);
        // The exclusive bit is read again after the grab (its fence orders the load), as Linux
        // reads it in `gup_must_unshare` after the pin: a clear between the first read and the
        // grab with the PTE unchanged must not let a read-only pin keep a shared page.
        if (CHECK_KEEP && !gup_fast_may_keep(take.era, take.flags, pte, meta.flags()))
            || slot.load() != pte
        {
            // Linux backs out with `gup_put_folio` and leaves the page to the slow path.
            page.release_uncounted(mm);
            break;
        }
        *o = Some(page);
        i += 1;
        mark(GupCheck);
    }
    (i, Stop::End)
}

/// Every GUP output slot must come in empty (a page left there would leak).
#[inline(always)]
fn assert_empty(slot: &Option<PinnedPage>) {
    assert!(slot.is_none(), "GUP output slot already holds a page");
}

/// The large-folio arm of [`gup_fast_pte_range`]: the PTE at `index` maps a subpage of a large
/// folio; the following PTEs that map the next subpages of the same folio with the same bits
/// (at most `out.len()`) are taken with one reference add and one pin add on the folio (Linux
/// `try_grab_folio_fast` with `refs`), then each is kept only if its PTE is unchanged and
/// [`gup_fast_may_keep`] allows it; the first that is not ends the run and gives back the rest.
/// Returns the pages taken and whether the whole run was (else the caller stops there).
#[inline(never)]
fn gup_fast_folio_run<A: Arch>(
    mm: &Mm<A>,
    take: &FastTake,
    slots: Slots<'_>,
    index: usize,
    pte: Pte,
    out: &mut [Option<PinnedPage>],
) -> (usize, bool) {
    let metas = mm.frames().metas();
    let frames = mm.frames();
    let head = frames.head_meta(&metas[pte.frame().pfn()]);
    // The run: consecutive PTEs whose only difference is the next frame, inside the folio.
    let mut n = 1;
    while n < out.len() && index + n < ENTRIES {
        let next = slots.at(index + n).load();
        let expected = Pte::from_raw(pte.raw().wrapping_add(n as u64 * PAGE));
        if next != expected {
            break;
        }
        let Some(meta) = metas.get(expected.frame().pfn()) else {
            break;
        };
        if !core::ptr::eq(frames.head_meta(meta), head) {
            break;
        }
        n += 1;
    }
    for slot in &out[..n] {
        assert_empty(slot);
    }
    if !try_grab_folio_fast(head, take.kind, n as u32) {
        return (0, false);
    }
    for (k, slot) in out[..n].iter_mut().enumerate() {
        *slot = Some(PinnedPage::from_bits(
            pte.frame() + k as u64 * PAGE,
            take.bits,
        ));
    }
    for k in 0..n {
        let expected = Pte::from_raw(pte.raw().wrapping_add(k as u64 * PAGE));
        let page_flags = metas[expected.frame().pfn()].flags();
        if !gup_fast_may_keep(take.era, take.flags, expected, page_flags)
            || slots.at(index + k).load() != expected
        {
            // Back out from here on, as Linux's `gup_put_folio`, and leave it to the slow path.
            unpin_pages_uncounted(mm, &mut out[k..n], UnpinDirty::Clean);
            return (k, false);
        }
    }
    (n, true)
}

/// GUP-fast on a PMD leaf (Linux `gup_fast_pmd_leaf`): the subpages of the THP mapped at
/// `va`'s 2 MiB, from `va` up to the end of that 2 MiB or of `pages`, taken with one
/// reference add (and one pin add) on the folio for all of them, as Linux's
/// `try_grab_folio_fast` with `refs`, and kept only if the PMD is unchanged afterwards.
/// Returns the pages taken and whether all of that span was (else the caller stops there).
#[cold]
fn gup_fast_pmd_leaf<A: Arch>(
    mm: &Mm<A>,
    pt: &PageTable<'_, A>,
    take: &FastTake,
    va: u64,
    pages: &mut [Option<PinnedPage>],
) -> (usize, bool) {
    // A PMD leaf, or no PD at all under a PUD leaf (a 1 GiB hugetlb page, Linux
    // `gup_fast_pud_leaf`): the same steps over the leaf's span.
    let (slot, level) = match pt.walk_pmd(VirtAddr::new(va)) {
        Some(slot) => (slot, 2),
        None => match pt.walk_pud(VirtAddr::new(va)) {
            Some(slot) => (slot, 3),
            None => return (0, false),
        },
    };
    let pmd = slot.load();
    if !pmd.is_huge() || !pmd.is_present() || !pmd.has(Pte::USER) {
        return (0, false);
    }
    if take.flags.contains(FollFlags::WRITE) && !pmd.is_writable() {
        return (0, false);
    }
    let span_end = (va | (crate::pagetable::level_span(level) - 1)) + 1;
    let want = ((span_end - va) / PAGE) as usize;
    let n = pages.len().min(want);
    let metas = mm.frames().metas();
    let first = pmd.huge_subpage_at(VirtAddr::new(va), level);
    let head = mm.frames().head_meta(&metas[first.frame().pfn()]);
    for page in &pages[..n] {
        assert_empty(page);
    }
    if !try_grab_folio_fast(head, take.kind, n as u32) {
        return (0, false);
    }
    for (k, page) in pages[..n].iter_mut().enumerate() {
        *page = Some(PinnedPage::from_bits(
            first.frame() + k as u64 * PAGE,
            take.bits,
        ));
    }
    for k in 0..n {
        let sub = pmd.huge_subpage_at(VirtAddr::new(va + k as u64 * PAGE), level);
        let meta = &metas[sub.frame().pfn()];
        if !gup_fast_may_keep(take.era, take.flags, sub, meta.flags()) || slot.load() != pmd {
            unpin_pages_uncounted(mm, &mut pages[k..n], UnpinDirty::Clean);
            return (k, false);
        }
    }
    (n, n == want)
}

/// After taking the page: may GUP-fast keep it without knowing the VMA? Not if the pin needs
/// an unshare (`gup_must_unshare` with no VMA: long-term pins of non-anon pages always fall
/// back), nor for a long-term write pin of a page that is neither anon nor shmem (it may be a
/// dirty-tracked file page; Linux `folio_fast_pin_allowed`).
#[doc(alias = "folio_fast_pin_allowed")]
#[inline(always)]
fn gup_fast_may_keep(era: Era, flags: FollFlags, pte: Pte, page_flags: FrameFlags) -> bool {
    let anon = page_flags.contains(FrameFlags::ANON);
    let exclusive = page_flags.contains(FrameFlags::ANON_EXCLUSIVE);
    if !pte.is_writable()
        && rules::gup_must_unshare(era, flags, anon, exclusive, CowMapping::Unknown)
    {
        return false;
    }
    if flags.contains(FollFlags::LONGTERM | FollFlags::WRITE)
        && !anon
        && !page_flags.contains(FrameFlags::SHMEM)
    {
        return false;
    }
    true
}

// ---- FOLL_FORCE access to another address (`/proc/pid/mem`, ptrace) ----

/// Writes `data` at `va` in `aspace` with `FOLL_FORCE` semantics, as `/proc/pid/mem` and
/// `PTRACE_POKEDATA` do (Linux `access_remote_vm` with `FOLL_FORCE | FOLL_WRITE`): a private
/// read-only mapping is written by breaking COW, never through to the page below. Returns the
/// bytes written (a prefix on a fault), `EFAULT`/`EIO`-like [`MmError::Fault`] if none.
#[doc(alias = "access_remote_vm")]
pub fn access_process_vm_write<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    data: &[u8],
) -> Result<usize, MmError> {
    access_process_vm_write_held(mm, aspace, va, data)
}

/// [`access_process_vm_write`] with a [`RetryHook`] (tests play the racing thread with it).
#[cfg(test)]
pub(crate) fn access_process_vm_write_hooked<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    data: &[u8],
    hook: &mut RetryHook<'_, A>,
) -> Result<usize, MmError> {
    access_process_vm_write_held(mm, &mut Hooked { aspace, hook }, va, data)
}

/// [`access_process_vm_write`] through a [`MmapHold`] that may let the address space go at the
/// slow path's resched point (the kernel's `/proc/pid/mem`): the two-thread Dirty COW race.
pub fn access_process_vm_write_held<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    va: VirtAddr,
    data: &[u8],
) -> Result<usize, MmError> {
    if !access_ok(va, data.len()) {
        return Err(MmError::Fault);
    }
    let mut done = 0;
    while done < data.len() {
        let at = va + done as u64;
        let off = at.page_offset();
        let n = (PAGE_SIZE - off).min(data.len() - done);
        let mut slot = [None];
        let flags = FollFlags::WRITE | FollFlags::FORCE | FollFlags::GET;
        match get_user_pages_locked(mm, hold, at, flags, &mut slot) {
            Ok(_) => {}
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
        let page = slot[0].take().expect("GUP reported one page");
        if mm.is_zero_frame(page.frame()) {
            // Only the 2009 retry (FOLL_WRITE dropped, then a racing MADV_DONTNEED and a read
            // fault) can hand the zero page to a writer. Linux would have written it; cowlab
            // keeps the zero page's invariant and fails the write instead.
            page.unpin(mm);
            if done == 0 {
                return Err(MmError::Fault);
            }
            break;
        }
        page.dma_from_device()
            .expect("a FOLL_WRITE reference")
            .dma_write(mm, off, &data[done..done + n]);
        page.unpin_dirty(mm, UnpinDirty::MakeDirty);
        done += n;
    }
    Ok(done)
}

/// Reads `buf.len()` bytes at `va` in `aspace` with `FOLL_FORCE` semantics (`/proc/pid/mem`
/// read): faults pages in as a read would. Returns the bytes read.
pub fn access_process_vm_read<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    buf: &mut [u8],
) -> Result<usize, MmError> {
    access_process_vm_read_held(mm, aspace, va, buf)
}

/// [`access_process_vm_read`] through a [`MmapHold`] (see [`access_process_vm_write_held`]).
pub fn access_process_vm_read_held<A: Arch>(
    mm: &Mm<A>,
    hold: &mut dyn MmapHold<A>,
    va: VirtAddr,
    buf: &mut [u8],
) -> Result<usize, MmError> {
    if !access_ok(va, buf.len()) {
        return Err(MmError::Fault);
    }
    let mut done = 0;
    while done < buf.len() {
        let at = va + done as u64;
        let off = at.page_offset();
        let n = (PAGE_SIZE - off).min(buf.len() - done);
        let mut slot = [None];
        let flags = FollFlags::FORCE | FollFlags::GET;
        match get_user_pages_locked(mm, hold, at, flags, &mut slot) {
            Ok(_) => {}
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
        let page = slot[0].take().expect("GUP reported one page");
        page.dma_read(mm, off, &mut buf[done..done + n]);
        page.unpin(mm);
        done += n;
    }
    Ok(done)
}
