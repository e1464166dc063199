//! The emulated CPU: user-mode loads, stores and instruction fetches through the real tables.
//!
//! Picture: each access is translated as an x86_64 core would — TLB first, else a 4-level walk
//! that requires `PRESENT` at every level, accumulates `USER`, `WRITABLE` and `NO_EXECUTE`
//! across levels, sets accessed bits and, on a write, the dirty bit. A refused access becomes a
//! page fault with the hardware error code, delivered to the kernel's real entry point
//! [`handle_x86_page_fault`]; on success the access is retried, like an `iret` to the faulting
//! instruction. A SIGSEGV verdict comes back as [`UserFault`].

use core::sync::atomic::Ordering;

use crate::addr::{PhysAddr, VirtAddr};
use crate::aspace::AddressSpace;
use crate::error::FaultError;
use crate::fault::{handle_x86_page_fault, x86_error};
use crate::host::tlb::TlbEntry;
use crate::host::{current_cpu, HostArch, Instruction};
use crate::mm::Mm;
use crate::pagetable::Pte;
use crate::PAGE_SIZE;

/// A user access the kernel refused (the process would get SIGSEGV) or could not serve (OOM).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UserFault {
    pub va: VirtAddr,
    pub error: FaultError,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    Read,
    Write,
    Fetch,
}

/// A fault handler that reports success must make the retry succeed (or fault differently)
/// within this many attempts; more means it is not fixing the PTE.
const MAX_ATTEMPTS: usize = 4;

/// `buf.len()` bytes at `va`, read in user mode.
pub fn user_read(
    mm: &Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    buf: &mut [u8],
) -> Result<(), UserFault> {
    let mut done = 0;
    while done < buf.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(buf.len() - done);
        let (pa, _instruction) = access(mm, aspace, at, Access::Read)?;
        mm.arch().copy_out(pa, &mut buf[done..done + n]);
        done += n;
    }
    Ok(())
}

/// Writes `data` at `va` in user mode.
pub fn user_write(
    mm: &Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    data: &[u8],
) -> Result<(), UserFault> {
    let mut done = 0;
    while done < data.len() {
        let at = va + done as u64;
        let n = (PAGE_SIZE - at.page_offset()).min(data.len() - done);
        let (pa, _instruction) = access(mm, aspace, at, Access::Write)?;
        mm.arch().copy_in(pa, &data[done..done + n]);
        done += n;
    }
    Ok(())
}

/// Fetches an instruction byte at `va` in user mode (checks `NO_EXECUTE`).
pub fn user_exec(
    mm: &Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
) -> Result<u8, UserFault> {
    let (pa, _instruction) = access(mm, aspace, va, Access::Fetch)?;
    let mut b = [0u8];
    mm.arch().copy_out(pa, &mut b);
    Ok(b[0])
}

/// Convenience: one little-endian `u64` at `va`.
pub fn read_u64(
    mm: &Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
) -> Result<u64, UserFault> {
    let mut b = [0u8; 8];
    user_read(mm, aspace, va, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Convenience: one little-endian `u64` at `va`.
pub fn write_u64(
    mm: &Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    v: u64,
) -> Result<(), UserFault> {
    user_write(mm, aspace, va, &v.to_le_bytes())
}

/// Translates one access, faulting into the kernel until it succeeds or is refused. The
/// translation and the access through it are one instruction: the returned guard holds off
/// shootdowns to this CPU until the caller has copied (the fault handler runs outside it, as
/// it may itself wait for other CPUs).
fn access<'m>(
    mm: &'m Mm<HostArch>,
    aspace: &mut AddressSpace,
    va: VirtAddr,
    kind: Access,
) -> Result<(PhysAddr, Instruction<'m>), UserFault> {
    // Running this space on this CPU: its bit is set before the first walk, as the scheduler
    // sets it before loading CR3.
    aspace.mm_cpumask_set(current_cpu());
    for _ in 0..MAX_ATTEMPTS {
        let instruction = mm.arch().instruction();
        match mm.arch().translate(aspace.root(), va, kind) {
            Ok(pa) => return Ok((pa, instruction)),
            Err(code) => {
                drop(instruction);
                handle_x86_page_fault(mm, aspace, va.as_u64(), code)
                    .map_err(|error| UserFault { va, error })?
            }
        }
    }
    panic!(
        "fault at {va:#x} ({kind:?}) still unresolved after {MAX_ATTEMPTS} attempts: \
         the fault handler reports success without fixing the PTE"
    );
}

impl HostArch {
    /// The MMU: a TLB hit or a page walk; `Err(error_code)` for a page fault.
    fn translate(&self, root: PhysAddr, va: VirtAddr, kind: Access) -> Result<PhysAddr, u64> {
        let mut code = x86_error::USER;
        match kind {
            Access::Write => code |= x86_error::WRITE,
            Access::Fetch => code |= x86_error::INSTRUCTION,
            Access::Read => {}
        }
        let offset = va.page_offset() as u64;
        if let Some(e) = self.tlb().lookup(root, va) {
            if !permits(&e, kind) {
                // A fault invalidates the translations of the faulting address (SDM 4.10.4.1).
                self.tlb().flush_page(root, va);
                return Err(code | x86_error::PROTECTION);
            }
            // A write through a clean entry needs a walk to set the dirty bit; everything else
            // is served from the TLB — even if the PTE changed, which is why flushes matter.
            if kind != Access::Write || e.dirty {
                return Ok(e.frame + offset);
            }
        }
        if !va.is_canonical() {
            // A #GP on hardware; treated as a not-present fault on a kernel address.
            return Err(code);
        }
        let mut table = root;
        let mut user = true;
        let mut writable = true;
        let mut executable = true;
        let mut level = 4u8;
        // Entries used by the walk; their accessed bits are set once the translation succeeds.
        let mut used = [PhysAddr::zero(); 4];
        let (leaf_slot, frame, dirty) = loop {
            let slot = table + (va.table_index(level) * 8) as u64;
            let e = Pte::from_raw(self.word(slot).load(Ordering::Acquire));
            if !e.is_present() {
                return Err(code);
            }
            user &= e.has(Pte::USER);
            writable &= e.has(Pte::WRITABLE);
            executable &= !e.has(Pte::NO_EXECUTE);
            used[4 - level as usize] = slot;
            if level == 1 {
                break (slot, e.frame(), e.is_dirty());
            }
            if e.has(Pte::HUGE) && level <= 3 {
                let span = 1u64 << (12 + 9 * (level as u32 - 1));
                let within = va.as_u64() & (span - 1) & !(PAGE_SIZE as u64 - 1);
                break (slot, e.frame() + within, e.is_dirty());
            }
            table = e.frame();
            level -= 1;
        };
        let entry = TlbEntry {
            frame,
            writable,
            user,
            executable,
            // The TLB caches the dirty state it saw or set.
            dirty: dirty || kind == Access::Write,
        };
        if !permits(&entry, kind) {
            return Err(code | x86_error::PROTECTION);
        }
        for &slot in used.iter().take(5 - level as usize) {
            self.word(slot).fetch_or(Pte::ACCESSED, Ordering::AcqRel);
        }
        if kind == Access::Write {
            self.word(leaf_slot).fetch_or(Pte::DIRTY, Ordering::AcqRel);
        }
        self.tlb().insert(root, va, entry);
        Ok(frame + offset)
    }
}

fn permits(e: &TlbEntry, kind: Access) -> bool {
    e.user
        && match kind {
            Access::Read => true,
            Access::Write => e.writable,
            Access::Fetch => e.executable,
        }
}

/// Reads `buf.len()` bytes at `va` (within one page) straight through the page tables, without
/// the TLB, faults or accessed bits: what the memory holds, for test oracles. `None` if no
/// frame is mapped there.
pub fn peek(mm: &Mm<HostArch>, aspace: &AddressSpace, va: VirtAddr, buf: &mut [u8]) -> Option<()> {
    assert!(
        va.page_offset() + buf.len() <= PAGE_SIZE,
        "peek crosses a page"
    );
    let pte = aspace.translate(mm, va)?;
    mm.arch()
        .copy_out(pte.frame() + va.page_offset() as u64, buf);
    Some(())
}
