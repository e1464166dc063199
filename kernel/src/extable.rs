//! Exception fixups ("extable"): kernel code that may fault on purpose, and recovers.
//!
//! Some kernel accesses are expected to fault sometimes: probing an address, walking a possibly
//! corrupt frame-pointer chain, and (from the next issue on) copying from or to user memory. Linux
//! handles these with an exception table, and so do we: the few instructions allowed to fault are
//! written in assembly, and for each one an entry in the `cowlab_extable` link section records
//! "if the instruction at X faults, resume at Y". The page-fault and general-protection handlers
//! look the faulting RIP up here ([`search`]); on a hit they do not die but
//! [`fixup`] the trap frame and return, landing on Y with the fault described in two registers:
//!
//! * `r10` = the fault address (CR2 for a page fault, 0 for a #GP, which reports none),
//! * `r11` = `vector << 32 | error_code`.
//!
//! Both are caller-saved and not argument registers in the SysV ABI, so a fixup site that is an
//! `extern "C"` function may be clobbered there freely. The landing code stores them where its
//! Rust wrapper can read them back as a [`Fault`]. The user-copy routines will follow the same
//! pattern (a `rep movsb` with an entry whose landing pad returns the bytes left).
//!
//! Entries store offsets relative to themselves (like Linux's `.long 1b - .`), so the table needs
//! no relocations. The section is marked retained (`"aR"`) so that `--gc-sections` keeps it even
//! though nothing references it by name; the linker provides `__start_`/`__stop_` symbols.
//!
//! A fault that [`ExtableKind::Probe`] recovers is reported on the console and recorded (tests
//! check the record); [`ExtableKind::Quiet`] recovers silently, for paths that must not log.

use core::arch::global_asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::idt::{vector, TrapFrame};

/// What the exception handler does on a fault at a registered instruction, besides resuming.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum ExtableKind {
    /// Report on the console and record the fault (deliberate diagnostic probes).
    Probe = 0,
    /// Only resume; no console output (backtrace walking, and later user copies).
    Quiet = 1,
}

const KIND_PROBE: u32 = ExtableKind::Probe as u32;
const KIND_QUIET: u32 = ExtableKind::Quiet as u32;

/// One entry of the `cowlab_extable` section, as emitted by the assembly below.
#[repr(C)]
struct RawEntry {
    /// Faulting instruction, relative to the address of this field.
    insn: i32,
    /// Landing pad, relative to the address of this field.
    fixup: i32,
    kind: u32,
}

impl RawEntry {
    fn insn(&self) -> u64 {
        (&self.insn as *const i32 as u64).wrapping_add_signed(i64::from(self.insn))
    }

    fn fixup(&self) -> u64 {
        (&self.fixup as *const i32 as u64).wrapping_add_signed(i64::from(self.fixup))
    }

    fn kind(&self) -> ExtableKind {
        match self.kind {
            KIND_QUIET => ExtableKind::Quiet,
            _ => ExtableKind::Probe,
        }
    }
}

extern "C" {
    static __start_cowlab_extable: RawEntry;
    static __stop_cowlab_extable: RawEntry;
}

/// The whole exception table.
fn entries() -> &'static [RawEntry] {
    // SAFETY: the linker defines the two symbols around the `cowlab_extable` section, which holds
    // only `RawEntry` records (12 bytes, 4-aligned, emitted by the assembly in this file), and the
    // section is part of the loaded, read-only kernel image.
    unsafe {
        let start = &raw const __start_cowlab_extable;
        let stop = &raw const __stop_cowlab_extable;
        let len = (stop as usize - start as usize) / core::mem::size_of::<RawEntry>();
        core::slice::from_raw_parts(start, len)
    }
}

/// Number of entries in the exception table (a boot-time sanity check: it must not be empty).
pub fn len() -> usize {
    entries().len()
}

/// Where to resume after a fault at a registered instruction.
#[derive(Clone, Copy, Debug)]
pub struct Fixup {
    pub landing: u64,
    pub kind: ExtableKind,
}

/// Finds the fixup registered for the instruction at `rip`, if any. Linear: the table holds a
/// handful of entries; sort it once it grows.
pub fn search(rip: u64) -> Option<Fixup> {
    entries()
        .iter()
        .find(|entry| entry.insn() == rip)
        .map(|entry| Fixup {
            landing: entry.fixup(),
            kind: entry.kind(),
        })
}

/// A fault that a fixup recovered from, as the landing pad hands it back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// `#PF`: the address from CR2 and the error code.
    Page { addr: u64, error: PageFaultError },
    /// `#GP`, e.g. a non-canonical address; the hardware reports no address, only an error code
    /// (0 unless a segment selector was at fault).
    GeneralProtection { error_code: u64 },
}

impl Fault {
    /// Decodes the two fixup registers (see the module doc).
    fn from_registers(r10: u64, r11: u64) -> Fault {
        let vector_number = (r11 >> 32) as u8;
        let error_code = r11 & 0xffff_ffff;
        if vector_number == vector::PAGE_FAULT {
            Fault::Page {
                addr: r10,
                error: PageFaultError(error_code),
            }
        } else {
            Fault::GeneralProtection { error_code }
        }
    }
}

impl Fault {
    /// The exception's name, as in "recovered page fault".
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Page { .. } => "page fault",
            Fault::GeneralProtection { .. } => "general protection fault",
        }
    }
}

impl fmt::Display for Fault {
    /// The details after the name: `cr2=0x... err=0x2 [!P W !U !I]` or `err=0x0`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Fault::Page { addr, error } => write!(f, "cr2={addr:#x} err={error}"),
            Fault::GeneralProtection { error_code } => write!(f, "err={error_code:#x}"),
        }
    }
}

/// The page-fault error code pushed by the CPU, with its bits decoded for people.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageFaultError(pub u64);

impl PageFaultError {
    /// P: the page was present (a protection violation), else not present.
    pub const PRESENT: u64 = 1 << 0;
    /// W: the access was a write, else a read.
    pub const WRITE: u64 = 1 << 1;
    /// U: the access came from ring 3.
    pub const USER: u64 = 1 << 2;
    /// RSVD: a reserved bit was set in a paging entry.
    pub const RESERVED: u64 = 1 << 3;
    /// I: the access was an instruction fetch.
    pub const INSTRUCTION: u64 = 1 << 4;

    pub fn contains(self, bit: u64) -> bool {
        self.0 & bit != 0
    }
}

impl fmt::Display for PageFaultError {
    /// `0x2 [!P W !U !I]`: each of the four architecturally interesting bits, set or `!`cleared.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let bit = |mask, name| if self.contains(mask) { name } else { "" };
        let not = |mask| if self.contains(mask) { "" } else { "!" };
        write!(
            f,
            "{:#x} [{}P {}W {}U {}I{}]",
            self.0,
            not(Self::PRESENT),
            not(Self::WRITE),
            not(Self::USER),
            not(Self::INSTRUCTION),
            bit(Self::RESERVED, " RSVD"),
        )
    }
}

static RECOVERED: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_ADDR: AtomicU64 = AtomicU64::new(0);
static LAST_CODE: AtomicU64 = AtomicU64::new(0);

/// The last fault a [`ExtableKind::Probe`] fixup recovered, and where.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecoveredFault {
    pub rip: u64,
    pub fault: Fault,
}

/// How many faults `Probe` fixups have recovered since boot.
pub fn recovered_count() -> u64 {
    RECOVERED.load(Ordering::SeqCst)
}

/// The most recent fault recovered by a `Probe` fixup.
pub fn last_recovered() -> Option<RecoveredFault> {
    if recovered_count() == 0 {
        return None;
    }
    let fault = Fault::from_registers(
        LAST_ADDR.load(Ordering::SeqCst),
        LAST_CODE.load(Ordering::SeqCst),
    );
    Some(RecoveredFault {
        rip: LAST_RIP.load(Ordering::SeqCst),
        fault,
    })
}

/// Redirects `frame` to `fixup`'s landing pad with the fault described in r10/r11.
///
/// Called by the #PF and #GP handlers after [`search`] found an entry; `addr` is CR2 for a page
/// fault and 0 otherwise.
pub fn fixup(frame: &mut TrapFrame, fixup: Fixup, addr: u64) {
    let code = (frame.vector << 32) | (frame.error_code & 0xffff_ffff);
    if fixup.kind == ExtableKind::Probe {
        LAST_RIP.store(frame.rip, Ordering::SeqCst);
        LAST_ADDR.store(addr, Ordering::SeqCst);
        LAST_CODE.store(code, Ordering::SeqCst);
        RECOVERED.fetch_add(1, Ordering::SeqCst);
        let fault = Fault::from_registers(addr, code);
        info!("recovered {} at rip={:#x} {fault}", fault.name(), frame.rip);
    }
    frame.r10 = addr;
    frame.r11 = code;
    frame.rip = fixup.landing;
}

/// What a landing pad stores: the two fixup registers.
#[repr(C)]
#[derive(Default)]
struct RawFault {
    r10: u64,
    r11: u64,
}

// The fixup sites. Each function returns 0 on success and 1 after a fault, having stored r10/r11
// through its `fault` argument. SysV: arguments in rdi, rsi, rdx; result in rax.
global_asm!(
    // Registers one faulting instruction `\insn` with landing pad `\fixup`.
    ".macro extable_entry insn, fixup, kind",
    ".pushsection cowlab_extable, \"aR\"",
    ".balign 4",
    ".long \\insn - .",
    ".long \\fixup - .",
    ".long \\kind",
    ".popsection",
    ".endm",
    "",
    // The common landing pad: store r10/r11 through rdx, return 1.
    ".pushsection .text.cowlab_extable_fixups, \"ax\"",
    "cowlab_fixup_store_rdx:",
    "    mov [rdx], r10",
    "    mov [rdx + 8], r11",
    "    mov eax, 1",
    "    ret",
    "",
    // u64 cowlab_probe_read_u8(const u8 *addr, u64 *out, RawFault *fault)
    ".global cowlab_probe_read_u8",
    "cowlab_probe_read_u8:",
    "1:  movzx eax, byte ptr [rdi]",
    "    mov [rsi], rax",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {probe}",
    "",
    // u64 cowlab_probe_write_u8(u8 *addr, u64 value, RawFault *fault)
    ".global cowlab_probe_write_u8",
    "cowlab_probe_write_u8:",
    "1:  mov byte ptr [rdi], sil",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {probe}",
    "",
    // u64 cowlab_read_u64_quiet(const u64 *addr, u64 *out, RawFault *fault)
    ".global cowlab_read_u64_quiet",
    "cowlab_read_u64_quiet:",
    "1:  mov rax, [rdi]",
    "    mov [rsi], rax",
    "    xor eax, eax",
    "    ret",
    "    extable_entry 1b, cowlab_fixup_store_rdx, {quiet}",
    ".popsection",
    probe = const KIND_PROBE,
    quiet = const KIND_QUIET,
);

extern "C" {
    fn cowlab_probe_read_u8(addr: *const u8, out: *mut u64, fault: *mut RawFault) -> u64;
    fn cowlab_probe_write_u8(addr: *mut u8, value: u64, fault: *mut RawFault) -> u64;
    fn cowlab_read_u64_quiet(addr: *const u64, out: *mut u64, fault: *mut RawFault) -> u64;
}

/// Reads the byte at `addr`, or reports how that faulted. Any address is allowed: unmapped,
/// non-canonical, user. The fault is printed and recorded ([`last_recovered`]).
pub fn probe_read_u8(addr: u64) -> Result<u8, Fault> {
    let mut value = 0;
    let mut fault = RawFault::default();
    // SAFETY: the function reads one byte at `addr`, and its only possibly faulting instruction
    // is registered in the exception table, so a bad address comes back as an error; the out
    // pointers are valid locals.
    let status = unsafe { cowlab_probe_read_u8(addr as *const u8, &mut value, &mut fault) };
    match status {
        0 => Ok(value as u8),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}

/// Writes `value` to the byte at `addr`, or reports how that faulted.
///
/// # Safety
///
/// If `addr` is mapped writable, the byte there is overwritten: the caller must own it (the
/// probe only protects against addresses that fault).
pub unsafe fn probe_write_u8(addr: u64, value: u8) -> Result<(), Fault> {
    let mut fault = RawFault::default();
    // SAFETY: the caller owns the byte if it is mapped; a fault at the one registered instruction
    // comes back as an error; `fault` is a valid local.
    let status = unsafe { cowlab_probe_write_u8(addr as *mut u8, u64::from(value), &mut fault) };
    match status {
        0 => Ok(()),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}

/// Reads the u64 at `addr` without any console output on a fault (for the backtrace walker).
pub fn read_u64_quiet(addr: u64) -> Result<u64, Fault> {
    let mut value = 0;
    let mut fault = RawFault::default();
    // SAFETY: as for `probe_read_u8`: one read at a registered instruction, valid out pointers.
    let status = unsafe { cowlab_read_u64_quiet(addr as *const u64, &mut value, &mut fault) };
    match status {
        0 => Ok(value),
        _ => Err(Fault::from_registers(fault.r10, fault.r11)),
    }
}
