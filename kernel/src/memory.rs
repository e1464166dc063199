//! Physical memory at boot: the memory map, the frame table and the kernel heap.
//!
//! The bootloader hands us a map of physical memory and a mapping of all of it at a dynamic
//! virtual offset. From the usable regions we compute the highest usable PFN, then carve, from
//! the start of the largest usable region, the frame-metadata array (`cowlab_mm::frame`, one
//! 16-byte `FrameMeta` per PFN up to the highest usable one) and the kernel heap (a fixed region
//! given to `heap`: slab caches in front of a linked list, `cowlab_kalloc`); everything else
//! that is usable goes to the frame allocator, which *is* `cowlab_mm::frame::FrameTable` (an
//! intrusive free list through the metadata: O(1) allocate and free). Frame 0 is kept out so that
//! physical address 0 is never a valid frame. Carving both from one region keeps the rest of
//! memory in whole, large ranges, and needs no allocator to bootstrap the allocator.
//!
//! Once the kernel half of the page tables is final (`paging`), [`init_mm`] builds the memory
//! manager, `cowlab_mm::Mm` over [`crate::arch::KernelArch`], with the boot PML4 as the template
//! every address space copies its kernel half from. The rest of the kernel reaches physical
//! memory only through [`phys_to_virt`], the frame table only through [`frames`] and the memory
//! manager through [`mm`].

use core::mem::{size_of, MaybeUninit};
use core::sync::atomic::{AtomicUsize, Ordering};

use bootloader_api::info::{MemoryRegion, MemoryRegionKind};
use bootloader_api::BootInfo;
use cowlab_mm::addr::PhysAddr;
use cowlab_mm::frame::{FrameMeta, FrameTable};
use cowlab_mm::{Era, Mm, PAGE_SIZE};
use spin::Once;
use x86_64::registers::control::Cr3;

use crate::arch::KernelArch;

/// Default size of the kernel heap (`kheap=<MiB>` on the command line sets another). Every
/// user-sized kernel allocation (pipe buffers, AIO rings, tmpfs names, VMAs, registration page
/// lists) is bounded by a system-wide budget that fits well inside it; beyond those, user-driven
/// allocations fail with `ENOMEM` at the heap's reserve (`heap`).
pub const HEAP_SIZE: usize = 64 * 1024 * 1024;
/// Smallest and largest `kheap=` accepted (MiB).
pub const HEAP_MIB_RANGE: (usize, usize) = (4, 1024);
const MIB: u64 = 1024 * 1024;

static PHYSICAL_MEMORY_OFFSET: Once<u64> = Once::new();
static FRAMES: Once<FrameTable> = Once::new();
static LAYOUT: Once<Layout> = Once::new();
static MM: Once<Mm<KernelArch>> = Once::new();
static BOOT_FREE_FRAMES: AtomicUsize = AtomicUsize::new(0);
/// The frame below 1 MiB kept out of the allocator for the application processors' real-mode
/// start-up code (`smp::trampoline`); 0 when the memory map has none.
static TRAMPOLINE_FRAME: AtomicUsize = AtomicUsize::new(0);

/// What [`init`] decided, for the boot summary.
struct Layout {
    usable_regions: usize,
    usable_bytes: u64,
    /// One past the highest usable PFN: the length of the metadata array.
    pfn_limit: usize,
    meta_start: u64,
    meta_bytes: u64,
    heap_start: u64,
    heap_bytes: usize,
}

/// The virtual address at which the bootloader mapped physical address `phys`.
pub fn phys_to_virt(phys: PhysAddr) -> *mut u8 {
    let offset = *PHYSICAL_MEMORY_OFFSET.get().expect("memory::init has run");
    (offset + phys.as_u64()) as *mut u8
}

/// The frame allocator and metadata of all physical frames.
pub fn frames() -> &'static FrameTable {
    FRAMES.get().expect("memory::init has run")
}

/// The memory manager. Panics before [`init_mm`].
pub fn mm() -> &'static Mm<KernelArch> {
    MM.get().expect("memory::init_mm has run")
}

/// The allocator's free-frame count recorded at the end of boot (see [`print_summary`]).
pub fn boot_free_frames() -> usize {
    BOOT_FREE_FRAMES.load(Ordering::Relaxed)
}

/// The physical frame reserved below 1 MiB for the application processors' start-up code.
pub fn trampoline_frame() -> Option<PhysAddr> {
    let frame = TRAMPOLINE_FRAME.load(Ordering::Relaxed) as u64;
    (frame != 0).then(|| PhysAddr::new(frame))
}

/// The page-aligned part `[start, end)` of a usable region, without frame 0.
fn usable_range(region: &MemoryRegion) -> Option<(u64, u64)> {
    if region.kind != MemoryRegionKind::Usable {
        return None;
    }
    let page = PAGE_SIZE as u64;
    let start = region.start.div_ceil(page).max(1) * page;
    let end = region.end / page * page;
    (start < end).then_some((start, end))
}

/// Sets up the frame table and the heap (`heap_mib` MiB, or [`HEAP_SIZE`]) from the
/// bootloader's memory map.
pub fn init(boot_info: &BootInfo, heap_mib: Option<usize>, mem_mib: Option<usize>) {
    let heap_bytes = heap_mib.map_or(HEAP_SIZE, |mib| mib * MIB as usize);
    let offset = boot_info
        .physical_memory_offset
        .into_option()
        .expect("the bootloader maps physical memory (BootloaderConfig asks for it)");
    PHYSICAL_MEMORY_OFFSET.call_once(|| offset);

    let regions = || boot_info.memory_regions.iter().filter_map(usable_range);
    let usable_regions = regions().count();
    let usable_bytes: u64 = regions().map(|(start, end)| end - start).sum();
    let highest_end = regions()
        .map(|(_, end)| end)
        .max()
        .expect("no usable memory");
    let pfn_limit = PhysAddr::new(highest_end).pfn();
    let (carve_start, carve_end) = regions()
        .max_by_key(|(start, end)| end - start)
        .expect("no usable memory");

    let meta_bytes = ((pfn_limit * size_of::<FrameMeta>()).div_ceil(PAGE_SIZE) * PAGE_SIZE) as u64;
    let meta_start = carve_start;
    let heap_start = meta_start + meta_bytes;
    let carved_end = heap_start + heap_bytes as u64;
    assert!(
        carved_end <= carve_end,
        "largest usable region [{carve_start:#x}, {carve_end:#x}) cannot hold the frame \
         metadata ({meta_bytes:#x} bytes) and the heap ({heap_bytes:#x} bytes)"
    );

    // SAFETY: [meta_start, meta_start + meta_bytes) is usable RAM (memory map) that nothing else
    // uses: it is carved out before any of it reaches the allocator or the heap, and the
    // bootloader's offset mapping maps it writable. `MaybeUninit` needs no initialisation, the
    // address is page aligned (enough for FrameMeta) and `pfn_limit` entries fit in meta_bytes.
    let meta = unsafe {
        core::slice::from_raw_parts_mut(
            phys_to_virt(PhysAddr::new(meta_start)).cast::<MaybeUninit<FrameMeta>>(),
            pfn_limit,
        )
    };
    let table = FRAMES.call_once(|| FrameTable::new(meta));

    // A STARTUP IPI starts a CPU in real mode at a page below 1 MiB: keep the first usable one.
    let trampoline = regions()
        .find_map(|(start, end)| (start + PAGE_SIZE as u64 <= end.min(MIB)).then_some(start));
    TRAMPOLINE_FRAME.store(trampoline.unwrap_or(0) as usize, Ordering::Relaxed);

    // `mem=`: the bytes the allocator may still be given.
    let mut budget = mem_mib.map_or(u64::MAX, |mib| mib as u64 * MIB);
    for (start, end) in regions() {
        // What is left of the carved region starts after the heap.
        let start = if start == carve_start {
            carved_end
        } else {
            start
        };
        let end = end.min(start.saturating_add(budget));
        budget -= end.saturating_sub(start);
        let add = |start: u64, end: u64| {
            if start < end {
                table.add_free_range(PhysAddr::new(start), PhysAddr::new(end));
            }
        };
        match trampoline {
            Some(frame) if (start..end).contains(&frame) => {
                add(start, frame);
                add(frame + PAGE_SIZE as u64, end);
            }
            _ => add(start, end),
        }
    }

    // SAFETY: [heap_start, carved_end) is carved usable RAM mapped writable at the offset, used
    // by nothing else, and this is the only `init` of the heap (FRAMES' Once ran just above).
    unsafe { crate::heap::init(phys_to_virt(PhysAddr::new(heap_start)), heap_bytes) };

    LAYOUT.call_once(|| Layout {
        usable_regions,
        usable_bytes,
        pfn_limit,
        meta_start,
        meta_bytes,
        heap_start,
        heap_bytes,
    });
}

/// Offers 1 GiB hugetlb pages if the CPU maps 1 GiB pages (CPUID 0x80000001 EDX bit 26,
/// `pdpe1gb`; Linux's `X86_FEATURE_GBPAGES`), then reserves the boot-time pools of the
/// command line: `gigantic` 1 GiB pages first, while nothing has been allocated yet and
/// every free aligned GiB is whole (Linux allocates gigantic boot pages from memblock, before
/// the buddy allocator, for the same reason), then `huge` 2 MiB pages. Fewer pages than
/// asked (too little memory) are reported, as Linux's "HugeTLB: allocating N of page size 1
/// GiB failed".
pub fn reserve_hugetlb(gigantic: u64, huge: u64) {
    let edx = core::arch::x86_64::__cpuid(0x8000_0001).edx;
    let gbpages = edx & (1 << 26) != 0;
    cowlab_mm::hugetlb::set_gigantic_supported(gbpages);
    let table = frames();
    if gigantic > 0 {
        if gbpages {
            table.hugetlb_set_max_of(cowlab_mm::frame::HugeSize::Pud, gigantic);
        }
        let got = table
            .hugetlb_counts_of(cowlab_mm::frame::HugeSize::Pud)
            .total;
        if got < gigantic {
            warn!(
                "hugetlb: {got} of {gigantic} 1 GiB pages reserved ({})",
                if gbpages {
                    "no more 1 GiB-aligned free memory"
                } else {
                    "the CPU has no 1 GiB pages"
                }
            );
        } else {
            info!("hugetlb: {got} 1 GiB pages reserved at boot");
        }
    }
    if huge > 0 {
        table.hugetlb_set_max(huge);
    }
}

/// Builds the memory manager (which takes the shared zero page) under rule set `era`. Call after
/// `paging::init`: the active PML4 becomes the kernel-half template of every address space.
pub fn init_mm(era: Era) {
    let offset = *PHYSICAL_MEMORY_OFFSET.get().expect("memory::init has run");
    // SAFETY: `offset` is the bootloader's mapping of all physical memory (BootInfo).
    let arch = unsafe { KernelArch::new(offset) };
    let (boot_pml4, _) = Cr3::read();
    let template = PhysAddr::new(boot_pml4.start_address().as_u64());
    let mm = MM.call_once(|| {
        // SAFETY: `template` is the active boot PML4: a page-table page inside the physical
        // memory `arch` maps, never freed. `paging::init` (which ran before) was the last writer
        // of its kernel-half entries (every one now points to a PDPT, so nothing adds one
        // later): from here on they are only read, by the MMU and by `Mm`'s atomic copies.
        unsafe { Mm::new(frames(), arch, Some(template)) }.expect("a free frame for the zero page")
    });
    mm.set_era(era);
    info!(
        "mm: era {}, zero page at {:#x}",
        mm.era(),
        mm.zero_page().as_u64()
    );
}

/// Prints the memory summary and records the free-frame count at boot. Call after every boot-time
/// allocation (the page-table set-up takes frames too).
pub fn print_summary(boot_info: &BootInfo) {
    let layout = LAYOUT.get().expect("memory::init has run");
    let table = frames();
    info!(
        "memory map: {} usable regions, {} MiB usable RAM",
        layout.usable_regions,
        layout.usable_bytes / MIB
    );
    for (start, end) in boot_info.memory_regions.iter().filter_map(usable_range) {
        info!(
            "  usable [{start:#012x}, {end:#012x}) {} KiB",
            (end - start) / 1024
        );
    }
    info!(
        "frame metadata: {} bytes per frame, {} KiB at {:#x} for PFNs below {:#x}",
        size_of::<FrameMeta>(),
        layout.meta_bytes / 1024,
        layout.meta_start,
        layout.pfn_limit
    );
    info!(
        "kernel heap: {} MiB at {:#x}, {} KiB reserved for the kernel",
        layout.heap_bytes as u64 / MIB,
        layout.heap_start,
        crate::heap::reserve() / 1024
    );
    let total = table.usable_frames();
    let free = table.free_frames();
    let page = PAGE_SIZE as u64;
    info!(
        "frames: {total} total ({} MiB), {free} free ({} MiB)",
        total as u64 * page / MIB,
        free as u64 * page / MIB
    );
    BOOT_FREE_FRAMES.store(free, Ordering::Relaxed);
}
