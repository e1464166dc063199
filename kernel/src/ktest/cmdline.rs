//! Tests of the command line: read from fw_cfg at boot, and the token parser.
#![deny(unsafe_code)]

use super::{ensure, TestResult};
use cowlab_mm::Era;

use crate::cmdline::{self, KtestSelection};
use crate::fwcfg;
use crate::log::Level;

/// This boot was started with a `ktest` token through fw_cfg, so the device, the file and the
/// parse must all have worked.
pub fn cmdline_parsed_from_fw_cfg() -> TestResult {
    ensure!(
        fwcfg::present(),
        "no fw_cfg device answers with the QEMU signature"
    );
    let boot = cmdline::get();
    ensure!(
        boot.raw
            .split_whitespace()
            .any(|t| t == "ktest" || t.starts_with("ktest=")),
        "boot command line \"{}\" has no ktest token, yet tests are running",
        boot.raw
    );
    ensure!(
        boot.ktest.is_some(),
        "ktest token in \"{}\" was not parsed",
        boot.raw
    );
    let again = cmdline::parse(boot.raw);
    ensure!(
        again.ktest == boot.ktest,
        "re-parsing the boot line gives a different selection"
    );
    let mut buf = [0u8; 64];
    ensure!(
        fwcfg::read_file("opt/cowlab/no-such-file", &mut buf).is_none(),
        "fw_cfg lookup of a missing file found something"
    );
    Ok(())
}

/// The tokens of docs/architecture.md, on literal lines.
pub fn cmdline_parser() -> TestResult {
    let empty = cmdline::parse("");
    ensure!(empty.ktest.is_none(), "empty line selects tests");
    ensure!(empty.era == Era::Y2023, "default era is not 2023");
    ensure!(
        empty.loglevel == Level::Info,
        "default log level is not info"
    );
    ensure!(empty.init.is_none(), "empty line has an init program");
    ensure!(
        (empty.kheap_mib, empty.softlockup_secs, empty.hung_task_secs) == (None, None, None),
        "empty line sets the heap or a watchdog"
    );
    // Session 9: anonymous faults go without the big lock unless `fault_bkl=1` asks otherwise.
    ensure!(
        !empty.fault_bkl
            && cmdline::parse("fault_bkl=1").fault_bkl
            && !cmdline::parse("fault_bkl=1 fault_bkl=0").fault_bkl,
        "fault_bkl: default {}, =1 and =1 then =0 not as asked",
        empty.fault_bkl
    );
    let sized = cmdline::parse("kheap=8 softlockup=3 hung_task=0 kheap=2");
    ensure!(
        (sized.kheap_mib, sized.softlockup_secs, sized.hung_task_secs)
            == (Some(8), Some(3), Some(0)),
        "kheap/softlockup/hung_task parsed as {:?} {:?} {:?}",
        sized.kheap_mib,
        sized.softlockup_secs,
        sized.hung_task_secs
    );
    ensure!(
        sized.bad_tokens().eq(["kheap=2"]),
        "a heap below the minimum is not reported as a bad token"
    );

    // huge3: `hugepages=` counts pages of the size the last `hugepagesz=` named (Linux).
    let huge = cmdline::parse("hugepages=3 hugepagesz=1G hugepages=2 hugepagesz=3M");
    ensure!(
        (huge.hugepages_2m, huge.hugepages_1g) == (3, 2),
        "hugepages parsed as 2M {} 1G {}",
        huge.hugepages_2m,
        huge.hugepages_1g
    );
    ensure!(
        huge.bad_tokens().eq(["hugepagesz=3M"]),
        "a hugetlb size cowlab has not is not reported as a bad token"
    );

    let full = cmdline::parse("ktest ktest-skip=3 era=2016 loglevel=debug -- /init -v  x ");
    ensure!(
        full.ktest == Some(KtestSelection::All { skip: 3 }),
        "ktest ktest-skip=3 parsed as {:?}",
        full.ktest
    );
    ensure!(full.era == Era::Y2016, "era=2016 parsed as {}", full.era);
    ensure!(
        full.loglevel == Level::Debug,
        "loglevel=debug parsed as {:?}",
        full.loglevel
    );
    ensure!(
        full.init == Some("/init -v  x"),
        "init program parsed as {:?}",
        full.init
    );
    ensure!(
        full.init_args() == ["/init", "-v", "x"],
        "init arguments split wrongly: {:?}",
        full.init_args()
    );
    ensure!(
        full.bad_tokens().count() == 0,
        "valid tokens reported as bad"
    );

    let named = cmdline::parse("ktest ktest=selftest_panic");
    ensure!(
        named.ktest == Some(KtestSelection::One("selftest_panic")),
        "ktest=NAME parsed as {:?}",
        named.ktest
    );

    let bad = cmdline::parse("era=1999 loglevel=loud frobnicate -- era=2009");
    ensure!(bad.era == Era::Y2023, "a bad era replaced the default");
    ensure!(bad.bad_tokens().count() == 3, "expected 3 bad tokens");
    ensure!(
        bad.init == Some("era=2009"),
        "tokens after -- belong to init"
    );
    Ok(())
}

/// `cargo xtask qemu -- PROG ARGS` quotes arguments with spaces, empty ones, quotes and
/// backslashes; the kernel splits them back ([`cmdline::split_init_args`]).
pub fn cmdline_init_args_quoted() -> TestResult {
    let cases: [(&str, &[&str]); 9] = [
        ("", &[]),
        ("  a  b ", &["a", "b"]),
        (r#"sh -c "ls | wc -l""#, &["sh", "-c", "ls | wc -l"]),
        (r#"echo "" x """#, &["echo", "", "x", ""]),
        (r#"a\"b "c\\d" \ "#, &["a\"b", "c\\d", " "]),
        (r#"pre"mid dle"post"#, &["premid dlepost"]),
        (
            "\"gr\u{fc}\u{df}e \u{2603}\"",
            &["gr\u{fc}\u{df}e \u{2603}"],
        ),
        (r#""open quote"#, &["open quote"]),
        ("tab\t\"in\tside\"", &["tab", "in\tside"]),
    ];
    for (line, want) in cases {
        let got = cmdline::split_init_args(line);
        ensure!(
            got == want,
            "split_init_args({line:?}) gave {got:?}, want {want:?}"
        );
    }
    Ok(())
}
