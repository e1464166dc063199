//! Address-space teardown (Linux `exit_mmap`): every mapping, page and page table goes back.
//!
//! Picture: when the last user of an address space is gone (the process exited or exec
//! replaced it) nothing can fault in it any more, so it can be dismantled in one pass without
//! the splitting and deferred freeing of munmap: flush its TLB once, then drop every mapping and
//! free every page-table page, root included. The kernel half of the root is shared with every
//! other address space and is not freed. The invariant: afterwards the frame table holds no
//! trace of this address space.

#![deny(unsafe_code)]

use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::mm::Mm;
use crate::pagetable::PageTable;

impl AddressSpace {
    /// Tears the address space down. The root must not be loaded in CR3 on any CPU (the kernel
    /// switches to its own page table first). Still, every CPU of `mm_cpumask` is flushed and
    /// waited for before a table is freed: one may be in a GUP-fast walk of these tables
    /// (`/proc/pid/mem` of a dying process) or still cache entries of a root it left lazily.
    #[doc(alias = "exit_mmap")]
    pub fn exit<A: Arch>(self, mm: &Mm<A>) {
        let cpus = self.shared.flush_targets(mm.arch().cpu_id());
        let zero = crate::addr::VirtAddr::zero();
        mm.arch().flush_tlb_cpus(cpus, self.root, zero, zero, true);
        PageTable::new(mm, self.root).destroy(&mut |_, pte| {
            if pte.has(crate::pagetable::Pte::HUGE) {
                exit_huge_pmd(mm, &self.shared, pte);
            } else {
                mm.remove_mapping(pte.frame());
            }
            mm.put_page(pte.frame());
        });
        mm.account_vmas(self.vmas.len(), 0);
        for (_, vma) in self.vmas.into_map() {
            crate::munmap::release_vma(mm, vma);
        }
    }
}

/// A PMD leaf met at exit: its entire mapping and its deposited table go (the caller drops the
/// reference). Out of line: the per-page teardown loop stays as small as before THPs.
#[cold]
#[inline(never)]
fn exit_huge_pmd<A: Arch>(
    mm: &Mm<A>,
    shared: &crate::mmshared::MmShared,
    pmd: crate::pagetable::Pte,
) {
    crate::huge_memory::zap_huge_pmd(mm, shared, pmd);
}
