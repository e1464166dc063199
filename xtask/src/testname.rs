//! `cargo xtask test NAME...`: single tests by name. A name is, in this order:
//! - a userland test program (`t_*`, `c_*`): natively on the host (unless QEMU-only), then in
//!   QEMU as `init -- NAME`, frames checked as in the full suite;
//! - an in-kernel test (a name in `kernel/src/ktest/registry.rs`): booted alone (`ktest=NAME`);
//! - otherwise a filter on the host unit tests' names (`cargo test -- NAME`), which must match
//!   at least one test.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::build::Profile;
use crate::ktest::{self, Filter, Limits, Outcome, QemuBoot};
use crate::qemu::{Accel, Machine};
use crate::test::{self, Tally, TestArgs};
use crate::{target_dir, usertest, workspace_root};

/// What a name given to `cargo xtask test` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Program(String),
    Kernel(String),
    Host(String),
}

/// Classifies `name` (see the module comment); `kernel_tests` is the kernel's test list.
pub fn classify(name: &str, kernel_tests: &[String]) -> Named {
    if name.starts_with("t_") || name.starts_with("c_") {
        Named::Program(name.to_owned())
    } else if kernel_tests.iter().any(|t| t == name) {
        Named::Kernel(name.to_owned())
    } else {
        Named::Host(name.to_owned())
    }
}

/// The in-kernel tests' names, read from the registry's `test!(module::name)` lines.
pub fn kernel_test_names() -> Result<Vec<String>> {
    let path = workspace_root().join("kernel/src/ktest/registry.rs");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_registry(&text))
}

fn parse_registry(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("test!("))
        .filter_map(|rest| rest.split(')').next())
        .filter_map(|path| path.rsplit("::").next())
        .map(str::to_owned)
        .collect()
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    let logs = target_dir().join("test-logs");
    std::fs::create_dir_all(&logs)?;
    let kernel_names = kernel_test_names()?;
    let named: Vec<Named> = args
        .names
        .iter()
        .map(|n| classify(n, &kernel_names))
        .collect();
    let mut tally = Tally::default();

    for host in named.iter().filter_map(|n| match n {
        Named::Host(f) => Some(f),
        _ => None,
    }) {
        test::section(&format!("host unit tests matching {host:?}"));
        let ran = test::host_tests_matching(&logs, &mut tally, Some(host))?;
        if ran == 0 {
            tally.fail(
                &format!("test {host}"),
                "no userland program, in-kernel test or host unit test has this name",
            );
        }
    }
    let programs: Vec<String> = named
        .iter()
        .filter_map(|n| match n {
            Named::Program(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let kernels: Vec<&String> = named
        .iter()
        .filter_map(|n| match n {
            Named::Kernel(k) => Some(k),
            _ => None,
        })
        .collect();
    if !programs.is_empty() || !kernels.is_empty() {
        let built_programs = if programs.is_empty() {
            Vec::new()
        } else {
            test::section("userland programs");
            let profile = Profile::from_release_flag(args.build.release);
            let built = test::userland_built(profile, &mut tally)?;
            for program in &programs {
                match built.iter().find(|(name, _)| name == program) {
                    None => {
                        tally.fail(&format!("test {program}"), "no such test program was built")
                    }
                    Some((_, path)) if usertest::runs_on_host(program) => {
                        let name = format!("host: {program}");
                        let start = std::time::Instant::now();
                        match usertest::run_on_host(path, program, Duration::from_secs(60)) {
                            Ok((passed, _)) => tally.pass_took(
                                &format!("{name} ({passed} checks)"),
                                Some(start.elapsed()),
                            ),
                            Err(error) => {
                                tally.fail_took(&name, &format!("{error:#}"), Some(start.elapsed()))
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            built
        };
        let (qemu, built) = test::kernel_machine(args)?;
        let machine = Machine {
            image: built.image.clone(),
            ovmf: None,
            accel: Accel::Tcg,
            gdb: false,
            cmdline: crate::era::with_token(args.era, ""),
            disk: Some(built.disk.clone()),
            root: None,
        };
        let mut boot = QemuBoot {
            machine,
            qemu: &qemu,
            kernel_elf: &built.kernel_elf,
        };
        for name in kernels {
            test::section(&format!("in-kernel test {name}"));
            kernel_one(&mut boot, name, args, &logs, &mut tally)?;
        }
        let wanted: Vec<String> = programs
            .iter()
            .filter(|p| built_programs.iter().any(|(n, _)| n == *p))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            test::section("userland test programs in QEMU (init -- PROGRAM)");
            let root = crate::rootfs::ensure(&target_dir(), &built.files, false)?;
            let mut with_root = boot.machine.clone();
            with_root.root = Some((root, false));
            with_root.image = test::slim_image(&built);
            let boot_root = QemuBoot {
                machine: with_root,
                qemu: boot.qemu,
                kernel_elf: boot.kernel_elf,
            };
            let only = TestArgs {
                program: wanted.clone(),
                ..args.clone()
            };
            test::programs_in_qemu(&boot_root, &wanted, &only, &logs, &mut tally);
        }
    }

    println!();
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

fn kernel_one(
    boot: &mut QemuBoot<'_>,
    name: &str,
    args: &TestArgs,
    logs: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let limits = Limits::new(Duration::from_secs(args.timeout));
    let filter = Filter::Named(name.to_owned());
    let report = ktest::run(boot, &filter, limits, logs, name, &mut |result| {
        println!("{result}");
        if matches!(result.outcome, Outcome::Passed { .. }) {
            tally.passed += 1;
        } else {
            tally.failed += 1;
            tally.failures.push(format!("ktest {}", result.name));
            test::print_lines(&result.output, &result.log);
        }
    })?;
    for problem in &report.problems {
        tally.fail(&format!("ktest {name}"), &problem.what);
    }
    if report.tests.is_empty() && report.problems.is_empty() {
        tally.fail(
            &format!("ktest {name}"),
            "the kernel ran no test by this name",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_programs_kernel_tests_or_host_filters() {
        let kernel = parse_registry(
            "pub static TESTS: &[KernelTest] = &[\n    test!(mm::hw_fork_cow_isolation),\n    test!(selftests::selftest_panic),\n];",
        );
        assert_eq!(kernel, ["hw_fork_cow_isolation", "selftest_panic"]);
        assert_eq!(classify("t_cow", &kernel), Named::Program("t_cow".into()));
        assert_eq!(
            classify("hw_fork_cow_isolation", &kernel),
            Named::Kernel("hw_fork_cow_isolation".into())
        );
        assert_eq!(
            classify("wp_reuse_per_era", &kernel),
            Named::Host("wp_reuse_per_era".into())
        );
    }

    #[test]
    fn the_real_registry_lists_the_kernel_tests() {
        let names = kernel_test_names().unwrap();
        assert!(
            names.iter().any(|n| n == "hw_fork_cow_isolation"),
            "{names:?}"
        );
    }
}
