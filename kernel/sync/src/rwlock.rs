//! A reader/writer spin lock with a lock class, shaped like Linux's `mmap_lock`.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::lockdep;
use crate::LockClass;

/// Set while a writer holds the lock.
const WRITER: u32 = 1 << 31;
/// Set while a writer waits: new readers hold back, so a stream of faults cannot starve an
/// `munmap`.
const WRITER_WAITING: u32 = 1 << 30;
const READERS: u32 = WRITER_WAITING - 1;

/// Many readers or one writer (the address space's lock: faults and GUP read, mmap, munmap,
/// mprotect and fork write). Writer-preferring, so a reader must not take it again while
/// holding it (a writer waiting in between would deadlock both); the checker reports that as
/// recursive locking.
pub struct RwLock<T> {
    class: &'static LockClass,
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: shared access only through read guards (many, `&T`: needs `T: Sync`), exclusive
// access through the one write guard (`&mut T`: needs `T: Send`), as for `std::sync::RwLock`.
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}
// SAFETY: moving the lock moves the data.
unsafe impl<T: Send> Send for RwLock<T> {}

impl<T> RwLock<T> {
    pub const fn new(class: &'static LockClass, data: T) -> RwLock<T> {
        RwLock {
            class,
            state: AtomicU32::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Takes the lock for reading (Linux `mmap_read_lock`).
    #[track_caller]
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        lockdep::before_acquire(self.class);
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & (WRITER | WRITER_WAITING) == 0 && s & READERS != READERS {
                if self
                    .state
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            core::hint::spin_loop();
        }
        lockdep::acquired(self.class);
        RwLockReadGuard { lock: self }
    }

    /// Takes the lock for writing (Linux `mmap_write_lock`).
    #[track_caller]
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        lockdep::before_acquire(self.class);
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & !WRITER_WAITING == 0 {
                if self
                    .state
                    .compare_exchange_weak(s, WRITER, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
                continue;
            }
            if s & WRITER_WAITING == 0 {
                self.state.fetch_or(WRITER_WAITING, Ordering::Relaxed);
            }
            core::hint::spin_loop();
        }
        lockdep::acquired(self.class);
        RwLockWriteGuard { lock: self }
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Shared access to an [`RwLock`]'s data.
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: readers only share; no writer while a read guard exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.class);
        self.lock.state.fetch_sub(1, Ordering::Release);
    }
}

/// Exclusive access to an [`RwLock`]'s data.
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the only guard while it exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the only guard while it exists, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.class);
        // Keeps a WRITER_WAITING another writer set meanwhile.
        self.lock.state.fetch_and(!WRITER, Ordering::Release);
    }
}
