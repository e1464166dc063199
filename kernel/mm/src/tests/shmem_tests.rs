//! shmem: the object API, shared and private mappings, fork, truncation, and the non-anon
//! families of `cow.c` and `gup_longterm.c` on a memfd, including the Dirty COW pattern.

use alloc::sync::Arc;

use super::gup_tests::{pin_one, pin_read_u64, Path, PATHS};
use super::*;
use crate::error::{FaultError, MmError, SegvReason};
use crate::foll::FollFlags;
use crate::gup::{access_process_vm_write, access_process_vm_write_hooked, unpin_user_pages};
use crate::madvise::Advice;
use crate::shmem::{ShmemObject, ShmemQuota};

/// A memfd of `pages` pages whose first word is `first`.
pub(crate) fn memfd(env: &Env, pages: u64, first: u64) -> Arc<ShmemObject> {
    let obj = ShmemObject::new();
    obj.set_size(&env.mm, pages * PAGE).unwrap();
    obj.write_at(&env.mm, 0, &first.to_le_bytes()).unwrap();
    obj
}

pub(crate) fn map_obj(
    env: &Env,
    s: &mut AddressSpace,
    obj: &Arc<ShmemObject>,
    offset: u64,
    pages: u64,
    prot: Prot,
    sharing: MapFlags,
) -> VirtAddr {
    s.mmap_shmem(
        &env.mm,
        VirtAddr::zero(),
        (pages * PAGE) as usize,
        prot,
        sharing,
        obj,
        offset,
        true,
    )
    .expect("mmap of a shmem object")
}

pub(crate) fn obj_u64(env: &Env, obj: &ShmemObject, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    obj.read_at(&env.mm, offset, &mut b);
    u64::from_le_bytes(b)
}

#[test]
fn object_read_write_truncate_fallocate() {
    let env = Env::new();
    let obj = ShmemObject::new();
    assert_eq!(obj.size(), 0);
    assert_eq!(obj.write_at(&env.mm, PAGE + 4, b"hello"), Ok(5));
    assert_eq!(obj.size(), PAGE + 9);
    assert_eq!(obj.cached_pages(), 1, "the hole before it has no page");
    let mut buf = [0xffu8; 16];
    assert_eq!(obj.read_at(&env.mm, PAGE, &mut buf), 9);
    assert_eq!(&buf[..9], b"\0\0\0\0hello");
    assert_eq!(
        obj.read_at(&env.mm, 0, &mut buf),
        16,
        "a hole reads as zeros"
    );
    assert_eq!(buf, [0; 16]);
    obj.fallocate(&env.mm, 0, 3 * PAGE).unwrap();
    assert_eq!((obj.size(), obj.cached_pages()), (3 * PAGE, 3));
    assert_eq!(env.mm.stats().shmem_pages, 3);
    env.check(&[]);
    // Shrinking into the middle of page 1 drops page 2 and zeroes page 1's tail.
    obj.set_size(&env.mm, PAGE + 6).unwrap();
    assert_eq!(obj.cached_pages(), 2);
    obj.set_size(&env.mm, 2 * PAGE).unwrap();
    assert_eq!(obj.read_at(&env.mm, PAGE + 4, &mut buf[..5]), 5);
    assert_eq!(&buf[..5], b"he\0\0\0");
    assert_eq!(obj.fallocate(&env.mm, 0, 0), Err(MmError::Inval));
    env.check(&[]);
    ShmemObject::put(obj, &env.mm);
    assert_eq!(env.mm.stats().shmem_pages, 0);
    env.finish(std::vec![]);
}

#[test]
fn shared_mappings_see_each_other_and_the_object() {
    let env = Env::new();
    let obj = memfd(&env, 2, 7);
    let mut a = env.space();
    let mut b = env.space();
    let va = map_obj(&env, &mut a, &obj, 0, 2, Prot::RW, MapFlags::SHARED);
    let vb = map_obj(&env, &mut b, &obj, 0, 2, Prot::RW, MapFlags::SHARED);
    assert_eq!(env.read(&mut a, va).unwrap(), 7);
    env.write(&mut b, vb + PAGE, 9).unwrap();
    assert_eq!(env.read(&mut a, va + PAGE).unwrap(), 9);
    assert_eq!(obj_u64(&env, &obj, PAGE), 9);
    obj.write_at(&env.mm, 8, &3u64.to_le_bytes()).unwrap();
    assert_eq!(
        env.read(&mut b, vb + 8).unwrap(),
        3,
        "write(2) is seen by mappings"
    );
    assert_eq!(env.frame(&a, va), obj.cache_frame(0).unwrap());
    assert!(env.flags(env.frame(&a, va)).contains(FrameFlags::SHMEM));
    env.check(&[&a, &b]);
    // Beyond the object's size: SIGBUS.
    obj.set_size(&env.mm, PAGE).unwrap();
    let vc = map_obj(&env, &mut a, &obj, PAGE, 1, Prot::RW, MapFlags::SHARED);
    assert_eq!(
        env.read(&mut a, vc).unwrap_err().error,
        FaultError::Segv(SegvReason::BeyondEof)
    );
    assert_eq!(SegvReason::BeyondEof.signal(), 7);
    env.check(&[&a, &b]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![a, b]);
}

/// A tmpfs-like quota of 3 pages: writes stop short at it then fail with ENOSPC, fallocate
/// fails with ENOSPC, a shared-mapping fault that needs a fourth page is SIGBUS; truncation and
/// the last put give the pages back.
#[test]
fn quota_limits_cache_pages() {
    let env = Env::new();
    let quota: &'static ShmemQuota =
        std::boxed::Box::leak(std::boxed::Box::new(ShmemQuota::new(3)));
    let obj = ShmemObject::new_in(Some(quota));
    assert_eq!(
        obj.write_at(&env.mm, 0, &[1u8; 2 * PAGE_SIZE]),
        Ok(2 * PAGE_SIZE)
    );
    assert_eq!(quota.used_pages(), 2);
    assert_eq!(
        obj.write_at(&env.mm, 2 * PAGE, &[2u8; 2 * PAGE_SIZE]),
        Ok(PAGE_SIZE),
        "a write stops short at the limit"
    );
    assert_eq!(obj.size(), 3 * PAGE);
    assert_eq!(
        obj.write_at(&env.mm, 3 * PAGE, &[3u8; 8]),
        Err(MmError::NoSpc)
    );
    assert_eq!(
        obj.write_at(&env.mm, 8, &[4u8; 8]),
        Ok(8),
        "cached pages stay writable"
    );
    assert_eq!(obj.fallocate(&env.mm, 3 * PAGE, PAGE), Err(MmError::NoSpc));
    assert_eq!(obj.fallocate(&env.mm, 0, 4 * PAGE), Err(MmError::NoSpc));
    assert_eq!(
        quota.used_pages(),
        3,
        "a failed fallocate keeps the written pages"
    );
    obj.set_size(&env.mm, 5 * PAGE).unwrap();
    let mut a = env.space();
    let va = map_obj(&env, &mut a, &obj, 0, 5, Prot::RW, MapFlags::SHARED);
    assert_eq!(env.read(&mut a, va + 2 * PAGE).unwrap() & 0xff, 2);
    assert_eq!(
        env.write(&mut a, va + 4 * PAGE, 9).unwrap_err().error,
        FaultError::Segv(SegvReason::BeyondEof),
        "a fault past the quota is SIGBUS"
    );
    assert_eq!(quota.used_pages(), 3);
    obj.set_size(&env.mm, PAGE).unwrap();
    assert_eq!(quota.used_pages(), 1, "truncation uncharges");
    assert_eq!(obj.fallocate(&env.mm, PAGE, 3 * PAGE), Err(MmError::NoSpc));
    assert_eq!(
        (quota.used_pages(), obj.cached_pages(), obj.size()),
        (1, 1, PAGE),
        "a failed fallocate drops the pages it added"
    );
    // A memfd has no quota: bounded by memory only.
    let memfd = ShmemObject::new();
    assert_eq!(
        memfd.write_at(&env.mm, 0, &[1u8; 4 * PAGE_SIZE]),
        Ok(4 * PAGE_SIZE)
    );
    ShmemObject::put(memfd, &env.mm);
    env.check(&[&a]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![a]);
    assert_eq!(quota.used_pages(), 0, "the last put uncharges");
}

#[test]
fn shared_anonymous_memory_is_shared_with_fork_children() {
    let env = Env::new();
    let mut parent = env.space();
    let va = parent
        .mmap(
            &env.mm,
            VirtAddr::zero(),
            2 * PAGE_SIZE,
            Prot::RW,
            MapFlags::SHARED | MapFlags::ANONYMOUS,
        )
        .unwrap();
    env.write(&mut parent, va, 1).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    assert!(
        !env.pte(&child, va).is_dirty(),
        "the child's PTE starts clean"
    );
    env.write(&mut child, va, 2).unwrap();
    env.write(&mut child, va + PAGE, 3).unwrap();
    assert_eq!(env.read(&mut parent, va).unwrap(), 2);
    assert_eq!(env.read(&mut parent, va + PAGE).unwrap(), 3);
    env.check(&[&parent, &child]);
    // The object dies with its last mapping.
    child.munmap(&env.mm, va, 2 * PAGE_SIZE).unwrap();
    assert_eq!(env.mm.stats().shmem_pages, 2);
    env.check(&[&parent, &child]);
    parent.munmap(&env.mm, va, 2 * PAGE_SIZE).unwrap();
    assert_eq!(
        env.mm.stats().shmem_pages,
        0,
        "the last mapping freed the object"
    );
    env.finish(std::vec![parent, child]);
    assert_eq!(env.mm.stats().shmem_pages, 0);
}

#[test]
fn private_mapping_copies_on_write_and_never_reaches_the_object() {
    // cow.c non-anon "Basic COW": the other (shared) mapping is unchanged.
    for era in Era::ALL {
        let env = Env::era(era);
        let obj = memfd(&env, 1, 5);
        let mut s = env.space();
        let private = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
        let shared = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::SHARED);
        assert_eq!(env.read(&mut s, private).unwrap(), 5);
        assert_eq!(env.frame(&s, private), obj.cache_frame(0).unwrap());
        assert!(!env.pte(&s, private).is_writable());
        let mut child = s.fork(&env.mm).unwrap();
        env.write(&mut s, private, 6).unwrap();
        env.check(&[&s, &child]);
        assert!(env.exclusive(&s, private), "{era}: an exclusive anon copy");
        assert_eq!(env.read(&mut s, shared).unwrap(), 5, "{era}");
        assert_eq!(env.read(&mut child, private).unwrap(), 5, "{era}");
        assert_eq!(obj_u64(&env, &obj, 0), 5, "{era}");
        // A later write(2) is seen by private mappings that have not copied.
        obj.write_at(&env.mm, 0, &8u64.to_le_bytes()).unwrap();
        assert_eq!(env.read(&mut child, private).unwrap(), 8, "{era}");
        assert_eq!(env.read(&mut s, private).unwrap(), 6, "{era}");
        env.check(&[&s, &child]);
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s, child]);
    }
}

#[test]
fn truncating_a_mapped_object_orphans_its_pages() {
    let env = Env::new();
    let obj = memfd(&env, 2, 1);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 2, Prot::RW, MapFlags::SHARED);
    env.write(&mut s, va + PAGE, 2).unwrap();
    obj.set_size(&env.mm, PAGE).unwrap();
    assert_eq!(env.mm.stats().shmem_pages, 1);
    env.check(&[&s]);
    assert_eq!(
        env.read(&mut s, va + PAGE).unwrap(),
        2,
        "the orphan lives on"
    );
    s.munmap(&env.mm, va, 2 * PAGE_SIZE).unwrap();
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

#[test]
fn ro_longterm_pin_of_a_private_memfd_page_sees_later_writes_from_2022() {
    // cow.c / seed 004: "R/O longterm GUP(-fast) pin ... with memfd".
    for era in Era::ALL {
        for path in PATHS {
            let env = Env::era(era);
            let obj = memfd(&env, 1, 1);
            let mut s = env.space();
            let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
            assert_eq!(env.read(&mut s, va).unwrap(), 1);
            let before = env.mm.stats();
            let pin = pin_one(&env, &mut s, va, FollFlags::LONGTERM, path).unwrap();
            let st = env.mm.stats();
            if path == Path::Fast && era >= Era::Y2022 {
                assert_eq!(
                    st.gup_fast_fallbacks - before.gup_fast_fallbacks,
                    1,
                    "{era}: GUP-fast cannot know the mapping is COW: falls back"
                );
            }
            env.write(&mut s, va, 2).unwrap();
            env.check(&[&s]);
            let seen = pin_read_u64(&env, &pin, 0) == 2;
            assert_eq!(seen, era >= Era::Y2022, "{era} {path:?}");
            assert_eq!(
                obj_u64(&env, &obj, 0),
                1,
                "{era}: the object is never written"
            );
            pin.unpin(&env.mm);
            ShmemObject::put(obj, &env.mm);
            env.finish(std::vec![s]);
        }
    }
}

#[test]
fn longterm_pins_of_memfd_mappings_succeed() {
    // gup_longterm.c on memfd: R/W and R/O long-term pins, slow and fast, shared and private.
    for (sharing, write) in [
        (MapFlags::SHARED, true),
        (MapFlags::SHARED, false),
        (MapFlags::PRIVATE, true),
        (MapFlags::PRIVATE, false),
    ] {
        for path in PATHS {
            let env = Env::new();
            let obj = memfd(&env, 1, 1);
            let mut s = env.space();
            let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, sharing);
            env.read(&mut s, va).unwrap();
            let mut flags = FollFlags::LONGTERM;
            if write {
                flags = flags | FollFlags::WRITE;
            }
            let pin = pin_one(&env, &mut s, va, flags, path).unwrap();
            let in_cache = pin.frame() == obj.cache_frame(0).unwrap();
            assert_eq!(
                in_cache,
                sharing == MapFlags::SHARED,
                "{sharing:?} write={write} {path:?}"
            );
            env.check(&[&s]);
            pin.unpin(&env.mm);
            ShmemObject::put(obj, &env.mm);
            env.finish(std::vec![s]);
        }
    }
}

#[test]
fn gup_fast_takes_writable_shared_shmem_pages_for_longterm_write_pins() {
    let env = Env::new();
    let obj = memfd(&env, 1, 1);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::SHARED);
    env.write(&mut s, va, 2).unwrap();
    let mut one = [None];
    let flags = FollFlags::WRITE | FollFlags::LONGTERM;
    assert_eq!(
        crate::gup::pin_user_pages_fast_only(&env.mm, &s, va, flags, &mut one),
        Ok(1),
        "shmem needs no dirty tracking: no VMA needed"
    );
    unpin_user_pages(&env.mm, &mut one);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

/// `/proc/self/mem` writes into a private R/O mapping of a memfd, interleaved with
/// `MADV_DONTNEED` (the Dirty COW pattern, in one thread).
#[test]
fn dirty_cow_pattern_interleaved_never_reaches_the_memfd() {
    for era in Era::ALL {
        let env = Env::era(era);
        let obj = memfd(&env, 1, 0x1111);
        let mut s = env.space();
        let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::PRIVATE);
        for round in 0..8u64 {
            assert_eq!(
                access_process_vm_write(&env.mm, &mut s, va, &(0xbad0 + round).to_le_bytes()),
                Ok(8)
            );
            assert_eq!(env.read(&mut s, va).unwrap(), 0xbad0 + round, "{era}");
            assert!(env.write(&mut s, va, 1).is_err(), "{era}: still read-only");
            env.check(&[&s]);
            s.madvise(&env.mm, va, PAGE_SIZE, Advice::DontNeed).unwrap();
            assert_eq!(env.read(&mut s, va).unwrap(), 0x1111, "{era}");
            assert_eq!(
                obj_u64(&env, &obj, 0),
                0x1111,
                "{era}: the memfd was written"
            );
        }
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s]);
    }
}

/// Did a `/proc/self/mem` write race with `MADV_DONTNEED` (played by the retry hook, as the
/// second thread of the original exploit) reach the memfd page?
pub(crate) fn dirty_cow_race_leaks(era: Era) -> bool {
    let env = Env::era(era);
    let obj = memfd(&env, 1, 0x1111);
    let mut s = env.space();
    let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::PRIVATE);
    env.read(&mut s, va).unwrap();
    let mut races = 0;
    let mut racing_thread = |mm: &Mm<HostArch>, s: &mut AddressSpace| {
        if races < 3 {
            races += 1;
            s.madvise(mm, va, PAGE_SIZE, Advice::DontNeed).unwrap();
        }
    };
    let data = 0xbadu64.to_le_bytes();
    assert_eq!(
        access_process_vm_write_hooked(&env.mm, &mut s, va, &data, &mut racing_thread),
        Ok(8)
    );
    env.check(&[&s]);
    let leaked = obj_u64(&env, &obj, 0) == 0xbad;
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
    leaked
}

#[test]
fn dirty_cow_race_leaks_only_under_the_2009_rules() {
    for era in Era::ALL {
        assert_eq!(
            dirty_cow_race_leaks(era),
            era == Era::Y2009,
            "{era}: does the forced write reach the memfd page?"
        );
    }
}

/// A hold that lets the address space go at every resched point (as the kernel's does on
/// several CPUs) while a racing thread zaps the page each time, `lets_go` times in one call.
struct ZappingHold<'a> {
    aspace: &'a mut AddressSpace,
    va: VirtAddr,
    lets_go: usize,
}

impl crate::gup::MmapHold<HostArch> for ZappingHold<'_> {
    fn aspace(&mut self) -> &mut AddressSpace {
        self.aspace
    }

    fn resched(&mut self, mm: &Mm<HostArch>) -> bool {
        if self.lets_go == 0 {
            return false;
        }
        self.lets_go -= 1;
        self.aspace
            .madvise(mm, self.va, PAGE_SIZE, Advice::DontNeed)
            .unwrap();
        true
    }
}

/// Regression (the GUP slow path's resched point): a thread that undoes the fault at every
/// point where the lock was let go (40 times, more than the no-progress bound of 16 rounds)
/// must not make the loop give up with a panic; once the hold stops letting go the write
/// lands, in the memfd only under 2009's dropped FOLL_WRITE, in a private copy otherwise.
#[test]
fn dirty_cow_race_survives_a_thread_zapping_at_every_resched_point() {
    for era in Era::ALL {
        let env = Env::era(era);
        let obj = memfd(&env, 1, 0x1111);
        let mut s = env.space();
        let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::PRIVATE);
        env.read(&mut s, va).unwrap();
        let data = 0xbadu64.to_le_bytes();
        let mut hold = ZappingHold {
            aspace: &mut s,
            va,
            lets_go: 40,
        };
        let r = crate::gup::access_process_vm_write_held(&env.mm, &mut hold, va, &data);
        assert_eq!(r, Ok(8), "{era}");
        assert_eq!(hold.lets_go, 0, "{era}: every resched point let go");
        let leaked = obj_u64(&env, &obj, 0) == 0xbad;
        assert_eq!(
            leaked,
            era == Era::Y2009,
            "{era}: did the write reach the memfd?"
        );
        if !leaked {
            assert_eq!(
                env.read(&mut s, va).unwrap(),
                0xbad,
                "{era}: the private copy"
            );
        }
        env.check(&[&s]);
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s]);
    }
}

/// A hold whose one let-go runs a fork of the space (another thread's fork, which on Linux
/// waits for the GUP caller's `mmap_lock`).
struct ForkingHold<'a> {
    aspace: &'a mut AddressSpace,
    child: Option<AddressSpace>,
}

impl crate::gup::MmapHold<HostArch> for ForkingHold<'_> {
    fn aspace(&mut self) -> &mut AddressSpace {
        self.aspace
    }

    fn resched(&mut self, mm: &Mm<HostArch>) -> bool {
        if self.child.is_some() {
            return false;
        }
        self.child = Some(self.aspace.fork(mm).unwrap());
        true
    }
}

/// Regression (the resched point's let-go): a fork between a forced write's COW break and its
/// retry must not let the retry keep the changed flags (2016's FOLL_COW, 2009's dropped
/// FOLL_WRITE) and write the COW copy fork just shared with the child. Linux holds
/// `mmap_lock` across `cond_resched()`, so fork cannot run there; where it drops the lock it
/// starts again from the caller's flags, which breaks COW once more for the parent.
#[test]
fn fork_in_the_let_go_never_receives_the_forced_write() {
    for era in Era::ALL {
        let env = Env::era(era);
        let obj = memfd(&env, 1, 0x1111);
        let mut s = env.space();
        let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::READ, MapFlags::PRIVATE);
        env.read(&mut s, va).unwrap();
        let mut hold = ForkingHold {
            aspace: &mut s,
            child: None,
        };
        let data = 0xbadu64.to_le_bytes();
        let r = crate::gup::access_process_vm_write_held(&env.mm, &mut hold, va, &data);
        assert_eq!(r, Ok(8), "{era}");
        let mut child = hold.child.take().expect("the hold let go once");
        assert_eq!(
            env.read(&mut child, va).unwrap(),
            0x1111,
            "{era}: the child sees the parent's later forced write"
        );
        assert_eq!(env.read(&mut s, va).unwrap(), 0xbad, "{era}: the parent's");
        assert_eq!(obj_u64(&env, &obj, 0), 0x1111, "{era}: the memfd");
        env.check(&[&s, &child]);
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s, child]);
    }
}

#[test]
fn split_and_merged_shmem_mappings_keep_their_offsets() {
    let env = Env::new();
    let obj = ShmemObject::new();
    for i in 0..4u64 {
        obj.write_at(&env.mm, i * PAGE, &(100 + i).to_le_bytes())
            .unwrap();
    }
    let mut s = env.space();
    // Pages 1..4 of the object.
    let va = map_obj(&env, &mut s, &obj, PAGE, 3, Prot::RW, MapFlags::SHARED);
    s.mprotect(&env.mm, va + PAGE, PAGE_SIZE, Prot::READ)
        .unwrap();
    assert_eq!(s.vmas().count(), 3);
    let offsets: std::vec::Vec<u64> = s.vmas().map(|v| v.file_offset()).collect();
    assert_eq!(offsets, [PAGE, 2 * PAGE, 3 * PAGE]);
    for i in 0..3 {
        assert_eq!(env.read(&mut s, va + i * PAGE).unwrap(), 101 + i);
    }
    s.mprotect(&env.mm, va + PAGE, PAGE_SIZE, Prot::RW).unwrap();
    assert_eq!(
        s.vmas().count(),
        1,
        "contiguous offsets of one object merge again"
    );
    // A hole punched by munmap and re-mapped at another offset does not merge.
    s.munmap(&env.mm, va + PAGE, PAGE_SIZE).unwrap();
    let fixed = MapFlags::SHARED | MapFlags::FIXED;
    s.mmap_shmem(
        &env.mm,
        va + PAGE,
        PAGE_SIZE,
        Prot::RW,
        fixed,
        &obj,
        0,
        true,
    )
    .unwrap();
    assert_eq!(s.vmas().count(), 3);
    assert_eq!(env.read(&mut s, va + PAGE).unwrap(), 100);
    assert_eq!(env.read(&mut s, va + 2 * PAGE).unwrap(), 103);
    env.check(&[&s]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s]);
}

#[test]
fn pagemap_reports_presence_pfn_soft_dirty_exclusivity_and_file_pages() {
    use crate::pagemap::*;
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    assert_eq!(s.pagemap_entry(&env.mm, va) & PM_PRESENT, 0);
    assert_eq!(s.pagemap_entry(&env.mm, VirtAddr::new(BASE - PAGE)), 0);
    env.read(&mut s, va).unwrap();
    let zero = s.pagemap_entry(&env.mm, va);
    assert_eq!(zero & PM_PFRAME_MASK, env.mm.zero_page().pfn() as u64);
    assert_eq!(
        zero & (PM_PRESENT | PM_MMAP_EXCLUSIVE | PM_FILE),
        PM_PRESENT
    );
    env.write(&mut s, va + PAGE, 1).unwrap();
    let w = s.pagemap_entry(&env.mm, va + PAGE);
    assert_eq!(w & PM_PFRAME_MASK, env.frame(&s, va + PAGE).pfn() as u64);
    assert_eq!(
        w & !PM_PFRAME_MASK,
        PM_PRESENT | PM_MMAP_EXCLUSIVE | PM_SOFT_DIRTY
    );
    let child = s.fork(&env.mm).unwrap();
    assert_eq!(s.pagemap_entry(&env.mm, va + PAGE) & PM_MMAP_EXCLUSIVE, 0);
    s.clear_refs_soft_dirty(&env.mm);
    assert_eq!(s.pagemap_entry(&env.mm, va + PAGE) & PM_SOFT_DIRTY, 0);
    let obj = memfd(&env, 1, 1);
    let vm = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::SHARED);
    env.read(&mut s, vm).unwrap();
    let f = s.pagemap_entry(&env.mm, vm);
    assert_eq!(f & (PM_PRESENT | PM_FILE), PM_PRESENT | PM_FILE);
    env.check(&[&s, &child]);
    ShmemObject::put(obj, &env.mm);
    env.finish(std::vec![s, child]);
}

/// A COW copy of an orphaned page-cache page (truncated while mapped privately) drops the last
/// reference to the old page: it is freed only after the flush that removes the last cached
/// translation of it (the emulated TLB panics otherwise). The write comes from the kernel
/// (a `FOLL_WRITE` pin), so the CPU's read-only entry is still cached when the copy happens.
#[test]
fn cow_copy_frees_an_orphaned_old_page_only_after_the_flush() {
    for era in Era::ALL {
        let env = Env::era(era);
        let obj = memfd(&env, 1, 0x77);
        let mut s = env.space();
        let va = map_obj(&env, &mut s, &obj, 0, 1, Prot::RW, MapFlags::PRIVATE);
        assert_eq!(env.read(&mut s, va).unwrap(), 0x77);
        let old = env.frame(&s, va);
        obj.set_size(&env.mm, 0).unwrap();
        assert_eq!(
            env.mm.frames().meta(old).refcount(),
            1,
            "only the PTE holds it"
        );
        let pin = crate::pin::pin_user_page(&env.mm, &mut s, va).unwrap();
        assert_ne!(pin.frame(), old, "{era}");
        assert!(
            env.mm.frames().meta(old).is_free(),
            "{era}: the orphan was freed"
        );
        env.check(&[&s]);
        assert_eq!(pin_read_u64(&env, &pin, 0), 0x77, "{era}");
        pin.unpin(&env.mm);
        ShmemObject::put(obj, &env.mm);
        env.finish(std::vec![s]);
    }
}

#[test]
fn maps_name_is_kept_for_the_objects_life() {
    let obj = ShmemObject::new();
    assert_eq!(obj.maps_name(), None);
    obj.set_maps_name("/memfd:test (deleted)");
    assert_eq!(obj.maps_name().as_deref(), Some("/memfd:test (deleted)"));
    let sized = ShmemObject::with_size(4096).unwrap();
    assert_eq!(sized.maps_name(), None);
}

/// A long fallocate pauses every `RESCHED_BATCH` pages with the object unlocked, and the
/// pause's error (a kill: `EINTR` in the kernel) stops it: the size stays, the pages it added
/// beyond the size are dropped again (as Linux's `shmem_fallocate` undoes a range it did not
/// finish, so a stopped call leaves no tmpfs charge), and a seal set during a pause is honoured.
#[test]
fn fallocate_pauses_and_stops_when_told() {
    use crate::shmem::{seals, RESCHED_BATCH};
    let env = Env::new();
    let obj = ShmemObject::new();
    let mut pauses = 0;
    obj.fallocate_resched(&env.mm, 0, 3 * RESCHED_BATCH * PAGE, &mut || {
        pauses += 1;
        Ok::<(), MmError>(())
    })
    .unwrap();
    assert_eq!(pauses, 2, "a pause between batches, none after the last");
    assert_eq!(obj.cached_pages() as u64, 3 * RESCHED_BATCH);
    assert_eq!(obj.size(), 3 * RESCHED_BATCH * PAGE);

    let other = ShmemObject::new();
    let stopped = other.fallocate_resched(&env.mm, PAGE, 1 << 31, &mut || {
        // The object is unlocked during the pause: its size can be read.
        assert_eq!(other.size(), 0);
        Err(MmError::Busy)
    });
    assert_eq!(
        stopped,
        Err(MmError::Busy),
        "the pause's error ends the call"
    );
    assert_eq!(
        other.size(),
        0,
        "a stopped fallocate does not grow the size"
    );
    assert_eq!(other.cached_pages(), 0, "the pages it added are dropped");

    let sealed = ShmemObject::new();
    sealed.allow_sealing();
    let result = sealed.fallocate_resched(&env.mm, 0, 2 * RESCHED_BATCH * PAGE, &mut || {
        sealed.add_seals(&env.mm, seals::GROW).unwrap();
        Ok::<(), MmError>(())
    });
    assert_eq!(result, Err(MmError::Perm), "F_SEAL_GROW set during a pause");
    assert_eq!(sealed.size(), 0);
    assert_eq!(sealed.cached_pages(), 0);
    env.check(&[]);
    for o in [obj, other, sealed] {
        ShmemObject::put(o, &env.mm);
    }
    assert_eq!(env.mm.stats().shmem_pages, 0, "every page returns");
    env.finish(std::vec![]);
}

/// A shrinking truncate frees the dropped pages after unlocking the object, pausing every
/// `RESCHED_BATCH` of them (a huge memfd truncated to 0 held the CPU); the new size is in force
/// during the pauses and every page returns.
#[test]
fn a_shrink_frees_its_pages_with_pauses() {
    use crate::shmem::RESCHED_BATCH;
    let env = Env::new();
    let obj = ShmemObject::new();
    obj.fallocate(&env.mm, 0, 4 * RESCHED_BATCH * PAGE).unwrap();
    let free = env.mm.frames().free_frames();
    let mut pauses = 0;
    obj.set_size_resched(&env.mm, PAGE + 5, &mut || {
        pauses += 1;
        assert_eq!(obj.size(), PAGE + 5, "unlocked, the new size in force");
    })
    .unwrap();
    // 4 * 32 - 2 pages dropped: pauses before the 33rd, 65th and 97th.
    assert_eq!(pauses, 3);
    assert_eq!(obj.cached_pages(), 2);
    assert_eq!(
        env.mm.frames().free_frames() - free,
        4 * RESCHED_BATCH as usize - 2
    );
    env.check(&[]);
    ShmemObject::put(obj, &env.mm);
    assert_eq!(env.mm.stats().shmem_pages, 0, "every page returns");
    env.finish(std::vec![]);
}
