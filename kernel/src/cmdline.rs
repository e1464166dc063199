//! The kernel command line: read once from fw_cfg, parsed into a [`Cmdline`].
//!
//! The tokens and their meaning are the contract in docs/architecture.md. Parsing is a pure
//! function over a `&'static str` ([`parse`]) so the tests can run it on literal lines; the boot
//! line lives in a static buffer so the parsed struct can borrow from it without a heap (the
//! command line is read before the heap exists, because it sets the log level). Tokens that do
//! not parse are kept and reported once logging is up, never silently dropped.
#![deny(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use cowlab_mm::Era;
use spin::Once;

use crate::fwcfg;
use crate::log::Level;

/// The fw_cfg file QEMU passes the command line in.
pub const FW_CFG_FILE: &str = "opt/cowlab/cmdline";
/// Longest command line we keep; the rest is cut off (and reported).
const MAX_LEN: usize = 4096;
/// How many bad tokens are remembered for the warning.
const MAX_BAD_TOKENS: usize = 8;

/// Which in-kernel tests to run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KtestSelection {
    /// `ktest [ktest-skip=N]`: every test that is not a harness self-test, from index `skip` on.
    All { skip: usize },
    /// `ktest=NAME`: exactly that test, self-tests included.
    One(&'static str),
}

/// The parsed command line.
#[derive(Clone, Debug)]
pub struct Cmdline {
    /// The line as given (trimmed).
    pub raw: &'static str,
    /// `None` without a `ktest` token: boot normally.
    pub ktest: Option<KtestSelection>,
    /// The rule set of SEMANTICS.md section 9 (`era=`); default 2023. The rules themselves live
    /// in `cowlab-mm`; the kernel only carries the choice.
    pub era: Era,
    /// Default `info`.
    pub loglevel: Level,
    /// `kheap=<MiB>`: the kernel heap's size (default `memory::HEAP_SIZE`).
    pub kheap_mib: Option<usize>,
    /// `mem=<MiB>`: at most this much memory goes to the frame allocator (Linux's `mem=`,
    /// which caps usable RAM; here the frame metadata and the kernel heap are carved first and
    /// do not count). At least 16 MiB. For tests that need memory pressure, e.g. a file larger
    /// than memory through the page cache.
    pub mem_mib: Option<usize>,
    /// `softlockup=<s>`: seconds without a schedule before the soft-lockup watchdog reports a
    /// CPU (default `watchdog::SOFTLOCKUP_SECS`; 0 turns it off).
    pub softlockup_secs: Option<u64>,
    /// `hung_task=<s>`: seconds a task may stay blocked uninterruptibly before the hung-task
    /// watchdog reports it (default `watchdog::HUNG_TASK_SECS`; 0 turns it off).
    pub hung_task_secs: Option<u64>,
    /// `smp_sched=0|1`: whether the application processors run tasks (issue 16 stage 2, under
    /// the big kernel lock) or stay parked; default 1 (every CPU runs tasks).
    pub smp_sched: bool,
    /// `fault_bkl=0|1`: whether anonymous ring-3 faults may be resolved without the big kernel
    /// lock (0, the default since session 9, after the kernel and programs tiers ran with it;
    /// docs/locking.md "BKL-free fault path") or every ring-3 page fault takes it (1, the old
    /// path).
    pub fault_bkl: bool,
    /// `hugepagesz=1G hugepages=N`: 1 GiB hugetlb pages reserved at boot (Linux's gigantic
    /// pages from memblock); `hugepages=` counts pages of the size the last `hugepagesz=`
    /// named (2M or 1G; without one, the default 2 MiB size).
    pub hugepages_1g: u64,
    /// `hugepages=N` for the 2 MiB size: the pool's size at boot.
    pub hugepages_2m: u64,
    /// Everything after `--`: the program `init` runs and its arguments (user mode, next issue).
    pub init: Option<&'static str>,
    bad_tokens: [Option<&'static str>; MAX_BAD_TOKENS],
}

impl Cmdline {
    /// The program and arguments after `--` ([`split_init_args`]).
    pub fn init_args(&self) -> Vec<String> {
        self.init.map(split_init_args).unwrap_or_default()
    }

    /// Tokens that were not understood (unknown, or with a bad value).
    pub fn bad_tokens(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.bad_tokens.iter().flatten().copied()
    }
}

/// Splits what follows `--` into arguments: at unquoted whitespace, with `"..."` quoting (so
/// an argument may hold spaces or be empty, `""`) and `\\` escaping the next character (a
/// literal `"` or `\\`). Linux's own kernel command line quotes the same way (`next_arg`) but has
/// no escape; `cargo xtask qemu -- PROG ARGS` quotes every argument that needs it
/// (xtask `quote_init_arg`). A quote left open runs to the end of the line.
pub fn split_init_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    // An argument exists once anything, even an empty pair of quotes, was seen.
    let mut started = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                started = true;
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            '"' => {
                started = true;
                quoted = !quoted;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    args.push(core::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                started = true;
                current.push(c);
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

/// Warns about an option token that was not understood: names it and, for the tokens whose
/// values are a fixed set, the known values and the default used instead. Runs before the heap
/// exists (the log level comes from this line), so nothing here allocates.
fn warn_bad_token(token: &str) {
    match token.split_once('=') {
        Some(("era", value)) => {
            warn!("command line: unknown era \"{value}\" (known:{KnownEras}): using 2023")
        }
        Some(("loglevel", value)) => warn!(
            "command line: unknown loglevel \"{value}\" (known: error warn info debug trace): using info"
        ),
        _ => warn!("command line: ignoring unknown or malformed token \"{token}\""),
    }
}

/// The years `era=` accepts, each after a space ([`Era::ALL`]), formatted without a heap.
struct KnownEras;

impl core::fmt::Display for KnownEras {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        Era::ALL
            .iter()
            .try_for_each(|era| write!(f, " {}", era.year()))
    }
}

/// Parses a command line (architecture.md, "Kernel command line").
pub fn parse(raw: &'static str) -> Cmdline {
    let raw = raw.trim();
    // The first token that is exactly `--` ends the options; its byte offset splits the line.
    let separator = raw
        .split_whitespace()
        .find(|token| *token == "--")
        .map(|token| token.as_ptr() as usize - raw.as_ptr() as usize);
    let (options, init) = match separator {
        Some(at) => (
            &raw[..at],
            Some(raw[at + 2..].trim()).filter(|s| !s.is_empty()),
        ),
        None => (raw, None),
    };
    let mut cmdline = Cmdline {
        raw,
        ktest: None,
        era: Era::Y2023,
        loglevel: Level::Info,
        kheap_mib: None,
        mem_mib: None,
        softlockup_secs: None,
        hung_task_secs: None,
        smp_sched: true,
        fault_bkl: false,
        hugepages_1g: 0,
        hugepages_2m: 0,
        init,
        bad_tokens: [None; MAX_BAD_TOKENS],
    };
    let mut want_all = false;
    let mut skip = 0;
    let mut bad = 0;
    let mut gigantic = false;
    for token in options.split_whitespace() {
        let ok = match token.split_once('=') {
            None if token == "ktest" => {
                want_all = true;
                true
            }
            Some(("ktest", name)) if !name.is_empty() => {
                cmdline.ktest = Some(KtestSelection::One(name));
                true
            }
            Some(("ktest-skip", n)) => n.parse().map(|n| skip = n).is_ok(),
            Some(("era", year)) => Era::parse(year).map(|era| cmdline.era = era).is_some(),
            Some(("loglevel", level)) => Level::from_cmdline(level)
                .map(|level| cmdline.loglevel = level)
                .is_some(),
            Some(("kheap", mib)) => {
                let (min, max) = crate::memory::HEAP_MIB_RANGE;
                mib.parse()
                    .ok()
                    .filter(|m| (min..=max).contains(m))
                    .map(|m| cmdline.kheap_mib = Some(m))
                    .is_some()
            }
            Some(("mem", mib)) => mib
                .parse()
                .ok()
                .filter(|&m| m >= 16)
                .map(|m| cmdline.mem_mib = Some(m))
                .is_some(),
            Some(("hugepagesz", size)) => match size {
                "2M" | "2m" | "2048K" | "2048k" => {
                    gigantic = false;
                    true
                }
                "1G" | "1g" | "1024M" | "1048576K" | "1048576k" => {
                    gigantic = true;
                    true
                }
                _ => false,
            },
            Some(("hugepages", n)) => n
                .parse()
                .map(|n| {
                    if gigantic {
                        cmdline.hugepages_1g = n;
                    } else {
                        cmdline.hugepages_2m = n;
                    }
                })
                .is_ok(),
            Some(("softlockup", secs)) => secs
                .parse()
                .map(|s| cmdline.softlockup_secs = Some(s))
                .is_ok(),
            Some(("hung_task", secs)) => secs
                .parse()
                .map(|s| cmdline.hung_task_secs = Some(s))
                .is_ok(),
            Some(("smp_sched", on)) => match on {
                "0" => {
                    cmdline.smp_sched = false;
                    true
                }
                "1" => {
                    cmdline.smp_sched = true;
                    true
                }
                _ => false,
            },
            Some(("fault_bkl", on)) => match on {
                "0" | "1" => {
                    cmdline.fault_bkl = on == "1";
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok && bad < MAX_BAD_TOKENS {
            cmdline.bad_tokens[bad] = Some(token);
            bad += 1;
        }
    }
    if want_all && cmdline.ktest.is_none() {
        cmdline.ktest = Some(KtestSelection::All { skip });
    }
    cmdline
}

struct Storage {
    bytes: [u8; MAX_LEN],
    len: usize,
    /// Longer than `MAX_LEN` in fw_cfg.
    truncated: bool,
}

static STORAGE: Once<Storage> = Once::new();
static CMDLINE: Once<Cmdline> = Once::new();

/// Reads the command line from fw_cfg (once) and parses it. No fw_cfg file is an empty line.
pub fn init() -> &'static Cmdline {
    CMDLINE.call_once(|| {
        let storage = STORAGE.call_once(|| {
            let mut bytes = [0; MAX_LEN];
            let len = fwcfg::read_file(FW_CFG_FILE, &mut bytes).unwrap_or(0);
            Storage {
                bytes,
                len,
                truncated: len == MAX_LEN,
            }
        });
        let text = match core::str::from_utf8(&storage.bytes[..storage.len]) {
            Ok(text) => text,
            // Keep the valid prefix (a truncated line may end inside a character).
            Err(e) => core::str::from_utf8(&storage.bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        // QEMU's `string=` items may carry a trailing NUL; it is not part of the line.
        parse(text.trim_end_matches('\0'))
    })
}

/// Warns about what [`init`] could not use. Call once logging is configured.
pub fn report_problems() {
    let Some(cmdline) = CMDLINE.get() else { return };
    if STORAGE.get().is_some_and(|s| s.truncated) {
        warn!("command line longer than {MAX_LEN} bytes: truncated");
    }
    for token in cmdline.bad_tokens() {
        warn_bad_token(token);
    }
}

/// The command line parsed at boot. Panics before [`init`].
pub fn get() -> &'static Cmdline {
    CMDLINE.get().expect("cmdline::init has run")
}
