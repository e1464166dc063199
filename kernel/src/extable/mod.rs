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

mod fault;
mod probe;

pub use fault::{Fault, PageFaultError};
pub use probe::{
    cowlab_user_copy, cowlab_user_copy_nofault, in_nofault_copy, probe_read_u8, probe_write_u8,
    read_u64_quiet,
};

use core::sync::atomic::{AtomicU64, Ordering};

use crate::idt::TrapFrame;

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
