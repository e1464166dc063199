//! The text files of `/proc/<pid>/` that describe a process rather than its memory's contents:
//! `stat` (Linux `do_task_stat`, the exact 52-field layout `ps` and `top` parse), `status`
//! (`proc_pid_status`), `cmdline` (`get_mm_cmdline`), `comm`, `smaps` (`show_smap`) and
//! `smaps_rollup` (`show_smaps_rollup`), and the link targets of `exe` and `cwd`.
//!
//! A [`Snapshot`] is taken under the process table's lock (the task, then its group's lock, the
//! order every other path uses); the address space is locked afterwards, alone, only for the
//! memory numbers. CPU times are the sampled ticks of `proc::cputime`. Fields cowlab does not
//! keep are Linux's value for "none": the start time is 0, the scheduling fields are those of a
//! `SCHED_OTHER` task at nice 0 on CPU 0. The process group and session are `proc::pgrp`'s, the
//! terminal the console when it is the session's controlling terminal (`fs::tty`).
#![deny(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;

use cowlab_mm::smaps::SmapsCounts;
use cowlab_mm::vma::{Backing, VmaFlags};
use cowlab_mm::VirtAddr;

use crate::errno::Errno;
use crate::proc::cputime::CpuTime;
use crate::proc::rlimit::RLIMIT_SIGPENDING;
use crate::proc::signal::SIG_IGN;
use crate::proc::{Pid, State, TABLE};
use crate::{memory, vm};

/// What the process table says about one process.
pub struct Snapshot {
    pub pid: Pid,
    name: String,
    state: char,
    ppid: Pid,
    job: crate::proc::pgrp::Job,
    threads: u32,
    cminflt: u64,
    exit_signal: u8,
    sig_pending: u64,
    sig_shared: u64,
    sig_blocked: u64,
    sig_ignored: u64,
    sig_caught: u64,
    sig_queued: usize,
    sig_queue_limit: u64,
    cwd: Option<Arc<str>>,
    pub aspace: Option<vm::SharedAddressSpace>,
    cpu: CpuTime,
    child_cpu: CpuTime,
    cred: crate::proc::cred::Cred,
    umask: u32,
}

/// The process whose group leader is `pid`, zombies included (`ESRCH` if there is none).
pub fn snapshot(pid: Pid) -> Result<Snapshot, Errno> {
    let table = TABLE.lock();
    let task = table
        .get(&pid)
        .filter(|t| t.tgid == pid)
        .ok_or(Errno::ESRCH)?;
    let group = task.group.lock();
    let mut cpu = group.dead_cpu;
    for t in table.values().filter(|t| t.tgid == pid) {
        cpu.add(t.cpu);
    }
    let mut ignored = 0;
    let mut caught = 0;
    for (signal, action) in group.sigactions.iter().enumerate().skip(1) {
        match action.handler {
            0 => {}
            SIG_IGN => ignored |= 1u64 << (signal - 1),
            _ => caught |= 1u64 << (signal - 1),
        }
    }
    // Linux `get_task_state`: a stopped group shows `T`, an exited leader `Z`.
    let state = match task.state {
        State::Zombie(_) | State::Exited => 'Z',
        State::Dead => 'X',
        _ if group.sig.stopped => 'T',
        State::Running | State::Runnable => 'R',
        State::Blocked { .. } => 'S',
    };
    Ok(Snapshot {
        pid,
        name: task.name.clone(),
        state,
        ppid: group.parent,
        job: group.job,
        threads: group.live.max(1),
        cminflt: group.child_minflt,
        exit_signal: group.sig.exit_signal,
        sig_pending: task.sig.pending.mask,
        sig_shared: group.sig.shared.mask,
        sig_blocked: task.sigmask,
        sig_ignored: ignored,
        sig_caught: caught,
        sig_queued: task.sig.pending.queued() + group.sig.shared.queued(),
        sig_queue_limit: group.rlimits.get(RLIMIT_SIGPENDING).cur,
        cwd: group.cwd.clone(),
        aspace: task.aspace.clone(),
        cpu,
        child_cpu: group.child_cpu,
        cred: group.cred.clone(),
        umask: group.umask,
    })
}

/// Linux's state names in `status`.
fn state_name(state: char) -> &'static str {
    match state {
        'R' => "R (running)",
        'S' => "S (sleeping)",
        'T' => "T (stopped)",
        'Z' => "Z (zombie)",
        _ => "X (dead)",
    }
}

/// The address-space numbers `stat` and `status` share, in bytes unless named pages.
#[derive(Default)]
struct MemSummary {
    vm_size: u64,
    vm_locked: u64,
    vm_stack: u64,
    vm_exe: u64,
    vm_data: u64,
    rss: SmapsCounts,
    pagetable_pages: u64,
    minflt: u64,
    start_code: u64,
    end_code: u64,
    start_brk: u64,
    arg_start: u64,
    arg_end: u64,
    env_end: u64,
}

fn mem_summary(snap: &Snapshot) -> MemSummary {
    let Some(shared) = &snap.aspace else {
        return MemSummary::default();
    };
    let aspace = shared.read_ptl();
    let mm = memory::mm();
    let mut m = MemSummary {
        minflt: aspace.minor_faults(),
        start_brk: aspace.brk_start().as_u64(),
        pagetable_pages: aspace.footprint(mm).pagetable_pages,
        ..MemSummary::default()
    };
    let layout = aspace.exec_layout();
    (m.arg_start, m.arg_end, m.env_end) = (layout.arg_start, layout.arg_end, layout.env_end);
    let stack_top = crate::elf::STACK_TOP - 1;
    for vma in aspace.vmas() {
        let (start, end) = (vma.start().as_u64(), vma.end().as_u64());
        let size = end - start;
        m.vm_size += size;
        if vma.flags().contains(VmaFlags::LOCKED) {
            m.vm_locked += size;
        }
        let anon = matches!(vma.backing(), Backing::Anonymous);
        if anon && (start..end).contains(&stack_top) {
            m.vm_stack += size;
        } else if vma.prot().exec() {
            // Linux `VmExe`: executable mappings; the first is the program's text.
            m.vm_exe += size;
            if m.start_code == 0 {
                (m.start_code, m.end_code) = (start, end);
            }
        } else if anon && vma.prot().write() {
            // Linux `VmData`: private writable, non-stack.
            m.vm_data += size;
        }
    }
    for c in aspace.smaps(mm).values() {
        m.rss.add(c);
    }
    m
}

/// `/proc/<pid>/stat`: one line, 52 fields, `comm` in parentheses (Linux `do_task_stat`).
pub fn stat(snap: &Snapshot) -> String {
    let m = mem_summary(snap);
    let rsslim = u64::MAX;
    let pid = snap.pid;
    // pgrp, session, tty_nr, tpgid: tty's process groups (`proc::pgrp`) and the console's
    // session (Linux prints tty_nr 0 and tpgid -1 without a controlling terminal).
    let (pgrp, session) = (snap.job.pgid, snap.job.sid);
    let (tty_nr, tpgid) = match crate::fs::tty::ctty_of_session(session) {
        Some((dev, fg)) => (dev, i64::from(fg)),
        None => (0, -1),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "{pid} ({}) {} {} {pgrp} {session} {tty_nr} {tpgid} {} {} {} 0 0 {} {} {} {} 20 0 {} 0 0 {} {} {rsslim} ",
        snap.name,
        snap.state,
        snap.ppid,
        // flags: PF_FORKNOEXEC etc. are not tracked; Linux's PF_EXITING for a zombie.
        if snap.state == 'Z' { 0x4 } else { 0 },
        m.minflt,
        snap.cminflt,
        snap.cpu.user,
        snap.cpu.system,
        snap.child_cpu.user,
        snap.child_cpu.system,
        snap.threads,
        m.vm_size,
        m.rss.rss / 4096,
    );
    let _ = writeln!(
        s,
        "{} {} {} 0 0 {} {} {} {} 0 0 0 {} 0 0 0 0 0 0 {} {} {} {} {} {} {} 0",
        m.start_code,
        m.end_code,
        // startstack: the argc word sits just below the strings; the strings' start is what
        // the layout records.
        m.arg_start,
        snap.sig_pending | snap.sig_shared,
        snap.sig_blocked,
        snap.sig_ignored,
        snap.sig_caught,
        snap.exit_signal,
        // start_data, end_data: the writable part after the text; not tracked apart.
        0,
        0,
        m.start_brk,
        m.arg_start,
        m.arg_end,
        m.arg_end,
        m.env_end,
    );
    s
}

/// `/proc/<pid>/statm`: sizes in pages: total, resident, shared (resident but not
/// anonymous), text, lib (always 0 since Linux 2.6), data (data plus stack) and dt (always 0),
/// as Linux `proc_pid_statm`; all zeros for a zombie.
pub fn statm(snap: &Snapshot) -> String {
    let m = mem_summary(snap);
    let page = |bytes: u64| bytes / 4096;
    alloc::format!(
        "{} {} {} {} 0 {} 0\n",
        page(m.vm_size),
        page(m.rss.rss),
        page(m.rss.rss - m.rss.anonymous),
        page(m.vm_exe),
        page(m.vm_data + m.vm_stack),
    )
}

/// `/proc/<pid>/status` (Linux `proc_pid_status`, the fields cowlab can fill).
pub fn status(snap: &Snapshot) -> String {
    let m = mem_summary(snap);
    let kb = |bytes: u64| bytes / 1024;
    let mut s = String::new();
    let _ = writeln!(s, "Name:\t{}", snap.name);
    let _ = writeln!(s, "Umask:\t{:04o}", snap.umask);
    let _ = writeln!(s, "State:\t{}", state_name(snap.state));
    let _ = writeln!(s, "Tgid:\t{}", snap.pid);
    let _ = writeln!(s, "Pid:\t{}", snap.pid);
    let _ = writeln!(s, "PPid:\t{}", snap.ppid);
    let _ = writeln!(s, "TracerPid:\t0");
    // Linux `task_state`: real, effective, saved set and filesystem ids (`proc::cred`).
    let c = &snap.cred;
    let _ = writeln!(s, "Uid:\t{}\t{}\t{}\t{}", c.uid, c.euid, c.suid, c.fsuid);
    let _ = writeln!(s, "Gid:\t{}\t{}\t{}\t{}", c.gid, c.egid, c.sgid, c.fsgid);
    let _ = write!(s, "Groups:\t");
    for (i, g) in c.groups().iter().enumerate() {
        let _ = write!(s, "{}{g}", if i == 0 { "" } else { " " });
    }
    // Linux keeps a trailing space after the list (empty or not).
    let _ = writeln!(s, " ");
    if snap.aspace.is_some() {
        for (key, bytes) in [
            ("VmSize:", m.vm_size),
            ("VmLck:", m.vm_locked),
            ("VmRSS:", m.rss.rss),
            ("RssAnon:", m.rss.anonymous),
            ("RssFile:", 0),
            ("RssShmem:", m.rss.rss - m.rss.anonymous),
            ("VmData:", m.vm_data),
            ("VmStk:", m.vm_stack),
            ("VmExe:", m.vm_exe),
            ("VmPTE:", m.pagetable_pages * 4096),
        ] {
            let _ = writeln!(s, "{key}\t{:>8} kB", kb(bytes));
        }
    }
    let _ = writeln!(s, "Threads:\t{}", snap.threads);
    let _ = writeln!(s, "SigQ:\t{}/{}", snap.sig_queued, snap.sig_queue_limit);
    for (key, mask) in [
        ("SigPnd:", snap.sig_pending),
        ("ShdPnd:", snap.sig_shared),
        ("SigBlk:", snap.sig_blocked),
        ("SigIgn:", snap.sig_ignored),
        ("SigCgt:", snap.sig_caught),
    ] {
        let _ = writeln!(s, "{key}\t{mask:016x}");
    }
    s
}

/// `/proc/<pid>/comm`: the name and a newline.
pub fn comm(snap: &Snapshot) -> String {
    let mut s = snap.name.clone();
    s.push('\n');
    s
}

/// `/proc/<pid>/cmdline`: the argument strings with their NULs, read from the process's own
/// memory (Linux `get_mm_cmdline`: what the program has written there since is what shows);
/// empty for a zombie.
pub fn cmdline(snap: &Snapshot) -> Result<Vec<u8>, Errno> {
    let Some(shared) = &snap.aspace else {
        return Ok(Vec::new());
    };
    // A hold that lets go to fill a file page (the arguments may lie in a file mapping a
    // program pointed them at), as the other GUP callers.
    let mut hold = crate::gup_hold::ReschedHold::for_fills(shared);
    let layout = cowlab_mm::gup::MmapHold::aspace(&mut hold)
        .exec_layout()
        .clone();
    let len = layout
        .arg_end
        .saturating_sub(layout.arg_start)
        .min(64 * 1024) as usize;
    let mut buf = alloc::vec![0u8; len];
    let n = cowlab_mm::gup::access_process_vm_read_held(
        memory::mm(),
        &mut hold,
        VirtAddr::new(layout.arg_start),
        &mut buf,
    )
    .unwrap_or(0);
    buf.truncate(n);
    Ok(buf)
}

/// `/proc/<pid>/smaps`: each `maps` line followed by its numbers (Linux `show_smap`);
/// `maps_lines` are the `maps` file's lines, one per VMA in the same order.
pub fn smaps(snap: &Snapshot, maps_text: &str) -> String {
    let Some(shared) = &snap.aspace else {
        return String::new();
    };
    // Each VMA's start, size, whether it is locked and its page size, in `maps` order.
    type VmaRow = (VirtAddr, u64, bool, u64);
    let (counts, vmas): (BTreeMap<VirtAddr, SmapsCounts>, Vec<VmaRow>) = {
        let aspace = shared.read_ptl();
        let vmas = aspace
            .vmas()
            .map(|v| {
                (
                    v.start(),
                    v.end().as_u64() - v.start().as_u64(),
                    v.flags().contains(VmaFlags::LOCKED),
                    // A hugetlb VMA's `KernelPageSize`/`MMUPageSize` are its page size (Linux
                    // `vma_kernel_pagesize`): 2 MiB or 1 GiB.
                    v.huge_bytes().unwrap_or(4096),
                )
            })
            .collect();
        (aspace.smaps(memory::mm()), vmas)
    };
    let mut s = String::new();
    for (line, (start, size, locked, page)) in maps_text.lines().zip(vmas) {
        s.push_str(line);
        s.push('\n');
        let c = counts.get(&start).copied().unwrap_or_default();
        smaps_block(&mut s, Some((size, page)), &c);
        let _ = writeln!(s, "VmFlags: rd{}", if locked { " lo" } else { "" });
    }
    s
}

/// `/proc/<pid>/smaps_rollup`: the sums over every VMA under one header line.
pub fn smaps_rollup(snap: &Snapshot) -> String {
    let mut total = SmapsCounts::default();
    let mut range = (0, 0);
    if let Some(shared) = &snap.aspace {
        let aspace = shared.read_ptl();
        for c in aspace.smaps(memory::mm()).values() {
            total.add(c);
        }
        let first = aspace.vmas().next().map_or(0, |v| v.start().as_u64());
        let last = aspace.vmas().last().map_or(0, |v| v.end().as_u64());
        range = (first, last);
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:08x}-{:08x} ---p 00000000 00:00 0{:>27}[rollup]",
        range.0, range.1, ""
    );
    smaps_block(&mut s, None, &total);
    s
}

fn smaps_block(s: &mut String, size: Option<(u64, u64)>, c: &SmapsCounts) {
    let kb = |bytes: u64| bytes / 1024;
    let mut rows: Vec<(&str, u64)> = Vec::new();
    if let Some((size, page)) = size {
        rows.push(("Size:", size));
        rows.push(("KernelPageSize:", page));
        rows.push(("MMUPageSize:", page));
    }
    rows.extend([
        ("Rss:", c.rss),
        ("Pss:", c.pss()),
        ("Shared_Clean:", c.shared_clean),
        ("Shared_Dirty:", c.shared_dirty),
        ("Private_Clean:", c.private_clean),
        ("Private_Dirty:", c.private_dirty),
        ("Referenced:", c.referenced),
        ("Anonymous:", c.anonymous),
        ("AnonHugePages:", c.anon_huge),
        // hugetlb pages, never in Rss (Linux prints these two after the PMD-mapped lines).
        ("Shared_Hugetlb:", c.shared_hugetlb),
        ("Private_Hugetlb:", c.private_hugetlb),
        ("Swap:", 0),
        ("Locked:", c.locked()),
    ]);
    for (key, bytes) in rows {
        let _ = writeln!(s, "{key:<16}{:>8} kB", kb(bytes));
    }
}

/// The target of `/proc/<pid>/exe`: the path exec loaded.
pub fn exe(snap: &Snapshot) -> Result<String, Errno> {
    let shared = snap.aspace.as_ref().ok_or(Errno::ENOENT)?;
    let exe = shared.read_ptl().exec_layout().exe.clone();
    exe.map(|p| String::from(&*p)).ok_or(Errno::ENOENT)
}

/// The target of `/proc/<pid>/cwd`.
pub fn cwd(snap: &Snapshot) -> String {
    snap.cwd
        .as_deref()
        .map_or_else(|| String::from("/"), String::from)
}

/// `/proc/cowlab/trace`: a `tracing 0|1` line, then one line per recorded fault, oldest
/// first: `seq pid kind address decision rule` (pid 0: the address space has gone).
pub fn fault_trace() -> String {
    let spaces: Vec<(Pid, vm::SharedAddressSpace)> = TABLE
        .lock()
        .values()
        .filter(|t| t.tid == t.tgid)
        .filter_map(|t| Some((t.tgid, t.aspace.clone()?)))
        .collect();
    // The roots, each address space locked alone (never under the table's lock).
    let roots: Vec<(u64, Pid)> = spaces
        .iter()
        .map(|(pid, a)| (a.read_ptl().root().as_u64(), *pid))
        .collect();
    let mut s = String::new();
    let _ = writeln!(s, "tracing {}", u8::from(memory::mm().trace.enabled()));
    for e in memory::mm().trace.events() {
        let pid = roots
            .iter()
            .find(|(root, _)| *root == e.root.as_u64())
            .map_or(0, |&(_, pid)| pid);
        let kind = match e.kind {
            cowlab_mm::fault::FaultKind::Read => "read",
            cowlab_mm::fault::FaultKind::Write => "write",
            cowlab_mm::fault::FaultKind::Exec => "exec",
            cowlab_mm::fault::FaultKind::Unshare => "unshare",
        };
        let _ = writeln!(
            s,
            "{} {pid} {kind} {:#x} {} {}",
            e.seq,
            e.addr.as_u64(),
            e.decision.name(),
            e.rule.name()
        );
    }
    s
}
