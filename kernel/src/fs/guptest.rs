//! `/sys/kernel/debug/gup_test`: Linux's GUP test interface (`mm/gup_test.c`), with its ioctl
//! numbers and struct layouts, so that Linux's mm selftests (cow.c, gup_longterm.c, gup_test.c)
//! and the bench can drive cowlab's GUP.
//!
//! Model: the benchmark and basic-test ioctls take the pages of `[addr, addr + size)` in calls
//! of `nr_pages_per_call` pages through the named entry point, time the taking and the release
//! (`get_delta_usec`, `put_delta_usec`), release them all, and report in `size` the bytes
//! taken. `PIN_LONGTERM_TEST_START` pins a range long-term and keeps the pins in the open file
//! until `PIN_LONGTERM_TEST_STOP` or the file's last close; `PIN_LONGTERM_TEST_READ` copies the
//! pinned pages' current contents to a user buffer (what a device reading them would see).
#![deny(unsafe_code)]

use alloc::vec::Vec;

use cowlab_mm::foll::FollFlags;
use cowlab_mm::pin::PinnedPage;
use cowlab_mm::VirtAddr;
use cowlab_mm::{gup, opstat};
use spin::Mutex;

use crate::errno::Errno;
use crate::memory;
use crate::proc::current_aspace;
use crate::uaccess::{UserPtr, UserSlice};

pub const GUP_FAST_BENCHMARK: u64 = 0xC050_6701;
pub const PIN_FAST_BENCHMARK: u64 = 0xC050_6702;
pub const PIN_LONGTERM_BENCHMARK: u64 = 0xC050_6703;
pub const GUP_BASIC_TEST: u64 = 0xC050_6704;
pub const PIN_BASIC_TEST: u64 = 0xC050_6705;
pub const DUMP_USER_PAGES_TEST: u64 = 0xC050_6706;
pub const PIN_LONGTERM_TEST_START: u64 = 0x4018_6707;
pub const PIN_LONGTERM_TEST_STOP: u64 = 0x6708;
pub const PIN_LONGTERM_TEST_READ: u64 = 0x4008_6709;

const PIN_LONGTERM_TEST_FLAG_USE_WRITE: u32 = 1;
const PIN_LONGTERM_TEST_FLAG_USE_FAST: u32 = 2;
const GUP_TEST_FLAG_DUMP_PAGES_USE_PIN: u32 = 1;
const PAGE: u64 = 4096;
/// The most pages one ioctl holds at once (1 GiB of 4 KiB pages, 4 MiB of kernel heap for
/// their list: cow.c pins a whole 1 GiB hugetlb page; Linux has no limit but its memory).
const MAX_PAGES: u64 = 1 << 18;

/// Linux `struct gup_test` (0x50 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GupTestArgs {
    get_delta_usec: u64,
    put_delta_usec: u64,
    addr: u64,
    size: u64,
    nr_pages_per_call: u32,
    gup_flags: u32,
    test_flags: u32,
    which_pages: [u32; 8],
}

const _: () = assert!(core::mem::size_of::<GupTestArgs>() == 0x50);

/// Linux `struct pin_longterm_test` (0x18 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PinLongtermTest {
    addr: u64,
    size: u64,
    flags: u32,
}

const _: () = assert!(core::mem::size_of::<PinLongtermTest>() == 0x18);

/// One open `gup_test` file: the pins of a running `PIN_LONGTERM_TEST_START`.
#[derive(Default)]
pub struct GupTestFile {
    pins: Mutex<Option<Vec<PinnedPage>>>,
}

impl Drop for GupTestFile {
    fn drop(&mut self) {
        release(self.pins.get_mut().take());
    }
}

fn release(pins: Option<Vec<PinnedPage>>) {
    for page in pins.into_iter().flatten() {
        page.unpin(memory::mm());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    GetFast,
    PinFast,
    Get,
    Pin,
}

/// Takes `slots.len()` pages at `addr` through `entry`; the number taken.
fn take(
    entry: Entry,
    addr: u64,
    flags: FollFlags,
    slots: &mut [Option<PinnedPage>],
) -> Result<usize, Errno> {
    let mm = memory::mm();
    let shared = current_aspace();
    let mut hold = crate::gup_hold::ReschedHold::for_fills(&shared);
    let va = VirtAddr::new(addr);
    let (pin, fast) = match entry {
        Entry::GetFast => (false, true),
        Entry::PinFast => (true, true),
        Entry::Get => (false, false),
        Entry::Pin => (true, false),
    };
    let n = gup::user_pages_held(mm, &mut hold, va, flags, pin, fast, slots)?;
    Ok(n)
}

fn user_range(addr: u64, size: u64) -> Result<u64, Errno> {
    let end = addr.checked_add(size).ok_or(Errno::EINVAL)?;
    if end > cowlab_mm::aspace::USER_END {
        return Err(Errno::EFAULT);
    }
    Ok(size.div_ceil(PAGE))
}

impl GupTestFile {
    pub fn ioctl(&self, cmd: u64, arg: u64) -> Result<u64, Errno> {
        match cmd {
            GUP_FAST_BENCHMARK
            | PIN_FAST_BENCHMARK
            | PIN_LONGTERM_BENCHMARK
            | GUP_BASIC_TEST
            | PIN_BASIC_TEST
            | DUMP_USER_PAGES_TEST => self.benchmark(cmd, arg),
            PIN_LONGTERM_TEST_START => self.start(arg),
            PIN_LONGTERM_TEST_STOP => {
                let pins = self.pins.lock().take();
                release(pins);
                Ok(0)
            }
            PIN_LONGTERM_TEST_READ => self.read(arg),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Linux `__gup_test_ioctl`.
    fn benchmark(&self, cmd: u64, arg: u64) -> Result<u64, Errno> {
        opstat::begin(opstat::Op::GupFast);
        let ptr = UserPtr::<GupTestArgs>::new(arg)?;
        let mut args = ptr.read()?;
        let nr_pages = user_range(args.addr, args.size)?;
        if nr_pages > MAX_PAGES {
            return Err(Errno::ENOMEM);
        }
        let user = FollFlags::from_bits(args.gup_flags);
        let write_force =
            FollFlags::from_bits(user.bits() & (FollFlags::WRITE.bits() | FollFlags::FORCE.bits()));
        let (entry, flags) = match cmd {
            GUP_FAST_BENCHMARK => (Entry::GetFast, write_force),
            PIN_FAST_BENCHMARK => (Entry::PinFast, write_force),
            PIN_LONGTERM_BENCHMARK => (
                Entry::Pin,
                FollFlags::from_bits(write_force.bits() | FollFlags::LONGTERM.bits()),
            ),
            GUP_BASIC_TEST => (Entry::Get, write_force),
            PIN_BASIC_TEST => (Entry::Pin, write_force),
            _ if args.test_flags & GUP_TEST_FLAG_DUMP_PAGES_USE_PIN != 0 => {
                (Entry::Pin, write_force)
            }
            _ => (Entry::Get, write_force),
        };
        let per_call = match u64::from(args.nr_pages_per_call) {
            0 => nr_pages.max(1),
            n => n,
        };
        let mut slots: Vec<Option<PinnedPage>> = Vec::new();
        slots
            .try_reserve_exact(nr_pages as usize)
            .map_err(|_| Errno::ENOMEM)?;
        slots.resize_with(nr_pages as usize, || None);
        let start = crate::time::micros_since_boot();
        opstat::mark(opstat::Phase::GupIoctl);
        let mut taken = 0usize;
        while (taken as u64) < nr_pages {
            let want = per_call.min(nr_pages - taken as u64) as usize;
            let addr = args.addr + taken as u64 * PAGE;
            match take(entry, addr, flags, &mut slots[taken..taken + want]) {
                Ok(0) => break,
                Ok(n) => {
                    taken += n;
                    if n < want {
                        break;
                    }
                }
                // As Linux: a failed call ends the run; `size` reports what was taken.
                Err(_) => break,
            }
        }
        let mid = crate::time::micros_since_boot();
        gup::unpin_user_pages(memory::mm(), &mut slots[..taken]);
        opstat::mark(opstat::Phase::GupUnpin);
        let end = crate::time::micros_since_boot();
        args.get_delta_usec = mid - start;
        args.put_delta_usec = end - mid;
        args.size = taken as u64 * PAGE;
        ptr.write(&args)?;
        // Pages of PIN_FAST_BENCHMARK only: the other commands take other paths.
        let units = if entry == Entry::PinFast {
            taken as u64
        } else {
            0
        };
        opstat::end(opstat::Op::GupFast, opstat::Phase::GupIoctl, units);
        Ok(0)
    }

    /// Linux `pin_longterm_test_start`.
    fn start(&self, arg: u64) -> Result<u64, Errno> {
        let args = UserPtr::<PinLongtermTest>::new(arg)?.read()?;
        if self.pins.lock().is_some() {
            return Err(Errno::EINVAL);
        }
        if args.flags & !(PIN_LONGTERM_TEST_FLAG_USE_WRITE | PIN_LONGTERM_TEST_FLAG_USE_FAST) != 0
            || (args.addr | args.size) % PAGE != 0
            || args.size == 0
        {
            return Err(Errno::EINVAL);
        }
        let nr_pages = user_range(args.addr, args.size)?;
        if nr_pages > MAX_PAGES {
            return Err(Errno::ENOMEM);
        }
        let mut flags = FollFlags::LONGTERM;
        if args.flags & PIN_LONGTERM_TEST_FLAG_USE_WRITE != 0 {
            flags = FollFlags::from_bits(flags.bits() | FollFlags::WRITE.bits());
        }
        let entry = if args.flags & PIN_LONGTERM_TEST_FLAG_USE_FAST != 0 {
            Entry::PinFast
        } else {
            Entry::Pin
        };
        let mut slots: Vec<Option<PinnedPage>> = Vec::new();
        slots
            .try_reserve_exact(nr_pages as usize)
            .map_err(|_| Errno::ENOMEM)?;
        slots.resize_with(nr_pages as usize, || None);
        let mut taken = 0usize;
        let mut result = Ok(());
        while taken < slots.len() {
            let addr = args.addr + taken as u64 * PAGE;
            match take(entry, addr, flags, &mut slots[taken..]) {
                Ok(0) => {
                    result = Err(Errno::EFAULT);
                    break;
                }
                Ok(n) => taken += n,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = result {
            gup::unpin_user_pages(memory::mm(), &mut slots[..taken]);
            return Err(e);
        }
        let pins: Vec<PinnedPage> = slots.into_iter().flatten().collect();
        let mut guard = self.pins.lock();
        if guard.is_some() {
            drop(guard);
            release(Some(pins));
            return Err(Errno::EINVAL);
        }
        *guard = Some(pins);
        Ok(0)
    }

    /// Linux `pin_longterm_test_read`: copies every pinned page to the user buffer whose
    /// address `arg` points at. One page at a time through a one-page kernel buffer: each
    /// page is read under the lock, then copied to the user without it (a user fault under
    /// the lock would hold it across a page fault). It copied everything into one kernel
    /// buffer first, whose size the user chose: a pin of more than the kernel heap (64 MiB
    /// of pages, well within `MAX_PAGES`) panicked the kernel on the allocation.
    fn read(&self, arg: u64) -> Result<u64, Errno> {
        let dst = UserPtr::<u64>::new(arg)?.read()?;
        let mut page = Vec::new();
        crate::heap::try_reserve(&mut page, PAGE as usize)?;
        page.resize(PAGE as usize, 0u8);
        let mut i = 0usize;
        loop {
            {
                let guard = self.pins.lock();
                let Some(pins) = guard.as_ref() else {
                    return Err(Errno::EINVAL);
                };
                let Some(pin) = pins.get(i) else {
                    break;
                };
                pin.dma_read(memory::mm(), 0, &mut page);
            }
            let at = dst.checked_add(i as u64 * PAGE).ok_or(Errno::EFAULT)?;
            UserSlice::new(at, PAGE as usize)?.write(&page)?;
            i += 1;
        }
        Ok(0)
    }
}

impl super::file::FileOps for GupTestFile {
    fn seek(&self) -> super::file::Seek {
        super::file::Seek::Stream
    }

    fn stat(&self) -> super::stat::Stat {
        super::stat::Stat::base(super::stat::S_IFREG | 0o600, 4)
    }

    fn statfs(&self) -> super::stat::StatFs {
        use super::stat::{ST_NODEV, ST_NOEXEC, ST_NOSUID};
        super::stat::statfs_of(super::stat::DEBUGFS_MAGIC, ST_NOSUID | ST_NODEV | ST_NOEXEC)
    }

    fn ioctl(&self, _file: &super::OpenFile, cmd: u64, arg: u64) -> crate::errno::SysResult {
        GupTestFile::ioctl(self, cmd & 0xffff_ffff, arg)
    }

    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
