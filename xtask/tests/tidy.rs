//! Tidy checks over the source tree (as rust-analyzer's `tidy` test): the layering of the
//! kernel's modules and of its library crates (`cowlab-mm`, `cowlab-ext2`, `cowlab-elf`), `#![deny(unsafe_code)]` on every kernel file without unsafe code, and a
//! `// SAFETY:` comment on every `unsafe` block. `cargo test -p xtask --test tidy`.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The text of a line without its `//` comment (string literals holding `//` are rare enough
/// in this tree to ignore).
fn code_of(line: &str) -> &str {
    line.find("//").map_or(line, |i| &line[..i])
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What each kernel layer must not name: `syscall/` decodes arguments and calls down; `fs/`,
/// `proc/` and `drivers/` sit below it, and `drivers/` below `fs/` too.
const LAYERS: &[(&str, &[&str])] = &[
    ("kernel/src/fs", &["crate::syscall", "super::syscall"]),
    ("kernel/src/proc", &["crate::syscall", "super::syscall"]),
    (
        "kernel/src/drivers",
        &["crate::syscall", "super::syscall", "crate::fs", "super::fs"],
    ),
    // The library crates are separate crates (their `crate::` paths are their own): they
    // must not name the kernel crate, and their manifests must not depend on it.
    ("kernel/mm/src", &["cowlab_kernel"]),
    ("kernel/ext2/src", &["cowlab_kernel"]),
    ("kernel/elf/src", &["cowlab_kernel"]),
];

#[test]
fn lower_layers_never_import_higher_ones() {
    let mut bad = Vec::new();
    for (dir, forbidden) in LAYERS {
        for file in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&file).expect("readable source");
            for (n, line) in text.lines().enumerate() {
                let code = code_of(line);
                for name in *forbidden {
                    if code.contains(name) {
                        bad.push(format!("{}:{}: names `{name}`", rel(&file), n + 1));
                    }
                }
            }
        }
    }
    for krate in ["kernel/mm", "kernel/ext2", "kernel/elf"] {
        let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{krate}/Cargo.toml: {e}"));
        if manifest.contains("cowlab-kernel") {
            bad.push(format!("{krate}/Cargo.toml depends on the kernel"));
        }
    }
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}

/// What the `unsafe_code` lint counts besides the keyword.
const UNSAFE_WORDS: &[&str] = &[
    "unsafe",
    "global_asm",
    "naked_asm",
    "no_mangle",
    "export_name",
    "link_section",
];

/// Whether the code of `text` (comments left out) is unsafe code as the `unsafe_code` lint
/// sees it: the `unsafe` keyword, `global_asm!`, or an unsafe attribute.
fn has_unsafe(text: &str) -> bool {
    text.lines().any(|l| {
        code_of(l)
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| UNSAFE_WORDS.contains(&w))
    })
}

/// Whether `file` needs `unsafe`: its own code, or for a module root (`mod.rs`, `main.rs`),
/// the code of any file in its directory (an inner `deny` there would cover them all).
fn needs_unsafe(file: &Path) -> bool {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let files = if matches!(name, "mod.rs" | "main.rs" | "lib.rs") {
        rust_files(file.parent().expect("a file has a directory"))
    } else {
        vec![file.to_path_buf()]
    };
    files
        .iter()
        .any(|f| has_unsafe(&fs::read_to_string(f).expect("readable source")))
}

#[test]
fn kernel_files_without_unsafe_deny_it() {
    let mut bad = Vec::new();
    for file in rust_files(&root().join("kernel/src")) {
        let text = fs::read_to_string(&file).expect("readable source");
        if !needs_unsafe(&file) && !text.contains("#![deny(unsafe_code)]") {
            bad.push(rel(&file));
        }
    }
    assert!(
        bad.is_empty(),
        "files without unsafe code lack `#![deny(unsafe_code)]`:\n{}",
        bad.join("\n")
    );
}

/// Whether the `unsafe` block starting on line `at` has a `SAFETY:` comment above it: the
/// comment lines directly before the statement it belongs to (the statement may start lines
/// earlier: `let x =` on one line, `unsafe {` on the next).
fn documented(lines: &[&str], at: usize) -> bool {
    if lines[at].contains("SAFETY:") {
        return true;
    }
    let mut i = at;
    while i > 0 {
        i -= 1;
        let line = lines[i].trim();
        if line.starts_with("//") {
            if line.contains("SAFETY:") {
                return true;
            }
            continue;
        }
        if line.is_empty() || line.ends_with(';') || line.ends_with('{') || line.ends_with('}') {
            return false;
        }
        // A line of the same statement (`let x =`, a call's arguments, an attribute).
    }
    false
}

/// Lines where an `unsafe` block starts (not `unsafe fn`/`impl`/`trait`/`extern`, not an
/// `#[unsafe(...)]` attribute).
fn unsafe_blocks(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = code_of(line);
        let mut rest = code;
        while let Some(i) = rest.find("unsafe") {
            let before = rest[..i].chars().last();
            let after = rest[i + 6..].trim_start();
            let word = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if word && after.starts_with('{') {
                out.push(n);
                break;
            }
            rest = &rest[i + 6..];
        }
    }
    out
}

#[test]
fn every_unsafe_block_has_a_safety_comment() {
    let mut bad = Vec::new();
    for dir in [
        "kernel/src",
        "kernel/mm/src",
        "userland/src",
        "boot/src",
        "xtask/src",
    ] {
        for file in rust_files(&root().join(dir)) {
            let text = fs::read_to_string(&file).expect("readable source");
            let lines: Vec<&str> = text.lines().collect();
            for at in unsafe_blocks(&text) {
                if !documented(&lines, at) {
                    bad.push(format!("{}:{}", rel(&file), at + 1));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "`unsafe` blocks without a `// SAFETY:` comment:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_name() {
    assert!(has_unsafe("fn f() { unsafe { g() } }"));
    assert!(!has_unsafe("// unsafe in a comment\nfn unsafe_name() {}"));
    let text = "fn f() {\n    let x = 1;\n    unsafe { g() };\n}\n";
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(unsafe_blocks(text), vec![2]);
    assert!(!documented(&lines, 2), "an undocumented block passed");
    let text = "fn f() {\n    // SAFETY: g has no preconditions.\n    let x =\n        unsafe { g() };\n}\n";
    let lines: Vec<&str> = text.lines().collect();
    assert!(documented(&lines, 3), "a documented block failed");
    assert!(unsafe_blocks("unsafe fn f() {}\n#[unsafe(no_mangle)]\n").is_empty());
}
