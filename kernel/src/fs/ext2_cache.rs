//! The page caches of open ext2 regular files: one `cowlab_mm::pagecache::FileCache` per inode,
//! looked up by inode number, with the ext2 crate as its backing store ([`Ext2Store`]).
//!
//! Lifetime: a cache is created at a file's first open ([`attach`]) and kept past its last
//! close ([`detach`], dirty pages and all), as Linux keeps a closed file's pages until reclaim:
//! a file reopened finds its pages. Its clean pages go under memory pressure ([`shrink`]) and
//! at `drop_caches`; an unlinked file's cache goes at its last close (or at the unlink, if it is
//! closed: [`forget_closed`]). A kept cache remembers its inode's generation: if the inode
//! number names another file by the time it is opened again, the old cache is dropped then.
//! Unmount empties every cache ([`evict_all`]), so none outlives the mount.
//!
//! Locks: the registry lock is held only to find, add or remove an entry, never across I/O.
//! A cache's own (spin) lock is never held across I/O: a page missing from it is inserted
//! locked (the page lock, `FrameFlags::LOCKED`) and read with the filesystem taken asleep
//! ([`Ext2Store::read_page`]), other tasks wanting the page asleep on its lock
//! ([`wait_on_page`]); only a fault that cannot drop its address-space lock reads with the
//! filesystem polled ([`with_fs_atomic`]). Writeback ([`writeback`]) runs under [`WRITEBACK`], a sleeping lock
//! (`proc::sleeplock`), takes the cache's spin lock only to collect the dirty pages
//! (`FileCache::begin_writeback`: each made clean, `WRITEBACK` and referenced), then with no
//! spin lock held maps their blocks and writes them with one virtio-blk request per run of
//! consecutive pages and blocks (at most `MAX_SEGMENTS` pages), the task asleep on each
//! request with only the sleeping locks held (writeback, then the filesystem), and ends the
//! batch without the cache's lock (`FileCache::end_writeback`). Order: [`WRITEBACK`], then the
//! cache's spin lock (briefly, released), then address-space locks (write protection,
//! released), then the filesystem lock. The periodic flusher only `try_lock`s a cache
//! (`FileCache::try_begin_writeback`): a cache lock may be held by a task that yielded while
//! waiting for the filesystem (a buffered write allocating blocks), and a spinning flusher
//! would never let it run. The reclaim hook
//! ([`shrink`]) runs inside failing frame allocations, possibly with a cache or the registry
//! locked by the same CPU, so it only `try_lock`s.
//!
//! Each entry also holds the file's writer lock ([`InodeLock`], Linux `i_rwsem` taken by
//! `inode_lock`): buffered and direct writes, `ftruncate` and `fallocate` hold it across
//! their whole call, so their compositions of a filesystem call and a cache call (the disk's
//! size, then the cache's) never interleave. It comes first in the order: before
//! [`WRITEBACK`], the address-space locks, the page locks and the filesystem lock. No fault
//! path takes it (fills and `page_mkwrite` take a page lock and the filesystem lock only), so
//! a user copy made under it may fault.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_mm::pagecache::{BackingStore, FileCache, WritebackBatch};
use cowlab_mm::PhysAddr;
use spin::Mutex;

use super::ext2_mount::{with_fs, with_fs_atomic};
use super::vda::SyncWait;
use crate::drivers::virtio_blk::{self, Op, Request, Segment, MAX_SEGMENTS, SECTOR};
use crate::errno::Errno;
use crate::memory;
use crate::proc::sleeplock::SleepLock;
use crate::vm::SharedAddressSpace;

/// Serialises writebacks (Linux waits on each page's `PG_writeback` instead): a `fsync` that
/// finds pages another writeback is storing waits here until they are on the disk. Sleeping:
/// its holder sleeps on the device. Present from mount on ([`init`]).
static WRITEBACK: SleepLock<()> = SleepLock::new("page-cache writeback");

/// Pages written back, and the virtio-blk requests that carried them (mmstat's
/// `writeback_pages` and `writeback_requests`: their ratio is the batching).
pub static WRITEBACK_PAGES: AtomicU64 = AtomicU64::new(0);
pub static WRITEBACK_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// TSC cycles spent waiting for the root disk (mmstat's `disk_wait_tsc`): writeback's requests
/// and the filesystem's own block requests (`ext2_glue`). The bench's `writeback_per_page`
/// subtracts it to count only the CPU's part.
pub static DISK_WAIT_TSC: AtomicU64 = AtomicU64::new(0);

/// Makes the writeback lock present and installs the page-lock sleep (at mount).
pub fn init() {
    WRITEBACK.replace(Some(()));
    cowlab_mm::pagecache::set_page_waiter(cowlab_mm::pagecache::PageWaiter {
        wait: wait_on_page,
        wake: crate::proc::wakeup,
    });
}

/// Waits for a page lock (Linux `folio_wait_locked`, `TASK_UNINTERRUPTIBLE`): asleep on the
/// page's channel when the caller may sleep (no spin lock held, in a task), else yielding so
/// the holder (asleep on the disk) can run and finish. The check and the sleep are atomic:
/// kernel code runs under the big kernel lock, and the unlock that wakes runs in a task too.
fn wait_on_page(channel: usize, locked: &dyn Fn() -> bool, may_sleep: bool) {
    while locked() {
        if crate::proc::current_tid() == 0 {
            core::hint::spin_loop();
        } else if may_sleep && super::ext2_glue::may_sleep() {
            if crate::proc::sleep_uninterruptible(channel, "a page-cache page lock").is_err() {
                crate::proc::sched::cond_resched();
            }
        } else {
            // Pending interrupts first: the holder may be asleep on the disk, and on one CPU
            // a bare yield (interrupts off, this task always runnable) never lets it in.
            crate::proc::sched::cond_resched();
        }
    }
}

const PAGE: u64 = 4096;

/// A file's writer lock (Linux `i_rwsem`, exclusive only: `inode_lock`/`inode_unlock`), held
/// by buffered and direct writes, `ftruncate` and `fallocate` of the file around their whole
/// call. Each of them composes a filesystem call with a page-cache call (`ftruncate` shrinks
/// the disk, then the cache; a chunked `fallocate` tells the cache its size at the end; a
/// write that failed gives back its blocks past the cache's size): without the lock a second
/// writer ran between the two halves and one half undid its work (docs/file-memory.md,
/// "The file's writer lock"). A sleeping lock: its holder sleeps on the disk, on the
/// filesystem lock and in user copies.
///
/// Order: first. It is taken with no other lock held, and under it the holder may take the
/// writeback lock, address-space locks (a user copy faulting, `folio_mkclean`, truncation's
/// unmap), page locks and the filesystem lock; none of those holders ever takes it (no fault
/// path does), so GUP under it is allowed and `PinnedPage::dup`'s rule (no GUP under the
/// filesystem lock) is unchanged.
pub struct InodeLock(SleepLock<()>);

impl InodeLock {
    fn new() -> Arc<InodeLock> {
        let lock = InodeLock(SleepLock::new("an ext2 file's writer lock (inode_lock)"));
        // Never held yet: this only makes the value present.
        lock.0.replace(Some(()));
        Arc::new(lock)
    }

    /// Runs `f` holding the lock (Linux `inode_lock_killable` ... `inode_unlock`), asleep
    /// while another task holds it. The caller holds no lock (see [`InodeLock`]'s order).
    /// The wait is killable (`EINTR`, the task dies on its way out): the holder makes user
    /// copies, which may need a frame, and an OOM victim asleep here must be able to exit, or
    /// the holder's fault and every other waits for that victim forever. Outside a task
    /// (power-off) a held lock belongs to a task that will never run again, and `f` runs
    /// without it, as writeback does there.
    pub fn with<R>(&self, f: impl FnOnce() -> Result<R, Errno>) -> Result<R, Errno> {
        let mut f = Some(f);
        let mut run = || f.take().map(|f| f());
        match self.0.with_killable(|_| run()) {
            Ok(Some(Some(r))) => r,
            Err(crate::proc::sleeplock::Killed) => Err(Errno::EINTR),
            Ok(_) => run().unwrap_or_else(|| unreachable!("the writer lock ran its body twice")),
        }
    }
}

struct Entry {
    cache: Arc<FileCache>,
    /// The file's writer lock, as long as the entry (a kept cache keeps its lock: nobody holds
    /// it while the file is closed).
    lock: Arc<InodeLock>,
    /// Open descriptions of the inode (0: kept past the last close).
    opens: usize,
    /// The inode's generation and size when the cache was made or last closed: a kept cache
    /// is used again only if both still match (the inode number was not freed and reused).
    generation: u32,
    size_at_close: u64,
    /// The address spaces that may map the file (Linux's `i_mmap`, per address space rather
    /// than per VMA): each `mmap` of the file adds the caller's, each fork of one adds the
    /// child's. An entry whose space is gone is dropped at the next walk; a space that since
    /// unmapped the file stays until then (its walk finds no VMA). The entry lives as long as
    /// any mapping does, since a mapping holds the file open.
    mappers: Vec<Weak<crate::vm::MmSpace>>,
}

static CACHES: Mutex<BTreeMap<u32, Entry>> = Mutex::new(BTreeMap::new());

/// Inode `ino` as a page cache's store: pages are read and written with the crate's file calls.
#[derive(Clone, Copy)]
pub struct Ext2Store {
    pub ino: u32,
}

impl BackingStore for Ext2Store {
    type Error = Errno;

    /// A fill (no cache lock held): asleep on the filesystem lock and the disk, unless the
    /// caller holds a spin lock (a fault that cannot drop its address space's lock).
    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), Errno> {
        let read = |fs: &mut cowlab_ext2::Ext2<_>| fs.read(self.ino, index * PAGE, buf);
        let n = if may_sleep {
            with_fs(read)?
        } else {
            with_fs_atomic(read)?
        };
        buf[n..].fill(0);
        Ok(())
    }

    fn write_page(&self, index: u64, data: &[u8]) -> Result<(), Errno> {
        let n = with_fs_atomic(|fs| fs.write(self.ino, index * PAGE, data))?;
        if n < data.len() {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// No lock held but the file's writer lock (`write_begin_end`): asleep on the filesystem.
    fn write_failed(&self, keep: u64) -> Result<(), Errno> {
        with_fs(|fs| fs.write_failed(self.ino, keep))
    }
}

/// Registers one more open description of `ino`; the first creates the cache, sized from the
/// inode, or takes back the cache kept since the last close if the inode is still the same
/// file (generation and size). Returns the cache and the file's writer lock.
pub fn attach(ino: u32) -> Result<(Arc<FileCache>, Arc<InodeLock>), Errno> {
    if let Some(e) = CACHES.lock().get_mut(&ino).filter(|e| e.opens > 0) {
        e.opens += 1;
        return Ok((e.cache.clone(), e.lock.clone()));
    }
    let (generation, size) = with_fs(|fs| fs.generation(ino))?;
    let (cache, stale) = {
        let mut caches = CACHES.lock();
        // Another CPU may have added or reopened it while the inode was read.
        let stale = match caches.get(&ino) {
            Some(e) if e.opens == 0 && (e.generation, e.size_at_close) != (generation, size) => {
                caches.remove(&ino).map(|e| e.cache)
            }
            _ => None,
        };
        let e = caches.entry(ino).or_insert_with(|| Entry {
            cache: Arc::new(FileCache::new(size)),
            lock: InodeLock::new(),
            opens: 0,
            generation,
            size_at_close: size,
            mappers: Vec::new(),
        });
        e.opens += 1;
        ((e.cache.clone(), e.lock.clone()), stale)
    };
    if let Some(old) = stale {
        // A freed inode's pages: its data died with it.
        old.evict(memory::mm());
    }
    Ok(cache)
}

/// One open description of `ino` is gone; the last keeps the cache (if `keep_data`: the inode
/// still has names), dirty pages included, as Linux keeps a closed file's pages: the flusher,
/// `sync`, dirty throttling or unmount write them back. An unlinked inode's cache is emptied
/// and forgotten (its data die with it). No I/O here: the last close may come from a `munmap`
/// dropping a VMA with its address space locked.
pub fn detach(ino: u32, keep_data: bool) -> Result<(), Errno> {
    let mut caches = CACHES.lock();
    let Some(e) = caches.get_mut(&ino) else {
        return Ok(());
    };
    e.opens -= 1;
    if e.opens > 0 {
        return Ok(());
    }
    if keep_data {
        e.size_at_close = e.cache.size();
        return Ok(());
    }
    let gone = caches.remove(&ino);
    drop(caches);
    if let Some(e) = gone {
        e.cache.evict(memory::mm());
    }
    Ok(())
}

/// `ino` lost a name (unlink, or a rename over it): if it is closed, its kept cache goes now
/// (if that was its last name the inode is free, and the pages would only wait for reclaim).
pub fn forget_closed(ino: u32) {
    let old = {
        let mut caches = CACHES.lock();
        match caches.get(&ino) {
            Some(e) if e.opens == 0 => caches.remove(&ino).map(|e| e.cache),
            _ => None,
        }
    };
    if let Some(old) = old {
        old.evict(memory::mm());
    }
}

/// Unmount: every cache is emptied and forgotten (after [`sync_all`] wrote them back).
pub fn evict_all() {
    let all = core::mem::take(&mut *CACHES.lock());
    for (_, e) in all {
        e.cache.evict(memory::mm());
    }
}

/// The cache of open inode `ino`, if it has one (a cache kept past the last close is not
/// answered: the inode on disk is as current, and its number may already name another file).
pub fn lookup(ino: u32) -> Option<Arc<FileCache>> {
    CACHES
        .lock()
        .get(&ino)
        .filter(|e| e.opens > 0)
        .map(|e| e.cache.clone())
}

/// Every cache, for a walk done without the registry lock.
fn all() -> Vec<(u32, Arc<FileCache>)> {
    CACHES
        .lock()
        .iter()
        .map(|(&ino, e)| (ino, e.cache.clone()))
        .collect()
}

/// `space` is about to map inode `ino` (an `mmap` of it): walks of the file's mappings
/// ([`mkclean`], [`unmap_past`]) visit it from now on.
pub fn note_mapper(ino: u32, space: &SharedAddressSpace) {
    if let Some(e) = CACHES.lock().get_mut(&ino) {
        add_mapper(&mut e.mappers, space);
    }
}

/// A fork copied `parent`'s mappings into `child`: every file `parent` may map, `child` may
/// too (Linux `dup_mmap` linking each file VMA copy into `i_mmap`).
pub fn fork_mappers(parent: &SharedAddressSpace, child: &SharedAddressSpace) {
    for e in CACHES.lock().values_mut() {
        if e.mappers.iter().any(|w| w.as_ptr() == Arc::as_ptr(parent)) {
            add_mapper(&mut e.mappers, child);
        }
    }
}

fn add_mapper(mappers: &mut Vec<Weak<crate::vm::MmSpace>>, space: &SharedAddressSpace) {
    mappers.retain(|w| w.strong_count() > 0);
    if !mappers.iter().any(|w| w.as_ptr() == Arc::as_ptr(space)) {
        mappers.push(Arc::downgrade(space));
    }
}

/// The live address spaces that may map `cache`'s file (its `i_mmap`), taken out of the
/// registry so the walk runs without the registry lock.
fn mappers_of(cache: &FileCache) -> Vec<SharedAddressSpace> {
    let mut caches = CACHES.lock();
    let Some(e) = caches
        .values_mut()
        .find(|e| core::ptr::eq(Arc::as_ptr(&e.cache), cache))
    else {
        return Vec::new();
    };
    e.mappers.retain(|w| w.strong_count() > 0);
    e.mappers.iter().filter_map(Weak::upgrade).collect()
}

/// Write-protects every shared mapping of `cache`'s file (Linux `folio_mkclean` over
/// `i_mmap`): only the address spaces that mapped the file are walked. The caller holds no
/// address-space lock and no cache lock (the fault path takes them in the order address
/// space, then cache).
///
/// Writeback calls it after `begin_writeback` cleared `DIRTY` and before the device reads the
/// pages (Linux `folio_clear_dirty_for_io`'s order): a store before the protection lands in the
/// page before the device reads it; a store after it faults and dirties the page again, so no
/// writable PTE is left over a page writeback believes clean.
pub fn mkclean(cache: &FileCache) {
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::folio_mkclean(mm, &space.read_ptl(), cache);
    }
}

/// `ftruncate` shrank the file to `size`: every process's mappings of its pages past the new
/// end are removed (Linux `truncate_pagecache` -> `unmap_mapping_range`), so they fault with
/// `SIGBUS`. Walks the file's mappers, as [`mkclean`].
pub fn unmap_past(cache: &FileCache, size: u64) {
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::unmap_mapping_range(
            mm,
            &space.read_ptl(),
            cache,
            size.div_ceil(PAGE),
        );
    }
}

/// After the file's size grew (a buffered or direct write, `ftruncate`, `fallocate`; no lock
/// held): if the growth passed a dirty partial last page ([`FileCache::take_isize_extended`])
/// and the filesystem's blocks are smaller than a page, that page's shared mappings in every
/// process are write-protected (Linux `pagecache_isize_extended`), so the next store to it
/// faults into `page_mkwrite`, which allocates the blocks of the bytes now inside the size or
/// is `SIGBUS` on a full disk. With page-sized blocks the page's one block already lies under
/// its old bytes (Linux returns early there too). Walks the file's mappers, as [`mkclean`].
pub fn isize_extended(cache: &FileCache) {
    let Some(index) = cache.take_isize_extended() else {
        return;
    };
    if with_fs(|fs| Ok(u64::from(fs.block_size()))).is_ok_and(|bs| bs >= PAGE) {
        return;
    }
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::pagecache_isize_extended(mm, &space.read_ptl(), cache, index);
    }
}

/// A hole was punched over `[start, end)`: every process's mappings of the whole pages in it
/// are removed (Linux `truncate_pagecache_range` -> `unmap_mapping_range` without
/// `even_cows`: private COW copies stay), so the next access refaults and sees the zeroes.
/// Partial pages at the edges stay mapped; their punched bytes are zeroed in place.
pub fn unmap_punched(cache: &FileCache, start: u64, end: u64) {
    let (first, last) = (start.div_ceil(PAGE), end / PAGE);
    if first >= last {
        return;
    }
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::unmap_mapping_pages(mm, &space.read_ptl(), cache, first, last);
    }
}

/// Writes back the dirty pages of `cache` (inode `ino`) and waits for them (Linux
/// `filemap_write_and_wait`: fsync, msync, sync, O_DIRECT, fallocate, the last close,
/// unmount): after any writeback in progress ends ([`WRITEBACK`]), every dirty page is cleaned,
/// its shared mappings write-protected ([`mkclean`]), and the pages stored in batches
/// ([`write_batch`]). Returns the pages written, or the first error (the failed pages are dirty
/// again).
pub fn writeback(cache: &FileCache, ino: u32) -> Result<usize, Errno> {
    let mm = memory::mm();
    let run = || {
        let batch = cache.begin_writeback(mm).map_err(|_| Errno::ENOMEM)?;
        store_batch(cache, ino, batch)
    };
    match WRITEBACK.with_sleeping(true, |_| run()) {
        Some(r) => r,
        // Not mounted yet, or at power-off outside a task: nothing else writes back.
        None => run(),
    }
}

/// [`writeback`] for the flusher (Linux's `WB_SYNC_NONE`): a cache whose lock is taken is
/// skipped (`Ok(0)`), and so are writebacks in progress.
fn writeback_nowait(cache: &FileCache, ino: u32) -> Result<usize, Errno> {
    let mm = memory::mm();
    WRITEBACK
        .with_sleeping(true, |_| match cache.try_begin_writeback(mm) {
            None => Ok(0),
            Some(Err(_)) => Err(Errno::ENOMEM),
            Some(Ok(batch)) => store_batch(cache, ino, batch),
        })
        .unwrap_or(Ok(0))
}

/// Write-protects, stores and ends one batch.
fn store_batch(cache: &FileCache, ino: u32, batch: WritebackBatch) -> Result<usize, Errno> {
    let mm = memory::mm();
    if batch.pages.is_empty() {
        cache.end_writeback(mm, batch, |_| false);
        return Ok(0);
    }
    mkclean(cache);
    let (failed, error) = write_batch(cache, ino, &batch);
    let written = batch.pages.len() - failed.len();
    cache.end_writeback(mm, batch, |i| failed.binary_search(&i).is_ok());
    match error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

/// Stores a batch's pages (Linux `ext2_writepages` -> `mpage_writepages`): runs of consecutive
/// page indices, at most [`MAX_SEGMENTS`] pages each, are mapped to blocks under the filesystem
/// lock (`Ext2::writeback_blocks`: holes below the size allocated, blocks past it skipped) and
/// each run of consecutive disk blocks goes to the device as one request straight from the
/// cache frames (no bounce buffer), the task asleep until it completes. Returns the indices
/// not stored (sorted) and the first error.
fn write_batch(
    cache: &FileCache,
    ino: u32,
    batch: &WritebackBatch,
) -> (alloc::vec::Vec<u64>, Option<Errno>) {
    let mut failed = Vec::new();
    let mut error = None;
    let Some(device) = virtio_blk::root_device() else {
        return (
            batch.pages.iter().map(|p| p.0).collect(),
            Some(Errno::ENXIO),
        );
    };
    let pages = &batch.pages;
    let mut at = 0;
    while at < pages.len() {
        let mut end = at + 1;
        while end < pages.len() && end - at < MAX_SEGMENTS && pages[end].0 == pages[end - 1].0 + 1 {
            end += 1;
        }
        let run = &pages[at..end];
        // Under the filesystem lock, the cache must still be the registry's for `ino`: the
        // flusher and `sync` write closed files' caches without holding the inode, and while
        // this task slept for the lock the file may have been unlinked (its cache forgotten,
        // [`forget_closed`]) and the number given to a new file, whose blocks would receive
        // the old file's data. Every path that drops a cache from the registry means its data
        // die with it, so the run is dropped as written.
        let still_ours = || {
            CACHES
                .lock()
                .get(&ino)
                .is_some_and(|e| core::ptr::eq(Arc::as_ptr(&e.cache), cache))
        };
        let stored = with_fs(|fs| {
            if !still_ours() {
                return Ok(Ok(()));
            }
            Ok(write_run(fs, device, ino, run))
        });
        if let Err(e) = stored.and_then(|r| r) {
            failed.extend(run.iter().map(|p| p.0));
            error.get_or_insert(e);
        }
        at = end;
    }
    (failed, error)
}

/// One run of consecutive pages (under the filesystem lock, so no block under it is freed
/// while the device writes it).
fn write_run(
    fs: &mut cowlab_ext2::Ext2<super::ext2_glue::VirtioDisk>,
    device: &'static virtio_blk::Device,
    ino: u32,
    run: &[(u64, PhysAddr)],
) -> Result<(), Errno> {
    let bs = u64::from(fs.block_size());
    let per_page = PAGE / bs;
    let first = run[0].0 * per_page;
    // A hole under a page's zeroes stays a hole (a page written in part, blocks smaller than
    // a page); the batch's references keep the frames.
    let mm = memory::mm();
    let zeroes = |i: u64| {
        let frame = run[(i / per_page) as usize].1;
        cowlab_mm::pagecache::cache_bytes_are_zero(
            mm,
            frame,
            ((i % per_page) * bs) as usize,
            bs as usize,
        )
    };
    let blocks = fs
        .writeback_blocks(ino, first, run.len() as u64 * per_page, zeroes)
        .map_err(super::ext2_mount::errno)?;
    let mut j = 0;
    while j < blocks.len() {
        if blocks[j] == 0 {
            j += 1;
            continue;
        }
        let start = j;
        let mut segments: Vec<Segment> = Vec::new();
        while j < blocks.len()
            && blocks[j] != 0
            && u64::from(blocks[j]) == u64::from(blocks[start]) + (j - start) as u64
        {
            let frame = run[j / per_page as usize].1;
            let phys = frame.as_u64() + (j as u64 % per_page) * bs;
            match segments.last_mut() {
                Some(last) if last.phys + u64::from(last.len) == phys => last.len += bs as u32,
                _ => {
                    if segments.len() == MAX_SEGMENTS {
                        break;
                    }
                    segments.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
                    segments.push(Segment {
                        phys,
                        len: bs as u32,
                    });
                }
            }
            j += 1;
        }
        let bytes = (j - start) as u64 * bs;
        let wait = SyncWait::new();
        // The batch holds a reference on every frame until `end_writeback`, which comes after
        // `wait_to_end`: the request needs no hold of its own.
        let owner: alloc::sync::Arc<dyn core::any::Any + Send + Sync> = alloc::sync::Arc::new(());
        let request = Request::registered(
            Op::Write,
            u64::from(blocks[start]) * bs / SECTOR,
            segments,
            owner,
            wait.completion(),
        );
        device.submit(request)?;
        WRITEBACK_REQUESTS.fetch_add(1, Ordering::Relaxed);
        let waited = crate::time::rdtsc();
        let moved = wait.wait_anywhere();
        DISK_WAIT_TSC.fetch_add(crate::time::rdtsc() - waited, Ordering::Relaxed);
        if (moved? as u64) < bytes {
            return Err(Errno::EIO);
        }
    }
    WRITEBACK_PAGES.fetch_add(run.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes back every dirty page of every open file (`sync`, unmount); the first error.
pub fn sync_all() -> Result<(), Errno> {
    let mut result = Ok(());
    for (ino, cache) in all() {
        if let Err(e) = writeback(&cache, ino) {
            result = result.and(Err(e));
        }
    }
    result
}

/// The periodic flusher's round (`fs::writeback`, Linux `wb_writeback` for old data): every
/// cache dirty since `expire` ticks or more before `now` is written back (shared mappings
/// write-protected first). A cache found dirty without a stamp (a page dirtied by a device
/// through a pin, or left dirty by a failed writeback) is stamped now and waits its turn.
/// Returns the first error (the other caches are still tried).
pub fn flush_expired(now: u64, expire: u64) -> Result<usize, Errno> {
    let mm = memory::mm();
    let mut written = 0;
    let mut result = Ok(());
    for (ino, cache) in all() {
        match cache.dirtied_when() {
            Some(t) if now.saturating_sub(t) >= expire => match writeback_nowait(&cache, ino) {
                Ok(n) => written += n,
                Err(e) => result = result.and(Err(e)),
            },
            Some(_) => {}
            None if cache.dirty_pages(mm) > 0 => cache.note_dirtied(),
            None => {}
        }
    }
    result.map(|()| written)
}

/// Background writeback (Linux `wb_check_background_flush` -> `wb_writeback` with
/// `for_background`): while `over()` says too many pages are dirty, the dirty caches are
/// written back one by one, the longest dirty first, whatever their age; locked caches and
/// pages are skipped, as by the periodic round. Returns the first error.
pub fn flush_background(over: fn() -> bool) -> Result<usize, Errno> {
    let mut caches = all();
    // A cache dirtied without a stamp (a pin's DMA) goes last.
    caches.sort_by_key(|(_, c)| c.dirtied_when().unwrap_or(u64::MAX));
    let mut written = 0;
    let mut result = Ok(());
    for (ino, cache) in caches {
        if !over() {
            break;
        }
        match writeback_nowait(&cache, ino) {
            Ok(n) => written += n,
            Err(e) => result = result.and(Err(e)),
        }
    }
    result.map(|()| written)
}

/// `echo N > /proc/sys/vm/drop_caches` (Linux `drop_pagecache_sb`): every clean, unreferenced
/// cache page is freed (dirty pages stay, as on Linux: `sync` first). Returns the frames freed.
/// The pages go in batches, with a `cond_resched` at most every [`DROP_PAUSE_US`] between
/// them (Linux `invalidate_mapping_pages`): a drop of a large cache held the CPU for its whole
/// length. Called from a system call holding no lock.
pub fn drop_caches() -> usize {
    let mm = memory::mm();
    let mut freed = 0;
    let mut since = crate::time::micros_since_boot();
    let mut pause = || {
        let now = crate::time::micros_since_boot();
        if now.saturating_sub(since) >= DROP_PAUSE_US {
            crate::proc::sched::cond_resched();
            since = crate::time::micros_since_boot();
        }
    };
    for (ino, cache) in all() {
        freed += cache.drop_clean_pausing(mm, &mut pause);
        pause();
        // A closed file's cache left empty is forgotten (the registry stays bounded); nobody
        // can add pages to it while it has no open description.
        if cache.cached_pages() == 0 {
            let mut caches = CACHES.lock();
            if caches
                .get(&ino)
                .is_some_and(|e| e.opens == 0 && Arc::ptr_eq(&e.cache, &cache))
            {
                caches.remove(&ino);
            }
        }
    }
    freed
}

/// How long `drop_caches` frees pages before it lets other tasks run (as `proc::evict`).
const DROP_PAUSE_US: u64 = 2000;

/// The reclaim hook the memory manager runs before an allocation fails: frees clean cache
/// pages of caches nobody holds locked (see the module comment).
pub fn shrink() -> usize {
    let mm = memory::mm();
    let Some(caches) = CACHES.try_lock() else {
        return 0;
    };
    caches.values().map(|e| e.cache.try_drop_clean(mm)).sum()
}
