//! `cargo xtask test`: every test tier, one line per test, then `N passed, N failed`.
//!
//! Tiers, in order:
//! 1. host: `cargo test` on the workspace's default members (mm core, image builder, xtask);
//! 2. userland: each program is a static non-PIE ELF, and `init` runs on the host Linux;
//! 3. kernel: every in-kernel test in QEMU (`ktest`), resuming after tests that take the kernel
//!    down ([`crate::ktest`]);
//! 4. programs: each userland test program booted as `init -- <program>` in QEMU, with the
//!    frame count checked against boot (see [`crate::usertest`]); the same programs also run
//!    natively on the host in tier 2;
//! 5. harness: the kernel's deliberately broken `selftest_*` tests are reported as what they are.
//!
//! QEMU's serial output goes to `target/test-logs/<tier>-boot<N>.log`; failures show the tail.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use cowlab_boot::Firmware;

use crate::build::{self, Profile};
use crate::ktest::{self, Failure, Filter, Limits, Outcome, QemuBoot};
use crate::libtest::{self, TestOutcome};
use crate::qemu::{Accel, Machine};
use crate::{deps, elf, image, target_dir, usertest, workspace_root, BuildArgs};

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Per-test timeout in seconds: an in-kernel test silent this long is a hang (and no test
    /// may run longer than five times this, printing or not).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    /// Timeout for the `selftest_hang` harness test, in seconds. The silence it measures starts
    /// when QEMU does, so it includes the boot (seconds, more on a loaded machine).
    #[arg(long, value_name = "SECS", default_value_t = 20)]
    pub hang_timeout: u64,
    /// Run only these tiers (repeatable; default: all).
    #[arg(long, value_enum, value_name = "TIER")]
    pub only: Vec<Tier>,
    /// In the programs tier, boot only these test programs (repeatable; default: all). The
    /// root-disk tests run whatever this says.
    #[arg(long, value_name = "NAME")]
    pub program: Vec<String>,
    /// Number of CPUs of every QEMU machine the tiers boot (`-smp N`, see `qemu --smp`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Run the tests under this historical rule set (SEMANTICS.md section 9): 2009, 2016, 2020,
    /// 2022 or 2023 (the default). Adds `era=YEAR` to every boot's kernel command line.
    #[arg(long, value_name = "YEAR", value_parser = crate::era::parse)]
    pub era: Option<u32>,
    /// Run only these tests, by name: a userland test program (`t_cow`, `c_signals`: in QEMU
    /// and natively on the host), an in-kernel test (`hw_fork_cow_isolation`), or else a filter
    /// on the host unit tests' names (`rules::tests::wp_reuse_per_era`, `fork`).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// `cargo test` on the host.
    Host,
    /// The userland programs' ELF check and `init` on the host Linux.
    Userland,
    /// In-kernel tests in QEMU.
    Kernel,
    /// The userland test programs in QEMU (`init -- <program>`).
    Programs,
    /// Self-tests of the in-kernel test harness.
    Harness,
    /// A bounded, seeded run of the system-call fuzzer on the kcov kernel (`cargo xtask fuzz`).
    Fuzz,
}

/// Lines of a failing boot's log shown under its failure.
const TAIL: usize = 15;

/// Running totals over all tiers.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) passed: usize,
    pub(crate) failed: usize,
    pub(crate) ignored: usize,
    pub(crate) failures: Vec<String>,
}

impl Tally {
    pub(crate) fn pass(&mut self, line: &str) {
        println!("{line} ... ok");
        self.passed += 1;
    }

    pub(crate) fn fail(&mut self, name: &str, why: &str) {
        println!("{name} ... FAILED: {why}");
        self.failed += 1;
        self.failures.push(name.to_owned());
    }
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    crate::qemu::set_smp(args.smp);
    if !args.names.is_empty() {
        return crate::testname::run(args);
    }
    let wants = |tier| args.only.is_empty() || args.only.contains(&tier);
    let logs = target_dir().join("test-logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("clearing {}", logs.display()))?;
    }
    std::fs::create_dir_all(&logs)?;
    let profile = Profile::from_release_flag(args.build.release);
    let mut tally = Tally::default();

    if wants(Tier::Host) {
        section("host unit tests (cargo test)");
        host_tests(&logs, &mut tally)?;
        host_clippy(&logs, &mut tally)?;
    }
    let mut tests = Vec::new();
    if wants(Tier::Userland) || wants(Tier::Programs) {
        section("userland programs");
        tests = userland(profile, &mut tally, wants(Tier::Userland));
    }
    if wants(Tier::Kernel) || wants(Tier::Harness) || wants(Tier::Programs) {
        section("in-kernel tests (QEMU, TCG)");
        match kernel_machine(args) {
            Ok((qemu, built)) => {
                let mut boot = QemuBoot {
                    machine: Machine {
                        image: built.image.clone(),
                        ovmf: None,
                        accel: Accel::Tcg,
                        gdb: false,
                        cmdline: crate::era::with_token(args.era, ""),
                        disk: Some(built.disk.clone()),
                        root: None,
                    },
                    qemu: &qemu,
                    kernel_elf: &built.kernel_elf,
                };
                if wants(Tier::Kernel) {
                    kernel_tests(&mut boot, args, &logs, &mut tally)?;
                }
                if wants(Tier::Programs) {
                    section("userland test programs in QEMU (init -- PROGRAM)");
                    match crate::rootfs::ensure(&target_dir(), &built.files, false) {
                        Ok(root) => {
                            let mut with_root = boot.machine.clone();
                            with_root.root = Some((root.clone(), false));
                            let boot_root = QemuBoot {
                                machine: with_root,
                                qemu: boot.qemu,
                                kernel_elf: boot.kernel_elf,
                            };
                            programs_in_qemu(&boot_root, &tests, args, &logs, &mut tally);
                            section("the root filesystem: persistence, e2fsck, image fuzzing");
                            root_disk_tests(&boot_root, &root, args, &logs, &mut tally);
                            console_session(&boot_root, args, &logs, &mut tally);
                        }
                        Err(error) => tally.fail("programs: the root image", &format!("{error:#}")),
                    }
                }
                if wants(Tier::Harness) {
                    section("harness self-tests");
                    harness(&mut boot, args, &logs, &mut tally)?;
                    let name = "harness: tools/gdb/cowlab.py at a breakpoint: cowlab-ps, cowlab-vmas, cowlab-pte";
                    match crate::gdb::selftest() {
                        Ok(()) => tally.pass(name),
                        Err(error) => tally.fail(name, &format!("{error:#}")),
                    }
                    section(
                        "course labs: each stubbed tree fails its grade, this tree gets full marks",
                    );
                    match crate::lab::check_all(&[]) {
                        Ok(results) => {
                            for (name, failure) in results {
                                match failure {
                                    None => tally.pass(&name),
                                    Some(why) => tally.fail(&name, &why),
                                }
                            }
                        }
                        Err(error) => tally.fail("course labs", &format!("{error:#}")),
                    }
                }
            }
            Err(error) => tally.fail("kernel: build and image", &format!("{error:#}")),
        }
    }
    if wants(Tier::Fuzz) {
        section("system-call fuzzer (kcov kernel, seed 1, 3000 calls)");
        match crate::fuzz::bounded() {
            Ok(None) => tally.pass("fuzz: seed 1, 3000 calls"),
            Ok(Some(why)) => tally.fail("fuzz: seed 1, 3000 calls", &why),
            Err(error) => tally.fail("fuzz: seed 1, 3000 calls", &format!("{error:#}")),
        }
    }

    println!();
    if tally.ignored > 0 {
        println!("({} host tests ignored)", tally.ignored);
    }
    if !tally.failures.is_empty() {
        println!("failed: {}", tally.failures.join(", "));
        println!("logs: {}", logs.display());
    }
    println!("{} passed, {} failed", tally.passed, tally.failed);
    Ok(if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) fn section(title: &str) {
    println!("== {title} ==");
}

/// Tier 1: `cargo test` over the default members, one line per test.
pub(crate) fn host_tests(logs: &Path, tally: &mut Tally) -> Result<()> {
    host_tests_matching(logs, tally, None).map(|_| ())
}

/// [`host_tests`] with libtest's name filter (`cargo test -- FILTER`); returns how many tests
/// ran (passed or failed).
pub(crate) fn host_tests_matching(
    logs: &Path,
    tally: &mut Tally,
    filter: Option<&str>,
) -> Result<usize> {
    println!("(a first build compiles the bootloader's BIOS and UEFI stages: about two minutes)");
    let log_path = logs.join("host.log");
    let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path)?);
    // One pipe for stdout and stderr keeps cargo's `Running` lines (stderr) in order with the
    // test lines (stdout).
    let (reader, writer) = std::io::pipe()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["test", "--no-fail-fast", "--color", "never"])
        .args(filter.map(|f| ["--", f]).into_iter().flatten())
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = command.spawn().context("running cargo test")?;
    // Our copies of the pipe's write end went into `command`; drop it so EOF arrives.
    drop(command);

    let mut suite = String::from("?");
    let (mut passed, mut failed, mut summary_passed, mut summary_failed) = (0, 0, 0, 0);
    let mut details = Vec::new();
    let mut in_details = false;
    for line in std::io::BufReader::new(reader).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        match libtest::parse(&line) {
            Some(libtest::Event::Suite(name)) => suite = name,
            Some(libtest::Event::Test { name, result }) => {
                let name = format!("host {suite}::{name}");
                match result {
                    TestOutcome::Ok => {
                        tally.pass(&name);
                        passed += 1;
                    }
                    TestOutcome::Failed => {
                        tally.fail(&name, "see the output below");
                        failed += 1;
                    }
                    TestOutcome::Ignored => {
                        println!("{name} ... ignored");
                        tally.ignored += 1;
                    }
                }
            }
            Some(libtest::Event::Summary { passed, failed }) => {
                summary_passed += passed;
                summary_failed += failed;
                in_details = false;
            }
            None if line == "failures:" => in_details = true,
            None if in_details => details.push(line),
            None => {}
        }
    }
    log.flush()?;
    let status = child.wait()?;
    if !details.is_empty() {
        println!("---- output of the failed host tests ----");
        for line in &details {
            println!("    {line}");
        }
    }
    if (summary_passed, summary_failed) != (passed, failed) {
        tally.fail(
            "host: test lines match libtest's summaries",
            &format!(
                "saw {passed} ok and {failed} FAILED lines, summaries say {summary_passed} and {summary_failed}"
            ),
        );
    }
    if !status.success() && failed == 0 {
        tally.fail(
            "host: cargo test",
            &format!("cargo test failed ({status}) without a failing test: a build error?"),
        );
        print_tail(&log_path);
    }
    Ok(passed + failed)
}

/// The host crates (the workspace without the two `x86_64-unknown-none` packages) under
/// `cargo clippy --all-targets -- -D warnings`: one line, the diagnostics in `host-clippy.log`.
fn host_clippy(logs: &Path, tally: &mut Tally) -> Result<()> {
    let name = "host: cargo clippy --workspace (host crates) -- -D warnings";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let log_path = logs.join("host-clippy.log");
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["clippy", "--workspace", "--exclude", "cowlab-kernel"])
        .args([
            "--exclude",
            "cowlab-userland",
            "--all-targets",
            "--color",
            "never",
        ])
        .args(["--", "-D", "warnings"])
        .stdin(Stdio::null())
        .output()
        .context("running cargo clippy")?;
    std::fs::write(&log_path, &output.stderr)?;
    if output.status.success() {
        tally.pass(name);
    } else {
        tally.fail(name, &format!("see {}", log_path.display()));
        print_tail(&log_path);
    }
    Ok(())
}

/// Tier 2: each program's ELF shape, `init` on the host Linux, and every test program natively
/// on the host (a cross-check that the tests are right). Returns the test programs' names.
pub(crate) fn userland(profile: Profile, tally: &mut Tally, checks: bool) -> Vec<String> {
    userland_paths(profile, tally, checks)
        .into_iter()
        .map(|t| t.0)
        .collect()
}

/// The built test programs (name, path), without the ELF and host checks.
pub(crate) fn userland_built(
    profile: Profile,
    tally: &mut Tally,
) -> Result<Vec<(String, PathBuf)>> {
    Ok(userland_paths(profile, tally, false))
}

fn userland_paths(profile: Profile, tally: &mut Tally, checks: bool) -> Vec<(String, PathBuf)> {
    let programs = match build::userland(profile) {
        Ok(programs) => programs,
        Err(error) => {
            tally.fail("userland: build", &format!("{error:#}"));
            return Vec::new();
        }
    };
    let (c_programs, missing) = match build::c_programs() {
        Ok(built) => built,
        Err(error) => {
            tally.fail("userland: C programs build", &format!("{error:#}"));
            (Vec::new(), Vec::new())
        }
    };
    if checks {
        let name = "userland: C programs built with gcc -static, -static-pie and musl-gcc -static";
        if missing.is_empty() {
            tally.pass(name);
        } else {
            tally.fail(name, &format!("missing {}", missing.join(", ")));
        }
    }
    let tests = usertest::test_programs(
        programs
            .iter()
            .chain(&c_programs)
            .map(|p| (p.name.clone(), p.path.clone())),
    );
    if !checks {
        return tests;
    }
    for program in &programs {
        let name = format!(
            "userland: {} is a static non-PIE ELF at 0x400000",
            program.name
        );
        match std::fs::read(&program.path)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| elf::check_static_exec(&bytes))
        {
            Ok(_) => tally.pass(&name),
            Err(error) => tally.fail(&name, &format!("{}: {error:#}", program.path.display())),
        }
    }
    let name = "userland: init runs a program on host Linux";
    let status = programs.iter().find(|p| p.name == "status");
    match (programs.iter().find(|p| p.name == "init"), status) {
        (Some(init), Some(status)) => match run_on_host(&init.path, &status.path) {
            Ok(()) => tally.pass(name),
            Err(error) => tally.fail(name, &format!("{error:#}")),
        },
        _ => tally.fail(name, "no init or status program was built"),
    }
    for (test, path) in tests
        .iter()
        .filter(|(test, _)| usertest::runs_on_host(test))
    {
        let name = format!("host: {test}");
        match usertest::run_on_host(path, test, Duration::from_secs(60)) {
            Ok((passed, _)) => tally.pass(&format!("{name} ({passed} checks)")),
            Err(error) => tally.fail(&name, &format!("{error:#}")),
        }
    }
    tests
}

/// Tier 4: every test program in QEMU, one boot each.
pub(crate) fn programs_in_qemu(
    boot: &QemuBoot<'_>,
    tests: &[String],
    args: &TestArgs,
    logs: &Path,
    tally: &mut Tally,
) {
    if tests.is_empty() {
        tally.fail(
            "programs: at least one userland test program",
            "none was built",
        );
    }
    for (test, (label, cmdline)) in tests
        .iter()
        .filter(|t| args.program.is_empty() || args.program.contains(t))
        .flat_map(|t| usertest::boots(t).into_iter().map(move |b| (t, b)))
        // `--era` replaces the program's own era boots.
        .filter(|(_, (_, cmdline))| args.era.is_none() || !cmdline.contains("era="))
    {
        let mut machine = boot.machine.clone();
        machine.cmdline = crate::era::with_token(args.era, &cmdline);
        let log = logs.join(format!("program-{}.log", label.replace([' ', '='], "-")));
        let name = format!("qemu: {label}");
        let verdict = match usertest::run_in_qemu(
            &machine,
            boot.qemu,
            boot.kernel_elf,
            &log,
            test,
            Duration::from_secs(args.timeout * 2),
        ) {
            Ok(verdict) => verdict,
            Err(error) => {
                tally.fail(&name, &format!("{error:#}"));
                continue;
            }
        };
        let ok = verdict.summary.is_some_and(|(_, failed)| failed == 0)
            && verdict.exit == Some(crate::qemu::QemuExit::Kernel(0));
        if ok {
            let passed = verdict.summary.map_or(0, |s| s.0);
            tally.pass(&format!("{name} ({passed} checks)"));
        } else {
            let why = if verdict.timed_out {
                "timed out".to_owned()
            } else {
                format!(
                    "summary {:?}, QEMU {}",
                    verdict.summary,
                    verdict
                        .exit
                        .map_or_else(|| "still running".to_owned(), |e| e.to_string())
                )
            };
            tally.fail(&name, &why);
            for line in &verdict.failures {
                println!("    {line}");
            }
            print_tail(&log);
        }
        if let Some(expected) = usertest::console_expectation(&label) {
            let console = std::fs::read_to_string(&log).unwrap_or_default();
            let name = format!("qemu: {label}: the console shows \"{expected}\"");
            if console.contains(expected) {
                tally.pass(&name);
            } else {
                tally.fail(&name, "not on the console");
                print_tail(&log);
            }
        }
        for expected in usertest::console_once(&label) {
            let console = std::fs::read_to_string(&log).unwrap_or_default();
            let name = format!("qemu: {label}: the console shows \"{expected}\" once");
            match console.matches(expected).count() {
                1 => tally.pass(&name),
                n => {
                    tally.fail(&name, &format!("shown {n} times"));
                    print_tail(&log);
                }
            }
        }
        let frames_name = format!("qemu: {label}: frames back to the boot count");
        match verdict.frames {
            Some((free, boot_count)) if free == boot_count => tally.pass(&frames_name),
            Some((free, boot_count)) => tally.fail(
                &frames_name,
                &format!(
                    "free={free} boot={boot_count}: {} frames leaked",
                    boot_count as i64 - free as i64
                ),
            ),
            None => tally.fail(&frames_name, "no `cowlab: frames` line"),
        }
    }
}

/// The root-disk tests of `fstest`: the persistence test, then `FUZZ_SEEDS` fuzzed images.
/// The scripted BusyBox session on the console (`session`); selected by `--program
/// busybox-session` too.
fn console_session(boot: &QemuBoot<'_>, args: &TestArgs, logs: &Path, tally: &mut Tally) {
    if !args.program.is_empty() && !args.program.iter().any(|p| p == "busybox-session") {
        return;
    }
    let name =
        "qemu: busybox-session: pipeline, redirection to ext2, exit statuses, ^C, jobs/fg, ^Z, ps";
    let log = logs.join("busybox-session.log");
    match crate::session::run(
        &boot.machine,
        boot.qemu,
        boot.kernel_elf,
        &log,
        Duration::from_secs(args.timeout * 4),
    ) {
        Ok(steps) => tally.pass(&format!("{name} ({steps} steps)")),
        Err(error) => tally.fail(name, &format!("{error:#}")),
    }
}

fn root_disk_tests(
    boot: &QemuBoot<'_>,
    root: &Path,
    args: &TestArgs,
    logs: &Path,
    tally: &mut Tally,
) {
    use crate::fstest;
    let timeout = Duration::from_secs(args.timeout * 4);
    let name = "qemu: fswork --persist, e2fsck -fn clean, debugfs reads back every fsync'ed byte";
    match fstest::persist(
        &boot.machine,
        boot.qemu,
        boot.kernel_elf,
        root,
        logs,
        timeout,
    ) {
        Ok(files) => tally.pass(&format!("{name} ({files} files)")),
        Err(error) => {
            tally.fail(name, &format!("{error:#}"));
            print_tail(&logs.join("fs-persist.log"));
        }
    }
    for seed in 0..fstest::FUZZ_SEEDS {
        let name = format!("qemu: fuzzed root image seed {seed}: walked without a panic or hang");
        let timeout = Duration::from_secs(args.timeout * 2);
        match fstest::fuzz(
            &boot.machine,
            boot.qemu,
            boot.kernel_elf,
            root,
            logs,
            seed,
            timeout,
        ) {
            Ok(()) => tally.pass(&name),
            Err(error) => tally.fail(&name, &format!("{error:#}")),
        }
    }
}

/// Runs `init STATUS-PATH host-check` as a host process: it must greet with its arguments, run
/// the `status` program (fork + execve + wait4 on Linux) and exit with its status, 0.
fn run_on_host(path: &Path, status: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(path)
        .arg0("init")
        .arg(status)
        .arg("host-check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status =
        crate::qemu::wait_until(&mut child, Some(deadline))?.context("did not exit within 10 s")?;
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("piped"), &mut stdout)?;
    anyhow::ensure!(status.success(), "exited with {status}; stdout: {stdout:?}");
    anyhow::ensure!(
        stdout.starts_with("init: ")
            && stdout.contains("\"host-check\"")
            && stdout.contains("status: exiting with 0"),
        "unexpected output {stdout:?}"
    );
    Ok(())
}

/// QEMU and the BIOS image for tiers 3 and 4.
pub(crate) fn kernel_machine(args: &TestArgs) -> Result<(PathBuf, image::Built)> {
    let qemu = deps::qemu()?;
    let built = image::build_all(&args.build, Firmware::Bios)?;
    Ok((qemu, built))
}

/// Tier 3: every in-kernel test.
fn kernel_tests(
    boot: &mut QemuBoot<'_>,
    args: &TestArgs,
    logs: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let limits = Limits::new(Duration::from_secs(args.timeout));
    let report = ktest::run(
        boot,
        &Filter::All,
        limits,
        logs,
        "ktest",
        &mut |result| match &result.outcome {
            Outcome::Passed { .. } => {
                println!("{result}");
                tally.passed += 1;
            }
            Outcome::Failed(_) => {
                println!("{result}");
                tally.failed += 1;
                tally.failures.push(format!("ktest {}", result.name));
                print_lines(&result.output, &result.log);
            }
        },
    )?;
    for problem in &report.problems {
        tally.fail(
            "ktest: the kernel runs the test protocol to its end",
            &problem.what,
        );
        print_lines(&problem.tail, &problem.log);
    }
    if report.tests.is_empty() && report.problems.is_empty() {
        tally.fail("ktest: at least one in-kernel test ran", "KTEST COUNT 0");
    }
    Ok(())
}

/// What a harness self-test expects the driver to report.
struct SelfTest {
    kernel_test: &'static str,
    description: &'static str,
    expect: fn(&Failure) -> bool,
}

const SELF_TESTS: [SelfTest; 3] = [
    SelfTest {
        kernel_test: "selftest_panic",
        description: "harness: kernel panic is reported as a failure with its message",
        expect: |f| matches!(f, Failure::Panic(m) if m.contains("deliberate panic")),
    },
    SelfTest {
        kernel_test: "selftest_hang",
        description: "harness: hang is reported as a timeout",
        expect: |f| matches!(f, Failure::Timeout { .. }),
    },
    SelfTest {
        kernel_test: "selftest_triple_fault",
        description: "harness: triple fault is reported as a triple fault",
        expect: |f| matches!(f, Failure::TripleFault),
    },
];

/// Tier 4: the deliberately broken kernel tests are reported as what they are.
fn harness(boot: &mut QemuBoot<'_>, args: &TestArgs, logs: &Path, tally: &mut Tally) -> Result<()> {
    for test in &SELF_TESTS {
        let silence = if test.kernel_test == "selftest_hang" {
            args.hang_timeout
        } else {
            args.timeout
        };
        let filter = Filter::Named(test.kernel_test.to_owned());
        let limits = Limits::new(Duration::from_secs(silence));
        let report = ktest::run(boot, &filter, limits, logs, test.kernel_test, &mut |_| {})?;
        let result = report.tests.iter().find(|r| r.name == test.kernel_test);
        let verdict = match result.map(|r| &r.outcome) {
            Some(Outcome::Failed(failure)) if (test.expect)(failure) => Ok(()),
            Some(Outcome::Failed(failure)) => Err(format!("reported as: {failure}")),
            Some(Outcome::Passed { .. }) => Err("reported as passed".to_owned()),
            None => Err(match report.problems.first() {
                Some(problem) => format!("no result for {}: {}", test.kernel_test, problem.what),
                None => format!("the kernel ran no test named {}", test.kernel_test),
            }),
        };
        match verdict {
            Ok(()) => tally.pass(test.description),
            Err(why) => {
                tally.fail(test.description, &why);
                print_tail(&logs.join(format!("{}-boot1.log", test.kernel_test)));
            }
        }
    }
    Ok(())
}

/// Prints the last lines of a log file and its path.
pub(crate) fn print_tail(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = lines.len().saturating_sub(TAIL);
    print_lines(&lines[start..], log);
}

pub(crate) fn print_lines(lines: &[String], log: &Path) {
    for line in lines.iter().rev().take(TAIL).rev() {
        println!("    | {line}");
    }
    println!("    (log: {})", log.display());
}
