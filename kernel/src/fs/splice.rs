//! `vmsplice` (Linux `fs/splice.c`): into a pipe's write end, plain page references
//! (`get_user_pages`, `FOLL_GET`) queued in the pipe and held until the data is read; on the
//! read end, pipe data copied out to the iovecs, as Linux's `vmsplice_to_user`.
#![deny(unsafe_code)]

use core::sync::atomic::Ordering;

use cowlab_mm::opstat::{self, Phase};
use cowlab_mm::pin::PinnedPage;

use super::file::OpenFile;
use super::iter::IoIter;
use super::pipe::PipeEnd;
use super::rw::vfs_read;
use super::O_NONBLOCK;
use crate::errno::Errno;

/// Pages taken per GUP call and queued per pipe lock.
const VMSPLICE_BATCH: usize = 16;

/// `vmsplice(fd, iov, nr_segs, flags)` on `file` with the iovecs in `iter`; `nonblock` from
/// `SPLICE_F_NONBLOCK`. `EBADF` for a file that is not a pipe.
pub fn vmsplice(file: &OpenFile, iter: &mut IoIter, nonblock: bool) -> Result<u64, Errno> {
    let end = file.downcast::<PipeEnd>().ok_or(Errno::EBADF)?;
    if !end.write {
        return vfs_read(file, None, iter).map(|n| n as u64);
    }
    let nonblock = nonblock || file.flags.load(Ordering::Relaxed) & O_NONBLOCK != 0;
    let pipe = &end.pipe;
    let mm = crate::memory::mm();
    let mut total: u64 = 0;
    while let Some(iov) = iter.next_user() {
        let end = iov.addr() + iov.len() as u64;
        let mut va = iov.addr();
        while va < end {
            // Up to VMSPLICE_BATCH pages per GUP call and per pipe lock (Linux `iter_to_pipe`
            // takes 16 pages per `iov_iter_get_pages2`, through GUP-fast).
            let first = va & !0xfff;
            let nr = ((end - first).div_ceil(4096) as usize).min(VMSPLICE_BATCH);
            let mut pages: [Option<PinnedPage>; VMSPLICE_BATCH] = Default::default();
            opstat::mark(Phase::VsSyscall);
            let got = take_pages(mm, first, &mut pages[..nr]);
            opstat::mark(Phase::GupLeave);
            if got == 0 {
                return if total > 0 {
                    Ok(total)
                } else {
                    Err(Errno::EFAULT)
                };
            }
            let off = (va & 0xfff) as usize;
            let len = ((first + got as u64 * 4096).min(end) - va) as usize;
            // Linux waits for room only before the first page (`wait_for_space`), then queues
            // what fits and returns: a vmsplice larger than the pipe is a short count, not a
            // wait for a reader (which deadlocked cow.c's vmsplice families on 2 MiB pages).
            let pushed = pipe.push_pages(nonblock || total > 0, &mut pages[..got], off, len);
            opstat::mark(Phase::VsPipe);
            // The pipe took the pages covering what it queued (a prefix); the rest are ours.
            let taken = match pushed {
                Ok(n) if n > 0 => (off + n).div_ceil(4096).min(got),
                _ => 0,
            };
            if taken < got {
                cowlab_mm::gup::unpin_user_pages(mm, &mut pages[taken..got]);
            }
            opstat::mark(Phase::VsRelease);
            match pushed {
                Ok(n) => {
                    total += n as u64;
                    va += n as u64;
                    if n < len {
                        return Ok(total);
                    }
                }
                Err(e) => return if total > 0 { Ok(total) } else { Err(e) },
            }
            if got < nr {
                // GUP stopped early (an unmapped or inaccessible page): a short count.
                return Ok(total);
            }
        }
    }
    Ok(total)
}

/// Plain references on the pages from `first` (Linux `iov_iter_get_pages2` ->
/// `get_user_pages_fast`): GUP-fast first, on the running address space without its lock or a
/// reference to it (`vm::with_current_mm_irqs_off`: the common case costs neither the task
/// table's lookup nor the `mmap_lock`); the pages it could not take through the slow path,
/// under the lock, with a hold that lets the space go to fill a file page. The number taken,
/// a prefix of `pages`.
fn take_pages(
    mm: &cowlab_mm::Mm<crate::arch::KernelArch>,
    first: u64,
    pages: &mut [Option<PinnedPage>],
) -> usize {
    use cowlab_mm::foll::FollFlags;
    use cowlab_mm::VirtAddr;
    let fast = crate::vm::with_current_mm_irqs_off(|shared| {
        cowlab_mm::gup::get_user_pages_fast_only(
            mm,
            shared,
            VirtAddr::new(first),
            FollFlags::NONE,
            pages,
        )
    });
    let fast = match fast {
        Some(Ok(n)) => n,
        // An address outside the user half (`EFAULT`), or no address space.
        _ => return 0,
    };
    if fast == pages.len() {
        return fast;
    }
    let aspace = crate::proc::current_aspace();
    let rest = VirtAddr::new(first + fast as u64 * 4096);
    let slow = cowlab_mm::gup::user_pages_held(
        mm,
        &mut crate::gup_hold::ReschedHold::for_fills(&aspace),
        rest,
        FollFlags::NONE,
        false,
        true,
        &mut pages[fast..],
    )
    .unwrap_or(0);
    fast + slow
}
