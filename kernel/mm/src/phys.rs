//! Raw access to physical memory through the [`Arch`] window.
//!
//! This is the only place that turns physical addresses into pointers. Page-table entries are
//! reached as `AtomicU64` (the MMU and other CPUs update them concurrently: accessed and dirty
//! bits), frames are zeroed and copied in whole. Every function checks that the frame lies
//! inside the window the `Arch` promised, so a corrupt PTE cannot make it touch memory outside;
//! what remains for callers is the aliasing obligation written on each function.

use core::sync::atomic::AtomicU64;

use crate::addr::PhysAddr;
use crate::arch::Arch;
use crate::mm::Mm;
use crate::pin::{DmaFromDevice, PinnedPage};
use crate::PAGE_SIZE;

/// Zeroes the page at `p` with one `rep stosq` of 512 quadwords (x86_64): the zero fill of every
/// anonymous write fault. `memset` wrapped the same `rep stosq` in an alignment prologue and
/// epilogue (two `rep stosb` of zero bytes and ~15 instructions) and was reached by a call
/// through the GOT.
///
/// # Safety
///
/// `p` is 8-byte aligned and `[p, p + PAGE_SIZE)` is writable memory nothing else accesses
/// meanwhile.
#[inline(always)]
unsafe fn zero_page_at(p: *mut u8) {
    // SAFETY: the caller's page, as `zero_qwords_at` requires.
    unsafe { zero_qwords_at(p, PAGE_SIZE / 8) }
}

/// Zeroes `qwords` quadwords at `p` with one `rep stosq` (x86_64).
///
/// # Safety
///
/// `p` is 8-byte aligned and `[p, p + 8 * qwords)` is writable memory nothing else accesses
/// meanwhile.
#[inline(always)]
unsafe fn zero_qwords_at(p: *mut u8, qwords: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rep stosq` stores RCX quadwords of RAX at RDI upwards (the direction flag is
    // clear on every Rust function boundary): exactly the caller's range; it clobbers only the
    // registers named.
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rcx") qwords => _,
            inout("rdi") p => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's range.
    unsafe {
        core::ptr::write_bytes(p, 0, qwords * 8)
    };
}

/// Copies the page at `src` to `dst` with one `rep movsq` (x86_64), as [`zero_page_at`] for
/// the COW copy.
///
/// # Safety
///
/// Both are 8-byte aligned, the pages do not overlap, `src` is readable and `dst` writable,
/// and nothing writes either through a Rust reference meanwhile.
#[inline(always)]
unsafe fn copy_page_at(dst: *mut u8, src: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `rep movsq` copies RCX quadwords from RSI to RDI upwards (direction flag clear):
    // exactly the caller's two pages; it clobbers only the registers named.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            inout("rcx") PAGE_SIZE / 8 => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: the caller's two pages.
    unsafe {
        core::ptr::copy_nonoverlapping(src, dst, PAGE_SIZE)
    };
}

/// The window over physical memory `[0, limit)`. `Copy`, so a walk can hold its two words in
/// registers.
#[derive(Clone, Copy)]
pub(crate) struct PhysWindow {
    base: *mut u8,
    /// A whole number of pages (`pte` relies on it).
    limit: u64,
}

// SAFETY: the window is a plain address range; every access through it goes through the unsafe
// functions below, whose callers uphold the aliasing rules, so sharing the pointer between CPUs
// adds no hazard of its own.
unsafe impl Send for PhysWindow {}
// SAFETY: as for `Send`.
unsafe impl Sync for PhysWindow {}

/// The failure of [`PhysWindow::pte`]'s and [`PhysWindow::table`]'s window check (a corrupt
/// page-table entry: a kernel bug). Out of line and cold, with the address passed in a register:
/// inline, the panic's format argument made every walk level store the table address to the
/// stack before its compare (4 stores per 4-level walk on every fault and GUP-fast walk).
#[cold]
#[inline(never)]
#[track_caller]
fn table_outside_window(table: u64) -> ! {
    panic!("page-table access at {table:#x} outside the memory window")
}

impl PhysWindow {
    /// Captures the window of `arch`, covering `frames` frames.
    pub(crate) fn new<A: Arch>(arch: &A, frames: usize) -> PhysWindow {
        let base = arch.phys_window();
        assert!(
            (base as usize).is_multiple_of(PAGE_SIZE),
            "Arch contract: the physical-memory window is page aligned"
        );
        PhysWindow {
            base,
            limit: (frames * PAGE_SIZE) as u64,
        }
    }

    /// Pointer to `len` bytes at `pa`, which must lie in the window (checked: a failure is a
    /// corrupt page table or frame number, a kernel bug).
    fn ptr(&self, pa: PhysAddr, len: usize) -> *mut u8 {
        assert!(
            pa.as_u64()
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.limit),
            "physical access at {pa:#x} outside the memory window"
        );
        // `pa + len` is in `[0, limit]`, so the offset stays inside the window (Arch contract 1).
        self.base.wrapping_add(pa.as_u64() as usize)
    }

    /// Entry `index` of the page-table page `table`.
    ///
    /// The hot path of every walk, so it checks less than [`Self::ptr`] while keeping the same
    /// guarantee (the slot lies in the window): `table` is page aligned here and `limit` is a
    /// whole number of pages, so `table < limit` puts the whole page, and with it any of its
    /// 512 slots, inside the window; the index is masked to 9 bits (callers pass
    /// `VirtAddr::table_index` values or loop bounds below `ENTRIES`, asserted in debug
    /// builds). One compare instead of an index assert, a checked add and a limit compare.
    /// `#[inline]`: it is called from the kernel crate's monomorphised walks, and an
    /// out-of-line call through the GOT per level cost more than the check itself.
    ///
    /// # Safety
    ///
    /// 1. `table` is a page-table page (or a frame that is only ever accessed atomically while
    ///    the returned reference lives): nobody reads or writes it non-atomically meanwhile.
    /// 2. While the reference is used, `table` is not freed and reused by a concurrent thread
    ///    (which would then access it non-atomically, e.g. zero it as a new page).
    #[inline]
    pub(crate) unsafe fn pte(&self, table: PhysAddr, index: usize) -> &AtomicU64 {
        debug_assert!(index < 512, "page-table index out of range");
        let table = table.align_down().as_u64();
        if table >= self.limit {
            table_outside_window(table);
        }
        // `table + 4096 <= limit` (both page multiples) and the offset is below 4096.
        let p = self.base.wrapping_add(table as usize + (index & 511) * 8);
        // SAFETY: `p` is in the window (the argument above) and 8-aligned (page-aligned base
        // plus a multiple of 8); the window's memory stays valid as long as `self` (Arch
        // contract 1); by obligations 1 and 2 every concurrent access to it is atomic.
        unsafe { AtomicU64::from_ptr(p.cast::<u64>()) }
    }

    /// All 512 entries of the page-table page `table`, for loops over a whole table (fork's
    /// `copy_pte_range`): one window check per table instead of one per entry.
    ///
    /// # Safety
    ///
    /// As for [`Self::pte`], for every entry of the table.
    #[inline]
    pub(crate) unsafe fn table(&self, table: PhysAddr) -> &[AtomicU64; 512] {
        let table = table.align_down().as_u64();
        if table >= self.limit {
            table_outside_window(table);
        }
        let p = self.base.wrapping_add(table as usize);
        // SAFETY: the page `[p, p + 4096)` is in the window (`table` is page aligned and below
        // the page-multiple `limit`), page aligned, and stays valid as long as `self` (Arch
        // contract 1); `[AtomicU64; 512]` has the layout of 4096 bytes of `u64`s, and by the
        // caller's obligations every concurrent access to them is atomic.
        unsafe { &*p.cast::<[AtomicU64; 512]>() }
    }

    /// Fills `frame` with zeros.
    ///
    /// # Safety
    ///
    /// The caller owns `frame` exclusively: it is freshly allocated, or no reference to its
    /// contents exists anywhere (no PTE, no pin, no other kernel user).
    pub(crate) unsafe fn zero_frame(&self, frame: PhysAddr) {
        let p = self.ptr(frame, PAGE_SIZE);
        // SAFETY: `p..p+PAGE_SIZE` is in the window (checked) and page aligned; the caller owns
        // the frame.
        unsafe { zero_page_at(p) };
    }

    /// Zeroes the `n` physically consecutive frames from `first` with one `rep stosq` (a
    /// large folio's frames: the window maps physical memory linearly, so they are one range
    /// of it). Frame by frame, each frame paid a call, the window check and the string
    /// instruction's set-up: thp_fault_2m paid ~27 instructions per frame for it.
    ///
    /// # Safety
    ///
    /// The caller owns every one of the frames exclusively, as for [`Self::zero_frame`].
    pub(crate) unsafe fn zero_frames(&self, first: PhysAddr, n: usize) {
        let len = n
            .checked_mul(PAGE_SIZE)
            .expect("zeroing more frames than the address space holds");
        let p = self.ptr(first, len);
        // SAFETY: `p..p+len` is in the window (checked) and page aligned; the caller owns the
        // frames.
        unsafe { zero_qwords_at(p, len / 8) };
    }

    /// Copies the contents of `src` into `dst`.
    ///
    /// # Safety
    ///
    /// The caller owns `dst` exclusively (as for [`Self::zero_frame`]); `src` is not being
    /// written through a Rust reference meanwhile; `src != dst`.
    ///
    /// Concurrent writers of `src`, honestly: every caller (COW copy, fork's copy of a pinned
    /// page) copies a page that no PTE maps writable, but a device holding a `FOLL_WRITE` pin
    /// may be writing it. On the machine that writer is hardware, outside the Rust abstract
    /// machine: the copy is then torn (each byte old or new, no atomicity across the page),
    /// exactly as Linux's `copy_user_highpage` under DMA. On the host the "device" is
    /// `DmaFromDevice::dma_write` on a Rust thread, and a concurrent `dma_write` and
    /// `copy_frame` on the same frame would be a data race (undefined behaviour): host tests
    /// never run them concurrently, and a threaded device model would need these copies to
    /// become per-word atomic ones.
    ///
    /// Inlined: once `Mm::alloc_anon_page` was inlined into its callers LLVM called this out
    /// of line from `wp_page_copy` (a call, a frame and the window reloaded per COW copy).
    #[inline(always)]
    pub(crate) unsafe fn copy_frame(&self, dst: PhysAddr, src: PhysAddr) {
        let d = self.ptr(dst, PAGE_SIZE);
        let s = self.ptr(src, PAGE_SIZE);
        assert_ne!(dst, src, "copy_frame onto itself");
        // SAFETY: both ranges are in the window (checked) and distinct whole frames, hence
        // non-overlapping and page aligned; the caller owns `dst`.
        unsafe { copy_page_at(d, s) };
    }

    /// Copies bytes starting at `pa` into `buf`; the range must stay within one frame.
    ///
    /// # Safety
    ///
    /// The bytes are not being written through a Rust reference meanwhile.
    pub(crate) unsafe fn read(&self, pa: PhysAddr, buf: &mut [u8]) {
        assert!(
            pa.page_offset() + buf.len() <= PAGE_SIZE,
            "read crosses a frame"
        );
        let s = self.ptr(pa, buf.len());
        // SAFETY: the source is in the window (checked); `buf` is a distinct Rust object
        // (Arch contract 1: the window overlaps no Rust object).
        unsafe { core::ptr::copy_nonoverlapping(s, buf.as_mut_ptr(), buf.len()) };
    }

    /// Copies `data` to physical memory at `pa`; the range must stay within one frame.
    ///
    /// # Safety
    ///
    /// The caller may write these bytes: they belong to a frame it owns, or to a user page it
    /// reached through a writable translation (the emulated CPU), or a pinned page.
    pub(crate) unsafe fn write(&self, pa: PhysAddr, data: &[u8]) {
        assert!(
            pa.page_offset() + data.len() <= PAGE_SIZE,
            "write crosses a frame"
        );
        let d = self.ptr(pa, data.len());
        // SAFETY: the destination is in the window (checked) and not a Rust object; the caller
        // may write it.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), d, data.len()) };
    }
}

/// Device access to a pinned page: the pin is what makes touching the frame legitimate.
impl PinnedPage {
    /// The device reads the page (DMA to the device): copies `buf.len()` bytes at `offset`.
    pub fn dma_read<A: Arch>(&self, mm: &Mm<A>, offset: usize, buf: &mut [u8]) {
        assert!(
            offset + buf.len() <= PAGE_SIZE,
            "DMA beyond the pinned page"
        );
        // SAFETY: the pin keeps the frame allocated; its contents are never accessed through a
        // Rust reference (user pages are only reached through raw copies).
        unsafe { mm.phys().read(self.frame() + offset as u64, buf) };
    }
}

/// Device writes into a page pinned with `FOLL_WRITE`.
impl DmaFromDevice<'_> {
    /// The device writes the page (DMA from the device), as the holder of a write pin may.
    pub fn dma_write<A: Arch>(&self, mm: &Mm<A>, offset: usize, data: &[u8]) {
        let frame = self.page.frame();
        assert!(
            offset + data.len() <= PAGE_SIZE,
            "DMA beyond the pinned page"
        );
        assert!(
            frame != mm.zero_page(),
            "DMA write into the shared zero page: it must have been unshared first"
        );
        // SAFETY: the pin keeps the frame allocated; it was taken with FOLL_WRITE, which broke
        // COW first, so the holder may write it (a `DmaFromDevice` exists for no other pin); the
        // contents are never accessed through a Rust reference.
        unsafe { mm.phys().write(frame + offset as u64, data) };
    }
}
