//! The per-process `/proc` views, read and parsed as `ps`, `top` and `free`-style programs do:
//! `/proc/self/stat` (52 fields, `comm` in parentheses), `status` (`VmRSS` following the pages
//! the program touches, `VmLck`, `Threads`, `State`, `PPid`), `smaps` and `smaps_rollup`
//! (`Rss`, `Pss`, `Anonymous`, shared/private after fork, `Locked`), `cmdline`, `comm` and
//! `prctl(PR_SET_NAME)`, the links `/proc/self`, `exe` and `cwd`, and a zombie child's `stat`.
//! Every check holds on the host Linux too.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cowlab_userland::calls::*;
use cowlab_userland::sys::{errno, getpid, getppid, Errno};
use cowlab_userland::test::{on_cowlab, Tester};

cowlab_userland::entry!(main);

const PAGE: usize = 4096;
const PR_SET_NAME: usize = 15;
const PR_GET_NAME: usize = 16;
const MLOCK: usize = 149;
const PRCTL: usize = 157;
const GETUID: usize = 102;
const SETSID: usize = 112;
const GETPGID: usize = 121;
const GETSID: usize = 124;

/// The whole file, or `None` if it cannot be opened.
fn slurp(path: &str) -> Option<Vec<u8>> {
    let mut cpath = Vec::from(path.as_bytes());
    cpath.push(0);
    let fd = open(core::ffi::CStr::from_bytes_with_nul(&cpath).ok()?, O_RDONLY).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Small reads: a reader must get the whole text in pieces at increasing offsets.
    loop {
        match read(fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let _ = close(fd);
    Some(out)
}

/// The names a directory lists (`getdents64` in small batches), or `None` if it cannot be
/// opened as one.
fn dir_names(path: &str) -> Option<Vec<String>> {
    let mut cpath = Vec::from(path.as_bytes());
    cpath.push(0);
    let fd = open(
        core::ffi::CStr::from_bytes_with_nul(&cpath).ok()?,
        O_RDONLY | O_DIRECTORY,
    )
    .ok()?;
    let mut names = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = getdents64(fd, &mut buf) {
        if n == 0 {
            break;
        }
        let mut at = 0;
        while at + 19 < n {
            let reclen = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            names.push(String::from_utf8_lossy(&name[..len]).into_owned());
            at += reclen;
        }
    }
    let _ = close(fd);
    Some(names)
}

fn text(path: &str) -> String {
    String::from_utf8(slurp(path).unwrap_or_default()).unwrap_or_default()
}

/// The fields of a `stat` line: pid, comm (without parentheses), then fields 3..52, as `ps`
/// splits it (the name may hold spaces and parentheses: it ends at the last `)`).
fn stat_fields(line: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
        return Vec::new();
    };
    let mut f = Vec::new();
    f.push(String::from(line[..open].trim()));
    f.push(String::from(&line[open + 1..close]));
    f.extend(line[close + 1..].split_whitespace().map(String::from));
    f
}

/// `Key:   1234 kB` of a status/smaps text, in kB.
fn kb_of(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .and_then(|l| {
            l[key.len() + 1..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
}

/// The value of `Key:\tvalue` in status.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))
        .map(|l| l[key.len() + 1..].trim())
}

/// The smaps block of the VMA starting at `start`.
fn smaps_block(smaps: &str, start: usize) -> String {
    let head = format!("{start:08x}-");
    let mut out = String::new();
    let mut inside = false;
    for line in smaps.lines() {
        let is_header = line
            .split_once('-')
            .is_some_and(|(a, _)| !a.is_empty() && a.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_header {
            inside = line.starts_with(&head);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn readlink_str(path: &core::ffi::CStr) -> Result<String, Errno> {
    let mut buf = [0u8; 512];
    // SAFETY: the path is NUL-terminated and `buf` is valid for its length.
    let n = unsafe {
        raw(
            89,
            [
                path.as_ptr() as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            ],
        )
    }?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn prctl(option: usize, arg: usize) -> Result<usize, Errno> {
    // SAFETY: the options used pass a pointer to a 16-byte buffer or a NUL-terminated string.
    unsafe { raw(PRCTL, [option, arg, 0, 0, 0, 0]) }
}

/// `pages` read-write pages between two `PROT_NONE` guard pages, so the VMA never merges
/// with a neighbour (the allocator's heap mappings would otherwise grow it).
fn fenced(pages: usize) -> usize {
    let base = mmap(0, (pages + 2) * PAGE, 0, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    let _ = mprotect(base + PAGE, pages * PAGE, PROT_READ | PROT_WRITE);
    base + PAGE
}

/// `/proc/self/cowlab`'s counters: faults, copies, reuses, unshares.
fn cow_counts() -> Option<[u64; 4]> {
    let text = text("/proc/self/cowlab");
    let mut out = [0u64; 4];
    for (i, key) in ["faults", "copies", "reuses", "unshares"]
        .iter()
        .enumerate()
    {
        out[i] = text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())?;
    }
    Some(out)
}

fn touch(addr: usize, pages: usize) {
    for i in 0..pages {
        // SAFETY: the pages lie in a fresh private read-write mapping of this program.
        unsafe { core::ptr::write_volatile((addr + i * PAGE) as *mut u8, 1) };
    }
}

fn main() -> i32 {
    let mut t = Tester::new("t_procview");
    let pid = getpid();

    // stat: the exact layout.
    let stat = text("/proc/self/stat");
    let f = stat_fields(stat.trim_end());
    t.eq("stat has 52 fields", f.len(), 52);
    if f.len() == 52 {
        t.eq("stat pid", f[0].parse::<i32>().ok(), Some(pid));
        t.eq("stat comm", f[1].as_str(), "t_procview");
        t.eq("stat state R", f[2].as_str(), "R");
        t.eq("stat ppid", f[3].parse::<i32>().ok(), Some(getppid()));
        t.eq("stat num_threads", f[19].as_str(), "1");
        // SAFETY: integer arguments only (getpgid(0), getsid(0)).
        let (pgrp, sid) = unsafe { (raw(GETPGID, [0; 6]), raw(GETSID, [0; 6])) };
        t.eq(
            "stat pgrp is getpgid(0)",
            f[4].parse::<usize>().ok(),
            pgrp.ok(),
        );
        t.eq(
            "stat session is getsid(0)",
            f[5].parse::<usize>().ok(),
            sid.ok(),
        );
        let vsize: u64 = f[22].parse().unwrap_or(0);
        let rss: u64 = f[23].parse().unwrap_or(0);
        t.check_why("stat vsize and rss", vsize > 0 && rss > 0, &stat);
        t.eq("stat exit_signal SIGCHLD", f[37].as_str(), "17");
        let minflt: u64 = f[9].parse().unwrap_or(0);
        t.eq(
            "stat minflt matches getrusage",
            Ok(minflt as i64),
            minflt_self_after(minflt),
        );
    }

    // status: identity lines.
    let status = text("/proc/self/status");
    t.eq("status Name", field(&status, "Name"), Some("t_procview"));
    t.check_why(
        "status State R",
        field(&status, "State").is_some_and(|s| s.starts_with("R")),
        &status,
    );
    t.eq(
        "status Pid",
        field(&status, "Pid"),
        Some(format!("{pid}").as_str()),
    );
    t.eq(
        "status PPid",
        field(&status, "PPid"),
        Some(format!("{}", getppid()).as_str()),
    );
    t.eq("status Threads", field(&status, "Threads"), Some("1"));
    // SAFETY: getuid takes no arguments.
    let uid = unsafe { raw(GETUID, [0; 6]) }.unwrap_or(usize::MAX);
    t.check_why(
        "status Uid is getuid four times",
        field(&status, "Uid").is_some_and(|u| u.split_whitespace().all(|x| x == format!("{uid}"))),
        field(&status, "Uid").unwrap_or(""),
    );
    t.check_why(
        "status SigQ n/limit",
        field(&status, "SigQ").is_some_and(|q| q.split_once('/').is_some()),
        field(&status, "SigQ").unwrap_or(""),
    );

    // VmRSS follows touched pages: 32 new pages are 128 kB.
    let before = kb_of(&text("/proc/self/status"), "VmRSS").unwrap_or(0);
    let size_before = kb_of(&text("/proc/self/status"), "VmSize").unwrap_or(0);
    let region = fenced(64);
    let status = text("/proc/self/status");
    t.eq(
        "VmSize grows by the mapping",
        kb_of(&status, "VmSize"),
        Some(size_before + 256 + 8),
    );
    let mid = kb_of(&status, "VmRSS").unwrap_or(0);
    t.check_why(
        "an untouched mapping adds no VmRSS",
        mid <= before + 8,
        format_args!("{before} -> {mid}"),
    );
    touch(region, 32);
    let after = kb_of(&text("/proc/self/status"), "VmRSS").unwrap_or(0);
    // A few pages of slack: the reads above may have grown the heap or stack by a page.
    t.check_why(
        "VmRSS grows by the 32 touched pages",
        after >= mid + 128 && after <= mid + 128 + 16,
        format_args!("{mid} kB -> {after} kB"),
    );

    // smaps of the region: 32 private dirty anonymous pages.
    let block = smaps_block(&text("/proc/self/smaps"), region);
    t.eq("smaps Size", kb_of(&block, "Size"), Some(256));
    t.eq("smaps Rss", kb_of(&block, "Rss"), Some(128));
    t.eq("smaps Pss", kb_of(&block, "Pss"), Some(128));
    t.eq("smaps Anonymous", kb_of(&block, "Anonymous"), Some(128));
    t.eq(
        "smaps Private_Dirty",
        kb_of(&block, "Private_Dirty"),
        Some(128),
    );
    t.eq("smaps Shared_Dirty", kb_of(&block, "Shared_Dirty"), Some(0));
    t.eq("smaps Referenced", kb_of(&block, "Referenced"), Some(128));
    t.eq("smaps Locked", kb_of(&block, "Locked"), Some(0));
    let rollup = text("/proc/self/smaps_rollup");
    let total = kb_of(&rollup, "Rss").unwrap_or(0);
    t.check_why(
        "smaps_rollup Rss covers the region and equals VmRSS",
        total >= 128
            && kb_of(&text("/proc/self/status"), "VmRSS").is_some_and(|v| v.abs_diff(total) <= 8),
        format_args!("rollup {total} kB"),
    );

    // After fork the pages are mapped twice: shared, half the Pss each.
    let [r, w] = pipe().unwrap_or([-1, -1]);
    match fork() {
        Ok(0) => {
            let mut b = [0u8; 1];
            let _ = read(r, &mut b);
            exit_now(0);
        }
        Ok(child) => {
            let block = smaps_block(&text("/proc/self/smaps"), region);
            let shared = kb_of(&block, "Shared_Dirty").unwrap_or(0)
                + kb_of(&block, "Shared_Clean").unwrap_or(0);
            t.eq("after fork the region is shared", shared, 128);
            t.eq("after fork Pss halves", kb_of(&block, "Pss"), Some(64));
            let child_status = text(&format!("/proc/{child}/status"));
            t.eq(
                "the child's PPid is us",
                field(&child_status, "PPid"),
                Some(format!("{pid}").as_str()),
            );
            // The child blocks in read soon after fork.
            let mut state = String::new();
            for _ in 0..2000 {
                state = String::from(
                    field(&text(&format!("/proc/{child}/status")), "State").unwrap_or(""),
                );
                if state.starts_with('S') {
                    break;
                }
                sleep_ms(1).ok();
            }
            t.check_why(
                "the blocked child sleeps",
                state.starts_with("S (sleeping)"),
                &state,
            );
            let _ = write(w, b"x");
            // The child exits; until reaped it is a zombie.
            let mut state = String::new();
            for _ in 0..2000 {
                let f = stat_fields(text(&format!("/proc/{child}/stat")).trim_end());
                state = f.get(2).cloned().unwrap_or_default();
                if state == "Z" {
                    break;
                }
                sleep_ms(1).ok();
            }
            t.eq("an exited, unreaped child is Z", state.as_str(), "Z");
            t.eq("reaped", waitpid(child, 0).map(|(p, _)| p), Ok(child));
            t.check(
                "a reaped child has no /proc entry",
                slurp(&format!("/proc/{child}/stat")).is_none(),
            );
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }
    let _ = close(r);
    let _ = close(w);

    // /proc lists every process as a directory (how `ps` finds them), /proc/<pid>/ its files.
    let root = dir_names("/proc").unwrap_or_default();
    let me = format!("{pid}");
    t.check_why(
        "/proc lists our pid, self and meminfo",
        root.contains(&me)
            && root.iter().any(|n| n == "self")
            && root.iter().any(|n| n == "meminfo"),
        format_args!("{root:?}"),
    );
    t.check_why(
        "/proc lists our parent",
        root.contains(&format!("{}", getppid())),
        format_args!("{root:?}"),
    );
    let own = dir_names(&format!("/proc/{pid}")).unwrap_or_default();
    t.check_why(
        "/proc/<pid>/ lists stat, status, cmdline, maps, exe",
        ["stat", "status", "cmdline", "maps", "exe"]
            .iter()
            .all(|n| own.iter().any(|o| o == n)),
        format_args!("{own:?}"),
    );
    t.check(
        "/proc/self/ is the same directory",
        dir_names("/proc/self/").is_some_and(|n| n.iter().any(|o| o == "smaps_rollup")),
    );
    t.check(
        "/proc/999999/ is not a directory",
        dir_names("/proc/999999").is_none(),
    );

    // cowlab's per-process COW counters (no such file on Linux): a fork child writing pages the
    // parent still maps copies them; the parent writing them after the child is gone reuses
    // them in place.
    if on_cowlab() {
        let pages = 8;
        let area = fenced(pages);
        touch(area, pages);
        let before = cow_counts().unwrap_or_default();
        match fork() {
            Ok(0) => {
                let start = cow_counts();
                touch(area, pages);
                let end = cow_counts();
                let ok = match (start, end) {
                    (Some(a), Some(b)) => {
                        b[1] - a[1] >= pages as u64 && b[0] - a[0] >= b[1] - a[1] && b[2] >= a[2]
                    }
                    _ => false,
                };
                exit_now(if ok { 0 } else { 1 });
            }
            Ok(child) => {
                let r = waitpid(child, 0);
                t.check_why(
                    "cowlab: the child's writes to shared pages count as faults and copies",
                    r.is_ok_and(|(_, s)| wifexited(s) && wexitstatus(s) == 0),
                    format_args!("{r:?}"),
                );
                let mid = cow_counts().unwrap_or_default();
                touch(area, pages);
                let after = cow_counts().unwrap_or_default();
                t.check_why(
                    "cowlab: the parent's writes after the child exited are reuses",
                    after[2] - mid[2] >= pages as u64 && after[0] - mid[0] >= pages as u64,
                    format_args!("{before:?} {mid:?} {after:?}"),
                );
                t.check_why(
                    "cowlab: the counters of another pid read the same way",
                    text(&format!("/proc/{pid}/cowlab")).starts_with("faults "),
                    "",
                );
            }
            Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
        }
        let _ = munmap(area - PAGE, (pages + 2) * PAGE);
    }

    // A new session: its own group and session, no controlling terminal (tty_nr 0, tpgid -1).
    match fork() {
        Ok(0) => {
            // SAFETY: no arguments.
            let sid = unsafe { raw(SETSID, [0; 6]) };
            let f = stat_fields(text("/proc/self/stat").trim_end());
            let me = format!("{}", getpid());
            let ok = sid.is_ok()
                && f.len() == 52
                && f[4] == me
                && f[5] == me
                && f[6] == "0"
                && f[7] == "-1";
            exit_now(if ok { 0 } else { 1 });
        }
        Ok(child) => {
            let r = waitpid(child, 0);
            t.check_why(
                "after setsid stat shows pgrp = session = pid, tty_nr 0, tpgid -1",
                r.is_ok_and(|(_, s)| wifexited(s) && wexitstatus(s) == 0),
                format_args!("{r:?}"),
            );
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }

    // mlock: VmLck and Locked.
    let locked = fenced(4);
    // SAFETY: mlock takes an address range of this program's mapping.
    let ml = unsafe { raw(MLOCK, [locked, 4 * PAGE, 0, 0, 0, 0]) };
    t.eq("mlock", ml, Ok(0));
    t.eq(
        "status VmLck",
        kb_of(&text("/proc/self/status"), "VmLck"),
        Some(16),
    );
    let block = smaps_block(&text("/proc/self/smaps"), locked);
    t.eq(
        "smaps Locked of an mlocked VMA",
        kb_of(&block, "Locked"),
        Some(16),
    );
    t.eq(
        "smaps Rss of an mlocked VMA",
        kb_of(&block, "Rss"),
        Some(16),
    );

    // cmdline: the arguments with their NULs.
    let mut want = Vec::new();
    for a in cowlab_userland::args() {
        want.extend_from_slice(a.to_bytes());
        want.push(0);
    }
    t.eq("cmdline is argv", slurp("/proc/self/cmdline"), Some(want));

    // comm and PR_SET_NAME / PR_GET_NAME.
    t.eq("comm", text("/proc/self/comm").as_str(), "t_procview\n");
    t.eq(
        "PR_SET_NAME",
        prctl(PR_SET_NAME, c"cowview".as_ptr() as usize),
        Ok(0),
    );
    let mut name = [0xffu8; 16];
    t.eq(
        "PR_GET_NAME",
        prctl(PR_GET_NAME, name.as_mut_ptr() as usize),
        Ok(0),
    );
    t.eq(
        "PR_GET_NAME gives the name and a NUL",
        &name[..8],
        b"cowview\0",
    );
    t.eq(
        "comm after PR_SET_NAME",
        text("/proc/self/comm").as_str(),
        "cowview\n",
    );
    t.eq(
        "status Name after PR_SET_NAME",
        field(&text("/proc/self/status"), "Name"),
        Some("cowview"),
    );
    let long = c"a-name-longer-than-fifteen";
    t.eq(
        "PR_SET_NAME cuts at 15 bytes",
        prctl(PR_SET_NAME, long.as_ptr() as usize),
        Ok(0),
    );
    t.eq(
        "comm is 15 bytes",
        text("/proc/self/comm").as_str(),
        "a-name-longer-t\n",
    );
    t.eq(
        "PR_SET_NAME from an unmapped address",
        prctl(PR_SET_NAME, 8),
        Err(Errno(errno::EFAULT)),
    );
    t.eq(
        "PR_GET_NAME to an unmapped address",
        prctl(PR_GET_NAME, 8),
        Err(Errno(errno::EFAULT)),
    );

    // The links.
    t.eq(
        "/proc/self is the pid",
        readlink_str(c"/proc/self"),
        Ok(format!("{pid}")),
    );
    let exe = readlink_str(c"/proc/self/exe").unwrap_or_default();
    t.check_why("exe names this program", exe.ends_with("/t_procview"), &exe);
    let mut cwd = [0u8; 512];
    // SAFETY: getcwd writes at most `cwd.len()` bytes.
    let n = unsafe { raw(79, [cwd.as_mut_ptr() as usize, cwd.len(), 0, 0, 0, 0]) }.unwrap_or(1);
    let cwd = String::from_utf8_lossy(&cwd[..n - 1]).into_owned();
    t.eq(
        "cwd link is getcwd",
        readlink_str(c"/proc/self/cwd"),
        Ok(cwd),
    );
    // fd/: one link per open descriptor, naming the path it was opened by.
    let null = open(c"/dev/null", O_RDONLY).unwrap_or(-1);
    let [pr, pw] = pipe().unwrap_or([-1, -1]);
    let fds = dir_names("/proc/self/fd").unwrap_or_default();
    t.check_why(
        "/proc/self/fd lists the open descriptors",
        [null, pr, pw]
            .iter()
            .all(|fd| fds.contains(&format!("{fd}"))),
        format_args!("{fds:?}"),
    );
    let link = |fd: i32| {
        let mut path = Vec::from(format!("/proc/self/fd/{fd}").as_bytes());
        path.push(0);
        core::ffi::CStr::from_bytes_with_nul(&path)
            .map_err(|_| Errno(errno::EINVAL))
            .and_then(readlink_str)
    };
    t.eq(
        "fd link of /dev/null",
        link(null),
        Ok(String::from("/dev/null")),
    );
    let pipe_link = link(pr).unwrap_or_default();
    t.check_why(
        "fd link of a pipe is pipe:[ino]",
        pipe_link.starts_with("pipe:[")
            && pipe_link.ends_with(']')
            && link(pw) == Ok(pipe_link.clone()),
        &pipe_link,
    );
    // A high descriptor: the listing's own directory descriptor takes the lowest free one.
    let high = dup2(null, 40).unwrap_or(-1);
    let _ = close(null);
    let _ = close(high);
    t.eq(
        "a closed descriptor has no link",
        link(high),
        Err(Errno(errno::ENOENT)),
    );
    t.check_why(
        "a closed descriptor is not listed",
        !dir_names(&format!("/proc/{pid}/fd"))
            .unwrap_or_default()
            .contains(&format!("{high}")),
        format_args!("{high}"),
    );
    let _ = close(pr);
    let _ = close(pw);
    t.eq(
        "a pid that does not exist",
        slurp("/proc/999999/stat").is_none(),
        true,
    );
    if cowlab_userland::test::on_cowlab() {
        fault_trace(&mut t, pid);
    }
    t.finish()
}

/// `/proc/cowlab/trace` (cowlab only): off by default; on, a first write is a new page decided
/// by `do_anonymous_page`, a child's write after fork a copy decided by `wp_can_reuse`; off
/// again, nothing more is recorded.
fn fault_trace(t: &mut Tester, pid: i32) {
    let first = text("/proc/cowlab/trace");
    t.eq(
        "trace is off by default",
        first.lines().next(),
        Some("tracing 0"),
    );
    let set = |v: &[u8]| -> Result<usize, Errno> {
        let fd = open(c"/proc/cowlab/trace", O_WRONLY)?;
        let r = write(fd, v);
        let _ = close(fd);
        r
    };
    t.eq("trace on", set(b"1"), Ok(1));
    t.eq(
        "trace rejects other values",
        set(b"x"),
        Err(Errno(errno::EINVAL)),
    );
    let page = fenced(1);
    touch(page, 1);
    match fork() {
        Ok(0) => {
            touch(page, 1);
            exit_now(0);
        }
        Ok(child) => {
            let _ = waitpid(child, 0);
            let trace = text("/proc/cowlab/trace");
            let addr = format!("{page:#x}");
            let me = format!(" {pid} write {addr} new-page do_anonymous_page");
            t.check_why(
                "the first write: new-page by do_anonymous_page",
                trace.contains(&me),
                &trace,
            );
            let kid = format!(" {child} write {addr} copy wp_can_reuse=");
            // The child's entry names its pid only while it lived: the reaped child's address
            // space is gone, so its faults show pid 0.
            let kid0 = format!(" 0 write {addr} copy wp_can_reuse=");
            t.check_why(
                "the child's write after fork: a copy by wp_can_reuse",
                trace.contains(&kid) || trace.contains(&kid0),
                &trace,
            );
        }
        Err(e) => t.check_why("fork", false, format_args!("{e:?}")),
    }
    t.eq("trace off", set(b"0"), Ok(1));
    let before = text("/proc/cowlab/trace").lines().count();
    touch(fenced(1), 1);
    let after = text("/proc/cowlab/trace");
    t.eq("nothing recorded while off", after.lines().count(), before);
    t.eq(
        "trace reads as off",
        after.lines().next(),
        Some("tracing 0"),
    );
}

/// `getrusage(RUSAGE_SELF)`'s minflt if it is at least `seen` (faults only grow).
fn minflt_self_after(seen: u64) -> Result<i64, Errno> {
    let now = minflt(0)?;
    Ok(if now as u64 >= seen { seen as i64 } else { now })
}
