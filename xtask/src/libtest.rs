//! Reading `cargo test`'s output (cargo's `Running`/`Doc-tests` lines and libtest's plain
//! format) to print one line per host test and count them.

/// One line of `cargo test` output, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `Running unittests src/lib.rs (target/debug/deps/cowlab_boot-0123abcd)` or
    /// `Doc-tests cowlab_mm`: the suite the following test lines belong to.
    Suite(String),
    /// `test NAME ... ok|FAILED|ignored`.
    Test { name: String, result: TestOutcome },
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
    Summary { passed: usize, failed: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOutcome {
    Ok,
    Failed,
    Ignored,
}

/// Classifies one output line; `None` for everything else (build output, failure details).
pub fn parse(line: &str) -> Option<Event> {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("Running ") {
        // "unittests src/lib.rs (target/debug/deps/cowlab_boot-0123abcd)"
        let binary = rest.rsplit_once('(')?.1.trim_end_matches(')');
        let file = binary.rsplit('/').next()?;
        let suite = match file.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name,
            _ => file,
        };
        return Some(Event::Suite(suite.to_owned()));
    }
    if let Some(krate) = trimmed.strip_prefix("Doc-tests ") {
        return Some(Event::Suite(format!("{krate} (doc)")));
    }
    if let Some(rest) = line.strip_prefix("test result: ") {
        let count = |what: &str| -> Option<usize> {
            rest.split(';')
                .find_map(|part| part.trim().strip_suffix(what))
                .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
        };
        return Some(Event::Summary {
            passed: count(" passed")?,
            failed: count(" failed")?,
        });
    }
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let result = match result.trim() {
        "ok" => TestOutcome::Ok,
        "FAILED" => TestOutcome::Failed,
        r if r.starts_with("ignored") => TestOutcome::Ignored,
        _ => return None,
    };
    Some(Event::Test {
        name: name.to_owned(),
        result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_cargo_test_output() {
        assert_eq!(
            parse("     Running unittests src/lib.rs (target/debug/deps/cowlab_boot-0a1b2c3d4e5f6789)"),
            Some(Event::Suite("cowlab_boot".into()))
        );
        assert_eq!(
            parse("     Running tests/fork.rs (target/debug/deps/fork-0a1b2c3d4e5f6789)"),
            Some(Event::Suite("fork".into()))
        );
        assert_eq!(
            parse("   Doc-tests cowlab_mm"),
            Some(Event::Suite("cowlab_mm (doc)".into()))
        );
        assert_eq!(
            parse("test ustar::tests::round_trips ... ok"),
            Some(Event::Test {
                name: "ustar::tests::round_trips".into(),
                result: TestOutcome::Ok
            })
        );
        assert_eq!(
            parse("test frame::tests::slow ... ignored, takes a minute"),
            Some(Event::Test {
                name: "frame::tests::slow".into(),
                result: TestOutcome::Ignored
            })
        );
        assert_eq!(
            parse("test src/lib.rs - Frame (line 10) ... FAILED"),
            Some(Event::Test {
                name: "src/lib.rs - Frame (line 10)".into(),
                result: TestOutcome::Failed
            })
        );
        assert_eq!(
            parse("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"),
            Some(Event::Summary { passed: 3, failed: 1 })
        );
        assert_eq!(parse("running 4 tests"), None);
        assert_eq!(parse("   Compiling xtask v0.1.0"), None);
        assert_eq!(parse("test foo has no result"), None);
    }
}
