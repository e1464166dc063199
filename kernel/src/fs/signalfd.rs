//! signalfd (Linux `fs/signalfd.c`): the caller's pending signals of a mask, read as 128-byte
//! `struct signalfd_siginfo` records instead of being delivered. The file holds only the mask:
//! whoever reads or polls it sees its own thread's and process's pending signals, as on Linux.
//! Readers sleep on their process's signalfd channel, which queuing a signal wakes
//! (`proc::signal::send_locked`, Linux `signalfd_notify`); epoll links to that channel.
#![deny(unsafe_code)]

use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::poll::{POLLIN, POLLRDNORM};
use super::stat::{statfs_of, Stat, StatFs, ANON_INODE_FS_MAGIC};
use crate::errno::Errno;
use crate::proc::signal::{self, ops, SigInfo};
use crate::proc::{self, with_current};

/// `sizeof(struct signalfd_siginfo)`.
pub const RECORD: usize = 128;
/// SIGKILL and SIGSTOP are never read through a signalfd (Linux `signalfd_create` drops them).
const UNREADABLE: u64 = (1 << (9 - 1)) | (1 << (19 - 1));

const SIGILL: i32 = 4;
const SIGTRAP: i32 = 5;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGSEGV: i32 = 11;
const SIGCHLD: i32 = 17;
const SI_TIMER: i32 = -2;

pub struct SignalFd {
    mask: AtomicU64,
}

impl SignalFd {
    pub fn new(mask: u64) -> SignalFd {
        SignalFd {
            mask: AtomicU64::new(mask & !UNREADABLE),
        }
    }

    /// signalfd4 on an existing signalfd: a new mask.
    pub fn set_mask(&self, mask: u64) {
        self.mask.store(mask & !UNREADABLE, Ordering::Relaxed);
        proc::wakeup(channel());
    }
}

/// The calling process's signalfd channel.
fn channel() -> usize {
    with_current(|t| signal::signalfd_channel(&t.group))
}

/// A `siginfo_t` as a `signalfd_siginfo` (Linux `signalfd_copyinfo`): which union fields are
/// meaningful depends on the signal and its `si_code` (`siginfo_layout`).
fn record(info: &SigInfo) -> [u8; RECORD] {
    let mut r = [0u8; RECORD];
    let mut put = |at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &(info.signo as u32).to_ne_bytes());
    put(4, &info.errno.to_ne_bytes());
    put(8, &info.code.to_ne_bytes());
    let d = info.data;
    let fault = info.code > 0
        && info.code != signal::SI_KERNEL
        && matches!(info.signo, SIGILL | SIGTRAP | SIGBUS | SIGFPE | SIGSEGV);
    if fault {
        put(72, &d[0].to_ne_bytes()); // ssi_addr
    } else if info.code == SI_TIMER {
        put(24, &(d[0] as u32).to_ne_bytes()); // ssi_tid
        put(32, &((d[0] >> 32) as u32).to_ne_bytes()); // ssi_overrun
        put(44, &(d[1] as u32).to_ne_bytes()); // ssi_int
        put(48, &d[1].to_ne_bytes()); // ssi_ptr
    } else {
        put(12, &(d[0] as u32).to_ne_bytes()); // ssi_pid
        put(16, &((d[0] >> 32) as u32).to_ne_bytes()); // ssi_uid
        if info.signo == SIGCHLD && info.code > 0 && info.code != signal::SI_KERNEL {
            put(40, &(d[1] as u32).to_ne_bytes()); // ssi_status
            put(56, &d[2].to_ne_bytes()); // ssi_utime
            put(64, &d[3].to_ne_bytes()); // ssi_stime
        } else if info.code < 0 {
            put(44, &(d[1] as u32).to_ne_bytes()); // ssi_int
            put(48, &d[1].to_ne_bytes()); // ssi_ptr
        }
    }
    r
}

impl FileOps for SignalFd {
    /// Linux `signalfd_read`: as many records as fit (at least one, else `EINVAL`), waiting
    /// for the first unless nonblocking; later ones only if already pending.
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let room = to.count() / RECORD;
        if room == 0 {
            return Err(Errno::EINVAL);
        }
        let mut done = 0;
        while done < room {
            let mask = self.mask.load(Ordering::Relaxed);
            let Some(info) = ops::dequeue_signal(mask) else {
                if done > 0 {
                    break;
                }
                if io.nonblock() {
                    return Err(Errno::EAGAIN);
                }
                proc::sleep_interruptible(channel())?;
                continue;
            };
            if to.copy_to(&record(&info)) < RECORD {
                return if done > 0 {
                    Ok(done * RECORD)
                } else {
                    Err(Errno::EFAULT)
                };
            }
            done += 1;
        }
        Ok(done * RECORD)
    }

    fn write_iter(&self, _io: &mut Kiocb, _from: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn poll(&self, _file: &OpenFile) -> u32 {
        if ops::pending_in(self.mask.load(Ordering::Relaxed)) != 0 {
            POLLIN | POLLRDNORM
        } else {
            0
        }
    }

    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        Some([channel(); 2])
    }

    fn stat(&self) -> Stat {
        Stat::base(0o600, (self as *const Self as u64 >> 4) % 1_000_000)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(ANON_INODE_FS_MAGIC, 0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
