//! The block device under the ext2 filesystem in the kernel: `cowlab_ext2::BlockDevice` over a
//! virtio-blk device, one synchronous request at a time through a kernel bounce buffer.
//!
//! A task waits for its request asleep (Linux's `TASK_UNINTERRUPTIBLE`, reported by the
//! hung-task watchdog), woken by the completion, which the virtio interrupt handler runs; the
//! filesystem is held meanwhile through its sleeping lock (`ext2_mount`), not a spin lock, so
//! the CPU runs other tasks during the disk's time. Outside a task (the root mount at boot) and
//! for a task being killed (whose sleeps return at once) the wait polls instead: interrupts on,
//! `hlt`, interrupts off, check. A polled request that does not complete within
//! [`TIMEOUT_TICKS`] (ten minutes of ticks) is an I/O error; its bounce buffer is then left to
//! the request (which owns a reference until the device finishes it) and a fresh one is used
//! from then on, so the device can never write into memory a later request reads. A sleeping
//! wait has no timeout (as on Linux, a lost completion is a hung task, reported).
#![deny(unsafe_code)]

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use cowlab_ext2::{BlockDevice, IoError};
use x86_64::instructions::interrupts;

use crate::drivers::dma::DmaRegion;
use crate::drivers::virtio_blk::{Device, Op, Request, SECTOR};
use crate::time;

/// The most bytes one request moves (the bounce buffer's size).
pub const CHUNK: usize = 64 * 1024;
/// Ten minutes at `time::TICK_HZ`. Generous because the ticks are virtual: under QEMU's
/// `-icount sleep=off` (`cargo xtask bench`) every `hlt` warps the clock to the next tick, so
/// while the host completes one request the guest may count thousands of ticks (ten seconds'
/// worth timed out the root mount on a loaded host).
pub const TIMEOUT_TICKS: u64 = 600 * time::TICK_HZ;

/// How many callers on this CPU are inside [`without_sleeping`].
static NO_SLEEP: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with every block request it makes polled instead of slept on (Linux's rule that
/// nothing sleeps in atomic context): the page cache does its I/O holding spin locks (the
/// cache's own, and on a fault the address space's), and a task asleep with one of them held
/// would leave the next task that wants it spinning with interrupts off on this single CPU.
pub fn without_sleeping<R>(f: impl FnOnce() -> R) -> R {
    NO_SLEEP.fetch_add(1, Ordering::Relaxed);
    let r = f();
    NO_SLEEP.fetch_sub(1, Ordering::Relaxed);
    r
}

/// Whether the current caller may sleep for its block request (see [`without_sleeping`]).
pub fn may_sleep() -> bool {
    NO_SLEEP.load(Ordering::Relaxed) == 0
}

/// A virtio-blk device as the filesystem's disk.
pub struct VirtioDisk {
    device: &'static Device,
    bounce: Arc<DmaRegion>,
}

/// One request's outcome, written by the completion (in the interrupt handler).
struct Outcome {
    done: AtomicBool,
    /// Bytes moved, or `-errno`.
    result: AtomicI64,
}

impl VirtioDisk {
    /// `None` if the heap cannot hold the bounce buffer.
    pub fn new(device: &'static Device) -> Option<VirtioDisk> {
        Some(VirtioDisk {
            device,
            bounce: Arc::new(DmaRegion::new(CHUNK)?),
        })
    }

    pub fn read_only(&self) -> bool {
        self.device.read_only()
    }

    /// Moves `len` bytes (whole sectors, at most `CHUNK`) between the bounce buffer and the disk
    /// at `sector`, and waits for the device.
    fn transfer(&mut self, op: Op, sector: u64, len: usize) -> Result<(), IoError> {
        let outcome = Arc::new(Outcome {
            done: AtomicBool::new(false),
            result: AtomicI64::new(0),
        });
        let report = outcome.clone();
        let completion = Box::new(move |r: Result<usize, crate::errno::Errno>| {
            let v = match r {
                Ok(n) => n as i64,
                Err(e) => -(e as i64),
            };
            report.result.store(v, Ordering::Relaxed);
            report.done.store(true, Ordering::Release);
            crate::proc::wakeup(Arc::as_ptr(&report) as usize);
        });
        let request = Request::kernel(op, sector, self.bounce.clone(), 0, len, completion);
        self.device.submit(request).map_err(|_| IoError)?;
        // System calls run with interrupts off, so the completion cannot slip in between the
        // check and the sleep.
        let channel = Arc::as_ptr(&outcome) as usize;
        let waited = time::rdtsc();
        while crate::proc::current_tid() != 0
            && may_sleep()
            && !outcome.done.load(Ordering::Acquire)
        {
            if crate::proc::sleep_uninterruptible(channel, "an ext2 block request").is_err() {
                break;
            }
        }
        let were_enabled = interrupts::are_enabled();
        interrupts::disable();
        let deadline = time::ticks() + TIMEOUT_TICKS;
        // Interrupts are off between the check and `sti; hlt`, so the completion cannot slip
        // in unnoticed: it can only arrive while halted.
        // Every CPU polls after each wake-up, the boot CPU too: the device's interrupt follows
        // the CPU that submitted last (`virtio_blk::steer_interrupts`), so the completion of
        // this CPU's request may be delivered to another CPU, one that is parked at power-off
        // or waiting for the big kernel lock this CPU holds (CI run of session 10: t_dcow_dio's
        // power-off unmount waited on CPU 0 for a completion steered to CPU 1, every request
        // timing out, 240 s).
        while !outcome.done.load(Ordering::Acquire) && time::ticks() < deadline {
            interrupts::enable_and_hlt();
            interrupts::disable();
            crate::drivers::virtio_blk::poll_all();
        }
        if were_enabled {
            interrupts::enable();
        }
        super::ext2_cache::DISK_WAIT_TSC.fetch_add(time::rdtsc() - waited, Ordering::Relaxed);
        if !outcome.done.load(Ordering::Acquire) {
            warn!(
                "ext2: virtio-blk {} request at sector {sector} timed out",
                self.device.name()
            );
            // The request still holds the old buffer; never reuse it.
            self.bounce = Arc::new(DmaRegion::new(CHUNK).ok_or(IoError)?);
            return Err(IoError);
        }
        if outcome.result.load(Ordering::Relaxed) == len as i64 {
            Ok(())
        } else {
            Err(IoError)
        }
    }
}

impl BlockDevice for VirtioDisk {
    fn sector_size(&self) -> usize {
        SECTOR as usize
    }

    fn sector_count(&self) -> u64 {
        self.device.capacity_bytes() / SECTOR
    }

    fn read_sectors(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let mut at = 0;
        while at < buf.len() {
            let n = (buf.len() - at).min(CHUNK);
            self.transfer(Op::Read, sector + (at as u64) / SECTOR, n)?;
            self.bounce.read(0, &mut buf[at..at + n]);
            at += n;
        }
        Ok(())
    }

    fn write_sectors(&mut self, sector: u64, buf: &[u8]) -> Result<(), IoError> {
        let mut at = 0;
        while at < buf.len() {
            let n = (buf.len() - at).min(CHUNK);
            self.bounce.write(0, &buf[at..at + n]);
            self.transfer(Op::Write, sector + (at as u64) / SECTOR, n)?;
            at += n;
        }
        Ok(())
    }

    /// The driver negotiates no `VIRTIO_BLK_F_FLUSH`, so the device writes through: a completed
    /// write is as durable as QEMU's backing file makes it.
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}
