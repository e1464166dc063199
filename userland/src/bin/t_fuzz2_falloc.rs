//! Fuzzer crash 3 (issue 17, `docs/fuzzing.md`): `fallocate(fd, 0, 0, 4 GiB)` on an ext2 file
//! wrote every new block with zeroes in one kernel pass, holding the CPU (and its own kill)
//! for over 20 s, until the disk was full (the watchdog's soft lockup; the fuzzer's hang).
//! Now the preallocation goes in 256 KiB chunks with a pause between them and stops with
//! `EINTR` for a task being killed.
//!
//! A child preallocates 4 GiB on the ext2 root (64 MiB in the host's /tmp: the subject is
//! cowlab's kernel, and the host's filesystem has unwritten extents); it is killed 200 ms in
//! and must be reaped within 3 s of the kill. The file is then removed and the filesystem's
//! free blocks are back (cowlab only: the host's disk is shared).

#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::test::{kill_and_reap, on_cowlab, Tester};

cowlab_userland::entry!(main);

fn main() -> i32 {
    let mut t = Tester::new("t_fuzz2_falloc");
    let cowlab = on_cowlab();
    let (path, dir, len) = if cowlab {
        (c"/t_fuzz2_falloc.tmp", c"/", 4u64 << 30)
    } else {
        (c"/tmp/t_fuzz2_falloc.tmp", c"/tmp", 64u64 << 20)
    };
    let _ = unlink(path);
    let free0 = statfs(dir).map(|s| s.f_bfree);
    let Ok(fd) = open_mode(path, O_RDWR | O_CREAT | O_TRUNC, 0o600) else {
        t.check("create the file", false);
        return t.finish();
    };
    let child = match fork() {
        Ok(0) => {
            let _ = fallocate(fd, 0, 0, len as i64);
            exit_now(0)
        }
        Ok(pid) => pid,
        Err(_) => {
            t.check("fork", false);
            return t.finish();
        }
    };
    let _ = sleep_ms(200);
    // Bounded at 30 s so that a kernel that never ends the child fails instead of hanging.
    let (status, took_ms) = kill_and_reap(child, 30_000);
    cowlab_userland::println!("# reaped {took_ms} ms after SIGKILL, status {status:?}");
    // Killed (9), or done before the kill on a fast filesystem (0).
    t.check_why(
        "the preallocating child ended",
        matches!(status, Ok(Some(9)) | Ok(Some(0))),
        format_args!("{status:?}"),
    );
    t.check_why(
        "it was reaped within 3 s of SIGKILL",
        took_ms < 3000,
        format_args!("{took_ms} ms"),
    );
    let size = fstat(fd).map(|st| st.st_size as u64);
    t.check_why(
        "the size is at most the requested one",
        size.is_ok_and(|s| s <= len),
        format_args!("{size:?}"),
    );
    let _ = close(fd);
    t.eq("unlink", unlink(path), Ok(0));
    if cowlab {
        t.eq(
            "the filesystem's free blocks are back",
            statfs(dir).map(|s| s.f_bfree),
            free0,
        );
    }
    t.finish()
}
