//! Kernel access to a process's memory through its page tables (Linux `access_process_vm`
//! without `FOLL_FORCE`; what exec, `read`/`write` and signal delivery need).
//!
//! Picture: the kernel reads or writes user memory by translating each page through the
//! process's own page tables and copying through the physical-memory window, so it works for
//! any address space, loaded in CR3 or not. A page that is missing, or read-only for a write, is
//! faulted in exactly as a user access would be, so COW, the zero page and protections all
//! apply: the kernel never writes a page the process could not write itself.

#![deny(unsafe_code)]

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::Arch;
use crate::aspace::AddressSpace;
use crate::error::FaultError;
use crate::fault::{handle_mm_fault, FaultKind};
use crate::mm::Mm;
use crate::PAGE_SIZE;

/// Copies `data` to user address `va` in `aspace` (Linux `copy_to_user` on another process).
/// On `Err` a prefix may have been written.
pub fn copy_to_user<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    data: &[u8],
) -> Result<(), FaultError> {
    let mut done = 0;
    while done < data.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(data.len() - done);
        let pa = user_page(mm, aspace, at, FaultKind::Write)?;
        mm.write_user_bytes(pa, &data[done..done + n]);
        done += n;
    }
    Ok(())
}

/// Copies `buf.len()` bytes from user address `va` in `aspace` (Linux `copy_from_user`).
pub fn copy_from_user<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    buf: &mut [u8],
) -> Result<(), FaultError> {
    let mut done = 0;
    while done < buf.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(buf.len() - done);
        let pa = user_page(mm, aspace, at, FaultKind::Read)?;
        mm.read_user_bytes(pa, &mut buf[done..done + n]);
        done += n;
    }
    Ok(())
}

/// The physical address of `va`, faulted in for `kind` (`Read` or `Write`) if needed.
fn user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<PhysAddr, FaultError> {
    // One fault resolves any access; the second look must succeed.
    for _ in 0..2 {
        if let Some(pte) = aspace.translate(mm, va) {
            let usable = pte.is_present()
                && pte.has(crate::pagetable::Pte::USER)
                && (kind != FaultKind::Write || pte.is_writable());
            if usable {
                return Ok(pte.frame() + va.page_offset() as u64);
            }
        }
        handle_mm_fault(mm, aspace, va, kind)?;
    }
    panic!("fault at {va:#x} resolved but the PTE still refuses a {kind:?} access");
}
