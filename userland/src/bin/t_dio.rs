//! O_DIRECT DMA on `/dev/vda` against fork: Linux AIO, the seed-003 races (Andrea Arcangeli,
//! "get_user_pages question", 2009), pins vs. munmap and exit, and a seeded stress test.
//!
//! The races are scripted with cowlab's `/dev/vda` ioctls (docs/dma.md): `HOLD` keeps requests
//! submitted after it away from the device (their pages are already pinned), `RELEASE` hands
//! them over. So "pin, then fork and writes, then DMA" happens in exactly that order.
//!
//! - bug 1: a page whose second half is the target of a held O_DIRECT read, its first half
//!   written by the parent; fork; (variant b: the parent writes the first half again); release.
//!   The parent must see the disk data in the second half and its own writes in the first; the
//!   child must not see data that arrived after fork.
//!   Also as in the original report, with a second thread doing the O_DIRECT read
//!   synchronously (`pthread_create` flags: `clone(CLONE_VM|CLONE_THREAD|...)`).
//! - bug 2: after fork the parent starts a held O_DIRECT write from the first half, writes the
//!   second half, the child writes the first half; release. The disk must hold what the parent
//!   had when it issued the write.
//!
//! - io_uring registered buffers on O_DIRECT `/dev/vda`: READ_FIXED/WRITE_FIXED DMA through the
//!   registered frames without re-pinning; fork with a registered buffer, then a DMA into it:
//!   the parent sees the data, the child never.
//!
//! With an argument `era=YYYY` (the kernel booted with the same `era=` token) the checks expect
//! the behaviour of that rule set instead: before 2023 O_DIRECT takes plain references
//! (`FOLL_GET`), invisible to fork, so bug 1 reappears; before 2020 COW reuse by mapcount
//! lets the child write into the page under DMA, so bug 2 reappears too, and fork shares the
//! registered buffer (its long-term "pin" is a plain reference), so the child receives the
//! DMA into it. QEMU only.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use cowlab_userland::aio::{
    self, io_destroy, io_getevents, io_setup, iocb, IoEvent, Iocb, IOCB_CMD_PREAD, IOCB_CMD_PWRITE,
    IO_CANCEL, IO_GETEVENTS, IO_SETUP, IO_SUBMIT,
};
use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, on_cowlab, Tester};
use cowlab_userland::uring::Ring;
use cowlab_userland::vda::{control, is_stamped, stamp_byte, HOLD, INFLIGHT, RELEASE, SECTOR};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const SIGKILL: i32 = 9;

fn sys(n: usize, args: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: every caller passes pointers to live values of the sizes the call uses, or bad
    // pointers on purpose (the kernel must refuse them).
    unsafe { raw(n, args) }
}

/// [`aio::io_submit`] for the checks: every iocb they submit names a live buffer that stays
/// mapped until its event is collected, or a bad address on purpose (the kernel must refuse it).
fn io_submit(ctx: u64, iocbs: &[&Iocb]) -> Result<usize, Errno> {
    // SAFETY: the checks' iocbs name buffers kept mapped until their events are collected (or
    // the process exits, which waits for them), or bad addresses the kernel must refuse.
    unsafe { aio::io_submit(ctx, iocbs) }
}

fn anon(pages: usize) -> &'static mut [u8] {
    let addr = mmap(
        0,
        pages * PAGE,
        PROT_READ | PROT_WRITE,
        MAP_PRIVATE | MAP_ANONYMOUS,
    )
    .expect("mmap for an I/O buffer");
    // SAFETY: a fresh private mapping, used only through this slice.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, pages * PAGE) }
}

fn unmap(buf: &mut [u8]) {
    let _ = munmap(buf.as_mut_ptr() as usize, buf.len());
}

/// A value from /proc/meminfo (kB) or /proc/cowlab/mmstat, by its `key:` prefix.
fn stat_value(path: &core::ffi::CStr, key: &[u8]) -> Option<u64> {
    let mut text = [0u8; 4096];
    let n = read_file(path, &mut text)?;
    let text = &text[..n];
    let at = text.windows(key.len()).position(|w| w == key)?;
    let rest = &text[at + key.len()..];
    let digits = rest.iter().skip_while(|b| !b.is_ascii_digit());
    Some(
        digits
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |v, b| v * 10 + u64::from(b - b'0')),
    )
}

fn mem_free() -> Option<u64> {
    // MemAvailable: MemFree plus the clean file-cache pages closed files keep.
    stat_value(c"/proc/meminfo", b"MemAvailable:")
}

/// Pins held now, when the kernel has `/proc/cowlab/mmstat`.
fn pins_held() -> Option<u64> {
    stat_value(c"/proc/cowlab/mmstat", b"gup_pins_held")
}

/// Waits until the driver has finished every request (after a RELEASE).
fn drain(fd: i32) -> bool {
    for _ in 0..500 {
        if control(fd, INFLIGHT) == Ok(0) {
            return true;
        }
        let _ = sleep_ms(2);
    }
    false
}

/// What the era under test shows (module comment).
#[derive(Clone, Copy)]
struct Expect {
    era: u32,
    bug1: bool,
    bug2: bool,
}

fn expectations() -> Expect {
    let era = cowlab_userland::args()
        .skip(1)
        .find_map(|a| {
            let a = a.to_bytes();
            let y = a.strip_prefix(b"era=")?;
            core::str::from_utf8(y).ok()?.parse::<u32>().ok()
        })
        .unwrap_or(2023);
    Expect {
        era,
        bug1: era < 2023,
        bug2: era < 2020,
    }
}

fn aio_basics(t: &mut Tester, fd: i32, bfd: i32) {
    let mut ctx = 5u64;
    t.eq(
        "io_setup with *ctxp != 0: EINVAL",
        sys(IO_SETUP, [4, &mut ctx as *mut u64 as usize, 0, 0, 0, 0]),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_setup(0): EINVAL",
        io_setup(0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_setup to a bad pointer: EFAULT",
        sys(IO_SETUP, [4, 8, 0, 0, 0, 0]),
        Err(Errno(errno::EFAULT)),
    );
    let Ok(ctx) = io_setup(16) else {
        t.check("io_setup(16)", false);
        return;
    };
    t.check("io_setup(16)", ctx != 0);

    // Four reads in flight at once: held, counted, released together.
    let bufs = anon(4);
    let _ = control(fd, HOLD);
    let iocbs: Vec<Iocb> = (0..4)
        .map(|i| {
            iocb(
                fd,
                IOCB_CMD_PREAD,
                &bufs[i * PAGE..(i + 1) * PAGE],
                (300 + 7 * i as u64) * 4096,
                100 + i as u64,
            )
        })
        .collect();
    let refs: Vec<&Iocb> = iocbs.iter().collect();
    t.eq(
        "io_submit of 4 held O_DIRECT reads",
        io_submit(ctx, &refs),
        Ok(4),
    );
    t.eq("4 requests in flight", control(fd, INFLIGHT), Ok(4));
    let mut events = [IoEvent::default(); 8];
    t.eq(
        "nothing completes while held (zero timeout)",
        io_getevents(ctx, 1, &mut events, Some(0)),
        Ok(0),
    );
    t.eq("RELEASE hands over the 4", control(fd, RELEASE), Ok(4));
    let n = io_getevents(ctx, 4, &mut events, None);
    t.eq("io_getevents(min 4) returns 4", n, Ok(4));
    let mut ok = true;
    for e in &events[..4] {
        let i = (e.data - 100) as usize;
        ok &= i < 4
            && e.res == PAGE as i64
            && e.res2 == 0
            && e.obj == &iocbs[i] as *const Iocb as u64;
        ok &= i < 4 && is_stamped(&bufs[i * PAGE..(i + 1) * PAGE], (300 + 7 * i as u64) * 4096);
    }
    t.check(
        "events carry data, obj, res; buffers hold the disk data",
        ok,
    );

    // Errors in the iocb fail io_submit; errors of the transfer arrive as res.
    let good = iocb(fd, IOCB_CMD_PREAD, &bufs[..PAGE], 0, 1);
    t.eq(
        "io_submit to a bad context: EINVAL",
        io_submit(ctx + 1000, &[&good]),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_submit nr < 0: EINVAL",
        sys(IO_SUBMIT, [ctx as usize, usize::MAX, 0, 0, 0, 0]),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_submit bad iocb array: EFAULT",
        sys(IO_SUBMIT, [ctx as usize, 1, 8, 0, 0, 0]),
        Err(Errno(errno::EFAULT)),
    );
    let badfd = Iocb {
        fildes: 999,
        ..good
    };
    t.eq(
        "io_submit bad fd: EBADF",
        io_submit(ctx, &[&badfd]),
        Err(Errno(errno::EBADF)),
    );
    let badop = Iocb { opcode: 77, ..good };
    t.eq(
        "io_submit bad opcode: EINVAL",
        io_submit(ctx, &[&badop]),
        Err(Errno(errno::EINVAL)),
    );
    let reserved = Iocb {
        reserved2: 1,
        ..good
    };
    t.eq(
        "io_submit reserved2 != 0: EINVAL",
        io_submit(ctx, &[&reserved]),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_submit of [good, bad fd] starts 1",
        io_submit(ctx, &[&good, &badfd]),
        Ok(1),
    );
    let misaligned = iocb(fd, IOCB_CMD_PREAD, &bufs[1..513], 0, 2);
    let fault = Iocb {
        buf: 0x1000,
        nbytes: 4096,
        data: 3,
        ..good
    };
    t.eq(
        "misaligned and unmapped O_DIRECT are submitted",
        io_submit(ctx, &[&misaligned, &fault]),
        Ok(2),
    );
    let n = io_getevents(ctx, 3, &mut events, None);
    let res = |data: u64| {
        events[..n.unwrap_or(0)]
            .iter()
            .find(|e| e.data == data)
            .map(|e| e.res)
    };
    t.eq(
        "results: good 4096, misaligned -EINVAL, unmapped -EFAULT",
        (n, res(1), res(2), res(3)),
        (Ok(3), Some(4096), Some(-22), Some(-14)),
    );
    let buffered = iocb(bfd, IOCB_CMD_PREAD, &bufs[5..105], 512 * 9 + 5, 4);
    t.eq(
        "buffered /dev/vda through AIO",
        io_submit(ctx, &[&buffered]),
        Ok(1),
    );
    let n = io_getevents(ctx, 1, &mut events, None);
    t.check(
        "buffered AIO read result",
        n == Ok(1) && events[0].res == 100 && is_stamped(&bufs[5..105], 512 * 9 + 5),
    );
    t.eq(
        "io_getevents with nr = LONG_MAX and nothing ready: 0",
        sys(
            IO_GETEVENTS,
            [
                ctx as usize,
                0,
                i64::MAX as usize,
                events.as_mut_ptr() as usize,
                0,
                0,
            ],
        ),
        Ok(0),
    );
    t.eq(
        "io_getevents min > nr: EINVAL",
        io_getevents(ctx, 9, &mut events[..2], None),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "io_cancel: EINVAL (not cancellable)",
        sys(
            IO_CANCEL,
            [
                ctx as usize,
                &good as *const Iocb as usize,
                events.as_mut_ptr() as usize,
                0,
                0,
                0,
            ],
        ),
        Err(Errno(errno::EINVAL)),
    );
    // A child has its own mm: the parent's context is not its.
    let status = in_child(|| i32::from(io_submit(ctx, &[&good]) != Err(Errno(errno::EINVAL))));
    t.eq("the child cannot use the parent's context", status, 0);

    // Pins are released at completion, not at io_getevents: a held read into a page that is
    // then unmapped keeps the frame; after RELEASE (and no io_getevents) the frame is free.
    let page = anon(1);
    page[0] = 1;
    let before_unmap = mem_free();
    let _ = control(fd, HOLD);
    let held = iocb(fd, IOCB_CMD_PREAD, page, 0, 9);
    t.eq("held read into a page", io_submit(ctx, &[&held]), Ok(1));
    let pins = pins_held();
    unmap(page);
    t.eq_some(
        "unmapped under a pin: the frame stays",
        mem_free(),
        before_unmap,
    );
    let _ = control(fd, RELEASE);
    t.check("the request completes", drain(fd));
    t.eq_some(
        "completed, not yet collected: the frame is free",
        mem_free(),
        before_unmap.map(|b| b + 4),
    );
    t.eq_some(
        "gup_pins_held back down after completion",
        pins_held(),
        pins.map(|p| p - 1),
    );
    t.eq(
        "the event is still there",
        io_getevents(ctx, 1, &mut events, None).map(|_| events[0].data),
        Ok(9),
    );
    t.eq("io_destroy", io_destroy(ctx), Ok(0));
    t.eq(
        "io_getevents after io_destroy: EINVAL",
        io_getevents(ctx, 0, &mut events, Some(0)),
        Err(Errno(errno::EINVAL)),
    );
    unmap(bufs);
}

/// Seed 003 bug 1 with AIO; `again` = the parent writes the first half again after fork.
fn bug1(t: &mut Tester, fd: i32, expect: Expect, again: bool) {
    let name = if again {
        "bug 1b (write after fork)"
    } else {
        "bug 1a"
    };
    let Ok(ctx) = io_setup(4) else {
        t.check("io_setup", false);
        return;
    };
    let page = anon(1);
    page.fill(b'A');
    let disk = 4096 * 2000 + 2048 * again as u64;
    let _ = control(fd, HOLD);
    let req = iocb(fd, IOCB_CMD_PREAD, &page[2048..], disk, 1);
    t.eq(
        &alloc::format!("{name}: held O_DIRECT read into the second half"),
        io_submit(ctx, &[&req]),
        Ok(1),
    );
    page[..2048].fill(b'B');
    let Some((pid, to_child)) = fork_bug1_child(page, disk) else {
        return;
    };
    if again {
        page[..2048].fill(b'C');
    }
    let _ = control(fd, RELEASE);
    let mut events = [IoEvent::default(); 1];
    let n = io_getevents(ctx, 1, &mut events, None);
    t.check(
        &alloc::format!("{name}: the read completed"),
        n == Ok(1) && events[0].res == 2048,
    );
    let status = bug1_child_status(pid, to_child);
    let mine = if again { b'C' } else { b'B' };
    let parent_first = page[..2048].iter().all(|&c| c == mine);
    let parent_dma = is_stamped(&page[2048..], disk);
    let child_first = status & 1 != 0;
    let child_old = status & 2 != 0;
    let child_dma = status & 4 != 0;
    let era = expect.era;
    if !expect.bug1 {
        t.check(
            &alloc::format!("{name}: the parent keeps its write in the first half"),
            parent_first,
        );
        t.check(
            &alloc::format!("{name}: the parent sees the disk data in the second half"),
            parent_dma,
        );
        t.check(
            &alloc::format!("{name}: the child has the pre-fork first half"),
            child_first,
        );
        t.check(
            &alloc::format!("{name}: the child does not see data that arrived after fork"),
            child_old && !child_dma,
        );
    } else if again {
        // The parent's write after fork copied the page away from the reference: the DMA
        // landed in the page the child kept.
        t.check(
            &alloc::format!("{name} (era {era}): the parent keeps its write"),
            parent_first,
        );
        t.check(
            &alloc::format!("{name} (era {era}): reproduced: the parent lost the DMA data"),
            !parent_dma,
        );
        t.check(
            &alloc::format!("{name} (era {era}): reproduced: the child received it"),
            child_dma,
        );
    } else {
        t.check(
            &alloc::format!("{name} (era {era}): the parent sees the disk data"),
            parent_dma && parent_first,
        );
        t.check(
            &alloc::format!(
                "{name} (era {era}): reproduced: the child sees data that arrived after fork"
            ),
            child_dma,
        );
    }
    let _ = io_destroy(ctx);
    unmap(page);
}

/// Seed 003 bug 2 with AIO.
fn bug2(t: &mut Tester, fd: i32, bfd: i32, expect: Expect) {
    let Ok(ctx) = io_setup(4) else {
        t.check("io_setup", false);
        return;
    };
    let page = anon(1);
    page[..2048].fill(b'P');
    page[2048..].fill(b'Q');
    let disk = 4096 * 2100;
    let (Ok([c_read, p_write]), Ok([p_read, c_write])) = (pipe(), pipe()) else {
        return;
    };
    let pid = fork().expect("fork");
    if pid == 0 {
        let mut b = [0u8; 1];
        let _ = read(c_read, &mut b);
        page[..2048].fill(b'X');
        let _ = write(c_write, b"y");
        exit_now(0);
    }
    let _ = control(fd, HOLD);
    let req = iocb(fd, IOCB_CMD_PWRITE, &page[..2048], disk, 2);
    t.eq(
        "bug 2: held O_DIRECT write from the first half",
        io_submit(ctx, &[&req]),
        Ok(1),
    );
    page[2048..].fill(b'R');
    let _ = write(p_write, b"x");
    let mut b = [0u8; 1];
    let _ = read(p_read, &mut b);
    let _ = waitpid(pid, 0);
    let _ = control(fd, RELEASE);
    let mut events = [IoEvent::default(); 1];
    let n = io_getevents(ctx, 1, &mut events, None);
    t.check(
        "bug 2: the write completed",
        n == Ok(1) && events[0].res == 2048,
    );
    let mut back = [0u8; 2048];
    let r = pread(bfd, &mut back, disk);
    let parents = back.iter().all(|&c| c == b'P');
    let childs = back.iter().all(|&c| c == b'X');
    let seen = (r, back[0], back[2047]);
    if expect.bug2 {
        t.check_why(
            &alloc::format!(
                "bug 2 (era {}): reproduced: the disk holds the child's write",
                expect.era
            ),
            childs,
            format_args!("{seen:?}"),
        );
    } else {
        t.check_why(
            "bug 2: the disk holds the parent's data as issued",
            parents,
            format_args!("{seen:?}"),
        );
    }
    t.check(
        "bug 2: the parent's page is intact",
        page[..2048].iter().all(|&c| c == b'P') && page[2048..].iter().all(|&c| c == b'R'),
    );
    for f in [c_read, p_write, p_read, c_write] {
        let _ = close(f);
    }
    let _ = io_destroy(ctx);
    unmap(page);
}

/// Linux `hugetlb_dio`-style: O_DIRECT with aligned and unaligned (512-multiple) start and end
/// offsets in a buffer, then munmap: free memory and pins back to the baseline.
fn dio_offsets(t: &mut Tester, fd: i32) {
    let base_free = mem_free();
    let base_pins = pins_held();
    for (start, end) in [
        (0, 4 * PAGE),
        (512, 4 * PAGE),
        (0, 4 * PAGE - 512),
        (1536, 3 * PAGE + 2560),
    ] {
        let buf = anon(4);
        let len = end - start;
        let r = pread(fd, &mut buf[start..end], 4096 * 50);
        t.check(
            &alloc::format!("dio [{start}, {end}): read {len} bytes of disk data"),
            r == Ok(len) && is_stamped(&buf[start..end], 4096 * 50),
        );
        let w = pwrite(fd, &buf[start..end], 4096 * 60);
        t.eq(&alloc::format!("dio [{start}, {end}): write"), w, Ok(len));
        unmap(buf);
        t.eq_some(
            &alloc::format!("dio [{start}, {end}): after munmap, free memory at baseline"),
            mem_free(),
            base_free,
        );
        t.eq_some(
            &alloc::format!("dio [{start}, {end}): pins at baseline"),
            pins_held(),
            base_pins,
        );
    }
}

/// A process that exits (AIO) or is killed (synchronous read) with a held request: the
/// request completes after RELEASE from this process, and every frame comes back.
fn exit_in_flight(t: &mut Tester, fd: i32) {
    let base = mem_free();
    let base_pins = pins_held();
    let status = in_child(|| {
        let Ok(ctx) = io_setup(2) else { return 1 };
        let page = anon(4);
        page.fill(7);
        let _ = control(fd, HOLD);
        let req = iocb(fd, IOCB_CMD_PREAD, page, 4096 * 3000, 1);
        if io_submit(ctx, &[&req]) != Ok(1) {
            return 2;
        }
        0 // exits without io_destroy or io_getevents
    });
    t.eq("AIO child exits with its read held", status, 0);
    t.eq(
        "its request is still in flight",
        control(fd, INFLIGHT),
        Ok(1),
    );
    t.eq("released from another process", control(fd, RELEASE), Ok(1));
    t.check("it completes", drain(fd));
    t.eq_some("every frame of the exited child is back", mem_free(), base);

    let pid = fork().expect("fork");
    if pid == 0 {
        let page = anon(2);
        let _ = control(fd, HOLD);
        let _ = pread(fd, page, 4096 * 3100);
        exit_now(3);
    }
    let mut waited = 0;
    while control(fd, INFLIGHT) != Ok(1) && waited < 1000 {
        let _ = sleep_ms(2);
        waited += 1;
    }
    t.eq(
        "a child sleeps in a held synchronous read",
        control(fd, INFLIGHT),
        Ok(1),
    );
    let _ = kill(pid, SIGKILL);
    let status = waitpid(pid, 0).map(|(_, s)| s);
    t.check(
        "killed while the read is held",
        status.is_ok_and(|s| wifsignaled(s) && wtermsig(s) == SIGKILL),
    );
    t.eq("release", control(fd, RELEASE), Ok(1));
    t.check("it completes", drain(fd));
    t.eq_some("every frame of the killed child is back", mem_free(), base);
    t.eq_some("no pin left behind by either child", pins_held(), base_pins);
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One stress worker: random O_DIRECT reads and writes (sync and AIO) on its own 256 KiB of the
/// disk, forks whose children scribble on the buffer, writes to the buffer between requests,
/// every byte read checked against a model of the region. Returns the number of mismatches.
fn stress_worker(fd: i32, index: u64) -> i32 {
    const REGION: usize = 256 * 1024;
    let disk = (16 << 20) + index * REGION as u64;
    let mut model: Vec<u8> = (0..REGION as u64).map(|i| stamp_byte(disk + i)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((index + 1) * 0x1234_5678));
    let buf = anon(8);
    let Ok(ctx) = io_setup(8) else { return 100 };
    let mut bad = 0;
    for step in 0..60 {
        let sectors = 1 + rng.below(12) as usize;
        let len = sectors * SECTOR;
        let at = rng.below(((REGION - len) / SECTOR) as u64 + 1) as usize * SECTOR;
        let off = rng.below(((8 * PAGE - len) / SECTOR) as u64 + 1) as usize * SECTOR;
        match rng.below(5) {
            0 | 1 => {
                buf[off..off + len].fill(0xee);
                if pread(fd, &mut buf[off..off + len], disk + at as u64) != Ok(len)
                    || buf[off..off + len] != model[at..at + len]
                {
                    bad += 1;
                }
            }
            2 => {
                for (i, b) in buf[off..off + len].iter_mut().enumerate() {
                    *b = (rng.next() as u8) ^ (i as u8);
                }
                if pwrite(fd, &buf[off..off + len], disk + at as u64) != Ok(len) {
                    bad += 1;
                }
                model[at..at + len].copy_from_slice(&buf[off..off + len]);
            }
            3 => {
                // AIO write then read back, both in flight together is not ordered: one by one.
                let pattern = rng.next() as u8;
                buf[off..off + len].fill(pattern);
                let w = iocb(
                    fd,
                    IOCB_CMD_PWRITE,
                    &buf[off..off + len],
                    disk + at as u64,
                    step,
                );
                let mut ev = [IoEvent::default(); 1];
                if io_submit(ctx, &[&w]) != Ok(1)
                    || io_getevents(ctx, 1, &mut ev, None) != Ok(1)
                    || ev[0].res != len as i64
                {
                    bad += 1;
                }
                model[at..at + len].fill(pattern);
            }
            _ => {
                // A child writes all over the buffer (its COW copy) while the parent reads
                // into it; the parent's data must be the disk's.
                let pid = fork().expect("fork");
                if pid == 0 {
                    buf.fill(0x11);
                    exit_now(0);
                }
                if pread(fd, &mut buf[off..off + len], disk + at as u64) != Ok(len)
                    || buf[off..off + len] != model[at..at + len]
                {
                    bad += 1;
                }
                let _ = waitpid(pid, 0);
                if buf[off..off + len] != model[at..at + len] {
                    bad += 1;
                }
            }
        }
        // The process writes its buffer between requests.
        let poke = rng.below(8 * PAGE as u64) as usize;
        buf[poke] = buf[poke].wrapping_add(1);
    }
    // The whole region, read back buffered.
    let mut whole = alloc::vec![0u8; REGION];
    let bfd = open(c"/dev/vda", O_RDWR).unwrap_or(-1);
    if pread(bfd, &mut whole, disk) != Ok(REGION) || whole != model {
        bad += 1;
    }
    let _ = close(bfd);
    let _ = io_destroy(ctx);
    unmap(buf);
    bad
}

fn stress(t: &mut Tester, fd: i32) {
    let base = mem_free();
    let mut pids = Vec::new();
    for i in 0..3 {
        let pid = fork().expect("fork");
        if pid == 0 {
            exit_now(stress_worker(fd, i).min(100));
        }
        pids.push(pid);
    }
    for (i, pid) in pids.into_iter().enumerate() {
        let status = waitpid(pid, 0).map(|(_, s)| wexitstatus(s));
        t.eq(
            &alloc::format!("stress worker {i}: every byte matched the model"),
            status,
            Ok(0),
        );
    }
    t.eq_some("stress: free memory back to baseline", mem_free(), base);
}

fn main() -> i32 {
    let mut t = Tester::new("t_dio");
    if !on_cowlab() {
        cowlab_userland::println!(
            "t_dio: not on cowlab: /dev/vda may be a real disk here; skipped"
        );
        return t.finish();
    }
    let expect = expectations();
    let (Ok(fd), Ok(bfd)) = (
        open(c"/dev/vda", O_RDWR | O_DIRECT),
        open(c"/dev/vda", O_RDWR),
    ) else {
        t.check("open /dev/vda", false);
        return t.finish();
    };
    if expect.era == 2023 {
        aio_basics(&mut t, fd, bfd);
    }
    bug1(&mut t, fd, expect, false);
    bug1(&mut t, fd, expect, true);
    bug1_thread(&mut t, fd, expect, false);
    bug1_thread(&mut t, fd, expect, true);
    bug2(&mut t, fd, bfd, expect);
    uring_registered(&mut t, fd, bfd, expect);
    if expect.era == 2023 {
        dio_offsets(&mut t, fd);
        exit_in_flight(&mut t, fd);
        stress(&mut t, fd);
        queue_full(&mut t, fd);
        // Last: it writes random sectors.
        aio_fuzz(&mut t, fd, bfd);
    }
    let _ = close(fd);
    let _ = close(bfd);
    t.finish()
}

/// io_uring registered buffers as DMA targets: READ_FIXED/WRITE_FIXED on O_DIRECT `/dev/vda`
/// move data through the registered (long-term pinned) frames without pinning again; after
/// fork, a DMA into the registered buffer reaches the parent's memory and never the child's
/// (fork copied the pinned pages for the child). Before 2020 the registration is a plain
/// reference fork cannot see, and the child receives the DMA too.
fn uring_registered(t: &mut Tester, fd: i32, bfd: i32, expect: Expect) {
    let ring = match Ring::new(4) {
        Ok(r) => r,
        Err(e) => {
            t.check_why("io_uring_setup", false, format_args!("{e:?}"));
            return;
        }
    };
    let buf = anon(2);
    buf.fill(b'A');
    let base = mem_free();
    let iov = [[buf.as_ptr() as usize, buf.len()]];
    t.eq(
        "register a 2-page buffer",
        io_uring_register_buffers(ring.fd, &iov),
        Ok(0),
    );
    let sqe = |op: u8, addr: usize, len: usize, off: u64| IoUringSqe {
        opcode: op,
        fd,
        addr: addr as u64,
        len: len as u32,
        off,
        buf_index: 0,
        ..IoUringSqe::default()
    };
    // The completion's result, as the checks below compare it.
    let run = |sqe| ring.run(sqe).map(|c| c.res);
    let addr = buf.as_ptr() as usize;
    if expect.era == 2023 {
        let r = run(sqe(IORING_OP_READ_FIXED, addr + 512, 6144, 4096 * 2200));
        t.check_why(
            "READ_FIXED O_DIRECT into the registered frames",
            r == Ok(6144)
                && is_stamped(&buf[512..6656], 4096 * 2200)
                && buf[..512].iter().all(|&c| c == b'A'),
            format_args!("{r:?}"),
        );
        buf[..4096].fill(b'W');
        let r = run(sqe(IORING_OP_WRITE_FIXED, addr, 4096, 4096 * 2300));
        let mut back = [0u8; 4096];
        let _ = pread(bfd, &mut back, 4096 * 2300);
        t.check_why(
            "WRITE_FIXED O_DIRECT from the registered frames",
            r == Ok(4096) && back == [b'W'; 4096],
            format_args!("{r:?}"),
        );
        t.eq(
            "READ_FIXED misaligned: -EINVAL",
            run(sqe(IORING_OP_READ_FIXED, addr + 1, 512, 0)),
            Ok(-22),
        );
        t.eq(
            "READ_FIXED at the end: 0",
            run(sqe(IORING_OP_READ_FIXED, addr, 512, 64 << 20)),
            Ok(0),
        );
        t.eq_some("registering pinned, nothing else taken", mem_free(), base);
        buf.fill(b'A');
    }
    let (Ok([c_read, p_write]), Ok([p_read, c_write])) = (pipe(), pipe()) else {
        return;
    };
    let pid = fork().expect("fork");
    if pid == 0 {
        let mut b = [0u8; 1];
        let _ = read(c_read, &mut b);
        let untouched = buf.iter().all(|&c| c == b'A');
        let got_dma = is_stamped(&buf[..4096], 4096 * 2400);
        let _ = write(c_write, b"y");
        exit_now(i32::from(untouched) | i32::from(got_dma) << 1);
    }
    let r = run(sqe(IORING_OP_READ_FIXED, addr, 4096, 4096 * 2400));
    t.eq(
        "after fork: READ_FIXED into the registered buffer",
        r,
        Ok(4096),
    );
    let _ = write(p_write, b"x");
    let mut b = [0u8; 1];
    let _ = read(p_read, &mut b);
    let status = waitpid(pid, 0).map(|(_, s)| wexitstatus(s)).unwrap_or(-1);
    let parent_sees = is_stamped(&buf[..4096], 4096 * 2400);
    if expect.era < 2020 {
        t.check(
            &alloc::format!(
                "registered DMA after fork (era {}): reproduced: the child receives it",
                expect.era
            ),
            status & 2 != 0,
        );
    } else {
        t.check(
            "registered DMA after fork: the parent sees the data",
            parent_sees,
        );
        t.eq("registered DMA after fork: the child never does", status, 1);
    }
    let _ = io_uring_unregister_buffers(ring.fd);
    ring.close();
    for f in [c_read, p_write, p_read, c_write] {
        let _ = close(f);
    }
    unmap(buf);
}

/// Random iocbs (opcodes, descriptors, buffers — unaligned, unmapped, kernel, huge —, lengths,
/// offsets, reserved fields): the kernel answers each with an errno or an event, never crashes,
/// and once every request is collected the pins and the free memory are back at baseline.
fn aio_fuzz(t: &mut Tester, fd: i32, bfd: i32) {
    let Ok(ctx) = io_setup(64) else {
        t.check("io_setup for the fuzz", false);
        return;
    };
    let buf = anon(4);
    buf.fill(0x5a);
    grow_stack();
    let probe = || {
        (
            stat_value(c"/proc/cowlab/mmstat", b"anon_pages"),
            stat_value(c"/proc/cowlab/mmstat", b"pagetable_pages"),
            stat_value(c"/proc/cowlab/mmstat", b"shmem_pages"),
            stat_value(c"/proc/cowlab/mmstat", b"gup_refs_held"),
        )
    };
    let before = probe();
    let base = mem_free();
    let base_pins = pins_held();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut submitted = 0usize;
    let mut collected = 0usize;
    let mut events = [IoEvent::default(); 64];
    let mut bad_res = 0;
    for _ in 0..300 {
        let b = buf.as_ptr() as u64;
        let addr = match rng.below(6) {
            0 => b,
            1 => b + 512 * rng.below(8),
            2 => b + rng.below(4096),
            3 => 0,
            4 => 0xffff_8000_0000_0000,
            _ => b + 3 * 4096,
        };
        let nbytes = match rng.below(4) {
            0 => 512 * rng.below(9),
            1 => rng.below(5000),
            2 => u64::MAX - rng.below(3),
            _ => 4096,
        };
        let offset = match rng.below(4) {
            0 => (512 * rng.below(1 << 14)) as i64,
            1 => rng.below(1 << 26) as i64,
            2 => -(rng.below(10) as i64) - 1,
            _ => (64 << 20) - 512 * rng.below(3) as i64,
        };
        let iocb = Iocb {
            data: rng.next(),
            opcode: rng.below(9) as u16,
            fildes: [fd, bfd, 0, 999][rng.below(4) as usize] as u32,
            buf: addr,
            nbytes,
            offset,
            reserved2: u64::from(rng.below(10) == 0),
            flags: u32::from(rng.below(10) == 0),
            ..Iocb::default()
        };
        if io_submit(ctx, &[&iocb]) == Ok(1) {
            submitted += 1;
        }
        if let Ok(n) = io_getevents(ctx, 0, &mut events, Some(0)) {
            collected += n;
            bad_res += events[..n]
                .iter()
                .filter(|e| e.res > 0x10_0000 || e.res < -4095)
                .count();
        }
    }
    while collected < submitted {
        match io_getevents(ctx, 1, &mut events, None) {
            Ok(n) => collected += n,
            Err(_) => break,
        }
    }
    t.eq(
        "fuzz: every submitted iocb produced one event",
        collected,
        submitted,
    );
    t.eq("fuzz: every result is a byte count or -errno", bad_res, 0);
    t.eq("fuzz: nothing in flight", control(fd, INFLIGHT), Ok(0));
    t.eq_some("fuzz: pins back at baseline", pins_held(), base_pins);
    t.check_why(
        "fuzz: free memory back at baseline",
        base.is_some() && mem_free() == base,
        format_args!(
            "{:?} vs {base:?}; anon, pagetables, shmem, refs {before:?} -> {:?}",
            mem_free(),
            probe()
        ),
    );
    let _ = io_destroy(ctx);
    unmap(buf);
}

/// Touches 32 KiB of stack below the caller, so that stack growth during a measured stretch
/// does not count as memory the kernel kept.
#[inline(never)]
fn grow_stack() {
    let mut probe = [0u8; 32 * 1024];
    for i in (0..probe.len()).step_by(PAGE) {
        // SAFETY: `probe` is a live local array; volatile so the touches are not optimised out.
        unsafe { core::ptr::write_volatile(probe.as_mut_ptr().add(i), 1) };
    }
}

/// What the O_DIRECT thread of [`bug1_thread`] reads, and where it reports.
struct DioJob {
    fd: i32,
    addr: usize,
    len: usize,
    off: u64,
    result: core::sync::atomic::AtomicI64,
}

/// A thread's body: one synchronous O_DIRECT `pread64`, its result stored in the job. No
/// allocation (the runtime's allocator is single-threaded).
fn dio_thread(arg: usize) -> i32 {
    // SAFETY: `arg` points at a DioJob the spawning thread keeps alive until it has joined us.
    let job = unsafe { &*(arg as *const DioJob) };
    // SAFETY: `addr..addr + len` is part of a live anonymous mapping of this process.
    let r = unsafe {
        raw(
            17,
            [job.fd as usize, job.addr, job.len, job.off as usize, 0, 0],
        )
    };
    let v = match r {
        Ok(n) => n as i64,
        Err(e) => -i64::from(e.0),
    };
    job.result.store(v, core::sync::atomic::Ordering::SeqCst);
    0
}

/// Seed 003 bug 1 as in Andrea's report: a second thread does a synchronous O_DIRECT read into
/// the second half of the page (held), the main thread writes the first half, forks (and in
/// variant b writes again after fork), releases. Same expectations as [`bug1`].
fn bug1_thread(t: &mut Tester, fd: i32, expect: Expect, again: bool) {
    use core::sync::atomic::{AtomicI64, Ordering};
    let name = if again {
        "bug 1b, thread"
    } else {
        "bug 1a, thread"
    };
    let page = anon(1);
    page.fill(b'A');
    let disk = 4096 * 2500 + 2048 * again as u64;
    let _ = control(fd, HOLD);
    let job = DioJob {
        fd,
        addr: page.as_ptr() as usize + 2048,
        len: 2048,
        off: disk,
        result: AtomicI64::new(-1),
    };
    let thread = match cowlab_userland::thread::spawn(dio_thread, &job as *const DioJob as usize) {
        Ok(th) => th,
        Err(e) => {
            let _ = control(fd, RELEASE);
            t.check_why(
                &alloc::format!("{name}: spawn a thread"),
                false,
                format_args!("{e:?}"),
            );
            return;
        }
    };
    let mut waited = 0;
    while control(fd, INFLIGHT) != Ok(1) && waited < 1000 {
        let _ = sleep_ms(2);
        waited += 1;
    }
    t.eq(
        &alloc::format!("{name}: the thread's read is held"),
        control(fd, INFLIGHT),
        Ok(1),
    );
    page[..2048].fill(b'B');
    let Some((pid, to_child)) = fork_bug1_child(page, disk) else {
        return;
    };
    if again {
        page[..2048].fill(b'C');
    }
    let _ = control(fd, RELEASE);
    thread.join();
    t.eq(
        &alloc::format!("{name}: the thread's read returned 2048"),
        job.result.load(Ordering::SeqCst),
        2048,
    );
    let status = bug1_child_status(pid, to_child);
    let mine = if again { b'C' } else { b'B' };
    let parent_first = page[..2048].iter().all(|&c| c == mine);
    let parent_dma = is_stamped(&page[2048..], disk);
    let era = expect.era;
    if !expect.bug1 {
        t.check(
            &alloc::format!("{name}: the parent keeps its write"),
            parent_first,
        );
        t.check(
            &alloc::format!("{name}: the parent sees the disk data"),
            parent_dma,
        );
        t.eq(
            &alloc::format!("{name}: the child has the pre-fork page, no DMA data"),
            status,
            3,
        );
    } else if again {
        t.check(
            &alloc::format!("{name} (era {era}): reproduced: the parent lost the DMA data"),
            parent_first && !parent_dma,
        );
        t.check(
            &alloc::format!("{name} (era {era}): reproduced: the child received it"),
            status & 4 != 0,
        );
    } else {
        t.check(
            &alloc::format!("{name} (era {era}): the parent sees the disk data"),
            parent_first && parent_dma,
        );
        t.check(
            &alloc::format!(
                "{name} (era {era}): reproduced: the child sees data that arrived after fork"
            ),
            status & 4 != 0,
        );
    }
    unmap(page);
}

/// More held requests than the queue has descriptors: the submitter sleeps for descriptors
/// (the device cannot free any while everything is held) until another process releases; then
/// every request completes with the disk's data.
fn queue_full(t: &mut Tester, fd: i32) {
    const N: usize = 100; // 3 descriptors each: more than a 256-entry queue holds
                          // Disk pages 5000.. (20 MiB): clear of the stress test's area from 16 MiB, which it wrote.
    let base = mem_free();
    let pid = fork().expect("fork");
    if pid == 0 {
        let Ok(ctx) = io_setup(128) else { exit_now(10) };
        let buf = anon(N);
        let _ = control(fd, HOLD);
        let mut iocbs = [Iocb::default(); N];
        for (i, c) in iocbs.iter_mut().enumerate() {
            *c = iocb(
                fd,
                IOCB_CMD_PREAD,
                &buf[i * PAGE..(i + 1) * PAGE],
                (5000 + i as u64) * 4096,
                i as u64,
            );
        }
        let mut submitted = 0;
        for c in &iocbs {
            if io_submit(ctx, &[c]) == Ok(1) {
                submitted += 1;
            }
        }
        let mut events = [IoEvent::default(); 8];
        let mut got = 0;
        let mut bad = 0;
        while got < submitted {
            match io_getevents(ctx, 1, &mut events, None) {
                Ok(n) => {
                    for e in &events[..n] {
                        let i = e.data as usize;
                        if e.res != PAGE as i64
                            || !is_stamped(&buf[i * PAGE..(i + 1) * PAGE], (5000 + i as u64) * 4096)
                        {
                            bad += 1;
                        }
                    }
                    got += n;
                }
                Err(_) => break,
            }
        }
        let _ = io_destroy(ctx);
        exit_now(if submitted != N {
            100 + submitted as i32
        } else if got != N {
            2
        } else {
            i32::from(bad != 0) * 3
        });
    }
    // Wait until the child's submissions stop growing: it sleeps for descriptors.
    let mut last = 0;
    let mut stable = 0;
    for _ in 0..2000 {
        let _ = sleep_ms(2);
        let now = control(fd, INFLIGHT).unwrap_or(0);
        if now == last && now > 0 {
            stable += 1;
            if stable > 20 {
                break;
            }
        } else {
            stable = 0;
            last = now;
        }
    }
    t.check_why(
        "queue full: the submitter stopped short of all requests while held",
        last > 0 && last < N,
        format_args!("{last} in flight"),
    );
    t.eq(
        "queue full: release hands over what was queued",
        control(fd, RELEASE),
        Ok(last),
    );
    // 100 + k: only k submitted; 2: events missing; 3: wrong data.
    let status = waitpid(pid, 0).map(|(_, s)| wexitstatus(s));
    t.eq(
        "queue full: the submitter woke, all 100 completed with the disk data",
        status,
        Ok(0),
    );
    t.eq(
        "queue full: nothing in flight",
        control(fd, INFLIGHT),
        Ok(0),
    );
    t.eq_some("queue full: free memory back", mem_free(), base);
}

/// Seed 003 bug 1's child: forked with the page whose first half the parent wrote (`B`) and
/// whose second half (`A`) is the target of a held O_DIRECT read of `disk`; it waits for
/// [`bug1_child_status`] (the DMA is over by then) and reports what its copy holds, as exit
/// status bits: 1 = first half is the parent's write, 2 = second half still `A`, 4 = second
/// half has the disk data. Returns the child's pid and the pipe end that releases it.
fn fork_bug1_child(page: &[u8], disk: u64) -> Option<(i32, i32)> {
    let [from_parent, to_child] = pipe().ok()?;
    let pid = fork().expect("fork");
    if pid == 0 {
        let mut b = [0u8; 1];
        let _ = read(from_parent, &mut b);
        let first_ok = page[..2048].iter().all(|&c| c == b'B');
        let second_old = page[2048..].iter().all(|&c| c == b'A');
        let second_dma = is_stamped(&page[2048..], disk);
        exit_now(i32::from(first_ok) | i32::from(second_old) << 1 | i32::from(second_dma) << 2);
    }
    let _ = close(from_parent);
    Some((pid, to_child))
}

/// Lets the child of [`fork_bug1_child`] look at its copy; its status bits (-1 if lost).
fn bug1_child_status(pid: i32, to_child: i32) -> i32 {
    let _ = write(to_child, b"x");
    let _ = close(to_child);
    waitpid(pid, 0).map(|(_, s)| wexitstatus(s)).unwrap_or(-1)
}
