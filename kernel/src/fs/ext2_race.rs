//! Race windows for tests (issue 12, pcfix6): a named point inside a composition of an ext2
//! call and a page-cache call (`ftruncate` between the disk's truncation and the cache's; a
//! chunked `fallocate` between two chunks) can be armed, once, to sleep there, so a test
//! program can run a second writer of the same file inside the window deterministically.
//! With the file's writer lock (`ext2_cache::InodeLock`) the second writer waits for the
//! whole call instead, which the counters show: a writer that returns while the window is
//! still open ran inside it. Userland cannot reach such a window otherwise: the big kernel
//! lock serialises the two halves' neighbourhood so tightly that racing threads never land
//! between them (t_pc3_dirace passed without the lock too).
//!
//! `/proc/cowlab/race_window`: write `truncate MS` or `fallocate MS` to arm that point for one
//! sleep of MS milliseconds (at most [`MAX_MS`]), `off` to disarm; a read gives the armed
//! point (`armed none` if none) and how many sleeps there began (`entered`) and ended
//! (`left`). Only root may write it. An unarmed point costs one load.
#![deny(unsafe_code)]

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::errno::Errno;

/// The points.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Window {
    /// `ftruncate` of an ext2 file, after the disk's size changed and before the cache's.
    Truncate = 1,
    /// A chunked `fallocate` (mode 0) of an ext2 file, after a chunk that grew the disk's size
    /// and before the next one (the cache learns the size at the end).
    Fallocate = 2,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Truncate => "truncate",
            Window::Fallocate => "fallocate",
        }
    }
}

/// The longest sleep a window may be armed for.
const MAX_MS: u64 = 10_000;

/// The armed point (its discriminant, 0: none) and its sleep, in one word: point << 32 | ms.
static ARMED: AtomicU64 = AtomicU64::new(0);
static ENTERED: AtomicU64 = AtomicU64::new(0);
static LEFT: AtomicU64 = AtomicU64::new(0);

/// Point `at` of the running call: if it is armed, disarms it and sleeps there (with whatever
/// locks the caller holds: the file's writer lock, never a spin lock or the filesystem lock).
pub fn window(at: Window) {
    let armed = ARMED.load(Ordering::Relaxed);
    if armed >> 32 != at as u64 {
        return;
    }
    if ARMED
        .compare_exchange(armed, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    ENTERED.fetch_add(1, Ordering::AcqRel);
    // A signal ends the window early; the call goes on either way.
    let _ = crate::proc::sleep_micros((armed & 0xffff_ffff) * 1000);
    LEFT.fetch_add(1, Ordering::AcqRel);
}

/// The file's text.
pub fn text() -> String {
    let armed = ARMED.load(Ordering::Relaxed);
    let point = match armed >> 32 {
        1 => format!("{} {}", Window::Truncate.name(), armed & 0xffff_ffff),
        2 => format!("{} {}", Window::Fallocate.name(), armed & 0xffff_ffff),
        _ => String::from("none"),
    };
    format!(
        "armed {point}\nentered {}\nleft {}\n",
        ENTERED.load(Ordering::Acquire),
        LEFT.load(Ordering::Acquire)
    )
}

/// A write to the file: `POINT MS` arms, `off` disarms; anything else is `EINVAL`. Root only
/// (`EPERM` otherwise), as Linux's fault-injection files in debugfs: an armed window makes
/// another user's call sleep.
pub fn write(data: &[u8]) -> Result<usize, Errno> {
    if crate::proc::cred::current().euid != 0 {
        return Err(Errno::EPERM);
    }
    let text = core::str::from_utf8(data)
        .map_err(|_| Errno::EINVAL)?
        .trim();
    if text == "off" {
        ARMED.store(0, Ordering::Relaxed);
        return Ok(data.len());
    }
    let (point, ms) = text.split_once(' ').ok_or(Errno::EINVAL)?;
    let point = [Window::Truncate, Window::Fallocate]
        .into_iter()
        .find(|w| w.name() == point)
        .ok_or(Errno::EINVAL)?;
    let ms: u64 = ms.trim().parse().map_err(|_| Errno::EINVAL)?;
    if ms == 0 || ms > MAX_MS {
        return Err(Errno::EINVAL);
    }
    ARMED.store((point as u64) << 32 | ms, Ordering::Relaxed);
    Ok(data.len())
}
