//! Tests of the exception path: reported and recovered, never a triple fault.

use core::arch::asm;

use super::{ensure, TestResult};
use crate::extable::{self, Fault, PageFaultError};
use crate::idt;

/// An address in the kernel half that nothing maps: PML4 entry 508 is one of the PDPTs
/// `paging::init` pre-allocated empty (the kernel image is in entry 511, the bootloader's
/// dynamic mappings at the start of the upper half).
const UNMAPPED_KERNEL_ADDRESS: u64 = 0xffff_fe00_dead_b000;
/// The first non-canonical address above the lower half.
const NON_CANONICAL_ADDRESS: u64 = 0x0000_8000_0000_0000;

/// `int3` goes through the breakpoint handler, which counts it, and execution continues here.
pub fn breakpoint_is_reported_and_continues() -> TestResult {
    let before = idt::breakpoint_count();
    // SAFETY: int3 traps into our breakpoint handler, which returns to the next instruction;
    // no registers or memory change.
    unsafe { asm!("int3", options(nomem, nostack)) };
    let after = idt::breakpoint_count();
    ensure!(
        after == before + 1,
        "breakpoint count went from {before} to {after}"
    );
    Ok(())
}

/// A read of an unmapped kernel address (and of the null page) page-faults; the #PF handler finds
/// the probe's exception-table entry, reports and records the fault, and the probe returns it.
pub fn page_fault_is_recovered_not_triple_fault() -> TestResult {
    for address in [UNMAPPED_KERNEL_ADDRESS, 0] {
        let count = extable::recovered_count();
        let result = extable::probe_read_u8(address);
        let expected = Fault::Page {
            addr: address,
            error: PageFaultError(0),
        };
        ensure!(
            result == Err(expected),
            "probe_read_u8({address:#x}) returned {result:?}, expected a not-present read fault"
        );
        ensure!(
            extable::recovered_count() == count + 1,
            "the recovered fault was not counted"
        );
        let recorded = extable::last_recovered();
        ensure!(
            recorded.map(|r| r.fault) == Some(expected),
            "recorded fault is {recorded:?}, expected {expected:?}"
        );
    }
    Ok(())
}

/// A non-canonical address raises #GP, not #PF; the same fixup recovers it with error code 0.
pub fn non_canonical_access_is_recovered() -> TestResult {
    let result = extable::probe_read_u8(NON_CANONICAL_ADDRESS);
    let expected = Fault::GeneralProtection { error_code: 0 };
    ensure!(
        result == Err(expected),
        "probe of a non-canonical address returned {result:?}"
    );
    let recorded = extable::last_recovered().map(|r| r.fault);
    ensure!(recorded == Some(expected), "recorded fault is {recorded:?}");
    Ok(())
}

/// Read-only kernel data, the target of the write probe.
static READ_ONLY: u8 = 0x5a;

/// Writing read-only kernel data faults with P and W set (CR0.WP makes ring 0 honour R/O);
/// a read of the same byte succeeds.
pub fn probe_write_reports_write_fault() -> TestResult {
    let address = &READ_ONLY as *const u8 as u64;
    ensure!(
        extable::probe_read_u8(address) == Ok(0x5a),
        "probe_read_u8 of mapped kernel data failed"
    );
    // SAFETY: the byte is read-only data; if the write did go through it would store the value
    // the byte already has, and the test fails.
    let result = unsafe { extable::probe_write_u8(address, 0x5a) };
    let expected = Fault::Page {
        addr: address,
        error: PageFaultError(PageFaultError::PRESENT | PageFaultError::WRITE),
    };
    ensure!(
        result == Err(expected),
        "write to read-only kernel data returned {result:?}"
    );
    Ok(())
}
