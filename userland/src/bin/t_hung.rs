//! A task stuck in an uninterruptible wait: a child's `O_DIRECT` read of `/dev/vda` is held
//! away from the device (`COWLAB_VDA_HOLD`) for three seconds, then released; the read must
//! complete with the disk's bytes and the child exit normally.
//!
//! The child sleeps in `proc::sleep_uninterruptible` meanwhile, so booted with `hung_task=1`
//! (the xtask run `t_hung hung_task=1`) the hung-task watchdog must print
//! `cowlab: watchdog: hung task: tid <n> (t_hung) ... waiting for a /dev/vda request`, which xtask
//! checks on the console. QEMU only (`/dev/vda` and its ioctls are cowlab's).

#![no_std]
#![no_main]

use cowlab_userland::calls::*;
use cowlab_userland::test::Tester;
use cowlab_userland::vda::{control, is_stamped, HOLD, RELEASE};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const OFFSET: u64 = 123 * 4096;
const HELD_MS: u64 = 3000;

fn main() -> i32 {
    let mut t = Tester::new("t_hung");
    let fd = match open(c"/dev/vda", O_RDWR | O_DIRECT) {
        Ok(fd) => fd,
        Err(e) => {
            t.check_why("open /dev/vda O_DIRECT", false, format_args!("{e:?}"));
            return t.finish();
        }
    };
    let buf = match mmap(0, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS) {
        Ok(addr) => addr,
        Err(e) => {
            t.check_why("mmap a buffer", false, format_args!("{e:?}"));
            return t.finish();
        }
    };
    t.eq("HOLD", control(fd, HOLD), Ok(0));
    let child = match fork() {
        Ok(0) => {
            // SAFETY: `buf` is a private, page-aligned, writable mapping of one page.
            let page = unsafe { core::slice::from_raw_parts_mut(buf as *mut u8, PAGE) };
            let ok = pread(fd, page, OFFSET) == Ok(PAGE) && is_stamped(page, OFFSET);
            exit_now(if ok { 0 } else { 1 })
        }
        Ok(pid) => pid,
        Err(e) => {
            t.check_why("fork", false, format_args!("{e:?}"));
            let _ = control(fd, RELEASE);
            return t.finish();
        }
    };
    let _ = sleep_ms(HELD_MS);
    t.eq(
        "RELEASE hands over the held read",
        control(fd, RELEASE),
        Ok(1),
    );
    t.eq(
        "the held read completes with the disk's bytes",
        waitpid(child, 0).map(|(_, status)| status),
        Ok(0),
    );
    let _ = munmap(buf, PAGE);
    let _ = close(fd);
    t.finish()
}
