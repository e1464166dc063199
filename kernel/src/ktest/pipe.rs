//! Tests of the pipe from inside the kernel: the races a user can only time by luck (a reader's
//! copy that sleeps on the disk while writers run) driven deterministically through
//! `Pipe::read`'s copy callback, which runs without the pipe's lock as a user copy does.
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use crate::errno::Errno;
use crate::fs::pipe::Pipe;

/// A reader's copy faults after a writer filled the pipe behind it: the chunk goes back to the
/// front (nothing lost), so the pipe briefly holds more than its capacity; a write then must see
/// no room (`EAGAIN`), not underflow its room arithmetic (a kernel panic before the fix), and
/// draining must give back every byte in order.
pub fn pipe_faulting_read_put_back_past_capacity_then_write() -> TestResult {
    let Ok(pipe) = Pipe::new() else {
        return Ok(()); // the pipes' budget is spent: nothing to test here
    };
    pipe.add_end(false);
    pipe.add_end(true);
    let cap = pipe.capacity();
    // The first 4096 bytes, which the reader takes.
    let first = alloc::vec![1u8; 4096];
    let w = pipe.write(true, &first);
    ensure!(w == Ok(4096), "first write: {w:?}");
    let mut filled = Ok(0);
    let r = pipe.read(true, 4096, &mut |chunk| {
        // The copy "sleeps on the disk": a writer fills the emptied pipe meanwhile.
        let rest = alloc::vec![2u8; cap];
        filled = pipe.write(true, &rest);
        let _ = chunk;
        Err(Errno::EFAULT)
    });
    ensure!(r == Err(Errno::EFAULT), "the faulting read: {r:?}");
    ensure!(filled == Ok(cap), "the writer during the copy: {filled:?}");
    // Put back: the pipe now holds capacity + 4096 bytes.
    let w = pipe.write(true, b"x");
    ensure!(
        w == Err(Errno::EAGAIN),
        "a write into an over-full pipe: {w:?}"
    );
    let mut got = alloc::vec::Vec::new();
    loop {
        let r = pipe.read(true, 65536, &mut |chunk| {
            got.extend_from_slice(chunk);
            Ok(chunk.len())
        });
        match r {
            Ok(_) => {}
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(super::TestFailure(alloc::format!("drain: {e:?}"))),
        }
    }
    ensure!(got.len() == cap + 4096, "drained {} bytes", got.len());
    ensure!(
        got[..4096].iter().all(|&b| b == 1) && got[4096..].iter().all(|&b| b == 2),
        "the put-back bytes are not first"
    );
    let w = pipe.write(true, b"x");
    ensure!(w == Ok(1), "a write into the drained pipe: {w:?}");
    pipe.drop_end(false);
    pipe.drop_end(true);
    Ok(())
}
