//! eventfd (Linux `fs/eventfd.c`): a 64-bit counter as a file. `write` adds an 8-byte value
//! (blocking while the sum would pass `u64::MAX - 1`), `read` takes the whole count (or 1 with
//! `EFD_SEMAPHORE`), blocking while it is 0. Readable while the count is positive, writable
//! while at least 1 can be added. Readers sleep on the counter's address, writers on the next
//! byte's, and each side's change wakes the other, which is what epoll links to.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use core::any::Any;

use spin::Mutex;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::poll::{POLLERR, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM};
use super::stat::{statfs_of, Stat, StatFs, ANON_INODE_FS_MAGIC};
use crate::errno::Errno;
use crate::proc;

pub const EFD_SEMAPHORE: u32 = 1;

pub struct EventFd {
    count: Arc<Mutex<u64>>,
    semaphore: bool,
}

impl EventFd {
    pub fn new(initval: u32, semaphore: bool) -> EventFd {
        EventFd {
            count: Arc::new(Mutex::new(u64::from(initval))),
            semaphore,
        }
    }

    fn rd_channel(&self) -> usize {
        Arc::as_ptr(&self.count) as usize
    }

    fn wr_channel(&self) -> usize {
        self.rd_channel() + 1
    }
}

impl FileOps for EventFd {
    /// Linux `eventfd_read`: the buffer must hold 8 bytes; the count is taken before the copy,
    /// so a faulting buffer loses it (`EFAULT`), as on Linux.
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        if to.count() < 8 {
            return Err(Errno::EINVAL);
        }
        let value = loop {
            {
                let mut c = self.count.lock();
                if *c > 0 {
                    let take = if self.semaphore { 1 } else { *c };
                    *c -= take;
                    break take;
                }
            }
            if io.nonblock() {
                return Err(Errno::EAGAIN);
            }
            proc::sleep_interruptible(self.rd_channel())?;
        };
        proc::wakeup(self.wr_channel());
        let n = to.copy_to(&value.to_ne_bytes());
        if n < 8 {
            return Err(Errno::EFAULT);
        }
        Ok(8)
    }

    /// Linux `eventfd_write`: 8 bytes, not `u64::MAX`; blocks while the count cannot take it.
    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        if from.count() < 8 {
            return Err(Errno::EINVAL);
        }
        let mut raw = [0u8; 8];
        if from.copy_from(&mut raw) < 8 {
            return Err(Errno::EFAULT);
        }
        let add = u64::from_ne_bytes(raw);
        if add == u64::MAX {
            return Err(Errno::EINVAL);
        }
        loop {
            {
                let mut c = self.count.lock();
                if u64::MAX - *c > add {
                    *c += add;
                    break;
                }
            }
            if io.nonblock() {
                return Err(Errno::EAGAIN);
            }
            proc::sleep_interruptible(self.wr_channel())?;
        }
        proc::wakeup(self.rd_channel());
        Ok(8)
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    /// Linux `eventfd_poll`.
    fn poll(&self, _file: &OpenFile) -> u32 {
        let c = *self.count.lock();
        let mut mask = 0;
        if c > 0 {
            mask |= POLLIN | POLLRDNORM;
        }
        if c == u64::MAX {
            mask |= POLLERR;
        }
        if c < u64::MAX - 1 {
            mask |= POLLOUT | POLLWRNORM;
        }
        mask
    }

    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        Some([self.rd_channel(), self.wr_channel()])
    }

    fn stat(&self) -> Stat {
        super::epoll::anon_stat(&self.count)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(ANON_INODE_FS_MAGIC, 0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
