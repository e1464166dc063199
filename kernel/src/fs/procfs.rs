//! `/proc`: the memory manager's per-process files (`/proc/<pid>/{pagemap,clear_refs,maps,mem}`,
//! `self` for the caller) and `/proc/meminfo` (Linux `fs/proc/task_mmu.c`, `base.c`,
//! `meminfo.c`), plus cowlab's own counters under `/proc/cowlab/`: `mmstat` (every field of
//! `cowlab_mm::stats::MmStats`, one `name value` line each, after an `era` line) and
//! `faultstat` (the per-fault-kind, per-phase totals of a kernel built with the `faultstat`
//! feature; the file does not exist without it).
//!
//! Model: an open proc file names a pid, not an address space; every read or write looks the
//! process up again (a zombie or reaped process answers `ESRCH`), locks its address space only
//! around the memory-manager call, and copies to or from the caller through a kernel buffer, so
//! no address-space lock is ever held across a user copy. Text files (`maps`, `meminfo`) are
//! generated whole on each read and sliced at the file offset.
#![deny(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use cowlab_mm::vma::{Backing, Sharing};
use cowlab_mm::{gup, MmError, VirtAddr};

use super::procpid;
use crate::errno::Errno;
use crate::gup_hold::ReschedHold;
use crate::proc::{current_pid, AspaceRef, Pid, TABLE};
use crate::{memory, vm};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProcWhat {
    Pagemap,
    ClearRefs,
    Maps,
    Mem,
    Meminfo,
    /// `/proc/cpuinfo` (`smp::cpuinfo`).
    Cpuinfo,
    /// `/proc/cowlab/mmstat`.
    MmStat,
    /// `/proc/cowlab/faultstat` (only with the `faultstat` feature).
    FaultStat,
    /// `/proc/cowlab/bklstat`: the big kernel lock's waits per CPU (`bklstat`).
    BklStat,
    /// `/proc/sys/vm/drop_caches` (write-only, as on Linux: `1`, `2` or `3`).
    DropCaches,
    /// `/proc/cowlab/trace`: the fault trace (`cowlab_mm::trace`); write 1 or 0 to switch it.
    Trace,
    /// `/proc/cowlab/race_window`: the test windows of `ext2_race` (read: state; write: arm).
    RaceWindow,
    /// `/proc/<pid>/{stat,status,cmdline,comm,smaps,smaps_rollup}` (`procpid`).
    Stat,
    Status,
    Cmdline,
    Comm,
    Smaps,
    SmapsRollup,
    /// `/proc/stat`, `/proc/uptime`, `/proc/loadavg` and `/proc/<pid>/statm` (`procstat`).
    SysStat,
    Uptime,
    Loadavg,
    Statm,
    /// `/proc/interrupts`: interrupts by line and CPU (`procstat::interrupts`).
    Interrupts,
    /// `/proc/<pid>/cowlab`: the process's COW fault outcomes (`cowlab_mm::cowstat`).
    Cowlab,
    /// `/proc/sys/vm/dirty_*`: the writeback tunables (`writeback::Tunable`; unit variants:
    /// the discriminant numbers the inode).
    DirtyExpire,
    DirtyWriteback,
    DirtyRatio,
    DirtyBytes,
    DirtyBackgroundRatio,
    DirtyBackgroundBytes,
    /// `/proc/sys/vm/nr_hugepages`: the hugetlb pool's persistent size (`cowlab_mm::hugetlb`).
    NrHugepages,
    /// `/proc/mounts`, `/proc/<pid>/mounts`: the mount table (`mount::mounts_table`; one
    /// mount namespace).
    Mounts,
}

/// An open `/proc` file.
pub struct ProcFile {
    pub pid: Pid,
    pub what: ProcWhat,
}

/// `/proc/...` paths: `None` if `path` is not under `/proc`.
pub fn lookup(path: &str) -> Option<Result<ProcFile, Errno>> {
    let rest = path.strip_prefix("/proc/")?;
    if rest == "meminfo" {
        return Some(Ok(ProcFile {
            pid: 0,
            what: ProcWhat::Meminfo,
        }));
    }
    match rest {
        "cpuinfo" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::Cpuinfo,
            }))
        }
        "mounts" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::Mounts,
            }))
        }
        "stat" | "uptime" | "loadavg" | "interrupts" => {
            let what = match rest {
                "stat" => ProcWhat::SysStat,
                "uptime" => ProcWhat::Uptime,
                "interrupts" => ProcWhat::Interrupts,
                _ => ProcWhat::Loadavg,
            };
            return Some(Ok(ProcFile { pid: 0, what }));
        }
        "sys/vm/drop_caches" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::DropCaches,
            }))
        }
        "sys/vm/nr_hugepages" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::NrHugepages,
            }))
        }
        _ if rest.starts_with("sys/vm/dirty_") => {
            use super::writeback::Tunable;
            if let Some(t) = Tunable::from_name(&rest[7..]) {
                let what = match t {
                    Tunable::ExpireCentisecs => ProcWhat::DirtyExpire,
                    Tunable::WritebackCentisecs => ProcWhat::DirtyWriteback,
                    Tunable::Ratio => ProcWhat::DirtyRatio,
                    Tunable::Bytes => ProcWhat::DirtyBytes,
                    Tunable::BackgroundRatio => ProcWhat::DirtyBackgroundRatio,
                    Tunable::BackgroundBytes => ProcWhat::DirtyBackgroundBytes,
                };
                return Some(Ok(ProcFile { pid: 0, what }));
            }
        }
        "cowlab/mmstat" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::MmStat,
            }))
        }
        "cowlab/trace" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::Trace,
            }))
        }
        "cowlab/race_window" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::RaceWindow,
            }))
        }
        "cowlab/bklstat" => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::BklStat,
            }))
        }
        "cowlab/faultstat" if cowlab_mm::faultstat::ENABLED => {
            return Some(Ok(ProcFile {
                pid: 0,
                what: ProcWhat::FaultStat,
            }))
        }
        _ => {}
    }
    let Some((who, name)) = rest.split_once('/') else {
        return Some(Err(Errno::ENOENT));
    };
    let pid = match who {
        "self" => current_pid(),
        n => match n.parse::<Pid>() {
            Ok(pid) => pid,
            Err(_) => return Some(Err(Errno::ENOENT)),
        },
    };
    // The process views describe zombies too (Linux shows them until reaped).
    let view = match name {
        "stat" => Some(ProcWhat::Stat),
        "status" => Some(ProcWhat::Status),
        "statm" => Some(ProcWhat::Statm),
        "cmdline" => Some(ProcWhat::Cmdline),
        "comm" => Some(ProcWhat::Comm),
        "smaps" => Some(ProcWhat::Smaps),
        "smaps_rollup" => Some(ProcWhat::SmapsRollup),
        "mounts" => Some(ProcWhat::Mounts),
        _ => None,
    };
    if let Some(what) = view {
        return Some(match procpid::snapshot(pid) {
            Ok(_) => Ok(ProcFile { pid, what }),
            Err(_) => Err(Errno::ENOENT),
        });
    }
    if aspace(pid).is_err() {
        return Some(Err(Errno::ENOENT));
    }
    let what = match name {
        "pagemap" => ProcWhat::Pagemap,
        "clear_refs" => ProcWhat::ClearRefs,
        "maps" => ProcWhat::Maps,
        "mem" => ProcWhat::Mem,
        "cowlab" => ProcWhat::Cowlab,
        _ => return Some(Err(Errno::ENOENT)),
    };
    // Linux `proc_mem_open`: another user's memory is not readable or writable.
    if matches!(what, ProcWhat::Mem) {
        if let Err(e) = super::procdir::may_inspect(pid) {
            return Some(Err(e));
        }
    }
    Some(Ok(ProcFile { pid, what }))
}

/// The target of a link under `/proc`: `self` (the caller's pid), `<pid>/exe` and
/// `<pid>/cwd`; `None` if `name` (below `/proc/`) is not one of them.
pub fn readlink(name: &str) -> Option<Result<String, Errno>> {
    if name == "self" {
        return Some(Ok(format!("{}", current_pid())));
    }
    let (who, link) = name.split_once('/')?;
    if let Some(fd) = link.strip_prefix("fd/") {
        let pid = super::procdir::pid_of(who)?;
        return Some(super::procdir::fd_link(pid, fd));
    }
    if link != "exe" && link != "cwd" {
        return None;
    }
    let pid = match who {
        "self" => current_pid(),
        n => n.parse::<Pid>().ok()?,
    };
    let snap = match procpid::snapshot(pid) {
        Ok(s) => s,
        Err(_) => return Some(Err(Errno::ENOENT)),
    };
    // Linux `proc_exe_link`/`proc_cwd_link` ask `proc_fd_access_allowed`.
    if let Err(e) = super::procdir::may_inspect(pid) {
        return Some(Err(e));
    }
    Some(match link {
        "exe" => procpid::exe(&snap),
        _ => Ok(procpid::cwd(&snap)),
    })
}

impl ProcFile {
    /// `/proc/<pid>/mem` offsets are addresses: any 64-bit value, kernel ones included, is a
    /// valid position (Linux `FMODE_UNSIGNED_OFFSET` and `mem_lseek`).
    pub fn unsigned_offsets(&self) -> bool {
        matches!(self.what, ProcWhat::Mem)
    }

    /// The permission bits of a `/proc/sys` file (root's, as Linux's sysctl tables give
    /// them): `drop_caches` write-only `0200`, the writeback intervals `0644`. An open is
    /// checked against them (`ProcDir::file`); `None` for the other files.
    pub fn sysctl_mode(&self) -> Option<u32> {
        match self.what {
            ProcWhat::DropCaches => Some(0o200),
            ProcWhat::DirtyExpire
            | ProcWhat::DirtyWriteback
            | ProcWhat::DirtyRatio
            | ProcWhat::DirtyBytes
            | ProcWhat::DirtyBackgroundRatio
            | ProcWhat::DirtyBackgroundBytes
            | ProcWhat::NrHugepages => Some(0o644),
            _ => None,
        }
    }

    /// Whether the file may be opened for writing.
    pub fn writable(&self) -> bool {
        matches!(
            self.what,
            ProcWhat::ClearRefs
                | ProcWhat::Mem
                | ProcWhat::DropCaches
                | ProcWhat::Trace
                | ProcWhat::RaceWindow
                | ProcWhat::DirtyExpire
                | ProcWhat::DirtyWriteback
                | ProcWhat::DirtyRatio
                | ProcWhat::DirtyBytes
                | ProcWhat::DirtyBackgroundRatio
                | ProcWhat::DirtyBackgroundBytes
                | ProcWhat::NrHugepages
        )
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        match self.what {
            ProcWhat::Pagemap => self.pagemap(offset, len),
            ProcWhat::ClearRefs => Err(Errno::EINVAL),
            ProcWhat::DropCaches => Err(Errno::EINVAL),
            ProcWhat::Maps => Ok(slice(self.maps()?, offset, len)),
            ProcWhat::Meminfo => Ok(slice(meminfo(), offset, len)),
            ProcWhat::Cpuinfo => Ok(slice(crate::smp::cpuinfo::text(), offset, len)),
            ProcWhat::MmStat => Ok(slice(mmstat(), offset, len)),
            ProcWhat::BklStat => Ok(slice(crate::bklstat::text(), offset, len)),
            ProcWhat::DirtyExpire
            | ProcWhat::DirtyWriteback
            | ProcWhat::DirtyRatio
            | ProcWhat::DirtyBytes
            | ProcWhat::DirtyBackgroundRatio
            | ProcWhat::DirtyBackgroundBytes => {
                let t = self.tunable().ok_or(Errno::EINVAL)?;
                Ok(slice(t.read(), offset, len))
            }
            ProcWhat::NrHugepages => {
                let n = memory::mm().frames().hugetlb_counts().persistent();
                Ok(slice(alloc::format!("{n}\n"), offset, len))
            }
            ProcWhat::FaultStat => Ok(slice(faultstat(), offset, len)),
            ProcWhat::Trace => Ok(slice(procpid::fault_trace(), offset, len)),
            ProcWhat::RaceWindow => Ok(slice(super::ext2_race::text(), offset, len)),
            ProcWhat::SysStat => Ok(slice(super::procstat::stat(), offset, len)),
            ProcWhat::Uptime => Ok(slice(super::procstat::uptime(), offset, len)),
            ProcWhat::Loadavg => Ok(slice(super::procstat::loadavg(), offset, len)),
            ProcWhat::Mounts => Ok(slice(super::mount::mounts_table(), offset, len)),
            ProcWhat::Interrupts => Ok(slice(super::procstat::interrupts(), offset, len)),
            ProcWhat::Stat
            | ProcWhat::Status
            | ProcWhat::Statm
            | ProcWhat::Cmdline
            | ProcWhat::Comm
            | ProcWhat::Smaps
            | ProcWhat::SmapsRollup => {
                let snap = procpid::snapshot(self.pid)?;
                let bytes = match self.what {
                    ProcWhat::Stat => procpid::stat(&snap).into_bytes(),
                    ProcWhat::Status => procpid::status(&snap).into_bytes(),
                    ProcWhat::Statm => procpid::statm(&snap).into_bytes(),
                    ProcWhat::Cmdline => procpid::cmdline(&snap)?,
                    ProcWhat::Comm => procpid::comm(&snap).into_bytes(),
                    ProcWhat::Smaps => {
                        let maps = if snap.aspace.is_some() {
                            self.maps()?
                        } else {
                            String::new()
                        };
                        procpid::smaps(&snap, &maps).into_bytes()
                    }
                    _ => procpid::smaps_rollup(&snap).into_bytes(),
                };
                Ok(slice_bytes(bytes, offset, len))
            }
            ProcWhat::Cowlab => {
                let c = aspace(self.pid)?.read_ptl().cow_counts();
                let text = format!(
                    "faults {}\ncopies {}\nreuses {}\nunshares {}\n",
                    c.faults, c.copies, c.reuses, c.unshares
                );
                Ok(slice(text, offset, len))
            }
            ProcWhat::Mem => {
                // An owner, not a bare clone: the target may exit or exec while the hold has
                // let go, and then this is the last reference and must tear the space down.
                let shared = AspaceRef::new(aspace(self.pid)?);
                let mut buf = alloc::vec![0u8; user_len(offset, len)?];
                let n = gup::access_process_vm_read_held(
                    memory::mm(),
                    &mut ReschedHold::new(&shared),
                    VirtAddr::new(user_addr(offset)?),
                    &mut buf,
                )
                .map_err(mem_error)?;
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    /// Writes `data` at `offset`; the bytes taken.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        match self.what {
            ProcWhat::ClearRefs => {
                let text = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
                match text.trim().parse::<u32>() {
                    // CLEAR_REFS_SOFT_DIRTY
                    Ok(4) => {
                        aspace(self.pid)?
                            .write()
                            .clear_refs_soft_dirty(memory::mm());
                        Ok(data.len())
                    }
                    _ => Err(Errno::EINVAL),
                }
            }
            ProcWhat::Trace => {
                match data.first() {
                    Some(b'1') => memory::mm().trace.set_enabled(true),
                    Some(b'0') => memory::mm().trace.set_enabled(false),
                    _ => return Err(Errno::EINVAL),
                }
                Ok(data.len())
            }
            ProcWhat::Mem => {
                // An owner: see the read side.
                let shared = AspaceRef::new(aspace(self.pid)?);
                // The Dirty COW window: the slow path lets the address space go between
                // the forced write's COW break and its retry (`gup_hold`).
                let n = gup::access_process_vm_write_held(
                    memory::mm(),
                    &mut ReschedHold::new(&shared),
                    VirtAddr::new(user_addr(offset)?),
                    &data[..user_len(offset, data.len())?],
                )
                .map_err(mem_error)?;
                Ok(n)
            }
            ProcWhat::DropCaches => drop_caches(data),
            ProcWhat::RaceWindow => super::ext2_race::write(data),
            _ if self.tunable().is_some() => self.tunable().ok_or(Errno::EINVAL)?.write(data),
            ProcWhat::NrHugepages => {
                let text = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
                let n = cowlab_mm::hugetlb::parse_nr_hugepages(text, true)
                    .map_err(|_| Errno::EINVAL)?;
                memory::mm().frames().hugetlb_set_max(n);
                Ok(data.len())
            }
            _ => Err(Errno::EBADF),
        }
    }

    /// The writeback tunable this file is, if it is one.
    fn tunable(&self) -> Option<super::writeback::Tunable> {
        use super::writeback::Tunable;
        Some(match self.what {
            ProcWhat::DirtyExpire => Tunable::ExpireCentisecs,
            ProcWhat::DirtyWriteback => Tunable::WritebackCentisecs,
            ProcWhat::DirtyRatio => Tunable::Ratio,
            ProcWhat::DirtyBytes => Tunable::Bytes,
            ProcWhat::DirtyBackgroundRatio => Tunable::BackgroundRatio,
            ProcWhat::DirtyBackgroundBytes => Tunable::BackgroundBytes,
            _ => return None,
        })
    }

    /// 8-byte entries, one per page from page `offset / 8` (Linux `pagemap_read`).
    fn pagemap(&self, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        if !offset.is_multiple_of(8) || !len.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        let first = offset / 8;
        let end_page = cowlab_mm::aspace::USER_END / 4096;
        let count = (len as u64 / 8)
            .min(end_page.saturating_sub(first))
            .min(8192);
        let shared = aspace(self.pid)?;
        let aspace = shared.read_ptl();
        let mut out = Vec::with_capacity(count as usize * 8);
        for page in first..first + count {
            let entry = aspace.pagemap_entry(memory::mm(), VirtAddr::new(page * 4096));
            out.extend_from_slice(&entry.to_le_bytes());
        }
        Ok(out)
    }

    /// Linux's `maps` lines: `start-end perms offset dev inode path`, where the path is the
    /// mapped file's (a memfd's `/memfd:NAME (deleted)`), or for anonymous memory `[heap]` (the
    /// VMA overlapping the brk area) and `[stack]` (the VMA holding the initial stack), as
    /// Linux `show_map_vma`.
    fn maps(&self) -> Result<String, Errno> {
        let shared = aspace(self.pid)?;
        let aspace = shared.read_ptl();
        let heap = aspace.brk_start().as_u64()..aspace.current_brk().as_u64();
        let stack_top = crate::elf::STACK_TOP - 1;
        let mut text = String::new();
        for vma in aspace.vmas() {
            let prot = vma.prot();
            let shared_map = vma.sharing() == Sharing::Shared;
            let (start, end) = (vma.start().as_u64(), vma.end().as_u64());
            let (dev, inode, name) = match vma.backing() {
                Backing::Anonymous if start < heap.end && end > heap.start => {
                    ("00:00", 0, String::from("[heap]"))
                }
                Backing::Anonymous if (start..end).contains(&stack_top) => {
                    ("00:00", 0, String::from("[stack]"))
                }
                Backing::Anonymous => ("00:00", 0, String::new()),
                Backing::Shmem(obj, _) => (
                    "00:01",
                    alloc::sync::Arc::as_ptr(obj) as u64 % 1_000_000,
                    obj.maps_name()
                        .unwrap_or_else(|| String::from("/memfd: (deleted)")),
                ),
                // The ext2 root (`fe:10`, vdb) and the inode; cowlab keeps no path per file.
                Backing::File(file, _) => ("fe:10", file.0.inode(), String::new()),
                // hugetlbfs (Linux's internal mount shows `00:0f`-like devices).
                Backing::Hugetlb(map) => (
                    "00:0f",
                    alloc::sync::Arc::as_ptr(map.file()) as u64 % 1_000_000,
                    String::from(map.file().name()),
                ),
            };
            let mut line = format!(
                "{:08x}-{:08x} {}{}{}{} {:08x} {} {} ",
                start,
                end,
                if prot.read() { 'r' } else { '-' },
                if prot.write() { 'w' } else { '-' },
                if prot.exec() { 'x' } else { '-' },
                if shared_map { 's' } else { 'p' },
                vma.file_offset(),
                dev,
                inode,
            );
            if !name.is_empty() {
                while line.len() < 73 {
                    line.push(' ');
                }
                line.push_str(&name);
            }
            line.push('\n');
            text.push_str(&line);
        }
        Ok(text)
    }
}

/// `/proc/meminfo` in Linux's format (`show_val_kb`).
fn meminfo() -> String {
    let stats = memory::mm().stats();
    let kb = |pages: u64| pages * 4;
    let mut text = String::new();
    // Clean file-cache pages are reclaimable (closed files keep theirs): Linux counts them in
    // MemAvailable and Cached, not in MemFree.
    let clean_file = stats.file_pages.saturating_sub(stats.file_dirty);
    for (key, pages) in [
        ("MemTotal:", stats.usable_frames),
        ("MemFree:", stats.free_frames),
        ("MemAvailable:", stats.free_frames + clean_file),
        ("Cached:", stats.file_pages + stats.shmem_pages),
        ("Dirty:", stats.file_dirty),
        ("AnonPages:", stats.anon_pages),
        (
            "AnonHugePages:",
            stats.anon_thps * cowlab_mm::folio::HPAGE_PMD_NR as u64,
        ),
        ("Shmem:", stats.shmem_pages),
        ("PageTables:", stats.pagetable_pages),
    ] {
        let _ = writeln!(text, "{key:<16}{:>8} kB", kb(pages));
    }
    let frames = memory::mm().frames();
    let gigantic = cowlab_mm::frame::HugeSize::Pud;
    let gigantic_kb = frames.hugetlb_counts_of(gigantic).total * gigantic.kib();
    cowlab_mm::hugetlb::meminfo_lines_sizes(frames.hugetlb_counts(), gigantic_kb, &mut text);
    text
}

/// `/proc/cowlab/mmstat`: the era, then every counter of [`cowlab_mm::stats::MmStats`] under
/// its field name. The destructuring names every field, so a counter added to `MmStats` does not
/// compile until it is listed here.
fn mmstat() -> String {
    let mm = memory::mm();
    let cowlab_mm::stats::MmStats {
        free_frames,
        usable_frames,
        anon_pages,
        zero_page_mappings,
        pagetable_pages,
        anon_faults,
        zero_page_faults,
        cow_copies,
        zero_page_copies,
        wp_reuses_exclusive,
        wp_reuses_proven,
        unshares,
        fork_pinned_copies,
        hugetlb_faults,
        hugetlb_cow_copies,
        forks,
        gup_pins_held,
        gup_refs_held,
        gup_slow_pages,
        gup_fast_pages,
        gup_fast_fallbacks,
        gup_fast_seq_retries,
        gup_unshare_faults,
        shmem_pages,
        shmem_faults,
        file_pages,
        file_dirty,
        file_faults,
        writenotify_faults,
        anon_thps,
        thp_fault_alloc,
        thp_fault_fallback,
        thp_split_pmd,
        thp_wp_splits,
        thp_fork_shared,
        fault_around_pages,
        // thp2 (issue 14)
        thp_zero_page_alloc,
        huge_zero_mappings,
        thp_split_page,
        deferred_split_queued,
        thp_collapse_alloc,
    } = mm.stats();
    let mut text = String::new();
    let _ = writeln!(text, "era {}", mm.era());
    for (name, value) in [
        ("free_frames", free_frames),
        ("usable_frames", usable_frames),
        ("anon_pages", anon_pages),
        ("zero_page_mappings", zero_page_mappings),
        ("pagetable_pages", pagetable_pages),
        ("anon_faults", anon_faults),
        ("zero_page_faults", zero_page_faults),
        ("cow_copies", cow_copies),
        ("zero_page_copies", zero_page_copies),
        ("wp_reuses_exclusive", wp_reuses_exclusive),
        ("wp_reuses_proven", wp_reuses_proven),
        ("unshares", unshares),
        ("fork_pinned_copies", fork_pinned_copies),
        ("hugetlb_faults", hugetlb_faults),
        ("hugetlb_cow_copies", hugetlb_cow_copies),
        ("forks", forks),
        ("gup_pins_held", gup_pins_held),
        ("gup_refs_held", gup_refs_held),
        ("gup_slow_pages", gup_slow_pages),
        ("gup_fast_pages", gup_fast_pages),
        ("gup_fast_fallbacks", gup_fast_fallbacks),
        ("gup_fast_seq_retries", gup_fast_seq_retries),
        ("gup_unshare_faults", gup_unshare_faults),
        ("shmem_pages", shmem_pages),
        ("shmem_faults", shmem_faults),
        ("file_pages", file_pages),
        ("file_dirty", file_dirty),
        ("file_faults", file_faults),
        ("writenotify_faults", writenotify_faults),
        ("anon_thps", anon_thps),
        ("thp_fault_alloc", thp_fault_alloc),
        ("thp_fault_fallback", thp_fault_fallback),
        ("thp_split_pmd", thp_split_pmd),
        ("thp_wp_splits", thp_wp_splits),
        ("thp_fork_shared", thp_fork_shared),
        ("fault_around_pages", fault_around_pages),
        (
            "writeback_pages",
            super::ext2_cache::WRITEBACK_PAGES.load(core::sync::atomic::Ordering::Relaxed),
        ),
        (
            "writeback_requests",
            super::ext2_cache::WRITEBACK_REQUESTS.load(core::sync::atomic::Ordering::Relaxed),
        ),
        (
            "disk_wait_tsc",
            super::ext2_cache::DISK_WAIT_TSC.load(core::sync::atomic::Ordering::Relaxed),
        ),
        (
            "dirty_throttled",
            super::ext2_throttle::THROTTLED.load(core::sync::atomic::Ordering::Relaxed),
        ),
        // pcache (issue 12): page-cache fills and page-lock waits.
        (
            "file_fills",
            cowlab_mm::pagecache::FILE_FILLS.load(core::sync::atomic::Ordering::Relaxed),
        ),
        (
            "background_writebacks",
            super::writeback::BACKGROUND_ROUNDS.load(core::sync::atomic::Ordering::Relaxed),
        ),
        (
            "page_lock_waits",
            cowlab_mm::pagecache::PAGE_LOCK_WAITS.load(core::sync::atomic::Ordering::Relaxed),
        ),
        // pcache3 (issue 12): fills and page_mkwrite calls that polled the filesystem.
        (
            "file_polled",
            cowlab_mm::pagecache::FILE_POLLED.load(core::sync::atomic::Ordering::Relaxed),
        ),
        // nobkl (issue 16): ring-3 faults resolved without the big kernel lock, and whether
        // that path is on (2+ CPUs, not `fault_bkl=1`).
        ("faults_unlocked", crate::fault_unlocked::resolved() as u64),
        (
            "fault_unlocked_path",
            u64::from(crate::bkl::unlocked_faults_in_use()),
        ),
        // thp2 (issue 14)
        ("thp_zero_page_alloc", thp_zero_page_alloc),
        ("huge_zero_mappings", huge_zero_mappings),
        ("thp_split_page", thp_split_page),
        ("deferred_split_queued", deferred_split_queued),
        ("thp_collapse_alloc", thp_collapse_alloc),
    ] {
        let _ = writeln!(text, "{name} {value}");
    }
    text
}

/// `/proc/cowlab/faultstat`: one line per fault kind with the fault count and the ticks spent
/// in each phase, then one `OPSTAT op=... count=... <phase>=<ticks>...` line per whole operation
/// (fork, GUP-fast: `cowlab_mm::opstat`); the same `FAULTSTAT`/`OPSTAT` lines the kernel
/// prints at power-off (`crate::faultstat`), so one parser reads both.
fn faultstat() -> String {
    let mut text = String::new();
    cowlab_mm::faultstat::for_each(|kind, count, phases| {
        let _ = write!(text, "FAULTSTAT kind={} count={count}", kind.name());
        for (phase, ticks) in phases {
            let _ = write!(text, " {}={ticks}", phase.name());
        }
        text.push('\n');
    });
    cowlab_mm::opstat::for_each(|op, count, phases| {
        let _ = write!(text, "OPSTAT op={} count={count}", op.name());
        for (phase, ticks) in phases {
            let _ = write!(text, " {}={ticks}", phase.name());
        }
        text.push('\n');
    });
    text
}

fn slice(text: String, offset: u64, len: usize) -> Vec<u8> {
    slice_bytes(text.into_bytes(), offset, len)
}

fn slice_bytes(bytes: Vec<u8>, offset: u64, len: usize) -> Vec<u8> {
    let start = (offset.min(bytes.len() as u64)) as usize;
    let end = start + len.min(bytes.len() - start);
    bytes[start..end].to_vec()
}

/// The part of `len` bytes at `offset` below the end of user space: an access across it moves
/// the bytes before it (Linux `mem_rw` stops where `access_remote_vm` finds no mapping).
fn user_len(offset: u64, len: usize) -> Result<usize, Errno> {
    let room = cowlab_mm::aspace::USER_END
        .checked_sub(offset)
        .filter(|&r| r > 0)
        .ok_or(Errno::EIO)?;
    Ok(len.min(usize::try_from(room).unwrap_or(usize::MAX)))
}

fn user_addr(offset: u64) -> Result<u64, Errno> {
    if offset >= cowlab_mm::aspace::USER_END {
        return Err(Errno::EIO);
    }
    Ok(offset)
}

/// `/proc/pid/mem` answers `EIO` where nothing can be accessed (Linux `mem_rw`).
fn mem_error(e: MmError) -> Errno {
    match e {
        MmError::NoMem => Errno::ENOMEM,
        _ => Errno::EIO,
    }
}

/// The address space of live process `pid`.
fn aspace(pid: Pid) -> Result<vm::SharedAddressSpace, Errno> {
    TABLE
        .lock()
        .get(&pid)
        .and_then(|p| p.aspace.clone())
        .ok_or(Errno::ESRCH)
}

/// `echo N > /proc/sys/vm/drop_caches` (Linux `drop_caches_sysctl_handler`, bounded 1..=4):
/// bit 1 frees the clean page-cache pages of every file (dirty ones stay: `sync` first); bit 2
/// (slab objects: Linux's `drop_slab` runs every shrinker) runs the deferred split of partly
/// unmapped THPs (`deferred_split_scan`), cowlab's only shrinker besides the page cache; 4
/// only silences Linux's log line; anything else is `EINVAL`.
fn drop_caches(data: &[u8]) -> Result<usize, Errno> {
    let text = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
    match text.trim().parse::<u32>() {
        Ok(n @ 1..=4) => {
            if n & 1 != 0 {
                super::ext2_cache::drop_caches();
            }
            if n & 2 != 0 {
                crate::memory::mm().deferred_split_scan();
            }
            Ok(data.len())
        }
        _ => Err(Errno::EINVAL),
    }
}
