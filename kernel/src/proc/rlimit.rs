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
//! Privilege (`cred::capable`): `CAP_SYS_RESOURCE` (effective uid 0) raises hard limits and
//! forks past `RLIMIT_NPROC`, as does a real uid of 0 (Linux's `INIT_USER`); `CAP_IPC_LOCK`
//! locks memory past `RLIMIT_MEMLOCK` (and io_uring registrations of such a caller are not
//! charged, as Linux's `ctx->user` accounting is skipped); `prlimit64` on another process needs
//! the same real, effective and saved ids or `CAP_SYS_RESOURCE`
//! ([`check_prlimit_permission`]). The per-user counters are per real uid: the tasks of
//! `RLIMIT_NPROC` ([`nproc_count`]) and the locked pages of io_uring registrations
//! ([`account_locked_vm`], Linux `user_struct::locked_vm`).

use alloc::collections::BTreeMap;

use spin::Mutex;

use super::cred::{capable, has_cap, Cap, Cred};
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
/// `RLIMIT_NOFILE` above [`NR_OPEN`] (even for root) or for raising the hard limit without
/// `CAP_SYS_RESOURCE` (`may_raise`, the caller's [`capable`], asked before the group lock is
/// taken).
pub fn do_prlimit(
    limits: &mut Rlimits,
    resource: u64,
    new: Option<Rlimit>,
    may_raise: bool,
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
        if new.max > old.max && !may_raise {
            return Err(Errno::EPERM);
        }
        limits.0[resource] = new;
    }
    Ok(old)
}

/// Whether the caller may raise hard limits (`CAP_SYS_RESOURCE`), for [`do_prlimit`].
pub fn may_raise_hard_limit() -> bool {
    capable(Cap::SysResource)
}

/// Linux `check_prlimit_permission`: another process's limits may be read or changed when its
/// real, effective and saved uids all equal the caller's real uid and its gids the caller's
/// real gid, or with `CAP_SYS_RESOURCE`; `EPERM` otherwise. (The caller's own process is the
/// caller's business: not asked.)
pub fn check_prlimit_permission(caller: &Cred, target: &Cred) -> Result<(), Errno> {
    let same = [target.uid, target.euid, target.suid] == [caller.uid; 3]
        && [target.gid, target.egid, target.sgid] == [caller.gid; 3];
    if same || has_cap(caller, Cap::SysResource) {
        return Ok(());
    }
    Err(Errno::EPERM)
}

/// The caller's soft limit of `resource` (Linux `rlimit()`); Linux's default outside a task
/// (kernel tests, the first exec). Takes the caller's group lock: callers must not hold it.
pub fn rlimit(resource: usize) -> u64 {
    let group = super::current_group();
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
pub fn with_task_rlimits<R>(
    tid: u32,
    f: impl FnOnce(&Cred, &mut Rlimits) -> R,
) -> Result<R, Errno> {
    let group = {
        let table = TABLE.lock();
        let task = table
            .get(&tid)
            .filter(|t| t.user_visible())
            .ok_or(Errno::ESRCH)?;
        task.group.clone()
    };
    let mut group = group.lock();
    let group = &mut *group;
    Ok(f(&group.cred, &mut group.rlimits))
}

/// `RLIMIT_NOFILE` of the caller as a descriptor count: descriptors `0..nofile()` may be used.
pub fn nofile() -> usize {
    rlimit(RLIMIT_NOFILE).min(NR_OPEN) as usize
}

/// Whether the caller may fork one more task (Linux `copy_process`): the tasks of its real
/// uid, this one included, may not exceed its `RLIMIT_NPROC`, unless the real uid is 0
/// (`INIT_USER`) or it has `CAP_SYS_RESOURCE`. Counts (locking each process's group) only
/// when the limit could refuse. Call with the table locked and the caller's group not.
pub fn nproc_allows(
    table: &alloc::collections::BTreeMap<super::Pid, alloc::boxed::Box<super::Task>>,
) -> bool {
    let limit = rlimit(RLIMIT_NPROC);
    if limit == RLIM_INFINITY {
        return true;
    }
    let cred = super::cred::current();
    if cred.uid == 0 || has_cap(&cred, Cap::SysResource) {
        return true;
    }
    (nproc_count(table, cred.uid) as u64) < limit
}

/// Tasks of real uid `uid` counted against `RLIMIT_NPROC` (Linux's per-user `ucounts`): all
/// but exited non-leader threads waiting for the idle loop to free their stacks (Linux
/// releases those at exit); zombies count until reaped. Call with the table locked.
pub fn nproc_count(
    table: &alloc::collections::BTreeMap<super::Pid, alloc::boxed::Box<super::Task>>,
    uid: u32,
) -> usize {
    table
        .values()
        .filter(|t| t.state != State::Dead && t.group.lock().cred.uid == uid)
        .count()
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
    for vma in aspace.read_ptl().vmas() {
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
    for vma in aspace.read_ptl().vmas() {
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
    let data = aspace.read_ptl().vmas().any(|v| {
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
    let cur = aspace
        .read_ptl()
        .current_brk()
        .as_u64()
        .saturating_add(0xfff)
        & !0xfff;
    let new = new.saturating_add(0xfff) & !0xfff;
    if new <= cur {
        return Ok(());
    }
    may_expand_data(aspace, Some(cur), new - cur)
}

/// `brk` growth as `may_expand_vm` sees it: the pages between the current break and `new`.
pub fn may_expand_brk(aspace: &SharedAddressSpace, new: u64) -> Result<(), Errno> {
    let cur = aspace
        .read_ptl()
        .current_brk()
        .as_u64()
        .saturating_add(0xfff)
        & !0xfff;
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
    let limit = lock_limit_pages();
    let pages = len.div_ceil(4096);
    match aspace.read_ptl().locked_vm().checked_add(pages) {
        Some(after) if after <= limit => Ok(()),
        _ => Err(Errno::EAGAIN),
    }
}

/// Pages charged to each real uid's locked memory (Linux `user_struct::locked_vm`): io_uring
/// buffer registrations. Entries at zero are removed.
static USER_LOCKED_VM: Mutex<BTreeMap<u32, u64>> = Mutex::new(BTreeMap::new());

/// What [`account_locked_vm`] charged for one owner (an io_uring registration): given back by
/// [`unaccount_locked_vm`].
#[derive(Debug, Default)]
pub struct LockedCharge {
    uid: u32,
    pages: u64,
}

/// The most pages the caller may lock (`RLIMIT_MEMLOCK` in pages; no limit with
/// `CAP_IPC_LOCK`, as Linux's `do_mlock`, `mlock_future_ok` and io_uring ask `capable`).
pub fn lock_limit_pages() -> u64 {
    if capable(Cap::IpcLock) {
        return u64::MAX;
    }
    rlimit(RLIMIT_MEMLOCK) / 4096
}

/// Linux `__io_account_mem`: charges `pages` to the caller's real uid's locked memory,
/// recorded in `charge`; `ENOMEM` if that would pass the caller's `RLIMIT_MEMLOCK` (nothing is
/// charged then). A caller with `CAP_IPC_LOCK` is not charged (Linux leaves `ctx->user`
/// unaccounted).
pub fn account_locked_vm(charge: &mut LockedCharge, pages: u64) -> Result<(), Errno> {
    if capable(Cap::IpcLock) {
        return Ok(());
    }
    let uid = super::cred::current().uid;
    let limit = rlimit(RLIMIT_MEMLOCK) / 4096;
    if charge.pages != 0 && charge.uid != uid {
        // One owner charges one user (a registration is made by one caller).
        return Err(Errno::EINVAL);
    }
    let mut users = USER_LOCKED_VM.lock();
    let cur = users.entry(uid).or_insert(0);
    let new = cur
        .checked_add(pages)
        .filter(|&n| n <= limit)
        .ok_or(Errno::ENOMEM)?;
    *cur = new;
    charge.uid = uid;
    charge.pages += pages;
    Ok(())
}

/// Linux `__io_unaccount_mem`: gives back what [`account_locked_vm`] charged.
pub fn unaccount_locked_vm(charge: &LockedCharge) {
    if charge.pages == 0 {
        return;
    }
    let mut users = USER_LOCKED_VM.lock();
    if let Some(cur) = users.get_mut(&charge.uid) {
        *cur = cur.saturating_sub(charge.pages);
        if *cur == 0 {
            users.remove(&charge.uid);
        }
    }
}
