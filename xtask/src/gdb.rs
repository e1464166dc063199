//! `cargo xtask gdb`: boots cowlab in QEMU stopped at its first instruction with a gdb server,
//! and runs gdb attached to it with the kernel's symbols at their run-time base and
//! `tools/gdb/cowlab.py` loaded (pretty-printers for `Pte`, `FrameMeta`, `VirtAddr`, and the
//! commands `cowlab-ps`, `cowlab-vmas`, `cowlab-pte`, `cowlab-frame`). The guest's console goes
//! to a log file (gdb owns the terminal); QEMU ends with gdb.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use clap::Args;
use cowlab_boot::Firmware;

use crate::qemu::{compose_cmdline, Accel, Machine};
use crate::{deps, image, target_dir, workspace_root, BuildArgs};

#[derive(Args, Debug)]
pub struct GdbArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Raw kernel command-line tokens (e.g. "loglevel=debug").
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Boot under this rule set (2009, 2016, 2020, 2022, 2023).
    #[arg(long, value_name = "YEAR", value_parser = crate::era::parse)]
    pub era: Option<u32>,
    /// Run gdb non-interactively on this command file (`gdb -batch -x FILE`) instead of a
    /// prompt, e.g. to script a breakpoint and `cowlab-ps`.
    #[arg(long, value_name = "FILE")]
    pub batch: Option<PathBuf>,
    /// Number of CPUs (`-smp N`, as `qemu --smp`; default 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub smp: u32,
    /// Collect gdb's output instead of showing it (the harness tier's self-test).
    #[arg(skip)]
    pub capture: bool,
    /// The program `init` runs, with its arguments.
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    pub program: Vec<String>,
}

/// The gdb script checked in with the tree.
pub fn script() -> PathBuf {
    workspace_root().join("tools/gdb/cowlab.py")
}

pub fn run(args: &GdbArgs) -> Result<ExitCode> {
    match start(args)? {
        Outcome::Exited(true) => Ok(ExitCode::SUCCESS),
        Outcome::Exited(false) => Ok(ExitCode::FAILURE),
        Outcome::Captured(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn start(args: &GdbArgs) -> Result<Outcome> {
    let gdb = which("gdb").context(
        "gdb is not installed (Debian/Ubuntu: apt-get install gdb); `cargo xtask qemu --gdb` \
         starts QEMU alone for another debugger",
    )?;
    let qemu = deps::qemu()?;
    let built = image::build_all(&args.build, Firmware::Bios)?;
    let tokens = crate::era::with_token(args.era, args.cmdline.as_deref().unwrap_or(""));
    let machine = Machine {
        image: built.image.clone(),
        ovmf: None,
        accel: Accel::Tcg,
        gdb: false,
        cmdline: compose_cmdline(Some(&tokens), &args.program)?,
        disk: Some(built.disk.clone()),
        root: Some((
            crate::rootfs::ensure(&target_dir(), &built.files, false)?,
            false,
        )),
    };
    // A free port rather than `-s`'s 1234: several QEMUs may wait for debuggers on one machine.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = target_dir().join("gdb-console.log");
    let mut command = crate::qemu::with_smp(Some(args.smp), || machine.command(&qemu));
    command
        .args(["-S", "-gdb", &format!("tcp:127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    eprintln!(
        "xtask: QEMU waits for gdb on :{port}; the guest console goes to {}",
        log.display()
    );
    let offset = crate::elf::kernel_load_offset(&std::fs::read(&built.kernel_elf)?)?;
    let mut gdb_command = Command::new(gdb);
    gdb_command.args(["-q", "-nx"]);
    if args.batch.is_some() {
        gdb_command.arg("-batch");
    }
    gdb_command
        .arg("-ex")
        .arg(format!(
            "symbol-file -o {offset:#x} {}",
            built.kernel_elf.display()
        ))
        .arg("-ex")
        .arg(format!("source {}", script().display()))
        .arg("-ex")
        .arg(format!("target remote 127.0.0.1:{port}"));
    if let Some(file) = &args.batch {
        gdb_command.arg("-x").arg(file);
    } else {
        eprintln!(
            "xtask: the kernel is not mapped yet: use `hbreak` for the first breakpoint, then `continue`"
        );
    }
    let result = if args.capture {
        gdb_command
            .stdin(Stdio::null())
            .output()
            .context("running gdb")
            .map(|output| {
                let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&output.stderr));
                Outcome::Captured(text)
            })
    } else {
        gdb_command
            .status()
            .context("running gdb")
            .map(|status| Outcome::Exited(status.success()))
    };
    child.kill().ok();
    child.wait().ok();
    result
}

enum Outcome {
    Exited(bool),
    Captured(String),
}

/// The harness tier's check of the gdb script: `tools/gdb/selftest.gdb` in batch mode must show
/// init (pid 1) in `cowlab-ps`, its VMAs and a present PTE with its frame's metadata.
pub fn selftest() -> Result<()> {
    let args = GdbArgs {
        build: BuildArgs {
            release: false,
            add: Vec::new(),
            kernel: None,
        },
        cmdline: None,
        era: None,
        batch: Some(workspace_root().join("tools/gdb/selftest.gdb")),
        smp: 1,
        program: Vec::new(),
        capture: true,
    };
    let Outcome::Captured(text) = start(&args)? else {
        anyhow::bail!("gdb output was not captured");
    };
    let expected = [
        ("cowlab-ps: init is task 1", "    1     1 "),
        ("cowlab-ps: its name", " init"),
        // A state with fields prints as its variant's name (it once printed "None}").
        ("cowlab-ps: a blocked task's state", "     0 Blocked    "),
        // Where the text starts moves with init's size; the ELF base and the permissions do not.
        (
            "cowlab-vmas: the first VMA at the ELF base",
            "0x000000400000-",
        ),
        ("cowlab-vmas: the text VMA", " r-x Private "),
        ("cowlab-pte: a present leaf PTE", "PT  ["),
        ("cowlab-pte: the frame's metadata", "FrameMeta(refcount="),
        (
            "cowlab-break on a generic function by short name",
            "cowlab-break: 1 breakpoint(s) on do_wp_page",
        ),
        ("the VirtAddr printer", "printer: VirtAddr(0x400000)"),
        (
            "the Pte printer",
            "printer: Pte(0x8000000006670265 frame=0x6670000 P|U|A|D|SOFTDIRTY|NX)",
        ),
        (
            "cowlab-ps's walk of an empty task table (it once failed: no member named height)",
            "empty table: 0 items",
        ),
        (
            "the FrameMeta printer",
            "printer: FrameMeta(refcount=2 mapcount=1 pincount=1 flags=ANON|ANON_EXCLUSIVE)",
        ),
    ];
    for (what, needle) in expected {
        if !text.contains(needle) {
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            anyhow::bail!(
                "{what}: no {needle:?} in gdb's output; its end:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|p| p.is_file())
}
