//! The comparison table: cowlab against Linux (measured in the same run with `--linux`, else the
//! stored column) and the targets (and the host, with `--host`), printed as text and written as
//! JSON and CSV.

use std::fmt::Write as _;

use super::results::{Measurement, Reference, Run};

/// One row of the comparison.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub unit: String,
    pub cowlab: Option<Measurement>,
    /// Why cowlab has no number (the errno of a `BENCH-SKIP`), if it has none.
    pub skipped: Option<String>,
    /// Linux's median: measured in this run (`--linux`) or the stored figure.
    pub linux: Option<u64>,
    /// Linux's min (a measured column only).
    pub linux_min: Option<u64>,
    /// Why Linux has no number (the errno of its `BENCH-SKIP`), in a measured column.
    pub linux_skipped: Option<String>,
    pub target: Option<u64>,
    pub host: Option<Measurement>,
    pub host_skipped: Option<String>,
}

impl Row {
    /// cowlab's median over Linux's.
    pub fn ratio(&self) -> Option<f64> {
        let cowlab = self.cowlab.as_ref()?.median as f64;
        let linux = self.linux? as f64;
        (linux > 0.0).then(|| cowlab / linux)
    }

    /// `Some(true)` when cowlab's median is at most the target.
    pub fn meets_target(&self) -> Option<bool> {
        Some(self.cowlab.as_ref()?.median <= self.target?)
    }
}

/// Where the Linux column comes from.
#[derive(Clone, Copy)]
pub enum Linux<'a> {
    /// Booted in this run (`--linux`).
    Measured(&'a Run),
    /// The stored table (`xtask/data/`).
    Stored(&'a Reference),
}

/// Rows in the program's order; names only the other columns know (paths the program did not
/// reach) come last.
pub fn rows(cowlab: &Run, host: Option<&Run>, linux: Linux<'_>, targets: &Reference) -> Vec<Row> {
    let mut names: Vec<(String, String)> = Vec::new();
    let mut add = |name: &str, unit: &str| {
        if !names.iter().any(|(n, _)| n == name) {
            names.push((name.to_owned(), unit.to_owned()));
        }
    };
    for m in &cowlab.measurements {
        add(&m.name, &m.unit);
    }
    for s in &cowlab.skips {
        add(&s.name, "");
    }
    match linux {
        Linux::Measured(run) => {
            for m in &run.measurements {
                add(&m.name, &m.unit);
            }
        }
        Linux::Stored(reference) => {
            for (name, _) in &reference.values {
                add(name, "");
            }
        }
    }
    for (name, _) in &targets.values {
        add(name, "");
    }
    names
        .into_iter()
        .map(|(name, unit)| {
            let host_m = host.and_then(|h| h.get(&name)).cloned();
            let (linux_m, linux_value, linux_skipped) = match linux {
                Linux::Measured(run) => {
                    let m = run.get(&name).cloned();
                    let value = m.as_ref().map(|m| m.median);
                    (m, value, skip_reason(run, &name))
                }
                Linux::Stored(reference) => (None, reference.get(&name), None),
            };
            let unit = if unit.is_empty() {
                host_m
                    .as_ref()
                    .or(linux_m.as_ref())
                    .map(|m| m.unit.clone())
                    .unwrap_or_default()
            } else {
                unit
            };
            Row {
                cowlab: cowlab.get(&name).cloned(),
                skipped: skip_reason(cowlab, &name),
                linux: linux_value,
                linux_min: linux_m.as_ref().map(|m| m.min),
                linux_skipped,
                target: targets.get(&name),
                host: host_m,
                host_skipped: host.and_then(|h| skip_reason(h, &name)),
                unit,
                name,
            }
        })
        .collect()
}

fn skip_reason(run: &Run, name: &str) -> Option<String> {
    run.skips
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.reason.clone())
}

fn cell(m: Option<&Measurement>, skipped: Option<&String>) -> String {
    match (m, skipped) {
        (Some(m), _) => m.median.to_string(),
        (None, Some(reason)) => format!("skip:{reason}"),
        (None, None) => "-".to_owned(),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// How a row stands against its target: `ok`, `+N` over it, or nothing.
pub fn verdict(row: &Row) -> String {
    match (row.cowlab.as_ref(), row.target) {
        (Some(m), Some(t)) if m.median <= t => "ok".to_owned(),
        (Some(m), Some(t)) => format!("+{} ({:.1}x)", m.median - t, m.median as f64 / t as f64),
        _ => String::new(),
    }
}

/// Rows Linux cannot measure, with the row that measures the same path on Linux and why:
/// printed under the table (no figure is made up for them).
pub const LINUX_COUNTERPARTS: [(&str, &str, &str); 1] = [(
    "smp_gup_fast_forker_per_page",
    "smp_vmsplice_forker_per_page",
    "Debian's 6.1 has no gup_test (CONFIG_GUP_TEST is not set); vmsplice reaches \
     get_user_pages_fast on 6.1 (iter_to_pipe -> iov_iter_get_pages2 -> \
     __iov_iter_get_pages_alloc), with read references where gup_test pins for writing",
)];

/// One line per row of [`LINUX_COUNTERPARTS`] whose Linux column is empty.
pub fn counterpart_notes(rows: &[Row]) -> Vec<String> {
    LINUX_COUNTERPARTS
        .iter()
        .filter(|(name, _, _)| rows.iter().any(|r| r.name == *name && r.linux.is_none()))
        .map(|(name, other, why)| {
            format!("{name}: no Linux figure; on Linux the GUP-fast-with-a-forker row is {other} ({why})")
        })
        .collect()
}

/// The text table (medians), Markdown-shaped so docs/benchmarks.md can take it as it is;
/// `linux_label` heads the Linux column.
pub fn table(rows: &[Row], with_host: bool, linux_label: &str) -> String {
    let mut header = vec![
        "name",
        "unit",
        "cowlab",
        linux_label,
        "ratio",
        "target",
        "vs target",
    ];
    if with_host {
        header.push("host");
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.name.clone(),
                r.unit.clone(),
                cell(r.cowlab.as_ref(), r.skipped.as_ref()),
                match (r.linux, &r.linux_skipped) {
                    (None, Some(reason)) => format!("skip:{reason}"),
                    (v, _) => opt(v),
                },
                r.ratio().map_or_else(String::new, |x| format!("{x:.2}")),
                opt(r.target),
                verdict(r),
            ];
            if with_host {
                cells.push(cell(r.host.as_ref(), r.host_skipped.as_ref()));
            }
            cells
        })
        .collect();
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
        let mut out = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            // Numbers right-aligned, names and units left-aligned.
            if i < 2 {
                let _ = write!(out, " {c:<w$} |", w = widths[i]);
            } else {
                let _ = write!(out, " {c:>w$} |", w = widths[i]);
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if i < 2 {
            let _ = write!(out, "-{dashes}-|");
        } else {
            let _ = write!(out, "-{dashes}:|");
        }
    }
    out.push('\n');
    for cells in &body {
        out.push_str(&line(cells));
    }
    out
}

/// `results.csv`: one row per path, empty cells for what is missing.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "name,unit,cowlab_median,cowlab_min,cowlab_n,cowlab_skip,linux_median,linux_min,linux_skip,ratio,target,meets_target,host_median,host_min,host_skip\n",
    );
    let num = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.name,
            r.unit,
            num(r.cowlab.as_ref().map(|m| m.median)),
            num(r.cowlab.as_ref().map(|m| m.min)),
            num(r.cowlab.as_ref().map(|m| m.n)),
            r.skipped.clone().unwrap_or_default(),
            num(r.linux),
            num(r.linux_min),
            r.linux_skipped.clone().unwrap_or_default(),
            r.ratio().map_or_else(String::new, |x| format!("{x:.4}")),
            num(r.target),
            r.meets_target().map_or_else(String::new, |b| b.to_string()),
            num(r.host.as_ref().map(|m| m.median)),
            num(r.host.as_ref().map(|m| m.min)),
            r.host_skipped.clone().unwrap_or_default(),
        );
    }
    out
}

/// `results.json` rows.
pub fn json_rows(rows: &[Row]) -> serde_json::Value {
    let m = |m: &Option<Measurement>| {
        m.as_ref().map_or(
            serde_json::Value::Null,
            |m| serde_json::json!({ "median": m.median, "min": m.min, "n": m.n }),
        )
    };
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "unit": r.unit,
                "cowlab": m(&r.cowlab),
                "cowlab_skip": r.skipped,
                "linux": r.linux,
                "linux_min": r.linux_min,
                "linux_skip": r.linux_skipped,
                "ratio": r.ratio(),
                "target": r.target,
                "meets_target": r.meets_target(),
                "host": m(&r.host),
                "host_skip": r.host_skipped,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::results::{linux_baseline, targets, FIXTURE};
    use super::*;

    #[test]
    fn a_measured_linux_column_gives_every_row_and_its_skips() {
        let cowlab = Run::parse(FIXTURE).unwrap();
        let linux = Run::parse(
            "BENCH name=anon_write_fault unit=tsc/page median=2746 min=2740 n=20480\n\
             BENCH name=fork_touched_mib_1 unit=tsc median=100000 min=99000 n=5\n\
             BENCH-SKIP name=pin_longterm_per_page reason=EPERM\n\
             BENCH name=linux_only unit=tsc median=7 min=7 n=1\n",
        )
        .unwrap();
        let rows = rows(&cowlab, None, Linux::Measured(&linux), &targets());
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(get("fork_touched_mib_1").linux, Some(100000));
        assert_eq!(get("anon_write_fault").linux_min, Some(2740));
        assert_eq!(get("fork_base").linux, None, "no stored figure mixed in");
        assert_eq!(get("linux_only").unit, "tsc");
        let text = table(&rows, false, "Linux");
        let pin = text
            .lines()
            .find(|l| l.starts_with("| pin_longterm_per_page "))
            .unwrap();
        assert_eq!(pin.matches("skip:").count(), 2, "{pin}");
        assert!(pin.contains("skip:EPERM"), "{pin}");
    }

    #[test]
    fn a_row_linux_cannot_measure_names_its_linux_counterpart() {
        let cowlab = Run::parse(
            "BENCH name=smp_gup_fast_forker_per_page unit=tsc/page median=741 min=741 n=256\n",
        )
        .unwrap();
        let skipped =
            Run::parse("BENCH-SKIP name=smp_gup_fast_forker_per_page reason=ENOENT\n").unwrap();
        let rows_skipped = rows(&cowlab, None, Linux::Measured(&skipped), &targets());
        let notes = counterpart_notes(&rows_skipped);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("smp_vmsplice_forker_per_page"),
            "{notes:?}"
        );
        let measured = Run::parse(
            "BENCH name=smp_gup_fast_forker_per_page unit=tsc/page median=900 min=900 n=256\n",
        )
        .unwrap();
        let rows_measured = rows(&cowlab, None, Linux::Measured(&measured), &targets());
        assert!(counterpart_notes(&rows_measured).is_empty());
    }

    #[test]
    fn table_puts_cowlab_beside_linux_and_target() {
        let run = Run::parse(FIXTURE).unwrap();
        let rows = rows(
            &run,
            Some(&run),
            Linux::Stored(&linux_baseline()),
            &targets(),
        );
        let aw = rows.iter().find(|r| r.name == "anon_write_fault").unwrap();
        assert_eq!(aw.linux, Some(2729));
        assert_eq!(aw.target, Some(750));
        assert_eq!(aw.meets_target(), Some(false));
        assert_eq!(verdict(aw), "+454 (1.6x)");
        let text = table(&rows, true, "Linux");
        let cells: Vec<&str> = text
            .lines()
            .find(|l| l.starts_with("| anon_write_fault "))
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            cells,
            [
                "",
                "anon_write_fault",
                "tsc/page",
                "1204",
                "2729",
                "0.44",
                "750",
                "+454 (1.6x)",
                "1204",
                ""
            ],
            "{text}"
        );
        assert!(text.contains("skip:ENOSYS"), "{text}");
        // Paths only the baseline names still get a row.
        assert!(rows.iter().any(|r| r.name == "vmsplice_batch_per_page"));
        let csv = csv(&rows);
        assert!(
            csv.lines()
                .any(|l| l.starts_with("anon_write_fault,tsc/page,1204,1204,20480,,2729,,,")),
            "{csv}"
        );
        assert_eq!(json_rows(&rows)[1]["linux"], 2729);
    }
}
