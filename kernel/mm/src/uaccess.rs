//! Kernel access to a process's memory through its page tables (Linux `access_process_vm`
//! without `FOLL_FORCE`; what exec, `read`/`write` and signal delivery need).
//!
//! Picture: the kernel reads or writes user memory by translating each page through the
//! process's own page tables and copying through the physical-memory window, so it works for
//! any address space, loaded in CR3 or not. A page that is missing, or read-only for a write, is
//! faulted in exactly as a user access would be, so COW, the zero page and protections all
//! apply: the kernel never writes a page the process could not write itself.

#![deny(unsafe_code)]

use crate::addr::VirtAddr;
use crate::arch::Arch;
use crate::aspace::{AddressSpace, USER_END};
use crate::error::{FaultError, SegvReason};
use crate::fault::{handle_mm_fault, FaultKind};
use crate::mm::{Mm, UserReadable, UserWritable};
use crate::pagetable::Pte;
use crate::PAGE_SIZE;

/// Is `[va, va + len)` entirely user address space (Linux `access_ok`)? False for kernel-half
/// and non-canonical addresses (which the page-table walk would otherwise alias onto user
/// pages, since only bits 47..12 index the tables) and for ranges that wrap or end past
/// `USER_END`. Every path that takes a user address from outside (`copy_*_user`, GUP,
/// `access_process_vm_*`) checks it before touching a page table; after it, `va + n` for
/// `n <= len` cannot overflow.
pub fn access_ok(va: VirtAddr, len: usize) -> bool {
    let len = len as u64;
    len <= USER_END && va.as_u64() <= USER_END - len
}

/// The [`access_ok`] check as a fault: a bad range is `SEGV_MAPERR` (Linux `EFAULT`).
fn check_access(va: VirtAddr, len: usize) -> Result<(), FaultError> {
    if access_ok(va, len) {
        Ok(())
    } else {
        Err(FaultError::Segv(SegvReason::NoMapping))
    }
}

/// Copies `data` to user address `va` in `aspace` (Linux `copy_to_user` on another process).
/// On `Err` a prefix may have been written; nothing is if the range fails [`access_ok`].
pub fn copy_to_user<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    data: &[u8],
) -> Result<(), FaultError> {
    check_access(va, data.len())?;
    let mut done = 0;
    while done < data.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(data.len() - done);
        let pte = user_page(mm, aspace, at, FaultKind::Write)?;
        let dst = UserWritable::from_pte(pte, at).expect("user_page checked the PTE");
        mm.write_user_bytes(dst, &data[done..done + n]);
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
    check_access(va, buf.len())?;
    let mut done = 0;
    while done < buf.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(buf.len() - done);
        let pte = user_page(mm, aspace, at, FaultKind::Read)?;
        let src = UserReadable::from_pte(pte, at).expect("user_page checked the PTE");
        mm.read_user_bytes(src, &mut buf[done..done + n]);
        done += n;
    }
    Ok(())
}

/// The present user PTE of `va`, writable for a `Write`, faulted in for `kind` if needed.
fn user_page<A: Arch>(
    mm: &Mm<A>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: FaultKind,
) -> Result<Pte, FaultError> {
    // One fault resolves any access; the second look must succeed.
    for _ in 0..2 {
        if let Some(pte) = aspace.translate(mm, va) {
            let usable = pte.is_present()
                && pte.has(Pte::USER)
                && (kind != FaultKind::Write || pte.is_writable());
            if usable {
                return Ok(pte);
            }
        }
        handle_mm_fault(mm, aspace, va, kind)?;
    }
    panic!("fault at {va:#x} resolved but the PTE still refuses a {kind:?} access");
}
