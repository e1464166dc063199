//! Parsing a static x86_64 ELF executable into a load plan (Linux `load_elf_binary`'s checks
//! for a static program), apart from the kernel so that the host can test and fuzz it: the
//! kernel (`kernel/src/elf.rs`) maps and fills what the plan says.
//!
//! Nothing here trusts the file: every offset, size and address is checked with checked
//! arithmetic, and anything wrong is [`NotExec`] (the kernel's `ENOEXEC`). A plan's
//! guarantees, which the host fuzzer asserts: the entry lies below `user_end`; every segment's
//! page range is page aligned, non-decreasing, inside `[mmap_min, user_end)`; its file bytes
//! lie inside the file and inside its pages; the ranges to map (`map_from..end`) never overlap.
#![no_std]

extern crate alloc;

use alloc::vec::Vec;
use core::ops::Range;

/// Where a static-PIE (`ET_DYN`) program is loaded (Linux's `ELF_ET_DYN_BASE`-like choice).
pub const PIE_BASE: u64 = 0x5555_5555_4000;
pub const PAGE: u64 = 4096;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// Why a file is not a program this kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotExec {
    /// Not a little-endian 64-bit ELF.
    Magic,
    /// Not x86_64.
    Machine,
    /// Neither `ET_EXEC` nor `ET_DYN`.
    Type,
    /// The entry point is not a user address.
    Entry,
    /// The program headers are missing, too many, or outside the file.
    Headers,
    /// Dynamically linked (`PT_INTERP`): no loader here.
    Interp,
    /// No `PT_LOAD` segment.
    NoLoad,
    /// A segment's sizes, offsets or addresses are impossible.
    Segment,
}

/// Where the user address space ends and the lowest address a program may map.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub user_end: u64,
    pub mmap_min: u64,
}

/// One `PT_LOAD` segment, placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Its pages: `[start, end)`, page aligned.
    pub start: u64,
    pub end: u64,
    /// What is not yet mapped by an earlier segment: map `[map_from, end)` (empty if
    /// `map_from >= end`).
    pub map_from: u64,
    /// Where its first byte goes.
    pub vaddr: u64,
    /// Its bytes in the file (the rest up to its memory size is bss).
    pub file: Range<usize>,
    /// `PF_*`.
    pub flags: u32,
}

/// What to load and the auxiliary-vector facts.
#[derive(Clone, Debug)]
pub struct Plan {
    pub entry: u64,
    /// 0 for `ET_EXEC`, [`PIE_BASE`] for `ET_DYN`.
    pub base: u64,
    /// `AT_PHDR`: where the program headers are in memory (0 if not loaded).
    pub phdr_va: u64,
    pub phentsize: u64,
    pub phnum: u64,
    /// Sorted by address.
    pub segments: Vec<Segment>,
    /// The end of the highest segment: where the heap starts.
    pub brk: u64,
}

#[derive(Clone, Copy)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], NotExec> {
    let end = at.checked_add(N).ok_or(NotExec::Headers)?;
    let slice = data.get(at..end).ok_or(NotExec::Headers)?;
    slice.try_into().map_err(|_| NotExec::Headers)
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, NotExec> {
    bytes(data, at).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, NotExec> {
    bytes(data, at).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, NotExec> {
    bytes(data, at).map(u64::from_le_bytes)
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(page_down)
}

/// Checks `data` and plans its loading.
pub fn parse(data: &[u8], limits: Limits) -> Result<Plan, NotExec> {
    if data.get(0..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(NotExec::Magic);
    }
    let e_type = u16_at(data, 16)?;
    if u16_at(data, 18)? != 62 {
        return Err(NotExec::Machine);
    }
    let base = match e_type {
        2 => 0,
        3 => PIE_BASE,
        _ => return Err(NotExec::Type),
    };
    let entry = u64_at(data, 24)?.checked_add(base).ok_or(NotExec::Entry)?;
    // A kernel or non-canonical entry would make the return to ring 3 fault in the kernel.
    if entry >= limits.user_end {
        return Err(NotExec::Entry);
    }
    let phoff = usize::try_from(u64_at(data, 32)?).map_err(|_| NotExec::Headers)?;
    let phentsize = u16_at(data, 54)? as usize;
    let phnum = u16_at(data, 56)? as usize;
    if phentsize < 56 || phnum == 0 || phnum > 64 {
        return Err(NotExec::Headers);
    }
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let at = phoff.checked_add(i * phentsize).ok_or(NotExec::Headers)?;
        phdrs.push(Phdr {
            kind: u32_at(data, at)?,
            flags: u32_at(data, at + 4)?,
            offset: u64_at(data, at + 8)?,
            vaddr: u64_at(data, at + 16)?,
            filesz: u64_at(data, at + 32)?,
            memsz: u64_at(data, at + 40)?,
        });
    }
    if phdrs.iter().any(|p| p.kind == PT_INTERP) {
        return Err(NotExec::Interp);
    }
    let mut loads: Vec<Phdr> = phdrs
        .iter()
        .copied()
        .filter(|p| p.kind == PT_LOAD)
        .collect();
    loads.sort_by_key(|p| p.vaddr);
    if loads.is_empty() {
        return Err(NotExec::NoLoad);
    }
    let mut segments = Vec::new();
    let mut mapped_end = 0u64;
    for p in &loads {
        let end_in_file = p.offset.checked_add(p.filesz).ok_or(NotExec::Segment)?;
        if p.filesz > p.memsz || end_in_file > data.len() as u64 {
            return Err(NotExec::Segment);
        }
        let vaddr = base.checked_add(p.vaddr).ok_or(NotExec::Segment)?;
        let end_va = vaddr.checked_add(p.memsz).ok_or(NotExec::Segment)?;
        let start = page_down(vaddr);
        let end = page_up(end_va).ok_or(NotExec::Segment)?;
        if end > limits.user_end || start < limits.mmap_min {
            return Err(NotExec::Segment);
        }
        segments.push(Segment {
            start,
            end,
            map_from: start.max(mapped_end),
            vaddr,
            file: p.offset as usize..end_in_file as usize,
            flags: p.flags,
        });
        mapped_end = mapped_end.max(end);
    }
    // AT_PHDR: PT_PHDR if present, else where the load segment holding the headers maps them.
    let phoff = phoff as u64;
    let phdr_va = match phdrs.iter().find(|p| p.kind == PT_PHDR) {
        Some(p) => base.wrapping_add(p.vaddr),
        None => loads
            .iter()
            .find(|p| p.offset <= phoff && phoff < p.offset.saturating_add(p.filesz))
            .map_or(0, |p| {
                base.wrapping_add(p.vaddr).wrapping_add(phoff - p.offset)
            }),
    };
    Ok(Plan {
        entry,
        base,
        phdr_va,
        phentsize: phentsize as u64,
        phnum: phnum as u64,
        segments,
        brk: mapped_end,
    })
}
