//! The file page cache over an in-memory store: fill, write-behind, writeback, truncation,
//! clean-page dropping, and reclaim when frames run out.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use super::*;
use crate::error::MmError;
use crate::pagecache::{BackingStore, FileCache};

/// A stored file: its bytes, plus the page indexes read and written.
struct VecStore {
    data: RefCell<Vec<u8>>,
    reads: RefCell<Vec<u64>>,
    writes: RefCell<Vec<u64>>,
}

impl VecStore {
    fn new(data: Vec<u8>) -> VecStore {
        VecStore {
            data: RefCell::new(data),
            reads: RefCell::new(Vec::new()),
            writes: RefCell::new(Vec::new()),
        }
    }
}

impl BackingStore for VecStore {
    type Error = MmError;

    fn read_page(&self, index: u64, buf: &mut [u8], _may_sleep: bool) -> Result<(), MmError> {
        self.reads.borrow_mut().push(index);
        let data = self.data.borrow();
        let start = (index * PAGE) as usize;
        buf.fill(0);
        if start < data.len() {
            let n = (data.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&data[start..start + n]);
        }
        Ok(())
    }

    fn write_page(&self, index: u64, src: &[u8]) -> Result<(), MmError> {
        self.writes.borrow_mut().push(index);
        let mut data = self.data.borrow_mut();
        let start = (index * PAGE) as usize;
        if data.len() < start + src.len() {
            data.resize(start + src.len(), 0);
        }
        data[start..start + src.len()].copy_from_slice(src);
        Ok(())
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
}

#[test]
fn reads_fill_from_the_store_once() {
    let env = Env::new();
    let store = VecStore::new(pattern(3 * PAGE_SIZE + 100, 1));
    let cache = FileCache::new(3 * PAGE + 100);
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    let n = cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    assert_eq!(n, 3 * PAGE_SIZE + 100);
    assert_eq!(&buf[..n], &store.data.borrow()[..]);
    let n = cache.read_at(&env.mm, &store, 10, &mut buf[..20]).unwrap();
    assert_eq!(n, 20);
    assert_eq!(
        *store.reads.borrow(),
        vec![0, 1, 2, 3],
        "each page read in once"
    );
    assert_eq!(env.mm.stats().file_pages, 4);
    assert_eq!(
        cache.read_at(&env.mm, &store, 4 * PAGE, &mut buf).unwrap(),
        0
    );
    cache.evict(&env.mm);
    assert_eq!(env.mm.stats().file_pages, 0);
    env.finish(Vec::new());
}

#[test]
fn writes_stay_dirty_until_writeback() {
    let env = Env::new();
    let store = VecStore::new(pattern(PAGE_SIZE, 2));
    let cache = FileCache::new(PAGE);
    // A partial write of a stored page reads it in; one past the end does not.
    assert_eq!(cache.write_at(&env.mm, &store, 10, b"hello").unwrap(), 5);
    assert_eq!(
        cache
            .write_at(&env.mm, &store, 2 * PAGE + 1, b"xy")
            .unwrap(),
        2
    );
    assert_eq!(*store.reads.borrow(), vec![0]);
    assert!(store.writes.borrow().is_empty(), "write-behind");
    assert_eq!(cache.size(), 2 * PAGE + 3);
    assert_eq!(cache.dirty_pages(&env.mm), 2);
    assert_eq!(env.mm.stats().file_dirty, 2);
    assert_eq!(cache.writeback(&env.mm, &store).unwrap(), 2);
    assert_eq!(*store.writes.borrow(), vec![0, 2]);
    assert_eq!(env.mm.stats().file_dirty, 0);
    let data = store.data.borrow().clone();
    assert_eq!(
        data.len() as u64,
        2 * PAGE + 3,
        "the last page stores up to the size"
    );
    assert_eq!(&data[10..15], b"hello");
    assert_eq!(data[0], pattern(1, 2)[0]);
    assert!(data[PAGE_SIZE..2 * PAGE_SIZE + 1].iter().all(|&b| b == 0));
    assert_eq!(&data[2 * PAGE_SIZE + 1..], b"xy");
    assert_eq!(cache.writeback(&env.mm, &store).unwrap(), 0, "clean now");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// `drop_caches`' form: the cache lock and the free list's lock taken once per batch, a pause
/// between batches, the clean pages all freed and counted, the dirty ones (a third of them,
/// spread out: the scan looks at more pages than it frees) kept.
#[test]
fn drop_clean_pausing_frees_in_batches_and_keeps_dirty_pages() {
    const PAGES: usize = 5 * 64 + 7;
    let env = Env::with_frames(1024);
    let store = VecStore::new(pattern(PAGES * PAGE_SIZE, 4));
    let cache = FileCache::new(PAGES as u64 * PAGE);
    let mut buf = vec![0u8; PAGES * PAGE_SIZE];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    for i in (0..PAGES).step_by(3) {
        cache
            .write_at(&env.mm, &store, i as u64 * PAGE, b"d")
            .unwrap();
    }
    let dirty = PAGES.div_ceil(3);
    let free0 = env.mm.frames().free_frames();
    let mut pauses = 0;
    let freed = cache.drop_clean_pausing(&env.mm, || pauses += 1);
    assert_eq!(freed, PAGES - dirty);
    assert_eq!(cache.cached_pages(), dirty);
    assert_eq!(env.mm.frames().free_frames(), free0 + freed);
    assert_eq!(env.mm.stats().file_pages, dirty as u64);
    // At most 64 pages a batch: 218 clean pages need 4 batches, 3 pauses between them.
    assert!(
        pauses >= (PAGES - dirty).div_ceil(64) - 1,
        "{pauses} pauses"
    );
    // A page someone else references stays too.
    cache.writeback(&env.mm, &store).unwrap();
    let held = cache.cache_frame_for_test(6).unwrap();
    env.mm.frames().get(held);
    assert_eq!(cache.drop_clean_pausing(&env.mm, || {}), dirty - 1);
    assert_eq!(cache.cached_pages(), 1);
    assert!(!env.mm.frames().put(held), "the cache's reference is left");
    // The data written survived the drop (it reached the store).
    cache
        .read_at(&env.mm, &store, 3 * PAGE, &mut buf[..1])
        .unwrap();
    assert_eq!(buf[0], b'd');
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn drop_clean_keeps_dirty_and_referenced_pages() {
    let env = Env::new();
    let store = VecStore::new(pattern(4 * PAGE_SIZE, 3));
    let cache = FileCache::new(4 * PAGE);
    let mut buf = vec![0u8; 4 * PAGE_SIZE];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    cache.write_at(&env.mm, &store, PAGE, b"d").unwrap();
    assert_eq!(cache.drop_clean(&env.mm), 3);
    assert_eq!(cache.cached_pages(), 1);
    cache.writeback(&env.mm, &store).unwrap();
    assert_eq!(cache.try_drop_clean(&env.mm), 1);
    assert_eq!(cache.cached_pages(), 0);
    // Read back from the store: the write survived the drop.
    cache.read_at(&env.mm, &store, PAGE, &mut buf[..1]).unwrap();
    assert_eq!(buf[0], b'd');
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn shrinking_drops_pages_and_zeroes_the_tail() {
    let env = Env::new();
    let store = VecStore::new(Vec::new());
    let cache = FileCache::new(0);
    cache
        .write_at(&env.mm, &store, 0, &pattern(3 * PAGE_SIZE, 4))
        .unwrap();
    cache.set_size(&env.mm, PAGE + 10);
    assert_eq!(cache.cached_pages(), 2);
    cache.set_size(&env.mm, 2 * PAGE);
    let mut buf = vec![0xffu8; PAGE_SIZE];
    cache.read_at(&env.mm, &store, PAGE, &mut buf).unwrap();
    assert_eq!(&buf[..10], &pattern(PAGE_SIZE + 10, 4)[PAGE_SIZE..]);
    assert!(
        buf[10..].iter().all(|&b| b == 0),
        "the cut tail reads as zeroes"
    );
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn a_file_larger_than_memory_streams_through_the_cache() {
    let env = Env::with_frames(256);
    let free = env.mm.frames().free_frames();
    let pages = 3 * free;
    let store = VecStore::new(Vec::new());
    let cache = FileCache::new(0);
    for i in 0..pages {
        let chunk = pattern(PAGE_SIZE, i as u8);
        let n = cache
            .write_at(&env.mm, &store, (i * PAGE_SIZE) as u64, &chunk)
            .unwrap();
        assert_eq!(n, PAGE_SIZE);
        if cache.dirty_pages(&env.mm) >= free / 4 {
            cache.writeback(&env.mm, &store).unwrap();
        }
    }
    cache.writeback(&env.mm, &store).unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    for i in 0..pages {
        cache
            .read_at(&env.mm, &store, (i * PAGE_SIZE) as u64, &mut buf)
            .unwrap();
        assert_eq!(buf, pattern(PAGE_SIZE, i as u8), "page {i}");
    }
    assert!(cache.cached_pages() < pages);
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn anon_allocation_reclaims_clean_cache_pages() {
    // The hook is a plain `fn`: it reaches the machine and the cache through statics.
    static ENV: std::sync::OnceLock<&'static Env> = std::sync::OnceLock::new();
    static CACHE: FileCache = FileCache::new(200 * PAGE);
    fn shrink() -> usize {
        CACHE.try_drop_clean(&ENV.get().unwrap().mm)
    }
    let env: &'static Env =
        ENV.get_or_init(|| alloc::boxed::Box::leak(alloc::boxed::Box::new(Env::with_frames(128))));
    env.mm.set_shrinker(shrink);
    let store = VecStore::new(pattern(200 * PAGE_SIZE, 5));
    let mut s = env.space();
    let addr = s
        .mmap(
            &env.mm,
            VirtAddr::new(BASE),
            PAGE as usize,
            Prot::READ | Prot::WRITE,
            ANON,
        )
        .unwrap();
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut i = 0;
    while env.mm.frames().free_frames() > 0 {
        CACHE.read_at(&env.mm, &store, i * PAGE, &mut buf).unwrap();
        i += 1;
    }
    write_u64(&env.mm, &mut s, addr, 42).expect("the fault reclaims cache pages");
    assert!(CACHE.cached_pages() < i as usize);
    CACHE.evict(&env.mm);
    env.finish(vec![s]);
}

#[test]
fn zero_range_zeroes_only_the_range_in_cached_pages() {
    let env = Env::new();
    let store = VecStore::new(pattern(3 * PAGE_SIZE, 4));
    let cache = FileCache::new(3 * PAGE);
    let mut buf = vec![0u8; 3 * PAGE_SIZE];
    cache
        .read_at(&env.mm, &store, 0, &mut buf[..PAGE_SIZE + 1])
        .unwrap();
    cache.write_at(&env.mm, &store, 10, b"dirty").unwrap();
    assert_eq!(cache.cached_pages(), 2);
    cache.zero_range(&env.mm, 8, PAGE + 20);
    assert_eq!(cache.cached_pages(), 2, "no page is read in or dropped");
    assert_eq!(cache.dirty_pages(&env.mm), 1, "the dirty page stays dirty");
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    let mut want = pattern(3 * PAGE_SIZE, 4);
    want[8..PAGE_SIZE + 20].fill(0);
    // Page 2 was not cached: it is read from the store, untouched.
    assert_eq!(buf, want);
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn write_through_updates_cached_pages_and_the_store() {
    let env = Env::new();
    let store = VecStore::new(pattern(2 * PAGE_SIZE, 6));
    let cache = FileCache::new(2 * PAGE);
    let mut buf = vec![0u8; PAGE_SIZE];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    let data = pattern(PAGE_SIZE + 8, 9);
    let at = PAGE - 4;
    let n = cache
        .write_through(&env.mm, at, &data, |d| {
            let mut s = store.data.borrow_mut();
            let end = at as usize + d.len();
            if s.len() < end {
                s.resize(end, 0);
            }
            s[at as usize..end].copy_from_slice(d);
            cache.grow_size(&env.mm, end as u64);
            Ok::<usize, MmError>(d.len())
        })
        .unwrap();
    assert_eq!(n, data.len());
    assert_eq!(cache.size(), at + data.len() as u64);
    assert_eq!(cache.dirty_pages(&env.mm), 0, "the store has the bytes");
    assert_eq!(
        cache.cached_pages(),
        1,
        "no page is created by a write-through"
    );
    let mut all = vec![0u8; 3 * PAGE_SIZE];
    let got = cache.read_at(&env.mm, &store, 0, &mut all).unwrap();
    assert_eq!(&all[..got], &store.data.borrow()[..]);
    assert_eq!(&all[at as usize..got], &data[..]);
    // A store that takes nothing leaves the cache as it was.
    let r = cache.write_through(&env.mm, 0, b"zz", |_| Err::<usize, MmError>(MmError::NoSpc));
    assert_eq!(r, Err(MmError::NoSpc));
    cache.read_at(&env.mm, &store, 0, &mut buf[..2]).unwrap();
    assert_eq!(&buf[..2], &pattern(2, 6)[..]);
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

// ---- file mappings ----

use alloc::sync::Arc;

/// A buffered write cut short by the store (a full disk with 1 KiB blocks: `begin` takes only
/// the first two blocks of a page) that ends inside a page it was to overwrite wholly returns
/// the bytes it took, never 0, and the page holds them followed by the store's own bytes (a
/// hole's zeroes, a block the file had): the page is read before the copy, so nothing the
/// writer did not write, and nothing the store did not hold, becomes visible. On a page past
/// the end of the file, the count's bytes and zeroes after them.
#[test]
fn a_write_cut_inside_a_page_it_overwrites_keeps_the_stores_bytes() {
    let env = Env::new();
    let old = pattern(3 * PAGE_SIZE, 0x11);
    let store = VecStore::new(old.clone());
    let cache = FileCache::new(3 * PAGE);
    let data = pattern(PAGE_SIZE, 0x77);
    // Page 1, inside the file: the store takes 2048 of its 4096 bytes.
    let n = cache
        .write_begin_end(&env.mm, &store, PAGE, &data, |len| {
            assert_eq!(len, PAGE);
            Ok(2048)
        })
        .unwrap();
    assert_eq!(n, 2048, "the bytes written, not 0");
    let mut back = vec![0u8; PAGE_SIZE];
    cache.read_at(&env.mm, &store, PAGE, &mut back).unwrap();
    assert!(back[..2048] == data[..2048], "the written bytes");
    assert!(
        back[2048..] == old[PAGE_SIZE + 2048..2 * PAGE_SIZE],
        "then the store's own bytes"
    );
    assert_eq!(cache.dirty_pages(&env.mm), 1);
    // Two pages at the end of the file (growing it): cut 1024 bytes into the second.
    let two = pattern(2 * PAGE_SIZE, 0x33);
    let n = cache
        .write_begin_end(&env.mm, &store, 3 * PAGE, &two, |_| Ok(PAGE + 1024))
        .unwrap();
    assert_eq!(n, PAGE_SIZE + 1024);
    assert_eq!(cache.size(), 4 * PAGE + 1024);
    let mut back = vec![0xffu8; PAGE_SIZE];
    assert_eq!(
        cache.read_at(&env.mm, &store, 4 * PAGE, &mut back).unwrap(),
        1024
    );
    assert!(back[..1024] == two[PAGE_SIZE..PAGE_SIZE + 1024]);
    cache.writeback(&env.mm, &store).unwrap();
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A write from a source that may fault (`perform_write` with `may_fault`, a user buffer copied
/// with page faults off) whose copy stops short: the pages it covers are read first even when
/// overwritten wholly, so the bytes copied into a page are taken (not 0) with the page's stored
/// bytes after them; a page inside the size that the copy did not reach is dirtied (the store
/// may have given its holes blocks); past the end only the bytes copied grow the size; and
/// `begin` hears whether every page already has its blocks inside the size (`MAPPED_TO_DISK`,
/// set by the first whole-page write).
#[test]
fn a_short_copy_keeps_what_it_copied_and_dirties_what_begin_covered() {
    let env = Env::new();
    let old = pattern(3 * PAGE_SIZE, 0x11);
    let store = VecStore::new(old.clone());
    let cache = FileCache::new(3 * PAGE);
    let data = pattern(2 * PAGE_SIZE, 0x55);
    // Pages 0 and 1, overwritten wholly: the copy stops 100 bytes into page 0.
    let mut mapped_seen = Vec::new();
    let n = cache
        .perform_write(
            &env.mm,
            &store,
            0,
            2 * PAGE_SIZE,
            true,
            |dst, at, len| {
                let n = len.min(100usize.saturating_sub(at));
                env.mm.write_frame_bytes(dst, &data[at..at + n]);
                n
            },
            |len, mapped| {
                mapped_seen.push(mapped);
                Ok::<u64, MmError>(len)
            },
        )
        .unwrap();
    assert_eq!(n, 100, "the bytes copied");
    assert_eq!(mapped_seen, [false], "nothing known to have blocks yet");
    let mut back = vec![0u8; 2 * PAGE_SIZE];
    cache.read_at(&env.mm, &store, 0, &mut back).unwrap();
    assert!(back[..100] == data[..100], "the copied bytes");
    assert!(
        back[100..] == old[100..2 * PAGE_SIZE],
        "the store's bytes after them"
    );
    assert_eq!(cache.dirty_pages(&env.mm), 2, "page 1 dirtied too");
    assert_eq!(cache.size(), 3 * PAGE);
    // A whole page copied: the page has its blocks, and the next write over it inside the
    // size says so to `begin`.
    let full = |dst: PhysAddr, at: usize, len: usize| {
        env.mm.write_frame_bytes(dst, &data[at..at + len]);
        len
    };
    let mut seen = Vec::new();
    let mut begin = |len: u64, mapped: bool| {
        seen.push(mapped);
        Ok::<u64, MmError>(len)
    };
    assert_eq!(
        cache.perform_write(&env.mm, &store, 0, PAGE_SIZE, true, full, &mut begin),
        Ok(PAGE_SIZE)
    );
    assert_eq!(
        cache.perform_write(&env.mm, &store, 0, PAGE_SIZE, true, full, &mut begin),
        Ok(PAGE_SIZE)
    );
    assert_eq!(seen, [false, true]);
    // Past the end, the copy short by 10 bytes: the size grows by what was copied.
    let n = cache
        .perform_write(
            &env.mm,
            &store,
            3 * PAGE,
            100,
            true,
            |dst, at, len| {
                let n = len.min(90usize.saturating_sub(at));
                env.mm.write_frame_bytes(dst, &data[at..at + n]);
                n
            },
            |len, _| Ok::<u64, MmError>(len),
        )
        .unwrap();
    assert_eq!(n, 90);
    assert_eq!(cache.size(), 3 * PAGE + 90);
    cache.writeback(&env.mm, &store).unwrap();
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A [`VecStore`] whose page `bad` cannot be read (`EIO`), recording the sizes a failed write
/// was cut back to.
struct BadPageStore {
    inner: VecStore,
    bad: u64,
    failed: RefCell<Vec<u64>>,
}

impl BackingStore for BadPageStore {
    type Error = MmError;

    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), MmError> {
        if index == self.bad {
            return Err(MmError::Fault);
        }
        self.inner.read_page(index, buf, may_sleep)
    }

    fn write_page(&self, index: u64, src: &[u8]) -> Result<(), MmError> {
        self.inner.write_page(index, src)
    }

    fn write_failed(&self, keep: u64) -> Result<(), MmError> {
        self.failed.borrow_mut().push(keep);
        Ok(())
    }
}

/// pcache3 (Linux `ext2_write_failed`): a write whose `begin` prepared blocks up to some byte,
/// of which the cache took less (the page where the count ends could not be read: `EIO`),
/// tells the store the size it ended at, so the store frees the blocks and the size it added
/// past it, and leaves no page of its own past the new end in the cache. Before, the store
/// kept the blocks (and on ext2 a size) past the file's end, and the pages the write created
/// past it stayed cached.
#[test]
fn a_write_that_fails_part_way_gives_back_what_it_prepared_past_the_end() {
    let env = Env::new();
    let size = 2 * PAGE + 1000;
    let store = BadPageStore {
        inner: VecStore::new(pattern(size as usize, 0x21)),
        bad: 2,
        failed: RefCell::new(Vec::new()),
    };
    let cache = FileCache::new(size);
    // Pages 1 (partial, read), 2 (whole, inside the file: not read), 3 and 4 (whole, past the
    // end), 5 (partial, past the end).
    let offset = PAGE + 100;
    let data = pattern(4 * PAGE_SIZE, 0x5a);
    let n = cache
        .write_begin_end(&env.mm, &store, offset, &data, |len| {
            assert_eq!(len, 4 * PAGE);
            // The store had blocks for only part of page 2.
            Ok(2 * PAGE + 2000 - offset)
        })
        .unwrap();
    assert_eq!(n as u64, 2 * PAGE - offset, "the write ends before page 2");
    assert_eq!(cache.size(), size, "the size is the old one");
    assert_eq!(
        *store.failed.borrow(),
        vec![size],
        "the store was told to give back what it prepared past the size"
    );
    assert_eq!(
        env.mm.stats().file_pages,
        1,
        "only page 1 stays cached: none past the end"
    );
    let mut back = vec![0u8; 2 * PAGE_SIZE];
    assert_eq!(
        cache
            .read_at(&env.mm, &store.inner, PAGE, &mut back)
            .unwrap(),
        PAGE_SIZE + 1000
    );
    assert!(back[..100] == pattern(size as usize, 0x21)[PAGE_SIZE..PAGE_SIZE + 100]);
    assert!(back[100..PAGE_SIZE] == data[..PAGE_SIZE - 100]);
    // A write the store took wholly tells it nothing.
    let n = cache
        .write_begin_end(&env.mm, &store.inner, 0, &data[..10], Ok)
        .unwrap();
    assert_eq!(n, 10);
    assert_eq!(store.failed.borrow().len(), 1);
    cache.writeback(&env.mm, &store.inner).unwrap();
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// pcache3: a truncation that runs between an `O_DIRECT` write's store (which grew the size)
/// and its walk over the cached pages (the kernel's store runs under the filesystem lock, the
/// walk after it) is kept: the walk neither grows the size again nor copies the write's bytes
/// past the new end into the last page, whose tail stays zero (a later growth of the file
/// shows zeroes there). Before, the size came back to the write's end and the tail held the
/// written bytes.
#[test]
fn a_direct_write_keeps_a_truncation_that_ran_after_its_store() {
    let env = Env::new();
    let store = VecStore::new(pattern(PAGE_SIZE, 4));
    let cache = FileCache::new(PAGE);
    let mut buf = vec![0u8; 1];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    let data = vec![0xa5u8; 2 * PAGE_SIZE];
    let n = cache
        .write_through(&env.mm, 0, &data, |d| {
            cache.grow_size(&env.mm, d.len() as u64);
            // ftruncate(100) meanwhile: the store, then the cache.
            store.data.borrow_mut().truncate(100);
            cache.set_size(&env.mm, 100);
            Ok::<usize, MmError>(d.len())
        })
        .unwrap();
    assert_eq!(n, 2 * PAGE_SIZE);
    assert_eq!(cache.size(), 100, "the truncation is kept");
    assert_eq!(env.mm.stats().file_pages, 1, "no page past the end");
    cache.set_size(&env.mm, PAGE);
    let mut back = vec![0xffu8; PAGE_SIZE];
    assert_eq!(
        cache.read_at(&env.mm, &store, 0, &mut back).unwrap(),
        PAGE_SIZE
    );
    assert!(back[..100].iter().all(|&b| b == 0xa5), "the written bytes");
    assert!(back[100..].iter().all(|&b| b == 0), "zeroes past the cut");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

use super::gup_tests::{pin_one, PATHS};
use crate::error::{FaultError, SegvReason};
use crate::foll::FollFlags;
use crate::frame::FrameFlags;
use crate::pagecache::{FileRef, MappedFile};

/// A mapped file over bytes in memory.
struct TestFile {
    cache: FileCache,
    data: spin::Mutex<Vec<u8>>,
    /// The store is full: `page_mkwrite` is `NoSpc`. Pages it was asked to allocate are listed.
    full: core::sync::atomic::AtomicBool,
    mkwrites: spin::Mutex<Vec<(u64, usize)>>,
    /// Of those calls, the ones allowed to sleep (from the fault's retry).
    mkwrites_asleep: core::sync::atomic::AtomicUsize,
}

impl MappedFile for TestFile {
    fn cache(&self) -> &FileCache {
        &self.cache
    }
    fn inode(&self) -> u64 {
        12
    }
    fn read_page(&self, index: u64, buf: &mut [u8], _may_sleep: bool) -> Result<(), MmError> {
        let data = self.data.lock();
        let start = (index * PAGE) as usize;
        buf.fill(0);
        if start < data.len() {
            let n = (data.len() - start).min(buf.len());
            buf[..n].copy_from_slice(&data[start..start + n]);
        }
        Ok(())
    }
    fn writeback(&self) -> bool {
        true
    }
    fn page_mkwrite(&self, index: u64, len: usize, may_sleep: bool) -> Result<(), MmError> {
        if self.full.load(core::sync::atomic::Ordering::Relaxed) {
            return Err(MmError::NoSpc);
        }
        self.mkwrites.lock().push((index, len));
        if may_sleep {
            self.mkwrites_asleep
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

fn test_file(len: usize) -> Arc<TestFile> {
    Arc::new(TestFile {
        cache: FileCache::new(len as u64),
        data: spin::Mutex::new(pattern(len, 7)),
        full: core::sync::atomic::AtomicBool::new(false),
        mkwrites: spin::Mutex::new(Vec::new()),
        mkwrites_asleep: core::sync::atomic::AtomicUsize::new(0),
    })
}

/// `page_mkwrite` asks the file for blocks when a clean page is first written through a shared
/// mapping (fault on an empty PTE and write-notify fault alike), once per page: a page already
/// known to have its blocks, or dirty, is not asked about again. When the store is full the
/// store gets `SIGBUS` (Linux `block_page_mkwrite` -> `VM_FAULT_SIGBUS`), the page stays clean
/// and read-only, and nothing leaks.
#[test]
fn page_mkwrite_allocates_once_and_a_full_store_is_sigbus() {
    use core::sync::atomic::Ordering;
    let env = Env::new();
    let f = test_file(2 * PAGE_SIZE + 100);
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 3, true);
    env.write(&mut s, sh, 1).unwrap();
    env.write(&mut s, sh + 8, 2).unwrap();
    assert_eq!(*f.mkwrites.lock(), vec![(0, PAGE_SIZE)]);
    // Writeback cleans and write-protects; the next store's write-notify fault does not ask.
    crate::pagecache::folio_mkclean(&env.mm, &s, &f.cache);
    f.cache
        .writeback(&env.mm, &VecStore::new(Vec::new()))
        .unwrap();
    env.write(&mut s, sh, 3).unwrap();
    assert_eq!(f.mkwrites.lock().len(), 1, "page 0 has its blocks");
    assert_eq!(env.mm.stats().writenotify_faults, 2);
    // The last page: only the bytes below the size need blocks.
    env.write(&mut s, sh + 2 * PAGE, 4).unwrap();
    assert_eq!(f.mkwrites.lock()[1], (2, 100));
    // Full: a read maps page 1, the store into it is SIGBUS, and the page stays clean.
    f.full.store(true, Ordering::Relaxed);
    env.read(&mut s, sh + PAGE).unwrap();
    assert_eq!(
        env.write(&mut s, sh + PAGE, 5).unwrap_err().error,
        FaultError::Segv(SegvReason::BeyondEof),
        "ENOSPC at page_mkwrite is SIGBUS"
    );
    let page1 = f.cache.cache_frame_for_test(1).unwrap();
    assert!(!env.flags(page1).contains(FrameFlags::DIRTY));
    assert!(!env.pte(&s, sh + PAGE).is_writable(), "still read-only");
    // A dirty page is written on without asking, full or not.
    env.write(&mut s, sh + 16, 6).unwrap();
    // An untouched page, first touched by a store: SIGBUS from the fault on the empty PTE.
    crate::munmap::zap_pages(&env.mm, s.shared(), sh + PAGE, sh + 2 * PAGE);
    assert_eq!(
        env.write(&mut s, sh + PAGE, 7).unwrap_err().error,
        FaultError::Segv(SegvReason::BeyondEof)
    );
    f.full.store(false, Ordering::Relaxed);
    env.write(&mut s, sh + PAGE, 8).unwrap();
    assert_eq!(f.mkwrites.lock()[2], (1, PAGE_SIZE));
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

fn map_file(
    env: &Env,
    s: &mut AddressSpace,
    f: &Arc<TestFile>,
    pages: u64,
    shared: bool,
) -> VirtAddr {
    let flags = MapFlags::from_linux(if shared { 0x01 } else { 0x02 });
    let file: Arc<dyn MappedFile> = f.clone();
    s.mmap_file(
        &env.mm,
        VirtAddr::zero(),
        (pages * PAGE) as usize,
        Prot::RW,
        flags,
        FileRef(file),
        0,
        true,
    )
    .expect("mmap of a file")
}

#[test]
fn shared_and_private_file_mappings() {
    let env = Env::new();
    let f = test_file(PAGE_SIZE + 100);
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 3, true);
    let pv = map_file(&env, &mut s, &f, 3, false);
    let word =
        |off: usize| u64::from_le_bytes(pattern(off + 8, 7)[off..off + 8].try_into().unwrap());
    assert_eq!(env.read(&mut s, sh).unwrap(), word(0));
    assert_eq!(
        env.read(&mut s, sh + PAGE + 104).unwrap(),
        0,
        "zeroes past the end"
    );
    assert_eq!(
        env.read(&mut s, sh + 2 * PAGE).unwrap_err().error,
        FaultError::Segv(SegvReason::BeyondEof),
        "a page wholly past the end is SIGBUS"
    );
    assert_eq!(env.mm.stats().file_faults, 2);
    // A private read maps the cache page; its write copies.
    assert_eq!(env.read(&mut s, pv).unwrap(), word(0));
    let cached = f.cache.cache_frame_for_test(0).unwrap();
    assert_eq!(env.frame(&s, pv), cached);
    env.write(&mut s, pv, 0x1111).unwrap();
    assert_ne!(env.frame(&s, pv), cached);
    assert!(env
        .flags(env.frame(&s, pv))
        .contains(FrameFlags::ANON_EXCLUSIVE));
    assert!(
        !env.flags(cached).contains(FrameFlags::DIRTY),
        "a private write never dirties"
    );
    assert_eq!(env.read(&mut s, sh).unwrap(), word(0));
    // A shared write dirties the cache page (page_mkwrite) and lands in it.
    env.write(&mut s, sh + 8, 0x2222).unwrap();
    assert!(env.flags(cached).contains(FrameFlags::DIRTY));
    assert_eq!(env.mm.stats().file_dirty, 1);
    let mut b = [0u8; 8];
    f.cache.read_at(&env.mm, &NoStore, 8, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x2222, "read(2) sees the store");
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn longterm_write_pins_of_shared_file_mappings_follow_the_era() {
    for era in [Era::Y2022, Era::Y2023] {
        for path in PATHS {
            let env = Env::era(era);
            let f = test_file(2 * PAGE_SIZE);
            let mut s = env.space();
            let sh = map_file(&env, &mut s, &f, 2, true);
            let pv = map_file(&env, &mut s, &f, 2, false);
            env.write(&mut s, sh, 1).unwrap();
            let lw = FollFlags::LONGTERM | FollFlags::WRITE;
            let shared = pin_one(&env, &mut s, sh, lw, path);
            if era >= Era::Y2023 {
                assert_eq!(shared.err(), Some(MmError::Fault), "{era} {path:?}");
            } else {
                shared.expect("allowed before 2023").unpin(&env.mm);
            }
            pin_one(&env, &mut s, pv, lw, path)
                .expect("a private file mapping is pinned (after COW)")
                .unpin(&env.mm);
            pin_one(&env, &mut s, sh + PAGE, FollFlags::LONGTERM, path)
                .expect("a read-only long-term pin of a shared file page")
                .unpin(&env.mm);
            env.check(&[&s]);
            s.exit(&env.mm);
            f.cache.evict(&env.mm);
            env.finish(Vec::new());
        }
    }
}

/// For reading cached pages only.
struct NoStore;

impl BackingStore for NoStore {
    type Error = MmError;
    fn read_page(&self, _: u64, _: &mut [u8], _: bool) -> Result<(), MmError> {
        Err(MmError::Inval)
    }
    fn write_page(&self, _: u64, _: &[u8]) -> Result<(), MmError> {
        Err(MmError::Inval)
    }
}

#[test]
fn writeback_write_protects_and_the_next_store_notifies() {
    let env = Env::new();
    let f = test_file(2 * PAGE_SIZE);
    let mut s = env.space();
    let mut t = env.space();
    let a = map_file(&env, &mut s, &f, 2, true);
    let b = map_file(&env, &mut t, &f, 2, true);
    env.write(&mut s, a, 5).unwrap();
    env.write(&mut t, b, 6).unwrap();
    assert_eq!(env.mm.stats().file_dirty, 1);
    assert_eq!(
        env.mm.stats().writenotify_faults,
        2,
        "each first store told the file"
    );
    let store = VecStore::new(Vec::new());
    for space in [&s, &t] {
        assert_eq!(crate::pagecache::folio_mkclean(&env.mm, space, &f.cache), 1);
    }
    assert_eq!(f.cache.writeback(&env.mm, &store).unwrap(), 1);
    assert_eq!(env.mm.stats().file_dirty, 0);
    assert_eq!(
        u64::from_le_bytes(store.data.borrow()[..8].try_into().unwrap()),
        6
    );
    // Both PTEs are read-only now: each process's next store faults and re-dirties.
    env.write(&mut s, a, 7).unwrap();
    assert_eq!(env.mm.stats().writenotify_faults, 3);
    assert_eq!(env.mm.stats().file_dirty, 1);
    env.write(&mut t, b + 8, 8).unwrap();
    assert_eq!(env.mm.stats().writenotify_faults, 4);
    env.write(&mut t, b + 16, 9).unwrap();
    assert_eq!(
        env.mm.stats().writenotify_faults,
        4,
        "a dirty writable page does not fault"
    );
    env.check(&[&s, &t]);
    s.exit(&env.mm);
    t.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

#[test]
fn truncation_unmaps_the_cut_pages_everywhere() {
    let env = Env::new();
    let f = test_file(2 * PAGE_SIZE);
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 2, true);
    let pv = map_file(&env, &mut s, &f, 2, false);
    env.write(&mut s, sh + PAGE, 1).unwrap();
    env.write(&mut s, pv + PAGE, 2).unwrap();
    env.read(&mut s, sh).unwrap();
    f.cache.set_size(&env.mm, PAGE);
    crate::pagecache::unmap_mapping_range(&env.mm, &s, &f.cache, 1);
    for va in [sh + PAGE, pv + PAGE] {
        assert_eq!(
            env.read(&mut s, va).unwrap_err().error,
            FaultError::Segv(SegvReason::BeyondEof),
            "the cut page faults with SIGBUS (shared, and the private COW copy)"
        );
    }
    assert!(env.read(&mut s, sh).is_ok(), "the page below the end stays");
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// The flusher's age of a dirty cache (Linux `dirtied_when`): stamped by the store that first
/// dirties a clean cache, kept by later stores, cleared when writeback starts, stamped again by
/// the next store (a write-notify fault on the cleaned page).
#[test]
fn the_first_store_stamps_the_cache_and_writeback_clears_it() {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NOW: AtomicU64 = AtomicU64::new(100);
    crate::pagecache::set_clock(|| NOW.load(Ordering::Relaxed));
    let env = Env::new();
    let f = test_file(2 * PAGE_SIZE);
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 2, true);
    env.read(&mut s, sh).unwrap();
    assert_eq!(f.cache.dirtied_when(), None, "a read dirties nothing");
    env.write(&mut s, sh, 1).unwrap();
    assert_eq!(f.cache.dirtied_when(), Some(100));
    NOW.store(150, Ordering::Relaxed);
    env.write(&mut s, sh + PAGE, 2).unwrap();
    assert_eq!(f.cache.dirtied_when(), Some(100), "the oldest store counts");
    crate::pagecache::folio_mkclean(&env.mm, &s, &f.cache);
    f.cache
        .writeback(&env.mm, &VecStore::new(Vec::new()))
        .unwrap();
    assert_eq!(f.cache.dirtied_when(), None);
    NOW.store(200, Ordering::Relaxed);
    env.write(&mut s, sh, 3).unwrap();
    assert_eq!(
        f.cache.dirtied_when(),
        Some(200),
        "write-notify fault stamps"
    );
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// Fault-around (`faultaround.rs`, Linux `filemap_map_pages`): a read fault maps the cached
/// neighbours in its 16-page window read-only with no further fault, leaves pages not cached
/// and pages past the window alone, and maps nothing with the window set to one page.
#[test]
fn a_read_fault_maps_its_cached_neighbours() {
    use crate::faultaround::{set_fault_around_bytes, DEFAULT_FAULT_AROUND_BYTES};
    let env = Env::new();
    let f = test_file(40 * PAGE_SIZE);
    // Cache pages 0..40 but 18.
    let mut buf = vec![0u8; PAGE_SIZE];
    let store = VecStore::new(pattern(40 * PAGE_SIZE, 7));
    for i in (0..40).filter(|&i| i != 18) {
        f.cache
            .read_at(&env.mm, &store, i * PAGE, &mut buf)
            .unwrap();
    }
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 40, true);
    let around = env.mm.stats().fault_around_pages;
    env.read(&mut s, sh + 20 * PAGE).unwrap();
    assert_eq!(env.mm.stats().file_faults, 1);
    // The window is aligned on the virtual address, as Linux's.
    let win = (sh.as_u64() + 20 * PAGE) & !(16 * PAGE - 1);
    let first = (win - sh.as_u64()) / PAGE;
    let window = first..first + 16;
    assert!(window.contains(&18) && window.contains(&17) && first + 16 < 40);
    assert_eq!(
        env.mm.stats().fault_around_pages - around,
        14,
        "16 but the faulting page and the uncached 18"
    );
    for i in window.clone().filter(|&i| i != 18) {
        let pte = env.pte(&s, sh + i * PAGE);
        assert!(!pte.is_writable(), "page {i} read-only (write-notify)");
        assert_eq!(pte.frame(), f.cache.cache_frame_for_test(i).unwrap());
    }
    assert!(
        s.translate(&env.mm, sh + (first + 16) * PAGE).is_none(),
        "past the window"
    );
    assert!(s.translate(&env.mm, sh + 18 * PAGE).is_none(), "not cached");
    env.read(&mut s, sh + (first + 15) * PAGE).unwrap();
    assert_eq!(
        env.mm.stats().file_faults,
        1,
        "a neighbour reads without a fault"
    );
    // The first store to a neighbour is write-notify's fault, which dirties it.
    env.write(&mut s, sh + 17 * PAGE, 9).unwrap();
    assert!(env
        .flags(f.cache.cache_frame_for_test(17).unwrap())
        .contains(FrameFlags::DIRTY));
    set_fault_around_bytes(PAGE);
    env.read(&mut s, sh + 39 * PAGE).unwrap();
    assert!(s.translate(&env.mm, sh + 38 * PAGE).is_none(), "turned off");
    set_fault_around_bytes(DEFAULT_FAULT_AROUND_BYTES);
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// The write-back `write(2)` path (`write_begin_end`) and the batched writeback the kernel
/// drives (`begin_writeback`, its own I/O, `end_writeback`): the store's `begin` is asked for
/// the whole range before any byte is copied and its short count cuts the write; pages are
/// dirty until writeback; a batch holds each page clean, `WRITEBACK` and referenced, and a
/// page that failed is dirty again at the end.
#[test]
fn buffered_writes_dirty_pages_and_batches_clean_them() {
    let env = Env::new();
    let store = VecStore::new(pattern(PAGE_SIZE, 3));
    let cache = FileCache::new(PAGE);
    let data = pattern(3 * PAGE_SIZE, 4);
    let mut asked = Vec::new();
    let n = cache
        .write_begin_end(&env.mm, &store, 100, &data, |len| {
            asked.push(len);
            Ok(len - 50)
        })
        .unwrap();
    assert_eq!(asked, vec![3 * PAGE]);
    assert_eq!(n, 3 * PAGE_SIZE - 50, "cut where the store stopped");
    assert_eq!(cache.size(), 100 + 3 * PAGE - 50);
    assert_eq!(
        *store.reads.borrow(),
        vec![0],
        "the partial stored page read first"
    );
    assert!(
        store.writes.borrow().is_empty(),
        "nothing stored before writeback"
    );
    assert_eq!(cache.dirty_pages(&env.mm), 4);
    let refs = |i: u64| {
        env.mm
            .frames()
            .meta(cache.cache_frame_for_test(i).unwrap())
            .refcount()
    };
    let batch = cache.begin_writeback(&env.mm).unwrap();
    assert_eq!(
        batch.pages.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(cache.dirty_pages(&env.mm), 0);
    assert_eq!(refs(1), 2, "the batch's reference");
    assert!(env.flags(batch.pages[1].1).contains(FrameFlags::WRITEBACK));
    assert_eq!(cache.drop_clean(&env.mm), 0, "pages under writeback stay");
    cache.end_writeback(&env.mm, batch, |i| i == 2);
    assert_eq!(refs(1), 1);
    assert!(!env
        .flags(cache.cache_frame_for_test(1).unwrap())
        .contains(FrameFlags::WRITEBACK));
    assert_eq!(
        cache.dirty_pages(&env.mm),
        1,
        "the failed page is dirty again"
    );
    let e = cache.write_begin_end(&env.mm, &store, 0, b"x", |_| Err(MmError::NoSpc));
    assert_eq!(e, Err(MmError::NoSpc));
    assert_eq!(cache.writeback(&env.mm, &store).unwrap(), 1);
    let mut back = vec![0u8; n];
    cache.read_at(&env.mm, &store, 100, &mut back).unwrap();
    assert!(back == data[..n], "the bytes read back");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// Regression: a buffered write of several pages when memory is short. Each page's allocation
/// may reclaim the cache's clean pages, and the pages the same write allocated before it are
/// still clean until the bytes are copied: they must be held, or one frame ends up under two
/// indices and a page's bytes land in another's (the `t_pagecache big` corruption).
#[test]
fn a_multi_page_write_under_pressure_keeps_its_own_pages() {
    let env = Env::with_frames(96);
    let store = VecStore::new(Vec::new());
    let cache = FileCache::new(0);
    let mut i = 0u64;
    // Fill memory with dirty cache pages but one frame: reclaim can free nothing but the
    // write's own clean pages.
    while env.mm.frames().free_frames() > 1 {
        let n = cache
            .write_at(&env.mm, &store, i * PAGE, &pattern(PAGE_SIZE, i as u8))
            .unwrap();
        assert_eq!(n, PAGE_SIZE);
        i += 1;
    }
    let data = pattern(8 * PAGE_SIZE, 0x5a);
    let at = i * PAGE;
    // Only one page can be had: the write is cut to it, every byte in its place.
    let n = cache
        .write_begin_end(&env.mm, &store, at, &data, Ok)
        .unwrap();
    assert_eq!(n, PAGE_SIZE, "cut at the page memory could not hold");
    let data = &data[..n];
    let mut back = vec![0u8; data.len()];
    cache.read_at(&env.mm, &store, at, &mut back).unwrap();
    assert!(back == data, "each page holds its own bytes");
    cache.writeback(&env.mm, &store).unwrap();
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A fault that may retry (the kernel's page-fault handler) does not read a missing file page
/// under the address space's lock: it answers `Retry`; the fill then runs with no lock
/// held (`filemap_fault_fill`), and the fault again maps the page. A page wholly past the end
/// is `SIGBUS` before any of that.
#[test]
fn a_fault_that_may_retry_leaves_the_fill_to_its_caller() {
    use crate::error::{FaultError, SegvReason};
    use crate::fault::handle_x86_page_fault_retry;
    let env = Env::new();
    let f = test_file(PAGE_SIZE + 10);
    let mut s = env.space();
    let va = map_file(&env, &mut s, &f, 3, false);
    let read = 0b100;
    assert_eq!(
        handle_x86_page_fault_retry(&env.mm, &mut s, va.as_u64(), read),
        Err(FaultError::Retry)
    );
    assert_eq!(f.cache.cached_pages(), 0, "nothing read under the lock");
    let file: &dyn MappedFile = &*f;
    crate::pagecache::filemap_fault_fill(&env.mm, file, 0, false).unwrap();
    assert_eq!(f.cache.fills(), 1);
    handle_x86_page_fault_retry(&env.mm, &mut s, va.as_u64(), read).unwrap();
    let want = pattern(PAGE_SIZE, 7);
    assert_eq!(
        env.read(&mut s, va).unwrap(),
        u64::from_le_bytes(want[..8].try_into().unwrap())
    );
    assert_eq!(
        handle_x86_page_fault_retry(&env.mm, &mut s, va.as_u64() + 2 * PAGE, read),
        Err(FaultError::Segv(SegvReason::BeyondEof))
    );
    assert_eq!(f.cache.fills(), 1);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// The write-notify fault of the kernel's page-fault handler (one that may retry) never calls
/// the filesystem with the page-table lock held (Linux `do_page_mkwrite` after
/// `VM_FAULT_RETRY`): a store to a clean page that needs blocks answers `Retry`, on an empty
/// PTE and on a write-protected one alike, without asking the file; the retry's
/// `filemap_fault_fill(write)` asks it, allowed to sleep, with the page locked; the fault run
/// again dirties the page and maps it writable with no second call. A full store is the
/// store's `SIGBUS` from the retry, the page left clean and read-only.
#[test]
fn a_write_notify_fault_that_may_retry_calls_the_file_unlocked() {
    use crate::fault::handle_x86_page_fault_retry;
    use core::sync::atomic::Ordering;
    let env = Env::new();
    let f = test_file(2 * PAGE_SIZE);
    let file: &dyn MappedFile = &*f;
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 2, true);
    let write = 0b110;
    // The page is cached first (the read fault's own retry), so only the mkwrite is left.
    crate::pagecache::filemap_fault_fill(&env.mm, file, 0, false).unwrap();
    assert_eq!(
        handle_x86_page_fault_retry(&env.mm, &mut s, sh.as_u64(), write),
        Err(FaultError::Retry),
        "a store to a page without blocks retries"
    );
    assert!(
        f.mkwrites.lock().is_empty(),
        "no filesystem call under the PTL"
    );
    crate::pagecache::filemap_fault_fill(&env.mm, file, 0, true).unwrap();
    assert_eq!(*f.mkwrites.lock(), vec![(0, PAGE_SIZE)]);
    assert_eq!(f.mkwrites_asleep.load(Ordering::Relaxed), 1, "asleep");
    let page0 = f.cache.cache_frame_for_test(0).unwrap();
    assert!(!env.mm.frames().meta(page0).test(FrameFlags::LOCKED));
    handle_x86_page_fault_retry(&env.mm, &mut s, sh.as_u64(), write).unwrap();
    assert!(env.pte(&s, sh).is_writable());
    assert!(env.flags(page0).contains(FrameFlags::DIRTY));
    // Cleaned and write-protected: the next store's write-notify fault needs no retry.
    crate::pagecache::folio_mkclean(&env.mm, &s, &f.cache);
    f.cache
        .writeback(&env.mm, &VecStore::new(Vec::new()))
        .unwrap();
    handle_x86_page_fault_retry(&env.mm, &mut s, sh.as_u64(), write).unwrap();
    assert_eq!(f.mkwrites.lock().len(), 1);
    // A read-mapped page (the write-protect path), with the store full.
    let p1 = sh + PAGE;
    env.read(&mut s, p1).unwrap();
    f.full.store(true, Ordering::Relaxed);
    assert_eq!(
        handle_x86_page_fault_retry(&env.mm, &mut s, p1.as_u64(), write),
        Err(FaultError::Retry)
    );
    assert_eq!(
        crate::pagecache::filemap_fault_fill(&env.mm, file, 1, true),
        Err(crate::pagecache::FileFault::NoSpace),
        "ENOSPC at page_mkwrite: the store's SIGBUS"
    );
    let page1 = f.cache.cache_frame_for_test(1).unwrap();
    assert!(!env.flags(page1).contains(FrameFlags::DIRTY));
    assert!(!env.flags(page1).contains(FrameFlags::LOCKED));
    assert!(!env.pte(&s, p1).is_writable(), "still read-only");
    f.full.store(false, Ordering::Relaxed);
    crate::pagecache::filemap_fault_fill(&env.mm, file, 1, true).unwrap();
    handle_x86_page_fault_retry(&env.mm, &mut s, p1.as_u64(), write).unwrap();
    assert!(env.pte(&s, p1).is_writable());
    assert_eq!(f.mkwrites_asleep.load(Ordering::Relaxed), 2);
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A write-notify fault on a page that truncation took out of the cache before the PTE that
/// maps it was zapped (ftruncate zaps after cutting the cache, and a regrowth may cache a new
/// page at the index meanwhile) never answers `Retry`: the retry's fill works on the cache's
/// new page, so the stale PTE would retry forever. It is `SIGBUS` (the page is no longer the
/// file's), with no call to the filesystem for it.
#[test]
fn a_write_fault_on_a_truncated_page_not_yet_unmapped_does_not_retry() {
    use crate::fault::handle_x86_page_fault_retry;
    let env = Env::new();
    let f = test_file(PAGE_SIZE);
    let file: &dyn MappedFile = &*f;
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 1, true);
    let write = 0b110;
    crate::pagecache::filemap_fault_fill(&env.mm, file, 0, false).unwrap();
    env.read(&mut s, sh).unwrap();
    let stale = f.cache.cache_frame_for_test(0).unwrap();
    // Cut and grown again, the zap not run yet: the PTE still maps the stale frame.
    f.cache.set_size(&env.mm, 0);
    f.cache.set_size(&env.mm, PAGE);
    assert_eq!(env.pte(&s, sh).frame(), stale);
    let mut retries = 0;
    let result = loop {
        match handle_x86_page_fault_retry(&env.mm, &mut s, sh.as_u64(), write) {
            Err(FaultError::Retry) if retries < 5 => {
                retries += 1;
                crate::pagecache::filemap_fault_fill(&env.mm, file, 0, true).unwrap();
            }
            r => break r,
        }
    };
    assert_eq!(retries, 0, "the stale page never answers Retry");
    assert_eq!(result, Err(FaultError::Segv(SegvReason::BeyondEof)));
    assert!(
        !env.pte(&s, sh).is_writable(),
        "the stale page stays read-only"
    );
    assert!(
        f.mkwrites.lock().is_empty(),
        "no blocks asked for a stale page"
    );
    crate::pagecache::unmap_mapping_range(&env.mm, &s, &f.cache, 0);
    env.write(&mut s, sh, 1).unwrap();
    assert_eq!(
        Some(env.pte(&s, sh).frame()),
        f.cache.cache_frame_for_test(0),
        "the cache's page once unmapped"
    );
    assert!(env.pte(&s, sh).is_writable());
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// Issue 17: evicting a large clean cache (unmount, the last close of an unlinked file) puts
/// its frames on the free list in batches, one lock acquisition per `FREE_BATCH` frames, not
/// one per page (before: 200 for 200 pages).
#[test]
fn evicting_a_large_cache_frees_in_batches() {
    use crate::frame::FREE_LIST_LOCKS;
    let env = Env::new();
    let pages = 200;
    let store = VecStore::new(pattern(pages * PAGE_SIZE, 8));
    let cache = FileCache::new((pages * PAGE_SIZE) as u64);
    let mut buf = vec![0u8; pages * PAGE_SIZE];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    assert_eq!(env.mm.stats().file_pages, pages as u64);
    let free = env.mm.frames().free_frames();
    let before = FREE_LIST_LOCKS.with(|n| n.get());
    cache.evict(&env.mm);
    let locks = FREE_LIST_LOCKS.with(|n| n.get()) - before;
    assert_eq!(
        env.mm.frames().free_frames(),
        free + pages,
        "every page freed"
    );
    assert_eq!(env.mm.stats().file_pages, 0);
    assert_eq!(
        locks,
        pages.div_ceil(crate::freebatch::FREE_BATCH) as u64,
        "batched"
    );
    env.finish(Vec::new());
}

/// pcache3 (Linux `populate_vma_page_range`): mlock of a shared writable file mapping
/// populates it for reading: every page mapped, read-only, none dirty, no `page_mkwrite`; the
/// first store still takes write-notify's fault. A private writable one gets its own copies.
/// Before, populate faulted every writable mapping for writing and dirtied the whole file.
#[test]
fn mlock_populates_a_shared_file_mapping_clean() {
    use crate::mlock::LockMode;
    let env = Env::new();
    let f = test_file(3 * PAGE_SIZE);
    let mut s = env.space();
    let sh = map_file(&env, &mut s, &f, 3, true);
    s.mlock(&env.mm, sh, 3 * PAGE_SIZE, LockMode::Populate, u64::MAX)
        .unwrap();
    for i in 0..3 {
        let pte = s.translate(&env.mm, sh + i * PAGE).expect("populated");
        assert!(!pte.is_writable(), "page {i} mapped read-only");
    }
    assert_eq!(env.mm.stats().file_dirty, 0, "nothing dirtied");
    assert!(f.mkwrites.lock().is_empty(), "no page_mkwrite");
    env.write(&mut s, sh + PAGE, 1).unwrap();
    assert_eq!(env.mm.stats().file_dirty, 1, "the store dirties its page");
    let pv = map_file(&env, &mut s, &f, 3, false);
    s.mlock(&env.mm, pv, 3 * PAGE_SIZE, LockMode::Populate, u64::MAX)
        .unwrap();
    for i in 0..3 {
        assert!(
            env.flags(env.frame(&s, pv + i * PAGE))
                .contains(FrameFlags::ANON_EXCLUSIVE),
            "private page {i} copied"
        );
    }
    assert_eq!(env.mm.stats().file_dirty, 1);
    env.check(&[&s]);
    s.exit(&env.mm);
    f.cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A GUP hold that lets the space go for fills (as the kernel's O_DIRECT, vmsplice and
/// io_uring holds do), where reclaim drops the page each fill just read before the walk looks
/// again: every round fills, none sticks.
struct UndoingHold<'a> {
    aspace: &'a mut AddressSpace,
    file: Arc<TestFile>,
    fills: usize,
    killed_after: usize,
}

impl crate::gup::MmapHold<crate::host::HostArch> for UndoingHold<'_> {
    fn aspace(&mut self) -> &mut AddressSpace {
        self.aspace
    }

    fn resched(&mut self, _: &Mm<crate::host::HostArch>) -> bool {
        false
    }

    fn can_unlock(&self) -> bool {
        true
    }

    fn unlocked(&mut self, mm: &Mm<crate::host::HostArch>, f: &mut dyn FnMut()) {
        f();
        self.fills += 1;
        assert_eq!(self.file.cache.drop_clean(mm), 1, "the fill's page, undone");
    }

    fn fatal_signal_pending(&self) -> bool {
        self.fills >= self.killed_after
    }
}

/// GUP's fill-retry rounds drop the address-space lock, so reclaim (or `drop_caches`, or a
/// hole punch) may undo each fill: that is not the invariant "the fault path resolves but the
/// page never becomes followable" and must not panic (a user can drive it through O_DIRECT,
/// vmsplice, io_uring registration). The walk gives up with `EFAULT` after a bounded number of
/// fills, or at once when the caller is being killed (Linux `fatal_signal_pending`).
#[test]
fn gup_whose_every_fill_is_undone_fails_instead_of_panicking() {
    for killed_after in [usize::MAX, 3] {
        let env = Env::new();
        let f = test_file(2 * PAGE_SIZE);
        let mut s = env.space();
        let va = map_file(&env, &mut s, &f, 2, false);
        let mut hold = UndoingHold {
            aspace: &mut s,
            file: f.clone(),
            fills: 0,
            killed_after,
        };
        let mut slot = [None];
        let got = crate::gup::user_pages_held(
            &env.mm,
            &mut hold,
            va,
            FollFlags::NONE,
            true,
            false,
            &mut slot,
        );
        assert_eq!(got, Err(MmError::Fault), "killed_after {killed_after}");
        assert!(slot[0].is_none());
        let fills = hold.fills;
        if killed_after == 3 {
            assert_eq!(fills, 3, "stops at the first round that sees the kill");
        } else {
            assert!(
                fills > 16,
                "fill rounds are not no-progress rounds: {fills}"
            );
        }
        assert_eq!(f.cache.cached_pages(), 0);
        s.exit(&env.mm);
        f.cache.evict(&env.mm);
        env.finish(Vec::new());
    }
}

/// A file grown past its partial last page (ftruncate, a write or a direct write past the
/// end; Linux `pagecache_isize_extended`): that page's blocks covered only the bytes below the
/// old size, so the next store through a shared mapping asks the file again for the whole
/// page (allocating the new bytes' blocks now, or `SIGBUS` on a full disk) instead of leaving
/// them to writeback, where `ENOSPC` loses the store.
#[test]
fn growing_past_a_partial_last_page_asks_page_mkwrite_again() {
    for grow in 0..2 {
        let env = Env::new();
        let f = test_file(PAGE_SIZE / 2);
        let mut s = env.space();
        let sh = map_file(&env, &mut s, &f, 2, true);
        env.write(&mut s, sh, 1).unwrap();
        assert_eq!(*f.mkwrites.lock(), vec![(0, PAGE_SIZE / 2)]);
        crate::pagecache::folio_mkclean(&env.mm, &s, &f.cache);
        f.cache
            .writeback(&env.mm, &VecStore::new(Vec::new()))
            .unwrap();
        if grow == 0 {
            f.cache.set_size(&env.mm, 2 * PAGE);
        } else {
            f.cache.grow_size(&env.mm, 2 * PAGE);
        }
        env.write(&mut s, sh + 3000, 2).unwrap();
        assert_eq!(
            *f.mkwrites.lock(),
            vec![(0, PAGE_SIZE / 2), (0, PAGE_SIZE)],
            "grow {grow}: the store past the old end asked for the page's new blocks"
        );
        // Growing again from a whole page changes nothing for it.
        crate::pagecache::folio_mkclean(&env.mm, &s, &f.cache);
        f.cache
            .writeback(&env.mm, &VecStore::new(Vec::new()))
            .unwrap();
        f.cache.set_size(&env.mm, 3 * PAGE);
        env.write(&mut s, sh + 8, 3).unwrap();
        assert_eq!(
            f.mkwrites.lock().len(),
            2,
            "grow {grow}: page 0 has all its blocks"
        );
        env.check(&[&s]);
        s.exit(&env.mm);
        f.cache.evict(&env.mm);
        env.finish(Vec::new());
    }
}

/// pcfix4 (Linux `pagecache_isize_extended`'s `folio_mkclean`): a dirty partial last page,
/// mapped writable, that the size grows past is write-protected in its shared mappings
/// (`take_isize_extended` names it, `pagecache_isize_extended` protects it per address
/// space), and its next store faults into `page_mkwrite` for the bytes now inside the size,
/// though the page is dirty. Before, the store went through the writable PTE (or, faulting,
/// took the dirty page's shortcut) and those bytes' blocks came only at writeback, where
/// `ENOSPC` lost them.
#[test]
fn growing_past_a_dirty_partial_last_page_write_protects_it_for_page_mkwrite() {
    for grow in 0..2 {
        let env = Env::new();
        let f = test_file(PAGE_SIZE / 2);
        let mut s = env.space();
        let sh = map_file(&env, &mut s, &f, 2, true);
        env.write(&mut s, sh, 1).unwrap();
        assert_eq!(*f.mkwrites.lock(), vec![(0, PAGE_SIZE / 2)]);
        // Dirty and writable; the size grows past it.
        if grow == 0 {
            f.cache.set_size(&env.mm, 2 * PAGE);
        } else {
            f.cache.grow_size(&env.mm, 2 * PAGE);
        }
        assert_eq!(f.cache.take_isize_extended(), Some(0), "grow {grow}");
        assert_eq!(f.cache.take_isize_extended(), None, "taken once");
        crate::pagecache::pagecache_isize_extended(&env.mm, &s, &f.cache, 0);
        env.write(&mut s, sh + 3000, 2).unwrap();
        assert_eq!(
            *f.mkwrites.lock(),
            vec![(0, PAGE_SIZE / 2), (0, PAGE_SIZE)],
            "grow {grow}: the store past the old end asked for the page's new blocks"
        );
        // The page has them now: a further store asks nothing.
        env.write(&mut s, sh + 16, 3).unwrap();
        assert_eq!(f.mkwrites.lock().len(), 2, "grow {grow}");
        // A growth from a whole page names no page.
        f.cache.set_size(&env.mm, 3 * PAGE);
        assert_eq!(f.cache.take_isize_extended(), None, "grow {grow}");
        env.check(&[&s]);
        s.exit(&env.mm);
        f.cache.evict(&env.mm);
        env.finish(Vec::new());
    }
}
