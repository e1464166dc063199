//! Who may signal whom (Linux `check_kill_permission`, `kill_ok_by_cred`): the checks
//! kill, tkill, tgkill and rt_(tg)sigqueueinfo make before a signal from a process is sent.
//! Signals the kernel sends (terminal characters, timers, `SIGCHLD`, faults) are not checked.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use super::{send_locked, SigInfo, Target, SIGCONT};
use crate::errno::Errno;
use crate::proc::cred::{self, has_cap, Cap, Cred};
use crate::proc::{Pid, TABLE};

/// Linux `kill_ok_by_cred`: the sender's real or effective uid is the target's real or saved
/// uid, or the sender has `CAP_KILL`.
fn kill_ok_by_cred(sender: &Cred, target: &Cred) -> bool {
    let (s, t) = ([sender.uid, sender.euid], [target.uid, target.suid]);
    s.iter().any(|id| t.contains(id)) || has_cap(sender, Cap::Kill)
}

/// Linux `check_kill_permission` for a signal from the caller (`sender`, of session
/// `sender_sid`) to thread `tid`: `ESRCH` if there is no such task, `EPERM` unless
/// [`kill_ok_by_cred`] or it is `SIGCONT` within the caller's session. Signal 0 is checked
/// too (it asks exactly this). Takes the task table.
fn check_kill_permission(
    sender: &Cred,
    sender_sid: Pid,
    tid: Pid,
    signal: u8,
) -> Result<(), Errno> {
    let table = TABLE.lock();
    let task = table
        .get(&tid)
        .filter(|t| t.user_visible())
        .ok_or(Errno::ESRCH)?;
    let group = task.group.lock();
    if kill_ok_by_cred(sender, &group.cred) || (signal == SIGCONT && group.job.sid == sender_sid) {
        return Ok(());
    }
    Err(Errno::EPERM)
}

/// [`check_kill_permission`] for the calling process.
pub fn may_signal(tid: Pid, signal: u8) -> Result<(), Errno> {
    let sender = cred::current();
    let sid = crate::proc::pgrp::current_job().sid;
    check_kill_permission(&sender, sid, tid, signal)
}

/// kill(-1, sig) (Linux `kill_something_info`): every process but init and the caller
/// (`targets`) it may signal; `ESRCH` when none could be signalled (those refused with `EPERM`
/// do not count), else the last one's answer.
pub fn kill_all_from_user(targets: &[Pid], info: SigInfo) -> Result<(), Errno> {
    let signal = info.signal();
    let mut count = 0;
    let mut last = Ok(());
    for &pid in targets {
        let r = may_signal(pid, signal).and_then(|()| super::send(Target::Process(pid), info));
        if r != Err(Errno::EPERM) {
            count += 1;
        }
        last = r;
    }
    if count == 0 {
        return Err(Errno::ESRCH);
    }
    last
}

/// kill(-pgid, sig) and kill(0, sig) (Linux `__kill_pgrp_info` with the permission check):
/// `ESRCH` if the group has no member; success if any member took it, else the last error.
pub fn kill_pgrp_from_user(pgid: Pid, info: SigInfo) -> Result<(), Errno> {
    let members: Vec<Pid> = crate::proc::pgrp::members(pgid);
    if members.is_empty() {
        return Err(Errno::ESRCH);
    }
    let signal = info.signal();
    let sender = cred::current();
    let sid = crate::proc::pgrp::current_job().sid;
    let mut ok = false;
    let mut last = Err(Errno::ESRCH);
    for pid in members {
        let r = check_kill_permission(&sender, sid, pid, signal)
            .and_then(|()| send_locked(&mut TABLE.lock(), Target::Process(pid), info));
        ok |= r.is_ok();
        last = r;
    }
    if ok {
        Ok(())
    } else {
        last
    }
}
