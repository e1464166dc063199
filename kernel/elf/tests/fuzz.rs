//! Seeded fuzzing of the ELF parser: valid static and static-PIE executables built here, then
//! mutated (header and program-header fields set to edge values, bit flips, truncation,
//! random bytes). `parse` must never panic, and every plan it returns must keep the
//! guarantees the kernel's loader relies on (see the crate documentation).
//!
//! `COWLAB_FUZZ_ITERS=N` runs N cases instead of the CI default.

use cowlab_elf::{parse, Limits, NotExec, Plan, PAGE};

const LIMITS: Limits = Limits {
    user_end: 0x0000_7fff_ffff_f000,
    mmap_min: 0x1_0000,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn iterations(default: u64) -> u64 {
    std::env::var("COWLAB_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// An executable: ELF header, `phnum` program headers right after it, then segment bytes.
/// Segment i is PT_LOAD at 0x40_0000 + i * 0x2000 (+ a random sub-page offset).
fn executable(rng: &mut Rng, pie: bool) -> Vec<u8> {
    let phnum = 1 + rng.below(4) as usize;
    let data_at = 64 + 56 * phnum;
    let mut f = vec![0u8; data_at + phnum * 300];
    put(&mut f, 0, b"\x7fELF\x02\x01\x01");
    put(&mut f, 16, &(if pie { 3u16 } else { 2u16 }).to_le_bytes());
    put(&mut f, 18, &62u16.to_le_bytes());
    put(&mut f, 24, &0x40_0010u64.to_le_bytes());
    put(&mut f, 32, &64u64.to_le_bytes());
    put(&mut f, 54, &56u16.to_le_bytes());
    put(&mut f, 56, &(phnum as u16).to_le_bytes());
    for i in 0..phnum {
        let ph = 64 + 56 * i;
        let kind: u32 = if i > 0 && i == phnum - 1 && rng.below(3) == 0 {
            6
        } else {
            1
        };
        put(&mut f, ph, &kind.to_le_bytes());
        put(&mut f, ph + 4, &(rng.below(8) as u32).to_le_bytes());
        put(&mut f, ph + 8, &((data_at + i * 300) as u64).to_le_bytes());
        let vaddr = 0x40_0000 + i as u64 * 0x2000 + rng.below(PAGE);
        put(&mut f, ph + 16, &vaddr.to_le_bytes());
        let filesz = rng.below(300);
        put(&mut f, ph + 32, &filesz.to_le_bytes());
        put(
            &mut f,
            ph + 40,
            &(filesz + rng.below(3 * PAGE)).to_le_bytes(),
        );
    }
    f
}

/// Offsets of the fields the parser reads: header fields and each program header's.
fn fields(f: &[u8]) -> Vec<(usize, usize)> {
    let mut out = vec![
        (4, 1),
        (5, 1),
        (16, 2),
        (18, 2),
        (24, 8),
        (32, 8),
        (54, 2),
        (56, 2),
    ];
    for i in 0..4 {
        let ph = 64 + 56 * i;
        for (off, w) in [(0, 4), (4, 4), (8, 8), (16, 8), (32, 8), (40, 8)] {
            if ph + off + w <= f.len() {
                out.push((ph + off, w));
            }
        }
    }
    out.retain(|&(at, w)| at + w <= f.len());
    out
}

const EDGES: &[u64] = &[
    0,
    1,
    3,
    6,
    0xfff,
    0x1000,
    0xffff,
    0x1_0000,
    0x7fff_ffff_f000,
    0x7fff_ffff_ffff,
    0x8000_0000_0000,
    0xffff_8000_0000_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX,
    u64::MAX - 0x5555_5555_4000 + 1,
    1 << 63,
];

fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 | 1 if !fields(f).is_empty() => {
                let fs = fields(f);
                let (at, w) = fs[rng.below(fs.len() as u64) as usize];
                let v = EDGES[rng.below(EDGES.len() as u64) as usize];
                put(f, at, &v.to_le_bytes()[..w]);
            }
            2 if !f.is_empty() => {
                let at = rng.below(f.len() as u64) as usize;
                f[at] ^= 1 << rng.below(8);
            }
            3 => f.truncate(rng.below(f.len() as u64 + 1) as usize),
            _ if !f.is_empty() => {
                let at = rng.below(f.len() as u64) as usize;
                f[at] = rng.next() as u8;
            }
            _ => {}
        }
    }
}

/// The guarantees of a plan, checked against the file it came from.
fn check(plan: &Plan, file_len: usize) {
    assert!(plan.entry < LIMITS.user_end, "entry {:#x}", plan.entry);
    let mut prev_end = 0;
    let mut prev_start = 0;
    for s in &plan.segments {
        assert!(s.start % PAGE == 0 && s.end % PAGE == 0, "{s:?}");
        assert!(
            s.start >= LIMITS.mmap_min && s.end <= LIMITS.user_end,
            "{s:?}"
        );
        assert!(s.start <= s.end && s.start >= prev_start, "{s:?}");
        assert!(
            s.file.start <= s.file.end && s.file.end <= file_len,
            "{s:?}"
        );
        assert!(s.vaddr >= s.start, "{s:?}");
        let bytes_end = s.vaddr.checked_add(s.file.len() as u64).expect("no wrap");
        assert!(bytes_end <= s.end, "file bytes past the pages: {s:?}");
        // What is mapped now starts where everything mapped before ends.
        assert!(s.map_from >= prev_end.min(s.end).max(s.start), "{s:?}");
        assert!(s.map_from >= s.start, "{s:?}");
        prev_end = prev_end.max(s.end);
        prev_start = s.start;
    }
    assert_eq!(plan.brk, prev_end);
}

#[test]
fn valid_executables_parse_and_mutated_ones_keep_the_guarantees() {
    let mut rng = Rng(0x656c_6600_0001);
    let (mut ok, mut refused) = (0u64, 0u64);
    for case in 0..iterations(20_000) {
        let pie = rng.below(2) == 0;
        let mut f = executable(&mut rng, pie);
        let plan = parse(&f, LIMITS).unwrap_or_else(|e| panic!("case {case}: valid file: {e:?}"));
        check(&plan, f.len());
        assert_eq!(plan.base, if pie { cowlab_elf::PIE_BASE } else { 0 });
        mutate(&mut rng, &mut f);
        match parse(&f, LIMITS) {
            Ok(plan) => {
                ok += 1;
                check(&plan, f.len());
            }
            Err(_) => refused += 1,
        }
    }
    assert!(ok > 0 && refused > 0, "{ok} accepted, {refused} refused");
}

#[test]
fn random_bytes_behind_a_valid_magic_never_panic() {
    let mut rng = Rng(0x656c_6600_0002);
    for _ in 0..iterations(20_000) {
        let len = rng.below(1024) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 20 {
            put(&mut f, 0, b"\x7fELF\x02\x01");
            put(&mut f, 18, &62u16.to_le_bytes());
        }
        if let Ok(plan) = parse(&f, LIMITS) {
            check(&plan, f.len());
        }
    }
}

#[test]
fn the_checks_name_what_is_wrong() {
    let mut rng = Rng(3);
    let good = executable(&mut rng, false);
    let with = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        put(&mut f, at, bytes);
        parse(&f, LIMITS).unwrap_err()
    };
    assert_eq!(with(0, b"\x7fELG"), NotExec::Magic);
    assert_eq!(with(18, &3u16.to_le_bytes()), NotExec::Machine);
    assert_eq!(with(16, &1u16.to_le_bytes()), NotExec::Type);
    assert_eq!(
        with(24, &0xffff_ffff_8000_0000u64.to_le_bytes()),
        NotExec::Entry
    );
    assert_eq!(with(56, &0u16.to_le_bytes()), NotExec::Headers);
    assert_eq!(with(64, &3u32.to_le_bytes()), NotExec::Interp);
    // A segment ending past the top of user space.
    assert_eq!(
        with(64 + 16, &0x7fff_ffff_f000u64.to_le_bytes()),
        NotExec::Segment
    );
}
