//! memfds (`memfd_create`): an anonymous shmem object as a file, and the read/write/truncate
//! paths every shmem-backed file shares (tmpfs files use them too). The open-file description
//! holds one reference to the object, put when the description goes.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::any::Any;

use cowlab_mm::shmem::{ShmemObject, RESCHED_BATCH};

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::rw::CHUNK;
use super::stat::{shmem_mount_statfs, Stat, StatFs, ST_NODEV, ST_NOSUID, S_IFREG};
use crate::errno::Errno;
use crate::memory;

/// Reads `obj` at `io.pos` into `to` a bounce-buffer chunk at a time, up to the end of the
/// object or the first fault (Linux `shmem_file_read_iter`).
pub fn shmem_read(obj: &ShmemObject, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
    let mm = memory::mm();
    let mut kbuf = alloc::vec![0u8; to.count().min(CHUNK)];
    let mut done = 0;
    let mut chunks = 0;
    while to.count() > 0 {
        let want = to.count().min(CHUNK);
        let n = obj.read_at(mm, io.pos, &mut kbuf[..want]);
        let copied = to.copy_to(&kbuf[..n]);
        io.pos += copied as u64;
        done += copied;
        if copied < want || chunk_pause(&mut chunks).is_err() {
            break;
        }
    }
    to.finish(done)
}

/// Writes `from` to `obj` at `io.pos` (its end with `io.append`), a chunk at a time, up to the
/// first fault or a refused page (Linux `shmem_file_write_iter`).
pub fn shmem_write(obj: &ShmemObject, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
    if io.append {
        io.pos = obj.size();
    }
    let mut done = 0;
    let mut chunks = 0;
    while from.count() > 0 {
        let data = from.copy_from_vec(CHUNK)?;
        if data.is_empty() {
            break;
        }
        let written = match obj.write_at(memory::mm(), io.pos, &data) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e.into()),
            Err(_) => break,
        };
        done += written;
        io.pos += written as u64;
        if written < data.len() || from.faulted() || chunk_pause(&mut chunks).is_err() {
            break;
        }
    }
    from.finish(done)
}

/// `fallocate` of a shmem file: mode 0 only (`EOPNOTSUPP`), `EFBIG` past the largest offset.
pub fn shmem_fallocate(obj: &ShmemObject, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
    if mode != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    if (offset as i64).checked_add(len as i64).is_none() {
        return Err(Errno::EFBIG);
    }
    obj.fallocate_resched(memory::mm(), offset, len, &mut killable_resched)
}

/// Between two chunks of a shmem read or write (a 2 GiB buffer is minutes of copying and, for
/// a write, page allocation): every `RESCHED_BATCH` pages, [`killable_resched`] (Linux's
/// `fatal_signal_pending` checks in `generic_perform_write` and `filemap_read`); `EINTR` ends
/// the call with the bytes done so far.
fn chunk_pause(chunks: &mut usize) -> Result<(), Errno> {
    *chunks += 1;
    if !((*chunks * CHUNK) as u64).is_multiple_of(RESCHED_BATCH * 4096) {
        return Ok(());
    }
    killable_resched()
}

/// The pause of a shrinking truncate (`ShmemObject::set_size_resched`): lets time and the
/// rest run (`cond_resched`; freeing 2 GiB of pages held the CPU for seconds). Not
/// interrupted: the new size is in force, as Linux's `shmem_undo_range`.
pub fn shmem_resched() {
    if crate::proc::current_tid() != 0 {
        crate::proc::sched::cond_resched();
    }
}

/// The pause of a long shmem loop (`ShmemObject::fallocate_resched`): a task being killed
/// stops with `EINTR` (Linux's `fatal_signal_pending` checks), any other lets time and the
/// rest run (`cond_resched`: the kernel is not preemptible, so without it a 2 GiB fallocate
/// held the CPU, and its own kill, for over a minute).
pub(super) fn killable_resched() -> Result<(), Errno> {
    // Outside a task (the in-kernel tests at boot) there is nobody to kill or yield to.
    if crate::proc::current_tid() == 0 {
        return Ok(());
    }
    if crate::proc::fatal_signal_pending() {
        return Err(Errno::EINTR);
    }
    crate::proc::sched::cond_resched();
    Ok(())
}

/// `st_size`, `st_blocks` and an inode number for a shmem object.
pub fn shmem_stat(obj: &Arc<ShmemObject>, mode: u32) -> Stat {
    Stat {
        st_size: obj.size() as i64,
        st_blocks: obj.cached_pages() as i64 * 8,
        ..Stat::base(mode, Arc::as_ptr(obj) as u64 % 1_000_000)
    }
}

/// An open memfd.
pub struct Memfd {
    /// `Some` until drop, which puts it.
    obj: Option<Arc<ShmemObject>>,
}

impl Memfd {
    pub fn new(obj: Arc<ShmemObject>) -> Memfd {
        Memfd { obj: Some(obj) }
    }

    pub fn obj(&self) -> &Arc<ShmemObject> {
        self.obj.as_ref().expect("the object lives until drop")
    }
}

impl Drop for Memfd {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            ShmemObject::put(obj, memory::mm());
        }
    }
}

impl FileOps for Memfd {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        shmem_read(self.obj(), io, to)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        shmem_write(self.obj(), io, from)
    }

    fn seek(&self) -> Seek {
        Seek::Size(self.obj().size())
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        shmem_stat(self.obj(), S_IFREG | 0o777)
    }

    fn statfs(&self) -> StatFs {
        shmem_mount_statfs(ST_NOSUID | ST_NODEV)
    }

    fn mmap_target(&self, offset: u64, _len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        Ok((self.obj(), offset))
    }

    fn shmem_object(&self) -> Option<&Arc<ShmemObject>> {
        Some(self.obj())
    }

    fn truncate(&self, len: u64) -> Result<(), Errno> {
        self.obj()
            .set_size_resched(memory::mm(), len, &mut shmem_resched)?;
        Ok(())
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        shmem_fallocate(self.obj(), mode, offset, len)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `memfd_create(name)`: a new empty shmem object open read-write, named for
/// `/proc/<pid>/maps` as Linux names its mappings (`memfd:` dentries, unlinked); with
/// `MFD_ALLOW_SEALING` (`sealing`) it starts without `F_SEAL_SEAL`.
pub fn create(name: &str, sealing: bool) -> Arc<super::OpenFile> {
    let obj = ShmemObject::new();
    if sealing {
        obj.allow_sealing();
    }
    obj.set_maps_name(&alloc::format!("/memfd:{name} (deleted)"));
    super::OpenFile::new(alloc::boxed::Box::new(Memfd::new(obj)), super::O_RDWR)
}

/// `F_ADD_SEALS` (`add`) / `F_GET_SEALS` (Linux `memfd_fcntl`): seals live on shmem objects
/// (memfds and tmpfs files; only `MFD_ALLOW_SEALING` memfds start without `F_SEAL_SEAL`).
/// Adding needs a descriptor open for writing (`EPERM`, checked first as Linux does); other
/// files `EINVAL`.
pub fn fcntl_seals(file: &super::OpenFile, add: bool, arg: u64) -> Result<u64, Errno> {
    if add && !file.writable() {
        return Err(Errno::EPERM);
    }
    let obj = file.ops.shmem_object().ok_or(Errno::EINVAL)?;
    if !add {
        return Ok(u64::from(obj.seals()));
    }
    // Linux's `memfd_fcntl` takes the seals as `unsigned int`: the high bits are dropped.
    obj.add_seals(memory::mm(), arg as u32)?;
    Ok(0)
}
