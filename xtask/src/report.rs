//! A test job's output held back until its turn ([`crate::parallel::ordered`]): the lines and
//! the tally updates [`Tally`] would make at once, kept in order and replayed by
//! [`Report::apply`], so a job run beside others prints exactly what it prints alone.

use std::path::Path;
use std::time::Duration;

use crate::test::Tally;

/// One held-back line.
#[derive(Debug, Clone, PartialEq)]
enum Entry {
    /// Printed as is, not counted.
    Note(String),
    /// `LINE ... ok`, counted as passed.
    Pass(String, Option<Duration>),
    /// `NAME ... FAILED: WHY`, counted as failed and listed as NAME.
    Fail(String, String, Option<Duration>),
    /// Printed as is and counted: passed, or failed and listed under the name given.
    Counted(String, Option<String>),
}

/// The held-back output of one job.
#[derive(Debug, Default)]
pub struct Report {
    entries: Vec<Entry>,
}

impl Report {
    /// A report holding one failure (a job that could not run).
    pub fn failed(name: &str, why: &str) -> Self {
        let mut report = Self::default();
        report.fail(name, why);
        report
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.entries.push(Entry::Note(line.into()));
    }

    pub fn pass(&mut self, line: impl Into<String>) {
        self.entries.push(Entry::Pass(line.into(), None));
    }

    /// [`Report::pass`] with the job's duration on the line.
    pub fn pass_took(&mut self, line: impl Into<String>, took: Duration) {
        self.entries.push(Entry::Pass(line.into(), Some(took)));
    }

    pub fn fail(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.entries
            .push(Entry::Fail(name.into(), why.into(), None));
    }

    /// [`Report::fail`] with the job's duration on the line.
    pub fn fail_took(&mut self, name: impl Into<String>, why: impl Into<String>, took: Duration) {
        self.entries
            .push(Entry::Fail(name.into(), why.into(), Some(took)));
    }

    /// A line printed as is and counted (the in-kernel tests' own result lines): `failure` is
    /// the name listed among the failures, `None` for a pass.
    pub fn counted(&mut self, line: impl Into<String>, failure: Option<String>) {
        self.entries.push(Entry::Counted(line.into(), failure));
    }

    /// The last lines of `log` and its path, as [`crate::test::print_tail`] prints them.
    pub fn tail(&mut self, log: &Path) {
        for line in crate::test::tail_lines(log) {
            self.note(line);
        }
    }

    /// `lines` and `log`'s path, as [`crate::test::print_lines`] prints them.
    pub fn lines(&mut self, lines: &[String], log: &Path) {
        for line in crate::test::shown_lines(lines, log) {
            self.note(line);
        }
    }

    /// Prints the held lines and counts them in `tally`, in order.
    pub fn apply(self, tally: &mut Tally) {
        for entry in self.entries {
            match entry {
                Entry::Note(line) => println!("{line}"),
                Entry::Pass(line, took) => tally.pass_took(&line, took),
                Entry::Fail(name, why, took) => tally.fail_took(&name, &why, took),
                Entry::Counted(line, failure) => {
                    println!("{line}");
                    match failure {
                        None => tally.passed += 1,
                        Some(name) => {
                            tally.failed += 1;
                            tally.failures.push(name);
                        }
                    }
                }
            }
        }
    }
}

/// ` (14.2 s)`, or nothing.
pub fn took_suffix(took: Option<Duration>) -> String {
    took.map_or_else(String::new, |d| format!(" ({:.1} s)", d.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_counts_in_order_and_lists_failures_by_name() {
        let mut tally = Tally::default();
        let mut first = Report::default();
        first.note("== a section ==");
        first.pass_took("qemu: t_a (3 checks)", Duration::from_millis(14_240));
        first.pass("qemu: t_a: frames back to the boot count");
        first.counted("ktest x ... ok (5 cycles)", None);
        let mut second = Report::failed("qemu: t_b", "timed out");
        second.fail_took("qemu: t_c", "summary None", Duration::from_secs(2));
        second.counted("ktest y ... FAILED", Some("ktest y".to_owned()));
        first.apply(&mut tally);
        second.apply(&mut tally);
        assert_eq!((tally.passed, tally.failed), (3, 3));
        assert_eq!(tally.failures, ["qemu: t_b", "qemu: t_c", "ktest y"]);
    }

    #[test]
    fn durations_print_with_one_decimal() {
        assert_eq!(took_suffix(None), "");
        assert_eq!(
            took_suffix(Some(Duration::from_millis(14_240))),
            " (14.2 s)"
        );
        assert_eq!(took_suffix(Some(Duration::from_millis(90))), " (0.1 s)");
    }

    #[test]
    fn tails_are_held_as_the_printed_lines() {
        let dir = std::env::temp_dir().join(format!("cowlab-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("boot.log");
        let text: String = (0..40).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let mut report = Report::default();
        report.tail(&log);
        let shown: Vec<String> = report
            .entries
            .iter()
            .map(|e| match e {
                Entry::Note(line) => line.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(shown.len(), 16, "15 lines and the log's path");
        assert_eq!(shown[0], "    | line 25");
        assert_eq!(shown[14], "    | line 39");
        assert_eq!(shown[15], format!("    (log: {})", log.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
