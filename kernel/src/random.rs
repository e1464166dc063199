//! A small pseudo-random generator for AT_RANDOM and getrandom: xorshift64* seeded from the TSC
//! at first use and stirred with the TSC on every call. Not cryptographic; good enough for stack
//! canaries and tests in a teaching kernel.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use crate::time;

static STATE: AtomicU64 = AtomicU64::new(0);

fn next() -> u64 {
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = time::rdtsc() | 1;
    }
    x ^= time::rdtsc().rotate_left(17);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    if x == 0 {
        x = 0x9e37_79b9_7f4a_7c15;
    }
    STATE.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Fills `buf` with pseudo-random bytes.
pub fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let bytes = next().to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}
