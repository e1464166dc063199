//! The system-wide text files of `/proc` that `top`, `uptime`, `ps` and `vmstat` read:
//! `stat` (Linux `show_stat`), `uptime` (`uptime_proc_show`), `loadavg` (`loadavg_proc_show`),
//! and the per-process `statm` (`proc_pid_statm`). The counters are `proc::kstat`'s (ticks of
//! `USER_HZ` = 100, the kernel's own tick rate, so no conversion) and the process table's.
#![deny(unsafe_code)]

use alloc::string::String;
use core::fmt::Write;

use crate::percpu::MAX_CPUS;
use crate::proc::{kstat, State, TABLE};

/// How many tasks run or wait to run, and how many exist (threads included).
fn task_counts() -> (usize, usize) {
    let table = TABLE.lock();
    let live = |s: &State| !matches!(s, State::Zombie(_) | State::Dead | State::Exited);
    let running = table
        .values()
        .filter(|t| matches!(t.state, State::Running | State::Runnable))
        .count();
    let total = table.values().filter(|t| live(&t.state)).count();
    (running, total)
}

fn online_cpus() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(|cpu| crate::smp::online_mask() & (1 << cpu) != 0)
}

/// `/proc/stat`: the `cpu` sum line (two spaces after `cpu`, as Linux), one `cpuN` line per
/// online CPU, `intr` (the total, then one count per legacy IRQ line), `ctxt`, `btime`,
/// `processes`, `procs_running`, `procs_blocked` (cowlab has no uninterruptible sleep: 0) and
/// `softirq` (none: zeros).
pub fn stat() -> String {
    let mut sum = [0u64; kstat::SLOTS];
    let mut lines = String::new();
    for cpu in online_cpus() {
        let row = kstat::cpu(cpu);
        let _ = write!(lines, "cpu{cpu}");
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
            let _ = write!(lines, " {v}");
        }
        lines.push('\n');
    }
    let mut s = String::from("cpu ");
    for v in sum {
        let _ = write!(s, " {v}");
    }
    s.push('\n');
    s.push_str(&lines);
    let (total, per_line) = kstat::irqs();
    let _ = write!(s, "intr {total}");
    for n in per_line {
        let _ = write!(s, " {n}");
    }
    s.push('\n');
    let boot_secs =
        crate::rtc::realtime_micros().saturating_sub(crate::time::micros_since_boot()) / 1_000_000;
    let (running, _) = task_counts();
    let _ = writeln!(s, "ctxt {}", kstat::context_switches());
    let _ = writeln!(s, "btime {boot_secs}");
    let _ = writeln!(s, "processes {}", kstat::forks());
    let _ = writeln!(s, "procs_running {running}");
    let _ = writeln!(s, "procs_blocked 0");
    let _ = writeln!(s, "softirq 0 0 0 0 0 0 0 0 0 0 0");
    s
}

/// `/proc/interrupts` (Linux `show_interrupts` and x86's `arch_show_interrupts`): a `CPUn`
/// column per online CPU; a row per line in use (the PIT's line 0 on the 8259, the virtio-blk
/// lines, through the I/O APIC where it routed them: `IO-APIC`, the pin, `fasteoi` for a level
/// line), with the names of the devices on it; then the NMIs (the watchdog's, all on the boot
/// CPU) and the local APIC's rows (`LOC`, `RES`, `CAL`, `TLB`).
pub fn interrupts() -> String {
    let cpus: alloc::vec::Vec<usize> = online_cpus().collect();
    let mut s = String::from("     ");
    for cpu in &cpus {
        let _ = write!(s, " CPU{cpu:<7}");
    }
    s.push('\n');
    let mut lines: alloc::vec::Vec<(u8, String)> = alloc::vec![(0, String::from("timer"))];
    for (line, name) in crate::drivers::virtio_blk::irq_lines() {
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, names)) => {
                names.push_str(", ");
                names.push_str(name);
            }
            None => lines.push((line, String::from(name))),
        }
    }
    lines.sort_by_key(|(line, _)| *line);
    for (line, names) in lines {
        let _ = write!(s, "{line:>3}: ");
        for &cpu in &cpus {
            let _ = write!(s, "{:>10} ", kstat::irq_on(cpu, line));
        }
        let (chip, pin, kind) = match crate::ioapic::route_of(line) {
            Some((pin, true)) => ("IO-APIC", pin, "fasteoi"),
            Some((pin, false)) => ("IO-APIC", pin, "edge"),
            None => ("XT-PIC", u32::from(line), "edge"),
        };
        let _ = writeln!(s, " {chip:>8} {pin:>3}-{kind:<8}  {names}");
    }
    let _ = write!(s, "NMI: ");
    for &cpu in &cpus {
        let nmis = if cpu == 0 {
            crate::watchdog::soft::nmis()
        } else {
            0
        };
        let _ = write!(s, "{nmis:>10} ");
    }
    let _ = writeln!(s, "  Non-maskable interrupts");
    for (kind, (label, what)) in kstat::APIC_KINDS.iter().enumerate() {
        let _ = write!(s, "{label}: ");
        for &cpu in &cpus {
            let _ = write!(s, "{:>10} ", kstat::apic_irqs(cpu)[kind]);
        }
        let _ = writeln!(s, "  {what}");
    }
    s
}

/// `/proc/uptime`: seconds since boot and the idle seconds of all CPUs together, with two
/// decimals.
pub fn uptime() -> String {
    let up = crate::time::micros_since_boot() / 10_000;
    let idle: u64 = online_cpus().map(|c| kstat::cpu(c)[kstat::IDLE]).sum();
    // Idle ticks are hundredths of a second already (USER_HZ = 100).
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}.{:02} {}.{:02}",
        up / 100,
        up % 100,
        idle / 100,
        idle % 100
    );
    s
}

/// `/proc/loadavg`: the 1, 5 and 15-minute averages, runnable/total tasks, the last pid.
pub fn loadavg() -> String {
    let [a, b, c] = kstat::loadavg();
    let (running, total) = task_counts();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}.{:02} {}.{:02} {}.{:02} {running}/{total} {}",
        a.0,
        a.1,
        b.0,
        b.1,
        c.0,
        c.1,
        crate::proc::last_pid()
    );
    s
}
