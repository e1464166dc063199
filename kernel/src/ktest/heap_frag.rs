//! User-sized kernel allocations on a fragmented heap: room in total (well above the reserve,
//! so `heap::headroom` admits them) but no free block as large as one request. Such a request
//! must be `ENOMEM`, not an allocation failure (which panics the kernel). Regression for the
//! tmpfs listing (`tmpfs::entries` and `TmpfsRoot::getdents` grew plain `Vec`s: `t_rob3_heap
//! exhaust` panicked in getdents of /tmp once the heap was fragmented) and for io_uring's
//! buffer registration (its iovec copy and slot array were `Vec::with_capacity` of up to 16384
//! entries); both fixed in e29d626. A full heap does not show either: the system-call gate
//! (`syscall/admit.rs`) refuses the call before it allocates.

use alloc::format;

use super::heap::{fill_with, free_block, free_chain};
use super::{ensure, TestResult};
use crate::errno::Errno;
use crate::fs::mount::{DirInode, TmpfsRoot};
use crate::fs::{io_uring, tmpfs, O_CREAT};
use crate::heap;

/// The holes' size: every free block is this long, once [`fragment`] is done.
const HOLE: usize = 16 * 1024;

/// A heap left with every free byte in [`HOLE`]-sized blocks between held ones: the blocks
/// still held (a [`fill_with`] chain), to give back with [`release`].
struct Fragmented {
    held: *mut u8,
}

/// Fills the whole heap with [`HOLE`]-sized blocks (then smaller ones, down to 16 bytes, so no
/// other free space is left), then frees every other [`HOLE`] block: about half the heap is
/// free, in holes no larger than [`HOLE`] (their neighbours are held).
fn fragment() -> Fragmented {
    heap::shrink();
    let mut holes = core::ptr::null_mut();
    fill_with(HOLE, &mut holes);
    let mut held = core::ptr::null_mut();
    let mut size = HOLE / 2;
    while size >= 16 {
        fill_with(size, &mut held);
        size /= 2;
    }
    // `holes` lists the HOLE blocks newest first: free one, keep the next.
    let mut block = holes;
    while !block.is_null() {
        let keep = free_block(block);
        if keep.is_null() {
            break;
        }
        // SAFETY: `keep` is a live chained block; relink it onto `held`.
        block = unsafe { keep.cast::<*mut u8>().read() };
        // SAFETY: as above.
        unsafe { keep.cast::<*mut u8>().write(held) };
        held = keep;
    }
    Fragmented { held }
}

fn release(f: Fragmented) {
    free_chain(f.held);
    heap::shrink();
}

/// getdents64 of /tmp with 1200 names (a 38 KiB copy of the listing) on a heap fragmented into
/// 16 KiB holes: `ENOMEM` from both `tmpfs::entries` and the directory's listing, the heap's
/// usage back afterwards, and the listing complete again.
pub fn heap_frag_tmpfs_listing_is_enomem() -> TestResult {
    const FILES: usize = 1200;
    let name = |i: usize| format!("kt_frag_{i:04}");
    for i in 0..FILES {
        let made = tmpfs::open(&name(i), false, O_CREAT, 0o600).map(drop);
        ensure!(made.is_ok(), "creating /tmp/{}: {made:?}", name(i));
    }
    heap::shrink();
    let used_before = heap::used();
    let frag = fragment();
    let free = heap::stats().free_bytes;
    let listed = tmpfs::entries().map(|v| v.len());
    let dents = TmpfsRoot.getdents().map(|v| v.len());
    release(frag);
    let used_after = heap::used();
    let again = tmpfs::entries().map(|v| v.len());
    let removed = (0..FILES).all(|i| tmpfs::unlink(&name(i)).is_ok());
    ensure!(
        free >= heap::reserve() + 4 * FILES * 32,
        "the fragmented heap has {free} bytes free: too little to pass the headroom check"
    );
    ensure!(
        listed == Err(Errno::ENOMEM),
        "tmpfs::entries on a fragmented heap: {listed:?}"
    );
    ensure!(
        dents == Err(Errno::ENOMEM),
        "getdents of /tmp on a fragmented heap: {dents:?}"
    );
    ensure!(
        used_after == used_before,
        "heap usage {used_before} before, {used_after} after"
    );
    ensure!(
        again.is_ok_and(|n| n >= FILES),
        "the listing once the heap is whole: {again:?}"
    );
    ensure!(removed, "unlinking the test's names");
    Ok(())
}

/// `IORING_REGISTER_BUFFERS` of 16384 buffers (a 256 KiB iovec copy, a slot array as large or
/// larger) on a heap fragmented into 16 KiB holes: both arrays are `ENOMEM`, before any entry
/// is read; on the whole heap the same copy gets as far as reading the (unmapped) array,
/// `EFAULT`, and the slots fit; the heap's usage is back afterwards.
pub fn heap_frag_uring_registration_is_enomem() -> TestResult {
    const NR: u64 = 16384;
    const UNMAPPED: u64 = 0x1000;
    heap::shrink();
    let used_before = heap::used();
    let frag = fragment();
    let iovs = io_uring::read_iovecs(UNMAPPED, NR).map(|v| v.len());
    let slots = io_uring::registration_slots_fit(NR as usize);
    release(frag);
    let used_after = heap::used();
    let iovs_whole = io_uring::read_iovecs(UNMAPPED, NR).map(|v| v.len());
    let slots_whole = io_uring::registration_slots_fit(NR as usize);
    heap::shrink();
    ensure!(
        iovs == Err(Errno::ENOMEM),
        "the iovec copy on a fragmented heap: {iovs:?}"
    );
    ensure!(
        slots == Err(Errno::ENOMEM),
        "the slot array on a fragmented heap: {slots:?}"
    );
    ensure!(
        iovs_whole == Err(Errno::EFAULT),
        "the iovec copy on the whole heap (the array is unmapped): {iovs_whole:?}"
    );
    ensure!(
        slots_whole.is_ok_and(|n| n >= NR as usize),
        "the slot array on the whole heap: {slots_whole:?}"
    );
    ensure!(
        used_after == used_before && heap::used() == used_before,
        "heap usage {used_before} before, {used_after} after, {} at the end",
        heap::used()
    );
    Ok(())
}
