//! The lock-order checker (debug builds): a graph of "class B was taken while class A was held"
//! edges over all CPUs, and per context the stack of locks held.
//!
//! Picture: `AFTER[a]` is a bitmask of the classes ever taken while `a` was held, each edge with
//! the place (`#[track_caller]` location) that first created it. Before a lock of class `c` is
//! taken while `h` is held, the checker asks whether `h` is reachable from `c` (some path
//! `c -> ... -> h` already exists): then the new edge `h -> c` closes a cycle, two contexts
//! following the two orders can deadlock, and the inversion is reported with both places. With
//! at most [`MAX_CLASSES`] classes a reachability query is a few dozen mask operations.
//!
//! Contexts: a held-lock stack belongs to a context, a CPU numbered by the function given to
//! [`set_context_fn`] (default: everything is context 0; the kernel passes the CPU number, as
//! spin locks are held with preemption off; host tests a per-thread number), or for the classes
//! built with [`LockClass::task_held`] a task numbered by [`set_task_context_fn`]: such a lock
//! is held across a sleep and may be released on another CPU, and the CPU's stack would keep a
//! stale entry (a later acquisition there reported as recursion) while the other CPU's release
//! found nothing. A check looks at both stacks of the caller: its CPU's and its task's. A
//! context is used by one thread at a time, so its stack needs no lock.
//!
//! Everything here is compiled only with `debug_assertions`; release builds keep the calls as
//! empty inline functions.

use core::panic::Location;
#[cfg(debug_assertions)]
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(debug_assertions)]
use crate::class::MAX_CLASSES;
use crate::LockClass;

/// Contexts with their own held-lock stack.
pub const MAX_CONTEXTS: usize = 1024;
/// Locks one context may hold at once (deeper nesting is itself reported).
pub const MAX_HELD: usize = 16;

/// What the checker found.
#[derive(Debug, Clone, Copy)]
pub enum LockReport {
    /// `taking` (at `taken_at`) while holding `held` (since `held_at`), but `held` has been
    /// taken while `taking` was held before, at `inverse_at` (possibly through a chain of
    /// other classes: `inverse_at` is that chain's first edge out of `taking`).
    Inversion {
        taking: &'static str,
        taken_at: &'static Location<'static>,
        held: &'static str,
        held_at: &'static Location<'static>,
        inverse_at: &'static Location<'static>,
    },
    /// A second lock of a class already held (self-deadlock for a spin lock, or an order
    /// between two instances the checker cannot see).
    Recursive {
        class: &'static str,
        taken_at: &'static Location<'static>,
        held_at: &'static Location<'static>,
    },
    /// `what` would sleep or switch while the spin lock `held` (since `held_at`) is held.
    SleepInAtomic {
        what: &'static str,
        at: &'static Location<'static>,
        held: &'static str,
        held_at: &'static Location<'static>,
    },
    /// More than [`MAX_HELD`] locks held at once.
    TooDeep { at: &'static Location<'static> },
}

impl core::fmt::Display for LockReport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LockReport::Inversion {
                taking,
                taken_at,
                held,
                held_at,
                inverse_at,
            } => write!(
                f,
                "lock order inversion: taking {taking} at {taken_at} while holding {held} \
                 (taken at {held_at}), but {held} was taken while holding {taking} at \
                 {inverse_at} (possible deadlock)"
            ),
            LockReport::Recursive {
                class,
                taken_at,
                held_at,
            } => write!(
                f,
                "recursive locking: taking {class} at {taken_at} while already holding {class} \
                 (taken at {held_at})"
            ),
            LockReport::SleepInAtomic {
                what,
                at,
                held,
                held_at,
            } => write!(
                f,
                "{what} at {at} may sleep or switch while holding spin lock {held} (taken at \
                 {held_at})"
            ),
            LockReport::TooDeep { at } => {
                write!(
                    f,
                    "more than {MAX_HELD} locks held at once (taking one at {at})"
                )
            }
        }
    }
}

#[cfg(debug_assertions)]
mod state {
    use super::*;

    pub(super) static AFTER: [AtomicU64; MAX_CLASSES] = [const { AtomicU64::new(0) }; MAX_CLASSES];
    /// `EDGE_AT[a * MAX_CLASSES + b]`: where `b` was first taken while `a` was held.
    pub(super) static EDGE_AT: [AtomicPtr<Location<'static>>; MAX_CLASSES * MAX_CLASSES] =
        [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CLASSES * MAX_CLASSES];

    pub(super) struct Held {
        pub(super) depth: AtomicUsize,
        pub(super) class: [AtomicU8; MAX_HELD],
        pub(super) sleeping: [AtomicU8; MAX_HELD],
        pub(super) at: [AtomicPtr<Location<'static>>; MAX_HELD],
    }

    pub(super) static HELD: [Held; MAX_CONTEXTS] = [const {
        Held {
            depth: AtomicUsize::new(0),
            class: [const { AtomicU8::new(0) }; MAX_HELD],
            sleeping: [const { AtomicU8::new(0) }; MAX_HELD],
            at: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_HELD],
        }
    }; MAX_CONTEXTS];

    /// `REPORTED[a]` bit `b`: the pair (held `a`, taking `b`) was reported already (inversions
    /// and, at `a == b`, recursion): each is reported once, not at every acquisition.
    pub(super) static REPORTED: [AtomicU64; MAX_CLASSES] =
        [const { AtomicU64::new(0) }; MAX_CLASSES];

    /// The task contexts' stacks (classes built with `LockClass::task_held`), each owned by
    /// the task in the same index of [`TASK_OWNER`] while that task holds such a lock.
    pub(super) static TASK_HELD: [Held; MAX_CONTEXTS] = [const {
        Held {
            depth: AtomicUsize::new(0),
            class: [const { AtomicU8::new(0) }; MAX_HELD],
            sleeping: [const { AtomicU8::new(0) }; MAX_HELD],
            at: [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_HELD],
        }
    }; MAX_CONTEXTS];

    /// The task number owning each [`TASK_HELD`] stack, 0 when free. A task claims one (near
    /// its number modulo [`MAX_CONTEXTS`], see `task_stack`) on its first task-held lock and
    /// gives it back when it holds none: two live tasks whose numbers differ by a multiple of
    /// [`MAX_CONTEXTS`] once shared one stack (one's hold seen as the other's recursion, or
    /// removed by the other's release; review of session 8).
    pub(super) static TASK_OWNER: [AtomicUsize; MAX_CONTEXTS] =
        [const { AtomicUsize::new(0) }; MAX_CONTEXTS];

    pub(super) static CONTEXT_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    pub(super) static TASK_CONTEXT_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
    pub(super) static REPORT_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
}

/// Sets how the checker numbers contexts (the kernel: the CPU id; tests: per thread). Values
/// are taken modulo [`MAX_CONTEXTS`].
pub fn set_context_fn(f: fn() -> usize) {
    #[cfg(debug_assertions)]
    state::CONTEXT_FN.store(f as *mut (), Ordering::Release);
    #[cfg(not(debug_assertions))]
    let _ = f;
}

/// Sets how the checker numbers tasks, for the [`LockClass::task_held`] classes: a non-zero
/// number per live task (unique among the tasks alive at once: the task id), 0 outside a task
/// (the lock's hold then goes on the CPU's stack). Default: no tasks.
pub fn set_task_context_fn(f: fn() -> usize) {
    #[cfg(debug_assertions)]
    state::TASK_CONTEXT_FN.store(f as *mut (), Ordering::Release);
    #[cfg(not(debug_assertions))]
    let _ = f;
}

/// Sets what happens to a report (default: panic with its text). The kernel may log it with
/// a backtrace instead; the hook runs before the offending lock is taken.
pub fn set_report_hook(f: fn(&LockReport)) {
    #[cfg(debug_assertions)]
    state::REPORT_FN.store(f as *mut (), Ordering::Release);
    #[cfg(not(debug_assertions))]
    let _ = f;
}

#[cfg(debug_assertions)]
fn report(r: LockReport) {
    let f = state::REPORT_FN.load(Ordering::Acquire);
    if f.is_null() {
        panic!("{r}");
    }
    // SAFETY: only `set_report_hook` stores here, a `fn(&LockReport)` cast to a pointer.
    let f: fn(&LockReport) = unsafe { core::mem::transmute::<*mut (), fn(&LockReport)>(f) };
    f(&r);
}

#[cfg(debug_assertions)]
fn held() -> &'static state::Held {
    let f = state::CONTEXT_FN.load(Ordering::Acquire);
    let ctx = if f.is_null() {
        0
    } else {
        // SAFETY: only `set_context_fn` stores here, a `fn() -> usize` cast to a pointer.
        let f: fn() -> usize = unsafe { core::mem::transmute::<*mut (), fn() -> usize>(f) };
        f()
    };
    &state::HELD[ctx % MAX_CONTEXTS]
}

/// The running task's number, 0 outside a task.
#[cfg(debug_assertions)]
fn task_number() -> usize {
    let f = state::TASK_CONTEXT_FN.load(Ordering::Acquire);
    if f.is_null() {
        return 0;
    }
    // SAFETY: only `set_task_context_fn` stores here, a `fn() -> usize` cast to a pointer.
    let f: fn() -> usize = unsafe { core::mem::transmute::<*mut (), fn() -> usize>(f) };
    f()
}

/// Stacks a task may own: this many from its number modulo [`MAX_CONTEXTS`] on. Only tasks
/// holding a task-held lock own one, so a full window takes that many such tasks with numbers
/// equal modulo [`MAX_CONTEXTS`] holding at once (reported as too deep a nesting).
#[cfg(debug_assertions)]
const TASK_PROBE: usize = 8;

/// Task `task`'s stack: the one it owns, else (`claim`) a free one of its window now owned by
/// it, else `None` (no hold recorded for it). Only the task itself claims for its number, and a
/// task runs on one CPU at a time, so a found stack stays its own until it gives it back.
#[cfg(debug_assertions)]
fn task_stack(task: usize, claim: bool) -> Option<(usize, &'static state::Held)> {
    let window = (0..TASK_PROBE).map(|i| (task + i) % MAX_CONTEXTS);
    if let Some(i) = window
        .clone()
        .find(|&i| state::TASK_OWNER[i].load(Ordering::Acquire) == task)
    {
        return Some((i, &state::TASK_HELD[i]));
    }
    if !claim {
        return None;
    }
    // Acquire: the last owner's emptied stack (its release below) is what this task starts on.
    window
        .into_iter()
        .find(|&i| {
            state::TASK_OWNER[i]
                .compare_exchange(0, task, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
        .map(|i| (i, &state::TASK_HELD[i]))
}

/// The running task's stack, if there is a task that holds a task-held lock.
#[cfg(debug_assertions)]
fn task_held() -> Option<&'static state::Held> {
    match task_number() {
        0 => None,
        task => task_stack(task, false).map(|(_, held)| held),
    }
}

/// Where a hold of `class` goes: `Some((Some(index), stack))`, a task's stack (a task-held
/// class taken in a task: owned, or claimed when `claim`); `Some((None, stack))`, the CPU's;
/// `None`, a task that owns no stack (and could not claim one).
#[cfg(debug_assertions)]
fn stack_for(
    class: &'static LockClass,
    claim: bool,
) -> Option<(Option<usize>, &'static state::Held)> {
    if class.is_task_held() {
        let task = task_number();
        if task != 0 {
            return task_stack(task, claim).map(|(i, held)| (Some(i), held));
        }
    }
    Some((None, held()))
}

#[cfg(debug_assertions)]
fn location(p: *mut Location<'static>) -> &'static Location<'static> {
    // SAFETY: every pointer stored in the tables comes from a `&'static Location`.
    unsafe { p.as_ref() }.unwrap_or(Location::caller())
}

/// Classes reachable from `from` (excluding it unless on a cycle).
#[cfg(debug_assertions)]
fn reachable(from: u8) -> u64 {
    let mut seen = state::AFTER[from as usize].load(Ordering::Acquire);
    let mut frontier = seen;
    while frontier != 0 {
        let c = frontier.trailing_zeros() as usize;
        frontier &= frontier - 1;
        let next = state::AFTER[c].load(Ordering::Acquire) & !seen;
        seen |= next;
        frontier |= next;
    }
    seen
}

/// The first edge out of `from` on a path to `to`, as its location.
#[cfg(debug_assertions)]
fn first_edge_towards(from: u8, to: u8) -> &'static Location<'static> {
    let out = state::AFTER[from as usize].load(Ordering::Acquire);
    let mut rest = out;
    while rest != 0 {
        let c = rest.trailing_zeros() as u8;
        rest &= rest - 1;
        if c == to || reachable(c) & (1 << to) != 0 {
            return location(
                state::EDGE_AT[from as usize * MAX_CLASSES + c as usize].load(Ordering::Acquire),
            );
        }
    }
    Location::caller()
}

/// Whether the pair (held `h`, taking `c`) is reported for the first time.
#[cfg(debug_assertions)]
fn first_report(h: u8, c: u8) -> bool {
    let bit = 1u64 << c;
    state::REPORTED[h as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// Checks and records that the current context is about to take a lock of `class` (called
/// before spinning, so a report leaves nothing half-taken). Public for locks built outside this
/// crate (the kernel's big lock): call it, take the lock, then [`acquired`]; [`released`] when
/// letting go (Linux's `lock_acquire`/`lock_release` annotations).
#[inline]
#[track_caller]
pub fn before_acquire(class: &'static LockClass) {
    #[cfg(debug_assertions)]
    {
        let at = Location::caller();
        let c = class.id();
        let reach = reachable(c);
        let cpu = held();
        let task = task_held();
        for held in core::iter::once(cpu).chain(task) {
            check_against(class, held, c, reach, at);
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = class;
}

/// [`before_acquire`] against one stack of the caller's.
#[cfg(debug_assertions)]
fn check_against(
    class: &'static LockClass,
    held: &'static state::Held,
    c: u8,
    reach: u64,
    at: &'static Location<'static>,
) {
    {
        let depth = held.depth.load(Ordering::Relaxed);
        for i in 0..depth {
            let h = held.class[i].load(Ordering::Relaxed);
            let held_at = location(held.at[i].load(Ordering::Relaxed));
            if h == c {
                if !first_report(h, c) {
                    continue;
                }
                report(LockReport::Recursive {
                    class: class.name(),
                    taken_at: at,
                    held_at,
                });
                continue;
            }
            if reach & (1 << h) != 0 {
                if !first_report(h, c) {
                    continue;
                }
                report(LockReport::Inversion {
                    taking: class.name(),
                    taken_at: at,
                    held: LockClass::name_of(h),
                    held_at,
                    inverse_at: first_edge_towards(c, h),
                });
                continue;
            }
            let edge = &state::EDGE_AT[h as usize * MAX_CLASSES + c as usize];
            if edge.load(Ordering::Relaxed).is_null() {
                let _ = edge.compare_exchange(
                    core::ptr::null_mut(),
                    core::ptr::from_ref(at).cast_mut(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            state::AFTER[h as usize].fetch_or(1 << c, Ordering::AcqRel);
        }
    }
}

/// The lock was taken: push it on the context's stack.
#[inline]
#[track_caller]
pub fn acquired(class: &'static LockClass) {
    #[cfg(debug_assertions)]
    {
        let Some((_, held)) = stack_for(class, true) else {
            report(LockReport::TooDeep {
                at: Location::caller(),
            });
            return;
        };
        let depth = held.depth.load(Ordering::Relaxed);
        if depth == MAX_HELD {
            report(LockReport::TooDeep {
                at: Location::caller(),
            });
            return;
        }
        held.class[depth].store(class.id(), Ordering::Relaxed);
        held.sleeping[depth].store(u8::from(class.is_sleeping()), Ordering::Relaxed);
        held.at[depth].store(
            core::ptr::from_ref(Location::caller()).cast_mut(),
            Ordering::Relaxed,
        );
        held.depth.store(depth + 1, Ordering::Relaxed);
    }
    #[cfg(not(debug_assertions))]
    let _ = class;
}

/// The lock is being released: remove its (most recent) entry, wherever it is in the stack
/// (locks need not be released in reverse order).
#[inline]
pub fn released(class: &'static LockClass) {
    #[cfg(debug_assertions)]
    {
        let c = class.id();
        // No stack: a task whose acquisition found none (already reported).
        let Some((owned, held)) = stack_for(class, false) else {
            return;
        };
        let depth = held.depth.load(Ordering::Relaxed);
        let Some(i) = (0..depth)
            .rev()
            .find(|&i| held.class[i].load(Ordering::Relaxed) == c)
        else {
            // Taken beyond MAX_HELD (already reported), or released by another context.
            return;
        };
        for j in i..depth - 1 {
            held.class[j].store(held.class[j + 1].load(Ordering::Relaxed), Ordering::Relaxed);
            held.sleeping[j].store(
                held.sleeping[j + 1].load(Ordering::Relaxed),
                Ordering::Relaxed,
            );
            held.at[j].store(held.at[j + 1].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        held.depth.store(depth - 1, Ordering::Relaxed);
        // The task's last task-held lock: its stack (empty) goes back for any task to claim.
        if let (Some(index), 1) = (owned, depth) {
            state::TASK_OWNER[index].store(0, Ordering::Release);
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = class;
}

/// Reports (debug builds) if the current context holds a spin lock: call where the kernel may
/// sleep or switch tasks (`schedule`, a blocking wait, a user copy that may fault) with
/// `what` naming the place (Linux `might_sleep`).
#[inline]
#[track_caller]
pub fn might_sleep(what: &'static str) {
    #[cfg(debug_assertions)]
    {
        let held = held();
        let depth = held.depth.load(Ordering::Relaxed);
        for i in 0..depth {
            if held.sleeping[i].load(Ordering::Relaxed) == 0 {
                report(LockReport::SleepInAtomic {
                    what,
                    at: Location::caller(),
                    held: LockClass::name_of(held.class[i].load(Ordering::Relaxed)),
                    held_at: location(held.at[i].load(Ordering::Relaxed)),
                });
                return;
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = what;
}

/// How many locks the current context holds (debug builds; 0 in release).
pub fn held_count() -> usize {
    #[cfg(debug_assertions)]
    {
        held().depth.load(Ordering::Relaxed)
            + task_held().map_or(0, |t| t.depth.load(Ordering::Relaxed))
    }
    #[cfg(not(debug_assertions))]
    0
}
