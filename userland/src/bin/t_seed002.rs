//! Seed 002: a long-term write pin of a shared file mapping, and the write the filesystem never
//! sees (SEMANTICS.md `writable_file_mapping_allowed`; docs/file-memory.md).
//!
//! A one-page file in `<dir>/t_seed002.PID` (`<dir>` the first argument that is not `era=`, else
//! the working directory) is mapped `MAP_SHARED` and written through the mapping; its page is
//! registered as an io_uring buffer (a `FOLL_WRITE|FOLL_LONGTERM` pin).
//!
//! Default (2023 rules, and the host Linux): the registration fails with `EFAULT`.
//!
//! `era=2022` (cowlab booted with `era=2022`): the registration succeeds. The program unmaps
//! the page, forces writeback (`fsync`: the page is written and cleaned), then the pin holder
//! writes the page behind the filesystem's back (`READ_FIXED` from `/dev/vda`, DMA into the
//! pinned page). `read(2)` now shows the DMA'd bytes (memory holds them), but the page is
//! clean: once the pin is gone and the file closed, its cache is dropped (as at unmount) and the
//! file reads back what was on disk before: the lost write.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec;

use cowlab_userland::calls::*;
use cowlab_userland::cpath::{sys, CPath as P};
use cowlab_userland::println;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{on_cowlab, Tester};
use cowlab_userland::uring::Ring;

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PROT_RW: usize = 3;
const EFAULT: i32 = 14;
/// Where on `/dev/vda` the pin holder's data comes from (past anything the image's tests use
/// at the start; the disk is a snapshot, so the write is thrown away at power-off).
const VDA_OFFSET: u64 = 8 << 20;

fn errno_of<T>(r: Result<T, Errno>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.0,
    }
}

fn first_byte(fd: i32) -> Option<u8> {
    let mut b = [0u8; 1];
    pread(fd, &mut b, 0).ok().filter(|&n| n == 1).map(|_| b[0])
}

fn main() -> i32 {
    let mut t = Tester::new("t_seed002");
    let mut era2022 = false;
    let mut base = String::from(".");
    for arg in cowlab_userland::args::args().skip(1) {
        match arg.to_str().unwrap_or("") {
            "era=2022" => era2022 = true,
            a if !a.contains('=') => base = String::from(a),
            _ => {}
        }
    }
    if era2022 && !on_cowlab() {
        println!("t_seed002: era=2022 is a cowlab boot option; nothing to run on the host");
        return t.finish();
    }
    let dir = format!("{base}/t_seed002.{}", cowlab_userland::sys::getpid());
    t.eq(
        "mkdir",
        errno_of(sys(83, &[P::new(&dir).c().as_ptr() as usize, 0o755])),
        0,
    );
    let name = format!("{dir}/pinned");
    let path = P::new(&name);
    let fd = open_mode(path.c(), O_CREAT | O_EXCL | O_RDWR, 0o644).unwrap_or(-1);
    t.eq("write a page of 'A'", write(fd, &[b'A'; PAGE]), Ok(PAGE));
    t.eq("fsync", errno_of(sys(74, &[fd as usize])), 0);
    let map = sys(9, &[0, PAGE, PROT_RW, MAP_SHARED as usize, fd as usize, 0]).unwrap_or(0);
    t.check("mmap MAP_SHARED PROT_READ|PROT_WRITE", map != 0);
    // SAFETY: `map` is a live writable one-page mapping.
    unsafe { core::ptr::write_volatile(map as *mut u8, b'B') };

    let ring = Ring::new(4);
    t.check("io_uring_setup", ring.is_ok());
    let Ok(ring) = ring else {
        return t.finish();
    };
    let registered = io_uring_register_buffers(ring.fd, &[[map, PAGE]]);
    if !era2022 {
        t.eq(
            "registering the shared file page (FOLL_LONGTERM|FOLL_WRITE) is EFAULT",
            errno_of(registered),
            EFAULT,
        );
        let _ = munmap(map, PAGE);
        t.eq(
            "the store through the mapping is in the file",
            first_byte(fd),
            Some(b'B'),
        );
    } else {
        t.eq(
            "era 2022: the registration pins the page",
            errno_of(registered),
            0,
        );
        let _ = munmap(map, PAGE);
        t.eq(
            "fsync writes the page back and cleans it",
            errno_of(sys(74, &[fd as usize])),
            0,
        );
        let vda = open(c"/dev/vda", O_RDWR).unwrap_or(-1);
        t.eq(
            "put a page of 'V' on /dev/vda",
            pwrite(vda, &[b'V'; PAGE], VDA_OFFSET),
            Ok(PAGE),
        );
        let sqe = IoUringSqe {
            opcode: IORING_OP_READ_FIXED,
            fd: vda,
            off: VDA_OFFSET,
            addr: map as u64,
            len: PAGE as u32,
            user_data: 2,
            buf_index: 0,
            ..IoUringSqe::default()
        };
        t.eq(
            "the pin holder DMAs 'V' into the pinned page (READ_FIXED)",
            ring.run(sqe).map(|c| c.res),
            Ok(PAGE as i32),
        );
        t.eq(
            "memory holds the pin holder's write (read(2) through the cache)",
            first_byte(fd),
            Some(b'V'),
        );
        t.eq("unregister", io_uring_unregister_buffers(ring.fd), Ok(0));
        let _ = close(vda);
        let _ = close(fd);
        let drop = open(c"/proc/sys/vm/drop_caches", O_WRONLY).unwrap_or(-1);
        t.eq("drop_caches", write(drop, b"3"), Ok(1));
        let _ = close(drop);
        let fd2 = open(path.c(), O_RDONLY).unwrap_or(-1);
        let mut back = vec![0u8; PAGE];
        t.eq(
            "reread the file from disk",
            pread(fd2, &mut back, 0),
            Ok(PAGE),
        );
        t.check_why(
            "the lost write: the disk holds the fsync'ed 'B', not the 'V' memory held",
            back[0] == b'B' && back[1..].iter().all(|&b| b == b'A'),
            format!("first bytes {:?}", &back[..4]),
        );
        let _ = close(fd2);
    }
    ring.close();
    let _ = close(fd);
    t.eq("unlink", errno_of(unlink(path.c())), 0);
    t.eq("rmdir", errno_of(rmdir(P::new(&dir).c())), 0);
    t.finish()
}
