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
    /// Whether a hold belongs to the task rather than the CPU (it is kept across a sleep, and
    /// the task may wake and release it on another CPU): the checker keeps it on the task's
    /// held-lock stack ([`crate::lockdep::set_task_context_fn`]).
    task: bool,
    /// 0 until first used; then `1..MAX_CLASSES`.
    id: AtomicU8,
}

impl LockClass {
    /// A spin-lock class: nothing may sleep or switch while one is held.
    pub const fn new(name: &'static str) -> LockClass {
        LockClass {
            name,
            sleeping: false,
            task: false,
            id: AtomicU8::new(0),
        }
    }

    /// A class of locks whose holder may sleep (mmap_lock-style reader/writer locks).
    pub const fn sleeping(name: &'static str) -> LockClass {
        LockClass {
            name,
            sleeping: true,
            task: false,
            id: AtomicU8::new(0),
        }
    }

    /// A sleeping class whose holds belong to a task (Linux's `mmap_lock`: a task sleeps
    /// holding it and may release it on another CPU). A plain [`Self::sleeping`] class is
    /// held by the CPU (the kernel's big lock, kept by the CPU across a switch).
    pub const fn task_held(name: &'static str) -> LockClass {
        LockClass {
            name,
            sleeping: true,
            task: true,
            id: AtomicU8::new(0),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn is_sleeping(&self) -> bool {
        self.sleeping
    }

    pub fn is_task_held(&self) -> bool {
        self.task
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
