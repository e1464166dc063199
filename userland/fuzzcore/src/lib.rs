//! The fuzzer's hot loop (`userland/src/bin/fuzz.rs`): folding one kcov trace into the blocks
//! and edges seen so far. It is a crate of its own so that the workspace can build it optimised
//! in the `dev` profile (`[profile.dev.package.cowlab-fuzzcore]`): a child's trace holds 60,000
//! to 150,000 PCs, and the unoptimised loop cost about 290 guest instructions per PC, more than
//! the programs' system calls themselves.
#![no_std]
#![forbid(unsafe_code)]

/// Blocks (unique PCs) and edges (unique pairs of consecutive PCs, hashed into a bitmap as
/// AFL does) seen so far.
pub struct Cover<'a> {
    /// One bit per byte offset of the kernel's text from `base`.
    pub blocks: &'a mut [u64],
    /// `1 << edge_log2` bits.
    pub edges: &'a mut [u64],
    pub edge_log2: u32,
    pub base: u64,
}

fn set(bits: &mut [u64], i: u64) -> u64 {
    let (w, b) = ((i / 64) as usize, i % 64);
    match bits.get_mut(w) {
        Some(word) if *word & (1 << b) == 0 => {
            *word |= 1 << b;
            1
        }
        _ => 0,
    }
}

impl Cover<'_> {
    /// Adds the trace `pcs` (PCs outside the text are skipped); returns how many blocks and
    /// edges were new.
    pub fn add(&mut self, pcs: &[u64]) -> (u64, u64) {
        let span = self.blocks.len() as u64 * 64;
        let shift = 64 - self.edge_log2;
        let (mut blocks, mut edges) = (0, 0);
        let mut prev = 0u64;
        for &pc in pcs {
            let off = pc.wrapping_sub(self.base);
            if off >= span {
                continue;
            }
            blocks += set(self.blocks, off);
            let h = (prev.rotate_left(23) ^ off).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            edges += set(self.edges, h >> shift);
            prev = off;
        }
        (blocks, edges)
    }
}

#[cfg(test)]
mod tests {
    use super::Cover;

    #[test]
    fn counts_new_blocks_and_edges_once() {
        let (mut b, mut e) = ([0u64; 16], [0u64; 1 << 10]);
        let mut c = Cover {
            blocks: &mut b,
            edges: &mut e,
            edge_log2: 16,
            base: 1000,
        };
        // 1000+1, +2, +1 again: two blocks, three edges (start->1, 1->2, 2->1).
        assert_eq!(c.add(&[1001, 1002, 1001]), (2, 3));
        assert_eq!(c.add(&[1001, 1002, 1001]), (0, 0));
        // Outside the text: skipped, and no edge through it.
        assert_eq!(c.add(&[5, 1000 + 16 * 64, 1002]), (0, 1));
        // 1->3 is a new edge to a new block.
        assert_eq!(c.add(&[1001, 1003]), (1, 1));
    }
}
