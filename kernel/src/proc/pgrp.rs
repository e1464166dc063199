//! Process groups and sessions (Linux `kernel/sys.c` and the PIDTYPE_PGID/PIDTYPE_SID links):
//! every process has a process group id and a session id, inherited by fork and kept by execve.
//! A group is named by the pid of its leader and lives as long as one member does (even if the
//! leader is gone); a session likewise. Job control (the terminal's foreground group, ^C to the
//! group, `kill(-pgrp)`, `waitpid(-pgrp)`) is built on these two numbers.
//!
//! The ids are per process ([`Job`] in the shared `Group` record), found by walking the leaders
//! of the task table: there are tens of processes, and no hash of groups to keep consistent.
#![deny(unsafe_code)]

use alloc::vec::Vec;

use super::{current_pid, Pid, State, TABLE};
use crate::errno::Errno;

/// A process's job-control identity (Linux `task->signal->pids[PIDTYPE_PGID/SID]`).
#[derive(Clone, Copy, Default, Debug)]
pub struct Job {
    pub pgid: Pid,
    pub sid: Pid,
    /// The process has called execve since fork: its parent may no longer move it to another
    /// group (Linux `PF_FORKNOEXEC` cleared; setpgid's `EACCES`).
    pub did_exec: bool,
}

impl Job {
    /// What a forked child starts with: its parent's group and session.
    pub fn forked(parent: &Job) -> Job {
        Job {
            pgid: parent.pgid,
            sid: parent.sid,
            did_exec: false,
        }
    }
}

/// The job identity of process `pid` (a live or zombie thread-group leader).
pub fn job_of(pid: Pid) -> Option<(Job, Pid)> {
    let table = TABLE.lock();
    let t = table.get(&pid).filter(|t| t.is_leader())?;
    let g = t.group.lock();
    Some((g.job, g.parent))
}

/// The calling process's job identity.
pub fn current_job() -> Job {
    super::with_group(|g| g.job)
}

/// The pids of the processes (leaders, zombies included) whose group is `pgid`.
pub fn members(pgid: Pid) -> Vec<Pid> {
    TABLE
        .lock()
        .values()
        .filter(|t| t.is_leader() && t.state != State::Dead && t.group.lock().job.pgid == pgid)
        .map(|t| t.tgid)
        .collect()
}

/// Whether a process group `pgid` exists in session `sid` (Linux `find_vpid` + `task_session`).
fn group_in_session(pgid: Pid, sid: Pid) -> bool {
    TABLE.lock().values().any(|t| {
        t.is_leader() && t.state != State::Dead && {
            let j = t.group.lock().job;
            j.pgid == pgid && j.sid == sid
        }
    })
}

/// setpgid(pid, pgid), Linux `sys_setpgid`'s checks in its order: `EINVAL` for a negative
/// pgid; `ESRCH` unless `pid` is the caller or its child, `EINVAL` for a thread that is not its
/// process's leader; for a child, `EPERM` if it is in
/// another session and `EACCES` once it has exec'd; `EPERM` for a session leader and for a
/// group that does not exist in the caller's session.
#[doc(alias = "sys_setpgid")]
pub fn setpgid(pid: i32, pgid: i32) -> Result<(), Errno> {
    if pgid < 0 {
        return Err(Errno::EINVAL);
    }
    let me = current_pid();
    let pid = if pid == 0 { me } else { pid as Pid };
    let pgid = if pgid == 0 { pid } else { pgid as Pid };
    let mine = current_job();
    // Linux `sys_setpgid`: a pid that names a thread other than its process's leader is found,
    // then refused with EINVAL.
    let (target, parent) = match job_of(pid) {
        Some(found) => found,
        None if TABLE
            .lock()
            .get(&pid)
            .is_some_and(|t| t.state != State::Dead) =>
        {
            return Err(Errno::EINVAL)
        }
        None => return Err(Errno::ESRCH),
    };
    if pid != me {
        if parent != me {
            return Err(Errno::ESRCH);
        }
        if target.sid != mine.sid {
            return Err(Errno::EPERM);
        }
        if target.did_exec {
            return Err(Errno::EACCES);
        }
    }
    if target.sid == pid {
        return Err(Errno::EPERM);
    }
    if pgid != pid && !group_in_session(pgid, mine.sid) {
        return Err(Errno::EPERM);
    }
    let table = TABLE.lock();
    if let Some(t) = table.get(&pid) {
        t.group.lock().job.pgid = pgid;
    }
    Ok(())
}

/// getpgid(pid) / getsid(pid): `pid` 0 is the caller; `ESRCH` for no such process.
pub fn getpgid(pid: i32) -> Result<Pid, Errno> {
    lookup(pid).map(|j| j.pgid)
}

pub fn getsid(pid: i32) -> Result<Pid, Errno> {
    lookup(pid).map(|j| j.sid)
}

fn lookup(pid: i32) -> Result<Job, Errno> {
    if pid == 0 {
        return Ok(current_job());
    }
    if pid < 0 {
        return Err(Errno::ESRCH);
    }
    // A thread's id names its process here too (Linux `find_task_by_vpid` then its group).
    let tgid = TABLE
        .lock()
        .get(&(pid as Pid))
        .filter(|t| t.state != State::Dead)
        .map(|t| t.tgid)
        .ok_or(Errno::ESRCH)?;
    job_of(tgid).map(|(j, _)| j).ok_or(Errno::ESRCH)
}

/// setsid(): a new session and group named by the caller, without a controlling terminal;
/// `EPERM` if some process group is already named by the caller's pid (Linux `ksys_setsid`:
/// a group leader, or a group it left that still has members).
#[doc(alias = "ksys_setsid")]
pub fn setsid() -> Result<Pid, Errno> {
    let me = current_pid();
    if !members(me).is_empty() {
        return Err(Errno::EPERM);
    }
    super::with_group(|g| {
        g.job.pgid = me;
        g.job.sid = me;
    });
    Ok(me)
}
