//! The console device: the serial port as a terminal. [`Console`] is its [`FileOps`]
//! (`/dev/console`, `/dev/tty`, descriptors 0-2 of `init`): reads and writes go through the
//! line discipline in [`super::tty`], the ioctls are the termios and job-control ones.
#![deny(unsafe_code)]

use core::any::Any;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::rw::{stream_write, CHUNK};
use super::stat::{tmpfs_statfs, Stat, StatFs, ST_NOSUID, S_IFCHR};
use super::tty::{self, Termios, Winsize};
use crate::errno::{Errno, SysResult};
use crate::uaccess::UserPtr;

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TCFLSH: u64 = 0x540b;
const TIOCSCTTY: u64 = 0x540e;
const TIOCGPGRP: u64 = 0x540f;
const TIOCSPGRP: u64 = 0x5410;
const TIOCSTI: u64 = 0x5412;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;
const FIONREAD: u64 = 0x541b;
const TIOCNOTTY: u64 = 0x5422;
const TIOCGSID: u64 = 0x5429;

/// The console as an open file: a terminal (no position).
pub struct Console;

impl FileOps for Console {
    fn read_iter(&self, io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        tty::read(io.nonblock(), to.count().min(CHUNK), &mut |data| {
            let n = to.copy_to(data);
            to.finish(n)
        })
    }

    fn write_iter(&self, _io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        stream_write(from, &mut |data| tty::write(data))
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn poll(&self, _file: &OpenFile) -> u32 {
        use super::poll::{POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM};
        let mut mask = POLLOUT | POLLWRNORM;
        if tty::readable() {
            mask |= POLLIN | POLLRDNORM;
        }
        mask
    }

    /// Writes never wait: only input changes the answer.
    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        Some([tty::READ_CHANNEL; 2])
    }

    fn stat(&self) -> Stat {
        Stat {
            st_rdev: tty::CONSOLE_RDEV,
            ..Stat::base(S_IFCHR | 0o620, 2)
        }
    }

    fn statfs(&self) -> StatFs {
        tmpfs_statfs(ST_NOSUID)
    }

    fn ioctl(&self, _file: &OpenFile, cmd: u64, arg: u64) -> SysResult {
        match cmd {
            TCGETS => {
                UserPtr::<Termios>::new(arg)?.write(&tty::termios())?;
                Ok(0)
            }
            TCSETS | TCSETSW | TCSETSF => {
                let new = UserPtr::<Termios>::new(arg)?.read()?;
                tty::set_termios(new, cmd == TCSETSF)?;
                Ok(0)
            }
            TCFLSH => tty::flush(arg).map(|()| 0),
            TIOCGWINSZ => {
                UserPtr::<Winsize>::new(arg)?.write(&tty::winsize())?;
                Ok(0)
            }
            TIOCSWINSZ => {
                tty::set_winsize(UserPtr::<Winsize>::new(arg)?.read()?);
                Ok(0)
            }
            TIOCGPGRP => {
                let pgrp = tty::get_pgrp()?;
                UserPtr::<i32>::new(arg)?.write(&(pgrp as i32))?;
                Ok(0)
            }
            TIOCSPGRP => {
                let pgrp = UserPtr::<i32>::new(arg)?.read()?;
                tty::set_pgrp(pgrp).map(|()| 0)
            }
            TIOCGSID => {
                let sid = tty::get_sid()?;
                UserPtr::<i32>::new(arg)?.write(&(sid as i32))?;
                Ok(0)
            }
            TIOCSTI => {
                let b = UserPtr::<u8>::new(arg)?.read()?;
                tty::inject(b).map(|()| 0)
            }
            TIOCSCTTY => tty::set_ctty(arg as i32 == 1).map(|()| 0),
            TIOCNOTTY => tty::notty().map(|()| 0),
            FIONREAD => {
                UserPtr::<i32>::new(arg)?.write(&(tty::available() as i32))?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
