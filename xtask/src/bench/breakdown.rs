//! `cargo xtask bench --breakdown`: the kernel built with the `faultstat` feature counts, per
//! fault kind, the faults and the TSC ticks (guest instructions under icount) spent in each
//! phase of the fault path, and prints them at power-off, one line per kind:
//!
//! ```text
//! FAULTSTAT kind=<kind> count=<n> <phase>=<ticks> ...
//! ```
//!
//! The same lines can be read at any time from `/proc/cowlab/faultstat` (present only in such a
//! kernel); the power-off print is kept because it covers the whole boot with no help from the
//! bench program. The default kernel carries none of this code.
//!
//! Whole operations (fork, GUP-fast pinning, `pread`/`pwrite` of a cached file page, vmsplice;
//! `cowlab_mm::opstat`) are broken down per bench
//! path: `bench` reads the file's `OPSTAT` lines before and after a path's samples and prints
//! what they gained,
//!
//! ```text
//! BENCH-OPSTAT name=<path> op=<op> count=<units> <phase>=<ticks> ...
//! ```
//!
//! so each figure covers exactly the forks (or pinned pages) that path timed.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::results::Run;
use crate::build::TARGET;
use crate::{target_dir, workspace_root};

/// One fault kind's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    pub kind: String,
    pub count: u64,
    /// `(phase, total ticks)` in the kernel's order.
    pub phases: Vec<(String, u64)>,
}

/// Builds the release kernel with `--features faultstat` in its own target directory (so the
/// default kernel's build stays as it is) and returns its ELF.
pub fn build_kernel() -> Result<PathBuf> {
    let dir = target_dir().join("bench").join("faultstat-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("xtask: building the kernel with --features faultstat");
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--package", "cowlab-kernel", "--target", TARGET])
        .args(["--release", "--features", "faultstat", "--target-dir"])
        .arg(&dir)
        .status()
        .context("running cargo build for the faultstat kernel")?;
    if !status.success() {
        bail!("cargo build --features faultstat failed ({status})");
    }
    Ok(dir.join(TARGET).join("release").join("kernel"))
}

/// The `FAULTSTAT` lines of a console.
pub fn parse(console: &[String]) -> Vec<Kind> {
    console
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find("FAULTSTAT ")? + "FAULTSTAT ".len()..];
            let mut kind = None;
            let mut count = None;
            let mut phases = Vec::new();
            for field in rest.split_whitespace() {
                let (key, value) = field.split_once('=')?;
                match key {
                    "kind" => kind = Some(value.to_owned()),
                    "count" => count = value.parse().ok(),
                    _ => phases.push((key.to_owned(), value.parse().ok()?)),
                }
            }
            Some(Kind {
                kind: kind?,
                count: count?,
                phases,
            })
        })
        .collect()
}

/// What one path's samples added to an operation's phases (a `BENCH-OPSTAT` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    pub path: String,
    pub op: String,
    /// Units: forks, or pages for GUP-fast.
    pub count: u64,
    /// `(phase, total ticks)` in the kernel's order.
    pub phases: Vec<(String, u64)>,
}

impl OpRecord {
    fn per_unit(&self) -> Vec<(String, f64)> {
        self.phases
            .iter()
            .map(|(p, v)| (p.clone(), *v as f64 / self.count.max(1) as f64))
            .collect()
    }
}

/// The `BENCH-OPSTAT` lines of a console.
pub fn parse_ops(console: &[String]) -> Vec<OpRecord> {
    console
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find("BENCH-OPSTAT ")? + "BENCH-OPSTAT ".len()..];
            let (mut path, mut op, mut count) = (None, None, None);
            let mut phases = Vec::new();
            for field in rest.split_whitespace() {
                let (key, value) = field.split_once('=')?;
                match key {
                    "name" => path = Some(value.to_owned()),
                    "op" => op = Some(value.to_owned()),
                    "count" => count = value.parse().ok(),
                    _ => phases.push((key.to_owned(), value.parse().ok()?)),
                }
            }
            Some(OpRecord {
                path: path?,
                op: op?,
                count: count.filter(|&c| c > 0)?,
                phases,
            })
        })
        .collect()
}

/// One row of an operation breakdown: per-unit phases, their sum, the path's user figure.
struct OpRow {
    label: String,
    unit: &'static str,
    count: u64,
    phases: Vec<(String, f64)>,
    user: Option<u64>,
    /// Subtracted from user - in kernel: the empty region's cost (per call paths only).
    overhead: u64,
}

impl OpRow {
    fn in_kernel(&self) -> f64 {
        self.phases.iter().map(|(_, v)| v).sum()
    }

    fn outside(&self) -> Option<f64> {
        self.user
            .map(|u| (u as f64 - self.in_kernel() - self.overhead as f64).max(0.0))
    }
}

/// The rows of the fork and GUP-fast breakdowns: fork per call (bare and with 64 MiB), fork per
/// touched MiB (the difference of the two over 64, as `fork_per_mib`), GUP-fast per page.
fn op_rows(records: &[OpRecord], run: &Run) -> Vec<(String, Vec<OpRow>)> {
    let overhead = run.get("tsc_overhead").map_or(0, |m| m.median);
    let user = |name: &str| run.get(name).map(|m| m.median);
    let find = |path: &str| records.iter().find(|r| r.path == path);
    let mut fork = Vec::new();
    for path in ["fork_base", "fork_touched_mib_64"] {
        if let Some(r) = find(path) {
            fork.push(OpRow {
                label: path.to_owned(),
                unit: "per fork",
                count: r.count,
                phases: r.per_unit(),
                user: user(path),
                overhead,
            });
        }
    }
    if let (Some(base), Some(big)) = (find("fork_base"), find("fork_touched_mib_64")) {
        let phases = base
            .per_unit()
            .into_iter()
            .zip(big.per_unit())
            .map(|((p, b), (_, v))| (p, (v - b) / 64.0))
            .collect();
        fork.push(OpRow {
            label: "fork_per_mib".to_owned(),
            unit: "per MiB",
            count: big.count,
            phases,
            user: user("fork_per_mib"),
            overhead: 0,
        });
    }
    let mut out = vec![("fork".to_owned(), fork)];
    // One path per operation: (op, path, unit, whether the path's median is per call and so
    // holds the timer's overhead once).
    for (op, path, unit, per_call) in [
        ("gup_fast", "gup_fast_pin_per_page", "per page", false),
        ("file_read", "file_read_4k", "per call", true),
        ("file_write", "file_write_4k", "per call", true),
        ("file_create_unlink", "file_create_unlink", "per call", true),
        ("vmsplice", "vmsplice_batch_per_page", "per page", false),
    ] {
        let rows = records
            .iter()
            .filter(|r| r.path == path && r.op == op)
            .take(1)
            .map(|r| OpRow {
                label: r.path.clone(),
                unit,
                count: r.count,
                phases: r.per_unit(),
                user: user(&r.path),
                overhead: if per_call { overhead } else { 0 },
            })
            .collect();
        out.push((op.to_owned(), rows));
    }
    out.into_iter()
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}

/// The fork and GUP-fast breakdowns as Markdown tables (ticks per unit, one decimal where a
/// figure is an average of a fraction).
pub fn op_table(records: &[OpRecord], run: &Run) -> String {
    let mut out = String::new();
    for (op, rows) in op_rows(records, run) {
        let mut header: Vec<String> = vec!["path".into(), "unit".into(), "count".into()];
        header.extend(rows[0].phases.iter().map(|(p, _)| p.clone()));
        header.extend(["in kernel".into(), "user".into(), "outside".into()]);
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut cells = vec![r.label.clone(), r.unit.to_owned(), r.count.to_string()];
                cells.extend(r.phases.iter().map(|(_, v)| fmt_ticks(*v)));
                cells.push(fmt_ticks(r.in_kernel()));
                cells.push(r.user.map_or_else(String::new, |u| u.to_string()));
                cells.push(r.outside().map_or_else(String::new, fmt_ticks));
                cells
            })
            .collect();
        out.push_str(&format!(
            "{op} breakdown: ticks per unit in each phase (faultstat kernel; user = the path's median in that boot; outside = user - in kernel - timer)\n"
        ));
        out.push_str(&markdown(&header, &body));
        out.push('\n');
    }
    out
}

fn fmt_ticks(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub fn op_json(records: &[OpRecord], run: &Run) -> serde_json::Value {
    op_rows(records, run)
        .into_iter()
        .flat_map(|(op, rows)| {
            rows.into_iter().map(move |r| {
                let phases: serde_json::Map<String, serde_json::Value> = r
                    .phases
                    .iter()
                    .map(|(p, v)| (p.clone(), (*v).into()))
                    .collect();
                serde_json::json!({
                    "op": op,
                    "path": r.label,
                    "unit": r.unit,
                    "count": r.count,
                    "per_unit": phases,
                    "in_kernel": r.in_kernel(),
                    "user_median": r.user,
                    "outside": r.outside(),
                })
            })
        })
        .collect()
}

fn markdown(header: &[String], body: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!(" {c:>w$} |", w = widths[i]));
        }
        l.push('\n');
        l
    };
    let mut out = line(header);
    out.push('|');
    for w in &widths {
        out.push_str(&format!("{}:|", "-".repeat(w + 1)));
    }
    out.push('\n');
    for cells in body {
        out.push_str(&line(cells));
    }
    out
}

/// The `bench` path whose every timed fault is of this kind, if there is one.
pub fn bench_path(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "zero_page_map" => "anon_read_fault",
        "zero_fill" => "anon_write_fault",
        "zero_page_copy" => "zeropage_write_fault",
        "cow_copy" => "cow_copy_fault",
        "cow_reuse" => "cow_reuse_fault",
        "huge_zero_map" => "thp_zero_read_fault",
        "thp_fill" => "thp_fault_2m",
        _ => return None,
    })
}

/// Per-fault figures of one kind: the phases, their sum (the memory manager's share), and, where
/// a bench path times exactly this kind, that path's median from the same faultstat boot and
/// what is left for the trap entry, the kernel's fault glue and the exit (user figure minus
/// in-mm total minus the timer overhead).
struct PerFault {
    phases: Vec<u64>,
    in_mm: u64,
    user: Option<u64>,
    entry_exit: Option<u64>,
}

fn per_fault(k: &Kind, phases: &[&str], run: &Run) -> PerFault {
    let per: Vec<u64> = phases
        .iter()
        .map(|p| {
            let total = k
                .phases
                .iter()
                .find(|(name, _)| name == p)
                .map_or(0, |&(_, v)| v);
            total.checked_div(k.count).unwrap_or(0)
        })
        .collect();
    let in_mm = per.iter().sum();
    let user = bench_path(&k.kind)
        .and_then(|path| run.get(path))
        .map(|m| m.median);
    let overhead = run.get("tsc_overhead").map_or(0, |m| m.median);
    PerFault {
        entry_exit: user.map(|u| u.saturating_sub(in_mm + overhead)),
        phases: per,
        in_mm,
        user,
    }
}

fn phase_names(kinds: &[Kind]) -> Vec<&str> {
    let mut phases: Vec<&str> = Vec::new();
    for k in kinds {
        for (p, _) in &k.phases {
            if !phases.contains(&p.as_str()) {
                phases.push(p);
            }
        }
    }
    phases
}

/// Ticks per fault in each phase, one row per kind that occurred, with the user-space figure of
/// the matching bench path (from the same faultstat boot) and the entry/exit remainder.
pub fn table(kinds: &[Kind], run: &Run) -> String {
    let phases = phase_names(kinds);
    let mut header: Vec<String> = vec!["kind".into(), "count".into()];
    header.extend(phases.iter().map(|p| p.to_string()));
    header.extend([
        "in mm".into(),
        "bench path".into(),
        "user".into(),
        "entry+exit".into(),
    ]);
    let mut body: Vec<Vec<String>> = Vec::new();
    for k in kinds.iter().filter(|k| k.count > 0) {
        let f = per_fault(k, &phases, run);
        let mut cells = vec![k.kind.clone(), k.count.to_string()];
        cells.extend(f.phases.iter().map(u64::to_string));
        cells.push(f.in_mm.to_string());
        cells.push(bench_path(&k.kind).unwrap_or("").to_owned());
        cells.push(f.user.map_or_else(String::new, |v| v.to_string()));
        cells.push(f.entry_exit.map_or_else(String::new, |v| v.to_string()));
        body.push(cells);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|c| c[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut l = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            l.push_str(&format!(" {c:>w$} |", w = widths[i]));
        }
        l.push('\n');
        l
    };
    let mut out = String::from(
        "in-kernel fault breakdown: ticks per fault (faultstat kernel; user = the bench path's median in that boot)\n",
    );
    out.push_str(&line(&header));
    out.push('|');
    for w in &widths {
        out.push_str(&format!("{}:|", "-".repeat(w + 1)));
    }
    out.push('\n');
    for cells in &body {
        out.push_str(&line(cells));
    }
    out
}

pub fn json(kinds: &[Kind], run: &Run) -> serde_json::Value {
    let phases = phase_names(kinds);
    kinds
        .iter()
        .map(|k| {
            let f = per_fault(k, &phases, run);
            let totals: serde_json::Map<String, serde_json::Value> = k
                .phases
                .iter()
                .map(|(p, v)| (p.clone(), (*v).into()))
                .collect();
            serde_json::json!({
                "kind": k.kind,
                "count": k.count,
                "total_ticks": totals,
                "per_fault_in_mm": f.in_mm,
                "bench_path": bench_path(&k.kind),
                "user_median": f.user,
                "entry_exit": f.entry_exit,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_averages_faultstat_lines() {
        let console = vec![
            "noise".to_owned(),
            "FAULTSTAT kind=zero_fill count=4 lookup=40 alloc=400 copy=2048".to_owned(),
            "FAULTSTAT kind=cow_copy count=0 lookup=0 alloc=0 copy=0".to_owned(),
            "FAULTSTAT kind=broken count=x".to_owned(),
        ];
        let kinds = parse(&console);
        assert_eq!(kinds.len(), 2);
        assert_eq!(kinds[0].phases[2], ("copy".to_owned(), 2048));
        let run = Run::parse(
            "BENCH name=tsc_overhead unit=tsc median=5 min=5 n=1\n\
             BENCH name=anon_write_fault unit=tsc/page median=1000 min=1000 n=1",
        )
        .unwrap();
        let text = table(&kinds, &run);
        let row: Vec<&str> = text
            .lines()
            .find(|l| l.contains("zero_fill"))
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            row,
            [
                "",
                "zero_fill",
                "4",
                "10",
                "100",
                "512",
                "622",
                "anon_write_fault",
                "1000",
                "373",
                ""
            ],
            "{text}"
        );
        // Kinds that did not occur are left out.
        assert!(!text.contains("cow_copy"), "{text}");
        assert_eq!(json(&kinds, &run)[0]["entry_exit"], 373);
    }

    #[test]
    fn fork_gup_and_file_breakdowns_per_fork_per_mib_per_page_and_per_call() {
        let console: Vec<String> = [
            "BENCH name=tsc_overhead unit=tsc median=5 min=5 n=1",
            "BENCH name=fork_base unit=tsc median=1000 min=1000 n=5",
            "BENCH-OPSTAT name=fork_base op=fork count=5 setup=2000 vmas=500 tables=1000 ptes=500 flush=500",
            "BENCH name=fork_touched_mib_64 unit=tsc median=7800 min=7800 n=5",
            "BENCH-OPSTAT name=fork_touched_mib_64 op=fork count=5 setup=2000 vmas=500 tables=4200 ptes=32500 flush=500",
            "BENCH name=fork_per_mib unit=tsc/MiB median=106 min=106 n=5",
            "BENCH name=gup_fast_pin_per_page unit=tsc/page median=140 min=140 n=5",
            "BENCH-OPSTAT name=gup_fast_pin_per_page op=gup_fast count=20480 walk=204800 grab=409600 unpin=1024000",
            "BENCH-OPSTAT name=nothing op=fork count=0 setup=1",
            "BENCH name=file_read_4k unit=tsc median=1000 min=1000 n=2",
            "BENCH-OPSTAT name=file_read_4k op=file_read count=2 fd=100 vfs=200 lookup=400 copy=1000",
            // A path under another operation's name is not that operation's row.
            "BENCH-OPSTAT name=file_read_4k op=vmsplice count=2 syscall=100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let records = parse_ops(&console);
        assert_eq!(records.len(), 5, "a record of 0 units is dropped");
        let run = Run::parse(&console.join("\n")).unwrap();
        let text = op_table(&records, &run);
        let row = |label: &str| -> Vec<String> {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("| {label}")) || l.contains(&format!(" {label} |"))
                })
                .unwrap_or_else(|| panic!("{label} in {text}"))
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        // Per fork: setup 400, vmas 100, tables 200, ptes 100, flush 100 = 900 in kernel;
        // outside = 1000 - 900 - 5.
        assert_eq!(
            row("fork_base")[4..=11],
            ["400", "100", "200", "100", "100", "900", "1000", "95"]
        );
        // Per MiB: tables (840 - 200) / 64 = 10, ptes (6500 - 100) / 64 = 100.
        let per_mib = row("fork_per_mib");
        assert_eq!(per_mib[6], "10", "{text}");
        assert_eq!(per_mib[7], "100", "{text}");
        assert_eq!(per_mib[9], "110", "{text}");
        // Per page: walk 10, grab 20, unpin 50 = 80; outside 60.
        assert_eq!(
            row("gup_fast_pin_per_page")[4..=9],
            ["10", "20", "50", "80", "140", "60"]
        );
        // Per call: fd 50, vfs 100, lookup 200, copy 500 = 850; outside = 1000 - 850 - 5.
        assert_eq!(
            row("file_read_4k")[4..=10],
            ["50", "100", "200", "500", "850", "1000", "145"]
        );
        assert!(!text.contains("vmsplice breakdown"), "{text}");
        assert_eq!(op_json(&records, &run).as_array().unwrap().len(), 5);
    }
}
