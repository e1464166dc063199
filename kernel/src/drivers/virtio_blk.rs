//! A legacy virtio-blk driver (PCI `1af4:1001`, QEMU `virtio-blk-pci,disable-modern=on`) for up
//! to two devices (`vda`, `vdb`: [`device`], [`root_device`]), one virtqueue each, requests
//! whose data descriptors point at the memory the caller hands over — pinned user frames for
//! O_DIRECT, a kernel bounce buffer otherwise — and completion by interrupt, several requests in
//! flight.
//!
//! Picture (virtio 1.x, "legacy interface"): the device's registers sit in I/O BAR0 (features,
//! queue PFN/size/select/notify, status, ISR, then the device configuration: the capacity in
//! 512-byte sectors). The queue is one physically contiguous, page-aligned area: the descriptor
//! table (16 bytes each), the available ring (what the driver offers), then, at the next page
//! boundary, the used ring (what the device finished). A request is a descriptor chain: a
//! 16-byte header the device reads (type, sector), the data segments (device-writable for a
//! read), and one status byte the device writes. The driver publishes the chain's head in the
//! available ring and notifies; the device DMAs, puts the head in the used ring and raises its
//! PCI interrupt line (8259 PIC), whose handler ([`on_interrupt`]) reaps the used ring and
//! finishes each request: its memory is released (user pages marked dirty after a read, then
//! unpinned) and its completion callback runs (a sleeping syscall woken, an AIO event posted).
//!
//! Invariants: a request owns its memory ([`DmaMemory`]) from submission until it is finished,
//! exactly once, by [`Request::finish`] — so a pinned frame is never released (and never freed)
//! while the device may still touch it, whatever happens to the process that issued it. The
//! driver's state is behind one lock taken with interrupts off, and the interrupt handler runs
//! only where the kernel holds no lock (ring 3 or the idle loop's `hlt`: system calls run with
//! interrupts disabled), so it may take locks and allocate. Race scripting ([`hold`],
//! [`release`]): while held, submitted chains are built but not published to the available
//! ring, so the device cannot see them even if it is busy with earlier ones.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};

use cowlab_mm::pin::{PinnedPage, UnpinDirty};
use spin::{Mutex, Once};
use x86_64::instructions::interrupts;
use x86_64::instructions::port::Port;

use super::dma::DmaRegion;
use super::pci;
use crate::errno::Errno;
use crate::memory;

const VENDOR_VIRTIO: u16 = 0x1af4;
/// Transitional/legacy virtio-blk.
const DEVICE_BLK_LEGACY: u16 = 0x1001;

// Legacy register offsets in BAR0.
const REG_DEVICE_FEATURES: u16 = 0x00;
const REG_GUEST_FEATURES: u16 = 0x04;
const REG_QUEUE_PFN: u16 = 0x08;
const REG_QUEUE_SIZE: u16 = 0x0c;
const REG_QUEUE_SELECT: u16 = 0x0e;
const REG_QUEUE_NOTIFY: u16 = 0x10;
const REG_STATUS: u16 = 0x12;
const REG_ISR: u16 = 0x13;
/// Device configuration without MSI-X: `u64 capacity` (sectors) first.
const REG_CONFIG_CAPACITY: u16 = 0x14;

const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FAILED: u8 = 0x80;

/// `VIRTIO_BLK_F_RO`: the device is read-only.
const FEATURE_RO: u32 = 1 << 5;

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_S_OK: u8 = 0;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

const PAGE: usize = 4096;
/// Bytes per sector, virtio-blk's fixed unit.
pub const SECTOR: u64 = 512;
/// The most data segments one request may have (the callers split larger transfers).
pub const MAX_SEGMENTS: usize = 64;

/// The channel a submitter sleeps on while the queue has too few free descriptors.
const DESCRIPTORS_CHANNEL: usize = 0x2_0000_0001;

/// What the device does with the data segments.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Op {
    /// Device to memory (`VIRTIO_BLK_T_IN`): the segments are device-writable.
    Read,
    /// Memory to device (`VIRTIO_BLK_T_OUT`).
    Write,
}

/// One physically contiguous piece of a request's data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Segment {
    pub phys: u64,
    pub len: u32,
}

/// The memory a request's segments point into, owned by the request until it finishes.
pub enum DmaMemory {
    /// User frames pinned (or referenced, in old eras) by GUP; released at completion, marked
    /// dirty first after a read.
    Pinned(Vec<PinnedPage>),
    /// A kernel bounce buffer, shared with the waiter that copies it to or from user memory.
    Kernel(Arc<DmaRegion>),
    /// Frames pinned long-term by someone else (an io_uring buffer registration), kept alive
    /// (not re-pinned) by holding its owner until the request finishes.
    Registered(Arc<dyn core::any::Any + Send + Sync>),
}

/// Called once when the request is finished, after its memory is released: `Ok(bytes)` or
/// the error (`EIO` from the device).
pub type Completion = Box<dyn FnOnce(Result<usize, Errno>) + Send>;

/// A block request: the operation, where on the disk, the data segments and who owns them.
pub struct Request {
    op: Op,
    sector: u64,
    segments: Vec<Segment>,
    memory: DmaMemory,
    done: Completion,
}

impl Request {
    /// A request on pinned user pages: the data starts `offset` bytes into the first page and
    /// is `len` bytes long (a multiple of the sector size), each page one segment at its
    /// frame's physical address. A device read needs pins that allow writes
    /// (`PinnedPage::dma_from_device`): anything else is finished with `EFAULT`.
    pub fn pinned(
        op: Op,
        sector: u64,
        pages: Vec<PinnedPage>,
        offset: usize,
        len: usize,
        done: Completion,
    ) -> Result<Request, Errno> {
        let mut segments = Vec::with_capacity(pages.len());
        let mut left = len;
        let mut at = offset;
        let mut ok =
            offset < PAGE && len.is_multiple_of(SECTOR as usize) && pages.len() <= MAX_SEGMENTS;
        for page in &pages {
            if op == Op::Read && page.dma_from_device().is_err() {
                ok = false;
            }
            let n = (PAGE - at).min(left);
            segments.push(Segment {
                phys: page.frame().as_u64() + at as u64,
                len: n as u32,
            });
            left -= n;
            at = 0;
        }
        let request = Request {
            op,
            sector,
            segments,
            memory: DmaMemory::Pinned(pages),
            done,
        };
        if !ok || left != 0 || request.segments.iter().any(|s| s.len == 0) {
            request.finish(Err(Errno::EFAULT));
            return Err(Errno::EFAULT);
        }
        Ok(request)
    }

    /// A request on frames that stay pinned as long as `owner` lives (an io_uring buffer
    /// registration): `segments` are their physical pieces (`RegisteredBuffer::for_each_segment`,
    /// which hands out only device-writable pins).
    pub fn registered(
        op: Op,
        sector: u64,
        segments: Vec<Segment>,
        owner: Arc<dyn core::any::Any + Send + Sync>,
        done: Completion,
    ) -> Request {
        Request {
            op,
            sector,
            segments,
            memory: DmaMemory::Registered(owner),
            done,
        }
    }

    /// A request on `len` bytes of a kernel buffer from `offset`.
    pub fn kernel(
        op: Op,
        sector: u64,
        buffer: Arc<DmaRegion>,
        offset: usize,
        len: usize,
        done: Completion,
    ) -> Request {
        assert!(
            offset + len <= buffer.len() && len.is_multiple_of(SECTOR as usize) && len > 0,
            "kernel DMA request outside its buffer"
        );
        let segments = alloc::vec![Segment {
            phys: buffer.phys(offset),
            len: len as u32,
        }];
        Request {
            op,
            sector,
            segments,
            memory: DmaMemory::Kernel(buffer),
            done,
        }
    }

    fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.len as usize).sum()
    }

    /// Releases the request's memory, then reports `result`. The one way a request ends.
    #[doc(alias = "bio_endio")]
    fn finish(self, result: Result<usize, Errno>) {
        let Request {
            op, memory, done, ..
        } = self;
        match memory {
            DmaMemory::Pinned(pages) => {
                // Linux `bio_release_pages(bio, mark_dirty)`: a device read may have written
                // the pages whatever its status.
                let dirty = match op {
                    Op::Read => UnpinDirty::MakeDirty,
                    Op::Write => UnpinDirty::Clean,
                };
                for page in pages {
                    page.unpin_dirty(memory::mm(), dirty);
                }
            }
            DmaMemory::Kernel(buffer) => drop(buffer),
            // The last holder of a registration may drop it here: it unpins its pages itself.
            DmaMemory::Registered(owner) => drop(owner),
        }
        done(result);
    }
}

/// One virtqueue descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// `struct virtio_blk_outhdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlkHeader {
    kind: u32,
    reserved: u32,
    sector: u64,
}

/// The queue and everything in flight, behind [`Device::state`].
struct Queue {
    size: u16,
    /// Descriptor table, available ring and used ring (legacy layout).
    ring: DmaRegion,
    avail_offset: usize,
    used_offset: usize,
    /// Per head descriptor: its request header (16 bytes) at `16 * head`, and its status byte
    /// at `16 * size + head`.
    headers: DmaRegion,
    free: Vec<u16>,
    /// The next free slot of the available ring (the driver's copy of `avail.idx`).
    next_avail: u16,
    /// How far the used ring has been reaped.
    last_used: u16,
    /// The request of each in-flight chain, by head descriptor.
    inflight: Vec<Option<Request>>,
    /// While true, new chains go to `held` instead of the available ring.
    hold: bool,
    held: Vec<u16>,
}

/// One device, once found.
pub struct Device {
    /// `vda` or `vdb`.
    name: &'static str,
    io: u16,
    irq: u8,
    capacity_sectors: u64,
    read_only: bool,
    state: Mutex<Queue>,
    submitted: AtomicU64,
    completed: AtomicU64,
    /// The CPU that submitted last: where [`steer_interrupts`] sends the line.
    last_cpu: AtomicUsize,
}

/// The devices in PCI order: `vda` (the raw stamped disk behind `/dev/vda`, the DMA tests'),
/// then `vdb` (the root filesystem image). Each has its own queue and lock; they may share an
/// interrupt line.
static DEVICES: [Once<Device>; 2] = [Once::new(), Once::new()];
const NAMES: [&str; 2] = ["vda", "vdb"];

/// The first virtio-blk device (`/dev/vda`), if one was found at boot.
pub fn device() -> Option<&'static Device> {
    DEVICES[0].get()
}

/// The second virtio-blk device (`vdb`, the root filesystem's disk), if one was found.
pub fn root_device() -> Option<&'static Device> {
    DEVICES[1].get()
}

fn outb(port: u16, value: u8) {
    // SAFETY: a register of the virtio device's I/O BAR, which the PCI code found and enabled;
    // port I/O touches no memory.
    unsafe { Port::<u8>::new(port).write(value) }
}
fn inb(port: u16) -> u8 {
    // SAFETY: as in `outb`; ISR reads have the documented side effect of acknowledging.
    unsafe { Port::<u8>::new(port).read() }
}
fn outw(port: u16, value: u16) {
    // SAFETY: as in `outb`.
    unsafe { Port::<u16>::new(port).write(value) }
}
fn inw(port: u16) -> u16 {
    // SAFETY: as in `outb`.
    unsafe { Port::<u16>::new(port).read() }
}
fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe { Port::<u32>::new(port).write(value) }
}
fn inl(port: u16) -> u32 {
    // SAFETY: as in `outb`.
    unsafe { Port::<u32>::new(port).read() }
}

/// Bytes of the legacy queue layout for `size` entries: (available ring offset, used ring
/// offset, total), the used ring page-aligned (virtio 1.x, 2.7.2 "Legacy Interfaces: A Note on
/// Virtqueue Layout").
pub fn queue_layout(size: usize) -> (usize, usize, usize) {
    let avail = 16 * size;
    let used = (avail + 6 + 2 * size).div_ceil(PAGE) * PAGE;
    let total = used + (6 + 8 * size).div_ceil(PAGE) * PAGE;
    (avail, used, total)
}

/// Finds the devices (at most two) and sets each up. Without a device the kernel runs on and
/// `/dev/vda` does not exist; without a second one the root stays the ramdisk.
pub fn init() {
    for (n, slot) in DEVICES.iter().enumerate() {
        let Some(function) = pci::find_nth(VENDOR_VIRTIO, DEVICE_BLK_LEGACY, n) else {
            info!(
                "virtio-blk: no legacy device 1af4:1001 #{n}; {} is absent",
                NAMES[n]
            );
            return;
        };
        init_one(function, slot, NAMES[n]);
    }
}

/// Negotiates with one device (no optional features), sets up its queue 0 and unmasks its
/// interrupt line.
fn init_one(function: pci::PciFunction, slot: &'static Once<Device>, name: &'static str) {
    let (Some(io), Some(irq)) = (function.io_bar(0), function.interrupt_line()) else {
        warn!("virtio-blk: {function:?} has no I/O BAR0 or no interrupt line; ignored");
        return;
    };
    function.enable_io_and_bus_master();

    outb(io + REG_STATUS, 0);
    outb(io + REG_STATUS, STATUS_ACKNOWLEDGE);
    outb(io + REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    let features = inl(io + REG_DEVICE_FEATURES);
    // No optional feature is needed: plain descriptors, no event index, no flush.
    outl(io + REG_GUEST_FEATURES, 0);

    outw(io + REG_QUEUE_SELECT, 0);
    let size = inw(io + REG_QUEUE_SIZE);
    let (avail_offset, used_offset, total) = queue_layout(size as usize);
    let ring = DmaRegion::new(total);
    let headers = DmaRegion::new(17 * size as usize);
    let (Some(ring), Some(headers)) = (ring, headers) else {
        outb(io + REG_STATUS, STATUS_FAILED);
        warn!("virtio-blk: no memory for a {size}-entry queue");
        return;
    };
    if size == 0 || ring.phys(0) >> 12 > u64::from(u32::MAX) {
        outb(io + REG_STATUS, STATUS_FAILED);
        warn!("virtio-blk: unusable queue (size {size})");
        return;
    }
    outl(io + REG_QUEUE_PFN, (ring.phys(0) >> 12) as u32);

    let capacity_sectors = u64::from(inl(io + REG_CONFIG_CAPACITY))
        | u64::from(inl(io + REG_CONFIG_CAPACITY + 4)) << 32;
    let queue = Queue {
        size,
        ring,
        avail_offset,
        used_offset,
        headers,
        free: (0..size).rev().collect(),
        next_avail: 0,
        last_used: 0,
        inflight: (0..size).map(|_| None).collect(),
        hold: false,
        held: Vec::with_capacity(size as usize),
    };
    let device = slot.call_once(|| Device {
        name,
        io,
        irq,
        capacity_sectors,
        read_only: features & FEATURE_RO != 0,
        state: Mutex::new(queue),
        submitted: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        last_cpu: AtomicUsize::new(0),
    });
    outb(
        io + REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    // Through the I/O APIC to the boot CPU when the MADT describes one, else the 8259.
    if !crate::ioapic::route_isa(irq, 0) {
        crate::pic::unmask(irq);
    }
    info!(
        "virtio-blk: {name} {:02x}:{:02x}.{} io={io:#x} irq={irq} queue={size} capacity={} sectors ({} MiB){}",
        function.bus,
        function.device,
        function.function,
        device.capacity_sectors,
        device.capacity_sectors * SECTOR / (1024 * 1024),
        if device.read_only { " read-only" } else { "" }
    );
}

impl Queue {
    fn desc_ptr(&self, i: u16) -> *mut Desc {
        assert!(i < self.size, "descriptor {i} out of the table");
        // SAFETY: in bounds of the descriptor table at the start of `ring` (checked above).
        unsafe { self.ring.as_ptr().cast::<Desc>().add(usize::from(i)) }
    }

    fn write_desc(&mut self, i: u16, desc: Desc) {
        // SAFETY: a descriptor slot (`desc_ptr`), free (owned by the driver), aligned (16-byte
        // entries in a page-aligned table); volatile because the device reads it.
        unsafe { self.desc_ptr(i).write_volatile(desc) };
    }

    fn read_desc(&self, i: u16) -> Desc {
        // SAFETY: as in `write_desc`; the chain was returned by the device.
        unsafe { self.desc_ptr(i).read_volatile() }
    }

    fn ring_u16(&self, offset: usize) -> *mut u16 {
        assert!(offset + 2 <= self.ring.len(), "ring offset out of bounds");
        // SAFETY: in bounds (checked), 2-aligned (every ring field is).
        unsafe { self.ring.as_ptr().add(offset).cast::<u16>() }
    }

    /// Puts the chain at `head` in the available ring (not yet visible: see `publish_index`).
    fn offer(&mut self, head: u16) {
        let slot = self.avail_offset + 4 + 2 * usize::from(self.next_avail % self.size);
        // SAFETY: the available-ring entry `slot` (ring_u16 bounds-checks); the device reads
        // entries only below the published `avail.idx`, which still excludes this one.
        unsafe { self.ring_u16(slot).write_volatile(head) };
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Makes every offered entry visible to the device (`avail.idx`).
    fn publish_index(&mut self) {
        // The entries (and the descriptors) must be visible before the index that covers them.
        fence(Ordering::SeqCst);
        let idx = self.ring_u16(self.avail_offset + 2);
        // SAFETY: `avail.idx`, written only by the driver.
        unsafe { idx.write_volatile(self.next_avail) };
        fence(Ordering::SeqCst);
    }

    fn used_idx(&self) -> u16 {
        // SAFETY: `used.idx`, written by the device; volatile read.
        let idx = unsafe { self.ring_u16(self.used_offset + 2).read_volatile() };
        // Entries below the index must be read after it.
        fence(Ordering::SeqCst);
        idx
    }

    fn used_elem(&self, n: u16) -> u32 {
        let offset = self.used_offset + 4 + 8 * usize::from(n % self.size);
        assert!(offset + 8 <= self.ring.len(), "used ring out of bounds");
        // SAFETY: the used-ring element `n` (bounds checked), 4-aligned, below `used.idx`.
        unsafe { self.ring.as_ptr().add(offset).cast::<u32>().read_volatile() }
    }

    fn status_byte(&self, head: u16) -> u8 {
        let offset = 16 * usize::from(self.size) + usize::from(head);
        let mut b = [0u8];
        self.headers.read(offset, &mut b);
        b[0]
    }

    /// Builds the chain for `request` on free descriptors: header, segments, status. `None` if
    /// there are not enough free descriptors.
    fn build(&mut self, request: &Request) -> Option<u16> {
        let needed = request.segments.len() + 2;
        if self.free.len() < needed {
            return None;
        }
        let ids: Vec<u16> = (0..needed)
            .map(|_| self.free.pop().expect("counted"))
            .collect();
        let head = ids[0];
        let header = BlkHeader {
            kind: match request.op {
                Op::Read => VIRTIO_BLK_T_IN,
                Op::Write => VIRTIO_BLK_T_OUT,
            },
            reserved: 0,
            sector: request.sector,
        };
        // SAFETY: BlkHeader is plain old data (repr(C), no padding: 4 + 4 + 8).
        let header_bytes: [u8; 16] = unsafe { core::mem::transmute(header) };
        self.headers.write(16 * usize::from(head), &header_bytes);
        // Anything but OK, so a chain the device never completed cannot read as success.
        self.headers
            .write(16 * usize::from(self.size) + usize::from(head), &[0xff]);
        let data_flags = match request.op {
            Op::Read => DESC_F_WRITE,
            Op::Write => 0,
        };
        let mut descs = Vec::with_capacity(needed);
        descs.push((self.headers.phys(16 * usize::from(head)), 16, 0));
        for s in &request.segments {
            descs.push((s.phys, s.len, data_flags));
        }
        descs.push((
            self.headers
                .phys(16 * usize::from(self.size) + usize::from(head)),
            1,
            DESC_F_WRITE,
        ));
        for (i, (addr, len, flags)) in descs.into_iter().enumerate() {
            let last = i + 1 == needed;
            self.write_desc(
                ids[i],
                Desc {
                    addr,
                    len,
                    flags: flags | if last { 0 } else { DESC_F_NEXT },
                    next: if last { 0 } else { ids[i + 1] },
                },
            );
        }
        Some(head)
    }

    /// Returns the descriptors of the chain at `head` to the free list.
    fn free_chain(&mut self, head: u16) {
        let mut i = head;
        loop {
            let desc = self.read_desc(i);
            self.free.push(i);
            if desc.flags & DESC_F_NEXT == 0 {
                break;
            }
            i = desc.next;
        }
    }
}

impl Device {
    /// `vda` or `vdb`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_sectors * SECTOR
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Runs `f` on the queue with interrupts off (the interrupt handler takes the same lock).
    fn with_queue<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        interrupts::without_interrupts(|| f(&mut self.state.lock()))
    }

    fn notify(&self) {
        outw(self.io + REG_QUEUE_NOTIFY, 0);
    }

    /// Queues `request` for the device: published and notified at once, or kept back while
    /// held. Sleeps (in a process) while the queue lacks descriptors. The request is finished
    /// (memory released, completion called) exactly once: by the interrupt handler, or here
    /// on an error (`EINVAL` beyond the disk, `EINTR` if killed while waiting for room,
    /// `EAGAIN` outside a process).
    #[doc(alias = "virtio_queue_rq")]
    pub fn submit(&self, request: Request) -> Result<(), Errno> {
        let sectors = request.bytes() as u64 / SECTOR;
        let beyond = request
            .sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.capacity_sectors);
        if beyond {
            request.finish(Err(Errno::EINVAL));
            return Err(Errno::EINVAL);
        }
        self.submit_unchecked_range(request)
    }

    /// [`Device::submit`] without the disk-range check, so the device itself judges the sector
    /// (a sector past the end completes with `VIRTIO_BLK_S_IOERR`, reported as `EIO`). The
    /// in-kernel test of the device-error path uses it; every other caller wants `submit`.
    pub fn submit_unchecked_range(&self, request: Request) -> Result<(), Errno> {
        if request.segments.len() > MAX_SEGMENTS
            || request.segments.is_empty()
            || !request.bytes().is_multiple_of(SECTOR as usize)
            || (request.op == Op::Write && self.read_only)
        {
            let error = if request.op == Op::Write && self.read_only {
                Errno::EIO
            } else {
                Errno::EINVAL
            };
            request.finish(Err(error));
            return Err(error);
        }
        let mut request = Some(request);
        loop {
            let queued = self.with_queue(|q| {
                let r = request.take().expect("request still to queue");
                let Some(head) = q.build(&r) else {
                    request = Some(r);
                    return false;
                };
                q.inflight[usize::from(head)] = Some(r);
                if q.hold {
                    q.held.push(head);
                } else {
                    q.offer(head);
                    q.publish_index();
                }
                self.submitted.fetch_add(1, Ordering::Relaxed);
                self.last_cpu
                    .store(crate::percpu::cpu_id(), Ordering::Relaxed);
                true
            });
            if queued {
                if !self.with_queue(|q| q.hold) {
                    self.notify();
                }
                return Ok(());
            }
            let error = if crate::proc::current_pid() == 0 {
                Some(Errno::EAGAIN)
            } else {
                crate::proc::sleep_uninterruptible(DESCRIPTORS_CHANNEL, "a virtio-blk descriptor")
                    .err()
            };
            if let Some(error) = error {
                let r = request.take().expect("request still to queue");
                r.finish(Err(error));
                return Err(error);
            }
        }
    }

    /// From now on, submitted requests are kept from the device until [`Device::release`].
    pub fn hold(&self) {
        self.with_queue(|q| q.hold = true);
    }

    /// Publishes every held request and notifies the device; stops holding. Returns how many
    /// requests were held.
    pub fn release(&self) -> usize {
        let n = self.with_queue(|q| {
            q.hold = false;
            let n = q.held.len();
            for i in 0..n {
                let head = q.held[i];
                q.offer(head);
            }
            q.held.clear();
            q.publish_index();
            n
        });
        self.notify();
        n
    }

    /// Descriptors not in any chain.
    pub fn free_descriptors(&self) -> usize {
        self.with_queue(|q| q.free.len())
    }

    /// Requests submitted and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed) - self.completed.load(Ordering::Relaxed)
    }
}

/// Each device's interrupt line and name (`/proc/interrupts`).
pub fn irq_lines() -> Vec<(u8, &'static str)> {
    DEVICES
        .iter()
        .filter_map(Once::get)
        .map(|d| (d.irq, d.name))
        .collect()
}

/// Points each device's line at the CPU that submitted to it last, from the boot CPU's timer
/// tick (the only place the I/O APIC is rewritten after boot, see `ioapic`): the interrupt
/// moves to the submitter at most 10 ms after it started submitting, as Linux's blk-mq
/// completes a request on the CPU that issued it (`QUEUE_FLAG_SAME_COMP`), here without the
/// IPI that costs. The task waiting for the completion is woken on its own CPU, and an
/// application processor polling for its request with the big kernel lock held (`ext2_glue`,
/// `vda`) takes the interrupt itself instead of waiting for another CPU's handler, which needs
/// that lock. Two devices on one line: the second's submitter wins. A CPU that does not run
/// tasks (`smp_sched=0`) never submits.
pub fn steer_interrupts() {
    for device in DEVICES.iter().filter_map(Once::get) {
        let cpu = device.last_cpu.load(Ordering::Relaxed);
        if crate::smp::active_mask() & (1 << cpu) != 0 {
            crate::ioapic::set_destination(device.irq, cpu);
        }
    }
}

/// Whether the 8259 line `line` belongs to one of the devices.
pub fn handles_irq(line: u8) -> bool {
    DEVICES.iter().filter_map(Once::get).any(|d| d.irq == line)
}

/// An interrupt on `line`: every device on it is serviced (legacy INTx lines may be shared;
/// reaping a device with nothing in its used ring costs one ISR read).
pub fn on_interrupt(line: u8) {
    for device in DEVICES.iter().filter_map(Once::get) {
        if device.irq == line {
            on_device_interrupt(device);
        }
    }
}

/// Services every device as its interrupt would: for a polled wait on an application
/// processor, which holds the big kernel lock that the interrupt handler (on the boot CPU, the
/// I/O APIC's destination) would need, so the interrupt cannot finish the request meanwhile.
pub fn poll_all() {
    for device in DEVICES.iter().filter_map(Once::get) {
        on_device_interrupt(device);
    }
}

/// One device's interrupt: acknowledge (reading the ISR lowers the level-triggered line),
/// reap the used ring, finish each request outside the lock, wake submitters waiting for
/// descriptors.
#[doc(alias = "vring_interrupt")]
fn on_device_interrupt(device: &'static Device) {
    let _isr = inb(device.io + REG_ISR);
    let finished: Vec<(Request, Result<usize, Errno>)> = device.with_queue(|q| {
        let mut out = Vec::new();
        let used = q.used_idx();
        while q.last_used != used {
            let head = q.used_elem(q.last_used) as u16;
            q.last_used = q.last_used.wrapping_add(1);
            if head >= q.size {
                continue;
            }
            let status = q.status_byte(head);
            q.free_chain(head);
            if let Some(request) = q.inflight[usize::from(head)].take() {
                let result = if status == VIRTIO_BLK_S_OK {
                    Ok(request.bytes())
                } else {
                    Err(Errno::EIO)
                };
                out.push((request, result));
            }
        }
        out
    });
    if finished.is_empty() {
        return;
    }
    device
        .completed
        .fetch_add(finished.len() as u64, Ordering::Relaxed);
    for (request, result) in finished {
        request.finish(result);
    }
    crate::proc::wakeup(DESCRIPTORS_CHANNEL);
}
