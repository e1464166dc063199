//! Memory-management robustness (issue 17), asserting Linux's answers: user ranges whose sums
//! wrap (the mremap panic) and other oversized arguments; a shared mapping of a file opened
//! read-only can never become writable; memfd seals; mremap of `MAP_SHARED` memfd, tmpfs and
//! shared anonymous mappings keeps them shared, and a `PROT_NONE` mapping moves; the 1 MiB stack
//! guard gap keeps hinted mappings away from the stack, and a recursion with 64 KiB frames dies
//! with SIGSEGV instead of writing into the mapping below the stack.
#![no_std]
#![no_main]

use core::ffi::CStr;

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const MIB: usize = 1024 * 1024;
const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const SHARED_ANON: u32 = MAP_SHARED | MAP_ANONYMOUS;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;
const MREMAP_MAYMOVE: u32 = 1;
const MREMAP_FIXED: u32 = 2;
const MFD_ALLOW_SEALING: u32 = 2;
const F_ADD_SEALS: u32 = 1033;
const F_GET_SEALS: u32 = 1034;
const F_SEAL_SEAL: usize = 1;
const F_SEAL_SHRINK: usize = 2;
const F_SEAL_GROW: usize = 4;
const F_SEAL_WRITE: usize = 8;
const F_SEAL_FUTURE_WRITE: usize = 0x10;
const MREMAP: usize = 25;
const MPROTECT: usize = 10;
const MMAP: usize = 9;
const VMSPLICE: usize = 278;
const GETPID: usize = 39;
/// The highest page of the address space: any length added to it wraps.
const TOP: usize = 0xffff_ffff_ffff_f000;
const STACK_GUARD_GAP: usize = MIB;

fn e<T>(n: i32) -> Result<T, Errno> {
    Err(Errno(n))
}

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside live mappings (or expect the fault, in a child).
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside live writable mappings (or expect the fault).
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn killed_by(status: i32, signal: i32) -> bool {
    wifsignaled(status) && wtermsig(status) == signal
}

fn mremap5(addr: usize, old: usize, new: usize, flags: usize, to: usize) -> Result<usize, Errno> {
    // SAFETY: every call names ranges this program owns (or invalid ones the kernel refuses).
    unsafe { raw(MREMAP, [addr, old, new, flags, to, 0]) }
}

fn map_file(len: usize, prot: u32, flags: u32, fd: i32) -> Result<usize, Errno> {
    // SAFETY: no MAP_FIXED: the kernel picks a free range.
    unsafe { mmap_fd(0, len, prot, flags, fd, 0) }
}

/// Maps `len` bytes (of `fd`, or anonymous memory for `fd == -1`) followed by one read-only
/// anonymous page of this program's own, so that the mapping cannot grow in place.
fn map_before_blocker(len: usize, prot: u32, flags: u32, fd: i32) -> usize {
    let Ok(area) = mmap(0, len + PAGE, PROT_READ, ANON) else {
        return 0;
    };
    // SAFETY: MAP_FIXED over `area`, which this function just mapped.
    unsafe { mmap_fd(area, len, prot, flags | MAP_FIXED, fd, 0) }.unwrap_or(0)
}

fn byte_at(fd: i32, off: u64) -> u8 {
    let mut b = [0xeeu8];
    let _ = pread(fd, &mut b, off);
    b[0]
}

fn main() -> i32 {
    let mut t = Tester::new("t_mmrobust");
    overflow_class(&mut t);
    read_only_file_mappings(&mut t);
    memfd_seals(&mut t);
    mremap_shared(&mut t);
    stack_guard_gap(&mut t);
    t.finish()
}

/// Defect 1 and its class: every user (address, length) pair whose sum wraps or leaves user
/// space gets Linux's errno, and the kernel survives to answer.
fn overflow_class(t: &mut Tester) {
    t.eq(
        "mremap(0xfffffffffffff000, 4096, 8192, 0) is EFAULT",
        mremap(TOP, PAGE, 2 * PAGE, 0),
        e(errno::EFAULT),
    );
    t.eq(
        "mremap of the top page shrinking is EFAULT",
        mremap(TOP, 2 * PAGE, PAGE, 0),
        e(errno::EFAULT),
    );
    t.eq(
        "mremap MAYMOVE of the top page is EFAULT",
        mremap(TOP, PAGE, 2 * PAGE, MREMAP_MAYMOVE),
        e(errno::EFAULT),
    );
    let va = mmap(0, 2 * PAGE, RW, ANON).unwrap_or(0);
    t.check("map two pages", va != 0);
    t.eq(
        "mremap old_len that wraps when rounded is EINVAL",
        mremap(va, usize::MAX - 100, PAGE, 0),
        e(errno::EINVAL),
    );
    t.eq(
        "mremap new_len that wraps when rounded is EINVAL",
        mremap(va, PAGE, usize::MAX, MREMAP_MAYMOVE),
        e(errno::EINVAL),
    );
    t.eq(
        "mremap new_len beyond user space is EINVAL",
        mremap(va, PAGE, 1 << 47, MREMAP_MAYMOVE),
        e(errno::EINVAL),
    );
    t.eq(
        "mremap MREMAP_FIXED to the top page is EINVAL",
        mremap5(va, PAGE, 2 * PAGE, 3, TOP),
        e(errno::EINVAL),
    );
    t.eq(
        "mremap flags with bit 32 set are EINVAL",
        mremap5(va, PAGE, PAGE, (1 << 32) | 1, 0),
        e(errno::EINVAL),
    );
    t.eq(
        "mremap of more than the mapping is EFAULT",
        mremap(va, 16 * PAGE, 32 * PAGE, MREMAP_MAYMOVE),
        e(errno::EFAULT),
    );
    t.eq(
        "mprotect of the top page is ENOMEM",
        mprotect(TOP, 2 * PAGE, PROT_READ),
        e(errno::ENOMEM),
    );
    t.eq(
        "mprotect with a wrapping length is ENOMEM",
        mprotect(va, usize::MAX - PAGE + 1, PROT_READ),
        e(errno::ENOMEM),
    );
    t.eq(
        "mprotect prot with bit 32 set is EINVAL",
        // SAFETY: an mprotect of this program's own mapping (refused).
        unsafe { raw(MPROTECT, [va, PAGE, (1 << 32) | 1, 0, 0, 0]) },
        e(errno::EINVAL),
    );
    t.eq(
        "munmap of the top page is EINVAL",
        munmap(TOP, 2 * PAGE),
        e(errno::EINVAL),
    );
    t.eq(
        "munmap with a wrapping length is EINVAL",
        munmap(va, usize::MAX - PAGE + 1),
        e(errno::EINVAL),
    );
    t.eq(
        "madvise with a wrapping length is EINVAL",
        madvise(va, usize::MAX - PAGE + 1, 4),
        e(errno::EINVAL),
    );
    t.eq(
        "MAP_FIXED at the top page is ENOMEM",
        mmap(TOP, 2 * PAGE, PROT_READ, ANON | MAP_FIXED),
        e(errno::ENOMEM),
    );
    t.eq(
        "mmap of 2^64-4096 bytes is ENOMEM",
        mmap(0, usize::MAX - PAGE + 1, PROT_READ, ANON),
        e(errno::ENOMEM),
    );
    for (name, prot) in [
        ("mmap ignores prot bit 32, as Linux", (1usize << 32) | 3),
        ("mmap ignores PROT_SEM, as Linux", 8 | 3),
    ] {
        // SAFETY: a new mapping at an address the kernel chooses.
        let got = unsafe { raw(MMAP, [0, PAGE, prot, ANON as usize, usize::MAX, 0]) };
        t.check_why(
            name,
            got.is_ok_and(|m| {
                poke(m, 1);
                munmap(m, PAGE).is_ok()
            }),
            format_args!("{got:?}"),
        );
    }
    poke(va, 3);
    t.eq("the mapping is intact", peek(va), 3);
    let _ = munmap(va, 2 * PAGE);
}

/// A path in /tmp unique to this process.
fn tmp_path(buf: &mut [u8; 40]) -> &CStr {
    // SAFETY: getpid has no arguments.
    let pid = unsafe { raw(GETPID, [0; 6]) }.unwrap_or(0);
    let prefix = b"/tmp/t_mmrobust.";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut at = prefix.len();
    let mut digits = [0u8; 20];
    let mut n = 0;
    let mut p = pid;
    loop {
        digits[n] = b'0' + (p % 10) as u8;
        n += 1;
        p /= 10;
        if p == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        buf[at] = digits[i];
        at += 1;
    }
    buf[at] = 0;
    CStr::from_bytes_with_nul(&buf[..=at]).unwrap_or(c"/tmp/t_mmrobust")
}

/// Defect 2: a file opened `O_RDONLY` and mapped `MAP_SHARED` can never be written through the
/// mapping (the VMA has no `VM_MAYWRITE`).
fn read_only_file_mappings(t: &mut Tester) {
    let mut buf = [0u8; 40];
    let path = tmp_path(&mut buf);
    let wfd = open_mode(path, O_RDWR | O_CREAT, 0o600).unwrap_or(-1);
    t.check("create a file in /tmp", wfd >= 0);
    let _ = write(wfd, &[b'a'; PAGE]);
    let _ = close(wfd);
    let fd = open(path, O_RDONLY).unwrap_or(-1);
    let _ = unlink(path);
    t.eq(
        "MAP_SHARED PROT_WRITE of an O_RDONLY file is EACCES",
        map_file(PAGE, RW, MAP_SHARED, fd),
        e(errno::EACCES),
    );
    let m = map_file(PAGE, PROT_READ, MAP_SHARED, fd).unwrap_or(0);
    t.check(
        "MAP_SHARED PROT_READ of it works",
        m != 0 && peek(m) == b'a',
    );
    t.eq(
        "mprotect(PROT_READ|PROT_WRITE) of it is EACCES",
        mprotect(m, PAGE, RW),
        e(errno::EACCES),
    );
    let status = in_child(|| {
        poke(m, b'X');
        0
    });
    t.check_why("a store to it is SIGSEGV", killed_by(status, 11), status);
    t.eq("the file is unchanged", byte_at(fd, 0), b'a');
    t.eq(
        "mprotect(PROT_READ|PROT_EXEC) of it works",
        mprotect(m, PAGE, PROT_READ | 4),
        Ok(0),
    );
    let p = map_file(PAGE, RW, MAP_PRIVATE, fd).unwrap_or(0);
    t.check("MAP_PRIVATE PROT_WRITE of it works", p != 0);
    if p != 0 {
        poke(p, b'P');
        t.eq("a private store stays private", byte_at(fd, 0), b'a');
        let _ = munmap(p, PAGE);
    }
    let _ = munmap(m, PAGE);
    let _ = close(fd);
}

fn seals(fd: i32) -> Result<usize, Errno> {
    fcntl(fd, F_GET_SEALS, 0)
}

fn add_seals(fd: i32, s: usize) -> Result<usize, Errno> {
    fcntl(fd, F_ADD_SEALS, s)
}

/// memfd seals, each answer as Linux 6.x gives it.
fn memfd_seals(t: &mut Tester) {
    let plain = memfd_create(c"t_mmrobust", 0).unwrap_or(-1);
    t.eq(
        "a memfd without MFD_ALLOW_SEALING has F_SEAL_SEAL",
        seals(plain),
        Ok(F_SEAL_SEAL),
    );
    t.eq(
        "adding a seal to it is EPERM",
        add_seals(plain, F_SEAL_WRITE),
        e(errno::EPERM),
    );
    let _ = close(plain);
    let p = pipe().unwrap_or([-1, -1]);
    t.eq(
        "F_GET_SEALS on a pipe is EINVAL",
        seals(p[0]),
        e(errno::EINVAL),
    );
    t.eq(
        "F_ADD_SEALS on a pipe's write end is EINVAL",
        add_seals(p[1], F_SEAL_SEAL),
        e(errno::EINVAL),
    );
    t.eq(
        "F_ADD_SEALS on a read-only descriptor is EPERM",
        add_seals(p[0], F_SEAL_SEAL),
        e(errno::EPERM),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);

    let fd = memfd_create(c"t_mmrobust", MFD_ALLOW_SEALING).unwrap_or(-1);
    t.eq("MFD_ALLOW_SEALING starts unsealed", seals(fd), Ok(0));
    t.eq(
        "unknown seal bits are EINVAL",
        add_seals(fd, 0x40),
        e(errno::EINVAL),
    );
    let _ = ftruncate(fd, 2 * PAGE as i64);
    let w = map_file(2 * PAGE, RW, MAP_SHARED, fd).unwrap_or(0);
    t.eq(
        "F_SEAL_WRITE with a writable shared mapping is EBUSY",
        add_seals(fd, F_SEAL_WRITE),
        e(errno::EBUSY),
    );
    let _ = mprotect(w, PAGE, PROT_READ);
    t.eq(
        "still EBUSY after splitting it",
        add_seals(fd, F_SEAL_WRITE),
        e(errno::EBUSY),
    );
    let _ = munmap(w, 2 * PAGE);
    let ro = map_file(2 * PAGE, PROT_READ, MAP_SHARED, fd).unwrap_or(0);
    t.eq(
        "EBUSY with a read-only shared mapping that may become writable",
        add_seals(fd, F_SEAL_WRITE),
        e(errno::EBUSY),
    );
    let _ = munmap(ro, 2 * PAGE);
    let private = map_file(2 * PAGE, RW, MAP_PRIVATE, fd).unwrap_or(0);
    t.eq(
        "F_SEAL_WRITE with only a private mapping works",
        add_seals(fd, F_SEAL_WRITE),
        Ok(0),
    );
    t.eq("F_GET_SEALS shows it", seals(fd), Ok(F_SEAL_WRITE));
    t.eq("write is EPERM", write(fd, b"x"), e(errno::EPERM));
    t.eq("pwrite is EPERM", pwrite(fd, b"x", 0), e(errno::EPERM));
    t.eq(
        "MAP_SHARED PROT_WRITE is EPERM",
        map_file(PAGE, RW, MAP_SHARED, fd),
        e(errno::EPERM),
    );
    let ro = map_file(PAGE, PROT_READ, MAP_SHARED, fd).unwrap_or(0);
    t.check("MAP_SHARED PROT_READ works", ro != 0);
    t.eq(
        "mprotect of it to PROT_WRITE is EACCES",
        mprotect(ro, PAGE, RW),
        e(errno::EACCES),
    );
    t.eq(
        "mprotect of the private mapping works",
        mprotect(private, PAGE, RW),
        Ok(0),
    );
    poke(private, 7);
    t.eq(
        "a private store does not reach the sealed file",
        byte_at(fd, 0),
        0,
    );
    t.eq(
        "ftruncate may still shrink",
        ftruncate(fd, PAGE as i64),
        Ok(0),
    );
    t.eq("F_SEAL_SHRINK", add_seals(fd, F_SEAL_SHRINK), Ok(0));
    t.eq("shrinking is EPERM", ftruncate(fd, 0), e(errno::EPERM));
    t.eq("growing works", ftruncate(fd, 4 * PAGE as i64), Ok(0));
    t.eq("F_SEAL_GROW", add_seals(fd, F_SEAL_GROW), Ok(0));
    t.eq(
        "growing is EPERM",
        ftruncate(fd, 8 * PAGE as i64),
        e(errno::EPERM),
    );
    t.eq(
        "fallocate past the size is EPERM",
        fallocate(fd, 0, 0, 8 * PAGE as i64),
        e(errno::EPERM),
    );
    t.eq(
        "fallocate within it works",
        fallocate(fd, 0, 0, PAGE as i64),
        Ok(0),
    );
    t.eq("F_SEAL_SEAL", add_seals(fd, F_SEAL_SEAL), Ok(0));
    t.eq("no seal after it", add_seals(fd, 0), e(errno::EPERM));
    t.eq(
        "all four seals",
        seals(fd),
        Ok(F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE),
    );
    let _ = munmap(ro, PAGE);
    let _ = munmap(private, 2 * PAGE);
    let _ = close(fd);

    // A page reference held elsewhere (vmsplice into a pipe) keeps F_SEAL_WRITE out until
    // it is dropped (Linux `memfd_wait_for_pins`).
    let v = memfd_create(c"t_mmrobust", MFD_ALLOW_SEALING).unwrap_or(-1);
    let _ = ftruncate(v, PAGE as i64);
    let vm = map_file(PAGE, RW, MAP_SHARED, v).unwrap_or(0);
    let p = pipe().unwrap_or([-1, -1]);
    if vm != 0 {
        poke(vm, 1);
        let iov = [vm, PAGE];
        // SAFETY: one iovec naming this program's mapping.
        let spliced = unsafe { raw(VMSPLICE, [p[1] as usize, iov.as_ptr() as usize, 1, 0, 0, 0]) };
        t.eq("vmsplice a page of it into a pipe", spliced, Ok(PAGE));
        let _ = munmap(vm, PAGE);
    }
    t.eq(
        "F_SEAL_WRITE while the pipe holds the page is EBUSY",
        add_seals(v, F_SEAL_WRITE),
        e(errno::EBUSY),
    );
    let mut drain = [0u8; PAGE];
    t.eq(
        "read the page out of the pipe",
        read(p[0], &mut drain),
        Ok(PAGE),
    );
    t.eq(
        "F_SEAL_WRITE once it is dropped",
        add_seals(v, F_SEAL_WRITE),
        Ok(0),
    );
    let _ = close(p[0]);
    let _ = close(p[1]);
    let _ = close(v);

    // F_SEAL_GROW alone: a write may not pass the size.
    let g = memfd_create(c"t_mmrobust", MFD_ALLOW_SEALING).unwrap_or(-1);
    let _ = write(g, b"abcdefgh");
    let _ = add_seals(g, F_SEAL_GROW);
    t.eq(
        "a write past the size is EPERM",
        pwrite(g, b"xy", 7),
        e(errno::EPERM),
    );
    t.eq("a write up to it works", pwrite(g, b"xy", 6), Ok(2));
    let _ = close(g);

    // F_SEAL_FUTURE_WRITE: old writable mappings keep writing, nothing new may.
    let f = memfd_create(c"t_mmrobust", MFD_ALLOW_SEALING).unwrap_or(-1);
    let _ = ftruncate(f, PAGE as i64);
    let fw = map_file(PAGE, RW, MAP_SHARED, f).unwrap_or(0);
    t.eq(
        "F_SEAL_FUTURE_WRITE",
        add_seals(f, F_SEAL_FUTURE_WRITE),
        Ok(0),
    );
    if fw != 0 {
        poke(fw, b'Z');
    }
    t.eq(
        "an existing writable mapping still writes",
        byte_at(f, 0),
        b'Z',
    );
    t.eq("write is EPERM", write(f, b"a"), e(errno::EPERM));
    t.eq(
        "a new MAP_SHARED PROT_WRITE is EPERM",
        map_file(PAGE, RW, MAP_SHARED, f),
        e(errno::EPERM),
    );
    let fr = map_file(PAGE, PROT_READ, MAP_SHARED, f).unwrap_or(0);
    t.eq(
        "mprotect of a new read-only mapping is EACCES",
        mprotect(fr, PAGE, RW),
        e(errno::EACCES),
    );
    t.eq(
        "F_SEAL_WRITE with the old writable mapping is EBUSY",
        add_seals(f, F_SEAL_WRITE),
        e(errno::EBUSY),
    );
    let _ = munmap(fw, PAGE);
    let _ = munmap(fr, PAGE);
    let _ = close(f);
}

/// Defect 6: mremap keeps shared mappings shared; PROT_NONE mappings move.
fn mremap_shared(t: &mut Tester) {
    // A memfd mapping grown by a move (the page after it is taken).
    let fd = memfd_create(c"t_mmrobust", 0).unwrap_or(-1);
    let _ = ftruncate(fd, 8 * PAGE as i64);
    let m = map_before_blocker(2 * PAGE, RW, MAP_SHARED, fd);
    t.check("map a memfd before another mapping", m != 0);
    poke(m, 1);
    t.eq(
        "growing in place without MAYMOVE is ENOMEM",
        mremap(m, 2 * PAGE, 4 * PAGE, 0),
        e(errno::ENOMEM),
    );
    let moved = mremap(m, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE).unwrap_or(0);
    t.check("mremap MAYMOVE moves it", moved != 0 && moved != m);
    if moved != 0 {
        t.eq("the old contents move along", peek(moved), 1);
        poke(moved + 3 * PAGE, 33);
        poke(moved, 44);
        t.eq(
            "a store to the grown part reaches the memfd",
            byte_at(fd, 3 * PAGE as u64),
            33,
        );
        t.eq(
            "a store to the moved part reaches the memfd",
            byte_at(fd, 0),
            44,
        );
        let _ = pwrite(fd, &[55], PAGE as u64);
        t.eq(
            "write(2) is seen through the moved mapping",
            peek(moved + PAGE),
            55,
        );
        // Moved again into a reserved range with room after it, then grown in place.
        let room = mmap(0, 8 * PAGE, PROT_NONE, ANON).unwrap_or(0);
        let again = mremap5(moved, 4 * PAGE, 4 * PAGE, 3, room);
        t.eq("MREMAP_FIXED onto a reserved range", again, Ok(room));
        let _ = munmap(room + 4 * PAGE, 4 * PAGE);
        let grown = mremap(room, 4 * PAGE, 6 * PAGE, 0);
        t.eq("growing in place", grown, Ok(room));
        poke(room + 5 * PAGE, 66);
        t.eq(
            "a store to the page grown in place reaches the memfd",
            byte_at(fd, 5 * PAGE as u64),
            66,
        );
        t.eq(
            "the moved pages are still the memfd's",
            peek(room + PAGE),
            55,
        );
        let _ = munmap(room, 6 * PAGE);
    }
    let _ = munmap(m + 2 * PAGE, PAGE);
    let _ = close(fd);

    // A tmpfs file the same way.
    let mut buf = [0u8; 40];
    let path = tmp_path(&mut buf);
    let tf = open_mode(path, O_RDWR | O_CREAT, 0o600).unwrap_or(-1);
    let _ = unlink(path);
    let _ = ftruncate(tf, 4 * PAGE as i64);
    let m = map_before_blocker(PAGE, RW, MAP_SHARED, tf);
    let moved = mremap(m, PAGE, 3 * PAGE, MREMAP_MAYMOVE).unwrap_or(0);
    if moved != 0 {
        poke(moved + 2 * PAGE, 77);
    }
    t.eq(
        "a tmpfs mapping grown by a move still reaches the file",
        byte_at(tf, 2 * PAGE as u64),
        77,
    );
    let _ = munmap(moved, 3 * PAGE);
    let _ = munmap(m + PAGE, PAGE);
    let _ = close(tf);

    // MAP_SHARED|MAP_ANONYMOUS moved: still shared with a fork child.
    let s = map_before_blocker(PAGE, RW, SHARED_ANON, -1);
    poke(s, 5);
    let target = mmap(0, 2 * PAGE, PROT_READ, ANON).unwrap_or(0);
    let moved = mremap5(
        s,
        PAGE,
        2 * PAGE,
        (MREMAP_MAYMOVE | MREMAP_FIXED) as usize,
        target,
    );
    t.eq(
        "MREMAP_FIXED moves onto the chosen address",
        moved,
        Ok(target),
    );
    if moved == Ok(target) {
        t.eq("the contents moved", peek(target), 5);
        let status = in_child(|| {
            poke(target, 6);
            0
        });
        t.check_why("a fork child stores", wifexited(status), status);
        t.eq(
            "the parent sees the child's store after the move",
            peek(target),
            6,
        );
        let status = in_child(|| i32::from(peek(target + PAGE)));
        t.check_why(
            "the grown page lies past the shared object: SIGBUS",
            killed_by(status, 7),
            status,
        );
        let _ = munmap(target, 2 * PAGE);
    }
    let _ = munmap(s + PAGE, PAGE);

    // Shrinking may name more than the mapping: what lies there is unmapped (Linux).
    let a = map_before_blocker(2 * PAGE, RW, ANON, -1);
    t.eq(
        "mremap shrinking past the mapping's end",
        mremap(a, 3 * PAGE, PAGE, 0),
        Ok(a),
    );
    t.eq(
        "the mapping after it is gone",
        mprotect(a + PAGE, 2 * PAGE, PROT_READ),
        e(errno::ENOMEM),
    );
    let _ = munmap(a, PAGE);

    // PROT_NONE moves.
    let n = map_before_blocker(2 * PAGE, RW, ANON, -1);
    poke(n, 9);
    let _ = mprotect(n, 2 * PAGE, PROT_NONE);
    let moved = mremap(n, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
    t.check_why(
        "a PROT_NONE mapping moves",
        moved.is_ok_and(|v| v != n),
        format_args!("{moved:?}"),
    );
    if let Ok(v) = moved {
        t.eq(
            "mprotect of the moved range",
            mprotect(v, 4 * PAGE, RW),
            Ok(0),
        );
        t.eq("its contents came along", peek(v), 9);
        let _ = munmap(v, 4 * PAGE);
    }
    let _ = munmap(n + 2 * PAGE, PAGE);
}

/// The `[stack]` VMA of this process, from /proc/self/maps.
fn stack_vma() -> Option<(usize, usize)> {
    let mut buf = [0u8; 16384];
    let n = read_file(c"/proc/self/maps", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.ends_with("[stack]"))?;
    let range = line.split(' ').next()?;
    let (lo, hi) = range.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

/// One 64 KiB frame per level, forever: returns only through the fault. Records the lowest
/// address it reached in `*log`.
#[inline(never)]
fn recurse(depth: usize, log: *mut usize) -> usize {
    if depth == usize::MAX {
        return 0;
    }
    let mut frame = [0u8; 64 * 1024];
    frame[0] = depth as u8;
    let frame = core::hint::black_box(&mut frame);
    // SAFETY: `log` points into a live shared mapping of the caller.
    unsafe { core::ptr::write_volatile(log, frame.as_ptr() as usize) };
    let below = recurse(depth + 1, log);
    below + usize::from(core::hint::black_box(frame)[1])
}

/// Defect 7: the stack guard gap against a hinted mmap, and against a stack growing down.
fn stack_guard_gap(t: &mut Tester) {
    let Some((lo, hi)) = stack_vma() else {
        t.check("/proc/self/maps names the [stack]", false);
        return;
    };
    let len = 64 * 1024;
    let hint = lo - len;
    let got = mmap(hint, len, RW, ANON).unwrap_or(0);
    t.check_why(
        "a hint just below the stack lands outside the 1 MiB guard gap",
        got != 0 && (got + len <= lo - STACK_GUARD_GAP || got >= hi),
        format_args!("stack {lo:#x}-{hi:#x}, hint {hint:#x}, got {got:#x}"),
    );
    let _ = munmap(got, len);

    // The recursion runs in a child: a neighbour is mapped (with a hint clear of the gap)
    // 2 MiB below the stack and filled; the child's stack may grow to a gap above it, then
    // dies with SIGSEGV; the neighbour must be untouched.
    let log = mmap(0, PAGE, RW, SHARED_ANON).unwrap_or(0);
    let nlen = 256 * 1024;
    let nhint = lo - 2 * MIB - nlen;
    let neighbour = mmap(nhint, nlen, RW, SHARED_ANON | MAP_FIXED_NOREPLACE).unwrap_or(0);
    t.check_why(
        "a hint clear of the gap is honoured",
        neighbour == nhint,
        format_args!("hint {nhint:#x}, got {neighbour:#x}"),
    );
    if neighbour == 0 || log == 0 {
        return;
    }
    for i in (0..nlen).step_by(PAGE) {
        poke(neighbour + i, 0xaa);
    }
    let status = in_child(|| {
        recurse(0, log as *mut usize);
        0
    });
    t.check_why(
        "a recursion with 64 KiB frames ends with SIGSEGV",
        killed_by(status, 11),
        status,
    );
    let untouched = (0..nlen).step_by(PAGE).all(|i| peek(neighbour + i) == 0xaa)
        && (0..nlen).all(|i| i % PAGE == 0 || peek(neighbour + i) == 0);
    t.check("the mapping below the stack is untouched", untouched);
    // SAFETY: `log` is a live shared page written by the child.
    let deepest = unsafe { core::ptr::read_volatile(log as *const usize) };
    let floor = neighbour + nlen + STACK_GUARD_GAP;
    t.check_why(
        "the stack grew down to the guard gap, not into it",
        deepest >= floor && deepest < floor + 256 * 1024,
        format_args!("deepest frame {deepest:#x}, gap starts at {floor:#x}"),
    );
    let _ = munmap(neighbour, nlen);
    let _ = munmap(log, PAGE);
}
