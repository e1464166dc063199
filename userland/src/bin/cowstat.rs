//! `cowstat`: the memory manager's counters (`/proc/cowlab/mmstat`) as an aligned table.
//! `cowstat -- PROG ARGS` runs `PROG ARGS` and prints each counter before and after it and the
//! difference (counters such as `forks` or `cow_copies` only grow; gauges such as `free_frames`
//! may fall), then exits with the program's status (128 + signal if it was killed), as init does.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use cowlab_userland::calls::{close, open, read, wexitstatus, wifexited, wtermsig};
use cowlab_userland::sys::Errno;
use cowlab_userland::{args, eprintln, print, process};

cowlab_userland::entry!(main);

const MMSTAT: &core::ffi::CStr = c"/proc/cowlab/mmstat";

/// One snapshot: the `era` line's value and the `name value` counters in file order.
struct Snapshot {
    era: String,
    counters: Vec<(String, u64)>,
}

fn snapshot() -> Result<Snapshot, Errno> {
    let fd = open(MMSTAT, 0)?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    let result = loop {
        match read(fd, &mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let _ = close(fd);
    result?;
    let text = String::from_utf8_lossy(&bytes);
    let mut snap = Snapshot {
        era: String::new(),
        counters: Vec::new(),
    };
    for line in text.lines() {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        if name == "era" {
            snap.era = value.into();
        } else if let Ok(value) = value.trim().parse() {
            snap.counters.push((name.into(), value));
        }
    }
    Ok(snap)
}

/// Prints `rows` (the first is the header) with the first column left-aligned and the others
/// right-aligned, each as wide as its widest cell, two spaces apart.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.extend(core::iter::repeat_n(' ', pad));
            } else {
                line.push_str("  ");
                line.extend(core::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        print!("{}\n", line.trim_end());
    }
}

fn fail(e: Errno) -> i32 {
    eprintln!(
        "cowstat: {}: errno {} (cowstat needs the cowlab kernel)",
        MMSTAT.to_str().unwrap_or("?"),
        e.0
    );
    1
}

fn main() -> i32 {
    let argv: Vec<&[u8]> = args().skip(1).map(|a| a.to_bytes()).collect();
    let before = match snapshot() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let program = match argv.split_first() {
        None => None,
        Some((&b"--", rest)) if !rest.is_empty() => Some(rest),
        Some(_) => {
            eprintln!("usage: cowstat [-- PROGRAM ARGS...]");
            return 2;
        }
    };
    let Some(program) = program else {
        let mut rows = Vec::from([Vec::from([String::from("counter"), String::from("value")])]);
        rows.push(Vec::from([String::from("era"), before.era.clone()]));
        for (name, value) in &before.counters {
            rows.push(Vec::from([name.clone(), alloc::format!("{value}")]));
        }
        print_table(&rows);
        return 0;
    };
    let status = match process::run(program) {
        Ok(s) if wifexited(s) => wexitstatus(s),
        Ok(s) => 128 + wtermsig(s),
        Err(e) => {
            eprintln!("cowstat: cannot run the program: errno {}", e.0);
            127
        }
    };
    let after = match snapshot() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let header = ["counter", "before", "after", "delta"].map(String::from);
    let mut rows = Vec::from([Vec::from(header)]);
    for (name, old) in &before.counters {
        let new = after
            .counters
            .iter()
            .find(|(n, _)| n == name)
            .map_or(*old, |(_, v)| *v);
        let delta = i128::from(new) - i128::from(*old);
        rows.push(Vec::from([
            name.clone(),
            alloc::format!("{old}"),
            alloc::format!("{new}"),
            if delta == 0 {
                String::from("0")
            } else {
                alloc::format!("{delta:+}")
            },
        ]));
    }
    print_table(&rows);
    print!("cowstat: exit status {status}\n");
    status
}
