//! The file calls every caller shares (Linux `fs/read_write.c`, `fs/open.c`, `fs/readdir.c`):
//! what is common to all files is checked here (access mode, positions, `ESPIPE`), then the
//! call goes down through [`FileOps`]. `read`/`readv`/`pread64`/`preadv2`, Linux AIO and every
//! io_uring read end in [`vfs_read`]; the writes in [`vfs_write`].
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::file::{Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::O_APPEND;
use crate::errno::Errno;
use crate::uaccess::UserSlice;

/// The most most file types move per step through a kernel bounce buffer.
pub const CHUNK: usize = 64 * 1024;

/// Reads `file` at `offset` (None: its own position, which moves on) into `to`; bytes read.
/// `ESPIPE` for a position on a file without one, `EBADF` on a descriptor not open for reading.
pub fn vfs_read(file: &OpenFile, offset: Option<u64>, to: &mut IoIter) -> Result<usize, Errno> {
    if offset.is_some() && file.ops.seek() == Seek::Stream {
        return Err(Errno::ESPIPE);
    }
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    let start = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
    let mut io = Kiocb {
        file,
        pos: start,
        append: false,
    };
    let n = file.ops.read_iter(&mut io, to)?;
    if offset.is_none() && io.pos != start {
        file.offset.store(io.pos, Ordering::Relaxed);
    }
    Ok(n)
}

/// Writes `from` to `file` at `offset` (None: its own position, or its end with `O_APPEND`);
/// bytes written. Errors as [`vfs_read`], for writing.
pub fn vfs_write(file: &OpenFile, offset: Option<u64>, from: &mut IoIter) -> Result<usize, Errno> {
    if offset.is_some() && file.ops.seek() == Seek::Stream {
        return Err(Errno::ESPIPE);
    }
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    let start = offset.unwrap_or_else(|| file.offset.load(Ordering::Relaxed));
    let mut io = Kiocb {
        file,
        pos: start,
        append: offset.is_none() && file.flags.load(Ordering::Relaxed) & O_APPEND != 0,
    };
    let allowed = super::fsize::generic_write_check_limits(
        file,
        (!io.append).then_some(start),
        from.count(),
    )?;
    from.truncate(allowed);
    let n = file.ops.write_iter(&mut io, from)?;
    if offset.is_none() && io.pos != start {
        file.offset.store(io.pos, Ordering::Relaxed);
    }
    Ok(n)
}

/// The position a read or write that names `offset` uses on `file`: streams ignore it (as
/// io_uring and AIO do), `u64::MAX` (-1) means the file's own position (io_uring's
/// `IORING_FEAT_RW_CUR_POS`, `preadv2`), other negative offsets are `EINVAL`.
pub fn position_for(file: &OpenFile, offset: u64) -> Result<Option<u64>, Errno> {
    match offset {
        u64::MAX => Ok(None),
        _ if file.ops.seek() == Seek::Stream => Ok(None),
        off if (off as i64) < 0 => Err(Errno::EINVAL),
        off => Ok(Some(off)),
    }
}

/// `fsync`/`fdatasync`.
pub fn vfs_fsync(file: &OpenFile) -> Result<u64, Errno> {
    file.ops.fsync().map(|()| 0)
}

/// `lseek(fd, offset, whence)`: SEEK_SET/CUR/END as the file's [`Seek`] allows.
pub fn lseek(file: &OpenFile, offset: i64, whence: u64) -> Result<u64, Errno> {
    let (size, fixed) = match file.ops.seek() {
        Seek::Stream => return Err(Errno::ESPIPE),
        Seek::Address => return mem_lseek(file, offset as u64, whence),
        Seek::Size(size) => (size as i64, false),
        Seek::Fixed(size) => (size as i64, true),
    };
    let base = match whence {
        0 => 0,
        1 => file.offset.load(Ordering::Relaxed) as i64,
        2 => size,
        // SEEK_DATA/SEEK_HOLE: the file's hole map where it has one, else (Linux
        // `generic_file_llseek_size`) all data up to the size, one hole at it.
        3 | 4 if !fixed => {
            if offset < 0 {
                return Err(Errno::ENXIO);
            }
            let new = match file.ops.seek_data_hole(offset as u64, whence == 4) {
                Some(found) => found? as i64,
                None if offset >= size => return Err(Errno::ENXIO),
                None if whence == 3 => offset,
                None => size,
            };
            file.offset.store(new as u64, Ordering::Relaxed);
            return Ok(new as u64);
        }
        _ => return Err(Errno::EINVAL),
    };
    let new = base.checked_add(offset).ok_or(Errno::EINVAL)?;
    if new < 0 || (fixed && new > size) {
        return Err(Errno::EINVAL);
    }
    file.offset.store(new as u64, Ordering::Relaxed);
    Ok(new as u64)
}

/// lseek on a file whose positions are addresses (Linux `mem_lseek`): the position wraps
/// instead of failing and is returned as is (a position in the top 4095 values looks like an
/// errno to the C library, as on Linux); `SEEK_END` is `EINVAL`.
fn mem_lseek(file: &OpenFile, offset: u64, whence: u64) -> Result<u64, Errno> {
    let new = match whence {
        0 => offset,
        1 => file.offset.load(Ordering::Relaxed).wrapping_add(offset),
        _ => return Err(Errno::EINVAL),
    };
    file.offset.store(new, Ordering::Relaxed);
    Ok(new)
}

/// `ftruncate(fd, len)` (`len >= 0`): `EINVAL` on a descriptor not open for writing.
pub fn truncate(file: &OpenFile, len: u64) -> Result<(), Errno> {
    if !file.writable() {
        return Err(Errno::EINVAL);
    }
    super::fsize::inode_newsize_ok(file, len)?;
    file.ops.truncate(len)
}

/// `fallocate(fd, mode, offset, len)`.
pub fn fallocate(file: &OpenFile, mode: i32, offset: i64, len: i64) -> Result<(), Errno> {
    if offset < 0 || len <= 0 {
        return Err(Errno::EINVAL);
    }
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    // Even with FALLOC_FL_KEEP_SIZE, as Linux's shmem_fallocate (cowlab's fallocating files).
    super::fsize::inode_newsize_ok(file, (offset as u64).saturating_add(len as u64))?;
    file.ops.fallocate(mode, offset as u64, len as u64)
}

/// `getdents64` into `out`: as many whole `struct linux_dirent64` records as fit, from the
/// entry the description's position counts to; `EINVAL` if not even the next one fits.
pub fn getdents64(file: &OpenFile, out: UserSlice) -> Result<usize, Errno> {
    let names = file.ops.getdents()?;
    let start = file.offset.load(Ordering::Relaxed) as usize;
    let mut buf = Vec::new();
    let mut next = start;
    for (i, entry) in names.iter().enumerate().skip(start) {
        let name = entry.name.as_bytes();
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if buf.len() + reclen > out.len() {
            break;
        }
        let at = buf.len();
        // Fallibly: a nearly full kernel heap answers ENOMEM, not an allocation panic
        // (`t_rob3_heap exhaust kheap=8` on 4 CPUs, session 13: `resize` aborted here).
        crate::heap::try_reserve(&mut buf, reclen)?;
        buf.resize(at + reclen, 0);
        buf[at..at + 8].copy_from_slice(&entry.ino.to_le_bytes());
        buf[at + 8..at + 16].copy_from_slice(&(i as i64 + 1).to_le_bytes());
        buf[at + 16..at + 18].copy_from_slice(&(reclen as u16).to_le_bytes());
        buf[at + 18] = entry.kind;
        buf[at + 19..at + 19 + name.len()].copy_from_slice(name);
        next = i + 1;
    }
    if buf.is_empty() && next < names.len() {
        return Err(Errno::EINVAL);
    }
    out.write(&buf)?;
    file.offset.store(next as u64, Ordering::Relaxed);
    Ok(buf.len())
}

/// Writes `from` to a stream (a pipe, the console) a bounce-buffer chunk at a time through
/// `sink`, which takes what it can (blocking as the stream does) and says how much: stops at a
/// short take, the end of `from`, or a fault (a short count, `EFAULT` if nothing moved). An
/// empty write still calls `sink` once (a pipe without readers answers `EPIPE`).
pub fn stream_write(
    from: &mut IoIter,
    sink: &mut dyn FnMut(&[u8]) -> Result<usize, Errno>,
) -> Result<usize, Errno> {
    let mut done = 0;
    loop {
        let data = from.copy_from_vec(CHUNK)?;
        if data.is_empty() && from.faulted() {
            break;
        }
        let written = match sink(&data) {
            Ok(n) => n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        done += written;
        if written < data.len() || from.count() == 0 || from.faulted() {
            break;
        }
    }
    from.finish(done)
}
