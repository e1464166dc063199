//! What one run of `bench` printed, and the reference data it is compared with.
//!
//! The program's lines (userland/src/bin/bench.rs):
//!
//! ```text
//! BENCH name=<name> unit=<unit> median=<n> min=<n> n=<samples>
//! BENCH-SKIP name=<name> reason=<errno>
//! BENCH-DONE
//! BENCH-UNAME sysname=<s> release=<r> version=<rest of the line>
//! BENCH-RANDOM bytes=<32 hex digits>
//! ```
//!
//! The stored Linux column (the fallback when Linux is not booted: `--linux` measures it live)
//! and the targets are CSV files in `xtask/data/`, each naming its source in its header comment.

use anyhow::{bail, Context, Result};

/// One measured path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    pub name: String,
    pub unit: String,
    pub median: u64,
    pub min: u64,
    pub n: u64,
}

/// A path the program could not measure, with the errno that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub name: String,
    pub reason: String,
}

/// Everything one run printed, in the program's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    pub measurements: Vec<Measurement>,
    pub skips: Vec<Skip>,
    /// `BENCH-DONE` was seen: the program got to its end.
    pub done: bool,
    /// The `BENCH-UNAME` line's fields after the tag (`sysname=... release=... version=...`).
    pub uname: Option<String>,
    /// Each boot's `BENCH-RANDOM` line (the guest's first random bytes), in boot order: equal
    /// in two runs when nothing of the host's randomness reached the guest.
    pub random: Vec<String>,
}

/// What one output line is, if it is one of the program's.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Measured(Measurement),
    Skipped(Skip),
    Done,
    Uname(String),
    Random(String),
}

impl Run {
    /// Records `line` if it is one of the program's; returns what it was.
    pub fn push_line(&mut self, line: &str) -> Result<Option<Line>> {
        let parsed = parse_line(line)?;
        match &parsed {
            Some(Line::Measured(m)) => self.measurements.push(m.clone()),
            Some(Line::Skipped(s)) => self.skips.push(s.clone()),
            Some(Line::Done) => self.done = true,
            Some(Line::Uname(u)) => self.uname = Some(u.clone()),
            Some(Line::Random(r)) => self.random.push(r.clone()),
            None => {}
        }
        Ok(parsed)
    }

    pub fn parse(output: &str) -> Result<Run> {
        let mut run = Run::default();
        for line in output.lines() {
            run.push_line(line)?;
        }
        Ok(run)
    }

    /// Adds the rows of another boot of the same kernel (the SMP boot of `--smp`): its
    /// measurements and skips after this run's; done only if both got to their end. A name
    /// both runs measured is an error (the two boots must measure different paths).
    pub fn merge(&mut self, other: Run) -> Result<()> {
        for m in &other.measurements {
            if self.get(&m.name).is_some() {
                bail!("both boots measured {}", m.name);
            }
        }
        self.measurements.extend(other.measurements);
        self.skips.extend(other.skips);
        self.random.extend(other.random);
        self.done &= other.done;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.name == name)
    }

    /// One field of the `BENCH-UNAME` line (`version` is the rest of the line).
    pub fn uname_field(&self, key: &str) -> Option<&str> {
        let uname = self.uname.as_deref()?;
        let at = uname.find(&format!("{key}="))? + key.len() + 1;
        let rest = &uname[at..];
        Some(if key == "version" {
            rest
        } else {
            rest.split_whitespace().next().unwrap_or("")
        })
    }
}

/// Parses one console line; `None` for lines that are not the program's. The console may put a
/// `\r` or other output before it, so the marker is searched for, not required at column 0.
pub fn parse_line(line: &str) -> Result<Option<Line>> {
    let line = line.trim_end_matches('\r');
    let Some(at) = line.find("BENCH") else {
        return Ok(None);
    };
    let rest = &line[at..];
    let (tag, fields) = rest.split_once(' ').unwrap_or((rest, ""));
    let field = |key: &str| -> Result<&str> {
        fields
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .with_context(|| format!("`{key}=` missing in {line:?}"))
    };
    let number = |key: &str| -> Result<u64> {
        field(key)?
            .parse()
            .with_context(|| format!("`{key}=` is not a number in {line:?}"))
    };
    Ok(match tag {
        "BENCH" => Some(Line::Measured(Measurement {
            name: field("name")?.to_owned(),
            unit: field("unit")?.to_owned(),
            median: number("median")?,
            min: number("min")?,
            n: number("n")?,
        })),
        "BENCH-SKIP" => Some(Line::Skipped(Skip {
            name: field("name")?.to_owned(),
            reason: field("reason")?.to_owned(),
        })),
        "BENCH-DONE" => Some(Line::Done),
        "BENCH-UNAME" => Some(Line::Uname(fields.trim().to_owned())),
        "BENCH-RANDOM" => Some(Line::Random(fields.trim().to_owned())),
        _ => None,
    })
}

/// A reference column: `name -> value`, and where the numbers come from.
#[derive(Debug, Clone)]
pub struct Reference {
    pub values: Vec<(String, u64)>,
    /// The header comment of the data file.
    pub source: String,
}

impl Reference {
    pub fn get(&self, name: &str) -> Option<u64> {
        self.values.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }

    /// Parses a data file: `#` comment lines (the source), a `name,value` header, then rows.
    pub fn parse(text: &str) -> Result<Reference> {
        let mut source = Vec::new();
        let mut values = Vec::new();
        let mut header = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(comment) = line.strip_prefix('#') {
                source.push(comment.trim());
            } else if !header {
                header = true;
            } else {
                let Some((name, value)) = line.split_once(',') else {
                    bail!("data row without a comma: {line:?}");
                };
                let value = value
                    .trim()
                    .parse()
                    .with_context(|| format!("data row {line:?}"))?;
                values.push((name.trim().to_owned(), value));
            }
        }
        Ok(Reference {
            values,
            source: source.join(" "),
        })
    }
}

/// The stored Linux column, relative to the workspace (`--linux --save-baseline` rewrites it).
pub const LINUX_BASELINE: &str = "xtask/data/linux-6.1.csv";

/// Linux 6.1 under the same QEMU configuration, as last stored by `--linux --save-baseline`.
pub fn linux_baseline() -> Reference {
    Reference::parse(include_str!("../../data/linux-6.1.csv")).expect("xtask/data/linux-6.1.csv")
}

/// The stored Linux column written from a live Linux run: every measured row, the kernel and
/// the method in the header; then the rows of `previous` this run did not measure (the
/// `smp_*` rows of a run without `--smp`), kept as they were and named in a comment.
pub fn baseline_csv(linux: &Run, kernel: &str, qemu: &str, previous: &Reference) -> String {
    let release = linux.uname_field("release").unwrap_or("?");
    let mut out = String::new();
    for line in [
        "# Linux fault-path baseline: guest instructions per operation, median, written by"
            .to_owned(),
        "# `cargo xtask bench --linux --save-baseline` (the offline fallback of --linux).".to_owned(),
        format!("# Kernel: {kernel}; uname -r {release}."),
        "# Measured by userland/src/bin/bench.rs as /init (method of shared/perf/LINUX-BASELINE.md):"
            .to_owned(),
        format!("# {qemu}"),
        "name,linux".to_owned(),
    ] {
        out.push_str(&line);
        out.push('\n');
    }
    for m in &linux.measurements {
        out.push_str(&format!("{},{}\n", m.name, m.median));
    }
    let kept: Vec<&(String, u64)> = previous
        .values
        .iter()
        .filter(|(name, _)| linux.get(name).is_none())
        .collect();
    if !kept.is_empty() {
        out.push_str("# Not measured by this run, kept from the previous file:\n");
        for (name, value) in kept {
            out.push_str(&format!("{name},{value}\n"));
        }
    }
    out
}

/// The targets (issue 18).
pub fn targets() -> Reference {
    Reference::parse(include_str!("../../data/targets.csv")).expect("xtask/data/targets.csv")
}

#[cfg(test)]
/// Lines as the program prints them (a shortened real run), with console noise between.
pub const FIXTURE: &str = "\
init: argv = \"init\" \"bench\"
BENCH name=tsc_overhead unit=tsc median=5 min=5 n=20480
BENCH name=anon_write_fault unit=tsc/page median=1204 min=1204 n=20480
BENCH name=fork_base unit=tsc median=68474 min=68474 n=5
BENCH name=fork_touched_mib_1 unit=tsc median=153210 min=153210 n=5
BENCH name=fault_vmas_10 unit=tsc/page median=1227 min=1227 n=20480
[2.437992] WARN unknown system call 425 (pid 2): ENOSYS
BENCH-SKIP name=pin_longterm_per_page reason=ENOSYS\r
BENCH-DONE
BENCH-UNAME sysname=Linux release=6.1.0-57-amd64 version=#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1
cowlab: frames free=254919 boot=254919
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_programs_lines() {
        let run = Run::parse(FIXTURE).unwrap();
        assert!(run.done);
        assert_eq!(run.uname_field("release"), Some("6.1.0-57-amd64"));
        assert_eq!(
            run.uname_field("version"),
            Some("#1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1")
        );
        assert_eq!(run.measurements.len(), 5);
        assert_eq!(
            run.get("anon_write_fault"),
            Some(&Measurement {
                name: "anon_write_fault".into(),
                unit: "tsc/page".into(),
                median: 1204,
                min: 1204,
                n: 20480,
            })
        );
        assert_eq!(
            run.skips,
            vec![Skip {
                name: "pin_longterm_per_page".into(),
                reason: "ENOSYS".into()
            }]
        );
    }

    #[test]
    fn the_smp_boot_merges_after_the_main_boot() {
        let mut run = Run::parse(FIXTURE).unwrap();
        let smp = Run::parse(
            "BENCH name=smp_fault_disjoint_4 unit=tsc/fault median=950 min=949 n=5\n\
             BENCH-SKIP name=smp_gup_fast_forker_per_page reason=ENOENT\n\
             BENCH-DONE\n",
        )
        .unwrap();
        run.merge(smp.clone()).unwrap();
        assert!(run.done);
        assert_eq!(run.measurements.len(), 6);
        assert_eq!(run.measurements[5].name, "smp_fault_disjoint_4");
        assert_eq!(run.get("smp_fault_disjoint_4").unwrap().min, 949);
        assert_eq!(run.skips.len(), 2);
        // The same row twice is refused; a boot that did not finish leaves the run unfinished.
        assert!(run.clone().merge(smp).is_err());
        let mut unfinished = Run::parse(FIXTURE).unwrap();
        unfinished.merge(Run::default()).unwrap();
        assert!(!unfinished.done);
    }

    #[test]
    fn a_malformed_line_is_an_error() {
        assert!(parse_line("BENCH name=x unit=tsc median=oops min=1 n=1").is_err());
        assert!(parse_line("BENCH name=x").is_err());
        assert!(parse_line("nothing here").unwrap().is_none());
    }

    #[test]
    fn reference_data_parses_with_its_source() {
        let linux = linux_baseline();
        assert_eq!(linux.get("cow_copy_fault"), Some(3899));
        // Rewritten by session 13's `--linux --smp --save-baseline` (perf7): Linux's fork rows
        // are 129 lower than session 12's 53812 with that branch's `bench` binary (fork copies
        // the process's pages; the binary's layout changed with the new rows).
        assert_eq!(linux.get("fork_base"), Some(53683));
        assert!(linux.source.contains("6.1.0-57-amd64"), "{}", linux.source);
        assert!(
            linux.source.contains("LINUX-BASELINE.md"),
            "{}",
            linux.source
        );
        // What --save-baseline writes parses back to the same figures, with its source.
        let run = Run::parse(FIXTURE).unwrap();
        let stored = Reference::parse(&baseline_csv(
            &run,
            "Debian linux-image-x",
            "qemu -m 1G",
            &Reference::parse("name,linux\nfork_base,1\nsmp_fault_shared_4,2700\n").unwrap(),
        ))
        .unwrap();
        // A row the run measured takes the new figure; one it did not is kept.
        assert_eq!(stored.get("fork_base"), Some(68474));
        assert_eq!(stored.get("smp_fault_shared_4"), Some(2700));
        assert!(stored.source.contains("kept from the previous file"));
        assert_eq!(stored.get("anon_write_fault"), Some(1204));
        assert_eq!(stored.values.len(), run.measurements.len() + 1);
        assert!(
            stored.source.contains("uname -r 6.1.0-57-amd64"),
            "{}",
            stored.source
        );
        assert!(stored.source.contains("qemu -m 1G"), "{}", stored.source);
        let targets = targets();
        assert_eq!(targets.get("anon_read_fault"), Some(220));
        assert!(targets.source.contains("issue 18"), "{}", targets.source);
    }
}
