//! epoll instances (Linux `fs/eventpoll.c`): an interest list of (file, descriptor) pairs, each
//! with the events asked for and the user's 64-bit datum.
//!
//! Readiness comes from each file's [`FileOps::poll`]; wake-ups from the channels the file names
//! in [`FileOps::poll_channels`], which are linked to the interest item (`proc::waitlink`, Linux's
//! `ep_poll_callback` on the file's wait queue). A fired item marks itself (it is "on the ready
//! list") and wakes the instance's channel, where `epoll_wait` sleeps; nothing is polled on a
//! timer. A wait rescans the items after each wake-up:
//! - level-triggered items are reported whenever `poll` shows an event asked for;
//! - edge-triggered ones (`EPOLLET`) only once per wake-up of their file: the mark is consumed
//!   by the scan that looks at it, ready or not (Linux drops a non-ready item from the ready
//!   list the same way);
//! - `EPOLLONESHOT` items are disabled after one report until `EPOLL_CTL_MOD`.
//!
//! The scan starts after the last item reported, so with a small `maxevents` every ready item
//! gets its turn (Linux requeues level-triggered items at the tail of its ready list).
//!
//! Items hold their file weakly: when the last descriptor of a file closes, the description is
//! dropped and its items vanish from every interest list (Linux `eventpoll_release`), while a
//! file still open through another descriptor keeps being reported under the closed
//! descriptor's registration, as on Linux.
#![deny(unsafe_code)]

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use spin::Mutex;

use super::file::{FileOps, Kiocb, OpenFile, Seek};
use super::iter::IoIter;
use super::stat::{statfs_of, Stat, StatFs, ANON_INODE_FS_MAGIC};
use crate::errno::Errno;
use crate::proc::waitlink::{self, WakeTarget};
use crate::{proc, time};

pub const EPOLLIN: u32 = 0x1;
pub const EPOLLOUT: u32 = 0x4;
pub const EPOLLERR: u32 = 0x8;
pub const EPOLLHUP: u32 = 0x10;
pub const EPOLLRDNORM: u32 = 0x40;
/// Events a file's readers' channel announces (Linux wakes `rd_wait`-like queues with them).
const READ_SIDE: u32 = 0x1 | 0x2 | 0x40 | 0x80 | 0x400 | 0x2000;
/// Events its writers' channel announces (`EPOLLOUT`, `EPOLLWRNORM`, `EPOLLWRBAND`).
const WRITE_SIDE: u32 = 0x4 | 0x100 | 0x200;
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;
/// The flags that are not events (Linux `EP_PRIVATE_BITS`).
const PRIVATE: u32 = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE;
/// The events `EPOLLEXCLUSIVE` may be combined with (Linux `EPOLLEXCLUSIVE_OK_BITS`).
const EXCLUSIVE_OK: u32 =
    EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE;

pub const EPOLL_CTL_ADD: i32 = 1;
pub const EPOLL_CTL_DEL: i32 = 2;
pub const EPOLL_CTL_MOD: i32 = 3;
/// How deep epoll instances may watch each other (Linux `EP_MAX_NESTS`).
const MAX_NESTS: usize = 4;

/// An instance's wake-up points and the registrations watching it.
///
/// Two channels: `epoll_wait` sleeps on [`wait_channel`](Self::wait_channel), which nothing
/// links to, while watchers (an outer epoll, poll/select) link to
/// [`poll_channel`](Self::poll_channel). An item firing wakes the first with `proc::wakeup`
/// and follows the second itself with a depth, so wake-ups through nested instances are
/// bounded (`Item::fire_nested`).
struct Notify {
    _unique: [u8; 2],
    /// The items of other instances watching this one (Linux `file->f_ep`), for the upward
    /// half of the loop check; dead entries are pruned as they are met.
    up: Mutex<Vec<Weak<Item>>>,
}

impl Notify {
    fn wait_channel(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    fn poll_channel(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize + 1
    }

    /// Wakes this instance's waiters and, `depth` links away from the first wake-up, its
    /// watchers.
    fn wake(self: &Arc<Self>, depth: usize) {
        proc::wakeup(self.wait_channel());
        waitlink::follow_nested(self.poll_channel(), depth);
    }

    /// The instances watching this one, one per registration.
    fn watchers(&self) -> Vec<Arc<Notify>> {
        let mut up = self.up.lock();
        up.retain(|w| w.strong_count() > 0);
        up.iter()
            .filter_map(Weak::upgrade)
            .map(|it| it.owner.clone())
            .collect()
    }
}

/// One registration (Linux `struct epitem`).
struct Item {
    fd: i32,
    file: Weak<OpenFile>,
    /// The file's readers' and writers' poll channels.
    chans: [usize; 2],
    /// The channels linked to this item now (which depend on the events asked for).
    linked: Mutex<[Option<usize>; 2]>,
    /// Events asked for, `EPOLLERR | EPOLLHUP` and the `PRIVATE` flags.
    events: AtomicU32,
    data: AtomicU64,
    /// Woken since a scan last looked at it (on Linux's ready list).
    ready: AtomicBool,
    owner: Arc<Notify>,
}

impl WakeTarget for Item {
    /// From the watched file's wake-up, possibly in an interrupt: atomics and a wake-up only.
    fn fire(&self) {
        self.fire_nested(0);
    }

    /// The owner's watchers are one link further. The loop check keeps chains within
    /// `MAX_NESTS`, so the cut-off never drops a real wake-up; it only guarantees the stack.
    fn fire_nested(&self, depth: usize) {
        self.ready.store(true, Ordering::Release);
        if depth <= MAX_NESTS {
            self.owner.wake(depth + 1);
        } else {
            proc::wakeup(self.owner.wait_channel());
        }
    }
}

impl Item {
    fn key(&self) -> *const OpenFile {
        self.file.as_ptr()
    }

    fn target(self: &Arc<Self>) -> Arc<dyn WakeTarget> {
        self.clone()
    }

    /// Links the channels the item's events need: the readers' one for input events (and for
    /// an item asking only for errors and hang-ups), the writers' one for output events (Linux
    /// filters wake-ups by their event key in `ep_poll_callback`; two channels do it here).
    fn relink(self: &Arc<Self>) -> Result<(), Errno> {
        self.unlink();
        let ev = self.events.load(Ordering::Relaxed);
        let read = ev & READ_SIDE != 0 || ev & WRITE_SIDE == 0;
        let write = ev & WRITE_SIDE != 0 && (!read || self.chans[1] != self.chans[0]);
        let want = [
            read.then_some(self.chans[0]),
            write.then_some(self.chans[1]),
        ];
        let mut linked = self.linked.lock();
        for (slot, c) in linked.iter_mut().zip(want) {
            if let Some(c) = c {
                waitlink::link(c, &self.target())?;
                *slot = Some(c);
            }
        }
        Ok(())
    }

    fn unlink(self: &Arc<Self>) {
        let mut linked = self.linked.lock();
        for c in linked.iter_mut().filter_map(Option::take) {
            waitlink::unlink(c, &self.target());
        }
    }

    /// What a scan reports for the item now (0: nothing), consuming the edge-triggered mark.
    /// `consume` false (a poll of the instance itself) leaves the mark as it is. `depth`: how
    /// many instances are being polled through to get here (Linux `ep_item_poll`'s depth).
    fn events_now(&self, consume: bool, depth: usize) -> u32 {
        let ev = self.events.load(Ordering::Relaxed);
        if ev & !PRIVATE == 0 {
            return 0; // a fired EPOLLONESHOT item, disabled until EPOLL_CTL_MOD
        }
        if ev & EPOLLET != 0 {
            let marked = if consume {
                self.ready.swap(false, Ordering::Acquire)
            } else {
                self.ready.load(Ordering::Acquire)
            };
            if !marked {
                return 0;
            }
        }
        let Some(f) = self.file.upgrade() else {
            return 0;
        };
        let now = match f.downcast::<Epoll>() {
            Some(ep) => ep.poll_nested(depth + 1),
            None => f.ops.poll(&f),
        };
        now & ev & !PRIVATE
    }
}

struct Items {
    list: Vec<Arc<Item>>,
    /// Where the next scan starts: after the last item reported.
    rotor: usize,
}

impl Items {
    /// Drops the items whose file has been closed everywhere.
    fn prune(&mut self) {
        self.list.retain(|it| {
            let live = it.file.strong_count() > 0;
            if !live {
                it.unlink();
            }
            live
        });
    }
}

/// An epoll instance as an open file.
pub struct Epoll {
    notify: Arc<Notify>,
    items: Mutex<Items>,
}

/// Serialises the additions of epoll instances to epoll instances, so two cannot build a cycle
/// between one's loop check and its insertion (Linux `epnested_mutex`).
static NESTING: Mutex<()> = Mutex::new(());

impl Default for Epoll {
    fn default() -> Self {
        Self::new()
    }
}

impl Epoll {
    pub fn new() -> Epoll {
        Epoll {
            notify: Arc::new(Notify {
                _unique: [0; 2],
                up: Mutex::new(Vec::new()),
            }),
            items: Mutex::new(Items {
                list: Vec::new(),
                rotor: 0,
            }),
        }
    }

    fn wake(&self) {
        self.notify.wake(0);
    }

    /// `poll` of the instance reached through `depth` outer instances: readable when some
    /// item would be reported. Past `MAX_NESTS` (which the loop check never lets a chain
    /// reach) it reports nothing rather than recurse further.
    fn poll_nested(&self, depth: usize) -> u32 {
        if depth > MAX_NESTS {
            return 0;
        }
        let items = self.items.lock();
        if items.list.iter().any(|it| it.events_now(false, depth) != 0) {
            EPOLLIN | EPOLLRDNORM
        } else {
            0
        }
    }

    /// The epoll instances `self` watches.
    fn children(&self) -> Vec<Arc<OpenFile>> {
        self.items
            .lock()
            .list
            .iter()
            .filter_map(|it| it.file.upgrade())
            .filter(|f| f.downcast::<Epoll>().is_some())
            .collect()
    }

    /// Whether adding instance `target` to `into` would close a loop, or make some chain of
    /// instances watching instances longer than `MAX_NESTS` links: the levels below `target`,
    /// plus the new link, plus the levels above `into` (the instances watching it, however
    /// deep). Linux `ep_loop_check`. Counting only one side lets a chain grow without bound
    /// by adding empty instances top-down, and every level costs the wake-up and poll paths a
    /// stack frame.
    #[doc(alias = "ep_loop_check")]
    fn loop_check(into: &Epoll, target: &Epoll) -> Result<(), Errno> {
        let mut memo = Vec::new();
        let below = Self::depth_below(into, target, 0, &mut memo)?;
        if below > MAX_NESTS {
            return Err(Errno::ELOOP);
        }
        memo.clear();
        let above = depth_above(&into.notify, 0, &mut memo)?;
        if below + 1 + above > MAX_NESTS {
            return Err(Errno::ELOOP);
        }
        Ok(())
    }

    /// How many levels of instances `ep` watches below it (`MAX_NESTS + 1`: too many, or
    /// `into` is among them, a loop). Linux `ep_loop_check_proc`; `memo` keeps each instance's
    /// answer so a wide graph is walked once, not once per path.
    fn depth_below(
        into: &Epoll,
        ep: &Epoll,
        depth: usize,
        memo: &mut Vec<(usize, usize)>,
    ) -> Result<usize, Errno> {
        let key = ep as *const Epoll as usize;
        if let Some(&(_, d)) = memo.iter().find(|(k, _)| *k == key) {
            return Ok(d);
        }
        let mut result = 0;
        for child in ep.children() {
            let Some(child) = child.downcast::<Epoll>() else {
                continue;
            };
            if core::ptr::eq(child, into) || depth > MAX_NESTS {
                result = MAX_NESTS + 1;
            } else {
                result = result.max(Self::depth_below(into, child, depth + 1, memo)? + 1);
            }
            if result > MAX_NESTS {
                break;
            }
        }
        memo.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
        memo.push((key, result));
        Ok(result)
    }

    /// `epoll_ctl` on (`file`, `fd`) with `events` (the caller checked the descriptors and
    /// that `file` is not this instance's own).
    #[doc(alias = "do_epoll_ctl")]
    pub fn ctl(&self, op: i32, fd: i32, file: &Arc<OpenFile>, events: u32, data: u64) -> SysCtl {
        let Some(chans) = file.ops.poll_channels(file) else {
            return Err(Errno::EPERM);
        };
        // Linux always watches for errors and hang-ups, and drops EPOLLWAKEUP for callers
        // without CAP_BLOCK_SUSPEND (cowlab has no suspend to block).
        let events = (events | EPOLLERR | EPOLLHUP) & !EPOLLWAKEUP;
        let target_ep = file.downcast::<Epoll>();
        let exclusive_bad = op == EPOLL_CTL_MOD
            || (op == EPOLL_CTL_ADD && (target_ep.is_some() || events & !EXCLUSIVE_OK != 0));
        if events & EPOLLEXCLUSIVE != 0 && exclusive_bad {
            return Err(Errno::EINVAL);
        }
        let _nesting = match (op, target_ep) {
            (EPOLL_CTL_ADD, Some(ep)) => {
                let guard = NESTING.lock();
                Self::loop_check(self, ep)?;
                Some(guard)
            }
            _ => None,
        };
        let mut items = self.items.lock();
        items.prune();
        let key = Arc::as_ptr(file);
        let at = items
            .list
            .iter()
            .position(|it| it.fd == fd && it.key() == key);
        match op {
            EPOLL_CTL_ADD => {
                if at.is_some() {
                    return Err(Errno::EEXIST);
                }
                crate::heap::try_reserve(&mut items.list, 1)?;
                let item = Arc::new(Item {
                    fd,
                    file: Arc::downgrade(file),
                    chans,
                    linked: Mutex::new([None; 2]),
                    events: AtomicU32::new(events),
                    data: AtomicU64::new(data),
                    // Checked by the next scan, as Linux's `ep_insert` polls at once.
                    ready: AtomicBool::new(true),
                    owner: self.notify.clone(),
                });
                if let Some(ep) = target_ep {
                    let mut up = ep.notify.up.lock();
                    up.retain(|w| w.strong_count() > 0);
                    crate::heap::try_reserve(&mut up, 1)?;
                    up.push(Arc::downgrade(&item));
                }
                if let Err(e) = item.relink() {
                    item.unlink();
                    return Err(e);
                }
                items.list.push(item);
            }
            EPOLL_CTL_DEL => {
                let i = at.ok_or(Errno::ENOENT)?;
                items.list.remove(i).unlink();
                return Ok(());
            }
            EPOLL_CTL_MOD => {
                let item = &items.list[at.ok_or(Errno::ENOENT)?];
                if item.events.load(Ordering::Relaxed) & EPOLLEXCLUSIVE != 0 {
                    return Err(Errno::EINVAL);
                }
                item.data.store(data, Ordering::Relaxed);
                item.events.store(events, Ordering::Relaxed);
                item.ready.store(true, Ordering::Release);
                item.relink()?;
            }
            _ => return Err(Errno::EINVAL),
        }
        drop(items);
        // A waiter rescans: the new or changed item may be ready already (Linux `ep_insert`
        // and `ep_modify` wake the waiters when it is).
        self.wake();
        Ok(())
    }

    /// Scans the items once, appending up to `max` (events, data) pairs to `out` (Linux
    /// `ep_send_events`).
    fn collect(&self, max: usize, out: &mut Vec<(u32, u64)>) {
        let mut items = self.items.lock();
        items.prune();
        let n = items.list.len();
        let start = if n == 0 { 0 } else { items.rotor % n };
        let mut next = start;
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let i = (start + k) % n;
            let item = &items.list[i];
            let got = item.events_now(true, 0);
            if got == 0 {
                continue;
            }
            out.push((got, item.data.load(Ordering::Relaxed)));
            let ev = item.events.load(Ordering::Relaxed);
            if ev & EPOLLONESHOT != 0 {
                item.events.store(ev & PRIVATE, Ordering::Relaxed);
            }
            next = i + 1;
        }
        items.rotor = next;
    }

    /// `epoll_wait`: up to `max` events, waiting until one is ready, the `deadline`
    /// (microseconds since boot; `Some(0)`: no wait) or a signal (`EINTR`: epoll_wait is never
    /// restarted, Linux `ep_poll`).
    #[doc(alias = "ep_poll")]
    pub fn wait(&self, max: usize, deadline: Option<u64>) -> Result<Vec<(u32, u64)>, Errno> {
        crate::heap::headroom(max.min(4096) * 16)?;
        let mut out = Vec::new();
        loop {
            // System calls run with interrupts off on one CPU: no wake-up slips in between the
            // scan and the sleep (the rule every `proc::sleep` user relies on).
            self.collect(max, &mut out);
            if !out.is_empty() {
                return Ok(out);
            }
            let now = time::micros_since_boot();
            let slept = match deadline {
                Some(d) if now >= d => return Ok(out),
                Some(d) => {
                    let ticks = (d - now).div_ceil(1_000_000 / time::TICK_HZ);
                    proc::sleep_interruptible_until(
                        self.notify.wait_channel(),
                        time::ticks() + ticks,
                    )
                }
                None => proc::sleep_interruptible(self.notify.wait_channel()),
            };
            match slept {
                Ok(()) => {}
                Err(Errno::ERESTARTSYS) => return Err(Errno::EINTR),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The result of [`Epoll::ctl`].
pub type SysCtl = Result<(), Errno>;

impl Drop for Epoll {
    fn drop(&mut self) {
        for item in self.items.get_mut().list.drain(..) {
            item.unlink();
        }
    }
}

impl FileOps for Epoll {
    /// Linux's epoll file has no write method: `EINVAL`, as for `read`.
    fn write_iter(&self, _io: &mut Kiocb, _from: &mut IoIter) -> Result<usize, Errno> {
        Err(Errno::EINVAL)
    }

    fn seek(&self) -> Seek {
        Seek::Stream
    }

    /// Readable when some item would be reported (Linux `ep_eventpoll_poll`), without
    /// consuming edge-triggered marks.
    fn poll(&self, _file: &OpenFile) -> u32 {
        self.poll_nested(0)
    }

    fn poll_channels(&self, _file: &OpenFile) -> Option<[usize; 2]> {
        Some([self.notify.poll_channel(); 2])
    }

    fn stat(&self) -> Stat {
        anon_stat(&self.notify)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(ANON_INODE_FS_MAGIC, 0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// `fstat` of an anonymous-inode file (epoll, eventfd...): mode 0600 without a file type, as
/// Linux's `anon_inode_mkinode`; the inode number from the object's address.
pub fn anon_stat<T>(obj: &Arc<T>) -> Stat {
    Stat::base(
        0o600,
        (Arc::as_ptr(obj) as *const u8 as u64 >> 4) % 1_000_000,
    )
}

/// How many levels of instances watch `n` above it (Linux `ep_get_upwards_depth_proc`), with
/// `memo` as in [`Epoll::depth_below`]. The loop check keeps this within `MAX_NESTS`; past it
/// the walk stops and answers "too deep" rather than recurse.
fn depth_above(n: &Notify, depth: usize, memo: &mut Vec<(usize, usize)>) -> Result<usize, Errno> {
    let key = n as *const Notify as usize;
    if let Some(&(_, d)) = memo.iter().find(|(k, _)| *k == key) {
        return Ok(d);
    }
    let mut result = 0;
    for w in n.watchers() {
        if depth > MAX_NESTS {
            result = MAX_NESTS + 1;
            break;
        }
        result = result.max(depth_above(&w, depth + 1, memo)? + 1);
    }
    memo.try_reserve(1).map_err(|_| Errno::ENOMEM)?;
    memo.push((key, result));
    Ok(result)
}
