//! Periodic writeback (Linux's per-device flusher, `wb_workfn` -> `wb_check_old_data_flush`):
//! a kernel thread wakes every `dirty_writeback_centisecs` and writes back the page caches
//! that have been dirty for longer than `dirty_expire_centisecs`, write-protecting their
//! shared mappings first (`folio_mkclean`), so a store through a mapping reaches the disk
//! within about expire + interval without any `fsync`/`msync`.
//!
//! The two tunables are `/proc/sys/vm/dirty_expire_centisecs` (default 3000, 30 s) and
//! `/proc/sys/vm/dirty_writeback_centisecs` (default 500; 0 turns periodic writeback off), as
//! on Linux. A write to either wakes the flusher so the new values count at once. The clock is
//! the timer tick (`time::TICK_HZ` = 100: one tick is one centisecond).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::proc::kthread;

static EXPIRE_CS: AtomicU64 = AtomicU64::new(3000);
static INTERVAL_CS: AtomicU64 = AtomicU64::new(500);
/// The flusher's tid (0 before it starts).
static FLUSHER: AtomicU32 = AtomicU32::new(0);

/// A `/proc/sys/vm` writeback tunable.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tunable {
    DirtyExpireCentisecs,
    DirtyWritebackCentisecs,
}

impl Tunable {
    fn cell(self) -> &'static AtomicU64 {
        match self {
            Tunable::DirtyExpireCentisecs => &EXPIRE_CS,
            Tunable::DirtyWritebackCentisecs => &INTERVAL_CS,
        }
    }

    /// The file's text (`3000\n`).
    pub fn read(self) -> alloc::string::String {
        alloc::format!("{}\n", self.cell().load(Ordering::Relaxed))
    }

    /// Sets the value from `data` (a decimal integer, surrounding white space allowed, 0 to
    /// `i32::MAX` as Linux's `proc_dointvec_minmax` with a minimum of 0): `EINVAL` otherwise.
    /// Wakes the flusher.
    pub fn write(self, data: &[u8]) -> Result<usize, Errno> {
        let text = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
        let value = text.trim().parse::<i32>().map_err(|_| Errno::EINVAL)?;
        if value < 0 {
            return Err(Errno::EINVAL);
        }
        self.cell().store(value as u64, Ordering::Relaxed);
        match FLUSHER.load(Ordering::Relaxed) {
            0 => {}
            tid => kthread::wake(tid),
        }
        Ok(data.len())
    }
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
        // Killable sleeps only end early on a wake (kernel threads take no signals).
        let _ = if interval == 0 {
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
    }
}
