//! Issue 13's memory calls, with Linux's answers (checked on the host too): `madvise`
//! `MADV_POPULATE_READ`/`WRITE` (pages resident afterwards; `EINVAL` on `PROT_NONE`, a write
//! populate of read-only memory and an unaligned address; `ENOMEM` at a hole), `MADV_FREE`
//! (private anonymous reads back zero or the old data, `EINVAL` on shared memory),
//! `MADV_COLD`/`PAGEOUT` (accepted, data kept), `MADV_WIPEONFORK` (the child sees zeros, the
//! parent its data; `EINVAL` on shared memory) and `KEEPONFORK`, `MADV_DONTDUMP`/`DODUMP`;
//! `mincore` (touched pages 1, untouched 0; `EINVAL`, `ENOMEM`, `EFAULT`); and `mmap` of
//! `/dev/zero`, private and shared.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MADV_DONTNEED: i32 = 4;
const MADV_FREE: i32 = 8;
const MADV_DONTDUMP: i32 = 16;
const MADV_DODUMP: i32 = 17;
const MADV_WIPEONFORK: i32 = 18;
const MADV_KEEPONFORK: i32 = 19;
const MADV_COLD: i32 = 20;
const MADV_PAGEOUT: i32 = 21;
const MADV_POPULATE_READ: i32 = 22;
const MADV_POPULATE_WRITE: i32 = 23;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;

fn mincore(addr: usize, len: usize, vec: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `vec` holds at least one byte per page of `len` (callers size it so), or the
    // call is expected to fail before writing.
    unsafe { raw(27, [addr, len, vec.as_mut_ptr() as usize, 0, 0, 0]) }
}

fn mincore_raw(addr: usize, len: usize, vec: usize) -> Result<usize, Errno> {
    // SAFETY: `vec` is a deliberately bad address the kernel must refuse.
    unsafe { raw(27, [addr, len, vec, 0, 0, 0]) }
}

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass an address in a readable mapping of this program.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass an address in a writable mapping of this program.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

/// `pages` pages with `prot` between two PROT_NONE guards (no merging with neighbours).
fn fenced(pages: usize, prot: u32) -> usize {
    let base = mmap(0, (pages + 2) * PAGE, 0, ANON).unwrap_or(0);
    let _ = mprotect(base + PAGE, pages * PAGE, prot);
    base + PAGE
}

/// A mapped page followed by an unmapped one, made right before use so that no later mapping
/// fills the hole.
fn holed() -> usize {
    let a = fenced(2, RW);
    let _ = munmap(a + PAGE, PAGE);
    a
}

fn resident(addr: usize, pages: usize) -> usize {
    let mut v = [0u8; 64];
    let _ = mincore(addr, pages * PAGE, &mut v[..pages]);
    v[..pages].iter().filter(|&&b| b & 1 == 1).count()
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi_mm");
    let einval = Err(Errno(errno::EINVAL));
    let enomem = Err(Errno(errno::ENOMEM));
    let efault = Err(Errno(errno::EFAULT));

    // mincore.
    let a = fenced(8, RW);
    let mut v = [0xffu8; 8];
    t.eq("mincore untouched", mincore(a, 8 * PAGE, &mut v), Ok(0));
    t.eq("mincore: untouched pages are 0", v, [0; 8]);
    poke(a, 1);
    poke(a + 3 * PAGE, 1);
    t.eq("mincore touched", mincore(a, 8 * PAGE, &mut v), Ok(0));
    t.eq("mincore: touched pages are 1", v, [1, 0, 0, 1, 0, 0, 0, 0]);
    t.eq(
        "mincore partial last page",
        mincore(a, PAGE + 1, &mut v),
        Ok(0),
    );
    t.eq("mincore unaligned", mincore(a + 1, PAGE, &mut v), einval);
    t.eq(
        "mincore of a PROT_NONE page",
        mincore(a - PAGE, PAGE, &mut v),
        Ok(0),
    );
    t.eq(
        "mincore across a hole",
        mincore(holed(), 2 * PAGE, &mut v),
        enomem,
    );
    t.eq("mincore bad vec", mincore_raw(a, PAGE, 8), efault);
    t.eq(
        "mincore kernel vec",
        mincore_raw(a, PAGE, 0xffff_8000_0000_0000),
        efault,
    );
    t.eq("mincore len 0", mincore(a, 0, &mut v), Ok(0));
    t.eq(
        "mincore past user space",
        mincore(0xffff_ffff_ffff_0000, PAGE, &mut v),
        enomem,
    );

    // MADV_POPULATE_READ / WRITE.
    let p = fenced(8, RW);
    t.eq(
        "POPULATE_READ",
        madvise(p, 4 * PAGE, MADV_POPULATE_READ),
        Ok(0),
    );
    t.eq("POPULATE_READ makes pages resident", resident(p, 8), 4);
    t.eq(
        "POPULATE_WRITE",
        madvise(p + 4 * PAGE, 4 * PAGE, MADV_POPULATE_WRITE),
        Ok(0),
    );
    t.eq("POPULATE_WRITE makes pages resident", resident(p, 8), 8);
    t.eq("populated pages read zero", peek(p + 5 * PAGE), 0);
    let none = fenced(2, 0);
    t.eq(
        "POPULATE_READ of PROT_NONE",
        madvise(none, PAGE, MADV_POPULATE_READ),
        einval,
    );
    t.eq(
        "POPULATE_WRITE of PROT_NONE",
        madvise(none, PAGE, MADV_POPULATE_WRITE),
        einval,
    );
    let ro = fenced(2, PROT_READ);
    t.eq(
        "POPULATE_WRITE of read-only",
        madvise(ro, PAGE, MADV_POPULATE_WRITE),
        einval,
    );
    t.eq(
        "POPULATE_READ of read-only",
        madvise(ro, PAGE, MADV_POPULATE_READ),
        Ok(0),
    );
    t.eq(
        "POPULATE_READ unaligned",
        madvise(p + 1, PAGE, MADV_POPULATE_READ),
        einval,
    );
    t.eq(
        "POPULATE_READ across a hole",
        madvise(holed(), 2 * PAGE, MADV_POPULATE_READ),
        enomem,
    );
    t.eq(
        "POPULATE_READ len 0",
        madvise(p, 0, MADV_POPULATE_READ),
        Ok(0),
    );

    // Across many 2 MiB chunks (cowlab populates a chunk at a time): 16 MiB, then a hole.
    let big = mmap(0, 16 << 20, PROT_READ, ANON).unwrap_or(0);
    t.eq(
        "POPULATE_READ of 16 MiB",
        madvise(big, 16 << 20, MADV_POPULATE_READ),
        Ok(0),
    );
    let mut v = [0u8; 64];
    let _ = mincore(big + (15 << 20), 64 * PAGE, &mut v);
    t.eq(
        "the last chunk is resident",
        v.iter().filter(|&&b| b & 1 == 1).count(),
        64,
    );
    let _ = munmap(big + (8 << 20), PAGE);
    t.eq(
        "POPULATE_READ of 16 MiB with a hole",
        madvise(big, 16 << 20, MADV_POPULATE_READ),
        enomem,
    );
    let _ = munmap(big, 16 << 20);

    // MADV_FREE: private anonymous only; the range reads back as its data or zeros.
    let f = fenced(2, RW);
    poke(f, 7);
    t.eq("MADV_FREE", madvise(f, 2 * PAGE, MADV_FREE), Ok(0));
    let b = peek(f);
    t.check_why("MADV_FREE memory reads 7 or 0", b == 7 || b == 0, b);
    let shared = mmap(0, PAGE, RW, MAP_SHARED | MAP_ANONYMOUS).unwrap_or(0);
    t.eq(
        "MADV_FREE of shared memory",
        madvise(shared, PAGE, MADV_FREE),
        einval,
    );
    t.eq(
        "MADV_FREE across a hole",
        madvise(holed(), 2 * PAGE, MADV_FREE),
        enomem,
    );

    // MADV_COLD / PAGEOUT: accepted, data kept (no swap: nothing moves).
    let c = fenced(2, RW);
    poke(c, 9);
    t.eq("MADV_COLD", madvise(c, 2 * PAGE, MADV_COLD), Ok(0));
    t.eq("MADV_PAGEOUT", madvise(c, 2 * PAGE, MADV_PAGEOUT), Ok(0));
    t.eq("COLD/PAGEOUT keep the data", peek(c), 9);
    t.eq(
        "MADV_COLD across a hole",
        madvise(holed(), 2 * PAGE, MADV_COLD),
        enomem,
    );

    // DONTDUMP / DODUMP.
    t.eq("MADV_DONTDUMP", madvise(c, PAGE, MADV_DONTDUMP), Ok(0));
    t.eq("MADV_DODUMP", madvise(c, PAGE, MADV_DODUMP), Ok(0));

    // WIPEONFORK: the child's copy starts empty; KEEPONFORK undoes it.
    let w = fenced(2, RW);
    let k = fenced(2, RW);
    poke(w, 5);
    poke(w + PAGE, 6);
    poke(k, 8);
    t.eq(
        "MADV_WIPEONFORK",
        madvise(w, 2 * PAGE, MADV_WIPEONFORK),
        Ok(0),
    );
    t.eq(
        "MADV_WIPEONFORK then KEEPONFORK",
        madvise(k, 2 * PAGE, MADV_WIPEONFORK),
        Ok(0),
    );
    t.eq(
        "MADV_KEEPONFORK",
        madvise(k, 2 * PAGE, MADV_KEEPONFORK),
        Ok(0),
    );
    t.eq(
        "WIPEONFORK of shared memory",
        madvise(shared, PAGE, MADV_WIPEONFORK),
        einval,
    );
    t.eq(
        "WIPEONFORK of PROT_NONE",
        madvise(none, PAGE, MADV_WIPEONFORK),
        Ok(0),
    );
    match fork() {
        Ok(0) => {
            // Exit status bits: 1 = wiped page not zero, 2 = kept page lost, 4 = the child's
            // own write to the wiped range did not stick.
            let mut bad = 0;
            if peek(w) != 0 || peek(w + PAGE) != 0 {
                bad |= 1;
            }
            if peek(k) != 8 {
                bad |= 2;
            }
            poke(w, 3);
            if peek(w) != 3 {
                bad |= 4;
            }
            exit_now(bad);
        }
        Ok(child) => {
            let st = waitpid(child, 0).map(|(_, s)| s);
            t.eq(
                "the child saw zeros in the wiped range and the kept data",
                st.map(wexitstatus),
                Ok(0),
            );
            t.eq(
                "the parent keeps its data",
                (peek(w), peek(w + PAGE)),
                (5, 6),
            );
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }

    // DONTNEED still zeroes private memory.
    t.eq("MADV_DONTNEED", madvise(w, PAGE, MADV_DONTNEED), Ok(0));
    t.eq("after DONTNEED the page reads 0", peek(w), 0);
    t.eq("unknown advice", madvise(w, PAGE, 999), einval);

    // MREMAP_DONTUNMAP: the data moves, the old range stays mapped and reads zeros.
    const MAYMOVE: u32 = 1;
    const FIXED: u32 = 2;
    const DONTUNMAP: u32 = 4;
    let d = fenced(2, RW);
    poke(d, 5);
    poke(d + PAGE, 6);
    t.eq(
        "DONTUNMAP without MAYMOVE",
        mremap(d, 2 * PAGE, 2 * PAGE, DONTUNMAP),
        einval,
    );
    t.eq(
        "DONTUNMAP resizing",
        mremap(d, 2 * PAGE, 3 * PAGE, MAYMOVE | DONTUNMAP),
        einval,
    );
    let moved = mremap(d, 2 * PAGE, 2 * PAGE, MAYMOVE | DONTUNMAP);
    t.check_why(
        "DONTUNMAP moves",
        moved.is_ok_and(|m| m != d),
        format_args!("{moved:?}"),
    );
    if let Ok(m) = moved {
        t.eq("the data moved", (peek(m), peek(m + PAGE)), (5, 6));
        t.eq("the old range is empty, not unmapped", resident(d, 2), 0);
        t.eq(
            "the old range reads zeros",
            (peek(d), peek(d + PAGE)),
            (0, 0),
        );
        poke(d, 8);
        t.eq("the old range is writable", peek(d), 8);
        t.eq("and separate from the new", peek(m), 5);
    }
    let target = fenced(2, RW);
    let src = fenced(1, RW);
    poke(src, 3);
    // SAFETY: mremap with a new address takes five arguments; no user memory is passed.
    let r = unsafe {
        raw(
            25,
            [
                src,
                PAGE,
                PAGE,
                (MAYMOVE | FIXED | DONTUNMAP) as usize,
                target + PAGE,
                0,
            ],
        )
    };
    t.eq("DONTUNMAP with FIXED", r, Ok(target + PAGE));
    t.eq("FIXED target holds the data", peek(target + PAGE), 3);
    t.eq("FIXED source reads zero", peek(src), 0);
    // A shared mapping (Linux 5.13+): the old range still maps the same memory.
    poke(shared, 1);
    let sm = mremap(shared, PAGE, PAGE, MAYMOVE | DONTUNMAP);
    t.check_why(
        "DONTUNMAP of shared memory",
        sm.is_ok(),
        format_args!("{sm:?}"),
    );
    if let Ok(m) = sm {
        poke(m, 4);
        t.eq(
            "both ranges see the shared page",
            (peek(shared), peek(m)),
            (4, 4),
        );
    }

    // /dev/zero: reads zeros, maps as anonymous memory.
    let z = open(c"/dev/zero", O_RDWR).unwrap_or(-1);
    t.check("open /dev/zero", z >= 0);
    // SAFETY: a new mapping of /dev/zero; no user memory is passed.
    let zp = unsafe {
        raw(
            9,
            [
                0,
                2 * PAGE,
                RW as usize,
                MAP_PRIVATE as usize,
                z as usize,
                0,
            ],
        )
    }
    .unwrap_or(0);
    t.check("mmap /dev/zero private", zp != 0);
    if zp != 0 {
        t.eq("/dev/zero mapping reads 0", peek(zp + PAGE), 0);
        poke(zp, 4);
        t.eq("/dev/zero private mapping is writable", peek(zp), 4);
    }
    // SAFETY: as above, shared.
    let zs = unsafe {
        raw(
            9,
            [0, PAGE, RW as usize, MAP_SHARED as usize, z as usize, 0],
        )
    }
    .unwrap_or(0);
    t.check("mmap /dev/zero shared", zs != 0);
    if zs != 0 {
        poke(zs, 1);
        match fork() {
            Ok(0) => {
                poke(zs, 2);
                exit_now(0);
            }
            Ok(child) => {
                let _ = waitpid(child, 0);
                t.eq(
                    "a shared /dev/zero mapping is shared with the child",
                    peek(zs),
                    2,
                );
            }
            Err(_) => t.check("fork", false),
        }
    }
    let _ = close(z);
    t.finish()
}
