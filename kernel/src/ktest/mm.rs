//! Tests of `cowlab-mm` on the real MMU: its page tables, loaded in CR3, translate for the CPU.

use cowlab_mm::addr::VirtAddr;
use cowlab_mm::{handle_mm_fault, AddressSpace, FaultKind, MapFlags, Prot, PAGE_SIZE};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::PhysFrame;

use super::{ensure, TestFailure, TestResult};
use crate::extable::{self, Fault, PageFaultError};
use crate::memory;

/// An address space built by `cowlab-mm` works when loaded: the kernel keeps running on its
/// copied kernel half, a write-faulted anonymous page holds what the CPU writes through the
/// user address, a read-faulted one is the shared zero page and write-protected, and tearing the
/// address space down gives back every frame.
pub fn mm_address_space_on_hardware() -> TestResult {
    let mm = memory::mm();
    let frames = memory::frames();
    let free_before = frames.free_frames();
    let fail = |what: &str, e: &dyn core::fmt::Debug| TestFailure(alloc::format!("{what}: {e:?}"));

    let mut aspace = AddressSpace::new(mm).map_err(|e| fail("AddressSpace::new", &e))?;
    let len = 2 * PAGE_SIZE;
    let flags = MapFlags::PRIVATE | MapFlags::ANONYMOUS;
    let va = aspace
        .mmap(mm, VirtAddr::zero(), len, Prot::RW, flags)
        .map_err(|e| fail("mmap", &e))?;
    let second = va + PAGE_SIZE as u64;
    handle_mm_fault(mm, &mut aspace, va, FaultKind::Write).map_err(|e| fail("write fault", &e))?;
    handle_mm_fault(mm, &mut aspace, second, FaultKind::Read)
        .map_err(|e| fail("read fault", &e))?;

    // Run on the new page tables; restore CR3 before judging anything.
    let (boot_root, cr3_flags) = Cr3::read();
    let new_root = PhysFrame::containing_address(x86_64::PhysAddr::new(aspace.root().as_u64()));
    // SAFETY: the new root's kernel half is a copy of the boot PML4's (AddressSpace::new), so
    // the kernel's code, data, stacks and the physical-memory window stay mapped identically.
    unsafe { Cr3::write(new_root, cr3_flags) };
    // SAFETY: `va` is our private anonymous page, mapped writable by the write fault above.
    let write = unsafe { extable::probe_write_u8(va.as_u64(), 0xab) };
    let read_back = extable::probe_read_u8(va.as_u64());
    let zero_read = extable::probe_read_u8(second.as_u64());
    // SAFETY: the second page maps the zero page read-only, so this write must fault; if it did
    // not, the test fails (and the zero page would no longer be zero, which it then reports).
    let zero_write = unsafe { extable::probe_write_u8(second.as_u64(), 0xcd) };
    // SAFETY: back to the boot page tables, which map everything the kernel uses.
    unsafe { Cr3::write(boot_root, cr3_flags) };

    ensure!(
        write == Ok(()),
        "write through the user address faulted: {write:?}"
    );
    ensure!(read_back == Ok(0xab), "read back {read_back:?}, wrote 0xab");
    ensure!(
        zero_read == Ok(0),
        "read of a read-faulted page gave {zero_read:?}, not zero"
    );
    let expected = Fault::Page {
        addr: second.as_u64(),
        error: PageFaultError(PageFaultError::PRESENT | PageFaultError::WRITE),
    };
    ensure!(
        zero_write == Err(expected),
        "write to the zero page gave {zero_write:?}"
    );

    let pte = aspace
        .translate(mm, va)
        .ok_or_else(|| fail("translate", &va))?;
    // SAFETY: the PTE's frame is our anonymous page, mapped at the offset; a one-byte read.
    let byte = unsafe { memory::phys_to_virt(pte.frame()).read_volatile() };
    ensure!(
        byte == 0xab,
        "the frame behind the PTE holds {byte:#x}, not 0xab"
    );

    aspace.exit(mm);
    let free_after = frames.free_frames();
    ensure!(
        free_after == free_before,
        "{free_before} frames free before, {free_after} after exit"
    );
    Ok(())
}
