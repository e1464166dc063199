//! Kernel coverage for fuzzers (Linux `kernel/kcov.c`'s model, built only with the `kcov`
//! cargo feature): the compiler's sanitizer-coverage pass (`trace-pc`) puts a call to
//! `__sanitizer_cov_trace_pc` on every edge of the kernel's and cowlab-mm's code, and that
//! call appends its return address to the coverage buffer of the running task, if it has one.
//!
//! Picture: a buffer is a shmem object (see `fs::kcov`, the `/sys/kernel/debug/kcov` file)
//! whose pages were all allocated when it was sized; the process maps it `MAP_SHARED`, and
//! the kernel writes it through the direct map, page by page, from a table of the pages'
//! kernel addresses ([`Area::pages`]). Word 0 is the count of PCs stored after it, as on Linux.
//!
//! The hot path is assembly on purpose: the compiler instruments every Rust function of the
//! kernel (there is no per-function opt-out for sanitizer coverage in Rust), so a Rust hook
//! would call itself. It reads two words of this CPU's per-CPU area through GS ([`PAGES`] and
//! [`WORDS`], `percpu::Slot::KcovPages`/`KcovWords`), which describe the buffer of the task
//! running on this CPU (null/0: no coverage), so tasks traced on different CPUs at once each
//! write their own buffer. `KCOV_ENABLE` sets them for the calling task; the scheduler hides
//! them for the switch and gives them back when the task runs again, on whichever CPU
//! ([`switch_out`]/[`switch_in`], first and last thing in `proc::sched::schedule`, the only way a
//! task leaves and regains a CPU; the idle loop and a new task's first run see none); hardware
//! interrupts hide them while they run ([`IrqGuard`], Linux's `in_task()` check), and a task's
//! exit ([`task_exit`]) clears them before its buffer can be freed. The hook looks at GS only once a
//! task has enabled coverage ([`LIVE`]): the boot runs instrumented code before GS is set up.
//! Only the CPU itself touches its words, with interrupts disabled in the kernel, so nothing
//! runs between those updates and its hot path's reads but an NMI, whose guard puts back what
//! it found; GS is the kernel's in every instrumented function (an NMI taken with the
//! user's GS still loaded swaps it first, `idt::entry`'s `cowlab_nmi_common`).

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use cowlab_mm::shmem::ShmemObject;
use spin::Mutex;

use crate::errno::Errno;
use crate::proc::Pid;
use crate::{memory, percpu};

/// Whether any task ever enabled coverage (0 until the first `KCOV_ENABLE`, then 1 for good):
/// the hook reads GS only after that. Until a CPU's `percpu::init` its GS base is 0, and the
/// boot and the application processors' start run instrumented code before it; the first
/// `KCOV_ENABLE` comes from a task, so after every CPU that came up has its per-CPU area.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// This CPU's running task's page table: kernel addresses of its buffer's pages (null: not
/// traced). A per-CPU word (`gs:`).
const PAGES: usize = crate::percpu::slot(crate::percpu::Slot::KcovPages);
/// Words in this CPU's running task's buffer (word 0 included). A per-CPU word.
const WORDS: usize = crate::percpu::slot(crate::percpu::Slot::KcovWords);

// `__sanitizer_cov_trace_pc`: n = area[0]; if n + 1 < WORDS { area[n + 1] = caller; area[0] =
// n + 1 }. Word i lives in page i / 512 at slot i % 512.
// SAFETY: the hook uses only caller-saved registers (it is called at any edge, between any two
// statements of the caller), and writes nothing but the running task's buffer: it reads GS only
// once LIVE is set, after which GS is this CPU's per-CPU area in all kernel code (NMIs
// included, see the module comment), PAGES there is either
// null or points at the page table of the `Area` of the task running on this CPU (set by its
// own `enable`, or given back to it by `switch_in` from what its `switch_out` saved), which
// `TRACED` keeps alive until `stop` has cleared PAGES and WORDS (on DISABLE or the task's exit,
// run by that task on its CPU), and the index is checked against WORDS, the same buffer's size,
// before the store.
global_asm!(
    ".pushsection .text.cowlab_kcov, \"ax\"",
    ".global __sanitizer_cov_trace_pc",
    "__sanitizer_cov_trace_pc:",
    "    cmp qword ptr [rip + {live}], 0",
    "    je 2f",
    "    mov rcx, qword ptr gs:[{pages}]",
    "    test rcx, rcx",
    "    jz 2f",
    "    mov rdx, qword ptr [rcx]",
    "    mov rax, qword ptr [rdx]",
    "    add rax, 1",
    "    jz 2f",
    "    cmp rax, qword ptr gs:[{words}]",
    "    jae 2f",
    "    mov qword ptr [rdx], rax",
    "    mov rdx, rax",
    "    shr rdx, 9",
    "    mov rdx, qword ptr [rcx + rdx * 8]",
    "    and eax, 511",
    "    mov r8, qword ptr [rsp]",
    "    mov qword ptr [rdx + rax * 8], r8",
    "2:",
    "    ret",
    ".popsection",
    live = sym LIVE,
    pages = const PAGES,
    words = const WORDS,
);

/// One coverage buffer: a shmem object of `words` u64s, all pages allocated.
pub struct Area {
    /// `Some` until drop, which puts it.
    obj: Option<Arc<ShmemObject>>,
    /// Kernel (direct-map) addresses of the object's pages, in order.
    pages: Vec<u64>,
    pub words: u64,
    /// The task tracing into this buffer (0: none).
    owner: AtomicU32,
}

impl Drop for Area {
    fn drop(&mut self) {
        if let Some(obj) = self.obj.take() {
            ShmemObject::put(obj, memory::mm());
        }
    }
}

impl Area {
    /// A buffer of `words` u64s (Linux `KCOV_INIT_TRACE` allocates it then): `ENOMEM` if the
    /// pages cannot all be had.
    pub fn new(words: u64) -> Result<Area, Errno> {
        let bytes = words.checked_mul(8).ok_or(Errno::EINVAL)?;
        let mm = memory::mm();
        let obj = ShmemObject::new();
        let mut area = Area {
            obj: None,
            pages: Vec::new(),
            words,
            owner: AtomicU32::new(0),
        };
        let allocated = obj.fallocate(mm, 0, bytes.next_multiple_of(4096));
        area.obj = Some(obj);
        allocated?;
        let obj = area.obj();
        area.pages = (0..bytes.div_ceil(4096))
            .map(|i| obj.cache_frame(i).map(|f| memory::phys_to_virt(f) as u64))
            .collect::<Option<Vec<u64>>>()
            .ok_or(Errno::ENOMEM)?;
        Ok(area)
    }

    pub fn obj(&self) -> &Arc<ShmemObject> {
        self.obj
            .as_ref()
            .expect("the buffer object lives until drop")
    }

    /// Whether a live task traces into this buffer.
    pub fn owner(&self) -> Pid {
        self.owner.load(Ordering::Relaxed)
    }
}

/// Tasks with coverage enabled, and their buffers (Linux keeps this in `task_struct::kcov`).
static TRACED: Mutex<BTreeMap<Pid, Arc<Area>>> = Mutex::new(BTreeMap::new());

/// Starts tracing the calling task `tid` into `area` (`KCOV_ENABLE`): `EBUSY` if the buffer
/// already has a task or the task already traces into a buffer.
pub fn enable(tid: Pid, area: &Arc<Area>) -> Result<(), Errno> {
    let mut traced = TRACED.lock();
    if area.owner() != 0 || traced.contains_key(&tid) {
        return Err(Errno::EBUSY);
    }
    area.owner.store(tid, Ordering::Relaxed);
    traced.insert(tid, area.clone());
    let (pages, words) = (area.pages.as_ptr() as u64, area.words);
    drop(traced);
    LIVE.store(1, Ordering::Relaxed);
    percpu::write::<WORDS>(words);
    percpu::write::<PAGES>(pages);
    Ok(())
}

/// Stops tracing task `tid` into `area` (`KCOV_DISABLE`): `EINVAL` unless it does.
pub fn disable(tid: Pid, area: &Arc<Area>) -> Result<(), Errno> {
    if area.owner() != tid {
        return Err(Errno::EINVAL);
    }
    stop(tid);
    Ok(())
}

/// Ends task `tid`'s tracing, if any (Linux `kcov_task_exit`): called first thing on a
/// thread's exit, so the buffer can go with the last file and mapping.
pub fn task_exit(tid: Pid) {
    stop(tid);
}

fn stop(tid: Pid) {
    // Hide the buffer before it can be dropped (the hot path runs inside the drop too). The task
    // stops its own tracing, on the CPU it runs on: that CPU's words are the ones naming it.
    percpu::write::<PAGES>(0);
    percpu::write::<WORDS>(0);
    let removed = TRACED.lock().remove(&tid);
    if let Some(area) = &removed {
        area.owner.store(0, Ordering::Relaxed);
    }
    drop(removed);
}

/// A task's coverage words as it left its CPU ([`switch_out`]), kept on its own stack (in
/// `proc::sched::schedule`'s frame) until it runs again ([`switch_in`]).
pub struct Saved {
    pages: u64,
    words: u64,
}

/// Hides the running task's buffer for the switch away from it (the first thing
/// `proc::sched::schedule` does): the scheduler, the idle loop and whatever runs on this CPU
/// until the task is back are not the task's doing (Linux builds `kernel/sched/` without kcov
/// instrumentation for that reason). What is saved includes whether the task was inside a
/// hardware interrupt ([`IrqGuard`] had hidden its buffer, PAGES 0): a tick that preempts it
/// stays hidden when it resumes there.
pub fn switch_out() -> Saved {
    let saved = Saved {
        pages: percpu::read::<PAGES>(),
        words: percpu::read::<WORDS>(),
    };
    percpu::write::<PAGES>(0);
    percpu::write::<WORDS>(0);
    saved
}

/// Gives the task back its coverage words once it runs again (the last thing `schedule` does),
/// on whichever CPU that is. Only the task itself enables, disables or ends its tracing, so
/// while it was away its buffer stayed what it was and alive (in [`TRACED`]).
pub fn switch_in(saved: Saved) {
    percpu::write::<WORDS>(saved.words);
    percpu::write::<PAGES>(saved.pages);
}

/// Whether the task running on this CPU traces its coverage now (its buffer is loaded, not
/// hidden by an interrupt).
#[inline]
pub fn tracing_here() -> bool {
    percpu::read::<PAGES>() != 0
}

/// Task `old`'s tracing now belongs to tid `new` (`execve` in a non-leader thread takes the
/// leader's tid): the task traces on, and its exit (under the new tid) still frees the buffer.
pub fn task_renamed(old: Pid, new: Pid) {
    let mut traced = TRACED.lock();
    if let Some(area) = traced.remove(&old) {
        area.owner.store(new, Ordering::Relaxed);
        traced.insert(new, area);
    }
}

/// Hides the running task's buffer while a hardware interrupt is handled (Linux traces only
/// task context): what a tick or a disk interrupt runs is not the task's doing.
pub struct IrqGuard(u64);

/// Hides the running task's buffer while its CPU waits for another CPU: the big kernel lock's
/// contended path (`bkl::lock_slow`, `bkl::relax`'s hand-off) and a TLB shootdown's wait for
/// the targets' acknowledgements. Every pass of those loops is an edge, and how many passes
/// there are depends on the other CPU, not on the call: on 2 CPUs one `getppid` that found the
/// lock taken filled t_kcov's whole 65,535-word buffer with the spin's PCs, so the call's own
/// were lost (its "lacking" sample), and a fuzzer would take the noise for new coverage. Linux
/// builds its lock and IPI code without kcov instrumentation; Rust has no per-function opt-out,
/// so the buffer is hidden instead, as for an interrupt (same nesting rules: [`IrqGuard`]).
/// Held for its drop, which gives the buffer back.
pub struct WaitGuard(#[allow(dead_code)] IrqGuard);

impl WaitGuard {
    #[inline]
    pub fn new() -> WaitGuard {
        WaitGuard(IrqGuard::new())
    }
}

impl IrqGuard {
    pub fn new() -> IrqGuard {
        let pages = percpu::read::<PAGES>();
        percpu::write::<PAGES>(0);
        IrqGuard(pages)
    }
}

impl Drop for IrqGuard {
    fn drop(&mut self) {
        // The task may have been switched away from and back inside the interrupt (a tick
        // preempts): `switch_in` then gave it back the hidden state it left with. WORDS 0: its
        // tracing ended meanwhile (`stop`), the buffer may be gone.
        if percpu::read::<WORDS>() != 0 {
            percpu::write::<PAGES>(self.0);
        }
    }
}
