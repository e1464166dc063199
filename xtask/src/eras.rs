//! `cargo xtask eras PROGRAM`: boots a TAP test program once under every era (`era=YEAR` on
//! the kernel command line, SEMANTICS.md section 9), prints the pass/fail matrix (one row per
//! TAP case, one column per era) and writes it as Markdown (docs/eras/PROGRAM.md by default).
//! The program runs without arguments, so each cell is the 2023 expectation met or not: the
//! failures of an old era are the bugs its rules had.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use cowlab_boot::Firmware;

use crate::era::ERAS;
use crate::qemu::{Accel, Machine};
use crate::{deps, image, target_dir, usertest, workspace_root, BuildArgs};

#[derive(Args, Debug)]
pub struct ErasArgs {
    /// The TAP test program (`t_cow`).
    pub program: String,
    /// Where to write the Markdown matrix (default: docs/eras/PROGRAM.md).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Kill a boot after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub timeout: u64,
}

/// One TAP result line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Ok,
    Fail,
    Skip,
    Missing,
}

impl Cell {
    fn text(self) -> &'static str {
        match self {
            Cell::Ok => "ok",
            Cell::Fail => "FAIL",
            Cell::Skip => "skip",
            Cell::Missing => "-",
        }
    }
}

/// The TAP lines of a console: (description without its `# ...` directive, result).
pub fn tap_results(console: &str) -> Vec<(String, Cell)> {
    console
        .lines()
        .filter_map(|line| {
            let (ok, rest) = match line.strip_prefix("ok ") {
                Some(rest) => (true, rest),
                None => (false, line.strip_prefix("not ok ")?),
            };
            let (_, described) = rest.split_once(" - ")?;
            let (description, directive) = match described.split_once(" # ") {
                Some((d, directive)) => (d.trim(), directive.trim()),
                None => (described.trim(), ""),
            };
            let cell = if directive.starts_with("SKIP") {
                Cell::Skip
            } else if ok {
                Cell::Ok
            } else {
                Cell::Fail
            };
            Some((description.to_owned(), cell))
        })
        .collect()
}

/// The matrix: rows in first-seen order, one cell per era.
pub fn matrix(columns: &[Vec<(String, Cell)>]) -> Vec<(String, Vec<Cell>)> {
    let mut rows: Vec<(String, Vec<Cell>)> = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        for (description, cell) in column {
            let index = match rows.iter().position(|(d, _)| d == description) {
                Some(index) => index,
                None => {
                    rows.push((description.clone(), vec![Cell::Missing; columns.len()]));
                    rows.len() - 1
                }
            };
            rows[index].1[i] = *cell;
        }
    }
    rows
}

pub fn markdown(program: &str, rows: &[(String, Vec<Cell>)], notes: &[String]) -> String {
    let mut out = format!(
        "# `{program}` under every era\n\n\
         Written by `cargo xtask eras {program}`: the program booted once per era (`era=YEAR`), \
         without arguments, so a FAIL is the 2023 expectation not met under that era's rules \
         (SEMANTICS.md section 9).\n\n| case |"
    );
    for year in ERAS {
        out.push_str(&format!(" {year} |"));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(ERAS.len()));
    out.push('\n');
    for (description, cells) in rows {
        out.push_str(&format!("| {} |", description.replace('|', "\\|")));
        for cell in cells {
            out.push_str(&format!(" {} |", cell.text()));
        }
        out.push('\n');
    }
    for note in notes {
        out.push_str(&format!("\n{note}\n"));
    }
    out
}

pub fn run(args: &ErasArgs) -> Result<ExitCode> {
    let program = &args.program;
    if !(program.starts_with("t_") || program.starts_with("c_")) {
        bail!("{program:?} is not a test program (t_* or c_*)");
    }
    let qemu = deps::qemu()?;
    let build = BuildArgs {
        release: false,
        add: Vec::new(),
        kernel: None,
    };
    let built = image::build_all(&build, Firmware::Bios)?;
    let root = crate::rootfs::ensure(&target_dir(), &built.files, false)?;
    let logs = target_dir().join("eras");
    std::fs::create_dir_all(&logs)?;
    let mut columns = Vec::new();
    let mut notes = Vec::new();
    for year in ERAS {
        eprintln!("eras: {program} under era={year} ...");
        let machine = Machine {
            image: built.image.clone(),
            ovmf: None,
            accel: Accel::Tcg,
            gdb: false,
            cmdline: format!("era={year} -- {program}"),
            disk: Some(built.disk.clone()),
            root: Some((root.clone(), false)),
        };
        let log = logs.join(format!("{program}-{year}.log"));
        let verdict = usertest::run_in_qemu(
            &machine,
            &qemu,
            &built.kernel_elf,
            &log,
            program,
            Duration::from_secs(args.timeout),
        )?;
        let console = std::fs::read_to_string(&log).unwrap_or_default();
        let column = tap_results(&console);
        if column.is_empty() {
            notes.push(format!(
                "era {year}: no TAP lines (log {})",
                log.strip_prefix(workspace_root()).unwrap_or(&log).display()
            ));
        }
        if verdict.timed_out {
            notes.push(format!("era {year}: the boot timed out"));
        }
        if let Some((free, boot)) = verdict.frames.filter(|(f, b)| f != b) {
            notes.push(format!(
                "era {year}: frames free={free} boot={boot} (leaked)"
            ));
        }
        columns.push(column);
    }
    let rows = matrix(&columns);
    if rows.is_empty() {
        bail!(
            "{program} printed no TAP lines under any era (logs in {})",
            logs.display()
        );
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(4).min(80);
    print!("{:<width$}", "case");
    for year in ERAS {
        print!(" {year:>5}");
    }
    println!();
    for (description, cells) in &rows {
        print!("{description:<width$}");
        for cell in cells {
            print!(" {:>5}", cell.text());
        }
        println!();
    }
    for note in &notes {
        println!("{note}");
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join(format!("docs/eras/{program}.md")));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, markdown(program, &rows, &notes))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_lines_make_a_matrix() {
        let a = tap_results("ok 1 - one (base page)\nnot ok 2 - two # pipe saw 0xff\nok 3 - three # SKIP no io_uring\nt_x: 1 passed, 1 failed\n");
        assert_eq!(
            a,
            [
                ("one (base page)".to_owned(), Cell::Ok),
                ("two".to_owned(), Cell::Fail),
                ("three".to_owned(), Cell::Skip)
            ]
        );
        let b = tap_results("ok 1 - one (base page)\nok 2 - two # gup_fast_pages +1\n");
        let rows = matrix(&[a, b]);
        assert_eq!(rows[1], ("two".to_owned(), vec![Cell::Fail, Cell::Ok]));
        assert_eq!(rows[2].1, [Cell::Skip, Cell::Missing]);
        let md = markdown("t_x", &rows, &[]);
        assert!(md.contains("| two | FAIL | ok |"), "{md}");
    }
}
