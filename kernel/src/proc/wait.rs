//! wait4 and waitid: reaping zombie children, sleeping until one exits, stops or continues.
//!
//! Children belong to the process (the thread group), not to the thread that forked them, so
//! any thread of the group reaps any of them (Linux without `__WNOTHREAD`). A child process is
//! its leader's entry; it is a zombie only once every thread of it has exited.
#![deny(unsafe_code)]

use super::{sleep_interruptible, wait_channel, Pid, State, TABLE};
use crate::errno::Errno;

pub const WNOHANG: u32 = 1;
/// `WUNTRACED` to wait4, `WSTOPPED` to waitid: report a stopped child.
pub const WUNTRACED: u32 = 2;
/// waitid's: report (and reap) an exited child; wait4 implies it.
pub const WEXITED: u32 = 4;
pub const WCONTINUED: u32 = 8;
/// waitid's: report without reaping, the child stays waitable (a stop or continue stays
/// reportable).
pub const WNOWAIT: u32 = 0x0100_0000;

/// What `wait4`'s `struct rusage` reports of a reaped child (with its own reaped children).
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub minflt: u64,
    pub cpu: super::cputime::CpuTime,
    /// `ru_maxrss` in KiB: the larger of the child's own high-water mark and its children's
    /// (Linux `wait_task_zombie`, which also raises the parent's `cmaxrss` to it).
    pub maxrss: u64,
}

/// Which children a wait is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Any,
    Pid(Pid),
    /// The children in this process group (the group is the child's at the time of the check).
    Pgid(Pid),
}

impl Which {
    /// wait4's `pid` argument: -1 any child, > 0 that one, 0 the caller's process group, < -1
    /// group `-pid`.
    pub fn from_wait4(pid: i64) -> Which {
        match pid {
            -1 => Which::Any,
            0 => Which::Pgid(super::pgrp::current_job().pgid),
            p if p < -1 => Which::Pgid((-p) as Pid),
            p => Which::Pid(p as Pid),
        }
    }
}

/// What a wait found: the child's pid, its status word as wait4 encodes it, its usage (with
/// its reaped children's) and its real user id (waitid's `si_uid`).
#[derive(Clone, Copy, Default)]
pub struct Found {
    pub pid: Pid,
    pub status: i32,
    pub usage: Usage,
    pub uid: u32,
}

/// A zombie child's usage: its own and its reaped children's.
fn usage_of(child: &super::Task) -> Usage {
    let group = child.group.lock();
    let mut cpu = group.dead_cpu;
    cpu.add(group.child_cpu);
    cpu.add(child.cpu);
    Usage {
        minflt: group.own_minflt + group.child_minflt,
        cpu,
        maxrss: group.maxrss.max(group.child_maxrss),
    }
}

/// Waits for a child `which` names to exit (`WEXITED`), stop (`WUNTRACED`) or continue
/// (`WCONTINUED`): a zombie is reaped unless `WNOWAIT`. `ECHILD` when no child matches; with
/// `WNOHANG` and nothing to report, a `Found` with pid 0. Linux `do_wait`.
pub fn wait(which: Which, options: u32) -> Result<Found, Errno> {
    let me = super::current_pid();
    loop {
        let reaped = {
            let mut table = TABLE.lock();
            let matches = |p: &super::Task| match which {
                Which::Pgid(g) => p.group.lock().job.pgid == g,
                Which::Any => true,
                Which::Pid(pid) => p.tgid == pid,
            };
            // A `Dead` leader was reaped automatically (`parent_autoreaps`): not a child any more.
            let mut children = table.values().filter(|p| {
                p.is_leader()
                    && p.state != State::Dead
                    && p.tgid != me
                    && matches(p)
                    && p.group.lock().parent == me
            });
            let Some(first) = children.next() else {
                return Err(Errno::ECHILD);
            };
            let zombie = core::iter::once(first)
                .chain(children)
                .filter(|_| options & WEXITED != 0)
                .find(|p| matches!(p.state, State::Zombie(_)));
            if let Some(child) = zombie.filter(|_| options & WNOWAIT != 0) {
                let State::Zombie(status) = child.state else {
                    return Err(Errno::ECHILD);
                };
                return Ok(Found {
                    pid: child.tid,
                    status,
                    usage: usage_of(child),
                    uid: child.group.lock().cred.uid,
                });
            }
            let zombie = zombie.map(|p| p.tid);
            if zombie.is_none() {
                // A stop or continue not yet reported (Linux `wait_task_stopped` /
                // `wait_task_continued`): reported once (unless `WNOWAIT`), the child stays.
                let keep = options & WNOWAIT != 0;
                let reported = table
                    .values()
                    .filter(|p| {
                        p.is_leader() && p.tgid != me && matches(p) && p.group.lock().parent == me
                    })
                    .find_map(|p| {
                        let mut g = p.group.lock();
                        let uid = g.cred.uid;
                        // The live child's usage so far (Linux `getrusage(p, RUSAGE_BOTH)`):
                        // its threads', its exited threads' and its reaped children's.
                        let mut cpu = g.dead_cpu;
                        cpu.add(g.child_cpu);
                        for t in table.values().filter(|t| t.tgid == p.tgid) {
                            cpu.add(t.cpu);
                        }
                        let usage = Usage {
                            minflt: g.own_minflt + g.child_minflt,
                            cpu,
                            maxrss: g.maxrss.max(g.child_maxrss),
                        };
                        if options & WUNTRACED != 0 {
                            let sig = if keep {
                                g.sig.stop_report
                            } else {
                                g.sig.stop_report.take()
                            };
                            if let Some(sig) = sig {
                                return Some(Found {
                                    pid: p.tgid,
                                    status: (i32::from(sig) << 8) | 0x7f,
                                    usage,
                                    uid,
                                });
                            }
                        }
                        if options & WCONTINUED != 0 && g.sig.cont_report {
                            g.sig.cont_report = keep;
                            return Some(Found {
                                pid: p.tgid,
                                status: 0xffff,
                                usage,
                                uid,
                            });
                        }
                        None
                    });
                if let Some(found) = reported {
                    return Ok(found);
                }
            }
            zombie.and_then(|pid| table.remove(&pid))
        };
        if let Some(child) = reaped {
            let State::Zombie(status) = child.state else {
                unreachable!("only zombies are reaped")
            };
            let usage = usage_of(&child);
            let uid = child.group.lock().cred.uid;
            super::with_group(|g| {
                g.child_minflt += usage.minflt;
                g.child_cpu.add(usage.cpu);
                g.child_maxrss = g.child_maxrss.max(usage.maxrss);
            });
            // The child's kernel stack is freed here: it is not running (it is a zombie).
            return Ok(Found {
                pid: child.tid,
                status,
                usage,
                uid,
            });
        }
        if options & WNOHANG != 0 {
            return Ok(Found::default());
        }
        sleep_interruptible(wait_channel(me))?;
    }
}
