//! Memory system calls: thin decoding in front of `cowlab_mm`, whose errors are Linux's.
//! The address-space lock is held only around memory-manager calls, never around a user copy
//! (mremap's move copies with the lock released).

use cowlab_mm::{Advice, MapFlags, Prot, VirtAddr};

use super::{Args, Errno, SysResult};
use crate::fs::FileKind;
use crate::memory;
use crate::proc::{current_aspace, with_current};
use crate::uaccess::UserSlice;

const MAP_ANONYMOUS: u32 = 0x20;
const MAP_SHARED: u32 = 0x01;
const PROT_WRITE: u64 = 2;

pub fn mmap(a: Args) -> SysResult {
    let (addr, len, prot, flags, fd) = (a.get(0), a.get(1), a.get(2), a.get(3) as u32, a.int(4));
    if addr & 0xfff != 0 && flags & 0x10 != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MAP_ANONYMOUS == 0 {
        let file = with_current(|p| p.fds.get(fd))?;
        let (obj, offset) = match &file.kind {
            FileKind::Memfd(obj) | FileKind::Tmpfs(obj, _) => (obj, a.get(5)),
            FileKind::IoUring(ring) => ring.mmap_target(a.get(5), len)?,
            #[cfg(feature = "kcov")]
            FileKind::Kcov(kcov) => kcov.mmap_target(a.get(5), len)?,
            _ => return Err(Errno::ENODEV),
        };
        let shared = flags & 0x0f == MAP_SHARED;
        if !file.readable() || (shared && prot & PROT_WRITE != 0 && !file.writable()) {
            return Err(Errno::EACCES);
        }
        let prot = Prot::from_linux(prot as u32)?;
        let va = current_aspace().lock().mmap_shmem(
            memory::mm(),
            VirtAddr::new(addr),
            len as usize,
            prot,
            MapFlags::from_linux(flags),
            obj,
            offset,
        )?;
        return Ok(va.as_u64());
    }
    let prot = Prot::from_linux(prot as u32)?;
    let aspace = current_aspace();
    let va = aspace.lock().mmap(
        memory::mm(),
        VirtAddr::new(addr),
        len as usize,
        prot,
        MapFlags::from_linux(flags),
    )?;
    Ok(va.as_u64())
}

fn checked_addr(addr: u64) -> Result<VirtAddr, Errno> {
    if addr >= cowlab_mm::aspace::USER_END {
        return Err(Errno::EINVAL);
    }
    Ok(VirtAddr::new(addr))
}

pub fn munmap(a: Args) -> SysResult {
    let addr = checked_addr(a.get(0))?;
    current_aspace()
        .lock()
        .munmap(memory::mm(), addr, a.get(1) as usize)?;
    Ok(0)
}

pub fn mprotect(a: Args) -> SysResult {
    let addr = checked_addr(a.get(0)).map_err(|_| Errno::ENOMEM)?;
    let prot = Prot::from_linux(a.get(2) as u32)?;
    current_aspace()
        .lock()
        .mprotect(memory::mm(), addr, a.get(1) as usize, prot)?;
    Ok(0)
}

pub fn madvise(a: Args) -> SysResult {
    let addr = checked_addr(a.get(0))?;
    let advice = match a.i32(2) {
        // MADV_NORMAL, RANDOM, SEQUENTIAL, WILLNEED, HUGEPAGE, NOHUGEPAGE: hints only.
        0..=3 | 14 | 15 => return Ok(0),
        // MADV_FREE may drop the pages at any time: dropping them now is allowed.
        8 => Advice::DontNeed,
        other => Advice::from_linux(other)?,
    };
    current_aspace()
        .lock()
        .madvise(memory::mm(), addr, a.get(1) as usize, advice)?;
    Ok(0)
}

pub fn brk(a: Args) -> SysResult {
    let aspace = current_aspace();
    let mut aspace = aspace.lock();
    if a.get(0) == 0 || a.get(0) >= cowlab_mm::aspace::USER_END {
        return Ok(aspace.current_brk().as_u64());
    }
    Ok(aspace.brk(memory::mm(), VirtAddr::new(a.get(0))).as_u64())
}

const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(0xfff).map(|v| v & !0xfff)
}

/// mremap: shrinking in place, growing in place when the pages after are free, and moving
/// (`MREMAP_MAYMOVE`) by mapping a new range, copying, and unmapping the old one.
pub fn mremap(a: Args) -> SysResult {
    let (old, old_len, new_len, flags) = (a.get(0), a.get(1), a.get(2), a.get(3));
    if old & 0xfff != 0 || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0 || new_len == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MREMAP_FIXED != 0 {
        // Moving to a chosen address is not supported yet.
        return Err(Errno::EINVAL);
    }
    let user_end = cowlab_mm::aspace::USER_END;
    if old_len > user_end || new_len > user_end {
        return Err(Errno::ENOMEM);
    }
    let old_len = page_up(old_len).ok_or(Errno::EINVAL)?;
    let new_len = page_up(new_len).ok_or(Errno::ENOMEM)?;
    // Both ranges must lie in the user half (no arithmetic below can overflow then).
    if old + old_len.max(new_len) > user_end {
        return Err(Errno::ENOMEM);
    }
    let old_va = checked_addr(old)?;
    let mm = memory::mm();
    let shared = current_aspace();
    let prot = {
        let aspace = shared.lock();
        let vma = aspace.find_vma(old_va).ok_or(Errno::EFAULT)?;
        if vma.end().as_u64() < old + old_len.min(new_len) {
            return Err(Errno::EFAULT);
        }
        vma.prot()
    };
    if new_len <= old_len {
        if new_len < old_len {
            shared.lock().munmap(
                mm,
                VirtAddr::new(old + new_len),
                (old_len - new_len) as usize,
            )?;
        }
        return Ok(old);
    }
    let grown = shared.lock().mmap(
        mm,
        VirtAddr::new(old + old_len),
        (new_len - old_len) as usize,
        prot,
        MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED_NOREPLACE,
    );
    if grown.is_ok() {
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::ENOMEM);
    }
    let new = shared.lock().mmap(
        mm,
        VirtAddr::zero(),
        new_len as usize,
        Prot::RW,
        MapFlags::PRIVATE | MapFlags::ANONYMOUS,
    )?;
    let new = new.as_u64();
    // Copy without the lock (faults on both ranges resolve through the memory manager).
    let mut buf = alloc::vec![0u8; 4096];
    let mut at = 0;
    while at < old_len {
        let copied = UserSlice::new(old + at, 4096)
            .and_then(|s| s.read(&mut buf))
            .and_then(|()| UserSlice::new(new + at, 4096)?.write(&buf));
        if let Err(e) = copied {
            let _ = shared
                .lock()
                .munmap(mm, VirtAddr::new(new), new_len as usize);
            return Err(e);
        }
        at += 4096;
    }
    let mut aspace = shared.lock();
    aspace.mprotect(mm, VirtAddr::new(new), new_len as usize, prot)?;
    aspace.munmap(mm, old_va, old_len as usize)?;
    Ok(new)
}
