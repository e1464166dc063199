//! `cargo xtask bench --breakdown`: the kernel built with the `faultstat` feature counts, per
//! fault kind, the faults and the TSC ticks (guest instructions under icount) spent in each
//! phase of the fault path, and prints them at power-off, one line per kind:
//!
//! ```text
//! FAULTSTAT kind=<kind> count=<n> <phase>=<ticks> ...
//! ```
//!
//! (There is no /proc yet to read them from user space.) The default kernel carries none of this
//! code.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

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

/// Ticks per fault in each phase, one row per kind.
pub fn table(kinds: &[Kind]) -> String {
    let mut phases: Vec<&str> = Vec::new();
    for k in kinds {
        for (p, _) in &k.phases {
            if !phases.contains(&p.as_str()) {
                phases.push(p);
            }
        }
    }
    let mut out = String::from("in-kernel fault breakdown (ticks per fault, faultstat kernel)\n");
    out.push_str(&format!("| {:<16} | {:>8} |", "kind", "count"));
    for p in &phases {
        out.push_str(&format!(" {p:>8} |"));
    }
    out.push('\n');
    out.push_str(&format!("|{}|{}|", "-".repeat(18), "-".repeat(9) + ":"));
    for _ in &phases {
        out.push_str(&format!("{}:|", "-".repeat(9)));
    }
    out.push('\n');
    for k in kinds {
        out.push_str(&format!("| {:<16} | {:>8} |", k.kind, k.count));
        for p in &phases {
            let total = k
                .phases
                .iter()
                .find(|(name, _)| name == p)
                .map_or(0, |&(_, v)| v);
            let per = total.checked_div(k.count).unwrap_or(0);
            out.push_str(&format!(" {per:>8} |"));
        }
        out.push('\n');
    }
    out
}

pub fn json(kinds: &[Kind]) -> serde_json::Value {
    kinds
        .iter()
        .map(|k| {
            let phases: serde_json::Map<String, serde_json::Value> = k
                .phases
                .iter()
                .map(|(p, v)| (p.clone(), (*v).into()))
                .collect();
            serde_json::json!({ "kind": k.kind, "count": k.count, "ticks": phases })
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
        let text = table(&kinds);
        assert!(
            text.contains("| zero_fill        |        4 |       10 |      100 |      512 |"),
            "{text}"
        );
        assert!(
            text.contains("| cow_copy         |        0 |        0 |"),
            "{text}"
        );
    }
}
