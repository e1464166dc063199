//! Physical and virtual addresses as distinct types.
//!
//! The memory manager juggles three kinds of numbers: physical addresses, virtual addresses and
//! page-frame numbers. Mixing them up is the classic kernel bug, so each has its own type and the
//! only conversions are the named ones below. Constructors are total (any `u64` is accepted):
//! whether a user-supplied virtual address is acceptable is a policy question answered by the
//! VMA code with an error, never by a panic here.

#![deny(unsafe_code)]

use crate::PAGE_SIZE;

const PAGE_MASK: u64 = PAGE_SIZE as u64 - 1;

/// A physical address. `PhysAddr(0)` is the first byte of physical memory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PhysAddr(u64);

/// A virtual address, user or kernel.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct VirtAddr(u64);

macro_rules! common_addr_ops {
    ($t:ident) => {
        impl $t {
            /// Wraps a raw address; no validation.
            pub const fn new(addr: u64) -> Self {
                Self(addr)
            }

            pub const fn zero() -> Self {
                Self(0)
            }

            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// Rounds down to a multiple of `PAGE_SIZE`.
            pub const fn align_down(self) -> Self {
                Self(self.0 & !PAGE_MASK)
            }

            /// Rounds up to a multiple of `PAGE_SIZE`; `None` if that overflows.
            pub const fn checked_align_up(self) -> Option<Self> {
                match self.0.checked_add(PAGE_MASK) {
                    Some(v) => Some(Self(v & !PAGE_MASK)),
                    None => None,
                }
            }

            /// Rounds up to a multiple of `PAGE_SIZE`. Panics on overflow (callers handling user
            /// input use [`Self::checked_align_up`]).
            pub const fn align_up(self) -> Self {
                match self.checked_align_up() {
                    Some(a) => a,
                    None => panic!("address overflows when aligned up"),
                }
            }

            pub const fn is_page_aligned(self) -> bool {
                self.0 & PAGE_MASK == 0
            }

            /// Offset inside the page.
            pub const fn page_offset(self) -> usize {
                (self.0 & PAGE_MASK) as usize
            }
        }

        impl core::ops::Add<u64> for $t {
            type Output = $t;
            fn add(self, rhs: u64) -> $t {
                $t(self.0 + rhs)
            }
        }

        impl core::ops::Sub<u64> for $t {
            type Output = $t;
            fn sub(self, rhs: u64) -> $t {
                $t(self.0 - rhs)
            }
        }

        impl core::ops::Sub<$t> for $t {
            type Output = u64;
            fn sub(self, rhs: $t) -> u64 {
                self.0 - rhs.0
            }
        }

        impl core::fmt::LowerHex for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

common_addr_ops!(PhysAddr);
common_addr_ops!(VirtAddr);

impl PhysAddr {
    /// The page-frame number: which 4 KiB frame this address falls in.
    pub const fn pfn(self) -> usize {
        (self.0 / PAGE_SIZE as u64) as usize
    }

    /// The first byte of frame `pfn`.
    pub const fn from_pfn(pfn: usize) -> Self {
        Self(pfn as u64 * PAGE_SIZE as u64)
    }
}

impl VirtAddr {
    /// x86_64 with 4-level paging: bits 63..47 must all equal bit 47.
    pub const fn is_canonical(self) -> bool {
        let top = self.0 >> 47;
        top == 0 || top == 0x1_ffff
    }

    /// Index into the page-table page at `level` (4 = PML4, 1 = PT) that translates this address.
    pub const fn table_index(self, level: u8) -> usize {
        ((self.0 >> (12 + 9 * (level as u32 - 1))) & 0x1ff) as usize
    }

    /// The page-aligned virtual page number.
    pub const fn vpn(self) -> u64 {
        self.0 / PAGE_SIZE as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        let a = PhysAddr::new(0x1234);
        assert_eq!(a.align_down(), PhysAddr::new(0x1000));
        assert_eq!(a.align_up(), PhysAddr::new(0x2000));
        assert!(!a.is_page_aligned());
        assert!(PhysAddr::new(0x3000).is_page_aligned());
        assert_eq!(PhysAddr::new(0x3000).align_up(), PhysAddr::new(0x3000));
        assert_eq!(a.pfn(), 1);
        assert_eq!(PhysAddr::from_pfn(7), PhysAddr::new(0x7000));
        assert_eq!(VirtAddr::new(u64::MAX).checked_align_up(), None);
    }

    #[test]
    fn table_indices() {
        let v = VirtAddr::new(0x0000_7fff_ffff_f000);
        assert_eq!(v.table_index(4), 255);
        assert_eq!(v.table_index(3), 511);
        assert_eq!(v.table_index(2), 511);
        assert_eq!(v.table_index(1), 511);
        assert!(v.is_canonical());
        assert!(!VirtAddr::new(0x0000_8000_0000_0000).is_canonical());
        assert!(VirtAddr::new(0xffff_8000_0000_0000).is_canonical());
    }
}
