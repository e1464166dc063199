//! Randomized sequences of system calls, accesses, forks and exits over a few address spaces,
//! checked against a simple model of what each process's memory must contain.
//!
//! The model knows, per process and page, the protection, the `DONTFORK` flag and the words
//! written so far (everything else reads as zero); for `MAP_SHARED|MAP_ANONYMOUS` pages the
//! words belong to the shmem object page, shared by every process mapping it. Pins go through
//! `pin_user_pages(_fast)` and `/proc/self/mem` writes through `FOLL_FORCE`; `mremap` moves
//! (`MREMAP_FIXED`, possibly shrinking) carry pages, words and pins to the target; `brk` moves a
//! heap that starts inside the window (meeting fixed mappings). After every step the invariant checker and
//! the TLB-coherence check run, and every modelled word is compared with what the page tables
//! actually map. Seeds are fixed so a failure reproduces; the failing seed and step are printed.

use super::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use crate::error::{FaultError, MmError};
use crate::fault::{handle_mm_fault, FaultKind};
use crate::foll::FollFlags;
use crate::gup::{access_process_vm_write, pin_user_pages, pin_user_pages_fast};
use crate::host::cpu::peek;
use crate::madvise::Advice;
use crate::pin::PinnedPage;

/// The window the sequences play in: 48 pages straddling a 2 MiB boundary (two PTs).
const WIN: u64 = BASE + (2 << 20) - 24 * PAGE;
const WIN_PAGES: u64 = 48;
const MAX_PROCS: usize = 4;
const WORDS: u64 = PAGE / 8;
/// Where each process's heap starts: inside the window, so brk meets fixed mappings.
const BRK_BASE: u64 = WIN + 36 * PAGE;

#[derive(Clone, Default)]
struct PageModel {
    prot: Prot,
    dontfork: bool,
    /// Private pages: the words written.
    words: BTreeMap<u64, u64>,
    /// `MAP_SHARED|MAP_ANONYMOUS` pages: (object, page index); the words live in
    /// `World::objects`, seen by every process mapping that page.
    shared: Option<(u64, u64)>,
}

struct Proc {
    s: AddressSpace,
    pages: BTreeMap<u64, PageModel>,
}

struct Pin {
    proc: usize,
    page: u64,
    pin: PinnedPage,
    /// The process still maps the pinned page at `page` (no munmap, DONTNEED or MAP_FIXED
    /// replaced it since).
    attached: bool,
}

struct World {
    procs: Vec<Proc>,
    pins: Vec<Pin>,
    /// Contents of shared anonymous (shmem) pages by (object, page index).
    objects: BTreeMap<(u64, u64), BTreeMap<u64, u64>>,
    next_object: u64,
    rng: Rng,
    next_value: u64,
}

/// Prints the seed and step if a check panics.
struct Reporter {
    seed: u64,
    step: usize,
    op: &'static str,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if std::thread::panicking() {
            std::eprintln!(
                "randomized test failed: seed {} at step {} ({})",
                self.seed,
                self.step,
                self.op
            );
        }
    }
}

impl World {
    fn pick_range(&mut self) -> (u64, u64) {
        let first = self.rng.below(WIN_PAGES);
        let n = 1 + self.rng.below(8.min(WIN_PAGES - first));
        (WIN + first * PAGE, n)
    }

    fn pick_prot(&mut self) -> Prot {
        [
            Prot::NONE,
            Prot::READ,
            Prot::RW,
            Prot::RW,
            Prot::RW,
            Prot::READ | Prot::EXEC,
        ][self.rng.below(6) as usize]
    }

    /// A page address to access: usually in the window, sometimes any page the process maps.
    fn pick_page(&mut self, p: usize) -> u64 {
        if self.rng.chance(70) || self.procs[p].pages.is_empty() {
            WIN + self.rng.below(WIN_PAGES) * PAGE
        } else {
            let n = self.rng.below(self.procs[p].pages.len() as u64) as usize;
            *self.procs[p].pages.keys().nth(n).unwrap()
        }
    }

    /// Marks pins of `proc` on `[start, start + n pages)` as detached from their mapping.
    fn detach_pins(&mut self, proc: usize, start: u64, n: u64) {
        for pin in &mut self.pins {
            if pin.proc == proc && pin.page >= start && pin.page < start + n * PAGE {
                pin.attached = false;
            }
        }
    }

    fn step(&mut self, env: &Env, op: &mut &'static str) {
        let mm = &env.mm;
        let p = self.rng.below(self.procs.len() as u64) as usize;
        match self.rng.below(100) {
            0..=9 => {
                *op = "mmap fixed";
                let (start, n) = self.pick_range();
                let prot = self.pick_prot();
                let shared = self.rng.chance(30);
                let sharing = if shared {
                    MapFlags::SHARED
                } else {
                    MapFlags::PRIVATE
                };
                let r = self.procs[p].s.mmap(
                    mm,
                    VirtAddr::new(start),
                    (n * PAGE) as usize,
                    prot,
                    sharing | MapFlags::ANONYMOUS | MapFlags::FIXED,
                );
                assert_eq!(r, Ok(VirtAddr::new(start)));
                let object = self.next_object;
                self.next_object += 1;
                for i in 0..n {
                    self.procs[p].pages.insert(
                        start + i * PAGE,
                        PageModel {
                            prot,
                            shared: shared.then_some((object, i)),
                            ..PageModel::default()
                        },
                    );
                }
                self.detach_pins(p, start, n);
            }
            10..=11 => {
                *op = "mmap anywhere";
                let n = 1 + self.rng.below(3);
                let prot = self.pick_prot();
                let va = self.procs[p]
                    .s
                    .mmap(
                        mm,
                        VirtAddr::zero(),
                        (n * PAGE) as usize,
                        prot,
                        MapFlags::PRIVATE | MapFlags::ANONYMOUS,
                    )
                    .unwrap();
                for i in 0..n {
                    let old = self.procs[p].pages.insert(
                        va.as_u64() + i * PAGE,
                        PageModel {
                            prot,
                            ..PageModel::default()
                        },
                    );
                    assert!(old.is_none(), "non-fixed mmap overlapped a mapping");
                }
            }
            12..=17 => {
                *op = "munmap";
                let (start, n) = self.pick_range();
                self.procs[p]
                    .s
                    .munmap(mm, VirtAddr::new(start), (n * PAGE) as usize)
                    .unwrap();
                for i in 0..n {
                    self.procs[p].pages.remove(&(start + i * PAGE));
                }
                self.detach_pins(p, start, n);
            }
            18..=25 => {
                *op = "mprotect";
                let (start, n) = self.pick_range();
                let prot = self.pick_prot();
                let all = (0..n).all(|i| self.procs[p].pages.contains_key(&(start + i * PAGE)));
                let r =
                    self.procs[p]
                        .s
                        .mprotect(mm, VirtAddr::new(start), (n * PAGE) as usize, prot);
                if all {
                    assert_eq!(r, Ok(()));
                    for i in 0..n {
                        self.procs[p]
                            .pages
                            .get_mut(&(start + i * PAGE))
                            .unwrap()
                            .prot = prot;
                    }
                } else {
                    assert_eq!(r, Err(MmError::NoMem));
                }
            }
            26..=29 => {
                *op = "madvise";
                let (start, n) = self.pick_range();
                let advice = [Advice::DontNeed, Advice::DontFork, Advice::DoFork]
                    [self.rng.below(3) as usize];
                let all = (0..n).all(|i| self.procs[p].pages.contains_key(&(start + i * PAGE)));
                let r =
                    self.procs[p]
                        .s
                        .madvise(mm, VirtAddr::new(start), (n * PAGE) as usize, advice);
                assert_eq!(r, if all { Ok(()) } else { Err(MmError::NoMem) });
                for i in 0..n {
                    if let Some(pm) = self.procs[p].pages.get_mut(&(start + i * PAGE)) {
                        match advice {
                            // Shared pages live on in their object.
                            Advice::DontNeed => pm.words.clear(),
                            Advice::DontFork => pm.dontfork = true,
                            Advice::DoFork => pm.dontfork = false,
                            // Not drawn above.
                            _ => unreachable!(),
                        }
                    }
                }
                if advice == Advice::DontNeed {
                    self.detach_pins(p, start, n);
                }
            }
            30..=34 => {
                *op = "fork";
                if self.procs.len() < MAX_PROCS {
                    let child = self.procs[p].s.fork(mm).unwrap();
                    let pages = self.procs[p]
                        .pages
                        .iter()
                        .filter(|(_, pm)| !pm.dontfork)
                        .map(|(&k, pm)| (k, pm.clone()))
                        .collect();
                    self.procs.push(Proc { s: child, pages });
                }
            }
            35..=37 => {
                *op = "exit";
                let proc = self.procs.swap_remove(p);
                proc.s.exit(mm);
                let moved = self.procs.len();
                for pin in &mut self.pins {
                    if pin.proc == p {
                        pin.attached = false;
                        pin.proc = usize::MAX;
                    } else if pin.proc == moved {
                        pin.proc = p;
                    }
                }
                if self.procs.is_empty() {
                    let mut s = env.space();
                    s.set_brk_base(VirtAddr::new(BRK_BASE));
                    self.procs.push(Proc {
                        s,
                        pages: BTreeMap::new(),
                    });
                }
            }
            38..=39 => {
                *op = "clear_refs";
                self.procs[p].s.clear_refs_soft_dirty(mm);
            }
            40..=41 => {
                *op = "pin_user_pages";
                let page = self.pick_page(p);
                let flags = [
                    FollFlags::WRITE | FollFlags::LONGTERM,
                    FollFlags::LONGTERM,
                    FollFlags::WRITE,
                ][self.rng.below(3) as usize];
                let fast = self.rng.chance(50);
                let allowed = self.procs[p].pages.get(&page).is_some_and(|pm| {
                    pm.prot.accessible() && (!flags.contains(FollFlags::WRITE) || pm.prot.write())
                });
                if self.pins.len() < 8 {
                    let mut out = [None];
                    let s = &mut self.procs[p].s;
                    let va = VirtAddr::new(page);
                    let r = if fast {
                        pin_user_pages_fast(mm, s, va, flags, &mut out)
                    } else {
                        pin_user_pages(mm, s, va, flags, &mut out)
                    };
                    if allowed {
                        assert_eq!(r, Ok(1), "pin {page:#x} with {flags:?}");
                        self.pins.push(Pin {
                            proc: p,
                            page,
                            pin: out[0].take().unwrap(),
                            attached: true,
                        });
                    } else {
                        assert_eq!(r, Err(MmError::Fault), "pin {page:#x} with {flags:?}");
                    }
                }
            }
            42 => {
                *op = "/proc/self/mem write";
                let page = self.pick_page(p);
                let word = self.rng.below(WORDS);
                self.next_value += 1;
                let v = self.next_value;
                let r = access_process_vm_write(
                    mm,
                    &mut self.procs[p].s,
                    VirtAddr::new(page + word * 8),
                    &v.to_le_bytes(),
                );
                match self.procs[p].pages.get_mut(&page) {
                    // FOLL_FORCE writes a private (COW) mapping whatever its protection,
                    // PROT_NONE included (as Linux); a shared one only with PROT_WRITE.
                    Some(pm) if pm.shared.is_none() || pm.prot.write() => {
                        assert_eq!(r, Ok(8));
                        match pm.shared {
                            Some(key) => {
                                self.objects.entry(key).or_default().insert(word, v);
                            }
                            None => {
                                pm.words.insert(word, v);
                            }
                        }
                    }
                    _ => assert_eq!(r, Err(MmError::Fault)),
                }
            }
            43..=45 => {
                *op = "unpin";
                if !self.pins.is_empty() {
                    let i = self.rng.below(self.pins.len() as u64) as usize;
                    self.pins.swap_remove(i).pin.unpin(mm);
                }
            }
            46..=48 => {
                *op = "unshare fault";
                let page = self.pick_page(p);
                let accessible = self.procs[p]
                    .pages
                    .get(&page)
                    .is_some_and(|pm| pm.prot.accessible());
                if accessible {
                    handle_mm_fault(
                        mm,
                        &mut self.procs[p].s,
                        VirtAddr::new(page),
                        FaultKind::Unshare,
                    )
                    .unwrap();
                }
            }
            69..=72 => {
                *op = "mremap";
                // A source range inside one VMA, a target anywhere in the window beside it.
                let start = self.pick_page(p);
                let Some(room) = self.procs[p]
                    .s
                    .find_vma(VirtAddr::new(start))
                    .map(|v| (v.end().as_u64() - start) / PAGE)
                else {
                    return;
                };
                let n = 1 + self.rng.below(room.min(8));
                let (target, n2) = self.pick_range();
                let n2 = n2.min(n);
                if target < start + n * PAGE && start < target + n2 * PAGE {
                    return;
                }
                let flags = crate::mremap::MremapFlags::MAYMOVE | crate::mremap::MremapFlags::FIXED;
                let got = self.procs[p]
                    .s
                    .mremap(mm, start, n * PAGE, n2 * PAGE, flags, target);
                assert_eq!(got.map(|v| v.as_u64()), Ok(target));
                // The target is unmapped, then the old tail, then the rest moves with its
                // pages, words and pins.
                for i in 0..n2 {
                    self.procs[p].pages.remove(&(target + i * PAGE));
                }
                self.detach_pins(p, target, n2);
                for i in n2..n {
                    self.procs[p].pages.remove(&(start + i * PAGE));
                }
                self.detach_pins(p, start + n2 * PAGE, n - n2);
                for i in 0..n2 {
                    let pm = self.procs[p]
                        .pages
                        .remove(&(start + i * PAGE))
                        .expect("a page of the covered range");
                    self.procs[p].pages.insert(target + i * PAGE, pm);
                }
                for pin in &mut self.pins {
                    if pin.proc == p
                        && pin.attached
                        && (start..start + n2 * PAGE).contains(&pin.page)
                    {
                        pin.page = target + (pin.page - start);
                    }
                }
            }
            49..=68 => {
                *op = "read";
                let page = self.pick_page(p);
                let word = self.rng.below(WORDS);
                let expect = self.procs[p]
                    .pages
                    .get(&page)
                    .map(|pm| (pm.prot.accessible(), self.word(pm, word)));
                let r = env.read(&mut self.procs[p].s, VirtAddr::new(page + word * 8));
                match expect {
                    Some((true, v)) => assert_eq!(r, Ok(v), "read {:#x}", page + word * 8),
                    _ => assert!(
                        matches!(
                            r,
                            Err(UserFault {
                                error: FaultError::Segv(_),
                                ..
                            })
                        ),
                        "read of an inaccessible page {page:#x}: {r:?}"
                    ),
                }
            }
            73..=76 => {
                *op = "brk";
                self.brk(env, p);
            }
            _ => {
                *op = "write";
                let page = self.pick_page(p);
                let word = self.rng.below(WORDS);
                self.write(env, p, page, word, op);
            }
        }
    }

    /// Moves the break of process `p` inside the window (its heap starts at `BRK_BASE`, where
    /// fixed mappings also land): growing maps fresh zero pages unless something is in the
    /// way, shrinking unmaps whatever lies in the dropped range (Linux `sys_brk`).
    fn brk(&mut self, env: &Env, p: usize) {
        let s = &mut self.procs[p].s;
        let (start, cur) = (s.brk_start().as_u64(), s.current_brk().as_u64());
        let requested = match self.rng.below(4) {
            0 => start - PAGE,
            1 => start + self.rng.below(10) * PAGE + self.rng.below(3) * 100,
            _ => cur + self.rng.below(4) * PAGE,
        };
        let got = s.brk(&env.mm, VirtAddr::new(requested)).as_u64();
        let page_up = |x: u64| x.div_ceil(PAGE) * PAGE;
        let (old_end, new_end) = (page_up(cur), page_up(requested));
        if got != requested {
            assert_eq!(got, cur, "a refused brk keeps the break");
            assert!(
                requested < start
                    || (old_end..new_end)
                        .step_by(PAGE as usize)
                        .any(|pg| self.procs[p].pages.contains_key(&pg)),
                "brk to {requested:#x} refused with nothing in the way"
            );
            return;
        }
        let model = &mut self.procs[p].pages;
        if new_end > old_end {
            for pg in (old_end..new_end).step_by(PAGE as usize) {
                model.insert(
                    pg,
                    PageModel {
                        prot: Prot::RW,
                        ..PageModel::default()
                    },
                );
            }
        } else if new_end < old_end {
            for pg in (new_end..old_end).step_by(PAGE as usize) {
                model.remove(&pg);
            }
            self.detach_pins(p, new_end, (old_end - new_end) / PAGE);
        }
    }

    fn write(&mut self, env: &Env, p: usize, page: u64, word: u64, op: &mut &'static str) {
        *op = "write";
        self.next_value += 1;
        let v = self.next_value;
        let r = env.write(&mut self.procs[p].s, VirtAddr::new(page + word * 8), v);
        match self.procs[p].pages.get_mut(&page) {
            Some(pm) if pm.prot.write() => {
                assert_eq!(r, Ok(()), "write {:#x}", page + word * 8);
                match pm.shared {
                    Some(key) => {
                        self.objects.entry(key).or_default().insert(word, v);
                    }
                    None => {
                        pm.words.insert(word, v);
                    }
                }
            }
            _ => assert!(
                matches!(
                    r,
                    Err(UserFault {
                        error: FaultError::Segv(_),
                        ..
                    })
                ),
                "write to a non-writable page {page:#x}: {r:?}"
            ),
        }
    }

    /// The modelled value of `word` of a page.
    fn word(&self, pm: &PageModel, word: u64) -> u64 {
        let words = match pm.shared {
            Some(key) => self.objects.get(&key),
            None => Some(&pm.words),
        };
        words.and_then(|w| w.get(&word).copied()).unwrap_or(0)
    }

    /// Invariants, TLB coherence, and every modelled word against memory.
    fn verify(&mut self, env: &Env) {
        let spaces: Vec<&AddressSpace> = self.procs.iter().map(|p| &p.s).collect();
        env.check(&spaces);
        let mm = &env.mm;
        for proc in &self.procs {
            let mapped: Vec<u64> = proc
                .s
                .vmas()
                .flat_map(|v| (v.start().as_u64()..v.end().as_u64()).step_by(PAGE_SIZE))
                .collect();
            assert_eq!(
                mapped,
                proc.pages.keys().copied().collect::<Vec<_>>(),
                "VMAs vs model"
            );
            for (&page, pm) in &proc.pages {
                let probe = self.rng.below(WORDS);
                let written: Vec<u64> = match pm.shared {
                    Some(key) => self
                        .objects
                        .get(&key)
                        .map(|w| w.keys().copied().collect())
                        .unwrap_or_default(),
                    None => pm.words.keys().copied().collect(),
                };
                for word in written.into_iter().chain([probe]) {
                    let want = self.word(pm, word);
                    let mut b = [0u8; 8];
                    let va = VirtAddr::new(page + word * 8);
                    let got = match peek(mm, &proc.s, va, &mut b) {
                        Some(()) => u64::from_le_bytes(b),
                        // Not faulted in here: a shared page still holds what another process
                        // wrote, in its object's cache.
                        None => match proc.s.find_vma(va).and_then(|v| v.shmem_page(va)) {
                            Some((obj, index)) => {
                                obj.read_at(mm, index * PAGE + word * 8, &mut b);
                                u64::from_le_bytes(b)
                            }
                            None => 0,
                        },
                    };
                    assert_eq!(got, want, "contents at {:#x}", page + word * 8);
                }
            }
        }
        if mm.era() >= Era::Y2022 {
            for pin in self.pins.iter().filter(|p| p.attached) {
                let pte = self.procs[pin.proc]
                    .s
                    .translate(mm, VirtAddr::new(pin.page));
                assert_eq!(
                    pte.map(|p| p.frame()),
                    Some(pin.pin.frame()),
                    "pinned page {:#x} replaced under its pin",
                    pin.page
                );
            }
        }
    }
}

fn run(seed: u64, steps: usize) {
    let env = Env::with_frames(1024);
    env.mm.set_era(Era::ALL[(seed % 5) as usize]);
    let mut s = env.space();
    s.set_brk_base(VirtAddr::new(BRK_BASE));
    let mut world = World {
        procs: std::vec![Proc {
            s,
            pages: BTreeMap::new()
        }],
        pins: Vec::new(),
        rng: Rng::new(seed),
        next_value: seed << 32,
        objects: BTreeMap::new(),
        next_object: 0,
    };
    let mut rep = Reporter {
        seed,
        step: 0,
        op: "start",
    };
    for step in 0..steps {
        rep.step = step;
        world.step(&env, &mut rep.op);
        world.verify(&env);
    }
    rep.op = "teardown";
    if std::env::var("MM_RANDOM_STATS").is_ok() {
        std::eprintln!("seed {seed} era {}: {:?}", env.mm.era(), env.mm.stats());
    }
    for pin in world.pins.drain(..) {
        pin.pin.unpin(&env.mm);
    }
    let spaces = world.procs.into_iter().map(|p| p.s).collect();
    env.finish(spaces);
}

/// `COWLAB_FUZZ_ITERS=N` runs N seeds instead of the CI default.
fn seeds(default: u64) -> u64 {
    std::env::var("COWLAB_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_sequences_match_the_model() {
    for seed in 1..=seeds(300) {
        run(seed, 120);
    }
}

#[test]
fn long_random_sequences() {
    for seed in [0xc0ffee, 0xdead_beef, 2023, 2009, 42] {
        run(seed, 1500);
    }
}
