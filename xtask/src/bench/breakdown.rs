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

/// The `bench` path whose every timed fault is of this kind, if there is one.
pub fn bench_path(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "zero_page_map" => "anon_read_fault",
        "zero_fill" => "anon_write_fault",
        "zero_page_copy" => "zeropage_write_fault",
        "cow_copy" => "cow_copy_fault",
        "cow_reuse" => "cow_reuse_fault",
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
}
