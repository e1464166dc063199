//! hugetlb mappings: `MAP_HUGETLB` and `MFD_HUGETLB` memory in 2 MiB pages from the hugetlb
//! pool (SEMANTICS.md section 11; Linux `mm/hugetlb.c`, `fs/hugetlbfs`).
//!
//! Picture: every hugetlb mapping maps a [`HugetlbFile`] (a memfd, or the anonymous file Linux
//! makes for `MAP_HUGETLB`), one PMD leaf per 2 MiB page, never a PT. A shared mapping maps the
//! file's folios; a private one maps them read-only and copies the whole 2 MiB on a write, and
//! where the file has no folio a private fault makes an anonymous hugetlb folio (`ANON` and
//! `ANON_EXCLUSIVE` on all 512 subpages, as a PMD-mapped THP). hugetlb folios are never split:
//! the rules of SEMANTICS.md sections 3-6 apply to the whole page (`hugetlb_wp`,
//! `copy_hugetlb_page_range`, GUP's subpage view through `PageTable::translate`).
//!
//! Reservations (Linux `hugetlb_reserve_pages`): mmap promises the pages the mapping can fault
//! in, or fails with `ENOMEM`. A shared mapping reserves, in the file, each index of its range
//! with no folio yet; the file keeps them until a fault or fallocate consumes them or a
//! truncate or the file's end releases them. A private mapping reserves its whole length for
//! the VMA ([`PrivateResv`], shared by the pieces a split makes, not by a fork child's copy);
//! faults consume indices, and the pieces' unconsumed promises are released when they go.
//! `MAP_NORESERVE` promises nothing: a fault that finds no free page is `SIGBUS`.

#![deny(unsafe_code)]

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::error::{FaultError, MmError, SegvReason};
use crate::fault::FaultKind;
use crate::folio::{HPAGE_PMD_NR, HPAGE_PMD_SIZE};
use crate::frame::{FrameFlags, HugeSize};
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::{PageTable, Pte, PteRef};
use crate::rules::{self, AnonPageState, WpReuse};
use crate::stats;
use crate::tlb::{MmuGather, TlbFlush};
use crate::vma::{Backing, Sharing, Vma};
use crate::wp::write_grant;
use crate::PAGE_SIZE;

/// Bytes of a hugetlb page of the default size (2 MiB); a 1 GiB file or VMA says its own
/// ([`HugetlbFile::page_bytes`], [`Vma::huge_bytes`]).
pub const HPAGE_SIZE: u64 = HPAGE_PMD_SIZE;

/// Is `x` a multiple of the default huge page size?
pub const fn huge_aligned(x: u64) -> bool {
    x & (HPAGE_SIZE - 1) == 0
}

/// Is `x` a multiple of `bytes` (a power of two)?
const fn aligned_to(x: u64, bytes: u64) -> bool {
    x & (bytes - 1) == 0
}

/// Whether this machine offers 1 GiB pages (Linux registers the 1 GiB hstate only on CPUs
/// with `X86_FEATURE_GBPAGES`): set once at boot by the kernel from CPUID, by the host tests
/// for their emulated MMU.
static GIGANTIC_SUPPORTED: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Offers (or withdraws) the 1 GiB hugetlb size.
pub fn set_gigantic_supported(on: bool) {
    GIGANTIC_SUPPORTED.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Does this machine have the 1 GiB hugetlb size?
pub fn gigantic_supported() -> bool {
    GIGANTIC_SUPPORTED.load(core::sync::atomic::Ordering::Relaxed)
}

impl Vma {
    /// The page size of a hugetlb VMA (its file's), `None` for any other VMA.
    pub fn huge_size(&self) -> Option<HugeSize> {
        match &self.backing {
            Backing::Hugetlb(map) => Some(map.file.hsize()),
            _ => None,
        }
    }

    /// [`Self::huge_size`] in bytes.
    pub fn huge_bytes(&self) -> Option<u64> {
        self.huge_size().map(HugeSize::bytes)
    }
}

/// A hugetlbfs file: a memfd made with `MFD_HUGETLB`, or the anonymous file behind a
/// `MAP_HUGETLB` mapping. Its folios are indexed in huge pages.
pub struct HugetlbFile {
    inner: spin::Mutex<FileInner>,
    /// Its page size (Linux `hstate_inode`).
    hsize: HugeSize,
    /// `/proc/<pid>/maps`' name for its mappings.
    name: String,
}

struct FileInner {
    /// Bytes (a multiple of the page size).
    size: u64,
    /// The page size (as [`HugetlbFile::hsize`], here for the methods under the lock).
    h: HugeSize,
    /// The page cache: huge-page index to folio head; the file holds one reference on each.
    pages: BTreeMap<u64, PhysAddr>,
    /// Indices with a pool reservation and no folio yet (Linux's inode `resv_map`).
    reserved: BTreeSet<u64>,
}

impl PartialEq for HugetlbFile {
    fn eq(&self, other: &HugetlbFile) -> bool {
        core::ptr::eq(self, other)
    }
}

impl Eq for HugetlbFile {}

impl core::fmt::Debug for HugetlbFile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HugetlbFile({})", self.name)
    }
}

/// Why a page could not be had for a file index.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HugetlbNoPage {
    /// Past the file's end.
    BeyondEof,
    /// No free page in the pool (Linux `-ENOSPC` from `alloc_hugetlb_folio`).
    NoSpace,
}

impl HugetlbFile {
    /// A new empty file of `size` bytes (rounded up to huge pages) named `name` in
    /// `/proc/<pid>/maps` (Linux `hugetlb_file_setup`).
    pub fn new(size: u64, name: &str) -> Arc<HugetlbFile> {
        Self::new_sized(HugeSize::Pmd, size, name)
    }

    /// As [`Self::new`] with pages of size `h` (`MFD_HUGE_1GB`, `MAP_HUGE_1GB`).
    pub fn new_sized(h: HugeSize, size: u64, name: &str) -> Arc<HugetlbFile> {
        Arc::new(HugetlbFile {
            inner: spin::Mutex::new(FileInner {
                size: size.div_ceil(h.bytes()) * h.bytes(),
                h,
                pages: BTreeMap::new(),
                reserved: BTreeSet::new(),
            }),
            hsize: h,
            name: String::from(name),
        })
    }

    /// Its page size.
    pub fn hsize(&self) -> HugeSize {
        self.hsize
    }

    /// Bytes of one of its pages (`st_blksize`).
    pub fn page_bytes(&self) -> u64 {
        self.hsize.bytes()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> u64 {
        self.inner.lock().size
    }

    /// Folios in the file's cache.
    pub fn cached_pages(&self) -> u64 {
        self.inner.lock().pages.len() as u64
    }

    /// Drops one holder of the file; the last one returns every folio and reservation to the
    /// pool (Linux `hugetlbfs_evict_inode`).
    pub fn put<A: Arch>(this: Arc<HugetlbFile>, mm: &Mm<A>) {
        if let Some(file) = Arc::into_inner(this) {
            let inner = file.inner.into_inner();
            mm.frames()
                .hugetlb_unreserve(inner.h, inner.reserved.len() as u64);
            for (_, head) in inner.pages {
                mm.put_page(head);
            }
        }
    }

    /// `ftruncate`: `EINVAL` unless a multiple of the huge page size (Linux
    /// `hugetlbfs_setattr`); shrinking drops the folios and reservations past the end. The
    /// caller unmapped nothing: mapped folios live on until their mappings go, as Linux's
    /// `hugetlb_vmdelete_list` would unmap them (cowlab's mappings keep their PMDs).
    pub fn set_size<A: Arch>(&self, mm: &Mm<A>, size: u64) -> Result<(), MmError> {
        let hbytes = self.page_bytes();
        if !aligned_to(size, hbytes) {
            return Err(MmError::Inval);
        }
        let mut inner = self.inner.lock();
        let first = size / hbytes;
        let gone: alloc::vec::Vec<PhysAddr> = inner.pages.split_off(&first).into_values().collect();
        let unreserve = inner.reserved.split_off(&first).len() as u64;
        inner.size = size;
        drop(inner);
        mm.frames().hugetlb_unreserve(self.hsize, unreserve);
        for head in gone {
            mm.put_page(head);
        }
        Ok(())
    }

    /// `fallocate` mode 0 over `[offset, offset + len)`: every huge page it touches gets a
    /// zeroed folio (consuming its reservation), then the size grows to cover them; `ENOSPC`
    /// when the pool runs out, the pages allocated so far kept in the cache and the size
    /// unchanged (Linux `hugetlbfs_fallocate`).
    pub fn fallocate<A: Arch>(&self, mm: &Mm<A>, offset: u64, len: u64) -> Result<(), MmError> {
        let end = offset.checked_add(len).ok_or(MmError::Inval)?;
        let hbytes = self.page_bytes();
        let (first, last) = (offset / hbytes, end.div_ceil(hbytes));
        for index in first..last {
            let mut inner = self.inner.lock();
            if inner.pages.contains_key(&index) {
                continue;
            }
            let head = inner.alloc_folio(mm, index).ok_or(MmError::NoSpc)?;
            inner.pages.insert(index, head);
        }
        let mut inner = self.inner.lock();
        inner.size = inner.size.max(last * hbytes);
        Ok(())
    }

    /// Reads at `pos` into `buf` (Linux `hugetlbfs_read_iter`): holes read as zeroes; stops at
    /// the end. Returns the bytes read.
    pub fn read_at<A: Arch>(&self, mm: &Mm<A>, pos: u64, buf: &mut [u8]) -> usize {
        let inner = self.inner.lock();
        let n = (inner.size.saturating_sub(pos) as usize).min(buf.len());
        let mut done = 0;
        while done < n {
            let at = pos + done as u64;
            let chunk = (PAGE_SIZE - (at as usize % PAGE_SIZE)).min(n - done);
            let out = &mut buf[done..done + chunk];
            let hbytes = inner.h.bytes();
            match inner.pages.get(&(at / hbytes)) {
                Some(&head) => {
                    let frame = head + ((at % hbytes) & !(PAGE_SIZE as u64 - 1));
                    mm.read_frame_bytes(frame + at % PAGE_SIZE as u64, out);
                }
                None => out.fill(0),
            }
            done += chunk;
        }
        n
    }

    /// The folio at `index` for a shared mapping's fault, allocated (zeroed, consuming the
    /// index's reservation if it has one) if missing, with one reference for the caller.
    fn get_shared_page<A: Arch>(&self, mm: &Mm<A>, index: u64) -> Result<PhysAddr, HugetlbNoPage> {
        let mut inner = self.inner.lock();
        if index >= inner.size / inner.h.bytes() {
            return Err(HugetlbNoPage::BeyondEof);
        }
        let head = match inner.pages.get(&index) {
            Some(&head) => head,
            None => {
                let head = inner.alloc_folio(mm, index).ok_or(HugetlbNoPage::NoSpace)?;
                inner.pages.insert(index, head);
                head
            }
        };
        mm.frames().meta(head).get();
        Ok(head)
    }

    /// The folio the file has at `index`, with a reference for the caller, for a private
    /// mapping (which never adds to the file): `Ok(None)` for a hole.
    fn find_page<A: Arch>(
        &self,
        mm: &Mm<A>,
        index: u64,
    ) -> Result<Option<PhysAddr>, HugetlbNoPage> {
        let inner = self.inner.lock();
        if index >= inner.size / inner.h.bytes() {
            return Err(HugetlbNoPage::BeyondEof);
        }
        let found = inner.pages.get(&index).copied();
        if let Some(head) = found {
            mm.frames().meta(head).get();
        }
        Ok(found)
    }

    /// Reserves, for a shared mapping of indices `[first, last)`, every index with neither a
    /// folio nor a reservation (Linux `hugetlb_reserve_pages` with the inode's map): `ENOMEM`
    /// if the pool cannot promise them all.
    fn reserve_shared<A: Arch>(&self, mm: &Mm<A>, first: u64, last: u64) -> Result<(), MmError> {
        let mut inner = self.inner.lock();
        let need: alloc::vec::Vec<u64> = (first..last)
            .filter(|i| !inner.pages.contains_key(i) && !inner.reserved.contains(i))
            .collect();
        if !mm.frames().hugetlb_reserve(self.hsize, need.len() as u64) {
            return Err(MmError::NoMem);
        }
        inner.reserved.extend(need);
        Ok(())
    }
}

impl FileInner {
    /// A zeroed folio for the file's `index`, from its reservation if it has one.
    fn alloc_folio<A: Arch>(&mut self, mm: &Mm<A>, index: u64) -> Option<PhysAddr> {
        let reserved = self.reserved.remove(&index);
        let head = mm.frames().hugetlb_alloc(self.h, reserved)?;
        zero_huge_folio(mm, head);
        stats::inc(&mm.counters.hugetlb_faults);
        Some(head)
    }
}

/// A private hugetlb mapping's reservation (Linux's per-VMA `resv_map` with
/// `HPAGE_RESV_OWNER`): the file indices `[first, last)` were promised at mmap; `consumed`
/// holds those a fault has used. Shared by the pieces of a split VMA.
pub struct PrivateResv {
    h: HugeSize,
    first: u64,
    last: u64,
    consumed: spin::Mutex<BTreeSet<u64>>,
}

impl PrivateResv {
    /// Takes the promise for `index`, if this reservation still holds one.
    fn consume(&self, index: u64) -> bool {
        (self.first..self.last).contains(&index) && self.consumed.lock().insert(index)
    }

    /// Releases the unconsumed promises of `[first, last)` (a piece of the VMA going away,
    /// Linux `hugetlb_vm_op_close`).
    fn release<A: Arch>(&self, mm: &Mm<A>, first: u64, last: u64) {
        let (first, last) = (first.max(self.first), last.min(self.last));
        let mut consumed = self.consumed.lock();
        let mut n = 0;
        for i in first..last {
            // Marked consumed so that another piece never releases it twice.
            if consumed.insert(i) {
                n += 1;
            }
        }
        drop(consumed);
        mm.frames().hugetlb_unreserve(self.h, n);
    }
}

/// What a hugetlb VMA maps: the file, the offset of its first page in 4 KiB pages (Linux
/// `vm_pgoff`), and the private reservation, if any.
#[derive(Clone)]
pub struct HugetlbMap {
    pub(crate) file: Arc<HugetlbFile>,
    pub(crate) pgoff: u64,
    pub(crate) resv: Option<Arc<PrivateResv>>,
}

impl PartialEq for HugetlbMap {
    fn eq(&self, other: &HugetlbMap) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
            && self.pgoff == other.pgoff
            && match (&self.resv, &other.resv) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for HugetlbMap {}

impl core::fmt::Debug for HugetlbMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Hugetlb({:?}, {})", self.file, self.pgoff)
    }
}

impl HugetlbMap {
    pub fn file(&self) -> &Arc<HugetlbFile> {
        &self.file
    }

    /// The file's huge-page index that backs `va` in `vma`.
    fn index(&self, vma: &Vma, va: VirtAddr) -> u64 {
        (self.pgoff * PAGE_SIZE as u64 + (va.as_u64() - vma.start.as_u64()))
            / self.file.page_bytes()
    }
}

/// The hugetlb part of mmap (Linux `hugetlbfs_file_mmap`): `EINVAL` for an offset that is not
/// a huge-page multiple; reserves the pages (`ENOMEM`) unless `noreserve`. `len` is already
/// rounded up to huge pages. Returns the VMA's backing.
pub(crate) fn hugetlb_mmap_backing<A: Arch>(
    mm: &Mm<A>,
    file: &Arc<HugetlbFile>,
    offset: u64,
    len: u64,
    sharing: Sharing,
    noreserve: bool,
) -> Result<Backing, MmError> {
    let (h, hbytes) = (file.hsize(), file.page_bytes());
    if !aligned_to(offset, hbytes) {
        return Err(MmError::Inval);
    }
    let end = offset.checked_add(len).ok_or(MmError::Inval)?;
    let (first, last) = (offset / hbytes, end / hbytes);
    let mut resv = None;
    if !noreserve {
        match sharing {
            Sharing::Shared => file.reserve_shared(mm, first, last)?,
            Sharing::Private => {
                if !mm.frames().hugetlb_reserve(h, last - first) {
                    return Err(MmError::NoMem);
                }
                resv = Some(Arc::new(PrivateResv {
                    h,
                    first,
                    last,
                    consumed: spin::Mutex::new(BTreeSet::new()),
                }));
            }
        }
    }
    Ok(Backing::Hugetlb(HugetlbMap {
        file: file.clone(),
        pgoff: offset / PAGE_SIZE as u64,
        resv,
    }))
}

/// A hugetlb VMA (or a piece of one) goes away: its unconsumed private promises go back to
/// the pool, and its hold on the file is dropped.
pub(crate) fn hugetlb_vm_close<A: Arch>(mm: &Mm<A>, vma: &Vma, map: HugetlbMap) {
    if let Some(resv) = &map.resv {
        if vma.start == vma.end {
            // Never placed (the mmap failed after reserving): every promise goes back.
            resv.release(mm, resv.first, resv.last);
        } else {
            resv.release(mm, map.index(vma, vma.start), map.index(vma, vma.end));
        }
    }
    HugetlbFile::put(map.file, mm);
}

/// A fork child's copy of a hugetlb VMA owns no reservation (Linux clears
/// `HPAGE_RESV_OWNER` in the child): its faults take unreserved pages.
pub(crate) fn fork_vma_copy(copy: &mut Vma) {
    if let Backing::Hugetlb(map) = &mut copy.backing {
        map.resv = None;
    }
}

impl crate::aspace::AddressSpace {
    /// `[start, end)` may cut hugetlb VMAs only at huge-page boundaries (Linux
    /// `hugetlb_vm_op_split`: `EINVAL`): for munmap, mprotect and `MAP_FIXED` over them.
    pub(crate) fn hugetlb_check_split(
        &self,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), MmError> {
        for at in [start, end] {
            if let Some(vma) = self.find_vma(at) {
                let hbytes = vma.huge_bytes();
                if hbytes.is_some_and(|b| vma.start < at && !aligned_to(at.as_u64(), b)) {
                    return Err(MmError::Inval);
                }
            }
        }
        Ok(())
    }

    /// `[start, end)` widened to huge-page boundaries inside hugetlb VMAs, for mlock: Linux's
    /// `mlock_fixup` leaves hugetlb VMAs unsplit (and unlocked: their pages are never
    /// reclaimed anyway); cowlab locks the whole huge pages, so a VMA is never cut inside one.
    pub(crate) fn hugetlb_round_out(&self, start: VirtAddr, end: VirtAddr) -> (VirtAddr, VirtAddr) {
        let mut s = start;
        let mut e = end;
        if let Some(b) = self.find_vma(start).and_then(|v| v.huge_bytes()) {
            s = VirtAddr::new(start.as_u64() & !(b - 1));
        }
        if let Some(b) = self
            .find_vma(end)
            .filter(|v| v.start < end)
            .and_then(|v| v.huge_bytes())
        {
            e = VirtAddr::new(end.as_u64().next_multiple_of(b));
        }
        (s, e)
    }

    /// The range `MADV_DONTNEED` of `[start, end)` zaps (Linux
    /// `madvise_dontneed_free_valid_vma`): in a hugetlb VMA the start must be huge-aligned
    /// (`EINVAL`) and the end is rounded *down* to a huge page, so that a caller unaware of
    /// huge pages never loses more than it named.
    pub(crate) fn hugetlb_dontneed_range(
        &self,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(VirtAddr, VirtAddr), MmError> {
        if self
            .find_vma(start)
            .and_then(|v| v.huge_bytes())
            .is_some_and(|b| !aligned_to(start.as_u64(), b))
        {
            return Err(MmError::Inval);
        }
        let last = VirtAddr::new(end.as_u64() - 1);
        let end = match self.find_vma(last).and_then(|v| v.huge_bytes()) {
            Some(b) => VirtAddr::new(end.as_u64() & !(b - 1)),
            None => end,
        };
        Ok((start, end.max(start)))
    }
}

/// Zeroes the frames (512, or 262144 for 1 GiB) of a folio the caller holds and nobody maps.
fn zero_huge_folio<A: Arch>(mm: &Mm<A>, head: PhysAddr) {
    // In 2 MiB steps, each one `rep stosq` (perfgup's one-call fill), with a progress report
    // between them so that clearing a GiB is not taken for a soft lockup.
    let nr = mm.frames().folio_nr(head);
    let mut i = 0;
    while i < nr {
        if i > 0 {
            mm.arch().long_work_progress();
        }
        let n = HPAGE_PMD_NR.min(nr - i);
        mm.zero_frames_owned(head + (i * PAGE_SIZE) as u64, n);
        i += n;
    }
}

/// A private fault's new folio for file index `index` of `map` (Linux `alloc_hugetlb_folio`
/// for a private VMA): the VMA's promise for the index if it still has one, else an
/// unpromised free page; `None` when the pool has none (the fault is `SIGBUS`).
fn alloc_private<A: Arch>(mm: &Mm<A>, map: &HugetlbMap, index: u64) -> Option<PhysAddr> {
    let reserved = map.resv.as_ref().is_some_and(|r| r.consume(index));
    let head = mm.frames().hugetlb_alloc(map.file.hsize(), reserved);
    if head.is_none() && reserved {
        unreachable!("a consumed hugetlb reservation found no free page");
    }
    head
}

/// Makes `head` (refcount 1, from the pool) an exclusive anon hugetlb folio mapped by one PMD
/// (Linux `hugetlb_add_new_anon_rmap`): the reference becomes the PMD's.
fn prep_anon<A: Arch>(mm: &Mm<A>, head: PhysAddr) {
    let frames = mm.frames();
    for i in 0..frames.folio_nr(head) {
        frames
            .meta(head + (i * PAGE_SIZE) as u64)
            .set_flags(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE);
    }
    frames.add_entire_mapcount_only(head);
}

/// A fault at `va` in the hugetlb VMA `vma` (Linux `hugetlb_fault`): the early branch of
/// `fault_no_pt`, and of the 4 KiB path should a PT be found in a hugetlb range (none should
/// be: a zap unlinks every empty table of its range).
#[cold]
pub(crate) fn hugetlb_fault<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<(), FaultError> {
    let Backing::Hugetlb(map) = &vma.backing else {
        unreachable!("hugetlb_fault on a VMA that maps no hugetlb file");
    };
    let hbytes = map.file.page_bytes();
    let haddr = VirtAddr::new(va.as_u64() & !(hbytes - 1));
    let pt = PageTable::new(mm, shared.root());
    // The leaf's level is the file's page size's: a PMD for 2 MiB, a PUD for 1 GiB.
    let slot = match map.file.hsize() {
        HugeSize::Pmd => pt.walk_alloc_pmd(haddr),
        HugeSize::Pud => pt.walk_alloc_pud(haddr),
    }
    .ok_or(FaultError::Oom)?;
    let pmd = slot.load();
    if pmd.is_huge() {
        return match kind {
            FaultKind::Write | FaultKind::Unshare if !pmd.is_writable() => {
                hugetlb_wp(mm, shared, vma, map, slot, haddr, pmd, kind)
            }
            _ => Ok(()),
        };
    }
    if !pmd.is_empty() {
        // A PT (or, for 1 GiB, a PD) where a hugetlb page belongs. A hugetlb VMA is only ever
        // mapped by leaves of its size
        // (Linux `huge_pte_alloc` never finds a PTE table there: `free_pgtables` took it with
        // the mapping it served). An empty one is a stray: unlink and free it, then fault
        // the huge page in. One with mappings would be a broken invariant: refuse rather than
        // map over it or beside it.
        if !pmd.is_present() || !pt.is_table_empty(pmd.frame()) {
            return Err(FaultError::Segv(SegvReason::BeyondEof));
        }
        slot.store(Pte::EMPTY);
        let mut gather = MmuGather::new(mm, shared);
        gather.remove_table(haddr, pmd.frame());
        gather.finish();
    }
    hugetlb_no_page(mm, shared, vma, map, slot, haddr, kind)
}

/// First touch of a huge page (Linux `hugetlb_no_page`): past the file's end, or with no page
/// for it in the pool, `SIGBUS`.
fn hugetlb_no_page<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    map: &HugetlbMap,
    slot: PteRef<'_>,
    haddr: VirtAddr,
    kind: FaultKind,
) -> Result<(), FaultError> {
    let sigbus = FaultError::Segv(SegvReason::BeyondEof);
    let index = map.index(vma, haddr);
    let base = vma.page_prot() | Pte::HUGE | Pte::ACCESSED;
    match vma.sharing {
        Sharing::Shared => {
            let head = map.file.get_shared_page(mm, index).map_err(|_| sigbus)?;
            // The reference taken becomes the PMD's.
            mm.frames().add_entire_mapcount_only(head);
            // Shared: writable at once where the VMA may write (no COW, no dirty tracking).
            let bits = if vma.prot.write() {
                base | write_grant(vma)
            } else {
                base
            };
            slot.store(Pte::new(head, bits));
        }
        Sharing::Private => {
            if let Some(head) = map.file.find_page(mm, index).map_err(|_| sigbus)? {
                mm.frames().add_entire_mapcount_only(head);
                slot.store(Pte::new(head, base));
                if matches!(kind, FaultKind::Write) {
                    return hugetlb_wp(mm, shared, vma, map, slot, haddr, slot.load(), kind);
                }
                return Ok(());
            }
            let head = alloc_private(mm, map, index).ok_or(sigbus)?;
            zero_huge_folio(mm, head);
            stats::inc(&mm.counters.hugetlb_faults);
            prep_anon(mm, head);
            // An exclusive anon page: a write fault maps it writable now; a read fault
            // read-only, and the first write reuses it (Linux maps R/O, then `hugetlb_wp`).
            let bits = if kind == FaultKind::Write {
                base | write_grant(vma)
            } else {
                base
            };
            slot.store(Pte::new(head, bits));
        }
    }
    Ok(())
}

/// A write or unshare fault on a read-only hugetlb PMD (Linux `hugetlb_wp`): a shared mapping
/// just gains write permission; in a private one an anon folio the era's `wp_can_reuse` lets
/// through is reused whole, anything else (a shared anon folio, a file folio) is copied whole
/// into a new exclusive anon folio.
#[allow(clippy::too_many_arguments)]
fn hugetlb_wp<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
    map: &HugetlbMap,
    slot: PteRef<'_>,
    haddr: VirtAddr,
    pmd: Pte,
    kind: FaultKind,
) -> Result<(), FaultError> {
    if vma.sharing == Sharing::Shared {
        if kind == FaultKind::Write {
            slot.set_bits(write_grant(vma));
        }
        return Ok(());
    }
    let head = pmd.frame();
    let frames = mm.frames();
    if frames.meta(head).test(FrameFlags::ANON) {
        let page = AnonPageState {
            exclusive: frames.meta(head).test(FrameFlags::ANON_EXCLUSIVE),
            mapcount: frames.folio_mapcount(head),
            refcount: frames.folio_refcount(head),
        };
        let reuse = match rules::wp_can_reuse(mm.era(), page) {
            WpReuse::Exclusive => true,
            WpReuse::Proven => {
                frames.set_folio_exclusive(head, true);
                true
            }
            WpReuse::Copy => false,
        };
        if reuse {
            if kind == FaultKind::Write {
                slot.set_bits(write_grant(vma));
                stats::inc(&mm.counters.wp_reuses_exclusive);
            }
            return Ok(());
        }
    }
    let index = map.index(vma, haddr);
    let new = alloc_private(mm, map, index).ok_or(FaultError::Segv(SegvReason::BeyondEof))?;
    copy_huge_folio(mm, new, head);
    prep_anon(mm, new);
    stats::inc(&mm.counters.hugetlb_cow_copies);
    // Clear, flush, then set: no CPU may write the old folio after the copy was taken.
    let old = slot.take();
    let mut flush = TlbFlush::none(shared.root());
    flush.add_range(haddr, haddr + map.file.page_bytes());
    flush.flush(mm.arch(), shared);
    let mut bits = (old.flags() & !Pte::WRITABLE) | Pte::ACCESSED;
    if kind == FaultKind::Write {
        bits |= write_grant(vma);
    }
    slot.store(Pte::new(new, bits));
    frames.remove_entire_mapping(head);
    mm.put_page(head);
    Ok(())
}

/// Copies the frames (512, or 262144 for 1 GiB) of `src` into `dst` (which the caller holds
/// and nobody maps).
fn copy_huge_folio<A: Arch>(mm: &Mm<A>, dst: PhysAddr, src: PhysAddr) {
    for i in 0..mm.frames().folio_nr(src) {
        if i > 0 && i % HPAGE_PMD_NR == 0 {
            mm.arch().long_work_progress();
        }
        let off = (i * PAGE_SIZE) as u64;
        mm.copy_frame_owned(dst + off, src + off);
    }
}

/// fork of a hugetlb VMA (Linux `copy_hugetlb_page_range`): a shared mapping's folios are
/// shared; a private mapping's anon folio is shared write-protected with its exclusive bits
/// cleared, unless `fork_must_copy` says it may be pinned, in which case the child gets a whole
/// copy now (`ENOMEM` for the fork if the pool has no free page). File folios in a private
/// mapping are shared read-only. Returns whether a parent PMD lost write permission.
pub(crate) fn copy_hugetlb_page_range<A: Arch>(
    mm: &Mm<A>,
    src: &MmShared,
    dst: &MmShared,
    vma: &Vma,
    has_pinned: bool,
) -> Result<bool, MmError> {
    let src_pt = PageTable::new(mm, src.root());
    let dst_pt = PageTable::new(mm, dst.root());
    let frames = mm.frames();
    let mut wrprotected = false;
    let mut leaves = alloc::vec::Vec::new();
    let h = vma.huge_size().unwrap_or(HugeSize::Pmd);
    match h {
        HugeSize::Pmd => src_pt.for_each_huge_pmd(vma.start, vma.end, &mut |va, _| leaves.push(va)),
        HugeSize::Pud => src_pt.for_each_huge_pud(vma.start, vma.end, &mut |va, _| leaves.push(va)),
    }
    for at in leaves {
        let (slot, dst_slot) = match h {
            HugeSize::Pmd => (src_pt.walk_pmd(at), dst_pt.walk_alloc_pmd(at)),
            HugeSize::Pud => (src_pt.walk_pud(at), dst_pt.walk_alloc_pud(at)),
        };
        let Some(slot) = slot else {
            continue;
        };
        let pmd = slot.load();
        if !pmd.is_huge() {
            continue;
        }
        let dst_slot = dst_slot.ok_or(MmError::NoMem)?;
        let head = pmd.frame();
        let anon = frames.meta(head).test(FrameFlags::ANON);
        if vma.sharing == Sharing::Shared || !anon {
            frames.add_entire_mapping(head);
            let clear = if vma.sharing == Sharing::Shared {
                Pte::ACCESSED | Pte::DIRTY
            } else {
                Pte::ACCESSED
            };
            dst_slot.store(pmd.without(clear));
            continue;
        }
        let exclusive = frames.meta(head).test(FrameFlags::ANON_EXCLUSIVE);
        if rules::fork_must_copy(
            mm.era(),
            has_pinned,
            exclusive,
            frames.folio_maybe_dma_pinned(frames.meta(head)),
        ) {
            let new = frames.hugetlb_alloc(h, false).ok_or(MmError::NoMem)?;
            copy_huge_folio(mm, new, head);
            prep_anon(mm, new);
            stats::inc(&mm.counters.hugetlb_cow_copies);
            dst_slot.store(Pte::new(new, pmd.flags() & !Pte::ACCESSED));
            continue;
        }
        if exclusive {
            frames.set_folio_exclusive(head, false);
        }
        frames.add_entire_mapping(head);
        if pmd.is_writable() {
            slot.clear_bits(Pte::WRITABLE);
            wrprotected = true;
        }
        dst_slot.store(pmd.without(Pte::WRITABLE | Pte::ACCESSED));
    }
    Ok(wrprotected)
}

/// mprotect of a whole hugetlb VMA's PMDs (Linux `hugetlb_change_protection`): the new
/// protection bits; write permission only where no fault is needed (a shared mapping's page,
/// an exclusive anon page: `can_change_pte_writable` at huge-page granularity). Returns the
/// flush needed.
pub(crate) fn hugetlb_change_protection<A: Arch>(
    mm: &Mm<A>,
    shared: &MmShared,
    vma: &Vma,
) -> TlbFlush {
    let pt = PageTable::new(mm, shared.root());
    let mut flush = TlbFlush::none(shared.root());
    let h = vma.huge_size().unwrap_or(HugeSize::Pmd);
    let (hbytes, gigantic) = (h.bytes(), h == HugeSize::Pud);
    let mut visit = |at: VirtAddr, pmd: Pte| {
        let slot = if gigantic {
            pt.walk_pud(at)
        } else {
            pt.walk_pmd(at)
        };
        let Some(slot) = slot else {
            return;
        };
        let keep = pmd.flags() & (Pte::ACCESSED | Pte::DIRTY | Pte::SOFT_DIRTY);
        // A shared mapping's protection is its pages' (no COW, no dirty tracking); a private
        // one's pages gain write permission only by a write fault (`hugetlb_wp`), as Linux's
        // `hugetlb_change_protection` (no `can_change_pte_writable` shortcut for hugetlb).
        let mut bits = vma.page_prot() | Pte::HUGE | keep;
        let shared = vma.sharing == Sharing::Shared;
        if vma.prot.write() && (shared || pmd.is_writable()) {
            bits |= Pte::WRITABLE;
        }
        let new = Pte::new(pmd.frame(), bits);
        if new != pmd {
            slot.store(new);
            flush.add_range(at, at + hbytes);
        }
    };
    if gigantic {
        pt.for_each_huge_pud(vma.start, vma.end, &mut visit);
    } else {
        pt.for_each_huge_pmd(vma.start, vma.end, &mut visit);
    }
    flush
}

/// Is the PMD leaf `pmd` a hugetlb folio's?
pub(crate) fn is_hugetlb_pmd<A: Arch>(mm: &Mm<A>, pmd: Pte) -> bool {
    mm.frames().meta(pmd.frame()).test(FrameFlags::HUGETLB)
}

/// `MAP_HUGE_SHIFT`: bits 26..31 of mmap's flags (and memfd_create's) give log2 of the page
/// size; 0 means the default size.
pub const MAP_HUGE_SHIFT: u32 = 26;

/// The hugetlb size the size field of `flags` names (Linux `hstate_sizelog`): 0 (the
/// default) or 21 is 2 MiB, 30 is 1 GiB where the machine has it ([`gigantic_supported`]);
/// `None` for any other.
pub fn huge_size_of(flags: u32) -> Option<HugeSize> {
    match (flags >> MAP_HUGE_SHIFT) & 0x3f {
        0 | 21 => Some(HugeSize::Pmd),
        30 if gigantic_supported() => Some(HugeSize::Pud),
        _ => None,
    }
}

/// Does the size field of `flags` name a hugetlb size cowlab has ([`huge_size_of`])?
pub fn huge_size_supported(flags: u32) -> bool {
    huge_size_of(flags).is_some()
}

impl crate::aspace::AddressSpace {
    /// `mmap(MAP_ANONYMOUS | MAP_HUGETLB)` (Linux `ksys_mmap_pgoff` making a
    /// `hugetlb_file_setup` file): `EINVAL` for a page size cowlab has not; the length is
    /// rounded up to huge pages; private or shared as `flags` say.
    pub(crate) fn mmap_hugetlb_anon<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: crate::vma::Prot,
        flags: crate::mmap::MapFlags,
    ) -> Result<VirtAddr, MmError> {
        let h = huge_size_of(flags.bits()).ok_or(MmError::Inval)?;
        let hlen = (len as u64)
            .checked_next_multiple_of(h.bytes())
            .ok_or(MmError::NoMem)?;
        let file = HugetlbFile::new_sized(h, hlen, "/anon_hugepage (deleted)");
        let r = self.mmap_hugetlb(mm, addr, len, prot, flags, &file, 0, true);
        HugetlbFile::put(file, mm);
        r
    }

    /// Maps `len` bytes (rounded up to huge pages) of the hugetlb file `file` from byte
    /// `offset` (Linux `do_mmap` of a hugetlbfs file): `EINVAL` for an offset or a `MAP_FIXED`
    /// address that is not a huge-page multiple; other addresses are aligned; the pages are
    /// reserved (`ENOMEM`) unless `MAP_NORESERVE`. A shared mapping may write only if the file
    /// is open for writing (`fd_writable`).
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_hugetlb<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: crate::vma::Prot,
        flags: crate::mmap::MapFlags,
        file: &Arc<HugetlbFile>,
        offset: u64,
        fd_writable: bool,
    ) -> Result<VirtAddr, MmError> {
        use crate::mmap::MapFlags;
        use crate::vma::VmaFlags;
        let (len, sharing) = crate::mmap::check_mmap_args(len, flags)?;
        let hbytes = file.page_bytes();
        let len = len.checked_next_multiple_of(hbytes).ok_or(MmError::NoMem)?;
        let fixed = flags.contains(MapFlags::FIXED) || flags.contains(MapFlags::FIXED_NOREPLACE);
        if (fixed && !aligned_to(addr.as_u64(), hbytes)) || !aligned_to(offset, hbytes) {
            return Err(MmError::Inval);
        }
        let mut vm_flags = VmaFlags::MAYREAD | VmaFlags::MAYEXEC | VmaFlags::SOFTDIRTY;
        let may_write = match sharing {
            Sharing::Private => true,
            Sharing::Shared => crate::shmem::shared_mapping_may_write(prot, fd_writable, 0)?,
        };
        if may_write {
            vm_flags = vm_flags | VmaFlags::MAYWRITE;
        }
        // Placement first (no reservation to undo when there is no room): a gap with room
        // for the length plus alignment, then the huge-aligned address inside it.
        let (at, place) = if fixed {
            (addr, flags)
        } else {
            let hint = VirtAddr::new(addr.as_u64().next_multiple_of(hbytes));
            let pad = hbytes - PAGE_SIZE as u64;
            let gap = self.get_unmapped_area(hint, len + pad)?;
            let at = VirtAddr::new(gap.as_u64().next_multiple_of(hbytes));
            (at, flags | MapFlags::FIXED)
        };
        let backing = hugetlb_mmap_backing(
            mm,
            file,
            offset,
            len,
            sharing,
            flags.contains(MapFlags::NORESERVE),
        )?;
        let vma = Vma {
            start: VirtAddr::zero(),
            end: VirtAddr::zero(),
            prot,
            sharing,
            flags: vm_flags,
            backing,
            write_hold: None,
        };
        self.mmap_region(mm, at, len, place, vma)
    }
}

/// A write to `nr_hugepages` (sysfs's, or `/proc/sys/vm`'s with `sysctl` set: leading blanks
/// allowed as `proc_doulongvec_minmax`): one unsigned decimal, an optional `+`, one trailing
/// newline, else `EINVAL` (Linux `kstrtoul`).
pub fn parse_nr_hugepages(input: &str, sysctl: bool) -> Result<u64, MmError> {
    let mut word = input.strip_suffix('\n').unwrap_or(input);
    if sysctl {
        word = word.trim_start_matches([' ', '\t', '\n']);
    }
    let digits = word.strip_prefix('+').unwrap_or(word);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MmError::Inval);
    }
    digits.parse().map_err(|_| MmError::Inval)
}

/// The hugetlb lines of `/proc/meminfo` (Linux `hugetlb_report_meminfo`), in its order and
/// column layout.
pub fn meminfo_lines(c: crate::frame::HugeCounts, out: &mut String) {
    meminfo_lines_sizes(c, 0, out);
}

/// As [`meminfo_lines`], with `other_kb` KiB of pages of the other sizes (1 GiB pages) in the
/// `Hugetlb:` line, which Linux sums over every size (the `HugePages_*` lines are the default
/// size's).
pub fn meminfo_lines_sizes(c: crate::frame::HugeCounts, other_kb: u64, out: &mut String) {
    use core::fmt::Write;
    let kb = HPAGE_SIZE / 1024;
    for (key, v) in [
        ("HugePages_Total:", c.total),
        ("HugePages_Free:", c.free),
        ("HugePages_Rsvd:", c.resv),
        ("HugePages_Surp:", c.surplus),
    ] {
        let _ = writeln!(out, "{key:<16}{v:>8}");
    }
    let _ = writeln!(out, "{:<16}{kb:>8} kB", "Hugepagesize:");
    let _ = writeln!(out, "{:<16}{:>8} kB", "Hugetlb:", c.total * kb + other_kb);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nr_hugepages_parses_as_kstrtoul() {
        assert_eq!(parse_nr_hugepages("12\n", false), Ok(12));
        assert_eq!(parse_nr_hugepages("+3", false), Ok(3));
        for bad in [
            "",
            "\n",
            "-1",
            "abc",
            "1 2",
            " 4",
            "4\n\n",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_nr_hugepages(bad, false),
                Err(MmError::Inval),
                "{bad:?}"
            );
        }
        assert_eq!(parse_nr_hugepages("  4\n", true), Ok(4));
    }

    #[test]
    fn meminfo_lines_have_linux_layout() {
        let mut s = String::new();
        let c = crate::frame::HugeCounts {
            total: 3,
            free: 2,
            resv: 1,
            surplus: 0,
        };
        meminfo_lines(c, &mut s);
        assert_eq!(
            s,
            "HugePages_Total:       3\nHugePages_Free:        2\nHugePages_Rsvd:        1\n\
             HugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:            6144 kB\n"
        );
    }
}
