//! Host tests of the memory manager, driven through the emulated MMU (`host::cpu`).
//!
//! Every test builds a small machine, performs user accesses and system calls as a process
//! would, and runs the invariant checker and the TLB-coherence check after each step
//! ([`Env::check`]). Tests end by tearing every address space down and checking that the free
//! frame count is back at its value after boot.

mod conformance;
mod era_tests;
mod fault_tests;
mod fork_tests;
mod gup_tests;
mod hugetlb1g_tests;
mod hugetlb_mremap_tests;
mod hugetlb_tests;
mod mthp_tests;
mod pagecache_tests;
mod pagelock_tests;
mod random;
mod regbuf_tests;
mod robust_tests;
mod shmem_tests;
mod smaps_tests;
mod smp_stress_tests;
mod smp_tests;
mod softdirty_tests;
mod teardown_tests;
mod thp2_tests;
mod thp_tests;
mod unlocked_fault_tests;
mod vma_tests;
mod vmalimit_tests;

use alloc::vec::Vec;

use crate::addr::{PhysAddr, VirtAddr};
use crate::aspace::AddressSpace;
use crate::check::check_invariants;
use crate::era::Era;
use crate::frame::FrameFlags;
use crate::host::cpu::{read_u64, write_u64, UserFault};
use crate::host::{new_mm, HostArch};
use crate::mm::{Mm, MAX_MAP_COUNT, MAX_VMAS};
use crate::mmap::MapFlags;
use crate::pagetable::Pte;
use crate::vma::Prot;
use crate::PAGE_SIZE;

pub(crate) const PAGE: u64 = PAGE_SIZE as u64;
/// A fixed address the tests map at.
pub(crate) const BASE: u64 = 0x4000_0000;

/// `MAP_PRIVATE | MAP_ANONYMOUS`.
pub(crate) const ANON: MapFlags = MapFlags::from_linux(0x22);

/// An address space's VMAs as `(start, end, prot)`, in address order.
pub(crate) fn spans(s: &AddressSpace) -> Vec<(u64, u64, Prot)> {
    s.vmas()
        .map(|v| (v.start().as_u64(), v.end().as_u64(), v.prot()))
        .collect()
}

/// A machine plus the free-frame count right after boot.
pub(crate) struct Env {
    pub mm: Mm<HostArch>,
    pub baseline: usize,
}

impl Env {
    pub fn new() -> Env {
        Env::with_frames(512)
    }

    pub fn with_frames(frames: usize) -> Env {
        let mm = new_mm(frames);
        let baseline = mm.frames().free_frames();
        Env { mm, baseline }
    }

    pub fn era(era: Era) -> Env {
        let env = Env::new();
        env.mm.set_era(era);
        env
    }

    pub fn space(&self) -> AddressSpace {
        AddressSpace::new(&self.mm).expect("address space")
    }

    /// Invariants plus TLB coherence over exactly these live address spaces.
    pub fn check(&self, spaces: &[&AddressSpace]) {
        if let Err(e) = check_invariants(&self.mm, spaces) {
            panic!("invariant violated: {e}");
        }
        let roots: Vec<PhysAddr> = spaces.iter().map(|s| s.root()).collect();
        if let Err(e) = self.mm.arch().check_tlbs_coherent(&self.mm, &roots) {
            panic!("TLB incoherent: {e}");
        }
        assert_eq!(
            self.mm.live_vmas(),
            spaces.iter().map(|s| s.vmas().count()).sum::<usize>(),
            "the system-wide VMA count drifted from the address spaces' VMAs"
        );
    }

    /// Exits every space and checks that all frames came back.
    pub fn finish(&self, spaces: Vec<AddressSpace>) {
        for s in spaces {
            s.exit(&self.mm);
        }
        self.check(&[]);
        let st = self.mm.stats();
        assert_eq!(
            (st.gup_pins_held, st.gup_refs_held),
            (0, 0),
            "GUP pins or references still held after the test"
        );
        assert_eq!(
            self.mm.frames().free_frames(),
            self.baseline,
            "frames leaked after every address space exited"
        );
        assert_eq!(self.mm.arch().tlb_entries(), 0, "TLB entries survive exit");
    }

    /// Maps `pages` private anonymous pages at `BASE + offset` with `prot`.
    pub fn map(&self, s: &mut AddressSpace, offset: u64, pages: u64, prot: Prot) -> VirtAddr {
        s.mmap(
            &self.mm,
            VirtAddr::new(BASE + offset),
            (pages * PAGE) as usize,
            prot,
            MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
        )
        .expect("mmap")
    }

    pub fn read(&self, s: &mut AddressSpace, va: VirtAddr) -> Result<u64, UserFault> {
        read_u64(&self.mm, s, va)
    }

    pub fn write(&self, s: &mut AddressSpace, va: VirtAddr, v: u64) -> Result<(), UserFault> {
        write_u64(&self.mm, s, va, v)
    }

    pub fn pte(&self, s: &AddressSpace, va: VirtAddr) -> Pte {
        s.translate(&self.mm, va).expect("a mapping PTE")
    }

    pub fn frame(&self, s: &AddressSpace, va: VirtAddr) -> PhysAddr {
        self.pte(s, va).frame()
    }

    pub fn flags(&self, frame: PhysAddr) -> FrameFlags {
        self.mm.frames().meta(frame).flags()
    }

    pub fn exclusive(&self, s: &AddressSpace, va: VirtAddr) -> bool {
        self.mm
            .frames()
            .meta(self.frame(s, va))
            .test(FrameFlags::ANON_EXCLUSIVE)
    }
}

/// xorshift64*: small, seeded, reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
