//! What a recovered fault looks like to the code that expected it: the exception and its details.
//!
//! The landing pad of a fixup receives the fault as two raw registers (see the parent module);
//! this turns them into a [`Fault`] that says which exception it was and decodes the page-fault
//! error code, so tests and (later) user-copy callers match on meaning, not on bits.
#![deny(unsafe_code)]

use core::fmt;

use crate::idt::vector;

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
    pub(super) fn from_registers(r10: u64, r11: u64) -> Fault {
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
