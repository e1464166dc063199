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

/// Counts the wake-ups of the channel it is linked to (as an epoll's interest item would).
struct Count(core::sync::atomic::AtomicUsize);

impl crate::proc::waitlink::WakeTarget for Count {
    fn fire(&self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

/// While a reader's copy runs the pipe looks empty, so a second reader (or a poll or epoll
/// waiter) may go to sleep on it; when the copy faults and the bytes go back, the readers'
/// channel must be woken, or that sleeper waits on a pipe with data in it.
pub fn pipe_faulting_read_put_back_wakes_the_readers() -> TestResult {
    use crate::proc::waitlink::{self, WakeTarget};
    use alloc::sync::Arc;
    use core::sync::atomic::Ordering;
    let Ok(pipe) = Pipe::new() else {
        return Ok(());
    };
    pipe.add_end(false);
    pipe.add_end(true);
    let count = Arc::new(Count(core::sync::atomic::AtomicUsize::new(0)));
    let target: Arc<dyn WakeTarget> = count.clone();
    let chan = pipe.poll_channel(false);
    let linked = waitlink::link(chan, &target);
    ensure!(linked.is_ok(), "link: {linked:?}");
    let w = pipe.write(true, b"data");
    let r = pipe.read(true, 4096, &mut |_| {
        // From here the pipe is empty: a reader that sleeps now needs the next wake-up.
        count.0.store(0, Ordering::Relaxed);
        Err(Errno::EFAULT)
    });
    let woken = count.0.load(Ordering::Relaxed);
    waitlink::unlink(chan, &target);
    pipe.drop_end(false);
    pipe.drop_end(true);
    ensure!(w == Ok(4), "write: {w:?}");
    ensure!(r == Err(Errno::EFAULT), "the faulting read: {r:?}");
    ensure!(woken > 0, "the put-back did not wake the readers' channel");
    let mask = pipe.poll_mask(false);
    ensure!(
        mask & crate::fs::poll::POLLIN != 0,
        "the put-back bytes are not readable: {mask:#x}"
    );
    Ok(())
}
