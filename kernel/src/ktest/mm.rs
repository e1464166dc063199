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

// ---------------------------------------------------------------------------------------------
// The same rules driven by real page faults: the CPU walks cowlab-mm's tables, raises #PF, the
// trap handler calls `vm::handle_page_fault`, and the access is retried by the hardware. The
// accesses are extable probes so that a refused access (SIGSEGV for a process) comes back as an
// `Err` instead of killing the kernel.
// ---------------------------------------------------------------------------------------------

use alloc::sync::Arc;
use cowlab_mm::addr::PhysAddr;
use cowlab_mm::check::check_invariants;
use cowlab_mm::frame::FrameFlags;
use cowlab_mm::madvise::Advice;
use cowlab_mm::pin::pin_user_page;
use cowlab_mm::Era;

use crate::vm;

/// An address space for a test, shared the way a process's is.
struct Hw {
    space: vm::SharedAddressSpace,
}

fn err(what: &str, e: &dyn core::fmt::Debug) -> TestFailure {
    TestFailure(alloc::format!("{what}: {e:?}"))
}

impl Hw {
    fn new() -> Result<Hw, TestFailure> {
        let aspace = AddressSpace::new(memory::mm()).map_err(|e| err("AddressSpace::new", &e))?;
        Ok(Hw {
            space: crate::vm::share(aspace),
        })
    }

    /// A private anonymous read-write mapping of `pages` pages.
    fn map_anon(&self, pages: usize) -> Result<VirtAddr, TestFailure> {
        let flags = MapFlags::PRIVATE | MapFlags::ANONYMOUS;
        self.space
            .write()
            .mmap(
                memory::mm(),
                VirtAddr::zero(),
                pages * PAGE_SIZE,
                Prot::RW,
                flags,
            )
            .map_err(|e| err("mmap", &e))
    }

    /// Runs `f` with this address space loaded in CR3, then returns to the previous one.
    fn on_cpu<R>(&self, f: impl FnOnce() -> R) -> R {
        let previous = vm::switch_to(Some(self.space.clone()));
        let result = f();
        vm::switch_to(previous);
        result
    }

    fn read(&self, va: VirtAddr) -> Result<u8, Fault> {
        self.on_cpu(|| extable::probe_read_u8(va.as_u64()))
    }

    fn write(&self, va: VirtAddr, value: u8) -> Result<(), Fault> {
        // SAFETY: `va` is a user address of this test's own address space; nothing in the
        // kernel lives there, so a successful write can only change the test's own page.
        self.on_cpu(|| unsafe { extable::probe_write_u8(va.as_u64(), value) })
    }

    /// The frame mapped at `va` and whether its PTE is writable.
    fn pte(&self, va: VirtAddr) -> Option<(PhysAddr, bool)> {
        let pte = self.space.read_ptl().translate(memory::mm(), va)?;
        pte.is_present().then(|| (pte.frame(), pte.is_writable()))
    }

    fn minor_faults(&self) -> u64 {
        self.space.read_ptl().minor_faults()
    }

    fn fork(&self) -> Result<Hw, TestFailure> {
        let child = self
            .space
            .write()
            .fork(memory::mm())
            .map_err(|e| err("fork", &e))?;
        Ok(Hw {
            space: crate::vm::share(child),
        })
    }

    fn exit(self) {
        let aspace = Arc::into_inner(self.space).expect("a test address space has one owner");
        aspace.into_inner().exit(memory::mm());
    }
}

/// Runs the invariant checker of SEMANTICS.md section 1 over `spaces`.
fn check(spaces: &[&Hw]) -> TestResult {
    // Several locks of one class at once: try-locks (no order to record; nothing else runs).
    let guards: alloc::vec::Vec<_> = spaces
        .iter()
        .map(|s| {
            s.space
                .try_write()
                .expect("a test address space is unlocked")
        })
        .collect();
    let refs: alloc::vec::Vec<&AddressSpace> = guards.iter().map(|g| &**g).collect();
    check_invariants(memory::mm(), &refs).map_err(TestFailure)
}

fn frames_back(free_before: usize) -> TestResult {
    let free_after = memory::frames().free_frames();
    ensure!(
        free_after == free_before,
        "{free_before} frames free before, {free_after} after teardown"
    );
    Ok(())
}

fn is_exclusive(frame: PhysAddr) -> bool {
    let meta = memory::frames().meta(frame);
    meta.flags().contains(FrameFlags::ANON_EXCLUSIVE)
}

/// Demand paging through real #PF: a read of untouched memory maps the shared zero page
/// read-only, the following write replaces it with a private zero-filled exclusive page, each
/// fault counts once, and teardown returns every frame.
pub fn hw_fault_zero_page_then_write() -> TestResult {
    let free_before = memory::frames().free_frames();
    let hw = Hw::new()?;
    let va = hw.map_anon(4)?;
    let zero = memory::mm().zero_page();
    for i in 0..4u64 {
        let page = va + i * PAGE_SIZE as u64;
        ensure!(hw.read(page) == Ok(0), "untouched page {i} did not read 0");
        ensure!(
            hw.pte(page) == Some((zero, false)),
            "read fault on page {i} did not map the zero page read-only: {:?}",
            hw.pte(page)
        );
        ensure!(
            hw.write(page + 7, 0x5a) == Ok(()),
            "write to page {i} faulted for good"
        );
        let (frame, writable) = hw
            .pte(page)
            .ok_or_else(|| err("no PTE after write", &page))?;
        ensure!(
            frame != zero && writable,
            "write did not install a private writable page"
        );
        ensure!(
            is_exclusive(frame),
            "a freshly zero-filled page is not ANON_EXCLUSIVE"
        );
        ensure!(
            hw.read(page) == Ok(0) && hw.read(page + 7) == Ok(0x5a),
            "page {i} contents"
        );
    }
    ensure!(
        hw.minor_faults() == 8,
        "{} minor faults, expected 8",
        hw.minor_faults()
    );
    check(&[&hw])?;
    hw.exit();
    frames_back(free_before)
}

/// fork then COW on the hardware (SEMANTICS.md sections 3 and 5): the child reads the parent's
/// data without faulting, the child's write copies, the parent's later write reuses its page
/// because the count proves it unshared, and a parent write while the child still maps the page
/// copies on the parent's side. Neither process ever sees the other's writes.
pub fn hw_fork_cow_isolation() -> TestResult {
    let free_before = memory::frames().free_frames();
    let parent = Hw::new()?;
    let va = parent.map_anon(2)?;
    let (p0, p1) = (va, va + PAGE_SIZE as u64);
    ensure!(
        parent.write(p0, 0x11) == Ok(()) && parent.write(p1, 0x22) == Ok(()),
        "setup"
    );
    let child = parent.fork()?;
    let (f0, _) = parent.pte(p0).ok_or_else(|| err("no PTE", &p0))?;
    let (f1, _) = parent.pte(p1).ok_or_else(|| err("no PTE", &p1))?;
    ensure!(
        parent.pte(p0) == Some((f0, false)) && child.pte(p0) == Some((f0, false)),
        "after fork both must map the same page read-only"
    );
    ensure!(
        !is_exclusive(f0),
        "fork left the shared page ANON_EXCLUSIVE"
    );
    check(&[&parent, &child])?;

    let child_faults = child.minor_faults();
    ensure!(
        child.read(p0) == Ok(0x11),
        "child does not see the parent's data"
    );
    ensure!(
        child.minor_faults() == child_faults,
        "a read of a shared page faulted"
    );
    ensure!(child.write(p0, 0x33) == Ok(()), "child write");
    let (c0, cw) = child.pte(p0).ok_or_else(|| err("no PTE", &p0))?;
    ensure!(
        c0 != f0 && cw,
        "child write did not get its own writable copy"
    );
    ensure!(
        parent.read(p0) == Ok(0x11),
        "the child's write leaked into the parent"
    );

    let stats = memory::mm().stats();
    ensure!(parent.write(p0, 0x44) == Ok(()), "parent write");
    ensure!(
        parent.pte(p0) == Some((f0, true)),
        "the parent's page is unshared after the child's copy and must be reused, not copied"
    );
    ensure!(
        memory::mm().stats().wp_reuses_proven == stats.wp_reuses_proven + 1,
        "reuse not counted as proven by refcount"
    );
    ensure!(
        child.read(p0) == Ok(0x33),
        "the parent's write leaked into the child"
    );

    ensure!(
        parent.write(p1, 0x55) == Ok(()),
        "parent write to a page the child still maps"
    );
    let (pf1, _) = parent.pte(p1).ok_or_else(|| err("no PTE", &p1))?;
    ensure!(
        pf1 != f1 && child.pte(p1) == Some((f1, false)),
        "parent-side COW copy"
    );
    ensure!(child.read(p1) == Ok(0x22), "child lost its view of page 1");
    check(&[&parent, &child])?;
    child.exit();
    parent.exit();
    frames_back(free_before)
}

/// fork of an exclusive, pinned page (`fork_must_copy`): the child gets a copy at fork time and
/// the parent keeps its page mapped writable, so a device writing through the pin and the parent
/// writing through its PTE stay coherent.
pub fn hw_fork_copies_pinned_page() -> TestResult {
    let free_before = memory::frames().free_frames();
    let parent = Hw::new()?;
    let va = parent.map_anon(1)?;
    ensure!(parent.write(va, 0x66) == Ok(()), "setup");
    let (frame, _) = parent.pte(va).ok_or_else(|| err("no PTE", &va))?;
    let pin =
        pin_user_page(memory::mm(), &mut parent.space.write(), va).map_err(|e| err("pin", &e))?;
    let child = parent.fork()?;
    let (child_frame, _) = child.pte(va).ok_or_else(|| err("child PTE", &va))?;
    ensure!(
        child_frame != frame,
        "fork shared a pinned page instead of copying it"
    );
    ensure!(
        parent.pte(va) == Some((frame, true)),
        "parent lost its writable pinned page"
    );
    let faults = parent.minor_faults();
    ensure!(parent.write(va, 0x77) == Ok(()), "parent write");
    ensure!(
        parent.minor_faults() == faults,
        "parent write to its pinned page faulted"
    );
    // SAFETY: a one-byte read of the pinned frame through the physical-memory window.
    let through_pin = unsafe { memory::phys_to_virt(pin.frame()).read_volatile() };
    ensure!(
        through_pin == 0x77,
        "the pin does not see the parent's write"
    );
    ensure!(
        child.read(va) == Ok(0x66),
        "the child sees a write made after fork"
    );
    check(&[&parent, &child])?;
    pin.unpin(memory::mm());
    child.exit();
    parent.exit();
    frames_back(free_before)
}

/// mprotect R/O then R/W (SEMANTICS.md section 4): the exclusive page is writable again at once,
/// the page shared with a child stays read-only until a write fault copies it.
pub fn hw_mprotect_exclusive_vs_shared() -> TestResult {
    let free_before = memory::frames().free_frames();
    let parent = Hw::new()?;
    let va = parent.map_anon(2)?;
    let (exclusive, shared) = (va, va + PAGE_SIZE as u64);
    ensure!(parent.write(shared, 1) == Ok(()), "setup");
    let child = parent.fork()?;
    ensure!(parent.write(exclusive, 2) == Ok(()), "setup");
    let len = 2 * PAGE_SIZE;
    let mm = memory::mm();
    parent
        .space
        .write()
        .mprotect(mm, va, len, Prot::READ)
        .map_err(|e| err("mprotect R", &e))?;
    let denied = parent.write(exclusive, 3);
    ensure!(denied.is_err(), "write to a PROT_READ page succeeded");
    parent
        .space
        .write()
        .mprotect(mm, va, len, Prot::RW)
        .map_err(|e| err("mprotect RW", &e))?;
    ensure!(
        parent.pte(exclusive).is_some_and(|(_, w)| w),
        "the exclusive page did not become writable without a fault"
    );
    ensure!(
        parent.pte(shared).is_some_and(|(_, w)| !w),
        "the shared page became writable without a fault"
    );
    let faults = parent.minor_faults();
    ensure!(parent.write(exclusive, 4) == Ok(()), "write");
    ensure!(
        parent.minor_faults() == faults,
        "write to the exclusive page faulted"
    );
    ensure!(parent.write(shared, 5) == Ok(()), "write");
    ensure!(
        parent.minor_faults() == faults + 1,
        "write to the shared page did not fault"
    );
    ensure!(
        child.read(shared) == Ok(1),
        "the parent's write reached the child"
    );
    check(&[&parent, &child])?;
    child.exit();
    parent.exit();
    frames_back(free_before)
}

/// Bad accesses are refused, not resolved: a write to a PROT_READ mapping is a protection fault,
/// an access where nothing is mapped a not-present one, each reported with the right address and
/// error code, and the kernel runs on.
pub fn hw_bad_access_is_refused() -> TestResult {
    let free_before = memory::frames().free_frames();
    let hw = Hw::new()?;
    let flags = MapFlags::PRIVATE | MapFlags::ANONYMOUS;
    let ro = hw
        .space
        .write()
        .mmap(memory::mm(), VirtAddr::zero(), PAGE_SIZE, Prot::READ, flags)
        .map_err(|e| err("mmap", &e))?;
    ensure!(hw.read(ro) == Ok(0), "PROT_READ page does not read zero");
    let write = hw.write(ro, 1);
    let expected = Fault::Page {
        addr: ro.as_u64(),
        error: PageFaultError(PageFaultError::PRESENT | PageFaultError::WRITE),
    };
    ensure!(write == Err(expected), "write to PROT_READ gave {write:?}");
    let hole = VirtAddr::new(0x1000_0000);
    let read = hw.read(hole);
    let expected = Fault::Page {
        addr: hole.as_u64(),
        error: PageFaultError(0),
    };
    ensure!(
        read == Err(expected),
        "read of an unmapped address gave {read:?}"
    );
    ensure!(
        hw.pte(hole).is_none(),
        "a refused fault left a mapping behind"
    );
    check(&[&hw])?;
    hw.exit();
    frames_back(free_before)
}

/// MADV_DONTNEED drops private anonymous pages: the memory reads back as zeros (through a new
/// zero-page fault) and the frames go back to the allocator at once.
pub fn hw_madv_dontneed_reads_zero() -> TestResult {
    let hw = Hw::new()?;
    let va = hw.map_anon(8)?;
    let free_before = memory::frames().free_frames();
    for i in 0..8u64 {
        ensure!(hw.write(va + i * PAGE_SIZE as u64, 0x99) == Ok(()), "write");
    }
    let used = free_before - memory::frames().free_frames();
    ensure!(used >= 8, "8 written pages took only {used} frames");
    let mm = memory::mm();
    hw.space
        .write()
        .madvise(mm, va, 8 * PAGE_SIZE, Advice::DontNeed)
        .map_err(|e| err("madvise", &e))?;
    // The page-table pages stay; the eight data frames are back.
    let back = memory::frames().free_frames() + used - free_before;
    ensure!(
        back >= 8,
        "only {back} of 8 frames came back after MADV_DONTNEED"
    );
    for i in 0..8u64 {
        ensure!(
            hw.read(va + i * PAGE_SIZE as u64) == Ok(0),
            "page {i} not zero"
        );
    }
    check(&[&hw])?;
    hw.exit();
    Ok(())
}

/// Switching the rule set at run time changes the write-fault decision on the hardware
/// (SEMANTICS.md section 9): a page shared by fork, then left with one mapping but an extra
/// plain reference (what O_DIRECT held with FOLL_GET), is reused in place under the 2009
/// `mapcount == 1` rule — the reference holder sees the write — and copied under the 2023 rule,
/// where `refcount == 1` fails and the page is not exclusive.
pub fn hw_era_switch_changes_reuse() -> TestResult {
    let mm = memory::mm();
    let saved = mm.era();
    let mut outcome = [false; 2];
    for (i, era) in [Era::Y2009, Era::Y2023].into_iter().enumerate() {
        mm.set_era(era);
        let parent = Hw::new()?;
        let va = parent.map_anon(1)?;
        ensure!(parent.write(va, 1) == Ok(()), "setup");
        let child = parent.fork()?;
        let reference = cowlab_mm::pin::get_user_page(mm, &mut parent.space.write(), va)
            .map_err(|e| err("get_user_page", &e))?;
        child.exit();
        ensure!(parent.write(va, 2) == Ok(()), "parent write");
        let (frame, _) = parent.pte(va).ok_or_else(|| err("no PTE", &va))?;
        outcome[i] = frame == reference.frame();
        reference.unpin(mm);
        parent.exit();
    }
    mm.set_era(saved);
    ensure!(outcome[0], "2009 rules copied a page with mapcount == 1");
    ensure!(
        !outcome[1],
        "2023 rules reused a non-exclusive page with an extra reference"
    );
    Ok(())
}
