//! `RLIMIT_FSIZE`: the largest file a process may make (Linux `generic_write_check_limits`
//! and `inode_newsize_ok`). Only regular files are limited (pipes, devices, `/proc` are not),
//! and only growth: a write that would start at or beyond the limit, a truncate or a
//! fallocate past it (even with `FALLOC_FL_KEEP_SIZE`, as Linux's `shmem_fallocate`: tmpfs and
//! memfds are what fallocates here) fail with `EFBIG` after SIGXFSZ is sent to the caller
//! (whose default action ends it, as a core-dumping signal); a write that starts below the
//! limit is cut short to end at it.
#![deny(unsafe_code)]

use super::file::OpenFile;
use super::stat::{S_IFMT, S_IFREG};
use crate::errno::Errno;
use crate::proc::rlimit::{rlimit, RLIMIT_FSIZE, RLIM_INFINITY};
use crate::proc::signal::{send_signal_current, SIGXFSZ};

/// The caller's `RLIMIT_FSIZE` if it limits `file` (a regular file under a finite limit).
fn limit_for(file: &OpenFile) -> Option<(u64, i64)> {
    let limit = rlimit(RLIMIT_FSIZE);
    if limit == RLIM_INFINITY {
        return None;
    }
    let st = file.ops.stat();
    (st.st_mode & S_IFMT == S_IFREG).then_some((limit, st.st_size))
}

fn too_big() -> Errno {
    send_signal_current(SIGXFSZ);
    Errno::EFBIG
}

/// Linux `generic_write_check_limits`: how many of `count` bytes a write at `pos` (None: at the
/// end, `O_APPEND`) may write.
pub fn generic_write_check_limits(
    file: &OpenFile,
    pos: Option<u64>,
    count: usize,
) -> Result<usize, Errno> {
    let Some((limit, size)) = limit_for(file) else {
        return Ok(count);
    };
    let pos = pos.unwrap_or(size.max(0) as u64);
    if count == 0 {
        return Ok(0);
    }
    if pos >= limit {
        return Err(too_big());
    }
    Ok(count.min(usize::try_from(limit - pos).unwrap_or(usize::MAX)))
}

/// Linux `inode_newsize_ok`: may `file` become `len` bytes long (growing only is limited).
pub fn inode_newsize_ok(file: &OpenFile, len: u64) -> Result<(), Errno> {
    match limit_for(file) {
        Some((limit, size)) if len > size.max(0) as u64 && len > limit => Err(too_big()),
        _ => Ok(()),
    }
}
