//! `/sys/kernel/debug/kcov` (built with the `kcov` feature only): Linux's kcov interface over
//! the coverage buffers of `crate::kcov`, with Linux's ioctl numbers, so a fuzzer written for
//! Linux drives it unchanged.
//!
//! Protocol (Linux `Documentation/dev-tools/kcov.rst`): open the file; `KCOV_INIT_TRACE` with
//! the buffer size in u64 words (once per file); `mmap` the file `MAP_SHARED`, offset 0, exactly
//! that size; `KCOV_ENABLE` with `KCOV_TRACE_PC` starts tracing the *calling task* (one task per
//! file, one file per task); word 0 of the mapping counts the PCs stored after it (the task
//! resets it to 0 to start a window); `KCOV_DISABLE` (argument 0, from the tracing task) stops;
//! the task's exit stops too, and a `fork`ed child is not traced. Only the PC mode exists:
//! `KCOV_TRACE_CMP` is refused (Linux without `CONFIG_KCOV_ENABLE_COMPARISONS`).
#![deny(unsafe_code)]

use alloc::sync::Arc;

use cowlab_mm::shmem::ShmemObject;
use spin::Once;

use crate::errno::Errno;
use crate::kcov::{self, Area};
use crate::proc::current_tid;

/// `_IOR('c', 1, unsigned long)`.
pub const KCOV_INIT_TRACE: u64 = 0x8008_6301;
/// `_IO('c', 100)`.
pub const KCOV_ENABLE: u64 = 0x6364;
/// `_IO('c', 101)`.
pub const KCOV_DISABLE: u64 = 0x6365;
pub const KCOV_TRACE_PC: u64 = 0;
pub const KCOV_TRACE_CMP: u64 = 1;
/// Linux's bound on `KCOV_INIT_TRACE`'s size: `INT_MAX / sizeof(unsigned long)` words.
const MAX_WORDS: u64 = i32::MAX as u64 / 8;
/// cowlab's own bound: 64 MiB of buffer (its memory is small; Linux's is vmalloc space).
const MAX_BYTES: u64 = 64 << 20;

/// One open kcov file: its buffer, once sized (never resized or freed before the file).
#[derive(Default)]
pub struct KcovFile {
    area: Once<Arc<Area>>,
}

impl KcovFile {
    /// The kcov ioctls (Linux `kcov_ioctl_locked`); anything else is `ENOTTY`.
    pub fn ioctl(&self, cmd: u64, arg: u64) -> Result<u64, Errno> {
        match cmd {
            KCOV_INIT_TRACE => {
                if self.area.is_completed() {
                    return Err(Errno::EBUSY);
                }
                if !(2..=MAX_WORDS).contains(&arg) {
                    return Err(Errno::EINVAL);
                }
                if arg * 8 > MAX_BYTES {
                    return Err(Errno::ENOMEM);
                }
                let area = Arc::new(Area::new(arg)?);
                // One CPU, interrupts off in the kernel: no other INIT_TRACE ran since the
                // check above.
                self.area.call_once(|| area);
                Ok(0)
            }
            KCOV_ENABLE => {
                let area = self.area.get().ok_or(Errno::EINVAL)?;
                match arg {
                    KCOV_TRACE_PC => kcov::enable(current_tid(), area).map(|()| 0),
                    KCOV_TRACE_CMP => Err(Errno::EOPNOTSUPP),
                    _ => Err(Errno::EINVAL),
                }
            }
            KCOV_DISABLE => {
                let area = self.area.get().ok_or(Errno::EINVAL)?;
                if arg != 0 {
                    return Err(Errno::EINVAL);
                }
                kcov::disable(current_tid(), area).map(|()| 0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    /// The object behind an mmap of `len` bytes at `offset` (Linux `kcov_mmap`): the whole
    /// buffer (its pages: `len` rounded up to a page must be its size) from offset 0, after
    /// `KCOV_INIT_TRACE`; `EINVAL` otherwise.
    pub fn mmap_target(&self, offset: u64, len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        let area = self.area.get().ok_or(Errno::EINVAL)?;
        if offset != 0 || len.checked_next_multiple_of(4096) != Some(area.words * 8) {
            return Err(Errno::EINVAL);
        }
        Ok((area.obj(), 0))
    }
}

impl super::file::FileOps for KcovFile {
    /// Linux's `kcov_fops` has no `llseek`: no position to move.
    fn seek(&self) -> super::file::Seek {
        super::file::Seek::Stream
    }

    fn stat(&self) -> super::stat::Stat {
        super::stat::Stat::base(super::stat::S_IFREG | 0o600, 6)
    }

    fn statfs(&self) -> super::stat::StatFs {
        use super::stat::{ST_NODEV, ST_NOEXEC, ST_NOSUID};
        super::stat::statfs_of(super::stat::DEBUGFS_MAGIC, ST_NOSUID | ST_NODEV | ST_NOEXEC)
    }

    fn ioctl(&self, _file: &super::OpenFile, cmd: u64, arg: u64) -> crate::errno::SysResult {
        KcovFile::ioctl(self, cmd & 0xffff_ffff, arg)
    }

    fn mmap_target(&self, offset: u64, len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        KcovFile::mmap_target(self, offset, len)
    }

    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
