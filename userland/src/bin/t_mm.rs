//! Memory tests from user space: mmap/munmap/mprotect semantics, COW isolation after fork,
//! brk, mremap, madvise, and the minor-fault count.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;

fn peek(addr: usize) -> u8 {
    // SAFETY: the callers pass addresses of their own mappings (or expect the fault).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, value: u8) {
    // SAFETY: as for `peek`.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

fn segv(status: i32) -> bool {
    wifsignaled(status) && wtermsig(status) == 11
}

fn main() -> i32 {
    let mut t = Tester::new("t_mm");

    let a = mmap(0, 4 * PAGE, RW, ANON).unwrap_or(0);
    t.check("mmap 4 pages", a != 0 && a.is_multiple_of(PAGE));
    t.eq("fresh anonymous memory reads 0", peek(a + 5000), 0);
    poke(a + 5000, 77);
    t.eq("and keeps what is written", peek(a + 5000), 77);

    t.eq(
        "mmap of length 0 is EINVAL",
        mmap(0, 0, RW, ANON),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mmap neither shared nor private is EINVAL",
        mmap(0, PAGE, RW, MAP_ANONYMOUS),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "munmap unaligned is EINVAL",
        munmap(a + 1, PAGE),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "mprotect unaligned is EINVAL",
        mprotect(a + 1, PAGE, PROT_READ),
        Err(Errno(errno::EINVAL)),
    );

    // MAP_FIXED over an existing mapping replaces it.
    let fixed = mmap(a, PAGE, RW, ANON | MAP_FIXED);
    t.eq("MAP_FIXED at an existing address", fixed, Ok(a));

    // mprotect read-only: reads work, a write kills (in a child).
    poke(a + PAGE, 9);
    t.eq(
        "mprotect PROT_READ",
        mprotect(a + PAGE, PAGE, PROT_READ),
        Ok(0),
    );
    t.eq("read-only page still reads", peek(a + PAGE), 9);
    let status = in_child(|| {
        poke(a + PAGE, 1);
        0
    });
    t.check_why(
        "a write to a read-only page is SIGSEGV",
        segv(status),
        status,
    );
    t.eq("mprotect back to RW", mprotect(a + PAGE, PAGE, RW), Ok(0));
    poke(a + PAGE, 10);
    t.eq("writable again", peek(a + PAGE), 10);
    t.eq(
        "mprotect of an unmapped range is ENOMEM",
        mprotect(0x7000_0000_0000, PAGE, PROT_READ),
        Err(Errno(errno::ENOMEM)),
    );

    // munmap: the page is gone.
    t.eq("munmap the third page", munmap(a + 2 * PAGE, PAGE), Ok(0));
    let status = in_child(|| i32::from(peek(a + 2 * PAGE)));
    t.check_why("touching an unmapped page is SIGSEGV", segv(status), status);
    t.eq("its neighbour survives", peek(a + PAGE), 10);
    t.eq(
        "munmap of a hole is fine",
        munmap(a + 2 * PAGE, PAGE),
        Ok(0),
    );

    // COW after fork: parent and child see their own writes only.
    poke(a + 3 * PAGE, 1);
    let status = in_child(|| {
        if peek(a + 3 * PAGE) != 1 {
            return 2;
        }
        poke(a + 3 * PAGE, 2);
        i32::from(peek(a + 3 * PAGE) != 2)
    });
    t.check_why(
        "the child saw the parent's data and its own write",
        wifexited(status) && wexitstatus(status) == 0,
        status,
    );
    t.eq(
        "the parent does not see the child's write",
        peek(a + 3 * PAGE),
        1,
    );
    let status = in_child(|| {
        let _ = sleep_ms(50);
        i32::from(peek(a + 3 * PAGE))
    });
    poke(a + 3 * PAGE, 5);
    t.check_why(
        "the child does not see the parent's later write",
        wifexited(status) && wexitstatus(status) == 1,
        status,
    );
    // Big region: many pages, child rewrites them all, parent intact.
    let big = mmap(0, 64 * PAGE, RW, ANON).unwrap_or(0);
    for i in 0..64 {
        poke(big + i * PAGE, i as u8);
    }
    let status = in_child(|| {
        for i in 0..64 {
            poke(big + i * PAGE, 200);
        }
        0
    });
    let intact = (0..64).all(|i| peek(big + i * PAGE) == i as u8);
    t.check_why(
        "64 pages isolated from a writing child",
        intact && wifexited(status),
        status,
    );

    // Minor faults count touches of new pages.
    let before = minflt(0).unwrap_or(-1);
    let fresh = mmap(0, 16 * PAGE, RW, ANON).unwrap_or(0);
    for i in 0..16 {
        poke(fresh + i * PAGE, 1);
    }
    let after = minflt(0).unwrap_or(-1);
    t.check_why(
        "touching 16 pages adds >= 16 minor faults",
        after - before >= 16,
        after - before,
    );
    let children = minflt(-1).unwrap_or(-1);
    t.check_why(
        "RUSAGE_CHILDREN counts reaped children's faults",
        children > 0,
        children,
    );

    // wait4's rusage: the reaped child's own faults.
    let pid = fork().unwrap_or(-1);
    if pid == 0 {
        let m = mmap(0, 10 * PAGE, RW, ANON).unwrap_or(0);
        for i in 0..10 {
            poke(m + i * PAGE, 1);
        }
        exit_now(0);
    }
    let mut usage = [0i64; 18];
    let mut status = 0i32;
    // SAFETY: wait4 writes an int status and a 144-byte struct rusage into our locals.
    let waited = unsafe {
        raw(
            cowlab_userland::sys::nr::WAIT4,
            [
                pid as usize,
                &mut status as *mut i32 as usize,
                0,
                usage.as_mut_ptr() as usize,
                0,
                0,
            ],
        )
    };
    t.eq("wait4 with rusage", waited, Ok(pid as usize));
    t.check_why(
        "the child's ru_minflt counts its 10 touched pages",
        usage[8] >= 10,
        usage[8],
    );

    // madvise DONTNEED drops private pages: they read back as zero.
    t.eq("madvise DONTNEED", madvise(fresh, 16 * PAGE, 4), Ok(0));
    t.eq("dropped page reads 0", peek(fresh + 3 * PAGE), 0);
    t.eq(
        "madvise with bad advice is EINVAL",
        madvise(fresh, PAGE, 9999),
        Err(Errno(errno::EINVAL)),
    );

    // mremap: shrink in place; grow with MAYMOVE keeps the contents.
    let m = mmap(0, 4 * PAGE, RW, ANON).unwrap_or(0);
    poke(m, 11);
    poke(m + 3 * PAGE, 33);
    t.eq(
        "mremap shrink keeps the address",
        mremap(m, 4 * PAGE, 2 * PAGE, 0),
        Ok(m),
    );
    let status = in_child(|| i32::from(peek(m + 3 * PAGE)));
    t.check_why("the shrunk-off page is gone", segv(status), status);
    let _ = mmap(m + 2 * PAGE, PAGE, RW, ANON | MAP_FIXED); // block growth in place
    let moved = mremap(m, 2 * PAGE, 64 * PAGE, 1).unwrap_or(0);
    t.check("mremap MAYMOVE grows", moved != 0);
    t.eq("moved contents kept", peek(moved), 11);
    poke(moved + 63 * PAGE, 1);
    t.eq("grown part is usable", peek(moved + 63 * PAGE), 1);
    t.eq(
        "mremap unaligned is EINVAL",
        mremap(m + 1, PAGE, 2 * PAGE, 1),
        Err(Errno(errno::EINVAL)),
    );

    // brk grows and shrinks the heap.
    let start = brk(0);
    t.check("brk(0) answers the break", start != 0);
    let grown = brk(start + 10 * PAGE);
    t.eq("brk grows", grown, start + 10 * PAGE);
    poke(start + 9 * PAGE, 4);
    t.eq("the heap is usable", peek(start + 9 * PAGE), 4);
    t.eq("brk shrinks", brk(start), start);

    t.finish()
}
