//! The page lock of page-cache fills (`FrameFlags::LOCKED`, Linux `folio_lock`): a page missing
//! from the cache is read from the store once, with no cache spin lock held, however many tasks
//! want it; the others wait for its lock; a failed read reaches every waiter; truncation and
//! writeback take the lock. Threads stand for tasks on other CPUs; a gated store stands for a
//! disk read that takes time.

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::pagecache::{BackingStore, FileCache};

/// A store whose reads block until the gate opens, counting reads; `fail` makes them fail with
/// [`STORE_ERROR`].
struct GatedStore {
    data: Vec<u8>,
    open: AtomicBool,
    reads: AtomicUsize,
    fail: AtomicBool,
}

/// The gated store's failure: an error the cache itself never makes up (the kernel's store
/// says `EIO`), so a caller that gets it knows a store read failed for it.
const STORE_ERROR: MmError = MmError::Again;

impl GatedStore {
    fn new(len: usize) -> GatedStore {
        GatedStore {
            data: (0..len).map(|i| (i * 13 + 5) as u8).collect(),
            open: AtomicBool::new(false),
            reads: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
        }
    }

    /// Waits until some read entered the store (it holds its page's lock, not the cache's).
    fn wait_for_reader(&self) {
        while self.reads.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
    }
}

impl BackingStore for GatedStore {
    type Error = MmError;

    fn read_page(&self, index: u64, buf: &mut [u8], _: bool) -> Result<(), MmError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(STORE_ERROR);
        }
        let start = index as usize * PAGE_SIZE;
        buf.fill(0);
        let n = self.data.len().saturating_sub(start).min(buf.len());
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(())
    }

    fn write_page(&self, _: u64, _: &[u8]) -> Result<(), MmError> {
        Ok(())
    }
}

/// The waiter hook as the kernel's behaves: a waiter sleeps until an unlock wakes it (a lost
/// or blocked wake is a panic after 5 s, not a hang), installed for every test of the crate
/// (its semantics are the default spin's, with the kernel's wake-up obligation).
fn sleeping_waiter() {
    use std::sync::{Condvar, Mutex, Once};
    static GENERATION: Mutex<u64> = Mutex::new(0);
    static WOKEN: Condvar = Condvar::new();
    static INSTALL: Once = Once::new();
    fn wait(_: usize, locked: &dyn Fn() -> bool, _: bool) {
        let mut generation = GENERATION.lock().unwrap();
        while locked() {
            let seen = *generation;
            let (g, timeout) = WOKEN
                .wait_timeout_while(generation, Duration::from_secs(5), |g| *g == seen)
                .unwrap();
            assert!(
                !timeout.timed_out(),
                "a page-lock waiter was not woken by the unlock"
            );
            generation = g;
        }
    }
    fn wake(_: usize) {
        *GENERATION.lock().unwrap() += 1;
        WOKEN.notify_all();
    }
    INSTALL.call_once(|| {
        crate::pagecache::set_page_waiter(crate::pagecache::PageWaiter { wait, wake })
    });
}

/// Gives the other threads time to finish if they are not waiting (a wrong "waits" verdict
/// would need them to be descheduled this long).
fn settle() {
    std::thread::sleep(Duration::from_millis(50));
}

/// Two readers of one missing page: the first fills it (the cache's spin lock is free during
/// the read: a third reader of another page is not held up), the second waits for the page
/// lock until the fill ends; both get the store's bytes, and the store was read once.
#[test]
fn concurrent_readers_fill_a_page_once_and_wait_for_its_lock() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(2 * PAGE_SIZE);
    let cache = FileCache::new(2 * PAGE);
    let second_done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            let mut buf = vec![0u8; 100];
            cache.read_at(&env.mm, &store, 10, &mut buf).map(|_| buf)
        });
        store.wait_for_reader();
        let second = scope.spawn(|| {
            let mut buf = vec![0u8; 100];
            let r = cache.read_at(&env.mm, &store, 10, &mut buf).map(|_| buf);
            second_done.store(true, Ordering::SeqCst);
            r
        });
        settle();
        assert!(
            !second_done.load(Ordering::SeqCst),
            "the second reader used the page before its fill ended"
        );
        // The cache's spin lock is not held across the read: its size is readable.
        assert_eq!(cache.size(), 2 * PAGE);
        let frame = cache.cache_frame_for_test(0).unwrap();
        assert!(env.mm.frames().meta(frame).test(FrameFlags::LOCKED));
        assert!(!env.mm.frames().meta(frame).test(FrameFlags::UPTODATE));
        store.open.store(true, Ordering::SeqCst);
        let want = &store.data[10..110];
        assert_eq!(first.join().unwrap().unwrap(), want);
        assert_eq!(second.join().unwrap().unwrap(), want);
    });
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        1,
        "one read of the page"
    );
    assert_eq!(cache.fills(), 1);
    let frame = cache.cache_frame_for_test(0).unwrap();
    let meta = env.mm.frames().meta(frame);
    assert!(meta.test(FrameFlags::UPTODATE) && !meta.test(FrameFlags::LOCKED));
    assert_eq!(meta.refcount(), 1, "the readers' references are gone");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A failed fill: the filler gets the store's error and the page leaves the cache (no frame
/// leaks); the waiter looks the page up again and reads it itself (Linux
/// `filemap_update_page`), getting the store's error too while it fails; the next reader reads
/// the store again.
#[test]
fn a_failed_fill_fails_every_waiter_and_removes_the_page() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(PAGE_SIZE);
    store.fail.store(true, Ordering::SeqCst);
    let cache = FileCache::new(PAGE);
    std::thread::scope(|scope| {
        let read = || {
            let mut buf = vec![0u8; 8];
            cache.read_at(&env.mm, &store, 0, &mut buf)
        };
        let first = scope.spawn(read);
        store.wait_for_reader();
        let second = scope.spawn(read);
        settle();
        store.open.store(true, Ordering::SeqCst);
        assert_eq!(first.join().unwrap(), Err(STORE_ERROR));
        assert_eq!(
            second.join().unwrap(),
            Err(STORE_ERROR),
            "the waiter's own read failed"
        );
    });
    assert_eq!(
        store.reads.load(Ordering::SeqCst),
        2,
        "the waiter read the page itself"
    );
    assert_eq!(cache.cached_pages(), 0);
    assert_eq!(env.mm.stats().file_pages, 0);
    store.fail.store(false, Ordering::SeqCst);
    let mut buf = vec![0u8; 8];
    assert_eq!(cache.read_at(&env.mm, &store, 0, &mut buf), Ok(8));
    assert_eq!(buf, store.data[..8]);
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// Truncation takes the lock of each page it cuts: it waits for a fill in progress rather
/// than freeing the page under it; the reader that started first gets its bytes.
#[test]
fn truncation_waits_for_a_page_being_filled() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(2 * PAGE_SIZE);
    let cache = FileCache::new(2 * PAGE);
    let truncated = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut buf = vec![0u8; 16];
            cache.read_at(&env.mm, &store, PAGE, &mut buf).map(|_| buf)
        });
        store.wait_for_reader();
        let truncate = scope.spawn(|| {
            cache.set_size(&env.mm, 100);
            truncated.store(true, Ordering::SeqCst);
        });
        settle();
        assert!(
            !truncated.load(Ordering::SeqCst),
            "truncation cut a page being filled"
        );
        store.open.store(true, Ordering::SeqCst);
        assert_eq!(
            reader.join().unwrap().unwrap(),
            store.data[PAGE_SIZE..PAGE_SIZE + 16]
        );
        truncate.join().unwrap();
    });
    assert_eq!(cache.size(), 100);
    assert_eq!(cache.cached_pages(), 0);
    assert_eq!(env.mm.stats().file_pages, 0);
    env.finish(Vec::new());
}

/// Writeback takes each dirty page's lock: the background flusher skips a page someone holds
/// (it stays dirty), a sync writeback waits for it.
#[test]
fn writeback_skips_or_waits_for_a_locked_dirty_page() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(0);
    store.open.store(true, Ordering::SeqCst);
    let cache = FileCache::new(0);
    assert_eq!(cache.write_at(&env.mm, &store, 0, b"dirty"), Ok(5));
    let frame = cache.cache_frame_for_test(0).unwrap();
    let meta = env.mm.frames().meta(frame);
    assert!(meta.test_and_set(FrameFlags::LOCKED));
    let batch = cache.try_begin_writeback(&env.mm).unwrap().unwrap();
    assert!(batch.pages.is_empty(), "the flusher took a locked page");
    cache.end_writeback(&env.mm, batch, |_| false);
    assert_eq!(cache.dirty_pages(&env.mm), 1);
    let begun = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sync = scope.spawn(|| {
            let batch = cache.begin_writeback(&env.mm).unwrap();
            begun.store(true, Ordering::SeqCst);
            batch
        });
        settle();
        assert!(
            !begun.load(Ordering::SeqCst),
            "a sync writeback did not wait for the page lock"
        );
        crate::pagecache::unlock_page(&env.mm, frame);
        let batch = sync.join().unwrap();
        assert_eq!(batch.pages, vec![(0, frame)]);
        cache.end_writeback(&env.mm, batch, |_| false);
    });
    assert_eq!(cache.dirty_pages(&env.mm), 0);
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A buffered write holds its pages' locks until they are `UPTODATE`: a reader of a page a
/// write creates (a whole-page overwrite, not read from the store) never sees it half-made,
/// and a write cut short (a full store) reads the pages it did not cover instead of leaving
/// zeroes in the cache.
#[test]
fn a_short_write_reads_the_whole_pages_it_did_not_cover() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(2 * PAGE_SIZE);
    store.open.store(true, Ordering::SeqCst);
    let cache = FileCache::new(2 * PAGE);
    let data = vec![0xaau8; 2 * PAGE_SIZE];
    // The store takes one page of the two.
    let n = cache
        .write_begin_end(&env.mm, &store, 0, &data, |_| Ok::<u64, MmError>(PAGE))
        .unwrap();
    assert_eq!(n, PAGE_SIZE);
    let mut buf = vec![0u8; 2 * PAGE_SIZE];
    assert_eq!(
        cache.read_at(&env.mm, &store, 0, &mut buf),
        Ok(2 * PAGE_SIZE)
    );
    assert_eq!(buf[..PAGE_SIZE], data[..PAGE_SIZE]);
    assert_eq!(
        buf[PAGE_SIZE..],
        store.data[PAGE_SIZE..],
        "page 1 is the store's"
    );
    for index in 0..2 {
        let meta = env
            .mm
            .frames()
            .meta(cache.cache_frame_for_test(index).unwrap());
        assert!(meta.test(FrameFlags::UPTODATE) && !meta.test(FrameFlags::LOCKED));
    }
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A reader's thread, its result: the bytes read and the buffer.
type ReaderThread<'s> = std::thread::ScopedJoinHandle<'s, Result<(usize, Vec<u8>), MmError>>;

/// Puts page 1 of a two-page cache in the state of a page being filled (cached, `LOCKED`, not
/// `UPTODATE`) by a filler this test plays, and starts a reader of it, which waits.
fn reader_waiting_on_page_1<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    env: &'s Env,
    store: &'s GatedStore,
    cache: &'s FileCache,
) -> (crate::addr::PhysAddr, ReaderThread<'s>) {
    let mut buf = vec![0u8; 16];
    assert_eq!(cache.read_at(&env.mm, store, PAGE, &mut buf), Ok(16));
    let frame = cache.cache_frame_for_test(1).unwrap();
    let meta = env.mm.frames().meta(frame);
    meta.clear_flags(FrameFlags::UPTODATE);
    assert!(meta.test_and_set(FrameFlags::LOCKED));
    let reader = scope.spawn(move || {
        let mut buf = vec![0u8; 16];
        cache
            .read_at(&env.mm, store, PAGE, &mut buf)
            .map(|n| (n, buf))
    });
    settle();
    assert!(
        !reader.is_finished(),
        "the reader did not wait for the lock"
    );
    (frame, reader)
}

/// A page still cached but not `UPTODATE` after its lock was let go (its filler gave up
/// without removing it) is read by the waiter itself, not an error (`EFAULT`) for it.
#[test]
fn a_waiter_reads_a_cached_page_left_not_uptodate() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(2 * PAGE_SIZE);
    store.open.store(true, Ordering::SeqCst);
    let cache = FileCache::new(2 * PAGE);
    std::thread::scope(|scope| {
        let (frame, reader) = reader_waiting_on_page_1(scope, &env, &store, &cache);
        crate::pagecache::unlock_page(&env.mm, frame);
        let want = store.data[PAGE_SIZE..PAGE_SIZE + 16].to_vec();
        assert_eq!(reader.join().unwrap(), Ok((16, want)));
    });
    assert_eq!(store.reads.load(Ordering::SeqCst), 2, "one read each");
    let meta = env.mm.frames().meta(cache.cache_frame_for_test(1).unwrap());
    assert!(meta.test(FrameFlags::UPTODATE) && !meta.test(FrameFlags::LOCKED));
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// Truncated after the fill: truncation took the page's lock straight after its filler and
/// removed it; the waiter, finding it `UPTODATE` but no longer cached, looks again and finds
/// the file ending before it (a short read), not the removed page's stale bytes.
#[test]
fn a_waiter_of_a_page_truncated_after_its_fill_sees_the_new_end() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(2 * PAGE_SIZE);
    store.open.store(true, Ordering::SeqCst);
    let cache = FileCache::new(2 * PAGE);
    std::thread::scope(|scope| {
        let (frame, reader) = reader_waiting_on_page_1(scope, &env, &store, &cache);
        env.mm.frames().meta(frame).set_flags(FrameFlags::UPTODATE);
        cache.truncate_locked_for_test(&env.mm, 100);
        crate::pagecache::unlock_page(&env.mm, frame);
        let got = reader.join().unwrap();
        assert_eq!(got.map(|(n, _)| n), Ok(0), "the file ends at 100 now");
    });
    assert_eq!(cache.cached_pages(), 0, "page 1 was truncated away");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}

/// A fill that read the store before an `O_DIRECT` write changed it (`write_through`) or a
/// punched hole zeroed it (`zero_range`) holds its page's lock until its copy is in: the update
/// waits for the lock and then overwrites the page, so the fill's old bytes do not stay cached
/// (Linux does both with the folio locked). Without the lock the update landed first and the
/// fill's copy resurrected the old bytes.
#[test]
fn direct_writes_and_punched_holes_wait_for_a_fill_in_progress() {
    sleeping_waiter();
    for punch in [false, true] {
        let env = Env::new();
        let store = GatedStore::new(PAGE_SIZE);
        let cache = FileCache::new(PAGE);
        let new = vec![0xa5u8; 100];
        let updated = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let filler = scope.spawn(|| {
                let mut buf = vec![0u8; 1];
                cache.read_at(&env.mm, &store, 0, &mut buf)
            });
            store.wait_for_reader();
            let updater = scope.spawn(|| {
                if punch {
                    cache.zero_range(&env.mm, 50, 150);
                } else {
                    cache
                        .write_through(&env.mm, 50, &new, |d| Ok::<usize, MmError>(d.len()))
                        .unwrap();
                }
                updated.store(true, Ordering::SeqCst);
            });
            settle();
            let waited = !updated.load(Ordering::SeqCst);
            // The gate opens before any verdict, so a failure cannot leave the filler stuck.
            store.open.store(true, Ordering::SeqCst);
            filler.join().unwrap().unwrap();
            updater.join().unwrap();
            assert!(waited, "the update did not wait for the fill in progress");
        });
        let mut back = vec![0u8; PAGE_SIZE];
        cache.read_at(&env.mm, &store, 0, &mut back).unwrap();
        let want: &[u8] = if punch { &[0; 100] } else { &new };
        assert_eq!(&back[50..150], want, "punch={punch}: the update is cached");
        assert_eq!(&back[..50], &store.data[..50], "the rest is the store's");
        assert_eq!(store.reads.load(Ordering::SeqCst), 1);
        cache.evict(&env.mm);
        env.finish(Vec::new());
    }
}

/// An `O_DIRECT` write that grows the file grows the cache's size before it waits for a page
/// lock (`write_through`), so a truncation that runs while it waits is not undone: the store
/// grew and was cut meanwhile, and the cache must end at the cut too. Before, the size grew
/// after the walk over the cached pages and a truncation in between was lost (the cache said
/// the file still reached the write's end).
#[test]
fn a_truncation_while_a_direct_write_waits_for_a_page_lock_is_kept() {
    sleeping_waiter();
    let env = Env::new();
    let store = GatedStore::new(PAGE_SIZE);
    store.open.store(true, Ordering::SeqCst);
    let cache = FileCache::new(PAGE);
    let mut buf = vec![0u8; 1];
    cache.read_at(&env.mm, &store, 0, &mut buf).unwrap();
    let frame = cache.cache_frame_for_test(0).unwrap();
    assert!(env.mm.frames().meta(frame).test_and_set(FrameFlags::LOCKED));
    let new = vec![0xa5u8; 2 * PAGE_SIZE];
    let stored = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            cache.write_through(&env.mm, 0, &new, |d| {
                cache.grow_size(&env.mm, d.len() as u64);
                stored.store(true, Ordering::SeqCst);
                Ok::<usize, MmError>(d.len())
            })
        });
        while !stored.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        settle();
        // The writer waits for page 0's lock; the file is cut to its first page meanwhile
        // (the store first, then the cache: `ftruncate`).
        cache.set_size(&env.mm, PAGE);
        crate::pagecache::unlock_page(&env.mm, frame);
        assert_eq!(writer.join().unwrap(), Ok(2 * PAGE_SIZE));
    });
    assert_eq!(cache.size(), PAGE, "the truncation is kept");
    cache.evict(&env.mm);
    env.finish(Vec::new());
}
