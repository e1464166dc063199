//! Tests of the frame allocator (`cowlab_mm::frame::FrameTable` over the boot memory map).

use cowlab_mm::addr::PhysAddr;

use super::{ensure, TestResult};
use crate::{memory, time};

/// Allocates every free frame, checks the count reaches 0 and that allocation then fails, checks
/// no frame was handed out twice, frees them all and checks the count is back to its boot value.
///
/// No heap: the allocated frames are chained through their own first words. Each frame gets
/// `[tag ^ pfn, previous frame]`; a frame that already carries its tag when allocated was
/// handed out twice. The tag is fresh per run, so stale contents cannot match by accident.
pub fn frame_alloc_all_free_all() -> TestResult {
    let frames = memory::frames();
    let before = frames.free_frames();
    ensure!(
        before == memory::boot_free_frames(),
        "{before} free frames before the test, {} at boot: something leaked",
        memory::boot_free_frames()
    );
    ensure!(before > 0, "no free frames at all");
    let tag = time::rdtsc() | 1;
    let words = |frame: PhysAddr| memory::phys_to_virt(frame).cast::<u64>();

    let mut chain: Option<PhysAddr> = None;
    let mut allocated = 0usize;
    while let Some(frame) = frames.alloc() {
        ensure!(
            frame.is_page_aligned(),
            "frame {frame:?} is not page aligned"
        );
        let word = words(frame);
        // SAFETY: the frame was just allocated, so it is ours; the offset mapping maps it.
        let first = unsafe { word.read_volatile() };
        ensure!(
            first != tag ^ frame.pfn() as u64,
            "frame {frame:?} was handed out twice"
        );
        // SAFETY: as above; writing the chain link and the tag into our own frame.
        unsafe {
            word.write_volatile(tag ^ frame.pfn() as u64);
            word.add(1)
                .write_volatile(chain.map_or(0, PhysAddr::as_u64));
        }
        chain = Some(frame);
        allocated += 1;
    }
    ensure!(
        frames.free_frames() == 0,
        "allocator ran dry with {} frames counted free",
        { frames.free_frames() }
    );
    ensure!(
        frames.alloc().is_none(),
        "allocation succeeded with no free frames"
    );
    ensure!(
        allocated == before,
        "allocated {allocated} frames, {before} were free"
    );

    let mut freed = 0usize;
    while let Some(frame) = chain {
        let word = words(frame);
        // SAFETY: every frame on the chain is still ours; we wrote these two words.
        let (first, next) = unsafe { (word.read_volatile(), word.add(1).read_volatile()) };
        ensure!(
            first == tag ^ frame.pfn() as u64,
            "frame {frame:?} was overwritten while ours"
        );
        chain = (next != 0).then(|| PhysAddr::new(next));
        frames.free(frame);
        freed += 1;
    }
    ensure!(freed == allocated, "freed {freed} of {allocated} frames");
    let after = frames.free_frames();
    ensure!(
        after == before,
        "{after} free frames after freeing all, {before} before"
    );
    Ok(())
}
