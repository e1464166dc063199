//! User-driven kernel-heap allocations fail with an errno, never a kernel panic (issue 17).
//!
//! Calls that allocate on the fixed kernel heap in proportion to what a program asks for:
//! execve's argument strings (up to a quarter of `RLIMIT_STACK`, at most 6 MiB, copied twice),
//! `getdents64` of a tmpfs directory (a copy of every name), `/proc/self/maps` (one line per
//! VMA) and `poll` (the whole `pollfd` array). Before the fix the first three grew plain
//! `Vec`s and `String`s: with the heap short the allocation failed and the kernel panicked.
//!
//! `t_rob3_heap` (default, and on the host): the same calls succeed as on Linux (exec with 1 MiB
//! of arguments, every name listed, one maps line per VMA).
//!
//! `t_rob3_heap exhaust` (cowlab only, booted with `kheap=8`): exec with 6 MiB of arguments
//! (more than the 8 MiB heap can copy twice) is `ENOMEM`; then, with the heap filled to its
//! reserve by memfd holders, `getdents64`, a maps read and a 1024-entry `poll` are `ENOMEM`,
//! `TIOCSTI` input lands or is dropped (at most `MAX_INPUT` bytes wait); after the holders go
//! all of them work again, and MemFree is back at its value.
//!
//! `t_rob3_heap kfault` (cowlab only, booted with `mem=64`): a kernel-mode fault on a user
//! copy that finds no frame runs the OOM killer and retries, as a ring-3 fault does: a child
//! holds all but 8 MiB of memory, then a 16 MiB read from /dev/zero into untouched memory
//! completes (it returned a short count before: the fault took the copy's fixup) and the child
//! is the one killed.
//!
//! `t_rob3_heap args N` is the exec target: checks it got N arguments of [`ARG_LEN`] bytes.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::CStr;

use cowlab_userland::args::args;
use cowlab_userland::calls::*;
use cowlab_userland::rlimit::{getrlimit, setrlimit, RLIMIT_STACK};
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{mem_free_kb, on_cowlab, sibling, Tester};

cowlab_userland::entry!(main);

const ENOMEM: Errno = Errno(12);
/// One exec argument: 128 KiB less a little (Linux `MAX_ARG_STRLEN` is 32 pages with the NUL).
const ARG_LEN: usize = 120 * 1024;
/// tmpfs files listed by getdents, and the length of their names.
const FILES: usize = 3000;
const NAME_LEN: usize = 200;
/// VMAs made for the maps read (alternating protections over one mapping).
const VMAS: usize = 6000;
const PER_HOLDER: usize = 1000;

const MADE_ALL: u8 = 0;
const GOT_ENOMEM: u8 = 1;
/// A holder's byte before it reports.
const NO_REPORT: u8 = 0xff;

fn main() -> i32 {
    let argv: Vec<_> = args().collect();
    if argv.len() >= 3 && argv[1].to_bytes() == b"args" {
        return exec_target(&argv);
    }
    let mut t = Tester::new("t_rob3_heap");
    if argv.iter().any(|a| a.to_bytes() == b"kfault") {
        if on_cowlab() {
            kernel_fault_oom(&mut t);
        } else {
            t.check("kfault mode needs cowlab booted with mem=64", false);
        }
        return t.finish();
    }
    let exhaust = argv.iter().any(|a| a.to_bytes() == b"exhaust");
    if exhaust && !on_cowlab() {
        t.check("exhaust mode needs cowlab booted with kheap=8", false);
        return t.finish();
    }
    // Every buffer is made and touched before the MemFree baseline.
    let mut b = Bufs {
        dents: vec![1u8; 1 << 20],
        maps: vec![1u8; 64 * 1024],
        pollfds: vec![[-1, 1]; 1024],
        board: mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS)
            .map_or(core::ptr::null_mut(), |a| a as *mut u8),
    };
    if !b.board.is_null() {
        // SAFETY: the shared page is mapped; touched now, before the baseline.
        unsafe { core::ptr::write_volatile(b.board, NO_REPORT) };
    }
    let mut arg = vec![b'a'; ARG_LEN + 1];
    arg[ARG_LEN] = 0;
    big_exec(&mut t, &arg, if exhaust { 50 } else { 8 }, exhaust);
    // After the exec: reading the program file leaves its pages in the page cache.
    let before = mem_free_kb();
    let files = make_files(&mut t);
    let (vmas, vma_len) = make_vmas(&mut t);
    if exhaust {
        full_heap(&mut t, &mut b);
    }
    t.eq(
        "getdents64 lists every file",
        count_names(&mut b),
        Ok(files),
    );
    let lines = maps_lines(&mut b);
    t.check_why(
        "a /proc/self/maps read has a line per VMA",
        matches!(lines, Ok(n) if n >= VMAS),
        format_args!("{lines:?}"),
    );
    t.eq("poll of 1024 skipped entries", poll_skipped(&mut b), Ok(0));
    remove_files(files);
    let _ = munmap(vmas, vma_len);
    if on_cowlab() {
        t.eq("MemFree back to its value", mem_free_kb(), before);
    }
    t.finish()
}

/// The exec target: `args N` followed by N strings of `ARG_LEN` 'a's.
fn exec_target(argv: &[&CStr]) -> i32 {
    let want: usize = core::str::from_utf8(argv[2].to_bytes())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let good = argv[3..].len() == want
        && argv[3..]
            .iter()
            .all(|a| a.to_bytes().len() == ARG_LEN && a.to_bytes().iter().all(|&b| b == b'a'));
    i32::from(!good) + 40
}

/// execve of this program with `count` arguments of [`ARG_LEN`] bytes, in a child with
/// `RLIMIT_STACK` raised so that the arguments are within Linux's limit (a quarter of it, at
/// most 6 MiB): on a small heap (`exhaust`) `ENOMEM`, otherwise the target runs and sees them.
fn big_exec(t: &mut Tester, arg: &[u8], count: usize, exhaust: bool) {
    let count_text = format!("{count}\0");
    let path = {
        let mut p = sibling("t_rob3_heap");
        p.push(0);
        p
    };
    let mut argv: Vec<*const u8> =
        vec![path.as_ptr(), c"args".as_ptr().cast(), count_text.as_ptr()];
    argv.extend((0..count).map(|_| arg.as_ptr()));
    argv.push(core::ptr::null());
    let envp = [core::ptr::null()];
    let status = cowlab_userland::test::in_child(|| {
        if let Ok(mut r) = getrlimit(RLIMIT_STACK) {
            r.cur = r.max.min(64 << 20);
            let _ = setrlimit(RLIMIT_STACK, r);
        }
        let path = CStr::from_bytes_with_nul(&path).unwrap_or(c"/t_rob3_heap");
        let e = execve(path, &argv, &envp);
        e.0
    });
    let kib = count * ARG_LEN / 1024;
    if exhaust {
        t.eq(
            &format!("exec with {kib} KiB of arguments on an 8 MiB heap: ENOMEM"),
            status,
            ENOMEM.0 << 8,
        );
    } else {
        t.eq(
            &format!("exec with {kib} KiB of arguments: the target sees them all"),
            status,
            40 << 8,
        );
    }
}

/// `/tmp/rob3hNNNNNxxx...` with its NUL, built on the stack (no user heap: MemFree is compared).
fn file_name(i: usize) -> [u8; 11 + NAME_LEN] {
    let mut name = [b'x'; 11 + NAME_LEN];
    name[..10].copy_from_slice(b"/tmp/rob3h");
    let mut n = i;
    for k in (0..5).rev() {
        name[5 + 5 + k] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    name[10 + NAME_LEN] = 0;
    name
}

/// [`FILES`] empty tmpfs files with long names; how many were made.
fn make_files(t: &mut Tester) -> usize {
    let mut made = 0;
    for i in 0..FILES {
        let name = file_name(i);
        let Ok(path) = CStr::from_bytes_with_nul(&name) else {
            break;
        };
        match open_mode(path, O_CREAT | O_RDWR, 0o600) {
            Ok(fd) => {
                let _ = close(fd);
                made += 1;
            }
            Err(_) => break,
        }
    }
    t.eq("tmpfs files with long names made", made, FILES);
    made
}

fn remove_files(made: usize) {
    for i in 0..made {
        let name = file_name(i);
        if let Ok(path) = CStr::from_bytes_with_nul(&name) {
            let _ = unlink(path);
        }
    }
}

/// [`VMAS`] VMAs: one anonymous mapping, every other page made read-only.
fn make_vmas(t: &mut Tester) -> (usize, usize) {
    let len = VMAS * 4096;
    let Ok(base) = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
        t.check("mmap for the VMAs", false);
        return (0, 0);
    };
    let mut ok = true;
    for i in (0..VMAS).step_by(2) {
        ok &= mprotect(base + i * 4096, 4096, PROT_READ).is_ok();
    }
    t.check("every other page of the mapping made read-only", ok);
    (base, len)
}

/// The names `getdents64` lists in /tmp that this program made.
fn count_names(b: &mut Bufs) -> Result<usize, Errno> {
    let fd = open(c"/tmp", O_RDONLY | O_DIRECTORY)?;
    let buf = &mut b.dents;
    let mut count = 0;
    let result = loop {
        match getdents64(fd, buf) {
            Ok(0) => break Ok(count),
            Ok(n) => {
                let mut at = 0;
                while at < n {
                    let reclen = usize::from(u16::from_le_bytes([buf[at + 16], buf[at + 17]]));
                    // This program's names only (a digit follows): the host's /tmp is shared.
                    let name = &buf[at + 19..];
                    if name.starts_with(b"rob3h") && name.get(5).is_some_and(u8::is_ascii_digit) {
                        count += 1;
                    }
                    at += reclen.max(1);
                }
            }
            Err(e) => break Err(e),
        }
    };
    let _ = close(fd);
    result
}

/// Lines of `/proc/self/maps`, read whole.
fn maps_lines(b: &mut Bufs) -> Result<usize, Errno> {
    let fd = open(c"/proc/self/maps", O_RDONLY)?;
    let buf = &mut b.maps;
    let mut lines = 0;
    let result = loop {
        match read(fd, buf) {
            Ok(0) => break Ok(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            Err(e) => break Err(e),
        }
    };
    let _ = close(fd);
    result
}

/// `poll` of 1024 entries with fd -1 (skipped) and no timeout: the ready count.
fn poll_skipped(b: &mut Bufs) -> Result<usize, Errno> {
    let fds = &mut b.pollfds;
    // SAFETY: poll(fds, len, 0) writes `revents` inside the array.
    unsafe {
        raw(
            7, // poll
            [fds.as_mut_ptr() as usize, fds.len(), 0, 0, 0, 0],
        )
    }
}

/// Writes the memfd `fd` (made before the heap filled) 64 KiB at a time, up to 512 MiB: how it
/// ended and the bytes written. The memfd is closed (its pages freed).
fn fill_memfd(b: &mut Bufs, fd: i32) -> (Result<(), Errno>, usize) {
    let mut done = 0;
    let end = loop {
        if done >= 512 << 20 {
            break Ok(());
        }
        match pwrite(fd, &b.maps, done as u64) {
            Ok(0) => break Ok(()),
            Ok(n) => done += n,
            Err(e) => break Err(e),
        }
    };
    let _ = close(fd);
    (end, done)
}

/// The program's buffers, made before the MemFree baseline.
struct Bufs {
    dents: Vec<u8>,
    maps: Vec<u8>,
    /// `struct pollfd`s: fd, then events and revents as one word.
    pollfds: Vec<[i32; 2]>,
    /// A shared page where the memfd holders report (a byte each).
    board: *mut u8,
}

/// A child holding memfds until the heap is full; reports in its byte of the shared page
/// `board` (a store cannot fail when the heap is full, where a pipe write is `ENOMEM` and left
/// the parent waiting forever), holds until `go` ends.
fn spawn_holder(board: *mut u8, go: [i32; 2]) -> Result<i32, Errno> {
    match fork()? {
        0 => {
            let _ = close(go[1]);
            let mut report = MADE_ALL;
            for _ in 0..PER_HOLDER {
                if let Err(e) = memfd_create(c"held", 0) {
                    report = if e == ENOMEM { GOT_ENOMEM } else { 2 };
                    break;
                }
            }
            // SAFETY: `board` is a live shared page mapped before the fork.
            unsafe { core::ptr::write_volatile(board, report) };
            let mut byte = [0u8];
            let _ = read(go[0], &mut byte);
            exit_now(0)
        }
        pid => Ok(pid),
    }
}

/// The holder's report in `board`, waiting up to 60 s for it (`None`: it never came).
fn holder_report(board: *mut u8) -> Option<u8> {
    for _ in 0..6000 {
        // SAFETY: `board` is a live shared page.
        let v = unsafe { core::ptr::read_volatile(board) };
        if v != NO_REPORT {
            return Some(v);
        }
        let _ = sleep_ms(10);
    }
    None
}

/// Fills the heap to its reserve with memfd holders, checks the calls answer `ENOMEM`, and
/// releases the holders.
fn full_heap(t: &mut Tester, b: &mut Bufs) {
    let (false, Ok(go)) = (b.board.is_null(), pipe()) else {
        return t.check("the report page and the pipe", false);
    };
    let board = b.board;
    let memfd = memfd_create(c"fill", 0);
    let mut holders = Vec::with_capacity(64);
    let mut full = false;
    for i in 0..60 {
        // SAFETY: the page is 4096 bytes; i < 60.
        let slot = unsafe { board.add(i) };
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(slot, NO_REPORT) };
        match spawn_holder(slot, go) {
            Ok(pid) => holders.push(pid),
            Err(ENOMEM) => {
                full = true;
                break;
            }
            Err(_) => break,
        }
        match holder_report(slot) {
            Some(MADE_ALL) => {}
            Some(GOT_ENOMEM) => {
                full = true;
                break;
            }
            _ => break,
        }
    }
    t.check_why(
        "memfd holders fill the heap to its reserve",
        full,
        format_args!("{} holders", holders.len()),
    );
    t.eq(
        "with the heap full, getdents64 of /tmp: ENOMEM",
        count_names(b),
        Err(ENOMEM),
    );
    t.eq(
        "with the heap full, a maps read: ENOMEM",
        maps_lines(b),
        Err(ENOMEM),
    );
    t.eq(
        "with the heap full, poll of 1024 entries: ENOMEM",
        poll_skipped(b),
        Err(ENOMEM),
    );
    tty_input_full_heap(t);
    let fill = match memfd {
        Ok(fd) => fill_memfd(b, fd),
        Err(e) => (Err(e), 0),
    };
    t.check_why(
        "with the heap full, writing a memfd ends in ENOMEM (its page index is on the heap)",
        matches!(fill, (Err(ENOMEM), _)),
        format_args!("{:?} after {} KiB", fill.0, fill.1 / 1024),
    );
    let _ = close(go[1]);
    let _ = close(go[0]);
    let mut all_ok = true;
    for pid in holders {
        all_ok &= matches!(waitpid(pid, 0), Ok((_, 0)));
    }
    t.check("every holder exited normally", all_ok);
}

const TCGETS: usize = 0x5401;
const TCSETS: usize = 0x5402;
const TCFLSH: usize = 0x540b;
const TIOCSTI: usize = 0x5412;
const FIONREAD: usize = 0x541b;

fn tty_ioctl(cmd: usize, arg: usize) -> Result<usize, Errno> {
    // SAFETY: `arg` points at a live local of the size `cmd` uses, or is an integer.
    unsafe { raw(16, [0, cmd, arg, 0, 0, 0]) }
}

/// Input pushed with `TIOCSTI` while the heap is full: the terminal's queue grows on the heap,
/// so each byte either lands or is dropped (never a panic); at most `MAX_INPUT` (4096) wait,
/// and a flush empties the queue. In raw mode without echo, on the console (the controlling
/// terminal in QEMU); restored after.
fn tty_input_full_heap(t: &mut Tester) {
    // struct termios: four u32 flags, c_line, c_cc[19] (36 bytes).
    let mut saved = [0u8; 36];
    if tty_ioctl(TCGETS, saved.as_mut_ptr() as usize).is_err() {
        return t.check("stdin is the console terminal (TCGETS)", false);
    }
    let mut raw_mode = saved;
    let lflag = u32::from_ne_bytes(raw_mode[12..16].try_into().unwrap_or([0; 4]));
    // ICANON (0o2) and ECHO (0o10) off.
    raw_mode[12..16].copy_from_slice(&(lflag & !0o12).to_ne_bytes());
    let _ = tty_ioctl(TCSETS, raw_mode.as_ptr() as usize);
    let mut pushed = 0;
    let mut refused = None;
    for _ in 0..5000 {
        let b = b'x';
        match tty_ioctl(TIOCSTI, &b as *const u8 as usize) {
            Ok(_) => pushed += 1,
            Err(e) => refused = Some(e),
        }
    }
    let mut waiting = 0i32;
    let _ = tty_ioctl(FIONREAD, &mut waiting as *mut i32 as usize);
    let _ = tty_ioctl(TCFLSH, 0);
    let mut after = -1i32;
    let _ = tty_ioctl(FIONREAD, &mut after as *mut i32 as usize);
    let _ = tty_ioctl(TCSETS, saved.as_ptr() as usize);
    t.check_why(
        "with the heap full, TIOCSTI input: at most MAX_INPUT bytes wait, then flushed",
        (1..=4096).contains(&waiting) && after == 0,
        format_args!("{pushed} pushed ({refused:?}), {waiting} waiting, {after} after TCFLSH"),
    );
}

fn kernel_fault_oom(t: &mut Tester) {
    const READ: usize = 16 << 20;
    let (Ok(ready), Ok(go)) = (pipe(), pipe()) else {
        return t.check("pipes", false);
    };
    let hog_kb = mem_free_kb().unwrap_or(0).saturating_sub(8 * 1024) as usize;
    let hog = match fork() {
        Ok(0) => {
            let _ = close(go[1]);
            let len = hog_kb * 1024;
            if let Ok(base) = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
                for off in (0..len).step_by(4096) {
                    // SAFETY: inside the fresh mapping.
                    unsafe { core::ptr::write_volatile((base + off) as *mut u8, 1) };
                }
            }
            let _ = write(ready[1], &[1]);
            let mut byte = [0u8];
            let _ = read(go[0], &mut byte);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(e) => return t.check_why("fork the memory holder", false, format_args!("{e:?}")),
    };
    let mut byte = [0u8];
    t.eq(
        "the holder touched its memory",
        read(ready[0], &mut byte),
        Ok(1),
    );
    let Ok(buf) = mmap(0, READ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) else {
        return t.check("mmap the read buffer", false);
    };
    // SAFETY: `buf` is a fresh READ-byte mapping of this process, used only here.
    let dst = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, READ) };
    let zero = open(c"/dev/zero", O_RDONLY);
    let mut done = 0;
    let end = loop {
        if done == READ {
            break Ok(());
        }
        match zero.and_then(|fd| read(fd, &mut dst[done..])) {
            Ok(0) => break Ok(()),
            Ok(n) => done += n,
            Err(e) => break Err(e),
        }
    };
    t.check_why(
        "a 16 MiB read from /dev/zero into untouched memory completes under OOM",
        end.is_ok() && done == READ,
        format_args!("{end:?} after {} KiB", done / 1024),
    );
    let _ = close(go[1]);
    let status = waitpid(hog, 0).map(|(_, s)| s);
    t.check_why(
        "the OOM killer chose the holder (SIGKILL), not the reader",
        matches!(status, Ok(s) if wifsignaled(s) && wtermsig(s) == 9),
        format_args!("{status:?}"),
    );
    if let Ok(fd) = zero {
        let _ = close(fd);
    }
    let _ = munmap(buf, READ);
}
