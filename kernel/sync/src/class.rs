//! Lock classes: one `static` per kind of lock, shared by all its instances.

use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// How many classes the checker can tell apart; later ones share the last id (and are then
/// checked as one class).
pub const MAX_CLASSES: usize = 64;

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Each id's class, for reports.
static CLASSES: [AtomicPtr<LockClass>; MAX_CLASSES] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CLASSES];

/// A kind of lock, e.g. "mmap_lock" or "frame allocator". Declare one `static` per kind and
/// build every lock of that kind with it: the order checker reasons about classes, so one
/// inverted pair of *any* two instances is reported.
#[derive(Debug)]
pub struct LockClass {
    name: &'static str,
    /// Whether holding it may sleep (a sleeping lock like `mmap_lock`), as opposed to a spin
    /// lock, under which [`crate::might_sleep`] complains.
    sleeping: bool,
    /// 0 until first used; then `1..MAX_CLASSES`.
    id: AtomicU8,
}

impl LockClass {
    /// A spin-lock class: nothing may sleep or switch while one is held.
    pub const fn new(name: &'static str) -> LockClass {
        LockClass {
            name,
            sleeping: false,
            id: AtomicU8::new(0),
        }
    }

    /// A class of locks whose holder may sleep (mmap_lock-style reader/writer locks).
    pub const fn sleeping(name: &'static str) -> LockClass {
        LockClass {
            name,
            sleeping: true,
            id: AtomicU8::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_sleeping(&self) -> bool {
        self.sleeping
    }

    /// The class's small id, assigned on first use (races resolve to one winner).
    pub(crate) fn id(&'static self) -> u8 {
        let id = self.id.load(Ordering::Acquire);
        if id != 0 {
            return id;
        }
        let fresh = NEXT_ID.fetch_add(1, Ordering::Relaxed).min(MAX_CLASSES - 1) as u8;
        match self
            .id
            .compare_exchange(0, fresh, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                CLASSES[fresh as usize]
                    .store(core::ptr::from_ref(self).cast_mut(), Ordering::Release);
                fresh
            }
            Err(won) => won,
        }
    }

    /// The name of the class with id `id` (for reports).
    pub(crate) fn name_of(id: u8) -> &'static str {
        let p = CLASSES[id as usize].load(Ordering::Acquire);
        // SAFETY: only `id` stores here, a pointer from a `&'static LockClass`.
        unsafe { p.as_ref() }.map_or("?", |c| c.name)
    }
}
