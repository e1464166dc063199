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
    let mut argv: alloc::vec::Vec<&[u8]> = args().skip(1).map(|a| a.to_bytes()).collect();
    // `hold_memfd=MIB PROG ARGS`: init keeps a memfd of MIB MiB open until it powers off, so
    // its last close happens on init's own exit path, racing the power-off (docs/fuzzing.md,
    // deferred evictions).
    if let Some(mib) = argv
        .first()
        .and_then(|a| a.strip_prefix(b"hold_memfd="))
        .and_then(|n| core::str::from_utf8(n).ok()?.parse::<i64>().ok())
    {
        argv.remove(0);
        if let Ok(fd) = cowlab_userland::calls::memfd_create(c"init-hold", 0) {
            let made = cowlab_userland::calls::fallocate(fd, 0, 0, mib << 20);
            println!("init: holding a memfd of {mib} MiB: {made:?}");
        }
    }
    let status = if argv.is_empty() {
        if cowlab_userland::calls::stat(c"/bin/sh").is_ok() {
            run(&[b"/bin/sh"])
        } else {
            run(&[b"cowsh"])
        }
    } else {
        let program = resolve(argv[0]);
        let mut argv = argv;
        argv[0] = &program;
        run(&argv)
    };
    if sys::getpid() == 1 {
        let _ = power_off(status);
    }
    status
}

extern crate alloc;

/// A bare program name from the command line as the kernel's exec would find it (`/NAME`,
/// cowlab's own programs), else `/bin/NAME` (BusyBox's applets: `cargo xtask qemu -- sh -c
/// '...'`), else unchanged (exec then reports what is missing). Names with a `/` are paths.
fn resolve(name: &[u8]) -> alloc::vec::Vec<u8> {
    let exists = |dir: &[u8]| {
        let mut path = alloc::vec::Vec::from(dir);
        path.extend_from_slice(name);
        path.push(0);
        core::ffi::CStr::from_bytes_with_nul(&path)
            .is_ok_and(|p| cowlab_userland::calls::stat(p).is_ok())
    };
    if name.contains(&b'/') || exists(b"/") || !exists(b"/bin/") {
        return name.to_vec();
    }
    let mut path = b"/bin/".to_vec();
    path.extend_from_slice(name);
    path
}

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
