//! Per-phase fault accounting, compiled in only with the `faultstat` cargo feature.
//!
//! Picture: a fault is cut into phases by timestamps: [`begin`] when `fault_inner` starts, then
//! [`phase`] each time one ends (VMA lookup, page-table walk, frame allocation, copy or zero
//! fill, PTE and metadata update, TLB flush), each adding the ticks since the previous mark to a
//! scratch record; the code that learns what kind of fault it is says so with [`kind`], and
//! [`end`] adds the scratch record to that kind's totals. Ticks are TSC ticks: guest
//! instructions under QEMU `-icount shift=0`, cycles elsewhere. The trap entry and exit around
//! the memory manager are not here: they are the user-space figure minus the in-kernel total.
//!
//! Without the feature every function is an empty `#[inline(always)]` body, so the default
//! build's fault path carries no measurement code. With it, faults must be serialised (they are:
//! one CPU, interrupts off in the trap; host tests do not enable the feature).

/// The kind of fault, as the fault path classified it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Kind {
    /// Read fault on an empty PTE: the zero page is mapped.
    ZeroPageMap,
    /// Write fault on an empty PTE: a zeroed exclusive page.
    ZeroFill,
    /// Write fault on the zero page: a zeroed page replaces it.
    ZeroPageCopy,
    /// Write (or unshare) fault that copied a possibly shared anon page.
    CowCopy,
    /// Write fault that reused the page in place (exclusive, or proven unshared).
    CowReuse,
    /// Unshare fault that needed no copy.
    Unshare,
    /// Fault on an empty PTE of a shmem (later: file) mapping.
    FileFault,
    /// Read fault on an empty PMD of a THP-eligible range: the huge zero folio mapped by one
    /// PMD (`thp_zero_read_fault`).
    HugeZeroMap,
    /// Write fault on an empty PMD of a THP-eligible range: a new zeroed THP (`thp_fault_2m`).
    ThpFill,
    /// Anything else: a spurious fault on a PTE that already allowed the access.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::ZeroPageMap,
        Kind::ZeroFill,
        Kind::ZeroPageCopy,
        Kind::CowCopy,
        Kind::CowReuse,
        Kind::Unshare,
        Kind::FileFault,
        Kind::HugeZeroMap,
        Kind::ThpFill,
        Kind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ZeroPageMap => "zero_page_map",
            Kind::ZeroFill => "zero_fill",
            Kind::ZeroPageCopy => "zero_page_copy",
            Kind::CowCopy => "cow_copy",
            Kind::CowReuse => "cow_reuse",
            Kind::Unshare => "unshare",
            Kind::FileFault => "file_fault",
            Kind::HugeZeroMap => "huge_zero_map",
            Kind::ThpFill => "thp_fill",
            Kind::Other => "other",
        }
    }
}

/// A phase of the fault path, ended by a call to [`phase`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Phase {
    /// `find_vma` and the permission check.
    Lookup,
    /// The page-table walk, allocating missing tables.
    Walk,
    /// Taking a frame off the free list.
    Alloc,
    /// Copying the old page or zero-filling the new one.
    Copy,
    /// Frame metadata, reference counts and the PTE store.
    Pte,
    /// The TLB flush after replacing a mapping.
    Flush,
    /// From the last mark to the end of `fault_inner` (counters, return).
    Rest,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Lookup,
        Phase::Walk,
        Phase::Alloc,
        Phase::Copy,
        Phase::Pte,
        Phase::Flush,
        Phase::Rest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Lookup => "lookup",
            Phase::Walk => "walk",
            Phase::Alloc => "alloc",
            Phase::Copy => "copy",
            Phase::Pte => "pte",
            Phase::Flush => "flush",
            Phase::Rest => "rest",
        }
    }
}

/// Whether this build measures (the `faultstat` feature).
pub const ENABLED: bool = cfg!(feature = "faultstat");

pub use imp::{begin, end, for_each, kind, phase};

#[cfg(feature = "faultstat")]
mod imp {
    use core::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

    use super::{Kind, Phase};

    const KINDS: usize = Kind::ALL.len();
    const PHASES: usize = Phase::ALL.len();

    static LAST: AtomicU64 = AtomicU64::new(0);
    static CURRENT_KIND: AtomicU8 = AtomicU8::new(Kind::Other as u8);
    static SCRATCH: [AtomicU64; PHASES] = [const { AtomicU64::new(0) }; PHASES];
    static COUNT: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
    static TOTAL: [[AtomicU64; PHASES]; KINDS] =
        [const { [const { AtomicU64::new(0) }; PHASES] }; KINDS];

    #[inline(always)]
    fn now() -> u64 {
        // SAFETY: rdtsc reads the time-stamp counter; it touches no memory. (Both the kernel
        // and the host are x86_64.)
        unsafe { core::arch::x86_64::_rdtsc() }
    }

    /// A fault starts: forget any fault that ended in an error.
    #[inline(always)]
    pub fn begin() {
        for s in &SCRATCH {
            s.store(0, Relaxed);
        }
        CURRENT_KIND.store(Kind::Other as u8, Relaxed);
        LAST.store(now(), Relaxed);
    }

    /// `p` ends now.
    #[inline(always)]
    pub fn phase(p: Phase) {
        let t = now();
        let last = LAST.swap(t, Relaxed);
        SCRATCH[p as usize].fetch_add(t.wrapping_sub(last), Relaxed);
    }

    /// The fault under way is of kind `k`.
    #[inline(always)]
    pub fn kind(k: Kind) {
        CURRENT_KIND.store(k as u8, Relaxed);
    }

    /// The fault succeeded: the rest goes to [`Phase::Rest`], the record to its kind.
    #[inline(always)]
    pub fn end() {
        phase(Phase::Rest);
        let k = CURRENT_KIND.load(Relaxed) as usize;
        COUNT[k].fetch_add(1, Relaxed);
        for (total, s) in TOTAL[k].iter().zip(&SCRATCH) {
            total.fetch_add(s.load(Relaxed), Relaxed);
        }
    }

    /// Calls `f(kind, count, ticks per phase)` for every kind, in [`Kind::ALL`] order.
    pub fn for_each(mut f: impl FnMut(Kind, u64, [(Phase, u64); PHASES])) {
        for k in Kind::ALL {
            let totals = Phase::ALL.map(|p| (p, TOTAL[k as usize][p as usize].load(Relaxed)));
            f(k, COUNT[k as usize].load(Relaxed), totals);
        }
    }
}

#[cfg(not(feature = "faultstat"))]
mod imp {
    use super::{Kind, Phase};

    #[inline(always)]
    pub fn begin() {}

    #[inline(always)]
    pub fn phase(_: Phase) {}

    #[inline(always)]
    pub fn kind(_: Kind) {}

    #[inline(always)]
    pub fn end() {}

    /// Nothing is measured without the feature: `f` is never called.
    pub fn for_each(_: impl FnMut(Kind, u64, [(Phase, u64); 7])) {}
}
