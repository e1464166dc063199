//! The address space's lock: a writer-preferring reader/writer semaphore (Linux's `mmap_lock`,
//! an `rw_semaphore`) with a spin lock inside it for the page tables (Linux's per-mm
//! `page_table_lock`).
//!
//! Picture: writers (mmap, munmap, mprotect, mremap, brk, fork, exec, exit, a madvise that
//! changes VMAs) hold the semaphore alone and get `&mut T`. Readers (faults, the GUP slow path,
//! `/proc/pid/mem`, a madvise that only zaps or populates) hold it together; what they may
//! touch is the page tables, so they reach `&mut T` only through [`MmapReadGuard::ptl`], which
//! also takes the page-table lock: two readers hold the semaphore at once, and their page-table
//! work is serialised by the spin lock. (cowlab's memory manager takes `&mut AddressSpace` for a
//! fault, so the page-table lock spans the whole call: a coarse `page_table_lock`, not Linux's
//! per-table split locks, and a fault's PTE re-check after taking it, Linux's `pte_same`, is
//! moot while one lock covers the read and the install.)
//!
//! Writer preference: a writer that has to wait sets [`WRITER_WAITING`], and new readers wait
//! behind it, so a stream of faults from many threads cannot starve an `munmap` (Linux's rwsem
//! hands the lock to a queued writer likewise). Therefore a reader must never take the
//! semaphore again while holding it (a writer queued in between deadlocks both); the order
//! checker reports that as recursive locking.
//!
//! Waiting: a contended acquisition calls the wait hook ([`set_wait_hooks`]) with the lock's
//! address as channel, and every release that finds [`SLEEPERS`] set calls the wake hook. The
//! kernel sleeps on the channel (the semaphore's holder may itself sleep); the default hooks
//! spin, for host tests whose threads run in parallel. The page-table lock always spins.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::lockdep;
use crate::LockClass;

/// Set while a writer holds the semaphore.
const WRITER: u32 = 1 << 31;
/// Set while a writer waits: new readers hold back.
const WRITER_WAITING: u32 = 1 << 30;
/// Set while someone sleeps (or may sleep) in the wait hook: releases call the wake hook.
const SLEEPERS: u32 = 1 << 29;
/// Set while a reader holds the page-table lock. In the same word as the semaphore, so a fault
/// takes both with one compare-exchange and lets both go with one subtraction (the fault path
/// paid one atomic for the old mutex; two would be its cost doubled).
const PTL: u32 = 1 << 28;
const READERS: u32 = PTL - 1;

static WAIT_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static WAKE_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// What a CPU does between two looks at a taken page-table lock ([`set_ptl_spin_hook`]).
static PTL_SPIN_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets what the page-table lock's spin does between two looks. The kernel services its
/// CPU's TLB shootdown requests there: a holder that faults without the big kernel lock may
/// flush other CPUs' TLBs holding it (a COW copy), and the spinner has interrupts off.
pub fn set_ptl_spin_hook(f: fn()) {
    PTL_SPIN_FN.store(f as *mut (), Ordering::Release);
}

fn ptl_spin() {
    let f = PTL_SPIN_FN.load(Ordering::Acquire);
    if f.is_null() {
        core::hint::spin_loop();
        return;
    }
    // SAFETY: only `set_ptl_spin_hook` stores here, a `fn()` cast to a pointer.
    let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(f) };
    f();
}

/// Sets how a contended [`MmapLock`] waits: `wait(channel)` blocks until `wake(channel)` or
/// returns early (the caller looks again either way); `wake(channel)` wakes every waiter on it.
/// The kernel passes its scheduler's sleep and wake-up; the check of the lock's state and the
/// sleep must not miss a release in between (the kernel's big lock serialises both today).
pub fn set_wait_hooks(wait: fn(usize), wake: fn(usize)) {
    WAKE_FN.store(wake as *mut (), Ordering::Release);
    WAIT_FN.store(wait as *mut (), Ordering::Release);
}

fn wait_on(channel: usize) {
    let f = WAIT_FN.load(Ordering::Acquire);
    if f.is_null() {
        core::hint::spin_loop();
        return;
    }
    // SAFETY: only `set_wait_hooks` stores here, a `fn(usize)` cast to a pointer.
    let f: fn(usize) = unsafe { core::mem::transmute::<*mut (), fn(usize)>(f) };
    f(channel);
}

fn wake(channel: usize) {
    let f = WAKE_FN.load(Ordering::Acquire);
    if f.is_null() {
        return;
    }
    // SAFETY: only `set_wait_hooks` stores here, a `fn(usize)` cast to a pointer.
    let f: fn(usize) = unsafe { core::mem::transmute::<*mut (), fn(usize)>(f) };
    f(channel);
}

/// A reader/writer semaphore with a page-table spin lock inside (see the module comment).
pub struct MmapLock<T> {
    class: &'static LockClass,
    ptl_class: &'static LockClass,
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: `&mut T` is handed out only to the one writer, or to the one reader holding the
// page-table lock (and never while a writer holds the semaphore): one mutable access at a time,
// on whichever thread holds it, as for `std::sync::Mutex` (needs `T: Send`).
unsafe impl<T: Send> Sync for MmapLock<T> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: Send> Send for MmapLock<T> {}

impl<T> MmapLock<T> {
    /// `class` names the semaphore (a [`LockClass::sleeping`] class: its holder may sleep),
    /// `ptl_class` the page-table spin lock inside it.
    pub const fn new(
        class: &'static LockClass,
        ptl_class: &'static LockClass,
        data: T,
    ) -> MmapLock<T> {
        MmapLock {
            class,
            ptl_class,
            state: AtomicU32::new(0),
            data: UnsafeCell::new(data),
        }
    }

    fn channel(&self) -> usize {
        core::ptr::from_ref(self) as usize
    }

    /// Takes the semaphore for reading if no writer holds or waits for it.
    #[inline]
    fn try_read_raw(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & (WRITER | WRITER_WAITING) == 0
            && s & READERS != READERS
            && self
                .state
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes the semaphore for writing if nobody holds it (keeps `SLEEPERS`).
    #[inline]
    fn try_write_raw(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & (WRITER | READERS) == 0
            && self
                .state
                .compare_exchange(
                    s,
                    (s & SLEEPERS) | WRITER,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Takes the semaphore for reading and the page-table lock, if no writer holds or waits for
    /// it and no reader holds the page-table lock: one compare-exchange.
    #[inline]
    fn try_read_ptl_raw(&self) -> bool {
        // The fault path's common case, nobody else in: one compare-exchange from 0, no load
        // and no tests before it.
        self.state
            .compare_exchange(0, 1 | PTL, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            || self.try_read_ptl_contended()
    }

    /// [`Self::try_read_ptl_raw`] beside other readers (or anything else in the word).
    #[cold]
    fn try_read_ptl_contended(&self) -> bool {
        let s = self.state.load(Ordering::Relaxed);
        s & (WRITER | WRITER_WAITING | PTL) == 0
            && s & READERS != READERS
            && self
                .state
                .compare_exchange(s, (s + 1) | PTL, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// [`Self::read_ptl`] without waiting (the fault path's fast path).
    #[inline]
    #[track_caller]
    pub fn try_read_ptl(&self) -> Option<MmapReadPtlGuard<'_, T>> {
        if !self.try_read_ptl_raw() {
            return None;
        }
        lockdep::acquired(self.class);
        lockdep::acquired(self.ptl_class);
        Some(MmapReadPtlGuard { lock: self })
    }

    /// Takes it for reading (Linux `mmap_read_lock`), waiting behind a writer that holds or
    /// waits for it.
    #[track_caller]
    pub fn read(&self) -> MmapReadGuard<'_, T> {
        lockdep::before_acquire(self.class);
        while !self.try_read_raw() {
            self.read_slow();
        }
        lockdep::acquired(self.class);
        MmapReadGuard { lock: self }
    }

    #[cold]
    fn read_slow(&self) {
        let s = self.state.fetch_or(SLEEPERS, Ordering::Relaxed) | SLEEPERS;
        if s & (WRITER | WRITER_WAITING) != 0 {
            wait_on(self.channel());
        }
    }

    /// Takes it for reading without waiting (Linux `mmap_read_trylock`).
    #[track_caller]
    pub fn try_read(&self) -> Option<MmapReadGuard<'_, T>> {
        if !self.try_read_raw() {
            return None;
        }
        lockdep::acquired(self.class);
        Some(MmapReadGuard { lock: self })
    }

    /// Takes it for writing (Linux `mmap_write_lock`), waiting for the readers and writer that
    /// hold it; while it waits, new readers hold back.
    #[track_caller]
    pub fn write(&self) -> MmapWriteGuard<'_, T> {
        lockdep::before_acquire(self.class);
        while !self.try_write_raw() {
            self.write_slow();
        }
        lockdep::acquired(self.class);
        MmapWriteGuard { lock: self }
    }

    #[cold]
    fn write_slow(&self) {
        let s = self
            .state
            .fetch_or(WRITER_WAITING | SLEEPERS, Ordering::Relaxed);
        if s & (WRITER | READERS) != 0 {
            wait_on(self.channel());
        }
    }

    /// Takes it for writing without waiting (Linux `mmap_write_trylock`).
    #[track_caller]
    pub fn try_write(&self) -> Option<MmapWriteGuard<'_, T>> {
        if !self.try_write_raw() {
            return None;
        }
        lockdep::acquired(self.class);
        Some(MmapWriteGuard { lock: self })
    }

    /// How many readers hold it, and whether a writer holds it / waits (for tests and
    /// `/proc`-style reports; a snapshot).
    pub fn state(&self) -> (u32, bool, bool) {
        let s = self.state.load(Ordering::Relaxed);
        (s & READERS, s & WRITER != 0, s & WRITER_WAITING != 0)
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }

    /// After a release: wakes the sleepers if any may sleep. All of them: readers and a writer
    /// look again, the writer-waiting bit keeps the readers behind a waiting writer.
    #[inline]
    fn wake_if_sleepers(&self, after: u32) {
        if after & SLEEPERS != 0 && after & (WRITER | READERS) == 0 {
            self.wake_sleepers();
        }
    }

    #[cold]
    fn wake_sleepers(&self) {
        // Who still has to wait sets SLEEPERS again before sleeping. WRITER_WAITING stays until
        // a writer takes the lock, so the readers woken here cannot overtake the writer.
        let _ = self.state.fetch_and(!SLEEPERS, Ordering::Relaxed);
        wake(self.channel());
    }
}

/// A read hold of an [`MmapLock`]: no access by itself; [`MmapReadGuard::ptl`] gives the
/// page-table work its `&mut T`.
pub struct MmapReadGuard<'a, T> {
    lock: &'a MmapLock<T>,
}

impl<'a, T> MmapReadGuard<'a, T> {
    /// Takes the page-table lock (Linux `pte_offset_map_lock` on a per-mm `page_table_lock`):
    /// exclusive access among the readers. Spins: its holders never sleep.
    #[track_caller]
    pub fn ptl(&mut self) -> PtlGuard<'_, T> {
        lock_ptl(self.lock);
        PtlGuard { lock: self.lock }
    }

    /// [`Self::ptl`] without waiting.
    #[track_caller]
    pub fn try_ptl(&mut self) -> Option<PtlGuard<'_, T>> {
        try_lock_ptl(self.lock)?;
        Some(PtlGuard { lock: self.lock })
    }

    /// This read hold and the page-table lock in one guard (for a holder kept in a struct, as
    /// the GUP slow path's).
    #[track_caller]
    pub fn into_ptl(self) -> MmapReadPtlGuard<'a, T> {
        lock_ptl(self.lock);
        let lock = self.lock;
        // The combined guard releases the read hold.
        core::mem::forget(self);
        MmapReadPtlGuard { lock }
    }

    /// [`Self::into_ptl`] without waiting; gives the read hold back if the lock is taken.
    #[track_caller]
    pub fn try_into_ptl(self) -> Result<MmapReadPtlGuard<'a, T>, Self> {
        match try_lock_ptl(self.lock) {
            Some(()) => {
                let lock = self.lock;
                core::mem::forget(self);
                Ok(MmapReadPtlGuard { lock })
            }
            None => Err(self),
        }
    }

    /// The lock this guard reads (to take it again after a let-go).
    pub fn lock(&self) -> &'a MmapLock<T> {
        self.lock
    }
}

#[track_caller]
fn lock_ptl<T>(lock: &MmapLock<T>) {
    lockdep::before_acquire(lock.ptl_class);
    while lock.state.fetch_or(PTL, Ordering::Acquire) & PTL != 0 {
        while lock.state.load(Ordering::Relaxed) & PTL != 0 {
            ptl_spin();
        }
    }
    lockdep::acquired(lock.ptl_class);
}

#[track_caller]
fn try_lock_ptl<T>(lock: &MmapLock<T>) -> Option<()> {
    if lock.state.fetch_or(PTL, Ordering::Acquire) & PTL != 0 {
        return None;
    }
    lockdep::acquired(lock.ptl_class);
    Some(())
}

fn unlock_ptl<T>(lock: &MmapLock<T>) {
    lockdep::released(lock.ptl_class);
    lock.state.fetch_and(!PTL, Ordering::Release);
}

impl<T> MmapLock<T> {
    /// [`Self::read`] and the page-table lock in one guard: `&mut T` for a reader.
    #[track_caller]
    pub fn read_ptl(&self) -> MmapReadPtlGuard<'_, T> {
        lockdep::before_acquire(self.class);
        if self.try_read_ptl_raw() {
            lockdep::acquired(self.class);
            lockdep::before_acquire(self.ptl_class);
            lockdep::acquired(self.ptl_class);
            return MmapReadPtlGuard { lock: self };
        }
        while !self.try_read_raw() {
            self.read_slow();
        }
        lockdep::acquired(self.class);
        MmapReadGuard { lock: self }.into_ptl()
    }
}

/// A read hold of an [`MmapLock`] with its page-table lock: `&mut T` among the readers.
pub struct MmapReadPtlGuard<'a, T> {
    lock: &'a MmapLock<T>,
}

impl<T> Deref for MmapReadPtlGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the semaphore is read-held (no writer) and the page-table lock is ours: no
        // other reference to the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for MmapReadPtlGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for MmapReadPtlGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.ptl_class);
        lockdep::released(self.lock.class);
        // Both at once: the PTL bit is set and at least this reader is counted, so the
        // subtraction borrows nothing from SLEEPERS, tested on the old value (one `test` after
        // the `xadd`; the rest of the wake-up condition only when someone sleeps).
        let before = self.lock.state.fetch_sub(PTL + 1, Ordering::Release);
        if before & SLEEPERS != 0 {
            self.lock.wake_if_sleepers(before - (PTL + 1));
        }
    }
}

impl<T> Drop for MmapReadGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.class);
        let after = self.lock.state.fetch_sub(1, Ordering::Release) - 1;
        self.lock.wake_if_sleepers(after);
    }
}

/// The page-table lock of an [`MmapLock`], taken under a read hold: `&mut T`.
pub struct PtlGuard<'g, T> {
    lock: &'g MmapLock<T>,
}

impl<T> Deref for PtlGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the semaphore is read-held (no writer) and the page-table lock is ours: no
        // other reference to the data exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for PtlGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for PtlGuard<'_, T> {
    fn drop(&mut self) {
        unlock_ptl(self.lock);
    }
}

/// A write hold of an [`MmapLock`]: `&mut T`, readers and other writers excluded.
pub struct MmapWriteGuard<'a, T> {
    lock: &'a MmapLock<T>,
}

impl<'a, T> MmapWriteGuard<'a, T> {
    /// The lock this guard writes.
    pub fn lock(&self) -> &'a MmapLock<T> {
        self.lock
    }
}

impl<T> Deref for MmapWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the only holder while the guard exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for MmapWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the only holder while the guard exists, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for MmapWriteGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.class);
        let after = self.lock.state.fetch_and(!WRITER, Ordering::Release) & !WRITER;
        self.lock.wake_if_sleepers(after);
    }
}
