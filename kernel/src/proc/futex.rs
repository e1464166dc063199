//! Futexes: sleeping on a user word until another thread wakes that word.
//!
//! Model (Linux `kernel/futex/`): a waiter is queued under a *key* naming the word, then sleeps;
//! a waker dequeues up to N waiters with the same key (and an intersecting bitset) and makes them
//! runnable. The value check and the queueing happen with interrupts disabled on the one CPU, so
//! a wake between "the word still holds the expected value" and "asleep" cannot be lost (the
//! job Linux's hash-bucket lock does). A waiter knows it was woken because it is no longer
//! queued; still queued after its sleep means a timeout or a kill, and it dequeues itself.
//!
//! Keys (Linux `get_futex_key`): a private futex (`FUTEX_PRIVATE_FLAG`) is `(address space,
//! address)`. A shared one is `(shmem object, byte offset in it)` when the word lies in a
//! `MAP_SHARED` mapping of a shmem object (memfd, tmpfs file, `MAP_SHARED|MAP_ANONYMOUS`), so
//! processes mapping the same memory at any address meet; elsewhere (private memory) it is
//! `(address space, address)` as for a private one, as in Linux. The kernel's own wake at a
//! thread's exit (`CLONE_CHILD_CLEARTID`) is a shared one, as in Linux. A key names its object by
//! address and holds no reference to it: a waiter whose object is freed and whose address is
//! reused by a new object can only see a spurious wake-up, which futex users tolerate.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::Mutex;

use super::{block, current_tid, with_current, Pid};
use crate::errno::Errno;
use crate::time;
use crate::uaccess::UserPtr;

/// The bitset that matches every waiter (`FUTEX_BITSET_MATCH_ANY`).
pub const BITSET_MATCH_ANY: u32 = u32::MAX;

/// Which word: an object (an address space or a shmem object, by the address of its `Arc`
/// contents) and an offset in it (a user address, or a byte offset in the shmem object).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    object: usize,
    offset: u64,
}

/// Private futexes (`FUTEX_PRIVATE_FLAG`) or shared ones (see the module comment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scope {
    Private,
    Shared,
}

struct Waiter {
    key: Key,
    tid: Pid,
    bitset: u32,
}

/// Every queued waiter, oldest first (wakes are FIFO per key).
static WAITERS: Mutex<Vec<Waiter>> = Mutex::new(Vec::new());

/// The wait channel of a futex waiter: its own, so a wake makes exactly that task runnable.
fn channel(tid: Pid) -> usize {
    0x3_0000_0000 + tid as usize
}

/// The key of `addr` in the current address space. `EINVAL` for a misaligned address (Linux
/// `get_futex_key`). The address-space lock is held only for the VMA lookup (no user access).
fn key(addr: u64, scope: Scope) -> Result<Key, Errno> {
    if !addr.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    let aspace = with_current(|t| t.aspace.clone()).ok_or(Errno::EFAULT)?;
    if scope == Scope::Shared && crate::vm::is_user_address(addr) {
        let aspace = aspace.read_ptl();
        let va = cowlab_mm::VirtAddr::new(addr);
        let shared = aspace.find_vma(va).and_then(|vma| {
            if vma.sharing() != cowlab_mm::vma::Sharing::Shared {
                return None;
            }
            vma.shmem_page(va).map(|(object, page)| Key {
                object: Arc::as_ptr(object) as usize,
                offset: page * cowlab_mm::PAGE_SIZE as u64 + addr % cowlab_mm::PAGE_SIZE as u64,
            })
        });
        if let Some(key) = shared {
            return Ok(key);
        }
    }
    Ok(Key {
        object: Arc::as_ptr(&aspace) as usize,
        offset: addr,
    })
}

/// Reads the user word at `addr` (`EFAULT` if it cannot be read).
fn read_word(addr: u64) -> Result<u32, Errno> {
    UserPtr::<u32>::new(addr)?.read()
}

/// A deadline for a wait, in microseconds since boot (the monotonic clock).
pub type Deadline = Option<u64>;

/// FUTEX_WAIT / FUTEX_WAIT_BITSET: if the word at `addr` holds `expected`, sleeps until a wake
/// matching `bitset`, the deadline, or a kill. `EAGAIN` if the word differs, `ETIMEDOUT`,
/// `EINTR` (the thread is being killed), `EFAULT`, `EINVAL` (misaligned, empty bitset).
#[doc(alias = "futex_wait")]
pub fn wait(
    addr: u64,
    scope: Scope,
    expected: u32,
    bitset: u32,
    deadline: Deadline,
) -> Result<u64, Errno> {
    if bitset == 0 {
        return Err(Errno::EINVAL);
    }
    let key = key(addr, scope)?;
    // No lock is held across the read (it may fault), and nothing can run between the read and
    // the queueing: interrupts are off in the kernel.
    if read_word(addr)? != expected {
        return Err(Errno::EAGAIN);
    }
    let tid = current_tid();
    WAITERS.lock().push(Waiter { key, tid, bitset });
    loop {
        if !is_queued(tid) {
            return Ok(0);
        }
        let until = match deadline {
            Some(d) if time::micros_since_boot() >= d => {
                dequeue(tid);
                return Err(Errno::ETIMEDOUT);
            }
            // Wake at the next tick to check the deadline against the TSC.
            Some(_) => Some(time::ticks() + 1),
            None => None,
        };
        if let Err(e) = block(channel(tid), until, true) {
            // Killed: a wake that raced with the kill still counts as consumed, as in Linux,
            // but this thread is about to exit anyway.
            dequeue(tid);
            return Err(e);
        }
    }
}

fn is_queued(tid: Pid) -> bool {
    WAITERS.lock().iter().any(|w| w.tid == tid)
}

fn dequeue(tid: Pid) {
    WAITERS.lock().retain(|w| w.tid != tid);
}

/// Wakes up to `n` waiters of `key` whose bitset meets `bitset`; returns how many.
fn wake_key(key: Key, n: u32, bitset: u32) -> u32 {
    let mut woken = Vec::new();
    {
        let mut waiters = WAITERS.lock();
        let mut i = 0;
        while i < waiters.len() && (woken.len() as u32) < n {
            if waiters[i].key == key && waiters[i].bitset & bitset != 0 {
                woken.push(waiters.remove(i).tid);
            } else {
                i += 1;
            }
        }
    }
    for &tid in &woken {
        super::wakeup(channel(tid));
    }
    woken.len() as u32
}

/// FUTEX_WAKE / FUTEX_WAKE_BITSET: wakes up to `n` waiters on `addr`. `EINVAL` for a
/// misaligned address or an empty bitset. Like Linux for private futexes, the word itself is
/// not read: waking an address nobody waits on is 0, mapped or not.
#[doc(alias = "futex_wake")]
pub fn wake(addr: u64, scope: Scope, n: u32, bitset: u32) -> Result<u64, Errno> {
    if bitset == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(u64::from(wake_key(key(addr, scope)?, n, bitset)))
}

/// The wake of a thread's exit (`CLONE_CHILD_CLEARTID`), in the current address space: a
/// shared futex, as Linux's `mm_release` does it.
pub fn wake_address(addr: u64, n: u32, bitset: u32) {
    let _ = wake(addr, Scope::Shared, n, bitset);
}

/// FUTEX_REQUEUE / FUTEX_CMP_REQUEUE: wakes up to `n_wake` waiters on `addr` and moves up to
/// `n_requeue` of the rest to `addr2`. With `expected` (CMP_REQUEUE), the word at `addr` must
/// hold it (`EAGAIN` otherwise). Returns the number woken plus the number moved (Linux
/// `futex_requeue`'s `task_count`).
#[doc(alias = "futex_requeue")]
pub fn requeue(
    addr: u64,
    scope: Scope,
    n_wake: u32,
    n_requeue: u32,
    addr2: u64,
    expected: Option<u32>,
) -> Result<u64, Errno> {
    let from = key(addr, scope)?;
    let to = key(addr2, scope)?;
    if let Some(expected) = expected {
        if read_word(addr)? != expected {
            return Err(Errno::EAGAIN);
        }
    }
    let woken = wake_key(from, n_wake, BITSET_MATCH_ANY);
    let mut moved = 0;
    for w in WAITERS.lock().iter_mut() {
        if moved >= n_requeue {
            break;
        }
        if w.key == from {
            w.key = to;
            moved += 1;
        }
    }
    Ok(u64::from(woken + moved))
}
