//! Orphaned process groups (POSIX; Linux `kernel/exit.c`): a group is orphaned when no member
//! has a parent in another group of the same session, the link through which a job-control
//! shell would continue it. When a process exit orphans a group that has a stopped member, the
//! group would stay stopped forever: Linux sends it SIGHUP then SIGCONT
//! ([`kill_orphaned_pgrp`], from `exit_notify`, for the exiting process's own group and for
//! each child's group as the child is reparented). A background member of an orphaned group
//! that reads the terminal gets `EIO` instead of a SIGTTIN that would stop it for good
//! (`fs::tty`, via [`is_current_pgrp_orphaned`]).
//!
//! All of it runs under the task-table lock; each group record is locked alone, briefly.
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::pgrp::Job;
use super::signal::{send_locked, SigInfo, Target, SIGCONT, SI_KERNEL};

/// SIGHUP (Linux x86_64 number 1).
const SIGHUP: u8 = 1;
use super::{Pid, State, Task, TABLE};

type Table = BTreeMap<Pid, Box<Task>>;

/// The job identity and parent of live or zombie process `pid`, and whether it has ended.
fn info(table: &Table, pid: Pid) -> Option<(Job, Pid, bool, bool)> {
    let t = table.get(&pid).filter(|t| t.is_leader())?;
    let g = t.group.lock();
    let ended = matches!(t.state, State::Zombie(_) | State::Dead);
    Some((g.job, g.parent, ended, g.sig.stopped))
}

/// The live processes (leaders) of group `pgid`.
fn members(table: &Table, pgid: Pid) -> Vec<Pid> {
    table
        .values()
        .filter(|t| t.is_leader())
        .map(|t| t.tgid)
        .filter(|&p| info(table, p).is_some_and(|(j, _, ended, _)| j.pgid == pgid && !ended))
        .collect()
}

/// Linux `will_become_orphaned_pgrp`: whether no member of `pgid` but `ignored` (ended ones
/// aside) has a parent in a different group of the same session; a parent that is init does
/// not count (`is_global_init`).
pub fn will_become_orphaned_pgrp(table: &Table, pgid: Pid, ignored: Option<Pid>) -> bool {
    !members(table, pgid)
        .into_iter()
        .filter(|&p| Some(p) != ignored)
        .any(|p| {
            let Some((job, parent, _, _)) = info(table, p) else {
                return false;
            };
            parent > 1
                && info(table, parent)
                    .is_some_and(|(pj, _, _, _)| pj.pgid != job.pgid && pj.sid == job.sid)
        })
}

/// Linux `has_stopped_jobs`: some member of `pgid` is stopped.
fn has_stopped_jobs(table: &Table, pgid: Pid) -> bool {
    members(table, pgid)
        .into_iter()
        .any(|p| info(table, p).is_some_and(|(_, _, _, stopped)| stopped))
}

/// Linux `kill_orphaned_pgrp`: `tsk`'s group is about to lose its last outside link, through
/// `parent` (a reparent: `tsk` is a child of the exiting `parent`) or, with `None`, through
/// `tsk`'s own exit (its real parent the link, `tsk` itself no longer counting). If that
/// orphans the group and a member is stopped, SIGHUP then SIGCONT to every member.
pub fn kill_orphaned_pgrp(table: &mut Table, tsk: Pid, parent: Option<Pid>) {
    let Some((job, real_parent, _, _)) = info(table, tsk) else {
        return;
    };
    let (parent, ignored) = match parent {
        Some(p) => (p, None),
        None => (real_parent, Some(tsk)),
    };
    let Some((pjob, _, _, _)) = info(table, parent) else {
        return;
    };
    if pjob.pgid == job.pgid
        || pjob.sid != job.sid
        || !will_become_orphaned_pgrp(table, job.pgid, ignored)
        || !has_stopped_jobs(table, job.pgid)
    {
        return;
    }
    let pids = members(table, job.pgid);
    for signal in [SIGHUP, SIGCONT] {
        for &pid in &pids {
            let _ = send_locked(table, Target::Process(pid), SigInfo::new(signal, SI_KERNEL));
        }
    }
}

/// Linux `is_current_pgrp_orphaned`: whether the caller's process group is orphaned.
pub fn is_current_pgrp_orphaned() -> bool {
    let pgid = super::pgrp::current_job().pgid;
    will_become_orphaned_pgrp(&TABLE.lock(), pgid, None)
}
