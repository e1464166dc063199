//! `/dev/null`: reads see end of file, writes take everything (Linux `drivers/char/mem.c`).
#![deny(unsafe_code)]

use core::any::Any;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::stat::{tmpfs_statfs, Stat, StatFs, ST_NOSUID, S_IFCHR};
use crate::errno::Errno;

pub struct Null;

impl FileOps for Null {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Ok(0)
    }

    fn write_iter(&self, _io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        let n = from.count();
        from.advance(n);
        Ok(n)
    }

    /// Seekable, always at 0 (Linux `null_lseek`); positioned reads and writes work.
    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn stat(&self) -> Stat {
        Stat {
            st_rdev: (1 << 8) | 3,
            ..Stat::base(S_IFCHR | 0o666, 3)
        }
    }

    fn statfs(&self) -> StatFs {
        tmpfs_statfs(ST_NOSUID)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
