//! vmsplice(2) into pipes: pages referenced (not copied) until read, data intact after the
//! buffer is unmapped, order kept with ordinary writes, partial pages, a full non-blocking pipe,
//! a batch that only partly fits (the pages not queued released at once), unread pages
//! released on close, and the error paths.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{mem_free_kb, Tester};

cowlab_userland::entry!(main);

const VMSPLICE: usize = 278;
const SPLICE_F_NONBLOCK: usize = 2;
const O_NONBLOCK: u32 = 0o4000;
const PAGE: usize = 4096;

fn vmsplice(fd: i32, base: usize, len: usize, flags: usize) -> Result<usize, Errno> {
    let iov = [base, len];
    // SAFETY: one iovec; the kernel only reads the memory it names (or fails with EFAULT).
    unsafe {
        raw(
            VMSPLICE,
            [fd as usize, iov.as_ptr() as usize, 1, flags, 0, 0],
        )
    }
}

fn pattern(i: usize) -> u8 {
    (i * 13 + i / PAGE) as u8
}

fn fill(addr: usize, len: usize, from: usize) {
    for i in 0..len {
        // SAFETY: callers pass a live writable mapping of at least `len` bytes.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u8, pattern(from + i)) };
    }
}

fn read_exact(fd: i32, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match read(fd, &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

fn main() -> i32 {
    let mut t = Tester::new("t_vmsplice");
    let rw = PROT_READ | PROT_WRITE;
    let mut buf = [0u8; 3 * PAGE];

    // Three whole pages; the buffer is unmapped before the read.
    let p = pipe().unwrap_or([-1, -1]);
    let m = mmap(0, 3 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(m, 3 * PAGE, 0);
    t.eq(
        "vmsplice 3 pages",
        vmsplice(p[1], m, 3 * PAGE, 0),
        Ok(3 * PAGE),
    );
    let _ = munmap(m, 3 * PAGE);
    t.eq("read them back", read_exact(p[0], &mut buf), 3 * PAGE);
    t.check(
        "data intact after munmap",
        buf.iter().enumerate().all(|(i, &b)| b == pattern(i)),
    );

    // Unaligned, straddling pages, between ordinary writes.
    let m = mmap(0, 3 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(m, 3 * PAGE, 0);
    t.eq("write before", write(p[1], b"ab"), Ok(2));
    t.eq(
        "vmsplice 5000 bytes at +100",
        vmsplice(p[1], m + 100, 5000, 0),
        Ok(5000),
    );
    t.eq("write after", write(p[1], b"yz"), Ok(2));
    let n = read_exact(p[0], &mut buf[..5004]);
    t.eq("read all", n, 5004);
    t.check(
        "order and bytes kept",
        &buf[..2] == b"ab"
            && buf[2..5002]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(100 + i))
            && &buf[5002..5004] == b"yz",
    );
    t.eq(
        "zero segments is 0",
        {
            // SAFETY: nr_segs 0: nothing is read.
            unsafe { raw(VMSPLICE, [p[1] as usize, 0, 0, 0, 0, 0]) }
        },
        Ok(0),
    );

    // Errors.
    t.eq(
        "unmapped buffer is EFAULT",
        vmsplice(p[1], 0x1000, 10, 0),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "unknown flag is EINVAL",
        vmsplice(p[1], m, 10, 0x100),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "bad fd is EBADF",
        vmsplice(999, m, 10, 0),
        Err(Errno(errno::EBADF)),
    );
    let null = open(c"/dev/null", 2).unwrap_or(-1);
    t.eq(
        "a non-pipe is EBADF",
        vmsplice(null, m, 10, 0),
        Err(Errno(errno::EBADF)),
    );
    let _ = close(null);
    t.eq(
        "bad iovec pointer is EFAULT",
        {
            // SAFETY: the iovec pointer is unmapped; the kernel must fail the copy.
            unsafe { raw(VMSPLICE, [p[1] as usize, 8, 1, 0, 0, 0]) }
        },
        Err(Errno(errno::EFAULT)),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);

    // A full non-blocking pipe: 16 pages fit, then EAGAIN; close with the pages unread.
    let big = mmap(0, 17 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(big, 17 * PAGE, 0);
    let q = pipe2(O_NONBLOCK).unwrap_or([-1, -1]);
    t.eq(
        "vmsplice 17 pages fills 16",
        vmsplice(q[1], big, 17 * PAGE, SPLICE_F_NONBLOCK),
        Ok(16 * PAGE),
    );
    t.eq(
        "then EAGAIN",
        vmsplice(q[1], big, PAGE, SPLICE_F_NONBLOCK),
        Err(Errno(11)),
    );
    let _ = munmap(big, 17 * PAGE);
    // Only the pipe's references keep the 16 pages now: reading one and closing the pipe with
    // 15 unread frees all 16 frames (cowlab's MemFree is exact; the host's is not).
    let mut one = [0u8; PAGE];
    let _ = mem_free_kb();
    let held = mem_free_kb();
    t.eq("read one page", read(q[0], &mut one), Ok(PAGE));
    t.check(
        "it is the first page",
        one.iter().enumerate().all(|(i, &b)| b == pattern(i)),
    );
    t.eq(
        "closing the pipe with 15 pages unread",
        (close(q[0]), close(q[1])),
        (Ok(0), Ok(0)),
    );
    if cowlab_userland::test::on_cowlab() {
        let freed = mem_free_kb()
            .zip(held)
            .map(|(after, before)| after as i64 - before as i64);
        t.eq(
            "the 16 pages' frames are freed (MemFree +64 kB)",
            freed,
            Some(64),
        );
    }

    // A batch that only partly fits: 60 KiB of bytes (15 of the 16 buffers) leave room for one
    // page, so a 16-page vmsplice from +100 queues that page's 3996 bytes and returns; the 15
    // pages not queued are released at once (their frames go with the munmap), the queued
    // one when it is read.
    let q = pipe2(O_NONBLOCK).unwrap_or([-1, -1]);
    let bytes = mmap(0, 15 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(bytes, 15 * PAGE, 7);
    // SAFETY: `bytes` is our own mapping of 15 pages, filled above.
    let fifteen = unsafe { core::slice::from_raw_parts(bytes as *const u8, 15 * PAGE) };
    t.eq("60 KiB of bytes", write(q[1], fifteen), Ok(15 * PAGE));
    let big = mmap(0, 16 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(big, 16 * PAGE, 0);
    let _ = mem_free_kb();
    let before = mem_free_kb();
    t.eq(
        "16 pages into room for one: one page's bytes",
        vmsplice(q[1], big + 100, 16 * PAGE - 100, 0),
        Ok(PAGE - 100),
    );
    t.eq(
        "then a full pipe is EAGAIN",
        vmsplice(q[1], big, PAGE, SPLICE_F_NONBLOCK),
        Err(Errno(11)),
    );
    let _ = munmap(big, 16 * PAGE);
    if cowlab_userland::test::on_cowlab() {
        let freed = mem_free_kb()
            .zip(before)
            .map(|(after, before)| after as i64 - before as i64);
        t.eq(
            "the 15 pages not queued are freed with the munmap (MemFree +60 kB)",
            freed,
            Some(60),
        );
    }
    let mut got = [0u8; PAGE];
    let mut all_bytes = true;
    for i in 0..15 {
        let n = read_exact(q[0], &mut got);
        all_bytes &= n == PAGE
            && got
                .iter()
                .enumerate()
                .all(|(k, &b)| b == pattern(7 + i * PAGE + k));
    }
    t.check("the 60 KiB read back first", all_bytes);
    t.eq(
        "then the page's 3996 bytes",
        read(q[0], &mut got),
        Ok(PAGE - 100),
    );
    t.check(
        "from +100",
        got[..PAGE - 100]
            .iter()
            .enumerate()
            .all(|(k, &b)| b == pattern(100 + k)),
    );
    if cowlab_userland::test::on_cowlab() {
        let freed = mem_free_kb()
            .zip(before)
            .map(|(after, before)| after as i64 - before as i64);
        t.eq("and its frame is freed once read (+64 kB)", freed, Some(64));
    }
    let _ = close(q[0]);
    let _ = close(q[1]);
    let _ = munmap(bytes, 15 * PAGE);

    // A read that faults on a pipe full of pages: EFAULT and nothing lost, though the put-back
    // finds every segment slot taken (the bytes rejoin the front page's).
    let q = pipe2(O_NONBLOCK).unwrap_or([-1, -1]);
    let big = mmap(0, 16 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(big, 16 * PAGE, 0);
    t.eq(
        "16 pages fill the pipe",
        vmsplice(q[1], big, 16 * PAGE, SPLICE_F_NONBLOCK),
        Ok(16 * PAGE),
    );
    t.eq(
        "a 100-byte read into an unmapped buffer is EFAULT",
        {
            // SAFETY: the destination is unmapped; the kernel must fail the copy.
            unsafe { raw(0, [q[0] as usize, 0x1000, 100, 0, 0, 0]) }
        },
        Err(Errno(errno::EFAULT)),
    );
    let _ = munmap(big, 16 * PAGE);
    let mut whole = true;
    for i in 0..16 {
        let n = read_exact(q[0], &mut got);
        whole &= n == PAGE
            && got
                .iter()
                .enumerate()
                .all(|(k, &b)| b == pattern(i * PAGE + k));
    }
    t.check("then all 64 KiB read back in order", whole);
    let _ = close(q[0]);
    let _ = close(q[1]);

    // No reader: EPIPE (and SIGPIPE, ignored here by a child that checks the error).
    let r = pipe().unwrap_or([-1, -1]);
    let _ = close(r[0]);
    let status = cowlab_userland::test::in_child(|| {
        let act = [1usize, 0, 0, 0];
        // SAFETY: rt_sigaction(SIGPIPE, &act, NULL, 8) with `act` a live struct sigaction whose
        // handler is SIG_IGN (1); the kernel only reads it, and no old action is written.
        let _ = unsafe { raw(13, [13, act.as_ptr() as usize, 0, 8, 0, 0]) };
        let b = [7u8; 16];
        i32::from(vmsplice(r[1], b.as_ptr() as usize, 16, 0) != Err(Errno(errno::EPIPE)))
    });
    t.eq("no reader is EPIPE", status, 0);
    let _ = close(r[1]);
    let _ = munmap(m, 3 * PAGE);

    // A full ring whose last segment is bytes with room left: the write end is not POLLOUT
    // (Linux: no free buffer), as a page's vmsplice is EAGAIN (cowlab once said POLLOUT).
    let f = pipe2(O_NONBLOCK).unwrap_or([-1, -1]);
    let m = mmap(0, 15 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    fill(m, 15 * PAGE, 0);
    t.eq(
        "15 pages spliced",
        vmsplice(f[1], m, 15 * PAGE, SPLICE_F_NONBLOCK),
        Ok(15 * PAGE),
    );
    t.eq("then 100 bytes written", write(f[1], &[1u8; 100]), Ok(100));
    // struct pollfd { int fd; short events (POLLOUT = 4); short revents; }
    let mut pfd = [f[1] as u32 as u64 | (4u64 << 32)];
    // SAFETY: poll(&pfd, 1, 0): one live pollfd the kernel fills in.
    let n = unsafe { raw(7, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.eq(
        "a full ring with byte room in its last segment: no POLLOUT",
        (n, (pfd[0] >> 48) & 4),
        (Ok(0), 0),
    );
    t.eq(
        "and a page's vmsplice is EAGAIN",
        vmsplice(f[1], m, PAGE, SPLICE_F_NONBLOCK),
        Err(Errno(11)),
    );
    let mut page = [0u8; PAGE];
    t.eq("a page read out", read(f[0], &mut page), Ok(PAGE));
    pfd[0] &= !(0xffffu64 << 48);
    // SAFETY: as above.
    let n = unsafe { raw(7, [pfd.as_mut_ptr() as usize, 1, 0, 0, 0, 0]) };
    t.eq(
        "then a free slot: POLLOUT",
        (n, (pfd[0] >> 48) & 4),
        (Ok(1), 4),
    );
    t.eq(
        "and the page's vmsplice proceeds",
        vmsplice(f[1], m, PAGE, SPLICE_F_NONBLOCK),
        Ok(PAGE),
    );
    let _ = close(f[0]);
    let _ = close(f[1]);
    let _ = munmap(m, 15 * PAGE);
    t.finish()
}
