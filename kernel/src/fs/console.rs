//! The console device: the serial port. Writes go straight out; reads wait for input, checking
//! the UART once per timer tick while sleeping (the UART's receive interrupt is not wired yet),
//! and return what has arrived as soon as there is at least one byte, like a terminal in raw
//! mode that echoes. Ctrl-D ends a read (at the start of a line: end of file).

use alloc::vec::Vec;

use crate::errno::Errno;
use crate::proc;

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
