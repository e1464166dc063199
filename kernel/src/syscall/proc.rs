//! Process and thread system calls: identity, clone/fork/exec/exit/wait, futexes, signals
//! (in `signal`), FS base, resource usage, reboot.
#![deny(unsafe_code)]

use super::{Args, Errno, SysResult};
use crate::idt::TrapFrame;
use crate::proc::args::copy_strings;
use crate::proc::{self, fork, futex, sched, wait, with_current};
use crate::uaccess::{read_cstr, UserPtr, UserSlice};

pub fn getpid() -> SysResult {
    Ok(u64::from(proc::current_pid()))
}

pub fn gettid() -> SysResult {
    Ok(u64::from(proc::current_tid()))
}

/// Inlined into the dispatch: out of line its `SysResult` went through memory, with a call,
/// a frame and a return around 8 instructions of work (the benchmark's null system call).
#[inline(always)]
pub fn getppid() -> SysResult {
    Ok(u64::from(proc::current_parent()))
}

pub fn sched_yield() -> SysResult {
    sched::yield_now();
    Ok(0)
}

pub fn fork(frame: &TrapFrame) -> SysResult {
    Ok(u64::from(proc::fork::fork(frame)?))
}

/// vfork: a new process sharing the caller's memory, the caller blocked until the child execs
/// or exits (Linux `CLONE_VM | CLONE_VFORK | SIGCHLD`).
pub fn vfork(frame: &TrapFrame) -> SysResult {
    let args = fork::CloneArgs {
        flags: fork::CLONE_VM | fork::CLONE_VFORK | u64::from(proc::signal::SIGCHLD),
        ..fork::CloneArgs::default()
    };
    Ok(u64::from(fork::clone(frame, &args)?))
}

/// clone(flags, stack, parent_tid, child_tid, tls): a new process or thread (see
/// `proc::fork`).
pub fn clone(a: Args, frame: &TrapFrame) -> SysResult {
    let args = fork::CloneArgs {
        flags: a.get(0),
        stack: a.get(1),
        parent_tid: a.get(2),
        child_tid: a.get(3),
        tls: a.get(4),
    };
    Ok(u64::from(fork::clone(frame, &args)?))
}

/// clone3(args, size): `struct clone_args` (flags, pidfd, child_tid, parent_tid, exit_signal,
/// stack, stack_size, tls, set_tid, set_tid_size, cgroup), checked as Linux
/// `copy_clone_args_from_user` and `clone3_args_valid`: a size below the first version (64) is
/// `EINVAL`, one above a page `E2BIG`, as are non-zero bytes past the fields known here; the
/// exit signal has its own field (`CSIGNAL` bits in `flags` are `EINVAL`); the stack is its
/// lowest address plus its size. `set_tid` (checkpoint/restore) and the flags without a
/// `clone` equivalent here (`CLONE_PIDFD`, `CLONE_INTO_CGROUP`, `CLONE_CLEAR_SIGHAND`) are
/// refused by `fork::clone` like any unsupported flag.
pub fn clone3(a: Args, frame: &TrapFrame) -> SysResult {
    const VER0: usize = 64;
    const KNOWN: usize = 88;
    let size = a.get(1) as usize;
    if size < VER0 {
        return Err(Errno::EINVAL);
    }
    if size > 4096 {
        return Err(Errno::E2BIG);
    }
    // On the heap: a page on the kernel stack of a call that goes on to fork is too much.
    let mut raw = alloc::vec![0u8; size.max(KNOWN)];
    crate::uaccess::UserSlice::new(a.get(0), size)?.read(&mut raw[..size])?;
    if raw[KNOWN.min(size)..size].iter().any(|&b| b != 0) {
        return Err(Errno::E2BIG);
    }
    let field = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    let (flags, pidfd, child_tid, parent_tid, exit_signal) =
        (field(0), field(1), field(2), field(3), field(4));
    let (stack, stack_size, tls, set_tid, set_tid_size) =
        (field(5), field(6), field(7), field(8), field(9));
    let _ = pidfd;
    if flags & fork::CSIGNAL != 0 || exit_signal > 64 {
        return Err(Errno::EINVAL);
    }
    // A thread (or CLONE_PARENT sibling) signals nobody at exit.
    if flags & (fork::CLONE_THREAD | 0x8000) != 0 && exit_signal != 0 {
        return Err(Errno::EINVAL);
    }
    if (stack == 0) != (stack_size == 0) || set_tid != 0 || set_tid_size != 0 {
        return Err(Errno::EINVAL);
    }
    let args = fork::CloneArgs {
        flags: flags | exit_signal,
        stack: stack.checked_add(stack_size).ok_or(Errno::EINVAL)?,
        parent_tid,
        child_tid,
        tls,
    };
    Ok(u64::from(fork::clone(frame, &args)?))
}

pub fn execve(a: Args, frame: &mut TrapFrame) -> SysResult {
    let path = read_cstr(a.get(0), 4096)?;
    let mut room = usize::try_from(proc::rlimit::arg_space_limit()).unwrap_or(usize::MAX);
    let argv = copy_strings(a.get(1), &mut room)?;
    let envp = copy_strings(a.get(2), &mut room)?;
    proc::exec::execve(frame, &path, &argv, &envp)?;
    // The frame now enters the new program; RAX is 0 there.
    Ok(0)
}

/// exit: ends the calling thread only (the process ends with its last thread).
pub fn exit(a: Args) -> SysResult {
    proc::exit_thread(proc::exit_status(a.i32(0)))
}

/// exit_group: ends every thread of the process.
pub fn exit_group(a: Args) -> SysResult {
    proc::exit_current(proc::exit_status(a.i32(0)))
}

pub fn wait4(a: Args) -> SysResult {
    let status_ptr = a.get(1);
    let options = a.get(2) as u32;
    if options & !(1 | 2 | 8 | 0x4000_0000 | 0x8000_0000) != 0 {
        return Err(Errno::EINVAL);
    }
    let status_out = if status_ptr != 0 {
        Some(UserPtr::<i32>::new(status_ptr)?)
    } else {
        None
    };
    // pid_t is an int: the upper half of the register is ignored, and -INT_MIN does not exist
    // (Linux `kernel_wait4`: ESRCH).
    let which = a.i32(0);
    if which == i32::MIN {
        return Err(Errno::ESRCH);
    }
    let found = wait::wait(
        wait::Which::from_wait4(i64::from(which)),
        options | wait::WEXITED,
    )?;
    if found.pid != 0 {
        if let Some(out) = status_out {
            out.write(&found.status)?;
        }
        if a.get(3) != 0 {
            let u = found.usage;
            UserPtr::<Rusage>::new(a.get(3))?.write(&Rusage::new(u.cpu, u.minflt, u.maxrss))?;
        }
    }
    Ok(u64::from(found.pid))
}

const P_ALL: i32 = 0;
const P_PID: i32 = 1;
const P_PGID: i32 = 2;
const P_PIDFD: i32 = 3;
const SIGCHLD: i32 = 17;
const SIGCONT: i32 = 18;
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;
const CLD_STOPPED: i32 = 5;
const CLD_CONTINUED: i32 = 6;
/// `__WNOTHREAD`, `__WCLONE`, `__WALL`: accepted; every child is a process here.
const WAIT_THREAD_FLAGS: u32 = 0x2000_0000 | 0x4000_0000 | 0x8000_0000;

/// A wait4 status word as waitid's `si_code` and `si_status`.
fn child_code(status: i32) -> (i32, i32) {
    match status {
        0xffff => (CLD_CONTINUED, SIGCONT),
        s if s & 0xff == 0x7f => (CLD_STOPPED, (s >> 8) & 0xff),
        s if s & 0x7f == 0 => (CLD_EXITED, (s >> 8) & 0xff),
        s if s & 0x80 != 0 => (CLD_DUMPED, s & 0x7f),
        s => (CLD_KILLED, s & 0x7f),
    }
}

/// waitid(idtype, id, siginfo_t *infop, int options, struct rusage *ru) (Linux's
/// `kernel_waitid` and the system call's copy-out): `P_ALL`, `P_PID` (id > 0), `P_PGID` (0:
/// the caller's group); `P_PIDFD` is `EBADF` (cowlab has no pidfds, so no descriptor is one;
/// a negative one `EINVAL`). At least one of `WEXITED`, `WSTOPPED`, `WCONTINUED`; `WNOWAIT`
/// leaves the child waitable. `infop` gets `si_signo`, `si_errno`, `si_code`, `si_pid`,
/// `si_uid`, `si_status` and nothing else, whatever the outcome: zeros when no child was
/// found (`WNOHANG`) and when the call fails, so a bad `infop` makes any answer `EFAULT`, even
/// after a child was reaped, as on Linux. `ru` gets the found child's usage.
pub fn waitid(a: Args) -> SysResult {
    let found = waitid_find(&a);
    let child = found.as_ref().ok().filter(|f| f.pid != 0);
    if let (Some(f), true) = (child, a.get(4) != 0) {
        let u = f.usage;
        UserPtr::<Rusage>::new(a.get(4))?.write(&Rusage::new(u.cpu, u.minflt, u.maxrss))?;
    }
    if a.get(2) != 0 {
        let (signo, code, status) = match child {
            Some(f) => {
                let (code, status) = child_code(f.status);
                (SIGCHLD, code, status)
            }
            None => (0, 0, 0),
        };
        // siginfo_t: si_signo, si_errno, si_code at 0; for SIGCHLD si_pid, si_uid, si_status
        // at 16.
        let head = [signo, 0, code];
        let ids = child.map_or([0, 0, status], |f| [f.pid as i32, f.uid as i32, status]);
        UserPtr::<[i32; 3]>::new(a.get(2))?.write(&head)?;
        UserPtr::<[i32; 3]>::new(a.get(2).wrapping_add(16))?.write(&ids)?;
    }
    found.map(|_| 0)
}

/// waitid's checks and wait.
fn waitid_find(a: &Args) -> Result<wait::Found, Errno> {
    let options = a.get(3) as u32;
    let valid = wait::WNOHANG
        | wait::WUNTRACED
        | wait::WEXITED
        | wait::WCONTINUED
        | wait::WNOWAIT
        | WAIT_THREAD_FLAGS;
    if options & !valid != 0 || options & (wait::WEXITED | wait::WUNTRACED | wait::WCONTINUED) == 0
    {
        return Err(Errno::EINVAL);
    }
    let id = a.i32(1);
    let which = match a.i32(0) {
        P_ALL => wait::Which::Any,
        P_PID if id > 0 => wait::Which::Pid(id as proc::Pid),
        P_PGID if id == 0 => wait::Which::Pgid(proc::pgrp::current_job().pgid),
        P_PGID if id > 0 => wait::Which::Pgid(id as proc::Pid),
        P_PIDFD if id >= 0 => return Err(Errno::EBADF),
        _ => return Err(Errno::EINVAL),
    };
    wait::wait(which, options)
}

const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;

pub fn arch_prctl(a: Args) -> SysResult {
    match a.get(0) {
        ARCH_SET_FS => {
            let base = a.get(1);
            if base >= cowlab_mm::aspace::USER_END {
                return Err(Errno::EPERM);
            }
            with_current(|p| p.fs_base = base);
            x86_64::registers::model_specific::FsBase::write(x86_64::VirtAddr::new(base));
            Ok(0)
        }
        ARCH_GET_FS => {
            let base = with_current(|p| p.fs_base);
            UserPtr::<u64>::new(a.get(1))?.write(&base)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
const PR_SET_CHILD_SUBREAPER: u64 = 36;
const PR_GET_CHILD_SUBREAPER: u64 = 37;

/// prctl: the thread's name (`comm`, 15 bytes and a NUL, as Linux `TASK_COMM_LEN`) and the
/// child-subreaper options (see `proc::find_new_reaper`); every other option is `EINVAL`,
/// Linux's answer to an option it does not know. The option is an `int`.
pub fn prctl(a: Args) -> SysResult {
    match a.get(0) as u32 as u64 {
        PR_SET_NAME => {
            // Linux `strncpy_from_user(comm, arg2, 15)`: longer names are cut, not refused.
            let mut name = alloc::vec::Vec::new();
            for i in 0..15 {
                let mut byte = [0u8];
                crate::uaccess::UserSlice::new(a.get(1).wrapping_add(i), 1)?.read(&mut byte)?;
                if byte[0] == 0 {
                    break;
                }
                name.push(byte[0]);
            }
            let name = alloc::string::String::from_utf8_lossy(&name).into_owned();
            with_current(|t| t.name = name);
            Ok(0)
        }
        PR_GET_NAME => {
            let mut comm = [0u8; 16];
            with_current(|t| {
                let n = t.name.len().min(15);
                comm[..n].copy_from_slice(&t.name.as_bytes()[..n]);
            });
            crate::uaccess::UserSlice::new(a.get(1), 16)?.write(&comm)?;
            Ok(0)
        }
        PR_SET_CHILD_SUBREAPER => {
            proc::with_group(|g| g.child_subreaper = a.get(1) != 0);
            Ok(0)
        }
        PR_GET_CHILD_SUBREAPER => {
            let value = i32::from(proc::with_group(|g| g.child_subreaper));
            UserPtr::<i32>::new(a.get(1))?.write(&value)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// set_tid_address: the word to clear and futex-wake when this thread exits; returns the tid.
pub fn set_tid_address(a: Args) -> SysResult {
    with_current(|t| t.clear_child_tid = a.get(0));
    Ok(u64::from(proc::current_tid()))
}

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// A user timespec as microseconds (rounded up: a wait never ends early); `EINVAL` if it is not
/// normalised.
fn timespec_micros(addr: u64) -> Result<u64, Errno> {
    let t = UserPtr::<Timespec>::new(addr)?.read()?;
    if t.sec < 0 || !(0..1_000_000_000).contains(&t.nsec) {
        return Err(Errno::EINVAL);
    }
    Ok((t.sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add((t.nsec as u64).div_ceil(1000)))
}

/// futex(uaddr, op, val, timeout or val2, uaddr2, val3). Keys: see `proc::futex`. Operations
/// other than WAIT, WAKE,
/// REQUEUE, CMP_REQUEUE, WAIT_BITSET and WAKE_BITSET answer ENOSYS (Linux's answer for an
/// unknown one).
pub fn futex(a: Args) -> SysResult {
    let addr = a.get(0);
    let op = a.get(1) & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = a.get(1) & FUTEX_CLOCK_REALTIME != 0;
    let scope = if a.get(1) & FUTEX_PRIVATE_FLAG != 0 {
        futex::Scope::Private
    } else {
        futex::Scope::Shared
    };
    let val = a.get(2) as u32;
    // Linux accepts FUTEX_CLOCK_REALTIME only with the waits that take a clock.
    if realtime && !matches!(op, FUTEX_WAIT | FUTEX_WAIT_BITSET) {
        return Err(Errno::ENOSYS);
    }
    let count = |v: u64| (v as i32).max(0) as u32;
    match op {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if op == FUTEX_WAIT {
                futex::BITSET_MATCH_ANY
            } else {
                a.get(5) as u32
            };
            let deadline = match a.get(3) {
                0 => None,
                ts => {
                    let t = timespec_micros(ts)?;
                    let now = crate::time::micros_since_boot();
                    Some(if op == FUTEX_WAIT {
                        // Relative, on the monotonic clock.
                        now.saturating_add(t)
                    } else if realtime {
                        // Absolute on CLOCK_REALTIME: the same distance from now.
                        let wall = crate::rtc::realtime_micros();
                        now.saturating_add(t.saturating_sub(wall))
                    } else {
                        // Absolute on CLOCK_MONOTONIC, which counts from boot here.
                        t
                    })
                }
            };
            futex::wait(addr, scope, val, bitset, deadline)
        }
        FUTEX_WAKE => futex::wake(addr, scope, count(a.get(2)), futex::BITSET_MATCH_ANY),
        FUTEX_WAKE_BITSET => futex::wake(addr, scope, count(a.get(2)), a.get(5) as u32),
        FUTEX_REQUEUE => futex::requeue(
            addr,
            scope,
            count(a.get(2)),
            count(a.get(3)),
            a.get(4),
            None,
        ),
        FUTEX_CMP_REQUEUE => futex::requeue(
            addr,
            scope,
            count(a.get(2)),
            count(a.get(3)),
            a.get(4),
            Some(a.get(5) as u32),
        ),
        _ => Err(Errno::ENOSYS),
    }
}

/// `struct rusage`: two timevals and fourteen longs.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Rusage {
    utime: [i64; 2],
    stime: [i64; 2],
    maxrss: i64,
    ixrss: i64,
    idrss: i64,
    isrss: i64,
    minflt: i64,
    majflt: i64,
    rest: [i64; 8],
}

impl Rusage {
    /// `ru_utime`, `ru_stime` from ticks, `ru_minflt`, and `ru_maxrss` in KiB.
    fn new(cpu: proc::cputime::CpuTime, minflt: u64, maxrss: u64) -> Rusage {
        let tv = |ticks: u64| {
            let us = proc::cputime::CpuTime::micros(ticks);
            [(us / 1_000_000) as i64, (us % 1_000_000) as i64]
        };
        Rusage {
            utime: tv(cpu.user),
            stime: tv(cpu.system),
            minflt: minflt as i64,
            maxrss: maxrss as i64,
            ..Rusage::default()
        }
    }
}

/// getrusage(who): `RUSAGE_SELF` (0), `RUSAGE_CHILDREN` (-1) and `RUSAGE_THREAD` (1).
pub fn getrusage(a: Args) -> SysResult {
    // Linux `getrusage`: the self and thread views fold the live space's high-water mark into
    // the group's (`setmax_mm_hiwater_rss`); the children's is the largest reaped one.
    let own_peak = || {
        let live = with_current(|p| p.aspace.clone()).map_or(0, |aspace| {
            aspace.read_ptl().hiwater_rss(crate::memory::mm()) * 4
        });
        proc::with_group(|g| g.maxrss).max(live)
    };
    let (cpu, minflt, maxrss) = match a.int(0) {
        0 => (
            proc::cputime::group_self(proc::current_pid()),
            with_current(|p| p.aspace.clone()).map_or(0, |aspace| aspace.read_ptl().minor_faults()),
            own_peak(),
        ),
        -1 => proc::with_group(|g| (g.child_cpu, g.child_minflt, g.child_maxrss)),
        // The faults are counted per address space, not per thread: the thread's share is
        // not known, so RUSAGE_THREAD reports its CPU time and the space's peak only.
        1 => (proc::cputime::thread_self(), 0, own_peak()),
        _ => return Err(Errno::EINVAL),
    };
    UserPtr::<Rusage>::new(a.get(1))?.write(&Rusage::new(cpu, minflt, maxrss))?;
    Ok(0)
}

/// times(buf): the process's and its reaped children's user and system ticks (`struct tms`,
/// four `clock_t`), and the ticks since boot (Linux: since an arbitrary point); a null `buf`
/// is allowed.
pub fn times(a: Args) -> SysResult {
    if a.get(0) != 0 {
        let own = proc::cputime::group_self(proc::current_pid());
        let children = proc::with_group(|g| g.child_cpu);
        let tms = [own.user, own.system, children.user, children.system];
        UserPtr::<[u64; 4]>::new(a.get(0))?.write(&tms)?;
    }
    Ok(crate::time::ticks())
}

const REBOOT_MAGIC1: u64 = 0xfee1_dead;
const REBOOT_CMD_POWER_OFF: u64 = 0x4321_fedc;
const REBOOT_CMD_RESTART: u64 = 0x0123_4567;
const REBOOT_CMD_HALT: u64 = 0xcdef_0123;

/// reboot: power-off, halt and restart all end QEMU. cowlab extension: with POWER_OFF the
/// fourth argument (unused by Linux for that command) is the status QEMU exits with; `init`
/// passes the status of the program it ran.
pub fn reboot(a: Args) -> SysResult {
    if a.get(0) as u32 as u64 != REBOOT_MAGIC1 {
        return Err(Errno::EINVAL);
    }
    let status = match a.get(2) as u32 as u64 {
        REBOOT_CMD_POWER_OFF => a.get(3) as i32,
        REBOOT_CMD_HALT | REBOOT_CMD_RESTART => 0,
        _ => return Err(Errno::EINVAL),
    };
    if proc::current_pid() != 1 {
        return Err(Errno::EPERM);
    }
    sched::request_shutdown(status);
    proc::exit_current(proc::exit_status(status))
}

/// The thread a `pid_t` argument names for the affinity calls: 0 is the caller, a negative one
/// is no thread (`ESRCH`, as Linux's `find_process_by_pid`).
fn affinity_target(a: &Args) -> Result<proc::Pid, Errno> {
    u32::try_from(a.i32(0)).map_err(|_| Errno::ESRCH)
}

/// sched_setaffinity(pid, len, mask): Linux `get_user_cpu_mask` reads at most the kernel's
/// mask size and zero-fills a shorter one, before the thread is looked up.
pub fn sched_setaffinity(a: Args) -> SysResult {
    let len = (a.get(1) as usize).min(proc::affinity::CPUMASK_BYTES);
    let mut bytes = [0u8; proc::affinity::CPUMASK_BYTES];
    UserSlice::new(a.get(2), len)?.read(&mut bytes[..len])?;
    proc::affinity::set(affinity_target(&a)?, u64::from_le_bytes(bytes))?;
    Ok(0)
}

/// sched_getaffinity(pid, len, mask): `EINVAL` for a buffer too short for every possible CPU or
/// not a whole number of longs; returns the bytes written (Linux: `min(len, cpumask_size())`).
pub fn sched_getaffinity(a: Args) -> SysResult {
    let len = a.get(1) as usize;
    if len.saturating_mul(8) < proc::affinity::nr_cpu_ids() || !len.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let mask = proc::affinity::get(affinity_target(&a)?)?;
    let n = len.min(proc::affinity::CPUMASK_BYTES);
    UserSlice::new(a.get(2), n)?.write(&mask.to_le_bytes()[..n])?;
    Ok(n as u64)
}

/// getcpu(cpu, node, tcache): the CPU the caller runs on and its NUMA node (always 0); either
/// pointer may be NULL.
pub fn getcpu(a: Args) -> SysResult {
    let cpu = crate::percpu::cpu_id() as u32;
    if a.get(0) != 0 {
        UserPtr::<u32>::new(a.get(0))?.write(&cpu)?;
    }
    if a.get(1) != 0 {
        UserPtr::<u32>::new(a.get(1))?.write(&0)?;
    }
    Ok(0)
}

/// setpgid/getpgid/getpgrp/setsid/getsid (`proc::pgrp`); pids are C `int`s.
pub fn setpgid(a: Args) -> SysResult {
    proc::pgrp::setpgid(a.i32(0), a.i32(1)).map(|()| 0)
}

pub fn getpgid(a: Args) -> SysResult {
    proc::pgrp::getpgid(a.i32(0)).map(u64::from)
}

pub fn getpgrp() -> SysResult {
    Ok(u64::from(proc::pgrp::current_job().pgid))
}

pub fn setsid() -> SysResult {
    proc::pgrp::setsid().map(u64::from)
}

pub fn getsid(a: Args) -> SysResult {
    proc::pgrp::getsid(a.i32(0)).map(u64::from)
}
