//! `cowstat -- status 3` (the README's mmstat table around a command): on cowlab its output is
//! a header and one row per `/proc/cowlab/mmstat` counter, every row as wide as the header (the
//! columns aligned), `forks` grown by at least the one fork that ran the command, and cowstat's
//! exit status is the command's. On the host (no `/proc/cowlab`) cowstat must fail with status 1
//! and print nothing on stdout.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use cowlab_userland::calls::*;
use cowlab_userland::process;
use cowlab_userland::test::{on_cowlab, sibling, Tester};

cowlab_userland::entry!(main);

/// Runs `cowstat ARGS` with its stdout on a pipe: (its output, its wait status).
fn run_cowstat(args: &[&[u8]]) -> (String, i32) {
    let path = sibling("cowstat");
    let mut argv: Vec<&[u8]> = Vec::from([path.as_slice()]);
    argv.extend_from_slice(args);
    let [r, w] = pipe().expect("pipe");
    let pid = fork().expect("fork");
    if pid == 0 {
        let _ = dup2(w, 1);
        let _ = close(r);
        let _ = close(w);
        let _ = process::exec(&argv);
        exit_now(127);
    }
    let _ = close(w);
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = read(r, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    let _ = close(r);
    let status = loop {
        match waitpid(pid, 0) {
            Ok((_, s)) => break s,
            Err(e) if e.0 == cowlab_userland::sys::EINTR => {}
            Err(_) => break -1,
        }
    };
    (String::from_utf8_lossy(&out).into(), status)
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi2_cowstat");
    let (out, status) = run_cowstat(&[b"--", b"status", b"3"]);
    if !on_cowlab() {
        t.check_why(
            "without /proc/cowlab cowstat exits 1",
            wifexited(status) && wexitstatus(status) == 1,
            alloc::format!("wait status {status:#x}"),
        );
        t.check_why("and prints nothing on stdout", out.is_empty(), &out);
        return t.finish();
    }
    t.check_why(
        "cowstat -- status 3 exits 3",
        wifexited(status) && wexitstatus(status) == 3,
        alloc::format!("wait status {status:#x}"),
    );
    let table: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("status:") && !l.starts_with("cowstat:"))
        .collect();
    let header: Vec<&str> = table
        .first()
        .map_or(Vec::new(), |h| h.split_whitespace().collect());
    t.eq(
        "header",
        header,
        Vec::from(["counter", "before", "after", "delta"]),
    );
    let width = table.first().map_or(0, |h| h.len());
    t.check_why(
        "every row as wide as the header",
        table.len() > 20 && table.iter().all(|l| l.len() == width),
        &out,
    );
    let forks: Option<Vec<&str>> = table
        .iter()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&"forks"));
    let grew = forks
        .as_ref()
        .and_then(|c| Some(c.get(2)?.parse::<u64>().ok()? > c.get(1)?.parse::<u64>().ok()?));
    t.check_why(
        "the forks counter grew across the command",
        grew == Some(true),
        &out,
    );
    t.check_why(
        "the exit line names the status",
        out.lines().any(|l| l == "cowstat: exit status 3"),
        &out,
    );
    t.finish()
}
