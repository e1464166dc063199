//! `/dev/vda` with Linux block-device semantics: buffered and O_DIRECT contents against the
//! disk image's LBA stamp (every 512-byte sector holds its LBA as a little-endian u64, 64
//! times), read-modify-write of partial sectors, fstat/ioctls/lseek, the O_DIRECT alignment
//! rule (EINVAL), EFAULT with no pin or frame left behind, the end of the device (short reads,
//! ENOSPC), and a transfer larger than one request. QEMU only: on a host, /dev/vda may be a
//! real disk.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{mem_free_kb, on_cowlab, Tester};
use cowlab_userland::vda::is_stamped;

cowlab_userland::entry!(main);

const IOCTL: usize = 16;
const FSTAT: usize = 5;
const PAGE: usize = 4096;
const BLKGETSIZE64: usize = 0x8008_1272;
const BLKSSZGET: usize = 0x1268;
const DISK_BYTES: u64 = 64 * 1024 * 1024;

fn ioctl(fd: i32, cmd: usize, arg: usize) -> Result<usize, Errno> {
    // SAFETY: callers pass pointers to live values of the size `cmd` writes.
    unsafe { raw(IOCTL, [fd as usize, cmd, arg, 0, 0, 0]) }
}

/// A counter of /proc/cowlab/mmstat (`name value` lines), where the kernel has it.
fn mmstat(key: &[u8]) -> Option<u64> {
    let mut text = [0u8; 4096];
    let n = read_file(c"/proc/cowlab/mmstat", &mut text)?;
    let text = &text[..n];
    let line = text
        .split(|&b| b == b'\n')
        .find(|l| l.starts_with(key) && l.get(key.len()) == Some(&b' '))?;
    Some(
        line[key.len() + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |v, b| v * 10 + u64::from(b - b'0')),
    )
}

fn anon(len: usize) -> &'static mut [u8] {
    let addr = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
        .expect("mmap for an I/O buffer");
    // SAFETY: a fresh private mapping of `len` bytes, used only through this slice.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_vda");
    if !on_cowlab() {
        cowlab_userland::println!(
            "t_vda: not on cowlab: /dev/vda may be a real disk here; skipped"
        );
        return t.finish();
    }
    let fd = match open(c"/dev/vda", O_RDWR) {
        Ok(fd) => fd,
        Err(e) => {
            t.check_why("open /dev/vda", false, format_args!("{e:?}"));
            return t.finish();
        }
    };

    // fstat: a block device 254:0; the size ioctls.
    let mut st = [0u64; 18];
    // SAFETY: struct stat is 144 bytes.
    let r = unsafe { raw(FSTAT, [fd as usize, st.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    let mode = st[3] as u32;
    t.check_why(
        "fstat: S_IFBLK, rdev 254:0",
        r.is_ok() && mode & 0o170000 == 0o060000 && st[5] == 254 << 8,
        format_args!("{r:?} mode={mode:o} rdev={:#x}", st[5]),
    );
    let mut size = 0u64;
    let r = ioctl(fd, BLKGETSIZE64, &mut size as *mut u64 as usize);
    t.eq("BLKGETSIZE64 is 64 MiB", (r, size), (Ok(0), DISK_BYTES));
    let mut ssz = 0u32;
    let r = ioctl(fd, BLKSSZGET, &mut ssz as *mut u32 as usize);
    t.eq("BLKSSZGET is 512", (r, ssz), (Ok(0), 512));
    t.eq(
        "BLKGETSIZE64 to a bad pointer: EFAULT",
        ioctl(fd, BLKGETSIZE64, 8),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "unknown ioctl: ENOTTY",
        ioctl(fd, 0x5401_00ff, 0),
        Err(Errno(errno::ENOTTY)),
    );

    // Buffered reads, aligned and not.
    let mut buf = [0u8; 3000];
    t.check(
        "buffered pread of sector 0..",
        pread(fd, &mut buf[..1024], 0) == Ok(1024) && is_stamped(&buf[..1024], 0),
    );
    let at = 12345 * 512 + 77;
    let r = pread(fd, &mut buf, at);
    t.check_why(
        "buffered pread at an odd offset matches the stamp",
        r == Ok(3000) && is_stamped(&buf, at),
        format_args!("{r:?}"),
    );
    // read/lseek move the file offset.
    t.eq("lseek SEEK_SET", lseek(fd, 4096, 0), Ok(4096));
    let r = read(fd, &mut buf[..100]);
    t.check(
        "read at the offset",
        r == Ok(100) && is_stamped(&buf[..100], 4096),
    );
    t.eq("offset advanced", lseek(fd, 0, 1), Ok(4196));
    t.eq("lseek SEEK_END", lseek(fd, 0, 2), Ok(DISK_BYTES as usize));
    t.eq(
        "lseek past the end: EINVAL",
        lseek(fd, 1, 2),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "lseek before 0: EINVAL",
        lseek(fd, -1, 0),
        Err(Errno(errno::EINVAL)),
    );

    // Buffered write of a partial sector range (read-modify-write), read back.
    let pattern: [u8; 700] = core::array::from_fn(|i| (i * 7 + 3) as u8);
    let at = 1000 * 512 + 100;
    t.eq(
        "buffered pwrite of 700 bytes mid-sector",
        pwrite(fd, &pattern, at),
        Ok(700),
    );
    let mut back = [0u8; 1536];
    let r = pread(fd, &mut back, 1000 * 512);
    t.check_why(
        "buffered write: new bytes in place, the rest of the sectors kept",
        r == Ok(1536)
            && is_stamped(&back[..100], 1000 * 512)
            && back[100..800] == pattern
            && is_stamped(&back[800..], 1000 * 512 + 800),
        format_args!("{r:?}"),
    );

    // The end of the device.
    t.eq(
        "pread at the end: 0",
        pread(fd, &mut buf, DISK_BYTES),
        Ok(0),
    );
    let r = pread(fd, &mut buf[..1024], DISK_BYTES - 512);
    t.check(
        "pread across the end is short",
        r == Ok(512) && is_stamped(&buf[..512], DISK_BYTES - 512),
    );
    t.eq(
        "pwrite at the end: ENOSPC",
        pwrite(fd, &buf[..512], DISK_BYTES),
        Err(Errno(28)),
    );
    t.eq(
        "pwrite across the end is short",
        pwrite(fd, &buf[..1024], DISK_BYTES - 512),
        Ok(512),
    );
    t.eq(
        "buffered pread to a bad buffer: EFAULT",
        {
            // SAFETY: a deliberately bad user pointer; the kernel must refuse it.
            unsafe { raw(17, [fd as usize, 16, 512, 0, 0, 0]) }
        },
        Err(Errno(errno::EFAULT)),
    );

    // O_DIRECT.
    let dfd = open(c"/dev/vda", O_RDWR | O_DIRECT).expect("open O_DIRECT");
    let io = anon(64 * PAGE);
    let r = pread(dfd, &mut io[..8192], 8 * 4096);
    t.check_why(
        "O_DIRECT pread of two pages matches the stamp",
        r == Ok(8192) && is_stamped(&io[..8192], 8 * 4096),
        format_args!("{r:?}"),
    );
    let r = pread(dfd, &mut io[512..512 + 1536], 2048);
    t.check_why(
        "O_DIRECT pread with 512-aligned buffer and offset",
        r == Ok(1536) && is_stamped(&io[512..2048], 2048),
        format_args!("{r:?}"),
    );
    // Crossing a page boundary in the buffer with a sector-aligned start.
    let r = pread(dfd, &mut io[3584..3584 + 1024], 77 * 512);
    t.check(
        "O_DIRECT pread across a buffer page boundary",
        r == Ok(1024) && is_stamped(&io[3584..4608], 77 * 512),
    );
    t.eq(
        "O_DIRECT misaligned buffer: EINVAL",
        pread(dfd, &mut io[1..513], 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "O_DIRECT misaligned offset: EINVAL",
        pread(dfd, &mut io[..512], 100),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "O_DIRECT misaligned length: EINVAL",
        pread(dfd, &mut io[..600], 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "O_DIRECT misaligned write: EINVAL",
        pwrite(dfd, &io[..100], 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "O_DIRECT pread at the end: 0",
        pread(dfd, &mut io[..512], DISK_BYTES),
        Ok(0),
    );
    t.eq(
        "O_DIRECT pwrite at the end: ENOSPC",
        pwrite(dfd, &io[..512], DISK_BYTES),
        Err(Errno(28)),
    );

    // O_DIRECT write, read back both ways.
    for (i, b) in io[..8192].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13) ^ 0x5a;
    }
    let expect: [u8; 8192] = core::array::from_fn(|i| (i as u8).wrapping_mul(13) ^ 0x5a);
    t.eq(
        "O_DIRECT pwrite of 8 KiB",
        pwrite(dfd, &io[..8192], 4096 * 100),
        Ok(8192),
    );
    let mut back = [0u8; 8192];
    t.check(
        "buffered read sees the O_DIRECT write",
        pread(fd, &mut back, 4096 * 100) == Ok(8192) && back == expect,
    );
    io[..8192].fill(0);
    t.check(
        "O_DIRECT read sees it too",
        pread(dfd, &mut io[..8192], 4096 * 100) == Ok(8192) && io[..8192] == expect,
    );

    // A transfer of several requests (256 KiB, split in 128 KiB requests).
    let big = 64 * PAGE;
    let r = pread(dfd, &mut io[..big], 1 << 20);
    t.check_why(
        "O_DIRECT pread of 256 KiB",
        r == Ok(big) && is_stamped(&io[..big], 1 << 20),
        format_args!("{r:?}"),
    );

    // EFAULT: a buffer whose second page is unmapped. Nothing stays pinned: the free memory
    // is back where it was and the mapping can go away.
    let hole = anon(3 * PAGE);
    let hole_addr = hole.as_ptr() as usize;
    hole[0] = 1;
    let _ = munmap(hole_addr + PAGE, PAGE);
    let before = mem_free_kb();
    let held_before = (mmstat(b"gup_pins_held"), mmstat(b"gup_refs_held"));
    for _ in 0..8 {
        // SAFETY: the range is partly unmapped on purpose; the kernel must refuse it.
        let r = unsafe { raw(17, [dfd as usize, hole_addr, 2 * PAGE, 0, 0, 0]) };
        if r != Err(Errno(errno::EFAULT)) {
            t.check_why(
                "O_DIRECT pread into a half-unmapped buffer: EFAULT",
                false,
                format_args!("{r:?}"),
            );
        }
        // SAFETY: as above, the device reads the buffer.
        let r = unsafe { raw(18, [dfd as usize, hole_addr, 2 * PAGE, 0, 0, 0]) };
        if r != Err(Errno(errno::EFAULT)) {
            t.check_why(
                "O_DIRECT pwrite from a half-unmapped buffer: EFAULT",
                false,
                format_args!("{r:?}"),
            );
        }
    }
    t.eq_some(
        "after EFAULTs, free memory unchanged (no page left pinned)",
        mem_free_kb(),
        before,
    );
    t.check_why(
        "after EFAULTs, gup_pins_held and gup_refs_held unchanged (/proc/cowlab/mmstat)",
        held_before.0.is_some()
            && held_before == (mmstat(b"gup_pins_held"), mmstat(b"gup_refs_held")),
        format_args!("{held_before:?}"),
    );
    t.eq(
        "O_DIRECT pread to a kernel address: EFAULT",
        // SAFETY: a kernel address on purpose.
        unsafe { raw(17, [dfd as usize, 0xffff_8000_0000_0000, 512, 0, 0, 0]) },
        Err(Errno(errno::EFAULT)),
    );
    let _ = munmap(hole_addr, 3 * PAGE);

    // Read-only pins for writes from a read-only mapping, FOLL_WRITE for reads into it.
    let ro = mmap(0, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS).expect("mmap");
    // SAFETY: a mapped read-only page; only the kernel accesses it here.
    let r = unsafe { raw(18, [dfd as usize, ro, PAGE, 4096 * 200, 0, 0]) };
    t.eq(
        "O_DIRECT pwrite from a read-only mapping works (zero page)",
        r,
        Ok(PAGE),
    );
    // SAFETY: as above.
    let r = unsafe { raw(17, [dfd as usize, ro, PAGE, 0, 0, 0]) };
    t.eq(
        "O_DIRECT pread into a read-only mapping: EFAULT",
        r,
        Err(Errno(errno::EFAULT)),
    );
    let mut zero = [1u8; 512];
    t.check(
        "the zero page reached the disk",
        pread(fd, &mut zero, 4096 * 200) == Ok(512) && zero == [0; 512],
    );
    let _ = munmap(ro, PAGE);

    // fcntl can turn O_DIRECT off and on (F_SETFL), as on Linux.
    let _ = fcntl(dfd, 4, O_RDWR as usize);
    t.eq(
        "without O_DIRECT a misaligned read works",
        pread(dfd, &mut io[1..101], 3),
        Ok(100),
    );
    let _ = fcntl(dfd, 4, O_DIRECT as usize);
    t.eq(
        "with O_DIRECT again: EINVAL",
        pread(dfd, &mut io[1..101], 3),
        Err(Errno(errno::EINVAL)),
    );

    let _ = close(dfd);
    hold_ownership(&mut t, fd);
    let _ = close(fd);
    t.finish()
}

/// `COWLAB_VDA_HOLD` is a capability of the open file that set it: another file cannot take
/// or release it (EBUSY, EPERM), and it ends when that file is closed, here by the exit of the
/// process that opened it with a read still held, so the disk is never left stalled.
fn hold_ownership(t: &mut Tester, fd: i32) {
    use cowlab_userland::aio::{io_setup, io_submit, iocb, IOCB_CMD_PREAD};
    use cowlab_userland::vda::{control, HOLD, INFLIGHT, RELEASE};
    let Ok(other) = open(c"/dev/vda", O_RDWR) else {
        t.check("open /dev/vda again", false);
        return;
    };
    t.eq("HOLD", control(fd, HOLD), Ok(0));
    t.eq("HOLD again by the same file", control(fd, HOLD), Ok(0));
    t.eq(
        "HOLD by another file: EBUSY",
        control(other, HOLD),
        Err(Errno(errno::EBUSY)),
    );
    t.eq(
        "RELEASE by another file: EPERM",
        control(other, RELEASE),
        Err(Errno(errno::EPERM)),
    );
    t.eq("RELEASE by the holder", control(fd, RELEASE), Ok(0));
    let _ = close(other);

    let status = cowlab_userland::test::in_child(|| {
        // O_DIRECT: a buffered AIO read would run (and wait) inside io_submit.
        let Ok(own) = open(c"/dev/vda", O_RDWR | O_DIRECT) else {
            return 1;
        };
        let Ok(ctx) = io_setup(1) else { return 2 };
        let buf = anon(PAGE);
        if control(own, HOLD) != Ok(0) {
            return 3;
        }
        let req = iocb(own, IOCB_CMD_PREAD, &buf[..PAGE], 4096 * 3300, 1);
        // SAFETY: the buffer is a leaked mapping, valid after this process ends too.
        if unsafe { io_submit(ctx, &[&req]) } != Ok(1) {
            return 4;
        }
        0 // exits holding, with the read held
    });
    t.eq("a child exits holding with a read held", status, 0);
    let mut waited = 0;
    while control(fd, INFLIGHT) != Ok(0) && waited < 1000 {
        let _ = sleep_ms(2);
        waited += 1;
    }
    let inflight = control(fd, INFLIGHT);
    t.eq(
        "its exit closed the file and released the hold: nothing in flight",
        inflight,
        Ok(0),
    );
    if inflight != Ok(0) {
        // Still held (the old device-wide hold): unstick the disk for the checks below.
        let _ = control(fd, RELEASE);
    }
    let mut sector = [0u8; 512];
    t.check(
        "the disk still serves reads",
        pread(fd, &mut sector, 4096 * 3301) == Ok(512) && is_stamped(&sector, 4096 * 3301),
    );
    t.eq("HOLD is free for another file", control(fd, HOLD), Ok(0));
    t.eq("and released", control(fd, RELEASE), Ok(0));
}
