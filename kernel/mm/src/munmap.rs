//! munmap and the page zapping it shares with `MADV_DONTNEED`.
//!
//! Picture: removing `[start, end)` splits the VMAs at both ends, drops the VMAs inside, and
//! clears their PTEs. A cleared PTE's page loses its mapping at once, but its reference is held
//! by an `MmuGather` until the TLB flush, so no stale translation can reach a reused frame;
//! page-table pages left empty are unlinked and freed the same way. The invariant: after
//! munmap, no PTE, VMA or TLB entry covers the range.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{user_range, AddressSpace};
use crate::error::MmError;
use crate::mm::Mm;
use crate::mmshared::MmShared;
use crate::pagetable::PageTable;
use crate::shmem::ShmemObject;
use crate::tlb::MmuGather;
use crate::vma::{Backing, Vma};

impl AddressSpace {
    /// Removes every mapping in `[addr, addr + len)` (Linux `munmap`). `addr` must be page
    /// aligned and `len` non-zero (`EINVAL`); unmapping holes is not an error.
    #[doc(alias = "do_vmi_munmap")]
    pub fn munmap<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
    ) -> Result<(), MmError> {
        let (start, end) = user_range(addr, len)?;
        // Linux `do_vmi_align_munmap`: only a hole in the middle of one VMA adds one.
        self.check_map_count(mm, self.punch_extra(start, end))?;
        let before = self.vmas.len();
        self.unmap_region(mm, start, end);
        mm.account_vmas(before, self.vmas.len());
        Ok(())
    }

    /// [`munmap`](Self::munmap) of at most `max_pages` of `[addr, addr + len)`, from the first
    /// mapping in it up: validates the whole range and its map count as `munmap` does, then
    /// unmaps one batch. Returns `None` when nothing is left, else the `(next, end)` range still
    /// to unmap, so the caller can release the address space between batches (Linux frees a
    /// huge range with `cond_resched` in `zap_pte_range`; cowlab's kernel cannot sleep holding
    /// the lock, so it unlocks). Batches go upwards, so only the first can cut a VMA in two
    /// where the whole range would not: the map count then runs one over until the next batch.
    pub fn munmap_some<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        max_pages: u64,
    ) -> Result<Option<(VirtAddr, VirtAddr)>, MmError> {
        let (start, end) = user_range(addr, len)?;
        self.check_map_count(mm, self.punch_extra(start, end))?;
        let Some(from) = self
            .vmas
            .values()
            .find(|v| v.end > start && v.start < end)
            .map(|v| v.start.max(start))
        else {
            return Ok(None);
        };
        let limit = max_pages.saturating_mul(crate::PAGE_SIZE as u64);
        let to = VirtAddr::new(end.as_u64().min(from.as_u64().saturating_add(limit)));
        let before = self.vmas.len();
        self.unmap_region(mm, from, to);
        mm.account_vmas(before, self.vmas.len());
        Ok((to < end).then_some((to, end)))
    }

    /// Removes the VMAs and pages of the page-aligned `[start, end)`.
    pub(crate) fn unmap_region<A: Arch>(&mut self, mm: &Mm<A>, start: VirtAddr, end: VirtAddr) {
        let removed: alloc::vec::Vec<Vma> = self
            .isolate(start, end)
            .into_iter()
            .filter_map(|key| self.vmas.map_mut().remove(&key))
            .collect();
        zap_pages(mm, &self.shared, start, end);
        for vma in removed {
            release_vma(mm, vma);
        }
    }
}

/// Drops a removed VMA's hold on its backing object (Linux `remove_vma` -> `fput`): the last
/// holder of a shmem object frees its cache; a file's hold is dropped with the VMA (the kernel's
/// object closes the file when its last holder goes).
pub(crate) fn release_vma<A: Arch>(mm: &Mm<A>, vma: Vma) {
    if let Backing::Shmem(obj, _) = vma.backing {
        ShmemObject::put(obj, mm);
    }
}

/// Clears every PTE of `[start, end)`, frees the pages that lose their last reference and the
/// page tables left empty, after flushing the TLB (Linux `zap_page_range_single` +
/// `tlb_finish_mmu`).
#[doc(alias = "zap_page_range")]
pub(crate) fn zap_pages<A: Arch>(mm: &Mm<A>, shared: &MmShared, start: VirtAddr, end: VirtAddr) {
    let mut gather = MmuGather::new(mm, shared);
    PageTable::new(mm, shared.root()).zap_range(start, end, &mut gather, &mut |va, pte, gather| {
        mm.remove_mapping(pte.frame());
        gather.remove_page(va, pte.frame());
    });
    gather.finish();
}

#[cfg(test)]
mod tests {
    use crate::tests::{Env, PAGE};
    use crate::vma::Prot;
    use crate::VirtAddr;

    /// munmap in batches of 3 pages over two populated VMAs with holes around and between them
    /// ends exactly as one munmap: only the range's pages gone, the pieces outside kept, every
    /// frame back, and the middle batches skip the hole instead of walking it.
    #[test]
    fn munmap_some_in_batches_matches_one_munmap() {
        let env = Env::new();
        let mut s = env.space();
        let a = env.map(&mut s, 0, 10, Prot::RW);
        let b = env.map(&mut s, 100 * PAGE, 10, Prot::RW);
        for i in 0..10 {
            env.write(&mut s, a + i * PAGE, 1).unwrap();
            env.write(&mut s, b + i * PAGE, 2).unwrap();
        }
        // From the middle of the first VMA to the middle of the second.
        let (mut addr, mut len) = (a + 4 * PAGE, (96 + 4) * PAGE as usize);
        let mut batches = 0;
        while let Some((next, end)) = s.munmap_some(&env.mm, addr, len, 3).expect("munmap") {
            (addr, len) = (next, (end.as_u64() - next.as_u64()) as usize);
            batches += 1;
            env.check(&[&s]);
        }
        // 6 + 4 pages in batches of 3, the hole skipped: 3 + 3, 3, then the last 1 page.
        assert_eq!(batches, 3, "four calls, three of them leaving a rest");
        assert_eq!(s.vmas().count(), 2);
        assert_eq!(env.read(&mut s, a + 3 * PAGE), Ok(1));
        assert!(env.read(&mut s, a + 4 * PAGE).is_err());
        assert!(env
            .read(&mut s, VirtAddr::new(b.as_u64() + 3 * PAGE))
            .is_err());
        assert_eq!(env.read(&mut s, b + 4 * PAGE), Ok(2));
        assert!(s.munmap_some(&env.mm, a, 0, 3).is_err(), "len 0 is EINVAL");
        env.finish(alloc::vec![s]);
    }
}
