//! mmap: creating mappings, and choosing where they go.
//!
//! Picture: a new mapping is a VMA and nothing else — pages arrive later, one fault at a time.
//! Placement follows Linux: `MAP_FIXED` takes the address as given and replaces whatever was
//! mapped there; `MAP_FIXED_NOREPLACE` takes it only if free (`EEXIST`); otherwise a hint is used
//! if the range is free, else the highest free gap below `mmap_base` (top-down); neither the
//! hint nor the search places a mapping inside the guard gap below a stack
//! (`stack::vm_start_gap`). The invariant: the new VMA never overlaps another, and lies in
//! `[MMAP_MIN_ADDR, USER_END)`.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, MMAP_MIN_ADDR, USER_END};
use crate::error::MmError;
use crate::mm::Mm;
use crate::shmem::{ShmemObject, WritableMapping};
use crate::stack::vm_start_gap;
use crate::vma::{Backing, Prot, Sharing, Vma, VmaFlags};

use alloc::sync::Arc;

/// Validates `len` and the sharing mode of `flags`: the page-rounded length and the mode.
pub(crate) fn check_mmap_args(len: usize, flags: MapFlags) -> Result<(u64, Sharing), MmError> {
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
    /// A stack: the VMA grows down on faults below it (`VM_GROWSDOWN`).
    pub const GROWSDOWN: MapFlags = MapFlags(0x100);
    pub const FIXED_NOREPLACE: MapFlags = MapFlags(0x10_0000);
    /// No hugetlb reservation at mmap (`hugetlb.rs`): a fault may find no page (`SIGBUS`).
    pub const NORESERVE: MapFlags = MapFlags(0x4000);
    /// Anonymous memory in hugetlb pages (`hugetlb.rs`); bits 26..31 may name the size.
    pub const HUGETLB: MapFlags = MapFlags(0x4_0000);
    /// The mapping is locked as `mlock` locks it (`VM_LOCKED`, see [`map_locked_flags`]).
    pub const LOCKED: MapFlags = MapFlags(0x2000);

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

/// Linux `calc_vm_flag_bits(MAP_LOCKED)` as `__mmap_complete` keeps it: `MAP_LOCKED` makes
/// the VMA `VM_LOCKED` as `mlock` would (counted in `locked_vm`, populated by the caller after
/// the lock is dropped: `wants_populate`), except a hugetlb mapping, whose lock Linux clears
/// (its pages are never reclaimed anyway) and does not count. The caller checked
/// `RLIMIT_MEMLOCK` first (`mlock_future_ok`, `EAGAIN`).
pub(crate) fn map_locked_flags(flags: MapFlags, backing: &Backing) -> VmaFlags {
    if flags.contains(MapFlags::LOCKED) && !matches!(backing, Backing::Hugetlb(_)) {
        VmaFlags::LOCKED
    } else {
        VmaFlags::NONE
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
        if flags.contains(MapFlags::HUGETLB) && flags.contains(MapFlags::ANONYMOUS) {
            return self.mmap_hugetlb_anon(mm, addr, len, prot, flags);
        }
        let (len, sharing) = check_mmap_args(len, flags)?;
        if !flags.contains(MapFlags::ANONYMOUS) {
            return Err(MmError::NoDev);
        }
        let mut vm_flags = VmaFlags::MAYREAD | VmaFlags::MAYWRITE | VmaFlags::MAYEXEC;
        if flags.contains(MapFlags::GROWSDOWN) {
            // Linux's `do_mmap` refuses a growing shared anonymous mapping: growing it would
            // need object pages below offset 0.
            if sharing == Sharing::Shared {
                return Err(MmError::Inval);
            }
            vm_flags = vm_flags | VmaFlags::GROWSDOWN;
        }
        let (backing, write_hold) = match sharing {
            Sharing::Private => (Backing::Anonymous, None),
            Sharing::Shared => {
                let obj = ShmemObject::with_size(len)?;
                let hold = obj.map_shared(prot, true)?;
                (Backing::Shmem(obj, 0), hold)
            }
        };
        let vma = Vma {
            start: VirtAddr::zero(),
            end: VirtAddr::zero(),
            prot,
            sharing,
            flags: vm_flags | VmaFlags::SOFTDIRTY,
            backing,
            write_hold,
        };
        self.mmap_region(mm, addr, len, flags, vma)
    }

    /// Maps `len` bytes of the shmem object `obj` from byte `offset` (page aligned), shared or
    /// private per `flags` (Linux `do_mmap` of a memfd or tmpfs file). The kernel checks that
    /// the file is open for reading; `fd_writable` says whether it is open for writing, which
    /// with the object's seals decides a shared mapping's write permission
    /// ([`crate::shmem::shared_mapping_may_write`]: `EACCES`/`EPERM` for `PROT_WRITE`, or no
    /// `MAYWRITE`, so a later `mprotect(PROT_WRITE)` is `EACCES`). The mapping holds its own
    /// reference to the object. Pages beyond the object's size fault with
    /// `SegvReason::BeyondEof` (SIGBUS).
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
        fd_writable: bool,
    ) -> Result<VirtAddr, MmError> {
        let (len, sharing) = check_mmap_args(len, flags)?;
        if flags.contains(MapFlags::ANONYMOUS) || !offset.is_multiple_of(crate::PAGE_SIZE as u64) {
            return Err(MmError::Inval);
        }
        offset.checked_add(len).ok_or(MmError::Inval)?;
        let mut vm_flags = VmaFlags::MAYREAD | VmaFlags::MAYEXEC | VmaFlags::SOFTDIRTY;
        let write_hold: Option<WritableMapping> = match sharing {
            // A private mapping never writes the object: COW copies are anonymous.
            Sharing::Private => {
                vm_flags = vm_flags | VmaFlags::MAYWRITE;
                None
            }
            Sharing::Shared => {
                let hold = obj.map_shared(prot, fd_writable)?;
                if hold.is_some() {
                    vm_flags = vm_flags | VmaFlags::MAYWRITE;
                }
                hold
            }
        };
        let vma = Vma {
            start: VirtAddr::zero(),
            end: VirtAddr::zero(),
            prot,
            sharing,
            flags: vm_flags,
            backing: Backing::Shmem(obj.clone(), offset / crate::PAGE_SIZE as u64),
            write_hold,
        };
        self.mmap_region(mm, addr, len, flags, vma)
    }

    /// Maps `len` bytes of the file `file` from byte `offset` (page aligned), shared or private
    /// per `flags` (Linux `do_mmap` of a disk file). The kernel checks that the file is open
    /// for reading; a shared mapping may write only if it is open for writing
    /// (`fd_writable`: `EACCES` for `PROT_WRITE`, else no `MAYWRITE`). The VMA holds the file.
    /// Pages wholly beyond the file's end fault with `SegvReason::BeyondEof` (SIGBUS).
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_file<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: Prot,
        flags: MapFlags,
        file: crate::pagecache::FileRef,
        offset: u64,
        fd_writable: bool,
    ) -> Result<VirtAddr, MmError> {
        let (len, sharing) = check_mmap_args(len, flags)?;
        if flags.contains(MapFlags::ANONYMOUS) || !offset.is_multiple_of(crate::PAGE_SIZE as u64) {
            return Err(MmError::Inval);
        }
        offset.checked_add(len).ok_or(MmError::Inval)?;
        let mut vm_flags = VmaFlags::MAYREAD | VmaFlags::MAYEXEC | VmaFlags::SOFTDIRTY;
        let may_write = match sharing {
            Sharing::Private => true,
            Sharing::Shared => crate::shmem::shared_mapping_may_write(prot, fd_writable, 0)?,
        };
        if may_write {
            vm_flags = vm_flags | VmaFlags::MAYWRITE;
        }
        let vma = Vma {
            start: VirtAddr::zero(),
            end: VirtAddr::zero(),
            prot,
            sharing,
            flags: vm_flags,
            backing: Backing::File(file, offset / crate::PAGE_SIZE as u64),
            write_hold: None,
        };
        self.mmap_region(mm, addr, len, flags, vma)
    }

    /// Places `vma` (its range still unset) at `len` bytes and inserts it (Linux
    /// `mmap_region`). Consumes it: on failure its object reference is released.
    pub(crate) fn mmap_region<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: u64,
        flags: MapFlags,
        mut vma: Vma,
    ) -> Result<VirtAddr, MmError> {
        let release = |mm: &Mm<A>, vma: Vma| crate::munmap::release_vma(mm, vma);
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
                self.hugetlb_check_split(addr, addr + len).err()
            };
            if let Some(e) = refused {
                release(mm, vma);
                return Err(e);
            }
            addr
        } else {
            match self.get_unmapped_area(addr, len) {
                Ok(a) => a,
                Err(e) => {
                    release(mm, vma);
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
            release(mm, vma);
            return Err(e);
        }
        let before = self.vmas.len();
        if fixed && self.overlaps(start, end) {
            self.unmap_region(mm, start, end);
        }
        vma.start = start;
        vma.end = end;
        // After mlockall(MCL_FUTURE) the mapping is locked; the caller populates it unless on
        // fault (`wants_populate`), with this lock dropped.
        vma.flags = vma.flags | self.def_flags | map_locked_flags(flags, &vma.backing);
        self.insert_vma(vma);
        mm.account_vmas(before, self.vmas.len());
        Ok(start)
    }

    /// A free range of `len` bytes (page multiple): the hint if it fits, else the highest gap
    /// below `mmap_base` (Linux `arch_get_unmapped_area_topdown`). Neither may end inside the
    /// guard gap below a stack (`vm_start_gap`). O(number of VMAs above the gap): placement is
    /// not on the fault path.
    pub(crate) fn get_unmapped_area(&self, hint: VirtAddr, len: u64) -> Result<VirtAddr, MmError> {
        if hint.as_u64() != 0 {
            if let Some(h) = hint.checked_align_up() {
                let fits = h.as_u64() >= MMAP_MIN_ADDR && h.as_u64() <= USER_END - len;
                if fits && self.free_with_gaps(h, h + len) {
                    return Ok(h);
                }
            }
        }
        let mut hi = self.mmap_base.as_u64();
        // A stack just above `mmap_base` still keeps its gap.
        if let Some((_, above)) = self.vmas.range(hi..).next() {
            hi = hi.min(vm_start_gap(above));
        }
        for vma in self.vmas.range(..hi).rev().map(|(_, v)| v) {
            let gap_lo = vma.end.as_u64();
            if gap_lo <= hi && hi - gap_lo >= len {
                return Ok(VirtAddr::new(hi - len));
            }
            hi = hi.min(vm_start_gap(vma));
        }
        if hi >= MMAP_MIN_ADDR + len {
            return Ok(VirtAddr::new(hi - len));
        }
        Err(MmError::NoMem)
    }

    /// Is `[start, end)` free and clear of every stack's guard gap (the hint test of Linux
    /// `arch_get_unmapped_area_topdown`: `addr + len <= vm_start_gap(next)`)?
    pub(crate) fn free_with_gaps(&self, start: VirtAddr, end: VirtAddr) -> bool {
        if self.overlaps(start, end) {
            return false;
        }
        match self.vmas.range(end.as_u64()..).next() {
            Some((_, next)) => end.as_u64() <= vm_start_gap(next),
            None => true,
        }
    }
}
