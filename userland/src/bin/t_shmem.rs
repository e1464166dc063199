//! shmem through system calls: memfd_create, read/write/pread/pwrite/lseek/fstat on a memfd,
//! ftruncate, fallocate, MAP_SHARED and MAP_PRIVATE mappings of a memfd (shared writes reach
//! the file, private ones never do), MAP_SHARED|MAP_ANONYMOUS across fork, and error paths.
#![no_std]
#![no_main]

use cowlab_userland::aio::{
    io_destroy, io_getevents, io_setup, io_submit, iocb, IoEvent, IOCB_CMD_PREAD,
};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const MEMFD_CREATE: usize = 319;
const PREAD64: usize = 17;
const FSTAT: usize = 5;
const MMAP: usize = 9;
const MFD_CLOEXEC: usize = 1;
const MAP_SHARED: u32 = 1;

fn memfd(name: &[u8], flags: usize) -> Result<i32, Errno> {
    // SAFETY: `name` is a NUL-terminated byte string.
    unsafe { raw(MEMFD_CREATE, [name.as_ptr() as usize, flags, 0, 0, 0, 0]) }.map(|v| v as i32)
}

/// (st_size, st_blocks) of `fd`.
fn size_of(fd: i32) -> Result<(i64, i64), Errno> {
    let mut st = [0u64; 18];
    // SAFETY: struct stat is 144 bytes; `st` is 144 bytes.
    unsafe { raw(FSTAT, [fd as usize, st.as_mut_ptr() as usize, 0, 0, 0, 0]) }?;
    Ok((st[6] as i64, st[8] as i64))
}

fn map_fd(len: usize, prot: u32, flags: u32, fd: i32, off: u64) -> Result<usize, Errno> {
    // SAFETY: a new mapping at an address the kernel chooses touches no existing memory.
    unsafe {
        raw(
            MMAP,
            [
                0,
                len,
                prot as usize,
                flags as usize,
                fd as usize,
                off as usize,
            ],
        )
    }
}

fn e<T>(n: i32) -> Result<T, Errno> {
    Err(Errno(n))
}

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside live mappings.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_shmem");

    // Creation and its errors.
    let fd = memfd(b"t_shmem\0", MFD_CLOEXEC).unwrap_or(-1);
    t.check("memfd_create(MFD_CLOEXEC)", fd >= 0);
    t.eq("MFD_CLOEXEC sets FD_CLOEXEC", fcntl(fd, 1, 0), Ok(1));
    t.eq(
        "memfd_create unknown flag is EINVAL",
        memfd(b"x\0", 0x100),
        e(errno::EINVAL),
    );
    // SAFETY: address 8 is unmapped: the kernel must fail the name copy.
    let bad = unsafe { raw(MEMFD_CREATE, [8, 0, 0, 0, 0, 0]) };
    t.eq(
        "memfd_create bad name pointer is EFAULT",
        bad,
        e(errno::EFAULT),
    );
    let mut long = [b'a'; 300];
    long[299] = 0;
    t.eq(
        "memfd_create name too long is EINVAL",
        memfd(&long, 0),
        e(errno::EINVAL),
    );
    t.eq("fresh memfd has size 0", size_of(fd), Ok((0, 0)));

    // read/write/lseek/pread/pwrite.
    t.eq("write 5 bytes", write(fd, b"hello"), Ok(5));
    t.eq("fstat size 5", size_of(fd).map(|s| s.0), Ok(5));
    t.eq("lseek SEEK_SET 0", lseek(fd, 0, 0), Ok(0));
    let mut buf = [0u8; 16];
    t.eq("read returns the 5 bytes", read(fd, &mut buf), Ok(5));
    t.check("read bytes", &buf[..5] == b"hello");
    t.eq("read at EOF is 0", read(fd, &mut buf), Ok(0));
    t.eq("pread at 1", pread(fd, &mut buf[..4], 1), Ok(4));
    t.check("pread bytes", &buf[..4] == b"ello");
    t.eq("pwrite at 10 extends", pwrite(fd, b"X", 10), Ok(1));
    t.eq("size 11", size_of(fd).map(|s| s.0), Ok(11));
    buf = [0xff; 16];
    t.eq("pread across the hole", pread(fd, &mut buf, 5), Ok(6));
    t.check("hole reads as zeros", buf[..5] == [0; 5] && buf[5] == b'X');
    t.eq("lseek SEEK_END", lseek(fd, 0, 2), Ok(11));
    t.eq(
        "pread negative offset is EINVAL",
        pread(fd, &mut buf, u64::MAX),
        e(errno::EINVAL),
    );
    t.eq(
        "pread bad buffer is EFAULT",
        {
            // SAFETY: the address is unmapped; the kernel must fail the copy.
            unsafe { raw(PREAD64, [fd as usize, 8, 4, 0, 0, 0]) }
        },
        e(errno::EFAULT),
    );

    // ftruncate and fallocate.
    t.eq("ftruncate to 8192", ftruncate(fd, 8192), Ok(0));
    t.eq("size 8192", size_of(fd).map(|s| s.0), Ok(8192));
    t.eq("ftruncate to 3", ftruncate(fd, 3), Ok(0));
    buf = [0xff; 16];
    t.eq("pread after shrink", pread(fd, &mut buf, 0), Ok(3));
    t.eq(
        "ftruncate -1 is EINVAL",
        ftruncate(fd, -1),
        e(errno::EINVAL),
    );
    t.eq(
        "ftruncate bad fd is EBADF",
        ftruncate(999, 0),
        e(errno::EBADF),
    );
    let pipefds = pipe().unwrap_or([-1, -1]);
    t.eq(
        "ftruncate on a pipe is EINVAL",
        ftruncate(pipefds[1], 0),
        e(errno::EINVAL),
    );
    t.eq(
        "fallocate on a pipe is ESPIPE",
        fallocate(pipefds[1], 0, 0, 4096),
        e(errno::ESPIPE),
    );
    t.eq("fallocate 0..16384", fallocate(fd, 0, 0, 16384), Ok(0));
    let (size, blocks) = size_of(fd).unwrap_or((0, 0));
    t.eq("fallocate grows the size", size, 16384);
    t.check_why("fallocate allocates blocks", blocks >= 32, blocks);
    t.eq(
        "fallocate len 0 is EINVAL",
        fallocate(fd, 0, 0, 0),
        e(errno::EINVAL),
    );
    t.eq(
        "fallocate negative offset is EINVAL",
        fallocate(fd, 0, -1, 1),
        e(errno::EINVAL),
    );
    t.check(
        "contents kept",
        pread(fd, &mut buf[..3], 0) == Ok(3) && &buf[..3] == b"hel",
    );

    // Shared and private mappings.
    let rw = PROT_READ | PROT_WRITE;
    let shared = map_fd(16384, rw, MAP_SHARED, fd, 0).unwrap_or(0);
    t.check("mmap memfd MAP_SHARED", shared != 0);
    let private = map_fd(16384, rw, MAP_PRIVATE, fd, 0).unwrap_or(0);
    t.check("mmap memfd MAP_PRIVATE", private != 0);
    if shared != 0 && private != 0 {
        t.eq("shared mapping sees the file", peek(shared), b'h');
        poke(shared, b'S');
        t.check(
            "a shared write reaches read(2)",
            pread(fd, &mut buf[..1], 0) == Ok(1) && buf[0] == b'S',
        );
        t.eq(
            "private mapping sees it too (not yet written)",
            peek(private),
            b'S',
        );
        let _ = pwrite(fd, b"W", 4096);
        t.eq(
            "pwrite reaches the shared mapping",
            peek(shared + 4096),
            b'W',
        );
        poke(private + 4096, b'P');
        t.eq(
            "private write is visible privately",
            peek(private + 4096),
            b'P',
        );
        t.check(
            "private write never reaches the file",
            pread(fd, &mut buf[..1], 4096) == Ok(1) && buf[0] == b'W',
        );
        t.eq("nor the shared mapping", peek(shared + 4096), b'W');
        let _ = pwrite(fd, b"Z", 4096);
        t.eq(
            "after COW the private page stays private",
            peek(private + 4096),
            b'P',
        );
        let status = in_child(|| {
            poke(shared + 8192, b'C');
            0
        });
        t.eq("child exits", status, 0);
        t.eq(
            "child's shared write is seen by the parent",
            peek(shared + 8192),
            b'C',
        );
        t.check(
            "and by read(2)",
            pread(fd, &mut buf[..1], 8192) == Ok(1) && buf[0] == b'C',
        );
    }
    let _ = munmap(shared, 16384);
    let _ = munmap(private, 16384);
    t.eq(
        "mmap offset not page aligned is EINVAL",
        map_fd(4096, rw, MAP_SHARED, fd, 100),
        e(errno::EINVAL),
    );
    t.eq(
        "mmap of a pipe is ENODEV",
        map_fd(4096, PROT_READ, MAP_SHARED, pipefds[0], 0),
        e(19),
    );
    t.eq(
        "mmap of a bad fd is EBADF",
        map_fd(4096, PROT_READ, MAP_SHARED, 999, 0),
        e(errno::EBADF),
    );

    // The object outlives its first descriptor through dup and through a mapping.
    let fd2 = dup(fd).unwrap_or(-1);
    let _ = close(fd);
    t.check(
        "data survives closing the first fd",
        pread(fd2, &mut buf[..1], 0) == Ok(1) && buf[0] == b'S',
    );
    let m = map_fd(4096, rw, MAP_SHARED, fd2, 0).unwrap_or(0);
    let _ = close(fd2);
    t.check(
        "the mapping survives closing every fd",
        m != 0 && peek(m) == b'S',
    );
    let _ = munmap(m, 4096);
    let _ = close(pipefds[0]);
    let _ = close(pipefds[1]);

    // MAP_SHARED|MAP_ANONYMOUS across fork.
    let anon = mmap(0, 8192, rw, MAP_SHARED | MAP_ANONYMOUS).unwrap_or(0);
    t.check("mmap MAP_SHARED|MAP_ANONYMOUS", anon != 0);
    if anon != 0 {
        poke(anon, 1);
        let status = in_child(|| {
            poke(anon + 4097, 42);
            i32::from(peek(anon) != 1)
        });
        t.eq("child sees the parent's write", status, 0);
        t.eq("parent sees the child's write", peek(anon + 4097), 42);
        let _ = munmap(anon, 8192);
    }

    // Many memfds created and dropped (each must free its pages).
    let mut ok = true;
    for i in 0..50 {
        match memfd(b"loop\0", 0) {
            Ok(f) => {
                ok &= fallocate(f, 0, 0, 3 * 4096).is_ok();
                if i % 2 == 0 {
                    let m = map_fd(4096, rw, MAP_SHARED, f, 0).unwrap_or(0);
                    ok &= m != 0;
                    if m != 0 {
                        poke(m, 7);
                        let _ = munmap(m, 4096);
                    }
                }
                let _ = close(f);
            }
            Err(_) => ok = false,
        }
    }
    t.check("50 memfds created, used, closed", ok);

    iov_iter_rules(&mut t);
    big_fallocate_is_killable(&mut t);
    t.finish()
}

/// The fuzzer's 75-second hang: `fallocate(memfd, 0, 0x1000, 0x7ffff000)` allocated 2 GiB page
/// by page without a pause, so nothing else ran and the kill of the task waited for the loop.
/// Now (as Linux `shmem_fallocate`) the loop yields and stops with `EINTR` once the task is
/// being killed: a child killed 100 ms into it is reaped within a second of its fork, and its
/// pages return (the run's frame check). The same for a 2 GiB `write` from untouched anonymous
/// memory (Linux `generic_perform_write`).
fn big_fallocate_is_killable(t: &mut Tester) {
    killed_promptly(t, "fallocate", || {
        let fd = memfd(b"big\0", 0).unwrap_or(-1);
        let _ = fallocate(fd, 0, 0x1000, 0x7fff_f000);
    });
    killed_promptly(t, "write", || {
        let fd = memfd(b"big\0", 0).unwrap_or(-1);
        let src = mmap(0, 0x8000_0000, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS);
        if let Ok(src) = src {
            // SAFETY: `src` maps 2 GiB readable (untouched: zero pages).
            let buf = unsafe { core::slice::from_raw_parts(src as *const u8, 0x7fff_f000) };
            let _ = write(fd, buf);
        }
    });
}

/// A child runs `body` (then waits); the parent kills it 100 ms after the fork, and it must be
/// reaped, dead of SIGKILL, within a second of the fork.
fn killed_promptly(t: &mut Tester, what: &str, body: fn()) {
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        body();
        // Done or refused before the kill (a fast host): wait for it.
        loop {
            let _ = sleep_ms(1000);
        }
    }
    t.check("fork for the big call", pid > 0);
    // Timed from before the sleep: without the pauses the parent's 100 ms sleep itself
    // lasted until the child's loop ended.
    let start = monotonic_ns();
    let _ = sleep_ms(100);
    t.eq(
        "SIGKILL the child 100 ms into its call",
        kill(pid, 9),
        Ok(0),
    );
    let waited = waitpid(pid, 0);
    let ms = (monotonic_ns() - start) / 1_000_000;
    t.check_why(
        "the child died of SIGKILL",
        matches!(waited, Ok((p, s)) if p == pid && wifsignaled(s) && wtermsig(s) == 9),
        what,
    );
    t.check_why(
        "and was reaped within 1 s of the fork",
        ms < 1000,
        format_args!("{what}: {ms} ms"),
    );
}

const READV: usize = 19;
const WRITEV: usize = 20;
const PREADV: usize = 295;
const PWRITEV: usize = 296;
const PREADV2: usize = 327;
const PWRITEV2: usize = 328;
const PWRITE64: usize = 18;
const READ: usize = 0;

/// A low buffer (the program's .bss): far enough below the top of user space that a length cut
/// to Linux's `MAX_RW_COUNT` (2 GiB - 4 KiB) still ends inside it, on Linux and cowlab alike.
static mut LOW: [u8; 256] = [0; 256];

/// The vectored and positioned calls and Linux's rule for a buffer that is only partly valid
/// ("copy until the first fault, return the bytes done, EFAULT only if none"), on a memfd
/// (issue 17, defect 8).
fn iov_iter_rules(t: &mut Tester) {
    let fd = memfd(b"iov\0", 0).unwrap_or(-1);
    let _ = write(fd, b"abcdefghij");
    let _ = lseek(fd, 0, 0);
    let (mut a, mut b, mut c) = ([0u8; 3], [0u8; 3], [0u8; 4]);
    let iov = [
        [a.as_mut_ptr() as usize, 3],
        [b.as_mut_ptr() as usize, 3],
        [c.as_mut_ptr() as usize, 4],
    ];
    // SAFETY: three iovecs over live local buffers of the lengths given.
    let n = unsafe { raw(READV, [fd as usize, iov.as_ptr() as usize, 3, 0, 0, 0]) };
    t.eq("readv of a memfd fills every iovec", n, Ok(10));
    t.check_why(
        "readv put the bytes in order",
        &a == b"abc" && &b == b"def" && &c == b"ghij",
        format_args!("{a:?} {b:?} {c:?}"),
    );
    t.eq("readv moved the offset", lseek(fd, 0, 1), Ok(10));

    let parts: [&[u8]; 2] = [b"XY", b"Z"];
    let wiov = [
        [parts[0].as_ptr() as usize, 2],
        [parts[1].as_ptr() as usize, 1],
    ];
    // SAFETY: two iovecs over live byte strings.
    let n = unsafe { raw(PWRITEV, [fd as usize, wiov.as_ptr() as usize, 2, 4, 0, 0]) };
    t.eq("pwritev at offset 4", n, Ok(3));
    t.eq("pwritev left the offset alone", lseek(fd, 0, 1), Ok(10));
    let (mut p, mut q) = ([0u8; 2], [0u8; 5]);
    let riov = [[p.as_mut_ptr() as usize, 2], [q.as_mut_ptr() as usize, 5]];
    // SAFETY: two iovecs over live local buffers.
    let n = unsafe { raw(PREADV, [fd as usize, riov.as_ptr() as usize, 2, 3, 0, 0]) };
    t.eq("preadv at offset 3", n, Ok(7));
    t.check_why(
        "preadv sees the pwritev",
        &p == b"dX" && &q == b"YZhij",
        format_args!("{p:?} {q:?}"),
    );
    // SAFETY: as above.
    let n = unsafe {
        raw(
            PREADV,
            [fd as usize, riov.as_ptr() as usize, 2, usize::MAX, 0, 0],
        )
    };
    t.eq("preadv at offset -1: EINVAL", n, e(errno::EINVAL));
    let _ = lseek(fd, 8, 0);
    // SAFETY: as above.
    let n = unsafe {
        raw(
            PREADV2,
            [fd as usize, riov.as_ptr() as usize, 2, usize::MAX, 0, 0],
        )
    };
    t.eq("preadv2 at offset -1 reads at the file position", n, Ok(2));
    t.check("preadv2 read the last two bytes", &p == b"ij");
    t.eq("preadv2 at -1 moved the position", lseek(fd, 0, 1), Ok(10));
    // SAFETY: as above; an unknown RWF_ flag.
    let n = unsafe {
        raw(
            PREADV2,
            [fd as usize, riov.as_ptr() as usize, 2, 0, 0, 1 << 28],
        )
    };
    t.eq("preadv2 with an unknown flag: EOPNOTSUPP", n, e(95));
    // SAFETY: two iovecs over live byte strings.
    let n = unsafe { raw(PWRITEV2, [fd as usize, wiov.as_ptr() as usize, 2, 0, 0, 0]) };
    t.eq("pwritev2 at offset 0", n, Ok(3));
    let _ = lseek(fd, 0, 0);
    // SAFETY: a live local buffer.
    let n = unsafe { raw(READ, [fd as usize, p.as_mut_ptr() as usize, 2, 0, 0, 0]) };
    t.check("pwritev2 reached the file", n == Ok(2) && &p == b"XY");
    if let Ok([r, w]) = pipe() {
        // SAFETY: as above.
        let n = unsafe { raw(PREADV, [r as usize, riov.as_ptr() as usize, 2, 0, 0, 0]) };
        t.eq("preadv on a pipe: ESPIPE", n, e(errno::ESPIPE));
        let _ = write(w, b"0123456");
        // SAFETY: two iovecs over live local buffers.
        let n = unsafe { raw(READV, [r as usize, riov.as_ptr() as usize, 2, 0, 0, 0]) };
        t.check_why(
            "readv of a pipe spreads one read over the iovecs",
            n == Ok(7) && &p == b"01" && &q == b"23456",
            format_args!("{n:?}"),
        );
        let _ = (close(r), close(w));
    }

    // A buffer whose second page is unmapped.
    let buf = map_fd(8192, 3, 0x22, -1, 0).unwrap_or(0);
    let _ = munmap(buf + 4096, 4096);
    for i in 0..4096 {
        poke(buf + i, b'q');
    }
    // SAFETY: the first page of `buf` is mapped, the second is not: the kernel copies to the
    // fault and stops.
    let n = unsafe { raw(PWRITE64, [fd as usize, buf, 8192, 100, 0, 0]) };
    t.eq(
        "pwrite of a half-unmapped buffer: the first page (short count)",
        n,
        Ok(4096),
    );
    t.eq(
        "the file grew by what was written",
        size_of(fd).map(|s| s.0),
        Ok(4196),
    );
    // SAFETY: as above.
    let n = unsafe {
        raw(
            PREADV,
            [fd as usize, [[buf, 8192]].as_ptr() as usize, 1, 0, 0, 0],
        )
    };
    t.eq(
        "preadv into a half-unmapped buffer: the first page",
        n,
        Ok(4096),
    );
    t.check(
        "preadv put the file's start there",
        peek(buf) == b'X' && peek(buf + 99) == 0,
    );
    // SAFETY: as above, with a buffer that starts unmapped.
    let n = unsafe { raw(PWRITE64, [fd as usize, buf + 4096, 100, 0, 0, 0]) };
    t.eq("pwrite with nothing readable: EFAULT", n, e(errno::EFAULT));
    let wv = [[b"ok".as_ptr() as usize, 2], [buf + 4096, 10]];
    // SAFETY: the second iovec is unmapped: the first is written, then the copy faults.
    let n = unsafe { raw(WRITEV, [fd as usize, wv.as_ptr() as usize, 2, 0, 0, 0]) };
    t.eq(
        "writev stops at the unmapped iovec with a short count",
        n,
        Ok(2),
    );
    let _ = munmap(buf, 4096);

    // Linux AIO on a memfd (a synchronous file: completed inside io_submit). A length past
    // MAX_RW_COUNT is cut to it before the buffer is checked (Linux `import_ubuf`).
    let _ = ftruncate(fd, 100);
    let low = core::ptr::addr_of_mut!(LOW) as usize;
    let ctx = io_setup(4).unwrap_or(0);
    let mut cb = iocb(fd, IOCB_CMD_PREAD, &[], 0, 7);
    cb.buf = low as u64;
    cb.nbytes = 1 << 62;
    // SAFETY: the file holds 100 bytes, fewer than LOW: only those are written.
    t.eq(
        "AIO pread of a memfd with a huge length: submitted",
        unsafe { io_submit(ctx, &[&cb]) },
        Ok(1),
    );
    let mut ev = [IoEvent::default(); 1];
    let got = io_getevents(ctx, 1, &mut ev, None);
    t.check_why(
        "its event: the 100 bytes the file holds",
        got == Ok(1) && ev[0].data == 7 && ev[0].res == 100,
        format_args!("{got:?} {:?}", ev[0]),
    );
    let _ = io_destroy(ctx);
    let _ = munmap(buf, 4096);
    let _ = close(fd);
}
