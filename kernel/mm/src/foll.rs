//! `FOLL_*` flags of get_user_pages and pin_user_pages (SEMANTICS.md section 6).
//!
//! The values are Linux's, so a trace or a test ported from Linux reads the same. `FOLL_PIN`
//! and `FOLL_COW` are internal: the pin entry points set `FOLL_PIN`, and `FOLL_COW` only exists
//! under the 2016 and 2020 rules (the Dirty COW fix).

#![deny(unsafe_code)]

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct FollFlags(u32);

impl FollFlags {
    pub const NONE: FollFlags = FollFlags(0);
    /// The caller will write to the page.
    pub const WRITE: FollFlags = FollFlags(1 << 0);
    /// Take a plain reference (`get_user_pages`).
    pub const GET: FollFlags = FollFlags(1 << 1);
    /// Ignore the mapping's missing write permission (ptrace, `/proc/pid/mem`).
    pub const FORCE: FollFlags = FollFlags(1 << 3);
    /// The pin may be held indefinitely (RDMA, vfio, registered io_uring buffers).
    pub const LONGTERM: FollFlags = FollFlags(1 << 8);
    /// Internal: the COW fault for a `FOLL_FORCE` write has happened (2016 and 2020 rules).
    pub const COW: FollFlags = FollFlags(1 << 14);
    /// Internal: take a pin (`pin_user_pages`), never together with `GET`.
    pub const PIN: FollFlags = FollFlags(1 << 20);

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn from_bits(bits: u32) -> FollFlags {
        FollFlags(bits)
    }

    pub const fn contains(self, other: FollFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: FollFlags) -> FollFlags {
        FollFlags(self.0 | other.0)
    }

    pub const fn without(self, other: FollFlags) -> FollFlags {
        FollFlags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for FollFlags {
    type Output = FollFlags;
    fn bitor(self, rhs: FollFlags) -> FollFlags {
        self.union(rhs)
    }
}
