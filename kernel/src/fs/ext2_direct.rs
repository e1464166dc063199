//! `O_DIRECT` reads and writes of ext2 files (Linux `ext2_direct_IO`): the device moves the
//! data straight between the caller's pinned pages and the file's blocks, bypassing the page
//! cache, which is kept coherent around it (Linux `kiocb_invalidate_pages` and
//! `filemap_write_and_wait_range`): the file's dirty cache pages are written back first, so
//! the blocks hold every earlier store; after a direct write, pages of the range still cached
//! (a mapping may hold them) get the written bytes, so no reader sees the old data.
//!
//! Order of locks: the user pages are taken once, before the filesystem lock (a fault on them
//! may read an ext2 file through the page cache, or run `page_mkwrite` on a clean page of a
//! shared ext2 mapping, both of which take the filesystem lock, which is not recursive); then
//! the filesystem lock is held across the block mapping and the transfers, so no truncate can
//! free a block the device is still moving. No GUP runs under that lock: each extent's request
//! gets extra holds on the pages pinned up front (`PinnedPage::dup`), never a second walk —
//! a present page may still fault (writeback write-protects a shared file page meanwhile).
//! The transfers sleep with only that sleeping lock held (and the file's writer lock, which
//! the caller holds around the whole write: `ext2_cache::InodeLock`, taken before the user
//! pages, since no fault path takes it).
//!
//! Alignment as Linux's `iomap_dio_rw` on a 512-byte-sector disk: the file position, and each
//! piece of the buffer's address and length, must be multiples of 512 (`EINVAL`). A buffer
//! that is not user memory (io_uring's registered buffers) goes through the page cache.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use cowlab_mm::pagecache::FileCache;
use cowlab_mm::pin::PinnedPage;
use cowlab_mm::pin::UnpinDirty;

use super::ext2_cache;
use super::ext2_mount::with_fs;
use super::file::Kiocb;
use super::iter::{IoIter, Piece};
use super::vda::{take_user_pages, SyncWait};
use crate::drivers::virtio_blk::{self, Op, Request, SECTOR};
use crate::errno::Errno;
use crate::memory;

const PAGE: u64 = 4096;
/// The most bytes of user memory taken for one round under the filesystem lock.
const CHUNK: usize = 64 * 1024;

/// Whether `iter` can go straight to the device (user memory), else the caller buffers it.
pub fn applies(iter: &mut IoIter) -> bool {
    matches!(iter.piece(1), Some(Piece::User(_)) | None)
}

/// A direct read (`op` Read) or write of `iter` at `io.pos` of inode `ino`, whose cache is
/// `cache`. Returns the bytes moved (short at end of file or after a failure that followed
/// some progress).
pub fn transfer(
    op: Op,
    ino: u32,
    cache: &FileCache,
    io: &mut Kiocb,
    iter: &mut IoIter,
) -> Result<usize, Errno> {
    if !(iter.alignment() | io.pos).is_multiple_of(SECTOR) {
        return Err(Errno::EINVAL);
    }
    ext2_cache::writeback(cache, ino)?;
    // A read stops at the end of the file, moving whole sectors (the bytes past the end in the
    // last block are zeroes on ext2) and counting only the file's bytes.
    let mut avail = usize::MAX;
    if op == Op::Read {
        let size = cache.size();
        if io.pos >= size {
            return Ok(0);
        }
        avail = (size - io.pos).min(usize::MAX as u64) as usize;
        iter.truncate(avail.next_multiple_of(SECTOR as usize));
    }
    let mut done = 0;
    while iter.count() > 0 {
        let (addr, len) = match iter.piece(CHUNK) {
            Some(Piece::User(s)) => (s.addr(), s.len()),
            _ => break,
        };
        let pos = io.pos + done as u64;
        let step = chunk(op, ino, cache, addr, len, pos);
        match step {
            Ok(n) => {
                iter.advance(n);
                done += n;
                if n < len {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    let done = done.min(avail);
    io.pos += done as u64;
    Ok(done)
}

/// One piece: `len` bytes of user memory at `addr`, file position `pos`.
fn chunk(
    op: Op,
    ino: u32,
    cache: &FileCache,
    addr: u64,
    len: usize,
    pos: u64,
) -> Result<usize, Errno> {
    let device = virtio_blk::root_device().ok_or(Errno::ENXIO)?;
    // Taken before the filesystem lock (see the module comment); the per-extent requests
    // below hold these same pages again rather than walk the page tables under the lock.
    let pages = take_user_pages(op, addr, len)?;
    let result = with_fs(|fs| {
        let bs = u64::from(fs.block_size());
        let first = pos / bs;
        let count = (pos + len as u64).div_ceil(bs) - first;
        let blocks = match op {
            Op::Read => fs.block_map(ino, first, count)?,
            Op::Write => match fs.direct_write_begin(ino, pos, len as u64) {
                Ok(blocks) => blocks,
                Err(e) => {
                    // It failed part-way (ENOSPC) with the disk's size grown over the blocks
                    // it allocated: nothing was written, so they go back now, under the same
                    // lock, as after a short transfer.
                    give_back(fs, ino, cache);
                    return Err(e);
                }
            },
        };
        let moved = move_extents(op, device, &pages, addr, len, pos, bs, &blocks);
        if op == Op::Write {
            // Under the filesystem lock, so a truncation (the disk's, then the cache's) is
            // ordered against both: the cache's size grows with the disk's here, never after
            // the lock went (which undid a truncation run meanwhile). Only by what reached
            // the disk: a transfer that moved nothing leaves the size alone (Linux leaves
            // `i_size` unchanged), and one cut short gives back the size and blocks
            // `direct_write_begin` prepared past what reached the disk (Linux
            // `ext2_write_failed` after a direct write).
            let done = *moved.as_ref().unwrap_or(&0) as u64;
            if done > 0 {
                cache.grow_size(memory::mm(), pos + done);
            }
            if done < len as u64 {
                give_back(fs, ino, cache);
            }
        }
        Ok(moved)
    })
    .and_then(|r| r);
    if op == Op::Write {
        // No lock held now: a dirty partial last page the growth passed is write-protected.
        super::ext2_cache::isize_extended(cache);
    }
    let mm = memory::mm();
    let dirty = match op {
        Op::Read => UnpinDirty::MakeDirty,
        Op::Write => UnpinDirty::Clean,
    };
    if op == Op::Write {
        if let Ok(n) = result {
            refresh_cache(cache, &pages, addr, n, pos);
        }
    }
    for page in pages {
        page.unpin_dirty(mm, dirty);
    }
    result
}

/// Gives the disk's size and the blocks past it back to the cache's size after a direct write
/// that did not reach all it prepared (Linux `ext2_write_failed`). The caller holds the file's
/// writer lock (`ext2_cache::InodeLock`), so the disk's size past the cache's is this write's
/// alone: no buffered write has prepared blocks there, no chunked `fallocate` is between two
/// chunks (the disk's size grown, the cache's not yet: before the lock, those chunks' blocks
/// were freed here). Its own failure is not the write's: what reached the disk is still
/// reported (a short count).
fn give_back(
    fs: &mut cowlab_ext2::Ext2<super::ext2_glue::VirtioDisk>,
    ino: u32,
    cache: &FileCache,
) {
    let _ = fs.write_failed(ino, cache.size());
}

/// Moves each run of the piece: a run of consecutive disk blocks is one request on the user
/// pages under it; a hole (reads only) is zeroes written into the pinned pages.
#[allow(clippy::too_many_arguments)]
fn move_extents(
    op: Op,
    device: &'static virtio_blk::Device,
    pages: &[PinnedPage],
    addr: u64,
    len: usize,
    pos: u64,
    bs: u64,
    blocks: &[u32],
) -> Result<usize, Errno> {
    let first = pos / bs;
    let mut done = 0usize;
    while done < len {
        let at = pos + done as u64;
        let i = (at / bs - first) as usize;
        let blk = u64::from(blocks[i]);
        // Extend the run over the blocks that follow on the disk (or stay holes).
        let mut j = i + 1;
        while j < blocks.len()
            && ((blk == 0 && blocks[j] == 0)
                || (blk != 0 && u64::from(blocks[j]) == blk + (j - i) as u64))
        {
            j += 1;
        }
        let run_end = ((first + j as u64) * bs).min(pos + len as u64);
        let n = (run_end - at) as usize;
        let uaddr = addr + done as u64;
        if blk == 0 {
            zero_user(pages, addr, uaddr, n)?;
        } else {
            let disk = blk * bs + at % bs;
            let sub = extent_pages(pages, addr, uaddr, n);
            let wait = SyncWait::new();
            let request = Request::pinned(
                op,
                disk / SECTOR,
                sub,
                (uaddr % PAGE) as usize,
                n,
                wait.completion(),
            )?;
            device.submit(request)?;
            let moved = wait.wait_to_end()?;
            if moved < n {
                return Ok(done + moved);
            }
        }
        done += n;
    }
    Ok(done)
}

/// Extra holds on the pages under `[uaddr, uaddr + n)` out of `pages`, pinned for
/// `[base, ..)`: a request releases its own holds when it finishes, `pages` keeps its own.
fn extent_pages(pages: &[PinnedPage], base: u64, uaddr: u64, n: usize) -> Vec<PinnedPage> {
    let mm = memory::mm();
    let first = ((uaddr & !(PAGE - 1)) - (base & !(PAGE - 1))) as usize / PAGE as usize;
    let last =
        ((uaddr + n as u64).div_ceil(PAGE) * PAGE - (base & !(PAGE - 1))) as usize / PAGE as usize;
    pages[first..last].iter().map(|p| p.dup(mm)).collect()
}

/// Writes `n` zeroes at user address `uaddr` through the pages pinned for `[base, ..)`.
fn zero_user(pages: &[PinnedPage], base: u64, uaddr: u64, n: usize) -> Result<(), Errno> {
    static ZEROES: [u8; PAGE as usize] = [0; PAGE as usize];
    let mm = memory::mm();
    let mut at = uaddr;
    let end = uaddr + n as u64;
    while at < end {
        let page = &pages[((at & !(PAGE - 1)) - (base & !(PAGE - 1))) as usize / PAGE as usize];
        let off = (at % PAGE) as usize;
        let m = ((PAGE as usize - off) as u64).min(end - at) as usize;
        page.dma_from_device()
            .map_err(|_| Errno::EFAULT)?
            .dma_write(mm, off, &ZEROES[..m]);
        at += m as u64;
    }
    Ok(())
}

/// After a direct write of `n` bytes at `pos` (the cache's size grew with the disk's, under
/// the filesystem lock): the pages of the range it still holds get the bytes (read from the pinned user pages), so every reader
/// and mapping sees what the disk now has.
fn refresh_cache(cache: &FileCache, pages: &[PinnedPage], addr: u64, n: usize, pos: u64) {
    let mm = memory::mm();
    if cache.cached_pages() == 0 {
        return;
    }
    let mut data = Vec::new();
    if data.try_reserve_exact(n).is_err() {
        // No memory for the copy: drop what can be dropped rather than keep stale pages.
        cache.drop_clean(mm);
        return;
    }
    data.resize(n, 0);
    let mut at = 0usize;
    while at < n {
        let ua = addr + at as u64;
        let page = &pages[((ua & !(PAGE - 1)) - (addr & !(PAGE - 1))) as usize / PAGE as usize];
        let off = (ua % PAGE) as usize;
        let m = (PAGE as usize - off).min(n - at);
        page.dma_read(mm, off, &mut data[at..at + m]);
        at += m;
    }
    let _ = cache.write_through(mm, pos, &data, |d| Ok::<usize, Errno>(d.len()));
}
