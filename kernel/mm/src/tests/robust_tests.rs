//! Robustness rules (issue 17): mremap's argument bounds and its moves of shared, private and
//! `PROT_NONE` mappings by page-table entry; `VM_MAYWRITE` and memfd seals; the stack guard
//! gap and stack growth.

use alloc::sync::Arc;

use super::shmem_tests::{map_obj, memfd, obj_u64};
use super::*;
use crate::aspace::USER_END;
use crate::error::{FaultError, MmError, SegvReason};
use crate::mremap::MremapFlags;
use crate::shmem::{seals, shared_mapping_may_write, ShmemObject};
use crate::stack::STACK_GUARD_GAP;
use crate::vma::VmaFlags;

const MAYMOVE: MremapFlags = MremapFlags::MAYMOVE;
const FIXED: MremapFlags = MremapFlags::from_linux(3);
const NONE: MremapFlags = MremapFlags::from_linux(0);

fn remap(
    env: &Env,
    s: &mut AddressSpace,
    addr: u64,
    old: u64,
    new: u64,
    flags: MremapFlags,
) -> Result<u64, MmError> {
    s.mremap(&env.mm, addr, old, new, flags, 0)
        .map(|v| v.as_u64())
}

/// Defect 1: every sum of a user address and length is bounded first; the answers are the
/// ones Linux 6.18 gives for the same calls.
#[test]
fn mremap_bounds_every_user_range() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW).as_u64();
    let top = 0xffff_ffff_ffff_f000;
    // The reported panic: a kernel address whose sum with the length wraps.
    assert_eq!(
        remap(&env, &mut s, top, PAGE, 2 * PAGE, NONE),
        Err(MmError::Fault)
    );
    assert_eq!(
        remap(&env, &mut s, top, 2 * PAGE, PAGE, NONE),
        Err(MmError::Fault)
    );
    assert_eq!(
        remap(&env, &mut s, USER_END, PAGE, 2 * PAGE, MAYMOVE),
        Err(MmError::Fault)
    );
    // Lengths that wrap when rounded up, or exceed user space.
    assert_eq!(
        remap(&env, &mut s, va, u64::MAX - 4095, PAGE, NONE),
        Err(MmError::Inval)
    );
    assert_eq!(
        remap(&env, &mut s, va, u64::MAX, PAGE, NONE),
        Err(MmError::Inval)
    );
    assert_eq!(
        remap(&env, &mut s, va, PAGE, u64::MAX, MAYMOVE),
        Err(MmError::Inval)
    );
    assert_eq!(
        remap(&env, &mut s, va, PAGE, USER_END + PAGE, MAYMOVE),
        Err(MmError::Inval)
    );
    assert_eq!(
        remap(&env, &mut s, va, PAGE, 0, MAYMOVE),
        Err(MmError::Inval)
    );
    // Too big to place anywhere, but not beyond user space: ENOMEM.
    assert_eq!(
        remap(&env, &mut s, va, PAGE, USER_END - PAGE, MAYMOVE),
        Err(MmError::NoMem)
    );
    // Flags and alignment.
    assert_eq!(
        remap(&env, &mut s, va + 1, PAGE, PAGE, NONE),
        Err(MmError::Inval)
    );
    assert_eq!(
        remap(&env, &mut s, va, PAGE, PAGE, MremapFlags::from_linux(8)),
        Err(MmError::Inval)
    );
    assert_eq!(
        s.mremap(
            &env.mm,
            va,
            PAGE,
            2 * PAGE,
            MremapFlags::FIXED,
            va + 8 * PAGE
        ),
        Err(MmError::Inval),
        "MREMAP_FIXED without MREMAP_MAYMOVE"
    );
    // MREMAP_FIXED targets: wrapping, beyond user space, unaligned, overlapping.
    for target in [top, USER_END - PAGE, va + 8 * PAGE + 1, va + PAGE] {
        assert_eq!(
            s.mremap(&env.mm, va, 2 * PAGE, 2 * PAGE, FIXED, target),
            Err(MmError::Inval),
            "target {target:#x}"
        );
    }
    // The range must lie in one VMA.
    assert_eq!(
        remap(&env, &mut s, va, 3 * PAGE, 4 * PAGE, MAYMOVE),
        Err(MmError::Fault)
    );
    assert_eq!(
        remap(&env, &mut s, va + 4 * PAGE, PAGE, PAGE, NONE),
        Err(MmError::Fault)
    );
    // old_len 0 duplicates only shared mappings.
    assert_eq!(
        remap(&env, &mut s, va, 0, PAGE, MAYMOVE),
        Err(MmError::Inval)
    );
    // A shrinking move whose old tail passes user space is refused before anything moves.
    let high = s
        .mmap(
            &env.mm,
            VirtAddr::new(USER_END - PAGE),
            PAGE_SIZE,
            Prot::RW,
            ANON | MapFlags::FIXED,
        )
        .unwrap()
        .as_u64();
    assert_eq!(
        s.mremap(&env.mm, high, 2 * PAGE, PAGE, FIXED, va + 16 * PAGE),
        Err(MmError::Inval),
        "the old tail to drop passes USER_END"
    );
    assert_eq!(
        env.read(&mut s, VirtAddr::new(high)).unwrap(),
        0,
        "still mapped"
    );
    s.munmap(&env.mm, VirtAddr::new(high), PAGE_SIZE).unwrap();
    assert_eq!(
        spans(&s),
        std::vec![(va, va + 2 * PAGE, Prot::RW)],
        "nothing changed"
    );
    // Shrinking may name more than the VMA (Linux unmaps whatever lies there).
    let after = env.map(&mut s, 2 * PAGE, 1, Prot::READ).as_u64();
    assert_eq!(after, va + 2 * PAGE);
    assert_eq!(remap(&env, &mut s, va, 8 * PAGE, PAGE, NONE), Ok(va));
    assert_eq!(spans(&s), std::vec![(va, va + PAGE, Prot::RW)]);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// Defect 6: growing a `MAP_SHARED` memfd mapping, in place and by a move, keeps it a mapping
/// of the object: stores reach it, and the pages are the object's cache pages.
#[test]
fn mremap_keeps_shared_mappings_shared() {
    let env = Env::new();
    let obj = memfd(&env, 8, 7);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 2, Prot::RW, MapFlags::SHARED).as_u64();
    env.write(&mut s, VirtAddr::new(va + PAGE), 11).unwrap();
    // In place: nothing after it.
    assert_eq!(remap(&env, &mut s, va, 2 * PAGE, 3 * PAGE, NONE), Ok(va));
    env.write(&mut s, VirtAddr::new(va + 2 * PAGE), 22).unwrap();
    assert_eq!(
        obj_u64(&env, &obj, 2 * PAGE),
        22,
        "grown page reaches the memfd"
    );
    // Block in-place growth, then move.
    let blocker = s
        .mmap(
            &env.mm,
            VirtAddr::new(va + 3 * PAGE),
            PAGE_SIZE,
            Prot::READ,
            ANON | MapFlags::FIXED,
        )
        .unwrap();
    assert_eq!(
        remap(&env, &mut s, va, 3 * PAGE, 4 * PAGE, NONE),
        Err(MmError::NoMem)
    );
    let frame1 = env.frame(&s, VirtAddr::new(va + PAGE));
    let free = env.mm.frames().free_frames();
    let moved = remap(&env, &mut s, va, 3 * PAGE, 4 * PAGE, MAYMOVE).unwrap();
    assert_ne!(moved, va);
    assert_eq!(
        env.mm.frames().free_frames(),
        free,
        "a move allocates no page"
    );
    assert_eq!(
        env.frame(&s, VirtAddr::new(moved + PAGE)),
        frame1,
        "the PTE moved"
    );
    assert!(
        s.translate(&env.mm, VirtAddr::new(va)).is_none(),
        "old range unmapped"
    );
    assert!(s.find_vma(VirtAddr::new(va)).is_none());
    assert_eq!(env.read(&mut s, VirtAddr::new(moved)).unwrap(), 7);
    assert_eq!(
        env.read(&mut s, VirtAddr::new(moved + 2 * PAGE)).unwrap(),
        22
    );
    env.write(&mut s, VirtAddr::new(moved + 3 * PAGE), 33)
        .unwrap();
    env.write(&mut s, VirtAddr::new(moved), 44).unwrap();
    assert_eq!(
        obj_u64(&env, &obj, 3 * PAGE),
        33,
        "stores after the move reach the memfd"
    );
    assert_eq!(obj_u64(&env, &obj, 0), 44);
    assert_eq!(
        env.frame(&s, VirtAddr::new(moved + 3 * PAGE)),
        obj.cache_frame(3).unwrap()
    );
    // old_len 0: a second mapping of the same pages.
    let dup = remap(&env, &mut s, moved, 0, PAGE, MAYMOVE).unwrap();
    assert_eq!(env.read(&mut s, VirtAddr::new(dup)).unwrap(), 44);
    assert_eq!(
        env.read(&mut s, VirtAddr::new(moved)).unwrap(),
        44,
        "the original stays"
    );
    s.munmap(&env.mm, blocker, PAGE_SIZE).unwrap();
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

/// A move carries the PTEs of private memory too: the same frames (still exclusive), a
/// `PROT_NONE` range included, and a shrinking `MREMAP_FIXED` move onto another mapping.
#[test]
fn mremap_moves_private_and_prot_none_ptes() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    for i in 0..4 {
        env.write(&mut s, va + i * PAGE, 100 + i).unwrap();
    }
    let frames: Vec<_> = (0..4).map(|i| env.frame(&s, va + i * PAGE)).collect();
    s.mprotect(&env.mm, va, 4 * PAGE_SIZE, Prot::NONE).unwrap();
    env.map(&mut s, 4 * PAGE, 1, Prot::READ);
    let free = env.mm.frames().free_frames();
    let moved = remap(&env, &mut s, va.as_u64(), 4 * PAGE, 8 * PAGE, MAYMOVE).unwrap();
    assert_eq!(env.mm.frames().free_frames(), free);
    for (i, &f) in frames.iter().enumerate() {
        let pte = env.pte(&s, VirtAddr::new(moved + i as u64 * PAGE));
        assert_eq!(pte.frame(), f);
        assert!(!pte.is_present(), "still PROT_NONE");
    }
    assert_eq!(
        env.read(&mut s, VirtAddr::new(moved)).unwrap_err().error,
        FaultError::Segv(SegvReason::Protection)
    );
    s.mprotect(&env.mm, VirtAddr::new(moved), 8 * PAGE_SIZE, Prot::RW)
        .unwrap();
    for i in 0..4 {
        assert_eq!(
            env.read(&mut s, VirtAddr::new(moved + i * PAGE)).unwrap(),
            100 + i
        );
        assert!(env.exclusive(&s, VirtAddr::new(moved + i * PAGE)));
    }
    assert_eq!(
        env.read(&mut s, VirtAddr::new(moved + 5 * PAGE)).unwrap(),
        0
    );
    // MREMAP_FIXED, shrinking, onto the READ mapping at BASE + 4 pages: replaced.
    let target = BASE + 4 * PAGE;
    let got = s
        .mremap(&env.mm, moved + PAGE, 3 * PAGE, 2 * PAGE, FIXED, target)
        .unwrap();
    assert_eq!(got.as_u64(), target);
    assert_eq!(env.read(&mut s, VirtAddr::new(target)).unwrap(), 101);
    assert_eq!(env.read(&mut s, VirtAddr::new(target + PAGE)).unwrap(), 102);
    assert_eq!(env.frame(&s, VirtAddr::new(target)), frames[1]);
    assert!(
        s.find_vma(VirtAddr::new(moved + PAGE)).is_none(),
        "source range unmapped"
    );
    assert!(
        s.find_vma(VirtAddr::new(moved + 3 * PAGE)).is_none(),
        "shrunk tail unmapped"
    );
    // Shrinking in place.
    assert_eq!(
        remap(&env, &mut s, moved + 4 * PAGE, 4 * PAGE, PAGE, NONE),
        Ok(moved + 4 * PAGE)
    );
    assert!(s.find_vma(VirtAddr::new(moved + 5 * PAGE)).is_none());
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// Defect 2: the rule for writable shared mappings, and `MAYWRITE` following it.
#[test]
fn shared_write_rule_and_maywrite() {
    use crate::vma::Prot as P;
    assert_eq!(shared_mapping_may_write(P::READ, true, 0), Ok(true));
    assert_eq!(shared_mapping_may_write(P::RW, true, 0), Ok(true));
    assert_eq!(shared_mapping_may_write(P::READ, false, 0), Ok(false));
    assert_eq!(
        shared_mapping_may_write(P::RW, false, 0),
        Err(MmError::Access)
    );
    assert_eq!(
        shared_mapping_may_write(P::RW, false, seals::WRITE),
        Err(MmError::Access)
    );
    for seal in [seals::WRITE, seals::FUTURE_WRITE] {
        assert_eq!(
            shared_mapping_may_write(P::RW, true, seal),
            Err(MmError::Perm)
        );
        assert_eq!(shared_mapping_may_write(P::READ, true, seal), Ok(false));
    }
    assert_eq!(
        shared_mapping_may_write(P::RW, true, seals::GROW | seals::SHRINK),
        Ok(true)
    );

    let env = Env::new();
    let obj = memfd(&env, 2, 5);
    let mut s = env.space();
    let shared = MapFlags::SHARED;
    let map = |s: &mut AddressSpace, prot, flags, fd_writable| {
        s.mmap_shmem(
            &env.mm,
            VirtAddr::zero(),
            2 * PAGE_SIZE,
            prot,
            flags,
            &obj,
            0,
            fd_writable,
        )
    };
    // A read-only descriptor: no shared PROT_WRITE, and no later mprotect to it.
    assert_eq!(map(&mut s, Prot::RW, shared, false), Err(MmError::Access));
    let ro = map(&mut s, Prot::READ, shared, false).unwrap();
    assert!(!s.find_vma(ro).unwrap().flags().contains(VmaFlags::MAYWRITE));
    assert_eq!(
        s.mprotect(&env.mm, ro, 2 * PAGE_SIZE, Prot::RW),
        Err(MmError::Access)
    );
    s.mprotect(&env.mm, ro, 2 * PAGE_SIZE, Prot::READ | Prot::EXEC)
        .unwrap();
    assert_eq!(
        env.write(&mut s, ro, 1).unwrap_err().error,
        FaultError::Segv(SegvReason::Protection)
    );
    assert_eq!(obj.writable_mappings(), 0);
    // A private mapping of it may still be written (copy-on-write, never reaching the file).
    let private = map(&mut s, Prot::READ, MapFlags::PRIVATE, false).unwrap();
    s.mprotect(&env.mm, private, 2 * PAGE_SIZE, Prot::RW)
        .unwrap();
    env.write(&mut s, private, 9).unwrap();
    assert_eq!(obj_u64(&env, &obj, 0), 5);
    assert_eq!(
        obj.writable_mappings(),
        0,
        "private mappings are never writers"
    );
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

/// memfd seals: the writable-mapping count through split, fork and munmap; every sealed
/// operation refused as Linux refuses it.
#[test]
fn memfd_seals() {
    let env = Env::new();
    let obj = memfd(&env, 2, 5);
    assert_eq!(obj.seals(), seals::SEAL, "sealing starts forbidden");
    assert_eq!(obj.add_seals(&env.mm, seals::WRITE), Err(MmError::Perm));
    obj.allow_sealing();
    assert_eq!(obj.seals(), 0);
    assert_eq!(obj.add_seals(&env.mm, 0x20), Err(MmError::Inval));
    assert_eq!(obj.add_seals(&env.mm, 0x40), Err(MmError::Inval));
    let mut s = env.space();
    let w = map_obj(&env, &mut s, &obj, 0, 2, Prot::RW, MapFlags::SHARED);
    assert_eq!(obj.writable_mappings(), 1);
    s.mprotect(&env.mm, w, PAGE_SIZE, Prot::READ).unwrap();
    assert_eq!(obj.writable_mappings(), 2, "a split counts both halves");
    let child = s.fork(&env.mm).unwrap();
    assert_eq!(obj.writable_mappings(), 4, "a fork child's copies count");
    assert_eq!(obj.add_seals(&env.mm, seals::WRITE), Err(MmError::Busy));
    child.exit(&env.mm);
    s.mprotect(&env.mm, w, PAGE_SIZE, Prot::RW).unwrap();
    assert_eq!(obj.writable_mappings(), 1, "merged again");
    s.mprotect(&env.mm, w, 2 * PAGE_SIZE, Prot::READ).unwrap();
    assert_eq!(
        obj.add_seals(&env.mm, seals::WRITE),
        Err(MmError::Busy),
        "read-only but MAYWRITE"
    );
    // A mremap move keeps the count exact.
    let moved = s
        .mremap(&env.mm, w.as_u64(), 2 * PAGE, 3 * PAGE, MAYMOVE, 0)
        .unwrap();
    assert_eq!(obj.writable_mappings(), 1);
    s.munmap(&env.mm, moved, 3 * PAGE_SIZE).unwrap();
    assert_eq!(obj.writable_mappings(), 0);
    // A page reference that could still write (a GUP reference, as vmsplice or O_DIRECT
    // would hold) also keeps F_SEAL_WRITE out (Linux `memfd_wait_for_pins`).
    let ro = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::SHARED);
    let mut slot = [None];
    crate::gup::get_user_pages(&env.mm, &mut s, ro, crate::foll::FollFlags::GET, &mut slot)
        .unwrap();
    s.munmap(&env.mm, ro, PAGE_SIZE).unwrap();
    assert_eq!(
        obj.add_seals(&env.mm, seals::WRITE),
        Err(MmError::Busy),
        "a GUP reference"
    );
    slot[0].take().unwrap().unpin(&env.mm);
    obj.add_seals(&env.mm, seals::WRITE).unwrap();
    assert_eq!(obj.write_at(&env.mm, 0, b"x"), Err(MmError::Perm));
    assert_eq!(
        s.mmap_shmem(
            &env.mm,
            VirtAddr::zero(),
            PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED,
            &obj,
            0,
            true
        ),
        Err(MmError::Perm)
    );
    let ro = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::SHARED);
    assert_eq!(
        s.mprotect(&env.mm, ro, PAGE_SIZE, Prot::RW),
        Err(MmError::Access)
    );
    assert_eq!(env.read(&mut s, ro).unwrap(), 5);
    let private = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
    env.write(&mut s, private, 6).unwrap();
    assert_eq!(obj_u64(&env, &obj, 0), 5);
    // Size seals; the size stays settable while neither is set.
    obj.set_size(&env.mm, 3 * PAGE).unwrap();
    obj.add_seals(&env.mm, seals::SHRINK).unwrap();
    assert_eq!(obj.set_size(&env.mm, PAGE), Err(MmError::Perm));
    obj.set_size(&env.mm, 4 * PAGE).unwrap();
    obj.fallocate(&env.mm, 0, PAGE).unwrap();
    obj.add_seals(&env.mm, seals::GROW).unwrap();
    assert_eq!(obj.set_size(&env.mm, 5 * PAGE), Err(MmError::Perm));
    obj.set_size(&env.mm, 4 * PAGE).unwrap();
    assert_eq!(
        obj.fallocate(&env.mm, 3 * PAGE, 2 * PAGE),
        Err(MmError::Perm)
    );
    obj.fallocate(&env.mm, 3 * PAGE, PAGE).unwrap();
    obj.add_seals(&env.mm, seals::SEAL).unwrap();
    assert_eq!(obj.add_seals(&env.mm, 0), Err(MmError::Perm));
    assert_eq!(
        obj.seals(),
        seals::SEAL | seals::SHRINK | seals::GROW | seals::WRITE
    );
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

/// `F_SEAL_GROW` refuses a write's page chunks that pass the size (a short count after the
/// first); `F_SEAL_FUTURE_WRITE` refuses new writers while old mappings keep writing.
#[test]
fn grow_and_future_write_seals() {
    let env = Env::new();
    let obj: Arc<ShmemObject> = ShmemObject::new();
    obj.allow_sealing();
    obj.write_at(&env.mm, 0, &[1u8; 4100]).unwrap();
    obj.add_seals(&env.mm, seals::GROW).unwrap();
    assert_eq!(obj.write_at(&env.mm, 4099, b"ab"), Err(MmError::Perm));
    assert_eq!(obj.write_at(&env.mm, 4098, b"ab"), Ok(2));
    assert_eq!(
        obj.write_at(&env.mm, 8, &[2u8; 8192]),
        Ok(4088),
        "stops at the page past the size"
    );
    assert_eq!(obj.size(), 4100);
    let obj2 = memfd(&env, 1, 3);
    obj2.allow_sealing();
    let mut s = env.space();
    let w = map_obj(&env, &mut s, &obj2, 0, 1, Prot::RW, MapFlags::SHARED);
    obj2.add_seals(&env.mm, seals::FUTURE_WRITE).unwrap();
    env.write(&mut s, w, 4).unwrap();
    assert_eq!(
        obj_u64(&env, &obj2, 0),
        4,
        "an existing writable mapping still writes"
    );
    assert_eq!(obj2.write_at(&env.mm, 0, b"x"), Err(MmError::Perm));
    assert_eq!(
        s.mmap_shmem(
            &env.mm,
            VirtAddr::zero(),
            PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED,
            &obj2,
            0,
            true
        ),
        Err(MmError::Perm)
    );
    assert_eq!(obj2.add_seals(&env.mm, seals::WRITE), Err(MmError::Busy));
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    ShmemObject::put(obj2, &env.mm);
    env.finish(std::vec![s]);
}

/// Defect 7: a grows-down stack keeps `STACK_GUARD_GAP` free below it against hints, the
/// top-down search and brk, grows on faults up to its limit, and stops a gap away from an
/// accessible mapping below (a `PROT_NONE` one does not count, as in Linux).
#[test]
fn stack_guard_gap_and_growth() {
    let env = Env::new();
    let mut s = env.space();
    let top = 0x7000_0000_0000u64;
    let stack = top - 4 * PAGE;
    s.mmap(
        &env.mm,
        VirtAddr::new(stack),
        4 * PAGE_SIZE,
        Prot::RW,
        ANON | MapFlags::FIXED | MapFlags::GROWSDOWN,
    )
    .unwrap();
    s.set_stack_limit(64 * PAGE);
    // A hint inside the gap is not taken; one just below it is.
    for hint in [stack - 16 * PAGE, stack - STACK_GUARD_GAP] {
        let got = s
            .mmap(&env.mm, VirtAddr::new(hint), 16 * PAGE_SIZE, Prot::RW, ANON)
            .unwrap()
            .as_u64();
        assert!(
            got + 16 * PAGE <= stack - STACK_GUARD_GAP || got >= top,
            "hint {hint:#x} placed at {got:#x}"
        );
        assert_ne!(got, hint);
        s.munmap(&env.mm, VirtAddr::new(got), 16 * PAGE_SIZE)
            .unwrap();
    }
    let hint = stack - STACK_GUARD_GAP - 16 * PAGE;
    let got = s
        .mmap(&env.mm, VirtAddr::new(hint), 16 * PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(got.as_u64(), hint, "a hint clear of the gap is honoured");
    s.munmap(&env.mm, got, 16 * PAGE_SIZE).unwrap();
    // The top-down search does not end in the gap of a stack right below mmap_base either.
    s.set_mmap_base(VirtAddr::new(stack));
    let got = s
        .mmap(&env.mm, VirtAddr::zero(), PAGE_SIZE, Prot::RW, ANON)
        .unwrap();
    assert_eq!(got.as_u64(), stack - STACK_GUARD_GAP - PAGE);
    s.munmap(&env.mm, got, PAGE_SIZE).unwrap();
    // Growth: a fault a few pages below the stack extends it.
    env.write(&mut s, VirtAddr::new(stack - 3 * PAGE + 8), 5)
        .unwrap();
    let v = s.find_vma(VirtAddr::new(stack - 3 * PAGE)).unwrap();
    assert_eq!(
        (v.start().as_u64(), v.end().as_u64()),
        (stack - 3 * PAGE, top)
    );
    assert!(v.grows_down());
    // Past the limit: SIGSEGV, nothing grows.
    assert_eq!(
        env.write(&mut s, VirtAddr::new(top - 65 * PAGE), 1)
            .unwrap_err()
            .error,
        FaultError::Segv(SegvReason::NoMapping)
    );
    env.write(&mut s, VirtAddr::new(top - 64 * PAGE), 1)
        .unwrap();
    // A MAP_FIXED neighbour inside the future gap: the stack stops a gap above it.
    s.set_stack_limit(1 << 30);
    let low = top - 64 * PAGE;
    let neighbour = low - STACK_GUARD_GAP - 8 * PAGE;
    s.mmap(
        &env.mm,
        VirtAddr::new(neighbour),
        4 * PAGE_SIZE,
        Prot::RW,
        ANON | MapFlags::FIXED,
    )
    .unwrap();
    let limit = neighbour + 4 * PAGE + STACK_GUARD_GAP;
    env.write(&mut s, VirtAddr::new(limit), 1).unwrap();
    assert_eq!(
        env.write(&mut s, VirtAddr::new(limit - PAGE), 1)
            .unwrap_err()
            .error,
        FaultError::Segv(SegvReason::NoMapping),
        "the stack may not come within the gap of an accessible mapping"
    );
    // A PROT_NONE neighbour does not hold it back (Linux `vma_is_accessible`).
    s.mprotect(&env.mm, VirtAddr::new(neighbour), 4 * PAGE_SIZE, Prot::NONE)
        .unwrap();
    env.write(&mut s, VirtAddr::new(limit - PAGE), 1).unwrap();
    // brk stops short of a stack's gap.
    s.set_brk_base(VirtAddr::new(neighbour - 16 * PAGE));
    let want = VirtAddr::new(neighbour - 8 * PAGE);
    assert_eq!(s.brk(&env.mm, want), want);
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

/// Regression (review): `MAP_SHARED|MAP_ANONYMOUS|MAP_GROWSDOWN` was accepted, and growing it
/// clamped the object offset at 0, so two addresses aliased one shmem page. Linux: `EINVAL`.
#[test]
fn shared_anonymous_growsdown_is_einval() {
    let env = Env::new();
    let mut s = env.space();
    assert_eq!(
        s.mmap(
            &env.mm,
            VirtAddr::new(0x2_0000_0000),
            2 * PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED | MapFlags::ANONYMOUS | MapFlags::FIXED | MapFlags::GROWSDOWN,
        ),
        Err(MmError::Inval)
    );
    assert_eq!(s.vmas().count(), 0, "nothing mapped");
    env.finish(std::vec![s]);
}
