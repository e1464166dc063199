//! The directories of `/proc`: the root (Linux `proc_root_readdir`: its own files, then one
//! directory per process, which is how `ps` finds them) and `/proc/<pid>/`
//! (`proc_pident_readdir` over the files `procfs` serves) with its `fd/` (`proc_readfd`: one
//! link per open descriptor, naming the path the file was opened by). Listing takes the process table's
//! lock once; a process that exits afterwards simply fails its later lookups (`ENOENT`), as on
//! Linux.
#![deny(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use super::file::OpenFile;
use super::file::{DirEntry, FileOps, Kiocb, Seek, DT_DIR, DT_REG};
use super::iter::IoIter;
use super::stat::{
    statfs_of, Stat, StatFs, PROC_SUPER_MAGIC, ST_NODEV, ST_NOEXEC, ST_NOSUID, S_IFDIR,
};
use crate::errno::Errno;
use crate::proc::{current_pid, Pid, State, TABLE};

/// `DT_LNK`: `self`, `exe`, `cwd`.
const DT_LNK: u8 = 10;
/// Inode numbers of the directories: the root, and one per pid above it.
const PROC_ROOT_INO: u64 = 1;
const PID_DIR_INO: u64 = 0x100_0000;

/// The files of `/proc/<pid>/` and their kinds, in listing order.
const PID_ENTRIES: &[(&str, u8)] = &[
    ("clear_refs", DT_REG),
    ("cmdline", DT_REG),
    ("comm", DT_REG),
    ("cowlab", DT_REG),
    ("cwd", DT_LNK),
    ("exe", DT_LNK),
    ("fd", DT_DIR),
    ("maps", DT_REG),
    ("mem", DT_REG),
    ("mounts", DT_REG),
    ("pagemap", DT_REG),
    ("smaps", DT_REG),
    ("smaps_rollup", DT_REG),
    ("stat", DT_REG),
    ("statm", DT_REG),
    ("status", DT_REG),
];

/// The processes `/proc` shows: every thread-group leader not yet reaped (zombies included).
fn pids() -> Vec<Pid> {
    TABLE
        .lock()
        .values()
        .filter(|t| t.is_leader() && t.state != State::Dead)
        .map(|t| t.tgid)
        .collect()
}

/// The process a `/proc` directory name names (`self` or a live or zombie pid).
pub fn pid_of(name: &str) -> Option<Pid> {
    let pid = match name {
        "self" => current_pid(),
        n => n
            .parse::<Pid>()
            .ok()
            .filter(|_| !n.starts_with(['+', '0']))?,
    };
    pids().contains(&pid).then_some(pid)
}

/// The open files of process `pid` by descriptor (`None` if it has exited). The files are
/// cloned under the task table's and the descriptor table's locks and must be dropped after
/// both are released (dropping a pipe end wakes sleepers).
pub fn fds_of(pid: Pid) -> Option<Vec<(usize, Arc<OpenFile>)>> {
    let fds = {
        let table = TABLE.lock();
        let task = table
            .get(&pid)
            .filter(|t| t.is_leader() && !matches!(t.state, State::Dead | State::Zombie(_)))?;
        task.fds.files()
    };
    Some(fds)
}

/// Whether the caller may look through process `pid`'s descriptors, executable, working
/// directory or memory (Linux `proc_fd_access_allowed` / `proc_mem_open`): its own process
/// always, another by `cred::ptrace_may_access`. `EACCES` if not, `ENOENT` if it is gone.
pub fn may_inspect(pid: Pid) -> Result<(), Errno> {
    if pid == current_pid() {
        return Ok(());
    }
    let target = crate::proc::rlimit::with_task_rlimits(pid, |cred, _| cred.clone())
        .map_err(|_| Errno::ENOENT)?;
    crate::proc::cred::ptrace_may_access(&crate::proc::cred::current(), &target)
}

/// `/proc/<pid>/fd/<n>`'s target (Linux `proc_fd_link`): `ENOENT` if the descriptor is not
/// open, `EACCES` if the caller may not inspect `pid` ([`may_inspect`]).
pub fn fd_link(pid: Pid, fd: &str) -> Result<String, Errno> {
    may_inspect(pid)?;
    let n: usize = fd.parse().map_err(|_| Errno::ENOENT)?;
    let files = fds_of(pid).ok_or(Errno::ENOENT)?;
    let file = files.iter().find(|(i, _)| *i == n).ok_or(Errno::ENOENT)?;
    Ok(file.1.link_target())
}

/// Which `/proc` directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Root,
    Pid(Pid),
    /// `/proc/<pid>/fd/`.
    Fds(Pid),
}

/// A `/proc` directory opened: the root, `/proc/<pid>/` or `/proc/<pid>/fd/`.
pub struct ProcDirFile {
    which: Which,
    path: String,
}

impl ProcDirFile {
    pub fn root() -> ProcDirFile {
        ProcDirFile {
            which: Which::Root,
            path: String::from("/proc"),
        }
    }

    pub fn pid(pid: Pid) -> ProcDirFile {
        ProcDirFile {
            which: Which::Pid(pid),
            path: format!("/proc/{pid}"),
        }
    }

    /// The directory `name` below `/proc` (`<pid>`, `self`, `<pid>/fd`), if it is one.
    pub fn named(name: &str) -> Option<ProcDirFile> {
        match name.split_once('/') {
            None => Some(ProcDirFile::pid(pid_of(name)?)),
            Some((who, "fd")) => {
                let pid = pid_of(who)?;
                fds_of(pid)?;
                Some(ProcDirFile {
                    which: Which::Fds(pid),
                    path: format!("/proc/{pid}/fd"),
                })
            }
            Some(_) => None,
        }
    }

    fn ino(&self) -> u64 {
        match self.which {
            Which::Root => PROC_ROOT_INO,
            Which::Pid(p) => PID_DIR_INO + u64::from(p) * 2,
            Which::Fds(p) => PID_DIR_INO + u64::from(p) * 2 + 1,
        }
    }
}

impl FileOps for ProcDirFile {
    fn read_iter(&self, _io: &mut Kiocb, _to: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EISDIR)
    }

    fn seek(&self) -> Seek {
        Seek::Size(0)
    }

    fn fsync(&self) -> Result<(), Errno> {
        Ok(())
    }

    fn stat(&self) -> Stat {
        Stat {
            st_nlink: 2,
            ..Stat::base(S_IFDIR | 0o555, self.ino())
        }
    }

    fn statfs(&self) -> StatFs {
        statfs_of(PROC_SUPER_MAGIC, ST_NOSUID | ST_NODEV | ST_NOEXEC)
    }

    fn getdents(&self) -> Result<Vec<DirEntry>, Errno> {
        let entry = |name: String, ino, kind| DirEntry { name, ino, kind };
        let parent = match self.which {
            Which::Fds(p) => PID_DIR_INO + u64::from(p) * 2,
            _ => PROC_ROOT_INO,
        };
        let mut out = alloc::vec![
            entry(String::from("."), self.ino(), DT_DIR),
            entry(String::from(".."), parent, DT_DIR),
        ];
        match self.which {
            Which::Root => {
                out.push(entry(String::from("meminfo"), 2, DT_REG));
                out.push(entry(String::from("self"), 3, DT_LNK));
                for (i, name) in ["stat", "uptime", "loadavg", "mounts"]
                    .into_iter()
                    .enumerate()
                {
                    out.push(entry(String::from(name), 4 + i as u64, DT_REG));
                }
                for pid in pids() {
                    out.push(entry(
                        format!("{pid}"),
                        PID_DIR_INO + u64::from(pid) * 2,
                        DT_DIR,
                    ));
                }
            }
            Which::Fds(pid) => {
                let files = fds_of(pid).ok_or(Errno::ENOENT)?;
                let base = 0x8000_0000 + u64::from(pid) * 0x1_0000;
                for (fd, _) in &files {
                    out.push(entry(format!("{fd}"), base + *fd as u64, DT_LNK));
                }
            }
            Which::Pid(pid) => {
                // A reaped process's directory lists nothing more (Linux: `ENOENT`).
                if !pids().contains(&pid) {
                    return Err(Errno::ENOENT);
                }
                let base = 0x1000 + u64::from(pid) * 64;
                for (i, (name, kind)) in PID_ENTRIES.iter().enumerate() {
                    out.push(entry(String::from(*name), base + i as u64, *kind));
                }
            }
        }
        Ok(out)
    }

    fn dir_path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
