//! `cowsh`: the tiny fallback shell, for a root without BusyBox's `/bin/sh` (the ramdisk).
//! Reads a line, splits it at spaces, and runs the program of that name from the ramdisk with
//! the words as arguments. Built-ins: `help`, `ls`, `exit [N]`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use cowlab_userland::calls::{close, open, read, wexitstatus, wifexited, wtermsig};
use cowlab_userland::{print, println, process};

cowlab_userland::entry!(main);

fn main() -> i32 {
    println!("cowsh: type `help`");
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

/// Lists the root directory with getdents64.
fn ls() {
    let Ok(dir) = open(c"/", 0o200000) else {
        println!("ls: cannot open /");
        return;
    };
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = match unsafe {
            cowlab_userland::calls::raw(
                cowlab_userland::sys::nr::GETDENTS64,
                [dir as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
            )
        } {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if !name.starts_with(b".") {
                println!("{}", core::str::from_utf8(name).unwrap_or("?"));
            }
            at += reclen.max(1);
        }
    }
    let _ = close(dir);
}
