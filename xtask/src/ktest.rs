//! The in-kernel test driver: boots the kernel with `ktest`, follows the KTEST protocol of
//! docs/architecture.md, and turns panics, exceptions, triple faults and hangs into test failures.
//!
//! The protocol, one line each on the serial console:
//! `KTEST COUNT <n>`, `KTEST RUN <i> <name>`, `KTEST PASS <i> <name> <ticks>`,
//! `KTEST FAIL <i> <name>: <message>`, `KTEST END passed=<n> failed=<n>`.
//! A test that takes the kernel down (panic: status 2; CPU exception: status 3; triple fault: QEMU
//! status 0) or goes silent for the per-test timeout is recorded as failed, and the kernel is booted
//! again with `ktest ktest-skip=<i+1>` until a boot reaches `KTEST END`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::qemu::{Machine, Next, QemuExit, Session};

/// One protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Count(usize),
    Run {
        index: usize,
        name: String,
    },
    Pass {
        index: usize,
        name: String,
        ticks: u64,
    },
    Fail {
        index: usize,
        name: String,
        message: String,
    },
    End {
        passed: usize,
        failed: usize,
    },
}

impl Line {
    /// Parses a serial line; `None` for anything that is not a well-formed KTEST line.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.trim_end().strip_prefix("KTEST ")?;
        let (word, rest) = rest.split_once(' ')?;
        match word {
            "COUNT" => Some(Self::Count(rest.parse().ok()?)),
            "RUN" => {
                let (index, name) = rest.split_once(' ')?;
                Some(Self::Run {
                    index: index.parse().ok()?,
                    name: name.to_owned(),
                })
            }
            "PASS" => {
                let mut fields = rest.split(' ');
                let index = fields.next()?.parse().ok()?;
                let name = fields.next()?.to_owned();
                let ticks = fields.next()?.parse().ok()?;
                fields
                    .next()
                    .is_none()
                    .then_some(Self::Pass { index, name, ticks })
            }
            "FAIL" => {
                let (index, rest) = rest.split_once(' ')?;
                let (name, message) = rest
                    .split_once(": ")
                    .unwrap_or((rest.trim_end_matches(':'), ""));
                Some(Self::Fail {
                    index: index.parse().ok()?,
                    name: name.to_owned(),
                    message: message.to_owned(),
                })
            }
            "END" => {
                let (passed, failed) = rest.split_once(' ')?;
                Some(Self::End {
                    passed: passed.strip_prefix("passed=")?.parse().ok()?,
                    failed: failed.strip_prefix("failed=")?.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// Why a test (or a boot) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The test reported `KTEST FAIL` and the kernel went on.
    Reported(String),
    /// The kernel panicked (status 2); the panic message.
    Panic(String),
    /// An unexpected CPU exception (status 3); the kernel's description of it, if found.
    Exception(String),
    /// QEMU exited with status 0 under `-no-reboot`.
    TripleFault,
    /// No output for `silent_for`, or still running at the hard limit.
    Timeout { after: Duration, silent: bool },
    /// Any other ending: an unexpected kernel exit status, QEMU killed or failing.
    Ended(QemuExit),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reported(message) => write!(f, "{message}"),
            Self::Panic(message) => write!(f, "kernel panic: {message}"),
            Self::Exception(what) if what.is_empty() => {
                write!(f, "unexpected CPU exception (kernel exit status 3)")
            }
            // The kernel's own words usually name the exception already.
            Self::Exception(what) if what.to_ascii_lowercase().contains("exception") => {
                write!(f, "{what}")
            }
            Self::Exception(what) => write!(f, "unexpected CPU exception: {what}"),
            Self::TripleFault => write!(f, "triple fault (QEMU reset under -no-reboot)"),
            Self::Timeout {
                after,
                silent: true,
            } => {
                write!(f, "TIMEOUT: no output for {} s", after.as_secs())
            }
            Self::Timeout {
                after,
                silent: false,
            } => {
                write!(f, "TIMEOUT: still running after {} s", after.as_secs())
            }
            Self::Ended(exit) => write!(f, "{exit}"),
        }
    }
}

/// The result of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed { ticks: u64 },
    Failed(Failure),
}

/// A test's result, as reported by the driver.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub index: usize,
    pub name: String,
    pub outcome: Outcome,
    /// What the kernel printed between the test's `KTEST RUN` and its end (protocol lines
    /// excluded): the panic message, register dump and backtrace of a crash.
    pub output: Vec<String>,
    /// The log of the boot the test ran in.
    pub log: PathBuf,
}

impl fmt::Display for TestResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Passed { ticks } => write!(f, "ktest {} ... ok ({ticks} cycles)", self.name),
            Outcome::Failed(failure) => write!(f, "ktest {} ... FAILED: {failure}", self.name),
        }
    }
}

/// Which tests a run asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `ktest`: every test but the harness self-tests, resuming after a test that takes the
    /// kernel down.
    All,
    /// `ktest=NAME`: that test alone.
    Named(String),
}

/// Limits of a run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A test (or the boot before the first test) may be silent this long.
    pub silence: Duration,
    /// No test may run longer than this, output or not.
    pub per_test: Duration,
}

impl Limits {
    pub fn new(silence: Duration) -> Self {
        Self {
            silence,
            per_test: silence * 5,
        }
    }
}

/// What a whole run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Results in the order they arrived.
    pub tests: Vec<TestResult>,
    /// Failures outside any test (the kernel did not boot, did not finish the protocol, ...),
    /// with the log and its last lines.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub what: String,
    pub log: PathBuf,
    pub tail: Vec<String>,
}

/// How the driver talks to QEMU; a trait so the protocol logic is tested without booting.
pub trait Boot {
    /// Starts a boot with kernel command line `cmdline`, logging to `log`.
    fn start(&mut self, cmdline: &str, log: &Path) -> Result<Box<dyn Console>>;
}

/// One running boot.
pub trait Console {
    fn next_line(&mut self, timeout: Duration) -> Result<Next>;
    fn kill(&mut self, why: &str);
    fn tail(&self) -> Vec<String>;
}

/// Boots the real kernel image in QEMU.
pub struct QemuBoot<'a> {
    pub machine: Machine,
    pub qemu: &'a Path,
    pub kernel_elf: &'a Path,
}

impl Boot for QemuBoot<'_> {
    fn start(&mut self, cmdline: &str, log: &Path) -> Result<Box<dyn Console>> {
        // The machine's own tokens (e.g. `era=2016` from `--era`) go first.
        let machine = Machine {
            cmdline: format!("{} {cmdline}", self.machine.cmdline)
                .trim()
                .to_owned(),
            ..self.machine.clone()
        };
        Ok(Box::new(Session::start(
            &machine,
            self.qemu,
            self.kernel_elf,
            log,
        )?))
    }
}

impl Console for Session {
    fn next_line(&mut self, timeout: Duration) -> Result<Next> {
        Session::next_line(self, timeout)
    }
    fn kill(&mut self, why: &str) {
        Session::kill(self, why)
    }
    fn tail(&self) -> Vec<String> {
        Session::tail(self).map(str::to_owned).collect()
    }
}

/// Runs the tests `filter` selects, booting as often as needed. `label` names the log files
/// (`<log_dir>/<label>-boot<N>.log`); `on_result` sees each result as it arrives.
pub fn run(
    boot: &mut dyn Boot,
    filter: &Filter,
    limits: Limits,
    log_dir: &Path,
    label: &str,
    on_result: &mut dyn FnMut(&TestResult),
) -> Result<Report> {
    let mut report = Report::default();
    let mut expected: Option<usize> = None;
    let mut skip = 0;
    for boot_number in 1.. {
        let cmdline = match filter {
            Filter::All if skip == 0 => "ktest".to_owned(),
            Filter::All => format!("ktest ktest-skip={skip}"),
            Filter::Named(name) => format!("ktest={name}"),
        };
        let log = log_dir.join(format!("{label}-boot{boot_number}.log"));
        let mut console = boot.start(&cmdline, &log)?;
        let ending = follow_boot(console.as_mut(), limits, &log, &mut report, on_result)?;
        if boot_number == 1 {
            expected = ending.count;
        }
        match ending.resume_after {
            Some(index) if *filter == Filter::All => skip = index + 1,
            _ => break,
        }
    }
    if let (Filter::All, Some(total)) = (filter, expected) {
        let missing: Vec<usize> = (0..total)
            .filter(|i| !report.tests.iter().any(|t| t.index == *i))
            .collect();
        if !missing.is_empty() {
            report.problems.push(Problem {
                what: format!(
                    "KTEST COUNT announced {total} tests but these indices never reported: {missing:?}"
                ),
                log: log_dir.join(format!("{label}-boot1.log")),
                tail: Vec::new(),
            });
        }
    }
    Ok(report)
}

/// What one boot ended with, as far as the driver's loop cares.
struct BootEnding {
    /// `KTEST COUNT` of this boot.
    count: Option<usize>,
    /// The index of the test that took the kernel down, to boot again after it.
    resume_after: Option<usize>,
}

/// A test that printed `KTEST RUN` and has not finished, or one whose `KTEST FAIL` we hold back
/// until we know whether the kernel goes on (a reported failure) or exits with status 2 (the
/// panic handler prints FAIL, then exits).
struct Running {
    index: usize,
    name: String,
    started: Instant,
    /// The `KTEST FAIL` message, once seen.
    failed: Option<String>,
}

/// The state of one boot as its lines arrive.
struct BootState<'a> {
    log: &'a Path,
    on_result: &'a mut dyn FnMut(&TestResult),
    count: Option<usize>,
    running: Option<Running>,
    /// A test whose FAIL line arrived and that may yet turn out to have panicked.
    held_fail: Option<Running>,
    ended: Option<(usize, usize)>,
    /// Non-protocol lines since the last `KTEST RUN`: the test's output.
    output: Vec<String>,
}

impl BootState<'_> {
    fn record(&mut self, report: &mut Report, test: Running, outcome: Outcome) {
        let result = TestResult {
            index: test.index,
            name: test.name,
            outcome,
            output: self.output.clone(),
            log: self.log.to_owned(),
        };
        (self.on_result)(&result);
        report.tests.push(result);
    }

    /// Records a held-back FAIL as a reported failure: the kernel went on after it.
    fn release_held_fail(&mut self, report: &mut Report) {
        if let Some(test) = self.held_fail.take() {
            let message = test.failed.clone().unwrap_or_default();
            self.record(report, test, Outcome::Failed(Failure::Reported(message)));
        }
    }

    fn problem(&self, report: &mut Report, console: &dyn Console, what: String) {
        report.problems.push(Problem {
            what,
            log: self.log.to_owned(),
            tail: console.tail(),
        });
    }

    fn line(&mut self, report: &mut Report, line: String) {
        let Some(parsed) = Line::parse(&line) else {
            self.output.push(line);
            return;
        };
        self.release_held_fail(report);
        match parsed {
            Line::Count(n) => self.count = Some(n),
            Line::Run { index, name } => {
                self.output.clear();
                self.running = Some(Running {
                    index,
                    name,
                    started: Instant::now(),
                    failed: None,
                });
            }
            Line::Pass { index, name, ticks } => {
                self.running = None;
                let test = Running {
                    index,
                    name,
                    started: Instant::now(),
                    failed: None,
                };
                self.record(report, test, Outcome::Passed { ticks });
            }
            Line::Fail {
                index,
                name,
                message,
            } => {
                let started = self.running.take().map_or_else(Instant::now, |r| r.started);
                self.held_fail = Some(Running {
                    index,
                    name,
                    started,
                    failed: Some(message),
                });
            }
            Line::End { passed, failed } => self.ended = Some((passed, failed)),
        }
    }

    /// Nothing arrived within the timeout: kill QEMU, fail the running test (or the boot).
    fn silent(
        &mut self,
        report: &mut Report,
        console: &mut dyn Console,
        limits: Limits,
    ) -> BootEnding {
        let (after, silent) = match &self.running {
            Some(test) if test.started.elapsed() >= limits.per_test => {
                (test.started.elapsed(), false)
            }
            _ => (limits.silence, true),
        };
        let failure = Failure::Timeout { after, silent };
        console.kill(&failure.to_string());
        if let Some(test) = self.running.take() {
            let index = test.index;
            self.record(report, test, Outcome::Failed(failure));
            return BootEnding {
                count: self.count,
                resume_after: Some(index),
            };
        }
        self.release_held_fail(report);
        let stage = if self.ended.is_some() {
            "after KTEST END (the kernel did not power off)"
        } else if self.count.is_some() {
            "between tests"
        } else {
            "before KTEST COUNT (the kernel did not boot?)"
        };
        self.problem(report, console, format!("{failure} {stage}"));
        BootEnding {
            count: self.count,
            resume_after: None,
        }
    }

    /// QEMU exited: classify how, against what the protocol said so far.
    fn exited(&mut self, report: &mut Report, console: &dyn Console, exit: QemuExit) -> BootEnding {
        // The test the kernel died in: one that printed RUN and nothing since, or one whose FAIL
        // line was the panic handler's.
        if let Some(test) = self.running.take().or_else(|| self.held_fail.take()) {
            let failure = match (exit, &test.failed) {
                (QemuExit::Kernel(2), failed) => Failure::Panic(
                    failed
                        .clone()
                        .or_else(|| panic_line(&self.output))
                        .unwrap_or_else(|| "no panic message seen".to_owned()),
                ),
                (QemuExit::Kernel(3), failed) => {
                    let what = failed
                        .clone()
                        .or_else(|| exception_line(&self.output))
                        .unwrap_or_default();
                    Failure::Exception(match crash_site(&self.output) {
                        Some(site) => format!("{what} in {site}"),
                        None => what,
                    })
                }
                (QemuExit::TripleFault, _) => Failure::TripleFault,
                // An exit right after a FAIL line without END: the FAIL as it was.
                (QemuExit::Kernel(_), Some(message)) => Failure::Reported(message.clone()),
                (other, _) => Failure::Ended(other),
            };
            let index = test.index;
            self.record(report, test, Outcome::Failed(failure));
            if self.ended.is_none() {
                return BootEnding {
                    count: self.count,
                    resume_after: Some(index),
                };
            }
        }
        match (self.ended, exit) {
            (Some((_, failed)), QemuExit::Kernel(status)) if status == u32::from(failed > 0) => {}
            (Some((passed, failed)), exit) => self.problem(
                report,
                console,
                format!(
                    "boot reached KTEST END passed={passed} failed={failed} but ended with {exit}"
                ),
            ),
            (None, exit) => {
                let detail = match exit {
                    QemuExit::Kernel(2) => panic_line(&self.output)
                        .map(|m| format!(": kernel panic: {m}"))
                        .unwrap_or_default(),
                    QemuExit::Kernel(3) => exception_line(&self.output)
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let stage = if self.count.is_some() {
                    "between tests"
                } else {
                    "before KTEST COUNT"
                };
                self.problem(
                    report,
                    console,
                    format!("no KTEST END: the kernel ended {stage} with {exit}{detail}"),
                );
            }
        }
        BootEnding {
            count: self.count,
            resume_after: None,
        }
    }
}

/// Follows one boot to its end, adding results and problems to `report`.
fn follow_boot(
    console: &mut dyn Console,
    limits: Limits,
    log: &Path,
    report: &mut Report,
    on_result: &mut dyn FnMut(&TestResult),
) -> Result<BootEnding> {
    let mut state = BootState {
        log,
        on_result,
        count: None,
        running: None,
        held_fail: None,
        ended: None,
        output: Vec::new(),
    };
    loop {
        let timeout = match &state.running {
            Some(test) => limits
                .silence
                .min(limits.per_test.saturating_sub(test.started.elapsed())),
            None => limits.silence,
        };
        match console.next_line(timeout)? {
            Next::Line(line) => state.line(report, line),
            Next::Silent => return Ok(state.silent(report, console, limits)),
            Next::Exited(exit) => return Ok(state.exited(report, console, exit)),
        }
    }
}

/// The panic message among `lines` (`... panicked at FILE:LINE: MSG`).
fn panic_line(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.find("panicked at").map(|at| l[at..].to_owned()))
}

/// The symbolized location of backtrace frame #0 (the faulting RIP) among `lines`, if any.
fn crash_site(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        let rest = l.trim_start().strip_prefix("bt #0 ")?;
        let (_addr, site) = rest.split_once(' ')?;
        Some(site.trim().to_owned()).filter(|s| !s.is_empty())
    })
}

/// The kernel's description of a CPU exception among `lines`: the first line naming an
/// exception or fault (later lines are the register dump and backtrace).
fn exception_line(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("exception") || lower.contains("fault")
        })
        .map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn parses_protocol_lines() {
        assert_eq!(Line::parse("KTEST COUNT 7"), Some(Line::Count(7)));
        assert_eq!(
            Line::parse("KTEST RUN 3 frame_alloc_all"),
            Some(Line::Run {
                index: 3,
                name: "frame_alloc_all".into()
            })
        );
        assert_eq!(
            Line::parse("KTEST PASS 3 frame_alloc_all 123456"),
            Some(Line::Pass {
                index: 3,
                name: "frame_alloc_all".into(),
                ticks: 123456
            })
        );
        assert_eq!(
            Line::parse(
                "KTEST FAIL 4 selftest_panic: panicked at kernel/src/x.rs:9:5: deliberate panic"
            ),
            Some(Line::Fail {
                index: 4,
                name: "selftest_panic".into(),
                message: "panicked at kernel/src/x.rs:9:5: deliberate panic".into()
            })
        );
        assert_eq!(
            Line::parse("KTEST END passed=5 failed=1"),
            Some(Line::End {
                passed: 5,
                failed: 1
            })
        );
        assert_eq!(Line::parse("[0.1] INFO KTEST RUN 1 x"), None);
        assert_eq!(Line::parse("KTEST PASS 1 x"), None);
        assert_eq!(Line::parse("KTEST BOGUS 1"), None);
    }

    /// A scripted boot: each boot is a list of serial lines then how it ends.
    #[derive(Clone)]
    enum End {
        Exit(QemuExit),
        Hang,
    }

    struct Script {
        boots: VecDeque<(Vec<&'static str>, End)>,
        cmdlines: Vec<String>,
    }

    struct ScriptedConsole {
        lines: VecDeque<&'static str>,
        end: End,
        killed: bool,
    }

    impl Boot for Script {
        fn start(&mut self, cmdline: &str, _log: &Path) -> Result<Box<dyn Console>> {
            self.cmdlines.push(cmdline.to_owned());
            let (lines, end) = self.boots.pop_front().expect("an unexpected extra boot");
            Ok(Box::new(ScriptedConsole {
                lines: lines.into(),
                end,
                killed: false,
            }))
        }
    }

    impl Console for ScriptedConsole {
        fn next_line(&mut self, _timeout: Duration) -> Result<Next> {
            assert!(!self.killed);
            if let Some(line) = self.lines.pop_front() {
                return Ok(Next::Line(line.to_owned()));
            }
            Ok(match self.end {
                End::Exit(exit) => Next::Exited(exit),
                End::Hang => Next::Silent,
            })
        }
        fn kill(&mut self, _why: &str) {
            self.killed = true;
        }
        fn tail(&self) -> Vec<String> {
            vec!["last line".into()]
        }
    }

    fn drive(filter: Filter, boots: Vec<(Vec<&'static str>, End)>) -> (Report, Vec<String>) {
        let mut script = Script {
            boots: boots.into(),
            cmdlines: Vec::new(),
        };
        let limits = Limits::new(Duration::from_secs(60));
        let report = run(
            &mut script,
            &filter,
            limits,
            Path::new("/tmp"),
            "t",
            &mut |_| {},
        )
        .unwrap();
        assert!(script.boots.is_empty(), "boots left over");
        (report, script.cmdlines)
    }

    fn lines(report: &Report) -> Vec<String> {
        report.tests.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn clean_run() {
        let (report, cmdlines) = drive(
            Filter::All,
            vec![(
                vec![
                    "banner",
                    "KTEST COUNT 2",
                    "KTEST RUN 0 a",
                    "KTEST PASS 0 a 10",
                    "KTEST RUN 1 b",
                    "noise",
                    "KTEST FAIL 1 b: expected 1, got 2",
                    "KTEST END passed=1 failed=1",
                ],
                End::Exit(QemuExit::Kernel(1)),
            )],
        );
        assert_eq!(cmdlines, ["ktest"]);
        assert_eq!(
            lines(&report),
            [
                "ktest a ... ok (10 cycles)",
                "ktest b ... FAILED: expected 1, got 2"
            ]
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn resumes_after_panic_exception_triple_fault_and_hang() {
        let (report, cmdlines) = drive(
            Filter::All,
            vec![
                (
                    vec![
                        "KTEST COUNT 6",
                        "KTEST RUN 0 a",
                        "KTEST PASS 0 a 1",
                        "KTEST RUN 1 panics",
                        "KTEST FAIL 1 panics: panicked at k.rs:1:1: boom",
                    ],
                    End::Exit(QemuExit::Kernel(2)),
                ),
                (
                    vec![
                        "KTEST COUNT 4",
                        "KTEST RUN 2 faults",
                        "EXCEPTION: PAGE FAULT at 0x0",
                        "bt #0 0x1",
                    ],
                    End::Exit(QemuExit::Kernel(3)),
                ),
                (
                    vec!["KTEST COUNT 3", "KTEST RUN 3 triple"],
                    End::Exit(QemuExit::TripleFault),
                ),
                (vec!["KTEST COUNT 2", "KTEST RUN 4 hangs"], End::Hang),
                (
                    vec![
                        "KTEST COUNT 1",
                        "KTEST RUN 5 last",
                        "KTEST PASS 5 last 7",
                        "KTEST END passed=1 failed=0",
                    ],
                    End::Exit(QemuExit::Kernel(0)),
                ),
            ],
        );
        assert_eq!(
            cmdlines,
            [
                "ktest",
                "ktest ktest-skip=2",
                "ktest ktest-skip=3",
                "ktest ktest-skip=4",
                "ktest ktest-skip=5"
            ]
        );
        assert_eq!(
            lines(&report),
            [
                "ktest a ... ok (1 cycles)",
                "ktest panics ... FAILED: kernel panic: panicked at k.rs:1:1: boom",
                "ktest faults ... FAILED: EXCEPTION: PAGE FAULT at 0x0",
                "ktest triple ... FAILED: triple fault (QEMU reset under -no-reboot)",
                "ktest hangs ... FAILED: TIMEOUT: no output for 60 s",
                "ktest last ... ok (7 cycles)",
            ]
        );
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn exception_uses_the_fail_line_and_the_crash_site() {
        let (report, cmdlines) = drive(
            Filter::All,
            vec![
                (
                    vec![
                        "KTEST COUNT 2",
                        "KTEST RUN 0 faults",
                        "KTEST FAIL 0 faults: unexpected exception #PF Page Fault at rip=0xffffffff80001234",
                        "EXCEPTION #PF Page Fault (vector 14) error_code=0x2 in kernel mode",
                        "  RIP=0xffffffff80001234",
                        "bt #0 0xffffffff80001234 kernel::t::faults at kernel/src/t.rs:7",
                        "bt #1 0xffffffff80002000 kernel::ktest::run at kernel/src/ktest/mod.rs:1",
                    ],
                    End::Exit(QemuExit::Kernel(3)),
                ),
                (
                    vec![
                        "KTEST COUNT 1",
                        "KTEST RUN 1 b",
                        "KTEST PASS 1 b 5",
                        "KTEST END passed=1 failed=0",
                    ],
                    End::Exit(QemuExit::Kernel(0)),
                ),
            ],
        );
        assert_eq!(cmdlines, ["ktest", "ktest ktest-skip=1"]);
        assert_eq!(
            lines(&report)[0],
            "ktest faults ... FAILED: unexpected exception #PF Page Fault \
             at rip=0xffffffff80001234 in kernel::t::faults at kernel/src/t.rs:7"
        );
        assert_eq!(report.tests[0].output.len(), 4);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn named_test_does_not_resume() {
        let (report, cmdlines) = drive(
            Filter::Named("selftest_hang".into()),
            vec![(
                vec!["KTEST COUNT 1", "KTEST RUN 9 selftest_hang"],
                End::Hang,
            )],
        );
        assert_eq!(cmdlines, ["ktest=selftest_hang"]);
        assert_eq!(
            report.tests[0].outcome,
            Outcome::Failed(Failure::Timeout {
                after: Duration::from_secs(60),
                silent: true
            })
        );
    }

    #[test]
    fn boot_failure_is_a_problem() {
        let (report, _) = drive(
            Filter::All,
            vec![(vec!["bootloader says hi"], End::Exit(QemuExit::TripleFault))],
        );
        assert!(report.tests.is_empty());
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0].what.contains("before KTEST COUNT"),
            "{}",
            report.problems[0].what
        );
    }

    #[test]
    fn missing_indices_are_a_problem() {
        let (report, _) = drive(
            Filter::All,
            vec![(
                vec![
                    "KTEST COUNT 2",
                    "KTEST RUN 0 a",
                    "KTEST PASS 0 a 1",
                    "KTEST END passed=1 failed=0",
                ],
                End::Exit(QemuExit::Kernel(0)),
            )],
        );
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].what.contains("[1]"));
    }

    #[test]
    fn end_with_wrong_exit_status_is_a_problem() {
        let (report, _) = drive(
            Filter::All,
            vec![(
                vec![
                    "KTEST COUNT 1",
                    "KTEST RUN 0 a",
                    "KTEST PASS 0 a 1",
                    "KTEST END passed=1 failed=0",
                    "panicked at k.rs:2:2: after the end",
                ],
                End::Exit(QemuExit::Kernel(2)),
            )],
        );
        assert_eq!(report.tests.len(), 1);
        assert_eq!(report.problems.len(), 1);
    }
}
