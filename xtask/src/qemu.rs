//! `cargo xtask qemu`, and the QEMU machine every boot of cowlab uses.
//!
//! The machine (docs/architecture.md): the disk image as a raw drive, the serial console on
//! stdio, no display, `-no-reboot` (so a triple fault ends QEMU with status 0 instead of looping),
//! 1 GiB, a `qemu64` CPU under TCG, `isa-debug-exit` at port 0xf4 for the kernel's exit status,
//! the data disk (`disk`) as a legacy virtio-blk PCI device, and the kernel command line as the
//! fw_cfg file `opt/cowlab/cmdline`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cowlab_boot::Firmware;

use crate::symbolize::Symbolizer;
use crate::{deps, image, BuildArgs};

#[derive(Args, Debug)]
pub struct QemuArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Boot through UEFI (OVMF; Debian package `ovmf`) instead of BIOS.
    #[arg(long)]
    pub uefi: bool,
    /// Use KVM (`-accel kvm -cpu host`) instead of TCG: faster, where /dev/kvm exists and
    /// works (the tests and the benchmark assume TCG).
    #[arg(long)]
    pub kvm: bool,
    /// Deterministic TCG (`-icount shift=0,sleep=off`, a virtual RTC): the guest TSC counts
    /// retired instructions, as under `cargo xtask bench`.
    #[arg(long, conflicts_with = "kvm")]
    pub icount: bool,
    /// Start QEMU stopped with a gdb server on :1234 (`-s -S`) and print the gdb command to
    /// attach.
    #[arg(long)]
    pub gdb: bool,
    /// Kill QEMU after this many seconds (default: no limit).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Raw kernel command-line tokens, space separated (e.g. "era=2009 loglevel=debug").
    #[arg(long, value_name = "TOKENS", allow_hyphen_values = true)]
    pub cmdline: Option<String>,
    /// Boot under this historical rule set (SEMANTICS.md section 9): 2009, 2016, 2020, 2022 or
    /// 2023 (the default). Adds `era=YEAR` to the kernel command line.
    #[arg(long, value_name = "YEAR", value_parser = crate::era::parse)]
    pub era: Option<u32>,
    /// Attach the root filesystem image (`target/cowlab-root.img`, see `rootfs`) writable and
    /// keep it between runs, instead of a fresh image in snapshot mode.
    #[arg(long)]
    pub persist: bool,
    /// Number of CPUs (`-smp N`); above 1, plain TCG runs them in parallel host threads
    /// (`-accel tcg,thread=multi`), `--icount` round-robins them deterministically. Every CPU
    /// runs tasks unless the command line says `smp_sched=0`.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Guest RAM (`-m`): MiB, or with a `G`/`M` suffix (`3G`); default 1 GiB. Above 1 GiB the
    /// CPU also gets 1 GiB page support (`qemu64,+pdpe1gb`), which 1 GiB hugetlb pages need.
    #[arg(long, value_name = "SIZE", value_parser = parse_mem)]
    pub mem: Option<u32>,
    /// The program `init` runs, with its arguments (passed on the kernel command line after
    /// `--`, quoted where they hold spaces or quotes or are empty).
    #[arg(last = true, value_name = "PROGRAM ARGS")]
    pub program: Vec<String>,
}

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Software emulation: slow, deterministic enough, works everywhere. The default.
    Tcg,
    /// Hardware virtualization with the host's CPU model.
    Kvm,
    /// Software emulation with `-icount shift=0,sleep=off` and a virtual-clock RTC: one TSC tick
    /// per retired guest instruction, so timings are instruction counts that repeat exactly.
    Icount,
}

/// The QEMU options of [`Accel::Icount`] after `-cpu qemu64 -accel tcg` (LINUX-BASELINE.md).
pub const ICOUNT_ARGS: [&str; 4] = [
    "-icount",
    "shift=0,sleep=off",
    "-rtc",
    "base=2024-01-01T00:00:00,clock=vm",
];

/// The CPU count of every machine this xtask process boots (`--smp`): one setting for the whole
/// command, so the tiers' many `Machine`s need no field of their own.
static SMP: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Sets the CPU count of the machines booted from now on (`--smp N`).
pub fn set_smp(cpus: u32) {
    SMP.store(cpus.max(1), std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    /// [`with_smp`]'s CPU count for the machines this thread boots, over [`SMP`].
    static SMP_HERE: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the machines it boots on this thread given `cpus` CPUs (`None`: [`SMP`]); how
/// a test tier boots its own CPU count while other tiers' jobs run beside it.
pub fn with_smp<R>(cpus: Option<u32>, f: impl FnOnce() -> R) -> R {
    let before = SMP_HERE.with(|c| c.replace(cpus.map(|n| n.max(1))));
    let result = f();
    SMP_HERE.with(|c| c.set(before));
    result
}

/// Guest RAM of every machine this xtask process boots (`--mem`), in MiB.
static MEM_MIB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(DEFAULT_MEM_MIB);

/// The machine's RAM unless `--mem` or the program ([`crate::usertest::own_mem_mib`]) asks for
/// more: 1 GiB.
pub const DEFAULT_MEM_MIB: u32 = 1024;

/// Sets the RAM of the machines booted from now on (`--mem SIZE`).
pub fn set_mem(mib: u32) {
    MEM_MIB.store(mib, std::sync::atomic::Ordering::Relaxed);
}

/// `--mem`'s value: `3G`, `3072M` or `3072` (MiB); 128 MiB..=64 GiB.
pub fn parse_mem(value: &str) -> Result<u32, String> {
    let v = value.trim();
    let (digits, scale) = match v.strip_suffix(['G', 'g']) {
        Some(d) => (d, 1024),
        None => (v.strip_suffix(['M', 'm']).unwrap_or(v), 1),
    };
    let mib = digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{value}` is not a size (MiB, or with a G or M suffix)"))?;
    if !(128..=64 * 1024).contains(&mib) {
        return Err(format!("{mib} MiB: guest RAM must be 128 MiB..64 GiB"));
    }
    Ok(mib)
}

/// The RAM (MiB) of a machine booting `cmdline` now.
fn mem_now(cmdline: &str) -> u32 {
    MEM_MIB
        .load(std::sync::atomic::Ordering::Relaxed)
        .max(crate::usertest::own_mem_mib(cmdline))
}

/// QEMU's `-m` value for `mib` MiB (`1G` for the default, as every command line had it).
fn mem_arg(mib: u32) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

/// The CPU count of a machine booted now on this thread.
fn smp_now() -> u32 {
    SMP_HERE
        .with(|c| c.get())
        .unwrap_or_else(|| SMP.load(std::sync::atomic::Ordering::Relaxed))
}

/// The QEMU options for `cpus` CPUs under `accel`: none for one CPU (the command line stays as
/// it was), else `-smp N`, with multi-threaded TCG unless icount (which needs one thread).
fn smp_args(cpus: u32, accel: Accel) -> Vec<String> {
    if cpus <= 1 {
        return Vec::new();
    }
    let mut args = vec!["-smp".to_owned(), cpus.to_string()];
    if accel == Accel::Tcg {
        args.extend(["-accel".to_owned(), "tcg,thread=multi".to_owned()]);
    }
    args
}

/// One QEMU machine booting one cowlab image.
#[derive(Debug, Clone)]
pub struct Machine {
    pub image: PathBuf,
    /// `Some(OVMF image)` for UEFI, `None` for BIOS (SeaBIOS).
    pub ovmf: Option<PathBuf>,
    pub accel: Accel,
    pub gdb: bool,
    /// The kernel command line; empty means no fw_cfg file.
    pub cmdline: String,
    /// The data disk, attached as a legacy virtio-blk PCI device (`/dev/vda`).
    pub disk: Option<PathBuf>,
    /// The root filesystem image (`vdb`, see `rootfs`) and whether it is attached writable
    /// (`--persist`) rather than with `snapshot=on`.
    pub root: Option<(PathBuf, bool)>,
}

impl Machine {
    /// The QEMU command line for this machine (stdio not yet configured).
    pub fn command(&self, qemu: &Path) -> Command {
        let mut command = Command::new(qemu);
        let mut drive = std::ffi::OsString::from("format=raw,file=");
        drive.push(escape_option(&self.image.to_string_lossy()));
        // The boot disk is never written: snapshot mode opens the image read-only (writes, if
        // any, go to a temporary overlay), so several QEMUs can boot the same image at once
        // (`cargo xtask qemu` while `cargo xtask test` runs) instead of failing on its lock.
        drive.push(",snapshot=on");
        command.arg("-drive").arg(drive);
        if let Some(ovmf) = &self.ovmf {
            command.arg("-bios").arg(ovmf);
        }
        command.args(["-serial", "stdio", "-display", "none", "-no-reboot", "-m"]);
        let mem = mem_now(&self.cmdline);
        command.arg(mem_arg(mem));
        // 1 GiB pages (CPUID pdpe1gb) only on a machine that can hold one besides the kernel:
        // the default machine's CPU model stays `qemu64` as the benchmarks measured it.
        let tcg_cpu = if mem > DEFAULT_MEM_MIB {
            "qemu64,+pdpe1gb"
        } else {
            "qemu64"
        };
        let cpus = smp_now().max(crate::usertest::own_cpus(&self.cmdline));
        match self.accel {
            Accel::Tcg if cpus > 1 => command.args(["-cpu", tcg_cpu]),
            Accel::Tcg => command.args(["-cpu", tcg_cpu, "-accel", "tcg"]),
            Accel::Kvm => command.args(["-cpu", "host", "-accel", "kvm"]),
            Accel::Icount => command
                .args(["-cpu", tcg_cpu, "-accel", "tcg"])
                .args(ICOUNT_ARGS),
        };
        command.args(smp_args(cpus, self.accel));
        command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        if let Some(disk) = &self.disk {
            // Legacy-only virtio (`disable-modern=on`: device 1af4:1001, I/O BAR0) and
            // `snapshot=on`: guest writes go to a temporary overlay, so every boot starts from
            // the stamped image and concurrent QEMUs can share it.
            let mut drive = std::ffi::OsString::from("file=");
            drive.push(escape_option(&disk.to_string_lossy()));
            drive.push(",if=none,format=raw,id=vda,snapshot=on");
            command.arg("-drive").arg(drive);
            command.args(["-device", "virtio-blk-pci,drive=vda,disable-modern=on"]);
        }
        // pcache3: `root_bs=1024` attaches the 1 KiB-block variant of the root image.
        let (cmdline, small_blocks) = crate::rootfs::take_small_blocks(&self.cmdline);
        if let Some((root, persist)) = &self.root {
            let root = match small_blocks {
                true => crate::rootfs::small_blocks_path(root),
                false => root.clone(),
            };
            command.args(crate::rootfs::qemu_args(&root, *persist));
        }
        if !cmdline.is_empty() {
            command.arg("-fw_cfg").arg(format!(
                "name=opt/cowlab/cmdline,string={}",
                escape_option(&cmdline)
            ));
        }
        if self.gdb {
            command.args(["-s", "-S"]);
        }
        command
    }
}

/// QEMU's option parser ends a value at a comma; a literal comma is written twice.
fn escape_option(value: &str) -> String {
    value.replace(',', ",,")
}

/// How a QEMU run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuExit {
    /// The kernel wrote `s` to isa-debug-exit (QEMU exited with `(s << 1) | 1`).
    Kernel(u32),
    /// QEMU exited with status 0: with `-no-reboot`, a triple fault (or a reset request).
    TripleFault,
    /// QEMU itself failed (an even, non-zero status: bad option, missing file, no KVM...).
    QemuError(i32),
    /// QEMU was killed by a signal.
    Signal(i32),
}

impl QemuExit {
    pub fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match status.code() {
            Some(0) => Self::TripleFault,
            Some(code) if code & 1 == 1 => Self::Kernel((code >> 1) as u32),
            Some(code) => Self::QemuError(code),
            None => Self::Signal(status.signal().unwrap_or(0)),
        }
    }
}

impl std::fmt::Display for QemuExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kernel(s) => write!(f, "kernel exit status {s}"),
            Self::TripleFault => {
                write!(f, "triple fault or reset (QEMU ran with -no-reboot)")
            }
            Self::QemuError(code) => write!(f, "QEMU failed with status {code}"),
            Self::Signal(sig) => write!(f, "QEMU killed by signal {sig}"),
        }
    }
}

/// The kernel command line: `tokens`, then `-- PROGRAM ARGS` if a program is given, each
/// argument quoted as the kernel's `cmdline::split_init_args` reads it back ([`quote_init_arg`]),
/// so arguments may hold spaces, quotes or any UTF-8, or be empty. A `loglevel=` token with a
/// value the kernel does not know is refused here, before QEMU starts.
pub fn compose_cmdline(tokens: Option<&str>, program: &[String]) -> Result<String> {
    let mut parts: Vec<String> = Vec::new();
    for token in tokens.into_iter().flat_map(str::split_whitespace) {
        if let Some(level) = token.strip_prefix("loglevel=") {
            if !LOGLEVELS.contains(&level) {
                bail!(
                    "--cmdline {token}: unknown log level {level:?} (known: {})",
                    LOGLEVELS.join(", ")
                );
            }
        }
        parts.push(token.to_owned());
    }
    if !program.is_empty() {
        if let Some(bad) = program.iter().find(|a| a.contains('\0')) {
            bail!("program argument {bad:?}: an argument cannot contain a NUL byte");
        }
        parts.push("--".to_owned());
        parts.extend(program.iter().map(|a| quote_init_arg(a)));
    }
    Ok(parts.join(" "))
}

/// The kernel's log levels (`loglevel=`, kernel/src/log.rs `Level::from_cmdline`).
pub const LOGLEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// One program argument for the kernel command line: as is when it has no whitespace, quote or
/// backslash and is not empty, else in double quotes with `"` and `\` escaped by a backslash.
pub fn quote_init_arg(arg: &str) -> String {
    let plain = !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\');
    if plain {
        return arg.to_owned();
    }
    let mut quoted = String::with_capacity(arg.len() + 2);
    quoted.push('"');
    for c in arg.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Fails early and clearly when `--kvm` cannot work here.
pub fn check_kvm() -> Result<()> {
    if !Path::new("/dev/kvm").exists() {
        bail!("--kvm: /dev/kvm is missing, so KVM is not available on this machine (it does not work on cowlab's development and CI machines either); drop --kvm to use TCG");
    }
    Ok(())
}

/// `cargo xtask qemu`.
pub fn run(args: &QemuArgs) -> Result<ExitCode> {
    set_smp(args.smp);
    if let Some(mib) = args.mem {
        set_mem(mib);
    }
    let tokens = crate::era::with_token(args.era, args.cmdline.as_deref().unwrap_or(""));
    let cmdline = compose_cmdline(Some(&tokens), &args.program)?;
    let accel = if args.kvm {
        check_kvm()?;
        Accel::Kvm
    } else if args.icount {
        Accel::Icount
    } else {
        Accel::Tcg
    };
    let qemu = deps::qemu()?;
    let (firmware, ovmf) = if args.uefi {
        (Firmware::Uefi, Some(deps::ovmf()?))
    } else {
        (Firmware::Bios, None)
    };
    eprintln!("xtask: building the kernel, the programs and the disk image (a first build compiles the bootloader too: several minutes)");
    let built = image::build_all(&args.build, firmware)?;
    let machine = Machine {
        image: built.image,
        ovmf,
        accel,
        gdb: args.gdb,
        cmdline,
        disk: Some(built.disk.clone()),
        root: Some((
            crate::rootfs::ensure(&crate::target_dir(), &built.files, args.persist)?,
            args.persist,
        )),
    };
    let interactive = std::io::stdin().is_terminal();
    let mut command = if interactive {
        terminal_console(machine.command(&qemu))
    } else {
        machine.command(&qemu)
    };
    eprintln!("xtask: {}", show_command(&command));
    if interactive {
        eprintln!("xtask: {TERMINAL_HELP}");
    }
    let saved_tty = interactive.then(save_terminal).flatten();
    if args.gdb {
        eprintln!(
            "xtask: QEMU waits for gdb on :1234; attach with\n    {}\n\
             (before the kernel runs its pages are not mapped: use `hbreak`, not `break`)",
            gdb_command(&built.kernel_elf)?
        );
    }

    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu.display()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let elf = built.kernel_elf.clone();
    let forwarder = std::thread::spawn(move || forward_console(stdout, &elf));

    let deadline = args
        .timeout
        .map(|s| Instant::now() + Duration::from_secs(s));
    let status = wait_until(&mut child, deadline);
    // QEMU restores the terminal when it exits, but not when killed at the timeout.
    if let Some(saved) = saved_tty {
        restore_terminal(&saved);
    }
    let status = status?;
    let (printed_anything, status_line) = forwarder.join().unwrap_or((false, None));
    let Some(status) = status else {
        bail!(
            "timed out: QEMU still running after {} s (--timeout); killed it",
            args.timeout.unwrap_or(0)
        );
    };
    match QemuExit::from_status(status) {
        QemuExit::Kernel(0) if !printed_anything => {
            // Status 1 is also QEMU's own "could not start"; a kernel that powered off cleanly
            // has always printed something first.
            bail!("QEMU exited with status 1 before the guest printed anything: QEMU could not start (see its message above){}", kvm_hint(accel));
        }
        QemuExit::Kernel(s) => {
            let s = full_exit_status(s, status_line);
            eprintln!("xtask: kernel exit status {s}");
            Ok(ExitCode::from(u8::try_from(s).unwrap_or(u8::MAX)))
        }
        // QEMU's own status 0: a triple fault under -no-reboot, or the user's Ctrl-A x.
        QemuExit::TripleFault if interactive => {
            bail!(
                "QEMU ended by itself: Ctrl-A x, or {}",
                QemuExit::TripleFault
            )
        }
        QemuExit::TripleFault => bail!("{}", QemuExit::TripleFault),
        other => bail!("{other}{}", kvm_hint(accel)),
    }
}

/// What a user at a terminal is told about the console's keys.
const TERMINAL_HELP: &str = "the terminal is the guest's console (raw): Ctrl-C, Ctrl-Z and Ctrl-\\ go to the guest's foreground program; Ctrl-A x quits QEMU, Ctrl-A c switches to its monitor, Ctrl-A h lists the keys";

/// For a user at a terminal: the serial console on a multiplexed stdio character device with
/// signals off (QEMU puts the terminal in raw mode, so Ctrl-C reaches the guest's line
/// discipline instead of killing QEMU), the monitor on the same device behind Ctrl-A.
fn terminal_console(command: Command) -> Command {
    let mut out = Command::new(command.get_program());
    let args: Vec<&std::ffi::OsStr> = command.get_args().collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "-serial" && args.get(i + 1).is_some_and(|a| *a == "stdio") {
            out.args([
                "-chardev",
                "stdio,id=console,mux=on,signal=off",
                "-mon",
                "chardev=console,mode=readline",
                "-serial",
                "chardev:console",
            ]);
            i += 2;
            continue;
        }
        out.arg(args[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
#[test]
fn terminal_console_replaces_serial_stdio() {
    let mut c = Command::new("qemu");
    c.args(["-drive", "x", "-serial", "stdio", "-m", "1G"]);
    let args: Vec<String> = terminal_console(c)
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        args,
        [
            "-drive",
            "x",
            "-chardev",
            "stdio,id=console,mux=on,signal=off",
            "-mon",
            "chardev=console,mode=readline",
            "-serial",
            "chardev:console",
            "-m",
            "1G"
        ]
    );
}

/// The terminal's settings (`stty -g`), to restore after QEMU.
fn save_terminal() -> Option<String> {
    let out = Command::new("stty")
        .arg("-g")
        .stdin(Stdio::inherit())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn restore_terminal(saved: &str) {
    let _ = Command::new("stty")
        .arg(saved)
        .stdin(Stdio::inherit())
        .status();
}

/// The gdb command that attaches to `-s -S` with the kernel's symbols at their run-time
/// addresses: a kernel linked where it runs loads as it is; a position-independent one (linked at
/// 0, loaded at `KERNEL_BASE`) needs its symbols offset.
pub fn gdb_command(kernel_elf: &Path) -> Result<String> {
    let bytes =
        std::fs::read(kernel_elf).with_context(|| format!("reading {}", kernel_elf.display()))?;
    let elf = kernel_elf.display();
    Ok(match crate::elf::kernel_load_offset(&bytes)? {
        0 => format!("gdb {elf} -ex 'target remote :1234'"),
        offset => format!("gdb -ex 'symbol-file -o {offset:#x} {elf}' -ex 'target remote :1234'"),
    })
}

fn kvm_hint(accel: Accel) -> &'static str {
    match accel {
        Accel::Kvm => "; KVM does not work on cowlab's development and CI machines: drop --kvm",
        Accel::Tcg | Accel::Icount => "",
    }
}

/// Waits for `child` to exit; kills it at `deadline` and returns `None`.
pub fn wait_until(child: &mut Child, deadline: Option<Instant>) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            child.kill().ok();
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Copies the serial console to our stdout byte by byte (so prompts without a newline show at
/// once), appending symbol locations to backtrace lines before their line end. Returns whether
/// the guest printed anything.
fn forward_console(mut serial: impl Read, kernel_elf: &Path) -> (bool, Option<u32>) {
    let mut symbolizer = Symbolizer::new(kernel_elf);
    let mut forwarder = LineAnnotator::default();
    let mut buf = [0u8; 4096];
    let mut stdout = std::io::stdout();
    let mut any = false;
    let mut status_line = None;
    loop {
        let n = match serial.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        any = true;
        let out = forwarder.push(&buf[..n], |line| {
            if let Some(status) = exit_status_line(line) {
                status_line = Some(status);
            }
            symbolizer.annotate(line)
        });
        if stdout.write_all(&out).and_then(|_| stdout.flush()).is_err() {
            break;
        }
    }
    let rest = forwarder.finish();
    let _ = stdout.write_all(&rest).and_then(|_| stdout.flush());
    (any, status_line)
}

/// The status in the kernel's last console line `cowlab: exit status N` (printed just before
/// it writes N to isa-debug-exit).
pub fn exit_status_line(line: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix("cowlab: exit status ")?
        .parse()
        .ok()
}

/// The kernel's full exit status: QEMU's exit code carries only the low 7 bits of what the
/// kernel wrote to isa-debug-exit (`(s << 1) | 1` in 8 bits), so 139 (SIGSEGV) would arrive
/// as 11; the console line carries all of it. The line counts only if it agrees with the
/// device on those 7 bits (a program's own output cannot pose as it).
pub fn full_exit_status(device: u32, line: Option<u32>) -> u32 {
    match line {
        Some(n) if n & 0x7f == device & 0x7f => n,
        _ => device,
    }
}

/// Passes bytes through unchanged except that, at each line end, it may insert a suffix that
/// `annotate` computes from the whole line. A `\r` is held back until we know whether a `\n`
/// follows, so the suffix goes before `\r\n` rather than after a carriage return.
#[derive(Default)]
pub struct LineAnnotator {
    line: Vec<u8>,
    pending_cr: bool,
}

impl LineAnnotator {
    /// Feeds `bytes`; returns what to print now. `annotate` gets a complete line (without its
    /// line end) and returns the annotated line if it has something to add.
    pub fn push(
        &mut self,
        bytes: &[u8],
        mut annotate: impl FnMut(&str) -> Option<String>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &byte in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if byte == b'\n' {
                    self.end_line(&mut out, &mut annotate);
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                out.push(b'\r');
                self.line.clear();
            }
            match byte {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    self.end_line(&mut out, &mut annotate);
                    out.push(b'\n');
                }
                _ => {
                    self.line.push(byte);
                    out.push(byte);
                }
            }
        }
        out
    }

    /// Whatever is still held back when the stream ends.
    pub fn finish(self) -> Vec<u8> {
        if self.pending_cr {
            b"\r".to_vec()
        } else {
            Vec::new()
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>, annotate: &mut impl FnMut(&str) -> Option<String>) {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        if let Some(annotated) = annotate(&line) {
            if let Some(suffix) = annotated.strip_prefix(line.as_str()) {
                out.extend_from_slice(suffix.as_bytes());
            }
        }
        self.line.clear();
    }
}

/// The command as a shell would take it (for the log and for copy-paste).
pub fn show_command(command: &Command) -> String {
    let quote = |s: &std::ffi::OsStr| {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=,:".contains(c))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line-oriented QEMU run, for the test harness: serial lines come back one at a time with a
/// silence timeout, and everything (QEMU's stderr too) goes to a log file.
pub struct Session {
    child: Child,
    events: mpsc::Receiver<Event>,
    log: std::io::BufWriter<std::fs::File>,
    symbolizer: Symbolizer,
    /// The last lines of the log, for failure reports.
    tail: std::collections::VecDeque<String>,
    /// QEMU's stdin (the serial console's input) for [`Session::start_with_input`].
    input: Option<std::process::ChildStdin>,
}

enum Event {
    Serial(String),
    Stderr(String),
    SerialClosed,
}

/// What [`Session::next_line`] saw.
#[derive(Debug)]
pub enum Next {
    /// A serial line (line end removed, backtrace lines symbolized).
    Line(String),
    /// QEMU exited.
    Exited(QemuExit),
    /// Nothing on the serial console for the whole timeout; QEMU is still running.
    Silent,
}

const TAIL_LINES: usize = 30;

impl Session {
    /// Starts QEMU for `machine`, logging to `log_path`.
    pub fn start(
        machine: &Machine,
        qemu: &Path,
        kernel_elf: &Path,
        log_path: &Path,
    ) -> Result<Self> {
        Self::start_command(machine.command(qemu), kernel_elf, log_path)
    }

    /// Starts an arbitrary QEMU `command` (another kernel: `cargo xtask bench --linux`), with
    /// stdio piped as [`Session::start`] does.
    pub fn start_command(command: Command, kernel_elf: &Path, log_path: &Path) -> Result<Self> {
        Self::start_piped(command, kernel_elf, log_path, false)
    }

    /// [`Session::start_command`] with the serial console's input open: [`Session::send`]
    /// types.
    pub fn start_with_input(command: Command, kernel_elf: &Path, log_path: &Path) -> Result<Self> {
        Self::start_piped(command, kernel_elf, log_path, true)
    }

    /// Types `bytes` on the serial console (logged as `[xtask] typed ...`).
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.record(&format!(
            "[xtask] typed {:?}",
            String::from_utf8_lossy(bytes)
        ));
        let input = self
            .input
            .as_mut()
            .context("session started without input")?;
        input.write_all(bytes)?;
        input.flush()?;
        Ok(())
    }

    fn start_piped(
        mut command: Command,
        kernel_elf: &Path,
        log_path: &Path,
        with_input: bool,
    ) -> Result<Self> {
        let qemu = PathBuf::from(command.get_program());
        let file = std::fs::File::create(log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut log = std::io::BufWriter::new(file);
        writeln!(log, "$ {}", show_command(&command))?;
        let mut child = command
            .stdin(if with_input {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        let input = child.stdin.take();
        let (tx, events) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let serial_tx = tx.clone();
        std::thread::spawn(move || {
            read_lines(stdout, |l| serial_tx.send(Event::Serial(l)).is_ok());
            let _ = serial_tx.send(Event::SerialClosed);
        });
        std::thread::spawn(move || read_lines(stderr, |l| tx.send(Event::Stderr(l)).is_ok()));
        Ok(Self {
            child,
            events,
            log,
            symbolizer: Symbolizer::new(kernel_elf),
            tail: Default::default(),
            input,
        })
    }

    /// The next serial line, waiting at most `timeout` for it.
    pub fn next_line(&mut self, timeout: Duration) -> Result<Next> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Event::Serial(line)) => {
                    let line = self.symbolizer.line(&line);
                    self.record(&line);
                    return Ok(Next::Line(line));
                }
                Ok(Event::Stderr(line)) => self.record(&format!("[qemu stderr] {line}")),
                Ok(Event::SerialClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    // Let QEMU's last words on stderr reach the log.
                    while let Ok(event) = self.events.recv_timeout(Duration::from_millis(100)) {
                        if let Event::Stderr(line) = event {
                            self.record(&format!("[qemu stderr] {line}"));
                        }
                    }
                    let exit = QemuExit::from_status(status);
                    self.record(&format!("[xtask] QEMU ended: {exit}"));
                    return Ok(Next::Exited(exit));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Next::Silent),
            }
        }
    }

    /// Where kernel address `addr` is (`<function> at <file>:<line>`), if the ELF knows.
    pub fn symbolize(&mut self, addr: u64) -> Option<String> {
        self.symbolizer.lookup(addr)
    }

    /// QEMU's process id (to read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes a harness line into the log.
    pub fn note(&mut self, line: &str) {
        self.record(line);
    }

    /// Kills QEMU (after a timeout), noting why in the log.
    pub fn kill(&mut self, why: &str) {
        self.record(&format!("[xtask] killing QEMU: {why}"));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last lines of the log.
    pub fn tail(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().map(String::as_str)
    }

    fn record(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
        let _ = self.log.flush();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `input` line by line (lossy UTF-8, `\r\n` or `\n`), until EOF or `sink` says stop.
fn read_lines(input: impl Read, mut sink: impl FnMut(String) -> bool) {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(input);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if !sink(String::from_utf8_lossy(&buf).into_owned()) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn killed_program_status_reaches_the_host_whole() {
        // SIGSEGV's 139 leaves QEMU as (139 << 1 | 1) & 0xff = 23, i.e. device status 11.
        let device = ((139u32 << 1) | 1) & 0xff;
        let device = device >> 1;
        assert_eq!(device, 11);
        let line = exit_status_line("cowlab: exit status 139\r");
        assert_eq!(line, Some(139));
        assert_eq!(full_exit_status(device, line), 139);
        // A line that disagrees with the device (a program printing it) is not believed.
        assert_eq!(full_exit_status(5, Some(139)), 5);
        assert_eq!(full_exit_status(0, None), 0);
        assert_eq!(exit_status_line("cowlab: exit status x"), None);
    }

    #[test]
    fn exit_statuses_map_back_to_kernel_statuses() {
        use std::os::unix::process::ExitStatusExt;
        let status = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(QemuExit::from_status(status(1)), QemuExit::Kernel(0));
        assert_eq!(QemuExit::from_status(status(5)), QemuExit::Kernel(2));
        assert_eq!(QemuExit::from_status(status(7)), QemuExit::Kernel(3));
        assert_eq!(QemuExit::from_status(status(0)), QemuExit::TripleFault);
        assert_eq!(QemuExit::from_status(status(2)), QemuExit::QemuError(2));
        assert_eq!(
            QemuExit::from_status(ExitStatus::from_raw(9)),
            QemuExit::Signal(9)
        );
    }

    #[test]
    fn cmdline_puts_program_after_double_dash() {
        assert_eq!(compose_cmdline(None, &[]).unwrap(), "");
        assert_eq!(
            compose_cmdline(Some(" era=2009  loglevel=debug "), &[]).unwrap(),
            "era=2009 loglevel=debug"
        );
        let program = vec!["sh".to_owned(), "-c".to_owned(), "x".to_owned()];
        assert_eq!(
            compose_cmdline(Some("ktest"), &program).unwrap(),
            "ktest -- sh -c x"
        );
        let odd = ["a b", "", "q\"uo\\te", "gr\u{fc}n"].map(str::to_owned);
        assert_eq!(
            compose_cmdline(None, &odd).unwrap(),
            r#"-- "a b" "" "q\"uo\\te" grün"#
        );
        assert!(compose_cmdline(None, &["a\0b".to_owned()]).is_err());
        assert!(compose_cmdline(Some("loglevel=loud"), &[]).is_err());
        assert!(compose_cmdline(Some("loglevel=trace"), &[]).is_ok());
    }

    #[test]
    fn machine_command_matches_the_contract() {
        let machine = Machine {
            image: PathBuf::from("/t/cowlab-bios.img"),
            ovmf: None,
            accel: Accel::Tcg,
            gdb: false,
            cmdline: "ktest ktest-skip=3".to_owned(),
            disk: Some(PathBuf::from("/t/cowlab-vda.img")),
            root: None,
        };
        assert_eq!(
            show_command(&machine.command(Path::new("qemu-system-x86_64"))),
            "qemu-system-x86_64 -drive format=raw,file=/t/cowlab-bios.img,snapshot=on -serial stdio \
             -display none -no-reboot -m 1G -cpu qemu64 -accel tcg \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -drive file=/t/cowlab-vda.img,if=none,format=raw,id=vda,snapshot=on \
             -device virtio-blk-pci,drive=vda,disable-modern=on \
             -fw_cfg 'name=opt/cowlab/cmdline,string=ktest ktest-skip=3'"
        );
        let quiet = Machine {
            cmdline: String::new(),
            gdb: true,
            accel: Accel::Kvm,
            ..machine
        };
        let shown = show_command(&quiet.command(Path::new("qemu")));
        assert!(!shown.contains("fw_cfg"), "{shown}");
        assert!(shown.contains("-cpu host -accel kvm"), "{shown}");
        assert!(shown.ends_with("-s -S"), "{shown}");
        let icount = Machine {
            accel: Accel::Icount,
            gdb: false,
            ..quiet
        };
        let shown = show_command(&icount.command(Path::new("qemu")));
        assert!(
            shown.contains(
                "-cpu qemu64 -accel tcg -icount shift=0,sleep=off \
                 -rtc base=2024-01-01T00:00:00,clock=vm"
            ),
            "{shown}"
        );
    }

    #[test]
    fn mem_sizes_parse_and_reach_the_command_line() {
        assert_eq!(parse_mem("3G"), Ok(3072));
        assert_eq!(parse_mem("1536M"), Ok(1536));
        assert_eq!(parse_mem("2048"), Ok(2048));
        assert!(parse_mem("64").is_err() && parse_mem("3T").is_err() && parse_mem("").is_err());
        assert_eq!(mem_arg(1024), "1G");
        assert_eq!(mem_arg(1536), "1536M");
        let big = Machine {
            image: PathBuf::from("/i"),
            ovmf: None,
            accel: Accel::Tcg,
            gdb: false,
            cmdline: "hugepagesz=1G hugepages=1 -- t_hugetlb".to_owned(),
            disk: None,
            root: None,
        };
        let shown = show_command(&big.command(Path::new("q")));
        assert!(
            shown.contains("-m 3G -cpu 'qemu64,+pdpe1gb'"),
            "a 1 GiB hugetlb page boots 3 GiB: {shown}"
        );
    }

    #[test]
    fn smp_args_thread_tcg_but_not_icount() {
        assert!(smp_args(1, Accel::Tcg).is_empty());
        assert_eq!(
            smp_args(4, Accel::Tcg),
            ["-smp", "4", "-accel", "tcg,thread=multi"]
        );
        assert_eq!(smp_args(2, Accel::Icount), ["-smp", "2"]);
        assert_eq!(smp_args(2, Accel::Kvm), ["-smp", "2"]);
    }

    #[test]
    fn commas_in_the_cmdline_are_escaped() {
        assert_eq!(escape_option("a,b"), "a,,b");
    }

    #[test]
    fn annotator_inserts_suffix_before_line_end() {
        let annotate = |line: &str| line.starts_with("bt").then(|| format!("{line} here"));
        let mut a = LineAnnotator::default();
        let mut out = a.push(b"x\nbt #0 0x1\r", annotate);
        out.extend(a.push(b"\nprompt> ", annotate));
        out.extend(a.finish());
        assert_eq!(out, b"x\nbt #0 0x1 here\r\nprompt> ");

        let mut a = LineAnnotator::default();
        let out = a.push(b"bt\rbt\n", annotate);
        assert_eq!(out, b"bt\rbt here\n");
    }
}
