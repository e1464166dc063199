//! The address space the CPU is running on, and page faults on user addresses.
//!
//! Picture: at any moment CR3 holds either the boot page table (kernel only) or the root of one
//! `cowlab_mm::AddressSpace`, and [`CURRENT`] names that address space. A page fault on a
//! lower-half address is a question for the memory manager about the current address space
//! (Linux `exc_page_fault` -> `handle_mm_fault`), whether the access came from ring 3 or from the
//! kernel touching user memory; only if the memory manager refuses does the trap code fall back
//! to an exception-table fixup (a probe or user copy that expected it) or to the crash dump.
//!
//! Invariant: a fault takes the address space's `mmap_lock` for reading and its page-table lock
//! (docs/locking.md). A fault from ring 3 waits for a writer like any reader; so does a fault in
//! kernel mode (a user copy) when another task or CPU holds the lock (a writer asleep, a
//! sibling's munmap, a ring-3 fault resolved without the big lock: `fault_unlocked.rs`,
//! `fault_bkl=0`), sleeping or spinning as the lock's slow path does. Under its own task's
//! write hold it would wait for itself: that access fails instead (`EFAULT` through the copy's
//! fixup), reported once as the kernel bug it is ([`lock_at_kernel_fault`]).

use alloc::sync::Arc;

use cowlab_mm::{AddressSpace, FaultError, MmShared};
use cowlab_sync::{MmapLock, MmapReadPtlGuard};
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;

use crate::memory;
use crate::percpu::MAX_CPUS;

/// An address space as processes (and kernel tests) share it, behind its `mmap_lock`.
pub type SharedAddressSpace = Arc<MmSpace>;

/// An address space's `mmap_lock` and, beside it, what a context switch reads without that
/// lock (Linux's `switch_mm` reads `mm->pgd` unlocked): the page-table root and the shared
/// counters never change for the space's life. The switch must not take the lock: the idle
/// loop switches into a task whose sibling may be asleep holding it for writing (a munmap
/// waiting on a page lock), and the idle loop must never sleep or spin on it.
pub struct MmSpace {
    lock: MmapLock<AddressSpace>,
    mm: Arc<MmShared>,
}

impl MmSpace {
    /// The address space, once no one else shares it (teardown).
    pub fn into_inner(self) -> AddressSpace {
        self.lock.into_inner()
    }
}

impl core::ops::Deref for MmSpace {
    type Target = MmapLock<AddressSpace>;

    fn deref(&self) -> &MmapLock<AddressSpace> {
        &self.lock
    }
}

/// Wraps a new address space in its lock (the kernel's classes: `mmap_lock` and the
/// page-table lock inside it).
pub fn share(aspace: AddressSpace) -> SharedAddressSpace {
    let mm = aspace.shared().clone();
    debug_assert_eq!(mm.root(), aspace.root());
    Arc::new(MmSpace {
        lock: MmapLock::new(
            &crate::locking::MMAP_LOCK,
            &crate::locking::PAGE_TABLE_LOCK,
            aspace,
        ),
        mm,
    })
}

/// The address space loaded in CR3, or `None` while the boot page table is.
/// One entry per CPU (`percpu::cpu_id()`), each written only by its own CPU.
static CURRENT: [Mutex<Option<SharedAddressSpace>>; MAX_CPUS] =
    [const { Mutex::new(None) }; MAX_CPUS];

/// The lock-free part (`MmShared`) of [`CURRENT`]'s address space: lets [`switch_to`] clear this
/// CPU's `mm_cpumask` bit in the space it leaves without taking that space's lock.
static CURRENT_MM: [Mutex<Option<Arc<MmShared>>>; MAX_CPUS] =
    [const { Mutex::new(None) }; MAX_CPUS];

/// The `MmSpace` inside [`CURRENT`]'s `Arc` (null for `None`), for the page-fault path and
/// GUP-fast: one load (`gs:`, a `percpu` slot) instead of taking and releasing `CURRENT`'s lock.
/// Written only by [`switch_to`], with interrupts off, together with `CURRENT`, which keeps the
/// `Arc` (and so the pointee) alive for as long as the pointer is published.
const CURRENT_RAW: usize = crate::percpu::slot(crate::percpu::Slot::Aspace);

/// The boot PML4, which maps only the kernel half; recorded by [`init`].
static BOOT_ROOT: spin::Once<PhysFrame> = spin::Once::new();

/// Records the boot page table so that [`switch_to`]`(None)` can return to it. Call once, after
/// paging set-up, before any address space is loaded.
pub fn init() {
    BOOT_ROOT.call_once(|| Cr3::read().0);
}

/// Loads `aspace`'s page table into CR3 (or the boot table for `None`) and makes it the one user
/// faults resolve against. Returns the previous current address space.
///
/// `mm_cpumask` (Linux `switch_mm_irqs_off`): this CPU's bit is set in the new space's mask
/// before CR3 is written and cleared in the old one's after, when they differ, so a flusher
/// reading a mask either reaches this CPU or knows its TLB cannot hold the space's entries.
pub fn switch_to(aspace: Option<SharedAddressSpace>) -> Option<SharedAddressSpace> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cpu = crate::percpu::cpu_id();
        let (frame, mm) = match &aspace {
            Some(shared) => {
                let root =
                    PhysFrame::containing_address(x86_64::PhysAddr::new(shared.mm.root().as_u64()));
                (root, Some(shared.mm.clone()))
            }
            None => (
                *BOOT_ROOT.get().expect("vm::init runs before any switch_to"),
                None,
            ),
        };
        if let Some(mm) = &mm {
            mm.mm_cpumask_set(cpu);
        }
        // SAFETY: every root is either the boot PML4 or one made by `AddressSpace::new`, whose
        // kernel half is a copy of the boot PML4's (the kernel pre-allocated all upper PDPTs at
        // boot, so later kernel mappings are shared): the kernel's code, data, stacks and the
        // physical-memory window stay mapped identically across the switch.
        unsafe { Cr3::write(frame, Cr3Flags::empty()) };
        let old_mm = core::mem::replace(&mut *CURRENT_MM[cpu].lock(), mm.clone());
        if let Some(old) = old_mm {
            if !mm.as_ref().is_some_and(|new| Arc::ptr_eq(new, &old)) {
                old.mm_cpumask_clear(cpu);
            }
        }
        let raw = aspace.as_ref().map_or(core::ptr::null_mut(), |shared| {
            core::ptr::from_ref::<MmSpace>(shared).cast_mut()
        });
        let previous = core::mem::replace(&mut *CURRENT[cpu].lock(), aspace);
        crate::percpu::write::<CURRENT_RAW>(raw.expose_provenance() as u64);
        previous
    })
}

/// Whether `addr` lies in the user half of the address space (PML4 entries 0..255).
pub fn is_user_address(addr: u64) -> bool {
    addr < cowlab_mm::aspace::USER_END
}

/// The page-fault path for user addresses: asks the memory manager to resolve the fault at
/// `cr2` against the current address space. `Ok` means the faulting instruction can be retried.
/// Called from the trap handler with interrupts disabled; no logging here (hot path).
///
/// `RING3`: the fault was taken in ring 3 (`user_trap`), not by the kernel's own access to
/// user memory (`kernel_trap`: a user copy); it decides how a busy lock is waited for
/// ([`lock_for_fault`]). Always inlined, one instance per caller: with one function (and its
/// closure) shared by both callers LLVM called it out of line, a frame, call and return on
/// every ring-3 fault; `kernel_trap` is itself out of line, so its copy costs only code size.
#[doc(alias = "exc_page_fault")]
#[inline(always)]
pub fn handle_page_fault<const RING3: bool>(cr2: u64, error_code: u64) -> Result<(), FaultError> {
    debug_assert_eq!(RING3, error_code & USER_FAULT != 0);
    let result = with_current_raw(|shared| {
        let mut aspace = lock_for_fault(shared, cr2, RING3)?;
        cowlab_mm::handle_x86_page_fault_retry(memory::mm(), &mut aspace, cr2, error_code)
    })
    .unwrap_or(Err(FaultError::Segv(cowlab_mm::SegvReason::NoMapping)));
    match result {
        Err(FaultError::Retry) => fault_fill_and_retry(cr2, error_code),
        r => r,
    }
}

/// A fault on a file page not cached yet, or being read by another task, or a store through a
/// shared file mapping whose page needs blocks (Linux `VM_FAULT_RETRY`): the page is read in,
/// or its reader waited for, and the file's `page_mkwrite` runs, asleep with the address
/// space unlocked (so other threads of the process fault and map meanwhile), then the fault
/// runs again, once: a page reclaimed between the fill and the retry is left to the fault the
/// re-run instruction takes; a failed read is the fault's `SIGBUS`.
#[cold]
#[inline(never)]
fn fault_fill_and_retry(cr2: u64, error_code: u64) -> Result<(), FaultError> {
    use cowlab_mm::pagecache::{filemap_fault_fill, FileFault};
    // The VMA's file and page index, taken under the lock and held (the file stays open
    // with the reference) while the lock is dropped.
    let target = with_current_raw(|shared| {
        let aspace = lock_for_fault(shared, cr2, error_code & USER_FAULT != 0).ok()?;
        let va = cowlab_mm::VirtAddr::new(cr2);
        let vma = aspace.find_vma(va)?;
        // A store through a shared file mapping: the file's block allocation
        // (`page_mkwrite`) runs here too, asleep, not under the page-table lock.
        let write = error_code & WRITE_FAULT != 0 && vma.vma_wants_writenotify();
        let (file, index) = vma.file_page(va)?;
        Some((file.clone(), index, write))
    })
    .flatten();
    // The mapping changed meanwhile: the fault itself says what now.
    if let Some((file, index, write)) = target {
        match filemap_fault_fill(memory::mm(), &*file.0, index, write) {
            Ok(()) => {}
            Err(FileFault::NoMem) => return Err(FaultError::Oom),
            Err(_) => return Err(FaultError::Segv(cowlab_mm::SegvReason::BeyondEof)),
        }
    }
    let result = with_current_raw(|shared| {
        let mut aspace = lock_for_fault(shared, cr2, error_code & USER_FAULT != 0)?;
        cowlab_mm::handle_x86_page_fault_retry(memory::mm(), &mut aspace, cr2, error_code)
    })
    .unwrap_or(Err(FaultError::Segv(cowlab_mm::SegvReason::NoMapping)));
    // Still `Retry` after a fill (the page reclaimed meanwhile, or the mapping changed):
    // the instruction runs again, through signal delivery and the scheduler, instead of
    // looping here with interrupts off.
    match result {
        Err(FaultError::Retry) => Ok(()),
        r => r,
    }
}

/// The page-fault error code's U/S bit: the access came from ring 3.
const USER_FAULT: u64 = 1 << 2;
/// The page-fault error code's W/R bit: the access was a write.
const WRITE_FAULT: u64 = 1 << 1;

/// The fault's hold on the address space: one compare-exchange takes the read hold and the
/// page-table lock; otherwise the holder is waited for (a writer, or a reader's page-table
/// work), unless a kernel-mode fault's own task holds it for writing: then the fault fails
/// (`Segv`: a user copy takes its fixup, `EFAULT`). `ring3`: the fault was taken in ring 3
/// (the error code's U/S bit).
#[inline]
fn lock_for_fault(
    shared: &MmapLock<AddressSpace>,
    cr2: u64,
    ring3: bool,
) -> Result<MmapReadPtlGuard<'_, AddressSpace>, FaultError> {
    match shared.try_read_ptl() {
        Some(held) => Ok(held),
        None if ring3 => Ok(shared.read_ptl()),
        None => lock_at_kernel_fault(shared, cr2),
    }
}

/// Kernel-mode faults that found their own task holding the lock for writing (a kernel bug:
/// user memory copied under `mmap_write_lock`), for the in-kernel test.
static SELF_LOCKED_FAULTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many kernel-mode faults found their own task holding the address space for writing.
pub fn self_locked_faults() -> u64 {
    SELF_LOCKED_FAULTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// A user copy (or another kernel access to user memory) faulted while the lock is taken
/// (Linux `do_user_addr_fault`'s failed `mmap_read_trylock`). Another task's hold (a writer
/// asleep on a page lock, a sibling's munmap on another CPU, a reader's page-table work) is
/// waited for, as a ring-3 fault waits. This task's own write hold would be waited for
/// forever: the fault fails instead (the copy's fixup makes it `EFAULT`; without a fixup the
/// trap dies with its dump, as any kernel fault on a bad address), and the first time is
/// reported as the kernel bug it is. (This task's own read hold is not recorded: the kernel
/// copies no user memory under one; waiting then deadlocks, as on Linux.)
#[cold]
#[inline(never)]
fn lock_at_kernel_fault(
    shared: &MmapLock<AddressSpace>,
    cr2: u64,
) -> Result<MmapReadPtlGuard<'_, AddressSpace>, FaultError> {
    use core::sync::atomic::Ordering;
    if !shared.is_write_held_by_current() {
        return Ok(shared.read_ptl());
    }
    if SELF_LOCKED_FAULTS.fetch_add(1, Ordering::Relaxed) == 0 {
        println!(
            "cowlab: kernel bug: page fault at {cr2:#x} on user memory while this task holds its address space's mmap_lock for writing; the access fails (EFAULT)"
        );
        crate::backtrace::print_current();
    }
    Err(FaultError::Segv(cowlab_mm::SegvReason::NoMapping))
}

/// [`with_current_raw`] for the fault path without the big lock (`fault_unlocked.rs`), with
/// interrupts off from the trap as `with_current_raw`'s safety argument needs.
#[inline(always)]
pub(crate) fn with_current_lock<R>(f: impl FnOnce(&MmapLock<AddressSpace>) -> R) -> Option<R> {
    with_current_raw(f)
}

/// Runs `f` on the current address space's lock without touching [`CURRENT`]'s; `None` while
/// the boot page table is loaded.
#[inline]
fn with_current_raw<R>(f: impl FnOnce(&MmapLock<AddressSpace>) -> R) -> Option<R> {
    with_current_space(|space| f(&space.lock))
}

/// Runs `f` on the current address space's `MmSpace`; `None` while the boot page table is
/// loaded. Interrupts must be off across the call (the callers: the page-fault path, and
/// [`with_current_mm_irqs_off`]).
#[inline]
fn with_current_space<R>(f: impl FnOnce(&MmSpace) -> R) -> Option<R> {
    let raw: *const MmSpace =
        core::ptr::with_exposed_provenance(crate::percpu::read::<CURRENT_RAW>() as usize);
    // SAFETY: a non-null `CURRENT_RAW` (this CPU's) points into the `Arc` that `CURRENT[cpu]` holds;
    // both change only together in `switch_to` on that CPU, with interrupts off, and the callers
    // (interrupts off) cannot run inside `switch_to` nor call it from `f` (nothing in `f` sleeps).
    // So the space outlives the borrow passed to `f`.
    unsafe { raw.as_ref() }.map(f)
}

/// Runs `f` with interrupts off on the lock-free part (`MmShared`: the page-table root, fork's
/// `write_protect_seq`) of the address space the CPU runs on, without its `mmap_lock` and
/// without a reference to it (Linux's `get_user_pages_fast` reads `current->mm` unlocked):
/// for GUP-fast from a system call, which needs no more. `f` must not sleep. `None` while the
/// boot page table is loaded.
#[inline]
pub fn with_current_mm_irqs_off<R>(f: impl FnOnce(&MmShared) -> R) -> Option<R> {
    x86_64::instructions::interrupts::without_interrupts(|| {
        with_current_space(|space| f(&space.mm))
    })
}
