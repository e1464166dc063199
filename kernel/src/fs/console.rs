//! The console device: the serial port. Writes go straight out; reads wait for input, checking
//! the UART once per timer tick while sleeping (the UART's receive interrupt is not wired yet),
//! and return what has arrived as soon as there is at least one byte, like a terminal in raw
//! mode that echoes. Ctrl-D ends a read (at the start of a line: end of file). [`Console`] is
//! its [`FileOps`] (`/dev/console`, `/dev/tty`, descriptors 0-2 of `init`).
#![deny(unsafe_code)]

use alloc::vec::Vec;
use core::any::Any;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::rw::{stream_write, CHUNK};
use super::stat::{tmpfs_statfs, Stat, StatFs, ST_NOSUID, S_IFCHR};
use crate::errno::{Errno, SysResult};
use crate::proc;
use crate::uaccess::UserPtr;

pub fn write(data: &[u8]) -> usize {
    for chunk in data.utf8_chunks() {
        print!("{}", chunk.valid());
        if !chunk.invalid().is_empty() {
            print!("\u{fffd}");
        }
    }
    data.len()
}

/// Reads at least one byte (blocking), at most `len`, stopping after a newline.
pub fn read(len: usize) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    while out.len() < len {
        match crate::serial::try_read_byte() {
            Some(b) => {
                let b = if b == b'\r' { b'\n' } else { b };
                if b == 4 {
                    // Ctrl-D: end the read here; at the start of a line that is EOF (0 bytes).
                    break;
                }
                if b == 0x7f || b == 8 {
                    if out.pop().is_some() {
                        print!("\x08 \x08");
                    }
                    continue;
                }
                print!("{}", b as char);
                out.push(b);
                if b == b'\n' {
                    break;
                }
            }
            None if out.is_empty() || *out.last().unwrap_or(&0) != b'\n' => {
                proc::sleep_ticks(1)?;
            }
            None => break,
        }
    }
    Ok(out)
}

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TIOCGWINSZ: u64 = 0x5413;

/// The kernel's `struct termios` (36 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Termios {
    iflag: u32,
    oflag: u32,
    cflag: u32,
    lflag: u32,
    line: u8,
    cc: [u8; 19],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Winsize {
    rows: u16,
    cols: u16,
    xpixel: u16,
    ypixel: u16,
}

/// The console as an open file: a terminal (no position), `TCGETS`/`TCSETS*`/`TIOCGWINSZ`.
pub struct Console;

impl FileOps for Console {
    fn read_iter(&self, _io: &mut Kiocb, to: &mut IoIter) -> Result<usize, Errno> {
        let data = read(to.count().min(CHUNK))?;
        let n = to.copy_to(&data);
        to.finish(n)
    }

    fn write_iter(&self, _io: &mut Kiocb, from: &mut IoIter) -> Result<usize, Errno> {
        stream_write(from, &mut |data| Ok(write(data)))
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    fn stat(&self) -> Stat {
        Stat {
            st_rdev: (5 << 8) | 1,
            ..Stat::base(S_IFCHR | 0o620, 2)
        }
    }

    fn statfs(&self) -> StatFs {
        tmpfs_statfs(ST_NOSUID)
    }

    fn ioctl(&self, _file: &OpenFile, cmd: u64, arg: u64) -> SysResult {
        match cmd {
            TCGETS => {
                let t = Termios {
                    iflag: 0o2400,   // ICRNL | IXON
                    oflag: 0o5,      // OPOST | ONLCR
                    cflag: 0o277,    // B38400 | CS8 | CREAD
                    lflag: 0o105073, // ISIG | ICANON | ECHO...
                    ..Termios::default()
                };
                UserPtr::<Termios>::new(arg)?.write(&t)?;
                Ok(0)
            }
            TCSETS | TCSETSW | TCSETSF => Ok(0),
            TIOCGWINSZ => {
                let w = Winsize {
                    rows: 24,
                    cols: 80,
                    ..Winsize::default()
                };
                UserPtr::<Winsize>::new(arg)?.write(&w)?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
