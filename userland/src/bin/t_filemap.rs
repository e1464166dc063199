//! Mappings of disk files (ext2 on cowlab), in a directory of its own (`<dir>/t_filemap.PID`,
//! `<dir>` the first argument, else the working directory): shared and private mappings of a
//! file 2 pages + 100 bytes long, zeroes past the end in the last page, SIGBUS for a page
//! wholly past the end (in a child: the parent checks the signal), a private mapping seeing the
//! page cache until its first write and COWing away from it, a shared mapping's stores seen by
//! read(2) at once and on the disk after munmap and close (and, on cowlab, after the cache is
//! dropped), MADV_DONTNEED (shared stores kept, a private copy dropped), a mapping outliving its
//! descriptor, msync's errors (Linux's EINVAL/ENOMEM) and MS_SYNC (on cowlab: it cleans the
//! pages, and the next store is one write-notify fault, mmstat's `writenotify_faults`), ftruncate
//! of a mapped file (SIGBUS past the new end in every mapping, also in a child and on a private
//! COW copy), fallocate and SEEK_DATA over a page only a mapping stored to (SEEK_DATA finds it,
//! a punched hole zeroes what the mapping sees, a growing fallocate grows the size), O_DIRECT
//! (coherent with mappings and the page cache, Linux's alignment errors, holes), and
//! long-term pins: through io_uring buffer registration (FOLL_WRITE) a shared
//! writable mapping of the file is refused with EFAULT (it needs dirty tracking), a private one
//! and a shared memfd mapping are pinned; the same matrix through gup_test's long-term pin
//! ioctl (R/W and R/O, slow and fast) where `/sys/kernel/debug/gup_test` exists. On cowlab
//! `file_faults` in /proc/cowlab/mmstat counts the faults. Runs natively on the host in a
//! directory on a real disk filesystem.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::pcfile::{base_dir, mmstat};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const SIZE: usize = 2 * PAGE + 100;
const PROT_READ: usize = 1;
const PROT_WRITE: usize = 2;
const MAP_PRIVATE: usize = 2;
const MS_ASYNC: usize = 1;
const MS_INVALIDATE: usize = 2;
const MS_SYNC: usize = 4;
const SIGBUS: i32 = 7;
const EINVAL: i32 = 22;
const ENOMEM: i32 = 12;
const EFAULT: i32 = 14;
const EACCES: i32 = 13;

fn map(len: usize, prot: usize, flags: usize, fd: i32) -> Result<usize, Errno> {
    sys(9, &[0, len, prot, flags, fd as usize, 0])
}

fn msync(addr: usize, len: usize, flags: usize) -> Result<usize, Errno> {
    sys(26, &[addr, len, flags])
}

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn peek(addr: usize) -> u8 {
    // SAFETY: the callers read inside a live mapping, within the file's pages.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: usize, v: u8) {
    // SAFETY: the callers write inside a live writable mapping, within the file's pages.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

fn byte(i: usize) -> u8 {
    (i * 31 % 251) as u8 + 1
}

/// The signal that killed a child which touched `addr`, or 0 if it exited.
fn touch_in_child(addr: usize) -> i32 {
    match fork() {
        Ok(0) => {
            peek(addr);
            exit_now(0)
        }
        Ok(pid) => match waitpid(pid, 0) {
            Ok((_, status)) if wifsignaled(status) => wtermsig(status),
            _ => 0,
        },
        Err(_) => -1,
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_filemap");
    let cowlab = on_cowlab();
    let base = base_dir();
    let dir = format!("{base}/t_filemap.{}", cowlab_userland::sys::getpid());
    t.eq(
        "mkdir",
        errno_of(sys(83, &[P::new(&dir).c().as_ptr() as usize, 0o755])),
        0,
    );
    let name = format!("{dir}/file");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let data: Vec<u8> = (0..SIZE).map(byte).collect();
    t.eq("write the file", write(fd, &data), Ok(SIZE));
    let faults_before = mmstat("file_faults");

    // A read-only shared mapping of 4 pages: the file, zeroes, then SIGBUS.
    let ro = map(4 * PAGE, PROT_READ, MAP_SHARED as usize, fd).unwrap_or(0);
    t.check("mmap MAP_SHARED PROT_READ", ro != 0);
    t.check(
        "the mapping shows the file",
        (0..SIZE).step_by(97).all(|i| peek(ro + i) == byte(i)),
    );
    t.check(
        "past the end, the last page reads zeroes",
        (SIZE..3 * PAGE).all(|i| peek(ro + i) == 0),
    );
    t.eq(
        "a page wholly past the end is SIGBUS",
        touch_in_child(ro + 3 * PAGE),
        SIGBUS,
    );

    // A private mapping sees the cache until it writes, then only its own copy.
    let pv = map(3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd).unwrap_or(0);
    t.check("mmap MAP_PRIVATE PROT_READ|PROT_WRITE", pv != 0);
    t.eq("read a private page", peek(pv + 10), byte(10));
    t.eq("pwrite after mapping", pwrite(fd, b"Z", 20), Ok(1));
    t.eq(
        "the private mapping sees it (no copy yet)",
        peek(pv + 20),
        b'Z',
    );
    poke(pv + 30, b'P');
    t.eq("the private write is seen there", peek(pv + 30), b'P');
    let mut one = [0u8; 1];
    let _ = pread(fd, &mut one, 30);
    t.eq("the file does not see a private write", one[0], byte(30));
    t.eq("nor does a shared mapping", peek(ro + 30), byte(30));
    t.eq("pwrite after the copy", pwrite(fd, b"Y", 40), Ok(1));
    t.eq(
        "the private copy no longer follows the file",
        peek(pv + 40),
        byte(40),
    );
    t.eq("the shared mapping does", peek(ro + 40), b'Y');

    // A shared writable mapping writes the file.
    let sh = map(3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, fd).unwrap_or(0);
    t.check("mmap MAP_SHARED PROT_READ|PROT_WRITE", sh != 0);
    poke(sh + PAGE + 5, b'S');
    poke(sh + SIZE - 1, b'E');
    let _ = pread(fd, &mut one, (PAGE + 5) as u64);
    t.eq("read(2) sees a shared store at once", one[0], b'S');
    t.eq("the other shared mapping too", peek(ro + PAGE + 5), b'S');
    t.eq("msync MS_SYNC", msync(sh, 3 * PAGE, MS_SYNC), Ok(0));
    if cowlab {
        // Writeback write-protected the page: the next store faults (write-notify).
        let (notify, dirty) = (mmstat("writenotify_faults"), mmstat("file_dirty"));
        t.eq("msync cleaned the file's pages", dirty, Some(0));
        poke(sh + PAGE + 6, b'T');
        t.eq(
            "the next store is a write-notify fault",
            mmstat("writenotify_faults"),
            notify.map(|n| n + 1),
        );
        t.eq("and dirties its page again", mmstat("file_dirty"), Some(1));
        poke(sh + PAGE + 7, b'U');
        t.eq(
            "a second store to the dirty page does not fault",
            mmstat("writenotify_faults"),
            notify.map(|n| n + 1),
        );
    } else {
        poke(sh + PAGE + 6, b'T');
        poke(sh + PAGE + 7, b'U');
    }
    t.eq("msync MS_ASYNC", msync(sh, PAGE, MS_ASYNC), Ok(0));
    t.eq("msync MS_INVALIDATE", msync(sh, PAGE, MS_INVALIDATE), Ok(0));
    t.eq(
        "msync of an unaligned address is EINVAL",
        errno_of(msync(sh + 1, PAGE, MS_SYNC)),
        EINVAL,
    );
    t.eq(
        "msync with MS_ASYNC|MS_SYNC is EINVAL",
        errno_of(msync(sh, PAGE, MS_ASYNC | MS_SYNC)),
        EINVAL,
    );
    t.eq(
        "msync with an unknown flag is EINVAL",
        errno_of(msync(sh, PAGE, 8)),
        EINVAL,
    );
    let hole = map(2 * PAGE, PROT_READ, MAP_SHARED as usize, fd).unwrap_or(0);
    let _ = munmap(hole + PAGE, PAGE);
    t.eq(
        "msync over an unmapped page is ENOMEM",
        errno_of(msync(hole, 2 * PAGE, MS_SYNC)),
        ENOMEM,
    );
    let _ = munmap(hole, PAGE);
    t.eq("msync of length 0", msync(sh, 0, MS_SYNC), Ok(0));

    // MADV_DONTNEED: a shared mapping's stores stay in the file; a private mapping's COW copy
    // is dropped, and the page reads the file again.
    const MADV_DONTNEED: usize = 4;
    t.eq(
        "MADV_DONTNEED of the shared mapping",
        sys(28, &[sh, 3 * PAGE, MADV_DONTNEED]),
        Ok(0),
    );
    t.eq("the shared store survives it", peek(sh + PAGE + 5), b'S');
    t.eq(
        "MADV_DONTNEED of the private mapping",
        sys(28, &[pv, 3 * PAGE, MADV_DONTNEED]),
        Ok(0),
    );
    t.eq(
        "the private copy is gone: the file shows",
        peek(pv + 30),
        byte(30),
    );
    t.eq("and so do later stores to it", peek(pv + PAGE + 5), b'S');

    // Long-term write pins (io_uring buffer registration: FOLL_WRITE|FOLL_LONGTERM).
    pins(&mut t, cowlab, sh, pv);

    if cowlab {
        let after = mmstat("file_faults").unwrap_or(0);
        t.check_why(
            "file_faults counts the mapping faults",
            after >= faults_before.unwrap_or(u64::MAX).saturating_add(6),
            format!("{faults_before:?} -> {after}"),
        );
    }

    // A mapping outlives its descriptor; its stores reach the file.
    let _ = close(fd);
    poke(sh + 2 * PAGE + 7, b'C');
    for m in [ro, pv, sh] {
        let _ = munmap(m, 3 * PAGE);
    }
    let _ = munmap(ro, 4 * PAGE);
    if cowlab {
        // The closed file's page the last store dirtied stays dirty (no writeback at close,
        // as on Linux): `drop_caches` keeps dirty pages, so sync first.
        t.eq("sync", sys(162, &[]).map(drop), Ok(()));
        let drop = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
        t.eq("drop_caches", write(drop, b"3"), Ok(1));
        let _ = close(drop);
        t.eq("no file page is left cached", mmstat("file_pages"), Some(0));
    }
    let fd = open(path.c(), O_RDONLY).unwrap_or(-1);
    let mut back = vec![0u8; SIZE + 10];
    t.eq(
        "reopen and read the whole file",
        pread(fd, &mut back, 0),
        Ok(SIZE),
    );
    let mut want = data.clone();
    want[20] = b'Z';
    want[40] = b'Y';
    want[PAGE + 5] = b'S';
    want[PAGE + 6] = b'T';
    want[PAGE + 7] = b'U';
    want[SIZE - 1] = b'E';
    want[2 * PAGE + 7] = b'C';
    t.check(
        "the file holds every shared store and no private one",
        back[..SIZE] == want[..],
    );
    t.eq(
        "a shared writable mapping of a read-only descriptor is EACCES",
        errno_of(map(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, fd)),
        EACCES,
    );
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
    truncate_mapped(&mut t, &format!("{dir}/trunc"));
    space_mapped(&mut t, &format!("{dir}/space"));
    direct_io(&mut t, cowlab, &format!("{dir}/direct"));
    t.eq("rmdir", errno_of(rmdir(P::new(&dir).c())), 0);
    t.finish()
}

/// ftruncate shrinking a mapped file: every mapping loses the pages past the new end (shared
/// ones, and a private one's COW copy too: Linux `unmap_mapping_range` with `even_cows`), so
/// they fault with SIGBUS, in this process and in a child that mapped them before.
fn truncate_mapped(t: &mut Tester, name: &str) {
    let path = P::new(name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("write 2 pages", write(fd, &[b'q'; 2 * PAGE]), Ok(2 * PAGE));
    let sh = map(2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, fd).unwrap_or(0);
    let pv = map(2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd).unwrap_or(0);
    poke(sh + PAGE, b'r');
    poke(pv + PAGE, b'p');
    let [rd, wr] = pipe().unwrap_or([-1, -1]);
    let child = fork();
    if child == Ok(0) {
        // Touch the page before the parent truncates, wait, then touch it again.
        peek(sh + PAGE);
        let mut b = [0u8; 1];
        let _ = read(rd, &mut b);
        peek(sh + PAGE);
        exit_now(0);
    }
    t.eq(
        "ftruncate the mapped file to 1 page",
        ftruncate(fd, PAGE as i64),
        Ok(0),
    );
    let _ = write(wr, b"x");
    let status = child.and_then(|pid| waitpid(pid, 0).map(|(_, s)| s));
    t.check_why(
        "the child's mapping of the cut page gets SIGBUS",
        status.is_ok_and(|s| wifsignaled(s) && wtermsig(s) == SIGBUS),
        format!("{status:?}"),
    );
    t.eq(
        "the shared cut page is SIGBUS here",
        touch_in_child(sh + PAGE),
        SIGBUS,
    );
    t.eq(
        "the private copy of it too",
        touch_in_child(pv + PAGE),
        SIGBUS,
    );
    t.eq("the page below the end stays", peek(sh), b'q');
    let _ = close(rd);
    let _ = close(wr);
    let _ = munmap(sh, 2 * PAGE);
    let _ = munmap(pv, 2 * PAGE);
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
}

/// fallocate and SEEK_DATA on a file whose only data is a store through a shared mapping (a
/// dirty cached page over a hole): SEEK_DATA finds it (as ext4 counts dirty pages as data),
/// punching the hole zeroes what the mapping sees and leaves no data, and a fallocate growing
/// the file grows the size read(2) and fstat see.
fn space_mapped(t: &mut Tester, name: &str) {
    const SEEK_DATA: u32 = 3;
    const ENXIO: i32 = 6;
    const FALLOC_FL_KEEP_SIZE: i32 = 1;
    const FALLOC_FL_PUNCH_HOLE: i32 = 2;
    let path = P::new(name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq(
        "ftruncate a sparse 4-page file",
        ftruncate(fd, 4 * PAGE as i64),
        Ok(0),
    );
    let sh = map(4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, fd).unwrap_or(0);
    t.check("map it shared", sh != 0);
    if sh == 0 {
        return;
    }
    poke(sh + 2 * PAGE + 9, b'd');
    t.eq(
        "SEEK_DATA finds the page only a mapping stored to",
        lseek(fd, 0, SEEK_DATA),
        Ok(2 * PAGE),
    );
    t.eq(
        "punch a hole over it",
        fallocate(
            fd,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            2 * PAGE as i64,
            PAGE as i64,
        ),
        Ok(0),
    );
    t.eq(
        "the mapping sees the hole's zeroes",
        peek(sh + 2 * PAGE + 9),
        0,
    );
    let mut b = [1u8; 16];
    t.eq(
        "pread the hole",
        pread(fd, &mut b, (2 * PAGE) as u64),
        Ok(16),
    );
    t.check("it reads zeroes", b.iter().all(|&x| x == 0));
    t.eq(
        "SEEK_DATA after the punch: no data left",
        errno_of(lseek(fd, 0, SEEK_DATA)),
        ENXIO,
    );
    t.eq(
        "fallocate mode 0 past the end",
        fallocate(fd, 0, 4 * PAGE as i64, PAGE as i64),
        Ok(0),
    );
    t.eq(
        "fstat sees the grown size",
        fstat(fd).map(|st| st.st_size as usize),
        Ok(5 * PAGE),
    );
    t.eq(
        "read(2) reaches the grown end",
        pread(fd, &mut [0u8; 2 * PAGE], (4 * PAGE) as u64),
        Ok(PAGE),
    );
    let _ = munmap(sh, 4 * PAGE);
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
}

/// O_DIRECT on a disk file: a direct read sees a store a shared mapping made (dirty cache
/// pages are written back first), a direct write is seen by the mapping and by buffered reads,
/// misaligned offsets and buffers are EINVAL, a direct write past the end leaves a hole that
/// reads zeroes, a direct read at an end that is not sector-aligned counts only the file's
/// bytes, and (on cowlab) direct reads leave the page cache alone.
fn direct_io(t: &mut Tester, cowlab: bool, name: &str) {
    const O_DIRECT: u32 = 0o40000;
    let path = P::new(name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    let a: Vec<u8> = (0..3 * PAGE).map(|i| byte(i + 7)).collect();
    t.eq("write 3 pages", write(fd, &a), Ok(3 * PAGE));
    let sh = map(3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, fd).unwrap_or(0);
    let buf = map(4 * PAGE, PROT_READ | PROT_WRITE, 0x22, -1).unwrap_or(0);
    let dfd = open(path.c(), O_RDWR | O_DIRECT).unwrap_or(-1);
    t.check(
        "open O_DIRECT, map the file and a buffer",
        sh != 0 && buf != 0 && dfd >= 0,
    );
    if sh == 0 || buf == 0 || dfd < 0 {
        return;
    }
    poke(sh + PAGE + 3, b'M');
    // SAFETY: `buf` is a private anonymous mapping of 4 pages this function owns.
    let ubuf = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, 4 * PAGE) };
    t.eq(
        "O_DIRECT pread 3 pages",
        pread(dfd, &mut ubuf[..3 * PAGE], 0),
        Ok(3 * PAGE),
    );
    let mut want = a.clone();
    want[PAGE + 3] = b'M';
    t.check("it sees the mapping's store", ubuf[..3 * PAGE] == want[..]);
    ubuf[..PAGE].fill(b'B');
    t.eq(
        "O_DIRECT pwrite page 2",
        pwrite(dfd, &ubuf[..PAGE], 2 * PAGE as u64),
        Ok(PAGE),
    );
    t.eq(
        "the mapping sees the direct write",
        peek(sh + 2 * PAGE + 17),
        b'B',
    );
    let mut b = [0u8; 8];
    t.eq(
        "buffered pread",
        pread(fd, &mut b, 2 * PAGE as u64 + 100),
        Ok(8),
    );
    t.check("it sees the direct write", b == [b'B'; 8]);
    t.eq(
        "O_DIRECT pread at a misaligned offset is EINVAL",
        errno_of(pread(dfd, &mut ubuf[..PAGE], 100)),
        EINVAL,
    );
    t.eq(
        "O_DIRECT pread into a misaligned buffer is EINVAL",
        errno_of(pread(dfd, &mut ubuf[1..PAGE + 1], 0)),
        EINVAL,
    );
    ubuf[..PAGE].fill(b'C');
    t.eq(
        "O_DIRECT pwrite past the end (a hole before it)",
        pwrite(dfd, &ubuf[..PAGE], 4 * PAGE as u64),
        Ok(PAGE),
    );
    t.eq(
        "the size grows",
        fstat(fd).map(|st| st.st_size as usize),
        Ok(5 * PAGE),
    );
    ubuf.fill(1);
    t.eq(
        "O_DIRECT pread over the hole and the new page",
        pread(dfd, &mut ubuf[..2 * PAGE], 3 * PAGE as u64),
        Ok(2 * PAGE),
    );
    t.check(
        "the hole reads zeroes, the page its bytes",
        ubuf[..PAGE].iter().all(|&x| x == 0) && ubuf[PAGE..2 * PAGE].iter().all(|&x| x == b'C'),
    );
    t.eq(
        "ftruncate to an end inside a sector",
        ftruncate(fd, (5 * PAGE - 100) as i64),
        Ok(0),
    );
    t.eq(
        "O_DIRECT pread at that end counts only the file's bytes",
        pread(dfd, &mut ubuf[..PAGE], 4 * PAGE as u64),
        Ok(PAGE - 100),
    );
    if cowlab {
        let drop = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
        t.eq("drop_caches", write(drop, b"3"), Ok(1));
        let _ = close(drop);
        let before = mmstat("file_pages");
        t.eq(
            "another O_DIRECT pread",
            pread(dfd, &mut ubuf[..2 * PAGE], 0),
            Ok(2 * PAGE),
        );
        t.eq("it cached no page", mmstat("file_pages"), before);
    }
    let _ = close(dfd);
    let _ = munmap(sh, 3 * PAGE);
    let _ = munmap(buf, 4 * PAGE);
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
}

/// io_uring's registration pins long-term for writing: refused on a shared writable file
/// mapping (SEMANTICS `writable_file_mapping_allowed`, 2023), allowed on a private one and on a
/// shared memfd mapping.
fn pins(t: &mut Tester, cowlab: bool, shared: usize, private: usize) {
    let mut params = IoUringParams::default();
    let ring = match io_uring_setup(4, &mut params) {
        Ok(fd) => fd,
        Err(e) if !cowlab => {
            println!(
                "t_filemap: skip the pin checks: io_uring_setup answers errno {}",
                e.0
            );
            return;
        }
        Err(e) => {
            t.check_why("io_uring_setup", false, e.0);
            return;
        }
    };
    let register = |addr: usize| {
        let r = io_uring_register_buffers(ring, &[[addr, PAGE]]);
        if r.is_ok() {
            let _ = io_uring_unregister_buffers(ring);
        }
        errno_of(r)
    };
    t.eq(
        "long-term write pin of a shared file mapping: EFAULT",
        register(shared),
        EFAULT,
    );
    t.eq(
        "long-term write pin of a private file mapping: pinned",
        register(private),
        0,
    );
    let memfd = memfd_create(c"t_filemap", 0).unwrap_or(-1);
    let _ = ftruncate(memfd, PAGE as i64);
    let m = map(PAGE, PROT_READ | PROT_WRITE, MAP_SHARED as usize, memfd).unwrap_or(0);
    t.eq(
        "long-term write pin of a shared memfd mapping: pinned",
        register(m),
        0,
    );
    let _ = close(ring);
    let maps = [
        ("shared ext2", shared),
        ("private ext2", private),
        ("shared memfd", m),
    ];
    gup_test_matrix(t, cowlab, maps);
    let _ = munmap(m, PAGE);
    let _ = close(memfd);
}

/// gup_test's `PIN_LONGTERM_TEST_START` (flags: 1 write, 2 GUP-fast) on each mapping, R/W and
/// R/O, slow and fast: only the R/W pins of the shared ext2 mapping are refused (EFAULT; the
/// fast path falls back to the slow one, which refuses).
fn gup_test_matrix(t: &mut Tester, cowlab: bool, maps: [(&str, usize); 3]) {
    let Ok(fd) = open(c"/sys/kernel/debug/gup_test", O_RDWR) else {
        t.check("gup_test opens on cowlab", !cowlab);
        println!("t_filemap: skip the gup_test matrix: no /sys/kernel/debug/gup_test");
        return;
    };
    let kinds = [
        (1u32, "R/W slow"),
        (3, "R/W fast"),
        (0, "R/O slow"),
        (2, "R/O fast"),
    ];
    for (name, addr) in maps {
        for (flags, how) in kinds {
            let a = [addr as u64, PAGE as u64, u64::from(flags)];
            // SAFETY: `a` is a live `struct pin_longterm_test` (addr, size, flags).
            let r = unsafe { raw(16, [fd as usize, 0x4018_6707, a.as_ptr() as usize, 0, 0, 0]) };
            if r.is_ok() {
                // SAFETY: no argument.
                let _ = unsafe { raw(16, [fd as usize, 0x6708, 0, 0, 0, 0]) };
            }
            let want = if flags & 1 != 0 && name == "shared ext2" {
                EFAULT
            } else {
                0
            };
            let what = format!("gup_test long-term {how} pin of the {name} mapping");
            t.eq(&what, errno_of(r), want);
        }
    }
    let _ = close(fd);
}
