//! The emulated TLB: translations cached per (root, virtual page) until flushed.
//!
//! Picture: like a PCID-tagged TLB that is never evicted. A translation enters on a successful
//! page walk, carrying the permissions the walk found and whether the page was dirty; it leaves
//! only when the memory manager flushes it (or when an access through it faults, as on x86).
//! Because nothing else evicts it, a forgotten flush leaves a stale entry behind, which
//! [`Tlb::check_coherent`] reports and through which the emulated CPU keeps writing.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;

use spin::Mutex;

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::mm::Mm;
use crate::pagetable::PageTable;

/// One cached translation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TlbEntry {
    pub frame: PhysAddr,
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
    /// The walk that created it set (or found) the dirty bit: writes need no new walk.
    pub dirty: bool,
}

#[derive(Default)]
pub struct Tlb {
    entries: Mutex<BTreeMap<(u64, u64), TlbEntry>>,
}

impl Tlb {
    pub(crate) fn lookup(&self, root: PhysAddr, va: VirtAddr) -> Option<TlbEntry> {
        self.entries.lock().get(&(root.as_u64(), va.vpn())).copied()
    }

    pub(crate) fn insert(&self, root: PhysAddr, va: VirtAddr, e: TlbEntry) {
        self.entries.lock().insert((root.as_u64(), va.vpn()), e);
    }

    pub(crate) fn flush_page(&self, root: PhysAddr, va: VirtAddr) {
        self.entries.lock().remove(&(root.as_u64(), va.vpn()));
    }

    pub(crate) fn flush_all(&self, root: PhysAddr) {
        let r = root.as_u64();
        self.entries.lock().retain(|&(er, _), _| er != r);
    }

    /// The cached translations of `root`: (virtual page, frame).
    pub(crate) fn entries_of(&self, root: PhysAddr) -> alloc::vec::Vec<(VirtAddr, PhysAddr)> {
        let r = root.as_u64();
        self.entries
            .lock()
            .iter()
            .filter(|(&(er, _), _)| er == r)
            .map(|(&(_, vpn), e)| (VirtAddr::new(vpn * crate::PAGE_SIZE as u64), e.frame))
            .collect()
    }

    /// Some cached translation to `frame`, as (root, virtual page).
    pub(crate) fn mapping_of(&self, frame: PhysAddr) -> Option<(PhysAddr, VirtAddr)> {
        self.entries
            .lock()
            .iter()
            .find(|(_, e)| e.frame == frame)
            .map(|(&(r, vpn), _)| {
                (
                    PhysAddr::new(r),
                    VirtAddr::new(vpn * crate::PAGE_SIZE as u64),
                )
            })
    }

    /// Number of cached translations.
    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every cached translation must still be allowed by the page tables of a live root: same
    /// frame, no permission the PTE has lost. A violation is a missing TLB flush.
    pub fn check_coherent<A: Arch>(
        &self,
        mm: &Mm<A>,
        live_roots: &[PhysAddr],
    ) -> Result<(), String> {
        for (&(root, vpn), e) in self.entries.lock().iter() {
            let root = PhysAddr::new(root);
            let va = VirtAddr::new(vpn * crate::PAGE_SIZE as u64);
            if !live_roots.contains(&root) {
                return Err(format!(
                    "stale TLB entry {va:#x} -> {:#x} of a destroyed address space (root {root:#x})",
                    e.frame
                ));
            }
            // `translate`: a PMD-mapped THP answers with its subpage's 4 KiB view.
            let pte = PageTable::new(mm, root).translate(va);
            let ok = pte.is_some_and(|p| {
                p.is_present()
                    && p.frame() == e.frame
                    && (!e.writable || p.is_writable())
                    && (!e.executable || !p.has(crate::pagetable::Pte::NO_EXECUTE))
            });
            if !ok {
                return Err(format!(
                    "stale TLB entry {va:#x} -> {:#x} (writable {}) but the PTE is {pte:?}: \
                     a TLB flush is missing",
                    e.frame, e.writable
                ));
            }
        }
        Ok(())
    }
}
