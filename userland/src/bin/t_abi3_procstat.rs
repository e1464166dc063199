//! `/proc/stat`, `/proc/uptime`, `/proc/loadavg` and `/proc/<pid>/statm` in Linux's formats
//! (what BusyBox `top`, `uptime` and `free` parse), with counters that move as they should:
//! the summed `cpu` line equals its `cpuN` lines, ticks accrue while we sleep and spin,
//! `ctxt` grows as we sleep, `processes` by a fork, `btime` plus the uptime is now, the last
//! pid in `loadavg` is at least our child's, and `statm`'s resident pages grow as we touch
//! memory; `/proc/mounts` (what `df` and `mount` read) lists `/` and `/proc`, six fields a
//! line, the same as `/proc/self/mounts`, each known type agreeing with `statfs` of its mount
//! point. The same assertions on the host Linux.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use cowlab_userland::calls::*;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

fn text(path: &core::ffi::CStr) -> String {
    let mut buf = alloc::vec![0u8; 64 * 1024];
    let n = read_file(path, &mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into()
}

/// The numbers after the first word of the line starting with `key` followed by a space.
fn row(stat: &str, key: &str) -> Option<Vec<u64>> {
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))?;
    line.split_whitespace()
        .skip(1)
        .map(|w| w.parse().ok())
        .collect()
}

fn total(stat: &str) -> u64 {
    row(stat, "cpu").map_or(0, |r| r.iter().sum())
}

fn realtime_secs() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: clock_gettime(CLOCK_REALTIME) writes one timespec.
    let _ = unsafe { raw(228, [0, ts.as_mut_ptr() as usize, 0, 0, 0, 0]) };
    ts[0] as u64
}

/// Seconds as hundredths from `NN.NN`.
fn centis(w: &str) -> Option<u64> {
    let (i, f) = w.split_once('.')?;
    (f.len() == 2).then_some(())?;
    Some(i.parse::<u64>().ok()? * 100 + f.parse::<u64>().ok()?)
}

fn main() -> i32 {
    let mut t = Tester::new("t_abi3_procstat");
    let s1 = text(c"/proc/stat");
    t.check_why("stat starts with 'cpu  '", s1.starts_with("cpu  "), &s1);
    let cpu = row(&s1, "cpu").unwrap_or_default();
    t.eq("cpu line has 10 counters", cpu.len(), 10);
    let ncpu = text(c"/proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let per: Vec<Vec<u64>> = (0..ncpu)
        .filter_map(|i| row(&s1, &alloc::format!("cpu{i}")))
        .collect();
    t.check_why(
        "one cpuN line of 10 counters per processor",
        ncpu >= 1 && per.len() == ncpu && per.iter().all(|r| r.len() == 10),
        alloc::format!("{ncpu} processors, {} lines", per.len()),
    );
    // Read at nearly the same moment: the sum may run a tick or two per CPU ahead on Linux.
    let sums_ok = (0..10).all(|f| {
        let sum: u64 = per.iter().map(|r| r[f]).sum();
        cpu.get(f)
            .is_some_and(|&c| c.abs_diff(sum) <= 2 * ncpu as u64)
    });
    t.check_why("cpu is the sum of the cpuN lines", sums_ok, &s1);
    for key in [
        "intr",
        "ctxt",
        "btime",
        "processes",
        "procs_running",
        "procs_blocked",
    ] {
        t.check_why(
            &alloc::format!("{key} line"),
            row(&s1, key).is_some_and(|r| !r.is_empty()),
            &s1,
        );
    }
    let first = |s: &str, k: &str| row(s, k).and_then(|r| r.first().copied()).unwrap_or(0);
    t.check("procs_running counts us", first(&s1, "procs_running") >= 1);
    let up = text(c"/proc/uptime");
    let upw: Vec<Option<u64>> = up.split_whitespace().map(centis).collect();
    t.check_why(
        "uptime: two NN.NN numbers",
        upw.len() == 2 && upw.iter().all(Option::is_some),
        &up,
    );
    let up1 = upw.first().copied().flatten().unwrap_or(0);
    let skew = (first(&s1, "btime") + up1 / 100).abs_diff(realtime_secs());
    t.check_why(
        "btime + uptime is now",
        skew <= 2,
        alloc::format!("{skew} s off"),
    );

    // Sleep 300 ms: every CPU's ticks advance (idle or someone else's), ctxt grows.
    let _ = sleep_ms(300);
    let s2 = text(c"/proc/stat");
    let grown = total(&s2).saturating_sub(total(&s1));
    t.check_why(
        "cpu ticks advance while we sleep",
        grown >= 20 * ncpu as u64,
        alloc::format!("{grown} ticks in 300 ms on {ncpu} CPUs"),
    );
    t.check(
        "ctxt grows across a sleep",
        first(&s2, "ctxt") > first(&s1, "ctxt"),
    );
    let up2 = text(c"/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(centis)
        .unwrap_or(0);
    t.check_why(
        "uptime advances by the sleep",
        up2 >= up1 + 29,
        alloc::format!("{up1} -> {up2}"),
    );
    // Spin in user mode until 10 user ticks accrue, for at most 5 s: a loaded host (or a VM
    // whose virtual CPU the hypervisor descheduled) may give us no CPU for a few hundred
    // milliseconds, so a fixed 300 ms spin was flaky there; a kernel that never charges user
    // time still fails.
    let user = |s: &str| row(s, "cpu").and_then(|r| r.first().copied()).unwrap_or(0);
    let deadline = monotonic_ns() + 5_000_000_000;
    let mut x = 0u64;
    let mut s3 = text(c"/proc/stat");
    while user(&s3) < user(&s2) + 10 && monotonic_ns() < deadline {
        let end = monotonic_ns() + 50_000_000;
        while monotonic_ns() < end {
            for _ in 0..100_000 {
                x = core::hint::black_box(x.wrapping_add(1));
            }
        }
        s3 = text(c"/proc/stat");
    }
    t.check_why(
        "user ticks accrue while we spin",
        user(&s3) >= user(&s2) + 10,
        alloc::format!("{} -> {}", user(&s2), user(&s3)),
    );

    // A fork counts in `processes` and its pid is at most loadavg's last pid.
    let child = fork().unwrap_or(-1);
    if child == 0 {
        exit_now(0);
    }
    let la = text(c"/proc/loadavg");
    let _ = waitpid(child, 0);
    let s4 = text(c"/proc/stat");
    t.check(
        "processes counts the fork",
        first(&s4, "processes") > first(&s3, "processes"),
    );
    let w: Vec<&str> = la.split_whitespace().collect();
    let loads_ok = w.len() == 5 && w[..3].iter().all(|x| centis(x).is_some());
    t.check_why("loadavg: three averages", loads_ok, &la);
    let rt = w
        .get(3)
        .and_then(|x| x.split_once('/'))
        .and_then(|(r, n)| Some((r.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
    t.check_why(
        "loadavg: running/total",
        rt.is_some_and(|(r, n)| r >= 1 && n >= r),
        &la,
    );
    let last = w.get(4).and_then(|x| x.parse::<i32>().ok()).unwrap_or(0);
    t.check_why(
        "loadavg: last pid is at least our child's",
        last >= child,
        alloc::format!("{last} < {child}"),
    );

    // statm: 7 fields in pages; resident grows by the pages we touch.
    let statm = |t: &mut Tester| -> Vec<u64> {
        let s = text(c"/proc/self/statm");
        let v: Vec<u64> = s
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        t.check_why("statm has 7 numbers", v.len() == 7, &s);
        v
    };
    let m1 = statm(&mut t);
    let len = 2 << 20;
    let p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS).unwrap_or(0);
    for off in (0..len).step_by(4096) {
        // SAFETY: inside the fresh private mapping.
        unsafe { core::ptr::write_volatile((p + off) as *mut u8, 1) };
    }
    let m2 = statm(&mut t);
    let g = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
    t.check_why(
        "statm size grows by the 512-page mapping",
        g(&m2, 0) >= g(&m1, 0) + 512,
        alloc::format!("{m1:?} -> {m2:?}"),
    );
    t.check_why(
        "statm resident grows by the touched pages",
        g(&m2, 1) >= g(&m1, 1) + 500,
        alloc::format!("{m1:?} -> {m2:?}"),
    );
    t.check_why(
        "statm: resident <= size, lib and dt 0",
        g(&m2, 1) <= g(&m2, 0) && g(&m2, 4) == 0 && g(&m2, 6) == 0,
        alloc::format!("{m2:?}"),
    );
    let _ = munmap(p, len);

    // BusyBox top reads all of the above (it failed "can't open 'stat'" before).
    if stat(c"/bin/busybox").is_ok() {
        let (out, status) = run(&[b"/bin/busybox", b"top", b"-b", b"-n", b"1"]);
        t.check_why(
            "busybox top -b -n 1 exits 0",
            wifexited(status) && wexitstatus(status) == 0,
            alloc::format!("status {status:#x}: {out}"),
        );
        t.check_why(
            "top shows the CPU and load lines",
            out.contains("CPU:") && out.contains("Load average:") && out.contains("PID"),
            &out,
        );
    }
    mounts(&mut t);
    t.finish()
}

/// `/proc/mounts`: the table `df` and `mount` read (BusyBox's `df` printed only its header
/// without it).
fn mounts(t: &mut Tester) {
    let table = text(c"/proc/mounts");
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    t.check_why(
        "/proc/mounts: six fields a line, ending in 0 0",
        !lines.is_empty()
            && lines
                .iter()
                .all(|f| f.len() == 6 && f[4] == "0" && f[5] == "0"),
        &table,
    );
    t.check_why(
        "/proc/mounts lists / and /proc (type proc)",
        lines.iter().any(|f| f[1] == "/")
            && lines.iter().any(|f| f[1] == "/proc" && f[2] == "proc"),
        &table,
    );
    t.check_why(
        "/proc/self/mounts is /proc/mounts",
        text(c"/proc/self/mounts") == table,
        &table,
    );
    // statfs of each mount point whose type has a known magic number (one we may not reach,
    // as a host's private mounts, is skipped).
    let magic = |fstype: &str| match fstype {
        "ext2" | "ext3" | "ext4" => Some(0xef53),
        "tmpfs" | "devtmpfs" => Some(0x0102_1994),
        "proc" => Some(0x9fa0),
        "ramfs" => Some(0x8584_58f6),
        "debugfs" => Some(0x6462_6720),
        "sysfs" => Some(0x6265_6572),
        _ => None,
    };
    let mut checked = 0;
    let mut wrong = Vec::new();
    for f in &lines {
        let (Some(want), Ok(path)) = (magic(f[2]), alloc::ffi::CString::new(f[1])) else {
            continue;
        };
        if let Ok(st) = statfs(&path) {
            checked += 1;
            if st.f_type != want {
                wrong.push(alloc::format!("{} {} f_type {:#x}", f[1], f[2], st.f_type));
            }
        }
    }
    t.check_why(
        "each listed type agrees with statfs of its mount point",
        checked >= 2 && wrong.is_empty(),
        alloc::format!("{checked} checked, wrong: {wrong:?}"),
    );
}

/// Runs `argv` with stdout and stderr on a pipe: its output and wait status.
fn run(argv: &[&[u8]]) -> (String, i32) {
    let [r, w] = pipe().expect("pipe");
    let pid = fork().expect("fork");
    if pid == 0 {
        let _ = dup2(w, 1);
        let _ = dup2(w, 2);
        let _ = close(r);
        let _ = close(w);
        let _ = cowlab_userland::process::exec(argv);
        exit_now(127);
    }
    let _ = close(w);
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n @ 1..) = read(r, &mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    let _ = close(r);
    let status = waitpid(pid, 0).map_or(-1, |(_, s)| s);
    (String::from_utf8_lossy(&out).into(), status)
}
