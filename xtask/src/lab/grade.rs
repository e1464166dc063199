//! `cargo xtask grade NAME [DIR]`: runs exactly one lab's tests in a tree (the host unit tests
//! by name, then each QEMU program once) and prints a score table in the manner of xv6's
//! `make grade`: one line per test with its points and `ok` or `FAIL`, then the score.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};
use clap::Args;

use super::{find, Check, Lab, LABS};
use crate::libtest::{self, TestOutcome};
use crate::{usertest, workspace_root};

#[derive(Args, Debug)]
pub struct GradeArgs {
    /// The lab (`cargo xtask lab list`).
    pub name: String,
    /// The tree to grade (default: this repository).
    pub dir: Option<PathBuf>,
    /// Kill a QEMU boot after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// One graded line.
pub struct Line {
    pub test: String,
    pub points: u32,
    pub ok: bool,
    pub why: String,
}

/// QEMU consoles already captured, by (tree, program): `lab check` boots each program once per
/// tree.
type Consoles = HashMap<(PathBuf, String), String>;

pub fn grade_command(args: &GradeArgs) -> Result<ExitCode> {
    let lab = find(&args.name)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| workspace_root().to_owned());
    if lab.tests.is_empty() {
        println!(
            "lab {} ({}) is graded by its write-up, not by tests: see docs/labs/{}.md",
            lab.number, lab.title, lab.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    let lines = grade(lab, &dir, args.timeout, &mut Consoles::new())?;
    let (score, total) = print_table(lab, &dir, &lines);
    Ok(if score == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `lab`'s tests in the tree `dir`.
pub fn grade(lab: &Lab, dir: &Path, timeout: u64, consoles: &mut Consoles) -> Result<Vec<Line>> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("no tree at {}", dir.display()))?;
    let logs = crate::target_dir().join("lab-logs");
    std::fs::create_dir_all(&logs)?;
    let host_names: Vec<&str> = lab
        .tests
        .iter()
        .filter_map(|t| match t.check {
            Check::Host(name) => Some(name),
            _ => None,
        })
        .collect();
    let host = if host_names.is_empty() {
        HashMap::new()
    } else {
        host_results(
            &dir,
            &host_names,
            &logs.join(format!("{}-host.log", lab.name)),
        )?
    };
    let mut lines = Vec::new();
    for test in lab.tests {
        let (name, ok, why) = match test.check {
            Check::Host(name) => match host.get(name) {
                Some(TestOutcome::Ok) => (name.to_owned(), true, String::new()),
                Some(_) => (name.to_owned(), false, "failed".to_owned()),
                None => (
                    name.to_owned(),
                    false,
                    "did not run (a build error? see target/lab-logs)".to_owned(),
                ),
            },
            Check::Tap { program, case } => {
                let console = console(&dir, program, timeout, &logs, consoles)?;
                let verdict = tap_case(&console, case);
                let name = format!("{program}: {case}");
                match verdict {
                    Some(true) => (name, true, String::new()),
                    Some(false) => (name, false, "not ok".to_owned()),
                    None => (
                        name,
                        false,
                        "no such TAP line (did the program run?)".to_owned(),
                    ),
                }
            }
            Check::Program(program) | Check::EraProgram { program, .. } => {
                let era = match test.check {
                    Check::EraProgram { era, .. } => Some(era),
                    _ => None,
                };
                let console = console_era(&dir, program, era, timeout, &logs, consoles)?;
                let summary = console
                    .lines()
                    .find_map(|l| usertest::parse_summary(l, program));
                let frames = console.lines().find_map(usertest::parse_frames);
                let name = match era {
                    Some(era) => {
                        format!("{program} era={era}: every check, frames back to the boot count")
                    }
                    None => format!("{program}: every check, frames back to the boot count"),
                };
                match (summary, frames) {
                    (Some((_, 0)), Some((free, boot))) if free == boot => {
                        (name, true, String::new())
                    }
                    (summary, frames) => (
                        name,
                        false,
                        format!("summary {summary:?}, frames {frames:?}"),
                    ),
                }
            }
        };
        lines.push(Line {
            test: name,
            points: test.points,
            ok,
            why,
        });
    }
    Ok(lines)
}

/// Prints the score table; returns (score, total).
pub fn print_table(lab: &Lab, dir: &Path, lines: &[Line]) -> (u32, u32) {
    println!(
        "== lab {} {}: {} ({}) ==",
        lab.number,
        lab.name,
        lab.title,
        dir.display()
    );
    let width = lines
        .iter()
        .map(|l| l.test.len())
        .max()
        .unwrap_or(0)
        .min(90);
    let mut score = 0;
    let mut total = 0;
    for line in lines {
        total += line.points;
        if line.ok {
            score += line.points;
        }
        let verdict = if line.ok { "ok" } else { "FAIL" };
        let why = if line.why.is_empty() {
            String::new()
        } else {
            format!("  ({})", line.why)
        };
        println!("{:<width$}  {:>3}  {verdict}{why}", line.test, line.points);
    }
    println!("Score: {score}/{total}");
    (score, total)
}

/// `cargo test -p cowlab-mm --lib -- --exact NAMES` in `dir`: each test's outcome.
fn host_results(dir: &Path, names: &[&str], log: &Path) -> Result<HashMap<String, TestOutcome>> {
    eprintln!("grade: cowlab-mm unit tests in {} ...", dir.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args([
            "test",
            "-p",
            "cowlab-mm",
            "--lib",
            "--no-fail-fast",
            "--color",
            "never",
        ])
        .arg("--")
        .arg("--exact")
        .args(names)
        .stdin(Stdio::null());
    tree_env(&mut command, dir);
    let output = command.output().context("running cargo test")?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    std::fs::write(log, &text)?;
    let mut results = HashMap::new();
    for line in text.lines() {
        if let Some(libtest::Event::Test { name, result }) = libtest::parse(line) {
            results.insert(name, result);
        }
    }
    Ok(results)
}

/// The console of `cargo xtask qemu --timeout T -- PROGRAM` run in `dir` (cached per tree).
fn console(
    dir: &Path,
    program: &str,
    timeout: u64,
    logs: &Path,
    consoles: &mut Consoles,
) -> Result<String> {
    console_era(dir, program, None, timeout, logs, consoles)
}

/// [`console`], booted under `era` if given (`--era ERA -- PROGRAM era=ERA`).
fn console_era(
    dir: &Path,
    program: &str,
    era: Option<u32>,
    timeout: u64,
    logs: &Path,
    consoles: &mut Consoles,
) -> Result<String> {
    let label = match era {
        Some(era) => format!("{program}-era{era}"),
        None => program.to_owned(),
    };
    let key = (dir.to_owned(), label.clone());
    if let Some(text) = consoles.get(&key) {
        return Ok(text.clone());
    }
    let which = if Some(dir) == workspace_root().canonicalize().ok().as_deref() {
        "this-tree"
    } else {
        "other-tree"
    };
    let log = logs.join(format!("{label}-qemu-{which}.log"));
    eprintln!(
        "grade: building and booting `{program}` in QEMU from {} (log: {}) ...",
        dir.display(),
        log.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["xtask", "qemu", "--timeout"])
        .arg(timeout.to_string());
    if let Some(era) = era {
        command.args(["--era".to_owned(), era.to_string()]);
    }
    command.args(["--", program]);
    if let Some(era) = era {
        command.arg(format!("era={era}"));
    }
    command.stdin(Stdio::null());
    tree_env(&mut command, dir);
    let output = command.output().context("running cargo xtask qemu")?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    std::fs::write(&log, &text)?;
    consoles.insert(key, text.clone());
    Ok(text)
}

/// A tree other than this one builds into its own `target/`.
fn tree_env(command: &mut Command, dir: &Path) {
    let own = workspace_root().canonicalize().ok();
    if own.as_deref() != Some(dir) {
        command.env_remove("CARGO_TARGET_DIR");
    }
}

/// The verdict of the first TAP line whose description starts with `case`.
pub fn tap_case(console: &str, case: &str) -> Option<bool> {
    console.lines().find_map(|line| {
        let (ok, rest) = match line.strip_prefix("ok ") {
            Some(rest) => (true, rest),
            None => (false, line.strip_prefix("not ok ")?),
        };
        let description = rest.split_once(" - ")?.1;
        description.starts_with(case).then_some(ok)
    })
}

/// `cargo xtask lab check` (and the harness tier): every stubbed lab both ways. Returns one
/// (check, failure) pair per check; `None` is a pass.
pub fn check_all(names: &[String]) -> Result<Vec<(String, Option<String>)>> {
    let labs: Vec<&Lab> = if names.is_empty() {
        LABS.iter().filter(|l| l.stubbed).collect()
    } else {
        names.iter().map(|n| find(n)).collect::<Result<_>>()?
    };
    let tree = crate::target_dir().join("lab-check").join("tree");
    let mut consoles = Consoles::new();
    let mut out = Vec::new();
    for lab in labs {
        let real = grade(lab, workspace_root(), 300, &mut consoles)?;
        let (score, total) = print_table(lab, workspace_root(), &real);
        out.push((
            format!("lab {}: the real tree gets full marks", lab.name),
            (score != total).then(|| format!("{score}/{total}")),
        ));
        if !lab.stubbed {
            continue;
        }
        super::tree::write_student_tree(workspace_root(), &tree, lab, true)?;
        let stubbed = grade(lab, &tree, 300, &mut consoles)?;
        // The cached consoles are per tree path: the next lab's tree reuses the path.
        consoles
            .retain(|(dir, _), _| !dir.starts_with(tree.canonicalize().unwrap_or(tree.clone())));
        let (score, total) = print_table(lab, &tree, &stubbed);
        out.push((
            format!("lab {}: the stubbed tree fails its grade", lab.name),
            (score == total).then(|| format!("full marks ({score}/{total}) with the stubs")),
        ));
    }
    Ok(out)
}

pub fn check(names: &[String]) -> Result<ExitCode> {
    let results = check_all(names)?;
    let mut failed = 0;
    for (name, failure) in &results {
        match failure {
            None => println!("{name} ... ok"),
            Some(why) => {
                failed += 1;
                println!("{name} ... FAILED: {why}");
            }
        }
    }
    println!("{} passed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_lines_are_found_by_description_prefix() {
        let console = "TAP version 13\nok 1 - Basic COW after fork() (base page)\nnot ok 2 - vmsplice() + unmap in child (base page) # child saw 0xff\n";
        assert_eq!(tap_case(console, "Basic COW after fork()"), Some(true));
        assert_eq!(
            tap_case(console, "vmsplice() + unmap in child"),
            Some(false)
        );
        assert_eq!(tap_case(console, "fork() with"), None);
    }

    #[test]
    fn every_lab_test_names_a_real_host_test_or_program() {
        let mm = std::fs::read_dir(workspace_root().join("kernel/mm/src/tests"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .chain([
                std::fs::read_to_string(workspace_root().join("kernel/mm/src/rules.rs")).unwrap(),
            ])
            .collect::<String>();
        for lab in LABS {
            for test in lab.tests {
                match test.check {
                    Check::Host(name) => {
                        let function = name.rsplit("::").next().unwrap();
                        assert!(
                            mm.contains(&format!("fn {function}()")),
                            "{}: {name}",
                            lab.name
                        );
                    }
                    Check::Tap { program, .. }
                    | Check::Program(program)
                    | Check::EraProgram { program, .. } => {
                        let bin = workspace_root().join(format!("userland/src/bin/{program}.rs"));
                        assert!(bin.exists(), "{}: {program}", lab.name);
                    }
                }
            }
        }
    }
}
