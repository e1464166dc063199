//! Linux native AIO (`io_setup`, `io_submit`, `io_getevents`, `io_cancel`, `io_destroy`) with
//! Linux's `struct iocb` and `struct io_event`.
//!
//! Model (`fs/aio.c`): a context belongs to the address space that created it (a child after
//! fork cannot use its parent's: `EINVAL`) and holds up to `nr_events` results. `io_submit`
//! validates each iocb and starts it through the file's `FileOps`: a file that completes later
//! (`is_async`: an `O_DIRECT` `/dev/vda`) takes the user pages at submission and releases them
//! when the device completes the request — from the interrupt handler, whether or not anyone
//! ever calls `io_getevents` (`fs::vda::start_direct`); every other file (buffered `/dev/vda`,
//! memfds, tmpfs, ...) runs the read or write synchronously inside `io_submit`, through the same
//! `vfs_read`/`vfs_write` as `pread64`/`pwrite64`. Errors the transfer itself meets (alignment
//! `EINVAL`, `EFAULT`, `EIO`) arrive as the event's `res`, as on Linux; errors in the iocb (bad
//! descriptor, opcode, reserved fields, a buffer outside user memory) fail `io_submit`. Streams
//! (pipes, the console) are `EINVAL`: Linux would block `io_submit` on them.
//! There is no ring mapped in user memory: the context id is an opaque number and libaio's
//! user-space fast path sees no ring magic and uses the system call.
//!
//! Lifetime: the global table holds each context; `io_destroy` removes it and waits for its
//! requests. A context whose address space is gone (the process exited without `io_destroy`)
//! is dropped from the table by the next `io_setup` once its requests have finished; its
//! requests never depended on it for their pages.
#![deny(unsafe_code)]

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use super::file::Seek;
use super::iter::IoIter;
use super::rw::{vfs_read, vfs_write};
use super::vda::{Op, Started};
use crate::errno::{Errno, SysResult};
use crate::proc::{self, with_current};
use crate::time;
use crate::uaccess::{UserPtr, UserSlice};

const IOCB_CMD_PREAD: u16 = 0;
const IOCB_CMD_PWRITE: u16 = 1;
const IOCB_FLAG_RESFD: u32 = 1;
/// Linux `aio-max-nr`'s default.
const AIO_MAX_NR: u32 = 65536;
/// Events reserved by the contexts that exist (Linux `aio_nr`).
static AIO_NR: AtomicUsize = AtomicUsize::new(0);

/// Linux `struct iocb` (64 bytes, little-endian x86_64 layout).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Iocb {
    aio_data: u64,
    aio_key: u32,
    aio_rw_flags: i32,
    aio_lio_opcode: u16,
    aio_reqprio: i16,
    aio_fildes: u32,
    aio_buf: u64,
    aio_nbytes: u64,
    aio_offset: i64,
    aio_reserved2: u64,
    aio_flags: u32,
    aio_resfd: u32,
}

const _: () = assert!(core::mem::size_of::<Iocb>() == 64);

/// Linux `struct io_event` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

struct Ring {
    events: VecDeque<IoEvent>,
    /// Requests submitted whose event is not posted yet.
    inflight: usize,
}

struct Context {
    owner: Weak<crate::vm::MmSpace>,
    max_events: usize,
    /// Taken from the interrupt handler (completions) and, interrupts off, by the calls.
    ring: Mutex<Ring>,
}

impl Drop for Context {
    fn drop(&mut self) {
        AIO_NR.fetch_sub(self.max_events, Ordering::Relaxed);
    }
}

impl Context {
    fn channel(self: &Arc<Context>) -> usize {
        Arc::as_ptr(self) as usize
    }

    fn post(self: &Arc<Context>, event: IoEvent, was_inflight: bool) {
        {
            let mut ring = self.ring.lock();
            if was_inflight {
                ring.inflight -= 1;
            }
            ring.events.push_back(event);
        }
        proc::wakeup(self.channel());
    }
}

static CONTEXTS: Mutex<BTreeMap<u64, Arc<Context>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0x10_0000);

/// The current process's context `id` (`EINVAL` if there is none or it is another mm's).
fn lookup(id: u64) -> Result<Arc<Context>, Errno> {
    let aspace = proc::current_aspace();
    let table = CONTEXTS.lock();
    let ctx = table.get(&id).ok_or(Errno::EINVAL)?;
    match ctx.owner.upgrade() {
        Some(owner) if Arc::ptr_eq(&owner, &aspace) => Ok(ctx.clone()),
        _ => Err(Errno::EINVAL),
    }
}

/// Drops the contexts whose address space is gone and whose requests have all finished.
fn sweep() {
    let dead: Vec<Arc<Context>> = {
        let mut table = CONTEXTS.lock();
        let ids: Vec<u64> = table
            .iter()
            .filter(|(_, c)| c.owner.strong_count() == 0 && c.ring.lock().inflight == 0)
            .map(|(&id, _)| id)
            .collect();
        ids.iter().filter_map(|id| table.remove(id)).collect()
    };
    drop(dead);
}

/// `io_setup(nr_events, ctx_idp)`.
pub fn io_setup(nr: u32, ctx_idp: u64) -> SysResult {
    let ctxp = UserPtr::<u64>::new(ctx_idp)?;
    if ctxp.read()? != 0 || nr == 0 || nr > 0x1000_0000 / 32 {
        return Err(Errno::EINVAL);
    }
    if nr > AIO_MAX_NR {
        return Err(Errno::EAGAIN);
    }
    sweep();
    // The events of all contexts together stay under `AIO_MAX_NR` (Linux `aio_nr` against
    // `aio_max_nr`): their rings are kernel heap.
    AIO_NR
        .try_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n + nr as usize <= AIO_MAX_NR as usize).then_some(n + nr as usize)
        })
        .map_err(|_| Errno::EAGAIN)?;
    // From here the reservation is the context's: its `Drop` gives it back.
    let mut ctx = Context {
        owner: Arc::downgrade(&proc::current_aspace()),
        max_events: nr as usize,
        ring: Mutex::new(Ring {
            events: VecDeque::new(),
            inflight: 0,
        }),
    };
    // Reserved up front: completions push from the interrupt handler.
    ctx.ring
        .get_mut()
        .events
        .try_reserve_exact(nr as usize)
        .map_err(|_| Errno::ENOMEM)?;
    let ctx = Arc::new(ctx);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    CONTEXTS.lock().insert(id, ctx);
    if let Err(e) = ctxp.write(&id) {
        CONTEXTS.lock().remove(&id);
        return Err(e);
    }
    Ok(0)
}

/// `io_destroy(ctx_id)`: removes the context, then waits for its requests to finish.
pub fn io_destroy(ctx_id: u64) -> SysResult {
    let ctx = lookup(ctx_id)?;
    CONTEXTS.lock().remove(&ctx_id);
    while ctx.ring.lock().inflight != 0 {
        proc::sleep(ctx.channel())?;
    }
    Ok(0)
}

/// Validates and starts one iocb at user address `user_iocb`.
fn submit_one(ctx: &Arc<Context>, user_iocb: u64) -> Result<(), Errno> {
    let iocb = UserPtr::<Iocb>::new(user_iocb)?.read()?;
    if iocb.aio_reserved2 != 0
        || iocb.aio_flags & IOCB_FLAG_RESFD != 0
        || (iocb.aio_nbytes as i64) < 0
    {
        return Err(Errno::EINVAL);
    }
    let file = with_current(|p| p.fds.get(i64::from(iocb.aio_fildes)))?;
    let op = match iocb.aio_lio_opcode {
        IOCB_CMD_PREAD if file.readable() => Op::Read,
        IOCB_CMD_PWRITE if file.writable() => Op::Write,
        IOCB_CMD_PREAD | IOCB_CMD_PWRITE => return Err(Errno::EBADF),
        _ => return Err(Errno::EINVAL),
    };
    // Streams (pipes, the console) have no position and would block `io_submit` itself:
    // cowlab refuses them (Linux runs them synchronously and blocks).
    if iocb.aio_offset < 0 || file.ops.seek() == Seek::Stream {
        return Err(Errno::EINVAL);
    }
    // Linux stores KIOCB_KEY (0) in the user's iocb.
    UserPtr::<u32>::new(user_iocb + 8)?.write(&0)?;
    // As Linux's `import_ubuf`: the length cut to MAX_RW_COUNT, then the range checked.
    let mut iter = IoIter::ubuf(iocb.aio_buf, iocb.aio_nbytes as usize)?;
    {
        let mut ring = ctx.ring.lock();
        if ring.inflight + ring.events.len() >= ctx.max_events {
            return Err(Errno::EAGAIN);
        }
        ring.inflight += 1;
    }
    let event = IoEvent {
        data: iocb.aio_data,
        obj: user_iocb,
        ..IoEvent::default()
    };
    let pos = iocb.aio_offset as u64;
    if file.ops.is_async(&file) {
        let target = ctx.clone();
        let done = alloc::boxed::Box::new(move |res: i64| {
            target.post(IoEvent { res, ..event }, true);
        });
        if let Started::Done(res) = file.ops.start_async(op, &mut iter, pos, done) {
            ctx.post(IoEvent { res, ..event }, true);
        }
    } else {
        // Synchronous files complete inside `io_submit` (Linux: `read_iter` without
        // `-EIOCBQUEUED`).
        let result = match op {
            Op::Read => vfs_read(&file, Some(pos), &mut iter),
            Op::Write => vfs_write(&file, Some(pos), &mut iter),
        };
        let res = match result {
            Ok(n) => n as i64,
            Err(e) => -(e as i64),
        };
        ctx.post(IoEvent { res, ..event }, true);
    }
    Ok(())
}

/// `io_submit(ctx_id, nr, iocbpp)`: how many iocbs were started; an error only if the first
/// could not be.
pub fn io_submit(ctx_id: u64, nr: i64, iocbpp: u64) -> SysResult {
    if nr < 0 {
        return Err(Errno::EINVAL);
    }
    let ctx = lookup(ctx_id)?;
    // Linux: never more than the context holds.
    let nr = nr.min(ctx.max_events as i64);
    for i in 0..nr as u64 {
        let result = iocbpp
            .checked_add(8 * i)
            .ok_or(Errno::EFAULT)
            .and_then(|at| UserPtr::<u64>::new(at)?.read())
            .and_then(|iocb| submit_one(&ctx, iocb));
        if let Err(e) = result {
            return if i == 0 { Err(e) } else { Ok(i) };
        }
    }
    Ok(nr as u64)
}

/// `io_getevents(ctx_id, min_nr, nr, events, timeout)`: waits for `min_nr` events (or the
/// timeout), then copies up to `nr`.
pub fn io_getevents(ctx_id: u64, min_nr: i64, nr: i64, out: u64, timeout: u64) -> SysResult {
    let ctx = lookup(ctx_id)?;
    if min_nr < 0 || nr < 0 || min_nr > nr {
        return Err(Errno::EINVAL);
    }
    let deadline = match timeout {
        0 => None,
        at => {
            let ts = UserPtr::<Timespec>::new(at)?.read()?;
            if ts.sec < 0 || !(0..1_000_000_000).contains(&ts.nsec) {
                return Err(Errno::EINVAL);
            }
            let micros = (ts.sec as u64)
                .saturating_mul(1_000_000)
                .saturating_add(ts.nsec as u64 / 1000);
            Some(time::micros_since_boot().saturating_add(micros))
        }
    };
    // Linux sleeps interruptibly (read_events) and, woken by a signal with no event to return,
    // answers EINTR, never restarted (SA_RESTART or not); with some events it returns them.
    let mut interrupted = false;
    loop {
        let ready = ctx.ring.lock().events.len() as i64;
        let expired = deadline.is_some_and(|d| time::micros_since_boot() >= d);
        if ready >= min_nr || expired {
            break;
        }
        let slept = match deadline {
            None => proc::sleep_interruptible(ctx.channel()),
            // The sleep with a deadline wakes on each tick to look again.
            Some(_) => proc::sleep_interruptible_until(ctx.channel(), time::ticks() + 1),
        };
        if slept.is_err() {
            interrupted = true;
            break;
        }
    }
    // Only the part of `events` that will be written must be user memory (as Linux, which
    // copies event by event): `nr` itself may be anything up to LONG_MAX.
    let n = ctx.ring.lock().events.len().min(nr as usize);
    UserSlice::new(out, n * core::mem::size_of::<IoEvent>())?;
    if n == 0 && interrupted {
        return Err(Errno::EINTR);
    }
    let events: Vec<IoEvent> = ctx.ring.lock().events.drain(..n).collect();
    for (i, event) in events.iter().enumerate() {
        UserPtr::<IoEvent>::new(out + (i * core::mem::size_of::<IoEvent>()) as u64)?
            .write(event)?;
    }
    Ok(events.len() as u64)
}

/// `io_cancel(ctx_id, iocb, result)`: block-device requests cannot be cancelled once started
/// (Linux has no `ki_cancel` for them): `EINVAL`, after the checks Linux makes first.
pub fn io_cancel(ctx_id: u64, iocb: u64) -> SysResult {
    lookup(ctx_id)?;
    // Linux reads the iocb's key first (EFAULT), then finds nothing it can cancel.
    UserPtr::<u32>::new(iocb.checked_add(8).ok_or(Errno::EFAULT)?)?.read()?;
    Err(Errno::EINVAL)
}
