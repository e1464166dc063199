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
//! Locking: one spin lock per cache, held across the store's I/O (so a page is never read in
//! twice, and a writeback sees a stable page). Lock order: cache, then whatever the store takes
//! (the filesystem). Reclaim from an allocation that fails elsewhere only ever `try_lock`s a
//! cache ([`FileCache::try_drop_clean`]), so an allocator that holds a cache lock cannot
//! deadlock on it.
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

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

/// One page of zeroes, for [`FileCache::zero_range`].
static ZEROES: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::stats;
use crate::PAGE_SIZE;

const PAGE: u64 = PAGE_SIZE as u64;

/// A cache page whose bytes below the size all have blocks on the store (Linux's buffer-head
/// `BH_Mapped` state, `PG_mappedtodisk`): set by [`file_page_mkwrite`] once the file allocated
/// them, so a later write-notify fault on the page does not ask the filesystem again; cleared
/// where blocks under a cached page can go (truncation's partial last page, a punched hole).
/// Private to the page cache (a bit no other frame kind uses).
const MAPPED_TO_DISK: FrameFlags = FrameFlags::from_bits(1 << 12);

/// Where a file's pages come from and go to (Linux `address_space_operations`' `read_folio`
/// and `writepage`).
pub trait BackingStore {
    /// The store's error (an errno), which also expresses the cache's own `ENOMEM`.
    type Error: From<MmError>;
    /// Fills `buf` (one page) with page `index` of the stored file; bytes the store does not
    /// hold (a hole, past its end) read as zeroes.
    fn read_page(&self, index: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Stores `data` (the first `data.len()` bytes of page `index`: the whole page, or the part
    /// below the cache's size) in the file, allocating blocks as needed.
    fn write_page(&self, index: u64, data: &[u8]) -> Result<(), Self::Error>;
}

/// One file's page cache.
pub struct FileCache {
    inner: Mutex<Inner>,
    /// When the cache last went from clean to dirty, on the [`set_clock`] clock (Linux's
    /// per-inode `dirtied_when`, which the periodic flusher compares with `dirty_expire`); 0
    /// while no stamp is set. Stamped by [`file_page_mkwrite`] (or by the flusher when it finds
    /// pages dirtied some other way), cleared when writeback starts.
    dirtied_when: AtomicU64,
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

struct Inner {
    size: u64,
    pages: BTreeMap<u64, PhysAddr>,
}

impl FileCache {
    /// An empty cache over a stored file of `size` bytes.
    pub const fn new(size: u64) -> FileCache {
        FileCache {
            inner: Mutex::new(Inner {
                size,
                pages: BTreeMap::new(),
            }),
            dirtied_when: AtomicU64::new(0),
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
        let mut inner = self.inner.lock();
        let avail = inner.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        let mut done = 0;
        while done < avail {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let n = (PAGE_SIZE - off).min(avail - done);
            let frame = match inner.page(mm, store, at / PAGE, true) {
                Ok(f) => f,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            mm.read_frame_bytes(frame + off as u64, &mut buf[done..done + n]);
            done += n;
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
        offset
            .checked_add(data.len() as u64)
            .ok_or(S::Error::from(MmError::Inval))?;
        let mut inner = self.inner.lock();
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let n = (PAGE_SIZE - off).min(data.len() - done);
            let index = at / PAGE;
            // A whole-page overwrite, or a page with no stored bytes, needs no read.
            let fill = n < PAGE_SIZE && index * PAGE < inner.size;
            let frame = match inner.page(mm, store, index, fill) {
                Ok(f) => f,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            mm.write_frame_bytes(frame + off as u64, &data[done..done + n]);
            set_dirty(mm, frame);
            done += n;
            inner.size = inner.size.max(at + n as u64);
        }
        Ok(done)
    }

    /// Writes `data` at `offset` through to the store and into the cache (`write`/`pwrite` of a
    /// filesystem that allocates blocks at the call, as Linux ext2's `write_begin` does, so a
    /// full disk is `ENOSPC` here, not a lost page at writeback): `store_write` stores the bytes
    /// and says how many it took; those are then copied into the pages already cached (a page
    /// not cached is read from the store when next needed), which keep their `DIRTY` state, and
    /// the size grows to cover them. The cache stays locked throughout, so no reader can fill a
    /// page from the store's old contents in between.
    pub fn write_through<A: Arch, E>(
        &self,
        mm: &Mm<A>,
        offset: u64,
        data: &[u8],
        store_write: impl FnOnce(&[u8]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut inner = self.inner.lock();
        let n = store_write(data)?.min(data.len());
        let mut done = 0;
        while done < n {
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let len = (PAGE_SIZE - off).min(n - done);
            if let Some(&frame) = inner.pages.get(&(at / PAGE)) {
                mm.write_frame_bytes(frame + off as u64, &data[done..done + len]);
            }
            done += len;
        }
        inner.size = inner.size.max(offset + n as u64);
        Ok(n)
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
        let inner = self.inner.lock();
        self.collect_dirty(mm, &inner)
    }

    /// [`Self::begin_writeback`] if the cache is not locked (background writeback, Linux's
    /// `WB_SYNC_NONE` skipping a locked folio); `None` if it is.
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
            meta.set_flags(FrameFlags::WRITEBACK);
            clear_dirty(mm, frame);
            meta.get();
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
    /// under the cache's lock the pages under the range are found or read in (a page only partly
    /// overwritten and holding stored bytes is read first), then `begin(len)` gives the store
    /// the chance to allocate blocks and move its size, and says how many bytes from `offset`
    /// it took (short on a full disk), then those are copied in, the pages become `DIRTY` and
    /// the size grows. Nothing reaches the store's blocks until writeback. The pages are read in
    /// before `begin` so no fill sees blocks the store just allocated and has not written yet.
    /// Returns the bytes written; an error if not even the first page could be had or `begin`
    /// took nothing.
    pub fn write_begin_end<A: Arch, S: BackingStore>(
        &self,
        mm: &Mm<A>,
        store: &S,
        offset: u64,
        data: &[u8],
        begin: impl FnOnce(u64) -> Result<u64, S::Error>,
    ) -> Result<usize, S::Error> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(S::Error::from(MmError::Inval))?;
        if data.is_empty() {
            return Ok(0);
        }
        let mut inner = self.inner.lock();
        // Every page first: the range is cut at the first page that cannot be had.
        let mut have = offset;
        let mut frames: Vec<PhysAddr> = Vec::new();
        while have < end {
            let index = have / PAGE;
            let off = have % PAGE;
            let n = (PAGE - off).min(end - have);
            let fill = n < PAGE && index * PAGE < inner.size;
            let got = frames
                .try_reserve(1)
                .map_err(|_| S::Error::from(MmError::NoMem))
                .and_then(|()| inner.page(mm, store, index, fill));
            match got {
                // Held until the copy: the next page's allocation may reclaim this cache's
                // clean pages (`drop_clean` skips referenced ones), and these are still clean.
                Ok(f) => {
                    mm.frames().meta(f).get();
                    frames.push(f);
                }
                Err(e) if frames.is_empty() => return Err(e),
                Err(_) => break,
            }
            have += n;
        }
        let n = match begin(have - offset) {
            Ok(n) => n.min(have - offset) as usize,
            Err(e) => {
                frames.iter().for_each(|&f| mm.put_page(f));
                return Err(e);
            }
        };
        let mut done = 0;
        for &frame in &frames {
            if done >= n {
                break;
            }
            let at = offset + done as u64;
            let off = (at % PAGE) as usize;
            let len = (PAGE_SIZE - off).min(n - done);
            mm.write_frame_bytes(frame + off as u64, &data[done..done + len]);
            set_dirty(mm, frame);
            done += len;
        }
        frames.iter().for_each(|&f| mm.put_page(f));
        inner.size = inner.size.max(offset + n as u64);
        drop(inner);
        if n > 0 {
            self.note_dirtied();
        }
        Ok(n)
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
        mut map: impl FnMut(u64, PhysAddr) -> bool,
    ) -> usize {
        let inner = self.inner.lock();
        let last = last.min(inner.size.div_ceil(PAGE));
        if first >= last {
            return 0;
        }
        inner
            .pages
            .range(first..last)
            .filter(|&(&i, &f)| map(i, f))
            .count()
    }

    /// Sets the size (`ftruncate`, Linux `truncate_setsize`): shrinking drops the pages wholly
    /// beyond it (dirty or not: their data is cut off) and zeroes the tail of a partial last
    /// page. The caller then truncates the store.
    pub fn set_size<A: Arch>(&self, mm: &Mm<A>, size: u64) {
        let mut inner = self.inner.lock();
        if size < inner.size {
            let dropped = inner.pages.split_off(&size.div_ceil(PAGE));
            for (_, frame) in dropped {
                drop_cache_page(mm, frame);
            }
            let tail = (size % PAGE) as usize;
            if tail != 0 {
                if let Some(&frame) = inner.pages.get(&(size / PAGE)) {
                    mm.write_frame_bytes(frame + tail as u64, &vec![0u8; PAGE_SIZE - tail]);
                    // The store frees the blocks past the size: a later growth is a hole.
                    mm.frames().meta(frame).clear_flags(MAPPED_TO_DISK);
                }
            }
        }
        inner.size = size;
    }

    /// Zeroes `[start, end)` in the pages already cached, keeping their `DIRTY` state (Linux
    /// `truncate_pagecache_range` after a hole punch: the store's range already reads as zeroes,
    /// and mappings of the pages see them too). Pages not cached are read when next needed.
    pub fn zero_range<A: Arch>(&self, mm: &Mm<A>, start: u64, end: u64) {
        let inner = self.inner.lock();
        let end = end.min(inner.size);
        let mut at = start;
        while at < end {
            let off = (at % PAGE) as usize;
            let n = ((PAGE_SIZE - off) as u64).min(end - at) as usize;
            if let Some(&frame) = inner.pages.get(&(at / PAGE)) {
                mm.write_frame_bytes(frame + off as u64, &ZEROES[..n]);
                mm.frames().meta(frame).clear_flags(MAPPED_TO_DISK);
            }
            at += n as u64;
        }
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
        let pages = core::mem::take(&mut self.inner.lock().pages);
        for (_, frame) in pages {
            drop_cache_page(mm, frame);
        }
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
    /// The cache page at `index`; if missing, a new frame, filled from the store when `fill`
    /// (else zeroed). Under memory pressure the cache's own clean pages go first, then the
    /// `Mm`'s reclaim runs, and the allocation is retried.
    fn page<A: Arch, S: BackingStore>(
        &mut self,
        mm: &Mm<A>,
        store: &S,
        index: u64,
        fill: bool,
    ) -> Result<PhysAddr, S::Error> {
        if let Some(&frame) = self.pages.get(&index) {
            return Ok(frame);
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
        if fill {
            let filled = page_buf().map_err(S::Error::from).and_then(|mut buf| {
                store.read_page(index, &mut buf)?;
                Ok(buf)
            });
            match filled {
                Ok(buf) => mm.write_frame_bytes(frame, &buf),
                Err(e) => {
                    mm.frames().free(frame);
                    return Err(e);
                }
            }
        }
        // refcount 1 from the allocator: the cache's own reference.
        mm.frames().meta(frame).init_flags(FrameFlags::PAGECACHE);
        stats::inc(&mm.counters.file_pages);
        self.pages.insert(index, frame);
        Ok(frame)
    }

    fn drop_clean<A: Arch>(&mut self, mm: &Mm<A>) -> usize {
        let victims: Vec<u64> = self
            .pages
            .iter()
            .filter(|&(_, &f)| {
                let meta = mm.frames().meta(f);
                !meta
                    .flags()
                    .intersects(FrameFlags::DIRTY | FrameFlags::WRITEBACK)
                    && meta.refcount() == 1
            })
            .map(|(&i, _)| i)
            .collect();
        for index in &victims {
            if let Some(frame) = self.pages.remove(index) {
                drop_cache_page(mm, frame);
            }
        }
        victims.len()
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

/// Removes `frame` from its cache: it loses its cache flags and the cache's reference.
#[doc(alias = "filemap_remove_folio")]
fn drop_cache_page<A: Arch>(mm: &Mm<A>, frame: PhysAddr) {
    clear_dirty(mm, frame);
    mm.frames()
        .meta(frame)
        .clear_flags(FrameFlags::PAGECACHE | FrameFlags::WRITEBACK | MAPPED_TO_DISK);
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
    fn read_page(&self, index: u64, buf: &mut [u8]) -> Result<(), MmError>;
    /// Writes the file's dirty pages back (`msync(MS_SYNC)`), without any address-space lock;
    /// `false` if the store failed (`EIO`).
    fn writeback(&self) -> bool;
    /// A store through a shared mapping is about to dirty page `index`, whose first `len` bytes
    /// lie below the file's size (Linux `vm_ops->page_mkwrite`, `block_page_mkwrite`): the
    /// store allocates the blocks under them. Called with the cache locked. An error becomes
    /// the store's `SIGBUS` (`ENOSPC`: a full disk), or the OOM kill for `NoMem`. The default
    /// has nothing to allocate.
    fn page_mkwrite(&self, index: u64, len: usize) -> Result<(), MmError> {
        let _ = (index, len);
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

    fn read_page(&self, index: u64, buf: &mut [u8]) -> Result<(), MmError> {
        // The store's failure, told apart from the cache's own `NoMem`.
        self.0.read_page(index, buf).map_err(|_| MmError::Fault)
    }

    fn write_page(&self, _index: u64, _data: &[u8]) -> Result<(), MmError> {
        Err(MmError::Inval)
    }
}

/// Why a fault could not have its file page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FileFault {
    /// The page lies wholly at or beyond the end of the file (Linux: `SIGBUS`).
    BeyondEof,
    /// No memory for the page.
    NoMem,
    /// The store could not read it (Linux: `SIGBUS` too).
    Io,
}

/// The cache page at `index` for a fault, read in if missing, with one reference for the
/// caller taken under the cache's lock (Linux `filemap_fault`). Bytes past the end of the file
/// in the last page are zero (the store fills them so, and truncation zeroes them).
#[doc(alias = "filemap_fault")]
pub(crate) fn fault_page<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
) -> Result<PhysAddr, FileFault> {
    let mut inner = file.cache().inner.lock();
    if index >= inner.size.div_ceil(PAGE) {
        return Err(FileFault::BeyondEof);
    }
    let frame = inner
        .page(mm, &Fill(file), index, true)
        .map_err(|e| match e {
            MmError::NoMem => FileFault::NoMem,
            _ => FileFault::Io,
        })?;
    mm.frames().meta(frame).get();
    Ok(frame)
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
/// (`BUS_ADRERR`), with nothing mapped writable and the page still clean. Runs under the
/// cache's lock, so a truncation or writeback cannot come between the check and the dirtying;
/// a page the file no longer reaches (truncated meanwhile) is `SIGBUS` too.
#[cold]
pub(crate) fn file_page_mkwrite<A: Arch>(
    mm: &Mm<A>,
    file: &dyn MappedFile,
    index: u64,
    frame: PhysAddr,
) -> Result<(), crate::error::FaultError> {
    use crate::error::{FaultError, SegvReason};
    let meta = mm.frames().meta(frame);
    if meta.flags().intersects(FrameFlags::DIRTY | MAPPED_TO_DISK) {
        set_dirty(mm, frame);
        file.cache().note_dirtied();
        return Ok(());
    }
    let inner = file.cache().inner.lock();
    let len = inner.size.saturating_sub(index * PAGE).min(PAGE) as usize;
    if len == 0 {
        return Err(FaultError::Segv(SegvReason::BeyondEof));
    }
    file.page_mkwrite(index, len).map_err(|e| match e {
        MmError::NoMem => FaultError::Oom,
        _ => FaultError::Segv(SegvReason::BeyondEof),
    })?;
    meta.set_flags(MAPPED_TO_DISK);
    set_dirty(mm, frame);
    file.cache().note_dirtied();
    drop(inner);
    Ok(())
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
