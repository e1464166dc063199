//! `init`: the first user program. With arguments (the kernel command line's `-- PROG ARGS`)
//! it runs `PROG ARGS`, waits for it, and powers off with its exit status (128 + signal if it
//! was killed). Without, it runs the shell: BusyBox's `/bin/sh` where the root image has it,
//! else `cowsh`. On the host Linux (where it is not pid 1) it runs
//! the program the same way and exits with its status instead of powering off.
#![no_std]
#![no_main]

use cowlab_userland::calls::{power_off, waitpid, wexitstatus, wifexited, wtermsig};
use cowlab_userland::sys::Errno;
use cowlab_userland::{args, print, println, process, sys};

cowlab_userland::entry!(main);

fn main() -> i32 {
    print!("init: argv =");
    for arg in args() {
        print!(" {:?}", arg.to_str().unwrap_or("<not UTF-8>"));
    }
    println!();
    let argv: alloc::vec::Vec<&[u8]> = args().skip(1).map(|a| a.to_bytes()).collect();
    let status = if argv.is_empty() {
        if cowlab_userland::calls::stat(c"/bin/sh").is_ok() {
            run(&[b"/bin/sh"])
        } else {
            run(&[b"cowsh"])
        }
    } else {
        run(&argv)
    };
    if sys::getpid() == 1 {
        let _ = power_off(status);
    }
    status
}

extern crate alloc;

/// Waits for any child until `pid` ends; returns its wait status. As pid 1, init adopts every
/// orphan (Linux `find_new_reaper` hands them to the namespace's init): waiting for any child
/// instead of only `pid` is what reaps them, or their zombies would fill the task table.
fn reap_until(pid: i32) -> Result<i32, Errno> {
    loop {
        match waitpid(-1, 0) {
            Ok((reaped, status)) if reaped == pid => return Ok(status),
            Ok(_) => {}
            Err(Errno(sys::EINTR)) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs `argv`; its exit status, or 128 + the signal that killed it.
fn run(argv: &[&[u8]]) -> i32 {
    match process::spawn(argv).and_then(reap_until) {
        Ok(status) if wifexited(status) => wexitstatus(status),
        Ok(status) => {
            println!("init: program killed by signal {}", wtermsig(status));
            128 + wtermsig(status)
        }
        Err(e) => {
            println!("init: cannot run program: errno {}", e.0);
            127
        }
    }
}
