//! Periodic and background writeback (Linux's per-device flusher, `wb_workfn` ->
//! `wb_check_old_data_flush` and `wb_check_background_flush`): a kernel thread wakes every
//! `dirty_writeback_centisecs` and writes back the page caches that have been dirty for longer
//! than `dirty_expire_centisecs`, write-protecting their shared mappings first
//! (`folio_mkclean`), so a store through a mapping reaches the disk within about expire +
//! interval without any `fsync`/`msync`; and, woken by a writer that finds more file pages
//! dirty than the background threshold ([`dirty_thresholds`]), writes back caches, oldest
//! first, whatever their age, until the count is below it.
//!
//! The tunables are Linux's `/proc/sys/vm` files ([`Tunable`]): `dirty_expire_centisecs`
//! (default 3000, 30 s), `dirty_writeback_centisecs` (default 500; 0 turns periodic writeback
//! off), `dirty_background_ratio` (10) or `dirty_background_bytes`, and `dirty_ratio` (20) or
//! `dirty_bytes`, the limit past which a writer is throttled (`ext2_throttle`). Of each
//! ratio/bytes pair, writing one sets the other to 0 (Linux's `dirty_ratio_handler` and
//! `dirty_bytes_handler`), and the non-zero one counts. A write to any of them wakes the
//! flusher so the new values count at once. The clock is the timer tick (`time::TICK_HZ` =
//! 100: one tick is one centisecond).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::proc::kthread;

static EXPIRE_CS: AtomicU64 = AtomicU64::new(3000);
/// As Linux's `unsigned int dirty_writeback_interval`: a negative write is a huge interval.
static INTERVAL_CS: AtomicU64 = AtomicU64::new(500);
static DIRTY_RATIO: AtomicU64 = AtomicU64::new(20);
static DIRTY_BYTES: AtomicU64 = AtomicU64::new(0);
static BACKGROUND_RATIO: AtomicU64 = AtomicU64::new(10);
static BACKGROUND_BYTES: AtomicU64 = AtomicU64::new(0);
/// The flusher's tid (0 before it starts).
static FLUSHER: AtomicU32 = AtomicU32::new(0);
/// A writer found the background threshold passed: the flusher's next round writes back.
static BACKGROUND_WANTED: AtomicBool = AtomicBool::new(false);
/// Flusher rounds that wrote back because of the background threshold (mmstat
/// `background_writebacks`).
pub static BACKGROUND_ROUNDS: AtomicU64 = AtomicU64::new(0);

const PAGE: u64 = 4096;

/// A `/proc/sys/vm` writeback tunable (`dirty_expire_centisecs`, `dirty_writeback_centisecs`,
/// `dirty_ratio`, `dirty_bytes`, `dirty_background_ratio`, `dirty_background_bytes`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tunable {
    ExpireCentisecs,
    WritebackCentisecs,
    Ratio,
    Bytes,
    BackgroundRatio,
    BackgroundBytes,
}

/// What a write may hold (Linux's `ctl_table` bounds for each file).
enum Range {
    /// `proc_dointvec_minmax` from `min` to `max`.
    Int { min: i64, max: i64 },
    /// `proc_dointvec` of an `unsigned int`: any `int`, a negative one stored as its bits.
    UInt,
    /// `proc_doulongvec_minmax` from `min`.
    ULong { min: u64 },
}

impl Tunable {
    /// The tunable at `/proc/sys/vm/<name>`.
    pub fn from_name(name: &str) -> Option<Tunable> {
        Some(match name {
            "dirty_expire_centisecs" => Tunable::ExpireCentisecs,
            "dirty_writeback_centisecs" => Tunable::WritebackCentisecs,
            "dirty_ratio" => Tunable::Ratio,
            "dirty_bytes" => Tunable::Bytes,
            "dirty_background_ratio" => Tunable::BackgroundRatio,
            "dirty_background_bytes" => Tunable::BackgroundBytes,
            _ => return None,
        })
    }

    fn cell(self) -> &'static AtomicU64 {
        match self {
            Tunable::ExpireCentisecs => &EXPIRE_CS,
            Tunable::WritebackCentisecs => &INTERVAL_CS,
            Tunable::Ratio => &DIRTY_RATIO,
            Tunable::Bytes => &DIRTY_BYTES,
            Tunable::BackgroundRatio => &BACKGROUND_RATIO,
            Tunable::BackgroundBytes => &BACKGROUND_BYTES,
        }
    }

    fn range(self) -> Range {
        match self {
            Tunable::ExpireCentisecs => Range::Int {
                min: 0,
                max: i32::MAX as i64,
            },
            Tunable::WritebackCentisecs => Range::UInt,
            Tunable::Ratio | Tunable::BackgroundRatio => Range::Int { min: 0, max: 100 },
            // Linux `dirty_bytes_min`: two pages.
            Tunable::Bytes => Range::ULong { min: 2 * PAGE },
            Tunable::BackgroundBytes => Range::ULong { min: 1 },
        }
    }

    /// The other half of a ratio/bytes pair, zeroed when this one is written.
    fn twin(self) -> Option<Tunable> {
        match self {
            Tunable::Ratio => Some(Tunable::Bytes),
            Tunable::Bytes => Some(Tunable::Ratio),
            Tunable::BackgroundRatio => Some(Tunable::BackgroundBytes),
            Tunable::BackgroundBytes => Some(Tunable::BackgroundRatio),
            _ => None,
        }
    }

    /// Whether a write zeroes the twin even when it changes nothing (an empty write, the same
    /// value): Linux's `dirty_background_ratio_handler` and `dirty_background_bytes_handler`
    /// zero it on every successful write; `dirty_ratio_handler` and `dirty_bytes_handler` only
    /// when the value changed.
    fn zeroes_twin_always(self) -> bool {
        matches!(self, Tunable::BackgroundRatio | Tunable::BackgroundBytes)
    }

    /// The file's text (`3000\n`).
    pub fn read(self) -> alloc::string::String {
        let v = self.cell().load(Ordering::Relaxed);
        match self.range() {
            Range::UInt => alloc::format!("{}\n", v as u32 as i32),
            _ => alloc::format!("{v}\n"),
        }
    }

    /// Sets the value from `data` as Linux's sysctl handlers do (`proc_dointvec_minmax`,
    /// `proc_doulongvec_minmax` and the `dirty_*_handler`s around them): the first number
    /// ([`parse_sysctl_number`]) within the file's range, else `EINVAL`; a byte count whose
    /// pages do not fit an `unsigned int` is `ERANGE` (Linux's `DIV_ROUND_UP(bytes,
    /// PAGE_SIZE) > UINT_MAX`, whose add wraps: a count within a page of `u64::MAX` passes, as
    /// there). An empty write changes nothing and counts 0 bytes; otherwise the count is the
    /// bytes up to the number's end and the white space after it. The twin of a ratio/bytes
    /// pair is zeroed as Linux does ([`Self::zeroes_twin_always`]). Wakes the flusher.
    pub fn write(self, data: &[u8]) -> Result<usize, Errno> {
        let Some((negative, magnitude, used)) = parse_sysctl_number(data)? else {
            if self.zeroes_twin_always() {
                self.zero_twin();
            }
            return Ok(0);
        };
        let value = match self.range() {
            Range::Int { min, max } => {
                let v = i64::try_from(magnitude).map_err(|_| Errno::EINVAL)?;
                let v = if negative { -v } else { v };
                if v < min || v > max {
                    return Err(Errno::EINVAL);
                }
                v as u64
            }
            // `proc_dointvec` of an int-sized cell: INT_MIN to INT_MAX, stored as its bits.
            Range::UInt => {
                let v = i64::try_from(magnitude).map_err(|_| Errno::EINVAL)?;
                let v = i32::try_from(if negative { -v } else { v }).map_err(|_| Errno::EINVAL)?;
                u64::from(v as u32)
            }
            Range::ULong { min } => {
                if negative || magnitude < min {
                    return Err(Errno::EINVAL);
                }
                if magnitude.wrapping_add(PAGE - 1) / PAGE > u64::from(u32::MAX) {
                    return Err(Errno::ERANGE);
                }
                magnitude
            }
        };
        let old = self.cell().swap(value, Ordering::Relaxed);
        if old != value || self.zeroes_twin_always() {
            self.zero_twin();
        }
        wake_flusher();
        Ok(used)
    }

    fn zero_twin(self) {
        if let Some(twin) = self.twin() {
            twin.cell().store(0, Ordering::Relaxed);
        }
    }
}

/// Linux's `TMPBUFLEN - 1` in `proc_get_long`: a number (its sign and base prefix included)
/// this long or longer is `EINVAL`.
const SYSCTL_NUMBER_MAX: usize = 21;

/// The first number of a sysctl write (Linux `proc_get_long`): white space (C `isspace`)
/// skipped, an optional `-` (no `+`), digits in C's base 0 (`0x`/`0X` hex, a leading `0`
/// octal, else decimal) that fit 64 bits, then the end or a space, tab or newline; from the
/// sign to the last digit under [`SYSCTL_NUMBER_MAX`] bytes. `Ok(None)` for an empty write;
/// `EINVAL` for one of white space only or anything else. Returns the sign, the magnitude and
/// the bytes used (the number and the white space after it).
fn parse_sysctl_number(data: &[u8]) -> Result<Option<(bool, u64, usize)>, Errno> {
    if data.is_empty() {
        return Ok(None);
    }
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    let mut at = data
        .iter()
        .position(|&b| !is_space(b))
        .ok_or(Errno::EINVAL)?;
    let first = at;
    let negative = data[at] == b'-';
    if negative {
        at += 1;
    }
    let rest = &data[at..];
    let (radix, skip) = match rest {
        [b'0', b'x' | b'X', ..] => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let digits = &rest[skip..];
    let len = digits
        .iter()
        .position(|&b| !(b as char).is_digit(radix))
        .unwrap_or(digits.len());
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let mut value: u64 = 0;
    for &b in &digits[..len] {
        let d = u64::from((b as char).to_digit(radix).ok_or(Errno::EINVAL)?);
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(d))
            .ok_or(Errno::EINVAL)?;
    }
    let mut end = at + skip + len;
    // Linux copies at most `TMPBUFLEN - 1` (21) bytes from the first non-space into a buffer
    // and refuses a number that fills it (it may go on past it): the sign, a `0x` and the
    // digits count, leading zeroes too (checked on the host, Linux 6.18: 20 such bytes are
    // taken, 21 are `EINVAL`).
    if end - first >= SYSCTL_NUMBER_MAX {
        return Err(Errno::EINVAL);
    }
    if let Some(&next) = data.get(end) {
        if !matches!(next, b' ' | b'\t' | b'\n') {
            return Err(Errno::EINVAL);
        }
    }
    while data.get(end).is_some_and(|&b| is_space(b)) {
        end += 1;
    }
    Ok(Some((negative, value, end)))
}

fn wake_flusher() {
    match FLUSHER.load(Ordering::Relaxed) {
        0 => {}
        tid => kthread::wake(tid),
    }
}

/// The background threshold and the dirty limit, in pages, for `available` pages of memory
/// (Linux `domain_dirty_limits`): each from its bytes tunable if set, else from its ratio; a
/// background threshold not below the limit is half the limit.
pub fn dirty_thresholds(available: u64) -> (u64, u64) {
    let pages = |bytes: &AtomicU64, ratio: &AtomicU64| match bytes.load(Ordering::Relaxed) {
        0 => available * ratio.load(Ordering::Relaxed) / 100,
        b => b.div_ceil(PAGE),
    };
    let limit = pages(&DIRTY_BYTES, &DIRTY_RATIO);
    let mut background = pages(&BACKGROUND_BYTES, &BACKGROUND_RATIO);
    if background >= limit {
        background = limit / 2;
    }
    (background, limit)
}

/// A writer found more pages dirty than the background threshold (Linux
/// `wb_start_background_writeback`): the flusher writes back until they are below it.
pub fn start_background_writeback() {
    if !BACKGROUND_WANTED.swap(true, Ordering::Relaxed) {
        wake_flusher();
    }
}

/// Whether more file pages are dirty than the background threshold.
fn over_background_thresh() -> bool {
    let stats = crate::memory::mm().stats();
    stats.file_dirty > dirty_thresholds(stats.usable_frames).0
}

/// Starts the flusher thread if the ext2 root is mounted (after `init`, which must be pid 1).
pub fn start() {
    if !super::ext2_mount::mounted() {
        return;
    }
    cowlab_mm::pagecache::set_clock(crate::time::ticks);
    FLUSHER.store(kthread::spawn("flush-ext2", flusher), Ordering::Relaxed);
}

/// The flusher's life: sleep an interval (or until a tunable changes), write back what has
/// expired, until power-off.
extern "C" fn flusher() -> ! {
    let me = crate::proc::current_tid();
    loop {
        let interval = INTERVAL_CS.load(Ordering::Relaxed);
        // Killable sleeps only end early on a wake (kernel threads take no signals). A wake
        // for background writeback that came during the last round (not asleep: lost) is
        // found here; the check and the sleep are atomic under the big kernel lock.
        let _ = if BACKGROUND_WANTED.load(Ordering::Relaxed) {
            Ok(())
        } else if interval == 0 {
            crate::proc::sleep(kthread::channel(me))
        } else {
            crate::proc::sleep_killable_until(
                kthread::channel(me),
                crate::time::ticks().saturating_add(interval),
            )
        };
        if kthread::should_stop() {
            kthread::exit();
        }
        if INTERVAL_CS.load(Ordering::Relaxed) != 0 {
            let expire = EXPIRE_CS.load(Ordering::Relaxed);
            if let Err(e) = super::ext2_cache::flush_expired(crate::time::ticks(), expire) {
                warn!("flush-ext2: periodic writeback failed: {e:?}");
            }
        }
        // Linux `wb_check_background_flush`: asked for by a writer, or found on the round.
        if BACKGROUND_WANTED.swap(false, Ordering::Relaxed) | over_background_thresh() {
            BACKGROUND_ROUNDS.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = super::ext2_cache::flush_background(over_background_thresh) {
                warn!("flush-ext2: background writeback failed: {e:?}");
            }
        }
    }
}
