//! Long-term registered buffers: the io_uring families of `cow.c` at the mm level.

use super::*;
use crate::error::MmError;
use crate::regbuf::register_buffer;

#[test]
fn register_pins_every_page_and_unregister_returns_them() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    let buf = register_buffer(&env.mm, &mut s, va, 3 * PAGE_SIZE).unwrap();
    assert_eq!(env.mm.stats().gup_pins_held, 3);
    for i in 0..3 {
        let meta = env.mm.frames().meta(env.frame(&s, va + i * PAGE));
        assert_eq!(meta.pincount(), 1);
        assert!(env.exclusive(&s, va + i * PAGE));
    }
    // DMA across a page boundary, seen by the process.
    buf.dma_write(
        &env.mm,
        PAGE_SIZE - 4,
        &0x1122_3344_5566_7788u64.to_le_bytes(),
    );
    let mut b = [0u8; 8];
    crate::copy_from_user(&env.mm, &mut s, va + PAGE - 4, &mut b).unwrap();
    assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
    env.check(&[&s]);
    buf.unregister(&env.mm);
    // All or nothing: a range running into a hole, or not writable, registers nothing.
    assert_eq!(
        register_buffer(&env.mm, &mut s, va, 4 * PAGE_SIZE).map(|_| ()),
        Err(MmError::Fault)
    );
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
    assert_eq!(
        register_buffer(&env.mm, &mut s, va, PAGE_SIZE).map(|_| ()),
        Err(MmError::Fault)
    );
    assert_eq!(
        register_buffer(&env.mm, &mut s, va + 1, PAGE_SIZE).map(|_| ()),
        Err(MmError::Fault)
    );
    assert_eq!(
        register_buffer(&env.mm, &mut s, va + PAGE, 0).map(|_| ()),
        Err(MmError::Inval)
    );
    assert_eq!(env.mm.stats().gup_pins_held, 0);
    env.finish(std::vec![s]);
}

/// io_uring buffers need not be page aligned: the pages the range touches are pinned and
/// byte 0 of the buffer is the first byte of the range.
#[test]
fn unaligned_buffer_pins_the_pages_it_touches() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 3, Prot::RW);
    let buf = register_buffer(&env.mm, &mut s, va + 100, PAGE_SIZE).unwrap();
    assert_eq!(buf.nr_pages(), 2);
    assert_eq!(env.mm.stats().gup_pins_held, 2);
    buf.dma_write(&env.mm, PAGE_SIZE - 8, &[7u8; 8]);
    buf.dma_write(&env.mm, 0, &[9u8; 4]);
    let mut b = [0u8; 8];
    crate::copy_from_user(&env.mm, &mut s, va + PAGE + 92, &mut b).unwrap();
    assert_eq!(b, [7u8; 8]);
    crate::copy_from_user(&env.mm, &mut s, va + 100, &mut b[..4]).unwrap();
    assert_eq!(&b[..4], &[9u8; 4]);
    let mut segments = std::vec::Vec::new();
    buf.for_each_segment(PAGE_SIZE - 4096 + 3990, 20, |page, off, range| {
        segments.push((page.page().frame(), off, range));
    });
    assert_eq!(
        segments,
        std::vec![
            (env.frame(&s, va), 4090, 0..6),
            (env.frame(&s, va + PAGE), 0, 6..20)
        ]
    );
    env.check(&[&s]);
    buf.unregister(&env.mm);
    assert_eq!(env.mm.stats().gup_pins_held, 0);
    env.finish(std::vec![s]);
}

/// cow.c "R/O-mapping a page registered as io_uring fixed buffer": register, mprotect R/O,
/// clear_refs 4, mprotect R/W, write, read back through the registration. Returns coherence.
pub(crate) fn ro_mapping_registered_buffer_coherent(era: Era) -> bool {
    let env = Env::era(era);
    let mut s = env.space();
    let va = env.map(&mut s, 0, 1, Prot::RW);
    env.write(&mut s, va, 1).unwrap();
    let buf = register_buffer(&env.mm, &mut s, va, PAGE_SIZE).unwrap();
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::READ).unwrap();
    s.clear_refs_soft_dirty(&env.mm);
    s.mprotect(&env.mm, va, PAGE_SIZE, Prot::RW).unwrap();
    env.write(&mut s, va, 0x5a5a).unwrap();
    env.check(&[&s]);
    let mut b = [0u8; 8];
    buf.dma_read(&env.mm, 0, &mut b);
    buf.unregister(&env.mm);
    env.finish(std::vec![s]);
    u64::from_le_bytes(b) == 0x5a5a
}

/// cow.c "fork with io_uring fixed buffer": DMA into the registered buffer after fork (and a
/// write by the parent) reaches the parent, never the child. Returns (parent sees, child sees).
pub(crate) fn fork_with_registered_buffer(era: Era) -> (bool, bool) {
    let env = Env::era(era);
    let mut parent = env.space();
    let va = env.map(&mut parent, 0, 1, Prot::RW);
    env.write(&mut parent, va, 1).unwrap();
    let buf = register_buffer(&env.mm, &mut parent, va, PAGE_SIZE).unwrap();
    let mut child = parent.fork(&env.mm).unwrap();
    env.write(&mut parent, va, 2).unwrap();
    buf.dma_write(&env.mm, 8, &0xd3au64.to_le_bytes());
    env.check(&[&parent, &child]);
    let parent_sees = env.read(&mut parent, va + 8).unwrap() == 0xd3a;
    let child_sees = env.read(&mut child, va + 8).unwrap() == 0xd3a;
    buf.unregister(&env.mm);
    env.finish(std::vec![parent, child]);
    (parent_sees, child_sees)
}

#[test]
fn ro_mapping_a_registered_buffer_per_era() {
    for era in Era::ALL {
        // 2020's refcount rule copies the write-protected pinned page away from its pin.
        assert_eq!(
            ro_mapping_registered_buffer_coherent(era),
            era != Era::Y2020,
            "{era}"
        );
    }
}

#[test]
fn fork_with_a_registered_buffer_per_era() {
    for era in Era::ALL {
        let expected = if era >= Era::Y2020 {
            (true, false)
        } else {
            (false, true)
        };
        assert_eq!(fork_with_registered_buffer(era), expected, "{era}");
    }
}
