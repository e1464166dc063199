//! Tests of the user-memory path: user copies fault into the memory manager or come back as
//! EFAULT (never a kernel crash), and the ELF loader accepts our programs and refuses garbage.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::sync::Arc;

use cowlab_mm::{AddressSpace, MapFlags, Prot, VirtAddr};

use super::{ensure, TestResult};
use crate::errno::Errno;
use crate::uaccess::{UserPtr, UserSlice};
use crate::{elf, memory, ramdisk, vm};

/// Kernel addresses and ranges that wrap or cross into the kernel half are refused up front;
/// an unmapped user address (boot page table: no user mappings) faults and is EFAULT.
pub fn user_copy_bad_pointers_are_efault() -> TestResult {
    ensure!(
        UserSlice::new(0xffff_ffff_8000_0000, 8).err() == Some(Errno::EFAULT),
        "kernel address accepted"
    );
    ensure!(
        UserSlice::new(0x7fff_ffff_f000, 0x2000).err() == Some(Errno::EFAULT),
        "range crossing USER_END accepted"
    );
    ensure!(
        UserSlice::new(u64::MAX - 4, 16).err() == Some(Errno::EFAULT),
        "wrapping range accepted"
    );
    let mut buf = [0u8; 16];
    let slice =
        UserSlice::new(0x1000, 16).map_err(|e| super::TestFailure(alloc::format!("{e:?}")))?;
    ensure!(
        slice.read(&mut buf) == Err(Errno::EFAULT),
        "read of unmapped user memory did not fail with EFAULT"
    );
    ensure!(
        slice.write(&buf) == Err(Errno::EFAULT),
        "write to unmapped user memory did not fail with EFAULT"
    );
    Ok(())
}

/// In a real address space: copies demand-fault pages in, a read-only page refuses a write,
/// an unmapped page is EFAULT; then every frame goes back.
pub fn user_copy_through_page_faults() -> TestResult {
    let mm = memory::mm();
    let before = memory::frames().free_frames();
    let mut aspace =
        AddressSpace::new(mm).map_err(|e| super::TestFailure(alloc::format!("{e:?}")))?;
    let base = 0x1000_0000u64;
    let flags = MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED;
    let mapped = aspace
        .mmap(mm, VirtAddr::new(base), 2 * 4096, Prot::RW, flags)
        .is_ok()
        && aspace
            .mprotect(mm, VirtAddr::new(base + 4096), 4096, Prot::READ)
            .is_ok();
    ensure!(mapped, "mmap/mprotect failed");
    let shared = crate::vm::share(aspace);
    let previous = vm::switch_to(Some(shared.clone()));
    let result = (|| {
        let ptr = UserPtr::<u64>::new(base + 8)?;
        ptr.write(&0xdead_beef)?;
        let back = ptr.read()?;
        let ro = UserPtr::<u64>::new(base + 4096)?.write(&1);
        let unmapped = UserPtr::<u64>::new(base + 3 * 4096)?.read();
        // Partial copies stop exactly at the refused byte, also when the fault hits the
        // quadword part of the copy (then the 0-7 bytes before the fault address are copied
        // alone; byte by byte only after a #GP): 13 bytes fit before the
        // read-only page, 21 before the unmapped one, and 3 before it on a short copy.
        let partial = [
            UserSlice::new(base + 4096 - 13, 64)?.write_partial(&[0x5a; 64]),
            UserSlice::new(base + 2 * 4096 - 21, 100)?.read_partial(&mut [0; 100]),
            UserSlice::new(base + 2 * 4096 - 3, 7)?.read_partial(&mut [0; 7]),
        ];
        Ok::<_, Errno>((back, ro, unmapped, partial))
    })();
    drop(vm::switch_to(previous));
    let aspace = Arc::try_unwrap(shared)
        .map_err(|_| super::TestFailure(String::from("address space still shared")))?
        .into_inner();
    aspace.exit(mm);
    let (back, ro, unmapped, partial) =
        result.map_err(|e| super::TestFailure(alloc::format!("{e:?}")))?;
    ensure!(partial == [13, 21, 3], "partial copies: {partial:?}");
    ensure!(back == 0xdead_beef, "read back {back:#x}");
    ensure!(
        ro == Err(Errno::EFAULT),
        "write to a read-only page: {ro:?}"
    );
    ensure!(unmapped.is_err(), "read of an unmapped page succeeded");
    let after = memory::frames().free_frames();
    ensure!(after == before, "frames: {before} before, {after} after");
    Ok(())
}

/// The ELF loader maps `init` from the ramdisk and refuses a file that is not an ELF.
pub fn elf_loader_accepts_init_refuses_garbage() -> TestResult {
    let mm = memory::mm();
    let before = memory::frames().free_frames();
    let init = ramdisk::find("init")
        .ok_or_else(|| super::TestFailure(String::from("no init in the ramdisk")))?;
    let argv = crate::proc::args::ArgStrings::from_strs(["init"]);
    let envp = crate::proc::args::ArgStrings::default();
    let mut aspace =
        AddressSpace::new(mm).map_err(|e| super::TestFailure(alloc::format!("{e:?}")))?;
    let loaded = elf::load(&mut aspace, init.data, &argv, &envp, "init");
    let stack_ok = loaded
        .as_ref()
        .is_ok_and(|l| l.stack_pointer % 16 == 0 && l.stack_pointer < elf::STACK_TOP);
    let entry = loaded.as_ref().map(|l| l.entry).unwrap_or(0);
    aspace.exit(mm);
    ensure!(stack_ok, "load failed or bad stack pointer");
    ensure!((0x40_0000..0x50_0000).contains(&entry), "entry {entry:#x}");
    let mut aspace =
        AddressSpace::new(mm).map_err(|e| super::TestFailure(alloc::format!("{e:?}")))?;
    let garbage = elf::load(&mut aspace, b"#!/bin/sh\nnot an elf\n", &argv, &envp, "x");
    aspace.exit(mm);
    ensure!(
        garbage.is_err_and(|e| e == Errno::ENOEXEC),
        "garbage was not ENOEXEC"
    );
    let after = memory::frames().free_frames();
    ensure!(after == before, "frames: {before} before, {after} after");
    Ok(())
}

/// The system-call argument narrowing table (`syscall::abi::NARROWS`, built at compile time from
/// `widths`) narrows every call's registers as `widths` says, and a call with 32-bit arguments
/// really gets them narrowed (so the comparison is not between two no-ops).
pub fn syscall_narrow_table_matches_widths() -> TestResult {
    use crate::syscall::abi;
    let mismatch = abi::first_table_mismatch();
    ensure!(
        mismatch.is_none(),
        "call {mismatch:?} narrowed unlike widths()"
    );
    // openat(int dfd, path, int flags, umode_t mode)
    let mut regs = [
        0xffff_ffff_ffff_ff9c_u64 & 0x0000_0000_ffff_ffff,
        7,
        0x1_0000_0002,
        0x1_0000_01a4,
        5,
        6,
    ];
    abi::narrow(257, &mut regs);
    ensure!(
        regs == [0xffff_ffff_ffff_ff9c, 7, 2, 0x1a4, 5, 6],
        "openat narrowed to {regs:x?}"
    );
    Ok(())
}
