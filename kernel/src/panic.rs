//! The panic handler: say what broke and where, then leave QEMU with status 2.
//!
//! A panic is a broken kernel invariant (or a failed `assert!` in an in-kernel test), never
//! something to continue from. If a test is running, the KTEST protocol line comes first,
//! exactly `KTEST FAIL <index> <name>: panicked at FILE:LINE: MSG` on one line (newlines in the
//! message are flattened), so that xtask can record the failure and boot again past it.
#![deny(unsafe_code)]

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::qemu::{self, ExitStatus};
use crate::{backtrace, ktest, serial};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    serial::break_lock_for_crash();
    if PANICKING.swap(true, Ordering::SeqCst) {
        println!("\npanicked while panicking: {}", OneLine(info.message()));
        qemu::exit(ExitStatus::Panic);
    }
    let (file, line) = info
        .location()
        .map_or(("<unknown>", 0), |l| (l.file(), l.line()));
    let message = OneLine(info.message());
    if let Some(test) = ktest::current() {
        println!(
            "KTEST FAIL {} {}: panicked at {file}:{line}: {message}",
            test.index, test.name
        );
    }
    println!("panicked at {file}:{line}: {message}");
    backtrace::print_current();
    qemu::exit(ExitStatus::Panic)
}

/// Displays its contents with every newline replaced by a space, for one-line protocol output.
struct OneLine<T>(T);

impl<T: fmt::Display> fmt::Display for OneLine<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        struct Flatten<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl Write for Flatten<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for (i, part) in s.split('\n').enumerate() {
                    if i > 0 {
                        self.0.write_char(' ')?;
                    }
                    self.0.write_str(part)?;
                }
                Ok(())
            }
        }
        write!(Flatten(f), "{}", self.0)
    }
}
