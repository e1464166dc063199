//! Leveled, timestamped console logging: `[<seconds>.<micros>] <LEVEL> <message>`.
//!
//! The format is part of the contract with xtask (docs/architecture.md), so it is produced in
//! exactly one place, [`log`]. The timestamp is the TSC since boot, converted with the rate
//! calibrated against the PIT (see `time`); lines printed before calibration read `0.000000`.
//! The level filter is a single atomic so that checking it costs one load, and the fault paths
//! never log at all (STYLE.md rule 9).
#![deny(unsafe_code)]

use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};

/// Severity of a log line, most severe first.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

impl Level {
    /// The spelling used both in log lines and on the command line (`loglevel=`), upper case.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    /// Parses a `loglevel=` value (lower case, as architecture.md spells it).
    pub fn from_cmdline(value: &str) -> Option<Level> {
        match value {
            "error" => Some(Level::Error),
            "warn" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            "trace" => Some(Level::Trace),
            _ => None,
        }
    }
}

/// Lines less severe than this are dropped. Default `info` (architecture.md).
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most verbose level that is still printed.
pub fn set_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a line at `level` would be printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Prints one log line. Use the macros (`info!` and friends) rather than calling this.
pub fn log(level: Level, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let micros = crate::time::micros_since_boot();
    crate::serial::write_fmt(format_args!(
        "[{}.{:06}] {} {}\n",
        micros / 1_000_000,
        micros % 1_000_000,
        level.name(),
        args
    ));
}

macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($arg)*)) };
}
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($arg)*)) };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($arg)*)) };
}
#[allow(unused_macros)]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($arg)*)) };
}
#[allow(unused_macros)]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::log($crate::log::Level::Trace, format_args!($($arg)*)) };
}
