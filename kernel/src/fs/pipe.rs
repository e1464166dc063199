//! Pipes: a bounded buffer between a read end and a write end.
//!
//! Model (Linux `pipe(7)`): a reader blocks while the buffer is empty and a writer exists; with
//! no writer left it reads EOF (0). A writer blocks while the buffer is full and a reader exists;
//! with no reader left it gets `EPIPE` and SIGPIPE. The counts of open read and write ends are
//! kept by the open-file descriptions (`fs::OpenFile`), which bump them when created and drop
//! them when the last descriptor sharing them closes. Readers sleep on the pipe's address as the
//! wait channel (`proc::sleep`), writers on the next byte's, and every state change wakes the
//! side it concerns (both when an end closes). With `O_NONBLOCK`
//! the calls answer `EAGAIN` instead of sleeping.
//!
//! The buffer is a queue of segments (Linux `pipe_buffer`s): bytes copied in by `write`, or
//! user pages `vmsplice` took plain references on (`get_user_pages`, `FOLL_GET`). A page
//! segment is read straight from its frame, and its reference is released when the reader has
//! consumed it or when the pipe itself goes away (both ends closed) — never leaked, never held
//! past the pipe.
#![deny(unsafe_code)]

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_mm::pin::PinnedPage;
use spin::Mutex;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::rw::{stream_write, CHUNK};
use super::stat::{statfs_of, Stat, StatFs, PIPEFS_MAGIC, S_IFIFO};
use crate::errno::Errno;
use crate::memory;
use crate::proc;

/// Linux's default pipe capacity.
pub const CAPACITY: usize = 65536;
/// The capacity a pipe gets once the pipes' budget is spent (Linux `PIPE_MIN_DEF_BUFFERS`,
/// two pages, what a user over `pipe-user-pages-soft` gets).
pub const MIN_CAPACITY: usize = 8192;
/// Segments (Linux `pipe_buffer`s) a pipe holds at most: `CAPACITY` in pages, as Linux's 16
/// buffers, so one-byte `vmsplice`s or alternating writes cannot grow the queue past 16.
const MAX_SEGS: usize = CAPACITY / PAGE;
const PAGE: usize = 4096;

/// Bytes of capacity all pipes may reserve at their default size (Linux's
/// `pipe-user-pages-soft`, system-wide here): the queued bytes live on the fixed-size kernel
/// heap, so the sum of every pipe's capacity must stay well inside it.
const SOFT_BUDGET: usize = 16 * 1024 * 1024;
/// Past this, `pipe2` fails with `ENFILE` (Linux `pipe-user-pages-hard`).
const HARD_BUDGET: usize = 24 * 1024 * 1024;
/// Capacity reserved by the pipes that exist.
static RESERVED: AtomicUsize = AtomicUsize::new(0);

/// Reserves a new pipe's capacity: the default while the soft budget allows it, the minimum up
/// to the hard budget, else `None` (Linux `alloc_pipe_info` with `too_many_pipe_buffers_*`).
fn reserve_capacity() -> Option<usize> {
    for want in [CAPACITY, MIN_CAPACITY] {
        let limit = if want == CAPACITY {
            SOFT_BUDGET
        } else {
            HARD_BUDGET
        };
        let got = RESERVED.try_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            (r + want <= limit).then_some(r + want)
        });
        if got.is_ok() {
            return Some(want);
        }
    }
    None
}

enum Segment {
    Bytes(VecDeque<u8>),
    /// `len` bytes of a referenced page from byte `off`.
    Page {
        page: PinnedPage,
        off: usize,
        len: usize,
    },
}

#[derive(Default)]
struct State {
    segs: VecDeque<Segment>,
    /// Bytes in `segs`.
    bytes: usize,
    readers: usize,
    writers: usize,
}

impl State {
    /// Moves up to `len` bytes from the front of the queue, releasing consumed pages.
    /// Puts bytes a reader took but could not deliver back at the front (see `Pipe::read`).
    fn unread(&mut self, tail: &[u8]) {
        self.segs
            .push_front(Segment::Bytes(tail.iter().copied().collect()));
        self.bytes += tail.len();
    }

    fn take(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < len {
            let Some(front) = self.segs.front_mut() else {
                break;
            };
            let want = len - out.len();
            let finished = match front {
                Segment::Bytes(b) => {
                    let n = want.min(b.len());
                    out.extend(b.drain(..n));
                    b.is_empty()
                }
                Segment::Page { page, off, len } => {
                    let n = want.min(*len);
                    let at = out.len();
                    out.resize(at + n, 0);
                    page.dma_read(memory::mm(), *off, &mut out[at..]);
                    *off += n;
                    *len -= n;
                    *len == 0
                }
            };
            if finished {
                if let Some(Segment::Page { page, .. }) = self.segs.pop_front() {
                    page.unpin(memory::mm());
                }
            }
        }
        self.bytes -= out.len();
        out
    }
}

pub struct Pipe {
    state: Mutex<State>,
    /// Bytes the pipe may hold (reserved from the budget by `Pipe::new`).
    capacity: usize,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.capacity, Ordering::Relaxed);
        for seg in self.state.get_mut().segs.drain(..) {
            if let Segment::Page { page, .. } = seg {
                page.unpin(memory::mm());
            }
        }
    }
}

impl Pipe {
    /// A new pipe with its capacity reserved; `ENFILE` when the pipes' budget is spent.
    pub fn new() -> Result<Pipe, Errno> {
        let capacity = reserve_capacity().ok_or(Errno::ENFILE)?;
        Ok(Pipe {
            state: Mutex::new(State::default()),
            capacity,
        })
    }

    /// Readers sleep here, woken by new data and a writer's close (Linux `rd_wait`).
    fn rd_channel(&self) -> usize {
        self as *const Pipe as usize
    }

    /// Writers sleep here, woken by freed room and a reader's close (Linux `wr_wait`). Two
    /// channels, so an epoll watching the read end edge-triggered is not woken by its own reads.
    fn wr_channel(&self) -> usize {
        self as *const Pipe as usize + 1
    }

    /// The channel an end's poll answer changes on: readers' for the read end.
    pub fn poll_channel(&self, write: bool) -> usize {
        if write {
            self.wr_channel()
        } else {
            self.rd_channel()
        }
    }

    pub fn add_end(&self, write: bool) {
        let mut state = self.state.lock();
        if write {
            state.writers += 1;
        } else {
            state.readers += 1;
        }
    }

    pub fn drop_end(&self, write: bool) {
        {
            let mut state = self.state.lock();
            if write {
                state.writers -= 1;
            } else {
                state.readers -= 1;
            }
        }
        proc::wakeup(self.rd_channel());
        proc::wakeup(self.wr_channel());
    }

    /// Reads into `out` (via `copy`, which moves bytes to the user and says how many it
    /// moved); blocks while empty. A copy that falls short (a buffer that faults part-way) is
    /// `EFAULT` and the chunk goes back to the front of the pipe, so nothing is lost: Linux's
    /// `pipe_read` copies under the pipe mutex and consumes a buffer only once it was copied
    /// whole. (The copy runs unlocked here, as a user copy may fault; a second reader racing
    /// the put-back could see later bytes first, which Linux's mutex excludes.)
    pub fn read(
        &self,
        nonblock: bool,
        len: usize,
        copy: &mut dyn FnMut(&[u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        if len == 0 {
            return Ok(0);
        }
        loop {
            let chunk: Option<Vec<u8>> = {
                let mut state = self.state.lock();
                if state.bytes == 0 {
                    if state.writers == 0 {
                        return Ok(0);
                    }
                    None
                } else {
                    Some(state.take(len))
                }
            };
            let Some(chunk) = chunk else {
                if nonblock {
                    return Err(Errno::EAGAIN);
                }
                proc::sleep_interruptible(self.rd_channel())?;
                continue;
            };
            let moved = copy(&chunk);
            if moved != Ok(chunk.len()) {
                self.state.lock().unread(&chunk);
                return Err(moved.err().unwrap_or(Errno::EFAULT));
            }
            proc::wakeup(self.wr_channel());
            return moved;
        }
    }

    /// Writes all of `data`, blocking while full; `EPIPE` once no reader is left.
    /// Linux `pipe_poll` for the read end (`write` false) or the write end.
    pub fn poll_mask(&self, write: bool) -> u32 {
        use super::poll::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM};
        let state = self.state.lock();
        let mut mask = 0;
        if write {
            let slot =
                matches!(state.segs.back(), Some(Segment::Bytes(_))) || state.segs.len() < MAX_SEGS;
            if slot && state.bytes < self.capacity {
                mask |= POLLOUT | POLLWRNORM;
            }
            if state.readers == 0 {
                mask |= POLLERR;
            }
        } else {
            if state.bytes > 0 {
                mask |= POLLIN | POLLRDNORM;
            }
            if state.writers == 0 {
                mask |= POLLHUP;
            }
        }
        mask
    }

    pub fn write(&self, nonblock: bool, data: &[u8]) -> Result<usize, Errno> {
        let mut done = 0;
        while done < data.len() || data.is_empty() {
            {
                let mut state = self.state.lock();
                if state.readers == 0 {
                    drop(state);
                    proc::send_signal_current(proc::SIGPIPE);
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::EPIPE)
                    };
                }
                if data.is_empty() {
                    return Ok(0);
                }
                // A new bytes segment needs a free slot (16 at most, as Linux's buffers).
                let slot = matches!(state.segs.back(), Some(Segment::Bytes(_)))
                    || state.segs.len() < MAX_SEGS;
                let room = if slot { self.capacity - state.bytes } else { 0 };
                let n = room.min(data.len() - done);
                // The bytes live on the kernel heap: as Linux's `pipe_write` when no page can
                // be had, ENOMEM unless something was written.
                if n > 0 && crate::heap::headroom(n + 64).is_err() {
                    drop(state);
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::ENOMEM)
                    };
                }
                if n > 0 {
                    if !matches!(state.segs.back(), Some(Segment::Bytes(_))) {
                        state.segs.push_back(Segment::Bytes(VecDeque::new()));
                    }
                    if let Some(Segment::Bytes(b)) = state.segs.back_mut() {
                        b.extend(&data[done..done + n]);
                    }
                    state.bytes += n;
                }
                done += n;
            }
            proc::wakeup(self.rd_channel());
            if done < data.len() {
                if nonblock {
                    return if done > 0 {
                        Ok(done)
                    } else {
                        Err(Errno::EAGAIN)
                    };
                }
                proc::sleep_interruptible(self.wr_channel())?;
            }
        }
        Ok(done)
    }

    /// Queues the referenced pages of `pages` in order (`vmsplice`): the first at byte `off`,
    /// each for as much of `len` bytes in all as it holds. One lock and one wake-up per batch
    /// (Linux `iter_to_pipe` + `add_to_pipe`). Blocks while full and nothing is queued yet
    /// unless `nonblock`; `EPIPE`
    /// (and `SIGPIPE`) once no reader is left. Returns the bytes queued, or the error (`EPIPE`,
    /// `EAGAIN`, `EINTR`) when nothing was; the pages left in `pages` were not queued and stay
    /// the caller's to release.
    pub fn push_pages(
        &self,
        nonblock: bool,
        pages: &mut [Option<PinnedPage>],
        mut off: usize,
        mut len: usize,
    ) -> Result<usize, Errno> {
        let mut queued = 0;
        let mut next = 0;
        while next < pages.len() && len > 0 {
            {
                let mut state = self.state.lock();
                if state.readers == 0 {
                    drop(state);
                    if queued == 0 {
                        proc::send_signal_current(proc::SIGPIPE);
                        return Err(Errno::EPIPE);
                    }
                    break;
                }
                while next < pages.len() && len > 0 {
                    let n = (PAGE - off).min(len);
                    if self.capacity - state.bytes < n || state.segs.len() >= MAX_SEGS {
                        break;
                    }
                    let page = pages[next].take().expect("GUP filled the slot");
                    state.segs.push_back(Segment::Page { page, off, len: n });
                    state.bytes += n;
                    queued += n;
                    len -= n;
                    off = 0;
                    next += 1;
                }
            }
            if next == pages.len() || len == 0 {
                break;
            }
            // Full: let a reader in before sleeping (it may be the one to drain the pipe).
            if queued > 0 {
                proc::wakeup(self.rd_channel());
            }
            // Sleeps only while nothing is queued: with some pages in, a full pipe ends the
            // call (Linux `iter_to_pipe` stops at a full pipe).
            if nonblock || queued > 0 {
                if queued == 0 {
                    return Err(Errno::EAGAIN);
                }
                return Ok(queued);
            }
            if let Err(e) = proc::sleep_interruptible(self.wr_channel()) {
                if queued == 0 {
                    return Err(e);
                }
                return Ok(queued);
            }
        }
        proc::wakeup(self.rd_channel());
        Ok(queued)
    }
}

/// One end of a pipe as an open file: the description counts as one reader or writer from
/// its creation until it is dropped (the last descriptor sharing it closed).
pub struct PipeEnd {
    pub pipe: Arc<Pipe>,
    pub write: bool,
}

impl PipeEnd {
    pub fn new(pipe: Arc<Pipe>, write: bool) -> PipeEnd {
        pipe.add_end(write);
        PipeEnd { pipe, write }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        self.pipe.drop_end(self.write);
    }
}

impl FileOps for PipeEnd {
    /// One segment's worth at most (what is there, up to the iterator's count): a reader that
    /// got data does not block for more.
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        if self.write {
            return Err(Errno::EBADF);
        }
        self.pipe
            .read(io.nonblock(), to.count().min(CHUNK), &mut |chunk| {
                let copied = to.copy_to(chunk);
                to.finish(copied)
            })
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        if !self.write {
            return Err(Errno::EBADF);
        }
        let nonblock = io.nonblock();
        stream_write(from, &mut |data| self.pipe.write(nonblock, data))
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn poll(&self, _file: &super::OpenFile) -> u32 {
        self.pipe.poll_mask(self.write)
    }

    fn poll_channels(&self, _file: &super::OpenFile) -> Option<[usize; 2]> {
        let c = self.pipe.poll_channel(self.write);
        Some([c, c])
    }

    fn stat(&self) -> Stat {
        Stat::base(S_IFIFO | 0o600, Arc::as_ptr(&self.pipe) as u64 % 1_000_000)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(PIPEFS_MAGIC, 0)
    }

    fn fallocate(&self, _mode: i32, _offset: u64, _len: u64) -> Result<(), Errno> {
        Err(Errno::ESPIPE)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A new pipe's two open files, read end then write end, with the status flags `status`
/// (`O_NONBLOCK`) (Linux `create_pipe_files`).
pub fn open_pair(status: u32) -> Result<(Arc<super::OpenFile>, Arc<super::OpenFile>), Errno> {
    let pipe = Arc::new(Pipe::new()?);
    let reader = super::OpenFile::new(
        alloc::boxed::Box::new(PipeEnd::new(pipe.clone(), false)),
        status,
    );
    let writer = super::OpenFile::new(
        alloc::boxed::Box::new(PipeEnd::new(pipe, true)),
        super::O_WRONLY | status,
    );
    Ok((reader, writer))
}
