//! A spin lock with a lock class.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::lockdep;
use crate::LockClass;

/// Mutual exclusion by spinning (Linux `spinlock_t`). The holder must not sleep or switch
/// ([`crate::might_sleep`] reports it in debug builds). Interrupt masking is the caller's
/// business: a lock also taken from an interrupt handler must be taken with interrupts off.
pub struct SpinLock<T> {
    class: &'static LockClass,
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the data is reached only through a guard, and one guard exists at a time (the
// `locked` flag, taken with `Acquire` and released with `Release`), as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the data; nothing else is owned.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(class: &'static LockClass, data: T) -> SpinLock<T> {
        SpinLock {
            class,
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(data),
        }
    }

    pub fn class(&self) -> &'static LockClass {
        self.class
    }

    /// Takes the lock, spinning until it is free.
    #[track_caller]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        lockdep::before_acquire(self.class);
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                core::hint::spin_loop();
            }
        }
        lockdep::acquired(self.class);
        SpinGuard { lock: self }
    }

    /// Takes the lock if it is free. A try-lock cannot deadlock, so it records no order, but
    /// it is on the held stack for the locks taken under it.
    #[track_caller]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        lockdep::acquired(self.class);
        Some(SpinGuard { lock: self })
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }
}

/// Holds a [`SpinLock`]; releases it when dropped.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see `Sync`), and it borrows the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        lockdep::released(self.lock.class);
        self.lock.locked.store(false, Ordering::Release);
    }
}
