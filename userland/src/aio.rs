//! Linux native AIO (`io_setup` 206, `io_destroy` 207, `io_getevents` 208, `io_submit` 209,
//! `io_cancel` 210): the `struct iocb` and `struct io_event` layouts and thin wrappers, what
//! libaio provides, without libaio.

use crate::calls::raw;
use crate::sys::Errno;

pub const IO_SETUP: usize = 206;
pub const IO_DESTROY: usize = 207;
pub const IO_GETEVENTS: usize = 208;
pub const IO_SUBMIT: usize = 209;
pub const IO_CANCEL: usize = 210;

pub const IOCB_CMD_PREAD: u16 = 0;
pub const IOCB_CMD_PWRITE: u16 = 1;

/// Linux `struct iocb` (64 bytes, little-endian field order).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Iocb {
    pub data: u64,
    pub key: u32,
    pub rw_flags: i32,
    pub opcode: u16,
    pub reqprio: i16,
    pub fildes: u32,
    pub buf: u64,
    pub nbytes: u64,
    pub offset: i64,
    pub reserved2: u64,
    pub flags: u32,
    pub resfd: u32,
}

/// Linux `struct io_event` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct IoEvent {
    pub data: u64,
    pub obj: u64,
    pub res: i64,
    pub res2: i64,
}

// The kernel reads and writes these layouts: a different size means wrong fields.
const _: () = assert!(core::mem::size_of::<Iocb>() == 64);
const _: () = assert!(core::mem::size_of::<IoEvent>() == 32);

/// A read or write iocb of `buf` at file `offset`, tagged `data`.
pub fn iocb(fd: i32, opcode: u16, buf: &[u8], offset: u64, data: u64) -> Iocb {
    Iocb {
        data,
        opcode,
        fildes: fd as u32,
        buf: buf.as_ptr() as u64,
        nbytes: buf.len() as u64,
        offset: offset as i64,
        ..Iocb::default()
    }
}

/// `io_setup(nr_events, &ctx)`: the new context.
#[inline]
pub fn io_setup(nr_events: usize) -> Result<u64, Errno> {
    let mut ctx = 0u64;
    // SAFETY: `ctx` is a live u64 the kernel writes.
    unsafe {
        raw(
            IO_SETUP,
            [nr_events, &mut ctx as *mut u64 as usize, 0, 0, 0, 0],
        )
    }
    .map(|_| ctx)
}

/// `io_submit(ctx, n, iocbs)`: the number submitted. A slice of references is the array of
/// `struct iocb *` the call reads, so nothing is copied or allocated (tests measure memory
/// around these calls).
///
/// # Safety
/// The kernel transfers data to or from each iocb's `buf` after this returns: every buffer must
/// be valid for that transfer until its event is collected (or hold a bad address on purpose,
/// which the kernel must refuse).
#[inline]
pub unsafe fn io_submit(ctx: u64, iocbs: &[&Iocb]) -> Result<usize, Errno> {
    // SAFETY: `iocbs` is a live array of pointers to live iocbs; the buffers are the caller's
    // promise.
    unsafe {
        raw(
            IO_SUBMIT,
            [ctx as usize, iocbs.len(), iocbs.as_ptr() as usize, 0, 0, 0],
        )
    }
}

/// `io_getevents(ctx, min, out.len(), out, timeout)`: the number of events written to `out`.
/// `timeout_ns` None waits for `min` events.
#[inline]
pub fn io_getevents(
    ctx: u64,
    min: usize,
    out: &mut [IoEvent],
    timeout_ns: Option<u64>,
) -> Result<usize, Errno> {
    let ts = timeout_ns.map(|ns| [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64]);
    let tsp = ts.as_ref().map_or(0, |t| t.as_ptr() as usize);
    // SAFETY: `out` has room for `out.len()` events; `tsp` is NULL or a live timespec.
    unsafe {
        raw(
            IO_GETEVENTS,
            [
                ctx as usize,
                min,
                out.len(),
                out.as_mut_ptr() as usize,
                tsp,
                0,
            ],
        )
    }
}

/// `io_destroy(ctx)`: cancels or waits for what is in flight and frees the context.
#[inline]
pub fn io_destroy(ctx: u64) -> Result<usize, Errno> {
    // SAFETY: no pointer argument.
    unsafe { raw(IO_DESTROY, [ctx as usize, 0, 0, 0, 0, 0]) }
}
