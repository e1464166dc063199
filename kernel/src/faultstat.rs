//! The memory manager's per-phase fault accounting (`cowlab_mm::faultstat`, cargo feature
//! `faultstat`), printed on the console at power-off (and readable at any time from
//! `/proc/cowlab/faultstat`, same lines). One line per fault kind, parsed by
//! `cargo xtask bench --breakdown`:
//!
//! ```text
//! FAULTSTAT kind=<kind> count=<faults> lookup=<ticks> walk=<ticks> alloc=... rest=<ticks>
//! ```
//!
//! Ticks are totals over the boot (guest instructions under `-icount`). Without the feature
//! nothing is printed. The whole operations of `cowlab_mm::opstat` (fork, GUP-fast) follow, one
//! line each: `OPSTAT op=<op> count=<units> <phase>=<ticks> ...`.
#![deny(unsafe_code)]

use cowlab_mm::{faultstat, opstat};

/// Prints the totals (nothing in a kernel built without `faultstat`).
pub fn print() {
    faultstat::for_each(|kind, count, phases| {
        print!("FAULTSTAT kind={} count={count}", kind.name());
        for (phase, ticks) in phases {
            print!(" {}={ticks}", phase.name());
        }
        println!();
    });
    opstat::for_each(|op, count, phases| {
        print!("OPSTAT op={} count={count}", op.name());
        for (phase, ticks) in phases {
            print!(" {}={ticks}", phase.name());
        }
        println!();
    });
}
