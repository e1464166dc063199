//! The fuzzer's data, at fixed addresses so that a program's pointers mean the same in every
//! run (syzkaller's data segment): 64 read-write pages, then a read-only page holding the
//! path strings, then a `PROT_NONE` page; the last four read-write pages are the executor's
//! scratch (iovec arrays, iocbs, results the kernel writes). `PLAY` is an unmapped range where
//! programs place their own mappings.

use cowlab_userland::calls::{mmap, mprotect, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE};
use cowlab_userland::calls::{PROT_NONE, PROT_READ, PROT_WRITE};

pub const DATA: u64 = 0x2000_0000;
pub const PAGE: u64 = 4096;
const RW_PAGES: u64 = 64;
pub const RO: u64 = DATA + RW_PAGES * PAGE;
pub const NONE: u64 = RO + PAGE;
/// Scratch for the executor: the last four read-write pages.
pub const SCRATCH: u64 = DATA + (RW_PAGES - 4) * PAGE;
pub const PLAY: u64 = 0x3000_0000;

#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Region {
    Rw = 0,
    Ro = 1,
    None = 2,
}

impl Region {
    pub fn pages(self) -> u64 {
        match self {
            Region::Rw => RW_PAGES,
            _ => 1,
        }
    }

    pub fn base(region: u8) -> u64 {
        match region {
            0 => DATA,
            1 => RO,
            _ => NONE,
        }
    }
}

/// The paths programs name: tmpfs files (the fuzzer empties `/tmp` after every program), the
/// devices, `/proc` and debugfs files, and names that must fail (empty, too long, missing,
/// trailing slash). Never the console (the host parses it) nor another process's files.
pub const PATHS: &[&str] = &[
    "/tmp/fz0",
    "/tmp/fz1",
    "/tmp/fz2",
    "/tmp",
    "/dev/vda",
    "/dev/null",
    "/proc/self/maps",
    "/proc/self/mem",
    "/proc/self/pagemap",
    "/proc/self/clear_refs",
    "/proc/meminfo",
    "/proc/cowlab/mmstat",
    "/sys/kernel/debug/gup_test",
    "/",
    "init",
    "/nonexistent",
    "",
    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "/tmp/fz0/",
    "/tmp/../tmp/fz1",
    "fz2",
    "/tmp/.",
    // One over NAME_MAX (the one above is a valid 249-byte name).
    "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    // The ext2 root's scratch directory (`SCRATCH_DIR`, the fuzzer's working directory, so
    // `init`, `fz2` and `.` above name things in it too): files, a directory, a file in it, the
    // file the child opens before each program.
    "/fz/e0",
    "/fz/e1",
    "/fz/ed",
    "/fz/ed/e2",
    "/fz",
    "/fz/base",
    "ed/e3",
];

/// The scratch directory on the ext2 root (emptied after every program; made again if a
/// program removed it). Programs reach the root's own files only through `/` and names that
/// must fail: a write there would outlive the program.
pub const SCRATCH_DIR: &core::ffi::CStr = c"/fz";

/// Where path `i` lies in the read-only page (NUL-terminated, one after the other).
pub fn path_addr(i: u8) -> u64 {
    let i = (i as usize) % PATHS.len();
    RO + PATHS[..i].iter().map(|p| p.len() as u64 + 1).sum::<u64>()
}

/// Maps the data once, in the parent (children inherit it through fork): false if it
/// cannot be mapped.
pub fn map() -> bool {
    let fixed = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
    let rw = PROT_READ | PROT_WRITE;
    if mmap(DATA as usize, ((RW_PAGES + 2) * PAGE) as usize, rw, fixed).is_err() {
        return false;
    }
    let mut at = RO as usize;
    for p in PATHS {
        // SAFETY: the read-only page is mapped read-write until the mprotect below, and the
        // strings fit in it (checked by the assertion).
        unsafe {
            core::ptr::copy_nonoverlapping(p.as_ptr(), at as *mut u8, p.len());
            *((at + p.len()) as *mut u8) = 0;
        }
        at += p.len() + 1;
    }
    assert!(at <= NONE as usize, "the paths fit in one page");
    // Touch every read-write page now, so no child's first store and no parent's check
    // allocates one later (the leak check compares frame counts around each child).
    for page in 0..RW_PAGES {
        // SAFETY: inside the read-write mapping made above.
        unsafe { core::ptr::write_volatile((DATA + page * PAGE) as *mut u8, 0) };
    }
    mprotect(RO as usize, PAGE as usize, PROT_READ).is_ok()
        && mprotect(NONE as usize, PAGE as usize, PROT_NONE).is_ok()
}
