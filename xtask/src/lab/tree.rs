//! `cargo xtask lab start`: a student tree is a copy of the repository's files (those git
//! tracks or would track, so a clone with local edits copies as it is) with one lab's marked
//! regions replaced by their stubs. Files already holding the same bytes are not rewritten, so
//! an existing tree's `target/` stays warm: cargo rebuilds only what the stubs changed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Lab;

/// Writes the student tree of `lab` into `dir`. Returns the files with stubbed regions and
/// how many regions each has.
pub fn write_student_tree(
    root: &Path,
    dir: &Path,
    lab: &Lab,
    force: bool,
) -> Result<Vec<(String, usize)>> {
    let files = repository_files(root)?;
    if dir.exists() && !force && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty: choose another directory, or pass --force to overwrite it",
            dir.display()
        );
    }
    let canonical_root = root.canonicalize()?;
    if let Ok(d) = dir.canonicalize() {
        if d == canonical_root {
            bail!("the student tree cannot be this repository itself");
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut stubbed = Vec::new();
    for file in &files {
        let from = root.join(file);
        let mut bytes =
            std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if file.ends_with(".rs") {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if lab.stubbed && text.contains(&format!("// lab({}): begin", lab.name)) {
                    let (out, regions) =
                        stub_regions(text, lab.name).with_context(|| format!("in {file}"))?;
                    // A file may only mention the markers (documentation): no region, no change.
                    if regions > 0 {
                        stubbed.push((file.clone(), regions));
                        bytes = out.into_bytes();
                    }
                }
            }
        }
        let to = dir.join(file);
        if std::fs::read(&to).ok().as_deref() == Some(&bytes[..]) {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, &bytes).with_context(|| format!("writing {}", to.display()))?;
        let mode = std::fs::metadata(&from)?.permissions();
        std::fs::set_permissions(&to, mode)?;
    }
    remove_stale(dir, &files.iter().cloned().collect())?;
    if lab.stubbed && stubbed.is_empty() {
        bail!("no `// lab({}): begin` region in the sources", lab.name);
    }
    Ok(stubbed)
}

/// The repository's files, relative to `root`: tracked plus untracked-but-not-ignored ones that
/// exist.
fn repository_files(root: &Path) -> Result<Vec<String>> {
    let output = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("running git ls-files (the lab tree is copied from a git checkout)")?;
    if !output.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut files: Vec<String> = output
        .stdout
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .filter(|f| root.join(f).is_file())
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Deletes files of an earlier tree in `dir` that the repository no longer has (not `target/`
/// or `.git/`).
fn remove_stale(dir: &Path, keep: &BTreeSet<String>) -> Result<()> {
    fn walk(base: &Path, at: &Path, keep: &BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(at)? {
            let entry = entry?;
            let path: PathBuf = entry.path();
            let rel = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .into_owned();
            if rel == "target" || rel == ".git" {
                continue;
            }
            if entry.file_type()?.is_dir() {
                walk(base, &path, keep)?;
            } else if !keep.contains(&rel) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
    walk(dir, dir, keep)
}

/// Replaces every `// lab(NAME): begin` .. `// lab(NAME): end` region of `text` by its
/// `// lab(NAME): stub: CODE` lines (as code, at the begin marker's indentation). Returns the
/// new text and the number of regions.
pub fn stub_regions(text: &str, name: &str) -> Result<(String, usize)> {
    let begin = format!("// lab({name}): begin");
    let end = format!("// lab({name}): end");
    let stub = format!("// lab({name}): stub: ");
    let mut out = String::with_capacity(text.len());
    let mut regions = 0;
    let mut inside: Option<(String, usize)> = None;
    for (number, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        match &inside {
            None if trimmed == begin => {
                inside = Some((indent.to_owned(), number + 1));
                out.push_str(&format!(
                    "{indent}// lab({name}): begin: your code replaces this stub (docs/labs/{name}.md)\n"
                ));
            }
            None if trimmed == end || trimmed.starts_with(&stub) => {
                bail!(
                    "line {}: `{trimmed}` outside a lab({name}) region",
                    number + 1
                )
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some((_, start)) if trimmed == begin => {
                bail!("line {}: region of line {start} not ended", number + 1)
            }
            Some((region_indent, _)) if trimmed.starts_with(&stub) => {
                let code = trimmed[stub.len()..].trim_end();
                out.push_str(region_indent);
                out.push_str(code);
                out.push('\n');
            }
            Some(_) if trimmed == end => {
                out.push_str(line);
                out.push('\n');
                regions += 1;
                inside = None;
            }
            Some(_) => {}
        }
    }
    if let Some((_, start)) = inside {
        bail!("the lab({name}) region of line {start} has no end marker");
    }
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    Ok((out, regions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_becomes_its_stub_and_others_stay() {
        let text = "fn f(a: u32) -> u32 {\n    // lab(x): begin\n    // lab(x): stub: let _ = a;\n    // lab(x): stub: 0\n    a + 1\n    // lab(x): end\n}\nfn g() {\n    // lab(y): begin\n    real();\n    // lab(y): end\n}\n";
        let (out, n) = stub_regions(text, "x").unwrap();
        assert_eq!(n, 1);
        assert!(!out.contains("a + 1"), "{out}");
        assert!(
            out.contains("\n    let _ = a;\n    0\n    // lab(x): end\n"),
            "{out}"
        );
        assert!(out.contains("real();"), "{out}");
        assert!(stub_regions("// lab(x): begin\nbody\n", "x").is_err());
        assert!(stub_regions("// lab(x): end\n", "x").is_err());
    }

    /// Every stubbed lab has regions in the real sources, each with a stub, and removing them
    /// takes the marked bodies away.
    #[test]
    fn every_stubbed_lab_has_regions_in_the_sources() {
        let root = crate::workspace_root();
        let sources = [
            "kernel/mm/src/rules.rs",
            "kernel/mm/src/fork.rs",
            "kernel/mm/src/pin.rs",
        ];
        for lab in super::super::LABS.iter().filter(|l| l.stubbed) {
            let mut regions = 0;
            for file in sources {
                let text = std::fs::read_to_string(root.join(file)).unwrap();
                let (out, n) = stub_regions(&text, lab.name).unwrap();
                regions += n;
                if n > 0 {
                    assert!(out.len() < text.len(), "{}: {file}", lab.name);
                }
            }
            assert!(regions > 0, "lab {} has no region", lab.name);
        }
        let rules = std::fs::read_to_string(root.join("kernel/mm/src/rules.rs")).unwrap();
        let (out, _) = stub_regions(&rules, "cow").unwrap();
        assert!(
            !out.contains("page.mapcount == 1"),
            "the cow stub keeps the answer"
        );
        assert!(out.contains("WpReuse::Copy\n    // lab(cow): end"));
    }
}
