//! The userland test tier: each test program (`t_*`, and the C programs) booted as
//! `init -- <program>` in QEMU, and the same ELF run natively on the host as a cross-check
//! that the test itself is right.
//!
//! In QEMU a program passes when it prints its closing `<name>: N passed, 0 failed` line, the
//! kernel then reports `cowlab: frames free=<n> boot=<n>` with both counts equal (every frame the
//! processes used is back), and QEMU exits with status 0 (init powers off with the program's
//! status). One line per program and per check of the frame count; a failing program shows its
//! `FAIL` lines and the log's tail, and the next program still runs (each has its own boot).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::qemu::{Machine, Next, QemuExit, Session};

/// What one QEMU boot of a test program showed.
#[derive(Debug, Default)]
pub struct Verdict {
    pub summary: Option<(u32, u32)>,
    pub failures: Vec<String>,
    pub frames: Option<(u64, u64)>,
    pub exit: Option<QemuExit>,
    pub timed_out: bool,
}

/// Parses `<prog>: N passed, M failed`.
pub fn parse_summary(line: &str, program: &str) -> Option<(u32, u32)> {
    let rest = line.strip_prefix(program)?.strip_prefix(": ")?;
    let (passed, rest) = rest.split_once(" passed, ")?;
    let failed = rest.strip_suffix(" failed")?;
    Some((passed.trim().parse().ok()?, failed.trim().parse().ok()?))
}

/// A failed check: `PROGRAM: FAIL ...`, or a TAP `not ok N - ...` line (the suites in TAP form,
/// `userland/src/test.rs` `Tap`).
pub fn is_failure_line(line: &str, program: &str) -> bool {
    line.strip_prefix(program)
        .is_some_and(|rest| rest.starts_with(": FAIL"))
        || line.starts_with("not ok ")
}

/// Parses `cowlab: frames free=<n> boot=<n>`.
pub fn parse_frames(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("cowlab: frames free=")?;
    let (free, boot) = rest.split_once(" boot=")?;
    Some((free.trim().parse().ok()?, boot.trim().parse().ok()?))
}

/// Boots `machine` (whose command line names the program) and collects the verdict.
pub fn run_in_qemu(
    machine: &Machine,
    qemu: &Path,
    kernel_elf: &Path,
    log: &Path,
    program: &str,
    timeout: Duration,
) -> Result<Verdict> {
    let mut session = Session::start(machine, qemu, kernel_elf, log)?;
    let mut verdict = Verdict::default();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            session.kill("userland test timeout");
            verdict.timed_out = true;
            return Ok(verdict);
        }
        match session.next_line(left)? {
            Next::Line(line) => {
                if let Some(summary) = parse_summary(&line, program) {
                    verdict.summary = Some(summary);
                } else if let Some(frames) = parse_frames(&line) {
                    verdict.frames = Some(frames);
                } else if is_failure_line(&line, program) {
                    verdict.failures.push(line);
                }
            }
            Next::Exited(exit) => {
                verdict.exit = Some(exit);
                return Ok(verdict);
            }
            Next::Silent => {
                session.kill("userland test timeout");
                verdict.timed_out = true;
                return Ok(verdict);
            }
        }
    }
}

/// Runs `path` natively; `Ok(summary)` if it exited 0 with its summary line.
pub fn run_on_host(path: &Path, program: &str, timeout: Duration) -> Result<(u32, u32)> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(path)
        .arg0(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", path.display()))?;
    // Read stdout on a thread so a chatty program cannot fill the pipe and stall.
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    let status = crate::qemu::wait_until(&mut child, Some(Instant::now() + timeout))?;
    let Some(status) = status else {
        let _ = child.kill();
        anyhow::bail!("did not exit within {} s", timeout.as_secs());
    };
    let text = reader.join().unwrap_or_default();
    let summary = text.lines().find_map(|l| parse_summary(l, program));
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| is_failure_line(l, program))
        .collect();
    anyhow::ensure!(
        status.success(),
        "exited with {status}; failures: {failures:?}"
    );
    summary.with_context(|| format!("no summary line; output: {text:?}"))
}

/// Test programs that run only in QEMU, never natively on the host. `t_fuzz` calls system
/// calls with random arguments: on the host, as root in CI, that creates files with random
/// names in the working directory and could change resource limits or descriptors of other
/// processes. Its point is the cowlab kernel's robustness, which the host cannot cross-check.
/// `t_vda` and `t_dio` read and write `/dev/vda`, which on a host may be a real disk.
const QEMU_ONLY: &[&str] = &[
    "t_fuzz",
    "t_vda",
    "t_dio",
    "t_limits",
    "t_exhaust",
    "t_hung",
    // pc2: fills the filesystem it runs in (on a host, a real disk shared with everything).
    "t_pc2_enospc",
    // pcfix3: fills the filesystem it runs in, as t_pc2_enospc.
    "t_pc3_dioenospc",
    // smpirq: O_DIRECT reads of /dev/vda, as t_dio.
    "t_irq_route",
];

/// Test programs booted again under older rule sets (SEMANTICS.md section 9), as
/// `era=YYYY -- PROGRAM era=YYYY`: with that argument they assert the era's historical
/// behaviour (t_dio: the seed-003 fork/O_DIRECT races reappear; docs/dma.md; t_seed002: the
/// seed-002 lost write; docs/file-memory.md).
const ERA_RUNS: &[(&str, &[u32])] = &[
    ("t_dio", &[2009, 2016, 2020, 2022]),
    // Seed 002: under 2022 a long-term write pin of a shared ext2 page loses a write.
    ("t_seed002", &[2022]),
];

/// Boots (by label) whose root image is a writable copy, checked with `e2fsck -fn` after the
/// program ends: the file three times memory (issue 12) must leave a consistent filesystem.
const PERSIST_RUNS: &[&str] = &["t_pagecache big mem=16"];

/// Does the boot labelled `label` run on a persistent copy of the root image, fsck'ed after?
pub fn persists(label: &str) -> bool {
    PERSIST_RUNS.contains(&label)
}

/// Further boots of a program with other kernel options: (program, label, command line).
/// `t_kheap exhaust` fills a small kernel heap with memfds until ENOMEM; `t_hung` with a 1 s
/// hung-task threshold must make the watchdog report its held read ([`console_expectation`]);
/// `t_pagecache big` with 16 MiB of frames streams a 48 MiB file through the page cache.
const OPTION_RUNS: &[(&str, &str, &str)] = &[
    // mthp (issue 14): cow.c's mTHP memory types, three boots so each stays short.
    ("t_cow", "t_cow mthp=16,32", "-- t_cow mthp=16,32"),
    ("t_cow", "t_cow mthp=64,128", "-- t_cow mthp=64,128"),
    (
        "t_cow",
        "t_cow mthp=256,512,1024",
        "-- t_cow mthp=256,512,1024",
    ),
    // huge3 (issue 14): 1 GiB hugetlb pages, two reserved at boot (a 4 GiB guest:
    // `own_mem_mib`); `1G`: only the 1 GiB checks.
    (
        "t_hugetlb",
        "t_hugetlb 1G",
        "hugepagesz=1G hugepages=2 -- t_hugetlb 1G",
    ),
    (
        "t_kheap",
        "t_kheap exhaust kheap=8",
        "kheap=8 -- t_kheap exhaust",
    ),
    ("t_hung", "t_hung hung_task=1", "hung_task=1 -- t_hung"),
    // rob3: user-sized kernel-heap allocations (exec arguments, getdents, maps, poll) on a
    // small heap end in ENOMEM, never a panic.
    (
        "t_rob3_heap",
        "t_rob3_heap exhaust kheap=8",
        "kheap=8 -- t_rob3_heap exhaust",
    ),
    // rob3: with 64 MiB of frames a kernel-mode fault on a user copy runs the OOM killer.
    (
        "t_rob3_heap",
        "t_rob3_heap kfault mem=64",
        "mem=64 -- t_rob3_heap kfault",
    ),
    // abi2: arguments with spaces, quotes, non-ASCII text, or empty, quoted on the command line
    // as `compose_cmdline` quotes them (checked by its test).
    ("t_abi2_args", "t_abi2_args quoted", T_ABI2_ARGS_LINE),
    // ... and through BusyBox's `sh -c` (init finds `sh` in /bin), which passes "$@" on.
    (
        "t_abi2_args",
        "t_abi2_args via sh -c",
        r#"-- sh -c "exec /t_abi2_args \"$@\"" t_abi2_args sh -c "ls | wc -l" "" "two  spaces" "q\"uo'te\\" "grüße ☃" """#,
    ),
    // dcow (issue 16): Dirty COW and seed 003 bug 1 racing on real CPUs, no HOLD ioctl: they
    // must happen under the old eras with tasks on 2+ CPUs (the tier's --smp), never under
    // 2023 (the default boot) or a later rule set than the bug's.
    (
        "t_dcow_race",
        "t_dcow_race era=2009 smp_sched=1",
        "smp_sched=1 era=2009 -- t_dcow_race era=2009 expect_cpus=2",
    ),
    (
        "t_dcow_race",
        "t_dcow_race era=2016 smp_sched=1",
        "smp_sched=1 era=2016 -- t_dcow_race era=2016 expect_cpus=2",
    ),
    (
        "t_dcow_dio",
        "t_dcow_dio era=2009 smp_sched=1",
        "smp_sched=1 era=2009 -- t_dcow_dio era=2009 expect_cpus=2",
    ),
    (
        "t_dcow_dio",
        "t_dcow_dio era=2022 smp_sched=1",
        "smp_sched=1 era=2022 -- t_dcow_dio era=2022 expect_cpus=2",
    ),
    // dcowfix: /proc/<pid>/mem's reader holds the last reference when the target exits or
    // execs during the let-go; the frame check after the boot is the assertion.
    (
        "t_dcow_memexit",
        "t_dcow_memexit smp_sched=1",
        "smp_sched=1 -- t_dcow_memexit expect_cpus=2",
    ),
    // nobkl: the default boot resolves anonymous faults without the big lock (and checks its
    // count grew); this one the old way, every fault under the lock (and none without it).
    (
        "t_nobkl_fault",
        "t_nobkl_fault fault_bkl=1",
        "fault_bkl=1 -- t_nobkl_fault expect_unlocked=0",
    ),
    // A file three times memory through the page cache (clean pages reclaimed, frames back).
    // 16 MiB of frames, a 48 MiB file: 32 and 96 took 70 s of guest time under TCG.
    (
        "t_pagecache",
        "t_pagecache big mem=16",
        "mem=16 -- t_pagecache big",
    ),
    // pcache3 (issue 12): the page cache over blocks of 1 KiB (four to a page), on the
    // 1 KiB-block variant of the root image (`root_bs=1024`: xtask attaches it instead and
    // takes the token off the kernel's line); the program checks the block size it got.
    (
        "t_pc3_smallblk",
        "t_pc3_smallblk root_bs=1024",
        "root_bs=1024 -- t_pc3_smallblk . 1024",
    ),
    // pcfix4 (issue 12): a dirty page's store past its blocks (the size grown past it, or
    // write(2) over part of it) takes page_mkwrite; it shows with 1 KiB blocks.
    (
        "t_pc4_isize",
        "t_pc4_isize root_bs=1024",
        "root_bs=1024 -- t_pc4_isize . 1024",
    ),
    // fuzzhang: init holds a 64 MiB memfd until it powers off; its last close, on init's own
    // exit path, frees in batches with pauses, and the power-off must not cut one short (the
    // frame count at the end: 15,872 frames short before the fix).
    (
        "t_fuzz3_killsleep",
        "t_fuzz3_killsleep hold_memfd=64",
        "-- hold_memfd=64 t_fuzz3_killsleep",
    ),
];

/// Kernel options of a program's own (first) boot. `t_exhaust` fills the machine's memory twice
/// (the OOM hog, then a process touching more than RAM): 256 MiB of frames make the same points
/// as the whole 1 GiB (21/21, the OOM killer's lines alike) with a quarter of the page touching.
const OWN_BOOT_OPTIONS: &[(&str, &str)] = &[("t_exhaust", "mem=256")];

/// Programs whose every boot has at least this many CPUs whatever `--smp` says (`qemu::Machine`
/// asks [`own_cpus`]): the `t_dcow_*` races need tasks on two CPUs (their `expect_cpus=2`
/// fails a boot that has fewer).
const OWN_CPUS: &[(&str, u32)] = &[
    ("t_dcow_race", 2),
    ("t_dcow_dio", 2),
    ("t_dcow_memexit", 2),
    ("t_sched_cpus", 2),
    ("t_smp2_groupstop", 2),
    // nobkl: faults without the big lock race munmap/mprotect/fork on another CPU.
    ("t_nobkl_fault", 2),
    // pcache3: an O_DIRECT write growing a file races ftruncate on another CPU.
    ("t_pc3_dirace", 2),
    // smpirq: completions follow the submitting CPU while another CPU faults.
    ("t_irq_route", 2),
    // smp7: the SMP stress program, a thread pinned to each of 4 CPUs (issue 16's done-when).
    ("t_smp3_stress", 4),
];

/// The least RAM (MiB) of a boot with kernel command line `cmdline` (0: the default): a boot
/// that reserves N 1 GiB hugetlb pages (`hugepagesz=1G hugepages=N` before `--`) gets N + 2
/// GiB, so that N 1 GiB-aligned free gigabytes exist beside the kernel's first one and a
/// gigabyte is left for everything else (huge3: t_hugetlb's and t_cow's 1 GiB runs).
pub fn own_mem_mib(cmdline: &str) -> u32 {
    let options = cmdline.split_once("--").map_or(cmdline, |(o, _)| o);
    let mut gigantic = false;
    let mut pages = 0;
    // Linux's rule: `hugepages=` counts pages of the size the last `hugepagesz=` named.
    for token in options.split_whitespace() {
        if let Some(size) = token.strip_prefix("hugepagesz=") {
            gigantic = matches!(size, "1G" | "1g" | "1024M" | "1048576K" | "1048576k");
        } else if let Some(n) = token.strip_prefix("hugepages=") {
            if gigantic {
                pages = n.parse::<u32>().unwrap_or(0).min(60);
            }
        }
    }
    if pages == 0 {
        0
    } else {
        (pages + 2) * 1024
    }
}

/// The least CPU count of a boot with kernel command line `cmdline` (1 if its program has no
/// entry in [`OWN_CPUS`]).
pub fn own_cpus(cmdline: &str) -> u32 {
    let program = cmdline
        .split_once("-- ")
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .next()
        .unwrap_or("");
    OWN_CPUS
        .iter()
        .find(|(name, _)| *name == program)
        .map_or(1, |&(_, cpus)| cpus)
}

/// The command line `cargo xtask qemu -- t_abi2_args ARGS` makes for `t_abi2_args`'s EXPECTED.
const T_ABI2_ARGS_LINE: &str =
    r#"-- t_abi2_args sh -c "ls | wc -l" "" "two  spaces" "q\"uo'te\\" "grüße ☃" """#;

/// Console text a boot (by label) must show besides its program's checks: the watchdog's
/// report is printed by the kernel, which the program cannot see.
pub fn console_expectation(label: &str) -> Option<&'static str> {
    match label {
        "t_hung hung_task=1" => {
            Some("(t_hung) blocked uninterruptibly for more than 1s waiting for a /dev/vda request")
        }
        _ => None,
    }
}

/// Console text a boot (by label) must show exactly once: the kernel logs each unknown
/// system-call number once however often it is called (`t_abi2_enosys` calls them repeatedly).
pub fn console_once(label: &str) -> &'static [&'static str] {
    match label {
        "t_abi2_enosys" => &[
            "unknown system call 400 (",
            "unknown system call 1000 (",
            "unknown system call 1001 (",
        ],
        _ => &[],
    }
}

/// The boots of `program` in the programs tier: (label, kernel command line). The first is the
/// default rule set (with [`OWN_BOOT_OPTIONS`]); then one per older era the program checks, then [`OPTION_RUNS`].
pub fn boots(program: &str) -> Vec<(String, String)> {
    let options = OWN_BOOT_OPTIONS
        .iter()
        .find(|(name, _)| *name == program)
        .map_or_else(String::new, |(_, options)| format!("{options} "));
    let mut out = vec![(program.to_owned(), format!("{options}-- {program}"))];
    for (name, label, cmdline) in OPTION_RUNS {
        if *name == program {
            out.push(((*label).to_owned(), (*cmdline).to_owned()));
        }
    }
    for (name, eras) in ERA_RUNS {
        if *name == program {
            for era in *eras {
                out.push((
                    format!("{program} era={era}"),
                    format!("era={era} -- {program} era={era}"),
                ));
            }
        }
    }
    out
}

/// Whether `program` may run natively on the host Linux as a cross-check.
pub fn runs_on_host(program: &str) -> bool {
    !QEMU_ONLY.contains(&program)
}

/// The test programs among the built executables: Rust `t_*` and the C programs `c_*`.
pub fn test_programs(names: impl Iterator<Item = (String, PathBuf)>) -> Vec<(String, PathBuf)> {
    let mut tests: Vec<(String, PathBuf)> = names
        .filter(|(name, _)| name.starts_with("t_") || name.starts_with("c_"))
        .collect();
    tests.sort();
    tests
}

#[cfg(test)]
mod tests {
    #[test]
    fn t_abi2_args_line_is_what_compose_cmdline_makes() {
        let args = [
            "t_abi2_args",
            "sh",
            "-c",
            "ls | wc -l",
            "",
            "two  spaces",
            "q\"uo'te\\",
            "gr\u{fc}\u{df}e \u{2603}",
            "",
        ]
        .map(str::to_owned);
        assert_eq!(
            crate::qemu::compose_cmdline(None, &args).unwrap(),
            super::T_ABI2_ARGS_LINE
        );
    }

    use super::*;

    #[test]
    fn parses_summary_and_frames() {
        assert_eq!(
            parse_summary("t_mm: 37 passed, 0 failed", "t_mm"),
            Some((37, 0))
        );
        assert_eq!(parse_summary("t_mm: 3 passed, 2 failed", "t_pipe"), None);
        assert_eq!(parse_summary("t_mm: ok x", "t_mm"), None);
        assert_eq!(
            parse_frames("cowlab: frames free=254948 boot=254948"),
            Some((254948, 254948))
        );
        assert_eq!(parse_frames("cowlab: pid 3"), None);
    }

    #[test]
    fn failure_lines_plain_and_tap() {
        assert!(is_failure_line("t_mm: FAIL cow: got 1", "t_mm"));
        assert!(!is_failure_line("t_mm: ok cow", "t_mm"));
        assert!(is_failure_line(
            "not ok 3 - vmsplice() (base page) # leak",
            "t_cow"
        ));
        assert!(!is_failure_line("ok 3 - x # SKIP no gup_test", "t_cow"));
        assert!(!is_failure_line("t_pipe: FAIL x", "t_mm"));
    }

    #[test]
    fn older_eras_boot_with_the_era_token_and_argument() {
        assert_eq!(
            boots("t_mm"),
            vec![("t_mm".to_owned(), "-- t_mm".to_owned())]
        );
        assert_eq!(
            boots("t_kheap")[1],
            (
                "t_kheap exhaust kheap=8".to_owned(),
                "kheap=8 -- t_kheap exhaust".to_owned()
            )
        );
        assert_eq!(
            boots("t_hung")[1].1,
            "hung_task=1 -- t_hung",
            "the hung-task watchdog run"
        );
        assert!(console_expectation("t_hung hung_task=1").is_some());
        assert_eq!(boots("t_exhaust")[0].1, "mem=256 -- t_exhaust");
        assert_eq!(
            own_cpus("smp_sched=1 era=2009 -- t_dcow_race era=2009 expect_cpus=2"),
            2
        );
        assert_eq!(own_cpus("-- t_dcow_memexit"), 2);
        assert_eq!(own_cpus("mem=256 -- t_exhaust"), 1);
        assert_eq!(
            own_mem_mib("hugepagesz=1G hugepages=1 -- t_hugetlb gib"),
            3072
        );
        assert_eq!(
            own_mem_mib("hugepages=4 hugepagesz=1G -- t_x"),
            0,
            "2 MiB pages"
        );
        assert_eq!(own_mem_mib("-- t_hugetlb hugepagesz=1G hugepages=1"), 0);
        assert_eq!(own_cpus(""), 1);
        assert_eq!(console_expectation("t_hung"), None);
        let dio = boots("t_dio");
        assert_eq!(dio.len(), 5);
        assert_eq!(
            dio[1],
            (
                "t_dio era=2009".to_owned(),
                "era=2009 -- t_dio era=2009".to_owned()
            )
        );
    }
}
