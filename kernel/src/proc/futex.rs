//! Futexes: sleeping on a user word until another thread wakes that word.
//!
//! Model (Linux `kernel/futex/`): a waiter is queued under a *key* naming the word, then sleeps;
//! a waker dequeues up to N waiters with the same key (and an intersecting bitset) and makes them
//! runnable. The value check and the queueing happen with interrupts disabled on the one CPU, so
//! a wake between "the word still holds the expected value" and "asleep" cannot be lost (the
//! job Linux's hash-bucket lock does). A waiter knows it was woken because it is no longer
//! queued; still queued after its sleep means a timeout or a kill, and it dequeues itself.
//!
//! Keys: `(address space, address)`. Linux keys private futexes the same way and shared ones
//! (no `FUTEX_PRIVATE_FLAG`) by the backing page (inode and offset, or the anonymous page); here
//! both are keyed by address space and address, which is exact for every use between threads
//! (including `CLONE_CHILD_CLEARTID`'s wake, which Linux does as a shared futex), but does not
//! connect waiters in *different processes* mapping the same `MAP_SHARED` memory.

use alloc::vec::Vec;

use spin::Mutex;

use super::{block, current_tid, with_current, Pid};
use crate::syscall::Errno;
use crate::time;
use crate::uaccess::UserPtr;

/// The bitset that matches every waiter (`FUTEX_BITSET_MATCH_ANY`).
pub const BITSET_MATCH_ANY: u32 = u32::MAX;

/// Which word: the address space (its `Arc` pointer, alive while a waiter of it is queued,
/// since the waiter holds a reference) and the user address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    aspace: usize,
    addr: u64,
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
/// `get_futex_key`).
fn key(addr: u64) -> Result<Key, Errno> {
    if !addr.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    let aspace = with_current(|t| {
        t.aspace
            .as_ref()
            .map(|a| alloc::sync::Arc::as_ptr(a) as usize)
    })
    .ok_or(Errno::EFAULT)?;
    Ok(Key { aspace, addr })
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
pub fn wait(addr: u64, expected: u32, bitset: u32, deadline: Deadline) -> Result<u64, Errno> {
    if bitset == 0 {
        return Err(Errno::EINVAL);
    }
    let key = key(addr)?;
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
        if let Err(e) = block(channel(tid), until) {
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
pub fn wake(addr: u64, n: u32, bitset: u32) -> Result<u64, Errno> {
    if bitset == 0 {
        return Err(Errno::EINVAL);
    }
    Ok(u64::from(wake_key(key(addr)?, n, bitset)))
}

/// The wake of a thread's exit (`CLONE_CHILD_CLEARTID`), in the current address space.
pub fn wake_address(addr: u64, n: u32, bitset: u32) {
    let _ = wake(addr, n, bitset);
}

/// FUTEX_REQUEUE / FUTEX_CMP_REQUEUE: wakes up to `n_wake` waiters on `addr` and moves up to
/// `n_requeue` of the rest to `addr2`. With `expected` (CMP_REQUEUE), the word at `addr` must
/// hold it (`EAGAIN` otherwise). Returns the number woken plus the number moved (Linux
/// `futex_requeue`'s `task_count`).
#[doc(alias = "futex_requeue")]
pub fn requeue(
    addr: u64,
    n_wake: u32,
    n_requeue: u32,
    addr2: u64,
    expected: Option<u32>,
) -> Result<u64, Errno> {
    let from = key(addr)?;
    let to = key(addr2)?;
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
