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
/// Writes of at most this many bytes are atomic (POSIX `PIPE_BUF`, Linux's 4096).
pub const PIPE_BUF: usize = 4096;

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

/// The pipe's segments in order (Linux's `pipe->bufs` ring of `pipe_buffer`s): a fixed ring
/// of [`MAX_SEGS`] slots, so that a batch of pages is written straight into its slots.
struct Ring {
    slots: [Option<Segment>; MAX_SEGS],
    /// The slot of the front segment.
    head: usize,
    len: usize,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            slots: [const { None }; MAX_SEGS],
            head: 0,
            len: 0,
        }
    }
}

impl Ring {
    /// The slot `i` places after the front (`MAX_SEGS` is a power of two).
    fn slot(&self, i: usize) -> usize {
        self.head.wrapping_add(i) % MAX_SEGS
    }

    fn len(&self) -> usize {
        self.len
    }

    fn front_mut(&mut self) -> Option<&mut Segment> {
        if self.len == 0 {
            return None;
        }
        self.slots[self.head].as_mut()
    }

    fn back(&self) -> Option<&Segment> {
        if self.len == 0 {
            return None;
        }
        self.slots[self.slot(self.len - 1)].as_ref()
    }

    fn back_mut(&mut self) -> Option<&mut Segment> {
        if self.len == 0 {
            return None;
        }
        let at = self.slot(self.len - 1);
        self.slots[at].as_mut()
    }

    fn pop_front(&mut self) -> Option<Segment> {
        if self.len == 0 {
            return None;
        }
        let seg = self.slots[self.head].take();
        self.head = self.slot(1);
        self.len -= 1;
        seg
    }

    /// Moves the page in `slot` (GUP filled it) into ring slot `at`, which is free: `len`
    /// bytes from `off`. The caller stores the ring's new length. A slot in use would be a
    /// kernel bug (the caller counted the free slots under the lock), checked in every
    /// profile: overwriting it would leak its page reference.
    #[inline(always)]
    fn put(&mut self, at: usize, slot: &mut Option<PinnedPage>, off: usize, len: usize) {
        assert!(self.slots[at].is_none(), "pipe ring slot in use");
        let page = slot.take().expect("GUP filled the slot");
        self.slots[at] = Some(Segment::Page { page, off, len });
    }

    /// Appends `seg`; the caller checked a slot is free.
    fn push_back(&mut self, seg: Segment) {
        assert!(self.len < MAX_SEGS, "pipe ring overflow");
        let at = self.slot(self.len);
        self.slots[at] = Some(seg);
        self.len += 1;
    }

    /// Puts `seg` before the front; the caller checked a slot is free.
    fn push_front(&mut self, seg: Segment) {
        assert!(self.len < MAX_SEGS, "pipe ring overflow");
        self.head = self.slot(MAX_SEGS - 1);
        self.slots[self.head] = Some(seg);
        self.len += 1;
    }
}

#[derive(Default)]
struct State {
    segs: Ring,
    /// Bytes in `segs`.
    bytes: usize,
    readers: usize,
    writers: usize,
}

impl State {
    /// Moves up to `len` bytes from the front of the queue, releasing consumed pages.
    /// Puts bytes a reader took but could not deliver back at the front (see `Pipe::read`).
    /// No capacity check: the bytes were in the pipe, and writers may have filled the room
    /// they left while the reader's copy slept, so `bytes` can end up past the capacity until
    /// readers drain it (every room computation saturates).
    fn unread(&mut self, tail: &[u8]) {
        self.bytes += tail.len();
        if self.segs.len() < MAX_SEGS {
            self.segs
                .push_front(Segment::Bytes(tail.iter().copied().collect()));
            return;
        }
        // No free slot (writers filled the ring while the copy ran): the bytes join the front
        // segment, a page's rest copied out and its reference released if it is one.
        let Some(front) = self.segs.front_mut() else {
            return;
        };
        let mut bytes: VecDeque<u8> = tail.iter().copied().collect();
        match front {
            Segment::Bytes(b) => bytes.extend(b.drain(..)),
            Segment::Page { page, off, len } => {
                let mut rest = alloc::vec![0; *len];
                page.dma_read(memory::mm(), *off, &mut rest);
                bytes.extend(rest);
            }
        }
        if let Segment::Page { page, .. } = core::mem::replace(front, Segment::Bytes(bytes)) {
            page.unpin(memory::mm());
        }
    }

    /// Queues every page of `pages` (the caller checked they fit, [`Pipe::pages_that_fit`],
    /// and that each holds some of the bytes), the first from byte `off`, `len` bytes in all
    /// at most; returns the bytes queued. The segments are written straight into the free
    /// slots and the ring's length stored once: the slot and byte tests were made for the
    /// batch, and every page but the first and the last is a whole page.
    fn queue_pages(&mut self, pages: &mut [Option<PinnedPage>], off: usize, len: usize) -> usize {
        let k = pages.len();
        assert!(k <= MAX_SEGS - self.segs.len, "pipe ring overflow");
        let Some((last, firsts)) = pages.split_last_mut() else {
            return 0;
        };
        let queued = len.min(k * PAGE - off);
        let mut at = self.segs.slot(self.segs.len);
        let mut first_off = off;
        // The pages before the last run to their ends.
        for slot in firsts.iter_mut() {
            self.segs.put(at, slot, first_off, PAGE - first_off);
            first_off = 0;
            at = (at + 1) % MAX_SEGS;
        }
        // The last holds what is left: the whole batch's bytes less the others'.
        let before = if k == 1 { 0 } else { k * PAGE - off - PAGE };
        self.segs.put(at, last, first_off, queued - before);
        self.segs.len += k;
        self.bytes += queued;
        queued
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
        let segs = &mut self.state.get_mut().segs;
        while let Some(seg) = segs.pop_front() {
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

    /// Bytes the pipe may hold (`F_GETPIPE_SZ`'s answer).
    pub fn capacity(&self) -> usize {
        self.capacity
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
                // While the copy ran the pipe looked empty, so another reader (or a poll or
                // epoll waiter) may have gone to sleep on it: the bytes are back, wake them.
                proc::wakeup(self.rd_channel());
                return Err(moved.err().unwrap_or(Errno::EFAULT));
            }
            proc::wakeup(self.wr_channel());
            return moved;
        }
    }

    /// Linux `pipe_poll` for the read end (`write` false) or the write end.
    pub fn poll_mask(&self, write: bool) -> u32 {
        use super::poll::{POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM};
        let state = self.state.lock();
        let mut mask = 0;
        if write {
            // Writable as Linux's `pipe_poll` means it (`!pipe_full`: a free buffer, which is a
            // page of room there): a free slot and a page of room, so that a `PIPE_BUF` write
            // and a page's `vmsplice` both proceed. Room only in the last bytes segment of a
            // full ring does not count: a `vmsplice` would be EAGAIN.
            if state.segs.len() < MAX_SEGS && self.capacity.saturating_sub(state.bytes) >= PAGE {
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

    /// Writes `data` as a whole `write(2)` of it ([`Pipe::write_with`]).
    pub fn write(&self, nonblock: bool, data: &[u8]) -> Result<usize, Errno> {
        self.write_with(nonblock, data.len() <= PIPE_BUF, data)
    }

    /// Writes all of `data`, blocking while full; `EPIPE` once no reader is left. An `atomic`
    /// write (a `write(2)` of at most [`PIPE_BUF`] bytes in all, POSIX) goes in whole or not
    /// at all: it waits (or is `EAGAIN`) until all of it fits, so it never interleaves with
    /// another writer's bytes (Linux `pipe_write`'s `total_len <= PIPE_BUF` case). A larger
    /// write takes whatever room there is, so it may be partial.
    pub fn write_with(&self, nonblock: bool, atomic: bool, data: &[u8]) -> Result<usize, Errno> {
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
                // Saturating: a faulting read's put-back (`State::unread`) may leave more
                // than the capacity queued, when writers filled the pipe while its copy slept.
                let room = if slot {
                    self.capacity.saturating_sub(state.bytes)
                } else {
                    0
                };
                let left = data.len() - done;
                let n = if atomic && room < left {
                    0
                } else {
                    room.min(left)
                };
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
        off: usize,
        len: usize,
    ) -> Result<usize, Errno> {
        // The pages `len` bytes from `off` cover (at most `pages.len()`).
        let want = (off + len).div_ceil(PAGE).min(pages.len());
        if want == 0 || len == 0 {
            return Ok(0);
        }
        loop {
            let queued = {
                let mut state = self.state.lock();
                if state.readers == 0 {
                    drop(state);
                    proc::send_signal_current(proc::SIGPIPE);
                    return Err(Errno::EPIPE);
                }
                let fit = self.pages_that_fit(&state, want, off, len);
                if fit > 0 {
                    Some(state.queue_pages(&mut pages[..fit], off, len))
                } else {
                    None
                }
            };
            if let Some(queued) = queued {
                // One wake-up for the batch; with some pages in, a full pipe ends the call
                // (Linux `iter_to_pipe` stops at a full pipe, no wait for the rest).
                proc::wakeup(self.rd_channel());
                return Ok(queued);
            }
            // Nothing fits: wait for room before the first page (Linux `wait_for_space`).
            if nonblock {
                return Err(Errno::EAGAIN);
            }
            proc::sleep_interruptible(self.wr_channel())?;
        }
    }

    /// How many of `want` pages, the first from byte `off` and `len` bytes in all, fit now:
    /// a free segment slot each (16 in all, Linux's buffers) and the bytes of the leading
    /// pages within the capacity left (a page is queued whole or not at all).
    fn pages_that_fit(&self, state: &State, want: usize, off: usize, len: usize) -> usize {
        let slots = MAX_SEGS.saturating_sub(state.segs.len());
        let room = self.capacity.saturating_sub(state.bytes);
        let by_bytes = if len <= room {
            want
        } else {
            // Fewer than all: the first `k` pages hold `k * PAGE - off` bytes (the last of
            // all `want` pages, the only short one, does not fit).
            (room + off) / PAGE
        };
        want.min(slots).min(by_bytes)
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
        // Atomicity is the whole call's: a write of at most PIPE_BUF bytes reaches the pipe in
        // one step (CHUNK is larger), the short tail of a larger one is not atomic.
        let atomic = from.count() <= PIPE_BUF;
        stream_write(from, &mut |data| {
            self.pipe.write_with(nonblock, atomic, data)
        })
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
