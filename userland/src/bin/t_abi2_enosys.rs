//! System calls the kernel does not implement answer `ENOSYS` every time, and cowlab's kernel
//! logs each such number once (xtask checks the console: usertest.rs `console_once`). 400 is an
//! unassigned x86_64 number, 1000 and 1001 lie past the table (all three `ENOSYS` on Linux too;
//! not 335/336, which Linux 6.11+/6.16+ assign to uretprobe/uprobe and answer with SIGILL).
#![no_std]
#![no_main]

use cowlab_userland::calls::raw;
use cowlab_userland::sys::Errno;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

const ENOSYS: i32 = 38;

fn call(nr: usize) -> Result<usize, Errno> {
    // SAFETY: the numbers called are unassigned; the kernel reads no argument.
    unsafe { raw(nr, [0; 6]) }
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi2_enosys");
    for (nr, times) in [(400usize, 3), (1000, 2), (1001, 1)] {
        for i in 0..times {
            t.eq(
                &alloc::format!("system call {nr}, call {}: ENOSYS", i + 1),
                call(nr).map_err(|e| e.0),
                Err(ENOSYS),
            );
        }
    }
    t.finish()
}

extern crate alloc;
