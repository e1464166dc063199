//! `msync`'s answers (Linux's, checked on the host by userland/c/abi2.c too).

use super::*;
use crate::error::MmError;
use crate::mlock::LockMode;
use crate::msync::{MS_ASYNC, MS_INVALIDATE, MS_SYNC};

#[test]
fn msync_checks_flags_alignment_and_holes() {
    let env = Env::new();
    let mut s = env.space();
    let a = env.map(&mut s, 0, 4, Prot::RW);
    let page = PAGE as usize;
    assert_eq!(s.msync(a, 4 * page, MS_SYNC), Ok(()));
    assert_eq!(s.msync(a, 1, MS_ASYNC), Ok(()), "the length rounds up");
    assert_eq!(s.msync(a, 0, MS_SYNC), Ok(()));
    assert_eq!(s.msync(a + 1, page, MS_SYNC), Err(MmError::Inval));
    assert_eq!(s.msync(a, page, MS_SYNC | MS_ASYNC), Err(MmError::Inval));
    assert_eq!(s.msync(a, page, 8), Err(MmError::Inval));
    assert_eq!(s.msync(a, usize::MAX, MS_SYNC), Err(MmError::NoMem));
    s.munmap(&env.mm, a + PAGE, page).expect("munmap");
    for flags in [MS_SYNC, MS_ASYNC, MS_INVALIDATE, 0] {
        assert_eq!(s.msync(a, 4 * page, flags), Err(MmError::NoMem), "{flags}");
    }
    assert_eq!(s.msync(a + 2 * PAGE, 2 * page, MS_SYNC), Ok(()));
    assert_eq!(
        s.msync(a + 2 * PAGE, 3 * page, MS_SYNC),
        Err(MmError::NoMem)
    );
    s.mlock(&env.mm, a + 2 * PAGE, page, LockMode::OnFault, u64::MAX)
        .expect("mlock");
    assert_eq!(
        s.msync(a + 2 * PAGE, page, MS_INVALIDATE),
        Err(MmError::Busy)
    );
    assert_eq!(s.msync(a + 2 * PAGE, page, MS_SYNC), Ok(()));
    env.check(&[&s]);
    env.finish(std::vec![s]);
}
