//! The scripted console session: boots the shell (BusyBox ash as init's `/bin/sh`), types
//! commands on the serial console as a user would, and checks what comes back: a pipeline,
//! redirection into a file on the ext2 root, exit statuses, ^C of a foreground `sleep`, a
//! background job with `jobs` and `fg`, ^Z then `fg`, `ps` finding a background job through
//! `/proc`, and a clean power-off with every frame
//! back. Input goes through the kernel's line discipline and its job control (the terminal's
//! foreground process group), so this is their end-to-end test.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::qemu::{Machine, Next, QemuExit, Session};

/// One step: what to type, then a line to wait for (`Exact`: the whole line, so the echo of the
/// typed command cannot match; `Contains`), and how long to let the typed command settle
/// before the next step (a signal character must reach the foreground job, not the shell).
struct Step {
    typed: &'static [u8],
    expect: Expect,
    settle_ms: u64,
}

enum Expect {
    Exact(&'static str),
    Contains(&'static str),
    Nothing,
}

const fn step(typed: &'static [u8], expect: Expect, settle_ms: u64) -> Step {
    Step {
        typed,
        expect,
        settle_ms,
    }
}

/// The session. `130` is 128 + SIGINT: ash's status for a job ended by ^C.
const SCRIPT: &[Step] = &[
    step(b"echo one two three | wc -w\n", Expect::Exact("3"), 0),
    step(
        b"echo hello ext2 > /home/session.txt; cat < /home/session.txt\n",
        Expect::Exact("hello ext2"),
        0,
    ),
    step(
        b"ls /home | grep session\n",
        Expect::Exact("session.txt"),
        0,
    ),
    step(b"false; echo status=$?\n", Expect::Exact("status=1"), 0),
    step(
        b"sh -c 'exit 7'; echo status=$?\n",
        Expect::Exact("status=7"),
        0,
    ),
    // ^C of a foreground sleep.
    step(b"sleep 100\n", Expect::Contains("sleep 100"), 1500),
    step(b"\x03", Expect::Nothing, 500),
    step(b"echo after_int=$?\n", Expect::Exact("after_int=130"), 0),
    // A background job, `jobs`, then `fg` and ^C.
    step(b"sleep 100 &\n", Expect::Nothing, 500),
    step(b"jobs\n", Expect::Contains("Running"), 0),
    step(b"fg\n", Expect::Exact("sleep 100"), 1500),
    step(b"\x03", Expect::Nothing, 500),
    step(b"echo after_fg=$?\n", Expect::Exact("after_fg=130"), 0),
    // ^Z stops the foreground job; `fg` continues it; ^C ends it.
    step(b"sleep 100\n", Expect::Contains("sleep 100"), 1500),
    step(b"\x1a", Expect::Contains("Stopped"), 0),
    step(b"jobs\n", Expect::Contains("Stopped"), 0),
    step(b"fg\n", Expect::Exact("sleep 100"), 1500),
    step(b"\x03", Expect::Nothing, 500),
    step(b"echo after_stop=$?\n", Expect::Exact("after_stop=130"), 0),
    // BusyBox `ps` lists /proc's pid directories and reads each one's stat and cmdline: it
    // finds the background sleep (the grep's own line ends in `$`, so only the sleep counts).
    step(b"sleep 55 &\n", Expect::Nothing, 500),
    step(b"ps | grep -c 'sleep 55$'\n", Expect::Exact("1"), 0),
    step(b"kill %1; wait\n", Expect::Nothing, 500),
    step(b"exit 0\n", Expect::Nothing, 0),
];

/// How long the power-off after `exit 0` may take.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// Runs [`SCRIPT`] on a boot of `machine` (whose command line must be empty: init starts the
/// shell); the number of steps checked.
pub fn run(
    machine: &Machine,
    qemu: &Path,
    kernel_elf: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<usize> {
    let mut machine = machine.clone();
    machine.cmdline = String::new();
    let gdb_port = gdb_port();
    let mut command = machine.command(qemu);
    if let Some(port) = gdb_port {
        command.args(["-gdb", &format!("tcp:127.0.0.1:{port}")]);
    }
    let mut session = Session::start_with_input(command, kernel_elf, log)?;
    let deadline = Instant::now() + timeout;
    let hang = |session: &mut Session| {
        if let Some(port) = gdb_port {
            dump_with_gdb(session, kernel_elf, port);
        }
    };
    wait_for(
        &mut session,
        &Expect::Contains("built-in shell (ash)"),
        deadline,
        &hang,
    )
    .map_err(|e| e.context("BusyBox ash did not start (is busybox-static installed?)"))?;
    // Let ash set up job control and print its first prompt.
    std::thread::sleep(Duration::from_millis(1500));
    for (i, s) in SCRIPT.iter().enumerate() {
        // `COWLAB_SESSION_DUMP=1`: a dump before `exit 0` too (a look at a healthy guest; the
        // pause it makes is how the power-off hang of session 13 first showed here).
        if i + 1 == SCRIPT.len() && std::env::var_os("COWLAB_SESSION_DUMP").is_some() {
            hang(&mut session);
        }
        session.send(s.typed)?;
        if let Err(e) = wait_for(&mut session, &s.expect, deadline, &hang) {
            bail!(
                "step {} (typed {:?}): {e:#}; last lines:\n{}",
                i + 1,
                String::from_utf8_lossy(s.typed),
                session.tail().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(s.settle_ms));
    }
    let mut frames = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // A power-off takes well under a second after `exit 0`; a minute is a hang, and the
        // rest of the deadline is not waited out for it.
        let left = left.min(EXIT_WAIT);
        match session.next_line(left)? {
            Next::Line(line) => {
                if let Some(f) = crate::usertest::parse_frames(&line) {
                    frames = Some(f);
                }
            }
            Next::Exited(QemuExit::Kernel(0)) => break,
            Next::Exited(other) => bail!("the shell's exit 0 ended the boot with {other}"),
            Next::Silent => {
                hang(&mut session);
                session.kill("session timeout");
                bail!("no power-off after `exit 0`");
            }
        }
    }
    match frames {
        Some((free, boot)) if free == boot => Ok(SCRIPT.len()),
        other => bail!("frames after the session: {other:?} (free, boot) differ or are missing"),
    }
}

/// Reads lines until one matches `expect` (at once for `Nothing`).
fn wait_for(
    session: &mut Session,
    expect: &Expect,
    deadline: Instant,
    hang: &dyn Fn(&mut Session),
) -> Result<()> {
    loop {
        let matched = |line: &str| {
            let line = line.trim_end();
            match expect {
                Expect::Exact(want) => line == *want,
                Expect::Contains(want) => line.contains(want),
                Expect::Nothing => true,
            }
        };
        if matches!(expect, Expect::Nothing) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match session.next_line(left)? {
            Next::Line(line) if matched(&line) => return Ok(()),
            Next::Line(_) => {}
            Next::Exited(exit) => bail!("QEMU ended ({exit})"),
            Next::Silent => {
                hang(session);
                session.kill("session timeout");
                bail!("timed out waiting for a line");
            }
        }
    }
}

/// A free local port for QEMU's gdb server (`-gdb`), unless gdb is missing or
/// `COWLAB_SESSION_GDB=0`: a hang is then dumped by [`dump_with_gdb`] before QEMU is killed.
/// (The port is free when asked; another process may take it before QEMU does, and QEMU then
/// fails to start, which the session reports.)
fn gdb_port() -> Option<u16> {
    if std::env::var("COWLAB_SESSION_GDB").is_ok_and(|v| v == "0") || which_gdb().is_none() {
        return None;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    Some(listener.local_addr().ok()?.port())
}

fn which_gdb() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("gdb"))
            .find(|p| p.is_file())
    })
}

/// The guest's state at a hang, into the session's log (`[gdb]` lines): every CPU's kernel
/// backtrace, the task table (`tools/gdb/cowlab.py`'s `cowlab-ps`), and the big kernel lock's
/// and the run queues' words (who holds or is owed the lock, who waits or is halted for it,
/// what is queued where). QEMU stops while gdb is attached; it is killed right after.
/// `COWLAB_SESSION_GDB_EX` adds gdb commands (separated by `;`).
fn dump_with_gdb(session: &mut Session, kernel_elf: &Path, port: u16) {
    let Some(gdb) = which_gdb() else {
        return;
    };
    let offset = match std::fs::read(kernel_elf)
        .map_err(anyhow::Error::from)
        .and_then(|elf| crate::elf::kernel_load_offset(&elf))
    {
        Ok(offset) => offset,
        Err(e) => {
            session.note(&format!("[gdb] not run: {e:#}"));
            return;
        }
    };
    let mut command = std::process::Command::new(gdb);
    command
        .args(["-q", "-nx", "-batch"])
        .arg("-ex")
        .arg(format!(
            "symbol-file -o {offset:#x} {}",
            kernel_elf.display()
        ))
        .arg("-ex")
        .arg(format!("source {}", crate::gdb::script().display()))
        // QEMU answers from its main loop, busy with four TCG vCPUs on a loaded host: gdb's
        // 2 s default timed out.
        .args([
            "-ex",
            "set tcp connect-timeout 60",
            "-ex",
            "set remotetimeout 60",
        ])
        .arg("-ex")
        .arg(format!("target remote 127.0.0.1:{port}"))
        .args(["-ex", "info threads", "-ex", "thread apply all bt 40"])
        .args(["-ex", "cowlab-ps"])
        // The words are printed by Rust path, unquoted, in Rust's syntax whatever the selected
        // frame: quoted, the Rust parser read a character literal ("overlong character
        // literal", every word of session 13's dumps).
        .args(["-ex", "set language rust"]);
    for word in [
        "kernel::bkl::OWNER",
        "kernel::bkl::STARVING",
        "kernel::bkl::WAITING",
        "kernel::bkl::WAITERS",
        "kernel::bkl::DEPTH",
        "kernel::proc::sched::IDLE_CPUS",
        "kernel::proc::sched::SHUTDOWN",
        "kernel::proc::runqueue::LEN",
        "kernel::proc::runqueue::BUSY",
        "kernel::proc::runqueue::KICK",
    ] {
        command.arg("-ex").arg(format!("print {word}"));
    }
    let extra = std::env::var("COWLAB_SESSION_GDB_EX").unwrap_or_default();
    for ex in extra.split(';').filter(|e| !e.trim().is_empty()) {
        command.arg("-ex").arg(ex.trim());
    }
    session.note("[xtask] the guest hangs: its state from QEMU's gdb server");
    match command.stdin(std::process::Stdio::null()).output() {
        Ok(out) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines() {
                session.note(&format!("[gdb] {line}"));
            }
        }
        Err(e) => session.note(&format!("[gdb] not run: {e}")),
    }
}
