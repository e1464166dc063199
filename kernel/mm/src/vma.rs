//! Virtual memory areas: what each range of an address space is allowed to be.
//!
//! A VMA is a page-aligned range with one protection, one sharing mode, one backing object and a
//! few flags (Linux `vm_area_struct`/`vm_flags`). The page tables are a cache of what the VMAs
//! allow: a PTE never grants more than its VMA, and a fault consults the VMA to decide what the
//! PTE should become. The invariant: VMAs never overlap, are never empty, and adjacent VMAs with
//! identical attributes are merged.

#![deny(unsafe_code)]

use alloc::sync::Arc;

use crate::addr::VirtAddr;
use crate::error::MmError;
use crate::pagetable::Pte;
use crate::shmem::{ShmemObject, WritableMapping};

/// `PROT_*` with Linux's values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Prot(u32);

impl Prot {
    pub const NONE: Prot = Prot(0);
    pub const READ: Prot = Prot(1);
    pub const WRITE: Prot = Prot(2);
    pub const EXEC: Prot = Prot(4);
    pub const RW: Prot = Prot(3);

    /// Validates a user-supplied `prot` (`EINVAL` for unknown bits).
    pub const fn from_linux(bits: u32) -> Result<Prot, MmError> {
        if bits & !7 != 0 {
            Err(MmError::Inval)
        } else {
            Ok(Prot(bits))
        }
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn read(self) -> bool {
        self.contains(Prot::READ)
    }

    pub const fn write(self) -> bool {
        self.contains(Prot::WRITE)
    }

    pub const fn exec(self) -> bool {
        self.contains(Prot::EXEC)
    }

    /// x86 cannot map write-only or execute-only: any permission makes the page readable
    /// (Linux `vma_is_accessible`).
    pub const fn accessible(self) -> bool {
        self.0 != 0
    }
}

impl core::ops::BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        Prot(self.0 | rhs.0)
    }
}

/// [`Vma::page_prot`] of a mapping with `prot`.
const fn page_prot_of(prot: Prot) -> u64 {
    if !prot.accessible() {
        return Pte::PROTNONE;
    }
    let mut bits = Pte::PRESENT | Pte::USER;
    if !prot.exec() {
        bits |= Pte::NO_EXECUTE;
    }
    bits
}

/// [`page_prot_of`] for each of the eight `PROT_*` combinations ([`Prot::from_linux`] admits
/// no other bits).
const PAGE_PROT: [u64; 8] = {
    let mut table = [0; 8];
    let mut p = 0;
    while p < 8 {
        table[p] = page_prot_of(Prot(p as u32));
        p += 1;
    }
    table
};

/// Private (copy-on-write) or shared (`MAP_PRIVATE`/`MAP_SHARED`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Sharing {
    Private,
    Shared,
}

/// What backs the pages of a mapping.
///
/// Files join as `File(inode, pgoff)` with the filesystem; every match on this enum is where
/// their behaviour will be decided.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Backing {
    /// Zero-filled private memory; pages are anon frames.
    Anonymous,
    /// A shmem object (memfd, tmpfs file, `MAP_SHARED|MAP_ANONYMOUS`); the `u64` is the page
    /// offset in the object of the VMA's first page (Linux `vm_pgoff`).
    Shmem(Arc<ShmemObject>, u64),
    /// A file with a page cache (ext2), with `vm_pgoff` as for `Shmem`.
    File(crate::pagecache::FileRef, u64),
    /// A hugetlb file (`MAP_HUGETLB`, `MFD_HUGETLB`): 2 MiB pages from the pool, never split
    /// (`hugetlb.rs`).
    Hugetlb(crate::hugetlb::HugetlbMap),
}

/// VMA flags that are not the protection (Linux `VM_MAY*`, `VM_DONTCOPY`, `VM_SOFTDIRTY`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct VmaFlags(u32);

impl VmaFlags {
    pub const NONE: VmaFlags = VmaFlags(0);
    /// `mprotect` may add `PROT_READ`.
    pub const MAYREAD: VmaFlags = VmaFlags(1 << 0);
    /// `mprotect` may add `PROT_WRITE`; with `Private`, this makes a COW mapping.
    pub const MAYWRITE: VmaFlags = VmaFlags(1 << 1);
    pub const MAYEXEC: VmaFlags = VmaFlags(1 << 2);
    /// `MADV_DONTFORK`: the child of a fork does not get this mapping (Linux `VM_DONTCOPY`).
    pub const DONTFORK: VmaFlags = VmaFlags(1 << 3);
    /// Soft-dirty tracking is off (Linux `VM_SOFTDIRTY`: set on new mappings, cleared by
    /// clear_refs); while off, every page counts as soft-dirty and no fault is needed to see a
    /// first write.
    pub const SOFTDIRTY: VmaFlags = VmaFlags(1 << 4);
    /// The mapping is a stack that grows down on a fault just below it (Linux `VM_GROWSDOWN`,
    /// `MAP_GROWSDOWN`); placement keeps [`crate::stack::STACK_GUARD_GAP`] free below it.
    pub const GROWSDOWN: VmaFlags = VmaFlags(1 << 5);
    /// `mlock`ed (Linux `VM_LOCKED`, see `mlock`); not inherited by fork.
    pub const LOCKED: VmaFlags = VmaFlags(1 << 6);
    /// Locked as pages are faulted in (Linux `VM_LOCKONFAULT`, `MLOCK_ONFAULT`).
    pub const LOCKONFAULT: VmaFlags = VmaFlags(1 << 7);
    /// `MADV_WIPEONFORK`: a fork child gets this mapping empty (Linux `VM_WIPEONFORK`).
    pub const WIPEONFORK: VmaFlags = VmaFlags(1 << 8);
    /// `MADV_DONTDUMP`: left out of core dumps (Linux `VM_DONTDUMP`).
    pub const DONTDUMP: VmaFlags = VmaFlags(1 << 9);
    /// `MADV_HUGEPAGE`: THPs wanted here even when `enabled` is `madvise` (Linux
    /// `VM_HUGEPAGE`).
    pub const HUGEPAGE: VmaFlags = VmaFlags(1 << 10);
    /// `MADV_NOHUGEPAGE`: never THPs here (Linux `VM_NOHUGEPAGE`).
    pub const NOHUGEPAGE: VmaFlags = VmaFlags(1 << 11);

    pub const fn contains(self, other: VmaFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: VmaFlags) -> VmaFlags {
        VmaFlags(self.0 | other.0)
    }

    pub const fn without(self, other: VmaFlags) -> VmaFlags {
        VmaFlags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for VmaFlags {
    type Output = VmaFlags;
    fn bitor(self, rhs: VmaFlags) -> VmaFlags {
        self.union(rhs)
    }
}

/// One mapping `[start, end)`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Vma {
    pub(crate) start: VirtAddr,
    pub(crate) end: VirtAddr,
    pub(crate) prot: Prot,
    pub(crate) sharing: Sharing,
    pub(crate) flags: VmaFlags,
    pub(crate) backing: Backing,
    /// For a shared shmem mapping with `MAYWRITE`: its count in the object's writable
    /// mappings (Linux `i_mmap_writable`), which `F_SEAL_WRITE` must find at zero. Held for
    /// exactly as long as this VMA (or a split-off piece, or a fork child's copy) exists.
    pub(crate) write_hold: Option<WritableMapping>,
}

impl Vma {
    pub fn start(&self) -> VirtAddr {
        self.start
    }

    pub fn end(&self) -> VirtAddr {
        self.end
    }

    pub fn prot(&self) -> Prot {
        self.prot
    }

    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    pub fn flags(&self) -> VmaFlags {
        self.flags
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    pub fn contains(&self, va: VirtAddr) -> bool {
        self.start <= va && va < self.end
    }

    /// A hugetlb mapping (Linux `is_vm_hugetlb_page`).
    #[inline]
    pub fn is_hugetlb(&self) -> bool {
        matches!(self.backing, Backing::Hugetlb(..))
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self.backing, Backing::Anonymous)
    }

    /// The shmem object and the page index in it that back `va`, for a shmem mapping.
    pub fn shmem_page(&self, va: VirtAddr) -> Option<(&Arc<ShmemObject>, u64)> {
        match &self.backing {
            Backing::Shmem(obj, pgoff) => Some((
                obj,
                pgoff + (va.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64,
            )),
            Backing::Anonymous | Backing::File(..) | Backing::Hugetlb(..) => None,
        }
    }

    /// The mapped file and the page index in it that back `va`, for a file mapping.
    pub fn file_page(&self, va: VirtAddr) -> Option<(&crate::pagecache::FileRef, u64)> {
        match &self.backing {
            Backing::File(file, pgoff) => Some((
                file,
                pgoff + (va.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64,
            )),
            _ => None,
        }
    }

    /// The byte offset in the backing object of the VMA's first page (`/proc/pid/maps`' offset
    /// column; 0 for anonymous memory).
    pub fn file_offset(&self) -> u64 {
        match &self.backing {
            Backing::Shmem(_, pgoff) | Backing::File(_, pgoff) => pgoff * crate::PAGE_SIZE as u64,
            Backing::Hugetlb(map) => map.pgoff * crate::PAGE_SIZE as u64,
            Backing::Anonymous => 0,
        }
    }

    /// Moves the start up to `at` (a split's upper half), keeping the backing's offset in step.
    pub(crate) fn advance_start(&mut self, at: VirtAddr) {
        if let Backing::Shmem(_, pgoff)
        | Backing::File(_, pgoff)
        | Backing::Hugetlb(crate::hugetlb::HugetlbMap { pgoff, .. }) = &mut self.backing
        {
            *pgoff += (at.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64;
        }
        self.start = at;
    }

    /// Moves the start down to `at` (a stack growing), keeping the backing's offset in step.
    /// The caller checked that the offset stays representable (stacks are anonymous).
    pub(crate) fn lower_start(&mut self, at: VirtAddr) {
        if let Backing::Shmem(_, pgoff) | Backing::File(_, pgoff) = &mut self.backing {
            *pgoff =
                pgoff.saturating_sub((self.start.as_u64() - at.as_u64()) / crate::PAGE_SIZE as u64);
        }
        self.start = at;
    }

    /// Is this a stack that grows down (Linux `VM_GROWSDOWN`)?
    pub fn grows_down(&self) -> bool {
        self.flags.contains(VmaFlags::GROWSDOWN)
    }

    /// Private and may be written: writes must copy shared pages (Linux `is_cow_mapping`).
    pub fn is_cow_mapping(&self) -> bool {
        self.sharing == Sharing::Private && self.flags.contains(VmaFlags::MAYWRITE)
    }

    /// Does a write need to reach the filesystem through a write fault (Linux
    /// `vma_needs_dirty_tracking`: shared writable mappings over a filesystem with writeback)?
    /// Anonymous memory and shmem have no writeback; a shared `PROT_WRITE` file mapping does,
    /// which makes long-term write pins of it fail (`check_vma_flags`).
    #[doc(alias = "vma_needs_dirty_tracking")]
    pub fn needs_dirty_tracking(&self) -> bool {
        match self.backing {
            Backing::Anonymous | Backing::Shmem(..) | Backing::Hugetlb(..) => false,
            Backing::File(..) => self.sharing == Sharing::Shared && self.prot.write(),
        }
    }

    /// Must the first store to a clean page fault, so the filesystem hears of it (Linux
    /// `vma_wants_writenotify`)? Shared writable file mappings: their pages are mapped
    /// read-only until a write fault dirties them (`page_mkwrite`), and writeback makes them
    /// read-only again (`folio_mkclean`).
    pub fn vma_wants_writenotify(&self) -> bool {
        self.needs_dirty_tracking()
    }

    /// Is soft-dirty tracking on, so that a clean PTE must fault on its first write?
    pub fn soft_dirty_tracking(&self) -> bool {
        !self.flags.contains(VmaFlags::SOFTDIRTY)
    }

    /// The bits every present user PTE of this mapping carries (Linux `vm_page_prot`). Private
    /// mappings never include `WRITABLE`: write permission is granted per page, by a write
    /// fault or by `can_change_pte_writable`, because a page may be shared with another process.
    /// An inaccessible mapping's PTEs are `PROTNONE` (not present to the MMU).
    ///
    /// One load from [`PAGE_PROT`] (the fault path's: the tests of `page_prot_of` cost every
    /// fault ~5 instructions more).
    #[inline]
    pub fn page_prot(&self) -> u64 {
        PAGE_PROT[(self.prot.bits() & 7) as usize]
    }

    /// Can `other`, starting where `self` ends, be merged into it (Linux `is_mergeable_vma`)?
    pub(crate) fn can_merge_with(&self, other: &Vma) -> bool {
        let backing_continues = match (&self.backing, &other.backing) {
            (Backing::Anonymous, Backing::Anonymous) => true,
            (Backing::Shmem(a, pa), Backing::Shmem(b, pb)) => {
                Arc::ptr_eq(a, b)
                    && *pb
                        == pa + (self.end.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64
            }
            (Backing::Hugetlb(a), Backing::Hugetlb(b)) => {
                Arc::ptr_eq(&a.file, &b.file)
                    && a.resv.is_none()
                    && b.resv.is_none()
                    && b.pgoff
                        == a.pgoff
                            + (self.end.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64
            }
            (Backing::File(a, pa), Backing::File(b, pb)) => {
                a == b
                    && *pb
                        == pa + (self.end.as_u64() - self.start.as_u64()) / crate::PAGE_SIZE as u64
            }
            _ => false,
        };
        self.end == other.start
            && self.prot == other.prot
            && self.sharing == other.sharing
            && self.flags == other.flags
            && backing_continues
    }
}
