//! TLB shootdowns across emulated CPUs (issue 16): a translation cached on CPU 1 must be gone
//! from CPU 1 when an operation on CPU 0 that removed or weakened it returns, and no frame may
//! be freed while any CPU's TLB still maps it. `lose_shootdowns_to` shows the checks bite.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Env, PAGE};
use crate::error::{FaultError, SegvReason};
use crate::frame::FrameFlags;
use crate::host::on_cpu;
use crate::vma::Prot;

const CPU1: u64 = 1 << 1;

/// Running on CPU 1 sets its `mm_cpumask` bit and fills its TLB.
#[test]
fn access_on_cpu1_sets_its_cpumask_bit_and_fills_its_tlb() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 7).unwrap();
    assert_eq!(s.mm_cpumask(), 1);
    assert_eq!(on_cpu(1, || env.read(&mut s, va)), Ok(7));
    assert_eq!(s.mm_cpumask(), 0b11);
    assert_eq!(env.mm.arch().tlb_of(1).len(), 1);
    s.mm_cpumask_clear(1);
    assert_eq!(s.mm_cpumask(), 1);
    s.mm_cpumask_set(1);
    env.finish(alloc::vec![s]);
}

/// A CPU that switched to another address space and cleared its bit gets no IPI (the point
/// of the mask), and nothing stale is left on it.
#[test]
fn cpu_that_left_the_space_is_not_interrupted() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 2, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    on_cpu(1, || {
        assert_eq!(env.read(&mut s, va), Ok(1));
        env.mm.arch().load_other_root(s.root());
        s.mm_cpumask_clear(1);
    });
    let ipis = env.mm.arch().ipis();
    s.munmap(&env.mm, va, PAGE as usize).unwrap();
    s.mprotect(&env.mm, va + PAGE, PAGE as usize, Prot::READ)
        .unwrap();
    assert_eq!(
        env.mm.arch().ipis(),
        ipis,
        "an IPI to a CPU outside mm_cpumask"
    );
    env.check(&[&s]);
    env.finish(alloc::vec![s]);
}

#[test]
fn munmap_on_cpu0_shoots_down_cpu1() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    for i in 0..4 {
        env.write(&mut s, va + i * PAGE, i).unwrap();
    }
    on_cpu(1, || {
        for i in 0..4 {
            assert_eq!(env.read(&mut s, va + i * PAGE), Ok(i));
        }
    });
    assert_eq!(env.mm.arch().tlb_of(1).len(), 4);
    let ipis = env.mm.arch().ipis();
    s.munmap(&env.mm, va, (2 * PAGE) as usize).unwrap();
    assert_eq!(
        env.mm.arch().ipis(),
        ipis + 1,
        "one batched IPI for the munmap"
    );
    assert_eq!(
        env.mm.arch().tlb_of(1).len(),
        2,
        "CPU 1 kept an unmapped page"
    );
    env.check(&[&s]);
    let err = on_cpu(1, || env.read(&mut s, va)).unwrap_err();
    assert_eq!(err.error, FaultError::Segv(SegvReason::NoMapping));
    assert_eq!(on_cpu(1, || env.read(&mut s, va + 3 * PAGE)), Ok(3));
    env.finish(alloc::vec![s]);
}

#[test]
fn mprotect_on_cpu0_shoots_down_cpu1() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    on_cpu(1, || env.write(&mut s, va, 1)).unwrap();
    s.mprotect(&env.mm, va, PAGE as usize, Prot::READ).unwrap();
    env.check(&[&s]);
    let err = on_cpu(1, || env.write(&mut s, va, 2)).unwrap_err();
    assert_eq!(err.error, FaultError::Segv(SegvReason::Protection));
    assert_eq!(on_cpu(1, || env.read(&mut s, va)), Ok(1));
    env.finish(alloc::vec![s]);
}

/// fork write-protects the parent: CPU 1's writable entry must go, or CPU 1 would keep writing
/// into the page the child now shares.
#[test]
fn fork_on_cpu0_write_protects_cpu1() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    on_cpu(1, || env.write(&mut s, va, 1)).unwrap();
    let mut child = s.fork(&env.mm).unwrap();
    env.check(&[&s, &child]);
    on_cpu(1, || env.write(&mut s, va, 2)).unwrap();
    assert_eq!(
        env.read(&mut child, va),
        Ok(1),
        "the parent's write reached the child"
    );
    assert_eq!(on_cpu(1, || env.read(&mut s, va)), Ok(2));
    env.finish(alloc::vec![s, child]);
}

/// A COW break on CPU 0 replaces the parent's frame: CPU 1 must not keep reading the old
/// (child's) frame through its cached read-only entry.
#[test]
fn cow_break_on_cpu0_shoots_down_cpu1() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let mut child = s.fork(&env.mm).unwrap();
    assert_eq!(on_cpu(1, || env.read(&mut s, va)), Ok(1));
    let old = env.frame(&s, va);
    env.write(&mut s, va, 2).unwrap();
    assert_ne!(env.frame(&s, va), old, "the write copied");
    env.check(&[&s, &child]);
    assert_eq!(
        on_cpu(1, || env.read(&mut s, va)),
        Ok(2),
        "CPU 1 read the old frame"
    );
    assert_eq!(env.read(&mut child, va), Ok(1));
    env.finish(alloc::vec![s, child]);
}

/// The detector works: with the IPI to CPU 1 lost, mprotect leaves CPU 1 a writable entry,
/// CPU 1 writes through it, and the coherence check names CPU 1.
#[test]
fn lost_shootdown_leaves_a_stale_entry_that_is_caught() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    on_cpu(1, || env.write(&mut s, va, 1)).unwrap();
    env.mm.arch().lose_shootdowns_to(CPU1);
    s.mprotect(&env.mm, va, PAGE as usize, Prot::READ).unwrap();
    assert_eq!(
        on_cpu(1, || env.write(&mut s, va, 2)),
        Ok(()),
        "without the shootdown CPU 1 writes a read-only page"
    );
    let err = env
        .mm
        .arch()
        .check_tlbs_coherent(&env.mm, &[s.root()])
        .unwrap_err();
    assert!(err.starts_with("CPU 1: stale TLB entry"), "{err}");
    env.mm.arch().lose_shootdowns_to(0);
    env.finish(alloc::vec![s]);
}

/// The same on munmap: the frame goes back to the allocator while CPU 1 still maps it, which
/// the frame-freed hook refuses.
#[test]
fn lost_shootdown_on_munmap_is_caught_before_the_frame_is_reused() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    assert_eq!(on_cpu(1, || env.read(&mut s, va)), Ok(1));
    env.mm.arch().lose_shootdowns_to(CPU1);
    let panic = catch_unwind(AssertUnwindSafe(|| {
        s.munmap(&env.mm, va, PAGE as usize).unwrap();
    }))
    .unwrap_err();
    let msg = panic
        .downcast_ref::<alloc::string::String>()
        .expect("a formatted panic");
    assert!(msg.contains("CPU 1's TLB still maps"), "{msg}");
    // The machine is left inconsistent on purpose; it is not torn down.
    core::mem::forget(s);
}

/// Frames freed by munmap on CPU 0 and handed out again are never reached through CPU 1's old
/// entries: CPU 1 sees the new mapping's data.
#[test]
fn reused_frames_are_not_reached_through_old_entries() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 8, Prot::RW);
    for i in 0..8 {
        env.write(&mut s, va + i * PAGE, 100 + i).unwrap();
    }
    on_cpu(1, || {
        for i in 0..8 {
            assert_eq!(env.read(&mut s, va + i * PAGE), Ok(100 + i));
        }
    });
    s.munmap(&env.mm, va, (8 * PAGE) as usize).unwrap();
    let other = env.map(&mut s, 64 * PAGE, 8, Prot::RW);
    let again = env.map(&mut s, 0, 8, Prot::RW);
    assert_eq!(again, va);
    for i in 0..8 {
        env.write(&mut s, other + i * PAGE, 200 + i).unwrap();
        env.write(&mut s, va + i * PAGE, 300 + i).unwrap();
    }
    on_cpu(1, || {
        for i in 0..8 {
            assert_eq!(env.read(&mut s, va + i * PAGE), Ok(300 + i));
            assert_eq!(env.read(&mut s, other + i * PAGE), Ok(200 + i));
        }
    });
    env.check(&[&s]);
    env.finish(alloc::vec![s]);
}

/// Munmap on CPU 0 while CPU 1 sits with interrupts off (as in a GUP-fast walk) for 100 ms;
/// returns whether munmap returned only after CPU 1 enabled them.
fn munmap_waited_for_irqs_off_cpu1(lose: bool) -> bool {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    s.mm_cpumask_set(1);
    env.mm
        .arch()
        .lose_shootdowns_to(if lose { CPU1 } else { 0 });
    let irqs_off = AtomicBool::new(false);
    let restored = AtomicBool::new(false);
    let waited = std::thread::scope(|scope| {
        scope.spawn(|| {
            on_cpu(1, || {
                let arch = env.mm.arch();
                let irq = crate::arch::Arch::irq_save(arch);
                irqs_off.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
                restored.store(true, Ordering::SeqCst);
                crate::arch::Arch::irq_restore(arch, irq);
            })
        });
        while !irqs_off.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        s.munmap(&env.mm, va, PAGE as usize).unwrap();
        restored.load(Ordering::SeqCst)
    });
    env.mm.arch().lose_shootdowns_to(0);
    env.finish(alloc::vec![s]);
    waited
}

/// A shootdown to a CPU with interrupts off (GUP-fast's walk) returns only after that CPU
/// enables them: the page tables it walks cannot be freed under it.
#[test]
fn shootdown_waits_for_a_cpu_with_interrupts_off() {
    assert!(
        munmap_waited_for_irqs_off_cpu1(false),
        "munmap returned (and freed) while CPU 1 still had interrupts off"
    );
}

/// The detector: without the IPI to CPU 1, munmap frees while CPU 1 is still in its walk.
#[test]
fn lost_shootdown_does_not_wait_for_a_cpu_with_interrupts_off() {
    assert!(!munmap_waited_for_irqs_off_cpu1(true));
}

/// CPU 1 sits with interrupts off (a GUP-fast walk) while CPU 0 unmaps the only page of a page
/// table. Returns (the table stayed a table for CPU 1's whole section, it was freed after).
fn pt_survives_walk_on_cpu1(lose: bool) -> (bool, bool) {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let pt = crate::pagetable::PageTable::new(&env.mm, s.root())
        .walk_pt(va)
        .expect("the page's PT");
    let is_table = || env.flags(pt).contains(FrameFlags::PAGETABLE);
    s.mm_cpumask_set(1);
    env.mm
        .arch()
        .lose_shootdowns_to(if lose { CPU1 } else { 0 });
    let irqs_off = AtomicBool::new(false);
    let survived = std::thread::scope(|scope| {
        let walker = scope.spawn(|| {
            on_cpu(1, || {
                let arch = env.mm.arch();
                let irq = crate::arch::Arch::irq_save(arch);
                irqs_off.store(true, Ordering::SeqCst);
                let until = std::time::Instant::now() + Duration::from_millis(100);
                let mut survived = true;
                while std::time::Instant::now() < until {
                    survived &= is_table();
                    std::thread::yield_now();
                }
                crate::arch::Arch::irq_restore(arch, irq);
                survived
            })
        });
        while !irqs_off.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        s.munmap(&env.mm, va, PAGE as usize).unwrap();
        walker.join().unwrap()
    });
    let freed = !is_table();
    env.mm.arch().lose_shootdowns_to(0);
    env.finish(alloc::vec![s]);
    (survived, freed)
}

/// Page-table pages emptied by munmap are freed only after the shootdown, which waits for a
/// CPU walking with interrupts off: the walk never sees its table freed.
#[test]
fn page_tables_freed_by_munmap_outlive_a_walk_on_another_cpu() {
    assert_eq!(pt_survives_walk_on_cpu1(false), (true, true));
}

/// The detector: with the IPI lost the table is freed during the walk.
#[test]
fn lost_shootdown_frees_a_page_table_under_a_walk() {
    assert_eq!(pt_survives_walk_on_cpu1(true), (false, true));
}

/// The zap hands the gather one flush range per run of cleared PTEs (not one page at a time),
/// and flushes a full batch of 64 pages before its next page: every page cached on CPU 1 must
/// still be flushed before its frame is freed (the frame-freed hook panics otherwise), for
/// sparse pages on both sides of a PT boundary (a ranged flush, under the 32-page ceiling) and
/// for a run long enough to fill the batch in the middle of a PT.
#[test]
fn zapped_runs_and_full_batches_are_flushed_on_cpu1_before_their_frames_are_freed() {
    let env = Env::with_frames(1024);
    let mut s = env.space();
    // 2 MiB-aligned start: a PT boundary 512 pages in.
    let va = env.map(&mut s, 0, 1024, Prot::RW);
    assert_eq!(
        va.as_u64() % (512 * PAGE),
        0,
        "the test wants a PT boundary"
    );
    // Sparse: 505, 509, 511 | 512, 514, 517 (a 13-page range across the boundary).
    let sparse = [505u64, 509, 511, 512, 514, 517];
    // Dense: 100 pages in the first PT (the batch fills at 64 in the middle of it) and 150 in
    // the second, after the sparse ones.
    let dense: alloc::vec::Vec<u64> = (300..400).chain(600..750).collect();
    for &p in sparse.iter().chain(&dense) {
        env.write(&mut s, va + p * PAGE, p).unwrap();
    }
    on_cpu(1, || {
        for &p in sparse.iter().chain(&dense) {
            assert_eq!(env.read(&mut s, va + p * PAGE), Ok(p));
        }
    });
    let cached = env.mm.arch().tlb_of(1).len();
    assert!(
        cached >= sparse.len() + dense.len(),
        "CPU 1 caches {cached}"
    );
    // The sparse range alone: a ranged flush on CPU 1.
    s.munmap(&env.mm, va + 504 * PAGE, (14 * PAGE) as usize)
        .unwrap();
    for &p in &sparse {
        assert!(env.read(&mut s, va + p * PAGE).is_err());
    }
    on_cpu(1, || {
        assert!(env.read(&mut s, va + 505 * PAGE).is_err());
        assert_eq!(env.read(&mut s, va + 300 * PAGE), Ok(300));
    });
    // MADV_DONTNEED of the dense runs: full batches in the middle of each PT.
    // (Two calls: the range has the hole the munmap left, which madvise refuses.)
    for (from, to) in [(0, 504), (518, 1024)] {
        s.madvise(
            &env.mm,
            va + from * PAGE,
            ((to - from) * PAGE) as usize,
            crate::madvise::Advice::DontNeed,
        )
        .unwrap();
    }
    on_cpu(1, || {
        for &p in &dense {
            assert_eq!(env.read(&mut s, va + p * PAGE), Ok(0), "page {p}");
        }
    });
    env.mm
        .arch()
        .check_tlbs_coherent(&env.mm, &[s.root()])
        .unwrap();
    env.check(&[&s]);
    env.finish(alloc::vec![s]);
}
