//! shmem: memory objects with a page cache of their own (memfd, tmpfs files,
//! `MAP_SHARED|MAP_ANONYMOUS`; Linux `mm/shmem.c`).
//!
//! Picture: a [`ShmemObject`] is a size plus a page cache — a sorted map from page index to a
//! frame flagged `PAGECACHE|SHMEM`, created zeroed on first use (a read of a hole through
//! `read_at` sees zeros without creating one). The cache holds one reference on each of its
//! frames; every PTE mapping one holds another. Shared mappings map the cache page itself (and
//! make it writable on a write fault: shmem has no writeback, so no dirty tracking is needed);
//! private mappings map it read-only and break COW on a write into an exclusive anon page, so a
//! private writer never reaches the object (SEMANTICS.md section 3). The invariant: a frame is
//! in at most one cache, and while it is, `refcount >= 1 + mapcount + pincount` and its
//! `SHMEM` flag is set; the `shmem_pages` gauge counts exactly those frames.
//!
//! Lifetime: VMAs and the kernel's open files hold `Arc<ShmemObject>`s; whoever drops one
//! calls [`ShmemObject::put`] so the last holder frees the cache. Without a reverse map, a
//! shrinking `set_size` cannot unmap pages other processes still map: those pages leave the
//! cache (losing `SHMEM`) and live on, as orphans, until their last mapping goes — where Linux
//! would unmap them and deliver SIGBUS on the next access.

#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::stats;
use crate::vma::Prot;
use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

/// Largest object size (Linux `MAX_LFS_FILESIZE` is far larger; cowlab's memory is not).
pub const SHMEM_MAX_SIZE: u64 = 1 << 40;

/// The block limit of a tmpfs mount (Linux `shmem_sb_info`'s `max_blocks` and `used_blocks`):
/// every cache page of an object charged to it counts, from its allocation to its removal from
/// the cache; past the limit a write, `fallocate` or fault that needs a new page fails with
/// `ENOSPC` (`SIGBUS` for a fault). Objects with no quota (memfds, `MAP_SHARED|MAP_ANONYMOUS`:
/// Linux's internal shm mount, which has no limit) are bounded only by memory.
pub struct ShmemQuota {
    max_pages: u64,
    used_pages: AtomicU64,
}

impl ShmemQuota {
    pub const fn new(max_pages: u64) -> ShmemQuota {
        ShmemQuota {
            max_pages,
            used_pages: AtomicU64::new(0),
        }
    }

    /// The limit in pages (`statfs`'s `f_blocks`).
    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// Pages charged now (`f_blocks - f_bfree`).
    pub fn used_pages(&self) -> u64 {
        self.used_pages.load(Ordering::Relaxed)
    }

    /// Takes one page if the limit allows it (Linux `shmem_inode_acct_blocks`).
    fn charge(&self) -> bool {
        self.used_pages
            .try_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used < self.max_pages).then_some(used + 1)
            })
            .is_ok()
    }

    fn uncharge(&self, pages: u64) {
        let before = self.used_pages.fetch_sub(pages, Ordering::Relaxed);
        assert!(before >= pages, "shmem quota uncharged below zero");
    }
}

/// Pages a long shmem loop handles between two pauses ([`ShmemObject::fallocate_resched`]):
/// small enough that a kill is seen within milliseconds, large enough that the pause costs
/// nothing next to the allocations.
pub const RESCHED_BATCH: u64 = 32;

/// One shmem object (Linux: a shmem inode and its `address_space`).
pub struct ShmemObject {
    inner: Mutex<Inner>,
    /// What `/proc/<pid>/maps` prints for a mapping of the object, as Linux prints its file's
    /// path (`/memfd:NAME (deleted)` for a memfd); set once by whoever creates a named object.
    /// Kept apart from `inner` so that reading `maps` never waits on a page-cache operation.
    maps_name: Mutex<Option<String>>,
    /// How many shared mappings may write the object (Linux `i_mmap_writable`): VMAs holding a
    /// [`WritableMapping`]. Its own allocation so that a hold never keeps the object alive.
    writable_maps: Arc<AtomicUsize>,
}

struct Inner {
    size: u64,
    /// `F_SEAL_*` bits (Linux `shmem_inode_info.seals`).
    seals: u32,
    /// Page index -> cache frame.
    pages: BTreeMap<u64, PhysAddr>,
    /// The mount the cache pages are charged to (a tmpfs file's), if any.
    quota: Option<&'static ShmemQuota>,
}

/// Why a cache page could not be allocated.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NoPage {
    /// The object's quota is used up (`ENOSPC`).
    NoSpace,
    NoMem,
}

impl From<NoPage> for MmError {
    fn from(e: NoPage) -> MmError {
        match e {
            NoPage::NoSpace => MmError::NoSpc,
            NoPage::NoMem => MmError::NoMem,
        }
    }
}

/// Why a page of the object could not be provided to a fault.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ShmemFault {
    /// The page lies at or beyond the object's size (Linux: `SIGBUS`).
    BeyondEof,
    /// The object's quota is used up: Linux's `vmf_error(-ENOSPC)` is `SIGBUS` too.
    NoSpace,
    NoMem,
}

impl ShmemObject {
    /// A new, empty object of size 0 (`memfd_create`, or a new tmpfs file).
    #[doc(alias = "shmem_file_setup")]
    pub fn new() -> Arc<ShmemObject> {
        ShmemObject::new_in(None)
    }

    /// A new, empty object whose cache pages are charged to `quota` (a tmpfs file).
    pub fn new_in(quota: Option<&'static ShmemQuota>) -> Arc<ShmemObject> {
        Arc::new(ShmemObject {
            inner: Mutex::new(Inner {
                size: 0,
                // Every shmem inode starts sealed against sealing (Linux `shmem_get_inode`);
                // only `memfd_create(MFD_ALLOW_SEALING)` clears it ([`Self::allow_sealing`]).
                seals: seals::SEAL,
                pages: BTreeMap::new(),
                quota,
            }),
            maps_name: Mutex::new(None),
            writable_maps: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Lets `F_ADD_SEALS` add seals (`memfd_create` with `MFD_ALLOW_SEALING`): clears
    /// `F_SEAL_SEAL`.
    pub fn allow_sealing(&self) {
        self.inner.lock().seals &= !seals::SEAL;
    }

    /// The `F_SEAL_*` bits (`F_GET_SEALS`).
    pub fn seals(&self) -> u32 {
        self.inner.lock().seals
    }

    /// Adds seals (`F_ADD_SEALS`, Linux `memfd_add_seals`): `EINVAL` for unknown bits, `EPERM`
    /// once `F_SEAL_SEAL` is set, `EBUSY` for `F_SEAL_WRITE` while a shared mapping may still
    /// write the object or a cache page has a reference beyond the cache's and its mappings'
    /// (a pin or GUP reference that could still write it: Linux `memfd_wait_for_pins`, which
    /// waits a little first; cowlab answers at once). Checked and set under the object's lock,
    /// which also orders it against [`Self::map_shared`], so no writable mapping can appear
    /// after the check.
    #[doc(alias = "memfd_add_seals")]
    pub fn add_seals<A: Arch>(&self, mm: &Mm<A>, add: u32) -> Result<(), MmError> {
        if add & !seals::ALL != 0 {
            return Err(MmError::Inval);
        }
        let mut inner = self.inner.lock();
        if inner.seals & seals::SEAL != 0 {
            return Err(MmError::Perm);
        }
        if add & seals::WRITE != 0 && inner.seals & seals::WRITE == 0 {
            let referenced = |&frame: &PhysAddr| {
                let meta = mm.frames().meta(frame);
                meta.refcount() > 1 + meta.mapcount()
            };
            if self.writable_maps.load(Ordering::Acquire) != 0
                || inner.pages.values().any(referenced)
            {
                return Err(MmError::Busy);
            }
        }
        inner.seals |= add;
        Ok(())
    }

    /// Shared mappings that may write the object now (for tests and `F_ADD_SEALS`).
    pub fn writable_mappings(&self) -> usize {
        self.writable_maps.load(Ordering::Acquire)
    }

    /// Decides a new `MAP_SHARED` mapping's write permission from the open file's mode and the
    /// seals ([`shared_mapping_may_write`]); if it may write, registers it as a writable
    /// mapping, under the lock `F_ADD_SEALS` takes. `Some` hold: the VMA gets `MAYWRITE`.
    pub(crate) fn map_shared(
        &self,
        prot: Prot,
        fd_writable: bool,
    ) -> Result<Option<WritableMapping>, MmError> {
        let inner = self.inner.lock();
        if !shared_mapping_may_write(prot, fd_writable, inner.seals)? {
            return Ok(None);
        }
        self.writable_maps.fetch_add(1, Ordering::AcqRel);
        Ok(Some(WritableMapping(self.writable_maps.clone())))
    }

    /// Names the object for `/proc/<pid>/maps` (e.g. `memfd_create`'s
    /// `/memfd:NAME (deleted)`, Linux `show_map_vma` printing the file's path).
    pub fn set_maps_name(&self, name: &str) {
        *self.maps_name.lock() = Some(String::from(name));
    }

    /// The name set by [`ShmemObject::set_maps_name`], if any.
    pub fn maps_name(&self) -> Option<String> {
        self.maps_name.lock().clone()
    }

    /// A new object of `size` bytes (the backing of `MAP_SHARED|MAP_ANONYMOUS`,
    /// Linux `shmem_zero_setup`).
    pub fn with_size(size: u64) -> Result<Arc<ShmemObject>, MmError> {
        if size > SHMEM_MAX_SIZE {
            return Err(MmError::Inval);
        }
        let obj = ShmemObject::new();
        obj.inner.lock().size = size;
        Ok(obj)
    }

    /// Size in bytes (`st_size`).
    pub fn size(&self) -> u64 {
        self.inner.lock().size
    }

    /// Frames currently in the cache (`st_blocks * 512 / 4096`).
    pub fn cached_pages(&self) -> usize {
        self.inner.lock().pages.len()
    }

    /// Sets the size (`ftruncate`, Linux `shmem_setattr`). Growing adds a hole; shrinking drops
    /// the cache pages wholly beyond the new size and zeroes the tail of a partial last page.
    #[doc(alias = "shmem_setattr")]
    pub fn set_size<A: Arch>(&self, mm: &Mm<A>, size: u64) -> Result<(), MmError> {
        self.set_size_resched(mm, size, &mut || {})
    }

    /// [`set_size`](Self::set_size) for a caller that must not hold the CPU: the pages a
    /// shrink drops are freed after the object is unlocked, `pause` called every
    /// [`RESCHED_BATCH`] of them (Linux `shmem_undo_range`'s `cond_resched`; a truncate is not
    /// interrupted, the new size is in force before the first pause).
    pub fn set_size_resched<A: Arch>(
        &self,
        mm: &Mm<A>,
        size: u64,
        pause: &mut dyn FnMut(),
    ) -> Result<(), MmError> {
        if size > SHMEM_MAX_SIZE {
            return Err(MmError::Inval);
        }
        let mut inner = self.inner.lock();
        let sealed = match size.cmp(&inner.size) {
            core::cmp::Ordering::Less => seals::SHRINK,
            core::cmp::Ordering::Greater => seals::GROW,
            core::cmp::Ordering::Equal => 0,
        };
        if inner.seals & sealed != 0 {
            return Err(MmError::Perm);
        }
        let mut dropped = Default::default();
        if size < inner.size {
            let first_dropped = size.div_ceil(PAGE);
            dropped = inner.pages.split_off(&first_dropped);
            inner.uncharge(dropped.len());
            let tail = (size % PAGE) as usize;
            if tail != 0 {
                if let Some(&frame) = inner.pages.get(&(size / PAGE)) {
                    mm.write_frame_bytes(
                        frame + tail as u64,
                        &[0u8; PAGE_SIZE][..PAGE_SIZE - tail],
                    );
                }
            }
        }
        inner.size = size;
        drop(inner);
        let dropped: alloc::collections::BTreeMap<u64, PhysAddr> = dropped;
        for (i, (_, frame)) in dropped.into_iter().enumerate() {
            if i > 0 && (i as u64).is_multiple_of(RESCHED_BATCH) {
                pause();
            }
            drop_cache_page(mm, frame);
        }
        Ok(())
    }

    /// Allocates the cache pages of `[offset, offset + len)`, growing the size to cover it
    /// (`fallocate` mode 0, Linux `shmem_fallocate`). `ENOMEM` if memory runs out, `ENOSPC` past
    /// the quota (at once if the range alone exceeds it); the zero pages of the range beyond the
    /// size allocated before the failure are dropped again, so a failed call leaves no charge.
    /// `EPERM` past the size under `F_SEAL_GROW`. For a caller that must stay killable, see
    /// [`ShmemObject::fallocate_resched`].
    #[doc(alias = "shmem_fallocate")]
    pub fn fallocate<A: Arch>(&self, mm: &Mm<A>, offset: u64, len: u64) -> Result<(), MmError> {
        self.fallocate_resched(mm, offset, len, &mut || Ok(()))
    }

    /// [`ShmemObject::fallocate`] for a range a user chose (up to [`SHMEM_MAX_SIZE`]: minutes
    /// of page allocation in a kernel that is not preemptible). Every [`RESCHED_BATCH`] pages,
    /// with the object unlocked, it calls `resched`, which lets other tasks run (Linux's
    /// `cond_resched`) and stops the loop with its error (Linux's `signal_pending` check in
    /// `shmem_fallocate`: `EINTR` for a task being killed). Stopped, it leaves what `ENOMEM`
    /// leaves: the pages allocated so far in the cache, the size unchanged. The seal is checked
    /// again after every pause (it may have been set meanwhile).
    pub fn fallocate_resched<A: Arch, E: From<MmError>>(
        &self,
        mm: &Mm<A>,
        offset: u64,
        len: u64,
        resched: &mut dyn FnMut() -> Result<(), E>,
    ) -> Result<(), E> {
        let end = offset
            .checked_add(len)
            .filter(|&e| len > 0 && e <= SHMEM_MAX_SIZE)
            .ok_or(MmError::Inval)?;
        let (first, last) = (offset / PAGE, end.div_ceil(PAGE));
        if self
            .inner
            .lock()
            .quota
            .is_some_and(|q| last - first > q.max_pages())
        {
            return Err(MmError::NoSpc.into());
        }
        let mut index = first;
        loop {
            let mut inner = self.inner.lock();
            if inner.seals & seals::GROW != 0 && end > inner.size {
                inner.undo_fallocate(mm, first..index);
                return Err(MmError::Perm.into());
            }
            let batch_end = last.min(index + RESCHED_BATCH);
            while index < batch_end {
                if let Err(e) = inner.page(mm, index) {
                    inner.undo_fallocate(mm, first..index);
                    return Err(MmError::from(e).into());
                }
                index += 1;
            }
            if index == last {
                inner.size = inner.size.max(end);
                return Ok(());
            }
            drop(inner);
            if let Err(e) = resched() {
                self.inner.lock().undo_fallocate(mm, first..index);
                return Err(e);
            }
        }
    }

    /// Copies bytes from offset `offset` into `buf` (`read`/`pread`): stops at the size; holes
    /// read as zeros. Returns the bytes read.
    pub fn read_at<A: Arch>(&self, mm: &Mm<A>, offset: u64, buf: &mut [u8]) -> usize {
        let inner = self.inner.lock();
        let avail = inner.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < avail {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let n = (PAGE_SIZE - off).min(avail - done);
            match inner.pages.get(&(at / PAGE)) {
                Some(&frame) => mm.read_frame_bytes(frame + off as u64, &mut buf[done..done + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
        avail
    }

    /// Copies `data` to offset `offset` (`write`/`pwrite`), growing the size. Returns the
    /// bytes written (short at the quota or when memory runs out, as Linux's
    /// `generic_perform_write`); `ENOSPC`/`ENOMEM` if not even the first page could be had.
    /// Seals (Linux `shmem_write_begin`, per page): `F_SEAL_WRITE`/`F_SEAL_FUTURE_WRITE` refuse
    /// every write, `F_SEAL_GROW` a page chunk reaching past the size; `EPERM` if that stops the
    /// first chunk, else a short count.
    pub fn write_at<A: Arch>(
        &self,
        mm: &Mm<A>,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, MmError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= SHMEM_MAX_SIZE)
            .ok_or(MmError::Inval)?;
        let mut inner = self.inner.lock();
        if inner.seals & (seals::WRITE | seals::FUTURE_WRITE) != 0 && !data.is_empty() {
            return Err(MmError::Perm);
        }
        let mut done = 0;
        let mut failure = None;
        while done < data.len() {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            if inner.seals & seals::GROW != 0 && at + n as u64 > inner.size {
                if done == 0 {
                    return Err(MmError::Perm);
                }
                break;
            }
            let frame = match inner.page(mm, at / PAGE) {
                Ok(frame) => frame,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            mm.write_frame_bytes(frame + off as u64, &data[done..done + n]);
            done += n;
        }
        if let (0, Some(e)) = (done, failure) {
            return Err(e.into());
        }
        inner.size = inner.size.max(if done == data.len() {
            end
        } else {
            offset + done as u64
        });
        Ok(done)
    }

    /// Drops one holder's reference to the object; the last one frees every cache page (Linux
    /// `iput` -> `shmem_evict_inode`). Every `Arc` clone of an object must end here (or inside
    /// the memory manager, which does it for VMAs), or its pages leak.
    #[doc(alias = "shmem_evict_inode")]
    ///
    /// A cache of more than [`DEFER_EVICT_PAGES`] pages is handed to [`Arch::defer_evict`]
    /// (the kernel frees it in batches, letting other tasks run between them, before the
    /// closing task returns to user mode: a `Drop` may run where sleeping is not allowed);
    /// a smaller one, or one the arch declines, is freed here.
    pub fn put<A: Arch>(this: Arc<ShmemObject>, mm: &Mm<A>) {
        if let Some(obj) = Arc::into_inner(this) {
            let inner = obj.inner.into_inner();
            inner.uncharge(inner.pages.len());
            let mut dead = DeadCache { pages: inner.pages };
            if dead.len() > DEFER_EVICT_PAGES {
                match mm.arch().defer_evict(dead) {
                    Ok(()) => return,
                    Err(back) => dead = back,
                }
            }
            dead.free_some(mm, usize::MAX);
        }
    }

    /// The cache page at `index` for a fault, created zeroed if missing, with one reference
    /// for the caller taken under the object's lock, so a concurrent `set_size` cannot free it
    /// before the caller maps it (Linux `shmem_get_folio`).
    #[doc(alias = "shmem_get_folio")]
    pub(crate) fn get_page<A: Arch>(&self, mm: &Mm<A>, index: u64) -> Result<PhysAddr, ShmemFault> {
        let mut inner = self.inner.lock();
        if index >= inner.size.div_ceil(PAGE) {
            return Err(ShmemFault::BeyondEof);
        }
        let frame = inner.page(mm, index).map_err(|e| match e {
            NoPage::NoSpace => ShmemFault::NoSpace,
            NoPage::NoMem => ShmemFault::NoMem,
        })?;
        mm.frames().meta(frame).get();
        Ok(frame)
    }

    /// The cache frame at `index`, if there is one: for tests, and for a kernel user that
    /// writes the frames directly and never lets the object shrink (kcov's coverage buffer,
    /// whose pages were all allocated by `fallocate` and which offers no `ftruncate`).
    pub fn cache_frame(&self, index: u64) -> Option<PhysAddr> {
        self.inner.lock().pages.get(&index).copied()
    }
}

/// Caches at most this large are freed by the last [`ShmemObject::put`] itself (a batch: 1 MiB).
pub const DEFER_EVICT_PAGES: usize = 256;

/// The cache of an object whose last holder went, on its way back to the allocator (Linux
/// `shmem_evict_inode`'s truncate, which runs from the deferred `fput`): whoever holds it
/// frees it in steps ([`DeadCache::free_some`]) and must free all of it (dropping it with pages
/// left leaks them).
pub struct DeadCache {
    pages: BTreeMap<u64, PhysAddr>,
}

impl DeadCache {
    /// Pages not yet freed.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Frees up to `n` of the pages (each loses the cache's reference; a page still mapped or
    /// pinned lives on as an orphan); returns whether none are left.
    pub fn free_some<A: Arch>(&mut self, mm: &Mm<A>, n: usize) -> bool {
        for _ in 0..n {
            match self.pages.pop_first() {
                Some((_, frame)) => drop_cache_page(mm, frame),
                None => break,
            }
        }
        self.pages.is_empty()
    }
}

impl Inner {
    /// The cache page at `index`, allocated zeroed (and charged to the quota) if absent.
    fn page<A: Arch>(&mut self, mm: &Mm<A>, index: u64) -> Result<PhysAddr, NoPage> {
        if let Some(&frame) = self.pages.get(&index) {
            return Ok(frame);
        }
        if !mm.arch().metadata_room() {
            return Err(NoPage::NoMem);
        }
        if let Some(quota) = self.quota {
            if !quota.charge() {
                return Err(NoPage::NoSpace);
            }
        }
        let Some(frame) = mm.alloc_zeroed() else {
            self.uncharge(1);
            return Err(NoPage::NoMem);
        };
        // refcount 1 from the allocator: the cache's own reference.
        mm.frames()
            .meta(frame)
            .init_flags(FrameFlags::PAGECACHE | FrameFlags::SHMEM);
        stats::inc(&mm.counters.shmem_pages);
        self.pages.insert(index, frame);
        Ok(frame)
    }

    /// Drops the pages of `range` that lie wholly beyond the size: the ones a failed
    /// `fallocate` just added (pages within the size may hold data and stay).
    fn undo_fallocate<A: Arch>(&mut self, mm: &Mm<A>, range: core::ops::Range<u64>) {
        let first_beyond = self.size.div_ceil(PAGE).max(range.start);
        for index in first_beyond..range.end {
            if let Some(frame) = self.pages.remove(&index) {
                self.uncharge(1);
                drop_cache_page(mm, frame);
            }
        }
    }

    /// Returns `pages` cache pages leaving the cache to the quota (Linux
    /// `shmem_inode_unacct_blocks`).
    fn uncharge(&self, pages: usize) {
        if let Some(quota) = self.quota {
            quota.uncharge(pages as u64);
        }
    }
}

/// `F_SEAL_*` with Linux's values.
pub mod seals {
    /// No more seals may be added.
    pub const SEAL: u32 = 0x01;
    /// The size may not shrink.
    pub const SHRINK: u32 = 0x02;
    /// The size may not grow.
    pub const GROW: u32 = 0x04;
    /// No writes, and no shared mapping that may write.
    pub const WRITE: u32 = 0x08;
    /// Like `WRITE` for new writers only: existing writable mappings keep writing.
    pub const FUTURE_WRITE: u32 = 0x10;
    /// Every seal cowlab knows (Linux 6.1's set: `F_SEAL_EXEC`, 6.3, is `EINVAL` here).
    pub const ALL: u32 = SEAL | SHRINK | GROW | WRITE | FUTURE_WRITE;
}

/// May a new `MAP_SHARED` mapping of a shmem file with protection `prot` write the file, now
/// or after an `mprotect`? The one rule for writable shared mappings (Linux `do_mmap`'s
/// `FMODE_WRITE` checks, then `seal_check_write`): a descriptor not open for writing refuses
/// `PROT_WRITE` (`EACCES`) and otherwise leaves the mapping without `VM_MAYWRITE`; a
/// `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE` seal refuses `PROT_WRITE` (`EPERM`) and otherwise
/// leaves it without `VM_MAYWRITE` too. `Ok(true)`: the VMA gets `MAYWRITE`.
#[doc(alias = "seal_check_write")]
pub fn shared_mapping_may_write(
    prot: Prot,
    fd_writable: bool,
    seal_bits: u32,
) -> Result<bool, MmError> {
    let refused = if !fd_writable {
        MmError::Access
    } else if seal_bits & (seals::WRITE | seals::FUTURE_WRITE) != 0 {
        MmError::Perm
    } else {
        return Ok(true);
    };
    if prot.write() {
        Err(refused)
    } else {
        Ok(false)
    }
}

/// A shared mapping's registration as a possible writer of its object (Linux
/// `mapping_map_writable`/`mapping_unmap_writable`). Cloning it (a VMA split, a fork) counts
/// one more writer; dropping it (the VMA goes) one fewer.
pub struct WritableMapping(Arc<AtomicUsize>);

impl Clone for WritableMapping {
    fn clone(&self) -> WritableMapping {
        self.0.fetch_add(1, Ordering::AcqRel);
        WritableMapping(self.0.clone())
    }
}

impl Drop for WritableMapping {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds of one object compare equal (VMA comparison).
impl PartialEq for WritableMapping {
    fn eq(&self, other: &WritableMapping) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WritableMapping {}

impl core::fmt::Debug for WritableMapping {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WritableMapping")
    }
}

/// Removes `frame` from its cache: it loses `PAGECACHE|SHMEM` and the cache's reference.
/// Mappings and pins keep an orphan alive until they go (see the module comment).
#[doc(alias = "shmem_undo_range")]
fn drop_cache_page<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    mm.frames()
        .meta(frame)
        .clear_flags(FrameFlags::PAGECACHE | FrameFlags::SHMEM);
    stats::dec(&mm.counters.shmem_pages);
    mm.put_page(frame);
}

/// Identity: two objects are equal only if they are the same object (for VMA comparison).
impl PartialEq for ShmemObject {
    fn eq(&self, other: &ShmemObject) -> bool {
        core::ptr::eq(self, other)
    }
}

impl Eq for ShmemObject {}

impl core::fmt::Debug for ShmemObject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ShmemObject@{:p}", self)
    }
}
