//! Memory system calls: thin decoding in front of `cowlab_mm`, whose errors are Linux's.
//! The address-space lock is held only around memory-manager calls, never around a user copy.
//! User-supplied addresses and lengths are passed down unsummed: the memory manager bounds
//! them before any arithmetic (`checked_addr` here bounds an address it wraps in `VirtAddr`).
#![deny(unsafe_code)]

use cowlab_mm::{Advice, MapFlags, MremapFlags, Prot, VirtAddr};

use super::{Args, Errno, SysResult};
use crate::memory;
use crate::proc::{current_aspace, rlimit, with_current};

const MAP_ANONYMOUS: u32 = 0x20;
const MAP_POPULATE: u32 = 0x8000;
const MAP_NONBLOCK: u32 = 0x10000;
const MAP_LOCKED: u32 = 0x2000;

/// Linux `do_mmap`'s lock checks: `MAP_LOCKED` needs `can_do_mlock` (`EPERM` with a zero
/// `RLIMIT_MEMLOCK` and no `CAP_IPC_LOCK`), and a mapping that will be locked (`MAP_LOCKED`,
/// or `mlockall(MCL_FUTURE)` in force) must fit the limit (`mlock_future_ok`, `EAGAIN`). The
/// memory manager then sets `VM_LOCKED` (`mmap::map_locked_flags`) and the caller populates
/// the range as `mlock` does (`populate_if_locked`).
fn map_locked_ok(aspace: &crate::vm::SharedAddressSpace, flags: u32, len: u64) -> SysResult {
    let map_locked = flags & MAP_LOCKED != 0;
    if map_locked && rlimit::lock_limit_pages() == 0 {
        return Err(Errno::EPERM);
    }
    let locked = map_locked || aspace.read_ptl().locks_future();
    rlimit::mlock_future_ok(aspace, locked, len)?;
    Ok(0)
}

/// `MAP_POPULATE` without `MAP_NONBLOCK`: the new mapping is faulted in, in killable batches
/// (Linux `mm_populate` after `do_mmap`, errors ignored: the mapping stands either way).
fn map_populate(flags: u32, va: VirtAddr, len: u64) {
    if flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE {
        let end = VirtAddr::new(va.as_u64().saturating_add(len).saturating_add(0xfff) & !0xfff);
        let _ = super::mlock::populate_killable(&current_aspace(), va, end);
    }
}

/// A range just mapped or grown that is locked (`mlockall(MCL_FUTURE)`, or a locked mapping
/// grown by mremap) and not on fault is populated now, in killable batches with the address
/// space unlocked (Linux `mm_populate` after `do_mmap`/`brk`/`mremap`, errors ignored).
fn populate_if_locked(start: VirtAddr, end: VirtAddr) {
    let shared = current_aspace();
    let wants = start < end && shared.read_ptl().wants_populate(start);
    if wants {
        let _ = super::mlock::populate_killable(&shared, start, end);
    }
}

fn page_up(va: u64) -> VirtAddr {
    VirtAddr::new(va.saturating_add(0xfff) & !0xfff)
}

pub fn mmap(a: Args) -> SysResult {
    let (addr, len, prot, flags, fd) = (a.get(0), a.get(1), a.get(2), a.get(3) as u32, a.int(4));
    if addr & 0xfff != 0 && flags & 0x10 != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        let file = with_current(|p| p.fds.get(fd))?;
        // Linux `fget` does not hand out an `O_PATH` description.
        if file.is_path() {
            return Err(Errno::EBADF);
        }
        if file.downcast::<crate::fs::memdev::MemDev>() == Some(&crate::fs::memdev::MemDev::Zero) {
            // Linux `mmap_zero`: /dev/zero maps as anonymous memory, private or shared.
            if !file.readable() {
                return Err(Errno::EACCES);
            }
            let anon = u64::from(flags | MAP_ANONYMOUS);
            return mmap(Args([addr, len, a.get(2), anon, u64::MAX, 0]));
        }
        if let Some(hfile) = file.ops.hugetlb_file() {
            return mmap_hugetlb_file(&file, hfile, a);
        }
        if let Some(target) = file.ops.mmap_file() {
            if !file.readable() {
                return Err(Errno::EACCES);
            }
            let target = target?;
            let data = rlimit::is_data_mapping(prot & 2 != 0, flags & 3 != 2, flags & 0x100 != 0);
            let prot = mmap_prot(prot);
            rlimit::may_expand_vm(&current_aspace(), fixed_at(addr, flags), len)?;
            if data {
                rlimit::may_expand_data(&current_aspace(), fixed_at(addr, flags), len)?;
            }
            let aspace = current_aspace();
            map_locked_ok(&aspace, flags, len)?;
            let va = aspace.write().mmap_file(
                memory::mm(),
                VirtAddr::new(addr),
                len as usize,
                prot,
                MapFlags::from_linux(flags),
                target,
                a.get(5),
                file.writable(),
            )?;
            // pcache3: ext2 file mappings are populated too (MAP_POPULATE, MAP_LOCKED,
            // MCL_FUTURE); before, only anonymous and shmem ones were.
            map_populate(flags, va, len);
            populate_if_locked(va, page_up(va.as_u64().saturating_add(len)));
            return Ok(va.as_u64());
        }
        let (obj, offset) = file.ops.mmap_target(a.get(5), len)?;
        // Every mapping reads the file; whether a shared one may write it is the memory
        // manager's rule (`shared_mapping_may_write`), from the open mode and the seals.
        if !file.readable() {
            return Err(Errno::EACCES);
        }
        let data = rlimit::is_data_mapping(prot & 2 != 0, flags & 3 != 2, flags & 0x100 != 0);
        let prot = mmap_prot(prot);
        rlimit::may_expand_vm(&current_aspace(), fixed_at(addr, flags), len)?;
        if data {
            rlimit::may_expand_data(&current_aspace(), fixed_at(addr, flags), len)?;
        }
        let aspace = current_aspace();
        map_locked_ok(&aspace, flags, len)?;
        let va = current_aspace().write().mmap_shmem(
            memory::mm(),
            VirtAddr::new(addr),
            len as usize,
            prot,
            MapFlags::from_linux(flags),
            obj,
            offset,
            file.writable(),
        )?;
        map_populate(flags, va, len);
        populate_if_locked(va, page_up(va.as_u64().saturating_add(len)));
        return Ok(va.as_u64());
    }
    let data = rlimit::is_data_mapping(prot & 2 != 0, flags & 3 != 2, flags & 0x100 != 0);
    let prot = mmap_prot(prot);
    let aspace = current_aspace();
    rlimit::may_expand_vm(&aspace, fixed_at(addr, flags), len)?;
    if data {
        rlimit::may_expand_data(&aspace, fixed_at(addr, flags), len)?;
    }
    map_locked_ok(&aspace, flags, len)?;
    let va = aspace.write().mmap(
        memory::mm(),
        VirtAddr::new(addr),
        len as usize,
        prot,
        MapFlags::from_linux(flags),
    )?;
    map_populate(flags, va, len);
    populate_if_locked(va, page_up(va.as_u64().saturating_add(len)));
    Ok(va.as_u64())
}

/// mmap of a hugetlb memfd (`fs::hugetlbfs`): the checks of a shmem mapping, then
/// `mmap_hugetlb` (huge-page lengths, offsets and reservations).
fn mmap_hugetlb_file(
    file: &crate::fs::OpenFile,
    hfile: &alloc::sync::Arc<cowlab_mm::hugetlb::HugetlbFile>,
    a: Args,
) -> SysResult {
    let (addr, len, prot, flags) = (a.get(0), a.get(1), a.get(2), a.get(3) as u32);
    if !file.readable() {
        return Err(Errno::EACCES);
    }
    let data = rlimit::is_data_mapping(prot & 2 != 0, flags & 3 != 2, flags & 0x100 != 0);
    let prot = mmap_prot(prot);
    let aspace = current_aspace();
    rlimit::may_expand_vm(&aspace, fixed_at(addr, flags), len)?;
    if data {
        rlimit::may_expand_data(&aspace, fixed_at(addr, flags), len)?;
    }
    map_locked_ok(&aspace, flags, len)?;
    let va = aspace.write().mmap_hugetlb(
        memory::mm(),
        VirtAddr::new(addr),
        len as usize,
        prot,
        MapFlags::from_linux(flags),
        hfile,
        a.get(5),
        file.writable(),
    )?;
    map_populate(flags, va, len);
    populate_if_locked(va, page_up(va.as_u64().saturating_add(len)));
    Ok(va.as_u64())
}

/// mmap's `prot`: Linux's `do_mmap` ignores bits it does not know (`PROT_SEM`, bit 32, ...),
/// unlike mprotect; only read, write and execute mean anything.
fn mmap_prot(prot: u64) -> Prot {
    Prot::from_linux((prot & 7) as u32).unwrap_or(Prot::NONE)
}

/// A `prot` or flags argument the kernel takes as `unsigned long`: bits above the low 32 are
/// unknown bits (`EINVAL`), not to be cut off by a cast.
fn flags_arg(bits: u64) -> Result<u32, Errno> {
    u32::try_from(bits).map_err(|_| Errno::EINVAL)
}

/// Where a `MAP_FIXED` mapping replaces what is there (for `RLIMIT_AS`, which counts it once).
fn fixed_at(addr: u64, flags: u32) -> Option<u64> {
    (flags & 0x10 != 0).then_some(addr)
}

fn checked_addr(addr: u64) -> Result<VirtAddr, Errno> {
    if addr >= cowlab_mm::aspace::USER_END {
        return Err(Errno::EINVAL);
    }
    Ok(VirtAddr::new(addr))
}

/// Pages munmap frees between two releases of the address space (8 MiB).
const MUNMAP_BATCH: u64 = 2048;

/// munmap in steps (`AddressSpace::munmap_start`/`munmap_step`): pages are freed
/// [`MUNMAP_BATCH`] at a time with the address space unlocked and the CPU yielded between
/// steps (unmapping 512 MiB of populated memory held the CPU for its whole length), and the
/// VMAs go in one last atomic step, so other threads' mappings are never cut. A task being
/// killed stops early (its exit unmaps the rest).
pub fn munmap(a: Args) -> SysResult {
    let (addr, len) = (checked_addr(a.get(0))?, a.get(1) as usize);
    let shared = current_aspace();
    let mut cur = shared.write().munmap_start(memory::mm(), addr, len)?;
    loop {
        if shared
            .write()
            .munmap_step(memory::mm(), &mut cur, MUNMAP_BATCH)?
        {
            return Ok(0);
        }
        if crate::proc::current_tid() != 0 {
            if crate::proc::fatal_signal_pending() {
                shared.write().munmap_abort(&cur);
                return Err(Errno::EINTR);
            }
            crate::proc::sched::cond_resched();
        }
    }
}

pub fn mprotect(a: Args) -> SysResult {
    let addr = checked_addr(a.get(0)).map_err(|_| Errno::ENOMEM)?;
    let prot = Prot::from_linux(flags_arg(a.get(2))?)?;
    current_aspace()
        .write()
        .mprotect(memory::mm(), addr, a.get(1) as usize, prot)?;
    Ok(0)
}

pub fn madvise(a: Args) -> SysResult {
    let addr = checked_addr(a.get(0))?;
    let advice = match a.i32(2) {
        // MADV_NORMAL, RANDOM, SEQUENTIAL, WILLNEED: hints only.
        0..=3 => return Ok(0),
        other => Advice::from_linux(other)?,
    };
    let len = a.get(1) as usize;
    if matches!(advice, Advice::PopulateRead | Advice::PopulateWrite) && addr.is_page_aligned() {
        return madvise_populate(addr.as_u64(), len, advice);
    }
    let shared = current_aspace();
    if madvise_need_mmap_write(advice) {
        shared.write().madvise(memory::mm(), addr, len, advice)?;
    } else {
        shared.read_ptl().madvise(memory::mm(), addr, len, advice)?;
    }
    Ok(0)
}

/// Whether `advice` changes VMAs (flags, splits, merges) and so needs `mmap_lock` for writing;
/// the others only zap, populate or age page-table entries and hold it for reading, so another
/// thread's fault or GUP runs beside them (Linux `madvise_need_mmap_write`: read for
/// `DONTNEED`, `FREE`, `COLD`, `POPULATE_*`, `COLLAPSE`, `WILLNEED`, `PAGEOUT`, `REMOVE`).
fn madvise_need_mmap_write(advice: Advice) -> bool {
    !matches!(
        advice,
        Advice::DontNeed
            | Advice::Free
            | Advice::Cold
            | Advice::PopulateRead
            | Advice::PopulateWrite
            | Advice::Collapse
    )
}

/// `MADV_POPULATE_*` a chunk at a time (Linux `madvise_populate`: killable, rescheduling), so
/// populating a huge mapping neither holds the address space nor the CPU for minutes.
fn madvise_populate(addr: u64, len: usize, advice: Advice) -> SysResult {
    const CHUNK: u64 = 2 << 20;
    let end = addr
        .checked_add(len as u64)
        .map(|e| e.saturating_add(0xfff) & !0xfff)
        .ok_or(Errno::EINVAL)?;
    if end > cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOMEM);
    }
    let write = advice == Advice::PopulateWrite;
    let mut at = addr;
    while at < end {
        let n = (end - at).min(CHUNK);
        // A file page not cached yet stops the chunk: it is read with the address space
        // unlocked (Linux `VM_FAULT_RETRY`), then the chunk goes on from it.
        let mut fill = None;
        let stopped = current_aspace().read_ptl().madvise_populate(
            memory::mm(),
            VirtAddr::new(at),
            VirtAddr::new(at + n),
            write,
            Some(&mut fill),
        )?;
        if let Some((file, index, write)) = fill {
            use cowlab_mm::pagecache::{filemap_fault_fill, FileFault};
            filemap_fault_fill(memory::mm(), &*file.0, index, write).map_err(|e| match e {
                FileFault::NoMem => Errno::ENOMEM,
                _ => Errno::EFAULT,
            })?;
            at = stopped.as_u64();
        } else {
            at += n;
        }
        // After a fill too: a page that keeps needing one must not loop here unkillable.
        if crate::proc::fatal_signal_pending() {
            return Err(Errno::EINTR);
        }
        crate::proc::sched::cond_resched();
    }
    Ok(0)
}

pub fn brk(a: Args) -> SysResult {
    let shared = current_aspace();
    // Linux's brk answers the old break when growth is refused (by `RLIMIT_AS` or
    // `RLIMIT_DATA`).
    let future = shared.read_ptl().locks_future();
    let grow = a
        .get(0)
        .saturating_sub(shared.read_ptl().current_brk().as_u64());
    let refused = rlimit::may_expand_brk(&shared, a.get(0)).is_err()
        || rlimit::check_data_rlimit(&shared, a.get(0)).is_err()
        || rlimit::mlock_future_ok(&shared, future, grow).is_err();
    let mut aspace = shared.write();
    let old = aspace.current_brk();
    if refused || a.get(0) == 0 || a.get(0) >= cowlab_mm::aspace::USER_END {
        return Ok(old.as_u64());
    }
    let new = aspace.brk(memory::mm(), VirtAddr::new(a.get(0)));
    drop(aspace);
    populate_if_locked(page_up(old.as_u64()), page_up(new.as_u64()));
    Ok(new.as_u64())
}

/// mremap(old, old_len, new_len, flags, new_addr): the memory manager resizes or moves the
/// mapping, moving its page-table entries (a shared mapping stays shared; nothing is copied).
pub fn mremap(a: Args) -> SysResult {
    let (old_len, new_len) = (a.get(1), a.get(2));
    if new_len > old_len {
        // RLIMIT_AS counts the growth (a move unmaps the old range, so it is the same).
        // Wrapping lengths are the memory manager's to refuse.
        let grow = new_len.saturating_add(0xfff) & !0xfff;
        let had = old_len.saturating_add(0xfff) & !0xfff;
        rlimit::may_expand_vm(&current_aspace(), None, grow.saturating_sub(had))?;
        rlimit::may_expand_data_at(&current_aspace(), a.get(0), grow.saturating_sub(had))?;
        // Growing a locked mapping: Linux's `mlock_future_ok` (EAGAIN), then the new part is
        // populated.
        let locked = current_aspace().read_ptl().vmas().any(|v| {
            v.start().as_u64() <= a.get(0)
                && a.get(0) < v.end().as_u64()
                && v.flags().contains(cowlab_mm::vma::VmaFlags::LOCKED)
        });
        rlimit::mlock_future_ok(&current_aspace(), locked, grow.saturating_sub(had))?;
    }
    if a.get(3) & 4 != 0 {
        // MREMAP_DONTUNMAP keeps the old range: the whole new range is growth (Linux
        // `may_expand_vm`, which counts RLIMIT_DATA for a data mapping too).
        let len = new_len.saturating_add(0xfff) & !0xfff;
        rlimit::may_expand_vm(&current_aspace(), None, len)?;
        rlimit::may_expand_data_at(&current_aspace(), a.get(0), len)?;
    }
    let shared = current_aspace();
    let mut aspace = shared.write();
    let va = aspace.mremap(
        memory::mm(),
        a.get(0),
        a.get(1),
        a.get(2),
        MremapFlags::from_linux(flags_arg(a.get(3))?),
        a.get(4),
    )?;
    drop(aspace);
    if new_len > old_len {
        populate_if_locked(
            page_up(va.as_u64().saturating_add(old_len)),
            page_up(va.as_u64().saturating_add(new_len)),
        );
    }
    Ok(va.as_u64())
}

/// `msync(addr, len, flags)`: the memory manager names the shared file mappings of the range
/// (and Linux's errors); their files are written back here, with the address space unlocked.
pub fn msync(a: Args) -> SysResult {
    let found = current_aspace()
        .read_ptl()
        .msync_files(a.get(0), a.get(1), a.get(2) as u32);
    let (files, error) = match found {
        Ok(files) => (files, None),
        Err((e, files)) => (files, Some(e)),
    };
    for file in files {
        if !file.0.writeback() {
            return Err(Errno::EIO);
        }
    }
    match error {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}

/// mincore(addr, len, vec): one byte per page, 1 if resident (`cowlab_mm::mincore`). Linux's
/// order of checks: an unaligned address is `EINVAL`, a range past user space `ENOMEM`, a
/// `vec` that cannot hold the bytes `EFAULT`, a hole `ENOMEM`. One output page per round, with
/// a fatal signal ending a huge walk.
pub fn mincore(a: Args) -> SysResult {
    let (addr, len, vec) = (a.get(0), a.get(1), a.get(2));
    if addr & 0xfff != 0 {
        return Err(Errno::EINVAL);
    }
    let pages = len.div_ceil(4096);
    let end = pages
        .checked_mul(4096)
        .and_then(|bytes| addr.checked_add(bytes))
        .ok_or(Errno::ENOMEM)?;
    if end > cowlab_mm::aspace::USER_END {
        return Err(Errno::ENOMEM);
    }
    // Linux `access_ok(vec, pages)`: the whole output must be user addresses.
    if vec
        .checked_add(pages)
        .is_none_or(|e| e > cowlab_mm::aspace::USER_END)
    {
        return Err(Errno::EFAULT);
    }
    let mut buf = [0u8; 4096];
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(4096) as usize;
        current_aspace().read_ptl().mincore(
            memory::mm(),
            VirtAddr::new(addr + done * 4096),
            &mut buf[..n],
        )?;
        crate::uaccess::UserSlice::new(vec + done, n)?.write(&buf[..n])?;
        done += n as u64;
        if crate::proc::fatal_signal_pending() {
            return Err(Errno::EINTR);
        }
    }
    Ok(0)
}
