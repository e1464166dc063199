//! Dirty throttling for buffered writes (Linux `balance_dirty_pages`, much simplified): a
//! writer that finds more file pages dirty than the background threshold wakes the flusher to
//! write back (`writeback::start_background_writeback`); one that finds more than the dirty
//! limit (`/proc/sys/vm/dirty_ratio` percent of memory, 20 by default, or `dirty_bytes`:
//! `writeback::dirty_thresholds`) writes its own file back before its `write(2)` returns, so a
//! fast writer cannot fill memory with pages the flusher has not caught up with (they cannot
//! be reclaimed until written). Linux sleeps the writer while the flusher works, paced per
//! device; here the writer does the writeback itself. Checked once every [`RATELIMIT`] pages
//! written (Linux's `ratelimit_pages`), so the common write pays one atomic add.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_mm::pagecache::FileCache;

use crate::memory;

/// Pages written between two looks at the dirty count (Linux's `ratelimit_pages` floor).
const RATELIMIT: u64 = 32;

static PAGES: AtomicU64 = AtomicU64::new(0);
/// Writers that had to write back (mmstat's `dirty_throttled`).
pub static THROTTLED: AtomicU64 = AtomicU64::new(0);

/// After a buffered write of `bytes` to `cache` (inode `ino`): past the background threshold,
/// start the flusher; past the dirty limit, write it back.
pub fn balance_dirty_pages(cache: &FileCache, ino: u32, bytes: usize) {
    let pages = (bytes as u64).div_ceil(4096);
    let before = PAGES.fetch_add(pages, Ordering::Relaxed);
    if before / RATELIMIT == (before + pages) / RATELIMIT {
        return;
    }
    let stats = memory::mm().stats();
    let (background, limit) = super::writeback::dirty_thresholds(stats.usable_frames);
    if stats.file_dirty <= background {
        return;
    }
    super::writeback::start_background_writeback();
    if stats.file_dirty <= limit {
        return;
    }
    THROTTLED.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = super::ext2_cache::writeback(cache, ino) {
        warn!("ext2: throttled writeback of inode {ino} failed: {e:?}");
    }
}
