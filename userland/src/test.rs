//! The test programs' protocol: one line per check (`ok NAME` or `FAIL NAME: why`), then
//! `N passed, N failed`; the exit status is 0 only if nothing failed. The same lines appear on
//! cowlab's console and on the host, where xtask runs the programs too.

use core::fmt::Display;

pub struct Tester {
    program: &'static str,
    passed: u32,
    failed: u32,
}

impl Tester {
    pub fn new(program: &'static str) -> Tester {
        Tester {
            program,
            passed: 0,
            failed: 0,
        }
    }

    /// Records one check.
    pub fn check(&mut self, name: &str, ok: bool) {
        self.check_why(name, ok, "");
    }

    /// Records one check with what went wrong.
    pub fn check_why(&mut self, name: &str, ok: bool, why: impl Display) {
        if ok {
            self.passed += 1;
            crate::println!("{}: ok {name}", self.program);
        } else {
            self.failed += 1;
            crate::println!("{}: FAIL {name}: {why}", self.program);
        }
    }

    /// Checks that `got == want`.
    pub fn eq<T: PartialEq + core::fmt::Debug>(&mut self, name: &str, got: T, want: T) {
        let ok = got == want;
        self.check_why(name, ok, format_args!("got {got:?}, want {want:?}"));
    }

    /// Checks that a reading (MemFree, a kernel counter) was taken both times and is equal:
    /// unlike [`Tester::eq`] on two `Option`s, two failed readings are a failure, not a match.
    pub fn eq_some<T: PartialEq + core::fmt::Debug>(
        &mut self,
        name: &str,
        got: Option<T>,
        want: Option<T>,
    ) {
        let ok = got.is_some() && got == want;
        self.check_why(name, ok, format_args!("got {got:?}, want {want:?}"));
    }

    /// The exit status, without the closing line: for checks run in a forked child (their
    /// `ok`/`FAIL` lines are the program's; the parent checks the child's status and prints
    /// the one closing line).
    pub fn status(&self) -> i32 {
        i32::from(self.failed != 0)
    }

    /// Prints the closing line; the exit status.
    pub fn finish(self) -> i32 {
        crate::println!(
            "{}: {} passed, {} failed",
            self.program,
            self.passed,
            self.failed
        );
        i32::from(self.failed != 0)
    }
}

/// The path of another program next to this one: the directory of `argv[0]` plus `name`
/// (on cowlab programs sit in `/`, on the host xtask runs them by full path).
pub fn sibling(name: &str) -> alloc_crate::vec::Vec<u8> {
    let argv0 = crate::args::args()
        .next()
        .map(|a| a.to_bytes())
        .unwrap_or(b"");
    let dir = match argv0.iter().rposition(|&b| b == b'/') {
        Some(i) => &argv0[..=i],
        None => b"",
    };
    let mut path = dir.to_vec();
    path.extend_from_slice(name.as_bytes());
    path
}

/// Whether we run on cowlab (uname's nodename), for the few checks whose answers differ.
pub fn on_cowlab() -> bool {
    let mut buf = [0u8; 65 * 6];
    // SAFETY: uname writes 390 bytes into `buf`.
    let _ = unsafe {
        crate::calls::raw(
            crate::sys::nr::UNAME,
            [buf.as_mut_ptr() as usize, 0, 0, 0, 0, 0],
        )
    };
    buf[65..71] == *b"cowlab"
}

/// Runs `body` in a forked child and returns the child's wait status.
pub fn in_child(body: impl FnOnce() -> i32) -> i32 {
    match crate::calls::fork() {
        Ok(0) => crate::calls::exit_now(body()),
        Ok(pid) => match crate::calls::waitpid(pid, 0) {
            Ok((_, status)) => status,
            Err(e) => -e.0,
        },
        Err(e) => -e.0,
    }
}

/// What one TAP test point found.
pub enum Outcome {
    /// Passed; the text (possibly empty) goes after the description as a diagnostic.
    Pass(alloc_crate::string::String),
    /// Failed, and why.
    Fail(alloc_crate::string::String),
    /// Not run, and why (`# SKIP`).
    Skip(alloc_crate::string::String),
}

/// The KTAP/TAP form of the protocol, for suites mirroring Linux kselftests (`t_cow`): a
/// `TAP version 13` header and the plan `1..N`, then one `ok N - DESC`, `not ok N - DESC # why`
/// or `ok N - DESC # SKIP why` line per test point, and at the end the project's summary line
/// `PROGRAM: N passed, N failed` (skips count in neither), which xtask parses as for [`Tester`].
pub struct Tap {
    program: &'static str,
    next: u32,
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Tap {
    /// Prints the header and the plan of `planned` test points.
    pub fn new(program: &'static str, planned: u32) -> Tap {
        crate::println!("TAP version 13");
        crate::println!("1..{planned}");
        Tap {
            program,
            next: 1,
            passed: 0,
            failed: 0,
            skipped: 0,
        }
    }

    /// A `# ` diagnostic line (KTAP allows them between test points).
    pub fn diag(&self, text: impl Display) {
        crate::println!("# {text}");
    }

    /// Records the next test point.
    pub fn result(&mut self, desc: impl Display, outcome: &Outcome) {
        let n = self.next;
        self.next += 1;
        match outcome {
            Outcome::Pass(diag) if diag.is_empty() => {
                self.passed += 1;
                crate::println!("ok {n} - {desc}");
            }
            Outcome::Pass(diag) => {
                self.passed += 1;
                crate::println!("ok {n} - {desc} # {diag}");
            }
            Outcome::Fail(why) => {
                self.failed += 1;
                crate::println!("not ok {n} - {desc} # {why}");
            }
            Outcome::Skip(why) => {
                self.skipped += 1;
                crate::println!("ok {n} - {desc} # SKIP {why}");
            }
        }
    }

    /// Prints the totals and the summary line; the exit status (0 only if nothing failed and
    /// the plan was met).
    pub fn finish(mut self, planned: u32) -> i32 {
        let ran = self.next - 1;
        if ran != planned {
            self.failed += 1;
            crate::println!("# plan 1..{planned} but {ran} test points ran");
        }
        crate::println!(
            "# totals: pass:{} fail:{} skip:{}",
            self.passed,
            self.failed,
            self.skipped
        );
        crate::println!(
            "{}: {} passed, {} failed",
            self.program,
            self.passed,
            self.failed
        );
        i32::from(self.failed != 0)
    }
}

/// A field of `/proc/meminfo` in KiB (`MemFree`, `MemAvailable`, `Shmem`, ...): the one
/// reader the test programs share. No heap, a 2 KiB stack buffer: a program comparing `MemFree`
/// calls it once before its baseline, so the buffer's stack page is already there.
pub fn meminfo_kb(field: &str) -> Option<u64> {
    let fd = crate::calls::open(c"/proc/meminfo", crate::calls::O_RDONLY).ok()?;
    let mut buf = [0u8; 2048];
    let n = crate::calls::read(fd, &mut buf).unwrap_or(0);
    let _ = crate::calls::close(fd);
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.split(':').next() == Some(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `MemFree` in KiB.
pub fn mem_free_kb() -> Option<u64> {
    meminfo_kb("MemFree")
}

/// Forks a child that counts in `counter` (in memory shared with the caller: a
/// `MAP_SHARED|MAP_ANONYMOUS` page) until it is killed; returns its pid once it has counted,
/// after a fresh time slice, so the child has not run between the caller's next read and its
/// next call. The fairness tests measure how much of an operation's time the spinner got.
pub fn spinner(counter: &core::sync::atomic::AtomicU64) -> Option<i32> {
    use core::sync::atomic::Ordering;
    match crate::calls::fork() {
        Ok(0) => loop {
            counter.fetch_add(1, Ordering::Relaxed);
        },
        Ok(pid) => {
            while counter.load(Ordering::Relaxed) == 0 {
                crate::calls::sched_yield();
            }
            crate::calls::sched_yield();
            Some(pid)
        }
        Err(_) => None,
    }
}

/// Milliseconds of `CLOCK_MONOTONIC` since `start` (a `monotonic_ns` reading).
pub fn ms_since(start: u64) -> u64 {
    (crate::calls::monotonic_ns() - start) / 1_000_000
}

/// `SIGKILL`'s number, for the helpers below and the programs that kill children.
pub const SIGKILL: i32 = 9;

/// The child's wait status if it has ended (`waitpid` with `WNOHANG`), `None` while it runs.
pub fn try_reap(pid: i32) -> Result<Option<i32>, crate::sys::Errno> {
    const WNOHANG: u32 = 1;
    crate::calls::waitpid(pid, WNOHANG).map(|(p, s)| (p == pid).then_some(s))
}

/// Waits up to `ms` milliseconds for `pid` to end: its wait status, `None` if it still runs
/// (a test must not hang on a child that a kernel bug left asleep), or the wait's errno.
pub fn reap_within(pid: i32, ms: u64) -> Result<Option<i32>, crate::sys::Errno> {
    let deadline = crate::calls::monotonic_ns().saturating_add(ms.saturating_mul(1_000_000));
    loop {
        if let Some(status) = try_reap(pid)? {
            return Ok(Some(status));
        }
        if crate::calls::monotonic_ns() >= deadline {
            return Ok(None);
        }
        let _ = crate::calls::sleep_ms(2);
    }
}

/// Sends `SIGKILL` to `pid` and reaps it within `ms`: the wait status (as [`reap_within`]) and
/// the milliseconds from the kill to the reap (or to giving up).
pub fn kill_and_reap(pid: i32, ms: u64) -> (Result<Option<i32>, crate::sys::Errno>, u64) {
    let start = crate::calls::monotonic_ns();
    let _ = crate::calls::kill(pid, SIGKILL);
    let status = reap_within(pid, ms);
    (status, (crate::calls::monotonic_ns() - start) / 1_000_000)
}
