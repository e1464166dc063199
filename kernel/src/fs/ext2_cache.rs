//! The page caches of open ext2 regular files: one `cowlab_mm::pagecache::FileCache` per inode,
//! looked up by inode number, with the ext2 crate as its backing store ([`Ext2Store`]).
//!
//! Lifetime: a cache is created at a file's first open ([`attach`]) and kept past its last
//! close ([`detach`], which writes it back), as Linux keeps a closed file's pages until reclaim:
//! a file reopened finds its pages. Its clean pages go under memory pressure ([`shrink`]) and
//! at `drop_caches`; an unlinked file's cache goes at its last close (or at the unlink, if it is
//! closed: [`forget_closed`]). A kept cache remembers its inode's generation: if the inode
//! number names another file by the time it is opened again, the old cache is dropped then.
//! Unmount empties every cache ([`evict_all`]), so none outlives the mount.
//!
//! Locks: the registry lock is held only to find, add or remove an entry, never across I/O;
//! a cache's own lock is held across its store's I/O, which takes the filesystem lock (order:
//! cache, then filesystem), so its store's I/O polls ([`with_fs_atomic`]) instead of sleeping. The reclaim hook ([`shrink`]) runs inside failing frame allocations,
//! possibly with a cache or the registry locked by the same CPU, so it only `try_lock`s.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use cowlab_mm::aspace::AddressSpace;
use cowlab_mm::pagecache::{BackingStore, FileCache};
use spin::Mutex;

use super::ext2_mount::{with_fs, with_fs_atomic};
use crate::errno::Errno;
use crate::memory;
use crate::vm::SharedAddressSpace;

const PAGE: u64 = 4096;

struct Entry {
    cache: Arc<FileCache>,
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
    mappers: Vec<Weak<Mutex<AddressSpace>>>,
}

static CACHES: Mutex<BTreeMap<u32, Entry>> = Mutex::new(BTreeMap::new());

/// Inode `ino` as a page cache's store: pages are read and written with the crate's file calls.
#[derive(Clone, Copy)]
pub struct Ext2Store {
    pub ino: u32,
}

impl BackingStore for Ext2Store {
    type Error = Errno;

    fn read_page(&self, index: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let n = with_fs_atomic(|fs| fs.read(self.ino, index * PAGE, buf))?;
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
}

/// Registers one more open description of `ino`; the first creates the cache, sized from the
/// inode, or takes back the cache kept since the last close if the inode is still the same
/// file (generation and size).
pub fn attach(ino: u32) -> Result<Arc<FileCache>, Errno> {
    if let Some(e) = CACHES.lock().get_mut(&ino).filter(|e| e.opens > 0) {
        e.opens += 1;
        return Ok(e.cache.clone());
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
            opens: 0,
            generation,
            size_at_close: size,
            mappers: Vec::new(),
        });
        e.opens += 1;
        (e.cache.clone(), stale)
    };
    if let Some(old) = stale {
        // A freed inode's pages: its data died with it.
        old.evict(memory::mm());
    }
    Ok(cache)
}

/// One open description of `ino` is gone; the last writes the cache back and keeps it (if
/// `keep_data`: the inode still has names), or empties and forgets it (unlinked: its data dies
/// with it). Returns the writeback's error, if any (the pages stay dirty, for the flusher).
pub fn detach(ino: u32, keep_data: bool) -> Result<(), Errno> {
    let cache = {
        let mut caches = CACHES.lock();
        let Some(e) = caches.get_mut(&ino) else {
            return Ok(());
        };
        e.opens -= 1;
        if e.opens > 0 {
            return Ok(());
        }
        if keep_data {
            e.cache.clone()
        } else {
            let gone = caches.remove(&ino);
            drop(caches);
            if let Some(e) = gone {
                e.cache.evict(memory::mm());
            }
            return Ok(());
        }
    };
    let mm = memory::mm();
    let r = cache.writeback(mm, &Ext2Store { ino }).map(drop);
    let size = cache.size();
    if let Some(e) = CACHES.lock().get_mut(&ino) {
        if e.opens == 0 && Arc::ptr_eq(&e.cache, &cache) {
            e.size_at_close = size;
        }
    }
    r
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

fn add_mapper(mappers: &mut Vec<Weak<Mutex<AddressSpace>>>, space: &SharedAddressSpace) {
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
/// SMP: between this and the writeback's clearing of `DIRTY`, a store on another CPU may fault,
/// dirty the page and make its PTE writable; the writeback then cleans a page that a writable
/// PTE maps. Linux closes that window with the folio lock, held by both; cowlab's kernel does
/// not run two CPUs yet, and this comment marks where the lock goes.
pub fn mkclean(cache: &FileCache) {
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::folio_mkclean(mm, &space.lock(), cache);
    }
}

/// `ftruncate` shrank the file to `size`: every process's mappings of its pages past the new
/// end are removed (Linux `truncate_pagecache` -> `unmap_mapping_range`), so they fault with
/// `SIGBUS`. Walks the file's mappers, as [`mkclean`].
pub fn unmap_past(cache: &FileCache, size: u64) {
    let mm = memory::mm();
    for space in mappers_of(cache) {
        cowlab_mm::pagecache::unmap_mapping_range(mm, &space.lock(), cache, size.div_ceil(PAGE));
    }
}

/// Writes back the dirty pages of `cache` (inode `ino`), write-protecting its shared mappings
/// first ([`mkclean`]) so the next store to a written page faults again (write-notify).
pub fn writeback(cache: &FileCache, ino: u32) -> Result<usize, Errno> {
    if cache.dirty_pages(memory::mm()) == 0 {
        return Ok(0);
    }
    mkclean(cache);
    cache.writeback(memory::mm(), &Ext2Store { ino })
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
        // Background work never waits for the filesystem with a cache locked: its holder may
        // want that cache next (a truncate, after its block I/O), and a waiter on one CPU
        // yields rather than sleeps, so it would spin on the cache forever. Free now, the
        // filesystem is taken at once and kept through the (polled) writeback; busy, the
        // round ends and the next interval tries again.
        if super::ext2_mount::busy() {
            break;
        }
        match cache.dirtied_when() {
            Some(t) if now.saturating_sub(t) >= expire => match writeback(&cache, ino) {
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

/// `echo N > /proc/sys/vm/drop_caches` (Linux `drop_pagecache_sb`): every clean, unreferenced
/// cache page is freed (dirty pages stay, as on Linux: `sync` first). Returns the frames freed.
pub fn drop_caches() -> usize {
    let mm = memory::mm();
    let mut freed = 0;
    for (ino, cache) in all() {
        freed += cache.drop_clean(mm);
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

/// The reclaim hook the memory manager runs before an allocation fails: frees clean cache
/// pages of caches nobody holds locked (see the module comment).
pub fn shrink() -> usize {
    let mm = memory::mm();
    let Some(caches) = CACHES.try_lock() else {
        return 0;
    };
    caches.values().map(|e| e.cache.try_drop_clean(mm)).sum()
}
