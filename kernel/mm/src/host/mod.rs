//! The host platform: physical memory as a page-aligned heap buffer, plus an emulated MMU.
//!
//! Picture: [`HostArch`] plays the machine. Its buffer is "physical memory" (frame `n` at byte
//! `n * 4096`); its [`tlb::Tlb`] caches translations exactly as long as a real TLB may, i.e.
//! until the memory manager flushes them; and [`cpu`] performs user-mode loads, stores and
//! instruction fetches by walking the real x86_64 tables in the buffer, raising page faults into
//! the real fault handler. A memory manager that forgets a TLB flush, maps a page with the wrong
//! bits, or resolves a fault wrongly therefore fails host tests the way it would fail on
//! hardware. Built for `cfg(test)` and for host crates with the `host` feature.

pub mod cpu;
pub mod tlb;

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::addr::{PhysAddr, VirtAddr};
use crate::arch::{Arch, IrqState};
use crate::frame::FrameTable;
use crate::mm::Mm;
use crate::pagetable::Pte;
use crate::PAGE_SIZE;

/// The emulated machine under a host-side [`Mm`].
pub struct HostArch {
    mem: NonNull<u8>,
    frames: usize,
    pub(crate) tlb: tlb::Tlb,
    irq_enabled: AtomicBool,
    page_flushes: AtomicU64,
    full_flushes: AtomicU64,
    /// A `write_protect_seq` a whole fork advances at the next `irq_restore` (see
    /// [`HostArch::with_fork_during_irqs_off`]); null when unset.
    fork_during_irqs_off: AtomicPtr<AtomicU32>,
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
            tlb: tlb::Tlb::default(),
            irq_enabled: AtomicBool::new(true),
            page_flushes: AtomicU64::new(0),
            full_flushes: AtomicU64::new(0),
            fork_during_irqs_off: AtomicPtr::new(core::ptr::null_mut()),
        }
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

    /// `(flush_page calls, flush_all calls)` so far.
    pub fn flush_counts(&self) -> (u64, u64) {
        (
            self.page_flushes.load(Ordering::Relaxed),
            self.full_flushes.load(Ordering::Relaxed),
        )
    }

    pub fn irqs_enabled(&self) -> bool {
        self.irq_enabled.load(Ordering::Relaxed)
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
        // SAFETY: in bounds (checked); user pages are never Rust objects, and the emulated CPU
        // runs on the thread that drives the memory manager, so nothing writes them meanwhile.
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

    fn flush_page(&self, root: PhysAddr, va: VirtAddr) {
        self.page_flushes.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.tlb.lookup(root, va) {
            self.check_not_replaced(root, va, e.frame);
        }
        self.tlb.flush_page(root, va);
    }

    fn flush_all(&self, root: PhysAddr) {
        self.full_flushes.fetch_add(1, Ordering::Relaxed);
        for (va, frame) in self.tlb.entries_of(root) {
            self.check_not_replaced(root, va, frame);
        }
        self.tlb.flush_all(root);
    }

    fn frame_freed(&self, frame: PhysAddr) {
        if let Some((root, va)) = self.tlb.mapping_of(frame) {
            panic!(
                "frame {frame:#x} freed while the TLB still maps {va:#x} -> it (root {root:#x}): \
                 a page may be freed only after the flush that removes its last translation"
            );
        }
    }

    fn irq_save(&self) -> IrqState {
        IrqState(u64::from(self.irq_enabled.swap(false, Ordering::Relaxed)))
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
        self.irq_enabled.store(state.0 != 0, Ordering::Relaxed);
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
