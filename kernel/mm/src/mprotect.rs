//! mprotect: changing the protection of existing mappings (SEMANTICS.md section 4).
//!
//! Picture: the VMAs of the range get the new protection (split at the ends, merged again where
//! neighbours now match) and every present PTE is rewritten from it. Removing a permission
//! takes effect at once (with a TLB flush). Adding write permission is the subtle part: a PTE
//! may only become writable without a fault where writing in place is already known to be right
//! — `rules::can_change_pte_writable`; every other PTE stays read-only and the next write goes
//! through `do_wp_page`. The invariant: no PTE becomes writable over a page that may be shared.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::era::Era;
use crate::error::MmError;
use crate::frame::FrameFlags;
use crate::mm::Mm;
use crate::pagetable::Pte;
use crate::rules;
use crate::tlb::TlbFlush;
use crate::vma::{Sharing, Vma, VmaFlags};

impl AddressSpace {
    /// Sets the protection of `[addr, addr + len)` (Linux `mprotect`). `EINVAL` for an unaligned
    /// address, `ENOMEM` if part of the range is not mapped (nothing is changed then),
    /// `EACCES` if a mapping may not get the permission.
    #[doc(alias = "do_mprotect_pkey")]
    pub fn mprotect<A: Arch>(
        &mut self,
        mm: &Mm<A>,
        addr: VirtAddr,
        len: usize,
        prot: crate::vma::Prot,
    ) -> Result<(), MmError> {
        if !addr.is_page_aligned() {
            return Err(MmError::Inval);
        }
        if len == 0 {
            return Ok(());
        }
        let end = addr
            .as_u64()
            .checked_add(len as u64)
            .and_then(|e| VirtAddr::new(e).checked_align_up())
            .filter(|e| e.as_u64() <= USER_END)
            .ok_or(MmError::NoMem)?;
        let start = addr;
        if !self.fully_mapped(start, end) {
            return Err(MmError::NoMem);
        }
        let may = |v: &Vma| {
            (!prot.write() || v.flags.contains(VmaFlags::MAYWRITE))
                && (!prot.exec() || v.flags.contains(VmaFlags::MAYEXEC))
                && (!prot.read() || v.flags.contains(VmaFlags::MAYREAD))
        };
        if !self
            .vmas
            .range(..end.as_u64())
            .rev()
            .take_while(|(_, v)| v.end > start)
            .all(|(_, v)| may(v))
        {
            return Err(MmError::Access);
        }
        self.hugetlb_check_split(start, end)?;
        self.check_map_count(mm, self.splits_needed(start, end))?;
        let before = self.vmas.len();
        let keys = self.isolate(start, end);
        let era = mm.era();
        let mut flush = TlbFlush::none(self.root);
        for key in &keys {
            let vma = self.vmas.map_mut().get_mut(key).expect("isolated VMA");
            if vma.prot == prot {
                continue;
            }
            vma.prot = prot;
            let vma = vma.clone();
            flush.merge(change_pte_range(mm, era, self, &vma));
        }
        flush.flush(mm.arch(), &self.shared);
        for key in keys {
            if self.vmas.contains_key(&key) {
                self.merge_around(VirtAddr::new(key));
            }
        }
        mm.account_vmas(before, self.vmas.len());
        Ok(())
    }
}

/// Rewrites every mapping PTE of `vma` from its (new) protection (Linux `change_pte_range`).
fn change_pte_range<A: Arch>(mm: &Mm<A>, era: Era, aspace: &AddressSpace, vma: &Vma) -> TlbFlush {
    if vma.is_hugetlb() {
        return crate::hugetlb::hugetlb_change_protection(mm, &aspace.shared, vma);
    }
    let base = vma.page_prot();
    // PMD leaves become PTEs first (Linux keeps them with `change_huge_pmd`; splitting is this
    // stage's simpler rule, and correct: every subpage keeps its frame and exclusive bit).
    crate::huge_memory::split_huge_pmd_range(mm, &aspace.shared, vma.start, vma.end);
    aspace
        .page_table(mm)
        .change_protection(vma.start, vma.end, &mut |_, old| {
            let new = Pte::from_raw((old.raw() & Pte::KEEP_ON_PROTECT) | base);
            if vma.prot.write() && new.is_present() && pte_may_become_writable(mm, era, vma, old) {
                new.with(Pte::WRITABLE)
            } else {
                new
            }
        })
}

/// Gathers the facts for `rules::can_change_pte_writable` about one present PTE.
fn pte_may_become_writable<A: Arch>(mm: &Mm<A>, era: Era, vma: &Vma, pte: Pte) -> bool {
    let exclusive = match vma.sharing {
        Sharing::Private => mm
            .frames()
            .meta(pte.frame())
            .test(FrameFlags::ANON_EXCLUSIVE),
        Sharing::Shared => false,
    };
    let soft_dirty_needs_fault = vma.soft_dirty_tracking() && !pte.is_soft_dirty();
    rules::can_change_pte_writable(
        era,
        vma.sharing,
        exclusive,
        pte.is_dirty(),
        soft_dirty_needs_fault,
    )
}
