//! A mapped io_uring over the raw Linux ABI (what liburing's `io_uring_queue_init`,
//! `io_uring_get_sqe`/`io_uring_submit` and `io_uring_peek_cqe`/`io_uring_cqe_seen` do, without
//! liburing): the three ring mappings, queueing SQEs, `io_uring_enter`, reaping CQEs.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::calls::{
    close, io_uring_enter, io_uring_setup, mmap_fd, munmap, IoUringCqe, IoUringParams, IoUringSqe,
    IORING_ENTER_GETEVENTS, IORING_OFF_CQ_RING, IORING_OFF_SQES, IORING_OFF_SQ_RING, MAP_SHARED,
    PROT_READ, PROT_WRITE,
};
use crate::sys::Errno;

/// Size of one SQE in the SQE array (`struct io_uring_sqe`).
pub const SQE_SIZE: usize = 64;
/// Size of one CQE in the CQ ring (`struct io_uring_cqe`).
pub const CQE_SIZE: usize = 16;

// The kernel lays the rings out with these sizes: a different layout reads the wrong fields.
const _: () = assert!(core::mem::size_of::<IoUringSqe>() == SQE_SIZE);
const _: () = assert!(core::mem::size_of::<IoUringCqe>() == CQE_SIZE);
const _: () = assert!(core::mem::size_of::<IoUringParams>() == 120);

/// The ring word at `addr` (inside a live ring mapping), shared with the kernel.
pub fn word(addr: usize) -> &'static AtomicU32 {
    // SAFETY: callers pass a 4-aligned address inside a ring mapping that lives until the ring
    // is closed; the kernel accesses the word only as a whole u32, hence atomically here.
    unsafe { &*(addr as *const AtomicU32) }
}

/// A mapped ring: SQ ring, CQ ring and SQE array, each its own mapping.
pub struct Ring {
    pub fd: i32,
    pub p: IoUringParams,
    pub sq: usize,
    pub sq_len: usize,
    pub cq: usize,
    pub cq_len: usize,
    pub sqes: usize,
    pub sqes_len: usize,
}

impl Ring {
    /// `io_uring_setup(entries)` and the three mmaps at `IORING_OFF_*`.
    pub fn new(entries: u32) -> Result<Ring, Errno> {
        let mut p = IoUringParams::default();
        let fd = io_uring_setup(entries, &mut p)?;
        let sq_len = p.sq_off.array as usize + 4 * p.sq_entries as usize;
        let cq_len = p.cq_off.cqes as usize + CQE_SIZE * p.cq_entries as usize;
        let sqes_len = SQE_SIZE * p.sq_entries as usize;
        let rw = PROT_READ | PROT_WRITE;
        // SAFETY: new shared mappings of the ring file at addresses the kernel chooses.
        let map = |len, off| unsafe { mmap_fd(0, len, rw, MAP_SHARED, fd, off) };
        let sq = map(sq_len, IORING_OFF_SQ_RING)?;
        let cq = map(cq_len, IORING_OFF_CQ_RING)?;
        let sqes = map(sqes_len, IORING_OFF_SQES)?;
        Ok(Ring {
            fd,
            p,
            sq,
            sq_len,
            cq,
            cq_len,
            sqes,
            sqes_len,
        })
    }

    /// Queues one SQE (not yet submitted).
    pub fn push(&self, sqe: IoUringSqe) {
        let tail = word(self.sq + self.p.sq_off.tail as usize).load(Ordering::Relaxed);
        let mask = word(self.sq + self.p.sq_off.ring_mask as usize).load(Ordering::Relaxed);
        let slot = tail & mask;
        // SAFETY: slot < sq_entries: inside the SQE mapping, which holds IoUringSqe values; the
        // kernel reads it only after the tail store below publishes it.
        unsafe {
            core::ptr::write_volatile((self.sqes as *mut IoUringSqe).add(slot as usize), sqe)
        };
        word(self.sq + self.p.sq_off.array as usize + 4 * slot as usize)
            .store(slot, Ordering::Relaxed);
        word(self.sq + self.p.sq_off.tail as usize).store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Queues an SQ array entry naming SQE `index` (which may be out of range) as is.
    pub fn push_index(&self, index: u32) {
        let tail = word(self.sq + self.p.sq_off.tail as usize).load(Ordering::Relaxed);
        let mask = word(self.sq + self.p.sq_off.ring_mask as usize).load(Ordering::Relaxed);
        word(self.sq + self.p.sq_off.array as usize + 4 * (tail & mask) as usize)
            .store(index, Ordering::Relaxed);
        word(self.sq + self.p.sq_off.tail as usize).store(tail.wrapping_add(1), Ordering::Release);
    }

    /// Submits what is queued and waits for `wait` completions.
    pub fn enter(&self, submit: u32, wait: u32) -> Result<usize, Errno> {
        // SAFETY: the programs queue only SQEs whose buffers live until they complete (the
        // kernel completes them inside this call) or bad addresses on purpose, which the
        // kernel must refuse with an error completion.
        unsafe { io_uring_enter(self.fd, submit, wait, IORING_ENTER_GETEVENTS) }
    }

    /// Takes the next completion, if any.
    pub fn reap(&self) -> Option<IoUringCqe> {
        let head_w = word(self.cq + self.p.cq_off.head as usize);
        let head = head_w.load(Ordering::Relaxed);
        let tail = word(self.cq + self.p.cq_off.tail as usize).load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        let mask = word(self.cq + self.p.cq_off.ring_mask as usize).load(Ordering::Relaxed);
        // SAFETY: (head & mask) < cq_entries: inside the CQE array of the CQ mapping, published
        // by the kernel's tail store (acquired above).
        let cqe = unsafe {
            core::ptr::read_volatile(
                ((self.cq + self.p.cq_off.cqes as usize) as *const IoUringCqe)
                    .add((head & mask) as usize),
            )
        };
        head_w.store(head.wrapping_add(1), Ordering::Release);
        Some(cqe)
    }

    /// Submits one SQE and returns its completion (`Errno(0)` if none arrived).
    pub fn run(&self, sqe: IoUringSqe) -> Result<IoUringCqe, Errno> {
        self.push(sqe);
        self.enter(1, 1)?;
        self.reap().ok_or(Errno(0))
    }

    /// Unmaps the rings and closes the descriptor (which also unregisters its buffers).
    pub fn close(self) {
        let _ = munmap(self.sq, self.sq_len);
        let _ = munmap(self.cq, self.cq_len);
        let _ = munmap(self.sqes, self.sqes_len);
        let _ = close(self.fd);
    }
}
