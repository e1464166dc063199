//! `/sys/kernel/debug/gup_test` with Linux's ioctl numbers and layouts: the benchmark and
//! basic-test ioctls, and PIN_LONGTERM_TEST_START/READ/STOP (a R/O long-term pin sees later
//! writes; pins dropped on STOP and on close). On a host without CONFIG_GUP_TEST (or debugfs)
//! the checks are skipped.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const IOCTL: usize = 16;
const PAGE: usize = 4096;
const FOLL_WRITE: u32 = 1;

#[repr(C)]
#[derive(Default)]
struct GupTest {
    get_delta_usec: u64,
    put_delta_usec: u64,
    addr: u64,
    size: u64,
    nr_pages_per_call: u32,
    gup_flags: u32,
    test_flags: u32,
    which_pages: [u32; 8],
}

#[repr(C)]
struct PinLongterm {
    addr: u64,
    size: u64,
    flags: u32,
}

fn ioctl(fd: i32, cmd: u64, arg: usize) -> Result<usize, Errno> {
    // SAFETY: callers pass a pointer to a live struct of the size `cmd` encodes (or a bad
    // pointer on purpose, which the kernel must refuse).
    unsafe { raw(IOCTL, [fd as usize, cmd as usize, arg, 0, 0, 0]) }
}

fn bench(fd: i32, cmd: u64, addr: usize, pages: usize, per_call: u32) -> Result<u64, Errno> {
    let mut a = GupTest {
        addr: addr as u64,
        size: (pages * PAGE) as u64,
        nr_pages_per_call: per_call,
        gup_flags: FOLL_WRITE,
        ..GupTest::default()
    };
    ioctl(fd, cmd, &mut a as *mut GupTest as usize).map(|_| a.size)
}

fn start(fd: i32, addr: usize, pages: usize, flags: u32) -> Result<usize, Errno> {
    let a = PinLongterm {
        addr: addr as u64,
        size: (pages * PAGE) as u64,
        flags,
    };
    ioctl(fd, 0x4018_6707, &a as *const PinLongterm as usize)
}

fn read_pins(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let addr = buf.as_mut_ptr() as u64;
    ioctl(fd, 0x4008_6709, &addr as *const u64 as usize)
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_guptest");
    let fd = match open(c"/sys/kernel/debug/gup_test", 2) {
        Ok(fd) => fd,
        Err(e) if !on_cowlab() => {
            cowlab_userland::println!(
                "t_guptest: gup_test unavailable on this host ({e:?}): skipped"
            );
            return t.finish();
        }
        Err(_) => {
            t.check("open /sys/kernel/debug/gup_test", false);
            return t.finish();
        }
    };
    let rw = PROT_READ | PROT_WRITE;
    let n = 16;
    let m = mmap(0, n * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    for i in 0..n {
        poke(m + i * PAGE, i as u8);
    }
    for (name, cmd) in [
        ("GUP_FAST_BENCHMARK", 0xC050_6701u64),
        ("PIN_FAST_BENCHMARK", 0xC050_6702),
        ("PIN_LONGTERM_BENCHMARK", 0xC050_6703),
        ("GUP_BASIC_TEST", 0xC050_6704),
        ("PIN_BASIC_TEST", 0xC050_6705),
    ] {
        t.eq(name, bench(fd, cmd, m, n, 4), Ok((n * PAGE) as u64));
    }
    let fresh = mmap(0, 4 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    t.eq(
        "PIN_BASIC_TEST faults untouched pages in",
        bench(fd, 0xC050_6705, fresh, 4, 1),
        Ok((4 * PAGE) as u64),
    );
    let _ = munmap(fresh, 4 * PAGE);
    t.eq(
        "benchmark on an unmapped range takes nothing",
        bench(fd, 0xC050_6704, 0x10000, 4, 4),
        Ok(0),
    );
    t.eq(
        "bad argument pointer is EFAULT",
        ioctl(fd, 0xC050_6701, 8),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "unknown ioctl is EINVAL",
        ioctl(fd, 0x6799, 0),
        Err(Errno(errno::EINVAL)),
    );

    // Long-term R/O pin sees later writes; READ copies the pinned pages.
    t.eq("START (R/O, slow) 4 pages", start(fd, m, 4, 0), Ok(0));
    t.eq(
        "START again is EINVAL",
        start(fd, m, 4, 0),
        Err(Errno(errno::EINVAL)),
    );
    poke(m + PAGE, 0xAB);
    let mut buf = [0u8; 4 * PAGE];
    t.eq("READ", read_pins(fd, &mut buf), Ok(0));
    t.check(
        "READ sees the pages",
        buf[0] == 0 && buf[2 * PAGE] == 2 && buf[3 * PAGE] == 3,
    );
    t.eq("the pin sees a later write", buf[PAGE], 0xAB);
    t.eq("STOP", ioctl(fd, 0x6708, 0), Ok(0));
    t.eq(
        "READ after STOP is EINVAL",
        read_pins(fd, &mut buf),
        Err(Errno(errno::EINVAL)),
    );
    t.eq("START (write, fast)", start(fd, m, 2, 3), Ok(0));
    t.eq("STOP again", ioctl(fd, 0x6708, 0), Ok(0));
    t.eq(
        "START misaligned is EINVAL",
        start(fd, m + 1, 1, 0),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "START unknown flag is EINVAL",
        start(fd, m, 1, 4),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "START size 0 is EINVAL",
        start(fd, m, 0, 0),
        Err(Errno(errno::EINVAL)),
    );
    t.check(
        "START on an unmapped range fails",
        start(fd, 0x10000, 2, 0).is_err(),
    );

    // Pins outlive munmap until STOP, and a second open file's pins go with its close.
    t.eq("START 8 pages", start(fd, m + 8 * PAGE, 8, 0), Ok(0));
    let _ = munmap(m, n * PAGE);
    let mut big = [0u8; 8 * PAGE];
    t.eq("READ after munmap", read_pins(fd, &mut big), Ok(0));
    t.check(
        "pinned contents survive munmap",
        (0..8).all(|i| big[i * PAGE] == (8 + i) as u8),
    );
    t.eq("STOP after munmap", ioctl(fd, 0x6708, 0), Ok(0));
    let m2 = mmap(0, 4 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    poke(m2, 1);
    let fd2 = open(c"/sys/kernel/debug/gup_test", 2).unwrap_or(-1);
    t.eq("START on a second file", start(fd2, m2, 4, 1), Ok(0));
    t.eq("close without STOP", close(fd2), Ok(0));
    let _ = munmap(m2, 4 * PAGE);
    // huge4: READ of a pin larger than the kernel heap (80 MiB against 64): the kernel copied
    // it all into one heap buffer first and panicked on the allocation.
    const BIG: usize = 80 << 20;
    let src = mmap(0, BIG, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    let dst = mmap(0, BIG, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    if src != 0 && dst != 0 {
        for i in (0..BIG).step_by(PAGE) {
            poke(src + i, (i / PAGE) as u8 | 1);
        }
        t.eq("START 80 MiB", start(fd, src, BIG / PAGE, 0), Ok(0));
        // SAFETY: `dst` is this program's own writable mapping of BIG bytes.
        let out = unsafe { core::slice::from_raw_parts_mut(dst as *mut u8, BIG) };
        t.eq("READ 80 MiB of pins", read_pins(fd, out), Ok(0));
        t.check(
            "every page read back",
            (0..BIG / PAGE).all(|i| out[i * PAGE] == i as u8 | 1),
        );
        t.eq("STOP 80 MiB", ioctl(fd, 0x6708, 0), Ok(0));
    } else {
        t.check("mmap 2 x 80 MiB", false);
    }
    let _ = munmap(src, BIG);
    let _ = munmap(dst, BIG);
    let _ = close(fd);
    t.finish()
}
