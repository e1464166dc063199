//! The program's arguments and environment, as the kernel passed them on the initial stack.

use core::ffi::CStr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*const u8> = AtomicPtr::new(core::ptr::null_mut());
static ENVP: AtomicPtr<*const u8> = AtomicPtr::new(core::ptr::null_mut());

/// Called once by the start-up code before `main`.
///
/// # Safety
/// 1. `argv` points at `argc` valid pointers to NUL-terminated strings followed by a NULL, and
///    `envp` at valid string pointers ending with a NULL; both live for the rest of the process.
pub(crate) unsafe fn init(argc: usize, argv: *const *const u8, envp: *const *const u8) {
    ARGC.store(argc, Ordering::Relaxed);
    ARGV.store(argv.cast_mut(), Ordering::Relaxed);
    ENVP.store(envp.cast_mut(), Ordering::Relaxed);
}

/// Iterator over a NULL-terminated array of C strings.
#[derive(Clone)]
pub struct CStrings {
    next: *const *const u8,
}

impl Iterator for CStrings {
    type Item = &'static CStr;

    fn next(&mut self) -> Option<&'static CStr> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: `next` walks an array that `init`'s obligation 1 makes valid up to and
        // including its NULL terminator, and we stop at that terminator.
        let ptr = unsafe { *self.next };
        if ptr.is_null() {
            self.next = core::ptr::null();
            return None;
        }
        // SAFETY: as above; the array entry before the NULL is a valid NUL-terminated string.
        self.next = unsafe { self.next.add(1) };
        // SAFETY: `ptr` is a valid NUL-terminated string that lives for the process (obligation 1).
        Some(unsafe { CStr::from_ptr(ptr.cast()) })
    }
}

/// The arguments, `argv[0]` first.
pub fn args() -> CStrings {
    CStrings {
        next: ARGV.load(Ordering::Relaxed),
    }
}

/// Number of arguments, `argv[0]` included.
pub fn argc() -> usize {
    ARGC.load(Ordering::Relaxed)
}

/// The environment strings (`NAME=value`).
pub fn env() -> CStrings {
    CStrings {
        next: ENVP.load(Ordering::Relaxed),
    }
}

/// The auxiliary vector (type, value pairs after the environment's NULL; `AT_NULL` ends it).
pub fn auxv() -> impl Iterator<Item = (u64, u64)> {
    let mut p = ENVP.load(Ordering::Relaxed).cast_const();
    if !p.is_null() {
        // SAFETY: `init`'s obligation 1: `envp` is NULL-terminated; the kernel put the
        // auxiliary vector right after that NULL, and it lives as long as the process.
        unsafe {
            while !(*p).is_null() {
                p = p.add(1);
            }
            p = p.add(1);
        }
    }
    let mut at = p.cast::<u64>();
    core::iter::from_fn(move || {
        if at.is_null() {
            return None;
        }
        // SAFETY: the auxiliary vector is pairs of words up to an `AT_NULL` pair, which stops
        // the walk before reading past it.
        let (k, v) = unsafe { (*at, *at.add(1)) };
        if k == 0 {
            return None;
        }
        // SAFETY: as above, the next pair exists (this one was not `AT_NULL`).
        at = unsafe { at.add(2) };
        Some((k, v))
    })
}
