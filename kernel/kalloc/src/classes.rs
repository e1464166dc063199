//! The size classes: which slab cache serves a request, decided from its layout alone.
//!
//! Deallocation gets the same `Layout` as the allocation (the `GlobalAlloc` contract), so the
//! same function routes both ways and no per-object tag is needed. Classes take two steps per
//! power of two (16, 32, 48, 64, 96, 128, 192, ...), so no request above 64 bytes wastes a third
//! of its object. An object's alignment is the largest power of two dividing its class size (it
//! sits at a multiple of that size from the slab's start, see [`crate::slab`]); a request whose
//! alignment that does not meet moves up to the next class that does.

/// Object sizes, ascending.
pub const SIZES: [usize; 14] = [
    16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];

/// Largest request a slab serves; larger ones go to the linked-list heap.
pub const MAX_SLAB_OBJECT: usize = SIZES[SIZES.len() - 1];

/// Slab length for objects of `size`: one page up to 512 bytes (at least 7 objects), 16 KiB
/// above (at least 7 of 2048 bytes), so the header and the tail waste little.
pub const fn slab_bytes(size: usize) -> usize {
    if size <= 512 {
        4096
    } else {
        16384
    }
}

/// Alignment every object of class `size` has.
pub const fn class_align(size: usize) -> usize {
    1 << size.trailing_zeros()
}

/// `SMALLEST[(size - 1) / 16]`: the first class at least `size` bytes long.
const SMALLEST: [u8; MAX_SLAB_OBJECT / 16] = {
    let mut table = [0u8; MAX_SLAB_OBJECT / 16];
    let mut i = 0;
    let mut class = 0;
    while i < table.len() {
        let size = (i + 1) * 16;
        while SIZES[class] < size {
            class += 1;
        }
        table[i] = class as u8;
        i += 1;
    }
    table
};

/// The class serving a request of `size` bytes aligned to `align`, or `None` for the
/// linked-list heap. O(1) except for over-aligned requests (a few steps at most).
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    if size > MAX_SLAB_OBJECT || align > MAX_SLAB_OBJECT {
        return None;
    }
    let mut class = SMALLEST[size.max(1).div_ceil(16) - 1] as usize;
    while class_align(SIZES[class]) < align {
        class += 1;
        if class == SIZES.len() {
            return None;
        }
    }
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_gets_the_smallest_fitting_aligned_class() {
        for size in 1..=MAX_SLAB_OBJECT + 1 {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 4096] {
                let expected = SIZES
                    .iter()
                    .position(|&s| s >= size && class_align(s) >= align);
                assert_eq!(class_of(size, align), expected, "size {size} align {align}");
            }
        }
        assert_eq!(class_of(0, 1), Some(0));
        assert_eq!(class_of(17, 8), Some(1));
        assert_eq!(class_of(40, 32), Some(3), "48 is only 16-aligned: 64");
    }

    #[test]
    fn waste_is_under_a_third_above_64_bytes() {
        for size in 65..=MAX_SLAB_OBJECT {
            let class = SIZES[class_of(size, 1).unwrap()];
            assert!(class - size < class / 3, "size {size} in class {class}");
        }
    }
}
