//! Backtrace symbolization: `bt #<n> 0x<addr>` lines of the kernel get ` <function> at
//! <file>:<line>` appended, looked up in the full kernel ELF's DWARF (the `addr2line` crate).
//!
//! The kernel is loaded at a fixed address (`docs/architecture.md`): a position-independent
//! kernel is linked at 0 and loaded at `KERNEL_BASE`, so we subtract that from the addresses it
//! prints (see [`crate::elf::kernel_load_offset`]). Frame `#0` of an exception is the faulting RIP;
//! every later frame is a return address, which points just past its `call`: we look up `addr - 1`
//! for those so the line is the call's, not the next statement's.

use std::collections::HashMap;
use std::path::Path;

use crate::{elf, workspace_root};

/// Looks up kernel addresses; caches every answer.
pub struct Symbolizer {
    /// `None` if the ELF could not be read (then lines stay as they are).
    loader: Option<addr2line::Loader>,
    load_offset: u64,
    cache: HashMap<u64, Option<String>>,
}

impl Symbolizer {
    /// A symbolizer over `elf` (the unstripped kernel). If the ELF cannot be read it leaves every
    /// line as it is, after saying so once.
    pub fn new(elf_path: &Path) -> Self {
        let opened = std::fs::read(elf_path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| elf::kernel_load_offset(&bytes).map_err(|e| e.to_string()))
            .and_then(|offset| {
                let loader = addr2line::Loader::new(elf_path).map_err(|e| e.to_string())?;
                Ok((loader, offset))
            });
        let (loader, load_offset) = match opened {
            Ok((loader, offset)) => (Some(loader), offset),
            Err(error) => {
                eprintln!(
                    "xtask: backtraces stay unsymbolized: cannot read {}: {error}",
                    elf_path.display()
                );
                (None, 0)
            }
        };
        Self {
            loader,
            load_offset,
            cache: HashMap::new(),
        }
    }

    /// `line` with the location of its backtrace address appended, or `None` if it is not a
    /// backtrace line or the address is unknown.
    pub fn annotate(&mut self, line: &str) -> Option<String> {
        let (frame, addr) = parse_bt(line)?;
        let addr = if frame == 0 {
            addr
        } else {
            addr.checked_sub(1)?
        };
        let location = self.lookup(addr)?;
        Some(format!("{line} {location}"))
    }

    /// `annotate`, falling back to the line itself.
    pub fn line(&mut self, line: &str) -> String {
        self.annotate(line).unwrap_or_else(|| line.to_owned())
    }

    /// `<function> at <file>:<line>` for a kernel address (cached).
    pub fn lookup(&mut self, addr: u64) -> Option<String> {
        if let Some(known) = self.cache.get(&addr) {
            return known.clone();
        }
        let answer = self.resolve(addr);
        self.cache.insert(addr, answer.clone());
        answer
    }

    /// `<function> at <file>:<line>` for the innermost (possibly inlined) function at `addr`,
    /// from DWARF, else the symbol table's name alone.
    fn resolve(&self, addr: u64) -> Option<String> {
        let loader = self.loader.as_ref()?;
        let probe = addr.checked_sub(self.load_offset)?;
        let mut function = None;
        let mut location = None;
        if let Ok(mut frames) = loader.find_frames(probe) {
            if let Ok(Some(frame)) = frames.next() {
                function = frame
                    .function
                    .as_ref()
                    .and_then(|f| f.demangle().ok())
                    .map(|name| name.into_owned());
                location = frame.location.and_then(|l| {
                    Some(format!("{}:{}", shorten_path(l.file?), l.line.unwrap_or(0)))
                });
            }
        }
        let function = function.or_else(|| {
            let raw = loader.find_symbol(probe)?;
            Some(addr2line::demangle_auto(raw.into(), None).into_owned())
        })?;
        Some(match location {
            Some(location) => format!("{function} at {location}"),
            None => function,
        })
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
fn shorten_path(file: &str) -> String {
    let root = workspace_root();
    Path::new(file)
        .strip_prefix(root)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.to_owned())
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
    fn unreadable_elf_leaves_lines_alone() {
        let mut symbolizer = Symbolizer::new(Path::new("/nonexistent/kernel"));
        assert_eq!(symbolizer.line("bt #0 0x1000"), "bt #0 0x1000");
        assert_eq!(symbolizer.line("hello"), "hello");
    }
}
