//! `/proc` files (see `procfs`) as open files: each read or write goes through a kernel buffer
//! of at most one chunk, at the description's position.
#![deny(unsafe_code)]

use core::any::Any;

use super::file::{FileOps, Kiocb, Seek};
use super::iter::IoIter;
use super::procfs::ProcFile;
use super::rw::CHUNK;
use super::stat::{
    statfs_of, Stat, StatFs, PROC_SUPER_MAGIC, ST_NODEV, ST_NOEXEC, ST_NOSUID, S_IFREG,
};
use crate::errno::Errno;

impl FileOps for ProcFile {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let data = self.read(io.pos, to.count().min(CHUNK))?;
        let n = to.copy_to(&data);
        io.pos += n as u64;
        to.finish(n)
    }

    fn write_iter(&self, io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        let data = from.copy_from_vec(CHUNK)?;
        if data.is_empty() && from.faulted() {
            return Err(Errno::EFAULT);
        }
        let n = self.write(io.pos, &data)?;
        io.pos += n as u64;
        Ok(n)
    }

    fn seek(&self) -> Seek {
        if self.unsigned_offsets() {
            Seek::Address
        } else {
            Seek::Size(0)
        }
    }

    fn stat(&self) -> Stat {
        let perm = match self.sysctl_mode() {
            Some(m) => m,
            None if self.writable() => 0o600,
            None => 0o444,
        };
        let mode = S_IFREG | perm;
        Stat::base(mode, 0x1000 + self.pid as u64 * 8 + self.what as u64)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(PROC_SUPER_MAGIC, ST_NOSUID | ST_NODEV | ST_NOEXEC)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
