//! An open ext2 regular file (or symbolic link opened through `O_PATH`-like stat): reads and
//! writes go through the file's page cache (`ext2_cache`). A read copies the cached page
//! straight to the user (a copy that may fault, holding only a page reference); a write copies
//! from the user straight into the locked cache page with page faults not served (the fault
//! path may need that page's lock), a copy that stops short being redone through a kernel
//! buffer filled with no page locked. Reads fill missing pages from the disk; writes are
//! write-back: the crate allocates the blocks and moves the size at the call (a full disk is
//! `ENOSPC` there, as on Linux ext2), the bytes go into the cache's pages, which stay dirty
//! until writeback (the flusher, fsync, sync, msync, the last close, memory pressure through
//! dirty throttling, unmount); `O_SYNC`/`O_DSYNC` write back before returning.
//!
//! The description holds an open reference on the inode (`Ext2::open`) and on its cache,
//! dropped at the last close (`Ext2::release`): an unlinked file lives until then.
//!
//! Writes, `ftruncate` and `fallocate` run under the file's writer lock
//! (`ext2_cache::InodeLock`, Linux `inode_lock`), so their filesystem and cache halves never
//! interleave with another writer's.
//!
//! `mmap` maps the cache's pages ([`Ext2Mapping`], which holds the file open while mapped).
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use cowlab_mm::opstat::{self, Phase};
use cowlab_mm::pagecache::{BackingStore, FileCache, FileRef, MappedFile};
use cowlab_mm::MmError;

use super::ext2_cache::{self, Ext2Store, InodeLock};
use super::ext2_direct;
use super::ext2_mount::{with_fs, with_fs_atomic};
use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::stat::{statfs_of, Stat, StatFs};
use super::vda;
use crate::drivers::virtio_blk::Op;
use crate::errno::Errno;
use crate::memory;

/// Linux's `O_DSYNC` (also part of `O_SYNC`, `__O_SYNC | O_DSYNC`).
const O_DSYNC: u32 = 0o10000;
/// Bytes of an ext2 preallocation between two pauses (64 blocks of 4 KiB written with zeroes).
const FALLOCATE_CHUNK: u64 = 256 << 10;

/// Linux's `FALLOC_FL_PUNCH_HOLE`.
const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
/// The most bytes moved under one hold of the filesystem lock.
const CHUNK: usize = 64 * 1024;
pub const EXT2_SUPER_MAGIC: u64 = 0xEF53;
/// `st_dev` of the root disk (`vdb` is major 254 minor 16 on Linux's virtio-blk).
pub const EXT2_DEV: u64 = (254 << 8) | 16;

/// `stat` of inode `ino` (zeroes but the number if it cannot be read: the error was reported).
pub fn ext2_stat(ino: u32) -> Stat {
    let Ok(mut st) = with_fs(|fs| fs.stat(ino)) else {
        return Stat::base(0, u64::from(ino));
    };
    if let Some(cache) = ext2_cache::lookup(ino) {
        st.size = cache.size();
    }
    Stat {
        st_dev: EXT2_DEV,
        st_ino: u64::from(st.ino),
        st_nlink: u64::from(st.nlink),
        st_mode: u32::from(st.mode),
        st_uid: st.uid,
        st_gid: st.gid,
        st_rdev: u64::from(st.rdev),
        st_size: st.size as i64,
        st_blksize: i64::from(st.blksize),
        st_blocks: st.blocks as i64,
        st_atime: i64::from(st.atime),
        st_mtime: i64::from(st.mtime),
        st_ctime: i64::from(st.ctime),
        ..Stat::default()
    }
}

/// `statfs` of the root filesystem (`f_type` 0xEF53).
pub fn ext2_statfs() -> StatFs {
    let Ok((s, ro)) = with_fs(|fs| Ok((fs.statfs(), fs.is_read_only()))) else {
        return statfs_of(EXT2_SUPER_MAGIC, 0);
    };
    let mut st = statfs_of(
        EXT2_SUPER_MAGIC,
        if ro { super::stat::ST_RDONLY } else { 0 },
    );
    st.f_bsize = u64::from(s.f_bsize);
    st.f_frsize = u64::from(s.f_bsize);
    st.f_blocks = s.f_blocks;
    st.f_bfree = s.f_bfree;
    st.f_bavail = s.f_bavail;
    st.f_files = s.f_files;
    st.f_ffree = s.f_ffree;
    st.f_namelen = u64::from(s.f_namelen);
    st.f_fsid = [EXT2_DEV as i32, 0];
    st
}

/// An open ext2 file.
pub struct Ext2File {
    pub ino: u32,
    cache: Arc<FileCache>,
    /// The file's writer lock (Linux `inode_lock`), shared by every open description of it.
    ilock: Arc<InodeLock>,
    /// The [`ATTR_GENERATION`] at which this file was seen without set-id bits (Linux's
    /// `S_NOSEC`); 0: not known. Lets a write skip [`file_remove_privs`]'s inode read.
    nosec: AtomicU64,
    /// `ATTR_GENERATION << 32 | second`: a write through this description left the inode's
    /// mtime and ctime both at that second (Linux `inode_needs_update_time` compares the
    /// in-memory times with the clock); 0: not known. A write in the same second over pages
    /// that have their blocks then needs no filesystem call at all. Every other path that
    /// sets the times sets them to the clock's now, except `utimensat`, which bumps the
    /// generation ([`attr_changed`]).
    times_set: AtomicU64,
}

/// Bumped after every change of an ext2 inode's mode or owner (`attr_changed`): a file's
/// `nosec` note holds while this has not moved.
static ATTR_GENERATION: AtomicU64 = AtomicU64::new(1);

/// Called after chmod, chown or utimensat of an ext2 inode: every "no set-id bits" note and
/// every "times are now" note is stale.
pub fn attr_changed() {
    ATTR_GENERATION.fetch_add(1, Ordering::AcqRel);
}

impl Ext2File {
    /// Opens inode `ino` (takes the open reference that keeps an unlinked inode alive, and a
    /// hold on its page cache).
    pub fn open(ino: u32) -> Result<Ext2File, Errno> {
        with_fs(|fs| fs.open(ino))?;
        match ext2_cache::attach(ino) {
            Ok((cache, ilock)) => Ok(Ext2File {
                ino,
                cache,
                ilock,
                nosec: AtomicU64::new(0),
                times_set: AtomicU64::new(0),
            }),
            Err(e) => {
                let _ = with_fs(|fs| fs.release(ino));
                Err(e)
            }
        }
    }

    fn size(&self) -> u64 {
        self.cache.size()
    }

    fn store(&self) -> Ext2Store {
        Ext2Store { ino: self.ino }
    }

    /// The whole file, for exec (read before any address-space lock is taken).
    pub fn read_all(&self) -> Result<alloc::vec::Vec<u8>, Errno> {
        let size = self.size() as usize;
        let mut data = alloc::vec::Vec::new();
        data.try_reserve_exact(size).map_err(|_| Errno::ENOMEM)?;
        data.resize(size, 0);
        let n = self
            .cache
            .read_at(memory::mm(), &self.store(), 0, &mut data)?;
        data.truncate(n);
        Ok(data)
    }
}

impl Ext2File {
    /// A write with the file's writer lock held (Linux `__generic_file_write_iter`): the
    /// privileges dropped, an `O_APPEND` position taken and the bytes written, with no other
    /// writer, truncation or preallocation of the file in between. Returns the bytes written
    /// and whether they went through the cache (not `O_DIRECT`).
    fn write_locked(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<(usize, bool), Errno> {
        file_remove_privs(self)?;
        opstat::mark(Phase::FileLock);
        if io.append {
            io.pos = self.size();
        }
        if vda::is_direct(io.file) && ext2_direct::applies(from) {
            let n = ext2_direct::transfer(Op::Write, self.ino, &self.cache, io, from)?;
            return Ok((n, false));
        }
        let mut done = 0;
        // A round after a short copy goes through a kernel buffer (see below).
        let mut bounce = !from.is_user();
        while from.count() > 0 {
            let (ino, pos) = (self.ino, io.pos);
            // Write-back (Linux `generic_perform_write`): the blocks and the size at the call
            // (`Ext2::write_begin`, so a full disk is `ENOSPC` here; a range inside the size
            // over pages that have their blocks, `MAPPED_TO_DISK`, only moves the times:
            // `Ext2::write_begin_mapped`), the bytes into the cache's pages, which are dirty
            // until writeback stores them.
            let begin = |len: u64, mapped: bool| {
                // Only page locks held here: the filesystem is waited for asleep.
                if !mapped {
                    return with_fs(|fs| fs.write_begin(ino, pos, len));
                }
                // Linux `file_update_time`: nothing to do when the times are now already
                // (the generation is read before the update, so a `utimensat` racing with it
                // leaves a stale stamp, never a wrong one).
                let stamp = ATTR_GENERATION.load(Ordering::Acquire) << 32
                    | u64::from(super::ext2_mount::clock());
                if self.times_set.load(Ordering::Relaxed) == stamp {
                    return Ok(len);
                }
                let r = with_fs(|fs| fs.write_begin_mapped(ino, pos, len));
                if r.is_ok() {
                    self.times_set.store(stamp, Ordering::Relaxed);
                }
                r
            };
            let (written, last) = if bounce {
                // Through a kernel buffer: the user copy, made with no page locked, may
                // fault (a fill of a mapped file's page; no fault path takes the writer
                // lock), and ends exactly at a refused byte.
                // A kernel buffer that cannot be had ends the write with what it wrote
                // (Linux returns the short count of a write that stops after some bytes);
                // only a write that wrote nothing reports ENOMEM.
                let data = match from.copy_from_vec(CHUNK) {
                    Ok(data) => data,
                    Err(e) if done == 0 => return Err(e),
                    Err(_) => break,
                };
                opstat::mark(Phase::FileFromUser);
                if data.is_empty() {
                    break;
                }
                let written =
                    self.cache
                        .write_begin_end(memory::mm(), &self.store(), pos, &data, |len| {
                            begin(len, false)
                        });
                // The bytes are taken from the iterator already. A round that took less
                // than it copied (a full disk), or whose copy faulted, ends the write.
                let last = from.faulted() || written.as_ref().is_ok_and(|&n| n < data.len());
                bounce = !from.is_user();
                (written, last)
            } else {
                // Straight from the user into the locked cache pages (Linux
                // `copy_page_from_iter_atomic`), with page faults not served: the copy runs
                // under the cache's spin lock (`inner`, taken in `write_begin_end_inner`),
                // and a served fault on a mapping of this file would spin on that same lock
                // (`fault_page` and fault-around's page mapping take it first) for ever,
                // whichever page the source is; a source that is a page this write holds
                // locked and not yet read would also wait for that page lock (the fault's
                // fill). A copy that stops short (a page of the source not present)
                // ends the round with what it took, and the next round goes through the
                // kernel buffer, whose copy faults the source in with no page locked (and
                // ends the write at a refused byte, the count exact as before).
                let want = from.count().min(CHUNK);
                let src = &*from;
                let written = self.cache.perform_write(
                    memory::mm(),
                    &self.store(),
                    pos,
                    want,
                    true,
                    |frame, at, len| src.copy_to_frame_nofault(at, frame, len),
                    begin,
                );
                if let Ok(n) = written {
                    from.advance(n);
                    bounce = n < want;
                }
                (written, false)
            };
            opstat::mark(Phase::FileDirty);
            let written = match written {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            done += written;
            io.pos += written as u64;
            super::ext2_throttle::balance_dirty_pages(&self.cache, self.ino, written);
            opstat::mark(Phase::FileThrottle);
            if last {
                break;
            }
        }
        ext2_cache::isize_extended(&self.cache);
        Ok((done, true))
    }

    /// `ftruncate` with the writer lock held: the disk's size, then the cache's.
    fn truncate_locked(&self, len: u64) -> Result<(), Errno> {
        file_remove_privs(self)?;
        with_fs(|fs| fs.truncate(self.ino, len))?;
        // Between the disk's truncation and the cache's: without the writer lock an O_DIRECT
        // write growing both here was cut back in the cache only (`t_pc5_ilock`).
        super::ext2_race::window(super::ext2_race::Window::Truncate);
        let shrinks = len < self.cache.size();
        self.cache.set_size(memory::mm(), len);
        if shrinks {
            ext2_cache::unmap_past(&self.cache, len);
        }
        ext2_cache::isize_extended(&self.cache);
        Ok(())
    }

    /// `fallocate` with the writer lock held ([`FileOps::fallocate`]).
    fn fallocate_locked(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        ext2_cache::writeback(&self.cache, self.ino)?;
        let end = offset.saturating_add(len);
        let result = if mode == 0 && with_fs(|fs| Ok(end <= fs.max_file_size()))? {
            let mut at = offset;
            loop {
                let n = (end - at).min(FALLOCATE_CHUNK - at % FALLOCATE_CHUNK);
                if let Err(e) = with_fs(|fs| fs.fallocate(self.ino, 0, at, n)) {
                    break Err(e);
                }
                at += n;
                if at >= end {
                    break Ok(());
                }
                // The disk's size has grown past the cache's: without the writer lock a
                // failed O_DIRECT write here gave back the chunks already done
                // (`t_pc5_ilock`).
                super::ext2_race::window(super::ext2_race::Window::Fallocate);
                if let Err(e) = super::memfd::killable_resched() {
                    break Err(e);
                }
            }
        } else {
            with_fs(|fs| fs.fallocate(self.ino, mode as u32, offset, len))
        };
        if result.is_ok() && mode as u32 & FALLOC_FL_PUNCH_HOLE != 0 {
            self.cache.zero_range(memory::mm(), offset, end);
            ext2_cache::unmap_punched(&self.cache, offset, end);
        }
        let size = with_fs(|fs| fs.stat(self.ino))?.size;
        if size > self.cache.size() {
            self.cache.set_size(memory::mm(), size);
            ext2_cache::isize_extended(&self.cache);
        }
        result
    }
}

impl Drop for Ext2File {
    fn drop(&mut self) {
        // The last close keeps the cache of a file that still has names (its dirty pages wait
        // for writeback) and empties an unlinked one's; then the last close of an unlinked
        // inode frees it.
        let linked = with_fs(|fs| fs.stat(self.ino)).is_ok_and(|st| st.nlink > 0);
        if let Err(e) = ext2_cache::detach(self.ino, linked) {
            warn!(
                "ext2: writeback of inode {} at close failed: {e:?}",
                self.ino
            );
        }
        let _ = with_fs(|fs| fs.release(self.ino));
    }
}

/// Linux `file_remove_privs` before a write or truncate: a writer without `CAP_FSETID` clears
/// the set-user-ID (and group-executable set-group-ID) bit of the file it modifies
/// (`perm::setattr_should_drop_suidgid`). The inode is read only when no chmod or chown
/// happened since `file` was last seen without the bits (Linux's `IS_NOSEC` fast path: the
/// read on every write cost `file_write_4k` 938 guest instructions, 12144 -> 13082; with the
/// note it is 12155).
fn file_remove_privs(file: &Ext2File) -> Result<(), Errno> {
    let generation = ATTR_GENERATION.load(Ordering::Acquire);
    if file.nosec.load(Ordering::Relaxed) == generation {
        return Ok(());
    }
    let ino = file.ino;
    let st = with_fs(|fs| fs.stat(ino))?;
    let mode = u32::from(st.mode);
    if mode & 0o6000 == 0 {
        file.nosec.store(generation, Ordering::Relaxed);
        return Ok(());
    }
    let owner = super::perm::Owner {
        mode,
        uid: st.uid,
        gid: st.gid,
    };
    let kill = super::perm::setattr_should_drop_suidgid(&crate::proc::cred::current(), owner);
    if kill == 0 {
        return Ok(());
    }
    with_fs(|fs| fs.chmod(ino, (mode & 0o7777 & !kill) as u16))
}

impl FileOps for Ext2File {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        if vda::is_direct(io.file) && ext2_direct::applies(to) {
            let n = ext2_direct::transfer(Op::Read, self.ino, &self.cache, io, to)?;
            return to.finish(n);
        }
        opstat::mark(Phase::FileVfs);
        if to.is_user() {
            // Straight from the cached page to the user (no kernel buffer): the bounce
            // buffer's allocation, zeroing and second copy were ~1330 of `file_read_4k`'s
            // 2648 guest instructions.
            let n = self.cache.read_to(
                memory::mm(),
                &self.store(),
                io.pos,
                to.count(),
                |frame, len| to.copy_frame_to_user(frame, len),
            )?;
            opstat::mark(Phase::FileLookup);
            io.pos += n as u64;
            return to.finish(n);
        }
        let mut kbuf = alloc::vec::Vec::new();
        kbuf.try_reserve_exact(to.count().min(CHUNK))
            .map_err(|_| Errno::ENOMEM)?;
        kbuf.resize(to.count().min(CHUNK), 0);
        opstat::mark(Phase::FileBuffer);
        let mut done = 0;
        while to.count() > 0 {
            let want = to.count().min(CHUNK);
            let n = self
                .cache
                .read_at(memory::mm(), &self.store(), io.pos, &mut kbuf[..want]);
            opstat::mark(Phase::FileLookup);
            let n = match n {
                Ok(n) => n,
                Err(e) if done == 0 => return Err(e),
                Err(_) => break,
            };
            let copied = to.copy_to(&kbuf[..n]);
            opstat::mark(Phase::FileToUser);
            io.pos += copied as u64;
            done += copied;
            if copied < want {
                break;
            }
        }
        to.finish(done)
    }

    /// Linux `generic_file_write_iter`: the whole write under the file's writer lock
    /// (`inode_lock`), the O_SYNC writeback after it.
    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        opstat::mark(Phase::FileVfs);
        let (done, buffered) = self.ilock.with(|| self.write_locked(io, from))?;
        // O_SYNC/O_DSYNC (Linux `generic_write_sync`, after `inode_unlock`): the data and the
        // inode on the disk before the call returns.
        if buffered && done > 0 && io.file.flags.load(Ordering::Relaxed) & O_DSYNC != 0 {
            self.fsync()?;
        }
        from.finish(done)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.size())
    }

    fn fsync(&self) -> Result<(), Errno> {
        ext2_cache::writeback(&self.cache, self.ino)?;
        with_fs(|fs| fs.fsync(self.ino))
    }

    fn stat(&self) -> Stat {
        ext2_stat(self.ino)
    }

    fn statfs(&self) -> StatFs {
        ext2_statfs()
    }

    fn mmap_file(&self) -> Option<Result<FileRef, Errno>> {
        ext2_cache::note_mapper(self.ino, &crate::proc::current_aspace());
        Some(Ext2File::open(self.ino).map(|file| FileRef(Arc::new(Ext2Mapping { file }))))
    }

    /// Linux `ext2_setattr` -> `truncate_setsize`, under the writer lock (`inode_lock`, held
    /// by `do_truncate`).
    fn truncate(&self, len: u64) -> Result<(), Errno> {
        self.ilock.with(|| self.truncate_locked(len))
    }

    /// The ext4-like subset a block map can hold (`cowlab_ext2::space`; Linux's ext2 itself
    /// answers `EOPNOTSUPP` to every mode), under the writer lock (Linux `ext4_fallocate`'s
    /// `inode_lock`).
    /// Dirty cache pages (stores through shared mappings) are written back first, so the
    /// block map holds their data: a punched hole then stays a hole (no later writeback of old
    /// bytes into it) and the cached copies of the punched range are zeroed as the blocks are;
    /// a size the call grows is the cache's size too.
    /// Mode 0 writes every new block with zeroes, synchronously: it goes in
    /// [`FALLOCATE_CHUNK`]s with a pause between them, stopping with `EINTR` for a task being
    /// killed (the fuzzer found a 4 GiB `fallocate` holding the CPU for over 20 s, until the
    /// disk was full); the size grows chunk by chunk, as ext4's `ext4_alloc_file_blocks` does.
    /// The cache learns the size at the end: the writer lock keeps the other writers out
    /// meanwhile, and readers see the old size until then.
    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        self.ilock.with(|| self.fallocate_locked(mode, offset, len))
    }

    /// The block map answers, after the dirty cache pages are written back (Linux ext4 counts
    /// dirty page-cache pages over a hole as data; writing them back makes the map say so).
    fn seek_data_hole(&self, offset: u64, hole: bool) -> Option<Result<u64, Errno>> {
        if let Err(e) = ext2_cache::writeback(&self.cache, self.ino) {
            return Some(Err(e));
        }
        Some(with_fs(|fs| fs.seek_data_hole(self.ino, offset, hole)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A mapping's hold on an ext2 file: an open reference of its own (so the inode and its cache
/// live while mapped, even after every descriptor is closed); the last VMA dropping it closes
/// it, which writes the cache back.
pub struct Ext2Mapping {
    file: Ext2File,
}

impl MappedFile for Ext2Mapping {
    fn cache(&self) -> &FileCache {
        &self.file.cache
    }

    fn inode(&self) -> u64 {
        u64::from(self.file.ino)
    }

    fn read_page(&self, index: u64, buf: &mut [u8], may_sleep: bool) -> Result<(), MmError> {
        self.file
            .store()
            .read_page(index, buf, may_sleep)
            .map_err(|_| MmError::Fault)
    }

    fn writeback(&self) -> bool {
        let file = &self.file;
        ext2_cache::writeback(&file.cache, file.ino).is_ok()
            && with_fs(|fs| fs.fsync(file.ino)).is_ok()
    }

    /// Allocates the blocks under the page's bytes (Linux ext2's `block_page_mkwrite`): a store
    /// into a hole on a full disk is `SIGBUS` at the store, not a lost page at writeback. The
    /// page fault's retry calls it with the page locked and no address-space lock
    /// (`may_sleep`): the filesystem lock and the disk are waited for asleep; a fault that
    /// cannot drop its locks (GUP from a kernel path) polls them.
    fn page_mkwrite(&self, index: u64, len: usize, may_sleep: bool) -> Result<(), MmError> {
        let ino = self.file.ino;
        let r = if may_sleep {
            with_fs(|fs| fs.allocate_range(ino, index * 4096, len as u64))
        } else {
            with_fs_atomic(|fs| fs.allocate_range(ino, index * 4096, len as u64))
        };
        r.map_err(|e| match e {
            Errno::ENOMEM => MmError::NoMem,
            Errno::ENOSPC => MmError::NoSpc,
            _ => MmError::Fault,
        })
    }
}

/// A symbolic link opened with `O_PATH|O_NOFOLLOW` (for `lstat`): it can be stat-ed, not read.
pub struct Ext2Path {
    pub ino: u32,
}

impl FileOps for Ext2Path {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EBADF)
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn stat(&self) -> Stat {
        ext2_stat(self.ino)
    }

    fn statfs(&self) -> StatFs {
        ext2_statfs()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
