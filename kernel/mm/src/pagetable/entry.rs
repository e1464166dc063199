//! The x86_64 page-table entry format (Intel SDM vol. 3, 4.5), the same at all four levels.
//!
//! A user leaf entry carries the real protection: `PRESENT|USER`, `WRITABLE` only when writes may
//! go straight to the page, `NO_EXECUTE` unless the mapping is executable. Intermediate entries
//! are `PRESENT|WRITABLE|USER` so that only the leaf decides. Two software bits (ignored by the
//! MMU) record what the hardware cannot: `SOFT_DIRTY` (written since the last clear_refs) and
//! `PROTNONE` (a `PROT_NONE` page: hardware-not-present, but still a mapping of its frame, as in
//! Linux's `_PAGE_PROTNONE`).

#![deny(unsafe_code)]

use crate::addr::PhysAddr;

/// One 64-bit entry, by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pte(u64);

impl Pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const NO_CACHE: u64 = 1 << 4;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// In a PD entry (a PMD): maps a 2 MiB page, a PMD-mapped THP (`huge_memory.rs`); in a
    /// PDPT entry a 1 GiB page (kernel only).
    pub const HUGE: u64 = 1 << 7;
    pub const GLOBAL: u64 = 1 << 8;
    /// Software: written since the last `clear_refs` (Linux `_PAGE_SOFT_DIRTY`).
    pub const SOFT_DIRTY: u64 = 1 << 9;
    /// Software, only without `PRESENT`: a `PROT_NONE` mapping of the frame.
    pub const PROTNONE: u64 = 1 << 10;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Bits 12..51: the physical frame.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Bits that survive a change of protection: the frame and the hardware/software history.
    pub const KEEP_ON_PROTECT: u64 =
        Self::ADDR_MASK | Self::ACCESSED | Self::DIRTY | Self::SOFT_DIRTY;
    /// What an intermediate (non-leaf) user entry carries.
    pub const TABLE_FLAGS: u64 = Self::PRESENT | Self::WRITABLE | Self::USER;

    pub const EMPTY: Pte = Pte(0);

    pub const fn from_raw(raw: u64) -> Pte {
        Pte(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn new(frame: PhysAddr, flags: u64) -> Pte {
        Pte((frame.as_u64() & Self::ADDR_MASK) | (flags & !Self::ADDR_MASK))
    }

    pub const fn frame(self) -> PhysAddr {
        PhysAddr::new(self.0 & Self::ADDR_MASK)
    }

    pub const fn flags(self) -> u64 {
        self.0 & !Self::ADDR_MASK
    }

    pub const fn has(self, bit: u64) -> bool {
        self.0 & bit == bit
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Present to the MMU.
    pub const fn is_present(self) -> bool {
        self.has(Self::PRESENT)
    }

    /// Maps a frame, accessible or not (Linux `pte_present`: present or `PROTNONE`).
    pub const fn is_mapping(self) -> bool {
        self.0 & (Self::PRESENT | Self::PROTNONE) != 0
    }

    pub const fn is_writable(self) -> bool {
        self.has(Self::PRESENT | Self::WRITABLE)
    }

    /// A PMD leaf: a level-2 entry mapping a 2 MiB page (present or `PROTNONE`) instead of
    /// pointing to a PT. Meaningful on level-2 entries only.
    pub const fn is_huge(self) -> bool {
        self.has(Self::HUGE) && self.is_mapping()
    }

    /// The 4 KiB PTE the PMD leaf `self` amounts to at `va` (same permissions and history
    /// bits, the subpage's frame): what a walk that only understands PTEs should see.
    pub const fn huge_subpage(self, va: crate::addr::VirtAddr) -> Pte {
        let sub = va.as_u64() & ((1 << 21) - 1) & !0xfff;
        Pte((self.0 & !Self::HUGE) + sub)
    }

    /// As [`Self::huge_subpage`] for a leaf at `level` (2: a PMD, 3: a PUD mapping 1 GiB).
    pub const fn huge_subpage_at(self, va: crate::addr::VirtAddr, level: u8) -> Pte {
        let span = 1u64 << (12 + 9 * (level as u32 - 1));
        let sub = va.as_u64() & (span - 1) & !0xfff;
        Pte((self.0 & !Self::HUGE) + sub)
    }

    pub const fn is_dirty(self) -> bool {
        self.has(Self::DIRTY)
    }

    pub const fn is_soft_dirty(self) -> bool {
        self.has(Self::SOFT_DIRTY)
    }

    pub const fn with(self, bits: u64) -> Pte {
        Pte(self.0 | bits)
    }

    pub const fn without(self, bits: u64) -> Pte {
        Pte(self.0 & !bits)
    }
}

impl core::fmt::Debug for Pte {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pte({:#x}", self.frame().as_u64())?;
        for (bit, name) in [
            (Self::PRESENT, " P"),
            (Self::WRITABLE, " RW"),
            (Self::USER, " US"),
            (Self::ACCESSED, " A"),
            (Self::DIRTY, " D"),
            (Self::HUGE, " PS"),
            (Self::SOFT_DIRTY, " SD"),
            (Self::PROTNONE, " PROTNONE"),
            (Self::NO_EXECUTE, " NX"),
        ] {
            if self.has(bit) {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        let p = Pte::new(
            PhysAddr::new(0x1234_5000),
            Pte::PRESENT | Pte::USER | Pte::NO_EXECUTE,
        );
        assert_eq!(p.frame(), PhysAddr::new(0x1234_5000));
        assert!(p.is_present() && p.is_mapping() && !p.is_writable());
        assert!(p.with(Pte::WRITABLE).is_writable());
        let none = Pte::new(PhysAddr::new(0x5000), Pte::PROTNONE);
        assert!(!none.is_present() && none.is_mapping());
        assert_eq!(std::format!("{p:?}"), "Pte(0x12345000 P US NX)");
    }
}
