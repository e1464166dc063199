//! Signals with Linux's semantics: actions per group (`rt_sigaction`), a mask and a pending set
//! per thread plus the group's shared pending set, delivery to handlers on the return to user
//! space with Linux's x86_64 `rt_sigframe` ([`frame`]), default actions (terminate, core, stop,
//! continue, ignore) and the interruption of blocking calls ([`deliver`]).
//!
//! Sending (Linux `send_signal`/`prepare_signal`/`complete_signal`) happens with the task table
//! locked: SIGCONT and the stop signals cancel each other first; a signal ignored by its target
//! is dropped; a standard signal already pending is not queued twice (real-time ones queue); a
//! signal whose default action is fatal and that nobody blocks or handles ends the group at once
//! (as today's `kill`); otherwise one thread that does not block it is woken from its sleep and
//! [`deliver::request_check`] tells the next return to ring 3 to look. CPU faults are "forced"
//! (Linux `force_sig_fault`): delivered to a handler if there is one and the signal is not
//! blocked, else the process dies with the one console line of [`kill_for_fault`].

pub mod deliver;
pub mod frame;
pub mod ops;
pub mod permission;
pub mod restart;
pub mod timer;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use cowlab_mm::VirtAddr;

use super::{exit_current, kill_group_locked, with_current, Pid, State, Task, TABLE};
use crate::errno::Errno;
use crate::idt::TrapFrame;

pub const SIGQUIT: u8 = 3;
pub const SIGILL: u8 = 4;
pub const SIGTRAP: u8 = 5;
pub const SIGABRT: u8 = 6;
pub const SIGBUS: u8 = 7;
pub const SIGFPE: u8 = 8;
pub const SIGKILL: u8 = 9;
pub const SIGSEGV: u8 = 11;
pub const SIGPIPE: u8 = 13;
pub const SIGALRM: u8 = 14;
pub const SIGCHLD: u8 = 17;
pub const SIGCONT: u8 = 18;
pub const SIGSTOP: u8 = 19;
pub const SIGTSTP: u8 = 20;
pub const SIGTTIN: u8 = 21;
pub const SIGTTOU: u8 = 22;
pub const SIGXCPU: u8 = 24;
pub const SIGXFSZ: u8 = 25;
pub const SIGVTALRM: u8 = 26;
pub const SIGPROF: u8 = 27;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

pub const SA_NOCLDSTOP: u64 = 1;
pub const SA_NOCLDWAIT: u64 = 2;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

/// `si_code` values (Linux `uapi/asm-generic/siginfo.h`).
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_TKILL: i32 = -6;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const CLD_DUMPED: i32 = 3;
pub const CLD_STOPPED: i32 = 5;
pub const CLD_CONTINUED: i32 = 6;

/// The bit of `signal` in a mask (signal n is bit n - 1).
pub const fn bit(signal: u8) -> u64 {
    1 << (signal - 1)
}

/// SIGKILL and SIGSTOP can be neither blocked nor caught.
pub const UNBLOCKABLE: u64 = bit(SIGKILL) | bit(SIGSTOP);
/// The signals a fault raises: dequeued before any other (Linux `SYNCHRONOUS_MASK`), so the
/// handler of a fault runs before an asynchronous signal's.
const SYNCHRONOUS: u64 = bit(SIGSEGV) | bit(SIGBUS) | bit(SIGILL) | bit(SIGTRAP) | bit(SIGFPE);
const STOP_SIGNALS: u64 = bit(SIGSTOP) | bit(SIGTSTP) | bit(SIGTTIN) | bit(SIGTTOU);

/// One `struct sigaction` as the kernel keeps it (the x86_64 `kernel_sigaction` layout).
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `siginfo_t`, 128 bytes: signo, errno, code, then the union (`data[0]` is `si_pid | si_uid << 32`
/// or `si_addr`; `data[1]` is `si_status` or `si_value`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigInfo {
    pub signo: i32,
    pub errno: i32,
    pub code: i32,
    pad: i32,
    pub data: [u64; 14],
}

const _: () = assert!(core::mem::size_of::<SigInfo>() == 128);

impl SigInfo {
    pub const fn new(signo: u8, code: i32) -> SigInfo {
        SigInfo {
            signo: signo as i32,
            errno: 0,
            code,
            pad: 0,
            data: [0; 14],
        }
    }

    /// From a process (kill, tgkill, sigqueue): `si_pid` and `si_uid` (everyone is root).
    pub fn from_process(signo: u8, code: i32, pid: Pid) -> SigInfo {
        let mut info = SigInfo::new(signo, code);
        info.data[0] = u64::from(pid);
        info
    }

    /// A fault at `addr` (`si_addr`).
    pub fn fault(signo: u8, code: i32, addr: u64) -> SigInfo {
        let mut info = SigInfo::new(signo, code);
        info.data[0] = addr;
        info
    }

    fn signal(&self) -> u8 {
        self.signo as u8
    }
}

/// Pending signals: the mask and the queued `siginfo`s (one per standard signal, any number of
/// real-time ones), Linux `struct sigpending`.
#[derive(Default)]
pub struct SigPending {
    pub mask: u64,
    queue: Vec<SigInfo>,
}

/// The most `siginfo`s one pending set holds (the kernel heap is fixed; Linux bounds them by
/// `RLIMIT_SIGPENDING`): a real-time signal past it is refused with `EAGAIN`, as Linux's
/// `sigqueue` answers; a standard one is pending at most once anyway.
const MAX_QUEUED: usize = 128;

impl SigPending {
    /// The queued `siginfo`s (`SigQ` of `/proc/<pid>/status`).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    fn queue(&mut self, info: SigInfo) -> Result<(), Errno> {
        let signal = info.signal();
        if signal < 32 && self.mask & bit(signal) != 0 {
            return Ok(());
        }
        if self.queue.len() >= MAX_QUEUED {
            if signal >= 32 {
                return Err(Errno::EAGAIN);
            }
            // A standard signal still gets its bit; its siginfo is the kernel's (`take`).
            self.mask |= bit(signal);
            return Ok(());
        }
        self.mask |= bit(signal);
        self.queue.push(info);
        Ok(())
    }

    /// Takes the first queued instance of `signal` (Linux `collect_signal`).
    fn take(&mut self, signal: u8) -> SigInfo {
        let info = match self.queue.iter().position(|i| i.signal() == signal) {
            Some(at) => self.queue.remove(at),
            None => SigInfo::new(signal, SI_KERNEL),
        };
        if !self.queue.iter().any(|i| i.signal() == signal) {
            self.mask &= !bit(signal);
        }
        info
    }

    /// Drops every instance of the signals in `mask`.
    fn discard(&mut self, mask: u64) {
        self.mask &= !mask;
        self.queue.retain(|i| bit(i.signal()) & mask == 0);
    }
}

/// `stack_t` of sigaltstack, kept per thread.
#[derive(Clone, Copy, Default)]
pub struct AltStack {
    pub sp: u64,
    pub size: u64,
    pub flags: i32,
}

pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
pub const SS_AUTODISARM: i32 = 1 << 31;

impl AltStack {
    /// Whether `sp` is on this alternate stack (Linux `on_sig_stack`).
    pub fn contains(&self, sp: u64) -> bool {
        self.size != 0 && sp > self.sp && sp - self.sp <= self.size
    }
}

/// A thread's signal state beside its mask (`Task::sigmask`).
#[derive(Default)]
pub struct ThreadSignals {
    pub pending: SigPending,
    pub altstack: AltStack,
    /// The mask to restore once a handler is set up (rt_sigsuspend's caller's mask).
    pub saved_mask: Option<u64>,
    /// The caller's mask while rt_sigtimedwait sleeps with the waited-for set unblocked (Linux
    /// `real_blocked`): those signals still count as blocked for [`ignored`], so a waited-for
    /// SIGCHLD whose action is the default is queued, not thrown away.
    pub real_blocked: u64,
    /// What `restart_syscall` continues (Linux `restart_block`).
    pub restart: restart::Restart,
}

/// A group's signal state beside its actions (`Group::sigactions`): Linux `signal_struct`.
#[derive(Default)]
pub struct GroupSignals {
    pub shared: SigPending,
    /// The signal sent to the parent when the group ends (clone's `CSIGNAL` byte; 0: none).
    pub exit_signal: u8,
    /// Stopped by a stop signal's default action until SIGCONT.
    pub stopped: bool,
    /// A stop (the signal) or a continue not yet reported to a `waitpid` with `WUNTRACED` /
    /// `WCONTINUED`.
    pub stop_report: Option<u8>,
    pub cont_report: bool,
    /// A stop (the signal) whose report waits for the group's other threads to stop too
    /// ([`participate_group_stop`]).
    pub stop_pending: Option<u8>,
}

/// Linux `do_signal_stop` / `task_participate_group_stop`: the parent hears of a group stop
/// (`CLD_STOPPED`, `waitpid(WUNTRACED)`) only once every live thread of group `tgid` sleeps on
/// its stop channel, so a thread still running in ring 3 on another CPU cannot change memory
/// after the report (with one CPU the others never ran meanwhile; on two the counter of
/// c_signals' stopped thread moved once after `waitpid` returned). Called by each thread that
/// enters the stop sleep and by each one that exits. Table locked.
pub fn participate_group_stop(table: &mut BTreeMap<Pid, Box<Task>>, tgid: Pid) {
    let Some(leader) = table.get(&tgid) else {
        return;
    };
    let group_arc = leader.group.clone();
    let mut group = group_arc.lock();
    let Some(signal) = group.sig.stop_pending else {
        return;
    };
    let channel = stop_channel(tgid);
    let all_stopped = table
        .values()
        .filter(|t| t.tgid == tgid)
        .all(|t| match t.state {
            State::Exited | State::Dead | State::Zombie(_) => true,
            State::Blocked { channel: c, .. } => c == channel,
            _ => false,
        });
    if !all_stopped {
        return;
    }
    group.sig.stop_pending = None;
    group.sig.stop_report = Some(signal);
    let parent = group.parent;
    drop(group);
    notify_parent_locked(table, parent, tgid, CLD_STOPPED, i32::from(signal));
}

pub fn name(signal: u8) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        SIGILL => "SIGILL",
        SIGTRAP => "SIGTRAP",
        6 => "SIGABRT",
        SIGBUS => "SIGBUS",
        SIGFPE => "SIGFPE",
        SIGKILL => "SIGKILL",
        SIGSEGV => "SIGSEGV",
        SIGPIPE => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// What `SIG_DFL` does with a signal (Linux `sig_kernel_*` masks).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Default_ {
    Terminate,
    /// Terminate with a core dump.
    Core,
    Ignore,
    Stop,
    Continue,
}

pub fn default_action(signal: u8) -> Default_ {
    match signal {
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | 24 | 25 | 31 => {
            Default_::Core
        }
        SIGCHLD | 23 | 28 => Default_::Ignore,
        SIGCONT => Default_::Continue,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Default_::Stop,
        _ => Default_::Terminate,
    }
}

/// The wait status of a group killed by `signal`'s default action: the signal, with the
/// core-dump bit (`WCOREDUMP`, 0x80) when the action dumps core and `RLIMIT_CORE` allows one.
/// cowlab writes no core file; the bit follows Linux's condition for a file `core_pattern`.
#[doc(alias = "do_coredump")]
pub fn death_status(signal: u8, core_limit: u64) -> i32 {
    let core = default_action(signal) == Default_::Core && core_limit != 0;
    i32::from(signal) | if core { 0x80 } else { 0 }
}

/// Whether `signal` sent to `task` would be thrown away (Linux `sig_ignored`): ignored by its
/// action and not blocked (a blocked ignored signal stays pending, as Linux), nor blocked by the
/// mask rt_sigtimedwait lifted while it waits (`ThreadSignals::real_blocked`).
fn ignored(task: &Task, action: &SigAction, signal: u8) -> bool {
    if (task.sigmask | task.sig.real_blocked) & bit(signal) != 0 {
        return false;
    }
    action.handler == SIG_IGN
        || (action.handler == SIG_DFL
            && matches!(
                default_action(signal),
                Default_::Ignore | Default_::Continue
            ))
}

/// Who a signal is for.
#[derive(Clone, Copy)]
pub enum Target {
    /// The process (thread group) of this pid or tid: kill, sigqueue.
    Process(Pid),
    /// One thread: tkill, tgkill, faults, pthread_kill.
    Thread(Pid),
}

/// Sends `info` (signal 0: only the existence check) to `target` with the table locked.
/// `ESRCH` if there is no such live task.
#[doc(alias = "send_signal")]
pub fn send_locked(
    table: &mut BTreeMap<Pid, Box<Task>>,
    target: Target,
    info: SigInfo,
) -> Result<(), Errno> {
    let id = match target {
        Target::Process(p) | Target::Thread(p) => p,
    };
    let task = table.get(&id).ok_or(Errno::ESRCH)?;
    if !task.user_visible() {
        return Err(Errno::ESRCH);
    }
    let signal = info.signal();
    let tgid = task.tgid;
    // Kernel threads (group 0, `kthread`) take no signals.
    if signal == 0 || matches!(task.state, State::Zombie(_)) || tgid == 0 {
        return Ok(());
    }
    let group_arc = task.group.clone();
    let mut group = group_arc.lock();
    let action = group.sigactions[signal as usize];
    // init gets only the signals it has handlers for (Linux `SIGNAL_UNKILLABLE`).
    if tgid == 1 && action.handler <= SIG_IGN {
        return Ok(());
    }
    // Linux `prepare_signal`: a stop signal cancels a pending SIGCONT and the reverse; SIGCONT
    // (and SIGKILL) resume a stopped group whatever its action.
    if STOP_SIGNALS & bit(signal) != 0 {
        group.sig.shared.discard(bit(SIGCONT));
        for t in table.values_mut().filter(|t| t.tgid == tgid) {
            t.sig.pending.discard(bit(SIGCONT));
        }
    } else if signal == SIGCONT || signal == SIGKILL {
        group.sig.shared.discard(STOP_SIGNALS);
        for t in table.values_mut().filter(|t| t.tgid == tgid) {
            t.sig.pending.discard(STOP_SIGNALS);
        }
        if group.sig.stopped {
            group.sig.stopped = false;
            group.sig.stop_report = None;
            group.sig.stop_pending = None;
            group.sig.cont_report = true;
            let parent = group.parent;
            drop(group);
            super::wakeup_locked(table, stop_channel(tgid));
            notify_parent_locked(table, parent, tgid, CLD_CONTINUED, i32::from(SIGCONT));
            group = group_arc.lock();
        }
    }
    if signal == SIGKILL {
        drop(group);
        kill_group_locked(table, tgid, i32::from(SIGKILL));
        return Ok(());
    }
    let task = table.get(&id).ok_or(Errno::ESRCH)?;
    if ignored(task, &action, signal) {
        return Ok(());
    }
    // The thread to wake (Linux `complete_signal`): the target thread, or for the process the
    // first live thread that does not block it.
    let wake = match target {
        Target::Thread(tid) => {
            table
                .get_mut(&tid)
                .expect("looked up above")
                .sig
                .pending
                .queue(info)?;
            Some(tid)
        }
        Target::Process(_) => {
            group.sig.shared.queue(info)?;
            table
                .values()
                .filter(|t| t.tgid == tgid && !matches!(t.state, State::Exited | State::Dead))
                .find(|t| t.sigmask & bit(signal) == 0)
                .map(|t| t.tid)
        }
    };
    let core_limit = group.rlimits.get(super::rlimit::RLIMIT_CORE).cur;
    drop(group);
    // signalfd readers and the epolls watching them (Linux `signalfd_notify`), whether or not
    // a thread can take the signal.
    let sfd = signalfd_channel(&group_arc);
    super::waitlink::follow(sfd);
    super::wakeup_locked(table, sfd);
    let Some(wake) = wake else {
        return Ok(());
    };
    let fatal = action.handler == SIG_DFL
        && matches!(default_action(signal), Default_::Terminate | Default_::Core)
        && table
            .get(&wake)
            .is_some_and(|t| t.sigmask & bit(signal) == 0);
    if fatal {
        kill_group_locked(table, tgid, death_status(signal, core_limit));
        return Ok(());
    }
    if let Some(t) = table.get_mut(&wake) {
        if matches!(t.state, State::Blocked { .. }) {
            crate::proc::sched::make_runnable(t);
        }
    }
    deliver::request_check();
    Ok(())
}

/// The channel a process's signalfd readers sleep on, woken when a signal is queued to it or
/// one of its threads (Linux `sighand->signalfd_wqh`).
pub fn signalfd_channel(group: &alloc::sync::Arc<spin::Mutex<super::Group>>) -> usize {
    alloc::sync::Arc::as_ptr(group) as usize
}

/// Sends `info` to `target` (locks the table).
pub fn send(target: Target, info: SigInfo) -> Result<(), Errno> {
    send_locked(&mut TABLE.lock(), target, info)
}

/// Sends `info` to every process of group `pgid` (Linux `__kill_pgrp_info`): `ESRCH` if the
/// group has no member; otherwise the first error if no member took it.
#[doc(alias = "__kill_pgrp_info")]
pub fn kill_pgrp(pgid: Pid, info: SigInfo) -> Result<(), Errno> {
    let members = super::pgrp::members(pgid);
    if members.is_empty() {
        return Err(Errno::ESRCH);
    }
    let mut table = TABLE.lock();
    let mut result = Err(Errno::ESRCH);
    for pid in members {
        match send_locked(&mut table, Target::Process(pid), info) {
            Ok(()) => result = Ok(()),
            Err(e) if result.is_err() => result = Err(e),
            Err(_) => {}
        }
    }
    result
}

/// The terminal's signal characters from the timer tick: each signal of `mask` (bit n-1 for
/// signal n) to every process of group `pgid`. `false` if the task table is busy (the tick
/// interrupted its holder): the caller keeps them for the next tick.
pub fn try_kill_pgrp_signals(pgid: Pid, mask: u64) -> bool {
    let Some(mut table) = TABLE.try_lock() else {
        return false;
    };
    let mut members = Vec::new();
    for t in table
        .values()
        .filter(|t| t.is_leader() && t.state != State::Dead)
    {
        match t.group.try_lock() {
            Some(g) if g.job.pgid == pgid => members.push(t.tgid),
            Some(_) => {}
            None => return false,
        }
    }
    for signal in (1..=64u8).filter(|s| mask & bit(*s) != 0) {
        for &pid in &members {
            let info = SigInfo::from_process(signal, SI_KERNEL, 0);
            let _ = send_locked(&mut table, Target::Process(pid), info);
        }
    }
    true
}

/// Whether the calling thread blocks `signal` or its process ignores it (Linux
/// `is_ignored(sig) || is_current_pgrp_orphaned()`'s first half, for SIGTTIN/SIGTTOU).
pub fn current_ignores_or_blocks(signal: u8) -> bool {
    with_current(|t| {
        t.sigmask & bit(signal) != 0
            || t.group.lock().sigactions[signal as usize].handler == SIG_IGN
    })
}

/// Sends `signal` to the calling thread (SIGPIPE from a pipe write, Linux `send_sig` to
/// current): its default action still ends the whole process.
pub fn send_signal_current(signal: u8) {
    let info = SigInfo::from_process(signal, SI_KERNEL, 0);
    let _ = send(Target::Thread(super::current_tid()), info);
}

/// The channel the threads of a stopped group sleep on until SIGCONT.
pub fn stop_channel(tgid: Pid) -> usize {
    0x3_0000_0000 + tgid as usize
}

/// Tells `parent` that its child `child` exited, was killed, stopped or continued (Linux
/// `do_notify_parent` / `do_notify_parent_cldstop`): SIGCHLD (or the child's exit signal) with
/// `si_code` `code` and `si_status` `status`, and a wake-up of its waits.
pub fn notify_parent_locked(
    table: &mut BTreeMap<Pid, Box<Task>>,
    parent: Pid,
    child: Pid,
    code: i32,
    status: i32,
) {
    super::wakeup_locked(table, super::wait_channel(parent));
    let Some(p) = table.get(&parent) else {
        return;
    };
    let exit_signal = if matches!(code, CLD_STOPPED | CLD_CONTINUED) {
        // SA_NOCLDSTOP: no SIGCHLD for stops and continues.
        if p.group.lock().sigactions[SIGCHLD as usize].flags & SA_NOCLDSTOP != 0 {
            return;
        }
        SIGCHLD
    } else {
        match table.get(&child) {
            Some(c) => c.group.lock().sig.exit_signal,
            None => SIGCHLD,
        }
    };
    if exit_signal == 0 || exit_signal > 64 {
        return;
    }
    let mut info = SigInfo::from_process(exit_signal, code, child);
    info.data[1] = status as u32 as u64;
    let _ = send_locked(table, Target::Process(parent), info);
}

/// Whether the end of `child` (a group whose last thread is exiting) leaves no zombie: its
/// parent ignores `SIGCHLD` or set `SA_NOCLDWAIT` on it, and the child's exit signal is
/// `SIGCHLD` (Linux `do_notify_parent`'s `autoreap`). The parent's `wait` then sleeps until
/// its last child is gone and fails with `ECHILD`.
pub fn parent_autoreaps(table: &BTreeMap<Pid, Box<super::Task>>, parent: Pid, child: Pid) -> bool {
    let exit_signal = table
        .get(&child)
        .map_or(SIGCHLD, |c| c.group.lock().sig.exit_signal);
    let Some(p) = table.get(&parent) else {
        return false;
    };
    let action = p.group.lock().sigactions[SIGCHLD as usize];
    exit_signal == SIGCHLD && (action.handler == SIG_IGN || action.flags & SA_NOCLDWAIT != 0)
}

/// The signal and `si_code` of a CPU exception in ring 3 other than a page fault (Linux
/// `do_trap` and friends): #DE and x87/SIMD errors SIGFPE, #UD SIGILL (`ILL_ILLOPN`), #BP and
/// #DB SIGTRAP, #AC SIGBUS (`BUS_ADRALN`), the rest (#GP, #SS, #NP...) SIGSEGV from the kernel.
pub fn exception_signal(vector: u8) -> (u8, i32) {
    match vector {
        0 => (SIGFPE, 1), // FPE_INTDIV
        16 | 19 => (SIGFPE, 0),
        6 => (SIGILL, 2),  // ILL_ILLOPN
        1 => (SIGTRAP, 2), // TRAP_TRACE
        3 => (SIGTRAP, SI_KERNEL),
        17 => (SIGBUS, 1), // BUS_ADRALN
        _ => (SIGSEGV, SI_KERNEL),
    }
}

/// A CPU fault in ring 3 raising `signal` (Linux `force_sig_fault`): if the thread has a
/// handler for it and does not block it, it is queued for delivery on this return to ring 3;
/// otherwise (default, ignored or blocked, where Linux resets the action and kills) the
/// process dies with the console line of [`kill_for_fault`].
#[doc(alias = "force_sig_fault")]
pub fn force_fault(frame: &TrapFrame, signal: u8, code: i32, addr: Option<u64>) {
    let handled = with_current(|t| {
        let action = t.group.lock().sigactions[signal as usize];
        if action.handler <= SIG_IGN || t.sigmask & bit(signal) != 0 {
            return false;
        }
        // si_addr: the faulting address, or for other exceptions the instruction (0 for #GP,
        // as Linux's SI_KERNEL).
        let si_addr = addr.unwrap_or(if code == SI_KERNEL { 0 } else { frame.rip });
        // A standard signal: never refused.
        let _ = t.sig.pending.queue(SigInfo::fault(signal, code, si_addr));
        true
    });
    if !handled {
        kill_for_fault(frame, signal, addr);
    }
    deliver::request_check();
}

/// A CPU exception in ring 3 that the kernel does not resolve: print the one line and end the
/// process with `signal`.
pub fn kill_for_fault(frame: &TrapFrame, signal: u8, addr: Option<u64>) -> ! {
    let (pid, tid, name, aspace) =
        with_current(|p| (p.tgid, p.tid, p.name.clone(), p.aspace.clone()));
    let vma = match (addr, &aspace) {
        (Some(a), Some(shared)) if a < cowlab_mm::aspace::USER_END => {
            match shared.try_read().and_then(|r| r.try_into_ptl().ok()) {
                Some(aspace) => aspace.find_vma(VirtAddr::new(a)).map(|v| {
                    let prot = v.prot();
                    alloc::format!(
                        "vma {:#x}-{:#x} {}{}{}",
                        v.start().as_u64(),
                        v.end().as_u64(),
                        if prot.read() { 'r' } else { '-' },
                        if prot.write() { 'w' } else { '-' },
                        if prot.exec() { 'x' } else { '-' }
                    )
                }),
                None => None,
            }
        }
        _ => None,
    };
    // Nothing may stay alive across `exit_current`, which does not return: drop our reference
    // to the address space so that exit can tear it down.
    drop(aspace);
    let vma = vma.unwrap_or_else(|| alloc::string::String::from("no mapping"));
    let addr = addr.map_or_else(
        || alloc::string::String::from("-"),
        |a| alloc::format!("{a:#x}"),
    );
    // The thread that faulted, when it is not the main one, after the fields tests match.
    let thread = if tid != pid {
        alloc::format!(" (thread {tid})")
    } else {
        alloc::string::String::new()
    };
    println!(
        "cowlab: pid {pid} ({name}) killed by {}: addr={addr} rip={:#x} {vma}{thread}",
        self::name(signal),
        frame.rip
    );
    let core_limit = super::with_group(|g| g.rlimits.get(super::rlimit::RLIMIT_CORE).cur);
    exit_current(death_status(signal, core_limit))
}
