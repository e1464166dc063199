//! The in-kernel test framework: an ordered list of tests, run per the KTEST protocol.
//!
//! Tests are plain `fn() -> TestResult` in an ordered static list ([`registry::TESTS`]): no
//! custom test harness, no linker tricks, so the order (and therefore every test's index, which
//! xtask uses to resume with `ktest-skip`) is exactly what the list says. A test fails either by
//! returning `Err` (the framework prints `KTEST FAIL` and goes on) or by panicking, e.g. in an
//! `assert!` (the panic handler prints `KTEST FAIL`, using [`current`], and exits QEMU with status
//! 2; xtask boots again past it). Harness self-tests, named `selftest_*`, come last in the list
//! and run only when named with `ktest=NAME`, so the normal tests always hold indices
//! `0..KTEST COUNT`.
//!
//! To add a test: write `fn my_test() -> TestResult` in the module of its subject here, and add
//! `test!(module::my_test)` to [`registry::TESTS`] before the self-tests.

mod cmdline;
mod cputime;
mod exceptions;
mod ext2;
mod frames;
mod fs;
mod heap;
mod heap_frag;
mod locking;
mod mm;
mod mmlock;
mod pipe;
mod ramdisk;
mod registry;
mod rtc;
mod runqueue;
mod selftests;
mod smp;
mod tick;
mod timer;
mod tsc;
mod uaccess;
mod virtio;
mod watchdog;

use alloc::string::String;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::cmdline::KtestSelection;
use crate::qemu::{self, ExitStatus};
use crate::time;

/// One in-kernel test.
pub struct KernelTest {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

impl KernelTest {
    /// Harness self-tests fail on purpose and run only by name.
    fn is_selftest(&self) -> bool {
        self.name.starts_with("selftest_")
    }
}

/// What a test returns: `Err` is a reported failure; the run goes on.
pub type TestResult = Result<(), TestFailure>;

/// Why a test failed, in words for the `KTEST FAIL` line.
#[derive(Debug)]
pub struct TestFailure(pub String);

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        // One protocol line: no newlines.
        for (i, part) in self.0.split('\n').enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

/// Fails the test with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::ktest::TestFailure(alloc::format!($($arg)*)));
        }
    };
}
pub(crate) use ensure;

/// No test running.
const NONE: usize = usize::MAX;
static CURRENT: AtomicUsize = AtomicUsize::new(NONE);

/// The test that is running, for the panic and exception handlers' `KTEST FAIL` line.
#[derive(Clone, Copy)]
pub struct CurrentTest {
    pub index: usize,
    pub name: &'static str,
}

/// The test that is running, if any.
pub fn current() -> Option<CurrentTest> {
    let index = CURRENT.load(Ordering::SeqCst);
    registry::TESTS.get(index).map(|test| CurrentTest {
        index,
        name: test.name,
    })
}

/// Runs the selected tests, prints the protocol lines and exits QEMU: status 0 if every test
/// passed, 1 if some reported failure (a panicking test exits with 2 from the panic handler).
pub fn run(selection: KtestSelection) -> ! {
    let tests = registry::TESTS;
    let selected = |index: usize, test: &KernelTest| match selection {
        KtestSelection::All { skip } => index >= skip && !test.is_selftest(),
        KtestSelection::One(name) => test.name == name,
    };
    let count = tests
        .iter()
        .enumerate()
        .filter(|(i, t)| selected(*i, t))
        .count();
    if let KtestSelection::One(name) = selection {
        if count == 0 {
            error!("ktest: no test named \"{name}\"");
        }
    }
    println!("KTEST COUNT {count}");
    let (mut passed, mut failed) = (0, 0);
    for (index, test) in tests.iter().enumerate().filter(|(i, t)| selected(*i, t)) {
        println!("KTEST RUN {index} {}", test.name);
        CURRENT.store(index, Ordering::SeqCst);
        let start = time::rdtsc();
        let result = (test.run)();
        let ticks = time::rdtsc() - start;
        CURRENT.store(NONE, Ordering::SeqCst);
        match result {
            Ok(()) => {
                passed += 1;
                println!("KTEST PASS {index} {} {ticks}", test.name);
            }
            Err(failure) => {
                failed += 1;
                println!("KTEST FAIL {index} {}: {failure}", test.name);
            }
        }
    }
    if count == 0 && matches!(selection, KtestSelection::One(_)) {
        // Asking for a test that does not exist is a failure, not an empty success.
        failed += 1;
    }
    println!("KTEST END passed={passed} failed={failed}");
    qemu::exit(if failed == 0 {
        ExitStatus::Success
    } else {
        ExitStatus::TestsFailed
    })
}
