//! The out-of-memory killer (Linux `out_of_memory`, `oom_kill_process`): when a user page fault
//! cannot get a frame, the process with the largest footprint dies, not the one that asked.
//!
//! Picture: the fault handler gets `FaultError::Oom` (from ring 3, or from a kernel copy to or
//! from user memory: `idt::dispatch`'s `kernel_oom_may_retry`) and calls [`out_of_memory`]. It
//! measures every process's address space (`AddressSpace::footprint`: resident pages and page
//! tables), lets `cowlab_mm::oom::select_bad_process` choose, and kills the choice the way a fatal
//! signal does (every thread marked, sleepers woken; each exits at its next return to ring 3,
//! and the last one tears the address space down). It prints one console line:
//!
//! ```text
//! cowlab: oom: killed pid <pid> (<name>) rss=<kB>kB pgtables=<kB>kB: largest of <n> candidates (badness <pages> pages); fault in pid <pid> (<name>), <free> frames free
//! ```
//!
//! The faulting process then yields, so that the victim can run and exit, and retries its fault
//! (returning to the faulting instruction); while a victim is still exiting no second one is
//! chosen (Linux's `tsk_is_oom_victim` abort), the faulting process just yields again. If the
//! faulting process is the victim it ends on its return to ring 3. Init (pid 1) is never chosen;
//! if nothing else is killable, the faulting process is killed (what cowlab did before).
//!
//! Frames are only ever freed by the victim's own exit, through the memory manager's reference
//! and pin counts: a page pinned by a device, an io_uring registration held by another process
//! or DMA in flight keeps its frame until the pin is dropped, victim or not.
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use cowlab_mm::oom::{select_bad_process, OomCandidate, OomChoice};

use super::{current_pid, kill_group_locked, sched, State, SIGKILL, TABLE};
use crate::{memory, vm};

/// The tgid of the last process the OOM killer chose (0: none yet). It counts as "still
/// exiting" while any task of its group still holds its address space.
static OOM_VICTIM: AtomicU32 = AtomicU32::new(0);

/// What the caller of [`out_of_memory`] should do next.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OomAction {
    /// Memory is on its way back (another process was killed or is exiting): yield, then retry.
    Retry,
    /// The caller's own process was chosen, or nothing else could be: it has been killed.
    CallerKilled,
}

/// Linux `out_of_memory` for a user page fault of the current process: chooses and kills a
/// victim (see the module comment), then yields if the caller survives. Not for the fault fast
/// path's common case: it runs only after an allocation failed.
#[cold]
#[inline(never)]
pub fn out_of_memory() -> OomAction {
    let me = current_pid();
    // (tgid, name, an address-space reference, whether it is the pending victim).
    let mut procs: BTreeMap<u32, (String, vm::SharedAddressSpace)> = BTreeMap::new();
    {
        let table = TABLE.lock();
        for t in table.values() {
            if matches!(t.state, State::Zombie(_) | State::Dead) {
                continue;
            }
            if let Some(aspace) = &t.aspace {
                procs
                    .entry(t.tgid)
                    .or_insert_with(|| (t.name.clone(), aspace.clone()));
            }
        }
    }
    let pending = OOM_VICTIM.load(Ordering::Relaxed);
    let mm = memory::mm();
    let candidates: Vec<OomCandidate<u32>> = procs
        .iter()
        .filter_map(|(&tgid, (_, aspace))| {
            // A locked address space belongs to code this fault interrupted; leave it out.
            let footprint = aspace
                .try_read()
                .and_then(|r| r.try_into_ptl().ok())?
                .footprint(mm);
            Some(OomCandidate {
                id: tgid,
                footprint,
                unkillable: tgid == 1,
                oom_victim: tgid == pending,
            })
        })
        .collect();
    let (victim, badness) = match select_bad_process(candidates.iter().copied()) {
        OomChoice::Kill(victim, badness) => (victim, badness),
        OomChoice::Wait(victim) if victim != me => {
            drop(procs);
            sched::yield_now();
            return OomAction::Retry;
        }
        OomChoice::Wait(_) | OomChoice::Nothing => (me, 0),
    };
    let footprint = candidates
        .iter()
        .find(|c| c.id == victim)
        .map(|c| c.footprint)
        .unwrap_or_default();
    let name = |tgid: u32| procs.get(&tgid).map_or("?", |(n, _)| n.as_str());
    println!(
        "cowlab: oom: killed pid {victim} ({}) rss={}kB pgtables={}kB: largest of {} candidates (badness {badness} pages); fault in pid {me} ({}), {} frames free",
        name(victim),
        footprint.rss_pages * 4,
        footprint.pagetable_pages * 4,
        candidates.iter().filter(|c| !c.unkillable).count(),
        name(me),
        memory::frames().free_frames(),
    );
    // Our references must not keep the victim's memory alive.
    drop(procs);
    OOM_VICTIM.store(victim, Ordering::Relaxed);
    kill_group_locked(&mut TABLE.lock(), victim, i32::from(SIGKILL));
    if victim == me {
        return OomAction::CallerKilled;
    }
    sched::yield_now();
    OomAction::Retry
}
