//! `cargo xtask bench`: boots cowlab in the deterministic QEMU configuration of
//! `shared/perf/LINUX-BASELINE.md` with `bench` as the program `init` runs, collects its `BENCH`
//! lines, and compares them with Linux and the targets. With `--linux` the same `bench` binary
//! also runs as `/init` of Debian's Linux kernel in the same QEMU ([`linux`]), so both columns
//! come from one run; without it the Linux column is the table stored in `xtask/data/`.
//!
//! Under `-icount shift=0` the numbers are guest instruction counts and must repeat exactly, so
//! the benchmark boots every kernel twice by default and says whether the runs agree. Output:
//! a table on stdout, `target/bench/results.{json,csv}`, and SVG charts in `target/bench/`.

mod breakdown;
mod charts;
mod linux;
mod report;
mod results;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cowlab_boot::Firmware;

use crate::build::{self, Profile};
use crate::qemu::{self, Accel, Machine, Next, QemuExit, Session};
use crate::{deps, image, target_dir, BuildArgs};

use results::Run;

/// The CPUs of the SMP boot (`--smp`): the rows are named for 4 (`smp_munmap_1page_4cpus`).
pub const SMP_CPUS: u32 = 4;

/// The kernel command-line token that lets cowlab's application processors run tasks (the
/// default is being changed to 1 this session; passed explicitly so the row means the same).
const SMP_SCHED: &str = "smp_sched=1";

/// The program `init` runs in the one-CPU boot: `bench`, or `bench rows=<groups>` (`--rows`).
fn bench_program(rows: Option<&str>) -> Vec<String> {
    let mut program = vec!["bench".to_owned()];
    program.extend(rows.map(|r| format!("rows={r}")));
    program
}

/// The program `init` runs in the SMP boot: `bench smp`.
fn smp_program() -> Vec<String> {
    vec!["bench".to_owned(), "smp".to_owned()]
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Also run the same `bench` binary natively on this Linux host (a third column, in host
    /// TSC cycles rather than guest instructions).
    #[arg(long)]
    pub host: bool,
    /// Use KVM instead of deterministic TCG (real cycles; numbers vary between runs), where
    /// /dev/kvm exists and works.
    #[arg(long)]
    pub kvm: bool,
    /// After the measured runs, boot once more with a kernel built with the `faultstat` feature
    /// and print its per-phase breakdown of the faults (printed by the kernel at power-off) and
    /// of fork and GUP-fast (per path, from `bench`'s BENCH-OPSTAT lines). The table itself
    /// always comes from the default kernel, which carries no measurement code.
    #[arg(long)]
    pub breakdown: bool,
    /// Also boot Debian's Linux kernel (`linux-image-*-amd64`, fetched once with
    /// `apt-get download` into target/linux/) with the same `bench` as `/init`, in the same
    /// QEMU, and take the Linux column from that run instead of the stored table.
    #[arg(long)]
    pub linux: bool,
    /// With `--linux`: rewrite the stored Linux table (xtask/data/linux-6.1.csv, the offline
    /// fallback) from this run's Linux figures.
    #[arg(long, requires = "linux")]
    pub save_baseline: bool,
    /// Also boot cowlab once under every other era (`era=YEAR` on the kernel command line) and
    /// draw the paths per era (eras.svg).
    #[arg(long)]
    pub eras: bool,
    /// Measure cowlab under this rule set (SEMANTICS.md section 9) instead of the default 2023:
    /// 2009, 2016, 2020, 2022 or 2023 (`era=YEAR` on the kernel command line).
    #[arg(long, value_name = "YEAR", value_parser = crate::era::parse, conflicts_with = "eras")]
    pub era: Option<u32>,
    /// Also boot each kernel (cowlab with `smp_sched=1`; Linux with `--linux`) with 4 CPUs and
    /// run `bench smp`: the multiprocessor rows (issue 16). Without it, `--save-baseline` keeps
    /// the stored `smp_*` rows as they were.
    #[arg(long)]
    pub smp: bool,
    /// Only these groups of rows (comma-separated: base, faults, fork, vmas, unmap, pins, dio,
    /// files, thp), on every kernel booted: `bench rows=<GROUPS>`. For iterating on a few rows;
    /// the `--smp` boots are not filtered.
    #[arg(long, value_name = "GROUPS", conflicts_with = "save_baseline")]
    pub rows: Option<String>,
    /// Boots of each kernel to compare (under icount every run must give identical numbers).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub runs: usize,
    /// Kill a boot that prints nothing for this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let accel = if args.kvm {
        qemu::check_kvm()?;
        Accel::Kvm
    } else {
        Accel::Icount
    };
    if args.linux && accel != Accel::Icount {
        bail!("--linux compares instruction counts: it needs the deterministic TCG (drop --kvm)");
    }
    let qemu_path = deps::qemu()?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Fetched first: a missing package should fail before minutes of building and booting.
    let linux_kernel = if args.linux {
        Some(linux::kernel()?)
    } else {
        None
    };

    let build_args = BuildArgs {
        release: true,
        add: Vec::new(),
        kernel: None,
    };
    let built = image::build_all(&build_args, Firmware::Bios)?;
    let machine = Machine {
        image: built.image.clone(),
        ovmf: None,
        accel,
        gdb: false,
        cmdline: qemu::compose_cmdline(
            Some(&crate::era::with_token(args.era, "")),
            &bench_program(args.rows.as_deref()),
        )?,
        disk: Some(built.disk.clone()),
        // The root disk (snapshot): the file rows run on cowlab's ext2 root, and `init` runs
        // `bench` from it. A copy of the bench's own: `target/cowlab-root.img` is rewritten by
        // every other xtask run of this worktree (a debug `cargo xtask qemu` during the
        // faultstat kernel's build made the `--breakdown` boot time the debug `bench`).
        root: Some((bench_root(&out, &built.files)?, false)),
    };
    let shown = qemu::show_command(&machine.command(&qemu_path));
    eprintln!("xtask: {shown}");

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let log = out.join(format!("console-{}.log", i + 1));
        let label = format!("cowlab {}/{}", i + 1, args.runs);
        let session = Session::start(&machine, &qemu_path, &built.kernel_elf, &log)?;
        runs.push(collect(session, &log, args, &label, Boot::Cowlab(accel))?.0);
    }
    // The SMP boot of each run: the same image with 4 CPUs, `smp_sched=1`, `bench smp`; its
    // rows join that run's. No disk: a virtio request completes when the host says, and under
    // icount with several CPUs the boot's disk reads (ext2's mount) shift the timer phase and
    // with it where the round-robin slices end, which made two boots' smp_* rows differ.
    let smp = args.smp;
    let shown_smp = if smp {
        let smp_machine = smp_machine(&machine, args.era)?;
        qemu::set_smp(SMP_CPUS);
        let shown_smp = qemu::show_command(&smp_machine.command(&qemu_path));
        eprintln!("xtask: {shown_smp}");
        for (i, run) in runs.iter_mut().enumerate() {
            let log = out.join(format!("console-smp-{}.log", i + 1));
            let label = format!("cowlab -smp {SMP_CPUS} {}/{}", i + 1, args.runs);
            let session = Session::start(&smp_machine, &qemu_path, &built.kernel_elf, &log)?;
            run.merge(collect(session, &log, args, &label, Boot::Cowlab(accel))?.0)?;
        }
        qemu::set_smp(1);
        Some(shown_smp)
    } else {
        None
    };
    let cowlab = runs[0].clone();
    let (mut differences, mut known_differences) = compare(&runs, "cowlab");

    let mut linux_identical = true;
    let linux_live = match &linux_kernel {
        Some(kernel) => {
            let rows = args.rows.as_deref();
            let bench = release_bench()?;
            let initrd = out.join("linux-initramfs.cpio");
            linux::initramfs(&bench, &kernel.modules(), &initrd)?;
            let (root_img, _) = machine.root.as_ref().context("the root image")?;
            let command = linux::command(&qemu_path, kernel, &initrd, root_img, false, rows);
            let shown_linux = qemu::show_command(&command);
            eprintln!("xtask: {shown_linux}");
            if smp {
                let command = linux::command(&qemu_path, kernel, &initrd, root_img, true, None);
                eprintln!("xtask: {}", qemu::show_command(&command));
            }
            let mut linux_runs = Vec::new();
            for i in 0..args.runs {
                let log = out.join(format!("console-linux-{}.log", i + 1));
                let label = format!("Linux {}/{}", i + 1, args.runs);
                let command = linux::command(&qemu_path, kernel, &initrd, root_img, false, rows);
                let session = Session::start_command(command, &built.kernel_elf, &log)?;
                let mut run = collect(session, &log, args, &label, Boot::Linux)?.0;
                if smp {
                    let log = out.join(format!("console-linux-smp-{}.log", i + 1));
                    let label = format!("Linux -smp {SMP_CPUS} {}/{}", i + 1, args.runs);
                    let command = linux::command(&qemu_path, kernel, &initrd, root_img, true, None);
                    let session = Session::start_command(command, &built.kernel_elf, &log)?;
                    run.merge(collect(session, &log, args, &label, Boot::Linux)?.0)?;
                }
                linux_runs.push(run);
            }
            let (linux_differences, linux_known) = compare(&linux_runs, "Linux");
            linux_identical = linux_differences.is_empty();
            differences.extend(linux_differences);
            known_differences.extend(linux_known);
            Some((linux_runs.swap_remove(0), kernel.clone(), shown_linux))
        }
        None => None,
    };
    let deterministic = differences.is_empty();

    let host = if args.host { Some(host_run()?) } else { None };
    // Before the breakdown, whose build replaces the image at the same path.
    let eras = if args.eras {
        let mut eras = Vec::new();
        for year in ERAS {
            let run = if year == DEFAULT_ERA {
                cowlab.clone()
            } else {
                let machine = Machine {
                    cmdline: qemu::compose_cmdline(
                        Some(&format!("era={year}")),
                        &bench_program(args.rows.as_deref()),
                    )?,
                    ..machine.clone()
                };
                let log = out.join(format!("console-era-{year}.log"));
                let session = Session::start(&machine, &qemu_path, &built.kernel_elf, &log)?;
                let label = format!("era={year}");
                collect(session, &log, args, &label, Boot::Cowlab(accel))?.0
            };
            eras.push((year, run));
        }
        Some(eras)
    } else {
        None
    };

    let breakdown = if args.breakdown {
        let build_args = BuildArgs {
            kernel: Some(breakdown::build_kernel()?),
            ..build_args.clone()
        };
        let built = image::build_all(&build_args, Firmware::Bios)?;
        let machine = Machine {
            image: built.image.clone(),
            ..machine.clone()
        };
        let log = out.join("console-faultstat.log");
        let session = Session::start(&machine, &qemu_path, &built.kernel_elf, &log)?;
        let (run, console) = collect(session, &log, args, "faultstat", Boot::Cowlab(accel))?;
        let parsed = breakdown::parse(&console);
        if parsed.is_empty() {
            bail!(
                "--breakdown: the faultstat kernel printed no FAULTSTAT lines (log: {})",
                log.display()
            );
        }
        let ops = breakdown::parse_ops(&console);
        Some((parsed, ops, run))
    } else {
        None
    };
    let stored = results::linux_baseline();
    let targets = results::targets();
    let (linux_column, linux_label, linux_source) = match &linux_live {
        Some((run, kernel, shown_linux)) => (
            report::Linux::Measured(run),
            format!(
                "Linux {}",
                run.uname_field("release")
                    .unwrap_or(kernel.package.as_str())
            ),
            format!(
                "measured in this run: {}, uname -r {}, `{}`: {shown_linux}",
                kernel.describe(),
                run.uname_field("release").unwrap_or("?"),
                run.uname_field("version").unwrap_or("?"),
            ),
        ),
        None => (
            report::Linux::Stored(&stored),
            "Linux (stored)".to_owned(),
            format!("stored ({}): {}", results::LINUX_BASELINE, stored.source),
        ),
    };
    let rows = report::rows(&cowlab, host.as_ref(), linux_column, &targets);
    let table = report::table(&rows, host.is_some(), &linux_label);

    println!();
    print!("{table}");
    println!();
    println!("cowlab: {}", describe_accel(accel));
    println!("Linux: {linux_source}");
    println!("targets: {}", targets.source);
    for note in report::counterpart_notes(&rows) {
        println!("{note}");
    }
    if host.is_some() {
        println!("host: the same static binary run natively; TSC cycles, not instructions");
    }
    let runs_note = if args.runs == 1 {
        "one run (use --runs 2 to check determinism)".to_owned()
    } else if deterministic {
        format!(
            "all {} runs of {} gave identical results (every row but {})",
            args.runs,
            if linux_live.is_some() {
                "each kernel"
            } else {
                "cowlab"
            },
            NOT_REPEATING.map(|(n, _)| n).join(", ")
        )
    } else {
        format!(
            "runs DIFFER ({}): {}",
            differences.len(),
            differences.join("; ")
        )
    };
    println!("determinism: {runs_note}");
    if !known_differences.is_empty() {
        println!(
            "known not to repeat (not failures: NOT_REPEATING rows, cowlab's random bytes): {}",
            known_differences.join("; ")
        );
    }
    if let Some((kinds, ops, run)) = &breakdown {
        println!();
        print!("{}", breakdown::table(kinds, run));
        println!();
        print!("{}", breakdown::op_table(ops, run));
    }
    if let Some(eras) = &eras {
        println!();
        print!("{}", charts::era_table(eras));
    }

    let json = serde_json::json!({
        "qemu": shown,
        "qemu_smp": shown_smp,
        "accel": describe_accel(accel),
        "runs": args.runs,
        "identical_runs": deterministic,
        "differences": differences,
        "not_repeating_rows": NOT_REPEATING.map(|(n, why)| serde_json::json!({"name": n, "why": why})),
        "not_repeating_differences": known_differences,
        "linux_source": linux_source,
        "linux_measured": linux_live.is_some(),
        "linux_kernel": linux_live.as_ref().map(|(run, kernel, shown_linux)| serde_json::json!({
            "package": kernel.package,
            "package_version": kernel.version,
            "release": run.uname_field("release"),
            "version": run.uname_field("version"),
            "cmdline": linux::cmdline(false, args.rows.as_deref()),
            "cmdline_smp": smp.then(|| linux::cmdline(true, None)),
            "qemu": shown_linux,
        })),
        "targets_source": targets.source,
        "rows": report::json_rows(&rows),
        "breakdown": breakdown.as_ref().map(|(kinds, _, run)| breakdown::json(kinds, run)),
        "op_breakdown": breakdown.as_ref().map(|(_, ops, run)| breakdown::op_json(ops, run)),
        "eras": eras.as_ref().map(|eras| charts::era_json(eras)),
    });
    write(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    let mut csv = report::csv(&rows);
    if let Some((run, kernel, _)) = &linux_live {
        csv = format!(
            "# linux: {}, uname -r {}\n{csv}",
            kernel.describe(),
            run.uname_field("release").unwrap_or("?")
        );
    }
    write(&out.join("results.csv"), &csv)?;
    write(&out.join("table.md"), &table)?;
    let written = charts::write_all(&out, &rows, &linux_label, eras.as_deref())?;
    println!(
        "wrote {}/results.json, results.csv, table.md, {}",
        out.display(),
        written.join(", ")
    );
    if args.save_baseline {
        let (run, kernel, shown_linux) = linux_live
            .as_ref()
            .expect("--save-baseline requires --linux");
        // What is stored is Linux's column: its runs must agree (cowlab's differences fail
        // the command below, but do not make Linux's figures less repeatable).
        if !linux_identical {
            bail!("--save-baseline: the Linux runs differ, not storing them");
        }
        let path = crate::workspace_root().join(results::LINUX_BASELINE);
        // Paths relative to the workspace: the file is committed.
        let root = format!("{}/", crate::workspace_root().display());
        let mut shown = shown_linux.replace(&root, "");
        if smp {
            shown.push_str(&format!(
                " (smp_* rows: the same without -drive and -bios, with -smp {SMP_CPUS} and `{} -- rows=smp` appended to -append)",
                linux::SMP_CMDLINE
            ));
        }
        write(
            &path,
            &results::baseline_csv(run, &kernel.describe(), &shown, &stored),
        )?;
        println!("wrote {}", path.display());
    }

    if accel == Accel::Icount && !deterministic {
        eprintln!("xtask: error: under -icount every run must give identical numbers");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

use crate::era::{DEFAULT_ERA, ERAS};

fn describe_accel(accel: Accel) -> &'static str {
    match accel {
        Accel::Icount => "QEMU TCG -icount shift=0 (guest instructions)",
        Accel::Kvm => "QEMU KVM (host cycles, not deterministic)",
        Accel::Tcg => "QEMU TCG (emulation cycles, noisy)",
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The release `bench` (a static Linux executable).
fn release_bench() -> Result<PathBuf> {
    build::userland(Profile::Release)?
        .into_iter()
        .find(|p| p.name == "bench")
        .map(|p| p.path)
        .context("cargo built no `bench` program")
}

/// The machine of the SMP boot: `machine` with `smp_sched=1`, `bench smp` and no disks (the
/// ramdisk is the root).
fn smp_machine(machine: &Machine, era: Option<u32>) -> Result<Machine> {
    Ok(Machine {
        cmdline: qemu::compose_cmdline(
            Some(&crate::era::with_token(era, SMP_SCHED)),
            &smp_program(),
        )?,
        disk: None,
        root: None,
        ..machine.clone()
    })
}

/// Which kernel a boot runs, for how its end is judged.
#[derive(Clone, Copy)]
enum Boot {
    /// cowlab powers off through isa-debug-exit with status 0.
    Cowlab(Accel),
    /// Linux powers off through ACPI (`bench` calls reboot): QEMU exits with status 0.
    Linux,
}

/// One boot: collects the program's lines with a progress line on stderr; returns the run and
/// the whole console (for the breakdown).
fn collect(
    mut session: Session,
    log: &Path,
    args: &BenchArgs,
    label: &str,
    kind: Boot,
) -> Result<(Run, Vec<String>)> {
    let started = Instant::now();
    let mut run = Run::default();
    let mut lines = Vec::new();
    // On a terminal one line is redrawn; in a log only the end of each run is shown.
    let terminal = std::io::stderr().is_terminal();
    let progress = |run: &Run, last: &str| {
        if !terminal && !run.done {
            return;
        }
        eprint!(
            "{}xtask: bench {label}: {} results, {} skipped, {:.0} s{}{}",
            if terminal { "\r\x1b[2K" } else { "" },
            run.measurements.len(),
            run.skips.len(),
            started.elapsed().as_secs_f64(),
            if last.is_empty() { "" } else { ", last: " },
            last
        );
    };
    progress(&run, "");
    let exit = loop {
        match session.next_line(Duration::from_secs(args.timeout))? {
            Next::Line(line) => {
                if let Some(parsed) = run.push_line(&line)? {
                    let last = match parsed {
                        results::Line::Measured(m) => m.name,
                        results::Line::Skipped(s) => s.name,
                        results::Line::Done => "done".to_owned(),
                        results::Line::Uname(_) | results::Line::Random(_) => String::new(),
                    };
                    progress(&run, &last);
                }
                lines.push(line);
            }
            Next::Exited(exit) => break exit,
            Next::Silent => {
                session.kill("silent for the whole --timeout");
                eprintln!();
                bail!(
                    "bench: no console output for {} s; killed QEMU (log: {})",
                    args.timeout,
                    log.display()
                );
            }
        }
    };
    eprintln!();
    let clean = match kind {
        Boot::Cowlab(_) => exit == QemuExit::Kernel(0),
        Boot::Linux => exit == QemuExit::TripleFault,
    };
    if !clean || !run.done {
        let tail: Vec<&str> = session.tail().collect();
        let hint = match kind {
            Boot::Cowlab(Accel::Kvm) => {
                "\nKVM does not work on cowlab's development and CI machines: drop --kvm"
            }
            _ => "",
        };
        bail!(
            "bench ({label}) did not finish cleanly ({exit}); last console lines:\n{}\n(log: {}){hint}",
            tail.join("\n"),
            log.display()
        );
    }
    Ok((run, lines))
}

/// Rows known not to repeat, each with why (docs/benchmarks.md, "Two runs are identical"):
/// their differences are reported on a line of their own, never a failure; every other row
/// must repeat exactly.
pub const NOT_REPEATING: [(&str, &str); 5] = [
    (
        "file_read_4k",
        "Linux: 1898 vs 1893 in two boots (every sample +5, session 9): the file rows follow the mount, whose disk reads complete in host time, so where the coarse clock's ticks fall differs (likely the relatime atime test of the page-cache read); cowlab's repeats",
    ),
    (
        "file_write_4k",
        "cowlab's write-through write waits for the disk, whose service time -icount sleep=off warps over",
    ),
    (
        "file_msync_1m",
        "the writeback of 256 pages waits for the disk (both kernels)",
    ),
    (
        "writeback_per_page",
        "Linux: the bios' completion interrupts land inside or after the timed sync_file_range as the host's service time decides (min 3455 vs 2832 in two boots, median 3456 in both); cowlab's repeats",
    ),
    (
        "smp_munmap_1page_4cpus",
        "cowlab: medians 15430 to 15615 in five 4-CPU boots (two without a disk); cause not found",
    ),
];

fn not_repeating(name: &str) -> bool {
    NOT_REPEATING.iter().any(|(n, _)| *n == name)
}

/// Differences of every later run of `kernel` from the first, one short description each:
/// those that fail the run, and those of [`NOT_REPEATING`] rows.
fn compare(runs: &[Run], kernel: &str) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut device = Vec::new();
    let first = &runs[0];
    for (i, other) in runs.iter().enumerate().skip(1) {
        for m in &first.measurements {
            let list = if not_repeating(&m.name) {
                &mut device
            } else {
                &mut out
            };
            match other.get(&m.name) {
                Some(o) if o == m => {}
                Some(o) => list.push(format!(
                    "{kernel} run {}: {} median {} vs {}, min {} vs {}",
                    i + 1,
                    m.name,
                    o.median,
                    m.median,
                    o.min,
                    m.min
                )),
                None => out.push(format!("{kernel} run {}: {} missing", i + 1, m.name)),
            }
        }
        if other.measurements.len() != first.measurements.len() || other.skips != first.skips {
            out.push(format!("{kernel} run {}: different set of results", i + 1));
        }
        // The guest's random bytes: on Linux a difference means something of the host reached
        // the boot (the kernel mixes the TSC into its pool and randomises slab freelists with
        // it), and any row may then differ by chance even where this pair of runs agreed.
        // cowlab's generator is seeded from the TSC when it first runs, after SeaBIOS has set
        // up the disks in host time; cowlab randomises nothing the rows depend on, so there it
        // is reported apart.
        if other.random != first.random {
            let list = if kernel == "cowlab" {
                &mut device
            } else {
                &mut out
            };
            list.push(format!(
                "{kernel} run {}: the guest's random bytes differ ({} vs {})",
                i + 1,
                other.random.join(", "),
                first.random.join(", ")
            ));
        }
    }
    (out, device)
}

/// Runs the release `bench` natively (it is a static Linux executable).
fn host_run() -> Result<Run> {
    let bench = release_bench()?;
    eprintln!("xtask: running {} on the host", bench.display());
    let output = Command::new(&bench)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bench.display()))?;
    if !output.status.success() {
        bail!("{} on the host: {}", bench.display(), output.status);
    }
    Run::parse(&String::from_utf8_lossy(&output.stdout))
}

/// The root image of this bench run: built from `files` (the release programs), then copied
/// into `out`, where no other xtask command writes, so every boot of the run (cowlab's, the
/// faultstat kernel's, Linux's) attaches the same programs.
fn bench_root(out: &Path, files: &[(String, PathBuf)]) -> Result<PathBuf> {
    let built = crate::rootfs::ensure(&crate::target_dir(), files, false)?;
    std::fs::create_dir_all(out)?;
    let copy = out.join("cowlab-root.img");
    std::fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::results::FIXTURE;
    use super::*;

    #[test]
    fn the_smp_boot_has_no_disk_and_runs_bench_smp_with_smp_sched() {
        let machine = Machine {
            image: PathBuf::from("/t/cowlab.img"),
            ovmf: None,
            accel: Accel::Icount,
            gdb: false,
            cmdline: "-- bench".into(),
            disk: Some(PathBuf::from("/t/vda.img")),
            root: Some((PathBuf::from("/t/root.img"), false)),
        };
        let smp = smp_machine(&machine, Some(2009)).unwrap();
        assert_eq!(smp.cmdline, "era=2009 smp_sched=1 -- bench smp");
        assert!(smp.disk.is_none() && smp.root.is_none());
        assert_eq!(
            smp_machine(&machine, None).unwrap().cmdline,
            "smp_sched=1 -- bench smp"
        );
    }

    #[test]
    fn different_guest_random_bytes_fail_the_comparison() {
        let a = Run::parse(&format!("BENCH-RANDOM bytes=00ff\n{FIXTURE}")).unwrap();
        assert_eq!(a.random, ["bytes=00ff"]);
        let (diff, _) = compare(&[a.clone(), a.clone()], "Linux");
        assert!(diff.is_empty(), "{diff:?}");
        let b = Run::parse(&format!("BENCH-RANDOM bytes=01ff\n{FIXTURE}")).unwrap();
        let (diff, _) = compare(&[a.clone(), b.clone()], "Linux");
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].contains("random bytes differ (bytes=01ff vs bytes=00ff)"));
        let (diff, apart) = compare(&[a, b], "cowlab");
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(apart.len(), 1, "{apart:?}");
    }

    #[test]
    fn identical_runs_compare_equal_and_a_change_is_named() {
        let a = Run::parse(FIXTURE).unwrap();
        let (diff, device) = compare(&[a.clone(), a.clone()], "cowlab");
        assert!(diff.is_empty() && device.is_empty());
        let mut b = a.clone();
        b.measurements[1].median += 1;
        let (diff, _) = compare(&[a.clone(), b], "Linux");
        assert_eq!(diff.len(), 1);
        assert!(
            diff[0].contains("Linux run 2: anon_write_fault median 1205 vs 1204"),
            "{diff:?}"
        );
        // A row timed across the disk's service time is reported apart, not a failure; a row
        // of the SMP boot merged into the run is compared like any other.
        let mut a = a;
        let smp = Run::parse(
            "BENCH name=file_write_4k unit=tsc median=9998457 min=12240 n=256\n\
             BENCH name=smp_fault_shared_4 unit=tsc/fault median=919 min=919 n=5\n",
        )
        .unwrap();
        a.merge(smp).unwrap();
        let mut c = a.clone();
        c.measurements[5].median = 9959917;
        let (diff, device) = compare(&[a.clone(), c], "cowlab");
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(device.len(), 1);
        assert!(device[0].contains("file_write_4k median 9959917 vs 9998457"));
        let mut d = a.clone();
        d.measurements[6].min = 918;
        let (diff, _) = compare(&[a, d], "cowlab");
        assert!(diff[0].contains("smp_fault_shared_4"), "{diff:?}");
    }
}
