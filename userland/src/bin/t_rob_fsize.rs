//! `RLIMIT_FSIZE` (issue 17): a regular file may not grow past the writer's limit. A write that
//! starts below it is cut short at the limit; one that starts at or past it, an `O_APPEND`
//! write to a file already at the limit, an `ftruncate` or a memfd `fallocate` (even with
//! `FALLOC_FL_KEEP_SIZE`, as shmem) past it fail with `EFBIG` after SIGXFSZ, whose default
//! action kills (checked in a child); shrinking, pipes and `/dev/null` are not limited. Runs on
//! the host Linux too.
#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::rlimit::*;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::{in_child, Tester};

cowlab_userland::entry!(main);

const EFBIG: Errno = Errno(27);
const RLIMIT_FSIZE: u32 = 1;
const SIGXFSZ: usize = 25;
const RT_SIGACTION: usize = 13;
const SIG_IGN: usize = 1;
const LIMIT: u64 = 10_000;
const O_CREAT_TRUNC: u32 = 0o1100;

/// `sigaction(SIGXFSZ, SIG_IGN)`.
fn ignore_sigxfsz() -> bool {
    // handler, flags, restorer, mask
    let act = [SIG_IGN as u64, 0, 0, 0];
    // SAFETY: the kernel reads the action from a local; the old one is not asked for.
    unsafe { raw(RT_SIGACTION, [SIGXFSZ, act.as_ptr() as usize, 0, 8, 0, 0]) }.is_ok()
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob_fsize");
    let buf = [7u8; 8192];
    let path = c"/tmp/t_rob_fsize";
    let _ = unlink(path);
    t.check("SIGXFSZ ignored", ignore_sigxfsz());
    let old = getrlimit(RLIMIT_FSIZE);
    t.check(
        "setrlimit(RLIMIT_FSIZE, 10000)",
        set_soft(RLIMIT_FSIZE, LIMIT).is_ok(),
    );
    let fd = open_mode(path, O_RDWR | O_CREAT_TRUNC, 0o600).unwrap_or(-1);
    t.check("open a regular file", fd >= 0);
    t.eq(
        "a write below the limit is whole",
        write(fd, &buf),
        Ok(8192),
    );
    t.eq(
        "a write crossing the limit is cut at it",
        write(fd, &buf),
        Ok((LIMIT - 8192) as usize),
    );
    t.eq("a write at the limit: EFBIG", write(fd, &buf), Err(EFBIG));
    t.eq("an empty write at the limit: 0", write(fd, &[]), Ok(0));
    t.eq(
        "pwrite past the limit: EFBIG",
        pwrite(fd, &buf, LIMIT + 5000),
        Err(EFBIG),
    );
    t.eq(
        "pwrite below the limit, overwriting: whole",
        pwrite(fd, &buf[..100], 0),
        Ok(100),
    );
    t.eq(
        "ftruncate past the limit: EFBIG",
        ftruncate(fd, (LIMIT + 1) as i64),
        Err(EFBIG),
    );
    t.eq("ftruncate shrinking: ok", ftruncate(fd, 5000), Ok(0));
    t.eq(
        "ftruncate up to the limit: ok",
        ftruncate(fd, LIMIT as i64),
        Ok(0),
    );
    let _ = close(fd);
    let afd = open(path, O_WRONLY | O_APPEND).unwrap_or(-1);
    t.eq(
        "O_APPEND to a file at the limit: EFBIG",
        write(afd, &buf[..10]),
        Err(EFBIG),
    );
    let _ = close(afd);
    let mfd = memfd_create(c"t_rob_fsize", 0).unwrap_or(-1);
    t.eq(
        "fallocate growing a memfd past the limit: EFBIG",
        fallocate(mfd, 0, 0, (LIMIT + 4096) as i64),
        Err(EFBIG),
    );
    t.eq(
        "fallocate with KEEP_SIZE past the limit: EFBIG too (shmem)",
        fallocate(mfd, 1, 0, (LIMIT + 4096) as i64),
        Err(EFBIG),
    );
    t.eq(
        "memfd write past the limit: EFBIG",
        pwrite(mfd, &buf[..10], LIMIT),
        Err(EFBIG),
    );
    let _ = close(mfd);
    if let Ok([r, w]) = pipe() {
        t.eq("a pipe is not limited", write(w, &buf), Ok(8192));
        t.eq("... nor is another", write(w, &buf), Ok(8192));
        let _ = close(r);
        let _ = close(w);
    }
    if let Ok(null) = open(c"/dev/null", O_WRONLY) {
        t.eq("/dev/null at offset 0", write(null, &buf), Ok(8192));
        t.eq("/dev/null again", write(null, &buf), Ok(8192));
        let _ = close(null);
    }
    // Default SIGXFSZ: the writer dies of it (no core: RLIMIT_CORE 0 in the child).
    let status = in_child(|| {
        let act = [0u64, 0, 0, 0];
        // SAFETY: restores SIG_DFL from a local.
        let _ = unsafe { raw(RT_SIGACTION, [SIGXFSZ, act.as_ptr() as usize, 0, 8, 0, 0]) };
        let _ = set_soft(4, 0);
        let Ok(fd) = open(path, O_WRONLY) else {
            return 2;
        };
        let _ = pwrite(fd, &[1], LIMIT);
        3
    });
    t.check_why(
        "a write past the limit with SIGXFSZ's default action kills with SIGXFSZ",
        wifsignaled(status) && wtermsig(status) == SIGXFSZ as i32,
        status,
    );
    let _ = unlink(path);
    if let Ok(old) = old {
        let _ = setrlimit(RLIMIT_FSIZE, old);
    }
    t.finish()
}
