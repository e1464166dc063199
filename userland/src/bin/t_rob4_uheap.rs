//! The user programs' own allocator reuses freed blocks (issue 17). The fuzz parent runs for
//! hundreds of thousands of calls in one boot; with the old bump allocator, which never reused a
//! small block, it ran out of address space after 40,000-100,000 calls ("memory allocation of 64
//! bytes failed", exit 101). Checks: a freed block of one layout is handed out again; blocks are
//! aligned as asked (up to 64 KiB) and never overlap (a live window of blocks keeps its
//! patterns); and 300,000 allocate/free pairs of mixed sizes (16 B .. 60 KiB, as the fuzz
//! parent's buffers) leave `VmData` within 4 MiB of where it started. Before the fix the loop
//! carved about 3 GiB of arenas: `VmData` grew by gigabytes (or the arena mmap failed and the
//! program aborted). Runs on the host Linux too (the same allocator is linked there).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::alloc::{alloc, dealloc, Layout};
use alloc::boxed::Box;

use cowlab_userland::calls::read_file;
use cowlab_userland::test::Tester;

cowlab_userland::entry!(main);

/// `VmData` in kB from /proc/self/status (read into a stack buffer: allocates nothing).
fn vm_data_kb() -> Option<u64> {
    let mut buf = [0u8; 4096];
    let n = read_file(c"/proc/self/status", &mut buf)?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmData:"))?;
    line["VmData:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// xorshift64: a fixed sequence, so a failure repeats.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() -> i32 {
    let mut t = Tester::new("t_rob4_uheap");

    // Reuse: the same layout freed and asked for again comes back at the same address.
    let first = Box::new([7u8; 100]);
    let addr = &*first as *const [u8; 100] as usize;
    drop(first);
    let second = Box::new([9u8; 100]);
    let again = &*second as *const [u8; 100] as usize;
    t.check_why(
        "a freed 100-byte block is handed out again",
        again == addr,
        format_args!("first at {addr:#x}, then {again:#x}"),
    );
    drop(second);

    // Alignment up to 64 KiB (past a page the block is a mapping of its own), for sizes
    // smaller than the alignment.
    let mut aligned = true;
    for shift in 3..=16 {
        let align = 1usize << shift;
        for size in [1, align / 2 + 1, align, align + 8] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: the layout has a non-zero size; the block is freed with the same layout.
            let p = unsafe { alloc(layout) };
            if p.is_null() || !(p as usize).is_multiple_of(align) {
                aligned = false;
            }
            if !p.is_null() {
                // SAFETY: allocated above with this layout.
                unsafe { dealloc(p, layout) };
            }
        }
    }
    t.check("blocks are aligned as asked, up to 64 KiB", aligned);

    // Churn: a window of 64 live blocks of mixed sizes, each tagged at both ends and the middle
    // and checked when freed (a block handed out twice would carry its twin's tag). Only three
    // bytes are touched per block: the point is the allocator's bookkeeping, not memset speed.
    let before = vm_data_kb();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut window: [Option<(*mut u8, Layout, u8)>; 64] = [None; 64];
    let mut intact = true;
    let mut failed_alloc = false;
    const ROUNDS: u32 = 300_000;
    for round in 0..ROUNDS {
        let r = next(&mut state);
        let size = match r % 4 {
            0 => 16 + (r >> 8) as usize % 48,
            1 => 64 + (r >> 8) as usize % 960,
            2 => 1024 + (r >> 8) as usize % 7168,
            _ => 8192 + (r >> 8) as usize % 53248,
        };
        let slot = (r >> 40) as usize % window.len();
        if let Some((p, layout, tag)) = window[slot].take() {
            let n = layout.size();
            // SAFETY: `p` is a live block of `layout`, written below when it was allocated.
            unsafe {
                if *p != tag || *p.add(n / 2) != tag || *p.add(n - 1) != tag {
                    intact = false;
                }
                dealloc(p, layout);
            }
        }
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero size; freed above or after the loop with the same layout.
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            failed_alloc = true;
            break;
        }
        let tag = round as u8;
        // SAFETY: the block is `size` bytes long.
        unsafe {
            *p = tag;
            *p.add(size / 2) = tag;
            *p.add(size - 1) = tag;
        }
        window[slot] = Some((p, layout, tag));
    }
    for (p, layout, _) in window.iter().flatten() {
        // SAFETY: each is a live block of its layout.
        unsafe { dealloc(*p, *layout) };
    }
    let after = vm_data_kb();
    t.check(
        "300,000 allocations of 16 B..60 KiB all succeed",
        !failed_alloc,
    );
    t.check(
        "live blocks keep their contents (no block handed out twice)",
        intact,
    );
    let grown = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    t.check_why(
        "VmData grows by less than 4 MiB over the churn",
        grown.is_some_and(|g| g < 4096),
        format_args!("VmData before {before:?} kB, after {after:?} kB"),
    );
    t.finish()
}
