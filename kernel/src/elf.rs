//! Loading a static ELF executable into a fresh address space, and the initial stack.
//!
//! Model (Linux `load_elf_binary` for a static program): each `PT_LOAD` segment becomes an
//! anonymous private mapping at its address (plus [`cowlab_elf::PIE_BASE`] for a static-PIE `ET_DYN`),
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
//! a bad file is `ENOEXEC` (the checks and the placement live in the host-tested `cowlab-elf`).
#![deny(unsafe_code)]

use alloc::vec::Vec;

use cowlab_mm::{copy_to_user, AddressSpace, MapFlags, Prot, VirtAddr};

use crate::errno::Errno;
use crate::heap;
use crate::memory;
use crate::proc::args::ArgStrings;

/// The top of the user stack.
pub const STACK_TOP: u64 = 0x7fff_ff00_0000;
/// What the stack VMA covers at exec (Linux's `stack_expand`, 128 KiB); the rest grows on
/// demand, the argument strings included if they need more.
pub const STACK_INITIAL: u64 = 128 * 1024;

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

/// What the loader learnt, for the stack and the process.
pub struct Loaded {
    pub entry: u64,
    pub stack_pointer: u64,
}

fn prot_of(flags: u32) -> Prot {
    let mut prot = Prot::NONE;
    if flags & cowlab_elf::PF_R != 0 {
        prot = prot | Prot::READ;
    }
    if flags & cowlab_elf::PF_W != 0 {
        prot = prot | Prot::WRITE;
    }
    if flags & cowlab_elf::PF_X != 0 {
        prot = prot | Prot::EXEC;
    }
    prot
}

const PAGE: u64 = cowlab_elf::PAGE;

/// A user-facing explanation of why a file is not a program cowlab can run.
fn not_exec_reason(why: cowlab_elf::NotExec) -> &'static str {
    use cowlab_elf::NotExec;
    match why {
        NotExec::Interp => "dynamically linked: build with -static (cowlab has no dynamic loader)",
        NotExec::Magic => "not a 64-bit ELF executable",
        NotExec::Machine => "not an x86_64 program",
        NotExec::Type => "not an executable ELF (a relocatable object or core file?)",
        NotExec::Entry | NotExec::Headers | NotExec::NoLoad | NotExec::Segment => {
            "a malformed ELF file (bad entry point, headers or segments)"
        }
    }
}

/// Loads `data` into the empty `aspace` and builds the stack; `argv`/`envp` are the strings.
/// The checks and the placement are `cowlab_elf::parse`'s (host-tested and fuzzed); this maps
/// and fills what it planned.
pub fn load(
    aspace: &mut AddressSpace,
    data: &[u8],
    argv: &ArgStrings,
    envp: &ArgStrings,
    execfn: &str,
) -> Result<Loaded, Errno> {
    load_as(aspace, data, argv, envp, execfn, &ExecIds::ROOT)
}

/// The ids the auxiliary vector tells the new program (`AT_UID`, `AT_EUID`, `AT_GID`,
/// `AT_EGID`) and `AT_SECURE` (Linux `bprm->secureexec`: a set-user-ID or set-group-ID exec
/// that changed the effective ids; the C library then ignores `LD_*`-style environment).
pub struct ExecIds {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    pub secure: bool,
}

impl ExecIds {
    pub const ROOT: ExecIds = ExecIds {
        uid: 0,
        euid: 0,
        gid: 0,
        egid: 0,
        secure: false,
    };
}

/// [`load`] for a program that runs with `ids`.
pub fn load_as(
    aspace: &mut AddressSpace,
    data: &[u8],
    argv: &ArgStrings,
    envp: &ArgStrings,
    execfn: &str,
    ids: &ExecIds,
) -> Result<Loaded, Errno> {
    let limits = cowlab_elf::Limits {
        user_end: cowlab_mm::aspace::USER_END,
        mmap_min: cowlab_mm::aspace::MMAP_MIN_ADDR,
    };
    let plan = cowlab_elf::parse(data, limits).map_err(|why| {
        // The console is where a first-time user looks when their program "does nothing": say
        // why in one line (the caller still gets Linux's ENOEXEC).
        warn!("exec {execfn}: {}", not_exec_reason(why));
        Errno::ENOEXEC
    })?;
    let mm = memory::mm();
    // Pass 1: map every page any segment touches (read-write for now), without overlaps, and
    // copy the file bytes (bss stays zero: fresh anonymous memory).
    for seg in &plan.segments {
        if seg.end > seg.map_from {
            aspace.mmap(
                mm,
                VirtAddr::new(seg.map_from),
                (seg.end - seg.map_from) as usize,
                Prot::RW,
                MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
            )?;
        }
        let bytes = &data[seg.file.clone()];
        if !bytes.is_empty() {
            copy_to_user(mm, aspace, VirtAddr::new(seg.vaddr), bytes).map_err(|_| Errno::ENOMEM)?;
        }
    }
    // Pass 2: final protections; a page shared by neighbours gets both permissions.
    for (i, seg) in plan.segments.iter().enumerate() {
        let prot = prot_of(seg.flags);
        aspace.mprotect(
            mm,
            VirtAddr::new(seg.start),
            (seg.end - seg.start) as usize,
            prot,
        )?;
        if i > 0 {
            let prev = &plan.segments[i - 1];
            if prev.end > seg.start {
                aspace.mprotect(
                    mm,
                    VirtAddr::new(seg.start),
                    (prev.end - seg.start) as usize,
                    prot | prot_of(prev.flags),
                )?;
            }
        }
    }
    aspace.set_brk_base(VirtAddr::new(plan.brk));

    aspace.set_stack_limit(crate::proc::rlimit::stack_vma_size());
    aspace.mmap(
        mm,
        VirtAddr::new(STACK_TOP - STACK_INITIAL),
        STACK_INITIAL as usize,
        Prot::RW,
        MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED | MapFlags::GROWSDOWN,
    )?;
    let auxv = [
        (AT_PHDR, plan.phdr_va),
        (AT_PHENT, plan.phentsize),
        (AT_PHNUM, plan.phnum),
        (AT_PAGESZ, PAGE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, plan.entry),
        (AT_UID, u64::from(ids.uid)),
        (AT_EUID, u64::from(ids.euid)),
        (AT_GID, u64::from(ids.gid)),
        (AT_EGID, u64::from(ids.egid)),
        (AT_SECURE, u64::from(ids.secure)),
        (AT_CLKTCK, 100),
    ];
    let stack_pointer = build_stack(aspace, argv, envp, execfn, &auxv)?;
    Ok(Loaded {
        entry: plan.entry,
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
    // Sized up front and fallibly: the strings may be megabytes on a small kernel heap.
    let mut strings: Vec<u8> = Vec::new();
    let strings_total = 16 + argv.bytes_len() + envp.bytes_len() + execfn.len() + 1;
    heap::try_reserve(&mut strings, strings_total)?;
    let mut random = [0u8; 16];
    crate::random::fill(&mut random);
    strings.extend_from_slice(&random);
    let mut offsets = Vec::new();
    heap::try_reserve(&mut offsets, argv.count() + envp.count() + 1)?;
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
    heap::try_reserve(
        &mut words,
        argv.count() + envp.count() + 2 * auxv.len() + 10,
    )?;
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
    let mut bytes = Vec::new();
    heap::try_reserve(&mut bytes, words.len() * 8)?;
    for w in &words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let mm = memory::mm();
    copy_to_user(mm, aspace, VirtAddr::new(sp), &bytes).map_err(|_| Errno::EFAULT)?;
    copy_to_user(mm, aspace, VirtAddr::new(strings_at), &strings).map_err(|_| Errno::EFAULT)?;
    // `offsets` ends with execfn's: the environment ends where it starts.
    let env_end = addr_of(argv.count() + envp.count());
    aspace.set_exec_layout(cowlab_mm::layout::ExecLayout {
        arg_start: strings_at + 16,
        arg_end: if envp.count() > 0 {
            addr_of(argv.count())
        } else {
            env_end
        },
        env_end,
        exe: Some(alloc::sync::Arc::from(
            crate::fs::program_path(execfn).as_str(),
        )),
    });
    Ok(sp)
}
