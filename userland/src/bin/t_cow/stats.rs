//! `/proc/cowlab/mmstat`: the memory manager's counters, read before and after each case to
//! check that frames, references and pins return to their baseline, and around each gup_test
//! pin to see whether GUP-fast took the page or fell back to the slow path.

use alloc::string::String;
use core::fmt::Write;

use cowlab_userland::calls::{close, open, pread};

/// The counters the suite looks at (a subset of the file, by name).
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct Snapshot {
    pub era: u32,
    pub free_frames: u64,
    pub anon_pages: u64,
    pub zero_page_mappings: u64,
    pub pagetable_pages: u64,
    pub shmem_pages: u64,
    pub gup_pins_held: u64,
    pub gup_refs_held: u64,
    pub gup_slow_pages: u64,
    pub gup_fast_pages: u64,
    pub gup_fast_fallbacks: u64,
    pub gup_unshare_faults: u64,
    // thp2: large-folio gauges.
    pub anon_thps: u64,
    pub huge_zero_mappings: u64,
    pub deferred_split_queued: u64,
}

/// Reads the file; `None` where it does not exist (the host) or is not understood.
pub fn read() -> Option<Snapshot> {
    let fd = open(c"/proc/cowlab/mmstat", 0).ok()?;
    // The file is ~700 bytes: a stack buffer, so reading allocates nothing in this process.
    let mut buf = [0u8; 4096];
    let n = pread(fd, &mut buf, 0).ok();
    let _ = close(fd);
    let text = core::str::from_utf8(&buf[..n?]).ok()?;
    let mut s = Snapshot::default();
    let mut seen = 0;
    for line in text.lines() {
        let (name, value) = line.split_once(' ')?;
        let value: u64 = value.trim().parse().ok()?;
        let field = match name {
            "era" => {
                s.era = value as u32;
                seen += 1;
                continue;
            }
            "free_frames" => &mut s.free_frames,
            "anon_pages" => &mut s.anon_pages,
            "zero_page_mappings" => &mut s.zero_page_mappings,
            "pagetable_pages" => &mut s.pagetable_pages,
            "shmem_pages" => &mut s.shmem_pages,
            "gup_pins_held" => &mut s.gup_pins_held,
            "gup_refs_held" => &mut s.gup_refs_held,
            "gup_slow_pages" => &mut s.gup_slow_pages,
            "gup_fast_pages" => &mut s.gup_fast_pages,
            "gup_fast_fallbacks" => &mut s.gup_fast_fallbacks,
            "gup_unshare_faults" => &mut s.gup_unshare_faults,
            // thp2
            "anon_thps" => &mut s.anon_thps,
            "huge_zero_mappings" => &mut s.huge_zero_mappings,
            "deferred_split_queued" => &mut s.deferred_split_queued,
            _ => continue,
        };
        *field = value;
        seen += 1;
    }
    (seen == 12 + 3).then_some(s)
}

impl Snapshot {
    /// The gauges that must be back at their baseline once a case has cleaned up, as
    /// `name before->after` for each that is not; empty if all are.
    pub fn leaks_since(&self, before: &Snapshot) -> String {
        let mut out = String::new();
        for (name, b, a) in [
            ("free_frames", before.free_frames, self.free_frames),
            ("anon_pages", before.anon_pages, self.anon_pages),
            (
                "zero_page_mappings",
                before.zero_page_mappings,
                self.zero_page_mappings,
            ),
            (
                "pagetable_pages",
                before.pagetable_pages,
                self.pagetable_pages,
            ),
            ("shmem_pages", before.shmem_pages, self.shmem_pages),
            ("gup_pins_held", before.gup_pins_held, self.gup_pins_held),
            ("gup_refs_held", before.gup_refs_held, self.gup_refs_held),
            // thp2
            ("anon_thps", before.anon_thps, self.anon_thps),
            (
                "huge_zero_mappings",
                before.huge_zero_mappings,
                self.huge_zero_mappings,
            ),
            (
                "deferred_split_queued",
                before.deferred_split_queued,
                self.deferred_split_queued,
            ),
        ] {
            if a != b {
                let _ = write!(
                    out,
                    "{}{name} {b}->{a}",
                    if out.is_empty() { "" } else { ", " }
                );
            }
        }
        out
    }
}
