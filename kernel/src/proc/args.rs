//! execve's argument and environment strings, copied from the caller (Linux `copy_strings`
//! with the limits of `bprm_stack_limits`): any bytes but NUL, each string up to
//! [`MAX_ARG_STRLEN`] with its NUL, and argv and envp together, strings and pointers, within
//! the room the caller passes (execve: `rlimit::arg_space_limit`, a quarter of `RLIMIT_STACK`);
//! past either, `E2BIG`. The strings are kept back to back in one buffer, as they
//! will lie on the new stack, so a call with a hundred thousand short strings makes two heap
//! allocations, not a hundred thousand. Both grow through `heap::try_reserve`: the space a
//! program may ask for (6 MiB) is more than a small kernel heap holds, and a copy the heap
//! cannot take is `ENOMEM` (Linux's `copy_strings` when it cannot get a page), not a panic.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use crate::errno::Errno;
use crate::heap;
use crate::uaccess::{UserPtr, UserSlice};

/// Linux `MAX_ARG_STRLEN`: the longest string, its NUL included (32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// argv or envp: the strings back to back, each with its NUL, and where each one ends.
#[derive(Default)]
pub struct ArgStrings {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl ArgStrings {
    /// The kernel's own strings (init's argv and environment).
    pub fn from_strs<'a>(strings: impl IntoIterator<Item = &'a str>) -> ArgStrings {
        let mut out = ArgStrings::default();
        for s in strings {
            out.bytes.extend_from_slice(s.as_bytes());
            out.bytes.push(0);
            out.ends.push(out.bytes.len());
        }
        out
    }

    /// All the strings with their NULs, back to back.
    pub fn bytes_len(&self) -> usize {
        self.bytes.len()
    }

    /// The number of strings (argc, or the environment's count).
    pub fn count(&self) -> usize {
        self.ends.len()
    }

    /// Each string without its NUL.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = core::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end - 1])
    }
}

/// Copies the NULL-terminated array of string pointers at `addr` (NULL: empty), charging each
/// string and its pointer to `room` (what is left of the argument space; Linux `copy_strings`).
pub fn copy_strings(addr: u64, room: &mut usize) -> Result<ArgStrings, Errno> {
    let mut out = ArgStrings::default();
    if addr == 0 {
        return Ok(out);
    }
    loop {
        let slot = (out.count() as u64)
            .checked_mul(8)
            .and_then(|off| addr.checked_add(off))
            .ok_or(Errno::EFAULT)?;
        let ptr = UserPtr::<u64>::new(slot)?.read()?;
        if ptr == 0 {
            return Ok(out);
        }
        *room = room.checked_sub(8).ok_or(Errno::E2BIG)?;
        let len = copy_string(ptr, MAX_ARG_STRLEN.min(*room), &mut out.bytes)?;
        *room -= len;
        heap::try_reserve(&mut out.ends, 1)?;
        out.ends.push(out.bytes.len());
    }
}

/// Appends the NUL-terminated string at `addr`, NUL included, to `out`; returns its length with
/// the NUL. `E2BIG` if no NUL comes within `max` bytes, `EFAULT` for a bad address. Reads a page
/// at a time, so a string ending just before an unmapped page is fine.
fn copy_string(addr: u64, max: usize, out: &mut Vec<u8>) -> Result<usize, Errno> {
    let start = out.len();
    let mut at = addr;
    let mut buf = [0u8; 256];
    loop {
        let taken = out.len() - start;
        if taken >= max {
            out.truncate(start);
            return Err(Errno::E2BIG);
        }
        let to_page_end = 4096 - (at % 4096) as usize;
        let chunk = to_page_end.min(buf.len()).min(max - taken);
        UserSlice::new(at, chunk)?.read(&mut buf[..chunk])?;
        let nul = buf[..chunk].iter().position(|&b| b == 0);
        let take = nul.map_or(chunk, |nul| nul + 1);
        if let Err(e) = heap::try_reserve(out, take) {
            out.truncate(start);
            return Err(e);
        }
        out.extend_from_slice(&buf[..take]);
        if nul.is_some() {
            return Ok(out.len() - start);
        }
        // In range: `UserSlice::new` accepted `[at, at + chunk)` in the user half.
        at += chunk as u64;
    }
}
