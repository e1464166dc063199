//! `AddressSpace::smaps`: resident, proportional, anonymous and shared/private bytes per VMA.

use super::*;

#[test]
fn smaps_counts_touched_pages_and_splits_them_after_fork() {
    let env = Env::new();
    let mut s = env.space();
    let va = env.map(&mut s, 0, 8, Prot::RW);
    // Nothing touched: no entry. A read maps the zero page, which is not resident memory.
    assert!(s.smaps(&env.mm).is_empty());
    env.read(&mut s, va).unwrap();
    assert!(s.smaps(&env.mm).is_empty(), "the zero page counted");
    for i in 0..3 {
        env.write(&mut s, va + i * PAGE, i).unwrap();
    }
    let c = s.smaps(&env.mm)[&va];
    assert_eq!(
        (c.rss, c.pss(), c.anonymous),
        (3 * PAGE, 3 * PAGE, 3 * PAGE)
    );
    assert_eq!(c.shared_clean + c.shared_dirty, 0);
    assert_eq!(c.private_clean + c.private_dirty, 3 * PAGE);
    assert_eq!(c.locked(), 0);

    // After fork every page is mapped twice: shared, half of it each.
    let mut child = s.fork(&env.mm).unwrap();
    let c = s.smaps(&env.mm)[&va];
    assert_eq!((c.rss, c.pss()), (3 * PAGE, 3 * PAGE / 2));
    assert_eq!(c.shared_clean + c.shared_dirty, 3 * PAGE);
    // The child's write copies one page: private to it again, and the parent's copy too.
    env.write(&mut child, va, 9).unwrap();
    let parent = s.smaps(&env.mm)[&va];
    let kid = child.smaps(&env.mm)[&va];
    assert_eq!(parent.rss, 3 * PAGE);
    assert_eq!(parent.private_clean + parent.private_dirty, PAGE);
    assert_eq!(kid.private_clean + kid.private_dirty, PAGE);
    assert_eq!(kid.pss(), PAGE + 2 * PAGE / 2);
    env.check(&[&s, &child]);
    env.finish(std::vec![s, child]);
}

#[test]
fn smaps_charges_each_vma_separately() {
    let env = Env::new();
    let mut s = env.space();
    let a = env.map(&mut s, 0, 2, Prot::RW);
    let b = env.map(&mut s, 16 * PAGE, 2, Prot::RW);
    env.write(&mut s, a, 1).unwrap();
    env.write(&mut s, b, 1).unwrap();
    env.write(&mut s, b + PAGE, 1).unwrap();
    let all = s.smaps(&env.mm);
    assert_eq!(all[&a].rss, PAGE);
    assert_eq!(all[&b].rss, 2 * PAGE);
    let mut total = crate::smaps::SmapsCounts::default();
    for c in all.values() {
        total.add(c);
    }
    assert_eq!(total.rss, 3 * PAGE);
    env.finish(std::vec![s]);
}
