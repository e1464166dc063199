//! `sh`: a tiny shell. Reads a line, splits it at spaces, and runs the program of that name from
//! the ramdisk with the words as arguments. Built-ins: `help`, `ls`, `exit [N]`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use cowlab_userland::calls::{close, open, read, wexitstatus, wifexited, wtermsig};
use cowlab_userland::{print, println, process};

cowlab_userland::entry!(main);

fn main() -> i32 {
    println!("cowlab sh: type `help`");
    let mut line = Vec::new();
    loop {
        print!("$ ");
        line.clear();
        let mut buf = [0u8; 256];
        loop {
            match read(0, &mut buf) {
                Ok(0) => return 0,
                Ok(n) => {
                    line.extend_from_slice(&buf[..n]);
                    if line.ends_with(b"\n") {
                        break;
                    }
                }
                Err(_) => return 1,
            }
        }
        let words: Vec<&[u8]> = line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        match words.first().copied() {
            None => {}
            Some(b"help") => {
                println!("built-ins: help, ls, exit [N]; anything else runs that program")
            }
            Some(b"ls") => ls(),
            Some(b"exit") => {
                let code = words
                    .get(1)
                    .and_then(|w| core::str::from_utf8(w).ok())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return code;
            }
            Some(_) => match process::run(&words) {
                Ok(status) if wifexited(status) => {
                    if wexitstatus(status) != 0 {
                        println!("[exit {}]", wexitstatus(status));
                    }
                }
                Ok(status) => println!("[killed by signal {}]", wtermsig(status)),
                Err(e) => println!("sh: cannot run: errno {}", e.0),
            },
        }
    }
}

/// Lists the root directory by reading the ustar-backed getdents... which cowlab does not
/// have yet: instead, try the names every cowlab ramdisk has.
fn ls() {
    for name in [
        c"init",
        c"sh",
        c"status",
        c"t_syscalls",
        c"t_process",
        c"t_pipe",
        c"t_mm",
    ] {
        if let Ok(fd) = open(name, 0) {
            let _ = close(fd);
            println!("{}", name.to_str().unwrap_or("?"));
        }
    }
}
