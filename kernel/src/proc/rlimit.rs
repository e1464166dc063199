//! Resource limits (Linux `struct rlimit`, `signal->rlim`): one table per process, copied by
//! fork, kept across exec, read by the code each limit bounds.
//!
//! Picture: every thread group's [`Group`](super::Group) holds an [`Rlimits`] table of (soft,
//! hard) pairs for the sixteen resources of Linux. `getrlimit`, `setrlimit` and `prlimit64`
//! read and change it through [`do_prlimit`]; the enforcing code asks [`rlimit`] for the
//! caller's soft limit, as Linux's `rlimit()` reads `current->signal->rlim`:
//!
//! | resource | enforced by | answer past it |
//! |---|---|---|
//! | `RLIMIT_NPROC` | `fork::clone` through [`nproc_allows`] | `EAGAIN` |
//! | `RLIMIT_NOFILE` | the descriptor table (`fs::FdTable`, through [`nofile`]), `dup2`/`dup3`, `F_DUPFD` | `EMFILE`, `EBADF`, `EINVAL` |
//! | `RLIMIT_AS` | `mmap`, `brk`, `mremap` growth, through [`may_expand_vm`] | `ENOMEM` |
//! | `RLIMIT_STACK` | the stack mapping exec builds ([`stack_vma_size`]) and exec's argument space ([`arg_space_limit`]) | `SIGSEGV` beyond it, `E2BIG` |
//! | `RLIMIT_MEMLOCK` | io_uring buffer registrations ([`account_locked_vm`]), mlock, new mappings after `mlockall(MCL_FUTURE)` and growth of a locked one ([`mlock_future_ok`]) | `ENOMEM`, `EAGAIN` |
//! | `RLIMIT_FSIZE` | writes, truncate and fallocate of regular files (`fs::fsize`) | SIGXFSZ and `EFBIG`, a short write |
//! | `RLIMIT_CPU` | the timer tick, on the group's CPU time (`cputime`) | SIGXCPU at the soft limit and every second after, SIGKILL at the hard one |
//! | `RLIMIT_DATA` | private writable mappings (`mmap`, `mremap` growth, through [`may_expand_data`]) and `brk` ([`check_data_rlimit`]) | `ENOMEM`; `brk` keeps the old break |
//!
//! The other eight answer Linux's defaults and are stored, not enforced.
//!
//! Privilege: every cowlab process runs as uid 0. Linux lets root (`CAP_SYS_RESOURCE`,
//! `CAP_SYS_ADMIN`, `CAP_IPC_LOCK`, or being `INIT_USER` for `RLIMIT_NPROC`) bypass
//! `RLIMIT_NPROC` and `RLIMIT_MEMLOCK`; cowlab instead enforces them as Linux does for an
//! unprivileged process, so that the limits can be tested at all. What root is still granted
//! is kept: raising a hard limit is allowed (only `RLIMIT_NOFILE` above [`NR_OPEN`] is
//! `EPERM`), and `prlimit64` may act on any pid. "Per user" counters (Linux `user_struct`'s
//! `locked_vm`, the `ucounts` of `RLIMIT_NPROC`) are therefore one system-wide count: there is
//! one user.

use core::sync::atomic::{AtomicU64, Ordering};

use super::switch::KERNEL_STACK_SIZE;
use super::{State, TABLE};
use crate::errno::Errno;
use crate::memory::HEAP_SIZE;
use crate::vm::SharedAddressSpace;

// Linux's numbering (5 RSS, 10 LOCKS and 15 RTTIME are stored only).
pub const RLIMIT_CPU: usize = 0;
pub const RLIMIT_FSIZE: usize = 1;
pub const RLIMIT_DATA: usize = 2;
pub const RLIMIT_STACK: usize = 3;
pub const RLIMIT_CORE: usize = 4;
pub const RLIMIT_NPROC: usize = 6;
pub const RLIMIT_NOFILE: usize = 7;
pub const RLIMIT_MEMLOCK: usize = 8;
pub const RLIMIT_AS: usize = 9;
pub const RLIMIT_SIGPENDING: usize = 11;
pub const RLIMIT_MSGQUEUE: usize = 12;
pub const RLIMIT_NICE: usize = 13;
pub const RLIMIT_RTPRIO: usize = 14;
/// Linux `RLIM_NLIMITS`.
pub const RLIM_NLIMITS: usize = 16;
/// Linux `RLIM_INFINITY` (`RLIM64_INFINITY` on x86_64).
pub const RLIM_INFINITY: u64 = u64::MAX;

/// The most descriptors a process may be allowed (Linux `sysctl_nr_open`, 1048576 by default):
/// cowlab's is smaller because a descriptor table lives on the fixed 64 MiB kernel heap
/// (16 bytes a slot, 1 MiB at this limit).
pub const NR_OPEN: u64 = 1 << 16;

/// Linux `MLOCK_LIMIT` (8 MiB since 5.16): the default `RLIMIT_MEMLOCK`.
const MLOCK_LIMIT: u64 = 8 << 20;
/// Linux `_STK_LIM`: the default soft `RLIMIT_STACK`.
const STK_LIM: u64 = 8 << 20;
/// Linux `ARG_MAX` (32 pages): exec's argument space is never limited below this.
const ARG_MAX: u64 = 32 * 4096;
/// The largest stack mapping exec builds whatever `RLIMIT_STACK` says (an unlimited stack
/// included): the room between the stack top and the `mmap` base, less a margin.
const MAX_STACK_VMA: u64 = 64 << 20;

/// One limit: soft (`rlim_cur`, what is enforced) and hard (`rlim_max`, the ceiling for the
/// soft one).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct Rlimit {
    pub cur: u64,
    pub max: u64,
}

/// A process's limits, by resource number.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rlimits([Rlimit; RLIM_NLIMITS]);

/// Linux `set_max_threads`: a thread's kernel stack may use at most an eighth of the memory
/// stacks come from. Linux divides total RAM by `8 * THREAD_SIZE`; cowlab's kernel stacks come
/// from the kernel heap, so the same rule is applied to it (256 threads, 128 per user).
pub fn max_threads() -> u64 {
    (HEAP_SIZE / (8 * KERNEL_STACK_SIZE)) as u64
}

impl Rlimits {
    /// What init starts with (Linux `INIT_RLIMITS`, with `RLIMIT_NPROC` and
    /// `RLIMIT_SIGPENDING` at half of [`max_threads`], as `fork_init` sets them).
    pub fn linux_defaults() -> Rlimits {
        let inf = Rlimit {
            cur: RLIM_INFINITY,
            max: RLIM_INFINITY,
        };
        let mut table = [inf; RLIM_NLIMITS];
        let threads = max_threads() / 2;
        table[RLIMIT_STACK] = Rlimit {
            cur: STK_LIM,
            max: RLIM_INFINITY,
        };
        table[RLIMIT_CORE] = Rlimit {
            cur: 0,
            max: RLIM_INFINITY,
        };
        table[RLIMIT_NPROC] = Rlimit {
            cur: threads,
            max: threads,
        };
        // INR_OPEN_CUR, INR_OPEN_MAX.
        table[RLIMIT_NOFILE] = Rlimit {
            cur: 1024,
            max: 4096,
        };
        table[RLIMIT_MEMLOCK] = Rlimit {
            cur: MLOCK_LIMIT,
            max: MLOCK_LIMIT,
        };
        table[RLIMIT_SIGPENDING] = Rlimit {
            cur: threads,
            max: threads,
        };
        // MQ_BYTES_MAX.
        table[RLIMIT_MSGQUEUE] = Rlimit {
            cur: 819_200,
            max: 819_200,
        };
        table[RLIMIT_NICE] = Rlimit { cur: 0, max: 0 };
        table[RLIMIT_RTPRIO] = Rlimit { cur: 0, max: 0 };
        Rlimits(table)
    }

    pub fn get(&self, resource: usize) -> Rlimit {
        self.0[resource]
    }

    /// Sets one limit without `do_prlimit`'s checks: the kernel's own change (`RLIMIT_CPU`'s
    /// soft limit moving up a second after each SIGXCPU).
    pub fn set_raw(&mut self, resource: usize, limit: Rlimit) {
        self.0[resource] = limit;
    }
}

impl Default for Rlimits {
    fn default() -> Rlimits {
        Rlimits::linux_defaults()
    }
}

/// Linux `do_prlimit`: returns the old limit of `resource` in `limits` and, with `new`, sets
/// it. `EINVAL` for an unknown resource or a soft limit above the hard one, `EPERM` for an
/// `RLIMIT_NOFILE` above [`NR_OPEN`] (even for root). Raising a hard limit needs
/// `CAP_SYS_RESOURCE`, which every cowlab process has.
pub fn do_prlimit(
    limits: &mut Rlimits,
    resource: u64,
    new: Option<Rlimit>,
) -> Result<Rlimit, Errno> {
    let resource = usize::try_from(resource)
        .ok()
        .filter(|&r| r < RLIM_NLIMITS)
        .ok_or(Errno::EINVAL)?;
    if let Some(new) = new {
        if new.cur > new.max {
            return Err(Errno::EINVAL);
        }
        if resource == RLIMIT_NOFILE && new.max > NR_OPEN {
            return Err(Errno::EPERM);
        }
    }
    let old = limits.0[resource];
    if let Some(new) = new {
        limits.0[resource] = new;
    }
    Ok(old)
}

/// The caller's soft limit of `resource` (Linux `rlimit()`); Linux's default outside a task
/// (kernel tests, the first exec). Takes the caller's group lock: callers must not hold it.
pub fn rlimit(resource: usize) -> u64 {
    let group = super::CURRENT_GROUP[crate::percpu::cpu_id()].load(Ordering::Relaxed);
    // SAFETY: as in `with_group`: a non-null `CURRENT_GROUP` is the running task's group,
    // which the task keeps alive while it runs. Only `&Mutex` is formed.
    match unsafe { group.as_ref() } {
        Some(group) => group.lock().rlimits.get(resource).cur,
        None => Rlimits::linux_defaults().get(resource).cur,
    }
}

/// `prlimit64`'s view of another process: `f` runs on the limits of the process containing
/// thread `tid` (`ESRCH` if there is none; a zombie not yet reaped still answers, as its
/// `signal_struct` lives until then on Linux).
pub fn with_task_rlimits<R>(tid: u32, f: impl FnOnce(&mut Rlimits) -> R) -> Result<R, Errno> {
    let group = {
        let table = TABLE.lock();
        let task = table
            .get(&tid)
            .filter(|t| t.state != State::Dead)
            .ok_or(Errno::ESRCH)?;
        task.group.clone()
    };
    let mut group = group.lock();
    Ok(f(&mut group.rlimits))
}

/// `RLIMIT_NOFILE` of the caller as a descriptor count: descriptors `0..nofile()` may be used.
pub fn nofile() -> usize {
    rlimit(RLIMIT_NOFILE).min(NR_OPEN) as usize
}

/// Whether one more task fits under the caller's `RLIMIT_NPROC` (Linux `copy_process`:
/// the new task's user count, this one included, may not exceed the limit). `tasks` is the
/// number of tasks the user has: every task not yet released (zombies count until reaped), all
/// of them uid 0's.
pub fn nproc_allows(tasks: usize) -> bool {
    (tasks as u64) < rlimit(RLIMIT_NPROC)
}

/// Tasks counted against `RLIMIT_NPROC`: all but exited non-leader threads waiting for the idle
/// loop to free their stacks (Linux releases those at exit). Call with the table locked.
pub fn nproc_count(
    table: &alloc::collections::BTreeMap<super::Pid, alloc::boxed::Box<super::Task>>,
) -> usize {
    table.values().filter(|t| t.state != State::Dead).count()
}

/// Linux `may_expand_vm` for `RLIMIT_AS`: may `aspace` map `len` more bytes (at `at`, where
/// an existing mapping being replaced, as `MAP_FIXED` does, counts only once)? `ENOMEM` if the
/// total would pass the caller's limit. Reads the limit before taking the address-space lock;
/// costs one group-lock round trip when the limit is infinite (the default).
pub fn may_expand_vm(aspace: &SharedAddressSpace, at: Option<u64>, len: u64) -> Result<(), Errno> {
    let limit = rlimit(RLIMIT_AS);
    if limit == RLIM_INFINITY {
        return Ok(());
    }
    let len = len.checked_add(0xfff).ok_or(Errno::ENOMEM)? & !0xfff;
    let end = at.map(|a| a.saturating_add(len));
    let (mut total, mut replaced) = (0u64, 0u64);
    for vma in aspace.lock().vmas() {
        let (s, e) = (vma.start().as_u64(), vma.end().as_u64());
        total += e - s;
        if let (Some(a), Some(end)) = (at, end) {
            replaced += e.min(end).saturating_sub(s.max(a));
        }
    }
    match (total - replaced).checked_add(len) {
        Some(after) if after <= limit => Ok(()),
        _ => Err(Errno::ENOMEM),
    }
}

/// Linux `is_data_mapping`: private, writable and not a stack (`VM_WRITE` without `VM_SHARED`
/// or `VM_STACK`): what `RLIMIT_DATA` counts (`mm->data_vm`).
pub fn is_data_mapping(writable: bool, shared: bool, stack: bool) -> bool {
    writable && !shared && !stack
}

/// The data part of Linux `may_expand_vm`: may `aspace` get `len` more bytes of data mappings
/// ([`is_data_mapping`]; at `at`, where data mappings being replaced count once)? `ENOMEM` past
/// the caller's `RLIMIT_DATA`. Costs one group-lock round trip when the limit is infinite (the
/// default).
pub fn may_expand_data(
    aspace: &SharedAddressSpace,
    at: Option<u64>,
    len: u64,
) -> Result<(), Errno> {
    let limit = rlimit(RLIMIT_DATA);
    if limit == RLIM_INFINITY {
        return Ok(());
    }
    let len = len.checked_add(0xfff).ok_or(Errno::ENOMEM)? & !0xfff;
    let end = at.map(|a| a.saturating_add(len));
    let (mut total, mut replaced) = (0u64, 0u64);
    for vma in aspace.lock().vmas() {
        let data = is_data_mapping(
            vma.prot().contains(cowlab_mm::Prot::WRITE),
            vma.sharing() == cowlab_mm::vma::Sharing::Shared,
            vma.flags().contains(cowlab_mm::vma::VmaFlags::GROWSDOWN),
        );
        if !data {
            continue;
        }
        let (s, e) = (vma.start().as_u64(), vma.end().as_u64());
        total += e - s;
        if let (Some(a), Some(end)) = (at, end) {
            replaced += e.min(end).saturating_sub(s.max(a));
        }
    }
    match (total - replaced).checked_add(len) {
        Some(after) if after <= limit => Ok(()),
        _ => Err(Errno::ENOMEM),
    }
}

/// [`may_expand_data`] for growing the mapping at `addr` (mremap): only if it is a data mapping.
pub fn may_expand_data_at(aspace: &SharedAddressSpace, addr: u64, len: u64) -> Result<(), Errno> {
    if rlimit(RLIMIT_DATA) == RLIM_INFINITY {
        return Ok(());
    }
    let data = aspace.lock().vmas().any(|v| {
        v.start().as_u64() <= addr
            && addr < v.end().as_u64()
            && is_data_mapping(
                v.prot().contains(cowlab_mm::Prot::WRITE),
                v.sharing() == cowlab_mm::vma::Sharing::Shared,
                v.flags().contains(cowlab_mm::vma::VmaFlags::GROWSDOWN),
            )
    });
    if data {
        may_expand_data(aspace, None, len)
    } else {
        Ok(())
    }
}

/// Linux `check_data_rlimit` for `brk`: the heap from its start to `new` plus the data mappings
/// outside it may not pass `RLIMIT_DATA` (Linux adds the ELF data segment; cowlab counts
/// every private writable mapping, the segment's included).
pub fn check_data_rlimit(aspace: &SharedAddressSpace, new: u64) -> Result<(), Errno> {
    let cur = aspace.lock().current_brk().as_u64().saturating_add(0xfff) & !0xfff;
    let new = new.saturating_add(0xfff) & !0xfff;
    if new <= cur {
        return Ok(());
    }
    may_expand_data(aspace, Some(cur), new - cur)
}

/// `brk` growth as `may_expand_vm` sees it: the pages between the current break and `new`.
pub fn may_expand_brk(aspace: &SharedAddressSpace, new: u64) -> Result<(), Errno> {
    let cur = aspace.lock().current_brk().as_u64().saturating_add(0xfff) & !0xfff;
    let new = new.saturating_add(0xfff) & !0xfff;
    if new <= cur {
        return Ok(());
    }
    may_expand_vm(aspace, Some(cur), new - cur)
}

/// The size of the stack mapping exec builds: the caller's `RLIMIT_STACK`, at least
/// [`ARG_MAX`] plus a page and at most [`MAX_STACK_VMA`]. Linux grows the stack VMA on faults
/// up to the limit; cowlab maps the whole limit at exec (pages still come on first touch), so
/// an access below it is a `SIGSEGV` as on Linux.
pub fn stack_vma_size() -> u64 {
    rlimit(RLIMIT_STACK).clamp(ARG_MAX + 4096, MAX_STACK_VMA) & !0xfff
}

/// Linux `bprm_stack_limits`: argument and environment strings plus their pointers may use a
/// quarter of `RLIMIT_STACK` (at most three quarters of `_STK_LIM`, at least [`ARG_MAX`]);
/// more is `E2BIG`.
pub fn arg_space_limit() -> u64 {
    (rlimit(RLIMIT_STACK) / 4).clamp(ARG_MAX, STK_LIM / 4 * 3)
}

/// Linux `mlock_future_ok`: may a mapping of `len` more bytes be made locked in `aspace`
/// (after `mlockall(MCL_FUTURE)`, or growing a locked mapping: `locked`)? `EAGAIN` when the
/// locked pages would pass `RLIMIT_MEMLOCK` (as mmap and mremap answer; brk keeps its break).
pub fn mlock_future_ok(aspace: &SharedAddressSpace, locked: bool, len: u64) -> Result<(), Errno> {
    if !locked {
        return Ok(());
    }
    let limit = rlimit(RLIMIT_MEMLOCK) / 4096;
    let pages = len.div_ceil(4096);
    match aspace.lock().locked_vm().checked_add(pages) {
        Some(after) if after <= limit => Ok(()),
        _ => Err(Errno::EAGAIN),
    }
}

/// Pages charged to uid 0's `locked_vm` (Linux `user_struct::locked_vm`): io_uring buffer
/// registrations. One user, so one system-wide count (see the module comment).
static USER_LOCKED_VM: AtomicU64 = AtomicU64::new(0);

/// Linux `__io_account_mem`: charges `pages` to the user's locked memory, `ENOMEM` if that
/// would pass the caller's `RLIMIT_MEMLOCK` (nothing is charged then).
pub fn account_locked_vm(pages: u64) -> Result<(), Errno> {
    let limit = rlimit(RLIMIT_MEMLOCK) / 4096;
    let mut cur = USER_LOCKED_VM.load(Ordering::Relaxed);
    loop {
        let new = cur
            .checked_add(pages)
            .filter(|&n| n <= limit)
            .ok_or(Errno::ENOMEM)?;
        match USER_LOCKED_VM.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

/// Linux `__io_unaccount_mem`: gives back what [`account_locked_vm`] charged.
pub fn unaccount_locked_vm(pages: u64) {
    USER_LOCKED_VM.fetch_sub(pages, Ordering::Relaxed);
}
