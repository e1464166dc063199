//! cow.c's fixed-buffer io_uring cases over the runtime's ring ([`cowlab_userland::uring`]):
//! register one buffer (a `FOLL_WRITE | FOLL_LONGTERM` pin of its pages), submit one
//! `IORING_OP_WRITE_FIXED` and wait for its completion. What liburing does, without liburing.

use cowlab_userland::calls::{
    io_uring_register_buffers, io_uring_unregister_buffers, IoUringSqe, IORING_OP_WRITE_FIXED,
};
use cowlab_userland::sys::Errno;
use cowlab_userland::uring;

/// One ring with its mappings; dropped = unmapped and closed (which also unregisters).
pub struct Ring(Option<uring::Ring>);

impl Ring {
    /// `io_uring_setup(entries)` and the ring mappings.
    pub fn new(entries: u32) -> Result<Ring, Errno> {
        uring::Ring::new(entries).map(|r| Ring(Some(r)))
    }

    fn ring(&self) -> &uring::Ring {
        self.0.as_ref().expect("a ring until dropped")
    }

    /// `IORING_REGISTER_BUFFERS` with one iovec.
    pub fn register_buffer(&self, base: usize, len: usize) -> Result<(), Errno> {
        io_uring_register_buffers(self.ring().fd, &[[base, len]]).map(|_| ())
    }

    /// `IORING_UNREGISTER_BUFFERS`.
    pub fn unregister_buffers(&self) -> Result<(), Errno> {
        io_uring_unregister_buffers(self.ring().fd).map(|_| ())
    }

    /// Submits `IORING_OP_WRITE_FIXED` of `len` bytes at `addr` (inside registered buffer 0) to
    /// `fd` at file offset `off`, waits for it, and returns the completion's `res`.
    pub fn write_fixed(&self, fd: i32, addr: usize, len: u32, off: u64) -> Result<i32, Errno> {
        let sqe = IoUringSqe {
            opcode: IORING_OP_WRITE_FIXED,
            fd,
            off,
            addr: addr as u64,
            len,
            user_data: 0xc0,
            // The first registered buffer.
            buf_index: 0,
            ..IoUringSqe::default()
        };
        self.ring().run(sqe).map(|c| c.res).map_err(|e| {
            if e.0 == 0 {
                Errno(cowlab_userland::sys::errno::EINVAL)
            } else {
                e
            }
        })
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.close();
        }
    }
}
