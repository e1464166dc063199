//! The runtime every cowlab user program links: start-up, Linux system calls, printing, panics.
//!
//! The programs are static Linux x86_64 executables that speak only the Linux system-call ABI, so
//! the same ELF runs in ring 3 on cowlab and directly on the host Linux (which is how
//! `cargo xtask test` checks them before the kernel can run them). There is no libc: [`start`]
//! is the process entry point, reading the initial stack the way the System V ABI lays it out
//! (`argc`, the `argv` pointers, a NULL, the `envp` pointers, a NULL), and everything else is a
//! thin wrapper over the `syscall` instruction in [`sys`].
//!
//! A program is a `fn main() -> i32` named with [`entry!`]; its result is the exit status.
#![no_std]

extern crate alloc as alloc_crate;

pub mod aio;
pub mod alarm;
pub mod alloc;
pub mod args;
pub mod calls;
pub mod cpath;
pub mod cred;
pub mod epoll;
pub mod io;
pub mod pcfile;
pub mod process;
pub mod rlimit;
pub mod rng;
pub mod sched;
pub mod start;
pub mod sys;
pub mod test;
pub mod thread;
pub mod uring;
pub mod vda;

pub use args::{args, env};

/// Names the program's `fn main() -> i32`; the runtime calls it after start-up and passes its
/// result to `exit_group`.
///
/// ```ignore
/// cowlab_userland::entry!(main);
/// fn main() -> i32 { 0 }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(no_mangle)]
        fn __cowlab_user_main() -> i32 {
            let main: fn() -> i32 = $main;
            main()
        }
    };
}

/// Prints to standard output (fd 1). Output of one call is written with as few `write`s as its
/// length allows (a stack buffer, no allocation).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::io::print_to($crate::io::STDOUT, format_args!($($arg)*))
    };
}

/// [`print!`] with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {
        $crate::io::print_to($crate::io::STDOUT, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints to standard error (fd 2).
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::io::print_to($crate::io::STDERR, format_args!($($arg)*))
    };
}

/// [`eprint!`] with a newline.
#[macro_export]
macro_rules! eprintln {
    () => { $crate::eprint!("\n") };
    ($($arg:tt)*) => {
        $crate::io::print_to($crate::io::STDERR, format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Exit status of a program that panicked (Rust's own convention for a panicking `main`).
pub const PANIC_EXIT_STATUS: i32 = 101;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    eprintln!("{}", info);
    sys::exit_group(PANIC_EXIT_STATUS)
}
