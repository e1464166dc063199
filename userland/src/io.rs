//! Formatted output without an allocator: `print!` formats into a stack buffer and writes it out
//! when it fills and when the call ends.

use core::fmt::{self, Write};

use crate::sys;

/// Standard output.
pub const STDOUT: i32 = 1;
/// Standard error.
pub const STDERR: i32 = 2;

const BUFFER: usize = 512;

struct Buffered {
    fd: i32,
    len: usize,
    buf: [u8; BUFFER],
}

impl Buffered {
    fn flush(&mut self) -> fmt::Result {
        let result = sys::write_all(self.fd, &self.buf[..self.len]);
        self.len = 0;
        result.map_err(|_| fmt::Error)
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == BUFFER {
                self.flush()?;
            }
            let n = bytes.len().min(BUFFER - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// Writes formatted `args` to `fd`. Errors (a closed descriptor) are ignored, as `print!` does
/// when it cannot panic.
pub fn print_to(fd: i32, args: fmt::Arguments<'_>) {
    let mut out = Buffered {
        fd,
        len: 0,
        buf: [0; BUFFER],
    };
    let _ = out.write_fmt(args);
    let _ = out.flush();
}
