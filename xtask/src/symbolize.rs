//! Backtrace symbolization: `bt #<n> 0x<addr>` lines of the kernel get ` <function> at
//! <file>:<line>` appended, looked up in the full kernel ELF with `llvm-addr2line`.
//!
//! The kernel is loaded at its fixed link address (`docs/architecture.md`), so the addresses it
//! prints are the ELF's. Frame `#0` is the address where the trace starts (the faulting RIP or the
//! caller of the backtrace function); every later frame is a return address, which points just
//! past its `call`: we look up `addr - 1` for those so the line is the call's, not the next
//! statement's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// Looks up kernel addresses; caches every answer.
pub struct Symbolizer {
    addr2line: Option<PathBuf>,
    elf: PathBuf,
    cache: HashMap<u64, Option<String>>,
}

impl Symbolizer {
    /// A symbolizer over `elf` (the unstripped kernel). Without `llvm-addr2line` it leaves every
    /// line as it is, after saying so once.
    pub fn new(elf: &Path) -> Self {
        let addr2line = match cowlab_boot::strip::llvm_tool("llvm-addr2line") {
            Ok(path) => Some(path),
            Err(error) => {
                eprintln!("xtask: backtraces stay unsymbolized: {error:#}");
                None
            }
        };
        Self {
            addr2line,
            elf: elf.to_owned(),
            cache: HashMap::new(),
        }
    }

    /// `line` with the location of its backtrace address appended, or `None` if it is not a
    /// backtrace line or the address is unknown.
    pub fn annotate(&mut self, line: &str) -> Option<String> {
        let (frame, addr) = parse_bt(line)?;
        let lookup = if frame == 0 {
            addr
        } else {
            addr.checked_sub(1)?
        };
        let location = self.lookup(lookup)?;
        Some(format!("{line} {location}"))
    }

    /// `annotate`, falling back to the line itself.
    pub fn line(&mut self, line: &str) -> String {
        self.annotate(line).unwrap_or_else(|| line.to_owned())
    }

    fn lookup(&mut self, addr: u64) -> Option<String> {
        if let Some(known) = self.cache.get(&addr) {
            return known.clone();
        }
        let answer = self.run_addr2line(addr);
        self.cache.insert(addr, answer.clone());
        answer
    }

    fn run_addr2line(&self, addr: u64) -> Option<String> {
        let tool = self.addr2line.as_ref()?;
        let output = Command::new(tool)
            .args(["--functions", "--demangle", "--pretty-print", "-e"])
            .arg(&self.elf)
            .arg(format!("{addr:#x}"))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let first = text.lines().next()?.trim();
        // llvm-addr2line answers "?? at ??:0" for an address it does not know.
        if first.is_empty() || first.starts_with("??") {
            return None;
        }
        Some(shorten_paths(first))
    }
}

/// Frame number and address of a line containing `bt #<n> 0x<hex>`.
pub fn parse_bt(line: &str) -> Option<(u32, u64)> {
    let rest = &line[line.find("bt #")? + 4..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let frame = rest[..digits].parse().ok()?;
    let rest = rest[digits..].trim_start().strip_prefix("0x")?;
    let hex = rest
        .find(|c: char| !c.is_ascii_hexdigit())
        .unwrap_or(rest.len());
    let addr = u64::from_str_radix(&rest[..hex], 16).ok()?;
    Some((frame, addr))
}

/// Paths inside the workspace are printed relative to it.
fn shorten_paths(location: &str) -> String {
    let root = format!("{}/", workspace_root().display());
    location.replace(&root, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backtrace_lines() {
        assert_eq!(
            parse_bt("bt #0 0xffffffff80012345"),
            Some((0, 0xffff_ffff_8001_2345))
        );
        assert_eq!(
            parse_bt("[  0.123456] ERROR   bt #12 0xFFFFFFFF80000010 (rbp 0x1)"),
            Some((12, 0xffff_ffff_8000_0010))
        );
        assert_eq!(parse_bt("bt #x 0x10"), None);
        assert_eq!(parse_bt("bt #1 10"), None);
        assert_eq!(parse_bt("KTEST RUN 0 frame_alloc"), None);
    }

    #[test]
    fn unknown_tool_leaves_lines_alone() {
        let mut symbolizer = Symbolizer {
            addr2line: None,
            elf: PathBuf::from("/nonexistent"),
            cache: HashMap::new(),
        };
        assert_eq!(symbolizer.line("bt #0 0x1000"), "bt #0 0x1000");
        assert_eq!(symbolizer.line("hello"), "hello");
    }
}
