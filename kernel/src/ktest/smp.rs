//! Tests of multiprocessor bring-up, inter-processor interrupts and TLB shootdowns. They pass on
//! one CPU too (every IPI then goes to the CPU itself), and are run with `--smp 2` and `4`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::addr::{PhysAddr, VirtAddr};
use cowlab_mm::PAGE_SIZE;
use x86_64::registers::control::Cr3;

use super::{ensure, TestResult};
use crate::percpu::{self, MAX_CPUS};
use crate::{apic, memory, smp};

/// A second, generous enough for a loaded host running TCG.
const TIMEOUT_US: u64 = 1_000_000;

static SEEN_APIC: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
static CALLS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn record_identity() {
    SEEN_APIC[percpu::cpu_id()].store(apic::id(), Ordering::Relaxed);
}

fn count_call() {
    CALLS[percpu::cpu_id()].fetch_add(1, Ordering::Relaxed);
}

fn online_cpus() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(|cpu| smp::online_mask() & (1 << cpu) != 0)
}

/// Every CPU the MADT lists came up, and each one, asked by IPI, answers from its own per-CPU
/// area (GS) with its own local APIC ID, all distinct.
pub fn smp_every_madt_cpu_online_with_its_own_percpu() -> TestResult {
    ensure!(
        smp::online_count() == smp::present_count(),
        "{} CPUs online of {} in the MADT",
        smp::online_count(),
        smp::present_count()
    );
    ensure!(
        percpu::cpu_id() == 0,
        "the boot CPU is CPU {}",
        percpu::cpu_id()
    );
    let mut ids = alloc::vec::Vec::new();
    for cpu in online_cpus() {
        SEEN_APIC[cpu].store(u32::MAX, Ordering::Relaxed);
        let result = smp::call::run_on(cpu, record_identity, TIMEOUT_US);
        ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
        let seen = SEEN_APIC[cpu].load(Ordering::Relaxed);
        ensure!(
            seen == smp::apic_id_of(cpu),
            "CPU {cpu} answered with local APIC {seen}, registered as {}",
            smp::apic_id_of(cpu)
        );
        ensure!(!ids.contains(&seen), "local APIC ID {seen} twice");
        ids.push(seen);
    }
    info!(
        "smp test: {} CPUs answered, local APIC IDs {ids:?}",
        ids.len()
    );
    Ok(())
}

/// 200 rounds of calls to every CPU in turn: every call runs exactly once, on its target, and
/// every target counted the IPIs.
pub fn smp_ipi_calls_run_once_on_their_target() -> TestResult {
    const ROUNDS: u64 = 200;
    let before: alloc::vec::Vec<(u64, u64)> = (0..MAX_CPUS)
        .map(|cpu| (CALLS[cpu].load(Ordering::Relaxed), smp::ipis_handled(cpu)))
        .collect();
    for _ in 0..ROUNDS {
        for cpu in online_cpus() {
            let result = smp::call::run_on(cpu, count_call, TIMEOUT_US);
            ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
        }
    }
    for cpu in online_cpus() {
        let calls = CALLS[cpu].load(Ordering::Relaxed) - before[cpu].0;
        let ipis = smp::ipis_handled(cpu) - before[cpu].1;
        ensure!(calls == ROUNDS, "CPU {cpu} ran {calls} calls of {ROUNDS}");
        ensure!(
            ipis >= ROUNDS,
            "CPU {cpu} handled {ipis} IPIs for {ROUNDS} calls"
        );
    }
    Ok(())
}

/// Where the shootdown test maps its page: a lower-half address of the boot PML4, unused before
/// `init` starts.
const PROBE_VA: u64 = 0x0000_7f00_0000_0000;
static PROBED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn read_probe() {
    // SAFETY: the test keeps PROBE_VA mapped (to one of its two frames) in the boot PML4, which
    // every CPU it calls has loaded, for as long as it calls this.
    let value = unsafe { (PROBE_VA as *const u64).read_volatile() };
    PROBED[percpu::cpu_id()].store(value, Ordering::Relaxed);
}

/// The boot PML4's page-table entry for PROBE_VA, allocating the levels above it (returned in
/// `tables` to be freed).
fn probe_pte(root: PhysAddr, tables: &mut alloc::vec::Vec<PhysAddr>) -> Option<*mut u64> {
    let mut table = root;
    for shift in [39u32, 30, 21] {
        let index = (PROBE_VA >> shift) as usize & 511;
        let entry = memory::phys_to_virt(table)
            .cast::<u64>()
            .wrapping_add(index);
        // SAFETY: `table` is a page-table frame of the boot PML4's lower half (the PML4 itself
        // or one this test allocated); index < 512; boot code alone touches the lower half.
        let value = unsafe { entry.read() };
        table = if value & 1 != 0 {
            PhysAddr::new(value & 0x000f_ffff_ffff_f000)
        } else {
            let frame = memory::frames().alloc()?;
            // SAFETY: a fresh frame, ours, mapped at the offset; then the entry above.
            unsafe {
                core::ptr::write_bytes(memory::phys_to_virt(frame), 0, PAGE_SIZE);
                entry.write(frame.as_u64() | 0b11);
            }
            tables.push(frame);
            frame
        };
    }
    let index = (PROBE_VA >> 12) as usize & 511;
    Some(
        memory::phys_to_virt(table)
            .cast::<u64>()
            .wrapping_add(index),
    )
}

/// A page every CPU has read (and cached) is remapped to another frame without a flush, then
/// `flush_tlb_cpus` for all online CPUs: every CPU must read the new frame afterwards. Reports
/// how many CPUs still saw the old frame before the flush (the stale TLB entries the shootdown
/// removed).
pub fn smp_tlb_shootdown_reaches_every_cpu() -> TestResult {
    let root = smp::boot_root();
    ensure!(
        Cr3::read().0.start_address().as_u64() == root.as_u64(),
        "the boot CPU does not run on the boot PML4, which the other CPUs have loaded"
    );
    let frames = memory::frames();
    let (Some(old), Some(new)) = (frames.alloc(), frames.alloc()) else {
        return Err(super::TestFailure("no frames for the probe".into()));
    };
    // SAFETY: two fresh frames, ours, mapped at the offset.
    unsafe {
        memory::phys_to_virt(old).cast::<u64>().write(0x01d0_01d0);
        memory::phys_to_virt(new).cast::<u64>().write(0x0e55_0e55);
    }
    let mut tables = alloc::vec::Vec::new();
    let result = (|| {
        let pte = probe_pte(root, &mut tables)
            .ok_or_else(|| super::TestFailure("no frames for the tables".into()))?;
        // SAFETY: the PT entry of PROBE_VA in the boot PML4 (found or built just above).
        unsafe { pte.write(old.as_u64() | 0b11) };
        let all_cpus = smp::online_mask();
        let flush = |all: bool| {
            let va = VirtAddr::new(PROBE_VA);
            let end = VirtAddr::new(PROBE_VA + PAGE_SIZE as u64);
            smp::shootdown::flush_tlb_cpus(all_cpus, root, va, end, all);
        };
        flush(false);
        for cpu in online_cpus() {
            let result = smp::call::run_on(cpu, read_probe, TIMEOUT_US);
            ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
            ensure!(
                PROBED[cpu].load(Ordering::Relaxed) == 0x01d0_01d0,
                "CPU {cpu} read the probe wrong"
            );
        }
        // SAFETY: as above; the old frame stays allocated, so stale entries read valid memory.
        unsafe { pte.write(new.as_u64() | 0b11) };
        let mut stale = 0;
        for cpu in online_cpus() {
            let result = smp::call::run_on(cpu, read_probe, TIMEOUT_US);
            ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
            stale += usize::from(PROBED[cpu].load(Ordering::Relaxed) == 0x01d0_01d0);
        }
        let sent = smp::shootdown::sent();
        flush(false);
        for cpu in online_cpus() {
            let result = smp::call::run_on(cpu, read_probe, TIMEOUT_US);
            ensure!(result.is_ok(), "call on CPU {cpu}: {result:?}");
            let value = PROBED[cpu].load(Ordering::Relaxed);
            ensure!(
                value == 0x0e55_0e55,
                "CPU {cpu} still reads {value:#x} after the shootdown"
            );
        }
        let remote = smp::shootdown::sent() - sent;
        ensure!(
            remote == (smp::online_count() - 1) as u64,
            "{remote} shootdown IPIs for {} other CPUs",
            smp::online_count() - 1
        );
        info!(
            "smp test: {} CPUs, {stale} with a stale translation before the shootdown, none after",
            smp::online_count()
        );
        // SAFETY: as above: unmap, then flush everywhere before the frames go back.
        unsafe { pte.write(0) };
        flush(true);
        Ok(())
    })();
    // The levels this test added, deepest first, once no CPU can use them (flushed above, or
    // never reached on failure paths before the write of the PT entry). A failure between the
    // two writes leaves the mapping: unmap and flush here too.
    if let Some(pte) = probe_pte_existing(root) {
        // SAFETY: the test's own PT entry.
        unsafe { pte.write(0) };
        smp::shootdown::flush_tlb_cpus(
            smp::online_mask(),
            root,
            VirtAddr::new(PROBE_VA),
            VirtAddr::new(PROBE_VA + PAGE_SIZE as u64),
            true,
        );
    }
    unlink_tables(root, &tables);
    frames.free(old);
    frames.free(new);
    result
}

/// The PT entry of PROBE_VA if all levels exist.
fn probe_pte_existing(root: PhysAddr) -> Option<*mut u64> {
    let mut table = root;
    for shift in [39u32, 30, 21] {
        let entry = memory::phys_to_virt(table)
            .cast::<u64>()
            .wrapping_add((PROBE_VA >> shift) as usize & 511);
        // SAFETY: as in `probe_pte`.
        let value = unsafe { entry.read() };
        if value & 1 == 0 {
            return None;
        }
        table = PhysAddr::new(value & 0x000f_ffff_ffff_f000);
    }
    Some(
        memory::phys_to_virt(table)
            .cast::<u64>()
            .wrapping_add((PROBE_VA >> 12) as usize & 511),
    )
}

/// Clears the entries pointing at `tables` (allocated top-down by `probe_pte`) and frees them.
fn unlink_tables(root: PhysAddr, tables: &[PhysAddr]) {
    let mut parent = root;
    let mut entries = alloc::vec::Vec::new();
    for shift in [39u32, 30, 21] {
        let entry = memory::phys_to_virt(parent)
            .cast::<u64>()
            .wrapping_add((PROBE_VA >> shift) as usize & 511);
        // SAFETY: as in `probe_pte`.
        let value = unsafe { entry.read() };
        if value & 1 == 0 {
            break;
        }
        let child = PhysAddr::new(value & 0x000f_ffff_ffff_f000);
        entries.push((entry, child));
        parent = child;
    }
    for (entry, child) in entries.into_iter().rev() {
        if tables.contains(&child) {
            // SAFETY: the entry leads to a table this test allocated and emptied; the flush of
            // everything above ran after the last use of the mapping.
            unsafe { entry.write(0) };
            memory::frames().free(child);
        }
    }
    let last = smp::online_mask();
    smp::shootdown::flush_tlb_cpus(last, root, VirtAddr::new(0), VirtAddr::new(0), true);
}

/// Every application processor takes its own local APIC timer tick at about 100 Hz: three
/// ticks each within two seconds (the calibration gave a non-zero count on any machine).
pub fn smp_local_apic_timer_ticks_on_every_ap() -> TestResult {
    ensure!(
        apic::counts_per_tick() > 0,
        "the local APIC timer was not calibrated"
    );
    let start = crate::time::rdtsc();
    let limit = crate::time::tsc_khz() * 2_000;
    for cpu in online_cpus().filter(|&cpu| cpu != 0) {
        let from = smp::local_ticks(cpu);
        while smp::local_ticks(cpu) < from + 3 {
            ensure!(
                crate::time::rdtsc() - start < limit,
                "CPU {cpu}: local timer ticks went from {from} to {} in two seconds",
                smp::local_ticks(cpu)
            );
            core::hint::spin_loop();
        }
    }
    Ok(())
}

/// `vm::switch_to` keeps `mm_cpumask` (Linux `switch_mm_irqs_off`): the bit of this CPU is set
/// in the space it loads and cleared in the one it leaves, and a reload of the same space keeps
/// it. A missed clear makes every later flush of the old space IPI this CPU; a missed set lets
/// a flush on another CPU skip this one while it caches the space's entries.
pub fn smp_switch_to_keeps_mm_cpumask() -> TestResult {
    use alloc::sync::Arc;
    use cowlab_mm::AddressSpace;
    let new_space = || {
        AddressSpace::new(memory::mm())
            .map(crate::vm::share)
            .map_err(|e| super::TestFailure(alloc::format!("AddressSpace::new: {e:?}")))
    };
    let (a, b) = (new_space()?, new_space()?);
    let bit = 1u64 << percpu::cpu_id();
    let mask = |s: &crate::vm::SharedAddressSpace| s.read_ptl().mm_cpumask();
    let previous = crate::vm::switch_to(Some(a.clone()));
    let after_a = (mask(&a), mask(&b));
    drop(crate::vm::switch_to(Some(b.clone())));
    let after_b = (mask(&a), mask(&b));
    drop(crate::vm::switch_to(Some(b.clone())));
    let after_b_again = mask(&b);
    drop(crate::vm::switch_to(previous));
    let after_back = (mask(&a), mask(&b));
    for space in [a, b] {
        match Arc::try_unwrap(space) {
            Ok(lock) => lock.into_inner().exit(memory::mm()),
            Err(_) => return Err(super::TestFailure("address space still referenced".into())),
        }
    }
    ensure!(after_a == (bit, 0), "after loading a: masks {after_a:x?}");
    ensure!(after_b == (0, bit), "after loading b: masks {after_b:x?}");
    ensure!(after_b_again == bit, "reloading b: mask {after_b_again:x}");
    ensure!(
        after_back == (0, 0),
        "after leaving both: masks {after_back:x?}"
    );
    Ok(())
}

/// `vm::switch_to` reads the root without the `mmap_lock` (Linux's `switch_mm` reads `mm->pgd`
/// unlocked): the idle loop switches into a task whose sibling may sleep holding the lock for
/// writing (a munmap waiting on a page lock). Taking it there slept on the idle stack or spun
/// forever with interrupts off; here the switch runs while this task holds the write side.
pub fn smp_switch_to_takes_no_mmap_lock() -> TestResult {
    use alloc::sync::Arc;
    let space = cowlab_mm::AddressSpace::new(memory::mm())
        .map(crate::vm::share)
        .map_err(|e| super::TestFailure(alloc::format!("AddressSpace::new: {e:?}")))?;
    let held = space.write();
    let previous = crate::vm::switch_to(Some(space.clone()));
    let loaded = x86_64::registers::control::Cr3::read()
        .0
        .start_address()
        .as_u64();
    drop(crate::vm::switch_to(previous));
    let root = held.root().as_u64();
    drop(held);
    match Arc::try_unwrap(space) {
        Ok(lock) => lock.into_inner().exit(memory::mm()),
        Err(_) => return Err(super::TestFailure("address space still referenced".into())),
    }
    ensure!(
        loaded == root,
        "CR3 {loaded:#x} after the switch, root {root:#x}"
    );
    Ok(())
}

static REENTERED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static RUNNING_SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// A posted function that spins for a lock services this CPU's requests meanwhile, as the
/// lock spins do (`locking::service_cross_cpu_requests`).
fn count_and_reenter() {
    let cpu = percpu::cpu_id();
    REENTERED[cpu].fetch_add(1, Ordering::Relaxed);
    RUNNING_SEEN[cpu].fetch_add(u64::from(smp::call::running_here()), Ordering::Relaxed);
    smp::call::service();
}

/// The order of `smp::call::service` (review of session 8): a function that services its own
/// CPU's requests while it runs (a lock spin inside it) does not run itself again, it is marked
/// as running (`running_here`, which makes its locks the CPU's) while it runs and only then,
/// and the slot is empty once the poster sees it done: a second call right after is run too.
pub fn smp_call_reentered_by_its_function_runs_once() -> TestResult {
    const ROUNDS: u64 = 50;
    for cpu in online_cpus() {
        let (runs, seen) = (
            REENTERED[cpu].load(Ordering::Relaxed),
            RUNNING_SEEN[cpu].load(Ordering::Relaxed),
        );
        let calls = CALLS[cpu].load(Ordering::Relaxed);
        for round in 0..ROUNDS {
            let result = smp::call::run_on(cpu, count_and_reenter, TIMEOUT_US);
            ensure!(result.is_ok(), "call {round} on CPU {cpu}: {result:?}");
            let result = smp::call::run_on(cpu, count_call, TIMEOUT_US);
            ensure!(
                result.is_ok(),
                "the call after {round} on CPU {cpu}: {result:?}"
            );
        }
        let runs = REENTERED[cpu].load(Ordering::Relaxed) - runs;
        let seen = RUNNING_SEEN[cpu].load(Ordering::Relaxed) - seen;
        let calls = CALLS[cpu].load(Ordering::Relaxed) - calls;
        ensure!(
            runs == ROUNDS && calls == ROUNDS,
            "CPU {cpu} ran the re-entering function {runs} times and the next {calls} (of {ROUNDS})"
        );
        ensure!(
            seen == ROUNDS,
            "running_here() was set in {seen} runs of {ROUNDS}"
        );
        ensure!(
            !smp::call::running_here(),
            "running_here() on the poster's CPU"
        );
    }
    Ok(())
}
