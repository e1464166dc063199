//! The cowlab kernel: what runs between the bootloader's jump and the power-off.
//!
//! `kernel_main` is a straight line on purpose: each step below depends only on the steps before
//! it (the console needs nothing, the exception handlers need the console, the heap needs the
//! frame metadata carved from the memory map, and so on), so reading it top to bottom is reading
//! the boot order. Mechanism lives in one module per concept; this file only sequences them.

#![no_std]
#![no_main]
// `Box::try_new`/`Arc::try_new`: user-driven allocations fail with ENOMEM (`heap`).
#![feature(allocator_api)]

extern crate alloc;

#[macro_use]
mod log;
#[macro_use]
mod serial;

mod apic;
mod arch;
mod backtrace;
mod bkl;
mod bklstat;
mod calibrate;
mod cmdline;
mod drivers;
mod elf;
mod errno;
mod extable;
mod fault_unlocked;
mod faultstat;
mod fs;
mod fwcfg;
mod gdt;
mod gup_hold;
mod heap;
mod idt;
mod ioapic;
#[cfg(feature = "kcov")]
mod kcov;
mod ktest;
mod locking;
mod memory;
mod paging;
mod panic;
mod percpu;
mod pic;
mod pmtimer;
mod proc;
mod qemu;
mod ramdisk;
mod random;
mod rtc;
mod smp;
mod syscall;
mod tick;
mod time;
mod uaccess;
mod vm;
mod watchdog;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};

/// Where the bootloader puts things. The kernel image sits at a fixed address (it is a PIE, but a
/// fixed base makes the symbols of the unstripped ELF match for gdb and for xtask's backtrace
/// symbolizer); everything the bootloader maps dynamically goes to the upper half so that the
/// whole lower half stays free for user space.
const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.kernel_base = Mapping::FixedAddress(0xffff_ffff_8000_0000);
    config.mappings.dynamic_range_start = Some(0xffff_8000_0000_0000);
    config.kernel_stack_size = 256 * 1024;
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

/// The kernel's version, printed in the banner.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    serial::init();
    time::init();
    gdt::init();
    idt::init();
    percpu::init(0);
    locking::init();
    bkl::init_boot();
    syscall::entry::init();
    proc::switch::enable_sse();

    let cmdline = cmdline::init();
    log::set_level(cmdline.loglevel);
    info!("cowlab {VERSION}");
    cmdline::report_problems();
    info!("command line: \"{}\"", cmdline.raw);
    info!("era: {}", cmdline.era);

    memory::init(boot_info, cmdline.kheap_mib, cmdline.mem_mib);
    time::calibrate(boot_info.rsdp_addr.into_option());
    rtc::init();
    memory::reserve_hugetlb(cmdline.hugepages_1g, cmdline.hugepages_2m);
    paging::init();
    memory::init_mm(cmdline.era);
    vm::init();
    smp::init(boot_info, cmdline.smp_sched);
    bkl::allow_unlocked_faults(!cmdline.fault_bkl);
    memory::print_summary(boot_info);

    pic::init();
    drivers::init();
    time::start_timer();
    watchdog::init(cmdline);
    x86_64::instructions::interrupts::enable();

    ramdisk::init(boot_info);
    ramdisk::print_listing();
    fs::ext2_mount::mount_root();

    if let Some(selection) = cmdline.ktest {
        ktest::run(selection);
    }

    let argv: alloc::vec::Vec<alloc::string::String> =
        core::iter::once(alloc::string::String::from("init"))
            .chain(cmdline.init_args())
            .collect();
    if let Err(errno) = proc::exec::spawn_init("init", &argv) {
        error!("cannot start init: {errno:?}");
        qemu::exit(qemu::ExitStatus::Panic)
    }
    fs::writeback::start();
    proc::sched::run()
}
