//! The host platform: physical memory as a page-aligned heap buffer, plus an emulated MMU.
//!
//! Picture: [`HostArch`] plays the machine. Its buffer is "physical memory" (frame `n` at byte
//! `n * 4096`); each of its [`HOST_CPUS`] emulated CPUs has a [`tlb::Tlb`] that caches
//! translations exactly as long as a real TLB may, i.e. until a flush reaches *that* CPU; and
//! [`cpu`] performs user-mode loads, stores and
//! instruction fetches by walking the real x86_64 tables in the buffer, raising page faults into
//! the real fault handler. A memory manager that forgets a TLB flush, maps a page with the wrong
//! bits, or resolves a fault wrongly therefore fails host tests the way it would fail on
//! hardware. Built for `cfg(test)` and for host crates with the `host` feature.
//!
//! CPUs: a thread is emulated CPU [`current_cpu`] (0 unless inside [`on_cpu`]); one thread per
//! CPU at a time. A CPU cannot take an IPI while its interrupts are off or in the middle of
//! one emulated instruction (a TLB fill and the access through it), so a shootdown
//! ([`Arch::flush_tlb_cpus`]) to it waits for that to end, as a real one would: GUP-fast's
//! interrupts-off walk really holds off the freeing of the tables it walks.

pub mod cpu;
pub mod tlb;

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::{Arch, IrqState};
use crate::frame::FrameTable;
use crate::mm::Mm;
use crate::pagetable::Pte;
use crate::PAGE_SIZE;

/// Number of emulated CPUs.
pub const HOST_CPUS: usize = 4;

std::thread_local! {
    static CURRENT_CPU: Cell<usize> = const { Cell::new(0) };
}

/// The emulated CPU this thread is.
pub fn current_cpu() -> usize {
    CURRENT_CPU.with(Cell::get)
}

/// Runs `f` on this thread as emulated CPU `cpu` (restored afterwards, even when unwinding).
/// At most one thread may be a given CPU at a time.
pub fn on_cpu<R>(cpu: usize, f: impl FnOnce() -> R) -> R {
    assert!(
        cpu < HOST_CPUS,
        "the host machine has {HOST_CPUS} CPUs, not CPU {cpu}"
    );
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT_CPU.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT_CPU.with(|c| c.replace(cpu)));
    f()
}

/// One emulated CPU: its TLB and whether it can take an IPI now.
#[derive(Default)]
pub(crate) struct HostCpu {
    pub(crate) tlb: tlb::Tlb,
    irq_disabled: AtomicBool,
    /// Held while the CPU cannot take an IPI: interrupts off, or inside one instruction.
    /// A shootdown to this CPU takes it to flush the TLB "in the CPU's IPI handler".
    busy: AtomicBool,
}

impl HostCpu {
    fn hold(&self) {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // The machine's cores are shared: let the holder run.
            std::thread::yield_now();
        }
    }

    fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// One emulated instruction on the current CPU: no IPI is taken until it is dropped.
pub(crate) struct Instruction<'a>(Option<&'a HostCpu>);

impl Drop for Instruction<'_> {
    fn drop(&mut self) {
        if let Some(cpu) = self.0 {
            cpu.release();
        }
    }
}

/// See [`HostArch::probe_frame_freed`].
pub type FrameFreedProbe = alloc::boxed::Box<dyn Fn(PhysAddr) + Send + Sync>;

/// The emulated machine under a host-side [`Mm`].
pub struct HostArch {
    mem: NonNull<u8>,
    frames: usize,
    cpus: [HostCpu; HOST_CPUS],
    /// Test knob: shootdown IPIs to these CPUs are lost (a missing flush).
    lost_shootdowns: AtomicU64,
    ipis: AtomicU64,
    page_flushes: AtomicU64,
    full_flushes: AtomicU64,
    /// Test knob: runs as [`Arch::frame_freed`] is called (see [`HostArch::probe_frame_freed`]).
    frame_freed_probe: spin::Mutex<Option<FrameFreedProbe>>,
    /// A `write_protect_seq` a whole fork advances at the next `irq_restore` (see
    /// [`HostArch::with_fork_during_irqs_off`]); null when unset.
    fork_during_irqs_off: AtomicPtr<AtomicU32>,
    /// Calls of [`Arch::long_work_progress`] (the 1 GiB clears and copies report progress).
    long_work: AtomicU64,
}

// SAFETY: the buffer is owned by this value and only reached through the `Arch` window (whose
// users uphold the `phys` aliasing obligations) or through `HostArch`'s own atomic accesses; the
// TLB is behind a lock.
unsafe impl Send for HostArch {}
// SAFETY: as for `Send`.
unsafe impl Sync for HostArch {}

impl HostArch {
    /// A machine with `frames` frames of zeroed physical memory.
    pub fn new(frames: usize) -> HostArch {
        let mem = alloc_zeroed_frames(frames);
        HostArch {
            mem,
            frames,
            cpus: Default::default(),
            lost_shootdowns: AtomicU64::new(0),
            ipis: AtomicU64::new(0),
            page_flushes: AtomicU64::new(0),
            full_flushes: AtomicU64::new(0),
            frame_freed_probe: spin::Mutex::new(None),
            fork_during_irqs_off: AtomicPtr::new(core::ptr::null_mut()),
            long_work: AtomicU64::new(0),
        }
    }

    /// How many times long work reported progress ([`Arch::long_work_progress`]).
    pub fn long_work_reports(&self) -> u64 {
        self.long_work.load(Ordering::Relaxed)
    }

    /// Runs `f` as if another CPU ran a complete fork of the address space whose
    /// `write_protect_seq` is `seq` while `f`'s first interrupts-off section (GUP-fast's walk)
    /// was in progress: the count advances by 2 just before interrupts come back on. This is
    /// the race GUP-fast's sequence check closes.
    pub fn with_fork_during_irqs_off<R>(&self, seq: &AtomicU32, f: impl FnOnce() -> R) -> R {
        struct Clear<'a>(&'a AtomicPtr<AtomicU32>);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(core::ptr::null_mut(), Ordering::SeqCst);
            }
        }
        self.fork_during_irqs_off
            .store(core::ptr::from_ref(seq).cast_mut(), Ordering::SeqCst);
        let _clear = Clear(&self.fork_during_irqs_off);
        f()
    }

    /// Test knob: `probe` runs with each frame passed to [`Arch::frame_freed`], i.e. at the
    /// moment the TLB check runs (`None` removes it). Lets a test act as another CPU would at
    /// that instant, e.g. try to allocate the frame.
    pub fn probe_frame_freed(&self, probe: Option<FrameFreedProbe>) {
        *self.frame_freed_probe.lock() = probe;
    }

    /// `(flush_page calls, flush_all calls)` so far.
    pub fn flush_counts(&self) -> (u64, u64) {
        (
            self.page_flushes.load(Ordering::Relaxed),
            self.full_flushes.load(Ordering::Relaxed),
        )
    }

    /// Are interrupts enabled on the current CPU?
    pub fn irqs_enabled(&self) -> bool {
        !self.cpu().irq_disabled.load(Ordering::Relaxed)
    }

    fn cpu(&self) -> &HostCpu {
        &self.cpus[current_cpu()]
    }

    /// The current CPU's TLB.
    pub fn tlb(&self) -> &tlb::Tlb {
        &self.cpu().tlb
    }

    /// CPU `cpu`'s TLB.
    pub fn tlb_of(&self, cpu: usize) -> &tlb::Tlb {
        &self.cpus[cpu].tlb
    }

    /// Every CPU's TLB must be coherent with the page tables ([`tlb::Tlb::check_coherent`]).
    pub fn check_tlbs_coherent(
        &self,
        mm: &Mm<HostArch>,
        live_roots: &[PhysAddr],
    ) -> Result<(), alloc::string::String> {
        for (n, cpu) in self.cpus.iter().enumerate() {
            cpu.tlb
                .check_coherent(mm, live_roots)
                .map_err(|e| alloc::format!("CPU {n}: {e}"))?;
        }
        Ok(())
    }

    /// Total cached translations over all CPUs.
    pub fn tlb_entries(&self) -> usize {
        self.cpus.iter().map(|c| c.tlb.len()).sum()
    }

    /// Test knob: from now on shootdown IPIs to the CPUs in `cpus` are lost, as if the
    /// memory manager had not named them (0 restores delivery). Only for tests showing that a
    /// missing shootdown is caught.
    pub fn lose_shootdowns_to(&self, cpus: u64) {
        self.lost_shootdowns.store(cpus, Ordering::SeqCst);
    }

    /// The current CPU loads another root into CR3: without PCIDs that drops every cached
    /// translation of `old` (what makes clearing its `mm_cpumask` bit afterwards safe).
    pub fn load_other_root(&self, old: PhysAddr) {
        let _instruction = self.instruction();
        self.tlb().flush_all(old);
    }

    /// Shootdown IPIs delivered to other CPUs so far.
    pub fn ipis(&self) -> u64 {
        self.ipis.load(Ordering::Relaxed)
    }

    /// Starts one instruction of the current CPU: until the result is dropped, a shootdown to
    /// this CPU waits (it takes interrupts at instruction boundaries only). Nothing to hold
    /// when interrupts are already off (then the CPU holds it already).
    pub(crate) fn instruction(&self) -> Instruction<'_> {
        let cpu = self.cpu();
        if cpu.irq_disabled.load(Ordering::Relaxed) {
            return Instruction(None);
        }
        cpu.hold();
        Instruction(Some(cpu))
    }

    /// Flushes `[start, end)` (or all) of `root` from CPU `n`'s TLB; the caller is CPU `n` or
    /// holds it as its IPI handler.
    fn flush_on(&self, n: usize, root: PhysAddr, start: VirtAddr, end: VirtAddr, all: bool) {
        let tlb = &self.cpus[n].tlb;
        if all {
            self.full_flushes.fetch_add(1, Ordering::Relaxed);
            for (va, frame) in tlb.entries_of(root) {
                self.check_not_replaced(root, va, frame);
            }
            tlb.flush_all(root);
            return;
        }
        let mut va = start.align_down().as_u64();
        while va < end.as_u64() {
            let at = VirtAddr::new(va);
            self.page_flushes.fetch_add(1, Ordering::Relaxed);
            if let Some(e) = tlb.lookup(root, at) {
                self.check_not_replaced(root, at, e.frame);
            }
            tlb.flush_page(root, at);
            va += PAGE_SIZE as u64;
        }
    }

    /// The leaf PTE the MMU would walk to for `va` under `root`, if the tables exist.
    fn leaf_pte(&self, root: PhysAddr, va: VirtAddr) -> Option<Pte> {
        let mut table = root;
        for level in [4u8, 3, 2] {
            let e = Pte::from_raw(
                self.word(table + (va.table_index(level) * 8) as u64)
                    .load(Ordering::Relaxed),
            );
            if !e.is_present() {
                return None;
            }
            if level <= 3 && e.has(Pte::HUGE) {
                // A PMD leaf, or a PUD leaf (a 1 GiB hugetlb page).
                return Some(e.huge_subpage_at(va, level));
            }
            table = e.frame();
        }
        Some(Pte::from_raw(
            self.word(table + (va.table_index(1) * 8) as u64)
                .load(Ordering::Relaxed),
        ))
    }

    /// A present PTE must never map another frame than a TLB entry still cached for it: a
    /// second CPU could then use the old frame while this one uses the new. Replacing a
    /// present PTE's frame is clear, flush, then set (Linux `ptep_clear_flush` +
    /// `set_pte_at`), so at flush time the PTE is empty or still maps the cached frame.
    fn check_not_replaced(&self, root: PhysAddr, va: VirtAddr, cached: PhysAddr) {
        if let Some(pte) = self.leaf_pte(root, va).filter(|p| p.is_present()) {
            assert!(
                pte.frame() == cached,
                "PTE of {va:#x} replaced ({cached:#x} -> {:#x}) before the TLB entry for the old \
                 frame was flushed: clear, flush, then set",
                pte.frame()
            );
        }
    }

    /// The 64-bit word at `pa` (8-aligned) as the MMU sees it.
    pub(crate) fn word(&self, pa: PhysAddr) -> &AtomicU64 {
        assert!(
            pa.as_u64().is_multiple_of(8) && pa.as_u64() + 8 <= (self.frames * PAGE_SIZE) as u64,
            "emulated MMU access at {pa:#x} outside physical memory"
        );
        // SAFETY: in bounds and aligned (checked); the buffer lives as long as `self`. Words
        // read this way are page-table entries, which the memory manager also only accesses
        // atomically.
        unsafe { AtomicU64::from_ptr(self.mem.as_ptr().add(pa.as_u64() as usize).cast()) }
    }

    /// Copies bytes of physical memory (the CPU's data accesses after translation).
    pub(crate) fn copy_out(&self, pa: PhysAddr, buf: &mut [u8]) {
        self.check_bytes(pa, buf.len());
        // SAFETY: in bounds (checked); user pages are never Rust objects. Emulated CPUs on other
        // threads (the SMP tests) may copy the same user page at once, as a device's DMA and a
        // CPU store overlap on hardware: the bytes may tear, nothing else is affected.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.mem.as_ptr().add(pa.as_u64() as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
    }

    pub(crate) fn copy_in(&self, pa: PhysAddr, data: &[u8]) {
        self.check_bytes(pa, data.len());
        // SAFETY: as in `copy_out`; the translation that produced `pa` allowed the write.
        unsafe {
            core::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.mem.as_ptr().add(pa.as_u64() as usize),
                data.len(),
            )
        };
    }

    fn check_bytes(&self, pa: PhysAddr, len: usize) {
        assert!(
            pa.as_u64() + len as u64 <= (self.frames * PAGE_SIZE) as u64,
            "emulated access at {pa:#x} outside physical memory"
        );
    }
}

impl Drop for HostArch {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, and no window pointer outlives `self`
        // (the `Mm` owning this value is being dropped).
        unsafe { dealloc(self.mem.as_ptr(), frames_layout(self.frames)) };
    }
}

fn frames_layout(frames: usize) -> Layout {
    Layout::from_size_align(frames.max(1) * PAGE_SIZE, PAGE_SIZE).expect("memory size overflows")
}

fn alloc_zeroed_frames(frames: usize) -> NonNull<u8> {
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc_zeroed(frames_layout(frames)) };
    NonNull::new(p).expect("host allocation of emulated physical memory failed")
}

// SAFETY: (1) the buffer covers `frames` frames, is page aligned, never moves and is no Rust
// object; the `Mm` is built with a frame table of at most `frames` entries (see `new_mm`).
// (2) flushes remove the entries from the emulated TLB before returning.
unsafe impl Arch for HostArch {
    fn phys_window(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    fn cpu_id(&self) -> usize {
        current_cpu()
    }

    fn flush_page(&self, root: PhysAddr, va: VirtAddr) {
        self.flush_on(current_cpu(), root, va, va + PAGE_SIZE as u64, false);
    }

    fn flush_all(&self, root: PhysAddr) {
        self.flush_on(
            current_cpu(),
            root,
            VirtAddr::zero(),
            VirtAddr::zero(),
            true,
        );
    }

    /// The local CPU flushes itself; every other named CPU is "interrupted": its flush runs
    /// once it is at an instruction boundary with interrupts on (holding its `busy`), and
    /// this returns after the last one, as `flush_tlb_multi` waits for the IPIs' completion.
    fn flush_tlb_cpus(&self, cpus: u64, root: PhysAddr, start: VirtAddr, end: VirtAddr, all: bool) {
        let me = current_cpu();
        let lost = self.lost_shootdowns.load(Ordering::SeqCst);
        for n in 0..HOST_CPUS {
            if cpus & (1 << n) == 0 {
                continue;
            }
            if n == me {
                self.flush_on(n, root, start, end, all);
                continue;
            }
            assert!(
                self.irqs_enabled(),
                "TLB shootdown with interrupts off on CPU {me}: two CPUs flushing each other \
                 would deadlock"
            );
            if lost & (1 << n) != 0 {
                continue;
            }
            self.ipis.fetch_add(1, Ordering::Relaxed);
            let target = &self.cpus[n];
            target.hold();
            self.flush_on(n, root, start, end, all);
            target.release();
        }
        assert!(
            cpus >> HOST_CPUS == 0,
            "flush names CPUs beyond the host machine's {HOST_CPUS}: {cpus:#x}"
        );
    }

    fn long_work_progress(&self) {
        self.long_work.fetch_add(1, Ordering::Relaxed);
    }

    fn frame_freed(&self, frame: PhysAddr) {
        if let Some(probe) = &*self.frame_freed_probe.lock() {
            probe(frame);
        }
        for (n, cpu) in self.cpus.iter().enumerate() {
            if let Some((root, va)) = cpu.tlb.mapping_of(frame) {
                panic!(
                    "frame {frame:#x} freed while CPU {n}'s TLB still maps {va:#x} -> it (root \
                     {root:#x}): a page may be freed only after the flush that removes its last \
                     translation on every CPU"
                );
            }
        }
    }

    /// Interrupts off on the current CPU: from now on a shootdown to it waits.
    fn irq_save(&self) -> IrqState {
        let cpu = self.cpu();
        let was_enabled = !cpu.irq_disabled.load(Ordering::Relaxed);
        if was_enabled {
            cpu.hold();
            cpu.irq_disabled.store(true, Ordering::Relaxed);
        }
        IrqState(u64::from(was_enabled))
    }

    fn irq_restore(&self, state: IrqState) {
        let seq = self
            .fork_during_irqs_off
            .swap(core::ptr::null_mut(), Ordering::SeqCst);
        if !seq.is_null() {
            // SAFETY: only `with_fork_during_irqs_off` sets the pointer, from a `&AtomicU32`
            // borrowed for the whole call, and it clears it (even when unwinding) before that
            // borrow ends; we run inside that call, so the counter is alive.
            unsafe { &*seq }.fetch_add(2, Ordering::SeqCst);
        }
        let cpu = self.cpu();
        if state.0 != 0 && cpu.irq_disabled.load(Ordering::Relaxed) {
            cpu.irq_disabled.store(false, Ordering::Relaxed);
            cpu.release();
        }
    }
}

/// A host memory manager over `frames` frames. Frame 0 stays reserved (so a null physical
/// address is never handed out); the rest are free, minus the zero page.
pub fn new_mm(frames: usize) -> Mm<HostArch> {
    let table = FrameTable::new_leaked(frames);
    table.add_free_range(PhysAddr::from_pfn(1), PhysAddr::from_pfn(frames));
    // SAFETY: no kernel template, so there is no obligation.
    unsafe { Mm::new(table, HostArch::new(frames), None) }.expect("no frame for the zero page")
}

/// Like [`new_mm`], with a kernel half like the bootloader's: PML4 entry 256 points to a PDPT
/// whose entry 0 maps the first GiB of physical memory with a supervisor-only 1 GiB page (the
/// offset mapping), and entry 511 to an empty PDPT (the kernel image's region). Returns the
/// template root too.
pub fn new_mm_with_kernel_half(frames: usize) -> (Mm<HostArch>, PhysAddr) {
    let table = FrameTable::new_leaked(frames);
    table.add_free_range(PhysAddr::from_pfn(1), PhysAddr::from_pfn(frames));
    let arch = HostArch::new(frames);
    let kernel = Pte::PRESENT | Pte::WRITABLE;
    let template = table.alloc().expect("frame for the template PML4");
    let offset_pdpt = table.alloc().expect("frame for a kernel PDPT");
    let image_pdpt = table.alloc().expect("frame for a kernel PDPT");
    let entry = |table: PhysAddr, i: usize| table + (i * 8) as u64;
    arch.word(entry(template, 256))
        .store(Pte::new(offset_pdpt, kernel).raw(), Ordering::Relaxed);
    arch.word(entry(template, 511))
        .store(Pte::new(image_pdpt, kernel).raw(), Ordering::Relaxed);
    arch.word(entry(offset_pdpt, 0)).store(
        Pte::new(PhysAddr::zero(), kernel | Pte::HUGE | Pte::GLOBAL).raw(),
        Ordering::Relaxed,
    );
    // SAFETY: `template` is a PML4 allocated above from `table` and never freed (leaked with
    // it), inside the buffer; its entries are only accessed through `word` (atomically).
    let mm = unsafe { Mm::new(table, arch, Some(template)) }.expect("no frame for the zero page");
    (mm, template)
}
