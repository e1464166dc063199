//! TLB shootdown: making other CPUs drop translations of an address space, and waiting for it.
//!
//! One request at a time, system-wide: an initiator takes [`BUSY`], writes the request (root,
//! range, all), sets the targets' bits in [`PENDING`], sends each target [`vector::IPI_SHOOTDOWN`]
//! and spins until every bit is clear. A target's handler (or its own spin loop, see below)
//! flushes locally if it has that root loaded and clears its bit. Deadlock freedom: a CPU that
//! waits, whether for [`BUSY`] or for acknowledgements, services its own pending bit while it
//! spins, so two CPUs flushing each other with interrupts disabled still both progress (Linux
//! instead forbids the call with interrupts off; `cowlab_mm`'s contract says the same, this is a
//! safety net). A target with interrupts disabled that does not wait (GUP-fast walking page
//! tables) delays the acknowledgement until it enables them: what makes freeing page tables
//! after the flush safe.
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cowlab_mm::addr::{PhysAddr, VirtAddr};

use super::{apic_id_of, online_mask};
use crate::idt::vector;
use crate::{apic, percpu};

static BUSY: AtomicBool = AtomicBool::new(false);
static PENDING: AtomicU64 = AtomicU64::new(0);
static ROOT: AtomicU64 = AtomicU64::new(0);
static START: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static ALL: AtomicBool = AtomicBool::new(false);
/// Requests this kernel has sent to other CPUs (each counts once per target).
static SENT: AtomicU64 = AtomicU64::new(0);

/// Flushes `[start, end)` (or everything when `all`) of `root` on every CPU in `cpus` and returns
/// when all have (the `Arch::flush_tlb_cpus` of the kernel).
pub fn flush_tlb_cpus(cpus: u64, root: PhysAddr, start: VirtAddr, end: VirtAddr, all: bool) {
    let me = 1u64 << percpu::cpu_id();
    let others = cpus & !me & online_mask();
    if others != 0 {
        // The waits below last as long as the other CPUs take (kcov: not the caller's edges).
        #[cfg(feature = "kcov")]
        let _hidden = crate::kcov::WaitGuard::new();
        while BUSY
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            service();
            core::hint::spin_loop();
        }
        ROOT.store(root.as_u64(), Ordering::Relaxed);
        START.store(start.as_u64(), Ordering::Relaxed);
        END.store(end.as_u64(), Ordering::Relaxed);
        ALL.store(all, Ordering::Relaxed);
        // Release: a target that sees its bit sees the request written above.
        PENDING.store(others, Ordering::Release);
        let mut rest = others;
        while rest != 0 {
            let cpu = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            apic::send_ipi(apic_id_of(cpu), vector::IPI_SHOOTDOWN);
            SENT.fetch_add(1, Ordering::Relaxed);
        }
        while PENDING.load(Ordering::Acquire) & others != 0 {
            core::hint::spin_loop();
        }
        BUSY.store(false, Ordering::Release);
    }
    if cpus & me != 0 {
        crate::arch::flush_local(root, start.as_u64(), end.as_u64(), all);
    }
}

/// Does this CPU's part of the current request, if it has one.
pub fn service() {
    let me = 1u64 << percpu::cpu_id();
    if PENDING.load(Ordering::Acquire) & me == 0 {
        return;
    }
    let root = PhysAddr::new(ROOT.load(Ordering::Relaxed));
    let start = START.load(Ordering::Relaxed);
    let end = END.load(Ordering::Relaxed);
    let all = ALL.load(Ordering::Relaxed);
    crate::arch::flush_local(root, start, end, all);
    // Release: the initiator's acquire of the cleared bit orders our flush before its return.
    PENDING.fetch_and(!me, Ordering::Release);
}

/// Shootdown requests sent to other CPUs since boot.
pub fn sent() -> u64 {
    SENT.load(Ordering::Relaxed)
}
