//! `/dev/vda`: the virtio block device as a Linux block-device file.
//!
//! Two paths, as Linux's `block/fops.c`:
//! - buffered (`read`/`write`/`pread64`/`pwrite64` without `O_DIRECT`): the covering sectors go
//!   through a kernel bounce buffer (`drivers::dma::DmaRegion`); a write that does not cover
//!   whole sectors reads them first (read-modify-write). There is no page cache: every call
//!   reaches the device.
//! - `O_DIRECT` (0o40000): buffer address, file offset and length must be multiples of the
//!   512-byte logical block (`EINVAL`, Linux `blkdev_dio_invalid`). The user pages are taken
//!   with GUP — `FOLL_WRITE` when the device writes them (a read), read-only when it reads them
//!   — as `FOLL_PIN` pins or, in the eras before Linux 6.5's block-layer conversion, plain
//!   `FOLL_GET` references (`rules::dma_uses_foll_pin`), which is what reopens the fork races
//!   of seed 003. The request's descriptors point at the pages' frames; the caller sleeps until
//!   the interrupt handler finishes it (pages marked dirty after a read, then released). A
//!   buffer that cannot be taken whole is `EFAULT` with nothing left pinned.
//!
//! Range rules (`blkdev_read_iter`, `blkdev_write_iter`): a read at or past the end returns 0,
//! one that crosses it is shortened; a write at or past the end is `ENOSPC`, one that crosses
//! it is shortened; `lseek` past the end is `EINVAL` (`fixed_size_llseek`). Device errors are
//! `EIO`. Large transfers are split into requests of at most [`CHUNK`] bytes; a failure after
//! some data moved returns the bytes moved. Cowlab's race-scripting ioctls hold new requests
//! back from the device and release them (docs/dma.md).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use cowlab_mm::foll::FollFlags;
use cowlab_mm::pin::PinnedPage;
use cowlab_mm::{gup, rules, VirtAddr};

use cowlab_mm::regbuf::RegisteredBuffer;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::{BufferOwner, IoIter, Piece};
use super::stat::{tmpfs_statfs, Stat, StatFs, ST_NOSUID, S_IFBLK};
use crate::drivers::dma::DmaRegion;
pub use crate::drivers::virtio_blk::Op;
use crate::drivers::virtio_blk::{self, Device, Request, SECTOR};
use crate::errno::{Errno, SysResult};
use crate::memory;
use crate::proc;
use crate::uaccess::UserPtr;

pub const O_DIRECT: u32 = 0o40000;

/// Linux `BLKGETSIZE64`: the size in bytes (`u64`).
pub const BLKGETSIZE64: u64 = 0x8008_1272;
/// Linux `BLKGETSIZE`: the size in 512-byte sectors (`unsigned long`).
pub const BLKGETSIZE: u64 = 0x1260;
/// Linux `BLKSSZGET`: the logical block size (`int`).
pub const BLKSSZGET: u64 = 0x1268;
/// Linux `BLKPBSZGET`: the physical block size (`unsigned int`).
pub const BLKPBSZGET: u64 = 0x127b;
/// cowlab: keep requests submitted from now on away from the device (`_IO(0xcb, 1)`).
pub const COWLAB_VDA_HOLD: u64 = 0xcb01;
/// cowlab: hand every held request to the device; returns how many were held (`_IO(0xcb, 2)`).
pub const COWLAB_VDA_RELEASE: u64 = 0xcb02;
/// cowlab: how many requests the driver has not finished yet (`_IO(0xcb, 3)`).
pub const COWLAB_VDA_INFLIGHT: u64 = 0xcb03;

/// Device major/minor as Linux's virtio_blk usually gets them (`/dev/vda` = 254:0).
pub const VDA_RDEV: u64 = 254 << 8;

/// The most bytes one request moves.
pub const CHUNK: usize = 128 * 1024;
const PAGE: usize = 4096;

/// The device behind `/dev/vda`, or `ENXIO` (no such device) when the machine has none.
pub fn device() -> Result<&'static Device, Errno> {
    virtio_blk::device().ok_or(Errno::ENXIO)
}

pub fn is_direct(file: &OpenFile) -> bool {
    file.flags.load(Ordering::Relaxed) & O_DIRECT != 0
}

/// One synchronous request's completion: set by the interrupt handler, waited on by the issuer.
pub struct SyncWait {
    done: AtomicBool,
    /// Bytes, or `-errno`.
    result: AtomicI64,
}

impl SyncWait {
    pub fn new() -> Arc<SyncWait> {
        Arc::new(SyncWait {
            done: AtomicBool::new(false),
            result: AtomicI64::new(0),
        })
    }

    /// Whether the request finished.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn channel(self: &Arc<SyncWait>) -> usize {
        Arc::as_ptr(self) as usize
    }

    /// The completion callback that reports to this waiter.
    pub fn completion(self: &Arc<SyncWait>) -> virtio_blk::Completion {
        let me = self.clone();
        alloc::boxed::Box::new(move |result: Result<usize, Errno>| {
            me.result.store(
                match result {
                    Ok(n) => n as i64,
                    Err(e) => -(e as i64),
                },
                Ordering::Relaxed,
            );
            me.done.store(true, Ordering::Release);
            proc::wakeup(me.channel());
        })
    }

    /// Sleeps until the request finished. `EINTR` if the process is killed first: the request
    /// still owns its memory and releases it when the device completes it.
    pub fn wait(self: &Arc<SyncWait>) -> Result<usize, Errno> {
        // System calls run with interrupts off, so the completion cannot slip in between the
        // check and the sleep.
        while !self.done.load(Ordering::Acquire) {
            proc::sleep_uninterruptible(self.channel(), "a /dev/vda request")?;
        }
        let r = self.result.load(Ordering::Relaxed);
        if r < 0 {
            Err(errno_from(-r))
        } else {
            Ok(r as usize)
        }
    }
}

impl SyncWait {
    /// [`SyncWait::wait`] that outlasts a kill: a killed waiter polls (interrupts on, `hlt`)
    /// until the device finishes, for an issuer whose locks must stay held until then (an ext2
    /// direct write: the filesystem lock keeps the block from being freed and reused while the
    /// device still writes it).
    pub fn wait_to_end(self: &Arc<SyncWait>) -> Result<usize, Errno> {
        loop {
            match self.wait() {
                Err(Errno::EINTR) if !self.done.load(Ordering::Acquire) => {
                    x86_64::instructions::interrupts::enable_and_hlt();
                    x86_64::instructions::interrupts::disable();
                    // Every CPU polls, the boot CPU too: see `wait_anywhere`.
                    crate::drivers::virtio_blk::poll_all();
                }
                r => return r,
            }
        }
    }
}

impl SyncWait {
    /// [`SyncWait::wait_to_end`] from any context: outside a task (the unmount at power-off,
    /// which writes back the page caches) there is nothing to sleep on, so it polls.
    pub fn wait_anywhere(self: &Arc<SyncWait>) -> Result<usize, Errno> {
        if proc::current_tid() != 0 {
            return self.wait_to_end();
        }
        // Every CPU polls after each wake-up, the boot CPU too (as `ext2_glue`'s transfer has
        // since session 10): the device's interrupt follows the CPU that submitted last
        // (`virtio_blk::steer_interrupts`), so the completion may be taken by an application
        // processor whose handler then spins for the big kernel lock this CPU holds, its
        // level-triggered line in service and never redelivered here. Polled only off CPU 0,
        // the power-off's unmount waited on CPU 0 for good (4-CPU BusyBox session, session 13:
        // CPU 0 halted in this loop under `unmount_root`, CPU 3 in `lock_slow` from
        // `kernel_trap`; QEMU's gdb stub).
        self.poll_until(None)
            .expect("an unbounded poll ends only when done")
    }

    /// [`SyncWait::wait_anywhere`]'s polled loop with a bound, for the in-kernel test of the
    /// power-off hang (`ktest::virtio`): `None` if the request is still not done after `ticks`
    /// timer ticks. Outside a task only.
    pub fn wait_anywhere_within(self: &Arc<SyncWait>, ticks: u64) -> Option<Result<usize, Errno>> {
        self.poll_until(Some(crate::time::ticks() + ticks))
    }

    /// Halts (interrupts on) and polls every device until done or the tick `deadline`.
    fn poll_until(self: &Arc<SyncWait>, deadline: Option<u64>) -> Option<Result<usize, Errno>> {
        while !self.done.load(Ordering::Acquire) {
            if deadline.is_some_and(|d| crate::time::ticks() >= d) {
                return None;
            }
            x86_64::instructions::interrupts::enable_and_hlt();
            x86_64::instructions::interrupts::disable();
            crate::drivers::virtio_blk::poll_all();
        }
        let r = self.result.load(Ordering::Relaxed);
        Some(if r < 0 {
            Err(errno_from(-r))
        } else {
            Ok(r as usize)
        })
    }
}

fn errno_from(e: i64) -> Errno {
    match e {
        5 => Errno::EIO,
        4 => Errno::EINTR,
        11 => Errno::EAGAIN,
        12 => Errno::ENOMEM,
        14 => Errno::EFAULT,
        28 => Errno::ENOSPC,
        _ => Errno::EINVAL,
    }
}

/// Takes the user pages under `[addr, addr + len)` for a device `op` (GUP flags and pin kind
/// per the module comment): all of them, or `EFAULT` with none kept.
#[doc(alias = "iov_iter_extract_pages")]
pub fn take_user_pages(op: Op, addr: u64, len: usize) -> Result<Vec<PinnedPage>, Errno> {
    let first = addr & !(PAGE as u64 - 1);
    let end = addr.checked_add(len as u64).ok_or(Errno::EFAULT)?;
    let count = (end.div_ceil(PAGE as u64) * PAGE as u64 - first) as usize / PAGE;
    let mm = memory::mm();
    let flags = match op {
        Op::Read => FollFlags::WRITE,
        Op::Write => FollFlags::NONE,
    };
    let mut slots: Vec<Option<PinnedPage>> = (0..count).map(|_| None).collect();
    let shared = proc::current_aspace();
    let taken = {
        let mut hold = crate::gup_hold::ReschedHold::for_fills(&shared);
        let va = VirtAddr::new(first);
        let pin = rules::dma_uses_foll_pin(mm.era());
        gup::user_pages_held(mm, &mut hold, va, flags, pin, true, &mut slots)
    };
    match taken {
        Ok(n) if n == count => Ok(slots.into_iter().map(|s| s.expect("taken")).collect()),
        _ => {
            gup::unpin_user_pages(mm, &mut slots);
            Err(Errno::EFAULT)
        }
    }
}

/// One O_DIRECT request on the user buffer `[addr, addr + len)` at disk byte `pos`, waited for.
fn direct_chunk(device: &Device, op: Op, addr: u64, len: usize, pos: u64) -> Result<usize, Errno> {
    let pages = take_user_pages(op, addr, len)?;
    let wait = SyncWait::new();
    let request = Request::pinned(
        op,
        pos / SECTOR,
        pages,
        (addr % PAGE as u64) as usize,
        len,
        wait.completion(),
    )?;
    device.submit(request)?;
    wait.wait()
}

/// One O_DIRECT request straight into (or out of) `len` bytes at `offset` of a registered
/// buffer (io_uring's fixed buffers: the iterator's `BVEC` pieces), waited for. The frames were
/// pinned long-term at registration, so nothing is pinned here; the request holds the
/// registration (`owner`) until it completes, so an issuer killed while waiting cannot let the
/// frames go while the device may still write them.
fn registered_chunk(
    device: &Device,
    op: Op,
    buf: &RegisteredBuffer,
    offset: usize,
    len: usize,
    owner: &BufferOwner,
    pos: u64,
) -> Result<usize, Errno> {
    let mut segments = Vec::new();
    buf.for_each_segment(offset, len, |page, off, piece| {
        segments.push(virtio_blk::Segment {
            phys: page.page().frame().as_u64() + off as u64,
            len: piece.len() as u32,
        });
    });
    let wait = SyncWait::new();
    let request = Request::registered(op, pos / SECTOR, segments, owner.clone(), wait.completion());
    device.submit(request)?;
    wait.wait()
}

/// O_DIRECT transfer of `iter` at `pos` (already checked for alignment and range): the device
/// moves the data straight to or from the iterator's memory, one request per piece of at most
/// [`CHUNK`] bytes: user pages taken with GUP, or a registered buffer's pinned frames.
fn direct_io(device: &Device, op: Op, iter: &mut IoIter, pos: u64) -> Result<usize, Errno> {
    let mut done = 0;
    while let Some(piece) = iter.piece(CHUNK) {
        let at = pos + done as u64;
        let (want, step) = match piece {
            Piece::User(s) => (s.len(), direct_chunk(device, op, s.addr(), s.len(), at)),
            Piece::Frames {
                buf,
                offset,
                len,
                owner,
            } => (
                len,
                registered_chunk(device, op, buf, offset, len, owner, at),
            ),
            Piece::Kernel(len) => (len, Err(Errno::EINVAL)),
        };
        match step {
            Ok(n) => {
                iter.advance(n);
                done += n;
                if n < want {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Reads whole sectors `[lba, lba + bytes / 512)` into (or writes them from) a kernel buffer.
fn kernel_io(
    device: &Device,
    op: Op,
    lba: u64,
    buffer: &Arc<DmaRegion>,
    bytes: usize,
) -> Result<(), Errno> {
    let wait = SyncWait::new();
    let request = Request::kernel(op, lba, buffer.clone(), 0, bytes, wait.completion());
    device.submit(request)?;
    wait.wait().map(|_| ())
}

/// The covering sectors of `[pos, pos + len)`: first LBA and byte count.
fn covering(pos: u64, len: usize) -> (u64, usize) {
    let first = pos / SECTOR;
    let end = (pos + len as u64).div_ceil(SECTOR);
    (first, ((end - first) * SECTOR) as usize)
}

/// Buffered transfer of `iter` at `pos` (range already checked) through a bounce buffer of the
/// covering sectors: a read copies out of it; a write copies the data in first, reads partial
/// sectors (read-modify-write), then writes the covering sectors. Stops at the first fault.
fn buffered_io(device: &Device, op: Op, iter: &mut IoIter, pos: u64) -> Result<usize, Errno> {
    let mut done = 0;
    while iter.count() > 0 {
        let at = pos + done as u64;
        let len = iter.count().min(CHUNK - (at % SECTOR) as usize);
        let inner = (at % SECTOR) as usize;
        let step = (|| {
            if op == Op::Read {
                let (lba, bytes) = covering(at, len);
                let region = Arc::new(DmaRegion::new(bytes).ok_or(Errno::ENOMEM)?);
                kernel_io(device, Op::Read, lba, &region, bytes)?;
                let mut data = alloc::vec![0u8; len];
                region.read(inner, &mut data);
                return Ok(iter.copy_to(&data));
            }
            let data = iter.copy_from_vec(len)?;
            if data.is_empty() {
                return Ok(0);
            }
            let (lba, bytes) = covering(at, data.len());
            let region = Arc::new(DmaRegion::new(bytes).ok_or(Errno::ENOMEM)?);
            if !at.is_multiple_of(SECTOR) || !(at + data.len() as u64).is_multiple_of(SECTOR) {
                kernel_io(device, Op::Read, lba, &region, bytes)?;
            }
            region.write(inner, &data);
            kernel_io(device, Op::Write, lba, &region, bytes)?;
            Ok(data.len())
        })();
        match step {
            Ok(n) => {
                done += n;
                if n < len {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    iter.finish(done)
}

/// A read or write of `/dev/vda` at `io.pos` (Linux `blkdev_read_iter`/`blkdev_write_iter`):
/// the range rules of the module comment, then `O_DIRECT` (the iterator's alignment checked as
/// Linux's `blkdev_dio_invalid`) or buffered.
fn transfer(op: Op, io: &mut Kiocb, iter: &mut IoIter) -> Result<usize, Errno> {
    let device = device()?;
    if op == Op::Write && device.read_only() {
        return Err(Errno::EPERM);
    }
    let pos = io.pos;
    let size = device.capacity_bytes();
    if iter.count() == 0 {
        return Ok(0);
    }
    if pos >= size {
        return match op {
            Op::Read => Ok(0),
            Op::Write => Err(Errno::ENOSPC),
        };
    }
    iter.truncate((size - pos) as usize);
    let n = if is_direct(io.file) {
        if !(iter.alignment() | pos).is_multiple_of(SECTOR) {
            return Err(Errno::EINVAL);
        }
        direct_io(device, op, iter, pos)?
    } else {
        buffered_io(device, op, iter, pos)?
    };
    io.pos = pos + n as u64;
    Ok(n)
}

/// The open `/dev/vda` ([`VdaFile::id`]) whose `COWLAB_VDA_HOLD` is in force. The hold is a
/// capability of that open-file description: only it may release, another file's hold is
/// `EBUSY`, and closing it (its last descriptor, or its process's end) releases, so no process
/// can stall the disk for others or leave it stalled behind it ([`file_closed`]).
static HOLDER: spin::Mutex<Option<u64>> = spin::Mutex::new(None);

/// The next [`VdaFile::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The block-device ioctls on the open `/dev/vda` `me`, and cowlab's race-scripting ones.
pub fn ioctl(me: u64, request: u64, arg: u64) -> SysResult {
    let device = device()?;
    match request {
        BLKGETSIZE64 => UserPtr::<u64>::new(arg)?
            .write(&device.capacity_bytes())
            .map(|()| 0),
        BLKGETSIZE => UserPtr::<u64>::new(arg)?
            .write(&(device.capacity_bytes() / SECTOR))
            .map(|()| 0),
        BLKSSZGET | BLKPBSZGET => UserPtr::<u32>::new(arg)?
            .write(&(SECTOR as u32))
            .map(|()| 0),
        COWLAB_VDA_HOLD => {
            let mut holder = HOLDER.lock();
            if holder.is_some_and(|h| h != me) {
                return Err(Errno::EBUSY);
            }
            *holder = Some(me);
            device.hold();
            Ok(0)
        }
        COWLAB_VDA_RELEASE => {
            let mut holder = HOLDER.lock();
            if holder.is_some_and(|h| h != me) {
                return Err(Errno::EPERM);
            }
            *holder = None;
            Ok(device.release() as u64)
        }
        COWLAB_VDA_INFLIGHT => Ok(device.in_flight()),
        _ => Err(Errno::ENOTTY),
    }
}

/// The open `/dev/vda` `me` is gone (its description's last reference): a hold it set ends,
/// handing the held requests to the device.
fn file_closed(me: u64) {
    let mut holder = HOLDER.lock();
    if *holder == Some(me) {
        *holder = None;
        if let Ok(device) = device() {
            device.release();
        }
    }
}

/// How an asynchronous transfer started.
pub enum Started {
    /// Requests are queued; the callback will run at their completion.
    Queued,
    /// Finished (or refused) without reaching the device: the result, bytes or `-errno`.
    Done(i64),
}

/// Called once with the transfer's result: bytes moved, or `-errno`.
pub type AsyncDone = Box<dyn FnOnce(i64) + Send>;

/// Several requests reported as one result (the last one to finish calls `done`).
struct Aggregate {
    remaining: AtomicUsize,
    bytes: AtomicI64,
    error: AtomicI64,
    done: spin::Mutex<Option<AsyncDone>>,
}

impl Aggregate {
    fn completion(self: &Arc<Aggregate>) -> virtio_blk::Completion {
        let me = self.clone();
        Box::new(move |result: Result<usize, Errno>| {
            match result {
                Ok(n) => {
                    me.bytes.fetch_add(n as i64, Ordering::Relaxed);
                }
                Err(e) => me.error.store(-(e as i64), Ordering::Relaxed),
            }
            if me.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                let error = me.error.load(Ordering::Relaxed);
                let result = if error < 0 {
                    error
                } else {
                    me.bytes.load(Ordering::Relaxed)
                };
                if let Some(done) = me.done.lock().take() {
                    done(result);
                }
            }
        })
    }
}

/// Starts an O_DIRECT transfer without waiting (Linux AIO's `blkdev_direct_IO` with a
/// `ki_complete`): the same range and alignment rules as [`read`]/[`write`], every page of the
/// buffer taken *now* (at submission), then one request per [`CHUNK`]. The pages are released
/// when each request completes, whether or not anyone collects the result.
#[doc(alias = "__blkdev_direct_IO_async")]
pub fn start_direct(op: Op, iter: &mut IoIter, pos: u64, done: AsyncDone) -> Started {
    let device = match device() {
        Ok(d) => d,
        Err(e) => return Started::Done(-(e as i64)),
    };
    let size = device.capacity_bytes();
    if iter.count() == 0 {
        return Started::Done(0);
    }
    if pos >= size {
        return Started::Done(match op {
            Op::Read => 0,
            Op::Write => -(Errno::ENOSPC as i64),
        });
    }
    iter.truncate((size - pos) as usize);
    if !(iter.alignment() | pos).is_multiple_of(SECTOR) {
        return Started::Done(-(Errno::EINVAL as i64));
    }
    let mut chunks: Vec<(u64, usize, Vec<PinnedPage>)> = Vec::new();
    let release = |chunks: Vec<(u64, usize, Vec<PinnedPage>)>| {
        for (_, _, pages) in chunks {
            for page in pages {
                page.unpin(memory::mm());
            }
        }
    };
    while let Some(piece) = iter.piece(CHUNK) {
        let Piece::User(s) = piece else {
            release(chunks);
            return Started::Done(-(Errno::EINVAL as i64));
        };
        let (addr, len) = (s.addr(), s.len());
        match take_user_pages(op, addr, len) {
            Ok(pages) => chunks.push((addr, len, pages)),
            Err(e) => {
                release(chunks);
                return Started::Done(-(e as i64));
            }
        }
        iter.advance(len);
    }
    let aggregate = Arc::new(Aggregate {
        remaining: AtomicUsize::new(chunks.len()),
        bytes: AtomicI64::new(0),
        error: AtomicI64::new(0),
        done: spin::Mutex::new(Some(done)),
    });
    let mut at = pos;
    for (addr, len, pages) in chunks {
        let offset = (addr % PAGE as u64) as usize;
        // Errors finish the request, which reports to the aggregate.
        if let Ok(request) =
            Request::pinned(op, at / SECTOR, pages, offset, len, aggregate.completion())
        {
            let _ = device.submit(request);
        }
        at += len as u64;
    }
    Started::Queued
}

/// `/dev/vda` as an open file. `id` names the open-file description for `COWLAB_VDA_HOLD`
/// (unique for the kernel's life; an address could be reused by the next open).
pub struct VdaFile {
    id: u64,
}

impl VdaFile {
    /// A new open-file description of the device.
    pub fn open() -> VdaFile {
        VdaFile {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for VdaFile {
    fn drop(&mut self) {
        file_closed(self.id);
    }
}

impl FileOps for VdaFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        transfer(Op::Read, io, to)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        transfer(Op::Write, io, from)
    }

    /// `O_DIRECT` I/O completes from the interrupt handler (Linux AIO on a block device).
    fn is_async(&self, file: &OpenFile) -> bool {
        is_direct(file)
    }

    fn start_async(&self, op: Op, iter: &mut IoIter, pos: u64, done: AsyncDone) -> Started {
        start_direct(op, iter, pos, done)
    }

    fn seek(&self) -> Seek {
        Seek::Fixed(device().map_or(0, |d| d.capacity_bytes()))
    }

    fn stat(&self) -> Stat {
        Stat {
            st_rdev: VDA_RDEV,
            ..Stat::base(S_IFBLK | 0o660, 5)
        }
    }

    fn statfs(&self) -> StatFs {
        tmpfs_statfs(ST_NOSUID)
    }

    fn ioctl(&self, _file: &OpenFile, cmd: u64, arg: u64) -> SysResult {
        ioctl(self.id, cmd & 0xffff_ffff, arg)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
