//! poll, ppoll, select, pselect6: argument decoding around `fs::poll::wait` (Linux
//! `fs/select.c`). Timeouts become deadlines in microseconds since boot; ppoll/select/pselect6
//! write the time left back, as Linux does; ppoll/pselect6 install their signal mask for the
//! wait.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use super::{Args, SysResult};
use crate::errno::Errno;
use crate::fs::poll::{self, PollEntry, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLPRI};
use crate::fs::poll::{POLLRDNORM, POLLWRNORM};
use crate::proc::{self, signal::ops, with_current};
use crate::time;
use crate::uaccess::{UserPtr, UserSlice};

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// A relative timeout in microseconds as a deadline; `EINVAL` for a negative or denormal one.
fn deadline_of(sec: i64, sub: i64, sub_per_sec: i64) -> Result<u64, Errno> {
    if sec < 0 || !(0..sub_per_sec).contains(&sub) {
        return Err(Errno::EINVAL);
    }
    let us = (sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add((sub as u64) * 1_000_000 / sub_per_sec as u64);
    Ok(time::micros_since_boot().saturating_add(us))
}

fn left_of(deadline: u64) -> u64 {
    deadline.saturating_sub(time::micros_since_boot())
}

/// Runs the wait with `sigmask` (if given) installed; the ready count.
fn wait_masked(
    entries: &mut [PollEntry],
    deadline: Option<u64>,
    sigmask: Option<u64>,
) -> Result<usize, Errno> {
    if let Some(mask) = sigmask {
        ops::set_temporary_mask(mask);
    }
    let r = poll::wait(entries, deadline);
    if sigmask.is_some() && !matches!(r, Err(Errno::ERESTARTNOHAND | Errno::EINTR)) {
        ops::restore_temporary_mask();
    }
    r
}

fn read_sigmask(ptr: u64, size: u64) -> Result<Option<u64>, Errno> {
    if ptr == 0 {
        return Ok(None);
    }
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    Ok(Some(UserPtr::<u64>::new(ptr)?.read()?))
}

/// `struct pollfd` array at `ptr`: checks, waits, writes `revents` back.
fn do_poll(ptr: u64, nfds: u64, deadline: Option<u64>, sigmask: Option<u64>) -> SysResult {
    if nfds > proc::rlimit::nofile() as u64 {
        return Err(Errno::EINVAL);
    }
    // The copy, the entries and their index live on the fixed kernel heap (up to NR_OPEN
    // descriptors: about 2 MiB): ENOMEM rather than an allocation failure.
    crate::heap::headroom(nfds as usize * 40)?;
    let user = UserSlice::new(ptr, nfds as usize * 8)?;
    let mut raw = alloc::vec![0u8; nfds as usize * 8];
    user.read(&mut raw)?;
    // A negative fd is skipped (revents 0, never POLLNVAL): only the others are waited on.
    let mut entries = Vec::new();
    let mut index = Vec::new();
    for (i, c) in raw.as_chunks::<8>().0.iter().enumerate() {
        let fd = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        if fd < 0 {
            continue;
        }
        entries.push(PollEntry {
            file: with_current(|t| t.fds.get(i64::from(fd))).ok(),
            events: u32::from(u16::from_ne_bytes([c[4], c[5]])),
            revents: 0,
        });
        index.push(i);
    }
    let ready = wait_masked(&mut entries, deadline, sigmask)?;
    for c in raw.as_chunks_mut::<8>().0 {
        c[6..8].fill(0);
    }
    for (e, &i) in entries.iter().zip(&index) {
        raw[i * 8 + 6..i * 8 + 8].copy_from_slice(&(e.revents as u16).to_ne_bytes());
    }
    user.write(&raw)?;
    Ok(ready as u64)
}

pub fn poll(a: Args) -> SysResult {
    let ms = a.i32(2);
    let deadline = if ms < 0 {
        None
    } else {
        Some(time::micros_since_boot().saturating_add(ms as u64 * 1000))
    };
    poll_restart(a.get(0), u64::from(a.get(1) as u32), deadline)
}

/// poll, first call or continued by `restart_syscall`: interrupted, it records its arguments
/// and deadline and returns `-ERESTART_RESTARTBLOCK`, so that without a handler it goes on
/// for the time left only (Linux `sys_poll`, `do_restart_poll`).
pub fn poll_restart(ufds: u64, nfds: u64, deadline: Option<u64>) -> SysResult {
    match do_poll(ufds, nfds, deadline, None) {
        Err(Errno::ERESTARTNOHAND) => {
            proc::signal::restart::set(proc::signal::restart::Restart::Poll {
                ufds,
                nfds,
                deadline,
            });
            Err(Errno::ERESTART_RESTARTBLOCK)
        }
        r => r,
    }
}

pub fn ppoll(a: Args) -> SysResult {
    let ts = if a.get(2) != 0 {
        Some(UserPtr::<Timespec>::new(a.get(2))?)
    } else {
        None
    };
    let deadline = match &ts {
        Some(p) => {
            let t = p.read()?;
            Some(deadline_of(t.sec, t.nsec, 1_000_000_000)?)
        }
        None => None,
    };
    let sigmask = read_sigmask(a.get(3), a.get(4))?;
    let r = do_poll(a.get(0), u64::from(a.get(1) as u32), deadline, sigmask);
    if let (Some(p), Some(d)) = (ts, deadline) {
        let left = left_of(d);
        let _ = p.write(&Timespec {
            sec: (left / 1_000_000) as i64,
            nsec: (left % 1_000_000 * 1000) as i64,
        });
    }
    r
}

const POLLIN_SET: u32 = POLLIN | POLLRDNORM | POLLHUP | POLLERR;
const POLLOUT_SET: u32 = POLLOUT | POLLWRNORM | POLLERR;
const POLLEX_SET: u32 = POLLPRI;

/// select's three descriptor sets (`nfds` bits each, in 64-bit words).
fn do_select(nfds: i32, sets: [u64; 3], deadline: Option<u64>, sigmask: Option<u64>) -> SysResult {
    if nfds < 0 {
        return Err(Errno::EINVAL);
    }
    let nfds = (nfds as usize).min(proc::rlimit::nofile().max(1024));
    let words = nfds.div_ceil(64);
    crate::heap::headroom(nfds * 24)?;
    let mut bits = [Vec::new(), Vec::new(), Vec::new()];
    for (k, &ptr) in sets.iter().enumerate() {
        bits[k] = alloc::vec![0u64; words];
        if ptr != 0 && words > 0 {
            let mut raw = alloc::vec![0u8; words * 8];
            UserSlice::new(ptr, words * 8)?.read(&mut raw)?;
            for (w, c) in bits[k].iter_mut().zip(raw.as_chunks::<8>().0) {
                *w = u64::from_ne_bytes(*c);
            }
        }
    }
    let mut entries = Vec::new();
    let mut fds = Vec::new();
    for fd in 0..nfds {
        let (w, b) = (fd / 64, 1u64 << (fd % 64));
        let mut events = 0;
        for (k, set) in [POLLIN_SET, POLLOUT_SET, POLLEX_SET].iter().enumerate() {
            if bits[k][w] & b != 0 {
                events |= set;
            }
        }
        if events == 0 {
            continue;
        }
        let file = with_current(|t| t.fds.get(fd as i64)).map_err(|_| Errno::EBADF)?;
        entries.push(PollEntry {
            file: Some(file),
            events,
            revents: 0,
        });
        fds.push(fd);
    }
    wait_masked(&mut entries, deadline, sigmask)?;
    let mut out = [
        alloc::vec![0u64; words],
        alloc::vec![0u64; words],
        alloc::vec![0u64; words],
    ];
    let mut count = 0;
    for (e, &fd) in entries.iter().zip(&fds) {
        let (w, b) = (fd / 64, 1u64 << (fd % 64));
        for (k, set) in [POLLIN_SET, POLLOUT_SET, POLLEX_SET].iter().enumerate() {
            if bits[k][w] & b != 0 && e.revents & set != 0 {
                out[k][w] |= b;
                count += 1;
            }
        }
    }
    for (k, &ptr) in sets.iter().enumerate() {
        if ptr != 0 && words > 0 {
            let raw: Vec<u8> = out[k].iter().flat_map(|w| w.to_ne_bytes()).collect();
            UserSlice::new(ptr, words * 8)?.write(&raw)?;
        }
    }
    Ok(count)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Timeval {
    sec: i64,
    usec: i64,
}

pub fn select(a: Args) -> SysResult {
    let tv = if a.get(4) != 0 {
        Some(UserPtr::<Timeval>::new(a.get(4))?)
    } else {
        None
    };
    let deadline = match &tv {
        Some(p) => {
            // Linux `kern_select` normalises microseconds past a second before checking.
            let t = p.read()?;
            let sec = t.sec.saturating_add(t.usec / 1_000_000);
            Some(deadline_of(sec, t.usec % 1_000_000, 1_000_000)?)
        }
        None => None,
    };
    let r = do_select(a.i32(0), [a.get(1), a.get(2), a.get(3)], deadline, None);
    if let (Some(p), Some(d)) = (tv, deadline) {
        let left = left_of(d);
        let _ = p.write(&Timeval {
            sec: (left / 1_000_000) as i64,
            usec: (left % 1_000_000) as i64,
        });
    }
    r
}

pub fn pselect6(a: Args) -> SysResult {
    let ts = if a.get(4) != 0 {
        Some(UserPtr::<Timespec>::new(a.get(4))?)
    } else {
        None
    };
    let deadline = match &ts {
        Some(p) => {
            let t = p.read()?;
            Some(deadline_of(t.sec, t.nsec, 1_000_000_000)?)
        }
        None => None,
    };
    // The sixth argument points at { const sigset_t *ss; size_t ss_len }.
    let sigmask = if a.get(5) != 0 {
        let data = UserPtr::<[u64; 2]>::new(a.get(5))?.read()?;
        read_sigmask(data[0], data[1])?
    } else {
        None
    };
    let r = do_select(a.i32(0), [a.get(1), a.get(2), a.get(3)], deadline, sigmask);
    if let (Some(p), Some(d)) = (ts, deadline) {
        let left = left_of(d);
        let _ = p.write(&Timespec {
            sec: (left / 1_000_000) as i64,
            nsec: (left % 1_000_000 * 1000) as i64,
        });
    }
    r
}
