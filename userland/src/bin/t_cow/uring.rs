//! A minimal io_uring client over the raw Linux ABI (`io_uring_setup` 425, `io_uring_enter` 426,
//! `io_uring_register` 427, the ring mmaps at `IORING_OFF_*`), enough for cow.c's fixed-buffer
//! cases: register one buffer (a `FOLL_WRITE | FOLL_LONGTERM` pin of its pages), submit one
//! `IORING_OP_WRITE_FIXED` and wait for its completion. What liburing does, without liburing.

use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_userland::calls::{close, munmap, raw, PROT_READ, PROT_WRITE};
use cowlab_userland::sys::Errno;

use crate::sys::MAP_SHARED;

const NR_SETUP: usize = 425;
const NR_ENTER: usize = 426;
const NR_REGISTER: usize = 427;
const IORING_OFF_SQ_RING: usize = 0;
const IORING_OFF_CQ_RING: usize = 0x800_0000;
const IORING_OFF_SQES: usize = 0x1000_0000;
const IORING_FEAT_SINGLE_MMAP: u32 = 1;
const IORING_ENTER_GETEVENTS: usize = 1;
const IORING_REGISTER_BUFFERS: usize = 0;
const IORING_UNREGISTER_BUFFERS: usize = 1;
const IORING_OP_WRITE_FIXED: u8 = 5;
const SQE_SIZE: usize = 64;
const CQE_SIZE: usize = 16;
const MAP_POPULATE: u32 = 0x8000;

/// `struct io_sqring_offsets`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct SqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CqOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params` (120 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqOffsets,
    cq_off: CqOffsets,
}

const _: () = assert!(core::mem::size_of::<Params>() == 120);

/// One ring with its mappings; dropped = unmapped and closed (which also unregisters).
pub struct Ring {
    fd: i32,
    sq_ring: usize,
    sq_len: usize,
    cq_ring: usize,
    cq_len: usize,
    sqes: usize,
    sqes_len: usize,
    p: Params,
}

fn at(base: usize, off: u32) -> &'static AtomicU32 {
    // SAFETY: `base + off` is a ring field the kernel placed in a live shared mapping that
    // outlives every use (the ring is unmapped only when `Ring` drops); it is 4-byte aligned
    // and shared with the kernel, hence accessed atomically.
    unsafe { &*((base + off as usize) as *const AtomicU32) }
}

impl Ring {
    /// `io_uring_setup(entries)` and the three mappings (two with `IORING_FEAT_SINGLE_MMAP`).
    pub fn new(entries: u32) -> Result<Ring, Errno> {
        let mut p = Params::default();
        // SAFETY: `p` is a live `io_uring_params` the kernel reads and fills.
        let fd = unsafe {
            raw(
                NR_SETUP,
                [entries as usize, &mut p as *mut Params as usize, 0, 0, 0, 0],
            )
        }? as i32;
        let mut ring = Ring {
            fd,
            sq_ring: 0,
            sq_len: p.sq_off.array as usize + p.sq_entries as usize * 4,
            cq_ring: 0,
            cq_len: p.cq_off.cqes as usize + p.cq_entries as usize * CQE_SIZE,
            sqes: 0,
            sqes_len: p.sq_entries as usize * SQE_SIZE,
            p,
        };
        let rw = PROT_READ | PROT_WRITE;
        let single = p.features & IORING_FEAT_SINGLE_MMAP != 0;
        if single {
            ring.sq_len = ring.sq_len.max(ring.cq_len);
            ring.cq_len = ring.sq_len;
        }
        ring.sq_ring = mmap_off(ring.sq_len, rw, fd, IORING_OFF_SQ_RING)?;
        ring.cq_ring = if single {
            ring.sq_ring
        } else {
            mmap_off(ring.cq_len, rw, fd, IORING_OFF_CQ_RING)?
        };
        ring.sqes = mmap_off(ring.sqes_len, rw, fd, IORING_OFF_SQES)?;
        Ok(ring)
    }

    /// `IORING_REGISTER_BUFFERS` with one iovec.
    pub fn register_buffer(&self, base: usize, len: usize) -> Result<(), Errno> {
        let iov = [base, len];
        // SAFETY: one iovec; the kernel pins the memory it names (or fails).
        unsafe {
            raw(
                NR_REGISTER,
                [
                    self.fd as usize,
                    IORING_REGISTER_BUFFERS,
                    iov.as_ptr() as usize,
                    1,
                    0,
                    0,
                ],
            )
        }
        .map(|_| ())
    }

    /// `IORING_UNREGISTER_BUFFERS`.
    pub fn unregister_buffers(&self) -> Result<(), Errno> {
        // SAFETY: no pointer argument.
        unsafe {
            raw(
                NR_REGISTER,
                [self.fd as usize, IORING_UNREGISTER_BUFFERS, 0, 0, 0, 0],
            )
        }
        .map(|_| ())
    }

    /// Submits `IORING_OP_WRITE_FIXED` of `len` bytes at `addr` (inside registered buffer 0) to
    /// `fd` at file offset `off`, waits for it, and returns the completion's `res`.
    pub fn write_fixed(&self, fd: i32, addr: usize, len: u32, off: u64) -> Result<i32, Errno> {
        let sq = self.p.sq_off;
        let tail = at(self.sq_ring, sq.tail).load(Ordering::Acquire);
        let mask = at(self.sq_ring, sq.ring_mask).load(Ordering::Relaxed);
        let index = tail & mask;
        let sqe = self.sqes + index as usize * SQE_SIZE;
        let mut bytes = [0u8; SQE_SIZE];
        bytes[0] = IORING_OP_WRITE_FIXED;
        bytes[4..8].copy_from_slice(&fd.to_le_bytes());
        bytes[8..16].copy_from_slice(&off.to_le_bytes());
        bytes[16..24].copy_from_slice(&(addr as u64).to_le_bytes());
        bytes[24..28].copy_from_slice(&len.to_le_bytes());
        // user_data; buf_index (bytes 40..42) stays 0: the first registered buffer.
        bytes[32..40].copy_from_slice(&0xc0_u64.to_le_bytes());
        // SAFETY: `sqe` is entry `index` of the live SQE array mapping; the kernel reads it only
        // after the tail store below publishes it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), sqe as *mut u8, SQE_SIZE) };
        // SAFETY: entry `index` of the SQ index array, inside the live SQ ring mapping.
        let slot = unsafe {
            &*((self.sq_ring + sq.array as usize + index as usize * 4) as *const AtomicU32)
        };
        slot.store(index, Ordering::Relaxed);
        at(self.sq_ring, sq.tail).store(tail.wrapping_add(1), Ordering::Release);
        // SAFETY: no pointer arguments (sig = NULL).
        unsafe {
            raw(
                NR_ENTER,
                [self.fd as usize, 1, 1, IORING_ENTER_GETEVENTS, 0, 0],
            )
        }?;
        let cq = self.p.cq_off;
        let head = at(self.cq_ring, cq.head).load(Ordering::Relaxed);
        if at(self.cq_ring, cq.tail).load(Ordering::Acquire) == head {
            return Err(Errno(cowlab_userland::sys::errno::EINVAL));
        }
        let cmask = at(self.cq_ring, cq.ring_mask).load(Ordering::Relaxed);
        let cqe = self.cq_ring + cq.cqes as usize + (head & cmask) as usize * CQE_SIZE;
        // SAFETY: `res` (offset 8) of a published CQE in the live CQ ring mapping.
        let res = unsafe { core::ptr::read_volatile((cqe + 8) as *const i32) };
        at(self.cq_ring, cq.head).store(head.wrapping_add(1), Ordering::Release);
        Ok(res)
    }
}

fn mmap_off(len: usize, prot: u32, fd: i32, off: usize) -> Result<usize, Errno> {
    // SAFETY: a new shared mapping of the ring file at an address the kernel picks.
    unsafe {
        raw(
            9,
            [
                0,
                len,
                prot as usize,
                (MAP_SHARED | MAP_POPULATE) as usize,
                fd as usize,
                off,
            ],
        )
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.sqes != 0 {
            let _ = munmap(self.sqes, self.sqes_len);
        }
        if self.cq_ring != 0 && self.cq_ring != self.sq_ring {
            let _ = munmap(self.cq_ring, self.cq_len);
        }
        if self.sq_ring != 0 {
            let _ = munmap(self.sq_ring, self.sq_len);
        }
        let _ = close(self.fd);
    }
}
