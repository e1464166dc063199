//! brk: the program break, a heap that grows and shrinks at one end.
//!
//! Picture: exec sets the heap start just after the program's data; `brk(addr)` moves the break,
//! and the heap is the anonymous private read-write range `[start, page_align_up(break))`.
//! Growing maps pages only if nothing else is mapped there; shrinking unmaps. As in Linux, the
//! call answers the new break on success and the unchanged break on failure.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, Brk, MMAP_MIN_ADDR, USER_END};
use crate::mm::Mm;
use crate::vma::{Backing, Prot, Sharing, Vma, VmaFlags};

impl AddressSpace {
    /// Sets the heap start (exec, after loading the program): the break starts there.
    pub fn set_brk_base(&mut self, start: VirtAddr) {
        self.brk = Brk { start, cur: start };
    }

    /// Where the heap starts (Linux `mm->start_brk`).
    pub fn brk_start(&self) -> VirtAddr {
        self.brk.start
    }

    /// The current break.
    pub fn current_brk(&self) -> VirtAddr {
        self.brk.cur
    }

    /// Moves the break to `requested` (Linux `sys_brk`); returns the break in force afterwards.
    #[doc(alias = "sys_brk")]
    pub fn brk<A: Arch>(&mut self, mm: &Mm<A>, requested: VirtAddr) -> VirtAddr {
        let Brk { start, cur } = self.brk;
        if start.as_u64() < MMAP_MIN_ADDR || requested < start {
            return cur;
        }
        let old_end = cur.align_up();
        let Some(new_end) = requested
            .checked_align_up()
            .filter(|e| e.as_u64() <= USER_END)
        else {
            return cur;
        };
        let before = self.vmas.len();
        if new_end < old_end {
            // The heap's end is its VMA's end, so shrinking never punches a hole.
            self.unmap_region(mm, new_end, old_end);
        } else if new_end > old_end {
            // Linux `brk` stops short of a stack's guard gap too (`vm_start_gap(next)`).
            if !self.free_with_gaps(old_end, new_end) {
                return cur;
            }
            let heap = Vma {
                start: old_end,
                end: new_end,
                prot: Prot::RW,
                sharing: Sharing::Private,
                flags: VmaFlags::MAYREAD
                    | VmaFlags::MAYWRITE
                    | VmaFlags::MAYEXEC
                    | VmaFlags::SOFTDIRTY
                    | self.def_flags,
                backing: Backing::Anonymous,
                write_hold: None,
            };
            // Growing an existing heap VMA adds none; a first heap (or one after an mprotect
            // of its end) adds one (Linux `do_brk_flags` checks `map_count` too).
            let extends = old_end > start
                && self
                    .find_vma(old_end - crate::PAGE_SIZE as u64)
                    .is_some_and(|prev| prev.can_merge_with(&heap));
            if self.check_map_count(mm, usize::from(!extends)).is_err() {
                return cur;
            }
            self.insert_vma(heap);
        }
        mm.account_vmas(before, self.vmas.len());
        self.brk.cur = requested;
        requested
    }
}
