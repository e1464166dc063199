//! The soft-lockup detector: a CPU that has not scheduled for `softlockup=` seconds.
//!
//! Each CPU's scheduler [`touch`]es that CPU's own timestamp each time it goes round (every
//! switch and every wake of the idle loop's `hlt`, which a tick ends at least every 10 ms), so
//! while tasks run or the CPU idles it stays fresh. A kernel path that loops with interrupts
//! disabled stops touching it, and nothing but an NMI can then run. The NMI source (`nmi`, twice
//! a second) reaches the boot CPU only; [`on_nmi`] there compares every scheduling CPU's
//! timestamp with the TSC. Past the threshold, the boot CPU reports itself (one line and the
//! backtrace of the interrupted context); for a stuck application processor it sends that CPU
//! an NMI by IPI (`apic::send_nmi_from_nmi`), and the AP's own [`on_nmi`] prints the line with
//! its interrupted `rip` and backtrace, which only it can read (Linux's
//! `trigger_single_cpu_backtrace`; Linux runs `watchdog_timer_fn` from an hrtimer on each CPU,
//! and its NMI side, the hard-lockup detector, is what this amounts to on a kernel that runs with
//! interrupts off). One timestamp per CPU, each in its own cache line: with one shared stamp,
//! an AP spinning with interrupts off went unseen while any other CPU kept touching it. The
//! detector is armed once the scheduler runs: boot and the in-kernel tests do long work on
//! purpose without scheduling (two tests arm it on purpose, [`arm`]). Only CPUs that run tasks
//! are watched (`smp::active_mask`): parked application processors (`smp_sched=0`) never
//! schedule.
//!
//! NMI context rules: no lock is waited for and nothing is allocated, and nothing reads GS
//! before the report (an NMI may land between `syscall` and `swapgs`): the CPU is found from its
//! local APIC ID. If the console is busy (the interrupted code, or another CPU, was printing),
//! the report waits for the next NMI, twice, and then takes the console. A page fault taken
//! while reading the interrupted stack (the backtrace reads it through exception-table fixups)
//! ends with `iretq`, which unblocks NMIs early; with two NMIs a second and reports that take
//! milliseconds, a nested NMI is unlikely, and the source is masked while the boot CPU reports
//! to make it more so. A stuck AP marks its stall reported before it prints, so the boot CPU
//! sends it no further NMI meanwhile (at most one sent every half second until then).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::idt::TrapFrame;
use crate::percpu::MAX_CPUS;
use crate::{backtrace, proc, serial, time};

/// One CPU's watch, alone in its cache line: [`touch`] stores to it on the scheduler's path.
#[repr(align(64))]
struct Watch {
    /// TSC when this CPU last scheduled.
    touched: AtomicU64,
    /// The `touched` value of the stall last reported (one report per stall).
    reported: AtomicU64,
    /// NMIs that found the console busy and left the report to the next one.
    deferred: AtomicU32,
}

static WATCH: [Watch; MAX_CPUS] = [const {
    Watch {
        touched: AtomicU64::new(0),
        reported: AtomicU64::new(u64::MAX),
        deferred: AtomicU32::new(0),
    }
}; MAX_CPUS];
static ARMED: AtomicBool = AtomicBool::new(false);
static NMIS: AtomicU64 = AtomicU64::new(0);
static REPORTS: AtomicU64 = AtomicU64::new(0);
/// NMIs sent by IPI to a stuck application processor.
static NMI_IPIS: AtomicU64 = AtomicU64::new(0);
/// The CPU of the last report.
static LAST_CPU: AtomicUsize = AtomicUsize::new(0);

/// Records that this CPU scheduled (or idled) now: one store to this CPU's own line.
#[inline]
pub fn touch() {
    WATCH[crate::percpu::cpu_id()]
        .touched
        .store(time::rdtsc(), Ordering::Relaxed);
}

/// Arms (or disarms) the detector; touches every CPU's stamp first so the time before does not
/// count (Linux `touch_all_softlockup_watchdogs`).
pub fn arm(on: bool) {
    let now = time::rdtsc();
    for watch in &WATCH {
        watch.touched.store(now, Ordering::Relaxed);
    }
    ARMED.store(on, Ordering::SeqCst);
}

/// NMIs from the watchdog's source (the boot CPU's) seen since boot.
pub fn nmis() -> u64 {
    NMIS.load(Ordering::Relaxed)
}

/// Soft lockups reported since boot, on any CPU.
pub fn reports() -> u64 {
    REPORTS.load(Ordering::Acquire)
}

/// The CPU named by the last report.
pub fn last_reported_cpu() -> usize {
    LAST_CPU.load(Ordering::Relaxed)
}

/// NMIs sent to stuck application processors since boot.
pub fn nmi_ipis() -> u64 {
    NMI_IPIS.load(Ordering::Relaxed)
}

/// This CPU's index from its local APIC ID: GS may be the user's in an NMI.
fn this_cpu() -> usize {
    let id = crate::apic::id();
    let online = crate::smp::online_mask();
    (1..MAX_CPUS)
        .find(|&cpu| online & 1 << cpu != 0 && crate::smp::apic_id_of(cpu) == id)
        .unwrap_or(0)
}

/// Whole seconds `cpu` has gone without scheduling, and the stamp they count from. Saturating:
/// another CPU's stamp may be a little ahead of this CPU's TSC.
fn stuck_for(cpu: usize) -> (u64, u64) {
    let touched = WATCH[cpu].touched.load(Ordering::Relaxed);
    let secs = time::cycles_to_micros(time::rdtsc().saturating_sub(touched)) / 1_000_000;
    (secs, touched)
}

/// The NMI's work: on the boot CPU (the source's NMI), check every scheduling CPU and report
/// itself or send a stuck AP its NMI; on an AP (that IPI), report itself. Runs on the NMI
/// stack; see the module comment for what it must not do.
pub fn on_nmi(frame: &TrapFrame) {
    let cpu = this_cpu();
    if cpu == 0 {
        NMIS.fetch_add(1, Ordering::Relaxed);
        super::nmi::rearm();
    }
    let secs = super::softlockup_secs();
    if !ARMED.load(Ordering::Relaxed) || secs == 0 {
        return;
    }
    if cpu == 0 {
        let active = crate::smp::active_mask();
        for other in (1..MAX_CPUS).filter(|&c| active & 1 << c != 0) {
            let (stuck, touched) = stuck_for(other);
            if stuck >= secs && WATCH[other].reported.load(Ordering::Relaxed) != touched {
                NMI_IPIS.fetch_add(1, Ordering::Relaxed);
                crate::apic::send_nmi_from_nmi(crate::smp::apic_id_of(other));
            }
        }
    }
    report_if_stuck(cpu, secs, frame);
}

/// Prints this CPU's soft-lockup line and backtrace once per stall past `secs`.
fn report_if_stuck(cpu: usize, secs: u64, frame: &TrapFrame) {
    let watch = &WATCH[cpu];
    let (stuck, touched) = stuck_for(cpu);
    if stuck < secs || watch.reported.load(Ordering::Relaxed) == touched {
        return;
    }
    if serial::is_busy() && watch.deferred.fetch_add(1, Ordering::Relaxed) < 2 {
        return;
    }
    watch.deferred.store(0, Ordering::Relaxed);
    // Before printing: the boot CPU sends no more NMIs for this stall.
    watch.reported.store(touched, Ordering::Relaxed);
    if cpu == 0 {
        super::nmi::mask(true);
    }
    serial::break_lock_for_crash();
    let tid = proc::current_tid();
    let name = super::task_name(tid);
    let mode = if frame.cs & 3 == 3 { "user" } else { "kernel" };
    println!(
        "cowlab: watchdog: soft lockup: CPU#{cpu} stuck for {stuck}s without scheduling, in \
         {mode} mode at rip={:#x}, task tid {tid} ({name})",
        frame.rip
    );
    if mode == "kernel" {
        backtrace::print_from(frame.rip, frame.rbp);
    }
    LAST_CPU.store(cpu, Ordering::Relaxed);
    // Release: a reader that sees the count rise (`reports`, Acquire) sees `LAST_CPU` too.
    REPORTS.fetch_add(1, Ordering::Release);
    if cpu == 0 {
        super::nmi::mask(false);
    }
}
