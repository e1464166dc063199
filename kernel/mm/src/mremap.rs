//! mremap: shrinking, growing and moving a mapping (Linux `mm/mremap.c`).
//!
//! Picture: the range `[addr, addr + old_len)` must lie in one VMA. Shrinking unmaps the tail.
//! Growing extends the VMA in place when the pages after it are free; otherwise, with
//! `MREMAP_MAYMOVE` (or to a chosen place with `MREMAP_FIXED`), a copy of the VMA — same
//! protection, sharing, flags and backing, the backing's offset advanced to the range — is
//! inserted at the new address, the page-table entries are moved there (not the pages: the
//! frames, their references, pins and anon-exclusive bits stay as they were), and the old range
//! is unmapped. So a `MAP_SHARED` memfd or tmpfs mapping stays a mapping of the same object
//! after a move or grow, a `PROT_NONE` mapping moves like any other, and nothing is copied. The
//! invariant: every page reachable at the old range before the call is reachable at the same
//! offset of the new range after it, and the frame table's counts are unchanged by a move.
//! Every length and address is bounded before any sum is formed. hugetlb mappings follow their
//! own rules (`hugetlb_mremap`): huge-aligned, never growing, moved leaf by leaf.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::MmError;
use crate::hugetlb_mremap::hugetlb_mremap_lens;
use crate::mm::Mm;
use crate::pagetable::Pte;
use crate::tlb::TlbFlush;
use crate::vma::Sharing;

const PAGE: u64 = crate::PAGE_SIZE as u64;

/// `MREMAP_*` flags with Linux's values.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct MremapFlags(u32);

impl MremapFlags {
    pub const MAYMOVE: MremapFlags = MremapFlags(1);
    pub const FIXED: MremapFlags = MremapFlags(2);
    /// Move the pages but leave the old range mapped, empty (Linux 5.7).
    pub const DONTUNMAP: MremapFlags = MremapFlags(4);

    /// User-supplied flags; unknown bits are refused by [`AddressSpace::mremap`] with
    /// `EINVAL`.
    pub const fn from_linux(bits: u32) -> MremapFlags {
        MremapFlags(bits)
    }

    pub const fn contains(self, other: MremapFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for MremapFlags {
    type Output = MremapFlags;
    fn bitor(self, rhs: MremapFlags) -> MremapFlags {
        MremapFlags(self.0 | rhs.0)
    }
}

/// `x` rounded up to a page, `None` if that overflows.
fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl AddressSpace {
    /// Resizes and/or moves the mapping at `addr` (Linux `mremap`); returns its new address.
    /// Errors as Linux's: `EINVAL` for bad flags, an unaligned address, a zero or oversized
    /// length, or a `MREMAP_FIXED` target that is unaligned, beyond user space or overlaps the
    /// old range; `EFAULT` if `[addr, addr + old_len)` is not inside one mapping; `ENOMEM` if
    /// it cannot grow in place without `MREMAP_MAYMOVE`, no room is left, or memory runs out.
    /// `old_len == 0` with `MREMAP_MAYMOVE` makes a second mapping of a shared mapping's object.
    #[doc(alias = "do_mremap")]
    pub fn mremap<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: u64,
    ) -> Result<VirtAddr, MmError> {
        let maymove = flags.contains(MremapFlags::MAYMOVE);
        let fixed = flags.contains(MremapFlags::FIXED);
        let dontunmap = flags.contains(MremapFlags::DONTUNMAP);
        let known = MremapFlags::MAYMOVE.0 | MremapFlags::FIXED.0 | MremapFlags::DONTUNMAP.0;
        // `MREMAP_DONTUNMAP` moves only, never resizes (Linux `mremap`'s flag checks).
        if flags.0 & !known != 0
            || (fixed && !maymove)
            || (dontunmap && (!maymove || old_len != new_len))
            || !addr.is_multiple_of(PAGE)
        {
            return Err(MmError::Inval);
        }
        let old_len = page_up(old_len).ok_or(MmError::Inval)?;
        let new_len = page_up(new_len).filter(|&l| l != 0).ok_or(MmError::Inval)?;
        // From here on no length exceeds user space, so `x + len` below cannot overflow for
        // any `x` already checked to be below `USER_END`.
        if old_len > USER_END || new_len > USER_END {
            return Err(MmError::Inval);
        }
        let target = if fixed {
            let end = new_addr
                .checked_add(new_len)
                .filter(|&e| new_addr.is_multiple_of(PAGE) && e <= USER_END)
                .ok_or(MmError::Inval)?;
            if new_addr < addr.saturating_add(old_len) && addr < end {
                return Err(MmError::Inval);
            }
            Some(new_addr)
        } else {
            None
        };
        let vma = (addr < USER_END)
            .then(|| self.find_vma(VirtAddr::new(addr)))
            .flatten()
            .ok_or(MmError::Fault)?;
        let hbytes = vma.huge_bytes();
        let (old_len, new_len) = match hbytes {
            Some(b) => hugetlb_mremap_lens(b, addr, old_len, new_len, flags, new_addr)?,
            None => (old_len, new_len),
        };
        // `addr < vma.end`: the room left in the VMA.
        let room = vma.end.as_u64() - addr;
        if old_len == 0 && (vma.sharing != Sharing::Shared || !maymove) {
            return Err(MmError::Inval);
        }
        if let Some(target) = target {
            // Linux `mremap_to`: the target is unmapped first, then a shrinking move drops the
            // old tail, so only `new_len` bytes move; only then must they lie in the VMA.
            self.munmap(mm, VirtAddr::new(target), new_len as usize)?;
            let mut old_len = old_len;
            if old_len > new_len {
                self.munmap(
                    mm,
                    VirtAddr::new(addr + new_len),
                    (old_len - new_len) as usize,
                )?;
                old_len = new_len;
            }
            let room = self
                .find_vma(VirtAddr::new(addr))
                .map(|v| v.end.as_u64() - addr)
                .ok_or(MmError::Fault)?;
            if old_len > room {
                return Err(MmError::Fault);
            }
            return self.move_vma(mm, addr, old_len, new_len, Some(target), dontunmap);
        }
        if dontunmap {
            if old_len > room {
                return Err(MmError::Fault);
            }
            return self.move_vma(mm, addr, old_len, new_len, None, true);
        }
        // Shrinking is always allowed (Linux `do_mremap`): it unmaps `[addr + new_len,
        // addr + old_len)` whatever lies there, even past this VMA.
        if old_len != 0 && new_len <= old_len {
            if new_len < old_len {
                self.munmap(
                    mm,
                    VirtAddr::new(addr + new_len),
                    (old_len - new_len) as usize,
                )?;
            }
            return Ok(VirtAddr::new(addr));
        }
        // Growing: the range must lie in the VMA (Linux `vma_to_resize`). In place if the VMA
        // ends where the range does and the pages after it are free (Linux `vma_expandable`;
        // like Linux, not held back by a stack's guard gap).
        if old_len > room {
            return Err(MmError::Fault);
        }
        let grown_end = addr + new_len;
        if old_len != 0
            && old_len == room
            && grown_end <= USER_END
            && !self.overlaps(VirtAddr::new(addr + old_len), VirtAddr::new(grown_end))
        {
            let key = self.vma_key(addr);
            let before = self.vmas.len();
            self.vmas
                .map_mut()
                .get_mut(&key)
                .expect("the VMA found")
                .end = VirtAddr::new(grown_end);
            self.merge_around(VirtAddr::new(key));
            mm.account_vmas(before, self.vmas.len());
            return Ok(VirtAddr::new(addr));
        }
        if !maymove {
            return Err(MmError::NoMem);
        }
        self.move_vma(mm, addr, old_len, new_len, None, false)
    }

    /// The key (start) of the VMA containing `addr`.
    fn vma_key(&self, addr: u64) -> u64 {
        self.find_vma(VirtAddr::new(addr))
            .expect("a VMA checked to contain addr")
            .start
            .as_u64()
    }

    /// Moves `[addr, addr + old_len)` (inside one VMA, `old_len <= new_len` or a target) to
    /// `target` (already unmapped) or a place chosen as mmap's, with `new_len` bytes (Linux
    /// `move_vma`): a copy of the VMA at the new place, the PTEs moved into it, the old range
    /// unmapped — or, with `dontunmap`, left mapped and empty, so that private anonymous memory
    /// there reads zeros again and a shared mapping faults its object's pages back in (Linux
    /// 5.13+ allows every mapping cowlab has). `old_len == 0` maps the shared object a second time and moves
    /// nothing.
    fn move_vma<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: u64,
        old_len: u64,
        new_len: u64,
        target: Option<u64>,
        dontunmap: bool,
    ) -> Result<VirtAddr, MmError> {
        // Linux refuses a move within three VMAs of `max_map_count` (the new VMA, and two
        // splits of the old one).
        self.check_map_count(mm, 3)?;
        let before = self.vmas.len();
        let new_start = match target {
            // Unmapped by the caller.
            Some(t) => t,
            None => match self.get_unmapped_area(VirtAddr::zero(), new_len) {
                Ok(va) => va.as_u64(),
                Err(e) => {
                    mm.account_vmas(before, self.vmas.len());
                    return Err(e);
                }
            },
        };
        // The VMA is found again: unmapping a target may have split it.
        let mut copy = self
            .find_vma(VirtAddr::new(addr))
            .expect("the old range is still mapped")
            .clone();
        let copy_huge_bytes = copy.huge_bytes();
        copy.advance_start(VirtAddr::new(addr));
        copy.start = VirtAddr::new(new_start);
        copy.end = VirtAddr::new(new_start + new_len);
        self.insert_vma(copy);
        let moved = old_len.min(new_len);
        let hbytes = copy_huge_bytes;
        let ok = moved == 0
            || match hbytes {
                Some(b) => self.move_hugetlb_page_tables(mm, addr, new_start, moved, b),
                None => self.move_page_tables(mm, addr, new_start, moved),
            };
        if !ok {
            // No memory for the new page tables: nothing has moved yet; drop the copy.
            self.unmap_region(
                mm,
                VirtAddr::new(new_start),
                VirtAddr::new(new_start + new_len),
            );
            mm.account_vmas(before, self.vmas.len());
            return Err(MmError::NoMem);
        }
        if old_len != 0 && !dontunmap {
            if hbytes.is_some() {
                self.hugetlb_disown_resv(VirtAddr::new(addr), VirtAddr::new(addr + moved));
            }
            self.unmap_region(mm, VirtAddr::new(addr), VirtAddr::new(addr + old_len));
        }
        mm.account_vmas(before, self.vmas.len());
        Ok(VirtAddr::new(new_start))
    }

    /// Moves every PTE of `[old, old + len)` to the same offset from `new` (Linux
    /// `move_page_tables`). First makes sure every destination page table exists, so it either
    /// moves everything or (out of memory, `false`) nothing. Moved entries are marked
    /// soft-dirty (Linux `move_soft_dirty_pte`): the page is new at its address. The old
    /// translations are flushed before returning; the emptied old page tables are freed by the
    /// caller's unmap of the old range.
    fn move_page_tables<A: Arch>(&self, mm: &Mm<A>, old: u64, new: u64, len: u64) -> bool {
        let pt = self.page_table(mm);
        let (start, end) = (VirtAddr::new(old), VirtAddr::new(old + len));
        // PMD-mapped THPs move as 512 PTEs (Linux `move_huge_pmd` moves an aligned one whole).
        crate::huge_memory::split_huge_pmd_range(mm, &self.shared, start, end);
        let mut allocated = true;
        let mut last_pt = u64::MAX;
        pt.for_each_leaf(start, end, &mut |va, slot| {
            if !allocated || slot.load().is_empty() {
                return;
            }
            let dst = new + (va.as_u64() - old);
            // One walk per destination page table (2 MiB).
            if dst >> 21 != last_pt {
                allocated = pt.walk_alloc_pt(VirtAddr::new(dst)).is_some();
                last_pt = dst >> 21;
            }
        });
        if !allocated {
            return false;
        }
        let mut flush = TlbFlush::none(self.root);
        pt.for_each_leaf(start, end, &mut |va, slot| {
            if slot.load().is_empty() {
                return;
            }
            let pte = slot.take();
            let dst = new + (va.as_u64() - old);
            let to = pt
                .walk(VirtAddr::new(dst))
                .expect("destination page table allocated in the first pass");
            debug_assert!(to.load().is_empty(), "mremap onto a live PTE at {dst:#x}");
            let pte = if pte.is_mapping() {
                pte.with(Pte::SOFT_DIRTY)
            } else {
                pte
            };
            to.store(pte);
            flush.add_page(va);
        });
        flush.flush(mm.arch(), &self.shared);
        true
    }
}
