//! The kernel-heap gate: system calls that create kernel objects a program can multiply are
//! refused with `ENOMEM` while the heap is down to its reserve (`heap::headroom`).
//!
//! Most of those objects are built through containers without a fallible API (`BTreeMap`
//! inserts for VMAs and tmpfs names, `Arc`s made inside `cowlab-mm`), so instead of threading
//! `try_` through every one, the call is admitted only if the heap has room for what it may
//! allocate on top of the reserve. Once admitted it may dip into the reserve, which exists for
//! exactly that and for the kernel's own work (exit, reaping, wake-ups): the program that filled
//! the heap gets an errno at its next creating call, never a kernel panic. Linux answers these
//! calls with `ENOMEM` when its allocations fail (`copy_process`, `vma_merge`/`split_vma`,
//! `alloc_file`, `shmem_file_setup`...). The per-call sizes are generous upper bounds of what
//! one call builds (the dispatch below names the call), not measurements.
//!
//! Calls that only read, free or exit are never refused, so a program can always clean up.
//! Nor are mkdir, symlink, chmod, utimensat and sync: on ext2 they make or change objects on
//! the disk, through its buffer cache of a bounded number of blocks, not on the heap (tmpfs and
//! the ramdisk refuse them).
#![deny(unsafe_code)]

use crate::errno::Errno;
use crate::heap;
use crate::proc::switch::KERNEL_STACK_SIZE;

/// Heap one call of `nr` may take, if it is a creating call.
const fn heap_needed(nr: u64) -> Option<usize> {
    Some(match nr {
        // open, creat, openat: an open file, maybe a tmpfs inode and its name.
        2 | 85 | 257 => 1024,
        // pipe, pipe2: the pipe and two open files (the buffer is charged as it fills).
        22 | 293 => 1024,
        // memfd_create: the shmem object, its name, the open file.
        319 => 1024,
        // dup, dup2, fcntl(F_DUPFD), dup3: descriptor-table growth.
        32 | 33 | 72 | 292 => 256,
        // link, rename, linkat, renameat, renameat2: a tmpfs name.
        82 | 86 | 264 | 265 | 316 => 512,
        // mmap, mprotect, munmap, mremap: a VMA split adds one.
        9 | 10 | 11 | 25 => 512,
        // clone, fork, vfork: a task, its kernel stack, FPU area, tables and VMA copies.
        56..=58 => KERNEL_STACK_SIZE + 16 * 1024,
        // execve: the argument and environment strings are copied through the heap.
        59 => 256 * 1024,
        // futex wait: a waiter record.
        202 => 256,
        // io_setup, io_submit: a context and its events, requests.
        206 | 209 => 4096,
        // vmsplice: segment records.
        278 => 512,
        // io_uring_setup, io_uring_register: a ring, registered-buffer page lists.
        425 | 427 => 4096,
        _ => return None,
    })
}

/// Whether [`admit`] may refuse call `nr` (a creating call).
pub const fn is_gated(nr: u64) -> bool {
    heap_needed(nr).is_some()
}

/// [`heap_needed`] by number (0: not a creating call), so the gate costs one load on the
/// system-call path.
static NEEDED: [u32; 512] = {
    let mut table = [0u32; 512];
    let mut nr = 0;
    while nr < table.len() {
        if let Some(bytes) = heap_needed(nr as u64) {
            table[nr] = bytes as u32;
        }
        nr += 1;
    }
    table
};

/// `ENOMEM` if `nr` creates kernel objects and the heap has no room for them above its
/// reserve.
#[inline]
pub fn admit(nr: u64) -> Result<(), Errno> {
    match NEEDED.get(nr as usize) {
        Some(&bytes) if bytes != 0 => heap::headroom(bytes as usize),
        _ => Ok(()),
    }
}
