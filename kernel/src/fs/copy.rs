//! In-kernel copies between open files: `sendfile` (Linux `do_sendfile` over
//! `do_splice_direct` / `splice_file_to_pipe`) and `copy_file_range` (`vfs_copy_file_range`'s
//! generic checks and its `do_splice_direct` fallback). Both move the bytes through a kernel
//! bounce buffer a [`CHUNK`] at a time with [`vfs_read`] and [`vfs_write`], so every file type
//! behaves as it does for `pread`/`write` (a pipe blocks, the console echoes, `RLIMIT_FSIZE`
//! applies); there is no page-cache splicing. A copy that has moved something stops at the
//! first short or failed step and reports what it moved, as Linux does.
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use super::file::{OpenFile, Seek};
use super::iter::IoIter;
use super::rw::{vfs_read, vfs_write, CHUNK};
use super::stat::{S_IFBLK, S_IFDIR, S_IFMT, S_IFREG};
use super::O_APPEND;
use crate::errno::Errno;

/// Linux `MAX_RW_COUNT`: one call moves at most this much.
const MAX_RW_COUNT: usize = 0x7fff_f000;

fn kind(file: &OpenFile) -> u32 {
    file.ops.stat().st_mode & S_IFMT
}

fn is_pipe(file: &OpenFile) -> bool {
    file.ops.seek() == Seek::Stream && kind(file) == super::stat::S_IFIFO
}

/// Copies up to `count` bytes of `input` at `*in_pos` to `out` at `*out_pos` (None: its own
/// position, moved by `vfs_write`); advances `*in_pos` by what was written.
fn copy(
    input: &OpenFile,
    in_pos: &mut u64,
    out: &OpenFile,
    mut out_pos: Option<&mut u64>,
    count: usize,
) -> Result<usize, Errno> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(count.min(CHUNK))
        .map_err(|_| Errno::ENOMEM)?;
    buf.resize(count.min(CHUNK), 0);
    let mut done = 0;
    while done < count {
        if done != 0 {
            // Long copies let others run (the kernel runs with interrupts off).
            crate::proc::sched::cond_resched();
        }
        let want = (count - done).min(CHUNK);
        let step = vfs_read(
            input,
            Some(*in_pos),
            &mut IoIter::kernel_dest(&mut buf[..want]),
        )
        .and_then(|n| {
            let at = out_pos.as_deref().copied();
            vfs_write(out, at, &mut IoIter::kernel_source(&buf[..n])).map(|w| (n, w))
        });
        let (read, written) = match step {
            Ok(rw) => rw,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        };
        *in_pos += written as u64;
        if let Some(p) = out_pos.as_deref_mut() {
            *p += written as u64;
        }
        done += written;
        if read == 0 || written < read {
            break;
        }
    }
    Ok(done)
}

/// `sendfile(out, in, pos, count)`: `pos` is the offset the caller passed (None: `in`'s own
/// position, which moves); the bytes moved, and where reading stopped (what Linux stores back
/// through the offset pointer). Errors in Linux's order: `EBADF` for an input not open for
/// reading, `ESPIPE` for an offset on a stream, `EINVAL` for a negative offset, `EBADF` for an
/// output not open for writing, `EINVAL` for an `O_APPEND` output that is not a pipe and for
/// an input that cannot be read by position (a pipe, a directory).
pub fn sendfile(
    out: &OpenFile,
    input: &OpenFile,
    pos: Option<i64>,
    count: usize,
) -> (Result<usize, Errno>, Option<i64>) {
    if !input.readable() {
        return (Err(Errno::EBADF), pos);
    }
    if pos.is_some() && input.ops.seek() == Seek::Stream {
        return (Err(Errno::ESPIPE), pos);
    }
    let start = match pos {
        Some(p) if p < 0 => return (Err(Errno::EINVAL), pos),
        Some(p) => p as u64,
        None => input.offset.load(Ordering::Relaxed),
    };
    if !out.writable() {
        return (Err(Errno::EBADF), pos);
    }
    if !is_pipe(out) && out.flags.load(Ordering::Relaxed) & O_APPEND != 0 {
        return (Err(Errno::EINVAL), pos);
    }
    if !matches!(kind(input), S_IFREG | S_IFBLK) {
        return (Err(Errno::EINVAL), pos);
    }
    let mut at = start;
    let result = copy(input, &mut at, out, None, count.min(MAX_RW_COUNT));
    match pos {
        Some(_) => (result, Some(at as i64)),
        None => {
            input.offset.store(at, Ordering::Relaxed);
            (result, None)
        }
    }
}

/// `copy_file_range(in, in_pos, out, out_pos, len, flags)`: the positions the caller passed
/// (None: the file's own, which moves); the bytes copied and the positions after. Linux's
/// order (`generic_file_rw_checks`, then the flags, `generic_copy_file_checks`): `EISDIR` for
/// a directory, `EINVAL` for anything else not regular, `EBADF` for access modes or an
/// `O_APPEND` output, `EINVAL` for flags, `EOVERFLOW` for a negative position, a read at or
/// past the end copies nothing, `EINVAL` for overlapping ranges of one file, `EXDEV` across
/// file systems (by `st_dev`).
pub fn copy_file_range(
    input: &OpenFile,
    in_pos: Option<i64>,
    out: &OpenFile,
    out_pos: Option<i64>,
    len: usize,
    flags: u64,
) -> (Result<usize, Errno>, Option<i64>, Option<i64>) {
    let fail = |e| (Err(e), in_pos, out_pos);
    for f in [input, out] {
        match kind(f) {
            S_IFREG => {}
            S_IFDIR => return fail(Errno::EISDIR),
            _ => return fail(Errno::EINVAL),
        }
    }
    if !input.readable() || !out.writable() || out.flags.load(Ordering::Relaxed) & O_APPEND != 0 {
        return fail(Errno::EBADF);
    }
    if flags != 0 {
        return fail(Errno::EINVAL);
    }
    let pin = in_pos.unwrap_or_else(|| input.offset.load(Ordering::Relaxed) as i64);
    let pout = out_pos.unwrap_or_else(|| out.offset.load(Ordering::Relaxed) as i64);
    if pin < 0 || pout < 0 {
        return fail(Errno::EOVERFLOW);
    }
    let (pin, pout) = (pin as u64, pout as u64);
    let (sin, sout) = (input.ops.stat(), out.ops.stat());
    let len = len.min(MAX_RW_COUNT) as u64;
    // Linux clamps the count to the input's end before the overlap check.
    let len = len.min((sin.st_size.max(0) as u64).saturating_sub(pin));
    let same = sin.st_dev == sout.st_dev && sin.st_ino == sout.st_ino;
    if same && pin < pout + len && pout < pin + len {
        return fail(Errno::EINVAL);
    }
    if len == 0 {
        return (Ok(0), in_pos, out_pos);
    }
    if sin.st_dev != sout.st_dev {
        return fail(Errno::EXDEV);
    }
    let (mut rin, mut rout) = (pin, pout);
    let result = copy(input, &mut rin, out, Some(&mut rout), len as usize);
    let back = |given: Option<i64>, file: &OpenFile, now: u64| match given {
        Some(_) => Some(now as i64),
        None => {
            file.offset.store(now, Ordering::Relaxed);
            None
        }
    };
    let new_in = back(in_pos, input, rin);
    let new_out = back(out_pos, out, rout);
    (result, new_in, new_out)
}
