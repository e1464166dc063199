//! The application processors' first instructions: real mode to long mode in one page.
//!
//! A STARTUP IPI starts a CPU in 16-bit real mode at `CS = page << 8, IP = 0`, so the code must
//! sit in a page below 1 MiB (the one `memory` reserves) and address everything relative to its
//! own start. It goes straight from real mode to long mode (no protected-mode stop): PAE in CR4,
//! a PML4 in CR3 (below 4 GiB: real mode moves 32 bits into it), LME and NXE in EFER, then PE, WP
//! and PG in CR0 together, and a far jump into a 64-bit code segment of its own small GDT. The
//! PML4 is a temporary one ([`LowTables`]): the kernel half of the boot PML4, plus an identity
//! mapping of the trampoline page so that the instructions right after paging is on still
//! translate. The 64-bit tail loads the stack, the argument and the entry point that
//! [`install`] wrote into the page's data slots, and calls the entry (a kernel-half address)
//! with the CPU's index; the entry switches to the boot PML4 itself.
//!
//! The code is assembled into the kernel image and copied into the low page; the slots and the
//! two absolute addresses it needs (the far jump's target, the GDT's base) are patched in the
//! copy from the symbols' offsets.

use core::arch::global_asm;

use cowlab_mm::addr::PhysAddr;
use cowlab_mm::PAGE_SIZE;

use crate::memory;

global_asm!(
    ".pushsection .text.cowlab_ap_trampoline, \"ax\"",
    ".global cowlab_ap_trampoline_start",
    ".global cowlab_ap_trampoline_end",
    ".global cowlab_ap_ljmp_target",
    ".global cowlab_ap_long",
    ".global cowlab_ap_gdt",
    ".global cowlab_ap_gdtr",
    ".global cowlab_ap_data",
    ".code16",
    "cowlab_ap_trampoline_start:",
    "    cli",
    "    cld",
    "    mov ax, cs",
    "    mov ds, ax",
    "    mov eax, cr4",
    "    or eax, 0x20",
    "    mov cr4, eax",
    // mov eax, [cowlab_ap_data] (66 A1 moffs16: DS-relative, DS = the page's segment); the
    // assembler takes no symbol difference inside a memory operand, so these two are spelled.
    "    .byte 0x66, 0xa1",
    "    .word cowlab_ap_data - cowlab_ap_trampoline_start",
    "    mov cr3, eax",
    "    mov ecx, 0xc0000080",
    "    rdmsr",
    "    or eax, 0x900",
    "    wrmsr",
    // lgdt [cowlab_ap_gdtr] (0F 01 /2, ModRM 0x16: disp16).
    "    .byte 0x0f, 0x01, 0x16",
    "    .word cowlab_ap_gdtr - cowlab_ap_trampoline_start",
    "    mov eax, cr0",
    "    or eax, 0x80010001",
    "    mov cr0, eax",
    // ljmpl 0x08:target (32-bit offset, patched with the physical address of cowlab_ap_long).
    "    .byte 0x66, 0xea",
    "cowlab_ap_ljmp_target:",
    "    .long 0",
    "    .word 0x08",
    ".code64",
    "cowlab_ap_long:",
    "    mov eax, 0x10",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    mov rsp, [rip + cowlab_ap_data + 8]",
    "    mov rdi, [rip + cowlab_ap_data + 24]",
    "    mov rax, [rip + cowlab_ap_data + 16]",
    "    call rax",
    "2:  hlt",
    "    jmp 2b",
    ".p2align 3",
    "cowlab_ap_gdt:",
    "    .quad 0",
    "    .quad 0x00af9a000000ffff",
    "    .quad 0x00cf92000000ffff",
    "cowlab_ap_gdtr:",
    "    .word 23",
    "    .long 0",
    "    .word 0",
    ".p2align 3",
    // cr3, stack top, entry, argument.
    "cowlab_ap_data:",
    "    .quad 0, 0, 0, 0",
    "cowlab_ap_trampoline_end:",
    ".popsection",
);

extern "C" {
    static cowlab_ap_trampoline_start: u8;
    static cowlab_ap_trampoline_end: u8;
    static cowlab_ap_ljmp_target: u8;
    static cowlab_ap_long: u8;
    static cowlab_ap_gdt: u8;
    static cowlab_ap_gdtr: u8;
    static cowlab_ap_data: u8;
}

/// Offset of a trampoline symbol from its start.
fn offset(symbol: *const u8) -> usize {
    let start = &raw const cowlab_ap_trampoline_start;
    symbol as usize - start as usize
}

/// What one application processor starts with.
pub struct Launch {
    /// The temporary PML4 (below 4 GiB).
    pub cr3: u64,
    /// Top of the stack the entry runs on (16-byte aligned).
    pub stack_top: u64,
    /// `extern "C" fn(u64) -> !`, a kernel-half address.
    pub entry: u64,
    /// The entry's argument (the CPU index).
    pub argument: u64,
}

/// Copies the trampoline into `frame` and writes its absolute addresses; [`set_launch`] then
/// fills its data slots for each CPU.
pub fn install(frame: PhysAddr) {
    let start = &raw const cowlab_ap_trampoline_start;
    let len = offset(&raw const cowlab_ap_trampoline_end);
    assert!(len <= PAGE_SIZE, "the AP trampoline fits one page");
    let page = memory::phys_to_virt(frame);
    let base = frame.as_u64();
    // SAFETY: `frame` is the reserved low frame (no allocator hands it out), mapped writable at
    // the physical-memory offset; the source is `len` bytes of kernel text; the patched fields
    // lie inside the copy (their offsets are below `len`), written unaligned as they may be.
    unsafe {
        core::ptr::copy_nonoverlapping(start, page, len);
        page.add(offset(&raw const cowlab_ap_ljmp_target))
            .cast::<u32>()
            .write_unaligned((base + offset(&raw const cowlab_ap_long) as u64) as u32);
        page.add(offset(&raw const cowlab_ap_gdtr) + 2)
            .cast::<u32>()
            .write_unaligned((base + offset(&raw const cowlab_ap_gdt) as u64) as u32);
    }
}

/// Writes the data slots of the trampoline in `frame` for the next CPU to start.
pub fn set_launch(frame: PhysAddr, launch: &Launch) {
    let data = memory::phys_to_virt(frame)
        .wrapping_add(offset(&raw const cowlab_ap_data))
        .cast::<u64>();
    // SAFETY: the data slots of the copy `install` made (8-byte aligned, `.p2align 3`); no CPU
    // runs the trampoline while they are written (the previous one has reported itself online,
    // the next one is not started yet).
    unsafe {
        data.write_volatile(launch.cr3);
        data.add(1).write_volatile(launch.stack_top);
        data.add(2).write_volatile(launch.entry);
        data.add(3).write_volatile(launch.argument);
    }
}

/// The temporary page tables the application processors start on: a PML4 with the boot PML4's
/// kernel half and an identity mapping of the trampoline page. Freed by [`LowTables::free`].
pub struct LowTables {
    /// PML4, PDPT, PD, PT (the PML4 first).
    frames: [PhysAddr; 4],
}

const PRESENT_WRITABLE: u64 = 0b11;
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

fn zeroed_frame() -> Option<PhysAddr> {
    let frame = memory::frames().alloc()?;
    // SAFETY: a freshly allocated frame, ours alone, mapped writable at the offset.
    unsafe { core::ptr::write_bytes(memory::phys_to_virt(frame), 0, PAGE_SIZE) };
    Some(frame)
}

fn entry(table: PhysAddr, index: usize) -> *mut u64 {
    memory::phys_to_virt(table)
        .cast::<u64>()
        .wrapping_add(index)
}

impl LowTables {
    /// Builds the tables for `trampoline` from the boot PML4 `boot_pml4`. `None` when frames
    /// run out or the PML4 would lie above 4 GiB.
    pub fn new(boot_pml4: PhysAddr, trampoline: PhysAddr) -> Option<LowTables> {
        let mut frames = [PhysAddr::new(0); 4];
        for (i, slot) in frames.iter_mut().enumerate() {
            match zeroed_frame() {
                Some(frame) => *slot = frame,
                None => {
                    frames[..i].iter().for_each(|f| memory::frames().free(*f));
                    return None;
                }
            }
        }
        let tables = LowTables { frames };
        if frames[0].as_u64() >= 1 << 32 {
            tables.free();
            return None;
        }
        let va = trampoline.as_u64();
        let indices = [
            (va >> 39) as usize & 511,
            (va >> 30) as usize & 511,
            (va >> 21) as usize & 511,
        ];
        // SAFETY: the four frames are ours (just allocated and zeroed); the boot PML4 is read
        // only (its kernel half is final after `paging::init`); every index is below 512.
        unsafe {
            for (level, index) in indices.iter().enumerate() {
                entry(frames[level], *index).write(frames[level + 1].as_u64() | PRESENT_WRITABLE);
            }
            entry(frames[3], (va >> 12) as usize & 511).write(va | PRESENT_WRITABLE);
            for index in crate::paging::KERNEL_PML4_START..512 {
                entry(frames[0], index).write(entry(boot_pml4, index).read());
            }
        }
        debug_assert_eq!(
            // SAFETY: reads back the PT entry just written.
            unsafe { entry(frames[3], (va >> 12) as usize & 511).read() } & ADDRESS_MASK,
            va
        );
        Some(tables)
    }

    /// The PML4 to give [`Launch::cr3`].
    pub fn pml4(&self) -> u64 {
        self.frames[0].as_u64()
    }

    /// Returns the frames once no CPU uses the tables (every AP switched to the boot PML4).
    pub fn free(self) {
        for frame in self.frames {
            memory::frames().free(frame);
        }
    }
}
