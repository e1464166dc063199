//! A sequence count with a lock class (Linux `seqcount_t`, as `write_protect_seq`).

use core::sync::atomic::{fence, AtomicU32, Ordering};

use crate::lockdep;
use crate::LockClass;

/// Writers (serialised by some outer lock) make the count odd for the duration of a write
/// section; lock-free readers sample it before and re-check after, and retry (or back off) if
/// it was odd or moved. The write section is on the checker's held stack like a lock, so the
/// order "outer lock -> write section -> locks inside" is checked too.
pub struct SeqCount {
    class: &'static LockClass,
    seq: AtomicU32,
}

impl SeqCount {
    pub const fn new(class: &'static LockClass) -> SeqCount {
        SeqCount {
            class,
            seq: AtomicU32::new(0),
        }
    }

    /// Opens a write section. The odd value is visible before any store of the section, and
    /// (`SeqCst` fence) before any load of it: the Dekker half GUP-fast's pin check needs.
    #[track_caller]
    pub fn write_begin(&self) -> SeqWriteGuard<'_> {
        lockdep::before_acquire(self.class);
        let s = self.seq.load(Ordering::Relaxed);
        debug_assert!(
            s.is_multiple_of(2),
            "nested write section of {}",
            self.class.name()
        );
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        lockdep::acquired(self.class);
        SeqWriteGuard { count: self }
    }

    /// The count to re-check against (Linux `raw_read_seqcount`): odd means a writer is inside
    /// (the caller decides whether to wait or back off).
    pub fn read_begin(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether a read section that started at `start` must be retried: it began inside a write
    /// section, or one began since. The `SeqCst` fence orders the section's loads (and any
    /// atomic stores it made, e.g. a pin count) before the re-read.
    pub fn read_retry(&self, start: u32) -> bool {
        fence(Ordering::SeqCst);
        !start.is_multiple_of(2) || self.seq.load(Ordering::Relaxed) != start
    }

    /// The raw count (for tests and statistics).
    pub fn value(&self) -> u32 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// An open write section; closes it when dropped.
pub struct SeqWriteGuard<'a> {
    count: &'a SeqCount,
}

impl Drop for SeqWriteGuard<'_> {
    fn drop(&mut self) {
        lockdep::released(self.count.class);
        let s = self.count.seq.load(Ordering::Relaxed);
        // Every store of the section is visible before the even value.
        self.count.seq.store(s.wrapping_add(1), Ordering::Release);
    }
}
