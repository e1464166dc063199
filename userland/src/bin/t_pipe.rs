//! Pipe tests: data through, blocking both ways, EOF, EPIPE and SIGPIPE.
#![no_std]
#![no_main]

use cowlab_userland::alarm::{alarm_in, handle_alarm};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const TOTAL: usize = 300 * 1024;

fn pattern(i: usize) -> u8 {
    (i * 7 + i / 4096) as u8
}

fn main() -> i32 {
    let mut t = Tester::new("t_pipe");

    let fds = pipe().unwrap_or([-1, -1]);
    t.check("pipe", fds[0] >= 0 && fds[1] >= 0);
    t.eq("write 5 bytes", write(fds[1], b"hello"), Ok(5));
    let mut buf = [0u8; 16];
    t.eq("read them back", read(fds[0], &mut buf), Ok(5));
    t.check("same bytes", &buf[..5] == b"hello");
    t.eq(
        "lseek on a pipe is ESPIPE",
        lseek(fds[0], 0, 0),
        Err(Errno(errno::ESPIPE)),
    );
    t.eq(
        "write to the read end is EBADF",
        write(fds[0], b"x"),
        Err(Errno(errno::EBADF)),
    );

    // A read into a buffer that faults part-way is EFAULT and loses nothing (Linux's
    // pipe_read consumes only what it copied; cowlab once dropped the uncopied bytes).
    let data: [u8; 100] = core::array::from_fn(|i| i as u8);
    t.eq("write 100 bytes", write(fds[1], &data), Ok(100));
    let area = mmap(0, 2 * 4096, 3, 0x22).unwrap_or(0);
    t.check("map two pages", area != 0);
    t.eq(
        "unmap the second",
        munmap(area + 4096, 4096).map(drop),
        Ok(()),
    );
    // SAFETY: 10 mapped bytes before the hole, 90 unmapped: the kernel's copy faults there.
    let half = unsafe { core::slice::from_raw_parts_mut((area + 4096 - 10) as *mut u8, 100) };
    t.eq(
        "read into a half-unmapped buffer is EFAULT",
        read(fds[0], half),
        Err(Errno(errno::EFAULT)),
    );
    let mut all = [0u8; 128];
    t.eq("every byte is still there", read(fds[0], &mut all), Ok(100));
    t.check("in order", all[..100] == data);
    let _ = munmap(area, 4096);

    // Writer blocks on a full pipe until the (slow) reader drains it: 300 KiB through 64 KiB.
    let writer = fork().unwrap_or(-1);
    if writer == 0 {
        let _ = close(fds[0]);
        let mut chunk = [0u8; 8192];
        let mut sent = 0;
        while sent < TOTAL {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = pattern(sent + k);
            }
            let n = (TOTAL - sent).min(chunk.len());
            let mut off = 0;
            while off < n {
                match write(fds[1], &chunk[off..n]) {
                    Ok(w) => off += w,
                    Err(_) => exit_now(2),
                }
            }
            sent += n;
        }
        exit_now(0);
    }
    let _ = close(fds[1]);
    let _ = sleep_ms(50);
    let mut got = 0;
    let mut intact = true;
    let mut chunk = [0u8; 5000];
    loop {
        match read(fds[0], &mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                for (k, &b) in chunk[..n].iter().enumerate() {
                    intact &= b == pattern(got + k);
                }
                got += n;
            }
            Err(_) => break,
        }
    }
    t.eq("reader got every byte, then EOF", got, TOTAL);
    t.check("the bytes are intact and in order", intact);
    let status = waitpid(writer, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "writer exited 0",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );
    let _ = close(fds[0]);

    // Reader blocks on an empty pipe until the writer (after a sleep) writes.
    let fds = pipe().unwrap_or([-1, -1]);
    let child = fork().unwrap_or(-1);
    if child == 0 {
        let _ = close(fds[0]);
        let _ = sleep_ms(100);
        let _ = write(fds[1], b"late");
        exit_now(0);
    }
    let _ = close(fds[1]);
    let start = monotonic_ns();
    let mut buf = [0u8; 8];
    let n = read(fds[0], &mut buf);
    let waited = monotonic_ns() - start;
    t.eq("blocked read returns the late data", n, Ok(4));
    t.check_why(
        "the read blocked until the write",
        waited >= 50_000_000,
        waited,
    );
    t.eq("EOF after the writer exits", read(fds[0], &mut buf), Ok(0));
    let _ = waitpid(child, 0);
    let _ = close(fds[0]);

    // No reader: SIGPIPE kills by default; with SIGPIPE ignored, write fails with EPIPE.
    let status = in_child(|| {
        let fds = pipe().unwrap_or([-1, -1]);
        let _ = close(fds[0]);
        let _ = write(fds[1], b"x");
        0
    });
    t.check_why(
        "write without readers: SIGPIPE",
        wifsignaled(status) && wtermsig(status) == 13,
        status,
    );
    let status = in_child(|| {
        let act = [1u64, 0, 0, 0]; // SIG_IGN
                                   // SAFETY: rt_sigaction reads a 32-byte struct sigaction from `act`.
        let _ = unsafe {
            raw(
                cowlab_userland::sys::nr::RT_SIGACTION,
                [13, act.as_ptr() as usize, 0, 8, 0, 0],
            )
        };
        let fds = pipe().unwrap_or([-1, -1]);
        let _ = close(fds[0]);
        match write(fds[1], b"x") {
            Err(Errno(errno::EPIPE)) => 0,
            _ => 1,
        }
    });
    t.check_why(
        "with SIGPIPE ignored: EPIPE",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );

    // O_NONBLOCK: EAGAIN instead of blocking, both ways.
    let fds = pipe2(0o4000).unwrap_or([-1, -1]);
    let mut one = [0u8; 1];
    t.eq(
        "non-blocking read of an empty pipe is EAGAIN",
        read(fds[0], &mut one),
        Err(Errno(11)),
    );
    let big = [7u8; 4096];
    let mut filled = 0;
    while let Ok(n) = write(fds[1], &big) {
        filled += n;
        if filled > 1 << 22 {
            break;
        }
    }
    t.eq(
        "non-blocking write to a full pipe is EAGAIN",
        write(fds[1], &big),
        Err(Errno(11)),
    );
    t.check_why(
        "the pipe took some data first",
        (4096..=1 << 20).contains(&filled),
        filled,
    );
    let _ = close(fds[0]);
    let _ = close(fds[1]);

    // pipe2 flags and bad pointer.
    let fds = pipe2(0o2000000).unwrap_or([-1, -1]);
    t.eq(
        "pipe2(O_CLOEXEC) sets FD_CLOEXEC",
        fcntl(fds[0], 1, 0),
        Ok(1),
    );
    let _ = close(fds[0]);
    let _ = close(fds[1]);
    t.eq(
        "pipe2 with a bad flag is EINVAL",
        pipe2(0x1).map(|_| ()),
        Err(Errno(errno::EINVAL)),
    );
    // SAFETY: an invalid pointer: the kernel must answer EFAULT, not crash.
    let r = unsafe { raw(cowlab_userland::sys::nr::PIPE, [0x10, 0, 0, 0, 0, 0]) };
    t.eq(
        "pipe with a bad pointer is EFAULT",
        r.map(|_| ()),
        Err(Errno(errno::EFAULT)),
    );

    // PIPE_BUF (4096): a write of at most that many bytes goes in whole or not at all. A
    // non-blocking one that does not fit is EAGAIN, not a short count (cowlab once took 50 of
    // 100 bytes here; Linux 6.18 answers EAGAIN).
    let fds = pipe2(0o4000).unwrap_or([-1, -1]);
    let fill = [3u8; 65486];
    let mut put = 0;
    while put < fill.len() {
        match write(fds[1], &fill[put..]) {
            Ok(n) => put += n,
            Err(_) => break,
        }
    }
    t.eq("fill the pipe to 50 bytes short", put, 65486);
    t.eq(
        "a non-blocking 100-byte write into 50 bytes of room is EAGAIN",
        write(fds[1], &[4u8; 100]),
        Err(Errno(11)),
    );
    // More than PIPE_BUF may be partial: it takes the room there is (a page's worth read out).
    let mut page = [0u8; 4096];
    t.eq("read a page out", read(fds[0], &mut page), Ok(4096));
    let big = [5u8; 8192];
    let part = write(fds[1], &big).unwrap_or(0);
    t.check_why(
        "a non-blocking 8192-byte write is partial",
        part > 0 && part < 8192,
        part,
    );
    let _ = close(fds[0]);
    let _ = close(fds[1]);

    // A blocking 4096-byte write into 100 bytes of room waits until it fits whole: the reader
    // (a child, after a delay) drains the filler and then must find the 4096 bytes together.
    let fds = pipe().unwrap_or([-1, -1]);
    let mut put = 0;
    while put < 65436 {
        match write(fds[1], &fill[..65436 - put]) {
            Ok(n) => put += n,
            Err(_) => break,
        }
    }
    t.eq("fill the pipe to 100 bytes short", put, 65436);
    let reader = fork().unwrap_or(-1);
    if reader == 0 {
        let _ = close(fds[1]);
        let _ = sleep_ms(100);
        let mut got = [0u8; 8192];
        let mut seen = 0usize;
        let mut tail = 0usize;
        loop {
            match read(fds[0], &mut got) {
                Ok(0) => break,
                Ok(n) => {
                    for &b in &got[..n] {
                        // The filler's bytes (3) first, then the 4096 (6) after them only.
                        if b == 6 {
                            tail += 1;
                        } else if b != 3 || tail > 0 {
                            exit_now(3);
                        }
                    }
                    seen += n;
                }
                Err(_) => exit_now(4),
            }
        }
        exit_now(if seen == 65436 + 4096 && tail == 4096 {
            0
        } else {
            5
        });
    }
    let _ = close(fds[0]);
    let start = monotonic_ns();
    let w = write(fds[1], &[6u8; 4096]);
    let waited = monotonic_ns() - start;
    let _ = close(fds[1]);
    t.eq("a blocking 4096-byte write goes in whole", w, Ok(4096));
    t.check_why(
        "it waited for the reader to make room for all of it",
        waited >= 50_000_000,
        waited,
    );
    let status = waitpid(reader, 0).map(|r| r.1).unwrap_or(-1);
    t.check_why(
        "the reader got the filler, then the 4096 bytes together",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );

    // Whole or nothing while it waits, too: a signal (no SA_RESTART) interrupting that write
    // finds nothing of it in the pipe, EINTR (cowlab once put 100 bytes in and returned 100).
    let status = in_child(|| {
        let fds = pipe().unwrap_or([-1, -1]);
        let fill = [3u8; 65436];
        let mut put = 0;
        while put < fill.len() {
            match write(fds[1], &fill[put..]) {
                Ok(n) => put += n,
                Err(_) => return 1,
            }
        }
        handle_alarm(0);
        alarm_in(100);
        if write(fds[1], &[6u8; 4096]) != Err(Errno(4)) {
            return 2;
        }
        let _ = fcntl(fds[0], 4, 0o4000); // F_SETFL O_NONBLOCK
        let mut got = [0u8; 8192];
        let mut seen = 0;
        while let Ok(n) = read(fds[0], &mut got) {
            if n == 0 || got[..n].iter().any(|&b| b != 3) {
                return 3;
            }
            seen += n;
        }
        if seen == 65436 {
            0
        } else {
            4
        }
    });
    t.check_why(
        "a blocking 4096-byte write interrupted while waiting is EINTR, nothing written",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );

    // A single iovec longer than MAX_RW_COUNT is cut to it before its range is checked (Linux
    // import_ubuf): readv of 5 bytes with a huge length returns the 5 (cowlab once: EFAULT).
    let fds = pipe().unwrap_or([-1, -1]);
    t.eq("write 5 bytes", write(fds[1], b"hello"), Ok(5));
    // The buffer low in the address space (a hint), so that the cut range (2 GiB less a page)
    // lies below the user half's end: a stack buffer near the top would be EFAULT on Linux.
    let low = mmap(0x1000_0000, 4096, 3, 0x22).unwrap_or(0);
    t.check("map a low page", low != 0);
    // SAFETY: `low` is a fresh private anonymous page this program mapped.
    let five = unsafe { core::slice::from_raw_parts_mut(low as *mut u8, 8) };
    let iov = [five.as_mut_ptr() as u64, 0x7fff_ffff_ffff_0000];
    // SAFETY: readv writes at most the 5 bytes in the pipe into `five`.
    let r = unsafe {
        raw(
            cowlab_userland::sys::nr::READV,
            [fds[0] as usize, iov.as_ptr() as usize, 1, 0, 0, 0],
        )
    };
    t.eq("readv with a huge single iovec reads the 5 bytes", r, Ok(5));
    t.check("the 5 bytes", &five[..5] == b"hello");
    let iov = [five.as_mut_ptr() as u64, 1u64 << 63];
    // SAFETY: a negative length: the kernel refuses it before touching `five`.
    let r = unsafe {
        raw(
            cowlab_userland::sys::nr::READV,
            [fds[0] as usize, iov.as_ptr() as usize, 1, 0, 0, 0],
        )
    };
    t.eq(
        "readv with a negative iovec length is EINVAL",
        r,
        Err(Errno(errno::EINVAL)),
    );
    let _ = close(fds[0]);
    let _ = close(fds[1]);
    let _ = munmap(low, 4096);

    t.finish()
}
