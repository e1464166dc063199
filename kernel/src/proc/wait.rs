//! wait4: reaping zombie children, sleeping until one exits.
//!
//! Children belong to the process (the thread group), not to the thread that forked them, so
//! any thread of the group reaps any of them (Linux without `__WNOTHREAD`). A child process is
//! its leader's entry; it is a zombie only once every thread of it has exited.
#![deny(unsafe_code)]

use super::{sleep_interruptible, wait_channel, Pid, State, TABLE};
use crate::errno::Errno;

pub const WNOHANG: u32 = 1;
pub const WUNTRACED: u32 = 2;
pub const WCONTINUED: u32 = 8;

/// What `wait4`'s `struct rusage` reports of a reaped child (with its own reaped children).
#[derive(Clone, Copy, Default)]
pub struct Usage {
    pub minflt: u64,
    pub cpu: super::cputime::CpuTime,
    /// `ru_maxrss` in KiB: the larger of the child's own high-water mark and its children's
    /// (Linux `wait_task_zombie`, which also raises the parent's `cmaxrss` to it).
    pub maxrss: u64,
}

/// Waits for a child matching `which` (-1: any, > 0: that pid, 0: any in the caller's process
/// group, < -1: any in group -which; the group is the child's at the time of the check).
/// Returns `(pid, status, the usage of the child and its reaped children)`, or zeros with
/// `WNOHANG` and no zombie yet.
pub fn wait(which: i64, options: u32) -> Result<(Pid, i32, Usage), Errno> {
    let me = super::current_pid();
    let pgid = match which {
        0 => Some(super::pgrp::current_job().pgid),
        w if w < -1 => Some((-w) as Pid),
        _ => None,
    };
    loop {
        let reaped = {
            let mut table = TABLE.lock();
            let matches = |p: &super::Task| match pgid {
                Some(g) => p.group.lock().job.pgid == g,
                None => which == -1 || i64::from(p.tgid) == which,
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
                .find(|p| matches!(p.state, State::Zombie(_)))
                .map(|p| p.tid);
            if zombie.is_none() {
                // A stop or continue not yet reported (Linux `wait_task_stopped` /
                // `wait_task_continued`): reported once, the child stays.
                let reported = table
                    .values()
                    .filter(|p| {
                        p.is_leader() && p.tgid != me && matches(p) && p.group.lock().parent == me
                    })
                    .find_map(|p| {
                        let mut g = p.group.lock();
                        if options & WUNTRACED != 0 {
                            if let Some(sig) = g.sig.stop_report.take() {
                                return Some((p.tgid, (i32::from(sig) << 8) | 0x7f));
                            }
                        }
                        if options & WCONTINUED != 0 && g.sig.cont_report {
                            g.sig.cont_report = false;
                            return Some((p.tgid, 0xffff));
                        }
                        None
                    });
                if let Some((pid, status)) = reported {
                    return Ok((pid, status, Usage::default()));
                }
            }
            zombie.and_then(|pid| table.remove(&pid))
        };
        if let Some(child) = reaped {
            let State::Zombie(status) = child.state else {
                unreachable!("only zombies are reaped")
            };
            let usage = {
                let group = child.group.lock();
                let mut cpu = group.dead_cpu;
                cpu.add(group.child_cpu);
                cpu.add(child.cpu);
                Usage {
                    minflt: group.own_minflt + group.child_minflt,
                    cpu,
                    maxrss: group.maxrss.max(group.child_maxrss),
                }
            };
            super::with_group(|g| {
                g.child_minflt += usage.minflt;
                g.child_cpu.add(usage.cpu);
                g.child_maxrss = g.child_maxrss.max(usage.maxrss);
            });
            // The child's kernel stack is freed here: it is not running (it is a zombie).
            return Ok((child.tid, status, usage));
        }
        if options & WNOHANG != 0 {
            return Ok((0, 0, Usage::default()));
        }
        sleep_interruptible(wait_channel(me))?;
    }
}
