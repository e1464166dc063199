//! Loading a static ELF executable into a fresh address space, and the initial stack.
//!
//! Model (Linux `load_elf_binary` for a static program): each `PT_LOAD` segment becomes an
//! anonymous private mapping at its address (plus [`PIE_BASE`] for a static-PIE `ET_DYN`),
//! mapped read-write, filled through `cowlab_mm::copy_to_user` (the memory manager's own path
//! through the new page tables: the image is never copied into kernel memory as a whole), then
//! given its final protection with `mprotect`. The rest up to `p_memsz` is bss and reads as
//! zeros because the mapping is anonymous. Segments that share a page get the union of their
//! permissions on that page. The heap (brk) starts after the highest segment. The stack is a
//! grows-down mapping of [`STACK_INITIAL`] below [`STACK_TOP`] that grows on faults up to the
//! stack limit (`RLIMIT_STACK`, `proc::rlimit::stack_vma_size`), keeping the memory manager's
//! 1 MiB guard gap (`cowlab_mm::stack`) from other mappings, and holds, from its
//! lowest address up: argc, argv pointers, NULL, envp pointers, NULL, the auxiliary vector, then
//! the 16 AT_RANDOM bytes and the strings, as the System V ABI and Linux lay it out; RSP is
//! 16-byte aligned at argc. Nothing here trusts the file: every offset and size is checked, and
//! a bad file is `ENOEXEC`.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use cowlab_mm::{copy_to_user, AddressSpace, MapFlags, Prot, VirtAddr};

use crate::errno::Errno;
use crate::memory;
use crate::proc::args::ArgStrings;

/// Where a static-PIE (`ET_DYN`) program is loaded (Linux's `ELF_ET_DYN_BASE`-like choice).
pub const PIE_BASE: u64 = 0x5555_5555_4000;
/// The top of the user stack.
pub const STACK_TOP: u64 = 0x7fff_ff00_0000;
/// What the stack VMA covers at exec (Linux's `stack_expand`, 128 KiB); the rest grows on
/// demand, the argument strings included if they need more.
pub const STACK_INITIAL: u64 = 128 * 1024;

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

pub const AT_NULL: u64 = 0;
pub const AT_PHDR: u64 = 3;
pub const AT_PHENT: u64 = 4;
pub const AT_PHNUM: u64 = 5;
pub const AT_PAGESZ: u64 = 6;
pub const AT_BASE: u64 = 7;
pub const AT_FLAGS: u64 = 8;
pub const AT_ENTRY: u64 = 9;
pub const AT_UID: u64 = 11;
pub const AT_EUID: u64 = 12;
pub const AT_GID: u64 = 13;
pub const AT_EGID: u64 = 14;
pub const AT_CLKTCK: u64 = 17;
pub const AT_SECURE: u64 = 23;
pub const AT_RANDOM: u64 = 25;
pub const AT_EXECFN: u64 = 31;

/// One program header, the fields we use.
#[derive(Clone, Copy, Debug)]
struct Phdr {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

/// What the loader learnt, for the stack and the process.
pub struct Loaded {
    pub entry: u64,
    pub stack_pointer: u64,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, Errno> {
    let end = at.checked_add(2).ok_or(Errno::ENOEXEC)?;
    let bytes = data.get(at..end).ok_or(Errno::ENOEXEC)?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, Errno> {
    let end = at.checked_add(4).ok_or(Errno::ENOEXEC)?;
    let bytes = data.get(at..end).ok_or(Errno::ENOEXEC)?;
    Ok(u32::from_le_bytes(
        bytes.try_into().map_err(|_| Errno::ENOEXEC)?,
    ))
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, Errno> {
    let end = at.checked_add(8).ok_or(Errno::ENOEXEC)?;
    let bytes = data.get(at..end).ok_or(Errno::ENOEXEC)?;
    Ok(u64::from_le_bytes(
        bytes.try_into().map_err(|_| Errno::ENOEXEC)?,
    ))
}

fn prot_of(flags: u32) -> Prot {
    let mut prot = Prot::NONE;
    if flags & PF_R != 0 {
        prot = prot | Prot::READ;
    }
    if flags & PF_W != 0 {
        prot = prot | Prot::WRITE;
    }
    if flags & PF_X != 0 {
        prot = prot | Prot::EXEC;
    }
    prot
}

const PAGE: u64 = 4096;

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(page_down)
}

/// Loads `data` into the empty `aspace` and builds the stack; `argv`/`envp` are the strings.
pub fn load(
    aspace: &mut AddressSpace,
    data: &[u8],
    argv: &ArgStrings,
    envp: &ArgStrings,
    execfn: &str,
) -> Result<Loaded, Errno> {
    if data.get(0..4) != Some(b"\x7fELF") || data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(Errno::ENOEXEC);
    }
    let e_type = u16_at(data, 16)?;
    let machine = u16_at(data, 18)?;
    if machine != 62 {
        return Err(Errno::ENOEXEC);
    }
    let base = match e_type {
        2 => 0,
        3 => PIE_BASE,
        _ => return Err(Errno::ENOEXEC),
    };
    let entry = u64_at(data, 24)?.checked_add(base).ok_or(Errno::ENOEXEC)?;
    // A kernel or non-canonical entry would make the return to ring 3 fault in the kernel.
    if entry >= cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOEXEC);
    }
    let phoff = u64_at(data, 32)? as usize;
    let phentsize = u16_at(data, 54)? as usize;
    let phnum = u16_at(data, 56)? as usize;
    if phentsize < 56 || phnum == 0 || phnum > 64 {
        return Err(Errno::ENOEXEC);
    }
    let mut phdrs = Vec::new();
    for i in 0..phnum {
        let at = phoff.checked_add(i * phentsize).ok_or(Errno::ENOEXEC)?;
        if at > data.len() {
            return Err(Errno::ENOEXEC);
        }
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
        // Dynamically linked: no loader here.
        return Err(Errno::ENOEXEC);
    }
    let mm = memory::mm();
    let mut loads: Vec<Phdr> = phdrs
        .iter()
        .copied()
        .filter(|p| p.kind == PT_LOAD)
        .collect();
    loads.sort_by_key(|p| p.vaddr);
    if loads.is_empty() {
        return Err(Errno::ENOEXEC);
    }
    // Pass 1: map every page any segment touches (read-write for now), without overlaps.
    let mut ranges = Vec::new();
    let mut mapped_end = 0u64;
    for p in &loads {
        let end_in_file = p.offset.checked_add(p.filesz).ok_or(Errno::ENOEXEC)?;
        if p.filesz > p.memsz || end_in_file > data.len() as u64 {
            return Err(Errno::ENOEXEC);
        }
        let start_va = base.checked_add(p.vaddr).ok_or(Errno::ENOEXEC)?;
        let end_va = start_va.checked_add(p.memsz).ok_or(Errno::ENOEXEC)?;
        let start = page_down(start_va);
        let end = page_up(end_va).ok_or(Errno::ENOEXEC)?;
        if end > cowlab_mm::aspace::USER_END || start < cowlab_mm::aspace::MMAP_MIN_ADDR {
            return Err(Errno::ENOEXEC);
        }
        let from = start.max(mapped_end);
        if end > from {
            aspace.mmap(
                mm,
                VirtAddr::new(from),
                (end - from) as usize,
                Prot::RW,
                MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
            )?;
        }
        mapped_end = mapped_end.max(end);
        ranges.push((start, end, prot_of(p.flags)));
        // Pass 2 inline: the file bytes (bss stays zero: fresh anonymous memory).
        let bytes = &data[p.offset as usize..end_in_file as usize];
        if !bytes.is_empty() {
            copy_to_user(mm, aspace, VirtAddr::new(start_va), bytes).map_err(|_| Errno::ENOMEM)?;
        }
    }
    // Pass 3: final protections; a page shared by neighbours gets both permissions.
    for (i, &(start, end, prot)) in ranges.iter().enumerate() {
        aspace.mprotect(mm, VirtAddr::new(start), (end - start) as usize, prot)?;
        if i > 0 {
            let (_, prev_end, prev_prot) = ranges[i - 1];
            if prev_end > start {
                aspace.mprotect(
                    mm,
                    VirtAddr::new(start),
                    (prev_end - start) as usize,
                    prot | prev_prot,
                )?;
            }
        }
    }
    aspace.set_brk_base(VirtAddr::new(mapped_end));

    // AT_PHDR: PT_PHDR if present, else where the load segment holding the headers maps them.
    let phdr_va = match phdrs.iter().find(|p| p.kind == PT_PHDR) {
        Some(p) => base.wrapping_add(p.vaddr),
        None => loads
            .iter()
            .find(|p| {
                p.offset <= phoff as u64 && (phoff as u64) < p.offset.saturating_add(p.filesz)
            })
            .map_or(0, |p| {
                base.wrapping_add(p.vaddr)
                    .wrapping_add(phoff as u64 - p.offset)
            }),
    };

    aspace.set_stack_limit(crate::proc::rlimit::stack_vma_size());
    aspace.mmap(
        mm,
        VirtAddr::new(STACK_TOP - STACK_INITIAL),
        STACK_INITIAL as usize,
        Prot::RW,
        MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED | MapFlags::GROWSDOWN,
    )?;
    let auxv = [
        (AT_PHDR, phdr_va),
        (AT_PHENT, phentsize as u64),
        (AT_PHNUM, phnum as u64),
        (AT_PAGESZ, PAGE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, entry),
        (AT_UID, 0),
        (AT_EUID, 0),
        (AT_GID, 0),
        (AT_EGID, 0),
        (AT_SECURE, 0),
        (AT_CLKTCK, 100),
    ];
    let stack_pointer = build_stack(aspace, argv, envp, execfn, &auxv)?;
    Ok(Loaded {
        entry,
        stack_pointer,
    })
}

/// Writes the initial stack below [`STACK_TOP`]; returns RSP (pointing at argc).
fn build_stack(
    aspace: &mut AddressSpace,
    argv: &ArgStrings,
    envp: &ArgStrings,
    execfn: &str,
    auxv: &[(u64, u64)],
) -> Result<u64, Errno> {
    // The string area, built downwards from the top: random bytes, then the strings.
    let mut strings: Vec<u8> = Vec::new();
    let mut random = [0u8; 16];
    crate::random::fill(&mut random);
    strings.extend_from_slice(&random);
    let mut offsets = Vec::new();
    for s in argv.iter().chain(envp.iter()).chain([execfn.as_bytes()]) {
        offsets.push(strings.len());
        strings.extend_from_slice(s);
        strings.push(0);
    }
    let strings_len = strings.len() as u64;
    // execve's `copy_strings` held argv and envp, strings and pointers, to
    // `rlimit::arg_space_limit` (Linux `bprm_stack_limits`, the one place that rule lives); what
    // is left to check is that they, the path and the auxiliary vector fit the stack mapping,
    // which `stack_vma_size` makes larger than the argument space (the kernel's own strings for
    // init never come near it).
    let words_len = 8 * (argv.count() + envp.count() + 2 * auxv.len() + 10) as u64;
    if strings_len + words_len + 32 > crate::proc::rlimit::stack_vma_size() {
        return Err(Errno::E2BIG);
    }
    let strings_at = (STACK_TOP - 16 - strings_len) & !15;
    let addr_of = |i: usize| strings_at + offsets[i] as u64;
    let mut words: Vec<u64> = Vec::new();
    words.push(argv.count() as u64);
    for i in 0..argv.count() {
        words.push(addr_of(i));
    }
    words.push(0);
    for i in 0..envp.count() {
        words.push(addr_of(argv.count() + i));
    }
    words.push(0);
    for &(key, value) in auxv {
        words.push(key);
        words.push(value);
    }
    words.push(AT_RANDOM);
    words.push(strings_at);
    words.push(AT_EXECFN);
    words.push(addr_of(argv.count() + envp.count()));
    words.push(AT_NULL);
    words.push(0);
    let mut sp = strings_at - 8 * words.len() as u64;
    sp &= !15;
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in &words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let mm = memory::mm();
    copy_to_user(mm, aspace, VirtAddr::new(sp), &bytes).map_err(|_| Errno::EFAULT)?;
    copy_to_user(mm, aspace, VirtAddr::new(strings_at), &strings).map_err(|_| Errno::EFAULT)?;
    Ok(sp)
}
