//! A minimal io_uring (Linux `io_uring/`), with Linux's ABI: `io_uring_setup` (425),
//! `io_uring_enter` (426), `io_uring_register` (427), `struct io_uring_params` and its ring
//! offsets, 64-byte SQEs, 16-byte CQEs, and the ring mmaps at `IORING_OFF_SQ_RING`,
//! `IORING_OFF_CQ_RING` and `IORING_OFF_SQES`. It exists for its long-term registered buffers:
//! `IORING_REGISTER_BUFFERS` pins user memory with `FOLL_WRITE|FOLL_LONGTERM`
//! (`cowlab_mm::regbuf`) and the fixed read/write operations move data through the *pinned
//! frames* (the kernel's direct map), never through the process's page tables, which is what
//! makes cow.c's io_uring families observe exactly what the pinned pages hold.
//!
//! Picture: one shmem object holds the rings: the ring header (SQ and CQ head/tail, masks,
//! counters), the CQE array and the SQ index array in its first pages, the SQE array in the
//! pages after them. The process maps it `MAP_SHARED` through the same memory-manager path as
//! a memfd (`mmap_target` turns the magic offsets into object offsets), so the kernel's
//! `read_at`/`write_at` of the object and the process's loads and stores meet in the same cache
//! frames; one object serves both ring offsets (`IORING_FEAT_SINGLE_MMAP`). The kernel keeps
//! its own copies of the indices it owns (SQ head, CQ tail) and only reads the user's (SQ
//! tail, CQ head).
//!
//! Every submission executes synchronously inside `io_uring_enter`, in SQ order, and posts its
//! CQE before the call returns (so a read of an empty pipe blocks the caller there; there are
//! no worker threads or polling). `IOSQE_IO_DRAIN` and `IOSQE_ASYNC` therefore hold trivially;
//! `IOSQE_IO_LINK`/`IOSQE_IO_HARDLINK` chains and `IOSQE_CQE_SKIP_SUCCESS` are honoured;
//! `IOSQE_FIXED_FILE` and `IOSQE_BUFFER_SELECT` (no registered files or buffer groups) complete
//! with `-EINVAL`. A submission is taken only when its CQE has room, so no completion is ever
//! dropped; a full CQ makes `io_uring_enter` stop early (`EBUSY` if it submitted nothing).
//!
//! Lifetime: the open-file description owns the ring. Its last close (the process's exit
//! included) drops the registration, which unpins every buffer, and puts the shmem object
//! (mappings keep their own references). After `fork` the child shares the description, hence
//! the one registration and its one set of pins, as the ring fd is shared on Linux.
#![deny(unsafe_code)]

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use cowlab_mm::pin::PinnedPage;
use cowlab_mm::regbuf::{register_buffer, RegisteredBuffer};
use cowlab_mm::shmem::ShmemObject;
use cowlab_mm::{MmError, VirtAddr};
use spin::Mutex;

use super::file::{FileOps, OpenFile, Seek};
use super::iter::IoIter;
use super::rw::{position_for, vfs_fsync, vfs_read, vfs_write};
use super::stat::{statfs_of, Stat, StatFs, ANON_INODE_FS_MAGIC};
use super::O_RDWR;
use crate::errno::{Errno, SysResult};
use crate::memory;
use crate::proc::{self, current_aspace, rlimit, with_current};
use crate::uaccess::{UserPtr, UserSlice};

pub const IORING_OFF_SQ_RING: u64 = 0;
pub const IORING_OFF_CQ_RING: u64 = 0x800_0000;
pub const IORING_OFF_SQES: u64 = 0x1000_0000;

const IORING_SETUP_CQSIZE: u32 = 1 << 3;
const IORING_SETUP_CLAMP: u32 = 1 << 4;
const IORING_SETUP_SUBMIT_ALL: u32 = 1 << 7;
/// `io_uring_setup` flags accepted: the rest (polling, SQ threads, ...) answer `EINVAL`.
const SETUP_FLAGS: u32 = IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL;
const IORING_MAX_ENTRIES: u32 = 32768;
const IORING_MAX_CQ_ENTRIES: u32 = 2 * IORING_MAX_ENTRIES;

const IORING_FEAT_SINGLE_MMAP: u32 = 1 << 0;
const IORING_FEAT_SUBMIT_STABLE: u32 = 1 << 2;
const IORING_FEAT_RW_CUR_POS: u32 = 1 << 3;

const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_SQ_WAKEUP: u32 = 1 << 1;
const IORING_ENTER_SQ_WAIT: u32 = 1 << 2;
/// Accepted `io_uring_enter` flags (`SQ_WAKEUP`/`SQ_WAIT` mean nothing without an SQ thread,
/// as on Linux); `EXT_ARG` and `REGISTERED_RING` answer `EINVAL`.
const ENTER_FLAGS: u32 = IORING_ENTER_GETEVENTS | IORING_ENTER_SQ_WAKEUP | IORING_ENTER_SQ_WAIT;

const IORING_REGISTER_BUFFERS: u64 = 0;
const IORING_UNREGISTER_BUFFERS: u64 = 1;
const IORING_REGISTER_PROBE: u64 = 8;
/// `IO_URING_OP_SUPPORTED` in `struct io_uring_probe_op`.
const IO_URING_OP_SUPPORTED: u16 = 1;
/// Linux `IORING_MAX_REG_BUFFERS`.
const IORING_MAX_REG_BUFFERS: u64 = 1 << 14;
/// Linux's limit on one registered buffer (`io_buffer_validate`).
const MAX_BUFFER_LEN: u64 = 1 << 30;

const IORING_OP_NOP: u8 = 0;
const IORING_OP_READV: u8 = 1;
const IORING_OP_WRITEV: u8 = 2;
const IORING_OP_FSYNC: u8 = 3;
const IORING_OP_READ_FIXED: u8 = 4;
const IORING_OP_WRITE_FIXED: u8 = 5;
const IORING_OP_READ: u8 = 22;
const IORING_OP_WRITE: u8 = 23;
/// The operations `execute_op` runs, as `IORING_REGISTER_PROBE` reports them.
const SUPPORTED_OPS: [u8; 8] = [
    IORING_OP_NOP,
    IORING_OP_READV,
    IORING_OP_WRITEV,
    IORING_OP_FSYNC,
    IORING_OP_READ_FIXED,
    IORING_OP_WRITE_FIXED,
    IORING_OP_READ,
    IORING_OP_WRITE,
];
/// `IORING_FSYNC_DATASYNC`, the one `fsync_flags` bit.
const IORING_FSYNC_DATASYNC: u32 = 1;

const IOSQE_IO_DRAIN: u8 = 1 << 1;
const IOSQE_IO_LINK: u8 = 1 << 2;
const IOSQE_IO_HARDLINK: u8 = 1 << 3;
const IOSQE_ASYNC: u8 = 1 << 4;
const IOSQE_CQE_SKIP_SUCCESS: u8 = 1 << 6;
/// SQE flags honoured; the others (`IOSQE_FIXED_FILE` 1, `IOSQE_BUFFER_SELECT` 0x20) complete
/// with `-EINVAL`.
const SQE_FLAGS: u8 =
    IOSQE_IO_DRAIN | IOSQE_IO_LINK | IOSQE_IO_HARDLINK | IOSQE_ASYNC | IOSQE_CQE_SKIP_SUCCESS;
/// `RWF_DSYNC | RWF_SYNC`: satisfied by memory-backed files as they are.
const RWF_SYNCS: u32 = 2 | 4;

/// Linux `struct io_sqring_offsets` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// Linux `struct io_cqring_offsets` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CqringOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// Linux `struct io_uring_params` (120 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Params {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqringOffsets,
    cq_off: CqringOffsets,
}

const _: () = assert!(core::mem::size_of::<Params>() == 120);

/// Linux `struct io_uring_sqe` (64 bytes), the fields the supported operations use.
#[derive(Clone, Copy, Default)]
struct Sqe {
    opcode: u8,
    flags: u8,
    ioprio: u16,
    fd: i32,
    off: u64,
    addr: u64,
    len: u32,
    rw_flags: u32,
    user_data: u64,
    buf_index: u16,
}

impl Sqe {
    fn parse(b: &[u8; 64]) -> Sqe {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Sqe {
            opcode: b[0],
            flags: b[1],
            ioprio: u16_at(2),
            fd: u32_at(4) as i32,
            off: u64_at(8),
            addr: u64_at(16),
            len: u32_at(24),
            rw_flags: u32_at(28),
            user_data: u64_at(32),
            buf_index: u16_at(40),
        }
    }
}

// The ring header: each index the two sides write on its own cache line, as Linux's
// `struct io_rings`. The CQE array starts on a cache line; the SQ index array follows it.
const SQ_HEAD: u64 = 0;
const SQ_TAIL: u64 = 64;
const CQ_HEAD: u64 = 128;
const CQ_TAIL: u64 = 192;
const SQ_RING_MASK: u64 = 256;
const CQ_RING_MASK: u64 = 260;
const SQ_RING_ENTRIES: u64 = 264;
const CQ_RING_ENTRIES: u64 = 268;
const SQ_DROPPED: u64 = 272;
const SQ_FLAGS: u64 = 276;
const CQ_FLAGS: u64 = 280;
const CQ_OVERFLOW: u64 = 284;
const CQES: u64 = 320;
const PAGE: u64 = 4096;

/// The registered buffers (`None`: a sparse slot, registered as `{NULL, 0}`). Dropping the
/// last reference unpins them all: an operation in flight keeps its `Arc`, so unregistering
/// while it runs unpins when it ends (Linux's resource node references).
struct Registration {
    bufs: Vec<Option<RegisteredBuffer>>,
    /// Words charged to [`REGISTERED_WORDS`].
    charged: usize,
    /// Pages charged to the user's locked memory (`RLIMIT_MEMLOCK`).
    locked: rlimit::LockedCharge,
}

impl Drop for Registration {
    fn drop(&mut self) {
        for buf in self.bufs.drain(..).flatten() {
            buf.unregister(memory::mm());
        }
        REGISTERED_WORDS.fetch_sub(self.charged, Ordering::Relaxed);
        rlimit::unaccount_locked_vm(&self.locked);
    }
}

/// Kernel-heap bookkeeping of every registration, in 8-byte words: one per pinned page (its
/// `Option<PinnedPage>` entry in the buffer's page list, Linux's `struct page *`) and
/// [`WORDS_PER_SLOT`] per buffer slot. The page lists live on the fixed kernel heap, so the
/// total is capped system-wide whatever the limits say ([`max_registered_words`]), and a
/// registration beyond it answers `ENOMEM` before it pins anything. This is cowlab's own
/// guard (Linux's page arrays come from `kvmalloc`); Linux's limits are kept too: one buffer
/// over 1 GiB is `EFAULT` ([`read_iovecs`], `io_buffer_validate`), and each buffer's pages
/// are charged to the user's `RLIMIT_MEMLOCK` after they are pinned
/// (`proc::rlimit::account_locked_vm`, Linux `io_account_mem`; not for `CAP_IPC_LOCK`).
static REGISTERED_WORDS: AtomicUsize = AtomicUsize::new(0);
const WORD: usize = core::mem::size_of::<u64>();
const WORDS_PER_PAGE: usize = core::mem::size_of::<Option<PinnedPage>>().div_ceil(WORD);
const WORDS_PER_SLOT: usize = core::mem::size_of::<Option<RegisteredBuffer>>().div_ceil(WORD);
/// The fraction of the kernel heap the page lists may take.
const HEAP_SHARE: usize = 16;
// With the default heap (64 MiB: a 4 MiB budget, 2 GiB registered in all) one buffer of
// Linux's largest size, 1 GiB unaligned (262145 pages), always fits with its slot.
const _: () = assert!(
    ((MAX_BUFFER_LEN / PAGE) as usize + 1) * WORDS_PER_PAGE + WORDS_PER_SLOT
        <= memory::HEAP_SIZE / HEAP_SHARE / WORD
);

/// The registration budget in words: a 16th of the kernel heap (`kheap=` shrinks it).
fn max_registered_words() -> usize {
    crate::heap::stats().heap_bytes / HEAP_SHARE / WORD
}

/// Charges `words` to the registration total; `ENOMEM` over [`max_registered_words`].
fn charge(words: usize) -> Result<(), Errno> {
    let max = max_registered_words();
    let mut used = REGISTERED_WORDS.load(Ordering::Relaxed);
    loop {
        let total = used
            .checked_add(words)
            .filter(|&n| n <= max)
            .ok_or(Errno::ENOMEM)?;
        match REGISTERED_WORDS.compare_exchange_weak(
            used,
            total,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return Ok(()),
            Err(now) => used = now,
        }
    }
}

/// The pages `iov` touches (its page list's length).
fn iov_pages(iov: &IoVec) -> usize {
    (iov.base % PAGE + iov.len).div_ceil(PAGE) as usize
}

/// The indices the kernel owns, and submissions taken but not yet completed (each has a CQE
/// slot reserved).
#[derive(Default)]
struct RingState {
    sq_head: u32,
    cq_tail: u32,
    dropped: u32,
    in_flight: u32,
}

/// One io_uring instance (the private data of its open-file description).
pub struct IoUring {
    /// `Some` until drop, which puts it.
    obj: Option<Arc<ShmemObject>>,
    sq_entries: u32,
    cq_entries: u32,
    sq_array: u64,
    /// Bytes of the ring part (header, CQEs, SQ array), page aligned; the SQEs follow.
    rings_len: u64,
    sqes_len: u64,
    state: Mutex<RingState>,
    registration: Mutex<Option<Arc<Registration>>>,
}

impl Drop for IoUring {
    fn drop(&mut self) {
        drop(self.registration.get_mut().take());
        if let Some(obj) = self.obj.take() {
            ShmemObject::put(obj, memory::mm());
        }
    }
}

impl IoUring {
    fn obj(&self) -> &Arc<ShmemObject> {
        self.obj.as_ref().expect("the ring object lives until drop")
    }

    fn read_u32(&self, at: u64) -> u32 {
        let mut b = [0u8; 4];
        self.obj().read_at(memory::mm(), at, &mut b);
        u32::from_le_bytes(b)
    }

    /// Stores a ring word. The object's pages were all allocated at setup, so this cannot fail.
    fn write_u32(&self, at: u64, value: u32) {
        let written = self.obj().write_at(memory::mm(), at, &value.to_le_bytes());
        debug_assert_eq!(written, Ok(4), "ring pages are allocated at setup");
    }

    /// The shmem object and object offset behind an mmap of the ring file at `offset` (one of
    /// the `IORING_OFF_*` cookies) for `len` bytes (Linux `io_uring_validate_mmap_request`).
    pub fn mmap_target(&self, offset: u64, len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        let (start, size) = match offset {
            IORING_OFF_SQ_RING | IORING_OFF_CQ_RING => (0, self.rings_len),
            IORING_OFF_SQES => (self.rings_len, self.sqes_len),
            _ => return Err(Errno::EINVAL),
        };
        if len > size {
            return Err(Errno::EINVAL);
        }
        Ok((self.obj(), start))
    }

    /// Takes the next submission if there is one and its CQE has room (Linux
    /// `io_get_sqe`). An SQ index out of range is consumed, counted in `sq_dropped`, and ends
    /// the batch, as on Linux.
    fn take_sqe(&self) -> Taken {
        let mut st = self.state.lock();
        let tail = self.read_u32(SQ_TAIL);
        if st.sq_head == tail {
            return Taken::Empty;
        }
        let cq_head = self.read_u32(CQ_HEAD);
        let queued = st.cq_tail.wrapping_sub(cq_head).min(self.cq_entries);
        if queued + st.in_flight >= self.cq_entries {
            return Taken::CqFull;
        }
        let slot = st.sq_head & (self.sq_entries - 1);
        let index = self.read_u32(self.sq_array + 4 * u64::from(slot));
        st.sq_head = st.sq_head.wrapping_add(1);
        self.write_u32(SQ_HEAD, st.sq_head);
        if index >= self.sq_entries {
            st.dropped = st.dropped.wrapping_add(1);
            self.write_u32(SQ_DROPPED, st.dropped);
            return Taken::Dropped;
        }
        let mut raw = [0u8; 64];
        self.obj().read_at(
            memory::mm(),
            self.rings_len + 64 * u64::from(index),
            &mut raw,
        );
        st.in_flight += 1;
        Taken::Sqe(Sqe::parse(&raw))
    }

    /// Posts a completion into the slot `take_sqe` reserved (or just releases it).
    fn complete(&self, user_data: u64, res: i32, post: bool) {
        let mut st = self.state.lock();
        st.in_flight -= 1;
        if post {
            let slot = st.cq_tail & (self.cq_entries - 1);
            let mut cqe = [0u8; 16];
            cqe[..8].copy_from_slice(&user_data.to_le_bytes());
            cqe[8..12].copy_from_slice(&res.to_le_bytes());
            let written = self
                .obj()
                .write_at(memory::mm(), CQES + 16 * u64::from(slot), &cqe);
            debug_assert_eq!(written, Ok(16), "ring pages are allocated at setup");
            st.cq_tail = st.cq_tail.wrapping_add(1);
            self.write_u32(CQ_TAIL, st.cq_tail);
        }
        drop(st);
        proc::wakeup(self.channel());
    }

    /// Completions waiting for the process.
    fn cq_ready(&self) -> u32 {
        let tail = self.state.lock().cq_tail;
        tail.wrapping_sub(self.read_u32(CQ_HEAD))
            .min(self.cq_entries)
    }

    fn channel(&self) -> usize {
        self as *const IoUring as usize
    }

    fn registration(&self) -> Option<Arc<Registration>> {
        self.registration.lock().clone()
    }
}

enum Taken {
    Sqe(Sqe),
    Empty,
    CqFull,
    /// An invalid SQ array entry was consumed.
    Dropped,
}

/// Size in bytes of the ring part for these entry counts, and the SQ array's offset.
fn ring_layout(sq_entries: u32, cq_entries: u32) -> (u64, u64) {
    let array = (CQES + 16 * u64::from(cq_entries)).next_multiple_of(64);
    let end = array + 4 * u64::from(sq_entries);
    (array, end.next_multiple_of(PAGE))
}

/// io_uring_setup(entries, params) (Linux `io_uring_setup`): a new ring, its descriptor
/// (always `O_CLOEXEC`, as Linux's) and the offsets in `params`.
pub fn setup(entries: u32, params: u64) -> SysResult {
    let ptr = UserPtr::<Params>::new(params)?;
    let mut p = ptr.read()?;
    if p.resv != [0; 3] || p.flags & !SETUP_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    let clamp = p.flags & IORING_SETUP_CLAMP != 0;
    let mut entries = entries;
    if entries == 0 {
        return Err(Errno::EINVAL);
    }
    if entries > IORING_MAX_ENTRIES {
        if !clamp {
            return Err(Errno::EINVAL);
        }
        entries = IORING_MAX_ENTRIES;
    }
    let sq_entries = entries.next_power_of_two();
    let cq_entries = if p.flags & IORING_SETUP_CQSIZE != 0 {
        let mut cq = p.cq_entries;
        if cq == 0 {
            return Err(Errno::EINVAL);
        }
        if cq > IORING_MAX_CQ_ENTRIES {
            if !clamp {
                return Err(Errno::EINVAL);
            }
            cq = IORING_MAX_CQ_ENTRIES;
        }
        let cq = cq.next_power_of_two();
        if cq < sq_entries {
            return Err(Errno::EINVAL);
        }
        cq
    } else {
        2 * sq_entries
    };
    let (sq_array, rings_len) = ring_layout(sq_entries, cq_entries);
    let sqes_len = (64 * u64::from(sq_entries)).next_multiple_of(PAGE);
    if !with_current(|p| p.fds.has_room_for(1)) {
        return Err(Errno::EMFILE);
    }
    let mm = memory::mm();
    let obj = ShmemObject::new();
    // All pages now: completions are then posted without allocating, and ENOMEM shows here.
    if let Err(e) = obj.fallocate(mm, 0, rings_len + sqes_len) {
        ShmemObject::put(obj, mm);
        return Err(e.into());
    }
    let ring = IoUring {
        obj: Some(obj),
        sq_entries,
        cq_entries,
        sq_array,
        rings_len,
        sqes_len,
        state: Mutex::new(RingState::default()),
        registration: Mutex::new(None),
    };
    ring.write_u32(SQ_RING_MASK, sq_entries - 1);
    ring.write_u32(CQ_RING_MASK, cq_entries - 1);
    ring.write_u32(SQ_RING_ENTRIES, sq_entries);
    ring.write_u32(CQ_RING_ENTRIES, cq_entries);
    p.sq_entries = sq_entries;
    p.cq_entries = cq_entries;
    p.features = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_SUBMIT_STABLE | IORING_FEAT_RW_CUR_POS;
    p.sq_off = SqringOffsets {
        head: SQ_HEAD as u32,
        tail: SQ_TAIL as u32,
        ring_mask: SQ_RING_MASK as u32,
        ring_entries: SQ_RING_ENTRIES as u32,
        flags: SQ_FLAGS as u32,
        dropped: SQ_DROPPED as u32,
        array: sq_array as u32,
        ..SqringOffsets::default()
    };
    p.cq_off = CqringOffsets {
        head: CQ_HEAD as u32,
        tail: CQ_TAIL as u32,
        ring_mask: CQ_RING_MASK as u32,
        ring_entries: CQ_RING_ENTRIES as u32,
        overflow: CQ_OVERFLOW as u32,
        cqes: CQES as u32,
        flags: CQ_FLAGS as u32,
        ..CqringOffsets::default()
    };
    let file = OpenFile::new(alloc::boxed::Box::new(ring), O_RDWR);
    ptr.write(&p)?;
    let fd = super::Fd {
        file,
        cloexec: true,
    };
    // A failed install hands the descriptor back: drop it outside the table lock.
    let installed = with_current(|p| p.fds.install(fd.clone()));
    drop(fd);
    Ok(installed? as u64)
}

/// The ring behind descriptor `fd`: `EBADF` for no descriptor, `EOPNOTSUPP` for another file.
fn ring_file(fd: i64) -> Result<Arc<OpenFile>, Errno> {
    let file = with_current(|p| p.fds.get(fd))?;
    match file.downcast::<IoUring>() {
        Some(_) => Ok(file),
        None => Err(Errno::EOPNOTSUPP),
    }
}

fn ring_of(file: &OpenFile) -> &IoUring {
    file.downcast::<IoUring>()
        .expect("ring_file checked the type")
}

/// io_uring_enter(fd, to_submit, min_complete, flags, sig, sigsz): submits up to `to_submit`
/// SQEs, executing each at once, then with `IORING_ENTER_GETEVENTS` waits until
/// `min_complete` CQEs are ready (only another process sharing the ring can add any then;
/// any signal ends the wait with `EINTR`). Returns the number submitted. The signal mask
/// argument is ignored (there are no signal handlers to mask).
pub fn enter(fd: i64, to_submit: u32, min_complete: u32, flags: u32) -> SysResult {
    if flags & !ENTER_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    let file = ring_file(fd)?;
    let ring = ring_of(&file);
    // At most one ring's worth per call (Linux `io_submit_sqes`: `min(to_submit, entries)`),
    // so a tail far ahead of the head cannot keep the kernel here.
    let to_submit = to_submit.min(ring.sq_entries);
    let mut submitted = 0u32;
    let mut link = Link::None;
    while submitted < to_submit {
        let sqe = match ring.take_sqe() {
            Taken::Sqe(sqe) => sqe,
            Taken::Empty | Taken::Dropped => break,
            Taken::CqFull if submitted == 0 => return Err(Errno::EBUSY),
            Taken::CqFull => break,
        };
        submitted += 1;
        let res = if link == Link::Broken {
            -(Errno::ECANCELED as i32)
        } else {
            execute(ring, &sqe)
        };
        let failed = res < 0 || (is_rw(sqe.opcode) && res != sqe.len as i32 && res >= 0);
        link = match (sqe.flags & (IOSQE_IO_LINK | IOSQE_IO_HARDLINK), link) {
            (0, _) => Link::None,
            (_, Link::Broken) => Link::Broken,
            (IOSQE_IO_LINK, _) if failed => Link::Broken,
            _ => Link::Intact,
        };
        let skip = sqe.flags & IOSQE_CQE_SKIP_SUCCESS != 0 && res >= 0;
        ring.complete(sqe.user_data, res, !skip);
    }
    if flags & IORING_ENTER_GETEVENTS != 0 {
        let want = min_complete.min(ring.cq_entries);
        while ring.cq_ready() < want {
            // Interruptible, as Linux's io_cqring_wait: a signal ends the wait with EINTR
            // (not restarted, whatever SA_RESTART says) unless something was submitted.
            if proc::sleep_interruptible(ring.channel()).is_err() {
                return if submitted > 0 {
                    Ok(u64::from(submitted))
                } else {
                    Err(Errno::EINTR)
                };
            }
        }
    }
    Ok(u64::from(submitted))
}

/// The state of an `IOSQE_IO_LINK` chain being submitted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    None,
    Intact,
    /// A member failed: the rest of the chain completes with `-ECANCELED`.
    Broken,
}

fn is_rw(op: u8) -> bool {
    matches!(
        op,
        IORING_OP_READ | IORING_OP_WRITE | IORING_OP_READ_FIXED | IORING_OP_WRITE_FIXED
    )
}

/// Runs one submission; the CQE's `res` (bytes or `-errno`).
fn execute(ring: &IoUring, sqe: &Sqe) -> i32 {
    match execute_op(ring, sqe) {
        Ok(n) => n.min(i32::MAX as u64) as i32,
        Err(e) => -(e as i32),
    }
}

fn execute_op(ring: &IoUring, sqe: &Sqe) -> Result<u64, Errno> {
    if sqe.flags & !SQE_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    if sqe.opcode == IORING_OP_NOP {
        return Ok(0);
    }
    if sqe.opcode == IORING_OP_FSYNC {
        // Linux `io_fsync_prep`: no buffer, only the DATASYNC flag.
        if sqe.addr != 0 || sqe.buf_index != 0 || sqe.rw_flags & !IORING_FSYNC_DATASYNC != 0 {
            return Err(Errno::EINVAL);
        }
        let file = with_current(|p| p.fds.get(i64::from(sqe.fd)))?;
        return vfs_fsync(&file);
    }
    if !matches!(
        sqe.opcode,
        IORING_OP_READV
            | IORING_OP_WRITEV
            | IORING_OP_READ_FIXED
            | IORING_OP_WRITE_FIXED
            | IORING_OP_READ
            | IORING_OP_WRITE
    ) {
        return Err(Errno::EINVAL);
    }
    if sqe.ioprio != 0 {
        return Err(Errno::EINVAL);
    }
    if sqe.rw_flags & !RWF_SYNCS != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let file = with_current(|p| p.fds.get(i64::from(sqe.fd)))?;
    // Offset -1: the file position (IORING_FEAT_RW_CUR_POS); streams ignore the offset.
    let at = position_for(&file, sqe.off)?;
    let read = matches!(
        sqe.opcode,
        IORING_OP_READ | IORING_OP_READV | IORING_OP_READ_FIXED
    );
    let reg;
    let mut iter = match sqe.opcode {
        IORING_OP_READ | IORING_OP_WRITE => IoIter::ubuf(sqe.addr, sqe.len as usize)?,
        IORING_OP_READV | IORING_OP_WRITEV => IoIter::iovec(sqe.addr, i64::from(sqe.len))?,
        _ => {
            reg = ring.registration().ok_or(Errno::EFAULT)?;
            let buf = reg
                .bufs
                .get(usize::from(sqe.buf_index))
                .and_then(Option::as_ref)
                .ok_or(Errno::EFAULT)?;
            // Linux `io_import_fixed`: the range must lie inside the registered one.
            let start = buf.start().as_u64();
            let end = sqe
                .addr
                .checked_add(u64::from(sqe.len))
                .ok_or(Errno::EFAULT)?;
            if sqe.addr < start || end > start + buf.len() as u64 {
                return Err(Errno::EFAULT);
            }
            // The data move through the pinned frames (`ITER_BVEC`); a device DMAs into them.
            IoIter::bvec(
                buf,
                (sqe.addr - start) as usize,
                sqe.len as usize,
                reg.clone(),
            )
        }
    };
    let n = if read {
        vfs_read(&file, at, &mut iter)?
    } else {
        vfs_write(&file, at, &mut iter)?
    };
    Ok(n as u64)
}

/// One `struct iovec` as `io_uring_register` reads it.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IoVec {
    base: u64,
    len: u64,
}

/// io_uring_register(fd, opcode, arg, nr_args): `IORING_REGISTER_BUFFERS`,
/// `IORING_UNREGISTER_BUFFERS` (Linux `io_sqe_buffers_register`/`io_sqe_buffers_unregister`)
/// and `IORING_REGISTER_PROBE`; every other opcode answers `EINVAL`.
pub fn register(fd: i64, opcode: u32, arg: u64, nr: u32) -> SysResult {
    let file = ring_file(fd)?;
    let ring = ring_of(&file);
    match u64::from(opcode) {
        IORING_REGISTER_BUFFERS => register_buffers(ring, arg, u64::from(nr)),
        IORING_REGISTER_PROBE => probe(arg, nr),
        IORING_UNREGISTER_BUFFERS => {
            if arg != 0 || nr != 0 {
                return Err(Errno::EINVAL);
            }
            let old = ring.registration.lock().take().ok_or(Errno::ENXIO)?;
            drop(old);
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `IORING_REGISTER_PROBE` (Linux `io_probe`): fills `struct io_uring_probe` (16 bytes, then
/// `nr` 8-byte `struct io_uring_probe_op`s), which must arrive zeroed (`EINVAL` otherwise):
/// `last_op` is the highest opcode cowlab knows, each op's `flags` says whether it runs.
fn probe(arg: u64, nr: u32) -> SysResult {
    let last_op = *SUPPORTED_OPS.iter().max().expect("not empty");
    // Linux sizes the copy by `nr` and fills at most `IORING_OP_LAST` ops; cowlab's known
    // ops end at `last_op`, and the copy is bounded the same way.
    let size = 16 + 8 * nr.min(u32::from(last_op) + 1) as usize;
    let out = UserSlice::new(arg, size)?;
    let mut p = out.read_vec()?;
    if p.iter().any(|&b| b != 0) {
        return Err(Errno::EINVAL);
    }
    let ops = (size - 16) / 8;
    p[0] = last_op;
    p[1] = ops as u8;
    for i in 0..ops {
        let op = &mut p[16 + 8 * i..16 + 8 * (i + 1)];
        op[0] = i as u8;
        if SUPPORTED_OPS.contains(&(i as u8)) {
            op[2..4].copy_from_slice(&IO_URING_OP_SUPPORTED.to_le_bytes());
        }
    }
    out.write(&p)?;
    Ok(0)
}

/// Pins every buffer of the iovec array long-term for writing (`FOLL_WRITE|FOLL_LONGTERM`,
/// `cowlab_mm::regbuf`); all or nothing. Errors as Linux's `io_sqe_buffers_register`: `EBUSY`
/// if buffers are registered, `EINVAL` for 0 or more than 16384 buffers, `EFAULT` for an
/// unreadable array, a buffer with a NULL base and a length, a length of 0 or over 1 GiB
/// (`io_buffer_validate`), or one that cannot be pinned (unmapped, read-only, a dirty-tracked
/// file page), `EOVERFLOW` for a range that wraps, `ENOMEM` beyond the caller's
/// `RLIMIT_MEMLOCK` (checked after each buffer is pinned, as Linux accounts after
/// `io_pin_pages`) or out of memory. cowlab adds one `ENOMEM`: the whole registration's page
/// lists must fit the system-wide budget ([`REGISTERED_WORDS`]) and the heap's headroom,
/// checked before anything is pinned.
fn register_buffers(ring: &IoUring, arg: u64, nr: u64) -> SysResult {
    if ring.registration.lock().is_some() {
        return Err(Errno::EBUSY);
    }
    if nr == 0 || nr > IORING_MAX_REG_BUFFERS {
        return Err(Errno::EINVAL);
    }
    let iovs = read_iovecs(arg, nr)?;
    let mm = memory::mm();
    let bufs = registration_slots(iovs.len())?;
    // Each length is at most 1 GiB and there are at most 16384: no overflow.
    let words = WORDS_PER_SLOT * iovs.len()
        + WORDS_PER_PAGE
            * iovs
                .iter()
                .filter(|iov| iov.base != 0)
                .map(iov_pages)
                .sum::<usize>();
    charge(words)?;
    let mut reg = Registration {
        bufs,
        charged: words,
        locked: Default::default(),
    };
    let shared = current_aspace();
    for iov in iovs {
        if iov.base == 0 {
            reg.bufs.push(None);
            continue;
        }
        let pages = iov_pages(&iov);
        // The page list is one block of the heap: leave the kernel's reserve alone.
        crate::heap::headroom(pages * WORDS_PER_PAGE * WORD)?;
        let pinned = register_buffer(
            mm,
            &mut crate::gup_hold::ReschedHold::for_fills(&shared),
            VirtAddr::new(iov.base),
            iov.len as usize,
        );
        // `reg` unpins what it holds and gives back its charges when dropped.
        let buf = match pinned {
            Ok(buf) => buf,
            Err(MmError::NoMem) => return Err(Errno::ENOMEM),
            Err(_) => return Err(Errno::EFAULT),
        };
        reg.bufs.push(Some(buf));
        rlimit::account_locked_vm(&mut reg.locked, pages as u64)?;
    }
    let mut slot = ring.registration.lock();
    if slot.is_some() {
        drop(slot);
        drop(reg);
        return Err(Errno::EBUSY);
    }
    *slot = Some(Arc::new(reg));
    Ok(0)
}

/// The kernel's copy of a registration's iovec array (`nr` entries at `arg`), each checked.
/// Sized by the caller (up to 16384 entries): on a short kernel heap it is `ENOMEM`, not an
/// allocation failure (which panics), before any entry is read.
pub(crate) fn read_iovecs(arg: u64, nr: u64) -> Result<Vec<IoVec>, Errno> {
    let mut iovs = Vec::new();
    crate::heap::try_reserve(&mut iovs, nr as usize)?;
    for i in 0..nr {
        let at = arg.checked_add(16 * i).ok_or(Errno::EFAULT)?;
        let iov = UserPtr::<IoVec>::new(at)?.read()?;
        if iov.base == 0 {
            if iov.len != 0 {
                return Err(Errno::EFAULT);
            }
        } else if iov.len == 0 || iov.len > MAX_BUFFER_LEN {
            return Err(Errno::EFAULT);
        } else if iov.base.checked_add(iov.len + PAGE - 1).is_none() {
            return Err(Errno::EOVERFLOW);
        }
        iovs.push(iov);
    }
    Ok(iovs)
}

/// The empty slot array of a registration of `n` buffers: `ENOMEM` on a short heap, as
/// [`read_iovecs`]. Returns its capacity (the slots themselves stay private to this file).
pub(crate) fn registration_slots_fit(n: usize) -> Result<usize, Errno> {
    registration_slots(n).map(|v| v.capacity())
}

fn registration_slots(n: usize) -> Result<Vec<Option<RegisteredBuffer>>, Errno> {
    let mut bufs = Vec::new();
    crate::heap::try_reserve(&mut bufs, n)?;
    Ok(bufs)
}

impl FileOps for IoUring {
    fn seek(&self) -> Seek {
        Seek::Stream
    }

    /// Linux: an anonymous inode ("[io_uring]"), mode 0600 without a file type.
    fn stat(&self) -> Stat {
        Stat::base(0o600, 5)
    }

    fn statfs(&self) -> StatFs {
        statfs_of(ANON_INODE_FS_MAGIC, 0)
    }

    fn mmap_target(&self, offset: u64, len: u64) -> Result<(&Arc<ShmemObject>, u64), Errno> {
        IoUring::mmap_target(self, offset, len)
    }

    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}
