//! [`IoIter`]: the one description of where the bytes of a read come to or a write come from
//! (Linux `struct iov_iter`). Every read and write of a file takes one, whatever called it
//! (`read`/`readv`/`pread64`/`preadv2`, Linux AIO, io_uring `READ`/`READV`/`READ_FIXED`), so a
//! file type implements each direction once ([`super::FileOps::read_iter`]/`write_iter`).
//!
//! Kinds, as Linux's:
//! - `ITER_UBUF`/`ITER_IOVEC`: user ranges, each checked against the user half when the
//!   iterator is made; copies go through `uaccess` and stop at the first fault.
//! - `ITER_BVEC`: part of an io_uring registered buffer, whose frames are pinned long-term.
//!   Copies go through the frames (the kernel's direct map), never the page tables; a device
//!   that can DMA asks for the pieces ([`IoIter::piece`]) and puts their frames in its
//!   descriptors instead of copying.
//! - `ITER_KVEC`: a kernel buffer.
//!
//! Faults: a copy moves bytes until the first one that faults and reports how many it moved
//! ([`IoIter::copy_to`]/[`IoIter::copy_from`]); the caller returns the bytes done, and
//! [`IoIter::finish`] turns "none done because of a fault" into `EFAULT` (Linux's rule for
//! every read and write: a short count, `EFAULT` only if nothing moved).
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use cowlab_mm::regbuf::RegisteredBuffer;

use crate::errno::Errno;
use crate::memory;
use crate::uaccess::{UserPtr, UserSlice};

/// Linux `MAX_RW_COUNT` (`INT_MAX & PAGE_MASK`): one read or write moves at most this much;
/// longer requests are shortened before their buffers are checked.
pub const MAX_RW_COUNT: usize = 0x7fff_f000;
/// Linux `UIO_MAXIOV`.
pub const UIO_MAXIOV: usize = 1024;
/// Linux `UIO_FASTIOV`: an iovec array up to this long is kept inside the iterator, on the
/// caller's stack; longer ones go to the heap. The common one-iovec `vmsplice`/`readv` thus
/// costs no allocation and free (~200 instructions a call).
pub const UIO_FASTIOV: usize = 8;

/// The segments of an `ITER_IOVEC` iterator, inline when few (see [`UIO_FASTIOV`]).
enum Segs {
    Inline {
        segs: [UserSlice; UIO_FASTIOV],
        len: usize,
    },
    Heap(Vec<UserSlice>),
}

impl Segs {
    /// Room for `count` segments (`ENOMEM` only for a long array the heap cannot hold).
    fn with_capacity(count: usize) -> Result<Segs, Errno> {
        if count <= UIO_FASTIOV {
            return Ok(Segs::Inline {
                segs: [UserSlice::empty(); UIO_FASTIOV],
                len: 0,
            });
        }
        let mut v = Vec::new();
        v.try_reserve_exact(count).map_err(|_| Errno::ENOMEM)?;
        Ok(Segs::Heap(v))
    }

    /// Appends a segment; the caller made room for it in [`Segs::with_capacity`].
    fn push(&mut self, seg: UserSlice) {
        match self {
            Segs::Inline { segs, len } => {
                if let Some(slot) = segs.get_mut(*len) {
                    *slot = seg;
                    *len += 1;
                }
            }
            Segs::Heap(v) => v.push(seg),
        }
    }

    fn as_slice(&self) -> &[UserSlice] {
        match self {
            Segs::Inline { segs, len } => &segs[..*len],
            Segs::Heap(v) => v,
        }
    }
}

/// The registration a `BVEC` iterator's buffer belongs to, kept alive by a device request
/// that must hold the frames pinned until it completes.
pub type BufferOwner = Arc<dyn core::any::Any + Send + Sync>;

enum Kind<'a> {
    Ubuf(UserSlice),
    Iovec(Segs),
    Bvec {
        buf: &'a RegisteredBuffer,
        /// Offset of the iterator's first byte within the buffer.
        offset: usize,
        owner: BufferOwner,
    },
    /// A kernel buffer the iterator fills (a read).
    KvecDest(&'a mut [u8]),
    /// A kernel buffer the iterator drains (a write).
    KvecSource(&'a [u8]),
}

/// A contiguous piece of what an iterator covers, from its current position.
pub enum Piece<'i> {
    User(UserSlice),
    /// `len` bytes at `offset` of a registered buffer (its frames: `for_each_segment`).
    Frames {
        buf: &'i RegisteredBuffer,
        offset: usize,
        len: usize,
        owner: &'i BufferOwner,
    },
    Kernel(usize),
}

/// Where the bytes of one read or write go or come from; see the module comment.
pub struct IoIter<'a> {
    kind: Kind<'a>,
    /// Bytes left.
    count: usize,
    /// For `Iovec`: the current segment; all kinds: the offset within it (bytes consumed).
    seg: usize,
    seg_off: usize,
    /// A copy stopped at a fault.
    faulted: bool,
}

impl<'a> IoIter<'a> {
    fn new(kind: Kind<'a>, count: usize) -> IoIter<'a> {
        IoIter {
            kind,
            count,
            seg: 0,
            seg_off: 0,
            faulted: false,
        }
    }

    /// `ITER_UBUF` over `[addr, addr + len)` as `read`/`write`/`pread64`/`pwrite64` make it
    /// (Linux `vfs_read`): the whole range must lie in the user half (`EFAULT`), then the
    /// length is cut to [`MAX_RW_COUNT`].
    pub fn user(addr: u64, len: usize) -> Result<IoIter<'static>, Errno> {
        UserSlice::new(addr, len)?;
        IoIter::ubuf(addr, len)
    }

    /// `ITER_UBUF` as Linux's `import_ubuf` makes it (AIO, io_uring `READ`/`WRITE`): the length
    /// is first cut to [`MAX_RW_COUNT`], then the range must lie in the user half (`EFAULT`).
    pub fn ubuf(addr: u64, len: usize) -> Result<IoIter<'static>, Errno> {
        let len = len.min(MAX_RW_COUNT);
        Ok(IoIter::new(Kind::Ubuf(UserSlice::new(addr, len)?), len))
    }

    /// `ITER_IOVEC` over the `count` `struct iovec`s at `addr` (Linux `import_iovec`):
    /// `EINVAL` for more than [`UIO_MAXIOV`] or a length that is negative as `ssize_t`,
    /// `EFAULT` for an unreadable array or a range outside the user half; then the total is
    /// cut to [`MAX_RW_COUNT`]. One vector is [`IoIter::ubuf`]'s: cut first, then checked.
    pub fn iovec(addr: u64, count: i64) -> Result<IoIter<'static>, Errno> {
        if !(0..=UIO_MAXIOV as i64).contains(&count) {
            return Err(Errno::EINVAL);
        }
        if count == 1 {
            // One vector is `ITER_UBUF` (Linux 6.4's `import_iovec` -> `import_ubuf`): no
            // segment array to fill and walk (`vmsplice`'s common call). Its checks are
            // `import_ubuf`'s, not the array's: the length is cut to MAX_RW_COUNT *before*
            // the range check, so `{buf, 0x7fffffffffff0000}` reads what there is rather than
            // `EFAULT`. A negative length is still `EINVAL` (`copy_iovec_from_user`).
            let [base, len] = UserPtr::<[u64; 2]>::new(addr)?.read()?;
            if (len as i64) < 0 {
                return Err(Errno::EINVAL);
            }
            return IoIter::ubuf(base, len as usize);
        }
        let mut segs = Segs::with_capacity(count as usize)?;
        let mut total = 0usize;
        for i in 0..count as u64 {
            let at = addr.checked_add(16 * i).ok_or(Errno::EFAULT)?;
            let [base, len] = UserPtr::<[u64; 2]>::new(at)?.read()?;
            if (len as i64) < 0 {
                return Err(Errno::EINVAL);
            }
            let seg = UserSlice::new(base, len as usize)?;
            let len = seg.len().min(MAX_RW_COUNT - total);
            segs.push(seg.sub(0, len));
            total += len;
        }
        Ok(IoIter::new(Kind::Iovec(segs), total))
    }

    /// `ITER_BVEC` over `[offset, offset + len)` of a registered buffer (the caller checked the
    /// range lies inside it); `owner` keeps the registration for a device request.
    pub fn bvec(
        buf: &'a RegisteredBuffer,
        offset: usize,
        len: usize,
        owner: BufferOwner,
    ) -> IoIter<'a> {
        IoIter::new(Kind::Bvec { buf, offset, owner }, len)
    }

    /// `ITER_KVEC` that a read fills.
    pub fn kernel_dest(buf: &'a mut [u8]) -> IoIter<'a> {
        let len = buf.len();
        IoIter::new(Kind::KvecDest(buf), len)
    }

    /// `ITER_KVEC` that a write drains.
    pub fn kernel_source(buf: &'a [u8]) -> IoIter<'a> {
        let len = buf.len();
        IoIter::new(Kind::KvecSource(buf), len)
    }

    /// Bytes left (Linux `iov_iter_count`).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Shortens the iterator to at most `len` bytes (Linux `iov_iter_truncate`).
    pub fn truncate(&mut self, len: usize) {
        self.count = self.count.min(len);
    }

    /// Whether a copy stopped at a fault.
    pub fn faulted(&self) -> bool {
        self.faulted
    }

    /// The result of a read or write that moved `done` bytes: `EFAULT` if none moved because a
    /// copy faulted, else the count.
    pub fn finish(&self, done: usize) -> Result<usize, Errno> {
        if done == 0 && self.faulted {
            Err(Errno::EFAULT)
        } else {
            Ok(done)
        }
    }

    /// The contiguous piece at the current position, at most `max` bytes (`None` when the
    /// iterator is exhausted).
    pub fn piece(&mut self, max: usize) -> Option<Piece<'_>> {
        let want = self.count.min(max);
        if want == 0 {
            return None;
        }
        if let Kind::Iovec(segs) = &self.kind {
            let segs = segs.as_slice();
            // Skip exhausted and empty segments.
            while segs.get(self.seg).is_some_and(|s| self.seg_off >= s.len()) {
                self.seg += 1;
                self.seg_off = 0;
            }
        }
        Some(match &self.kind {
            Kind::Ubuf(s) => Piece::User(s.sub(self.seg_off, want)),
            Kind::Iovec(segs) => {
                Piece::User(segs.as_slice().get(self.seg)?.sub(self.seg_off, want))
            }
            Kind::Bvec { buf, offset, owner } => Piece::Frames {
                buf,
                offset: offset + self.seg_off,
                len: want,
                owner,
            },
            Kind::KvecDest(_) | Kind::KvecSource(_) => Piece::Kernel(want),
        })
    }

    /// The next user range of a `UBUF` or `IOVEC` iterator, consumed whole (a [`piece`] with no
    /// limit, then an [`advance`] over it); `None` at the end or for another kind. One step
    /// for a `UBUF` (`vmsplice`'s one iovec).
    ///
    /// [`piece`]: IoIter::piece
    /// [`advance`]: IoIter::advance
    pub fn next_user(&mut self) -> Option<UserSlice> {
        if let Kind::Ubuf(s) = &self.kind {
            if self.count == 0 {
                return None;
            }
            let range = s.sub(self.seg_off, self.count);
            self.seg_off += range.len();
            self.count -= range.len();
            return Some(range);
        }
        let Piece::User(range) = self.piece(usize::MAX)? else {
            return None;
        };
        self.advance(range.len());
        Some(range)
    }

    /// Moves the position `n` bytes on (at most what is left).
    pub fn advance(&mut self, n: usize) {
        let mut n = n.min(self.count);
        self.count -= n;
        if let Kind::Iovec(segs) = &self.kind {
            let segs = segs.as_slice();
            while n > 0 {
                let Some(seg) = segs.get(self.seg) else { break };
                let step = (seg.len() - self.seg_off.min(seg.len())).min(n);
                self.seg_off += step;
                n -= step;
                if self.seg_off >= seg.len() {
                    self.seg += 1;
                    self.seg_off = 0;
                }
            }
        } else {
            self.seg_off += n;
        }
    }

    /// Copies `data` to the destination until done, exhausted or a fault; the bytes copied
    /// (Linux `copy_to_iter`).
    pub fn copy_to(&mut self, data: &[u8]) -> usize {
        let mut done = 0;
        while done < data.len() {
            let Some(piece) = self.piece(data.len() - done) else {
                break;
            };
            let chunk = &data[done..];
            let n = match piece {
                Piece::User(slice) => {
                    let want = slice.len();
                    let n = slice.write_partial(&chunk[..want]);
                    if n < want {
                        self.faulted = true;
                    }
                    n
                }
                Piece::Frames {
                    buf, offset, len, ..
                } => {
                    buf.dma_write(memory::mm(), offset, &chunk[..len]);
                    len
                }
                Piece::Kernel(len) => match &mut self.kind {
                    Kind::KvecDest(dest) => {
                        dest[self.seg_off..self.seg_off + len].copy_from_slice(&chunk[..len]);
                        len
                    }
                    // A write's source is not a destination.
                    _ => 0,
                },
            };
            self.advance(n);
            done += n;
            if n == 0 || self.faulted {
                break;
            }
        }
        done
    }

    /// Whether every byte goes to or comes from user memory (`ITER_UBUF`/`ITER_IOVEC`).
    pub fn is_user(&self) -> bool {
        matches!(self.kind, Kind::Ubuf(_) | Kind::Iovec(_))
    }

    /// Copies `len` bytes of the frame memory at `frame` to a user destination until done,
    /// exhausted or a fault; the bytes copied (Linux `copy_page_to_iter`: the cached page goes
    /// to the user with no kernel buffer between). Only for [`Self::is_user`] iterators (a
    /// piece of any other kind ends the copy). The caller holds a reference to the frame.
    pub fn copy_frame_to_user(&mut self, frame: cowlab_mm::PhysAddr, len: usize) -> usize {
        let mut done = 0;
        while done < len {
            let Some(Piece::User(slice)) = self.piece(len - done) else {
                break;
            };
            let want = slice.len();
            let n = slice.write_partial_from_frame(frame + done as u64, want);
            if n < want {
                self.faulted = true;
            }
            self.advance(n);
            done += n;
            if n == 0 || self.faulted {
                break;
            }
        }
        done
    }

    /// The user pieces from `skip` bytes past the current position, at most `len` bytes in
    /// all, each passed to `f` until it returns `false` (a user iterator only: nothing is
    /// visited for another kind). The position does not move.
    fn each_user_piece_at(&self, skip: usize, len: usize, mut f: impl FnMut(UserSlice) -> bool) {
        let mut skip = skip;
        let mut left = len.min(self.count.saturating_sub(skip));
        let segs: &[UserSlice] = match &self.kind {
            Kind::Ubuf(s) => core::slice::from_ref(s),
            Kind::Iovec(segs) => segs.as_slice(),
            _ => return,
        };
        let mut off = self.seg_off;
        for seg in segs.iter().skip(self.seg) {
            if left == 0 {
                break;
            }
            let avail = seg.len().saturating_sub(off);
            if skip >= avail {
                skip -= avail;
                off = 0;
                continue;
            }
            let piece = seg.sub(off + skip, left);
            skip = 0;
            off = 0;
            left -= piece.len();
            if piece.len() > 0 && !f(piece) {
                break;
            }
        }
    }

    /// Copies `len` source bytes from `skip` bytes past the current position into frame
    /// memory at `frame`, with page faults not served (a buffered write's copy into the cache
    /// page it holds locked, Linux `copy_page_from_iter_atomic`): the bytes copied, short at
    /// the first page that is not present. The position does not move (the caller advances
    /// by what the write took). A user iterator only (0 for another kind).
    pub fn copy_to_frame_nofault(
        &self,
        skip: usize,
        frame: cowlab_mm::PhysAddr,
        len: usize,
    ) -> usize {
        let mut done = 0;
        self.each_user_piece_at(skip, len, |piece| {
            let n = piece.read_partial_to_frame_nofault(frame + done as u64, piece.len());
            done += n;
            n == piece.len()
        });
        done
    }

    /// Fills `buf` from the source until full, exhausted or a fault; the bytes copied (Linux
    /// `copy_from_iter`).
    pub fn copy_from(&mut self, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let Some(piece) = self.piece(buf.len() - done) else {
                break;
            };
            let chunk = &mut buf[done..];
            let n = match piece {
                Piece::User(slice) => {
                    let want = slice.len();
                    let n = slice.read_partial(&mut chunk[..want]);
                    if n < want {
                        self.faulted = true;
                    }
                    n
                }
                Piece::Frames {
                    buf, offset, len, ..
                } => {
                    buf.dma_read(memory::mm(), offset, &mut chunk[..len]);
                    len
                }
                Piece::Kernel(len) => match &self.kind {
                    Kind::KvecSource(src) => {
                        chunk[..len].copy_from_slice(&src[self.seg_off..self.seg_off + len]);
                        len
                    }
                    // A read's destination is not a source.
                    _ => 0,
                },
            };
            self.advance(n);
            done += n;
            if n == 0 || self.faulted {
                break;
            }
        }
        done
    }

    /// Up to `max` bytes of the source in a new vector (short after a fault).
    pub fn copy_from_vec(&mut self, max: usize) -> Result<Vec<u8>, Errno> {
        let mut data = Vec::new();
        data.try_reserve_exact(self.count.min(max))
            .map_err(|_| Errno::ENOMEM)?;
        data.resize(self.count.min(max), 0);
        let n = self.copy_from(&mut data);
        data.truncate(n);
        Ok(data)
    }

    /// The OR of every remaining segment's start address and length (Linux
    /// `iov_iter_alignment`): `O_DIRECT` needs each a multiple of the logical block.
    pub fn alignment(&self) -> u64 {
        let bvec_base =
            |buf: &RegisteredBuffer, offset: usize| buf.start().as_u64() + offset as u64;
        match &self.kind {
            Kind::Ubuf(s) => (s.addr() + self.seg_off as u64) | self.count as u64,
            Kind::Iovec(segs) => {
                let mut left = self.count;
                let mut align = 0;
                for (i, s) in segs.as_slice().iter().enumerate().skip(self.seg) {
                    let skip = if i == self.seg { self.seg_off } else { 0 };
                    let part = s.sub(skip, left);
                    if part.len() == 0 {
                        continue;
                    }
                    align |= part.addr() | part.len() as u64;
                    left -= part.len();
                    if left == 0 {
                        break;
                    }
                }
                align
            }
            Kind::Bvec { buf, offset, .. } => {
                bvec_base(buf, offset + self.seg_off) | self.count as u64
            }
            Kind::KvecDest(_) | Kind::KvecSource(_) => self.count as u64,
        }
    }
}
