//! The page cache of a file with a backing store (Linux `address_space` of a disk file,
//! `mm/filemap.c`): an ext2 regular file's pages as frames flagged `PAGECACHE`, looked up by
//! page index, filled from the store on first use, written back when dirty.
//!
//! Picture: a [`FileCache`] is the file's in-memory size (Linux `i_size`, which runs ahead of
//! the size on disk until writeback) plus a sorted map from page index to frame. The cache holds
//! one reference on each frame; `DIRTY` says the frame differs from the store, `WRITEBACK` that
//! it is being written. The store is a [`BackingStore`] passed to each call (the kernel's ext2
//! glue; a `Vec` in host tests), so this module knows nothing of filesystems.
//!
//! Locking: one spin lock per cache over its map and size, never held across the store's I/O,
//! and a per-page lock (`FrameFlags::LOCKED`, Linux's `folio_lock`) for what takes time. A read
//! or fault that misses inserts a locked page without `UPTODATE` under the spin lock, drops
//! it, fills the page from the store (the kernel's store sleeps on the disk), then sets
//! `UPTODATE` and unlocks, waking the waiters; another reader of that page finds it, takes a
//! reference and waits for the lock asleep ([`wait_on_page_locked`], the kernel's
//! [`set_page_waiter`] hook), then uses it. A failed fill removes the page and unlocks it
//! without `UPTODATE`: every waiter gets the error (`EIO`). So a page is read from the store
//! once however many tasks want it. Truncation waits for the locks of the pages it removes;
//! writeback takes each dirty page's lock (`trylock`, under the spin lock: a dirty page is
//! never being filled) to clean it; buffered writes hold the locks of their pages from the
//! lookup to the copy (Linux `write_begin`/`write_end`). Lock order: page locks (ascending
//! index), then whatever the store takes (the filesystem), then the cache's spin lock, held
//! briefly and never across a call into the store: a task waiting for the filesystem may give
//! the CPU up, and on one CPU a yield under a spin lock the filesystem's holder needs next
//! deadlocks (`write_begin_end`, [`file_page_mkwrite`]). Reclaim
//! from an allocation that fails elsewhere only ever `try_lock`s a cache
//! ([`FileCache::try_drop_clean`]), so an allocator that holds a cache lock cannot deadlock on
//! it; it skips locked pages (their filler holds a reference).
//!
//! Invariant: a frame is in at most one cache; while it is, its flags contain `PAGECACHE` and
//! not `SHMEM`/`ANON`, `refcount >= 1 + mapcount + pincount`, and the `file_pages` gauge counts
//! it (`file_dirty` counts those with `DIRTY`).
//!
//! Not shared with [`crate::shmem`] yet: shmem keeps its own map (it has no store, seals and a
//! quota); the two differ in the fill (zeroes vs. the store) and the writeback (none vs. the
//! store), the split this module's `BackingStore` draws.

#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

/// One page of zeroes, for [`FileCache::zero_range`].
static ZEROES: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::freebatch::{FreeBatch, FREE_BATCH};
use crate::mm::Mm;
use crate::stats;
use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;
/// No page index ([`FileCache`]'s `straddle_wp`).
const NO_PAGE: u64 = u64::MAX;

/// A cache page whose bytes below the size all have blocks on the store (Linux's buffer-head
/// `BH_Mapped` state, `PG_mappedtodisk`): set by [`file_page_mkwrite`] once the file allocated
/// them (and by a buffered write that covered the page from its start to its end or past the
/// size), so a later write-notify fault on the page does not ask the filesystem again; the
/// only shortcut past that call (a dirty page is asked too: it may lack blocks); cleared
/// where blocks under a cached page can go (truncation's partial last page, a punched hole).
/// Private to the page cache (a bit no other frame kind uses).
const MAPPED_TO_DISK: FrameFlags = FrameFlags::from_bits(1 << 12);

/// Where a file's pages come from and go to (Linux `address_space_operations`' `read_folio`
/// and `writepage`).
pub trait BackingStore {
    /// The store's error (an errno), which also expresses the cache's own `ENOMEM`.
    type Error: From<MmError>;
    /// Fills `buf` (one page) with page `index` of the stored file; bytes the store does not
    /// hold (a hole, past its end) read as zeroes. No cache lock is held; `may_sleep` false
    /// means the caller holds some other spin lock (a fault that cannot drop its address
    /// space's lock) and the store must poll rather than sleep.
    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), Self::Error>;
    /// Stores `data` (the first `data.len()` bytes of page `index`: the whole page, or the part
    /// below the cache's size) in the file, allocating blocks as needed.
    fn write_page(&self, index: u64, data: &[u8]) -> Result<(), Self::Error>;
    /// A buffered write whose `begin` prepared more than the cache then took (a fill failed,
    /// or a short count ended inside a page it could not complete) has ended (Linux
    /// `ext2_write_failed`): the store gives back the size and the blocks that `begin` added
    /// past `keep`, the cache's size as the write left it. Called with no lock held, at once:
    /// the caller of [`FileCache::write_begin_end`] holds the file's writer lock (Linux
    /// `i_rwsem`), so no other write, truncation or preallocation has moved the size or the
    /// blocks past it since this write's `begin`. A store whose `begin` allocates nothing has
    /// nothing to undo.
    fn write_failed(&self, keep: u64) -> Result<(), Self::Error> {
        let _ = keep;
        Ok(())
    }
}

/// One file's page cache.
pub struct FileCache {
    inner: Mutex<Inner>,
    /// When the cache last went from clean to dirty, on the [`set_clock`] clock (Linux's
    /// per-inode `dirtied_when`, which the periodic flusher compares with `dirty_expire`); 0
    /// while no stamp is set. Stamped by [`file_page_mkwrite`] (or by the flusher when it finds
    /// pages dirtied some other way), cleared when writeback starts.
    dirtied_when: AtomicU64,
    /// Pages read from the store (one per fill, however many tasks waited for it).
    fills: AtomicU64,
    /// A dirty partial last page the size grew past ([`Inner::isize_extended`]; [`NO_PAGE`]:
    /// none): its shared mappings may still be writable, and must be write-protected
    /// ([`FileCache::take_isize_extended`], [`pagecache_isize_extended`]). Outside the spin
    /// lock so that the check after every buffered write is one load.
    straddle_wp: AtomicU64,
}

/// The pages of one writeback, between [`FileCache::begin_writeback`] and
/// [`FileCache::end_writeback`]: each clean, `WRITEBACK`, and referenced by the batch.
pub struct WritebackBatch {
    /// (index, frame), in index order.
    pub pages: Vec<(u64, PhysAddr)>,
    /// The file's size when the batch began (the last page stores only the bytes below it).
    pub size: u64,
}

/// The clock dirty caches are stamped with (the kernel's tick counter); none until
/// [`set_clock`] (host tests without one stamp 1). Read only when a clean cache is first
/// dirtied.
static CLOCK: Mutex<Option<fn() -> u64>> = Mutex::new(None);

/// Sets the clock of the caches' dirty stamps ([`FileCache::dirtied_when`]).
pub fn set_clock(clock: fn() -> u64) {
    *CLOCK.lock() = Some(clock);
}

fn clock_now() -> u64 {
    let clock = *CLOCK.lock();
    clock.map_or(0, |f| f())
}

/// How a task waits for a page lock and how an unlock wakes it (Linux's folio wait queues):
/// the kernel's sleep on a channel and wakeup; none in host tests, whose threads spin.
#[derive(Clone, Copy)]
pub struct PageWaiter {
    /// Waits while `locked()` holds, on `channel`; asleep if `may_sleep` (the caller holds no
    /// spin lock), else giving the CPU up some other way (a yield).
    pub wait: fn(channel: usize, locked: &dyn Fn() -> bool, may_sleep: bool),
    /// Wakes the tasks waiting on `channel`.
    pub wake: fn(channel: usize),
}

static WAITER: Mutex<Option<PageWaiter>> = Mutex::new(None);
/// Tasks inside [`wait_on_page_locked`] (so an uncontended unlock wakes nobody: Linux's
/// `PG_waiters`, as one system-wide count rather than a frame flag).
static PAGE_WAITERS: AtomicUsize = AtomicUsize::new(0);
/// Pages read into file caches (mmstat `file_fills`), and waits for a page lock another task
/// held (mmstat `page_lock_waits`).
pub static FILE_FILLS: AtomicU64 = AtomicU64::new(0);
pub static PAGE_LOCK_WAITS: AtomicU64 = AtomicU64::new(0);
/// Fills and `page_mkwrite` calls made by a fault that could not let its address space go
/// (mmstat `file_polled`): the filesystem polled with the address-space lock held. Only the
/// kernel's user copies (a kernel-mode fault) and host tests' bare holds do that.
pub static FILE_POLLED: AtomicU64 = AtomicU64::new(0);

/// Installs the kernel's page-lock wait and wake.
pub fn set_page_waiter(waiter: PageWaiter) {
    *WAITER.lock() = Some(waiter);
}

/// The wait channel of `frame`'s lock.
fn page_channel(frame: PhysAddr) -> usize {
    frame.as_u64() as usize
}

/// Waits until `frame` (on which the caller holds a reference) is unlocked (Linux
/// `folio_wait_locked`), asleep unless `!may_sleep`.
#[doc(alias = "folio_wait_locked")]
fn wait_on_page_locked<A: Arch>(mm: &Mm<A>, frame: PhysAddr, may_sleep: bool) {
    let meta = mm.frames().meta(frame);
    if !meta.test(FrameFlags::LOCKED) {
        return;
    }
    PAGE_LOCK_WAITS.fetch_add(1, Ordering::Relaxed);
    PAGE_WAITERS.fetch_add(1, Ordering::SeqCst);
    let locked = || meta.test(FrameFlags::LOCKED);
    // Copied out: the hook's lock must not be held across the sleep (the unlock needs it).
    let waiter = *WAITER.lock();
    match waiter {
        Some(w) => (w.wait)(page_channel(frame), &locked, may_sleep),
        None => {
            while locked() {
                #[cfg(test)]
                std::thread::yield_now();
                #[cfg(not(test))]
                core::hint::spin_loop();
            }
        }
    }
    PAGE_WAITERS.fetch_sub(1, Ordering::AcqRel);
}

/// Takes `frame`'s lock, waiting for it (Linux `folio_lock`); the caller holds a reference.
#[doc(alias = "folio_lock")]
fn lock_page<A: Arch>(mm: &Mm<A>, frame: PhysAddr, may_sleep: bool) {
    while !mm.frames().meta(frame).test_and_set(FrameFlags::LOCKED) {
        wait_on_page_locked(mm, frame, may_sleep);
    }
}

/// Releases `frame`'s lock and wakes its waiters (Linux `folio_unlock`).
#[doc(alias = "folio_unlock")]
pub(crate) fn unlock_page<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    mm.frames().meta(frame).clear_flags(FrameFlags::LOCKED);
    // Against a waiter that counted itself, then saw the page locked (store, then load, on
    // both sides): one of the two sees the other's store.
    core::sync::atomic::fence(Ordering::SeqCst);
    if PAGE_WAITERS.load(Ordering::SeqCst) > 0 {
        let waiter = *WAITER.lock();
        if let Some(w) = waiter {
            (w.wake)(page_channel(frame));
        }
    }
}

/// What a lookup under the cache's spin lock found; each case holds a reference for the
/// caller.
enum Slot {
    /// An `UPTODATE` page.
    Ready(PhysAddr),
    /// A page another task is filling (locked, not `UPTODATE`): wait for it.
    Busy(PhysAddr),
    /// A new page, locked, inserted by this lookup: the caller fills it (or, for a write that
    /// covers it, writes it) and unlocks it.
    New(PhysAddr),
}

struct Inner {
    size: u64,
    pages: BTreeMap<u64, PhysAddr>,
}

impl Inner {
    /// The size grows from `self.size` to `size` (Linux `pagecache_isize_extended`): a cached
    /// partial last page had blocks only under its bytes below the old size, so it is no longer
    /// known to have all its blocks; its next store through a shared mapping asks the file
    /// again (`page_mkwrite`), which allocates the blocks the new bytes need (or is `SIGBUS` on
    /// a full disk) rather than leave them to writeback. Its mappings are already read-only
    /// unless it is dirty (write-notify); a dirty one is noted for the caller to write-protect
    /// ([`FileCache::take_isize_extended`]), as Linux's `folio_mkclean` there: without it a
    /// store through a writable PTE of a dirty page took no fault, and the blocks of the
    /// bytes the growth brought inside came only at writeback, where `ENOSPC` lost them.
    fn isize_extended<A: Arch>(&mut self, mm: &Mm<A>, size: u64, straddle: &AtomicU64) {
        if size > self.size && !self.size.is_multiple_of(PAGE) {
            if let Some(&frame) = self.pages.get(&(self.size / PAGE)) {
                let meta = mm.frames().meta(frame);
                meta.clear_flags(MAPPED_TO_DISK);
                if meta.test(FrameFlags::DIRTY) {
                    straddle.store(self.size / PAGE, Ordering::Relaxed);
                }
            }
        }
        self.size = self.size.max(size);
    }
}

impl FileCache {
    /// An empty cache over a stored file of `size` bytes.
    pub const fn new(size: u64) -> FileCache {
        FileCache {
            inner: Mutex::new(Inner {
                size,
                pages: BTreeMap::new(),
            }),
            straddle_wp: AtomicU64::new(NO_PAGE),
            dirtied_when: AtomicU64::new(0),
            fills: AtomicU64::new(0),
        }
    }

    /// When the cache went dirty (its oldest unwritten store, to the flusher's precision), on
    /// the [`set_clock`] clock; `None` if no stamp is set.
    pub fn dirtied_when(&self) -> Option<u64> {
        match self.dirtied_when.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Stamps the cache dirty now unless it already is (Linux `__mark_inode_dirty` keeps the
    /// first `dirtied_when`): one load when it is.
    pub fn note_dirtied(&self) {
        if self.dirtied_when.load(Ordering::Relaxed) == 0 {
            let _ = self.dirtied_when.compare_exchange(
                0,
                clock_now().max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The file's size as the cache knows it (`st_size`, `SEEK_END`).
    pub fn size(&self) -> u64 {
        self.inner.lock().size
    }

    /// Frames currently in the cache.
    pub fn cached_pages(&self) -> usize {
        self.inner.lock().pages.len()
    }

    /// Pages currently `DIRTY`.
    pub fn dirty_pages<A: Arch>(&self, mm: &Mm<A>) -> usize {
        let inner = self.inner.lock();
        inner
            .pages
            .values()
            .filter(|&&f| mm.frames().meta(f).test(FrameFlags::DIRTY))
            .count()
    }

    /// Copies bytes from `offset` into `buf` (`read`/`pread`, Linux `filemap_read`), reading
    /// missing pages from the store; stops at the size. Returns the bytes read; an error only
    /// if not even the first page could be had.
    pub fn read_at<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, S::Error> {
        let mut done = 0;
        self.read_to(mm, store, offset, buf.len(), |frame, n| {
            mm.read_frame_bytes(frame, &mut buf[done..done + n]);
            done += n;
            n
        })
    }

    /// Reads up to `len` bytes at `offset` as [`Self::read_at`] does, but hands each cached
    /// page's part to `copy` (its frame address and length, the page's reference held across
    /// the call) instead of copying into a buffer: the caller copies it where the bytes go
    /// (Linux `filemap_read` -> `copy_folio_to_iter`). `copy` returns the bytes it took; a
    /// short count (a fault in the destination) ends the read. Returns the bytes taken.
    pub fn read_to<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        len: usize,
        mut copy: impl FnMut(PhysAddr, usize) -> usize,
    ) -> Result<usize, S::Error> {
        let avail = self.size().saturating_sub(offset).min(len as u64) as usize;
        let mut done = 0;
        while done < avail {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let n = (PAGE_SIZE - off).min(avail - done);
            let frame = match self.get_page(mm, store, at / PAGE, true) {
                Ok(Some(f)) => f,
                // Truncated meanwhile: the file ends here now.
                Ok(None) => break,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            crate::opstat::mark(crate::opstat::Phase::FileLookup);
            let took = copy(frame + off as u64, n);
            crate::opstat::mark(crate::opstat::Phase::FileToUser);
            mm.put_page(frame);
            done += took;
            if took < n {
                break;
            }
        }
        Ok(done)
    }

    /// Copies `data` to `offset` (`write`/`pwrite`, Linux `generic_perform_write`): the pages
    /// become `DIRTY` and the size grows; nothing reaches the store until writeback. A page only
    /// partly overwritten is read in first (unless it lies wholly beyond the size). Returns the
    /// bytes written (short if memory runs out); an error if not even the first page could be
    /// had.
    pub fn write_at<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        data: &[u8],
    ) -> Result<usize, S::Error> {
        self.write_begin_end(mm, store, offset, data, Ok)
    }

    /// Writes `data` at `offset` through to the store and into the cache (an `O_DIRECT` write,
    /// Linux `filemap_write_and_wait_range` + the direct write + `invalidate_inode_pages2_range`):
    /// `store_write` stores the bytes and says how many it took, and grows the cache's size
    /// with the store's ([`Self::grow_size`]) under the store's own lock, so that a truncation
    /// (the store's, then the cache's) is ordered against both; this call never grows it. The
    /// bytes are then copied into the pages already cached, each locked meanwhile
    /// ([`Self::for_each_cached_locked`]), which keep their `DIRTY` state (a page not cached is
    /// read from the store when next needed). A fill that read the store's old bytes before the
    /// store changed holds its page's lock until its copy is in: the update waits for it and
    /// then overwrites it, so no stale byte stays cached (nor resurrects after the update).
    /// A truncation that ran after the store cut the cache's pages past its size and zeroed
    /// the tail of its last one: the copy stops at the size read under the page's lock (which
    /// keeps truncation off that page), so no written byte lands past the end of the file,
    /// where a later growth would show it instead of zeroes.
    pub fn write_through<A: Arch, E>(
        &self,
        mm: &Mm<A>,
        offset: u64,
        data: &[u8],
        store_write: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let n = store_write(data)?.min(data.len());
        let end = offset + n as u64;
        self.for_each_cached_locked(mm, offset, end, |frame, index| {
            let from = (index * PAGE).max(offset);
            let to = ((index + 1) * PAGE).min(end).min(self.size());
            if from < to {
                let src = &data[(from - offset) as usize..(to - offset) as usize];
                mm.write_frame_bytes(frame + from % PAGE, src);
            }
        });
        Ok(n)
    }

    /// Grows the size to `end` if it is smaller (a direct write's end, Linux `i_size_write`
    /// under the inode lock at the end of the write): the caller holds the lock that orders it
    /// against truncation of the store.
    pub fn grow_size<A: Arch>(&self, mm: &Mm<A>, end: u64) {
        self.inner.lock().isize_extended(mm, end, &self.straddle_wp);
    }

    /// The dirty partial last page a growth of the size passed, if one did since the last
    /// call: the caller (every path that grows the size: a buffered or direct write,
    /// `ftruncate`, `fallocate`) write-protects its shared mappings in every address space of
    /// the file ([`pagecache_isize_extended`]) after the growth, as Linux's
    /// `pagecache_isize_extended` runs after `i_size_write`.
    pub fn take_isize_extended(&self) -> Option<u64> {
        // One load when there is none (every buffered write asks).
        if self.straddle_wp.load(Ordering::Relaxed) == NO_PAGE {
            return None;
        }
        match self.straddle_wp.swap(NO_PAGE, Ordering::Relaxed) {
            NO_PAGE => None,
            index => Some(index),
        }
    }

    /// Calls `f(frame, index)` on each page cached in `[start, end)` that is `UPTODATE`, with
    /// the page locked (Linux's `truncate_pagecache_range` / `invalidate_inode_pages2_range`
    /// walk, `folio_lock` on each): a page being filled is waited for (asleep), so its fill's
    /// copy cannot land after `f`'s change. The cache's spin lock is held only to find the next
    /// page; a page inserted after that lookup is read from the store as it is now. A page that
    /// left the cache or stayed not `UPTODATE` (its fill failed) is skipped.
    fn for_each_cached_locked<A: Arch>(
        &self,
        mm: &Mm<A>,
        start: u64,
        end: u64,
        mut f: impl FnMut(PhysAddr, u64),
    ) {
        let mut index = start / PAGE;
        let last = end.div_ceil(PAGE);
        while index < last {
            let next = {
                let inner = self.inner.lock();
                let found = inner.pages.range(index..last).next().map(|(&i, &f)| (i, f));
                if let Some((_, frame)) = found {
                    mm.frames().meta(frame).get();
                }
                found
            };
            let Some((i, frame)) = next else {
                return;
            };
            lock_page(mm, frame, true);
            let meta = mm.frames().meta(frame);
            // The reference kept the frame from reuse: still `PAGECACHE` means still this
            // cache's page `i` (frames enter a cache only when newly allocated).
            if meta.test(FrameFlags::PAGECACHE) && meta.test(FrameFlags::UPTODATE) {
                f(frame, i);
            }
            unlock_page(mm, frame);
            mm.put_page(frame);
            index = i + 1;
        }
    }

    /// Pages this cache read from its store (host tests: a page is read once however many
    /// tasks wanted it).
    pub fn fills(&self) -> u64 {
        self.fills.load(Ordering::Relaxed)
    }

    /// The `UPTODATE` page at `index` with a reference for the caller (Linux
    /// `filemap_get_pages` -> `filemap_read_folio`): found, or inserted locked and filled from
    /// the store with no spin lock held, or, if another task is
    /// filling it, waited for (asleep unless `!may_sleep`). A page that is not `UPTODATE` after
    /// the wait is not an error of its own (Linux `filemap_update_page`): if it left the cache
    /// (its fill failed, or truncation took it after the fill) it is looked up again; if it is
    /// still cached, this task locks it and reads it itself. The store's error (`EIO`) only
    /// for a fill of this task's that failed. `None` if the page lies beyond the size now (a
    /// truncation while waiting: the reader's end of file).
    fn get_page<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        index: u64,
        may_sleep: bool,
    ) -> Result<Option<PhysAddr>, S::Error> {
        loop {
            let slot = {
                let mut inner = self.inner.lock();
                if index >= inner.size.div_ceil(PAGE) {
                    return Ok(None);
                }
                inner.lookup(mm, index)?
            };
            let frame = match slot {
                Slot::Ready(frame) => return Ok(Some(frame)),
                Slot::New(frame) => frame,
                Slot::Busy(frame) => {
                    wait_on_page_locked(mm, frame, may_sleep);
                    let meta = mm.frames().meta(frame);
                    if meta.test(FrameFlags::UPTODATE) && meta.test(FrameFlags::PAGECACHE) {
                        return Ok(Some(frame));
                    }
                    // Linux `filemap_read_folio` by a waiter: take the lock, and unless the
                    // page became usable or left the cache meanwhile, read it.
                    lock_page(mm, frame, may_sleep);
                    let meta = mm.frames().meta(frame);
                    if !meta.test(FrameFlags::PAGECACHE) {
                        unlock_page(mm, frame);
                        mm.put_page(frame);
                        continue;
                    }
                    if meta.test(FrameFlags::UPTODATE) {
                        unlock_page(mm, frame);
                        return Ok(Some(frame));
                    }
                    frame
                }
            };
            // A locked page of this cache without `UPTODATE`: this task reads it.
            self.fill_page(mm, store, index, frame, may_sleep)
                .inspect_err(|_| mm.put_page(frame))?;
            mm.frames().meta(frame).set_flags(FrameFlags::UPTODATE);
            unlock_page(mm, frame);
            return Ok(Some(frame));
        }
    }

    /// The page at `index`, locked, with a reference (Linux `write_begin`'s
    /// `__filemap_get_folio(FGP_LOCK | FGP_CREAT)`), and whether its bytes are valid: a cached
    /// page is waited for and locked; a new one is filled from the store if `fill` (valid), else
    /// left as allocated (zeroes, not valid: the caller's write must cover it or
    /// [`Self::write_end_pages`] reads it). Buffered writes only: may sleep.
    fn get_page_locked<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        index: u64,
        fill: bool,
    ) -> Result<(PhysAddr, bool), S::Error> {
        loop {
            let slot = self.inner.lock().lookup(mm, index)?;
            match slot {
                Slot::Ready(frame) | Slot::Busy(frame) => {
                    lock_page(mm, frame, true);
                    let meta = mm.frames().meta(frame);
                    if meta.test(FrameFlags::UPTODATE) && meta.test(FrameFlags::PAGECACHE) {
                        return Ok((frame, true));
                    }
                    // Its fill failed (removed) or truncation took it meanwhile: look again.
                    unlock_page(mm, frame);
                    mm.put_page(frame);
                }
                Slot::New(frame) => {
                    if fill {
                        self.fill_page(mm, store, index, frame, true)
                            .inspect_err(|_| mm.put_page(frame))?;
                        mm.frames().meta(frame).set_flags(FrameFlags::UPTODATE);
                    }
                    return Ok((frame, fill));
                }
            }
        }
    }

    /// Reads page `index` into `frame`, a new page the caller locked (Linux `read_folio`), with
    /// no spin lock of the cache held. On failure the page leaves the cache and is unlocked
    /// without `UPTODATE`, so its waiters see the error; the caller keeps its reference.
    fn fill_page<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        index: u64,
        frame: PhysAddr,
        may_sleep: bool,
    ) -> Result<(), S::Error> {
        let filled = page_buf().map_err(S::Error::from).and_then(|mut buf| {
            store.read_page(index, &mut buf, may_sleep)?;
            Ok(buf)
        });
        match filled {
            Ok(buf) => {
                mm.write_frame_bytes(frame, &buf);
                self.fills.fetch_add(1, Ordering::Relaxed);
                FILE_FILLS.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                {
                    let mut inner = self.inner.lock();
                    if inner.pages.get(&index) == Some(&frame) {
                        inner.pages.remove(&index);
                        remove_cache_page(mm, frame);
                    }
                }
                unlock_page(mm, frame);
                Err(e)
            }
        }
    }

    /// Writes every `DIRTY` page back one page at a time through `store` (host tests; the
    /// kernel batches: [`Self::begin_writeback`], its own I/O, [`Self::end_writeback`]). A
    /// caller whose file may be mapped shared write-protects every PTE mapping it
    /// ([`folio_mkclean`]) between the begin and the I/O. The last page stores only the bytes
    /// below the size. On a store error the page is dirty again and the error returned (the
    /// other pages are still tried).
    pub fn writeback<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
    ) -> Result<usize, S::Error> {
        let batch = self.begin_writeback(mm)?;
        let mut buf = page_buf()?;
        let mut failed = Vec::new();
        let mut failure = None;
        for &(index, frame) in &batch.pages {
            let len = batch.size.saturating_sub(index * PAGE).min(PAGE) as usize;
            mm.read_frame_bytes(frame, &mut buf[..len]);
            let r = if len == 0 {
                Ok(())
            } else {
                store.write_page(index, &buf[..len])
            };
            if let Err(e) = r {
                failed.push(index);
                failure = Some(e);
            }
        }
        let written = batch.pages.len() - failed.len();
        self.end_writeback(mm, batch, |i| failed.contains(&i));
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Starts writing back every `DIRTY` page (Linux `write_cache_pages` ->
    /// `folio_clear_dirty_for_io` + `folio_start_writeback`): under the cache's lock each one is
    /// made clean and `WRITEBACK`, and the batch takes a reference on it, so the caller does the
    /// I/O with no spin lock held (and may sleep on the device) while the frames stay. Clearing
    /// `DIRTY` comes before the caller's write protection ([`folio_mkclean`]), which comes
    /// before the I/O: a store before the protection lands in the page before the device reads
    /// it, a store after it faults and dirties the page again. A page dirtied again during the
    /// I/O stays dirty for the next writeback. The pages are in index order; `size` is the
    /// file's size at the start.
    pub fn begin_writeback<A: Arch>(&self, mm: &Mm<A>) -> Result<WritebackBatch, MmError> {
        loop {
            let inner = self.inner.lock();
            // Linux `write_cache_pages` with `WB_SYNC_ALL` locks each dirty folio, waiting: a
            // buffered write holding one is waited for, so its earlier stores are not skipped.
            let busy = inner.pages.values().copied().find(|&f| {
                let meta = mm.frames().meta(f);
                meta.test(FrameFlags::DIRTY) && meta.test(FrameFlags::LOCKED)
            });
            match busy {
                None => return self.collect_dirty(mm, &inner),
                Some(frame) => {
                    mm.frames().meta(frame).get();
                    drop(inner);
                    wait_on_page_locked(mm, frame, true);
                    mm.put_page(frame);
                }
            }
        }
    }

    /// [`Self::begin_writeback`] if the cache is not locked (background writeback, Linux's
    /// `WB_SYNC_NONE`), skipping locked pages (they stay dirty); `None` if it is.
    pub fn try_begin_writeback<A: Arch>(
        &self,
        mm: &Mm<A>,
    ) -> Option<Result<WritebackBatch, MmError>> {
        let inner = self.inner.try_lock()?;
        Some(self.collect_dirty(mm, &inner))
    }

    fn collect_dirty<A: Arch>(&self, mm: &Mm<A>, inner: &Inner) -> Result<WritebackBatch, MmError> {
        // Pages dirtied from here on are a new generation (Linux requeues the inode with a new
        // `dirtied_when`); a page whose store fails is dirty again, and the flusher stamps it
        // when it finds it.
        self.dirtied_when.store(0, Ordering::Relaxed);
        let mut pages = Vec::new();
        for (&index, &frame) in inner.pages.iter() {
            let meta = mm.frames().meta(frame);
            if !meta.test(FrameFlags::DIRTY) {
                continue;
            }
            pages.try_reserve(1).map_err(|_| MmError::NoMem)?;
            // Linux `folio_clear_dirty_for_io` + `folio_start_writeback` under the folio lock,
            // released before the I/O. A page someone holds (a buffered write in its copy:
            // only the background flusher gets here then) stays dirty for the next round.
            if !meta.test_and_set(FrameFlags::LOCKED) {
                continue;
            }
            meta.set_flags(FrameFlags::WRITEBACK);
            clear_dirty(mm, frame);
            meta.get();
            unlock_page(mm, frame);
            pages.push((index, frame));
        }
        Ok(WritebackBatch {
            pages,
            size: inner.size,
        })
    }

    /// Ends a writeback started by [`Self::begin_writeback`] (Linux `folio_end_writeback`):
    /// `WRITEBACK` is cleared on the pages still in a cache (truncation may have dropped some
    /// meanwhile: it clears `PAGECACHE`, and the batch's reference keeps the frame from being
    /// reused until here), the ones `failed` says were not stored are dirty again, and the
    /// batch's references go. Takes no lock (the flag changes are atomic): a task that must
    /// not spin on the cache's lock (its holder may be waiting for the filesystem this caller
    /// just released) can end a batch.
    pub fn end_writeback<A: Arch>(
        &self,
        mm: &Mm<A>,
        batch: WritebackBatch,
        failed: impl Fn(u64) -> bool,
    ) {
        for (index, frame) in batch.pages {
            let meta = mm.frames().meta(frame);
            if meta.test(FrameFlags::PAGECACHE) {
                meta.clear_flags(FrameFlags::WRITEBACK);
                if failed(index) {
                    set_dirty(mm, frame);
                }
            }
            mm.put_page(frame);
        }
    }

    /// Copies `data` to `offset` for a filesystem that allocates blocks at the call
    /// (`write`/`pwrite`, Linux `generic_perform_write` with ext2's `write_begin`/`write_end`):
    /// the pages under the range are found or read in and locked, in index order (a page only
    /// partly overwritten and holding stored bytes is read first), then, with only the page
    /// locks held (it may sleep), `begin(len)` gives the store
    /// the chance to allocate blocks and move its size, and says how many bytes from `offset`
    /// it took (short on a full disk), then those are copied in, the pages become `DIRTY` and
    /// the size grows. Nothing reaches the store's blocks until writeback. The pages are read in
    /// before `begin` so no fill sees blocks the store just allocated and has not written yet.
    /// Returns the bytes written; an error if not even the first page could be had or `begin`
    /// took nothing.
    ///
    /// The caller holds the file's writer lock (Linux `i_rwsem`, taken by `inode_lock` in
    /// `generic_file_write_iter`), which every path that moves the size or the store's blocks
    /// past it takes too (writes, truncation, preallocation): a write that took less than
    /// `begin` prepared gives the rest back before it returns ([`BackingStore::write_failed`]).
    pub fn write_begin_end<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        data: &[u8],
        begin: impl FnOnce(u64) -> Result<u64, S::Error>,
    ) -> Result<usize, S::Error> {
        let copy = |dst: PhysAddr, at: usize, len: usize| {
            mm.write_frame_bytes(dst, &data[at..at + len]);
            len
        };
        self.perform_write(mm, store, offset, data.len(), false, copy, |len, _| {
            begin(len)
        })
    }

    /// [`Self::write_begin_end`] with the bytes copied into the locked pages by `copy` (Linux
    /// `generic_perform_write`'s `copy_page_from_iter_atomic`): `copy(dst, at, len)` copies the
    /// `len` source bytes at `at` (from the write's first byte) to frame memory `dst` and says
    /// how many it copied. A user source is copied with page faults not served: `copy` runs
    /// under the cache's spin lock (`inner`), on which a served fault on a mapping of this
    /// file would spin (`fault_page`, fault-around), and a source page this write holds
    /// locked and has not read would also wait for that page lock in the fault's fill:
    /// a short copy ends the write there, the caller faults the source in with no page locked
    /// and writes the rest. Of a short copy into a page whose bytes are not known without it
    /// (not read because the write was to cover it wholly) nothing is taken, as Linux's
    /// `block_write_end` takes nothing of a short copy into a folio that is not up to date:
    /// the page is read back when it is released. `begin(len, mapped)` is told whether every
    /// page of the range already has its blocks (`MAPPED_TO_DISK`) and the range lies inside
    /// the size: the store then has nothing to allocate and no size to move (Linux's
    /// `__block_write_begin` finding every buffer mapped).
    // The cache, the store, the range, the source's kind, its copy and the store's `begin`:
    // each of Linux's `generic_perform_write` inputs, none of which group naturally.
    #[allow(clippy::too_many_arguments)]
    pub fn perform_write<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        len: usize,
        may_fault: bool,
        copy: impl FnMut(PhysAddr, usize, usize) -> usize,
        begin: impl FnOnce(u64, bool) -> Result<u64, S::Error>,
    ) -> Result<usize, S::Error> {
        let (r, trim) = self.write_begin_end_inner(mm, store, offset, len, may_fault, copy, begin);
        if let Some(keep) = trim {
            // Linux `ext2_write_failed`, at once: the caller's writer lock keeps every other
            // writer of the file out, so what lies past `keep` is this write's alone (before
            // the lock the trim waited for the last write in flight, and then ran against a
            // size another writer had moved meanwhile). A failure here (the device) leaves
            // blocks past the size, for e2fsck to find, never data loss: the count the caller
            // gets is the cache's.
            let _ = store.write_failed(keep);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn write_begin_end_inner<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        data_len: usize,
        may_fault: bool,
        mut copy: impl FnMut(PhysAddr, usize, usize) -> usize,
        begin: impl FnOnce(u64, bool) -> Result<u64, S::Error>,
    ) -> (Result<usize, S::Error>, Option<u64>) {
        let Some(end) = offset.checked_add(data_len as u64) else {
            return (Err(S::Error::from(MmError::Inval)), None);
        };
        if data_len == 0 {
            return (Ok(0), None);
        }
        // Every page first, each locked (Linux `write_begin`): the range is cut at the first
        // page that cannot be had. The locks keep truncation and other writers off the pages
        // until the copy; the references keep reclaim off them (the next page's allocation may
        // reclaim this cache's clean pages).
        let size = self.size();
        let mut have = offset;
        // (frame, index, whether its bytes are valid without this write's copy)
        let mut pages: Vec<(PhysAddr, u64, bool)> = Vec::new();
        while have < end {
            let index = have / PAGE;
            let off = have % PAGE;
            let n = (PAGE - off).min(end - have);
            // A whole-page overwrite, or a page with no stored bytes, needs no read.
            // A copy that may stop short (`may_fault`) reads every page with stored bytes,
            // so a short copy leaves only pages whose bytes are all known: one not read and
            // only partly copied would be read back from blocks `begin` may have just
            // allocated (an earlier owner's bytes), where Linux zeroes its new buffers.
            let fill = (n < PAGE || may_fault) && index * PAGE < size;
            let got = pages
                .try_reserve(1)
                .map_err(|_| S::Error::from(MmError::NoMem))
                .and_then(|()| self.get_page_locked(mm, store, index, fill));
            match got {
                Ok((f, valid)) => pages.push((f, index, valid || index * PAGE >= size)),
                Err(e) if pages.is_empty() => return (Err(e), None),
                Err(_) => break,
            }
            have += n;
        }
        crate::opstat::mark(crate::opstat::Phase::FileLookup);
        // The store's `begin` runs with only the page locks held, never the cache's spin lock:
        // the filesystem may be busy with a fill of another page of this file, and waiting for
        // it with the spin lock held would deadlock against that filler's next use of the
        // cache (it retakes the spin lock after its I/O). The page locks keep truncation off
        // the range meanwhile (`set_size` locks every page it cuts).
        // Every block under the range is known to exist and the size does not move: the
        // store only updates its times (the write-notify fault's shortcut, for `write`).
        let mapped = have <= size
            && pages
                .iter()
                .all(|p| mm.frames().meta(p.0).test(MAPPED_TO_DISK));
        let mut n = match begin(have - offset, mapped) {
            Ok(n) => n.min(have - offset) as usize,
            Err(e) => {
                self.write_end_pages(mm, store, &mut pages);
                return (Err(e), None);
            }
        };
        crate::opstat::mark(crate::opstat::Phase::FileBlocks);
        // A short count (a full disk, on a filesystem whose blocks are smaller than a page)
        // that ends inside a page this write was to cover wholly and did not read: the page's
        // bytes past the count are the store's (a hole's zeroes, or blocks the file had), so
        // the page is read now, and the count's bytes then copied over it. The read also
        // returns the old contents of the blocks `begin` just allocated under the count; the
        // copy overwrites exactly those, so none of them stays visible. Cutting the write
        // before the page instead (as before) left those blocks inside the file's new size
        // with their old disk contents and no dirty page over them (and made a write whose
        // first page this was return 0).
        let begun = n as u64;
        let mut short_fill_error = None;
        let end_at = offset + n as u64;
        if n > 0 && !end_at.is_multiple_of(PAGE) {
            let at = pages.iter().position(|p| p.1 == end_at / PAGE && !p.2);
            if let Some(at) = at {
                let (frame, index, _) = pages[at];
                match self.fill_page(mm, store, index, frame, true) {
                    Ok(()) => pages[at].2 = true,
                    Err(e) => {
                        // The failed fill took the page out of the cache and unlocked it:
                        // the write ends before it.
                        pages.remove(at);
                        mm.put_page(frame);
                        n = (index * PAGE).saturating_sub(offset) as usize;
                        short_fill_error = Some(e);
                    }
                }
            }
        }
        let mut inner = self.inner.lock();
        let mut done = 0;
        for page in pages.iter_mut() {
            if done >= n {
                break;
            }
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let len = (PAGE_SIZE - off).min(n - done);
            if !page.2 && len < PAGE_SIZE {
                // A short count ends inside a page this write was to cover wholly and did not
                // read: its other bytes are not known, so the write ends before it.
                n = done;
                break;
            }
            crate::opstat::mark(crate::opstat::Phase::FileDirty);
            let mut copied = copy(page.0 + off as u64, done, len);
            crate::opstat::mark(crate::opstat::Phase::FileCopy);
            if copied < len && !page.2 {
                // A short copy (the source faulted) into a page whose other bytes are not
                // known: nothing of it is taken (it is read back at its release).
                copied = 0;
            }
            if copied > 0 {
                set_dirty(mm, page.0);
            }
            // The store's `begin` gave every block under the copied bytes: a copy over the
            // whole page, or from its start to past the size, leaves none of its bytes below
            // the size without a block, so its next write-notify fault needs no call out.
            if off == 0 && copied > 0 && (copied == PAGE_SIZE || at + copied as u64 >= inner.size) {
                mm.frames().meta(page.0).set_flags(MAPPED_TO_DISK);
            }
            // A page this write covered wholly is valid now, whatever it held.
            page.2 |= copied == PAGE_SIZE;
            done += copied;
            if copied < len {
                n = done;
                break;
            }
        }
        if n < begun as usize {
            // The store may have given blocks to holes under the pages below the old size
            // that the copy did not reach: they are written back as the cache holds them
            // (zeroes, or the file's bytes), never left to show the blocks' old contents.
            for page in pages.iter() {
                let start = page.1 * PAGE;
                if page.2 && start < size && start + PAGE > offset + n as u64 {
                    set_dirty(mm, page.0);
                    self.note_dirtied();
                }
            }
        }
        if n > 0 {
            inner.isize_extended(mm, offset + n as u64, &self.straddle_wp);
        }
        let size = inner.size;
        // Linux `ext2_write_failed`: the store prepared blocks (and a size) up to `offset +
        // begun`, the cache took less. The pages this write created past the new size leave the
        // cache now (they are locked, and nobody else could see a page past the end); the
        // store gives back what lies past the size once the pages are unlocked
        // (`write_begin_end`; the caller's writer lock keeps other writers out meanwhile).
        let trim = offset + begun > size;
        if trim {
            let cut = size.div_ceil(PAGE);
            pages.retain(|&(frame, index, _)| {
                if index < cut || inner.pages.get(&index) != Some(&frame) {
                    return true;
                }
                inner.pages.remove(&index);
                remove_cache_page(mm, frame);
                unlock_page(mm, frame);
                mm.put_page(frame);
                false
            });
        }
        drop(inner);
        self.write_end_pages(mm, store, &mut pages);
        if n > 0 {
            self.note_dirtied();
        }
        let r = match short_fill_error {
            Some(e) if n == 0 => Err(e),
            _ => Ok(n),
        };
        (r, trim.then_some(size))
    }

    /// Unlocks and releases the pages of a write (Linux `write_end`): each one is `UPTODATE`,
    /// except a page created for a whole-page overwrite that a short write did not reach,
    /// which is read from the store first (or, if that fails, removed: its waiters get `EIO`).
    fn write_end_pages<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        pages: &mut [(PhysAddr, u64, bool)],
    ) {
        for &mut (frame, index, valid) in pages.iter_mut() {
            if valid || self.fill_page(mm, store, index, frame, true).is_ok() {
                mm.frames().meta(frame).set_flags(FrameFlags::UPTODATE);
                unlock_page(mm, frame);
            }
            mm.put_page(frame);
        }
    }

    /// Maps the cached pages of `[first, last)` that lie below the size, under the cache's
    /// lock, without reading anything in (Linux `filemap_map_pages`, fault-around): `map` is
    /// called on each with its index and frame and says whether it mapped it (then it took a
    /// reference and a mapcount for its PTE, which it may do here: truncation removes pages
    /// under this lock). Pages under writeback are mapped as any other (the device only reads
    /// them). Returns how many were mapped.
    pub(crate) fn map_pages(
        &self,
        first: u64,
        last: u64,
        uptodate: impl Fn(PhysAddr) -> bool,
        mut map: impl FnMut(u64, PhysAddr) -> bool,
    ) -> usize {
        let inner = self.inner.lock();
        let last = last.min(inner.size.div_ceil(PAGE));
        if first >= last {
            return 0;
        }
        // A page being filled (not `UPTODATE`) is left to its own fault.
        inner
            .pages
            .range(first..last)
            .filter(|&(&i, &f)| uptodate(f) && map(i, f))
            .count()
    }

    /// Sets the size (`ftruncate`, Linux `truncate_setsize`): shrinking drops the pages wholly
    /// beyond it (dirty or not: their data is cut off) and zeroes the tail of a partial last
    /// page. The caller then truncates the store.
    pub fn set_size<A: Arch>(&self, mm: &Mm<A>, size: u64) {
        loop {
            let mut inner = self.inner.lock();
            if size >= inner.size {
                inner.isize_extended(mm, size, &self.straddle_wp);
                return;
            }
            // Linux `truncate_inode_pages_range`: each page to cut (and a partial last page)
            // is locked first, so none is cut while it is filled or written.
            if let Err(busy) = inner.trylock_from(mm, size / PAGE) {
                drop(inner);
                wait_on_page_locked(mm, busy, true);
                mm.put_page(busy);
                continue;
            }
            let dropped = inner.pages.split_off(&size.div_ceil(PAGE));
            for (_, frame) in dropped {
                remove_cache_page(mm, frame);
                unlock_page(mm, frame);
            }
            let tail = (size % PAGE) as usize;
            if tail != 0 {
                if let Some(&frame) = inner.pages.get(&(size / PAGE)) {
                    mm.write_frame_bytes(frame + tail as u64, &vec![0u8; PAGE_SIZE - tail]);
                    // The store frees the blocks past the size: a later growth is a hole.
                    mm.frames().meta(frame).clear_flags(MAPPED_TO_DISK);
                    unlock_page(mm, frame);
                }
            }
            inner.size = size;
            return;
        }
    }

    /// Zeroes `[start, end)` in the pages already cached, keeping their `DIRTY` state (Linux
    /// `truncate_pagecache_range` after a hole punch: the store's range already reads as zeroes,
    /// and mappings of the pages see them too). Pages not cached are read when next needed.
    /// Each page is locked while it is zeroed ([`Self::for_each_cached_locked`]): a fill that
    /// read the punched blocks' old bytes is waited for and then zeroed, never left holding
    /// them.
    pub fn zero_range<A: Arch>(&self, mm: &Mm<A>, start: u64, end: u64) {
        let end = end.min(self.size());
        if start >= end {
            return;
        }
        self.for_each_cached_locked(mm, start, end, |frame, index| {
            let from = (index * PAGE).max(start);
            let to = ((index + 1) * PAGE).min(end);
            mm.write_frame_bytes(frame + from % PAGE, &ZEROES[..(to - from) as usize]);
            mm.frames().meta(frame).clear_flags(MAPPED_TO_DISK);
        });
    }

    /// Truncation as [`Self::set_size`] does it for a caller already holding the locks of the
    /// pages it cuts (tests: truncation that took a page's lock straight after its filler).
    #[cfg(test)]
    pub(crate) fn truncate_locked_for_test<A: Arch>(&self, mm: &Mm<A>, size: u64) {
        let mut inner = self.inner.lock();
        for (_, frame) in inner.pages.split_off(&size.div_ceil(PAGE)) {
            remove_cache_page(mm, frame);
        }
        inner.size = size;
    }

    /// The frame cached at `index`, if any (tests).
    pub fn cache_frame_for_test(&self, index: u64) -> Option<PhysAddr> {
        self.inner.lock().pages.get(&index).copied()
    }

    /// Drops every clean page nobody else references (Linux `invalidate_mapping_pages`:
    /// `drop_caches`, memory pressure). Returns the frames freed.
    pub fn drop_clean<A: Arch>(&self, mm: &Mm<A>) -> usize {
        self.inner.lock().drop_clean(mm)
    }

    /// [`Self::drop_clean`] a batch at a time (Linux `invalidate_mapping_pages` with its
    /// `cond_resched` between `folio_batch`es), for a caller that may sleep and holds no lock
    /// (`drop_caches`): the cache lock is taken per batch of [`FREE_BATCH`] pages, each
    /// batch's frames go back to the free list together after it is let go, and `pause`
    /// runs between batches (the kernel passes a `cond_resched` every few ms). Pages added
    /// behind the scan meanwhile stay. Returns the frames freed.
    pub fn drop_clean_pausing<A: Arch>(&self, mm: &Mm<A>, mut pause: impl FnMut()) -> usize {
        let mut freed = 0;
        let mut from = Some(0);
        while let Some(start) = from {
            let mut batch = FreeBatch::new();
            let (n, next) = self.inner.lock().drop_clean_from(mm, start, &mut batch);
            batch.finish(mm);
            freed += n;
            from = next;
            if from.is_some() {
                pause();
            }
        }
        freed
    }

    /// [`Self::drop_clean`] if the cache is not locked (reclaim from an allocation that may
    /// itself hold this cache's lock): 0 if it is.
    pub fn try_drop_clean<A: Arch>(&self, mm: &Mm<A>) -> usize {
        match self.inner.try_lock() {
            Some(mut inner) => inner.drop_clean(mm),
            None => 0,
        }
    }

    /// Empties the cache, dirty pages included (the file is gone, or its last user wrote them
    /// back already; Linux `truncate_inode_pages_final`).
    pub fn evict<A: Arch>(&self, mm: &Mm<A>) {
        let pages = loop {
            let mut inner = self.inner.lock();
            match inner.trylock_from(mm, 0) {
                Ok(()) => break core::mem::take(&mut inner.pages),
                Err(busy) => {
                    drop(inner);
                    // May run with an address-space lock held (a last `munmap`): no sleep.
                    wait_on_page_locked(mm, busy, false);
                    mm.put_page(busy);
                }
            }
        };
        // The cache's references go in batches (issue 17: a large clean file's eviction took
        // the free list's lock once per page): each page leaves the cache and is unlocked
        // (its waiters hold references of their own), then its reference goes into the batch.
        let mut batch = FreeBatch::new();
        for (_, frame) in pages {
            clear_dirty(mm, frame);
            mm.frames().meta(frame).clear_flags(
                FrameFlags::PAGECACHE
                    | FrameFlags::WRITEBACK
                    | FrameFlags::UPTODATE
                    | MAPPED_TO_DISK,
            );
            stats::dec(&mm.counters.file_pages);
            unlock_page(mm, frame);
            batch.put(mm, frame);
        }
        batch.finish(mm);
    }
}

impl Drop for FileCache {
    /// A cache must be evicted before it goes (it cannot reach the `Mm` here); a leak of its
    /// frames would be caught by the checker, so say so loudly in debug builds.
    fn drop(&mut self) {
        // A host test that failed an assertion with a cache still full unwinds through here:
        // a second panic would abort the test binary and hide every other test's result.
        #[cfg(test)]
        if std::thread::panicking() {
            return;
        }
        debug_assert!(
            self.inner.get_mut().pages.is_empty(),
            "a FileCache dropped with pages"
        );
    }
}

impl Inner {
    /// Looks `index` up under the spin lock, with a reference for the caller; a missing page
    /// is inserted zeroed and locked ([`Slot::New`]). Under memory pressure the cache's own
    /// clean pages go first, then the `Mm`'s reclaim runs, and the allocation is retried.
    fn lookup<A: Arch, E: From<MmError>>(&mut self, mm: &Mm<A>, index: u64) -> Result<Slot, E> {
        if let Some(&frame) = self.pages.get(&index) {
            let meta = mm.frames().meta(frame);
            meta.get();
            return Ok(if meta.test(FrameFlags::UPTODATE) {
                Slot::Ready(frame)
            } else {
                Slot::Busy(frame)
            });
        }
        if !mm.arch().metadata_room() {
            return Err(MmError::NoMem.into());
        }
        let frame = match mm.alloc_zeroed_noreclaim() {
            Some(f) => f,
            None => {
                self.drop_clean(mm);
                mm.alloc_zeroed().ok_or(MmError::NoMem)?
            }
        };
        // refcount 1 from the allocator: the cache's own reference; one more for the caller.
        let meta = mm.frames().meta(frame);
        meta.init_flags(FrameFlags::PAGECACHE | FrameFlags::LOCKED);
        meta.get();
        stats::inc(&mm.counters.file_pages);
        self.pages.insert(index, frame);
        Ok(Slot::New(frame))
    }

    /// Locks every page from index `first` on (truncation, eviction), or says which one is
    /// busy: then none is left locked and the caller waits for it (with a reference) and tries
    /// again. The spin lock keeps new pages out meanwhile.
    fn trylock_from<A: Arch>(&self, mm: &Mm<A>, first: u64) -> Result<(), PhysAddr> {
        for (taken, (_, &frame)) in self.pages.range(first..).enumerate() {
            if !mm.frames().meta(frame).test_and_set(FrameFlags::LOCKED) {
                for (_, &f) in self.pages.range(first..).take(taken) {
                    unlock_page(mm, f);
                }
                mm.frames().meta(frame).get();
                return Err(frame);
            }
        }
        Ok(())
    }

    fn drop_clean<A: Arch>(&mut self, mm: &Mm<A>) -> usize {
        let mut batch = FreeBatch::new();
        let mut freed = 0;
        let mut from = Some(0);
        while let Some(start) = from {
            let (n, next) = self.drop_clean_from(mm, start, &mut batch);
            freed += n;
            from = next;
        }
        batch.finish(mm);
        freed
    }

    /// One step of [`Self::drop_clean`]: from page index `start` on, looks at up to
    /// `4 * FREE_BATCH` pages and removes up to [`FREE_BATCH`] of them that are clean and
    /// referenced by the cache alone, their references going into `batch` (no allocation: this
    /// runs from reclaim). Returns the pages removed and the index to go on from (`None`: the
    /// end of the cache was reached).
    fn drop_clean_from<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        start: u64,
        batch: &mut FreeBatch,
    ) -> (usize, Option<u64>) {
        let mut victims = [0u64; FREE_BATCH];
        let mut n = 0;
        let mut next = None;
        for (seen, (&index, &frame)) in self.pages.range(start..).enumerate() {
            if n == FREE_BATCH || seen == 4 * FREE_BATCH {
                next = Some(index);
                break;
            }
            let meta = mm.frames().meta(frame);
            // A locked page is being filled or written: its holder has a reference too.
            if !meta
                .flags()
                .intersects(FrameFlags::DIRTY | FrameFlags::WRITEBACK | FrameFlags::LOCKED)
                && meta.refcount() == 1
            {
                victims[n] = index;
                n += 1;
            }
        }
        for index in &victims[..n] {
            if let Some(frame) = self.pages.remove(index) {
                let meta = mm.frames().meta(frame);
                meta.clear_flags(
                    FrameFlags::LOCKED
                        | FrameFlags::PAGECACHE
                        | FrameFlags::UPTODATE
                        | MAPPED_TO_DISK,
                );
                stats::dec(&mm.counters.file_pages);
                batch.put(mm, frame);
            }
        }
        (n, next)
    }
}

/// A one-page kernel buffer (a store's I/O goes through it: the store does not see frames).
fn page_buf() -> Result<Vec<u8>, MmError> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(PAGE_SIZE)
        .map_err(|_| MmError::NoMem)?;
    buf.resize(PAGE_SIZE, 0);
    Ok(buf)
}

fn set_dirty<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    let meta = mm.frames().meta(frame);
    if !meta.test(FrameFlags::DIRTY) {
        meta.set_flags(FrameFlags::DIRTY);
        stats::inc(&mm.counters.file_dirty);
    }
}

fn clear_dirty<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    let meta = mm.frames().meta(frame);
    if meta.test(FrameFlags::DIRTY) {
        meta.clear_flags(FrameFlags::DIRTY);
        stats::dec(&mm.counters.file_dirty);
    }
}

/// Removes `frame`, which the caller has locked, from its cache: it loses its cache flags and
/// the cache's reference (Linux `filemap_remove_folio`); the lock stays for the caller to
/// release ([`unlock_page`] wakes its waiters, who find it gone). Clean unlocked pages go in
/// batches ([`Inner::drop_clean_from`]).
#[doc(alias = "filemap_remove_folio")]
fn remove_cache_page<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    clear_dirty(mm, frame);
    mm.frames().meta(frame).clear_flags(
        FrameFlags::PAGECACHE | FrameFlags::WRITEBACK | FrameFlags::UPTODATE | MAPPED_TO_DISK,
    );
    stats::dec(&mm.counters.file_pages);
    mm.put_page(frame);
}

/// A mapped file as the memory manager sees it (Linux `vm_file` with its `address_space`):
/// the cache its mappings map, and the store that fills it. The kernel's object also keeps the
/// file open while a VMA holds it (it is dropped when the last VMA goes).
pub trait MappedFile: Send + Sync {
    fn cache(&self) -> &FileCache;
    /// The inode number (`/proc/<pid>/maps`).
    fn inode(&self) -> u64;
    /// Fills one page from the store, as [`BackingStore::read_page`].
    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), MmError>;
    /// Writes the file's dirty pages back (`msync(MS_SYNC)`), without any address-space lock;
    /// `false` if the store failed (`EIO`).
    fn writeback(&self) -> bool;
    /// A store through a shared mapping is about to dirty page `index`, whose first `len` bytes
    /// lie below the file's size (Linux `vm_ops->page_mkwrite`, `block_page_mkwrite`): the
    /// store allocates the blocks under them. Never called with a spin lock of the cache held;
    /// `may_sleep` (the fault's retry, [`filemap_fault_fill`], with the page locked and no
    /// address-space lock) lets the store sleep on the filesystem and the disk, else (a fault
    /// that cannot drop its locks) it must poll. An error becomes the store's `SIGBUS`
    /// (`ENOSPC`: a full disk), or the OOM kill for `NoMem`. The default has nothing to
    /// allocate.
    fn page_mkwrite(&self, index: u64, len: usize, may_sleep: bool) -> Result<(), MmError> {
        let _ = (index, len, may_sleep);
        Ok(())
    }
}

/// A VMA's hold on a mapped file (compared by identity).
#[derive(Clone)]
pub struct FileRef(pub Arc<dyn MappedFile>);

impl PartialEq for FileRef {
    fn eq(&self, other: &FileRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FileRef {}

impl core::fmt::Debug for FileRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FileRef@{:p}", Arc::as_ptr(&self.0))
    }
}

/// A [`MappedFile`]'s store as a [`BackingStore`].
struct Fill<'a>(&'a dyn MappedFile);

impl BackingStore for Fill<'_> {
    type Error = MmError;

    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), MmError> {
        // The store's failure, told apart from the cache's own `NoMem`.
        self.0
            .read_page(index, buf, may_sleep)
            .map_err(|_| MmError::Fault)
    }

    fn write_page(&self, _index: u64, _data: &[u8]) -> Result<(), MmError> {
        Err(MmError::Inval)
    }
}

/// Why a fault could not have its file page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FileFault {
    /// The page lies wholly at or beyond the end of the file (Linux: `SIGBUS`).
    BeyondEof,
    /// No memory for the page.
    NoMem,
    /// The store could not read it (Linux: `SIGBUS` too).
    Io,
    /// The file has no blocks for a store into the page (`ENOSPC` at `page_mkwrite`: the
    /// store's `SIGBUS`).
    NoSpace,
    /// The page is not cached yet, or another task is filling it: the fault must drop its
    /// locks and fill or wait for it ([`filemap_fault_fill`]), then run again (Linux
    /// `VM_FAULT_RETRY`).
    Retry,
}

/// The cache page at `index` for a fault, with one reference for the caller (Linux
/// `filemap_fault`). Bytes past the end of the file in the last page are zero (the store fills
/// them so, and truncation zeroes them). A page not cached, or being filled by another task,
/// is [`FileFault::Retry`] if `may_retry` (the caller holds its address space's lock, which
/// must not be held asleep: it drops it and calls [`filemap_fault_fill`]); otherwise it is
/// filled or waited for here, the store polling and the wait yielding instead of sleeping.
#[doc(alias = "filemap_fault")]
pub(crate) fn fault_page<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
    may_retry: bool,
) -> Result<PhysAddr, FileFault> {
    let cache = file.cache();
    {
        let inner = cache.inner.lock();
        if index >= inner.size.div_ceil(PAGE) {
            return Err(FileFault::BeyondEof);
        }
        // The common case, a cached page, with one lock round.
        if let Some(&frame) = inner.pages.get(&index) {
            let meta = mm.frames().meta(frame);
            if meta.test(FrameFlags::UPTODATE) {
                meta.get();
                return Ok(frame);
            }
        }
    }
    if may_retry {
        return Err(FileFault::Retry);
    }
    FILE_POLLED.fetch_add(1, Ordering::Relaxed);
    cache
        .get_page(mm, &Fill(file), index, false)
        .map_err(fill_error)?
        .ok_or(FileFault::BeyondEof)
}

fn fill_error(e: MmError) -> FileFault {
    match e {
        MmError::NoMem => FileFault::NoMem,
        _ => FileFault::Io,
    }
}

/// The work a fault asked for with [`FileFault::Retry`] (Linux `filemap_fault` and
/// `do_page_mkwrite` after `VM_FAULT_RETRY` dropped the `mmap_lock` and the page-table lock):
/// with no spin lock held, page `index` of `file` is read into its cache, or another task's
/// fill of it waited for, asleep; if `write` (a store through a shared mapping that wants
/// write-notify), the file then allocates the page's blocks ([`filemap_page_mkwrite`]). The
/// caller then runs the fault again. `Io` if the read failed (every waiter's fault gets
/// `SIGBUS`), `NoSpace` if the file has no blocks for the store (`SIGBUS` too).
#[doc(alias = "filemap_read_folio")]
pub fn filemap_fault_fill<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
    write: bool,
) -> Result<(), FileFault> {
    if index >= file.cache().size().div_ceil(PAGE) {
        return Err(FileFault::BeyondEof);
    }
    let frame = file
        .cache()
        .get_page(mm, &Fill(file), index, true)
        .map_err(fill_error)?
        .ok_or(FileFault::BeyondEof)?;
    let done = if write {
        filemap_page_mkwrite(mm, file, index, frame)
    } else {
        Ok(())
    };
    mm.put_page(frame);
    done
}

/// The filesystem half of a write-notify fault, run from its retry with no address-space or
/// page-table lock held (Linux `do_page_mkwrite` -> `block_page_mkwrite`, which locks the
/// folio, checks it is still the file's and below the size, and may sleep in the
/// filesystem): `frame` (page `index`, referenced by the caller) is locked, asleep if another
/// task holds it; unless it is dirty or has its blocks already, the file allocates them
/// ([`MappedFile::page_mkwrite`], which may sleep); the page is flagged [`MAPPED_TO_DISK`] and
/// unlocked. The fault that runs again then finds the flag and dirties the page with no call
/// out ([`file_page_mkwrite`]). A page truncated meanwhile is left alone (the fault again
/// decides: `SIGBUS` past the end).
#[doc(alias = "do_page_mkwrite")]
fn filemap_page_mkwrite<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
    frame: PhysAddr,
) -> Result<(), FileFault> {
    lock_page(mm, frame, true);
    let meta = mm.frames().meta(frame);
    // The page lock keeps truncation and a punched hole off the page (both lock the pages
    // they cut or zero); the size is read after taking it.
    let len = file.cache().size().saturating_sub(index * PAGE).min(PAGE) as usize;
    // Truncated meanwhile, or with its blocks already: nothing to allocate. A dirty page is
    // asked too: dirty through write(2) over part of it, or before the size grew past it, it
    // may still lack blocks under the bytes the store reaches (Linux's `block_page_mkwrite`
    // maps every buffer of the page, dirty or not).
    let done = if !meta.test(FrameFlags::PAGECACHE) || len == 0 || meta.test(MAPPED_TO_DISK) {
        Ok(())
    } else {
        match file.page_mkwrite(index, len, true) {
            Ok(()) => {
                meta.set_flags(MAPPED_TO_DISK);
                Ok(())
            }
            Err(MmError::NoMem) => Err(FileFault::NoMem),
            Err(_) => Err(FileFault::NoSpace),
        }
    };
    unlock_page(mm, frame);
    done
}

/// A write through a shared mapping is about to reach cache page `frame` (Linux
/// `page_mkwrite` + `folio_mark_dirty`): the page becomes `DIRTY`, so writeback stores it.
pub(crate) fn page_mkwrite<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    set_dirty(mm, frame);
}

/// A write through a shared mapping of `file` is about to reach its cache page `frame` at
/// `index` (Linux `do_page_mkwrite` -> `block_page_mkwrite`): unless the page is dirty already
/// or known to have its blocks, the file allocates them ([`MappedFile::page_mkwrite`]); then
/// the page is marked dirty ([`page_mkwrite`]). A full disk is the store's `SIGBUS`
/// (`BUS_ADRERR`), with nothing mapped writable and the page still clean. The dirtying runs
/// under the cache's lock (not the allocation), so a truncation or writeback cannot come
/// between the check and it; a page the file no longer reaches (truncated meanwhile) is
/// `SIGBUS` too.
///
/// The caller holds the page-table lock. If it `may_retry` (the kernel's page-fault handler,
/// GUP and populate callers that can let the address space go), a page that needs the
/// filesystem is [`FaultError::Retry`] (Linux `VM_FAULT_RETRY`): the allocation then runs
/// from [`filemap_fault_fill`] with the page locked and nothing else held, asleep on the
/// filesystem and the disk, and the fault runs again. Only a caller that cannot drop its
/// locks calls the filesystem from here, polling it.
#[cold]
pub(crate) fn file_page_mkwrite<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
    frame: PhysAddr,
    may_retry: bool,
) -> Result<(), crate::error::FaultError> {
    use crate::error::{FaultError, SegvReason};
    let meta = mm.frames().meta(frame);
    if meta.test(MAPPED_TO_DISK) {
        set_dirty(mm, frame);
        file.cache().note_dirtied();
        return Ok(());
    }
    let cache = file.cache();
    let len = cache.size().saturating_sub(index * PAGE).min(PAGE) as usize;
    if len == 0 {
        return Err(FaultError::Segv(SegvReason::BeyondEof));
    }
    if may_retry {
        // Only the cache's own page may retry: one truncation took out (its PTE not zapped
        // yet) would retry forever, the retry's fill working on the cache's new page at the
        // index (Linux `filemap_page_mkwrite`'s `folio->mapping` check). It is not the file's.
        if cache.inner.lock().pages.get(&index) != Some(&frame) {
            return Err(FaultError::Segv(SegvReason::BeyondEof));
        }
        return Err(FaultError::Retry);
    }
    // The filesystem is called with the cache's spin lock dropped (another task may hold the
    // filesystem across a fill of this file and need the spin lock next: see
    // `write_begin_end`); whether truncation took the page meanwhile is checked after, under
    // the spin lock, which then keeps truncation and writeback off until the page is dirty.
    FILE_POLLED.fetch_add(1, Ordering::Relaxed);
    file.page_mkwrite(index, len, false).map_err(|e| match e {
        MmError::NoMem => FaultError::Oom,
        _ => FaultError::Segv(SegvReason::BeyondEof),
    })?;
    let inner = cache.inner.lock();
    if inner.pages.get(&index) != Some(&frame) || inner.size <= index * PAGE {
        return Err(FaultError::Segv(SegvReason::BeyondEof));
    }
    meta.set_flags(MAPPED_TO_DISK);
    set_dirty(mm, frame);
    file.cache().note_dirtied();
    drop(inner);
    Ok(())
}

/// Whether bytes `[off, off + len)` of cache page `frame` are all zero (writeback, whose batch
/// holds a reference on the page: a hole under zeroes need not get a block).
pub fn cache_bytes_are_zero<A: Arch>(mm: &Mm<A>, frame: PhysAddr, off: usize, len: usize) -> bool {
    let mut buf = [0u8; 256];
    let mut at = off;
    while at < off + len {
        let n = buf.len().min(off + len - at);
        mm.read_frame_bytes(frame + at as u64, &mut buf[..n]);
        if buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n;
    }
    true
}

/// Write-notify for one address space (Linux `folio_mkclean`, per mapping of the file): every
/// PTE of the shared mappings of `cache`'s file is made read-only (and its hardware dirty bit
/// cleared), with the TLB flushed, so the next store to any of its pages faults and dirties the
/// page again (`page_mkwrite`). Private mappings are left alone: their cache pages are already
/// read-only, and their anon copies are not the file's. The kernel calls this on each address
/// space of the file's reverse map (`ext2_cache::mkclean`).
pub fn folio_mkclean<A: Arch>(
    mm: &Mm<A>,
    aspace: &crate::aspace::AddressSpace,
    cache: &FileCache,
) -> usize {
    use crate::pagetable::{PageTable, Pte};
    use crate::vma::{Backing, Sharing};
    let pt = PageTable::new(mm, aspace.root());
    let mut flush = crate::tlb::TlbFlush::none(aspace.root());
    let mut vmas = 0;
    for vma in aspace.vmas() {
        let Backing::File(file, _) = vma.backing() else {
            continue;
        };
        if vma.sharing() != Sharing::Shared || !core::ptr::eq(file.0.cache(), cache) {
            continue;
        }
        vmas += 1;
        flush.merge(pt.change_protection(vma.start(), vma.end(), &mut |_, old| {
            old.without(Pte::WRITABLE | Pte::DIRTY)
        }));
    }
    flush.flush(mm.arch(), aspace.shared());
    vmas
}

/// Linux `pagecache_isize_extended`'s `folio_mkclean`, for one address space: the PTEs of the
/// shared mappings of `cache`'s page `index` (a dirty partial last page the size grew past,
/// [`FileCache::take_isize_extended`]) are made read-only, with the TLB flushed, so the next
/// store to it faults and asks the file for the blocks of the bytes now inside the size
/// ([`file_page_mkwrite`] -> `page_mkwrite`: `SIGBUS` on a full disk). The page stays dirty.
/// The kernel calls this on each address space of the file's reverse map.
pub fn pagecache_isize_extended<A: Arch>(
    mm: &Mm<A>,
    aspace: &crate::aspace::AddressSpace,
    cache: &FileCache,
    index: u64,
) {
    use crate::pagetable::{PageTable, Pte};
    use crate::vma::{Backing, Sharing};
    use crate::VirtAddr;
    let pt = PageTable::new(mm, aspace.root());
    let mut flush = crate::tlb::TlbFlush::none(aspace.root());
    for vma in aspace.vmas() {
        let Backing::File(file, pgoff) = vma.backing() else {
            continue;
        };
        if vma.sharing() != Sharing::Shared || !core::ptr::eq(file.0.cache(), cache) {
            continue;
        }
        let pages = (vma.end().as_u64() - vma.start().as_u64()) / PAGE;
        if index < *pgoff || index >= pgoff + pages {
            continue;
        }
        let va = VirtAddr::new(vma.start().as_u64() + (index - pgoff) * PAGE);
        flush.merge(pt.change_protection(va, va + PAGE, &mut |_, old| {
            old.without(Pte::WRITABLE | Pte::DIRTY)
        }));
    }
    flush.flush(mm.arch(), aspace.shared());
}

/// Removes from one address space the mappings of `cache`'s file pages `[first, last)` that map
/// the cache's own frames (Linux `unmap_mapping_range` without `even_cows`, as
/// `truncate_pagecache_range` calls it for a punched hole): a shared mapping loses them, a
/// private one its PTEs of cache pages but not its COW copies (those are the process's own
/// data, not the file's). The next access refaults and finds what the cache holds now (the
/// punched range's zeroes). The VMAs stay.
pub fn unmap_mapping_pages<A: Arch>(
    mm: &Mm<A>,
    aspace: &crate::aspace::AddressSpace,
    cache: &FileCache,
    first: u64,
    last: u64,
) {
    use crate::vma::{Backing, Sharing};
    use crate::VirtAddr;
    for vma in aspace.vmas() {
        let Backing::File(file, pgoff) = vma.backing() else {
            continue;
        };
        if !core::ptr::eq(file.0.cache(), cache) {
            continue;
        }
        let pages = (vma.end().as_u64() - vma.start().as_u64()) / PAGE;
        let (lo, hi) = (first.max(*pgoff), last.min(pgoff + pages));
        if lo >= hi {
            continue;
        }
        let va = |index: u64| VirtAddr::new(vma.start().as_u64() + (index - pgoff) * PAGE);
        if vma.sharing() == Sharing::Shared {
            crate::munmap::zap_pages(mm, aspace.shared(), va(lo), va(hi));
            continue;
        }
        // Private: only the runs of PTEs that map cache frames, each zapped at once.
        let mut run: Option<u64> = None;
        for index in lo..=hi {
            let cached = index < hi
                && aspace
                    .translate(mm, va(index))
                    .filter(|pte| pte.is_present())
                    .is_some_and(|pte| mm.frames().meta(pte.frame()).test(FrameFlags::PAGECACHE));
            match (cached, run) {
                (true, None) => run = Some(index),
                (false, Some(from)) => {
                    crate::munmap::zap_pages(mm, aspace.shared(), va(from), va(index));
                    run = None;
                }
                _ => {}
            }
        }
    }
}

/// Removes from one address space every mapping of `cache`'s file pages from index `first` on
/// (Linux `unmap_mapping_range` with `even_cows`, as `truncate_pagecache` calls it): shared
/// mappings lose the cache pages, private ones their COW copies too, so an access past the new
/// end of the file faults and gets `SIGBUS`. The VMAs stay.
pub fn unmap_mapping_range<A: Arch>(
    mm: &Mm<A>,
    aspace: &crate::aspace::AddressSpace,
    cache: &FileCache,
    first: u64,
) {
    use crate::vma::Backing;
    for vma in aspace.vmas() {
        let Backing::File(file, pgoff) = vma.backing() else {
            continue;
        };
        if !core::ptr::eq(file.0.cache(), cache) {
            continue;
        }
        let pages = (vma.end().as_u64() - vma.start().as_u64()) / PAGE;
        let skip = first.saturating_sub(*pgoff);
        if skip >= pages {
            continue;
        }
        let start = crate::VirtAddr::new(vma.start().as_u64() + skip * PAGE);
        crate::munmap::zap_pages(mm, aspace.shared(), start, vma.end());
    }
}
