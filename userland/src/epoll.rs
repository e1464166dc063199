//! epoll for the test programs: Linux x86_64's numbers, flags and `struct epoll_event` (packed:
//! 12 bytes), and the three calls as the `t_epoll_*` programs use them.

use alloc_crate::vec::Vec;

use crate::calls::raw;
use crate::sys::Errno;

pub const EPOLL_WAIT: usize = 232;
pub const EPOLL_CTL: usize = 233;
pub const EPOLL_CREATE1: usize = 291;

pub const ADD: i32 = 1;
pub const DEL: i32 = 2;
pub const MOD: i32 = 3;

pub const IN: u32 = 0x1;
pub const OUT: u32 = 0x4;
pub const ERR: u32 = 0x8;
pub const HUP: u32 = 0x10;
pub const RDHUP: u32 = 0x2000;
pub const EXCLUSIVE: u32 = 1 << 28;
pub const ONESHOT: u32 = 1 << 30;
pub const ET: u32 = 1 << 31;

/// `struct epoll_event` (packed on x86_64).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub struct Event {
    pub events: u32,
    pub data: u64,
}

/// `epoll_create1(flags)`.
pub fn epoll_create1(flags: u32) -> Result<i32, Errno> {
    // SAFETY: no pointer arguments.
    unsafe { raw(EPOLL_CREATE1, [flags as usize, 0, 0, 0, 0, 0]) }.map(|f| f as i32)
}

/// `epoll_ctl(ep, op, fd, {events, data})`.
pub fn epoll_ctl(ep: i32, op: i32, fd: i32, events: u32, data: u64) -> Result<usize, Errno> {
    let ev = Event { events, data };
    // SAFETY: a live 12-byte epoll_event.
    unsafe {
        raw(
            EPOLL_CTL,
            [
                ep as usize,
                op as usize,
                fd as usize,
                &ev as *const Event as usize,
                0,
                0,
            ],
        )
    }
}

/// `epoll_wait(ep, events, max, ms)` into a local array of 8 (`max` is capped there); the
/// (events, data) pairs reported.
pub fn epoll_wait(ep: i32, max: usize, ms: i32) -> Result<Vec<(u32, u64)>, Errno> {
    let mut evs = [Event::default(); 8];
    // SAFETY: `evs` holds 8 events; at most 8 are asked for.
    let n = unsafe {
        raw(
            EPOLL_WAIT,
            [
                ep as usize,
                evs.as_mut_ptr() as usize,
                max.min(8),
                ms as u32 as usize,
                0,
                0,
            ],
        )
    }?;
    Ok(evs[..n].iter().map(|e| (e.events, e.data)).collect())
}

/// Reads the 8-byte counter of an eventfd or a timerfd.
pub fn read_u64(fd: i32) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    crate::calls::read(fd, &mut b).map(|_| u64::from_ne_bytes(b))
}
