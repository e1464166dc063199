//! fork and clone: new tasks.
//!
//! Two shapes of `clone`, as Linux `copy_process` builds them from the flags:
//!
//! - a new process (fork, vfork, clone without `CLONE_VM`): a copy of the calling *thread* only,
//!   with a copy-on-write copy of the address space (`AddressSpace::fork`), a copy of the
//!   descriptor table (the same open-file descriptions), a copy of the signal actions, in a new
//!   thread group whose parent is the caller's process;
//! - a new thread (`CLONE_VM|CLONE_SIGHAND|CLONE_THREAD`, what `pthread_create` passes in glibc
//!   and musl): the same address space, the same group record (signal actions, parent, exit
//!   status), the same descriptor table under `CLONE_FILES` (a copy otherwise), its own kernel
//!   stack, user stack (`stack`), FS base (`CLONE_SETTLS`) and tid.
//!
//! Either way the child's kernel stack is prepared so that its first switch-in returns to ring 3
//! from the same system call with 0 in RAX and every other register as the caller had it (glibc
//! and musl's clone trampolines find the start function in registers or on the new stack).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_mm::opstat;

use super::switch::{FpuState, KernelStack};
use super::{alloc_pid, rlimit, with_current, Group, Pid, State, Task, TABLE};
use crate::errno::Errno;
use crate::idt::TrapFrame;
use crate::uaccess::UserPtr;
use crate::{memory, vm};

/// The most tasks (threads, and zombies) that may exist at once, sized from memory as Linux's
/// `set_max_threads` (kernel stacks may take an eighth of RAM), and bounded by the kernel heap
/// the stacks live on: at most a quarter of it (16 MiB of 64: 512 tasks of 32 KiB).
pub fn max_tasks() -> usize {
    match MAX_TASKS.load(Ordering::Relaxed) {
        0 => {
            let per_task = super::switch::KERNEL_STACK_SIZE;
            let by_ram = memory::frames().usable_frames() * cowlab_mm::PAGE_SIZE / per_task / 8;
            let by_heap = memory::HEAP_SIZE / 4 / per_task;
            let max = by_ram.min(by_heap).max(16);
            MAX_TASKS.store(max, Ordering::Relaxed);
            max
        }
        max => max,
    }
}

/// [`max_tasks`], computed on first use (memory does not change after boot).
static MAX_TASKS: AtomicUsize = AtomicUsize::new(0);

/// The signal sent to the parent at exit (ignored: SIGCHLD's default is to ignore it).
pub const CSIGNAL: u64 = 0xff;
pub const CLONE_VM: u64 = 0x100;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_THREAD: u64 = 0x1_0000;
pub const CLONE_SYSVSEM: u64 = 0x4_0000;
pub const CLONE_SETTLS: u64 = 0x8_0000;
pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
/// Ignored by Linux since 2.6.2; musl still passes it.
pub const CLONE_DETACHED: u64 = 0x40_0000;
pub const CLONE_CHILD_SETTID: u64 = 0x100_0000;

/// The flags cowlab implements. The working directory lives in the thread group (`Group::cwd`):
/// threads share it, a new process gets a copy, whether or not `CLONE_FS` asks to share it
/// (a process sharing its parent's directory without sharing its memory is not supported); `CLONE_SYSVSEM` shares nothing
/// because there are no System V semaphores.
const SUPPORTED: u64 = CSIGNAL
    | CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_VFORK
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_CHILD_SETTID;

/// `clone`'s arguments (x86_64 order: flags, stack, parent_tid, child_tid, tls).
#[derive(Clone, Copy, Default)]
pub struct CloneArgs {
    pub flags: u64,
    /// The child's user stack pointer; 0 keeps the caller's.
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
}

/// fork: a new process, copy of the calling thread.
pub fn fork(frame: &TrapFrame) -> Result<Pid, Errno> {
    clone(
        frame,
        &CloneArgs {
            flags: u64::from(super::signal::SIGCHLD),
            ..CloneArgs::default()
        },
    )
}

/// clone: a new process or a new thread of the caller's (see the module comment). `frame` is
/// the caller's system-call frame. Returns the child's tid (its pid for a new process).
pub fn clone(frame: &TrapFrame, args: &CloneArgs) -> Result<Pid, Errno> {
    opstat::begin(opstat::Op::Fork);
    let flags = args.flags;
    // Linux `copy_process`'s consistency rules.
    if flags & CLONE_THREAD != 0 && flags & CLONE_SIGHAND == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & CLONE_SIGHAND != 0 && flags & CLONE_VM == 0 {
        return Err(Errno::EINVAL);
    }
    let thread = flags & CLONE_THREAD != 0;
    // A new process may share the memory (`CLONE_VM`: vfork, posix_spawn); signal actions
    // shared without a shared group (`CLONE_SIGHAND` without `CLONE_THREAD`) are not
    // modelled (they live in the group).
    let share_vm = flags & CLONE_VM != 0;
    let sighand_without_thread = flags & CLONE_SIGHAND != 0 && !thread;
    if flags & !SUPPORTED != 0 || sighand_without_thread {
        return Err(Errno::EINVAL);
    }
    if flags & CLONE_SETTLS != 0 && args.tls >= cowlab_mm::aspace::USER_END {
        return Err(Errno::EPERM);
    }
    // Each task costs a kernel stack from the fixed-size kernel heap: bound their number
    // (`max_tasks`), and the caller's `RLIMIT_NPROC` (both EAGAIN, as Linux `copy_process`).
    {
        // Outside the table lock: its first call reads the frame allocator.
        let max = max_tasks();
        let table = TABLE.lock();
        if table.len() >= max || !rlimit::nproc_allows(&table) {
            return Err(Errno::EAGAIN);
        }
    }
    let parent_aspace = super::current_aspace();
    let child_aspace = if share_vm {
        parent_aspace.clone()
    } else {
        let child = vm::share(parent_aspace.write().fork(memory::mm())?);
        // The copies of the parent's file mappings: the files' reverse maps learn the child.
        crate::fs::ext2_cache::fork_mappers(&parent_aspace, &child);
        child
    };
    let tid = alloc_pid();
    let mut child_frame = *frame;
    child_frame.rax = 0;
    if args.stack != 0 {
        child_frame.rsp = args.stack;
    }
    let mut kstack = KernelStack::new();
    let ctx_rsp = kstack.prepare(&child_frame);
    // The caller's FPU registers are live in the CPU: the child starts with a copy.
    let mut fpu = FpuState::initial();
    fpu.save();
    let child = with_current(|parent| {
        let (tgid, group) = if thread {
            parent.group.lock().live += 1;
            (parent.tgid, parent.group.clone())
        } else {
            let (sigactions, rlimits, cwd, job, cred, umask) = {
                let g = parent.group.lock();
                (
                    g.sigactions.clone(),
                    g.rlimits,
                    g.cwd.clone(),
                    g.job,
                    g.cred.clone(),
                    g.umask,
                )
            };
            // Linux `copy_signal`: the child starts with the parent's limits.
            let group = Group::new(parent.tgid, sigactions, rlimits, cwd);
            // Linux `copy_creds` and `copy_fs`: the parent's ids and umask.
            {
                let mut g = group.lock();
                g.cred = cred;
                g.umask = umask;
            }
            group.lock().sig.exit_signal = (flags & CSIGNAL) as u8;
            group.lock().job = super::pgrp::Job::forked(&job);
            (tid, group)
        };
        Task {
            tid,
            tgid,
            name: parent.name.clone(),
            state: State::Runnable,
            aspace: Some(child_aspace.clone()),
            kstack,
            ctx_rsp,
            fpu,
            fds: if flags & CLONE_FILES != 0 {
                parent.fds.share()
            } else {
                parent.fds.duplicate()
            },
            fs_base: if flags & CLONE_SETTLS != 0 {
                args.tls
            } else {
                parent.fs_base
            },
            killed: false,
            sigmask: parent.sigmask,
            // Linux `copy_process`: a new thread (CLONE_VM) starts without the alternate stack.
            sig: super::signal::ThreadSignals {
                altstack: if flags & CLONE_VM != 0 {
                    Default::default()
                } else {
                    parent.sig.altstack
                },
                ..Default::default()
            },
            clear_child_tid: if flags & CLONE_CHILD_CLEARTID != 0 {
                args.child_tid
            } else {
                0
            },
            group,
            // Linux `dup_task_struct`: the child inherits the affinity.
            cpus_allowed: parent.cpus_allowed,
            cpu: Default::default(),
            // Placed first on the parent's CPU if it is idle, else on an idle one.
            sched: super::runqueue::TaskSched {
                on_rq: None,
                cpu: crate::percpu::cpu_id() as u8,
            },
        }
    });
    {
        let mut table = TABLE.lock();
        table.insert(tid, Box::new(child));
        if let Some(child) = table.get_mut(&tid) {
            super::sched::enqueue(child);
        }
    }
    super::kstat::fork();
    // Linux writes both before the child can run, and ignores a bad address.
    if flags & CLONE_PARENT_SETTID != 0 {
        if let Ok(ptr) = UserPtr::<u32>::new(args.parent_tid) {
            let _ = ptr.write(&tid);
        }
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        write_child_tid(&parent_aspace, &child_aspace, share_vm, args.child_tid, tid);
    }
    if flags & CLONE_VFORK != 0 {
        wait_for_vfork_done(tid, &child_aspace);
    }
    opstat::end(
        opstat::Op::Fork,
        opstat::Phase::ForkSetup,
        u64::from(!thread),
    );
    Ok(tid)
}

/// Linux `wait_for_vfork_done`: the vfork parent sleeps until the child stops using the memory
/// they share, by exec (a new address space) or exit. Killable only, as Linux. The wakeups are
/// the child's exit (`wait_channel` of the parent) and `execve`'s; the one-tick bound covers
/// a wakeup that lands between the check and the sleep.
fn wait_for_vfork_done(child: Pid, mm: &vm::SharedAddressSpace) {
    let me = super::current_pid();
    loop {
        let done = TABLE.lock().get(&child).is_none_or(|c| {
            matches!(c.state, State::Zombie(_) | State::Dead | State::Exited)
                || !c.aspace.as_ref().is_some_and(|a| Arc::ptr_eq(a, mm))
        });
        if done {
            return;
        }
        let until = crate::time::ticks() + 1;
        if super::sleep_killable_until(super::wait_channel(me), until).is_err() {
            return;
        }
    }
}

/// `CLONE_CHILD_SETTID`: `tid` written at `addr` in the child's memory. Linux does it in the
/// child's first moments (`schedule_tail`); here the caller does it before the child can run,
/// with the child's address space loaded for the write (a copy-on-write fault then resolves in
/// the child's address space, exactly as the child's own write would).
fn write_child_tid(
    parent: &vm::SharedAddressSpace,
    child: &vm::SharedAddressSpace,
    shared: bool,
    addr: u64,
    tid: Pid,
) {
    let Ok(ptr) = UserPtr::<u32>::new(addr) else {
        return;
    };
    if shared {
        let _ = ptr.write(&tid);
        return;
    }
    drop(vm::switch_to(Some(child.clone())));
    let _ = ptr.write(&tid);
    drop(vm::switch_to(Some(parent.clone())));
}
