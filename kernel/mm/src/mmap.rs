//! mmap: creating mappings, and choosing where they go.
//!
//! Picture: a new mapping is a VMA and nothing else — pages arrive later, one fault at a time.
//! Placement follows Linux: `MAP_FIXED` takes the address as given and replaces whatever was
//! mapped there; `MAP_FIXED_NOREPLACE` takes it only if free (`EEXIST`); otherwise a hint is used
//! if the range is free, else the highest free gap below `mmap_base` (top-down). The invariant:
//! the new VMA never overlaps another, and lies in `[MMAP_MIN_ADDR, USER_END)`.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, MMAP_MIN_ADDR, USER_END};
use crate::error::MmError;
use crate::mm::Mm;
use crate::shmem::ShmemObject;
use crate::vma::{Backing, Prot, Sharing, Vma, VmaFlags};

use alloc::sync::Arc;

/// Validates `len` and the sharing mode of `flags`: the page-rounded length and the mode.
fn check_mmap_args(len: usize, flags: MapFlags) -> Result<(u64, Sharing), MmError> {
    if len == 0 {
        return Err(MmError::Inval);
    }
    let len = VirtAddr::new(len as u64)
        .checked_align_up()
        .ok_or(MmError::NoMem)?
        .as_u64();
    // Linux: `len > TASK_SIZE` is ENOMEM. No mapping can be longer than the mappable part of
    // user space, and with this bound `USER_END - len` below cannot underflow.
    if len > USER_END - MMAP_MIN_ADDR {
        return Err(MmError::NoMem);
    }
    let sharing = match (
        flags.contains(MapFlags::SHARED),
        flags.contains(MapFlags::PRIVATE),
    ) {
        (true, false) => Sharing::Shared,
        (false, true) => Sharing::Private,
        _ => return Err(MmError::Inval),
    };
    Ok((len, sharing))
}

/// `MAP_*` flags with Linux's values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MapFlags(u32);

impl MapFlags {
    pub const SHARED: MapFlags = MapFlags(0x01);
    pub const PRIVATE: MapFlags = MapFlags(0x02);
    pub const FIXED: MapFlags = MapFlags(0x10);
    pub const ANONYMOUS: MapFlags = MapFlags(0x20);
    pub const FIXED_NOREPLACE: MapFlags = MapFlags(0x10_0000);

    /// User-supplied flags; unknown bits are ignored, as Linux's `mmap` does.
    pub const fn from_linux(bits: u32) -> MapFlags {
        MapFlags(bits)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: MapFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for MapFlags {
    type Output = MapFlags;
    fn bitor(self, rhs: MapFlags) -> MapFlags {
        MapFlags(self.0 | rhs.0)
    }
}

impl AddressSpace {
    /// Maps `len` bytes (rounded up to pages) of anonymous memory (Linux `do_mmap`); returns the
    /// address chosen. `MAP_SHARED|MAP_ANONYMOUS` is backed by a new shmem object of that size
    /// (Linux `shmem_zero_setup`), so fork children share it. File mappings (no
    /// `MAP_ANONYMOUS`) answer `ENODEV` here: shmem objects are mapped with
    /// [`AddressSpace::mmap_shmem`].
    #[doc(alias = "do_mmap")]
    pub fn mmap<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: Prot,
        flags: MapFlags,
    ) -> Result<VirtAddr, MmError> {
        let (len, sharing) = check_mmap_args(len, flags)?;
        if !flags.contains(MapFlags::ANONYMOUS) {
            return Err(MmError::NoDev);
        }
        let backing = match sharing {
            Sharing::Private => Backing::Anonymous,
            Sharing::Shared => Backing::Shmem(ShmemObject::with_size(len)?, 0),
        };
        self.mmap_region(mm, addr, len, prot, flags, sharing, backing)
    }

    /// Maps `len` bytes of the shmem object `obj` from byte `offset` (page aligned), shared or
    /// private per `flags` (Linux `do_mmap` of a memfd or tmpfs file). The kernel checks the
    /// file's open mode first (a `MAP_SHARED` + `PROT_WRITE` mapping needs it open for
    /// writing). The mapping holds its own reference to the object. Pages beyond the object's
    /// size fault with `SegvReason::BeyondEof` (SIGBUS).
    // mmap(2) has six arguments; with the memory manager and the receiver that makes eight.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_shmem<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: Prot,
        flags: MapFlags,
        obj: &Arc<ShmemObject>,
        offset: u64,
    ) -> Result<VirtAddr, MmError> {
        let (len, sharing) = check_mmap_args(len, flags)?;
        if flags.contains(MapFlags::ANONYMOUS) || !offset.is_multiple_of(crate::PAGE_SIZE as u64) {
            return Err(MmError::Inval);
        }
        offset.checked_add(len).ok_or(MmError::Inval)?;
        let backing = Backing::Shmem(obj.clone(), offset / crate::PAGE_SIZE as u64);
        self.mmap_region(mm, addr, len, prot, flags, sharing, backing)
    }

    /// Places and inserts the VMA (Linux `mmap_region`). Consumes `backing`: on failure its
    /// object reference is released.
    #[allow(clippy::too_many_arguments)]
    fn mmap_region<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        sharing: Sharing,
        backing: Backing,
    ) -> Result<VirtAddr, MmError> {
        let release = |mm: &Mm<A>, backing: Backing| {
            if let Backing::Shmem(obj, _) = backing {
                ShmemObject::put(obj, mm);
            }
        };
        let fixed = flags.contains(MapFlags::FIXED) || flags.contains(MapFlags::FIXED_NOREPLACE);
        let start = if fixed {
            let refused = if !addr.is_page_aligned() {
                Some(MmError::Inval)
            } else if addr.as_u64() > USER_END - len {
                Some(MmError::NoMem)
            } else if addr.as_u64() < MMAP_MIN_ADDR {
                Some(MmError::Perm)
            } else if flags.contains(MapFlags::FIXED_NOREPLACE) && self.overlaps(addr, addr + len) {
                Some(MmError::Exist)
            } else {
                None
            };
            if let Some(e) = refused {
                release(mm, backing);
                return Err(e);
            }
            addr
        } else {
            match self.get_unmapped_area(addr, len) {
                Ok(a) => a,
                Err(e) => {
                    release(mm, backing);
                    return Err(e);
                }
            }
        };
        let end = start + len;
        // The new VMA, plus a second piece if MAP_FIXED punches it into the middle of one.
        let extra = 1 + if fixed {
            self.punch_extra(start, end)
        } else {
            0
        };
        if let Err(e) = self.check_map_count(mm, extra) {
            release(mm, backing);
            return Err(e);
        }
        let before = self.vmas.len();
        if fixed && self.overlaps(start, end) {
            self.unmap_region(mm, start, end);
        }
        self.insert_vma(Vma {
            start,
            end,
            prot,
            sharing,
            flags: VmaFlags::MAYREAD | VmaFlags::MAYWRITE | VmaFlags::MAYEXEC | VmaFlags::SOFTDIRTY,
            backing,
        });
        mm.account_vmas(before, self.vmas.len());
        Ok(start)
    }

    /// A free range of `len` bytes (page multiple): the hint if it fits, else the highest gap
    /// below `mmap_base` (Linux `arch_get_unmapped_area_topdown`). O(number of VMAs above the
    /// gap): placement is not on the fault path.
    fn get_unmapped_area(&self, hint: VirtAddr, len: u64) -> Result<VirtAddr, MmError> {
        if hint.as_u64() != 0 {
            if let Some(h) = hint.checked_align_up() {
                let fits = h.as_u64() >= MMAP_MIN_ADDR && h.as_u64() <= USER_END - len;
                if fits && !self.overlaps(h, h + len) {
                    return Ok(h);
                }
            }
        }
        let mut hi = self.mmap_base.as_u64();
        for vma in self.vmas.range(..hi).rev().map(|(_, v)| v) {
            let gap_lo = vma.end.as_u64();
            if gap_lo <= hi && hi - gap_lo >= len {
                return Ok(VirtAddr::new(hi - len));
            }
            hi = hi.min(vma.start.as_u64());
        }
        if hi >= MMAP_MIN_ADDR + len {
            return Ok(VirtAddr::new(hi - len));
        }
        Err(MmError::NoMem)
    }
}
