//! `/dev/zero`, `/dev/full`, `/dev/random` and `/dev/urandom` (Linux `drivers/char/mem.c` and
//! `random.c`): zero reads an endless run of zero bytes and takes every write; full reads zeros
//! too but refuses every write with `ENOSPC`; the random devices read the kernel's generator
//! (`crate::random`, never blocking: Linux's `/dev/random` stops blocking once seeded) and take
//! writes (Linux mixes them into the pool; here they are discarded).
//!
//! `mmap` of `/dev/zero` is anonymous memory: `syscall::mm` recognises [`MemDev::Zero`] and maps
//! it as `MAP_ANONYMOUS` (Linux `mmap_zero`: private is anonymous, shared is a fresh shmem object).
#![deny(unsafe_code)]

use core::any::Any;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::stat::{tmpfs_statfs, Stat, StatFs, ST_NOSUID, S_IFCHR};
use crate::errno::Errno;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemDev {
    Zero,
    Full,
    Random,
    URandom,
}

/// Bytes produced between checks for a fatal signal and a chance to reschedule (a read of a GiB
/// from /dev/zero must stay killable, Linux `read_iter_zero`'s `cond_resched`).
const CHUNK: usize = 4096;

impl MemDev {
    /// The device by its `/dev` name.
    pub fn by_name(name: &str) -> Option<MemDev> {
        Some(match name {
            "zero" => MemDev::Zero,
            "full" => MemDev::Full,
            "random" => MemDev::Random,
            "urandom" => MemDev::URandom,
            _ => return None,
        })
    }

    /// Linux's minor numbers under major 1.
    fn minor(self) -> u64 {
        match self {
            MemDev::Zero => 5,
            MemDev::Full => 7,
            MemDev::Random => 8,
            MemDev::URandom => 9,
        }
    }
}

impl FileOps for MemDev {
    fn read_iter(&self, _io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let mut buf = [0u8; CHUNK];
        let mut done = 0;
        while to.count() > 0 {
            let n = to.count().min(CHUNK);
            if matches!(self, MemDev::Random | MemDev::URandom) {
                crate::random::fill(&mut buf[..n]);
            }
            let copied = to.copy_to(&buf[..n]);
            done += copied;
            if copied < n || to.count() == 0 {
                break;
            }
            if crate::proc::fatal_signal_pending() {
                break;
            }
            crate::proc::sched::cond_resched();
        }
        to.finish(done)
    }

    fn write_iter(&self, _io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        if *self == MemDev::Full {
            return Err(Errno::ENOSPC);
        }
        let n = from.count();
        from.advance(n);
        Ok(n)
    }

    /// Seekable, always at 0 (Linux `null_lseek` for zero and full; the random devices answer
    /// lseek with success too).
    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn stat(&self) -> Stat {
        Stat {
            st_rdev: (1 << 8) | self.minor(),
            ..Stat::base(S_IFCHR | 0o666, 3 + self.minor())
        }
    }

    fn statfs(&self) -> StatFs {
        tmpfs_statfs(ST_NOSUID)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
