//! CPU affinity of a thread: `sched_setaffinity` and `sched_getaffinity` with an 8-byte mask
//! (CPUs 0-63, more than cowlab's `MAX_CPUS` and than the test programs ask for). The SMP test
//! programs pin threads with these to make two CPUs race for real.

use crate::calls::raw;
use crate::sys::Errno;

const SCHED_SETAFFINITY: usize = 203;
const SCHED_GETAFFINITY: usize = 204;

/// Moves thread `tid` (0: the caller) to the CPUs of `mask`.
pub fn sched_setaffinity(tid: i32, mask: u64) -> Result<usize, Errno> {
    // SAFETY: the kernel reads 8 bytes at `&mask`, which lives across the call.
    unsafe {
        raw(
            SCHED_SETAFFINITY,
            [tid as usize, 8, &mask as *const u64 as usize, 0, 0, 0],
        )
    }
}

/// The CPUs thread `tid` (0: the caller) may run on. On a host with more than 64 possible
/// CPUs Linux refuses the 8-byte mask with `EINVAL`; callers pick their fallback.
pub fn sched_getaffinity(tid: i32) -> Result<u64, Errno> {
    let mut mask = 0u64;
    // SAFETY: the kernel writes at most 8 bytes at `&mut mask`, a local that outlives the call.
    unsafe {
        raw(
            SCHED_GETAFFINITY,
            [tid as usize, 8, &mut mask as *mut u64 as usize, 0, 0, 0],
        )
    }?;
    Ok(mask)
}
