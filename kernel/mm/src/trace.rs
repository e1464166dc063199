//! The fault trace: the last [`CAPACITY`] faults, each with its kind, address, what was done
//! and the rule that decided, for `/proc/cowlab/trace` (issue 15: watch the COW rules work).
//!
//! Off by default and switched at run time ([`set_enabled`]). Off, the fault path pays one
//! load of [`ENABLED`] and a predictable not-taken branch in `fault_inner` (the decision value
//! it would record is computed only under that branch, or is the register `do_wp_page`
//! returns anyway); on, a spin lock and a slot write, out of line. The ring is global (faults
//! of every process, tagged with the address space's page-table root, which the kernel maps
//! back to a pid).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use crate::addr::{PhysAddr, VirtAddr};
use crate::fault::FaultKind;

/// Entries kept.
pub const CAPACITY: usize = 256;

/// What the fault handler did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// First write to anonymous memory: a new zeroed page (`do_anonymous_page`).
    NewPage,
    /// First read of anonymous memory: the shared zero page, read-only.
    ZeroPage,
    /// First touch of a shmem page (its page-cache page mapped, or copied for a private write).
    Shmem,
    /// First touch of an ext2 file page (its page-cache page mapped, or copied for a private
    /// write).
    File,
    /// A write to a read-only PTE of a shared mapping: made writable in place.
    SharedWrite,
    /// The page was reused in place (write) or already exclusive (unshare).
    Reuse,
    /// The page was copied (`wp_page_copy`).
    Copy,
    /// An unshare fault marked the page exclusive without copying (`Proven`).
    Unshare,
}

/// The rule that decided, by its function's name (Linux's vocabulary).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rule {
    DoAnonymousPage,
    ShmemFault,
    /// `do_file_fault` (Linux `filemap_fault` through `do_fault`).
    FileFault,
    /// `do_wp_page` on a shared mapping (`wp_page_shared`): no COW rule applies.
    WpPageShared,
    /// Not an anonymous page in a private mapping (zero page, page cache): always copied.
    NotAnon,
    WpCanReuseExclusive,
    WpCanReuseProven,
    WpCanReuseCopy,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::NewPage => "new-page",
            Decision::ZeroPage => "zero-page",
            Decision::Shmem => "shmem",
            Decision::File => "file",
            Decision::SharedWrite => "shared-write",
            Decision::Reuse => "reuse",
            Decision::Copy => "copy",
            Decision::Unshare => "unshare",
        }
    }
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::DoAnonymousPage => "do_anonymous_page",
            Rule::ShmemFault => "do_shmem_fault",
            Rule::FileFault => "do_file_fault",
            Rule::WpPageShared => "wp_page_shared",
            Rule::NotAnon => "wp_page_copy(not anon)",
            Rule::WpCanReuseExclusive => "wp_can_reuse=Exclusive",
            Rule::WpCanReuseProven => "wp_can_reuse=Proven",
            Rule::WpCanReuseCopy => "wp_can_reuse=Copy",
        }
    }
}

/// One recorded fault.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// 1 for the first fault recorded since boot, counting up (gaps: overwritten entries).
    pub seq: u64,
    /// The faulting address space's page-table root.
    pub root: PhysAddr,
    pub addr: VirtAddr,
    pub kind: FaultKind,
    pub decision: Decision,
    pub rule: Rule,
}

struct Ring {
    next: u64,
    slots: [Option<Event>; CAPACITY],
}

/// The trace of one memory manager.
pub struct FaultTrace {
    enabled: AtomicBool,
    ring: Mutex<Ring>,
}

impl Default for FaultTrace {
    fn default() -> FaultTrace {
        FaultTrace {
            enabled: AtomicBool::new(false),
            ring: Mutex::new(Ring {
                next: 1,
                slots: [None; CAPACITY],
            }),
        }
    }
}

impl FaultTrace {
    /// Turns recording on or off; turning it on starts an empty trace.
    pub fn set_enabled(&self, on: bool) {
        if on {
            self.ring.lock().slots = [None; CAPACITY];
        }
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether faults are recorded: the one check on the fault path.
    #[inline(always)]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records one fault (called only when [`FaultTrace::enabled`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn record(
        &self,
        root: PhysAddr,
        addr: VirtAddr,
        kind: FaultKind,
        decision: (Decision, Rule),
    ) {
        let mut ring = self.ring.lock();
        let seq = ring.next;
        ring.next += 1;
        ring.slots[(seq % CAPACITY as u64) as usize] = Some(Event {
            seq,
            root,
            addr,
            kind,
            decision: decision.0,
            rule: decision.1,
        });
    }

    /// The recorded faults, oldest first.
    pub fn events(&self) -> alloc::vec::Vec<Event> {
        let ring = self.ring.lock();
        let mut out: alloc::vec::Vec<Event> = ring.slots.iter().flatten().copied().collect();
        drop(ring);
        out.sort_by_key(|e| e.seq);
        out
    }
}
