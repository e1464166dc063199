//! Faults: zero page, anonymous pages, the three branches of `do_wp_page`, unshare, SIGSEGV.

use super::*;
use crate::error::{FaultError, SegvReason};
use crate::fault::{handle_mm_fault, FaultKind};
use crate::host::cpu::user_exec;
use crate::host::new_mm_with_kernel_half;

#[test]
fn read_maps_zero_page_then_write_allocates_exclusive_page() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 4, Prot::RW);
    env.check(&[&s]);

    assert_eq!(env.read(&mut s, va).unwrap(), 0);
    env.check(&[&s]);
    let pte = env.pte(&s, va);
    assert_eq!(pte.frame(), env.mm.zero_page());
    assert!(!pte.is_writable(), "the zero page is mapped read-only");
    assert_eq!(env.mm.stats().zero_page_mappings, 1);

    env.write(&mut s, va, 0xdead_beef).unwrap();
    env.check(&[&s]);
    let pte = env.pte(&s, va);
    assert_ne!(pte.frame(), env.mm.zero_page());
    assert!(pte.is_writable() && pte.is_dirty());
    assert!(env
        .flags(pte.frame())
        .contains(FrameFlags::ANON | FrameFlags::ANON_EXCLUSIVE));
    assert_eq!(env.read(&mut s, va).unwrap(), 0xdead_beef);
    assert_eq!(
        env.read(&mut s, va + 8).unwrap(),
        0,
        "a page from the zero page starts zeroed"
    );
    let st = env.mm.stats();
    assert_eq!(
        (st.zero_page_mappings, st.zero_page_copies, st.anon_pages),
        (0, 1, 1)
    );
    env.finish(std::vec![s]);
}

#[test]
fn write_to_empty_pte_maps_zeroed_exclusive_page() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    // Dirty the frame the allocator will hand out next, to see it zeroed.
    env.write(&mut s, va, 1).unwrap();
    s.munmap(&env.mm, va, PAGE_SIZE).unwrap();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va + 16, 7).unwrap();
    env.check(&[&s]);
    assert_eq!(env.read(&mut s, va).unwrap(), 0);
    assert!(env.exclusive(&s, va));
    assert_eq!(env.mm.stats().anon_faults, 2);
    env.finish(std::vec![s]);
}

#[test]
fn minor_faults_are_counted_per_process() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    env.read(&mut s, va).unwrap(); // zero page
    env.write(&mut s, va, 1).unwrap(); // write-protect fault: copy of the zero page
    env.write(&mut s, va + PAGE, 1).unwrap(); // anonymous write fault
    env.read(&mut s, va + PAGE).unwrap(); // TLB hit: no fault
    assert_eq!(s.minor_faults(), 3);
    env.finish(std::vec![s]);
}

#[test]
fn exclusive_page_is_reused_after_write_protection() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let frame = env.frame(&s, va);
    s.clear_refs_soft_dirty(&env.mm);
    env.check(&[&s]);
    assert!(!env.pte(&s, va).is_writable());
    assert!(!s.is_soft_dirty(&env.mm, va));
    env.write(&mut s, va, 2).unwrap();
    env.check(&[&s]);
    assert_eq!(
        env.frame(&s, va),
        frame,
        "exclusive page reused, not copied"
    );
    assert!(s.is_soft_dirty(&env.mm, va));
    assert_eq!(env.mm.stats().wp_reuses_exclusive, 1);
    assert_eq!(env.mm.stats().cow_copies, 0);
    env.finish(std::vec![s]);
}

#[test]
fn shared_page_is_reused_when_refcount_proves_it_alone() {
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let frame = env.frame(&parent, va);
    let child = parent.fork(&env.mm).unwrap();
    assert!(!env.exclusive(&parent, va));
    child.exit(&env.mm);
    env.check(&[&parent]);
    assert_eq!(env.mm.frames().meta(frame).refcount(), 1);
    env.write(&mut parent, va, 2).unwrap();
    env.check(&[&parent]);
    assert_eq!(env.frame(&parent, va), frame, "refcount == 1: reused");
    assert!(env.exclusive(&parent, va), "reuse marks the page exclusive");
    assert_eq!(env.mm.stats().wp_reuses_proven, 1);
    assert_eq!(env.mm.stats().cow_copies, 0);
    env.finish(std::vec![parent]);
}

#[test]
fn shared_page_is_copied() {
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let frame = env.frame(&parent, va);
    let mut child = parent.fork(&env.mm).unwrap();
    env.write(&mut parent, va, 2).unwrap();
    env.check(&[&parent, &child]);
    assert_ne!(env.frame(&parent, va), frame, "copied");
    assert_eq!(env.frame(&child, va), frame, "the child keeps the original");
    assert_eq!(env.read(&mut child, va).unwrap(), 1);
    assert_eq!(env.read(&mut parent, va).unwrap(), 2);
    assert_eq!(env.mm.stats().cow_copies, 1);
    // The child is now alone on the old page: its write reuses it.
    env.write(&mut child, va, 3).unwrap();
    env.check(&[&parent, &child]);
    assert_eq!(env.frame(&child, va), frame);
    assert_eq!(env.mm.stats().cow_copies, 1);
    env.finish(std::vec![parent, child]);
}

#[test]
fn unshare_fault_makes_page_exclusive_but_keeps_it_read_only() {
    let env = Env::new();
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 2, Prot::RW);
    env.write(&mut parent, va, 5).unwrap();
    env.read(&mut parent, va + PAGE).unwrap(); // zero page
    let child = parent.fork(&env.mm).unwrap();
    let old = env.frame(&parent, va);

    // Shared anon page: copied, read-only, exclusive.
    handle_mm_fault(&env.mm, &mut parent, va, FaultKind::Unshare).unwrap();
    env.check(&[&parent, &child]);
    let pte = env.pte(&parent, va);
    assert!(!pte.is_writable());
    assert_ne!(pte.frame(), old);
    assert!(env.exclusive(&parent, va));
    // Already exclusive: nothing happens.
    let stats = env.mm.stats();
    handle_mm_fault(&env.mm, &mut parent, va, FaultKind::Unshare).unwrap();
    assert_eq!(env.pte(&parent, va), pte);
    assert_eq!(env.mm.stats().unshares, stats.unshares);
    // The zero page in a COW mapping: replaced by an exclusive zeroed page.
    handle_mm_fault(&env.mm, &mut parent, va + PAGE, FaultKind::Unshare).unwrap();
    env.check(&[&parent, &child]);
    let pte = env.pte(&parent, va + PAGE);
    assert!(!pte.is_writable() && pte.frame() != env.mm.zero_page());
    assert!(env.exclusive(&parent, va + PAGE));
    assert_eq!(env.read(&mut parent, va + PAGE).unwrap(), 0);
    assert_eq!(env.read(&mut parent, va).unwrap(), 5);
    // The unshared page is still reused in place on write.
    let frame = pte.frame();
    env.write(&mut parent, va + PAGE, 9).unwrap();
    assert_eq!(env.frame(&parent, va + PAGE), frame);
    env.finish(std::vec![parent, child]);
}

#[test]
fn bad_accesses_are_segv() {
    let env = Env::new();
    let mut s = env.space();
    let ro = env.map(&mut s, 0, 1, Prot::READ);
    let none = env.map(&mut s, 2 * PAGE, 1, Prot::NONE);
    let segv = |r: Result<(), UserFault>, why| {
        assert_eq!(r.unwrap_err().error, FaultError::Segv(why));
    };
    segv(
        env.read(&mut s, VirtAddr::new(BASE + PAGE)).map(drop),
        SegvReason::NoMapping,
    );
    segv(env.write(&mut s, ro, 1), SegvReason::Protection);
    segv(env.read(&mut s, none).map(drop), SegvReason::Protection);
    segv(
        env.read(&mut s, VirtAddr::new(0)).map(drop),
        SegvReason::NoMapping,
    );
    assert_eq!(env.read(&mut s, ro).unwrap(), 0);
    segv(
        user_exec(&env.mm, &mut s, ro).map(drop),
        SegvReason::Protection,
    );
    env.check(&[&s]);
    // A failed write left the zero page mapping alone.
    assert_eq!(env.frame(&s, ro), env.mm.zero_page());
    env.finish(std::vec![s]);
}

#[test]
fn exec_needs_prot_exec() {
    let env = Env::new();
    let mut s = env.space();
    let x = env.map(&mut s, 0, 1, Prot::READ | Prot::EXEC);
    assert_eq!(user_exec(&env.mm, &mut s, x).unwrap(), 0);
    assert!(!env.pte(&s, x).has(Pte::NO_EXECUTE));
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn kernel_half_is_shared_and_never_user_visible() {
    let (mm, template) = new_mm_with_kernel_half(256);
    let env = Env {
        baseline: mm.frames().free_frames(),
        mm,
    };
    let mut s = env.space();
    let t = env.space();
    let pt = s.page_table(&env.mm);
    let tpt = crate::pagetable::PageTable::new(&env.mm, template);
    for i in 256..512 {
        assert_eq!(
            pt.root_entry(i),
            tpt.root_entry(i),
            "kernel entry {i} copied"
        );
    }
    assert!(pt.root_entry(256).is_present());
    env.check(&[&s, &t]);
    // The offset mapping is present (a 1 GiB supervisor page) but not for user mode.
    for va in [
        0xffff_8000_0000_0000u64,
        0xffff_8000_0000_1000,
        0xffff_ffff_8000_0000,
    ] {
        let r = env.read(&mut s, VirtAddr::new(va));
        assert_eq!(
            r.unwrap_err().error,
            FaultError::Segv(SegvReason::NoMapping),
            "{va:#x}"
        );
    }
    // Non-canonical and the top user page.
    for va in [0x0000_8000_0000_0000u64, 0x7fff_ffff_f000] {
        assert!(env.write(&mut s, VirtAddr::new(va), 1).is_err(), "{va:#x}");
    }
    // User mappings never reach the kernel half, even at the very top of user space.
    let top = s
        .mmap(
            &env.mm,
            VirtAddr::new(crate::aspace::USER_END - PAGE),
            PAGE_SIZE,
            Prot::RW,
            MapFlags::PRIVATE | MapFlags::ANONYMOUS | MapFlags::FIXED,
        )
        .unwrap();
    env.write(&mut s, top, 1).unwrap();
    assert_eq!(s.page_table(&env.mm).root_entry(256), tpt.root_entry(256));
    env.check(&[&s, &t]);
    env.finish(std::vec![s, t]);
}

#[test]
fn out_of_memory_is_reported_not_panicked() {
    let env = Env::with_frames(16);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 64, Prot::RW);
    let mut oom = None;
    for i in 0..64 {
        if let Err(f) = env.write(&mut s, va + i * PAGE, i) {
            oom = Some(f.error);
            break;
        }
        env.check(&[&s]);
    }
    assert_eq!(oom, Some(FaultError::Oom));
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn x86_error_codes_are_decoded() {
    use crate::fault::handle_x86_page_fault;
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    // Not-present read from user mode: zero page.
    handle_x86_page_fault(&env.mm, &mut s, va.as_u64(), 0b100).unwrap();
    assert_eq!(env.frame(&s, va), env.mm.zero_page());
    // Protection write fault from user mode: copy of the zero page.
    handle_x86_page_fault(&env.mm, &mut s, va.as_u64(), 0b111).unwrap();
    assert!(env.pte(&s, va).is_writable());
    // Instruction fetch from a non-exec mapping.
    assert_eq!(
        handle_x86_page_fault(&env.mm, &mut s, va.as_u64(), 0b10101),
        Err(FaultError::Segv(SegvReason::Protection))
    );
    // A kernel address.
    assert_eq!(
        handle_x86_page_fault(&env.mm, &mut s, 0xffff_8000_0000_0000, 0b101),
        Err(FaultError::Segv(SegvReason::NoMapping))
    );
    env.check(&[&s]);
    env.finish(std::vec![s]);
}

#[test]
fn kernel_copies_to_and_from_user_memory_through_faults() {
    use crate::uaccess::{copy_from_user, copy_to_user};
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    let ro = env.map(&mut s, 4 * PAGE, 1, Prot::READ);
    // Spans a page boundary of two unpopulated pages.
    let data: std::vec::Vec<u8> = (0..100u8).collect();
    copy_to_user(&env.mm, &mut s, va + PAGE - 50, &data).unwrap();
    env.check(&[&s]);
    let mut back = [0u8; 100];
    crate::host::cpu::user_read(&env.mm, &mut s, va + PAGE - 50, &mut back).unwrap();
    assert_eq!(&back[..], &data[..]);
    // Reading an untouched page maps the zero page.
    let mut z = [1u8; 16];
    copy_from_user(&env.mm, &mut s, va + 2 * PAGE, &mut z).unwrap();
    assert_eq!(z, [0; 16]);
    assert_eq!(env.frame(&s, va + 2 * PAGE), env.mm.zero_page());
    // Protections apply to the kernel's writes too.
    assert_eq!(
        copy_to_user(&env.mm, &mut s, ro, &[1]),
        Err(FaultError::Segv(SegvReason::Protection))
    );
    assert_eq!(
        copy_from_user(&env.mm, &mut s, VirtAddr::new(BASE + 10 * PAGE), &mut z),
        Err(FaultError::Segv(SegvReason::NoMapping))
    );
    // COW applies: writing into a page shared with a child copies it.
    let mut child = s.fork(&env.mm).unwrap();
    copy_to_user(&env.mm, &mut s, va + PAGE, &[0xff; 8]).unwrap();
    env.check(&[&s, &child]);
    assert_eq!(
        env.read(&mut child, va + PAGE).unwrap(),
        u64::from_le_bytes([50, 51, 52, 53, 54, 55, 56, 57])
    );
    assert_eq!(env.read(&mut s, va + PAGE).unwrap(), u64::MAX);
    env.finish(std::vec![s, child]);
}

/// A COW copy replaces a present PTE's frame: clear, flush, then set (`ptep_clear_flush`). The
/// emulated TLB panics if a flushed entry's PTE already maps another frame, which is what
/// storing the new PTE before the flush produced.
#[test]
fn cow_copy_clears_and_flushes_before_setting_the_new_pte() {
    for era in Era::ALL {
        let env = Env::era(era);
        let mut parent = env.space();
        let va = env.map(&mut parent, 0, 1, Prot::RW);
        env.write(&mut parent, va, 1).unwrap();
        let mut child = parent.fork(&env.mm).unwrap();
        // Both cache a translation of the shared page; then the kernel writes the parent's
        // copy (a FOLL_WRITE pin: a write fault taken while the CPU's entry is still cached;
        // a user write would drop the entry itself when it faults).
        assert_eq!(env.read(&mut child, va).unwrap(), 1);
        assert_eq!(env.read(&mut parent, va).unwrap(), 1);
        let pin = crate::pin::pin_user_page(&env.mm, &mut parent, va).unwrap();
        env.check(&[&parent, &child]);
        pin.unpin(&env.mm);
        env.write(&mut parent, va, 3).unwrap();
        assert_eq!(env.read(&mut child, va).unwrap(), 1, "{era}");
        // The zero page is replaced the same way (/proc/pid/mem write).
        let z = env.map(&mut parent, PAGE, 1, Prot::RW);
        assert_eq!(env.read(&mut parent, z).unwrap(), 0);
        crate::gup::access_process_vm_write(&env.mm, &mut parent, z, &[4]).unwrap();
        env.check(&[&parent, &child]);
        assert_eq!(env.read(&mut parent, z).unwrap(), 4, "{era}");
        env.finish(std::vec![parent, child]);
    }
}

/// The kernel's user-byte copies need a proof made from the PTE: readable from a present user
/// PTE, writable only from a writable one (the zero page mapped read-only is not).
#[test]
fn user_byte_proofs_come_only_from_usable_ptes() {
    use crate::mm::{UserReadable, UserWritable};
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    assert_eq!(env.read(&mut s, va).unwrap(), 0);
    let pte = env.pte(&s, va);
    assert_eq!(pte.frame(), env.mm.zero_page());
    assert!(UserReadable::from_pte(pte, va).is_some());
    assert!(UserWritable::from_pte(pte, va).is_none());
    assert!(UserReadable::from_pte(pte.without(Pte::USER), va).is_none());
    assert!(UserReadable::from_pte(Pte::EMPTY, va).is_none());
    env.write(&mut s, va, 1).unwrap();
    assert!(UserWritable::from_pte(env.pte(&s, va), va).is_some());
    assert!(env.mm.zero_page_is_zeroed());
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
