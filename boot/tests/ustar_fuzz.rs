//! Seeded fuzzing of the ustar reader (`ustar::entries`): valid archives written by
//! `ustar::Archive`, then mutated (bit flips, edge bytes in the numeric fields, truncation,
//! duplicated and spliced blocks, random bytes). The reader must never panic; what it returns
//! must lie inside the input; an unmutated archive must read back exactly what was written.
//!
//! `COWLAB_FUZZ_ITERS=N` runs N cases instead of the CI default.

use cowlab_boot::ustar::{entries, Archive};

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

/// A file as written: name, mode, contents.
type Written = (String, u32, Vec<u8>);

/// A valid archive of up to 4 files and what it holds.
fn archive(rng: &mut Rng) -> (Vec<u8>, Vec<Written>) {
    let mut a = Archive::new();
    let mut files = Vec::new();
    for i in 0..rng.below(5) {
        let name = format!("f{i}_{}", rng.below(1000));
        let mode = (rng.below(0o1000)) as u32;
        let len = match rng.below(4) {
            0 => 0,
            1 => 512,
            _ => rng.below(3000) as usize,
        };
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        a.add_file(&name, mode, &data).expect("a valid name");
        files.push((name, mode, data));
    }
    (a.finish(), files)
}

/// Byte offsets of the numeric header fields (mode, size, chksum) and the typeflag/magic.
const FIELDS: &[(usize, usize)] = &[(100, 8), (124, 12), (148, 8), (156, 1), (257, 6)];

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        if bytes.is_empty() {
            bytes.extend((0..rng.below(1024)).map(|_| 0u8));
            continue;
        }
        let len = bytes.len() as u64;
        match rng.below(7) {
            0 => {
                let at = rng.below(len) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            1 => {
                // A numeric field of some header gets edge text.
                let header = rng.below(len.div_ceil(512)) as usize * 512;
                let (off, width) = FIELDS[rng.below(FIELDS.len() as u64) as usize];
                let text: &[u8] = match rng.below(6) {
                    0 => b"77777777777",
                    1 => b"99999999999",
                    2 => b"           ",
                    3 => b"-1",
                    4 => b"\xff\xfe\xfd",
                    _ => b"00000000000",
                };
                for (i, &b) in text.iter().take(width).enumerate() {
                    if let Some(slot) = bytes.get_mut(header + off + i) {
                        *slot = b;
                    }
                }
            }
            2 => bytes.truncate(rng.below(len) as usize),
            3 => {
                // Duplicate a block somewhere.
                let from = rng.below(len.div_ceil(512)) as usize * 512;
                let block: Vec<u8> = bytes[from..(from + 512).min(bytes.len())].to_vec();
                let at = rng.below(len + 1) as usize;
                bytes.splice(at..at, block);
            }
            4 => {
                let at = rng.below(len) as usize;
                bytes[at] = [0, 0xff, b'0', b' ', b'7'][rng.below(5) as usize];
            }
            5 => bytes.extend((0..rng.below(700)).map(|_| rng.next() as u8)),
            _ => {
                let at = rng.below(len) as usize;
                let n = (rng.below(64) as usize).min(bytes.len() - at);
                for b in &mut bytes[at..at + n] {
                    *b = rng.next() as u8;
                }
            }
        }
    }
}

#[test]
fn valid_archives_read_back_and_mutated_ones_never_panic() {
    let mut rng = Rng(0x7573_7461_7200_0001);
    let mut rejected = 0;
    let mut accepted = 0;
    for case in 0..iterations(3000) {
        let (mut bytes, files) = archive(&mut rng);
        let read = entries(&bytes).unwrap_or_else(|e| panic!("case {case}: valid archive: {e}"));
        let got: Vec<Written> = read
            .iter()
            .map(|e| (e.name.clone(), e.mode, e.data.to_vec()))
            .collect();
        assert_eq!(got, files, "case {case}: round trip");

        mutate(&mut rng, &mut bytes);
        match entries(&bytes) {
            Ok(read) => {
                accepted += 1;
                let range = bytes.as_ptr_range();
                for e in read {
                    let inside = e.data.is_empty()
                        || (range.contains(&e.data.as_ptr())
                            && e.data.as_ptr_range().end <= range.end);
                    assert!(
                        inside,
                        "case {case}: an entry's data lies outside the input"
                    );
                    assert!(e.mode <= 0o7777, "case {case}: mode {:o}", e.mode);
                }
            }
            Err(_) => rejected += 1,
        }
    }
    // Both outcomes must occur, or the mutations test nothing.
    assert!(
        rejected > 0 && accepted > 0,
        "{accepted} accepted, {rejected} rejected"
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x7573_7461_7200_0002);
    for _ in 0..iterations(3000) {
        let len = rng.below(4096) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= 263 && rng.below(2) == 0 {
            bytes[257..262].copy_from_slice(b"ustar");
        }
        let _ = entries(&bytes);
    }
}
