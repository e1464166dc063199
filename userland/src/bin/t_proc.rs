//! /proc: pagemap (present bit, PFN, its change on COW), clear_refs 4 (soft-dirty: the next
//! write faults and an exclusive page keeps its frame), maps, meminfo, and /proc/self/mem
//! (FOLL_FORCE writes into a private read-only mapping break COW and never reach the memfd
//! below, even interleaved with MADV_DONTNEED: the Dirty COW pattern).
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const MMAP: usize = 9;
const MEMFD_CREATE: usize = 319;
const O_RDONLY: u32 = 0;
const O_WRONLY: u32 = 1;
const O_RDWR: u32 = 2;
const MADV_DONTNEED: i32 = 4;
const PAGE: usize = 4096;
const PRESENT: u64 = 1 << 63;
const SOFT_DIRTY: u64 = 1 << 55;
const PFN: u64 = (1 << 55) - 1;

fn entry(pm: i32, addr: usize) -> u64 {
    let mut b = [0u8; 8];
    match pread(pm, &mut b, (addr / PAGE * 8) as u64) {
        Ok(8) => u64::from_le_bytes(b),
        _ => u64::MAX,
    }
}

fn peek(addr: usize) -> u8 {
    // SAFETY: callers pass addresses inside live mappings.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: callers pass addresses inside live writable mappings.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn read_all(path: &core::ffi::CStr, buf: &mut [u8]) -> usize {
    let Ok(fd) = open(path, O_RDONLY) else {
        return 0;
    };
    let mut n = 0;
    while n < buf.len() {
        match read(fd, &mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let _ = close(fd);
    n
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn hex(mut v: usize, out: &mut [u8; 16]) -> &[u8] {
    let mut i = 16;
    loop {
        i -= 1;
        out[i] = b"0123456789abcdef"[v % 16];
        v /= 16;
        if v == 0 {
            break;
        }
    }
    &out[i..]
}

fn main() -> i32 {
    let mut t = Tester::new("t_proc");
    let rw = PROT_READ | PROT_WRITE;

    let pm = open(c"/proc/self/pagemap", O_RDONLY).unwrap_or(-1);
    t.check("open /proc/self/pagemap", pm >= 0);
    let mut b8 = [0u8; 8];
    t.eq(
        "pagemap offset not a multiple of 8 is EINVAL",
        pread(pm, &mut b8, 3),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "open /proc/self/nonexistent is ENOENT",
        open(c"/proc/self/nonexistent", O_RDONLY),
        Err(Errno(errno::ENOENT)),
    );

    let a = mmap(0, 2 * PAGE, rw, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    t.eq("untouched page is not present", entry(pm, a) & PRESENT, 0);
    poke(a, 1);
    let e1 = entry(pm, a);
    t.check_why(
        "written page is present",
        e1 & PRESENT != 0,
        format_args!("{e1:#x}"),
    );
    // Soft-dirty needs CONFIG_MEM_SOFT_DIRTY on a host kernel; cowlab always has it.
    let soft = e1 & SOFT_DIRTY != 0 || on_cowlab();
    if soft {
        t.check_why(
            "written page is soft-dirty",
            e1 & SOFT_DIRTY != 0,
            format_args!("{e1:#x}"),
        );
    }
    let pfn1 = e1 & PFN;
    // Linux shows PFNs to CAP_SYS_ADMIN only; cowlab always does.
    let pfns = pfn1 != 0;

    // COW: with a child sharing the page, the parent's write moves it to a new frame.
    let fds = pipe().unwrap_or([-1, -1]);
    let child = fork().unwrap_or(-1);
    if child == 0 {
        let _ = close(fds[1]);
        let mut x = [0u8; 1];
        let _ = read(fds[0], &mut x);
        exit_now(0);
    }
    let _ = close(fds[0]);
    poke(a, 2);
    let pfn2 = entry(pm, a) & PFN;
    if pfns {
        t.check_why(
            "the PFN changes on COW",
            pfn2 != pfn1 && pfn2 != 0,
            format_args!("{pfn1:#x} {pfn2:#x}"),
        );
    }
    let _ = close(fds[1]);
    let _ = waitpid(child, 0);

    // clear_refs 4: soft-dirty cleared, the next write faults, an exclusive page keeps its PFN.
    let cr = open(c"/proc/self/clear_refs", O_WRONLY).unwrap_or(-1);
    t.check("open /proc/self/clear_refs", cr >= 0);
    t.eq(
        "clear_refs 9 is EINVAL",
        write(cr, b"9"),
        Err(Errno(errno::EINVAL)),
    );
    t.eq("clear_refs 4", write(cr, b"4\n"), Ok(2));
    if soft {
        let e = entry(pm, a);
        t.check_why(
            "soft-dirty cleared, page still present",
            e & SOFT_DIRTY == 0 && e & PRESENT != 0,
            format_args!("{e:#x}"),
        );
        let before = minflt(0).unwrap_or(0);
        poke(a, 3);
        let after = minflt(0).unwrap_or(0);
        t.eq("the write after clear_refs faults once", after - before, 1);
        let e = entry(pm, a);
        t.check_why(
            "soft-dirty again",
            e & SOFT_DIRTY != 0,
            format_args!("{e:#x}"),
        );
        if pfns {
            t.eq("the exclusive page keeps its PFN", e & PFN, pfn2);
        }
    }
    let _ = close(cr);

    // maps and meminfo.
    let mut text = [0u8; 16384];
    let n = read_all(c"/proc/self/maps", &mut text);
    let mut h = [0u8; 16];
    let mut line = [0u8; 40];
    let start = hex(a, &mut h);
    line[..start.len()].copy_from_slice(start);
    line[start.len()] = b'-';
    t.check(
        "maps lists the mapping",
        contains(&text[..n], &line[..start.len() + 1]),
    );
    t.check(
        "maps shows rw-p",
        contains(&text[..n], b" rw-p 00000000 00:00 0"),
    );
    let n = read_all(c"/proc/meminfo", &mut text);
    let m = &text[..n];
    t.check("meminfo starts with MemTotal:", m.starts_with(b"MemTotal:"));
    t.check(
        "meminfo has MemFree, Shmem, AnonPages in kB",
        contains(m, b"\nMemFree:")
            && contains(m, b"\nShmem:")
            && contains(m, b"\nAnonPages:")
            && contains(m, b" kB\n"),
    );

    // /proc/self/mem: FOLL_FORCE write into a private read-only mapping of a memfd.
    // SAFETY: the name is NUL-terminated.
    let fd = unsafe { raw(MEMFD_CREATE, [c"t_proc".as_ptr() as usize, 0, 0, 0, 0, 0]) }
        .map(|v| v as i32)
        .unwrap_or(-1);
    let _ = write(fd, &[b'A'; PAGE]);
    // SAFETY: a new mapping at an address the kernel chooses.
    let ro = unsafe {
        raw(
            MMAP,
            [
                0,
                PAGE,
                PROT_READ as usize,
                MAP_PRIVATE as usize,
                fd as usize,
                0,
            ],
        )
    }
    .unwrap_or(0);
    let mem = open(c"/proc/self/mem", O_RDWR).unwrap_or(-1);
    t.check("open /proc/self/mem", mem >= 0 && ro != 0);
    let mut one = [0u8; 1];
    t.check(
        "mem read sees the mapping",
        pread(mem, &mut one, ro as u64) == Ok(1) && one[0] == b'A',
    );
    t.eq(
        "mem write into a read-only private mapping",
        pwrite(mem, b"B", ro as u64),
        Ok(1),
    );
    t.eq("the mapping sees the write", peek(ro), b'B');
    t.check(
        "the memfd does not",
        pread(fd, &mut one, 0) == Ok(1) && one[0] == b'A',
    );
    t.eq(
        "mem read of an unmapped address is EIO",
        pread(mem, &mut one, 0x1000),
        Err(Errno(5)),
    );
    let mut leaked = false;
    let mut failed = 0;
    for i in 0..300 {
        let _ = madvise(ro, PAGE, MADV_DONTNEED);
        if pwrite(mem, b"M", (ro + i % 7) as u64) != Ok(1) {
            failed += 1;
        }
        if i % 3 == 0 {
            let _ = peek(ro);
        }
        leaked |= pread(fd, &mut one, (i % 7) as u64) != Ok(1) || one[0] != b'A';
    }
    t.check_why(
        "Dirty COW pattern: nothing reaches the memfd",
        !leaked,
        "the file changed",
    );
    t.eq("every forced write succeeded", failed, 0);
    let _ = munmap(ro, PAGE);
    let _ = munmap(a, 2 * PAGE);
    mem_offsets(&mut t, mem);
    mem_prot_none(&mut t, mem);
    let _ = close(mem);
    let _ = close(fd);
    let _ = close(pm);
    t.finish()
}

/// `/proc/self/mem` reaches PROT_NONE memory (FOLL_FORCE, as Linux): it writes a private page,
/// populated or not, which stays inaccessible to the process; it reads a shared one but does
/// not write it (EIO: no COW to break).
fn mem_prot_none(t: &mut Tester, mem: i32) {
    let anon = MAP_PRIVATE | MAP_ANONYMOUS;
    let (Ok(a), Ok(shared)) = (
        mmap(0, 2 * PAGE, PROT_READ | PROT_WRITE, anon),
        mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS),
    ) else {
        t.check("mappings for the PROT_NONE checks", false);
        return;
    };
    poke(a, b'a');
    poke(shared, b's');
    let _ = mprotect(a, 2 * PAGE, PROT_NONE);
    let _ = mprotect(shared, PAGE, PROT_NONE);
    t.eq(
        "mem write into a populated PROT_NONE private page",
        pwrite(mem, b"hello", a as u64),
        Ok(5),
    );
    t.eq(
        "mem write into an untouched PROT_NONE private page",
        pwrite(mem, b"world", (a + PAGE) as u64),
        Ok(5),
    );
    let mut five = [0u8; 5];
    t.check(
        "mem read of a PROT_NONE private page sees the write",
        pread(mem, &mut five, a as u64) == Ok(5) && five == *b"hello",
    );
    t.check(
        "mem read of a PROT_NONE shared page",
        pread(mem, &mut five[..1], shared as u64) == Ok(1) && five[0] == b's',
    );
    t.eq(
        "mem write into a PROT_NONE shared page is EIO",
        pwrite(mem, b"x", shared as u64),
        Err(Errno(5)),
    );
    let status = cowlab_userland::test::in_child(|| i32::from(peek(a)));
    t.check_why(
        "the page is still inaccessible to the process (SIGSEGV)",
        wifsignaled(status) && wtermsig(status) == 11,
        status,
    );
    let _ = mprotect(a, 2 * PAGE, PROT_READ);
    t.eq(
        "after mprotect(PROT_READ) the process sees both writes",
        (peek(a), peek(a + 4), peek(a + PAGE), peek(a + PAGE + 4)),
        (b'h', b'o', b'w', b'd'),
    );
    let _ = munmap(a, 2 * PAGE);
    let _ = munmap(shared, PAGE);
}

/// The last page of user space (Linux `TASK_SIZE` is 0x7ffffffff000 on x86_64, cowlab's too).
const LAST_USER_PAGE: usize = 0x7fff_ffff_e000;
const MAP_FIXED_NOREPLACE: u32 = 0x10_0000;

/// `/proc/self/mem` positions are addresses: lseek takes any 64-bit value (a kernel address
/// too) and returns it; reading there is EIO, pread with a negative offset EINVAL; an access
/// across the end of user space moves the bytes before it; at the end it is EIO.
fn mem_offsets(t: &mut Tester, mem: i32) {
    let lseek_raw = |off: u64, whence: usize| {
        // SAFETY: lseek takes no pointers.
        unsafe {
            raw(
                cowlab_userland::sys::nr::LSEEK,
                [mem as usize, off as usize, whence, 0, 0, 0],
            )
        }
    };
    t.eq(
        "lseek to a kernel address returns it",
        lseek_raw(0xffff_8000_0000_0000, 0),
        Ok(0xffff_8000_0000_0000),
    );
    let mut buf = [0u8; 16];
    t.eq(
        "read at a kernel address is EIO",
        read(mem, &mut buf),
        Err(Errno(5)),
    );
    t.eq(
        "SEEK_CUR from there wraps like an address",
        lseek_raw(0x8000_0000_0000_0000, 1),
        Ok(0x7fff_8000_0000_0000),
    );
    t.eq(
        "SEEK_END is EINVAL",
        lseek_raw(0, 2),
        Err(Errno(errno::EINVAL)),
    );
    t.eq(
        "pread at a negative offset is EINVAL",
        pread(mem, &mut buf, 0xffff_8000_0000_0000),
        Err(Errno(errno::EINVAL)),
    );
    let _ = lseek_raw(0, 0);
    let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE;
    let Ok(last) = mmap(LAST_USER_PAGE, PAGE, PROT_READ | PROT_WRITE, flags) else {
        // A host whose stack sits at the very top (no ASLR) has the page taken already.
        t.check("map the last user page", !on_cowlab());
        return;
    };
    if last != LAST_USER_PAGE {
        // A kernel without MAP_FIXED_NOREPLACE took it as a hint.
        let _ = munmap(last, PAGE);
        t.check("map the last user page", false);
        return;
    }
    poke(last + PAGE - 1, b'z');
    let mut two = [0u8; 2 * PAGE];
    let r = pread(mem, &mut two, last as u64);
    t.check_why(
        "a read across the end of user space returns the bytes before it",
        r == Ok(PAGE) && two[PAGE - 1] == b'z',
        format_args!("{r:?}"),
    );
    t.eq(
        "a write across the end writes the bytes before it",
        pwrite(mem, &two, last as u64),
        Ok(PAGE),
    );
    t.eq(
        "a read at the end of user space is EIO",
        pread(mem, &mut two, (last + PAGE) as u64),
        Err(Errno(5)),
    );
    let _ = munmap(last, PAGE);
}
