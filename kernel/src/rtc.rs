//! The CMOS real-time clock, read once at boot: the wall-clock time `CLOCK_REALTIME` counts
//! from (then advanced by the TSC, see `time`). Model: the MC146818 registers 0x00-0x09 through
//! ports 0x70/0x71, read twice until two reads agree (an update may be in progress), BCD or
//! binary and 12- or 24-hour as status register B says; the century is assumed to be 20xx.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::port::Port;

/// Unix time (seconds) at the moment the RTC was read, and the boot-relative microseconds then.
static EPOCH_AT_READ: AtomicU64 = AtomicU64::new(0);
static MICROS_AT_READ: AtomicU64 = AtomicU64::new(0);

fn cmos(register: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the CMOS index/data pair on every PC; selecting a register
    // (with NMIs left enabled: bit 7 clear) and reading it has no other effect.
    unsafe {
        Port::<u8>::new(0x70).write(register);
        Port::<u8>::new(0x71).read()
    }
}

fn read_raw() -> [u8; 6] {
    while cmos(0x0a) & 0x80 != 0 {}
    [
        cmos(0x00),
        cmos(0x02),
        cmos(0x04),
        cmos(0x07),
        cmos(0x08),
        cmos(0x09),
    ]
}

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Reads the RTC and records the wall-clock time. Call once at boot, after `time::init`.
pub fn init() {
    let mut raw = read_raw();
    loop {
        let again = read_raw();
        if again == raw {
            break;
        }
        raw = again;
    }
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let decode = |v: u8| if bcd { (v & 0x0f) + (v >> 4) * 10 } else { v };
    let [sec, min, hour, day, month, year] = raw;
    let pm = hour & 0x80 != 0;
    let mut hour = decode(hour & 0x7f);
    if status_b & 0x02 == 0 && pm {
        hour = (hour % 12) + 12;
    } else if status_b & 0x02 == 0 && hour == 12 {
        hour = 0;
    }
    let days = days_from_civil(
        2000 + i64::from(decode(year)),
        i64::from(decode(month)),
        i64::from(decode(day)),
    );
    let secs = days * 86_400
        + i64::from(hour) * 3600
        + i64::from(decode(min)) * 60
        + i64::from(decode(sec));
    MICROS_AT_READ.store(crate::time::micros_since_boot(), Ordering::Relaxed);
    EPOCH_AT_READ.store(secs.max(0) as u64, Ordering::Relaxed);
}

/// Wall-clock time in microseconds since the Unix epoch.
pub fn realtime_micros() -> u64 {
    let since_read =
        crate::time::micros_since_boot().saturating_sub(MICROS_AT_READ.load(Ordering::Relaxed));
    EPOCH_AT_READ.load(Ordering::Relaxed) * 1_000_000 + since_read
}

/// Days since the epoch of a civil date (exposed for the in-kernel test).
pub fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
    days_from_civil(year, month, day)
}
