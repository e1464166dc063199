//! `cargo xtask bench`: boots cowlab in the deterministic QEMU configuration of
//! `shared/perf/LINUX-BASELINE.md` with `bench` as the program `init` runs, collects its `BENCH`
//! lines, and compares them with Linux 6.1 and issue 7's targets (`xtask/data/`).
//!
//! Under `-icount shift=0` the numbers are guest instruction counts and must repeat exactly, so
//! the benchmark boots twice by default and says whether the two runs agree. Output:
//! a table on stdout, `target/bench/results.{json,csv}`, and SVG charts in `target/bench/`.

mod breakdown;
mod report;
mod results;
mod svg;

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

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Also run the same `bench` binary natively on this Linux host (a third column, in host
    /// TSC cycles rather than guest instructions).
    #[arg(long)]
    pub host: bool,
    /// Use KVM instead of deterministic TCG (real cycles; numbers vary between runs). Opt-in:
    /// KVM does not work on cowlab's development and CI machines.
    #[arg(long)]
    pub kvm: bool,
    /// After the measured runs, boot once more with a kernel built with the `faultstat` feature
    /// and print its per-phase fault breakdown (printed by the kernel at power-off). The table
    /// itself always comes from the default kernel, which carries no measurement code.
    #[arg(long)]
    pub breakdown: bool,
    /// Boots to compare (under icount every run must give identical numbers).
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
    let qemu_path = deps::qemu()?;
    let out = target_dir().join("bench");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

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
        cmdline: qemu::compose_cmdline(None, &["bench".to_owned()])?,
        disk: Some(built.disk.clone()),
    };
    let shown = qemu::show_command(&machine.command(&qemu_path));
    eprintln!("xtask: {shown}");

    let mut runs = Vec::new();
    for i in 0..args.runs {
        let log = out.join(format!("console-{}.log", i + 1));
        let label = format!("run {}/{}", i + 1, args.runs);
        runs.push(boot(&machine, &qemu_path, &built.kernel_elf, &log, args, &label)?.0);
    }
    let cowlab = runs[0].clone();
    let differences = compare(&runs);
    let deterministic = differences.is_empty();

    let host = if args.host { Some(host_run()?) } else { None };
    let breakdown = if args.breakdown {
        let build_args = BuildArgs {
            kernel: Some(breakdown::build_kernel()?),
            ..build_args
        };
        let built = image::build_all(&build_args, Firmware::Bios)?;
        let machine = Machine {
            image: built.image.clone(),
            ..machine.clone()
        };
        let log = out.join("console-faultstat.log");
        let (run, console) = boot(
            &machine,
            &qemu_path,
            &built.kernel_elf,
            &log,
            args,
            "faultstat",
        )?;
        let parsed = breakdown::parse(&console);
        if parsed.is_empty() {
            bail!(
                "--breakdown: the faultstat kernel printed no FAULTSTAT lines (log: {})",
                log.display()
            );
        }
        Some((parsed, run))
    } else {
        None
    };

    let linux = results::linux_baseline();
    let targets = results::targets();
    let rows = report::rows(&cowlab, host.as_ref(), &linux, &targets);
    let table = report::table(&rows, host.is_some());

    println!();
    print!("{table}");
    println!();
    println!("cowlab: {}", describe_accel(accel));
    println!("Linux 6.1: {}", linux.source);
    println!("targets: {}", targets.source);
    if host.is_some() {
        println!("host: the same static binary run natively; TSC cycles, not instructions");
    }
    let runs_note = if args.runs == 1 {
        "one run (use --runs 2 to check determinism)".to_owned()
    } else if deterministic {
        format!("all {} runs gave identical results", args.runs)
    } else {
        format!(
            "runs DIFFER ({}): {}",
            differences.len(),
            differences.join("; ")
        )
    };
    println!("determinism: {runs_note}");
    if let Some((kinds, run)) = &breakdown {
        println!();
        print!("{}", breakdown::table(kinds, run));
    }

    let json = serde_json::json!({
        "qemu": shown,
        "accel": describe_accel(accel),
        "runs": args.runs,
        "identical_runs": deterministic,
        "differences": differences,
        "linux_source": linux.source,
        "targets_source": targets.source,
        "rows": report::json_rows(&rows),
        "breakdown": breakdown.as_ref().map(|(kinds, run)| breakdown::json(kinds, run)),
    });
    write(
        &out.join("results.json"),
        &serde_json::to_string_pretty(&json)?,
    )?;
    write(&out.join("results.csv"), &report::csv(&rows))?;
    write(&out.join("table.md"), &table)?;
    write(&out.join("paths.svg"), &svg::paths_chart(&rows))?;
    write(
        &out.join("fork.svg"),
        &svg::fork_chart(&rows, host.is_some()),
    )?;
    write(
        &out.join("vmas.svg"),
        &svg::vma_chart(&rows, host.is_some()),
    )?;
    println!(
        "wrote {0}/results.json, results.csv, table.md, paths.svg, fork.svg, vmas.svg",
        out.display()
    );

    if accel == Accel::Icount && !deterministic {
        eprintln!("xtask: error: under -icount every run must give identical numbers");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

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

/// One boot: collects the program's lines with a progress line on stderr; returns the run and
/// the whole console (for the breakdown).
fn boot(
    machine: &Machine,
    qemu_path: &Path,
    kernel_elf: &Path,
    log: &Path,
    args: &BenchArgs,
    label: &str,
) -> Result<(Run, Vec<String>)> {
    let mut session = Session::start(machine, qemu_path, kernel_elf, log)?;
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
    if exit != QemuExit::Kernel(0) || !run.done {
        let tail: Vec<&str> = session.tail().collect();
        let hint = match machine.accel {
            Accel::Kvm => "\nKVM does not work on cowlab's development and CI machines: drop --kvm",
            _ => "",
        };
        bail!(
            "bench did not finish cleanly ({exit}); last console lines:\n{}\n(log: {}){hint}",
            tail.join("\n"),
            log.display()
        );
    }
    Ok((run, lines))
}

/// Differences of every later run from the first, one short description each.
fn compare(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    let first = &runs[0];
    for (i, other) in runs.iter().enumerate().skip(1) {
        for m in &first.measurements {
            match other.get(&m.name) {
                Some(o) if o == m => {}
                Some(o) => out.push(format!(
                    "run {}: {} median {} vs {}, min {} vs {}",
                    i + 1,
                    m.name,
                    o.median,
                    m.median,
                    o.min,
                    m.min
                )),
                None => out.push(format!("run {}: {} missing", i + 1, m.name)),
            }
        }
        if other.measurements.len() != first.measurements.len() || other.skips != first.skips {
            out.push(format!("run {}: different set of results", i + 1));
        }
    }
    out
}

/// Runs the release `bench` natively (it is a static Linux executable).
fn host_run() -> Result<Run> {
    let programs = build::userland(Profile::Release)?;
    let bench: PathBuf = programs
        .into_iter()
        .find(|p| p.name == "bench")
        .map(|p| p.path)
        .context("cargo built no `bench` program")?;
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

#[cfg(test)]
mod tests {
    use super::results::FIXTURE;
    use super::*;

    #[test]
    fn identical_runs_compare_equal_and_a_change_is_named() {
        let a = Run::parse(FIXTURE).unwrap();
        assert!(compare(&[a.clone(), a.clone()]).is_empty());
        let mut b = a.clone();
        b.measurements[1].median += 1;
        let diff = compare(&[a, b]);
        assert_eq!(diff.len(), 1);
        assert!(
            diff[0].contains("anon_write_fault median 1205 vs 1204"),
            "{diff:?}"
        );
    }
}
